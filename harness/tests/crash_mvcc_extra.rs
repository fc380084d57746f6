//! Crashes in the middle of undo work: the whole server is killed (every process SIGKILLed at
//! once) while `torii.vacuum` or `VACUUM` discards a lot of undo (committed in-place and cold
//! updates, deletes, and aborted changes it must roll back, kept from discard by a snapshot
//! until then), at three points of its run; and during a workload of cold updates, in-place
//! updates, deletes and re-inserts, rollbacks and savepoints on two connections, with a
//! `torii.vacuum` in the middle (the same workload also runs once without a crash and is
//! checked, so that a wrong result is not blamed on recovery).
//!
//! Every transaction changes a torii table and a heap mirror of it in the same transaction, so
//! whatever crash recovery keeps, the two must be equal afterwards (heap is the oracle): the
//! same rows through sequential, index and bitmap scans. `torii.verify` must be clean,
//! `bt_index_check` (with `heapallindexed`) too, and the tables must take more changes,
//! `torii.vacuum` and VACUUM after the crash.
//!
//! `TORII_TEST_AM=heap` runs the same with heap against heap.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use postgres::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use torii_harness::testing::{
    am, assert_verify_clean, cluster_with_db_conf, is_torii, wal_check_conf, DB,
};
use torii_harness::{err, sql, Cluster, Result};

/// Recovery after each crash checks every replayed page against the primary's image.
fn conf() -> [&'static str; 2] {
    ["autovacuum = off", wal_check_conf()]
}
/// Commits that 3 s of the cold-update workload without a crash must reach at least.
const MIN_COMMITS_WITHOUT_CRASH: u64 = 200;

/// Whether `e` is the end of the connection: closed or reset (SIGKILL), or FATAL 57P01
/// "terminating connection due to unexpected postmaster exit" (`Cluster::crash` SIGKILLs the
/// postmaster a moment before its children: a backend waiting for its client in between says
/// so).
fn lost_connection(e: &postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => db.severity() == "FATAL" && db.code().code() == "57P01",
        None => true,
    }
}

/// Create `t` (AM under test) and its heap mirror `h`, same columns and indexes.
fn create_pair(cl: &mut Client, rows: i64) -> Result<()> {
    for (name, am) in [("t", am()), ("h", "heap".to_string())] {
        cl.batch_execute(&format!(
            "CREATE TABLE {name} (id int PRIMARY KEY, k int NOT NULL, v text, pad text) USING {am};
             CREATE INDEX {name}_k ON {name} (k);
             INSERT INTO {name} SELECT g, g % 5000, md5(g::text), repeat('p', g % 300)
                 FROM generate_series(1, {rows}) g;"
        ))?;
    }
    cl.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")?;
    Ok(())
}

/// `sql` with `{t}` replaced by `t`, then by `h`, in one string (so in one transaction when it
/// starts with BEGIN and ends with COMMIT/ROLLBACK).
fn pair_sql(body: &str) -> String {
    format!("{} {}", body.replace("{t}", "t"), body.replace("{t}", "h"))
}

/// Run a transaction on both tables.
fn both_tx(cl: &mut Client, body: &str, end: &str) -> Result<()> {
    cl.batch_execute(&format!("BEGIN; {} {end}", pair_sql(body)))?;
    Ok(())
}

fn force(cl: &mut Client, kind: &str) -> Result<()> {
    let (seq, idx, bitmap) = match kind {
        "seq" => ("on", "off", "off"),
        "index" => ("off", "on", "off"),
        _ => ("off", "off", "on"),
    };
    cl.batch_execute(&format!(
        "SET enable_seqscan = {seq}; SET enable_indexscan = {idx}; \
         SET enable_indexonlyscan = {idx}; SET enable_bitmapscan = {bitmap}; \
         SET max_parallel_workers_per_gather = 0"
    ))?;
    Ok(())
}

