//! Crash recovery of torii's in-place updates, deletes and undo.
//!
//! * `kill9_with_updates_and_deletes_in_flight`: committed updates (in place, cold, growing rows,
//!   key changes) and deletes, then transactions that update and delete many rows left open
//!   (and a prepared one), part of their work flushed by a CHECKPOINT, then `kill -9` of the
//!   postmaster. After restart every committed change is there (a heap mirror that received the
//!   committed statements is the reference), nothing uncommitted is visible, `torii.verify` and
//!   amcheck are clean, the prepared transaction still holds its rows and commits, the next
//!   writers update and delete the same rows normally, and after VACUUM everything is still
//!   right.
//! * `crash_under_load`: three sessions run a mixed workload (transfers between accounts, cold
//!   updates, growing rows, inserts, deletes, savepoints rolled back, transactions rolled back,
//!   deadlock victims) on torii tables; each transaction records what it did in a heap `ledger`
//!   table in the same transaction, and the client keeps the ids of transactions whose COMMIT
//!   was acknowledged. The server is killed at random moments (fixed seed; twice `kill -9` of
//!   the postmaster, once every process at once). After each restart: every acknowledged
//!   transaction is in the ledger, nothing is in the ledger that was neither acknowledged nor in
//!   doubt, and the torii tables hold exactly the effects of the ledger's transactions (no
//!   partial effects), `torii.verify` and amcheck are clean; then the workload goes on over the
//!   same rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use postgres::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use torii_harness::testing::{
    am, assert_verify_clean, cluster_with_db_conf, is_torii, torii_stats, wal_check_conf, DB,
};
use torii_harness::{err, sql, Cluster, Result};

/// `batch_execute` with the statement and the server's error in the message.
fn exec(cl: &mut Client, stmt: &str) -> Result<()> {
    cl.batch_execute(stmt)
        .map_err(|e| err(format!("{stmt}: {}", sql::describe(&e))))
}

/// Statements applied to the AM's table `t` and to its heap mirror `h`.
fn both(cl: &mut Client, stmt: &str) -> Result<()> {
    for t in ["h", "t"] {
        cl.batch_execute(&stmt.replace("{t}", t))
            .map_err(|e| err(format!("{}: {}", stmt.replace("{t}", t), sql::describe(&e))))?;
    }
    Ok(())
}

const DIGEST: &str = "SELECT count(*), sum(v), sum(k), sum(length(pad)), \
    md5(string_agg(id || ',' || v || ',' || k || ',' || pad, ';' ORDER BY id)) FROM {t}";

fn same(cl: &mut Client, what: &str) -> Result<String> {
    same_inner(cl, what).map_err(|e| err(format!("{what}: {}", sql::describe(&e))))
}

fn same_inner(cl: &mut Client, what: &str) -> Result<String> {
    let h = sql::result_text(cl, &DIGEST.replace("{t}", "h"))?;
    let t = sql::result_text(cl, &DIGEST.replace("{t}", "t"))?;
    if h != t {
        let diff = sql::result_text(
            cl,
            "SELECT 'heap only: ' || h::text FROM (SELECT * FROM h EXCEPT SELECT * FROM t) h \
             UNION ALL SELECT 'am only: ' || x::text FROM (SELECT * FROM t EXCEPT SELECT * FROM h) x \
             LIMIT 20",
        )?;
        return Err(err(format!(
            "{what}: the table differs from its heap mirror\nheap: {h}\n{}: {t}\n{diff}",
            am()
        )));
    }
    // The same through the indexes.
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    for q in [
        "SELECT id, v, k FROM {t} WHERE k BETWEEN 1000 AND 3000 ORDER BY k, id",
        "SELECT id, v FROM {t} WHERE id BETWEEN 5000 AND 6000 ORDER BY id",
        "SELECT count(*) FROM {t} WHERE id > 0",
    ] {
        let a = sql::result_text(cl, &q.replace("{t}", "h"))?;
        let b = sql::result_text(cl, &q.replace("{t}", "t"))?;
        if a != b {
            cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
            return Err(err(format!("{what}: index scan differs: {q}")));
        }
    }
    cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
    Ok(h)
}

