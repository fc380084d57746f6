//! Shared helpers of the integration tests (`harness/tests/*.rs`).
//!
//! The tests compare a table of the access method under test with a heap table holding the same
//! data. The AM under test is `torii` unless `TORII_TEST_AM` names another one: with
//! `TORII_TEST_AM=heap` the whole suite runs heap against heap, which checks the tests
//! themselves without torii installed (torii-only checks are then skipped).

use postgres::Client;

use crate::{err, sql, Cluster, Result};

/// Name of the database the tests use.
pub const DB: &str = "torii_test";

/// The table access method under test (`TORII_TEST_AM`, default `torii`).
pub fn am() -> String {
    std::env::var("TORII_TEST_AM")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "torii".into())
}

/// Whether the AM under test is torii (so torii's SQL functions exist).
pub fn is_torii() -> bool {
    am() == "torii"
}

/// Whether whole-cluster tests run torii with generic WAL (`TORII_WAL=generic`: torii not
/// preloaded, so its resource manager is not registered) instead of its row-level records
/// (the default: clusters preload torii, see [`crate::Cluster`]).
pub fn generic_wal() -> bool {
    std::env::var("TORII_WAL").is_ok_and(|v| v == "generic")
}

/// The `wal_consistency_checking` line for tests that replay WAL (crash recovery, standbys):
/// every torii (and generic) record carries a page image that redo's result is compared with,
/// byte for byte after masking; a mismatch stops recovery with "inconsistent page found".
pub fn wal_check_conf() -> &'static str {
    if generic_wal() {
        "wal_consistency_checking = 'generic'"
    } else {
        "wal_consistency_checking = 'torii,generic'"
    }
}

/// Start a cluster and create database [`DB`], with `CREATE EXTENSION torii` when torii is
/// under test. Returns the cluster and a connection to [`DB`].
pub fn cluster_with_db(name: &str) -> Result<(Cluster, Client)> {
    cluster_with_db_conf(name, &[])
}

/// As [`cluster_with_db`], with extra `postgresql.conf` lines.
pub fn cluster_with_db_conf(name: &str, conf: &[&str]) -> Result<(Cluster, Client)> {
    cluster_with_db_options(name, &[], conf)
}

/// As [`cluster_with_db`], with extra initdb arguments and `postgresql.conf` lines.
pub fn cluster_with_db_options(
    name: &str,
    initdb_args: &[&str],
    conf: &[&str],
) -> Result<(Cluster, Client)> {
    if is_torii() && !crate::torii_installed() {
        return Err(err(
            "the torii extension is not installed in this PostgreSQL \
             (run scripts/setup.sh or `cargo pgrx install --release --pg-config /usr/bin/pg_config`; \
             TORII_TEST_AM=heap runs the suite against heap to check the harness itself)",
        ));
    }
    let c = Cluster::with_options(name, initdb_args, conf)?;
    c.start()?;
    if is_torii() {
        c.create_db_with_torii(DB)?;
    } else {
        c.create_db(DB)?;
    }
    let client = c.connect(DB)?;
    Ok((c, client))
}

/// Messages of the NOTICE/INFO/WARNING a session received, in order.
pub type Notices = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A new session on [`DB`] of `c` that collects the messages the server sends it.
pub fn connect_with_notices(c: &Cluster) -> Result<(Client, Notices)> {
    let notices: Notices = Default::default();
    let seen = notices.clone();
    let cl = c
        .client_config(DB)
        .notice_callback(move |n| seen.lock().unwrap().push(n.message().to_string()))
        .connect(postgres::NoTls)?;
    Ok((cl, notices))
}

/// Run `query` with `{t}` replaced by `heap_table` and by `am_table`; assert identical text
/// results and return them.
pub fn same_result(
    client: &mut Client,
    query: &str,
    heap_table: &str,
    am_table: &str,
) -> Result<String> {
    let h = sql::result_text(client, &query.replace("{t}", heap_table))?;
    let t = sql::result_text(client, &query.replace("{t}", am_table))?;
    if h != t {
        return Err(err(format!(
            "results differ for {query}\n--- {heap_table} ({} bytes):\n{}\n--- {am_table} ({} bytes):\n{}",
            h.len(),
            clip(&h),
            t.len(),
            clip(&t)
        )));
    }
    Ok(h)
}

/// First 2000 characters of a text, for error messages.
pub fn clip(s: &str) -> String {
    if s.chars().count() <= 2000 {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(2000).collect();
        c.push_str(" ...");
        c
    }
}

