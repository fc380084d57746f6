//! torii_btree (issue 6) under several sessions and crashes, on whole clusters:
//!
//! * 4 sessions insert overlapping keys into a unique torii_btree index (some transactions
//!   roll back, others hold their row a little before committing): exactly one winner per key,
//!   the losers get SQLSTATE 23505 after waiting for the inserter, index scans agree with the
//!   table, VACUUM removes the entries of deleted rows, and `torii.verify_index` is clean;
//! * `kill -9` during `CREATE INDEX ... USING torii_btree` and during concurrent inserts into a
//!   unique torii_btree index: after restart the index is usable (or was never created), the
//!   structure check is clean and inserts (with page splits) go on.
//!
//! Tables use the access method under test (`TORII_TEST_AM`, default torii) and heap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use postgres::Client;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use torii_harness::testing::{am, cluster_with_db, is_torii, DB};
use torii_harness::{err, sql, Result};

const SESSIONS: usize = 4;
/// Inserts the 4 sessions must have had acknowledged in the 3 s before the kill, at least.
const MIN_INSERTS_BEFORE_KILL: usize = 500;

/// The server error (SQLSTATE, message ...) or the client error.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.severity(), sql::describe(e)),
        None => sql::describe(e),
    }
}

/// Whether `e` is the end of the connection while the test kills the postmaster on purpose
/// (`killing` set just before): a closed or reset connection, or FATAL 57P01 "terminating
/// connection due to unexpected postmaster exit". Any other error is not.
fn gone(e: &postgres::Error, killing: &AtomicBool) -> bool {
    if !killing.load(Ordering::SeqCst) {
        return false;
    }
    match e.as_db_error() {
        Some(db) => db.severity() == "FATAL" && db.code().code() == "57P01",
        None => true,
    }
}

fn verify_clean(cl: &mut Client, index: &str, heapallindexed: bool) -> Result<()> {
    let rows = sql::rows_text(
        cl,
        &format!("SELECT blkno, problem FROM torii.verify_index('{index}', {heapallindexed})"),
    )?;
    if !rows.is_empty() {
        return Err(err(format!("verify_index({index}): {rows:?}")));
    }
    Ok(())
}

/// Counts through the index (index scan, then bitmap scan) and through the table.
fn counts_agree(cl: &mut Client, table: &str, cond: &str) -> Result<i64> {
    let q = format!("SELECT count(*) FROM {table} WHERE {cond}");
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    let by_index: i64 = sql::scalar(cl, &q)?;
    cl.batch_execute(
        "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = on",
    )?;
    let by_bitmap: i64 = sql::scalar(cl, &q)?;
    cl.batch_execute(
        "RESET enable_seqscan; RESET enable_bitmapscan; RESET enable_indexscan; RESET enable_indexonlyscan; \
         SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off",
    )?;
    let by_table: i64 = sql::scalar(cl, &q)?;
    cl.batch_execute("RESET ALL")?;
    if by_index != by_table || by_bitmap != by_table {
        return Err(err(format!(
            "{q}: index scan {by_index}, bitmap scan {by_bitmap}, table {by_table}"
        )));
    }
    Ok(by_table)
}

fn table_ams() -> Vec<String> {
    let mut v = vec!["heap".to_string()];
    if is_torii() {
        v.push(am());
    }
    v
}