fn amcheck(cl: &mut Client, indexes: &[&str]) -> Result<()> {
    for i in indexes {
        cl.batch_execute(&format!("SELECT bt_index_check('{i}', true)"))
            .map_err(|e| err(format!("bt_index_check({i}): {}", sql::describe(&e))))?;
    }
    Ok(())
}

#[test]
fn kill9_with_updates_and_deletes_in_flight() -> Result<()> {
    const ROWS: i64 = 40_000;
    let (c, mut cl) = cluster_with_db_conf("crash-mvcc", &["autovacuum = off", wal_check_conf()])?;
    cl.batch_execute(&format!(
        "CREATE EXTENSION amcheck; \
         CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL, pad text) USING {am}; \
         CREATE TABLE h (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL, pad text) USING heap; \
         CREATE INDEX t_k ON t (k); CREATE INDEX h_k ON h (k)",
        am = am()
    ))?;
    both(
        &mut cl,
        &format!(
            "INSERT INTO {{t}} SELECT g, 0, g, repeat('p', (g % 20)::int) FROM generate_series(1, {ROWS}) g"
        ),
    )?;
    // Committed changes, each its own transaction.
    for stmt in [
        "UPDATE {t} SET v = v + 1 WHERE id % 3 = 0",
        "UPDATE {t} SET k = k + 100000 WHERE id % 10 = 1",
        "DELETE FROM {t} WHERE id % 7 = 0",
        "UPDATE {t} SET pad = pad || repeat('g', 200) WHERE id % 11 = 0",
        "UPDATE {t} SET id = id + 1000000 WHERE id % 101 = 5",
        "BEGIN; UPDATE {t} SET v = v + 10 WHERE id % 13 = 0; SAVEPOINT a; \
         UPDATE {t} SET v = v + 10000 WHERE id % 13 = 0; DELETE FROM {t} WHERE id % 17 = 0; \
         ROLLBACK TO a; DELETE FROM {t} WHERE id % 19 = 0; COMMIT",
    ] {
        both(&mut cl, stmt)?;
    }
    let committed = same(&mut cl, "before the crash")?;

    // A prepared transaction (survives the crash, then commits).
    let mut p = c.connect(DB)?;
    exec(
        &mut p,
        "BEGIN; UPDATE t SET v = v + 5000 WHERE id % 10 = 7; DELETE FROM t WHERE id % 10 = 9 AND id < 2000; \
         PREPARE TRANSACTION 'p1'",
    )?;
    // Open transactions: many rows updated (in place and cold) and deleted.
    let mut x = c.connect(DB)?;
    exec(
        &mut x,
        "BEGIN; UPDATE t SET v = v + 100 WHERE id % 2 = 0; \
         UPDATE t SET k = k + 500000 WHERE id % 10 = 4; \
         UPDATE t SET pad = repeat('x', 300) WHERE id % 10 = 6; \
         DELETE FROM t WHERE id % 5 = 0; \
         INSERT INTO t SELECT g, -1, -1, 'uncommitted' FROM generate_series(2000001, 2010000) g",
    )?;
    let mut y = c.connect(DB)?;
    exec(
        &mut y,
        "BEGIN; UPDATE t SET v = v - 100 WHERE id % 10 IN (1, 3); SAVEPOINT s; \
         DELETE FROM t WHERE id % 10 = 3; RELEASE s; SAVEPOINT s2; UPDATE t SET v = 0 WHERE id % 10 = 1; \
         ROLLBACK TO s2; UPDATE t SET id = id + 3000000 WHERE id % 30 = 11",
    )?;
    // Part of it reaches the data files, the rest is only in WAL.
    cl.batch_execute("CHECKPOINT")?;
    exec(
        &mut x,
        "UPDATE t SET v = v + 1 WHERE id % 2 = 0 AND id < 20000",
    )?;
    exec(&mut y, "DELETE FROM t WHERE id % 10 = 1 AND id < 10000")?;
    // Rows this session sees are its own.
    assert_eq!(
        sql::scalar::<i64>(&mut x, "SELECT count(*) FROM t WHERE v = -1")?,
        10_000
    );
    drop(cl);
    c.kill9()?;
    assert!(x.simple_query("SELECT 1").is_err());
    drop((x, y, p));

    c.start()?;
    let mut cl = c.connect(DB)?;
    assert_eq!(
        same(&mut cl, "after crash recovery")?,
        committed,
        "committed state after crash recovery"
    );
    assert_eq!(
        sql::scalar::<i64>(
            &mut cl,
            "SELECT count(*) FROM t WHERE v < 0 OR pad = 'uncommitted' OR id > 2000000"
        )?,
        0,
        "uncommitted rows visible"
    );
    assert_verify_clean(&mut cl, "t")?;
    amcheck(&mut cl, &["t_pkey", "t_k"])?;

    // The prepared transaction still holds its rows.
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM pg_prepared_xacts")?,
        1
    );
    cl.batch_execute("SET lock_timeout = '300ms'")?;
    let e = cl
        .batch_execute("UPDATE t SET v = v + 1 WHERE id = 17")
        .expect_err("a row updated by the prepared transaction must be locked");
    assert_eq!(
        sql::sqlstate(&e).as_deref(),
        Some("55P03"),
        "{}",
        sql::describe(&e)
    );
    cl.batch_execute("RESET lock_timeout")?;
    cl.batch_execute("COMMIT PREPARED 'p1'")?;
    cl.batch_execute(
        "BEGIN; UPDATE h SET v = v + 5000 WHERE id % 10 = 7; DELETE FROM h WHERE id % 10 = 9 AND id < 2000; COMMIT",
    )?;
    same(&mut cl, "after COMMIT PREPARED")?;

    // The next writers change the rows the crashed transactions had changed.
    for stmt in [
        "UPDATE {t} SET v = v + 1 WHERE id % 2 = 0",
        "UPDATE {t} SET k = k + 7 WHERE id % 10 = 4",
        "UPDATE {t} SET pad = left(pad, 3) WHERE id % 10 = 6",
        "DELETE FROM {t} WHERE id % 10 = 3",
        "UPDATE {t} SET v = v * 2 WHERE id % 10 = 1",
        "UPDATE {t} SET id = id + 4000000 WHERE id % 30 = 11",
        "INSERT INTO {t} SELECT g, 1, 1, 'after' FROM generate_series(2000001, 2001000) g",
    ] {
        both(&mut cl, stmt)?;
    }
    same(&mut cl, "after the next writers")?;
    assert_verify_clean(&mut cl, "t")?;
    if is_torii() {
        println!("before VACUUM: {:?}", torii_stats(&mut cl, "t")?);
    }
    cl.batch_execute("VACUUM t")?;
    cl.batch_execute("VACUUM h")?;
    same(&mut cl, "after VACUUM")?;
    assert_verify_clean(&mut cl, "t")?;
    amcheck(&mut cl, &["t_pkey", "t_k"])?;
    if is_torii() {
        let st = torii_stats(&mut cl, "t")?;
        println!("after VACUUM: {st:?}");
        assert_eq!(
            st.undo_records, 0,
            "nothing holds undo back after VACUUM: {st:?}"
        );
    }
    // And a clean restart keeps it all.
    let d = same(&mut cl, "before restart")?;
    drop(cl);
    c.restart()?;
    let mut cl = c.connect(DB)?;
    assert_eq!(same(&mut cl, "after restart")?, d);
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// Crash under load
// ---------------------------------------------------------------------------------------------

