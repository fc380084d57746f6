//! Randomized model test: a table of the AM under test and an identical heap table receive the
//! same statements in the same transactions (commit, rollback, savepoints rolled back or
//! released; inserts, in-place updates, updates of indexed columns and of the key, growing and
//! shrinking rows, deletes, upserts). Heap is the model: after every transaction, and now and
//! then inside one, both tables must hold the same rows, through a sequential scan and through
//! index scans. A second session holds REPEATABLE READ snapshots across many transactions and
//! checks that both tables look the same in them (old versions through undo). `torii.vacuum` and
//! `VACUUM` run between transactions; at the end `torii.verify` and amcheck must be clean.
//!
//! The seed is fixed; `TORII_MODEL_SEED=<n>` picks another (printed at the start, and in every
//! failure with the statements of the failing transaction). `TORII_MODEL_TXNS` sets the number
//! of transactions (default 300).

use postgres::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use torii_harness::testing::{
    am, assert_verify_clean, cluster_with_db_conf, is_torii, wal_check_conf, DB,
};
use torii_harness::{err, sql, Result};

const DEFAULT_SEED: u64 = 20_241_125;
const HEAP: &str = "m_heap";
const AM: &str = "m_am";

fn env_u64(var: &str) -> Option<u64> {
    let v = std::env::var(var).ok()?;
    let v = v.trim();
    if let Some(hex) = v.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()
    } else {
        v.parse().ok()
    }
}

struct Model {
    cl: Client,
    seed: u64,
    txn: usize,
    /// statements of the current transaction, with `{t}` for the table
    log: Vec<String>,
}

impl Model {
    fn context(&self) -> String {
        format!(
            "seed {} (TORII_MODEL_SEED={}), transaction {}; its statements so far ({{t}} = the table):\n  {}",
            self.seed,
            self.seed,
            self.txn,
            self.log.join(";\n  ")
        )
    }

    /// Run a statement on the heap table, then on the AM's table; both must succeed.
    fn both(&mut self, stmt: &str) -> Result<()> {
        self.log.push(stmt.to_string());
        let h = sql::result_text(&mut self.cl, &stmt.replace("{t}", HEAP));
        let t = sql::result_text(&mut self.cl, &stmt.replace("{t}", AM));
        match (h, t) {
            (Ok(h), Ok(t)) => {
                let (mut h, mut t): (Vec<&str>, Vec<&str>) =
                    (h.lines().collect(), t.lines().collect());
                h.sort_unstable();
                t.sort_unstable();
                if h != t {
                    return Err(err(format!(
                        "RETURNING differs for {stmt}\nheap: {h:?}\n{}: {t:?}\n{}",
                        am(),
                        self.context()
                    )));
                }
                Ok(())
            }
            (Err(e), _) => Err(err(format!(
                "heap failed ({}) — the model test itself is wrong\n{}",
                sql::describe(&e),
                self.context()
            ))),
            (Ok(_), Err(e)) => Err(err(format!(
                "{} failed: {}\n{}",
                am(),
                sql::describe(&e),
                self.context()
            ))),
        }
    }

    /// Plain statement (transaction control).
    fn exec(&mut self, stmt: &str) -> Result<()> {
        self.log.push(stmt.to_string());
        self.cl
            .batch_execute(stmt)
            .map_err(|e| err(format!("{stmt}: {}\n{}", sql::describe(&e), self.context())))
    }

    /// Both tables hold the same rows (sequential scan, and index scans on id and k).
    fn compare(&mut self, what: &str) -> Result<()> {
        compare_tables(&mut self.cl, what)
            .map_err(|e| err(format!("{what}: {}\n{}", sql::describe(&e), self.context())))
    }
}

/// Whole-table digest, compared first; [`QUERIES`] shows the difference when it differs.
const DIGEST: &str = "SELECT count(*), md5(string_agg(id || ',' || k || ',' || v || ',' || \
     coalesce(pad, 'NULL'), ';' ORDER BY id)) FROM {t}";
