//! What operators watch while torii works: `pg_stat_progress_vacuum` and
//! `pg_stat_progress_cluster` filled in by torii's VACUUM and VACUUM FULL/CLUSTER, the
//! `torii.progress` view for `torii.verify`, cost-based vacuum delay, VACUUM (VERBOSE) and
//! autovacuum's log lines, wait events, and cancelling at any page (`src/progress.rs`).
//!
//! Long work is slowed down with the test hook `torii.debug_page_delay` (a pause per page) so a
//! second session can watch it.

use postgres::Client;
use std::thread;
use std::time::{Duration, Instant};
use torii_harness::testing::{
    assert_verify_clean, cluster_with_db_conf, connect_with_notices, is_torii, DB,
};
use torii_harness::{sql, Cluster, Result};

/// Runs the statements `stmts` (one by one: VACUUM cannot share a string) in a new session
/// of `c` on a thread; the thread returns the first SQLSTATE on error.
fn run_in_background(
    c: &Cluster,
    stmts: &[&str],
) -> Result<(i32, thread::JoinHandle<Option<String>>)> {
    let mut cl = c.connect(DB)?;
    let pid: i32 = sql::scalar(&mut cl, "SELECT pg_backend_pid()")?;
    let stmts: Vec<String> = stmts.iter().map(|s| s.to_string()).collect();
    let h = thread::spawn(move || {
        for s in &stmts {
            if let Err(e) = cl.batch_execute(s) {
                return Some(sql::sqlstate(&e).unwrap_or_else(|| e.to_string()));
            }
        }
        None
    });
    Ok((pid, h))
}

/// Polls `query` (text columns) every 5 ms until `done` finishes; returns the rows seen.
fn sample_while(
    cl: &mut Client,
    query: &str,
    done: &thread::JoinHandle<Option<String>>,
) -> Result<Vec<Vec<String>>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the watched command did not finish"
        );
        for r in sql::rows_text(cl, query)? {
            seen.push(r.into_iter().map(|v| v.unwrap_or_default()).collect());
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(seen)
}

/// The numeric column `i` of each row.
fn col(rows: &[Vec<String>], i: usize) -> Vec<i64> {
    rows.iter().map(|r| r[i].parse().unwrap()).collect()
}

fn is_sorted(v: &[i64]) -> bool {
    v.windows(2).all(|w| w[0] <= w[1])
}

/// A table `t` of `n` rows with a primary key, a third of them deleted and committed, so that
/// VACUUM has undo to discard, dead pointers to collect and index entries to remove.
fn churned_table(cl: &mut Client, t: &str, n: i64) -> Result<()> {
    cl.batch_execute(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v int, pad text) USING torii; \
         INSERT INTO {t} SELECT g, g, repeat('x', 60) FROM generate_series(1, {n}) g; \
         UPDATE {t} SET v = v + 1 WHERE id % 3 = 1; \
         DELETE FROM {t} WHERE id % 3 = 0"
    ))?;
    Ok(())
}