const ACCOUNTS: i64 = 2000;
const WORKERS: i64 = 3;
/// Rows inserted by worker w have ids from `(w + 1) * INSERT_BASE`.
const INSERT_BASE: i64 = 1_000_000;
/// Commits that `load_without_crash`'s 3 s of load must reach at least.
const MIN_COMMITS_WITHOUT_CRASH: usize = 300;

#[derive(Default)]
struct Acks {
    acked: BTreeSet<i64>,
    in_doubt: BTreeSet<i64>,
    failed: u64,
    rolled_back: u64,
    /// errors of failed transactions (txn, SQLSTATE and message)
    errors: BTreeMap<i64, String>,
    /// failed transactions by SQLSTATE
    failed_by_sqlstate: BTreeMap<String, u64>,
    /// errors the workload cannot legitimately get (the test fails on any)
    unexpected: Vec<String>,
}

/// The SQLSTATEs of the ERRORs a load transaction can legitimately get: a deadlock victim (the
/// transfers lock their accounts in id order, but the `k`, `pad` and savepoint updates touch
/// random rows). Nothing else: no unique violation (each worker inserts its own ids), no
/// serialization failure at READ COMMITTED, and never an internal error (XX000) or data
/// corruption (XX001).
const LOAD_SQLSTATES: &[&str] = &["40P01"];

