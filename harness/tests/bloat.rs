//! Table size under updates and deletes: torii updates rows in place and recycles its undo,
//! so its data pages must not grow the way a heap table does.
//!
//! * `in_place_updates_do_not_grow_data_pages` (autovacuum off): 100,000 rows, 20 rounds of
//!   `UPDATE t SET counter = counter + 1` (no indexed column): torii's data pages
//!   (`torii.stats(t).data_pages`) stay within 1.1x of the initial data pages. Heap's growth and
//!   torii's undo pages are printed beside it.
//! * `churn_cleaned_by_autovacuum_stays_within_bounds` (issue 4's acceptance): 1,000,000 rows
//!   (`TORII_BLOAT_ROWS`), autovacuum on (naptime 1 s) and nothing else cleaning, 10 rounds of:
//!   update every row in batches of 10,000 rows per transaction, delete half of the rows,
//!   insert them again. `pg_relation_size` stays within 1.2x of the freshly loaded size. Then,
//!   after a VACUUM (the table's autovacuum now off), inserting as many rows as were deleted
//!   does not grow the file.
//!   `TORII_BLOAT_HEAP=1` runs a heap table through the same rounds beside it.
//! * `churn_with_vacuum_after_deletes_stays_within_bounds`: the same with 200,000 rows,
//!   autovacuum off and `torii.vacuum` after the deletes and after the inserts (deterministic).
//! * `undo_held_by_old_snapshot_is_discarded_after`: a REPEATABLE READ transaction held open
//!   during 100,000 single-row update transactions makes undo grow (its snapshot still reads the
//!   old values); once it ends, `torii.vacuum` brings `undo_bytes` under 1% of the peak.
//! * `freed_undo_pages_serve_undo_then_inserts`: pages freed by discard go to the free-page
//!   list; undo takes them first, inserts once the data pages are full; VACUUM's truncation
//!   unlinks the pages it cuts off.
//!
//! Run with `-- --nocapture` to see the figures.

use std::time::Instant;

use postgres::Client;
use torii_harness::report::thousands;
use torii_harness::testing::{
    am, assert_verify_clean, cluster_with_db_conf, is_torii, torii_stats, vacuum_table,
};
use torii_harness::{sql, Result};

const CONF: &[&str] = &["autovacuum = off", "synchronous_commit = off"];

fn pages(bytes: i64) -> i64 {
    bytes / 8192
}

fn create(cl: &mut Client, table: &str, am: &str, rows: i64) -> Result<()> {
    cl.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, counter int NOT NULL, payload text) USING {am}; \
         INSERT INTO {table} SELECT g, 0, md5(g::text) FROM generate_series(1, {rows}) g"
    ))?;
    Ok(())
}

