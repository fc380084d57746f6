//! The visibility map: VACUUM marks the pages whose rows every snapshot sees, index-only scans
//! then answer from the index alone for those pages, and every change of such a page clears
//! its bit first — also across a crash (`torii_core::vm`, `src/storage/vm.rs`).
//!
//! Every answer of the torii table `t` is compared with a heap twin `h` that went through the
//! same statements.

use postgres::Client;
use torii_harness::testing::{
    assert_verify_clean, cluster_with_db_conf, is_torii, torii_stats, DB,
};
use torii_harness::{sql, Result};

/// The plan of `q` run with EXPLAIN ANALYZE, and its index-only scan's "Heap Fetches".
fn run_index_only(cl: &mut Client, q: &str) -> Result<(String, i64)> {
    let plan = sql::column_text(
        cl,
        &format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {q}"),
    )?
    .join("\n");
    assert!(
        plan.contains("Index Only Scan"),
        "not an index-only scan:\n{plan}"
    );
    let fetches = plan
        .lines()
        .find_map(|l| l.trim().strip_prefix("Heap Fetches: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(-1);
    Ok((plan, fetches))
}

/// Both tables answer `q` (written for `t`) the same.
fn same(cl: &mut Client, q: &str) -> Result<String> {
    let a = sql::result_text(cl, q)?;
    let b = sql::result_text(cl, &q.replace(" t ", " h "))?;
    assert_eq!(a, b, "torii and heap differ for {q}");
    Ok(a)
}

const IDS: &str = "SELECT id FROM t WHERE id <= 30000 ORDER BY id";
const COUNT: &str = "SELECT count(*) FROM t WHERE id <= 30000";

#[test]
fn index_only_scans_follow_the_visibility_map() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf("vismap", &["autovacuum = off"])?;
    let setup = "SET enable_seqscan = off; SET enable_bitmapscan = off";
    cl.batch_execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v int) USING torii; \
         CREATE TABLE h (id int PRIMARY KEY, v int) USING heap; \
         INSERT INTO t SELECT g, g FROM generate_series(1, 20000) g; \
         INSERT INTO h SELECT * FROM t; {setup}"
    ))?;
    // (VACUUM cannot run in the implicit transaction of a multi-statement string.)
    cl.batch_execute("VACUUM ANALYZE t")?;
    cl.batch_execute("VACUUM ANALYZE h")?;
    let st = torii_stats(&mut cl, "t")?;
    let allvis: i32 = sql::scalar(
        &mut cl,
        "SELECT relallvisible FROM pg_class WHERE relname = 't'",
    )?;
    println!(
        "after VACUUM: relallvisible {allvis}, data pages {}",
        st.data_pages
    );
    assert_eq!(allvis as i64, st.data_pages, "VACUUM marks every data page");
    let (plan, fetches) = run_index_only(&mut cl, COUNT)?;
    assert_eq!(fetches, 0, "all-visible pages need no fetch:\n{plan}");
    same(&mut cl, COUNT)?;

    // Changes clear the bits of their pages: the scan fetches those rows and sees the changes.
    let change = |cl: &mut Client, s: &str| -> Result<()> {
        cl.batch_execute(s)?;
        cl.batch_execute(&s.replace(" t ", " h "))?;
        Ok(())
    };
    change(&mut cl, "UPDATE t SET v = v + 1 WHERE id % 1000 = 0")?;
    change(&mut cl, "DELETE FROM t WHERE id BETWEEN 200 AND 299")?;
    change(&mut cl, "INSERT INTO t VALUES (20001, 0), (25000, 1)")?;
    let (plan, fetches) = run_index_only(&mut cl, COUNT)?;
    assert!(fetches > 0, "changed pages must be fetched:\n{plan}");
    same(&mut cl, IDS)?;
    assert_eq!(same(&mut cl, COUNT)?, "19902");

    // A rolled-back delete on a page VACUUM marked again.
    cl.batch_execute("VACUUM t")?;
    cl.batch_execute("BEGIN; DELETE FROM t WHERE id BETWEEN 300 AND 399; ROLLBACK")?;
    same(&mut cl, IDS)?;

    // A snapshot older than a delete: VACUUM must not mark the page while the snapshot may
    // still see the deleted rows, and the old snapshot keeps counting them.
    let mut rr = c.connect(DB)?;
    rr.batch_execute(&format!("{setup}; BEGIN ISOLATION LEVEL REPEATABLE READ"))?;
    let before: i64 = sql::scalar(&mut rr, COUNT)?;
    change(&mut cl, "DELETE FROM t WHERE id BETWEEN 400 AND 499")?;
    cl.batch_execute("VACUUM t")?;
    run_index_only(&mut rr, COUNT)?;
    assert_eq!(sql::scalar::<i64>(&mut rr, COUNT)?, before);
    rr.batch_execute("COMMIT")?;
    cl.batch_execute("VACUUM t")?;
    assert_eq!(sql::scalar::<i64>(&mut cl, COUNT)?, before - 100);
    same(&mut cl, IDS)?;

    // A committed change right after a VACUUM, then a crash: recovery replays the cleared
    // bit with the change (its WAL record comes first).
    cl.batch_execute("VACUUM t")?;
    change(&mut cl, "DELETE FROM t WHERE id BETWEEN 500 AND 599")?;
    change(&mut cl, "UPDATE t SET v = -v WHERE id BETWEEN 600 AND 610")?;
    drop(rr);
    drop(cl);
    c.crash()?;
    c.start()?;
    let mut cl = c.connect(DB)?;
    cl.batch_execute(setup)?;
    run_index_only(&mut cl, IDS)?;
    same(&mut cl, IDS)?;
    same(
        &mut cl,
        "SELECT id, v FROM t WHERE id BETWEEN 590 AND 620 ORDER BY id",
    )?;
    assert_eq!(same(&mut cl, COUNT)?, "19702");
    assert_verify_clean(&mut cl, "t")?;
    // And the map works on after recovery.
    cl.batch_execute("VACUUM t")?;
    let (plan, fetches) = run_index_only(&mut cl, COUNT)?;
    assert_eq!(fetches, 0, "{plan}");
    c.assert_no_crash()
}