/// What an error of a workload statement means.
enum Failure {
    /// An ERROR with one of the expected SQLSTATEs: the transaction did nothing and is aborted.
    Expected(String),
    /// The connection ended (FATAL 57P01 "unexpected postmaster exit", or a closed or reset
    /// connection) while the test was killing the server.
    Gone,
    /// Anything else (the description): the test fails.
    Unexpected(String),
}

/// Classify a workload error: `expected` SQLSTATEs of ERRORs are accepted, a lost connection
/// only while `killing` (set just before the test kills the server on purpose).
fn classify(e: &postgres::Error, expected: &[&str], killing: &AtomicBool) -> Failure {
    let killing = killing.load(Ordering::SeqCst);
    match e.as_db_error() {
        Some(db) if db.severity() == "ERROR" && expected.contains(&db.code().code()) => {
            Failure::Expected(db.code().code().to_string())
        }
        Some(db) if killing && db.severity() == "FATAL" && db.code().code() == "57P01" => {
            Failure::Gone
        }
        Some(db) => Failure::Unexpected(format!("{} {}", db.severity(), sql::describe(e))),
        None if killing => Failure::Gone,
        None => Failure::Unexpected(format!("connection lost with no kill under way: {e}")),
    }
}

fn setup_load(cl: &mut Client) -> Result<()> {
    cl.batch_execute(&format!(
        "CREATE EXTENSION amcheck; \
         CREATE TABLE acct (id bigint PRIMARY KEY, bal bigint NOT NULL, k bigint NOT NULL, \
             pad text NOT NULL, created_by bigint) USING {am}; \
         CREATE INDEX acct_k ON acct (k); \
         INSERT INTO acct SELECT g, 1000, g, repeat('a', (g % 50)::int), NULL FROM generate_series(1, {ACCOUNTS}) g; \
         CREATE TABLE ledger (txn bigint PRIMARY KEY, worker int, from_id bigint, to_id bigint, \
             amount bigint, k_id bigint, ins_id bigint, del_id bigint) USING heap",
        am = am()
    ))?;
    Ok(())
}