#[test]
fn unique_inserts_from_four_sessions() -> Result<()> {
    let (c, mut cl) = cluster_with_db("btree_unique")?;
    for tam in table_ams() {
        let t = format!("u_{tam}");
        cl.batch_execute(&format!(
            "CREATE TABLE {t} (k int, who int, pad text) USING {tam};
             CREATE UNIQUE INDEX {t}_k ON {t} USING torii_btree (k);"
        ))?;
        const KEYS: i32 = 6000;
        // key -> number of committed winners
        let winners: Arc<Mutex<HashMap<i32, u32>>> = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // A reader scanning ranges while pages split.
        let reader = {
            let mut rc = c.connect(DB)?;
            let stop = stop.clone();
            let t = t.clone();
            thread::spawn(move || -> Result<u64> {
                let mut scans = 0u64;
                rc.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
                while !stop.load(Ordering::Relaxed) {
                    let rows = rc.query(
                        &format!("SELECT k FROM {t} WHERE k BETWEEN 1000 AND 3000 ORDER BY k"),
                        &[],
                    )?;
                    let ks: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
                    if ks.windows(2).any(|w| w[0] >= w[1]) {
                        return Err(err("index scan returned keys out of order or twice"));
                    }
                    scans += 1;
                }
                Ok(scans)
            })
        };
        let mut handles = Vec::new();
        for s in 0..SESSIONS {
            let mut sc = c.connect(DB)?;
            let winners = winners.clone();
            let t = t.clone();
            handles.push(thread::spawn(move || -> Result<(u32, u32)> {
                let mut rng = StdRng::seed_from_u64(0xb7ee + s as u64);
                let mut keys: Vec<i32> = (0..KEYS).collect();
                keys.shuffle(&mut rng);
                let (mut won, mut lost) = (0, 0);
                for k in keys {
                    let rollback = rng.gen_range(0..20) == 0;
                    let linger = rng.gen_range(0..50) == 0;
                    let mut tx = sc.transaction()?;
                    let r = tx.execute(
                        &format!("INSERT INTO {t} VALUES ($1, $2, repeat('x', 40))"),
                        &[&k, &(s as i32)],
                    );
                    match r {
                        Ok(_) => {
                            if linger {
                                tx.batch_execute("SELECT pg_sleep(0.002)")?;
                            }
                            if rollback {
                                tx.rollback()?;
                            } else {
                                tx.commit()?;
                                won += 1;
                                *winners.lock().unwrap().entry(k).or_insert(0) += 1;
                            }
                        }
                        Err(e) if sql::sqlstate(&e).as_deref() == Some("23505") => {
                            lost += 1;
                        }
                        Err(e) => {
                            return Err(err(format!(
                                "session {s}, INSERT of key {k}: {} (only 23505 is expected)",
                                describe(&e)
                            )))
                        }
                    }
                }
                Ok((won, lost))
            }));
        }
        let mut total_won = 0;
        for h in handles {
            let (w, _) = h.join().map_err(|_| err("session panicked"))??;
            total_won += w;
        }
        stop.store(true, Ordering::Relaxed);
        let scans = reader.join().map_err(|_| err("reader panicked"))??;
        let w = winners.lock().unwrap();
        assert!(w.values().all(|&n| n == 1), "a key has two winners");
        assert_eq!(w.len() as u32, total_won);
        let rows: i64 = sql::scalar(&mut cl, &format!("SELECT count(*) FROM {t}"))?;
        let distinct: i64 = sql::scalar(&mut cl, &format!("SELECT count(DISTINCT k) FROM {t}"))?;
        assert_eq!(rows, total_won as i64, "{t}: committed rows");
        assert_eq!(distinct, rows, "{t}: duplicate keys in the table");
        // (Nearly) every key has a winner: only keys whose every attempt rolled back have none.
        assert!(rows > (KEYS as i64) * 99 / 100, "{t}: only {rows} keys won");
        assert!(scans > 0);
        assert_eq!(counts_agree(&mut cl, &t, "k >= 0")?, rows);
        assert_eq!(
            counts_agree(&mut cl, &t, "k BETWEEN 100 AND 2100")?,
            sql::scalar::<i64>(
                &mut cl,
                &format!("SELECT count(*) FROM {t} WHERE k + 0 BETWEEN 100 AND 2100")
            )?
        );
        verify_clean(&mut cl, &format!("{t}_k"), true)?;
        // VACUUM removes the entries of deleted rows (heap only: torii's DELETE may not exist).
        if tam == "heap" {
            cl.batch_execute(&format!("DELETE FROM {t} WHERE k % 3 = 0"))?;
            cl.batch_execute(&format!("VACUUM {t}"))?;
            let left: i64 = sql::scalar(&mut cl, &format!("SELECT count(*) FROM {t}"))?;
            assert_eq!(counts_agree(&mut cl, &t, "k >= 0")?, left);
            let entries: f64 = sql::scalar(
                &mut cl,
                &format!("SELECT reltuples::float8 FROM pg_class WHERE relname = '{t}_k'"),
            )?;
            assert_eq!(entries as i64, left, "index entries after VACUUM");
            verify_clean(&mut cl, &format!("{t}_k"), true)?;
            // Deleted keys can be inserted again.
            cl.batch_execute(&format!(
                "INSERT INTO {t} SELECT k, 9, 'again' FROM generate_series(0, {KEYS}, 3) k"
            ))?;
            verify_clean(&mut cl, &format!("{t}_k"), true)?;
        }
    }
    c.assert_no_crash()?;
    Ok(())
}

fn load(cl: &mut Client, t: &str, from: i32, n: i32) -> Result<()> {
    cl.batch_execute(&format!(
        "INSERT INTO {t} SELECT i, i % 1000, md5(i::text) FROM generate_series({from}, {}) i",
        from + n - 1
    ))?;
    Ok(())
}