/// The torii table and its heap mirror have the same rows through every scan kind; verify and
/// amcheck are clean.
fn check_pair(cl: &mut Client, phase: &str) -> Result<()> {
    for (kind, q, node) in [
        (
            "seq",
            "SELECT id, k, v, pad FROM {t} ORDER BY id",
            "Seq Scan",
        ),
        (
            "seq",
            "SELECT count(*), sum(k), md5(string_agg(v, ',' ORDER BY id)) FROM {t}",
            "Seq Scan",
        ),
        (
            "index",
            "SELECT k, id, v FROM {t} WHERE k >= 0 ORDER BY k, id",
            "Index",
        ),
        (
            "index",
            "SELECT id, k FROM {t} WHERE id > 0 ORDER BY id",
            "Index",
        ),
        (
            "bitmap",
            "SELECT id, k FROM {t} WHERE k < 100 OR k > 4900 ORDER BY id",
            "Bitmap Heap Scan",
        ),
    ] {
        force(cl, kind)?;
        let plan = sql::explain(cl, &q.replace("{t}", "t"))?;
        if !plan.contains(node) {
            return Err(err(format!("{phase}: expected {node} for {q}:\n{plan}")));
        }
        torii_harness::testing::same_result(cl, q, "h", "t")
            .map_err(|e| err(format!("{phase}: {}", sql::describe(&e))))?;
    }
    cl.batch_execute(
        "RESET enable_seqscan; RESET enable_indexscan; RESET enable_indexonlyscan; \
         RESET enable_bitmapscan; RESET max_parallel_workers_per_gather",
    )?;
    assert_verify_clean(cl, "t").map_err(|e| err(format!("{phase}: {}", sql::describe(&e))))?;
    cl.batch_execute("SELECT bt_index_check('t_pkey', true); SELECT bt_index_check('t_k', true)")
        .map_err(|e| err(format!("{phase}: amcheck: {}", sql::describe(&e))))?;
    Ok(())
}

/// Lots of undo in `t`: committed in-place and cold updates and deletes, and aborted changes
/// (including a row changed twice by one aborted transaction). A snapshot taken first and kept
/// meanwhile keeps writers from discarding any of it.
fn make_undo(c: &Cluster, cl: &mut Client) -> Result<()> {
    let mut holder = c.connect(DB)?;
    holder.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM t")?;
    for round in 0..3 {
        both_tx(
            cl,
            &format!(
                "UPDATE {{t}} SET v = md5(v || '{round}') WHERE id % 2 = {};",
                round % 2
            ),
            "COMMIT",
        )?;
    }
    both_tx(cl, "UPDATE {t} SET k = k + 1 WHERE id % 3 = 0;", "COMMIT")?;
    both_tx(cl, "DELETE FROM {t} WHERE id % 10 = 0;", "COMMIT")?;
    both_tx(
        cl,
        "UPDATE {t} SET v = 'aborted' WHERE id % 2 = 0;",
        "ROLLBACK",
    )?;
    both_tx(cl, "DELETE FROM {t} WHERE id % 5 = 1;", "ROLLBACK")?;
    both_tx(
        cl,
        "UPDATE {t} SET pad = 'aborted twice' WHERE id % 7 = 0; \
         UPDATE {t} SET k = -k WHERE id % 7 = 0;",
        "ROLLBACK",
    )?;
    both_tx(
        cl,
        "INSERT INTO {t} SELECT g, g % 5000, 'aborted insert', '' FROM generate_series(1000001, 1005000) g;",
        "ROLLBACK",
    )?;
    both_tx(
        cl,
        "UPDATE {t} SET pad = pad || 'c' WHERE id % 4 = 3;",
        "COMMIT",
    )?;
    holder.batch_execute("COMMIT")?;
    Ok(())
}

