//! Crash recovery of torii tables: `kill -9` of the postmaster (or of every server process)
//! while rows are being loaded. Committed rows must all be there afterwards, rows of the
//! interrupted load must not, `torii.verify` must be clean, indexes must agree with the table
//! (amcheck), and the table must take new rows.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use postgres::Client;
use torii_harness::testing::{am, assert_verify_clean, cluster_with_db_conf, wal_check_conf, DB};
use torii_harness::{err, sql, workload, Cluster, Result};

const COMMITTED_COPY: u64 = 20_000;
const COMMITTED_INSERT: u64 = 5_000;
/// ids of the interrupted load start here
const UNCOMMITTED_FROM: i64 = 10_000_000;

fn prepare(cl: &mut Client) -> Result<()> {
    workload::create_accounts_table(cl, "t", &am())?;
    cl.batch_execute("CREATE INDEX t_id ON t (id); CREATE INDEX t_account ON t (account)")?;
    assert_eq!(
        workload::copy_in(cl, "t", 1, COMMITTED_COPY, workload::SEED)?,
        COMMITTED_COPY
    );
    assert_eq!(
        workload::insert_select(cl, "t", COMMITTED_COPY as i64 + 1, COMMITTED_INSERT)?,
        COMMITTED_INSERT
    );
    cl.batch_execute(&format!(
        "CREATE UNLOGGED TABLE u (id int, v text) USING {}; \
         INSERT INTO u SELECT g, 'unlogged' FROM generate_series(1, 1000) g; \
         CREATE EXTENSION IF NOT EXISTS amcheck",
        am()
    ))?;
    Ok(())
}

/// (count, sum(id), sum of every row's text hash) of the committed rows.
fn digest(cl: &mut Client) -> Result<String> {
    sql::result_text(
        cl,
        "SELECT count(*), sum(id), sum(hashtext(x::text)::bigint) FROM t x",
    )
}

fn check_after_restart(c: &Cluster, before: &str) -> Result<()> {
    let mut cl = c.connect(DB)?;
    cl.batch_execute("SET max_parallel_workers_per_gather = 0")?;
    assert_eq!(
        digest(&mut cl)?,
        before,
        "committed rows after crash recovery"
    );
    let leaked: i64 = sql::scalar(
        &mut cl,
        &format!("SELECT count(*) FROM t WHERE id >= {UNCOMMITTED_FROM}"),
    )?;
    assert_eq!(leaked, 0, "rows of the interrupted load are visible");
    assert_verify_clean(&mut cl, "t")?;
    // The indexes agree with the table.
    cl.batch_execute(
        "SELECT bt_index_check('t_id', true); SELECT bt_index_check('t_account', true)",
    )?;
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    assert_eq!(
        sql::result_text(
            &mut cl,
            &format!("SELECT count(*) FROM t WHERE id >= {UNCOMMITTED_FROM}")
        )?,
        "0"
    );
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM t WHERE id > 0")?,
        (COMMITTED_COPY + COMMITTED_INSERT) as i64
    );
    cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
    // The unlogged table was reset to empty, and works.
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM u")?, 0);
    cl.batch_execute("INSERT INTO u VALUES (1, 'again')")?;
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM u")?, 1);
    // New rows go in, through COPY and INSERT.
    let next = (COMMITTED_COPY + COMMITTED_INSERT) as i64 + 1;
    workload::copy_in(&mut cl, "t", next, 3000, 99)?;
    workload::insert_select(&mut cl, "t", next + 3000, 2000)?;
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM t")?,
        (COMMITTED_COPY + COMMITTED_INSERT + 5000) as i64
    );
    assert_verify_clean(&mut cl, "t")?;
    cl.batch_execute("SELECT bt_index_check('t_id', true)")?;
    // And all of it survives a clean restart.
    let d = digest(&mut cl)?;
    drop(cl);
    c.restart()?;
    let mut cl = c.connect(DB)?;
    assert_eq!(digest(&mut cl)?, d);
    assert_verify_clean(&mut cl, "t")?;
    Ok(())
}

