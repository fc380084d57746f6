//! torii's two WAL modes, as a user meets them.
//!
//! * `row_level_wal_needs_torii_preloaded`: with torii preloaded (the harness default) row
//!   changes are records of torii's resource manager (`pg_walinspect` counts them, and none of
//!   them is generic WAL); a cluster whose WAL holds such records refuses to start without
//!   torii in `shared_preload_libraries` (PostgreSQL's own "resource manager ... not
//!   registered"), and starts again, with every committed row, once torii is back.
//! * `generic_wal_without_preload_says_so_once`: a backend of a cluster that does not preload
//!   torii writes generic WAL, and its first write says so in one NOTICE; crash recovery of
//!   those records needs no torii.

use torii_harness::testing::{
    assert_verify_clean, cluster_with_db_conf, connect_with_notices, is_torii, DB,
};
use torii_harness::{sql, Result};

/// Records per resource manager written between two LSNs.
fn records_by_rmgr(cl: &mut postgres::Client, from: &str, to: &str) -> Result<Vec<(String, i64)>> {
    let rows = cl.query(
        "SELECT \"resource_manager/record_type\", count FROM pg_get_wal_stats($1::text::pg_lsn, $2::text::pg_lsn) \
         WHERE count > 0 ORDER BY 1",
        &[&from, &to],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn count_of(stats: &[(String, i64)], rmgr: &str) -> i64 {
    stats
        .iter()
        .find(|(n, _)| n == rmgr)
        .map(|(_, c)| *c)
        .unwrap_or(0)
}

const WORKLOAD: &str =
    "INSERT INTO t SELECT g, g, repeat('x', 40) FROM generate_series(1, 5000) g; \
     UPDATE t SET v = v + 1 WHERE id % 2 = 0; \
     UPDATE t SET id = id + 100000 WHERE id % 7 = 0; \
     DELETE FROM t WHERE id % 5 = 0; \
     INSERT INTO t VALUES (1, 0, 'dup') ON CONFLICT (id) DO UPDATE SET v = t.v + 10";

#[test]
fn row_level_wal_needs_torii_preloaded() -> Result<()> {
    if !is_torii() || torii_harness::testing::generic_wal() {
        eprintln!("skipped: row-level WAL is torii's with torii preloaded");
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf("walmode-rowlevel", &["autovacuum = off"])?;
    let rmgr: String = sql::scalar(
        &mut cl,
        "SELECT rm_name || ' ' || rm_id FROM pg_get_wal_resource_managers() WHERE rm_name = 'torii'",
    )?;
    assert_eq!(rmgr, "torii 171");
    cl.batch_execute(
        "CREATE EXTENSION pg_walinspect; \
         CREATE TABLE t (id int PRIMARY KEY, v int, s text) USING torii; \
         CHECKPOINT",
    )?;
    let from: String = sql::scalar(&mut cl, "SELECT pg_current_wal_lsn()::text")?;
    cl.batch_execute(WORKLOAD)?;
    let to: String = sql::scalar(&mut cl, "SELECT pg_current_wal_lsn()::text")?;
    let stats = records_by_rmgr(&mut cl, &from, &to)?;
    eprintln!("records by resource manager: {stats:?}");
    // 5000 inserts (in pages), 2500 in-place updates, 714 cold updates, 1000 deletes, ...
    assert!(count_of(&stats, "torii") > 4000, "{stats:?}");
    // Row changes log no generic WAL; the index B-tree (btree) logs its own records.
    assert!(count_of(&stats, "Generic") < 50, "{stats:?}");
    let want: String = sql::scalar(&mut cl, "SELECT count(*) || ' ' || sum(v) FROM t")?;
    drop(cl);

    // Crash, then try to come back without torii: recovery cannot replay torii's records.
    c.kill9()?;
    c.append_conf(&["shared_preload_libraries = ''"])?;
    let e = c
        .start()
        .expect_err("a cluster with torii WAL to replay started without torii");
    let text = e.to_string();
    assert!(
        text.contains("resource manager with ID 171 not registered"),
        "unexpected start failure: {text}"
    );
    c.append_conf(&["shared_preload_libraries = 'torii'"])?;
    c.start()?;
    let mut cl = c.connect(DB)?;
    let got: String = sql::scalar(&mut cl, "SELECT count(*) || ' ' || sum(v) FROM t")?;
    assert_eq!(got, want, "rows after recovery");
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}

#[test]
fn generic_wal_without_preload_says_so_once() -> Result<()> {
    if !is_torii() {
        eprintln!("skipped: torii only");
        return Ok(());
    }
    let (c, cl) = cluster_with_db_conf(
        "walmode-generic",
        &["shared_preload_libraries = ''", "autovacuum = off"],
    )?;
    drop(cl);
    let (mut cl, notices) = connect_with_notices(&c)?;
    cl.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS pg_walinspect; \
         CREATE TABLE t (id int PRIMARY KEY, v int, s text) USING torii",
    )?;
    let from: String = sql::scalar(&mut cl, "SELECT pg_current_wal_lsn()::text")?;
    cl.batch_execute(WORKLOAD)?;
    cl.batch_execute("INSERT INTO t VALUES (-1, 0, 'again')")?;
    let to: String = sql::scalar(&mut cl, "SELECT pg_current_wal_lsn()::text")?;
    let said: Vec<String> = notices
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.contains("shared_preload_libraries"))
        .cloned()
        .collect();
    assert_eq!(
        said,
        vec!["torii is not loaded through shared_preload_libraries: its writes use generic WAL"],
        "one NOTICE per backend"
    );
    let stats = records_by_rmgr(&mut cl, &from, &to)?;
    assert!(count_of(&stats, "Generic") > 4000, "{stats:?}");
    assert!(stats.iter().all(|(n, _)| n != "torii"), "{stats:?}");
    let want: String = sql::scalar(&mut cl, "SELECT count(*) || ' ' || sum(v) FROM t")?;
    drop(cl);
    // Generic WAL replays without torii.
    c.kill9()?;
    c.start()?;
    let mut cl = c.connect(DB)?;
    let got: String = sql::scalar(&mut cl, "SELECT count(*) || ' ' || sum(v) FROM t")?;
    assert_eq!(got, want);
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}