/// One transaction of worker `w`: the SQL and what goes into its ledger row.
fn load_txn(
    rng: &mut StdRng,
    w: i64,
    txn: i64,
    my_rows: &[i64],
    next_insert: &mut i64,
) -> (String, Option<i64>, Option<i64>) {
    let mut a = rng.gen_range(1..=ACCOUNTS);
    let mut b = rng.gen_range(1..=ACCOUNTS);
    if a == b {
        b = a % ACCOUNTS + 1;
    }
    let amount = rng.gen_range(1..100);
    let (from, to) = (a, b);
    if a > b {
        std::mem::swap(&mut a, &mut b);
    }
    // Transfers lock the lower id first (deadlocks still happen with the cold updates).
    let mut s = String::from("BEGIN; ");
    for id in [a, b] {
        let delta = if id == from { -amount } else { amount };
        s.push_str(&format!(
            "UPDATE acct SET bal = bal + {delta} WHERE id = {id}; "
        ));
    }
    let k_id = rng.gen_range(1..=ACCOUNTS);
    s.push_str(&format!("UPDATE acct SET k = k + 1 WHERE id = {k_id}; "));
    if rng.gen_bool(0.3) {
        let id = rng.gen_range(1..=ACCOUNTS);
        s.push_str(&format!(
            "UPDATE acct SET pad = repeat(chr(97 + {}), {}) WHERE id = {id}; ",
            rng.gen_range(0..26),
            rng.gen_range(0..400)
        ));
    }
    if rng.gen_bool(0.3) {
        // work that is rolled back to a savepoint
        s.push_str(&format!(
            "SAVEPOINT s; UPDATE acct SET bal = bal + 1000000 WHERE id = {}; \
             UPDATE acct SET k = -k WHERE id = {}; DELETE FROM acct WHERE id = {}; \
             INSERT INTO acct VALUES ({}, 5, 5, 'sp', {txn}); ROLLBACK TO s; ",
            rng.gen_range(1..=ACCOUNTS),
            rng.gen_range(1..=ACCOUNTS),
            rng.gen_range(1..=ACCOUNTS),
            (w + 1) * INSERT_BASE + INSERT_BASE / 2 + txn
        ));
    }
    let ins = if rng.gen_bool(0.5) {
        *next_insert += 1;
        s.push_str(&format!(
            "INSERT INTO acct VALUES ({}, 0, 0, repeat('n', {}), {txn}); ",
            *next_insert,
            rng.gen_range(0..200)
        ));
        Some(*next_insert)
    } else {
        None
    };
    let del = if !my_rows.is_empty() && rng.gen_bool(0.4) {
        let id = my_rows[rng.gen_range(0..my_rows.len())];
        s.push_str(&format!("DELETE FROM acct WHERE id = {id}; "));
        Some(id)
    } else {
        None
    };
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_else(|| "NULL".into());
    s.push_str(&format!(
        "INSERT INTO ledger VALUES ({txn}, {w}, {from}, {to}, {amount}, {k_id}, {}, {}); ",
        opt(ins),
        opt(del)
    ));
    (s, ins, del)
}

/// Record an error the workload cannot legitimately get.
fn unexpected(acks: &Mutex<Acks>, w: i64, what: &str, e: String) {
    acks.lock()
        .unwrap()
        .unexpected
        .push(format!("worker {w}, {what}: {e}"));
}