#[test]
fn in_place_updates_do_not_grow_data_pages() -> Result<()> {
    const ROWS: i64 = 100_000;
    const ROUNDS: i64 = 20;
    let (c, mut cl) = cluster_with_db_conf("bloat-inplace", CONF)?;
    create(&mut cl, "t", &am(), ROWS)?;
    create(&mut cl, "h", "heap", ROWS)?;
    let heap0 = sql::relation_size(&mut cl, "h")?;
    let data0 = if is_torii() {
        torii_stats(&mut cl, "t")?.data_pages
    } else {
        pages(sql::relation_size(&mut cl, "t")?)
    };
    println!(
        "{ROWS} rows: heap {} pages, {} {data0} data pages",
        pages(heap0),
        am()
    );
    println!(
        "round  heap pages  {} data pages  undo pages  size pages",
        am()
    );
    let mut max_data = data0;
    for round in 1..=ROUNDS {
        let t0 = Instant::now();
        cl.batch_execute("UPDATE t SET counter = counter + 1")?;
        let dt = t0.elapsed();
        cl.batch_execute("UPDATE h SET counter = counter + 1")?;
        let heap = pages(sql::relation_size(&mut cl, "h")?);
        let size = pages(sql::relation_size(&mut cl, "t")?);
        let (data, undo) = if is_torii() {
            let st = torii_stats(&mut cl, "t")?;
            (st.data_pages, st.undo_pages)
        } else {
            (size, 0)
        };
        max_data = max_data.max(data);
        println!(
            "{round:>5}  {heap:>10}  {data:>16}  {undo:>10}  {size:>10}   ({:.2} s)",
            dt.as_secs_f64()
        );
        if is_torii() {
            assert!(
                data as f64 <= 1.1 * data0 as f64,
                "round {round}: {data} data pages, more than 1.1 x the initial {data0}"
            );
        }
    }
    assert_eq!(
        sql::result_text(
            &mut cl,
            "SELECT count(*), sum(counter), min(counter) FROM t"
        )?,
        format!("{ROWS}|{}|{ROUNDS}", ROWS * ROUNDS)
    );
    println!(
        "heap grew from {} to {} pages ({:.1}x); {} data pages at most {max_data} ({:.2}x)",
        pages(heap0),
        pages(sql::relation_size(&mut cl, "h")?),
        sql::relation_size(&mut cl, "h")? as f64 / heap0 as f64,
        am(),
        max_data as f64 / data0 as f64
    );
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}

