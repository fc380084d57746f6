//! Deterministic test data: an `accounts`-like table used by the demo, the benchmark and the
//! tests.
//!
//! Rows are `(id bigint, account int, balance numeric(14,2), note text, created timestamptz)`.
//! Client-side rows (CSV file or `COPY FROM STDIN`) come from a seeded PRNG, so the same seed
//! always gives the same bytes; server-side rows (`INSERT ... SELECT`) come from a fixed SQL
//! expression of `generate_series`. Either way heap and torii tables get identical contents.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use postgres::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Result;

/// Column list of the accounts table.
pub const ACCOUNTS_COLUMNS: &str =
    "id bigint NOT NULL, account int NOT NULL, balance numeric(14,2), note text, created timestamptz";

/// Fixed seed for all generated data.
pub const SEED: u64 = 0x746f_7269_6921;

const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliett",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "x-ray",
    "yankee",
    "zulu",
    "torii",
    "gate",
    "undo",
    "log",
    // exercise CSV quoting and non-ASCII text
    "say \"hi\", ok",
    "naïve",
    "日本",
    "tab\there",
];

/// `CREATE TABLE name (ACCOUNTS_COLUMNS) USING am`.
pub fn create_accounts_table(client: &mut Client, name: &str, am: &str) -> Result<()> {
    client.batch_execute(&format!(
        "CREATE TABLE {name} ({ACCOUNTS_COLUMNS}) USING {am}"
    ))?;
    Ok(())
}

/// Generator of client-side rows.
pub struct RowGen {
    rng: StdRng,
    next_id: i64,
}

impl RowGen {
    /// Rows with ids `first_id, first_id + 1, ...` from `seed`.
    pub fn new(seed: u64, first_id: i64) -> RowGen {
        RowGen {
            rng: StdRng::seed_from_u64(seed ^ (first_id as u64).wrapping_mul(0x9e37_79b9)),
            next_id: first_id,
        }
    }

    /// Append the next row to `out` as a CSV line (quoted note, empty unquoted field = NULL).
    pub fn csv_line(&mut self, out: &mut Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        let r = &mut self.rng;
        let account: i32 = r.gen_range(1..=10_000);
        let cents: i64 = r.gen_range(-1_000_000..100_000_000);
        let sign = if cents < 0 { "-" } else { "" };
        let balance = format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100);
        let note = if r.gen_ratio(1, 10) {
            String::new() // NULL
        } else {
            let n = r.gen_range(1..=8);
            let words: Vec<&str> = (0..n).map(|_| WORDS[r.gen_range(0..WORDS.len())]).collect();
            format!("\"{}\"", words.join(" ").replace('"', "\"\""))
        };
        let created = format!(
            "2024-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
            r.gen_range(1..=12),
            r.gen_range(1..=28),
            r.gen_range(0..24),
            r.gen_range(0..60),
            r.gen_range(0..60),
            r.gen_range(0..1_000_000)
        );
        let _ = writeln!(out, "{id},{account},{balance},{note},{created}");
    }
}

/// Write `n` rows with ids from `first_id` as CSV to `path` (readable by everyone, so that the
/// server can `COPY ... FROM` it).
pub fn write_csv(path: &Path, first_id: i64, n: u64, seed: u64) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut g = RowGen::new(seed, first_id);
    let mut buf = Vec::with_capacity(256);
    for _ in 0..n {
        buf.clear();
        g.csv_line(&mut buf);
        w.write_all(&buf)?;
    }
    w.flush()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// `COPY table FROM STDIN (FORMAT csv)` of `n` generated rows with ids from `first_id`. Returns
/// the row count reported by the server.
pub fn copy_in(client: &mut Client, table: &str, first_id: i64, n: u64, seed: u64) -> Result<u64> {
    let mut w = client.copy_in(&format!("COPY {table} FROM STDIN (FORMAT csv)"))?;
    let mut g = RowGen::new(seed, first_id);
    let mut buf = Vec::with_capacity(1 << 16);
    for i in 0..n {
        g.csv_line(&mut buf);
        if buf.len() > 60_000 || i + 1 == n {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    Ok(w.finish()?)
}

/// The `SELECT` that makes rows `first_id ..= first_id + n - 1` server-side.
pub fn generate_select(first_id: i64, n: u64) -> String {
    let last = first_id + n as i64 - 1;
    format!(
        "SELECT g, (g * 7919 % 10000)::int + 1, \
         ((g * 104729 % 100000000) - 1000000) / 100.0, \
         CASE WHEN g % 10 = 0 THEN NULL ELSE 'note ' || md5(g::text) END, \
         timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' \
         FROM generate_series({first_id}::bigint, {last}::bigint) AS g"
    )
}

/// `INSERT INTO table SELECT ...` of rows `first_id ..= first_id + n - 1`. Returns rows inserted.
pub fn insert_select(client: &mut Client, table: &str, first_id: i64, n: u64) -> Result<u64> {
    Ok(client.execute(
        &format!("INSERT INTO {table} {}", generate_select(first_id, n)),
        &[],
    )?)
}