fn worker(
    mut cl: Client,
    w: i64,
    seed: u64,
    next_txn: Arc<AtomicI64>,
    acks: Arc<Mutex<Acks>>,
    stop: Arc<AtomicBool>,
    killing: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    // This worker's committed inserted rows, and where its ids go on.
    let mut my_rows: Vec<i64> = match cl.query(
        "SELECT id FROM acct WHERE id >= $1 AND id < $1 + $2 ORDER BY id",
        &[&((w + 1) * INSERT_BASE), &(INSERT_BASE / 2)],
    ) {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => return unexpected(&acks, w, "reading its rows", sql::describe(&e)),
    };
    let mut next_insert: i64 = match cl.query_one(
        "SELECT coalesce(max(ins_id), $1) FROM ledger WHERE worker = $2::int",
        &[&((w + 1) * INSERT_BASE), &(w as i32)],
    ) {
        Ok(r) => r.get(0),
        Err(e) => return unexpected(&acks, w, "reading the ledger", sql::describe(&e)),
    };
    // ids of in-doubt inserts may exist too: skip past anything present
    if let Some(m) = my_rows.last() {
        next_insert = next_insert.max(*m);
    }
    next_insert += 1000;
    // After an expected ERROR the transaction is aborted: end it. Whether to go on.
    let rollback = |cl: &mut Client, txn: i64| -> bool {
        match cl.batch_execute("ROLLBACK") {
            Ok(()) => true,
            Err(e) => {
                if let Failure::Unexpected(d) = classify(&e, &[], &killing) {
                    unexpected(&acks, w, &format!("ROLLBACK of txn {txn}"), d);
                }
                false
            }
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let txn = next_txn.fetch_add(1, Ordering::SeqCst);
        if rng.gen_bool(0.1) {
            // a transaction that rolls back
            let (s, _, _) = load_txn(&mut rng, w, txn, &my_rows, &mut next_insert);
            match cl.batch_execute(&format!("{s} ROLLBACK")) {
                Ok(()) => acks.lock().unwrap().rolled_back += 1,
                Err(e) => match classify(&e, LOAD_SQLSTATES, &killing) {
                    Failure::Expected(_) => {
                        if !rollback(&mut cl, txn) {
                            return;
                        }
                    }
                    Failure::Gone => return,
                    Failure::Unexpected(d) => {
                        return unexpected(&acks, w, &format!("txn {txn} (rolled back)"), d)
                    }
                },
            }
            continue;
        }
        let (s, ins, del) = load_txn(&mut rng, w, txn, &my_rows, &mut next_insert);
        match cl.batch_execute(&format!("{s} COMMIT")) {
            Ok(()) => {
                acks.lock().unwrap().acked.insert(txn);
                if let Some(i) = ins {
                    my_rows.push(i);
                }
                if let Some(d) = del {
                    my_rows.retain(|x| *x != d);
                }
            }
            Err(e) => match classify(&e, LOAD_SQLSTATES, &killing) {
                Failure::Expected(code) => {
                    // deadlock victim: nothing committed
                    let mut a = acks.lock().unwrap();
                    a.failed += 1;
                    a.errors.insert(txn, sql::describe(&e));
                    *a.failed_by_sqlstate.entry(code).or_insert(0) += 1;
                    drop(a);
                    if !rollback(&mut cl, txn) {
                        return;
                    }
                }
                Failure::Gone => {
                    // Connection lost during the kill (a FATAL "unexpected postmaster exit"
                    // can come after the commit record is durable): the COMMIT may or may not
                    // have happened.
                    acks.lock().unwrap().in_doubt.insert(txn);
                    return;
                }
                Failure::Unexpected(d) => {
                    acks.lock().unwrap().in_doubt.insert(txn);
                    return unexpected(&acks, w, &format!("txn {txn}"), d);
                }
            },
        }
    }
}

/// Error if a worker got an error it cannot legitimately get.
fn assert_no_unexpected(acks: &Acks, when: &str) -> Result<()> {
    if acks.unexpected.is_empty() {
        Ok(())
    } else {
        Err(err(format!(
            "{when}: the workload got errors it cannot legitimately get (accepted: ERRORs with \
             SQLSTATE {LOAD_SQLSTATES:?}, a lost connection while the server is killed):\n{}",
            acks.unexpected.join("\n")
        )))
    }
}

/// Error if the server log shows a crashed backend or a PANIC (the deliberate kills of the
/// postmaster and of every process leave no such line).
fn assert_no_crash_lines(c: &Cluster, when: &str) -> Result<()> {
    let lines = c.crash_lines_since(0);
    if lines.is_empty() {
        Ok(())
    } else {
        Err(err(format!(
            "{when}: the server log shows a crash:\n{}",
            lines.join("\n")
        )))
    }
}

/// Check the invariants of the load after a restart.
fn check_load(c: &Cluster, acks: &Acks, round: usize) -> Result<()> {
    let mut cl = c.connect(DB)?;
    let ledger: BTreeSet<i64> = cl
        .query("SELECT txn FROM ledger", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&i64> = acks.acked.difference(&ledger).take(20).collect();
    assert!(
        missing.is_empty(),
        "round {round}: acknowledged transactions missing from the ledger: {missing:?}"
    );
    let unexpected: Vec<&i64> = ledger
        .iter()
        .filter(|t| !acks.acked.contains(t) && !acks.in_doubt.contains(t))
        .take(20)
        .collect();
    assert!(
        unexpected.is_empty(),
        "round {round}: ledger has transactions never acknowledged nor in doubt: {unexpected:?} \
         (their errors: {:?})",
        unexpected
            .iter()
            .map(|t| acks.errors.get(t))
            .collect::<Vec<_>>()
    );
    // The accounts hold exactly the effects of the ledger's transactions.
    let bad = sql::result_text(
        &mut cl,
        &format!(
            "WITH d AS ( \
                 SELECT id, sum(delta) AS delta, sum(kd) AS kd FROM ( \
                     SELECT from_id AS id, -amount AS delta, 0 AS kd FROM ledger \
                     UNION ALL SELECT to_id, amount, 0 FROM ledger \
                     UNION ALL SELECT k_id, 0, 1 FROM ledger) x GROUP BY id), \
             want AS (SELECT g AS id, 1000 + coalesce(d.delta, 0) AS bal, g + coalesce(d.kd, 0) AS k \
                      FROM generate_series(1, {ACCOUNTS}) g LEFT JOIN d ON d.id = g) \
             SELECT coalesce(w.id, a.id) || ': want ' || coalesce(w.bal || '/' || w.k, 'none') || \
                    ', have ' || coalesce(a.bal || '/' || a.k, 'none') \
             FROM want w FULL JOIN (SELECT id, bal, k FROM acct WHERE id <= {ACCOUNTS}) a ON a.id = w.id \
             WHERE w.bal IS DISTINCT FROM a.bal OR w.k IS DISTINCT FROM a.k ORDER BY 1 LIMIT 20"
        ),
    )?;
    assert!(
        bad.is_empty(),
        "round {round}: accounts differ from the ledger:\n{bad}"
    );
    let bad_rows = sql::result_text(
        &mut cl,
        &format!(
            "WITH want AS (SELECT ins_id AS id FROM ledger WHERE ins_id IS NOT NULL \
                           EXCEPT SELECT del_id FROM ledger WHERE del_id IS NOT NULL), \
                  have AS (SELECT id FROM acct WHERE id > {ACCOUNTS}) \
             SELECT 'missing ' || id FROM (SELECT id FROM want EXCEPT SELECT id FROM have) m \
             UNION ALL SELECT 'extra ' || id FROM (SELECT id FROM have EXCEPT SELECT id FROM want) e \
             LIMIT 20"
        ),
    )?;
    assert!(
        bad_rows.is_empty(),
        "round {round}: inserted/deleted rows differ from the ledger:\n{bad_rows}"
    );
    // Rows inserted by a transaction carry its id; that transaction is in the ledger.
    assert_eq!(
        sql::scalar::<i64>(
            &mut cl,
            "SELECT count(*) FROM acct a WHERE created_by IS NOT NULL \
             AND NOT EXISTS (SELECT FROM ledger l WHERE l.txn = a.created_by)"
        )?,
        0,
        "round {round}: rows of transactions that are not in the ledger"
    );
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT sum(bal)::bigint FROM acct")?,
        1000 * ACCOUNTS,
        "round {round}: money was created or lost"
    );
    assert_verify_clean(&mut cl, "acct")?;
    amcheck(&mut cl, &["acct_pkey", "acct_k"])?;
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM acct WHERE k > -1000000000")?,
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM acct WHERE id > 0")?,
        "round {round}: index scans disagree"
    );
    Ok(())
}