#[test]
fn vacuum_fills_pg_stat_progress_vacuum() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf("ops-progress-vacuum", &["autovacuum = off"])?;
    churned_table(&mut cl, "t", 30000)?;
    let blocks: i64 = sql::scalar(&mut cl, "SELECT pg_relation_size('t') / 8192")?;
    let relid: i64 = sql::scalar(&mut cl, "SELECT 't'::regclass::oid::bigint")?;
    let (_, h) = run_in_background(&c, &["SET torii.debug_page_delay = 3", "VACUUM t"])?;
    let rows = sample_while(
        &mut cl,
        &format!(
            "SELECT phase, heap_blks_total, heap_blks_scanned, heap_blks_vacuumed, \
             index_vacuum_count, num_dead_tuples FROM pg_stat_progress_vacuum WHERE relid = {relid}"
        ),
        &h,
    )?;
    assert_eq!(h.join().unwrap(), None, "VACUUM failed");
    let phase =
        |p: &str| -> Vec<Vec<String>> { rows.iter().filter(|r| r[0] == p).cloned().collect() };
    let scanning = phase("scanning heap");
    let scanned = col(&scanning, 2);
    assert!(
        scanned.iter().any(|&s| s > 0)
            && scanned
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                > 3,
        "the data-page pass shows no progress: {scanning:?}"
    );
    assert!(
        is_sorted(&scanned),
        "heap_blks_scanned went back: {scanned:?}"
    );
    assert!(
        col(&scanning, 1).iter().all(|&t| t == blocks),
        "heap_blks_total is not the table's {blocks} blocks: {scanning:?}"
    );
    assert!(scanned.iter().all(|&s| s <= blocks));
    let vacuuming = phase("vacuuming heap");
    let vacuumed = col(&vacuuming, 3);
    assert!(
        vacuumed.iter().any(|&v| v > 0) && is_sorted(&vacuumed),
        "no heap vacuuming progress: {rows:?}"
    );
    // Dead pointers of 10,000 deleted rows, after one index pass.
    assert!(col(&vacuuming, 4).iter().all(|&n| n == 1), "{vacuuming:?}");
    assert!(
        col(&vacuuming, 5).iter().all(|&n| n == 10000),
        "{vacuuming:?}"
    );
    // Phases only move forward (scanning, vacuuming indexes, vacuuming heap, cleanup ...).
    let order = [
        "scanning heap",
        "vacuuming indexes",
        "vacuuming heap",
        "cleaning up indexes",
        "truncating heap",
        "performing final cleanup",
    ];
    let ranks: Vec<i64> = rows
        .iter()
        .map(|r| {
            order
                .iter()
                .position(|p| *p == r[0])
                .expect("unknown phase") as i64
        })
        .collect();
    assert!(is_sorted(&ranks), "phases out of order: {rows:?}");
    let left: i64 = sql::scalar(&mut cl, "SELECT count(*) FROM pg_stat_progress_vacuum")?;
    assert_eq!(left, 0, "the progress row outlived the VACUUM");
    assert_verify_clean(&mut cl, "t")?;
    // torii.vacuum() reports in the same view: its undo discard and dead pointers.
    cl.batch_execute("DELETE FROM t WHERE id % 3 = 1")?;
    let (_, h) = run_in_background(
        &c,
        &[
            "SET torii.debug_page_delay = 3",
            "SELECT * FROM torii.vacuum('t')",
        ],
    )?;
    let rows = sample_while(
        &mut cl,
        &format!(
            "SELECT phase, heap_blks_vacuumed FROM pg_stat_progress_vacuum WHERE relid = {relid}"
        ),
        &h,
    )?;
    assert_eq!(h.join().unwrap(), None, "torii.vacuum failed");
    let vacuumed = col(
        &rows
            .iter()
            .filter(|r| r[0] == "vacuuming heap")
            .cloned()
            .collect::<Vec<_>>(),
        1,
    );
    assert!(
        rows.iter().any(|r| r[0] == "scanning heap") && vacuumed.iter().any(|&v| v > 0),
        "torii.vacuum not reported: {rows:?}"
    );
    let left: i64 = sql::scalar(&mut cl, "SELECT count(*) FROM pg_stat_progress_vacuum")?;
    assert_eq!(left, 0, "the progress row outlived torii.vacuum");
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}

#[test]
fn cost_based_delay_paces_torii_vacuum() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf("ops-cost-delay", &["autovacuum = off"])?;
    // The case: 60,000 rows, an update and a delete of a third, twice over.
    churned_table(&mut cl, "a", 60000)?;
    churned_table(&mut cl, "b", 60000)?;
    let t0 = Instant::now();
    cl.batch_execute("SET vacuum_cost_delay = 0")?;
    cl.batch_execute("VACUUM a")?;
    let free = t0.elapsed();
    let (pid, h) = run_in_background(
        &c,
        &[
            "SET vacuum_cost_delay = '2ms'; SET vacuum_cost_limit = 1",
            "VACUUM b",
        ],
    )?;
    let t0 = Instant::now();
    let waits = sample_while(
        &mut cl,
        &format!("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = {pid}"),
        &h,
    )?;
    assert_eq!(h.join().unwrap(), None, "VACUUM failed");
    let paced = t0.elapsed();
    assert!(
        paced >= Duration::from_millis(500) && paced > free * 3,
        "cost-based delay did not pace VACUUM: {paced:?} with, {free:?} without"
    );
    // The sleeps show as heap's do.
    assert!(
        waits
            .iter()
            .any(|w| w[0] == "Timeout" && w[1] == "VacuumDelay"),
        "no VacuumDelay wait event seen: {waits:?}"
    );
    assert_verify_clean(&mut cl, "b")?;
    c.assert_no_crash()
}