/// Execute `sql` with `{t}` replaced by each table name in turn.
pub fn exec_both(client: &mut Client, sql: &str, heap_table: &str, am_table: &str) -> Result<()> {
    client.batch_execute(&sql.replace("{t}", heap_table))?;
    client.batch_execute(&sql.replace("{t}", am_table))?;
    Ok(())
}

/// The access method name of a table.
pub fn table_am(client: &mut Client, table: &str) -> Result<String> {
    let row = client.query_one(
        "SELECT a.amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam \
         WHERE c.oid = $1::text::regclass",
        &[&table],
    )?;
    Ok(row.get(0))
}

/// `torii.verify(table)` rows as `(blkno, problem)`; empty (not called) when torii is not under
/// test.
pub fn verify(client: &mut Client, table: &str) -> Result<Vec<(i64, String)>> {
    if !is_torii() {
        return Ok(Vec::new());
    }
    let rows = client.query(
        "SELECT blkno, problem FROM torii.verify($1::text::regclass) ORDER BY blkno",
        &[&table],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Error if `torii.verify(table)` reports anything.
pub fn assert_verify_clean(client: &mut Client, table: &str) -> Result<()> {
    let problems = verify(client, table)?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(err(format!("torii.verify({table}) reports: {problems:?}")))
    }
}

/// One row of `torii.stats(table)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToriiStats {
    pub pages: i64,
    pub data_pages: i64,
    pub undo_pages: i64,
    pub free_pages: i64,
    pub live_rows: i64,
    pub dead_rows: i64,
    pub dead_pointers: i64,
    pub free_bytes: i64,
    pub undo_records: i64,
    pub undo_bytes: i64,
    pub oldest_undo_xid: Option<i64>,
    pub oldest_undo_age: Option<i64>,
    pub horizon: i64,
}

/// `torii.stats(table)` (xid8 columns as plain numbers).
pub fn torii_stats(client: &mut Client, table: &str) -> Result<ToriiStats> {
    let r = client.query_one(
        "SELECT pages, data_pages, undo_pages, free_pages, live_rows, dead_rows, dead_pointers, \
         free_bytes, undo_records, undo_bytes, oldest_undo_xid::text::bigint, oldest_undo_age, \
         horizon::text::bigint FROM torii.stats($1::text::regclass)",
        &[&table],
    )?;
    Ok(ToriiStats {
        pages: r.get(0),
        data_pages: r.get(1),
        undo_pages: r.get(2),
        free_pages: r.get(3),
        live_rows: r.get(4),
        dead_rows: r.get(5),
        dead_pointers: r.get(6),
        free_bytes: r.get(7),
        undo_records: r.get(8),
        undo_bytes: r.get(9),
        oldest_undo_xid: r.get(10),
        oldest_undo_age: r.get(11),
        horizon: r.get(12),
    })
}

/// One row of `torii.vacuum(table)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToriiVacuum {
    pub undo_records_discarded: i64,
    pub undo_bytes_discarded: i64,
    pub undo_pages_freed: i64,
    pub rows_rolled_back: i64,
    pub rows_reclaimed: i64,
    pub bytes_reclaimed: i64,
    pub dead_pointers_freed: i64,
    pub horizon_before: i64,
    pub horizon_after: i64,
}

/// `torii.vacuum(table)` (xid8 columns as plain numbers).
pub fn torii_vacuum(client: &mut Client, table: &str) -> Result<ToriiVacuum> {
    let r = client.query_one(
        "SELECT undo_records_discarded, undo_bytes_discarded, undo_pages_freed, \
         rows_rolled_back, rows_reclaimed, bytes_reclaimed, dead_pointers_freed, \
         horizon_before::text::bigint, horizon_after::text::bigint \
         FROM torii.vacuum($1::text::regclass)",
        &[&table],
    )?;
    Ok(ToriiVacuum {
        undo_records_discarded: r.get(0),
        undo_bytes_discarded: r.get(1),
        undo_pages_freed: r.get(2),
        rows_rolled_back: r.get(3),
        rows_reclaimed: r.get(4),
        bytes_reclaimed: r.get(5),
        dead_pointers_freed: r.get(6),
        horizon_before: r.get(7),
        horizon_after: r.get(8),
    })
}

/// `torii.vacuum(table)` when torii is under test, plain `VACUUM table` otherwise.
pub fn vacuum_table(client: &mut Client, table: &str) -> Result<()> {
    if is_torii() {
        torii_vacuum(client, table)?;
    } else {
        client.batch_execute(&format!("VACUUM {table}"))?;
    }
    Ok(())
}