/// `reltuples` and `n_live_tup` after each VACUUM of `t` and `h`, side by side.
fn vacuum_counts(cl: &mut Client) -> Result<[(f64, i64); 2]> {
    let mut out = [(0.0, 0); 2];
    for (i, rel) in ["t", "h"].iter().enumerate() {
        cl.batch_execute(&format!("VACUUM {rel}"))?;
        // The statistics system's view of this backend's own report, without the cache.
        cl.batch_execute("SELECT pg_stat_clear_snapshot()")?;
        out[i] = (
            sql::scalar(
                cl,
                &format!("SELECT reltuples::float8 FROM pg_class WHERE relname = '{rel}'"),
            )?,
            sql::scalar(
                cl,
                &format!("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = '{rel}'"),
            )?,
        );
    }
    Ok(out)
}

/// VACUUM counts the rows it reads as heap's VACUUM does (the planner's row estimates of a
/// vacuumed, never-analyzed table come from that count): committed rows, and rows whose delete
/// is still running, but not inserts still running nor rows whose delete committed.
#[test]
fn vacuum_counts_live_rows_as_heap() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let (c, mut cl) = cluster_with_db_conf(
        "vacrows",
        &["autovacuum = off", "log_min_messages = debug1"],
    )?;
    cl.batch_execute(
        "CREATE TABLE t (id int, v text) USING torii; \
         CREATE TABLE h (id int, v text) USING heap; \
         INSERT INTO t SELECT g, 'x' FROM generate_series(1, 5) g; \
         INSERT INTO h SELECT * FROM t",
    )?;
    let [t, h] = vacuum_counts(&mut cl)?;
    assert_eq!(t, (5.0, 5), "5 rows (heap: {h:?})");
    assert_eq!(t, h);

    // Deleted and updated rows; then an insert and a delete still running in another session.
    for rel in ["t", "h"] {
        cl.batch_execute(&format!(
            "DELETE FROM {rel} WHERE id <= 2; UPDATE {rel} SET v = 'y' WHERE id = 3; \
             INSERT INTO {rel} SELECT g, 'z' FROM generate_series(100, 1099) g"
        ))?;
    }
    let mut other = c.connect(DB)?;
    other.batch_execute(
        "BEGIN; INSERT INTO t SELECT g, 'r' FROM generate_series(2000, 2009) g; \
         INSERT INTO h SELECT g, 'r' FROM generate_series(2000, 2009) g; \
         DELETE FROM t WHERE id = 5; DELETE FROM h WHERE id = 5",
    )?;
    let [t, h] = vacuum_counts(&mut cl)?;
    assert_eq!(t, (1003.0, 1003), "heap: {h:?}");
    assert_eq!(t, h);
    other.batch_execute("ROLLBACK")?;
    let [t, h] = vacuum_counts(&mut cl)?;
    assert_eq!(t, h);
    assert_eq!(t.0, 1003.0);

    // With every page marked all-visible, a later VACUUM reads only the changed page and
    // keeps the old count's share for the rest.
    cl.batch_execute("DELETE FROM t WHERE id BETWEEN 100 AND 109")?;
    cl.batch_execute("DELETE FROM h WHERE id BETWEEN 100 AND 109")?;
    let [t, h] = vacuum_counts(&mut cl)?;
    println!("after a small delete: torii {t:?}, heap {h:?}");
    assert_eq!(t.0, 993.0);
    assert_eq!(t, h);
    c.assert_no_crash()
}