/// Rows of the churn tests: `TORII_BLOAT_ROWS` if set, else `default`.
fn bloat_rows(default: i64) -> i64 {
    std::env::var("TORII_BLOAT_ROWS")
        .ok()
        .and_then(|v| v.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

/// Run `stmt` (with `{lo}` and `{hi}`) once per batch of 10,000 ids in `1..=rows`, one
/// transaction each.
fn batched(cl: &mut Client, rows: i64, stmt: &str) -> Result<()> {
    const BATCH: i64 = 10_000;
    let mut lo = 1;
    while lo <= rows {
        let hi = (lo + BATCH - 1).min(rows);
        cl.batch_execute(
            &stmt
                .replace("{lo}", &lo.to_string())
                .replace("{hi}", &hi.to_string()),
        )?;
        lo = hi + 1;
    }
    Ok(())
}

/// Issue 4's acceptance: 1,000,000 rows, cleaned by autovacuum (naptime 1 s) and torii's own
/// discard during writes alone.
#[test]
fn churn_cleaned_by_autovacuum_stays_within_bounds() -> Result<()> {
    churn("bloat-churn-auto", bloat_rows(1_000_000), true)
}

/// The same churn with autovacuum off and a `torii.vacuum` (or VACUUM) after the deletes and
/// after the inserts of each round: deterministic.
#[test]
fn churn_with_vacuum_after_deletes_stays_within_bounds() -> Result<()> {
    churn("bloat-churn-vacuum", bloat_rows(200_000), false)
}

/// `rows` rows, 10 rounds of: update every row in batches of 10,000, delete half of them,
/// insert them again; the file stays within 1.2x of its freshly loaded size.
fn churn(name: &str, rows: i64, auto: bool) -> Result<()> {
    const ROUNDS: i64 = 10;
    let conf: &[&str] = if auto {
        &[
            "autovacuum = on",
            "autovacuum_naptime = 1s",
            "synchronous_commit = off",
        ]
    } else {
        CONF
    };
    let (c, mut cl) = cluster_with_db_conf(name, conf)?;
    let mut tables = vec![("t".to_string(), am())];
    if std::env::var("TORII_BLOAT_HEAP")
        .map(|v| v == "1")
        .unwrap_or(false)
    {
        tables.push(("h".to_string(), "heap".to_string()));
    }
    for (t, a) in &tables {
        create(&mut cl, t, a, rows)?;
    }
    let fresh = sql::relation_size(&mut cl, "t")?;
    println!(
        "{} rows, {} freshly loaded: {} pages (TORII_BLOAT_HEAP=1 adds a heap table); {}",
        thousands(rows as u64),
        am(),
        pages(fresh),
        if auto {
            "autovacuum on"
        } else {
            "autovacuum off, a vacuum after the deletes and after the inserts"
        }
    );
    println!("round  size pages  ratio   data  undo  free  dead-ptrs  free-MB  seconds");
    let mut worst = 1.0f64;
    for round in 1..=ROUNDS {
        for (t, _) in &tables {
            let t0 = Instant::now();
            batched(
                &mut cl,
                rows,
                &format!("UPDATE {t} SET counter = counter + 1 WHERE id BETWEEN {{lo}} AND {{hi}}"),
            )?;
            batched(
                &mut cl,
                rows,
                &format!(
                    "DELETE FROM {t} WHERE id BETWEEN {{lo}} AND {{hi}} AND id % 2 = {}",
                    round % 2
                ),
            )?;
            if !auto {
                vacuum_table(&mut cl, t)?;
            }
            batched(
                &mut cl,
                rows,
                &format!(
                    "INSERT INTO {t} SELECT g, {round}, md5(g::text) FROM generate_series({{lo}}, {{hi}}) g \
                     WHERE g % 2 = {}",
                    round % 2
                ),
            )?;
            if !auto {
                vacuum_table(&mut cl, t)?;
            }
            let dt = t0.elapsed();
            let size = sql::relation_size(&mut cl, t)?;
            let ratio = size as f64 / fresh as f64;
            if t == "t" {
                worst = worst.max(ratio);
                let (d, u, f, dp, fb) = if is_torii() {
                    let st = torii_stats(&mut cl, t)?;
                    (
                        st.data_pages,
                        st.undo_pages,
                        st.free_pages,
                        st.dead_pointers,
                        st.free_bytes >> 20,
                    )
                } else {
                    (0, 0, 0, 0, 0)
                };
                println!(
                    "{round:>5}  {:>10}  {ratio:>5.2}  {d:>5} {u:>5} {f:>5}  {dp:>9}  {fb:>7}  {:.1}",
                    pages(size),
                    dt.as_secs_f64()
                );
            } else {
                println!(
                    "       heap: {:>6} pages  {ratio:>5.2}   {:.1}",
                    pages(size),
                    dt.as_secs_f64()
                );
            }
        }
        assert_eq!(
            sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM t")?,
            rows,
            "round {round}"
        );
    }
    // Checked after all rounds, so that the printed figures show the whole trend.
    if is_torii() {
        assert!(
            worst <= 1.2,
            "the table grew to {worst:.2} x its freshly loaded size ({} pages), more than 1.2 x",
            pages(fresh)
        );
    }
    // In round r every row is updated (+1), then half of them are deleted and inserted again
    // with counter = r: all rows hold r after round r.
    assert_eq!(
        sql::result_text(
            &mut cl,
            "SELECT count(*), min(counter), max(counter) FROM t"
        )?,
        format!("{rows}|{ROUNDS}|{ROUNDS}")
    );

    // After VACUUM, rows inserted in place of deleted ones reuse their space. Measured with
    // the table's autovacuum off: an autovacuum of t running beside the inserts (paced by its
    // cost delay, its ANALYZE holding a snapshot) keeps their undo, which is the rounds' figure
    // above, not this one's.
    cl.batch_execute("ALTER TABLE t SET (autovacuum_enabled = off)")?;
    cl.batch_execute("DELETE FROM t WHERE id % 2 = 0")?;
    cl.batch_execute("VACUUM t")?;
    let before = sql::relation_size(&mut cl, "t")?;
    batched(
        &mut cl,
        rows,
        "INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series({lo}, {hi}) g WHERE g % 2 = 0",
    )?;
    let after = sql::relation_size(&mut cl, "t")?;
    println!(
        "delete half, VACUUM: {} pages; insert as many rows: {} pages; worst ratio {worst:.2}",
        pages(before),
        pages(after)
    );
    assert!(
        after <= before,
        "inserting the deleted rows again after VACUUM grew the table from {} to {} pages",
        pages(before),
        pages(after)
    );
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM t")?, rows);
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}

#[test]
fn undo_held_by_old_snapshot_is_discarded_after() -> Result<()> {
    const ROWS: i64 = 10_000;
    const UPDATES: i64 = 100_000;
    let (c, mut cl) = cluster_with_db_conf("bloat-undo", CONF)?;
    create(&mut cl, "t", &am(), ROWS)?;
    let size0 = sql::relation_size(&mut cl, "t")?;
    // Retained undo above this is reported in the server log (by the writers' discards).
    if is_torii() {
        cl.batch_execute("ALTER DATABASE torii_test SET torii.undo_warn_size = '1MB'")?;
        cl = c.connect(torii_harness::testing::DB)?;
    }
    let log0 = c.log_len();
    let mut rr = c.connect(torii_harness::testing::DB)?;
    rr.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
    assert_eq!(
        sql::scalar::<i64>(&mut rr, "SELECT sum(counter) FROM t")?,
        0
    );

    // 100,000 transactions of one single-row UPDATE each, 200 per round trip.
    let t0 = Instant::now();
    let mut batch = String::new();
    for i in 0..UPDATES {
        let id = (i * 7919) % ROWS + 1;
        batch.push_str(&format!(
            "BEGIN; UPDATE t SET counter = counter + 1 WHERE id = {id}; COMMIT; "
        ));
        if (i + 1) % 200 == 0 {
            cl.batch_execute(&batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        cl.batch_execute(&batch)?;
    }
    let dt = t0.elapsed();
    // The old snapshot still sees the old values.
    assert_eq!(
        sql::scalar::<i64>(&mut rr, "SELECT sum(counter) FROM t")?,
        0
    );
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT sum(counter) FROM t")?,
        UPDATES
    );
    let peak_size = sql::relation_size(&mut cl, "t")?;
    println!(
        "{UPDATES} update transactions in {:.1} s with a snapshot held: size {} -> {} pages",
        dt.as_secs_f64(),
        pages(size0),
        pages(peak_size)
    );
    if !is_torii() {
        rr.batch_execute("COMMIT")?;
        return c.assert_no_crash();
    }
    let peak = torii_stats(&mut cl, "t")?;
    println!("with the snapshot: {peak:?}");
    let log = c.log_since(log0);
    assert!(
        log.contains("torii: table \"t\" retains")
            && log.contains("above torii.undo_warn_size (1024 kB)"),
        "no retained-undo warning in the server log:\n{log}"
    );
    assert!(
        peak.undo_records >= UPDATES,
        "every update's undo record is needed by the open snapshot: {peak:?}"
    );
    rr.batch_execute("COMMIT")?;
    drop(rr);
    let v = torii_harness::testing::torii_vacuum(&mut cl, "t")?;
    let after = torii_stats(&mut cl, "t")?;
    println!("torii.vacuum: {v:?}\nafter: {after:?}");
    assert!(
        (after.undo_bytes as f64) < 0.01 * peak.undo_bytes as f64,
        "undo_bytes {} after torii.vacuum, not under 1% of the peak {}",
        after.undo_bytes,
        peak.undo_bytes
    );
    // The freed undo pages are reused: as many updates again do not grow the file.
    let mut batch = String::new();
    for i in 0..UPDATES / 10 {
        let id = (i * 7919) % ROWS + 1;
        batch.push_str(&format!(
            "BEGIN; UPDATE t SET counter = counter + 1 WHERE id = {id}; COMMIT; "
        ));
        if (i + 1) % 200 == 0 {
            cl.batch_execute(&batch)?;
            batch.clear();
        }
    }
    let size_again = sql::relation_size(&mut cl, "t")?;
    println!("{} more updates: {} pages", UPDATES / 10, pages(size_again));
    assert!(
        size_again <= peak_size,
        "updates after the discard grew the file from {} to {} pages",
        pages(peak_size),
        pages(size_again)
    );
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}

/// Pages freed by undo discard go onto the metapage's free-page list: the next undo pages come
/// from it, inserts take them only once the data pages are full, and VACUUM's tail truncation
/// unlinks those it cuts off (torii.verify follows the list).
#[test]
fn freed_undo_pages_serve_undo_then_inserts() -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    const ROWS: i64 = 20_000;
    let (c, mut cl) = cluster_with_db_conf("bloat-freelist", CONF)?;
    create(&mut cl, "t", "torii", ROWS)?;
    // One transaction's undo: about a hundred pages, freed by the discard.
    cl.batch_execute("UPDATE t SET counter = counter + 1")?;
    let v = torii_harness::testing::torii_vacuum(&mut cl, "t")?;
    let st = torii_stats(&mut cl, "t")?;
    println!("after the first update and torii.vacuum: {v:?}\n{st:?}");
    assert!(v.undo_pages_freed > 50, "{v:?}");
    assert!(st.free_pages >= v.undo_pages_freed - 1, "{st:?}");
    let size0 = sql::relation_size(&mut cl, "t")?;

    // Half as much undo again: it fits in the freed pages.
    cl.batch_execute("UPDATE t SET counter = counter + 1 WHERE id % 2 = 0")?;
    let size1 = sql::relation_size(&mut cl, "t")?;
    let st1 = torii_stats(&mut cl, "t")?;
    println!(
        "second update: {} -> {} pages; {st1:?}",
        pages(size0),
        pages(size1)
    );
    assert_eq!(
        size1, size0,
        "undo extended the file instead of taking freed pages"
    );
    assert!(st1.free_pages < st.free_pages, "{st1:?}");
    torii_harness::testing::torii_vacuum(&mut cl, "t")?;
    assert_verify_clean(&mut cl, "t")?;

    // The data pages are full: new rows go to freed pages before the file grows.
    let st2 = torii_stats(&mut cl, "t")?;
    cl.batch_execute(&format!(
        "INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series({}, {}) g",
        ROWS + 1,
        ROWS + 2_000
    ))?;
    let size3 = sql::relation_size(&mut cl, "t")?;
    let st3 = torii_stats(&mut cl, "t")?;
    println!("2,000 inserts: {st2:?}\n -> {st3:?}");
    assert_eq!(
        size3, size0,
        "inserts extended the file while freed pages were left"
    );
    assert!(
        st3.data_pages > st2.data_pages && st3.free_pages < st2.free_pages,
        "{st3:?}"
    );
    assert_verify_clean(&mut cl, "t")?;

    // Deleting all but the first rows lets VACUUM cut the file: the list must not keep pages
    // past the new end, and later inserts and undo still work.
    cl.batch_execute("DELETE FROM t WHERE id > 1000")?;
    cl.batch_execute("VACUUM t")?;
    cl.batch_execute("VACUUM t")?;
    let size4 = sql::relation_size(&mut cl, "t")?;
    println!(
        "after deleting all but 1,000 rows and VACUUM: {} pages",
        pages(size4)
    );
    assert!(
        size4 < size0 / 2,
        "VACUUM did not truncate: {} pages",
        pages(size4)
    );
    assert_verify_clean(&mut cl, "t")?;
    cl.batch_execute(
        "INSERT INTO t SELECT g, 0, md5(g::text) FROM generate_series(1001, 5000) g; \
         UPDATE t SET counter = counter + 1",
    )?;
    torii_harness::testing::torii_vacuum(&mut cl, "t")?;
    assert_eq!(
        sql::result_text(&mut cl, "SELECT count(*), sum(counter) FROM t")?,
        "5000|6500"
    );
    assert_verify_clean(&mut cl, "t")?;
    c.assert_no_crash()
}