#[test]
fn crash_under_load() -> Result<()> {
    let seed: u64 = std::env::var("TORII_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b696c6c);
    println!("crash_under_load: seed {seed} (TORII_CRASH_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    let (c, mut cl) = cluster_with_db_conf(
        "crash-load",
        &["deadlock_timeout = '50ms'", "checkpoint_timeout = '30s'"],
    )?;
    setup_load(&mut cl)?;
    drop(cl);
    let next_txn = Arc::new(AtomicI64::new(1));
    let acks = Arc::new(Mutex::new(Acks::default()));
    for round in 1..=3usize {
        let stop = Arc::new(AtomicBool::new(false));
        let killing = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..WORKERS {
            let cl = c.connect(DB)?;
            let (n, a, s, k) = (
                next_txn.clone(),
                acks.clone(),
                stop.clone(),
                killing.clone(),
            );
            let wseed = rng.gen::<u64>();
            handles.push(thread::spawn(move || worker(cl, w, wseed, n, a, s, k)));
        }
        // Let the load run, with a checkpoint in some rounds, then kill.
        let run = Duration::from_millis(rng.gen_range(1500..4000));
        let t0 = Instant::now();
        if round == 2 {
            thread::sleep(run / 2);
            c.exec_in(DB, "CHECKPOINT")?;
        }
        while t0.elapsed() < run {
            thread::sleep(Duration::from_millis(20));
        }
        let acked_before = acks.lock().unwrap().acked.len();
        // From here on a lost connection is what the workers must expect.
        killing.store(true, Ordering::SeqCst);
        if round == 3 {
            c.crash()?;
        } else {
            c.kill9()?;
        }
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            h.join().map_err(|_| err("worker panicked"))?;
        }
        c.start()?;
        let a = acks.lock().unwrap();
        println!(
            "round {round}: killed after {:.1} s; {} transactions acknowledged ({} before the kill), \
             {} in doubt, {} failed {:?}, {} rolled back",
            run.as_secs_f64(),
            a.acked.len(),
            acked_before,
            a.in_doubt.len(),
            a.failed,
            a.failed_by_sqlstate,
            a.rolled_back
        );
        assert_no_unexpected(&a, &format!("round {round}"))?;
        assert_no_crash_lines(&c, &format!("round {round}"))?;
        assert!(
            a.acked.len() > 20 * round,
            "the workload made too little progress: {} commits",
            a.acked.len()
        );
        check_load(&c, &a, round)?;
    }
    // After the last crash: VACUUM, and everything still holds.
    c.exec_in(DB, "VACUUM acct")?;
    check_load(&c, &acks.lock().unwrap(), 4)?;
    // Kills of the server are expected in this test's log; a backend that crashed (terminated
    // by a signal or an exception, exited with a nonzero code) or a PANIC is not.
    assert_no_crash_lines(&c, "at the end")
}

