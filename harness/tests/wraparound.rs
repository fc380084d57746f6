//! Transaction id wraparound: torii rows carry 64-bit xids, so rows written long ago stay
//! readable and correct however far the 32-bit xid counter has moved, and VACUUM keeps
//! `relfrozenxid` (hence `datfrozenxid`) of torii tables current without freezing rows.
//!
//! A scratch cluster gets a torii table written once and never changed again (`t_old`), a
//! torii table changed at every step (`t`) and heap tables with the same contents (`h_old`,
//! `h`; heap rows stay readable only because VACUUM FREEZE froze them). Then, three times:
//! VACUUM FREEZE every database (template0 too), stop, move the xid counter forward by
//! 1,500,000,000 with `pg_resetwal -x` (and `-e` once the 32-bit counter wraps: the third step
//! crosses 2^32), create the pg_xact segment the new xids need, start, and check: the old rows
//! are all there and unchanged, new writes (in place, cold, deletes, inserts, a rolled-back
//! transaction) work on torii as on heap, `torii.verify` is clean, VACUUM FREEZE works and
//! leaves `relfrozenxid` of the torii tables and `datfrozenxid` of every database young. After
//! the second step the rows of `t_old` are more than 2^31 transactions old, after the third
//! more than 2^32.
//!
//! pg_xact segments: each holds 32 pages of 32,768 transactions (2 bits each, 8 kB pages), so
//! the segment of xid X is X / 1,048,576, named with 4 upper-case hex digits (`SlruFileName`:
//! `%04X`; `clog.c`: `CLOG_XACTS_PER_PAGE = BLCKSZ * 4`, `SLRU_PAGES_PER_SEGMENT = 32`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use postgres::Client;
use torii_harness::testing::{
    am, assert_verify_clean, cluster_with_db_conf, is_torii, torii_stats, DB,
};
use torii_harness::{err, sql, Cluster, Result};

const STEP: u64 = 1_500_000_000;
const XACTS_PER_SEGMENT: u64 = 32_768 * 32;

fn digest(cl: &mut Client, t: &str) -> Result<String> {
    sql::result_text(
        cl,
        &format!(
            "SELECT count(*), sum(v), md5(string_agg(id || ',' || v || ',' || k || ',' || pad, ';' ORDER BY id)) \
             FROM {t}"
        ),
    )
}

fn same(cl: &mut Client, heap: &str, other: &str, what: &str) -> Result<String> {
    let a = digest(cl, heap)?;
    let b = digest(cl, other)?;
    if a != b {
        return Err(err(format!("{what}: {heap} {a} but {other} {b}")));
    }
    // Through the indexes too.
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    for q in [
        "SELECT id, v FROM {t} WHERE k BETWEEN 100 AND 300 ORDER BY id",
        "SELECT id, v FROM {t} WHERE id BETWEEN 2000 AND 2100 ORDER BY id",
    ] {
        let x = sql::result_text(cl, &q.replace("{t}", heap))?;
        let y = sql::result_text(cl, &q.replace("{t}", other))?;
        if x != y {
            cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
            return Err(err(format!("{what}: index scans differ: {q}")));
        }
    }
    cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
    Ok(a)
}