const QUERIES: &[&str] = &[
    "SELECT id, k, v, pad FROM {t} ORDER BY id",
    "SELECT count(*), sum(v), sum(k), sum(length(pad)) FROM {t}",
];
const INDEX_QUERIES: &[&str] = &[
    "SELECT id, k, v FROM {t} WHERE k BETWEEN 10 AND 20 ORDER BY id",
    "SELECT id, v FROM {t} WHERE id BETWEEN 100 AND 300 ORDER BY id",
    "SELECT id FROM {t} WHERE id > 100000 ORDER BY id",
];

fn compare_tables(cl: &mut Client, what: &str) -> Result<()> {
    let run = |cl: &mut Client, queries: &[&str]| -> Result<()> {
        for q in queries {
            let h = sql::result_text(cl, &q.replace("{t}", HEAP))?;
            let t = sql::result_text(cl, &q.replace("{t}", AM))?;
            if h != t {
                return Err(err(format!(
                    "{what}: tables differ for {q}\n{}",
                    diff_lines(&h, &t)
                )));
            }
        }
        Ok(())
    };
    let h = sql::result_text(cl, &DIGEST.replace("{t}", HEAP))?;
    let t = sql::result_text(cl, &DIGEST.replace("{t}", AM))?;
    if h != t {
        run(cl, QUERIES)?;
        return Err(err(format!(
            "{what}: digests differ: heap {h}, {} {t}",
            am()
        )));
    }
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    let r = run(cl, INDEX_QUERIES);
    cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
    r
}

/// Lines only in one of two texts (at most 20 of each).
fn diff_lines(h: &str, t: &str) -> String {
    let hs: std::collections::BTreeSet<&str> = h.lines().collect();
    let ts: std::collections::BTreeSet<&str> = t.lines().collect();
    let only_h: Vec<&&str> = hs.difference(&ts).take(20).collect();
    let only_t: Vec<&&str> = ts.difference(&hs).take(20).collect();
    format!(
        "only in heap ({} lines in all): {only_h:?}\nonly in {} ({} lines in all): {only_t:?}",
        h.lines().count(),
        am(),
        t.lines().count()
    )
}

/// One random data-changing statement (`{t}` for the table). Never fails on heap.
fn random_statement(rng: &mut StdRng, next_id: &mut i64, next_moved: &mut i64) -> String {
    let hi = *next_id;
    let a = rng.gen_range(1..hi.max(2));
    let w = rng.gen_range(0..20);
    // upserts stay below the ids that plain inserts will use
    let b = (a + w).min(hi - 1).max(a);
    match rng.gen_range(0..100) {
        // in place: no indexed column changes
        0..=24 => format!(
            "UPDATE {{t}} SET v = v + {} WHERE id BETWEEN {a} AND {} RETURNING id, v",
            rng.gen_range(1..10),
            a + w
        ),
        // the indexed column k changes: cold
        25..=36 => format!(
            "UPDATE {{t}} SET k = k + {}, v = v + 1 WHERE id % {} = {} AND id < {}",
            rng.gen_range(1..5),
            rng.gen_range(7..40),
            rng.gen_range(0..7),
            a + 50
        ),
        // rows grow (may no longer fit their page) or shrink
        37..=44 => format!(
            "UPDATE {{t}} SET pad = pad || repeat(chr(97 + id % 26), {}) \
             WHERE id BETWEEN {a} AND {} AND length(pad) < 3000",
            rng.gen_range(1..400),
            a + rng.gen_range(0..4)
        ),
        45..=49 => format!(
            "UPDATE {{t}} SET pad = left(pad, {}) WHERE id BETWEEN {a} AND {}",
            rng.gen_range(0..30),
            a + w
        ),
        // the key changes
        50..=53 => {
            *next_moved += 1;
            format!("UPDATE {{t}} SET id = {} WHERE id = {a} RETURNING id, k, v", *next_moved)
        }
        // the same row several times in one statement's transaction
        54..=57 => format!(
            "UPDATE {{t}} SET v = v * 2 WHERE id = {a}; UPDATE {{t}} SET v = v - 1, k = k + 1 WHERE id = {a}; \
             UPDATE {{t}} SET pad = pad || 'z' WHERE id = {a}"
        ),
        58..=69 => {
            if rng.gen_bool(0.5) {
                format!("DELETE FROM {{t}} WHERE id BETWEEN {a} AND {} RETURNING id", a + w / 2)
            } else {
                format!(
                    "DELETE FROM {{t}} WHERE k = {} AND id % 3 = {} RETURNING id",
                    rng.gen_range(0..60),
                    rng.gen_range(0..3)
                )
            }
        }
        70..=84 => {
            let n = rng.gen_range(1..40);
            let first = *next_id;
            *next_id += n;
            format!(
                "INSERT INTO {{t}} SELECT g, g % 50, 0, repeat('i', (g % 40)::int) \
                 FROM generate_series({first}, {}) g",
                first + n - 1
            )
        }
        // upserts over a range that is partly present (deleted and never-used ids too)
        85..=92 => format!(
            "INSERT INTO {{t}} SELECT g, g % 50, -1, 'u' FROM generate_series({a}, {}) g \
             ON CONFLICT (id) DO UPDATE SET v = {{t}}.v + 1000, pad = {{t}}.pad || 'U' \
             RETURNING id, v",
            b
        ),
        93..=96 => format!(
            "INSERT INTO {{t}} SELECT g, 7, 7, 'n' FROM generate_series({a}, {}) g \
             ON CONFLICT DO NOTHING RETURNING id",
            b
        ),
        // read own writes
        _ => "SELECT id, k, v, pad FROM {t} WHERE id % 17 = 3 ORDER BY id".to_string(),
    }
}