#[test]
fn vacuum_verbose_and_autovacuum_write_heap_like_lines() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, cl) = cluster_with_db_conf(
        "ops-vacuum-log",
        &[
            "autovacuum = off",
            "autovacuum_naptime = 1",
            "log_autovacuum_min_duration = 0",
        ],
    )?;
    drop(cl);
    let (mut cl, notices) = connect_with_notices(&c)?;
    churned_table(&mut cl, "t", 20000)?;
    cl.batch_execute("VACUUM (VERBOSE) t")?;
    let said = notices.lock().unwrap().clone();
    let name = format!("\"{DB}.public.t\"");
    assert!(
        said.iter().any(|m| *m == format!("vacuuming {name}")),
        "no start line: {said:?}"
    );
    let fin = said
        .iter()
        .find(|m| m.starts_with(&format!("finished vacuuming {name}: index scans: 1\n")))
        .unwrap_or_else(|| panic!("no finished line: {said:?}"));
    for part in [
        " removed, ",
        "tuples: ",
        "undo: ",
        "dead pointers freed: 6666\n",
        "resolved horizon: ",
        "buffer usage: ",
        "WAL usage: ",
        "elapsed: ",
    ] {
        assert!(fin.contains(part), "{part:?} missing in:\n{fin}");
    }
    // Autovacuum, with log_autovacuum_min_duration = 0, after enough inserts.
    let from = c.log_len();
    cl.batch_execute("ALTER SYSTEM SET autovacuum = on")?;
    cl.batch_execute(
        "SELECT pg_reload_conf(); \
         CREATE TABLE av (id int, v int) USING torii; \
         INSERT INTO av SELECT g, g FROM generate_series(1, 20000) g; \
         DELETE FROM av WHERE id % 2 = 0",
    )?;
    let want = format!("automatic vacuum of table \"{DB}.public.av\": index scans: 0");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !c.log_since(from).contains(&want) {
        assert!(
            Instant::now() < deadline,
            "no autovacuum log line for av:\n{}",
            c.log_since(from)
        );
        thread::sleep(Duration::from_millis(200));
    }
    let log = c.log_since(from);
    let at = log.find(&want).unwrap();
    assert!(log[at..].contains("undo: "), "{}", &log[at..]);
    c.assert_no_crash()
}

#[test]
fn vacuum_full_and_cluster_fill_pg_stat_progress_cluster() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf("ops-progress-cluster", &["autovacuum = off"])?;
    churned_table(&mut cl, "t", 20000)?;
    let relid: i64 = sql::scalar(&mut cl, "SELECT 't'::regclass::oid::bigint")?;
    let q = format!(
        "SELECT command, phase, heap_blks_total, heap_blks_scanned, heap_tuples_scanned, \
         heap_tuples_written FROM pg_stat_progress_cluster WHERE relid = {relid}"
    );
    for (stmt, phase) in [
        ("VACUUM FULL t", "seq scanning heap"),
        ("CLUSTER t USING t_pkey", "index scanning heap"),
    ] {
        let (_, h) = run_in_background(&c, &["SET torii.debug_page_delay = 3", stmt])?;
        let rows = sample_while(&mut cl, &q, &h)?;
        assert_eq!(h.join().unwrap(), None, "{stmt} failed");
        let copying: Vec<_> = rows.iter().filter(|r| r[1] == phase).cloned().collect();
        let written = col(&copying, 5);
        assert!(
            written.iter().any(|&w| w > 0) && is_sorted(&written) && is_sorted(&col(&copying, 4)),
            "{stmt}: no copy progress in {rows:?}"
        );
        assert!(
            written.iter().all(|&w| w <= 20000 - 20000 / 3),
            "{stmt}: more rows written than live: {copying:?}"
        );
        let cmd = if stmt.starts_with("VACUUM") {
            "VACUUM FULL"
        } else {
            "CLUSTER"
        };
        assert!(copying.iter().all(|r| r[0] == cmd), "{copying:?}");
        if phase == "seq scanning heap" {
            let scanned = col(&copying, 3);
            assert!(
                is_sorted(&scanned) && scanned.iter().any(|&s| s > 0),
                "{copying:?}"
            );
        }
        let n: i64 = sql::scalar(&mut cl, "SELECT count(*) FROM t")?;
        assert_eq!(n, 20000 - 20000 / 3);
    }
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}

#[test]
fn torii_verify_shows_in_torii_progress() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf("ops-progress-verify", &["autovacuum = off"])?;
    churned_table(&mut cl, "t", 20000)?;
    let blocks: i64 = sql::scalar(&mut cl, "SELECT pg_relation_size('t') / 8192")?;
    let verify = [
        "SET torii.debug_page_delay = 3",
        "SELECT count(*) FROM torii.verify('t')",
    ];
    let (pid, h) = run_in_background(&c, &verify)?;
    let rows = sample_while(
        &mut cl,
        "SELECT pid, command, relid::regclass::text, blocks_done, blocks_total FROM torii.progress",
        &h,
    )?;
    assert_eq!(h.join().unwrap(), None, "torii.verify failed");
    assert!(rows.len() > 3, "torii.verify was not seen: {rows:?}");
    for r in &rows {
        assert_eq!(
            (r[0].as_str(), r[1].as_str(), r[2].as_str()),
            (pid.to_string().as_str(), "torii.verify", "t")
        );
    }
    let done = col(&rows, 3);
    assert!(is_sorted(&done) && done.iter().any(|&d| d > 0), "{done:?}");
    assert!(col(&rows, 4).iter().all(|&t| t == blocks), "{rows:?}");
    let left: i64 = sql::scalar(&mut cl, "SELECT count(*) FROM torii.progress")?;
    assert_eq!(left, 0, "the progress row outlived torii.verify");
    // Another role sees that something runs, not on what.
    cl.batch_execute("CREATE ROLE watcher LOGIN; GRANT USAGE ON SCHEMA torii TO watcher")?;
    let (_, h) = run_in_background(&c, &verify)?;
    let mut other = c
        .client_config(DB)
        .user("watcher")
        .connect(postgres::NoTls)?;
    let rows = sample_while(
        &mut other,
        "SELECT command, relid IS NULL, blocks_done IS NULL FROM torii.progress",
        &h,
    )?;
    assert_eq!(h.join().unwrap(), None);
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r == &["torii.verify", "t", "t"]),
        "{rows:?}"
    );
    c.assert_no_crash()
}