/// Wait until `cond` holds (polling), or fail after `timeout`.
fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let t0 = Instant::now();
    while !cond()? {
        if t0.elapsed() > timeout {
            return Err(err(format!("timed out waiting for {what}")));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn kill9_during_copy() -> Result<()> {
    let (c, mut cl) = cluster_with_db_conf("crash-copy", &[wal_check_conf()])?;
    prepare(&mut cl)?;
    let before = digest(&mut cl)?;

    // A COPY FROM STDIN that keeps streaming rows until the server goes away.
    let mut loader = c.connect(DB)?;
    let streaming = Arc::new(AtomicBool::new(true));
    let streaming2 = streaming.clone();
    let copy = thread::spawn(move || -> std::result::Result<u64, String> {
        let r = (|| -> Result<u64> {
            let mut w = loader.copy_in("COPY t FROM STDIN (FORMAT csv)")?;
            let mut g = workload::RowGen::new(5, UNCOMMITTED_FROM);
            let mut buf = Vec::new();
            for _ in 0..2_000_000 {
                for _ in 0..500 {
                    g.csv_line(&mut buf);
                }
                w.write_all(&buf)?;
                buf.clear();
            }
            Ok(w.finish()?)
        })();
        streaming2.store(false, Ordering::SeqCst);
        r.map_err(|e| e.to_string())
    });
    // Let it write a good number of rows (and pages) first.
    let mut mon = c.connect(DB)?;
    wait_for(Duration::from_secs(300), "COPY progress", || {
        let n: Option<i64> = mon
            .query_opt(
                "SELECT tuples_processed FROM pg_stat_progress_copy WHERE relid = 't'::regclass",
                &[],
            )?
            .map(|r| r.get(0));
        assert!(
            streaming.load(Ordering::SeqCst),
            "the COPY ended before the kill"
        );
        Ok(n.unwrap_or(0) > 50_000)
    })?;
    drop(mon);
    drop(cl);
    c.kill9()?;
    let result = copy.join().map_err(|_| err("COPY thread panicked"))?;
    assert!(
        result.is_err(),
        "the COPY must not have finished: {result:?}"
    );

    c.start()?;
    assert!(c
        .log_contents()
        .contains("database system was not properly shut down"));
    check_after_restart(&c, &before)?;
    c.assert_no_crash()
}

#[test]
fn crash_during_insert_select() -> Result<()> {
    let (c, mut cl) = cluster_with_db_conf("crash-insert", &[wal_check_conf()])?;
    prepare(&mut cl)?;
    let before = digest(&mut cl)?;

    // A big INSERT ... SELECT in an explicit transaction, killed (every server process at once)
    // while it runs.
    let mut loader = c.connect(DB)?;
    let insert = thread::spawn(move || -> std::result::Result<(), String> {
        (|| -> Result<()> {
            loader.batch_execute("BEGIN")?;
            workload::insert_select(&mut loader, "t", UNCOMMITTED_FROM, 50_000_000)?;
            loader.batch_execute("COMMIT")?;
            Ok(())
        })()
        .map_err(|e| e.to_string())
    });
    let size0 = sql::relation_size(&mut cl, "t")?;
    wait_for(Duration::from_secs(300), "the table to grow", || {
        Ok(sql::relation_size(&mut cl, "t")? > size0 + 8 * 1024 * 1024)
    })?;
    // A second transaction that is committed while the first one still runs.
    cl.batch_execute("CREATE TABLE t2 (id int); INSERT INTO t2 VALUES (1), (2)")?;
    drop(cl);
    c.crash()?;
    let result = insert.join().map_err(|_| err("INSERT thread panicked"))?;
    assert!(result.is_err(), "the INSERT must not have committed");

    c.start()?;
    assert_eq!(c.query_scalar_in::<i64>(DB, "SELECT count(*) FROM t2")?, 2);
    check_after_restart(&c, &before)?;
    c.assert_no_crash()
}

#[test]
fn prepared_transactions_survive_crash() -> Result<()> {
    let (c, mut cl) = cluster_with_db_conf("crash-2pc", &[wal_check_conf()])?;
    cl.batch_execute(&format!(
        "CREATE TABLE p (id int, v text) USING {}; \
         INSERT INTO p SELECT g, 'base' FROM generate_series(1, 100) g",
        am()
    ))?;
    cl.batch_execute(
        "BEGIN; INSERT INTO p SELECT g, 'commit me' FROM generate_series(101, 200) g; \
         PREPARE TRANSACTION 'to_commit'",
    )?;
    cl.batch_execute(
        "BEGIN; INSERT INTO p SELECT g, 'roll me back' FROM generate_series(201, 300) g; \
         PREPARE TRANSACTION 'to_rollback'",
    )?;
    // Prepared but not committed: invisible.
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM p")?, 100);
    drop(cl);
    c.kill9()?;
    c.start()?;
    let mut cl = c.connect(DB)?;
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM pg_prepared_xacts")?,
        2
    );
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM p")?, 100);
    cl.batch_execute("COMMIT PREPARED 'to_commit'")?;
    cl.batch_execute("ROLLBACK PREPARED 'to_rollback'")?;
    assert_eq!(
        sql::result_text(&mut cl, "SELECT v, count(*) FROM p GROUP BY v ORDER BY v")?,
        "base|100\ncommit me|100"
    );
    assert_verify_clean(&mut cl, "p")?;
    c.assert_no_crash()
}