#[test]
fn heap_model_lockstep() -> Result<()> {
    let seed = env_u64("TORII_MODEL_SEED").unwrap_or(DEFAULT_SEED);
    let txns = env_u64("TORII_MODEL_TXNS").unwrap_or(300) as usize;
    println!(
        "model test: seed {seed} (TORII_MODEL_SEED), {txns} transactions, AM {}",
        am()
    );
    eprintln!("model test: seed {seed}, {txns} transactions");
    let mut rng = StdRng::seed_from_u64(seed);

    let (c, mut cl) = cluster_with_db_conf(
        "model",
        &[
            "autovacuum = off",
            "synchronous_commit = off",
            wal_check_conf(),
        ],
    )?;
    cl.batch_execute(&format!(
        "CREATE EXTENSION IF NOT EXISTS amcheck; \
         CREATE TABLE {HEAP} (id int PRIMARY KEY, k int NOT NULL, v int NOT NULL, pad text) USING heap; \
         CREATE TABLE {AM} (id int PRIMARY KEY, k int NOT NULL, v int NOT NULL, pad text) USING {am}; \
         CREATE INDEX {HEAP}_k ON {HEAP} (k); CREATE INDEX {AM}_k ON {AM} (k)",
        am = am()
    ))?;
    for t in [HEAP, AM] {
        cl.batch_execute(&format!(
            "INSERT INTO {t} SELECT g, g % 50, 0, repeat('a', g % 30) FROM generate_series(1, 600) g"
        ))?;
    }
    let mut next_id: i64 = 601;
    // ids given to rows whose key is updated
    let mut next_moved: i64 = 100_000;
    let mut m = Model {
        cl,
        seed,
        txn: 0,
        log: Vec::new(),
    };
    m.compare("after the load")?;

    // A second session with REPEATABLE READ snapshots held across transactions.
    let mut reader = c.connect(DB)?;
    let mut reader_since: Option<(usize, String)> = None;
    let (mut commits, mut rollbacks, mut sp_rollbacks) = (0, 0, 0);

    for txn in 1..=txns {
        m.txn = txn;
        m.log.clear();
        m.exec("BEGIN")?;
        let mut savepoints: Vec<String> = Vec::new();
        let n_ops = rng.gen_range(1..8);
        for op in 0..n_ops {
            match rng.gen_range(0..100) {
                0..=14 => {
                    let name = format!("sp{op}");
                    m.exec(&format!("SAVEPOINT {name}"))?;
                    savepoints.push(name);
                }
                15..=29 if !savepoints.is_empty() => {
                    let i = rng.gen_range(0..savepoints.len());
                    let name = savepoints[i].clone();
                    if rng.gen_bool(0.7) {
                        m.exec(&format!("ROLLBACK TO SAVEPOINT {name}"))?;
                        savepoints.truncate(i + 1);
                        sp_rollbacks += 1;
                    } else {
                        m.exec(&format!("RELEASE SAVEPOINT {name}"))?;
                        savepoints.truncate(i);
                    }
                    if rng.gen_bool(0.3) {
                        m.compare("after a savepoint ended")?;
                    }
                }
                _ => {
                    let stmt = random_statement(&mut rng, &mut next_id, &mut next_moved);
                    m.both(&stmt)?;
                }
            }
        }
        if rng.gen_bool(0.2) {
            m.compare("inside the transaction")?;
        }
        if rng.gen_bool(0.7) {
            m.exec("COMMIT")?;
            commits += 1;
        } else {
            m.exec("ROLLBACK")?;
            rollbacks += 1;
        }
        m.compare("after the transaction")?;

        // The old snapshot: both tables still look alike in it.
        if let Some((since, _)) = &reader_since {
            if txn % 5 == 0 {
                compare_tables(&mut reader, "in the REPEATABLE READ snapshot").map_err(|e| {
                    err(format!(
                        "{}\n(snapshot taken after transaction {since}; now after {txn}; seed {seed})",
                        sql::describe(&e)
                    ))
                })?;
            }
        }
        if txn % 40 == 7 {
            if reader_since.is_some() {
                reader.batch_execute("COMMIT")?;
            }
            reader.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
            let snap = sql::result_text(&mut reader, &QUERIES[0].replace("{t}", HEAP))?;
            reader_since = Some((txn, snap));
        }
        if let Some((since, snap)) = &reader_since {
            if txn % 10 == 0 {
                // The snapshot has not moved.
                let now = sql::result_text(&mut reader, &QUERIES[0].replace("{t}", AM))?;
                if &now != snap {
                    return Err(err(format!(
                        "the REPEATABLE READ snapshot of {AM} taken after transaction {since} \
                         changed by transaction {txn} (seed {seed}):\n{}",
                        diff_lines(snap, &now)
                    )));
                }
            }
        }

        // Maintenance between transactions.
        if txn % 25 == 0 {
            if is_torii() && rng.gen_bool(0.5) {
                m.exec(&format!("SELECT * FROM torii.vacuum('{AM}')"))?;
            } else {
                m.exec(&format!("VACUUM {AM}"))?;
            }
            m.exec(&format!("VACUUM {HEAP}"))?;
            m.compare("after vacuum")?;
        }
    }
    if reader_since.is_some() {
        reader.batch_execute("COMMIT")?;
    }
    drop(reader);
    m.txn = txns + 1;
    m.log.clear();
    m.compare("at the end")?;
    let mut cl = m.cl;
    eprintln!(
        "model test: {commits} commits, {rollbacks} rollbacks, {sp_rollbacks} savepoint rollbacks, \
         {} rows",
        sql::scalar::<i64>(&mut cl, &format!("SELECT count(*) FROM {AM}"))?
    );
    assert_verify_clean(&mut cl, AM)?;
    cl.batch_execute(&format!(
        "SELECT bt_index_check('{AM}_pkey', true); SELECT bt_index_check('{AM}_k', true)"
    ))?;
    // After a final VACUUM (undo discarded, dead rows and index entries gone) still the same.
    cl.batch_execute(&format!("VACUUM {AM}"))?;
    cl.batch_execute(&format!("VACUUM {HEAP}"))?;
    compare_tables(&mut cl, "after the final VACUUM")
        .map_err(|e| err(format!("{e}\n(seed {seed})")))?;
    assert_verify_clean(&mut cl, AM)?;
    cl.batch_execute(&format!(
        "SELECT bt_index_check('{AM}_pkey', true); SELECT bt_index_check('{AM}_k', true)"
    ))?;
    // Crash recovery replays the run's WAL, each record's pages checked against the primary's
    // images (wal_consistency_checking): the tables must still agree afterwards. Commits are
    // asynchronous, so the last ones may be lost, from both tables alike.
    drop(cl);
    c.stop_immediate()?;
    c.start()?;
    let mut cl = c.connect(DB)?;
    compare_tables(&mut cl, "after crash recovery")
        .map_err(|e| err(format!("{e}\n(seed {seed})")))?;
    assert_verify_clean(&mut cl, AM)?;
    c.assert_no_crash()
}