/// Start `statement` in its own session and crash the server (every process SIGKILLed at once:
/// a backend busy in a long statement would otherwise finish it after the postmaster's death)
/// `delay` after it shows as active in pg_stat_activity. Returns whether the statement was cut
/// by the crash (it may have finished before).
fn crash_during(c: &Cluster, statement: &str, delay: Duration) -> Result<bool> {
    let mut worker = c.connect(DB)?;
    let pid: i32 = sql::scalar(&mut worker, "SELECT pg_backend_pid()")?;
    let st = statement.to_string();
    // Err(false, ...) for a lost connection, Err(true, ...) for any other error.
    let handle = thread::spawn(move || {
        worker
            .batch_execute(&st)
            .map_err(|e| (!lost_connection(&e), sql::describe(&e)))
    });
    let mut mon = c.connect(DB)?;
    let t0 = Instant::now();
    loop {
        let active: bool = sql::scalar(
            &mut mon,
            &format!(
                "SELECT coalesce((SELECT state = 'active' FROM pg_stat_activity WHERE pid = {pid}), false)"
            ),
        )?;
        if active || handle.is_finished() || t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(delay);
    drop(mon);
    c.crash()?;
    match handle.join().map_err(|_| err("worker panicked"))? {
        Ok(()) => Ok(false),
        // The crash can only have cut its connection.
        Err((false, _)) => Ok(true),
        Err((true, e)) => Err(err(format!("{statement} failed before the crash: {e}"))),
    }
}

fn vacuum_crash(name: &str, statement: &str) -> Result<()> {
    let (c, mut cl) = cluster_with_db_conf(name, &conf())?;
    create_pair(&mut cl, 60_000)?;
    make_undo(&c, &mut cl)?;
    if is_torii() {
        let st = torii_harness::testing::torii_stats(&mut cl, "t")?;
        eprintln!("{name}: before the crash: {st:?}");
        assert!(st.undo_records > 100_000, "{st:?}");
    }
    check_pair(&mut cl, "before the crash")?;
    drop(cl);
    // Kill it at a few points of its run: early, and later.
    let mut killed_running = 0;
    for delay_ms in [5u64, 60, 250] {
        let running = crash_during(&c, statement, Duration::from_millis(delay_ms))?;
        eprintln!("{name}: crashed {delay_ms} ms in, statement cut: {running}");
        killed_running += running as u32;
        c.start()?;
        let mut cl = c.connect(DB)?;
        check_pair(
            &mut cl,
            &format!("after a kill {delay_ms} ms into {statement}"),
        )?;
        drop(cl);
    }
    if is_torii() {
        assert!(
            killed_running > 0,
            "{statement} always finished before the kill"
        );
    }
    let mut cl = c.connect(DB)?;
    // Finish the work, and go on changing the table.
    cl.batch_execute(statement)?;
    check_pair(&mut cl, &format!("after {statement} ran to its end"))?;
    if is_torii() {
        let v = torii_harness::testing::torii_vacuum(&mut cl, "t")?;
        assert_eq!(v.rows_rolled_back, 0, "{v:?}");
    }
    both_tx(
        &mut cl,
        "UPDATE {t} SET k = k + 7 WHERE id % 11 = 0; UPDATE {t} SET v = 'later' WHERE id % 13 = 0; \
         DELETE FROM {t} WHERE id % 17 = 0; \
         INSERT INTO {t} SELECT g, g % 5000, 'new', '' FROM generate_series(2000001, 2001000) g;",
        "COMMIT",
    )?;
    cl.batch_execute("VACUUM t")?;
    check_pair(&mut cl, "after more changes")?;
    c.assert_no_crash()
}

#[test]
fn crash_during_torii_vacuum() -> Result<()> {
    let stmt = if is_torii() {
        "SELECT * FROM torii.vacuum('t')"
    } else {
        "VACUUM t"
    };
    vacuum_crash("crash-tvacuum", stmt)
}

#[test]
fn crash_during_vacuum() -> Result<()> {
    vacuum_crash("crash-vacuum", "VACUUM t")
}

/// What a worker did: transactions committed and rolled back, and the error that ended it, if
/// it was not the crash.
#[derive(Debug, Default)]
struct WorkerRun {
    committed: u64,
    rolled_back: u64,
    unexpected: Option<String>,
}

/// One worker: random transactions on its own id range, each on both tables, until `stop`, or
/// until its connection is lost while `crashing` (set just before the deliberate crash). The
/// workers' id ranges and inserted ids are disjoint, so no ERROR is legitimate (no deadlock,
/// no unique violation); any, or a lost connection without a crash, ends the worker and fails
/// the test.
fn worker(
    mut cl: Client,
    seed: u64,
    lo: i64,
    hi: i64,
    stop: Arc<AtomicBool>,
    crashing: Arc<AtomicBool>,
) -> WorkerRun {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut run = WorkerRun::default();
    let mut next_insert = 10_000_000 + seed as i64 * 1_000_000;
    while !stop.load(Ordering::SeqCst) {
        let a = rng.gen_range(lo..hi - 50);
        let b = a + rng.gen_range(1..50);
        let body = match rng.gen_range(0..7) {
            0 => format!("UPDATE {{t}} SET k = k + 1 WHERE id BETWEEN {a} AND {b};"),
            1 => format!("UPDATE {{t}} SET v = md5(v) WHERE id BETWEEN {a} AND {b};"),
            2 => format!(
                "UPDATE {{t}} SET pad = repeat('q', (k + {a}) % 400) WHERE id BETWEEN {a} AND {b};"
            ),
            3 => format!(
                "DELETE FROM {{t}} WHERE id = {a}; \
                 INSERT INTO {{t}} VALUES ({a}, {b} % 5000, 'reinserted', 'r') ON CONFLICT DO NOTHING;"
            ),
            4 => {
                next_insert += 1;
                format!(
                    "INSERT INTO {{t}} VALUES ({next_insert}, {a} % 5000, 'inserted', 'i'); \
                     UPDATE {{t}} SET k = k + 2, v = 'moved' WHERE id = {b};"
                )
            }
            5 => format!(
                "UPDATE {{t}} SET v = 'sp kept' WHERE id = {a}; SAVEPOINT s; \
                 UPDATE {{t}} SET k = -k, v = 'sp rolled back' WHERE id BETWEEN {a} AND {b}; \
                 ROLLBACK TO s; UPDATE {{t}} SET k = k + 3 WHERE id = {b};"
            ),
            _ => format!("UPDATE {{t}} SET k = k + 100, v = 'x' WHERE id BETWEEN {a} AND {b};"),
        };
        // Transactions of kind 6 roll back; a few others too.
        let rollback = body.contains("k + 100") || rng.gen_ratio(1, 10);
        let end = if rollback { "ROLLBACK" } else { "COMMIT" };
        let sql = format!("BEGIN; {} {end}", pair_sql(&body));
        match cl.batch_execute(&sql) {
            Ok(()) if rollback => run.rolled_back += 1,
            Ok(()) => run.committed += 1,
            // The connection ended by the crash.
            Err(e) if crashing.load(Ordering::SeqCst) && lost_connection(&e) => break,
            Err(e) => {
                let what = match e.as_db_error() {
                    Some(db) => format!("{} {}", db.severity(), sql::describe(&e)),
                    None => format!("connection lost with no crash under way: {e}"),
                };
                run.unexpected = Some(format!("{what}\n  in: {sql}"));
                break;
            }
        }
    }
    run
}

#[test]
fn crash_during_cold_update_workload() -> Result<()> {
    let (c, mut cl) = cluster_with_db_conf("crash-coldupd", &conf())?;
    create_pair(&mut cl, 40_000)?;
    make_undo(&c, &mut cl)?;
    // Returns the transactions committed.
    let run_workload = |round: u64, cl: &mut Client, crash: bool| -> Result<u64> {
        let stop = Arc::new(AtomicBool::new(false));
        let crashing = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..2u64 {
            let wc = c.connect(DB)?;
            let (stop, crashing) = (stop.clone(), crashing.clone());
            let (lo, hi) = (1 + w as i64 * 20_000, (w as i64 + 1) * 20_000);
            handles.push(thread::spawn(move || {
                worker(wc, w + 10 * round, lo, hi, stop, crashing)
            }));
        }
        // Let the workload run, with a torii.vacuum (or VACUUM) in the middle of it.
        thread::sleep(Duration::from_millis(1500));
        if is_torii() {
            torii_harness::testing::torii_vacuum(cl, "t")?;
        } else {
            cl.batch_execute("VACUUM t")?;
        }
        thread::sleep(Duration::from_millis(1500));
        if crash {
            crashing.store(true, Ordering::SeqCst);
            c.crash()?;
        }
        stop.store(true, Ordering::SeqCst);
        let mut committed = 0;
        for (w, h) in handles.into_iter().enumerate() {
            let run = h.join().map_err(|_| err("worker panicked"))?;
            eprintln!("workload {round}, worker {w}: {run:?}");
            if let Some(e) = run.unexpected {
                return Err(err(format!(
                    "workload {round} (crash: {crash}), worker {w}: an error the workload \
                     cannot legitimately get: {e}"
                )));
            }
            committed += run.committed;
        }
        Ok(committed)
    };
    for round in 0..2 {
        // The same workload without a crash first: what it leaves must be right too.
        let n = run_workload(2 * round, &mut cl, false)?;
        assert!(
            n >= MIN_COMMITS_WITHOUT_CRASH,
            "round {round}: the workload without a crash committed only {n} transactions in 3 s \
             (at least {MIN_COMMITS_WITHOUT_CRASH} expected)"
        );
        check_pair(
            &mut cl,
            &format!("after workload {round} (no crash, {n} commits)"),
        )?;
        let n = run_workload(2 * round + 1, &mut cl, true)?;
        eprintln!("round {round}: {n} commits before the crash");
        assert!(n > 20, "the workload hardly ran: {n}");
        let crashes = c.crash_lines_since(0);
        assert!(
            crashes.is_empty(),
            "round {round}: the server log shows a crash:\n{}",
            crashes.join("\n")
        );
        c.start()?;
        cl = c.connect(DB)?;
        check_pair(&mut cl, &format!("after crash {round}"))?;
    }
    // Undo of transactions cut by the crash is resolved by discard, and the table goes on.
    if is_torii() {
        torii_harness::testing::torii_vacuum(&mut cl, "t")?;
    }
    cl.batch_execute("VACUUM t")?;
    check_pair(&mut cl, "after vacuum")?;
    both_tx(
        &mut cl,
        "UPDATE {t} SET k = k + 1 WHERE id % 9 = 0;",
        "COMMIT",
    )?;
    check_pair(&mut cl, "after more updates")?;
    c.assert_no_crash()
}