#[test]
fn cancelled_vacuum_and_verify_leave_the_table_clean() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf("ops-cancel", &["autovacuum = off"])?;
    churned_table(&mut cl, "t", 30000)?;
    let expected = sql::result_text(&mut cl, "SELECT count(*), sum(v) FROM t")?;
    for (stmt, view) in [
        (
            "SELECT count(*) FROM torii.verify('t')",
            "SELECT blocks_done FROM torii.progress WHERE pid = {pid}",
        ),
        (
            "VACUUM t",
            "SELECT heap_blks_scanned FROM pg_stat_progress_vacuum WHERE pid = {pid}",
        ),
    ] {
        let (pid, h) = run_in_background(&c, &["SET torii.debug_page_delay = 20", stmt])?;
        let view = view.replace("{pid}", &pid.to_string());
        // Cancel once it is under way, past its first page.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline && !h.is_finished(),
                "{stmt} not seen running"
            );
            let v = sql::column_text(&mut cl, &view)?;
            if v.first().is_some_and(|d| d.parse::<i64>().unwrap_or(0) > 2) {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let ok: bool = sql::scalar(&mut cl, &format!("SELECT pg_cancel_backend({pid})"))?;
        assert!(ok);
        assert_eq!(
            h.join().unwrap().as_deref(),
            Some("57014"),
            "{stmt} was not cancelled"
        );
        assert_verify_clean(&mut cl, "t")?;
        assert_eq!(
            sql::result_text(&mut cl, "SELECT count(*), sum(v) FROM t")?,
            expected
        );
        let left: i64 = sql::scalar(
            &mut cl,
            "SELECT (SELECT count(*) FROM torii.progress) + (SELECT count(*) FROM pg_stat_progress_vacuum)",
        )?;
        assert_eq!(left, 0);
    }
    // The interrupted VACUUM's work is finished by the next one.
    cl.batch_execute("VACUUM t")?;
    assert_verify_clean(&mut cl, "t")?;
    assert_eq!(
        sql::result_text(&mut cl, "SELECT count(*), sum(v) FROM t")?,
        expected
    );
    c.assert_no_crash()
}

#[test]
fn lock_waits_show_as_wait_events() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf("ops-wait-events", &["autovacuum = off"])?;
    cl.batch_execute(
        "CREATE TABLE t (id int PRIMARY KEY, v int) USING torii; \
         INSERT INTO t SELECT g, 0 FROM generate_series(1, 10) g",
    )?;
    let mut holder = c.connect(DB)?;
    holder.batch_execute("BEGIN; UPDATE t SET v = 1 WHERE id = 5")?;
    let (pid, h) = run_in_background(&c, &["UPDATE t SET v = 2 WHERE id = 5"])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let w = sql::rows_text(
            &mut cl,
            &format!("SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = {pid}"),
        )?;
        let w: Vec<String> = w[0].iter().map(|v| v.clone().unwrap_or_default()).collect();
        if w[0] == "Lock" || Instant::now() > deadline {
            break w;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(seen, ["Lock", "transactionid"], "the blocked update's wait");
    holder.batch_execute("COMMIT")?;
    assert_eq!(h.join().unwrap(), None);
    let v: i32 = sql::scalar(&mut cl, "SELECT v FROM t WHERE id = 5")?;
    assert_eq!(v, 2);
    c.assert_no_crash()
}

#[test]
fn torii_progress_needs_preload() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf(
        "ops-progress-unloaded",
        &["shared_preload_libraries = ''", "autovacuum = off"],
    )?;
    sql::expect_sqlstate(&mut cl, "SELECT * FROM torii.progress", "55000")?;
    // torii.verify still works, unreported.
    cl.batch_execute("CREATE TABLE t (id int) USING torii; INSERT INTO t VALUES (1)")?;
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}