/// The same workload and checks without a crash: tells crash-recovery bugs from MVCC bugs.
#[test]
fn load_without_crash() -> Result<()> {
    let (c, mut cl) = cluster_with_db_conf("load-nocrash", &["deadlock_timeout = '50ms'"])?;
    setup_load(&mut cl)?;
    drop(cl);
    let next_txn = Arc::new(AtomicI64::new(1));
    let acks = Arc::new(Mutex::new(Acks::default()));
    let stop = Arc::new(AtomicBool::new(false));
    // Never set: no kill, so a lost connection fails the test.
    let killing = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let mut rng = StdRng::seed_from_u64(7);
    for w in 0..WORKERS {
        let cl = c.connect(DB)?;
        let (n, a, s, k) = (
            next_txn.clone(),
            acks.clone(),
            stop.clone(),
            killing.clone(),
        );
        let wseed = rng.gen::<u64>();
        handles.push(thread::spawn(move || worker(cl, w, wseed, n, a, s, k)));
    }
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        h.join().map_err(|_| err("worker panicked"))?;
    }
    let a = acks.lock().unwrap();
    println!(
        "{} transactions acknowledged, {} failed {:?}, {} rolled back",
        a.acked.len(),
        a.failed,
        a.failed_by_sqlstate,
        a.rolled_back
    );
    assert_no_unexpected(&a, "without a crash")?;
    assert!(a.in_doubt.is_empty(), "no crash, nothing in doubt");
    assert!(
        a.acked.len() >= MIN_COMMITS_WITHOUT_CRASH,
        "the workload made too little progress in 3 s: {} commits (at least \
         {MIN_COMMITS_WITHOUT_CRASH} expected)",
        a.acked.len()
    );
    check_load(&c, &a, 0)?;
    c.exec_in(DB, "VACUUM acct")?;
    check_load(&c, &a, 0)?;
    c.assert_no_crash()
}