/// VACUUM FREEZE every database, template0 included.
fn freeze_all(c: &Cluster) -> Result<()> {
    c.exec("ALTER DATABASE template0 WITH ALLOW_CONNECTIONS true")?;
    let mut cl = c.connect("postgres")?;
    let dbs: Vec<String> = cl
        .query("SELECT datname::text FROM pg_database ORDER BY 1", &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(cl);
    for db in &dbs {
        c.exec_in(db, "VACUUM FREEZE")
            .map_err(|e| err(format!("VACUUM FREEZE in {db}: {}", sql::describe(&e))))?;
    }
    c.exec("ALTER DATABASE template0 WITH ALLOW_CONNECTIONS false")?;
    Ok(())
}

/// Stop the cluster, move the next xid forward by `by`, create its pg_xact segment, start.
/// Returns the new next full xid.
fn jump(c: &Cluster, by: u64) -> Result<u64> {
    let cur: i64 = c.query_scalar("SELECT txid_current()")?;
    c.stop()?;
    let next = cur as u64 + 1 + by;
    let (epoch, mut xid) = (next >> 32, next & 0xffff_ffff);
    if xid < 3 {
        xid = 3; // first normal xid
    }
    let seg = c
        .data_dir()
        .join("pg_xact")
        .join(format!("{:04X}", xid / XACTS_PER_SEGMENT));
    if !seg.exists() {
        let mut f = fs::File::create(&seg)?;
        f.write_all(&vec![0u8; 256 * 1024])?;
        drop(f);
        fs::set_permissions(&seg, fs::Permissions::from_mode(0o600))?;
        c.give_to_server(&seg)?;
    }
    let out = c
        .pg_command("pg_resetwal")
        .args(["-x", &xid.to_string(), "-e", &epoch.to_string(), "-D"])
        .arg(c.data_dir())
        .output()?;
    if !out.status.success() {
        return Err(err(format!(
            "pg_resetwal failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    c.start()?;
    Ok((epoch << 32) | xid)
}

fn both(cl: &mut Client, stmt: &str) -> Result<()> {
    for t in ["h", "t"] {
        cl.batch_execute(&stmt.replace("{t}", t))
            .map_err(|e| err(format!("{}: {}", stmt.replace("{t}", t), sql::describe(&e))))?;
    }
    Ok(())
}

#[test]
fn rows_survive_xid_wraparound() -> Result<()> {
    let (c, mut cl) = cluster_with_db_conf("wraparound", &["autovacuum = off"])?;
    for (t, a) in [
        ("t_old", am()),
        ("h_old", "heap".into()),
        ("t", am()),
        ("h", "heap".into()),
    ] {
        cl.batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL, pad text) USING {a}; \
             CREATE INDEX {t}_k ON {t} (k); \
             INSERT INTO {t} SELECT g, g % 100, g, repeat('w', (g % 37)::int) FROM generate_series(1, 5000) g"
        ))?;
    }
    // Old rows with undo history: updated in place, cold, deleted, a rollback; then VACUUM.
    for t in ["t_old", "h_old"] {
        cl.batch_execute(&format!(
            "UPDATE {t} SET v = v + 1 WHERE id % 3 = 0; UPDATE {t} SET k = k + 10000 WHERE id % 5 = 0; \
             DELETE FROM {t} WHERE id % 7 = 0"
        ))?;
        cl.batch_execute(&format!(
            "BEGIN; UPDATE {t} SET v = -1 WHERE id % 11 = 0; ROLLBACK"
        ))?;
    }
    let old = same(&mut cl, "h_old", "t_old", "before")?;
    let xid0: i64 = sql::scalar(&mut cl, "SELECT txid_current()")?;
    drop(cl);

    for step in 1..=3u64 {
        freeze_all(&c)?;
        {
            let mut cl = c.connect(DB)?;
            if is_torii() {
                let st = torii_stats(&mut cl, "t_old")?;
                assert_eq!(st.undo_records, 0, "step {step}: VACUUM left undo: {st:?}");
            }
            // relfrozenxid of the torii tables is young: datfrozenxid can follow.
            let ages = sql::result_text(
                &mut cl,
                "SELECT relname || ':' || age(relfrozenxid) FROM pg_class \
                 WHERE relname IN ('t', 't_old') AND age(relfrozenxid) > 1000 ORDER BY 1",
            )?;
            assert!(
                ages.is_empty(),
                "step {step}: old relfrozenxid after VACUUM FREEZE: {ages}"
            );
        }
        let next = jump(&c, STEP)?;
        let mut cl = c.connect(DB)?;
        let now: i64 = sql::scalar(&mut cl, "SELECT txid_current()")?;
        assert!(
            now as u64 >= next,
            "step {step}: txid_current {now} < {next}"
        );
        println!(
            "step {step}: next xid {now} (epoch {}, 32-bit {}), {} transactions after the old rows",
            now >> 32,
            now & 0xffff_ffff,
            now - xid0
        );
        // The old rows: all there, unchanged, through seq and index scans.
        assert_eq!(
            same(&mut cl, "h_old", "t_old", &format!("step {step}, old rows"))?,
            old,
            "step {step}: the old rows changed"
        );
        assert_verify_clean(&mut cl, "t_old")?;
        // The changing table still matches its heap twin, and takes new changes.
        same(&mut cl, "h", "t", &format!("step {step}, before writes"))?;
        for stmt in [
            "UPDATE {t} SET v = v + 1 WHERE id % 2 = 0",
            "UPDATE {t} SET k = k + 1 WHERE id % 10 = 3",
            "UPDATE {t} SET pad = pad || 'ww' WHERE id % 13 = 0",
            "DELETE FROM {t} WHERE id % 17 = {step}",
            "INSERT INTO {t} SELECT g, 0, g, 'new' FROM generate_series(10000 * {step} + 1, 10000 * {step} + 500) g",
            "BEGIN; UPDATE {t} SET v = -1 WHERE id % 19 = 0; DELETE FROM {t} WHERE id % 23 = 0; ROLLBACK",
        ] {
            both(&mut cl, &stmt.replace("{step}", &step.to_string()))?;
        }
        // An old snapshot sees the state before a change.
        let mut rr = c.connect(DB)?;
        rr.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
        let snap = digest(&mut rr, "t")?;
        both(&mut cl, "UPDATE {t} SET v = v + 100 WHERE id % 4 = 1")?;
        assert_eq!(digest(&mut rr, "t")?, snap, "step {step}: snapshot moved");
        rr.batch_execute("COMMIT")?;
        same(&mut cl, "h", "t", &format!("step {step}, after writes"))?;
        assert_verify_clean(&mut cl, "t")?;
        cl.batch_execute("VACUUM FREEZE t")?;
        cl.batch_execute("VACUUM FREEZE h")?;
        same(
            &mut cl,
            "h",
            "t",
            &format!("step {step}, after VACUUM FREEZE"),
        )?;
        assert_verify_clean(&mut cl, "t")?;
        if is_torii() {
            let st = torii_stats(&mut cl, "t")?;
            assert!(
                st.horizon as u64 >= next,
                "step {step}: the horizon {} did not move past the jump to {next}",
                st.horizon
            );
        }
    }
    // Every database's datfrozenxid is young after freezing everything once more.
    freeze_all(&c)?;
    let old_dbs = sql::result_text(
        &mut c.connect("postgres")?,
        "SELECT datname || ':' || age(datfrozenxid) FROM pg_database WHERE age(datfrozenxid) > 1000",
    )?;
    assert!(old_dbs.is_empty(), "datfrozenxid left behind: {old_dbs}");
    let mut cl = c.connect(DB)?;
    assert_eq!(same(&mut cl, "h_old", "t_old", "at the end")?, old);
    c.restart()?;
    let mut cl2 = c.connect(DB)?;
    assert_eq!(same(&mut cl2, "h_old", "t_old", "after a restart")?, old);
    same(&mut cl2, "h", "t", "after a restart")?;
    drop(cl);
    c.assert_no_crash()
}