#[test]
fn kill9_during_build_and_inserts() -> Result<()> {
    let (c, mut cl) = cluster_with_db("btree_crash")?;
    for tam in table_ams() {
        let t = format!("k_{tam}");
        cl.batch_execute(&format!(
            "CREATE TABLE {t} (id int, g int, s text) USING {tam}; CHECKPOINT"
        ))?;
        load(&mut cl, &t, 1, 300_000)?;
        // 1. kill -9 while CREATE INDEX runs.
        let killing = Arc::new(AtomicBool::new(false));
        let builder = {
            let mut bc = c.connect(DB)?;
            let t = t.clone();
            let killing = killing.clone();
            thread::spawn(move || -> std::result::Result<bool, String> {
                match bc.batch_execute(&format!(
                    "CREATE INDEX {t}_s ON {t} USING torii_btree (s, g)"
                )) {
                    Ok(()) => Ok(true),
                    Err(e) if gone(&e, &killing) => Ok(false),
                    Err(e) => Err(format!("CREATE INDEX on {t}: {}", describe(&e))),
                }
            })
        };
        thread::sleep(Duration::from_millis(400));
        killing.store(true, Ordering::SeqCst);
        c.kill9()?;
        let built = builder
            .join()
            .map_err(|_| err("builder panicked"))?
            .map_err(err)?;
        eprintln!("{t}: CREATE INDEX finished before the kill: {built}");
        c.start()?;
        let mut cl2 = c.connect(DB)?;
        let exists: i64 = sql::scalar(
            &mut cl2,
            &format!("SELECT count(*) FROM pg_class WHERE relname = '{t}_s'"),
        )?;
        if exists == 1 {
            verify_clean(&mut cl2, &format!("{t}_s"), true)?;
        } else {
            cl2.batch_execute(&format!(
                "CREATE INDEX {t}_s ON {t} USING torii_btree (s, g)"
            ))?;
        }
        verify_clean(&mut cl2, &format!("{t}_s"), true)?;

        // 2. kill -9 while 4 sessions insert into a unique index (splits under way).
        cl2.batch_execute(&format!(
            "CREATE UNIQUE INDEX {t}_id ON {t} USING torii_btree (id)"
        ))?;
        let stop = Arc::new(AtomicBool::new(false));
        let killing = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for s in 0..SESSIONS {
            let mut sc = c.connect(DB)?;
            let (stop, killing) = (stop.clone(), killing.clone());
            let t = t.clone();
            handles.push(thread::spawn(
                move || -> std::result::Result<Vec<i32>, String> {
                    let mut rng = StdRng::seed_from_u64(s as u64);
                    let mut committed = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        // Overlapping keys above the loaded ones; random order causes splits
                        // all over.
                        let k: i32 = 300_001 + rng.gen_range(0..200_000);
                        match sc.execute(
                            &format!("INSERT INTO {t} VALUES ($1, 0, md5($1::int::text))"),
                            &[&k],
                        ) {
                            Ok(_) => committed.push(k),
                            Err(e) if sql::sqlstate(&e).as_deref() == Some("23505") => {}
                            Err(e) if gone(&e, &killing) => break, // the server was killed
                            Err(e) => {
                                return Err(format!(
                                    "{t}: session {s}, INSERT of key {k}: {} (only 23505, or a \
                                     lost connection during the kill, is expected)",
                                    describe(&e)
                                ))
                            }
                        }
                    }
                    Ok(committed)
                },
            ));
        }
        thread::sleep(Duration::from_millis(3000));
        killing.store(true, Ordering::SeqCst);
        c.kill9()?;
        stop.store(true, Ordering::Relaxed);
        let mut committed: Vec<i32> = Vec::new();
        for h in handles {
            committed.extend(
                h.join()
                    .map_err(|_| err("session panicked"))?
                    .map_err(err)?,
            );
        }
        eprintln!(
            "{t}: {} inserts acknowledged before the kill",
            committed.len()
        );
        assert!(
            committed.len() >= MIN_INSERTS_BEFORE_KILL,
            "{t}: only {} inserts acknowledged in 3 s (at least {MIN_INSERTS_BEFORE_KILL} \
             expected)",
            committed.len()
        );
        c.start()?;
        let mut cl3 = c.connect(DB)?;
        verify_clean(&mut cl3, &format!("{t}_id"), true)?;
        verify_clean(&mut cl3, &format!("{t}_s"), true)?;
        let rows = counts_agree(&mut cl3, &t, "id > 300000")?;
        assert!(
            rows >= committed.len() as i64,
            "{t}: {rows} rows after recovery, {} inserts were acknowledged",
            committed.len()
        );
        let dups: i64 = sql::scalar(
            &mut cl3,
            &format!("SELECT count(*) - count(DISTINCT id) FROM {t}"),
        )?;
        assert_eq!(dups, 0);
        // Every acknowledged key is found through the index.
        cl3.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
        for k in committed.iter().step_by(50) {
            let n: i64 = sql::scalar(
                &mut cl3,
                &format!("SELECT count(*) FROM {t} WHERE id = {k}"),
            )?;
            assert_eq!(n, 1, "{t}: committed key {k}");
        }
        cl3.batch_execute("RESET ALL")?;
        // The index keeps working after recovery (more splits).
        load(&mut cl3, &t, 600_000, 50_000)?;
        verify_clean(&mut cl3, &format!("{t}_id"), true)?;
        // The kills of the postmaster leave no crash line; a crashed backend or a PANIC would.
        let crashes = c.crash_lines_since(0);
        assert!(
            crashes.is_empty(),
            "{t}: the server log shows a crash:\n{}",
            crashes.join("\n")
        );
        cl = cl3;
    }
    drop(cl);
    c.assert_no_crash()
}
