//! MVCC and isolation of torii tables, driven from several sessions with scripted interleavings
//! (`torii_harness::Sessions`).
//!
//! Most scripts run twice in one cluster: in a database whose tables are heap, and in one whose
//! default table access method is the AM under test (torii). The two transcripts (statements,
//! `<waiting ...>` marks, results, errors) must be identical: heap is the reference. The
//! transcripts are also checked for the specific facts each scenario is about (who waits, who
//! gets which SQLSTATE, final values), so that a change of heap's behaviour cannot make a wrong
//! answer pass. Scenarios whose outcome depends on timing (deadlock victim, SSI victim) are
//! checked by their invariants only, for heap and for torii alike.
//!
//! Stress parts (many concurrent autocommit transactions from threads) run on the AM under test
//! only and check exact final sums.

use std::thread;
use std::time::Duration;

use postgres::Client;
use torii_harness::sessions::{Outcome, StepState};
use torii_harness::testing::{am, assert_verify_clean, cluster_with_db_conf, torii_stats, DB};
use torii_harness::{err, sql, Cluster, Result, Sessions};

/// Database with heap tables, the reference.
const HEAP_DB: &str = "heap_ref";

/// A cluster with database [`DB`] (default table AM = the AM under test) and [`HEAP_DB`].
fn iso_cluster(name: &str) -> Result<Cluster> {
    let (c, mut cl) = cluster_with_db_conf(name, &["deadlock_timeout = '200ms'"])?;
    cl.batch_execute(&format!(
        "ALTER DATABASE {DB} SET default_table_access_method = {}",
        am()
    ))?;
    c.create_db(HEAP_DB)?;
    Ok(c)
}

/// Error unless every ordinary table of schema public in `db` uses `want`.
fn check_table_ams(c: &Cluster, db: &str, want: &str) -> Result<()> {
    let mut cl = c.connect(db)?;
    let wrong = sql::result_text(
        &mut cl,
        &format!(
            "SELECT c.relname || ':' || a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam \
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' \
             AND a.amname <> {} ORDER BY 1",
            sql::literal(want)
        ),
    )?;
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(err(format!("tables of {db} not using {want}: {wrong}")))
    }
}

/// Run `setup` (one connection) and then `steps` (sessions `names`) in the heap database and in
/// the database of the AM under test; the transcripts must be identical. Returns the
/// transcript.
fn same_as_heap(
    c: &Cluster,
    names: &[&str],
    setup: &str,
    steps: &[(&str, &str)],
) -> Result<String> {
    let mut out = Vec::new();
    for (db, want) in [(HEAP_DB, "heap".to_string()), (DB, am())] {
        c.exec_in(db, setup)?;
        check_table_ams(c, db, &want)?;
        let mut s = Sessions::new(c, db, names)?;
        s.set_step_timeout(Duration::from_secs(30));
        let t = s
            .run(steps)
            .map_err(|e| err(format!("{db}: {e}\ntranscript so far:\n{}", s.transcript())))?;
        out.push(t);
    }
    if out[0] != out[1] {
        return Err(err(format!(
            "transcripts differ between heap and {}\n{}\n=== heap:\n{}\n=== {}:\n{}",
            am(),
            first_difference(&out[0], &out[1]),
            out[0],
            am(),
            out[1]
        )));
    }
    Ok(out.pop().unwrap_or_default())
}

fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i), lb.get(i));
        if x != y {
            return format!(
                "first difference at transcript line {}:\n  heap: {}\n  {}: {}",
                i + 1,
                x.unwrap_or(&"<end>"),
                am(),
                y.unwrap_or(&"<end>")
            );
        }
    }
    String::new()
}

/// Assert that `transcript` contains `needle` (with the transcript in the message).
fn expect(transcript: &str, needle: &str) {
    assert!(
        transcript.contains(needle),
        "transcript lacks:\n{needle}\n--- transcript:\n{transcript}"
    );
}

fn done(state: StepState) -> Result<Outcome> {
    match state {
        StepState::Done(o) => Ok(o),
        StepState::Blocked => Err(err("step blocked unexpectedly")),
    }
}

// ---------------------------------------------------------------------------------------------
// Lost updates
// ---------------------------------------------------------------------------------------------

#[test]
fn lost_update_prevented_read_committed() -> Result<()> {
    let c = iso_cluster("iso-lost")?;
    let t = same_as_heap(
        &c,
        &["s1", "s2"],
        "CREATE TABLE acc (id int PRIMARY KEY, bal int NOT NULL, ibal int NOT NULL); \
         CREATE INDEX acc_ibal ON acc (ibal); \
         INSERT INTO acc SELECT g, 0, 0 FROM generate_series(1, 10) g",
        &[
            // in place (no indexed column changes)
            ("s1", "BEGIN; UPDATE acc SET bal = bal + 1 WHERE id = 1"),
            ("s2", "BEGIN; UPDATE acc SET bal = bal + 1 WHERE id = 1"),
            ("s1", "COMMIT"),
            ("s2", "SELECT bal FROM acc WHERE id = 1"),
            ("s2", "COMMIT"),
            // cold (an indexed column changes, the row moves)
            ("s1", "BEGIN; UPDATE acc SET ibal = ibal + 1 WHERE id = 2"),
            ("s2", "BEGIN; UPDATE acc SET ibal = ibal + 1 WHERE id = 2"),
            ("s1", "COMMIT"),
            ("s2", "COMMIT"),
            // a third one waits behind the second
            ("s1", "BEGIN; UPDATE acc SET ibal = ibal + 1, bal = bal + 1 WHERE id = 2"),
            ("s2", "UPDATE acc SET ibal = ibal + 1, bal = bal + 1 WHERE id = 2 RETURNING bal, ibal"),
            ("s1", "COMMIT"),
            ("s1", "SELECT id, bal, ibal FROM acc WHERE id <= 2 ORDER BY id"),
            ("s1", "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT id FROM acc WHERE ibal = 4"),
        ],
    )?;
    expect(
        &t,
        "step s2: BEGIN; UPDATE acc SET bal = bal + 1 WHERE id = 1 <waiting ...>\n\
         step s1: COMMIT\nstep s2: <... completed>\n\
         step s2: SELECT bal FROM acc WHERE id = 1\nbal\n2\n",
    );
    expect(
        &t,
        "step s2: BEGIN; UPDATE acc SET ibal = ibal + 1 WHERE id = 2 <waiting ...>",
    );
    expect(&t, "bal|ibal\n2|4\n");
    expect(&t, "id|bal|ibal\n1|2|0\n2|2|4\n");
    expect(&t, "SELECT id FROM acc WHERE ibal = 4\nid\n2\n");

    // Stress: two clients increment the same rows 400 times each, in place and cold.
    const N: i64 = 400;
    let clients: Vec<Client> = (0..2).map(|_| c.connect(DB)).collect::<Result<_>>()?;
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut cl)| {
            thread::spawn(move || -> std::result::Result<(), String> {
                for i in 0..N {
                    let r = if (i + w as i64) % 3 == 0 {
                        cl.batch_execute(
                            "BEGIN; UPDATE acc SET bal = bal + 1 WHERE id = 3; \
                             UPDATE acc SET ibal = ibal + 1 WHERE id = 4; COMMIT",
                        )
                    } else {
                        cl.batch_execute("UPDATE acc SET bal = bal + 1 WHERE id = 3")
                            .and_then(|_| {
                                cl.batch_execute("UPDATE acc SET ibal = ibal + 1 WHERE id = 4")
                            })
                    };
                    r.map_err(|e| format!("worker {w}, iteration {i}: {}", sql::describe(&e)))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| err("worker panicked"))??;
    }
    let mut cl = c.connect(DB)?;
    assert_eq!(
        sql::result_text(
            &mut cl,
            "SELECT id, bal, ibal FROM acc WHERE id IN (3, 4) ORDER BY id"
        )?,
        format!("3|{}|0\n4|0|{}", 2 * N, 2 * N)
    );
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    assert_eq!(
        sql::result_text(
            &mut cl,
            &format!("SELECT id FROM acc WHERE ibal = {}", 2 * N)
        )?,
        "4"
    );
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM acc")?, 10);
    assert_verify_clean(&mut cl, "acc")?;
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// SERIALIZABLE: write skew
// ---------------------------------------------------------------------------------------------

#[test]
fn write_skew_caught_serializable() -> Result<()> {
    let c = iso_cluster("iso-skew")?;
    for (db, index) in [(HEAP_DB, false), (DB, false), (HEAP_DB, true), (DB, true)] {
        c.exec_in(
            db,
            "DROP TABLE IF EXISTS doctors; \
             CREATE TABLE doctors (name text PRIMARY KEY, on_call bool NOT NULL, shift int); \
             CREATE INDEX doctors_shift ON doctors (shift); \
             INSERT INTO doctors VALUES ('alice', true, 1), ('bob', true, 1), ('carol', false, 1), \
             ('dave', true, 2)",
        )?;
        let mut s = Sessions::new(&c, db, &["s1", "s2"])?;
        s.set_step_timeout(Duration::from_secs(30));
        let scan = if index {
            " SET enable_seqscan = off; SET enable_bitmapscan = off;"
        } else {
            ""
        };
        let mut outcomes = Vec::new();
        for (sess, who) in [("s1", "alice"), ("s2", "bob")] {
            let o = done(s.step(
                sess,
                &format!(
                    "BEGIN ISOLATION LEVEL SERIALIZABLE;{scan} \
                     SELECT count(*) FROM doctors WHERE on_call AND shift = 1"
                ),
            )?)?;
            assert_eq!(o.lines(), vec!["2"], "{db}: {who}'s check");
        }
        for (sess, who) in [("s1", "alice"), ("s2", "bob")] {
            let o = match s.step(
                sess,
                &format!("UPDATE doctors SET on_call = false WHERE name = '{who}'"),
            )? {
                StepState::Done(o) => o,
                StepState::Blocked => s.wait(sess)?,
            };
            outcomes.push(o);
        }
        for sess in ["s1", "s2"] {
            let o = match s.step(sess, "COMMIT")? {
                StepState::Done(o) => o,
                StepState::Blocked => s.wait(sess)?,
            };
            outcomes.push(o);
        }
        let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.is_error()).collect();
        let transcript = s.transcript().to_string();
        assert!(
            failures.len() == 1 && failures[0].sqlstate() == Some("40001"),
            "{db} (index scan: {index}): exactly one serialization failure expected:\n{transcript}"
        );
        drop(s);
        assert_eq!(
            c.query_scalar_in::<i64>(
                db,
                "SELECT count(*) FROM doctors WHERE on_call AND shift = 1"
            )?,
            1,
            "{db}: one doctor must remain on call\n{transcript}"
        );
    }
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// REPEATABLE READ: stable snapshot over many updates
// ---------------------------------------------------------------------------------------------

#[test]
fn repeatable_read_snapshot_stable_over_1000_updates() -> Result<()> {
    let c = iso_cluster("iso-rr")?;
    let mut w = c.connect(DB)?;
    // The AM under test and a heap mirror, changed by the same transactions.
    w.batch_execute(&format!(
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL, pad text) USING {am}; \
         CREATE INDEX t_k ON t (k); \
         CREATE TABLE h (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL, pad text) USING heap; \
         CREATE INDEX h_k ON h (k); \
         INSERT INTO t SELECT g, g * 10, g, 'p' FROM generate_series(1, 20) g; \
         INSERT INTO h SELECT * FROM t",
        am = am()
    ))?;
    let queries = [
        "SELECT id, v, k, pad FROM {t} ORDER BY id",
        "SELECT sum(v), sum(k), count(*) FROM {t}",
        "SELECT id, v FROM {t} WHERE id IN (1, 7, 20) ORDER BY id",
        "SELECT id, v FROM {t} WHERE k BETWEEN 3 AND 9 ORDER BY id",
    ];
    let read_all = |cl: &mut Client, table: &str, index: bool| -> Result<Vec<String>> {
        if index {
            cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
        }
        let r = queries
            .iter()
            .map(|q| sql::result_text(cl, &q.replace("{t}", table)))
            .collect::<Result<Vec<_>>>();
        cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
        r
    };

    let mut rr = c.connect(DB)?;
    rr.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
    let snap_seq = read_all(&mut rr, "t", false)?;
    let snap_idx = read_all(&mut rr, "t", true)?;
    assert_eq!(snap_seq, read_all(&mut rr, "h", false)?);
    assert_eq!(snap_seq, snap_idx, "seq scan and index scan agree");

    for i in 0..1000 {
        let id = i % 20 + 1;
        let set = if i % 10 == 3 {
            // cold: the indexed column changes
            "k = k + 1000, v = v + 1"
        } else if i % 7 == 0 {
            // the row grows
            "pad = pad || 'x', v = v + 1"
        } else {
            "v = v + 1"
        };
        w.batch_execute(&format!(
            "UPDATE t SET {set} WHERE id = {id}; UPDATE h SET {set} WHERE id = {id}"
        ))?;
        if i % 250 == 249 {
            assert_eq!(
                read_all(&mut rr, "t", false)?,
                snap_seq,
                "RR snapshot (seq scan) changed after {} updates",
                i + 1
            );
            assert_eq!(
                read_all(&mut rr, "t", true)?,
                snap_seq,
                "RR snapshot (index scan) changed after {} updates",
                i + 1
            );
            assert_eq!(read_all(&mut rr, "h", false)?, snap_seq);
        }
    }
    if am() == "torii" {
        let st = torii_stats(&mut w, "t")?;
        eprintln!("undo held by the RR snapshot: {st:?}");
        assert!(
            st.undo_records >= 1000,
            "the open snapshot needs the undo of all 1000 updates: {st:?}"
        );
    }
    rr.batch_execute("COMMIT")?;
    let now_seq = read_all(&mut rr, "t", false)?;
    let now_idx = read_all(&mut rr, "t", true)?;
    assert_ne!(now_seq, snap_seq, "after COMMIT the new values are seen");
    assert_eq!(now_seq, now_idx);
    assert_eq!(now_seq, read_all(&mut rr, "h", false)?);
    let base: i64 = (1..=20).map(|g| g * 10).sum();
    assert_eq!(
        sql::scalar::<i64>(&mut rr, "SELECT sum(v) FROM t")?,
        base + 1000
    );
    assert_verify_clean(&mut w, "t")?;
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// Row locks
// ---------------------------------------------------------------------------------------------

#[test]
fn key_share_by_three_then_delete_waits_for_all() -> Result<()> {
    let c = iso_cluster("iso-keyshare")?;
    let t = same_as_heap(
        &c,
        &["s1", "s2", "s3", "s4"],
        "CREATE TABLE ks (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL); \
         CREATE INDEX ks_k ON ks (k); \
         INSERT INTO ks VALUES (1, 0, 1), (2, 0, 2), (3, 0, 3)",
        &[
            ("s1", "BEGIN; SELECT id FROM ks WHERE id = 1 FOR KEY SHARE"),
            ("s2", "BEGIN; SELECT id FROM ks WHERE id = 1 FOR KEY SHARE"),
            ("s3", "BEGIN; SELECT id FROM ks WHERE id = 1 FOR KEY SHARE"),
            // a non-key update in place does not conflict with KEY SHARE
            ("s4", "UPDATE ks SET v = v + 1 WHERE id = 1 RETURNING v"),
            // a delete does, with every one of the three
            ("s4", "DELETE FROM ks WHERE id = 1"),
            ("s1", "COMMIT"),
            ("s2", "COMMIT"),
            ("s3", "COMMIT"),
            ("s4", "SELECT id FROM ks ORDER BY id"),
            // SHARE by two, then FOR UPDATE waits for both
            ("s1", "BEGIN; SELECT id FROM ks WHERE id = 2 FOR SHARE"),
            ("s2", "BEGIN; SELECT id FROM ks WHERE id = 2 FOR SHARE"),
            ("s3", "BEGIN; SELECT id FROM ks WHERE id = 2 FOR UPDATE"),
            ("s1", "COMMIT"),
            ("s2", "COMMIT"),
            ("s3", "COMMIT"),
            // a key update waits for KEY SHARE lockers
            ("s1", "BEGIN; SELECT id FROM ks WHERE id = 3 FOR KEY SHARE"),
            ("s2", "UPDATE ks SET id = 30 WHERE id = 3"),
            ("s1", "ROLLBACK"),
            ("s1", "SELECT id, v, k FROM ks ORDER BY id"),
        ],
    )?;
    for s in ["s1", "s2", "s3"] {
        expect(
            &t,
            &format!("step {s}: BEGIN; SELECT id FROM ks WHERE id = 1 FOR KEY SHARE\nid\n1\n"),
        );
    }
    expect(
        &t,
        "step s4: UPDATE ks SET v = v + 1 WHERE id = 1 RETURNING v\nv\n1\n",
    );
    expect(
        &t,
        "step s4: DELETE FROM ks WHERE id = 1 <waiting ...>\nstep s1: COMMIT\nstep s2: COMMIT\n\
         step s3: COMMIT\nstep s4: <... completed>\nstep s4: SELECT id FROM ks ORDER BY id\nid\n2\n3\n",
    );
    expect(
        &t,
        "step s3: BEGIN; SELECT id FROM ks WHERE id = 2 FOR UPDATE <waiting ...>\n\
         step s1: COMMIT\nstep s2: COMMIT\nstep s3: <... completed>\n",
    );
    expect(&t, "step s2: UPDATE ks SET id = 30 WHERE id = 3 <waiting ...>\nstep s1: ROLLBACK\nstep s2: <... completed>\n");
    expect(&t, "id|v|k\n2|0|2\n30|0|3\n");

    // A non-key update that moves the row (an indexed column changes) and then a DELETE, in one
    // transaction: heap lets the update through and makes the DELETE wait; torii makes the
    // update wait (row locks stay with the old TID, see
    // `key_share_does_not_block_a_moving_non_key_update`). Either way nothing is deleted before
    // all three KEY SHARE lockers have committed.
    for db in [HEAP_DB, DB] {
        c.exec_in(db, "INSERT INTO ks VALUES (4, 0, 4)")?;
        let mut s = Sessions::new(&c, db, &["s1", "s2", "s3", "s4"])?;
        s.set_step_timeout(Duration::from_secs(30));
        for l in ["s1", "s2", "s3"] {
            let o = done(s.step(l, "BEGIN; SELECT id FROM ks WHERE id = 4 FOR KEY SHARE")?)?;
            assert_eq!(o.lines(), vec!["4"], "{db}: {}", s.transcript());
        }
        assert_eq!(
            s.step(
                "s4",
                "BEGIN; UPDATE ks SET k = k + 100 WHERE id = 4; DELETE FROM ks WHERE id = 4; COMMIT"
            )?,
            StepState::Blocked,
            "{db}: the DELETE must wait for the KEY SHARE lockers\n{}",
            s.transcript()
        );
        for l in ["s1", "s2"] {
            done(s.step(l, "COMMIT")?)?;
            assert!(
                s.is_blocked("s4"),
                "{db}: s4 went on before all lockers committed\n{}",
                s.transcript()
            );
        }
        done(s.step("s3", "COMMIT")?)?;
        if s.is_blocked("s4") {
            let o = s.wait("s4")?;
            assert!(!o.is_error(), "{db}: {o:?}");
        }
        drop(s);
        assert_eq!(
            c.query_scalar_in::<i64>(db, "SELECT count(*) FROM ks WHERE id = 4")?,
            0,
            "{db}"
        );
    }
    c.assert_no_crash()
}

/// heap: an update that changes no key column does not conflict with FOR KEY SHARE, even when
/// it is not HOT. torii: the update moves the row (an indexed column changes) and waits for the
/// lockers of the old TID (row locks are tuple locks on that TID and do not follow the row).
#[test]
#[ignore = "known difference: a cold update waits for KEY SHARE lockers of the old TID (row locks do not follow a moved row), so this transcript blocks where heap does not"]
fn key_share_does_not_block_a_moving_non_key_update() -> Result<()> {
    let c = iso_cluster("iso-keyshare-cold")?;
    let t = same_as_heap(
        &c,
        &["s1", "s2"],
        "CREATE TABLE ks (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL); \
         CREATE INDEX ks_k ON ks (k); INSERT INTO ks VALUES (1, 0, 1)",
        &[
            ("s1", "BEGIN; SELECT id FROM ks WHERE id = 1 FOR KEY SHARE"),
            ("s2", "UPDATE ks SET k = k + 100 WHERE id = 1 RETURNING k"),
            ("s1", "COMMIT"),
        ],
    )?;
    expect(
        &t,
        "step s2: UPDATE ks SET k = k + 100 WHERE id = 1 RETURNING k\nk\n101\nstep s1: COMMIT\n",
    );
    c.assert_no_crash()
}

#[test]
fn nowait_and_skip_locked() -> Result<()> {
    let c = iso_cluster("iso-nowait")?;
    let t = same_as_heap(
        &c,
        &["s1", "s2"],
        "CREATE TABLE q (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL); \
         CREATE INDEX q_k ON q (k); \
         INSERT INTO q SELECT g, 0, g FROM generate_series(1, 6) g",
        &[
            ("s1", "BEGIN; SELECT id FROM q WHERE id = 1 FOR UPDATE"),
            ("s1", "UPDATE q SET v = v + 1 WHERE id = 2"),
            ("s1", "UPDATE q SET k = k + 100 WHERE id = 3"),
            ("s1", "DELETE FROM q WHERE id = 4"),
            ("s2", "SELECT id FROM q WHERE id = 1 FOR UPDATE NOWAIT"),
            ("s2", "SELECT id FROM q WHERE id = 2 FOR SHARE NOWAIT"),
            ("s2", "SELECT id FROM q WHERE id = 3 FOR UPDATE NOWAIT"),
            (
                "s2",
                "SELECT id FROM q WHERE id = 4 FOR NO KEY UPDATE NOWAIT",
            ),
            ("s2", "UPDATE q SET v = 9 WHERE id = 5 RETURNING id"),
            ("s2", "SELECT id FROM q ORDER BY id FOR UPDATE SKIP LOCKED"),
            (
                "s2",
                "SELECT id FROM q ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            ),
            (
                "s2",
                "BEGIN; SELECT id FROM q WHERE id >= 5 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            ),
            ("s1", "SELECT id FROM q ORDER BY id FOR UPDATE SKIP LOCKED"),
            ("s2", "COMMIT"),
            ("s1", "COMMIT"),
            ("s2", "SELECT id FROM q WHERE id = 1 FOR UPDATE NOWAIT"),
            ("s2", "SELECT id, v, k FROM q ORDER BY id"),
        ],
    )?;
    for id in [1, 2, 3] {
        let lock = if id == 2 { "SHARE" } else { "UPDATE" };
        expect(
            &t,
            &format!(
                "step s2: SELECT id FROM q WHERE id = {id} FOR {lock} NOWAIT\n\
                 ERROR:  could not obtain lock on row in relation \"q\" (SQLSTATE 55P03)\n"
            ),
        );
    }
    expect(
        &t,
        "step s2: SELECT id FROM q ORDER BY id FOR UPDATE SKIP LOCKED\nid\n5\n6\n",
    );
    expect(
        &t,
        "step s2: SELECT id FROM q ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED\nid\n5\n",
    );
    // s1 skips the row s2 holds, and sees its own.
    expect(
        &t,
        "step s1: SELECT id FROM q ORDER BY id FOR UPDATE SKIP LOCKED\nid\n1\n2\n3\n6\n",
    );
    expect(
        &t,
        "step s2: SELECT id FROM q WHERE id = 1 FOR UPDATE NOWAIT\nid\n1\n",
    );
    expect(&t, "id|v|k\n1|0|1\n2|1|2\n3|0|103\n5|9|5\n6|0|6\n");
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// INSERT ... ON CONFLICT
// ---------------------------------------------------------------------------------------------

#[test]
fn on_conflict_races() -> Result<()> {
    let c = iso_cluster("iso-upsert")?;
    let up = |key: &str| {
        format!(
            "INSERT INTO counters VALUES ('{key}', 1) ON CONFLICT (k) DO UPDATE \
             SET n = counters.n + 1 RETURNING n"
        )
    };
    let (ua, ub) = (up("a"), up("b"));
    let t = same_as_heap(
        &c,
        &["s1", "s2"],
        "CREATE TABLE counters (k text PRIMARY KEY, n int NOT NULL, note text)",
        &[
            ("s1", &format!("BEGIN; {ua}")),
            ("s2", &format!("BEGIN; {ua}")),
            ("s1", "COMMIT"),
            ("s2", "COMMIT"),
            // the first inserter rolls back: the second inserts
            ("s1", &format!("BEGIN; {ub}")),
            ("s2", &ub),
            ("s1", "ROLLBACK"),
            // DO NOTHING
            (
                "s1",
                "BEGIN; INSERT INTO counters VALUES ('c', 1) ON CONFLICT DO NOTHING",
            ),
            (
                "s2",
                "INSERT INTO counters VALUES ('c', 5) ON CONFLICT DO NOTHING RETURNING n",
            ),
            ("s1", "COMMIT"),
            // upsert of a row that a running transaction updates (in place, then cold)
            ("s1", "BEGIN; UPDATE counters SET n = n + 100 WHERE k = 'a'"),
            ("s2", &ua),
            ("s1", "COMMIT"),
            ("s1", "BEGIN; UPDATE counters SET k = 'bb' WHERE k = 'b'"),
            ("s2", &ub),
            ("s1", "COMMIT"),
            ("s1", "SELECT k, n FROM counters ORDER BY k"),
        ],
    )?;
    expect(
        &t,
        &format!(
            "step s2: BEGIN; {ua} <waiting ...>\nstep s1: COMMIT\nstep s2: <... completed>\nn\n2\n"
        ),
    );
    expect(
        &t,
        &format!(
            "step s2: {ub} <waiting ...>\nstep s1: ROLLBACK\nstep s2: <... completed>\nn\n1\n"
        ),
    );
    expect(
        &t,
        "RETURNING n <waiting ...>\nstep s1: COMMIT\nstep s2: <... completed>\nn\n103\n",
    );
    expect(&t, "k|n\na|103\nb|1\nbb|1\nc|1\n");

    // Stress: two clients upsert 5 keys 300 times each.
    const N: i64 = 300;
    let clients: Vec<Client> = (0..2).map(|_| c.connect(DB)).collect::<Result<_>>()?;
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut cl)| {
            thread::spawn(move || -> std::result::Result<(), String> {
                for i in 0..N {
                    let key = format!("s{}", (i * 7 + w as i64) % 5);
                    cl.batch_execute(&format!(
                        "INSERT INTO counters VALUES ('{key}', 1, 'w{w}') ON CONFLICT (k) \
                         DO UPDATE SET n = counters.n + 1, note = excluded.note"
                    ))
                    .map_err(|e| format!("worker {w}, iteration {i}: {}", sql::describe(&e)))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| err("worker panicked"))??;
    }
    let mut cl = c.connect(DB)?;
    assert_eq!(
        sql::result_text(
            &mut cl,
            "SELECT count(*), sum(n) FROM counters WHERE k LIKE 's%'"
        )?,
        format!("5|{}", 2 * N)
    );
    assert_verify_clean(&mut cl, "counters")?;
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// Deadlocks
// ---------------------------------------------------------------------------------------------

#[test]
fn deadlock_detected() -> Result<()> {
    let c = iso_cluster("iso-deadlock")?;
    for db in [HEAP_DB, DB] {
        for (name, set1, set2) in [
            ("in place", "v = v + 1", "v = v + 1"),
            ("cold", "k = k + 10", "k = k + 10"),
        ] {
            c.exec_in(
                db,
                "DROP TABLE IF EXISTS d; CREATE TABLE d (id int PRIMARY KEY, v int, k int); \
                 CREATE INDEX d_k ON d (k); INSERT INTO d VALUES (1, 0, 1), (2, 0, 2)",
            )?;
            let mut s = Sessions::new(&c, db, &["s1", "s2"])?;
            s.set_step_timeout(Duration::from_secs(30));
            done(s.step("s1", &format!("BEGIN; UPDATE d SET {set1} WHERE id = 1"))?)?;
            done(s.step("s2", &format!("BEGIN; UPDATE d SET {set2} WHERE id = 2"))?)?;
            assert_eq!(
                s.step("s1", &format!("UPDATE d SET {set1} WHERE id = 2"))?,
                StepState::Blocked
            );
            let o2 = match s.step("s2", &format!("UPDATE d SET {set2} WHERE id = 1"))? {
                StepState::Done(o) => o,
                StepState::Blocked => s.wait("s2")?,
            };
            // s1 has completed meanwhile unless it is still waiting.
            let o1 = if s.is_blocked("s1") {
                s.wait("s1")?
            } else {
                s.take_completions()
                    .into_iter()
                    .rev()
                    .find(|c| c.session == "s1")
                    .map(|c| c.outcome)
                    .ok_or_else(|| err(format!("no completion of s1:\n{}", s.transcript())))?
            };
            let tr = s.transcript().to_string();
            let victims = [&o1, &o2]
                .iter()
                .filter(|o| o.sqlstate() == Some("40P01"))
                .count();
            assert_eq!(
                victims, 1,
                "{db} {name}: one deadlock victim expected:\n{tr}"
            );
            assert!(
                !o1.is_error() || !o2.is_error(),
                "{db} {name}: the survivor must succeed:\n{tr}"
            );
            let (survivor, victim) = if o1.is_error() {
                ("s2", "s1")
            } else {
                ("s1", "s2")
            };
            done(s.step(victim, "ROLLBACK")?)?;
            let o = done(s.step(survivor, "COMMIT")?)?;
            assert!(!o.is_error(), "{db}: {o:?}");
            let got = c.query_scalar_in::<String>(
                db,
                "SELECT string_agg(id || ':' || v || ':' || k, ',' ORDER BY id) FROM d",
            )?;
            // the survivor's two updates (one per row), none of the victim's
            let want = if name == "in place" {
                "1:1:1,2:1:2"
            } else {
                "1:0:11,2:0:12"
            };
            assert_eq!(got, want, "{db} {name}: the survivor's updates only\n{tr}");
        }
    }
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// Foreign keys
// ---------------------------------------------------------------------------------------------

#[test]
fn foreign_keys_between_torii_tables() -> Result<()> {
    let c = iso_cluster("iso-fk")?;
    let t = same_as_heap(
        &c,
        &["s1", "s2", "s3"],
        "CREATE TABLE parent (id int PRIMARY KEY, name text, note text, code int); \
         CREATE INDEX parent_code ON parent (code); \
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id), v int); \
         CREATE INDEX child_parent ON child (parent_id); \
         CREATE TABLE child_c (id int PRIMARY KEY, \
             parent_id int REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE); \
         INSERT INTO parent SELECT g, 'p' || g, '', g FROM generate_series(1, 7) g",
        &[
            // children of the same parent from two sessions: neither waits
            ("s1", "BEGIN; INSERT INTO child VALUES (1, 1, 0)"),
            ("s2", "BEGIN; INSERT INTO child VALUES (2, 1, 0)"),
            // a non-key update of the parent does not wait for the KEY SHARE locks
            ("s3", "UPDATE parent SET note = 'updated' WHERE id = 1"),
            ("s1", "INSERT INTO child VALUES (3, 1, 0)"),
            ("s1", "COMMIT"),
            ("s2", "COMMIT"),
            // a parent delete waits for an uncommitted child insert, then fails
            ("s1", "BEGIN; INSERT INTO child VALUES (10, 2, 0)"),
            ("s2", "DELETE FROM parent WHERE id = 2"),
            ("s1", "COMMIT"),
            // ... or succeeds if the child insert rolls back
            ("s1", "BEGIN; INSERT INTO child VALUES (11, 3, 0)"),
            ("s2", "DELETE FROM parent WHERE id = 3"),
            ("s1", "ROLLBACK"),
            // a child insert waits for an uncommitted parent delete, then fails
            ("s1", "BEGIN; DELETE FROM parent WHERE id = 4"),
            ("s2", "INSERT INTO child VALUES (12, 4, 0)"),
            ("s1", "COMMIT"),
            // a child insert waits for an uncommitted key update of the parent
            ("s1", "BEGIN; UPDATE parent SET id = 50 WHERE id = 5"),
            ("s2", "INSERT INTO child VALUES (13, 5, 0)"),
            ("s1", "ROLLBACK"),
            // the KEY SHARE lock of an uncommitted child insert survives a non-key update that
            // moves the parent row (indexed column): the parent's delete still waits
            // (heap waits at the DELETE, torii already at the update that moves the row)
            ("s1", "BEGIN; INSERT INTO child VALUES (14, 7, 0)"),
            (
                "s2",
                "BEGIN; UPDATE parent SET code = code + 100 WHERE id = 7; \
                 DELETE FROM parent WHERE id = 7",
            ),
            ("s1", "COMMIT"),
            ("s2", "ROLLBACK"),
            // a key update of a referenced parent fails
            ("s1", "UPDATE parent SET id = 100 WHERE id = 1"),
            // cascades
            ("s1", "INSERT INTO child_c VALUES (1, 6), (2, 6)"),
            ("s1", "UPDATE parent SET id = 60 WHERE id = 6"),
            ("s1", "SELECT id, parent_id FROM child_c ORDER BY id"),
            ("s1", "DELETE FROM parent WHERE id = 60"),
            ("s1", "SELECT count(*) FROM child_c"),
            ("s1", "SELECT id, parent_id FROM child ORDER BY id"),
            ("s1", "SELECT id, name, note FROM parent ORDER BY id"),
        ],
    )?;
    expect(
        &t,
        "step s2: BEGIN; INSERT INTO child VALUES (2, 1, 0)\nstep s3: UPDATE parent SET note = 'updated' WHERE id = 1\nstep s1:",
    );
    expect(
        &t,
        "step s2: DELETE FROM parent WHERE id = 2 <waiting ...>\nstep s1: COMMIT\n\
         step s2: <... completed>\nERROR:  update or delete on table \"parent\" violates foreign key \
         constraint \"child_parent_id_fkey\" on table \"child\" (SQLSTATE 23503)\n",
    );
    expect(
        &t,
        "step s2: DELETE FROM parent WHERE id = 3 <waiting ...>\nstep s1: ROLLBACK\nstep s2: <... completed>\n",
    );
    expect(
        &t,
        "step s2: INSERT INTO child VALUES (12, 4, 0) <waiting ...>\nstep s1: COMMIT\n\
         step s2: <... completed>\nERROR:  insert or update on table \"child\" violates foreign key \
         constraint \"child_parent_id_fkey\" (SQLSTATE 23503)\n",
    );
    expect(
        &t,
        "step s2: INSERT INTO child VALUES (13, 5, 0) <waiting ...>\nstep s1: ROLLBACK\nstep s2: <... completed>\n",
    );
    expect(&t, "id|parent_id\n1|60\n2|60\n");
    expect(&t, "step s1: SELECT count(*) FROM child_c\ncount\n0\n");
    expect(
        &t,
        "DELETE FROM parent WHERE id = 7 <waiting ...>\nstep s1: COMMIT\n\
         step s2: <... completed>\nERROR:  update or delete on table \"parent\" violates foreign key \
         constraint \"child_parent_id_fkey\" on table \"child\" (SQLSTATE 23503)\n",
    );
    expect(
        &t,
        "step s1: UPDATE parent SET id = 100 WHERE id = 1\nERROR:  update or delete on table \
         \"parent\" violates foreign key constraint \"child_parent_id_fkey\" on table \"child\" \
         (SQLSTATE 23503)\n",
    );
    expect(&t, "id|parent_id\n1|1\n2|1\n3|1\n10|2\n13|5\n14|7\n");
    expect(&t, "id|name|note\n1|p1|updated\n2|p2|\n5|p5|\n7|p7|\n");

    // Stress: two clients insert 200 children of parent 1 each (batches of 5 per transaction),
    // while a third updates the parent's non-key column.
    let mut clients: Vec<Client> = (0..3).map(|_| c.connect(DB)).collect::<Result<_>>()?;
    let mut updater = clients.pop().ok_or_else(|| err("no client"))?;
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(w, mut cl)| {
            thread::spawn(move || -> std::result::Result<(), String> {
                for b in 0..40 {
                    let first = 1000 + w as i64 * 1000 + b * 5;
                    cl.batch_execute(&format!(
                        "INSERT INTO child SELECT g, 1, {w} FROM generate_series({first}, {}) g",
                        first + 4
                    ))
                    .map_err(|e| format!("worker {w}, batch {b}: {}", sql::describe(&e)))?;
                }
                Ok(())
            })
        })
        .collect();
    for i in 0..50 {
        updater
            .batch_execute(&format!("UPDATE parent SET note = 'n{i}' WHERE id = 1"))
            .map_err(|e| {
                err(format!(
                    "updater, update {i}: {}\n{}",
                    sql::describe(&e),
                    c.crash_lines_since(0).join("\n")
                ))
            })?;
    }
    for h in handles {
        h.join().map_err(|_| err("worker panicked"))??;
    }
    let mut cl = c.connect(DB)?;
    assert_eq!(
        sql::result_text(
            &mut cl,
            "SELECT v, count(*) FROM child WHERE id >= 1000 GROUP BY v ORDER BY v"
        )?,
        "0|200\n1|200"
    );
    // Every child's parent exists.
    assert_eq!(
        sql::scalar::<i64>(
            &mut cl,
            "SELECT count(*) FROM child c WHERE NOT EXISTS (SELECT FROM parent p WHERE p.id = c.parent_id)"
        )?,
        0
    );
    sql::expect_sqlstate(&mut cl, "DELETE FROM parent WHERE id = 1", "23503")?;
    for tbl in ["parent", "child", "child_c"] {
        assert_verify_clean(&mut cl, tbl)?;
    }
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// READ COMMITTED re-check (EvalPlanQual)
// ---------------------------------------------------------------------------------------------

#[test]
fn read_committed_recheck() -> Result<()> {
    let c = iso_cluster("iso-epq")?;
    let t = same_as_heap(
        &c,
        &["a", "b", "c"],
        "CREATE TABLE e (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL); \
         CREATE INDEX e_k ON e (k); \
         INSERT INTO e SELECT g, 5, g FROM generate_series(1, 6) g",
        &[
            // B applies to A's version
            ("a", "BEGIN; UPDATE e SET v = v + 10 WHERE id = 1"),
            (
                "b",
                "UPDATE e SET v = v * 2 WHERE id = 1 AND v > 0 RETURNING v",
            ),
            ("a", "COMMIT"),
            // A's version no longer qualifies
            ("a", "BEGIN; UPDATE e SET v = -1 WHERE id = 2"),
            (
                "b",
                "UPDATE e SET v = v * 2 WHERE id = 2 AND v > 0 RETURNING v",
            ),
            ("a", "COMMIT"),
            // across a cold update (A changes the indexed column: the row moves)
            (
                "a",
                "BEGIN; UPDATE e SET v = v + 10, k = k + 100 WHERE id = 3",
            ),
            (
                "b",
                "UPDATE e SET v = v * 2 WHERE id = 3 AND v > 0 RETURNING v, k",
            ),
            ("a", "COMMIT"),
            // B found the row through the old index key, which A's version no longer has
            ("a", "BEGIN; UPDATE e SET k = k + 100 WHERE id = 4"),
            (
                "b",
                "SET enable_seqscan = off; SET enable_bitmapscan = off; \
                   UPDATE e SET v = v * 2 WHERE k = 4 RETURNING id, v",
            ),
            ("a", "COMMIT"),
            ("b", "RESET enable_seqscan; RESET enable_bitmapscan"),
            // A deletes the row
            ("a", "BEGIN; DELETE FROM e WHERE id = 5"),
            ("b", "UPDATE e SET v = v * 2 WHERE id = 5 RETURNING v"),
            ("a", "COMMIT"),
            // SELECT FOR UPDATE and DELETE follow a cold update too
            ("a", "BEGIN; UPDATE e SET k = k + 1000 WHERE id = 1"),
            ("b", "SELECT id, v, k FROM e WHERE id = 1 FOR UPDATE"),
            ("a", "COMMIT"),
            (
                "a",
                "BEGIN; UPDATE e SET k = k + 1000, v = v + 1 WHERE id = 1",
            ),
            ("b", "DELETE FROM e WHERE id = 1 RETURNING id, v, k"),
            ("a", "COMMIT"),
            ("a", "SELECT id, v, k FROM e ORDER BY id"),
        ],
    )?;
    let epq = |stmt: &str, result: &str| {
        expect(
            &t,
            &format!(
                "step b: {stmt} <waiting ...>\nstep a: COMMIT\nstep b: <... completed>\n{result}"
            ),
        )
    };
    epq(
        "UPDATE e SET v = v * 2 WHERE id = 1 AND v > 0 RETURNING v",
        "v\n30\n",
    );
    epq(
        "UPDATE e SET v = v * 2 WHERE id = 2 AND v > 0 RETURNING v",
        "v\nstep",
    );
    epq(
        "UPDATE e SET v = v * 2 WHERE id = 3 AND v > 0 RETURNING v, k",
        "v|k\n30|103\n",
    );
    expect(&t, "UPDATE e SET v = v * 2 WHERE k = 4 RETURNING id, v <waiting ...>\nstep a: COMMIT\nstep b: <... completed>\nid|v\nstep");
    epq("UPDATE e SET v = v * 2 WHERE id = 5 RETURNING v", "v\nstep");
    epq(
        "SELECT id, v, k FROM e WHERE id = 1 FOR UPDATE",
        "id|v|k\n1|30|1001\n",
    );
    epq(
        "DELETE FROM e WHERE id = 1 RETURNING id, v, k",
        "id|v|k\n1|31|2001\n",
    );
    expect(&t, "id|v|k\n2|-1|2\n3|30|103\n4|5|104\n6|5|6\n");

    // Two writers queue behind A; which of them goes first after A's commit is up to the
    // scheduler (with heap too), but each applies to the other's result: no update is lost.
    for db in [HEAP_DB, DB] {
        let mut s = Sessions::new(&c, db, &["a", "b", "c"])?;
        s.set_step_timeout(Duration::from_secs(30));
        done(s.step("a", "BEGIN; UPDATE e SET k = k + 1, v = v + 1 WHERE id = 3")?)?;
        assert_eq!(
            s.step("c", "UPDATE e SET k = k + 1, v = v + 1 WHERE id = 3")?,
            StepState::Blocked
        );
        assert_eq!(
            s.step("b", "UPDATE e SET v = v * 2 WHERE id = 3")?,
            StepState::Blocked
        );
        done(s.step("a", "COMMIT")?)?;
        for w in ["b", "c"] {
            if s.is_blocked(w) {
                let o = s.wait(w)?;
                assert!(!o.is_error(), "{db}: {o:?}\n{}", s.transcript());
            }
        }
        for comp in s.take_completions() {
            assert!(
                !comp.outcome.is_error(),
                "{db}: {comp:?}\n{}",
                s.transcript()
            );
        }
        let got = c.query_scalar_in::<String>(db, "SELECT v || '|' || k FROM e WHERE id = 3")?;
        // c then b: (31 + 1) * 2; b then c: 31 * 2 + 1
        assert!(
            got == "64|105" || got == "63|105",
            "{db}: {got}\n{}",
            s.transcript()
        );
    }
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// REPEATABLE READ write conflicts
// ---------------------------------------------------------------------------------------------

#[test]
fn repeatable_read_update_conflict() -> Result<()> {
    let c = iso_cluster("iso-rr-conflict")?;
    let t = same_as_heap(
        &c,
        &["s1", "s2"],
        "CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL); \
         CREATE INDEX r_k ON r (k); \
         INSERT INTO r SELECT g, 0, g FROM generate_series(1, 8) g",
        &[
            ("s1", "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT v FROM r WHERE id = 1"),
            ("s2", "UPDATE r SET v = 100 WHERE id = 1"),
            ("s1", "UPDATE r SET v = v + 1 WHERE id = 1"),
            ("s1", "ROLLBACK"),
            // the concurrent writer is still running: wait, then fail
            ("s1", "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT v FROM r WHERE id = 2"),
            ("s2", "BEGIN; UPDATE r SET v = 100 WHERE id = 2"),
            ("s1", "UPDATE r SET v = v + 1 WHERE id = 2"),
            ("s2", "COMMIT"),
            ("s1", "ROLLBACK"),
            // ... or succeed when it rolls back
            ("s1", "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT v FROM r WHERE id = 3"),
            ("s2", "BEGIN; UPDATE r SET v = 100 WHERE id = 3"),
            ("s1", "UPDATE r SET v = v + 1 WHERE id = 3 RETURNING v"),
            ("s2", "ROLLBACK"),
            ("s1", "COMMIT"),
            // cold update, delete, in-place update by others: old values seen, writes fail
            ("s1", "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM r"),
            ("s2", "UPDATE r SET k = k + 100 WHERE id = 4"),
            ("s2", "DELETE FROM r WHERE id = 5"),
            ("s2", "UPDATE r SET v = 7 WHERE id = 6"),
            ("s2", "INSERT INTO r VALUES (9, 9, 9)"),
            ("s1", "SELECT id, v, k FROM r ORDER BY id"),
            ("s1", "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT id, v, k FROM r WHERE k >= 4 ORDER BY id"),
            ("s1", "RESET enable_seqscan; RESET enable_bitmapscan"),
            ("s1", "SAVEPOINT x; UPDATE r SET v = 1 WHERE id = 4"),
            ("s1", "ROLLBACK TO x; DELETE FROM r WHERE id = 5"),
            ("s1", "ROLLBACK TO x; SELECT id FROM r WHERE id = 6 FOR UPDATE"),
            ("s1", "ROLLBACK TO x; UPDATE r SET v = v + 1 WHERE id = 7 RETURNING v"),
            ("s1", "COMMIT"),
            ("s1", "SELECT id, v, k FROM r ORDER BY id"),
        ],
    )?;
    let ser = "ERROR:  could not serialize access due to concurrent update (SQLSTATE 40001)\n";
    expect(
        &t,
        &format!("step s1: UPDATE r SET v = v + 1 WHERE id = 1\n{ser}"),
    );
    expect(
        &t,
        &format!(
            "step s1: UPDATE r SET v = v + 1 WHERE id = 2 <waiting ...>\nstep s2: COMMIT\n\
             step s1: <... completed>\n{ser}"
        ),
    );
    expect(
        &t,
        "step s1: UPDATE r SET v = v + 1 WHERE id = 3 RETURNING v <waiting ...>\nstep s2: ROLLBACK\n\
         step s1: <... completed>\nv\n1\n",
    );
    expect(
        &t,
        "step s1: SELECT id, v, k FROM r ORDER BY id\nid|v|k\n1|100|1\n2|100|2\n3|1|3\n4|0|4\n5|0|5\n6|0|6\n7|0|7\n8|0|8\n",
    );
    expect(
        &t,
        "WHERE k >= 4 ORDER BY id\nid|v|k\n4|0|4\n5|0|5\n6|0|6\n7|0|7\n8|0|8\n",
    );
    expect(&t, &format!("UPDATE r SET v = 1 WHERE id = 4\n{ser}"));
    expect(
        &t,
        "DELETE FROM r WHERE id = 5\nERROR:  could not serialize access due to concurrent delete \
         (SQLSTATE 40001)\n",
    );
    expect(
        &t,
        &format!("SELECT id FROM r WHERE id = 6 FOR UPDATE\n{ser}"),
    );
    expect(&t, "WHERE id = 7 RETURNING v\nv\n1\n");
    expect(
        &t,
        "id|v|k\n1|100|1\n2|100|2\n3|1|3\n4|0|104\n6|7|6\n7|1|7\n8|0|8\n9|9|9\n",
    );
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// Savepoints and PL/pgSQL exception blocks
// ---------------------------------------------------------------------------------------------

#[test]
fn savepoints_and_exception_blocks() -> Result<()> {
    let c = iso_cluster("iso-savepoint")?;
    let state = "SELECT id, v, k, length(pad) FROM sp ORDER BY id";
    let t = same_as_heap(
        &c,
        &["s1", "s2"],
        "CREATE TABLE sp (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL, pad text); \
         CREATE INDEX sp_k ON sp (k); \
         INSERT INTO sp SELECT g, 0, g, repeat('p', 20) FROM generate_series(1, 12) g; \
         CREATE FUNCTION bump(n int) RETURNS int LANGUAGE plpgsql AS $$ \
         DECLARE ok int := 0; \
         BEGIN \
           FOR i IN 1..n LOOP \
             BEGIN \
               UPDATE sp SET v = v + 1 WHERE id = i % 12 + 1; \
               UPDATE sp SET k = k + 1000 WHERE id = i % 12 + 1; \
               UPDATE sp SET pad = pad || repeat('q', 100) WHERE id = i % 12 + 1; \
               IF i % 2 = 0 THEN DELETE FROM sp WHERE id = i % 12 + 1; RAISE EXCEPTION 'undo %', i; END IF; \
               IF i % 3 = 0 THEN INSERT INTO sp VALUES (1, 0, 0, ''); END IF; \
               ok := ok + 1; \
             EXCEPTION WHEN raise_exception OR unique_violation THEN NULL; \
             END; \
           END LOOP; \
           RETURN ok; \
         END $$",
        &[
            ("s1", "BEGIN"),
            ("s1", "UPDATE sp SET v = v + 1 WHERE id <= 6"),
            ("s1", "SAVEPOINT a"),
            ("s1", "UPDATE sp SET v = v + 100 WHERE id <= 3; INSERT INTO sp VALUES (100, 0, 100, 'new'); DELETE FROM sp WHERE id = 12"),
            ("s1", "SAVEPOINT b"),
            ("s1", "UPDATE sp SET k = k + 1000 WHERE id BETWEEN 2 AND 5; UPDATE sp SET pad = repeat('y', 3000) WHERE id = 7"),
            ("s1", "SAVEPOINT c"),
            ("s1", "DELETE FROM sp WHERE id BETWEEN 1 AND 3; UPDATE sp SET v = -1 WHERE id = 100; UPDATE sp SET v = v + 5 WHERE id = 4"),
            ("s1", "SELECT count(*), sum(v), sum(k), sum(length(pad)) FROM sp"),
            ("s1", "ROLLBACK TO c"),
            ("s1", "SELECT count(*), sum(v), sum(k), sum(length(pad)) FROM sp"),
            ("s1", "ROLLBACK TO b"),
            ("s1", "SELECT count(*), sum(v), sum(k), sum(length(pad)) FROM sp"),
            ("s2", "SELECT count(*), sum(v), sum(k) FROM sp"),
            ("s1", "ROLLBACK TO a"),
            ("s1", state),
            ("s1", "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT id FROM sp WHERE k >= 100 ORDER BY id"),
            ("s1", "RESET enable_seqscan; RESET enable_bitmapscan"),
            ("s1", "COMMIT"),
            ("s2", state),
            // a savepoint's rolled back change does not make others wait
            ("s1", "BEGIN; SAVEPOINT a; UPDATE sp SET v = 555 WHERE id = 1; UPDATE sp SET k = 555 WHERE id = 2; ROLLBACK TO a"),
            ("s2", "UPDATE sp SET v = v + 1000 WHERE id IN (1, 2) RETURNING id, v"),
            ("s1", "UPDATE sp SET v = v + 1 WHERE id IN (1, 2) RETURNING id, v"),
            ("s1", "COMMIT"),
            // nor does a row lock taken in a rolled back savepoint
            ("s1", "BEGIN; SAVEPOINT a; SELECT id FROM sp WHERE id = 3 FOR UPDATE; ROLLBACK TO a"),
            ("s2", "SELECT id FROM sp WHERE id = 3 FOR UPDATE NOWAIT"),
            ("s1", "COMMIT"),
            // released savepoints keep their changes; a later rollback of the whole transaction does not
            ("s1", "BEGIN; SAVEPOINT a; UPDATE sp SET v = v + 1 WHERE id = 4; RELEASE a; SAVEPOINT b; UPDATE sp SET k = k + 1 WHERE id = 4; RELEASE b; COMMIT"),
            ("s1", "BEGIN; SAVEPOINT a; UPDATE sp SET v = v + 1 WHERE id = 5; RELEASE a; DELETE FROM sp WHERE id = 6; ROLLBACK"),
            // PL/pgSQL: an exception block's effects vanish, the rest stays
            ("s1", "DO $$ BEGIN \
                      UPDATE sp SET v = v + 1 WHERE id = 8; \
                      BEGIN \
                        UPDATE sp SET v = v + 1000 WHERE id = 9; UPDATE sp SET k = k + 1 WHERE id = 10; \
                        DELETE FROM sp WHERE id = 11; INSERT INTO sp VALUES (200, 0, 0, ''); \
                        RAISE EXCEPTION 'boom'; \
                      EXCEPTION WHEN others THEN NULL; \
                      END; \
                    END $$"),
            ("s1", state),
            ("s1", "SELECT bump(40)"),
            ("s1", "BEGIN; SELECT bump(30); SAVEPOINT z; SELECT bump(7); ROLLBACK TO z; COMMIT"),
            ("s1", state),
            ("s1", "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT id, k FROM sp WHERE k >= 1000 ORDER BY id"),
        ],
    )?;
    // The state after ROLLBACK TO a is the state after the first UPDATE.
    expect(
        &t,
        "step s1: ROLLBACK TO a\nstep s1: SELECT id, v, k, length(pad) FROM sp ORDER BY id\n\
         id|v|k|length\n1|1|1|20\n2|1|2|20\n3|1|3|20\n4|1|4|20\n5|1|5|20\n6|1|6|20\n\
         7|0|7|20\n8|0|8|20\n9|0|9|20\n10|0|10|20\n11|0|11|20\n12|0|12|20\n",
    );
    expect(&t, "SELECT id FROM sp WHERE k >= 100 ORDER BY id\nid\nstep");
    expect(
        &t,
        "step s2: SELECT count(*), sum(v), sum(k) FROM sp\ncount|sum|sum\n12|0|78\n",
    );
    expect(
        &t,
        "step s2: UPDATE sp SET v = v + 1000 WHERE id IN (1, 2) RETURNING id, v\nid|v\n1|1001\n2|1001\n",
    );
    expect(&t, "RETURNING id, v\nid|v\n1|1002\n2|1002\n");
    expect(
        &t,
        "step s2: SELECT id FROM sp WHERE id = 3 FOR UPDATE NOWAIT\nid\n3\n",
    );
    expect(
        &t,
        "id|v|k|length\n1|1002|1|20\n2|1002|2|20\n3|1|3|20\n4|2|5|20\n5|1|5|20\n6|1|6|20\n\
         7|0|7|20\n8|1|8|20\n9|0|9|20\n10|0|10|20\n11|0|11|20\n12|0|12|20\nstep s1: SELECT bump(40)",
    );
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// MERGE
// ---------------------------------------------------------------------------------------------

#[test]
fn merge_same_as_heap() -> Result<()> {
    let c = iso_cluster("iso-merge")?;
    let merge = "MERGE INTO tgt t USING src s ON t.id = s.id \
                 WHEN MATCHED AND s.op = 'd' THEN DELETE \
                 WHEN MATCHED AND s.op = 'k' THEN UPDATE SET k = t.k + s.v \
                 WHEN MATCHED THEN UPDATE SET v = t.v + s.v, note = t.note || '+' \
                 WHEN NOT MATCHED AND s.op <> 'd' THEN INSERT VALUES (s.id, s.v, s.id, 'new')";
    let one = |id: i32, v: i32| {
        format!(
            "MERGE INTO tgt t USING (VALUES ({id}, {v})) s (id, v) ON t.id = s.id \
             WHEN MATCHED THEN UPDATE SET v = t.v + s.v \
             WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v, 0, 'm')"
        )
    };
    let (m1, m2, m3, m500) = (one(1, 10), one(2, 10), one(3, 10), one(500, 1));
    let state = "SELECT id, v, k, note FROM tgt ORDER BY id";
    let t = same_as_heap(
        &c,
        &["s1", "s2"],
        "CREATE TABLE tgt (id int PRIMARY KEY, v int NOT NULL, k int NOT NULL, note text); \
         CREATE INDEX tgt_k ON tgt (k); \
         CREATE TABLE src (id int, v int, op text); \
         INSERT INTO tgt SELECT g, g, g, 'o' FROM generate_series(1, 40) g; \
         INSERT INTO src SELECT g, 1000, CASE g % 4 WHEN 0 THEN 'd' WHEN 1 THEN 'k' ELSE 'u' END \
           FROM generate_series(20, 60) g",
        &[
            ("s1", merge),
            ("s1", state),
            ("s1", "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT id, k FROM tgt WHERE k > 1000 ORDER BY id"),
            ("s1", "RESET enable_seqscan; RESET enable_bitmapscan"),
            // in a transaction that rolls back, and one that commits
            ("s1", &format!("BEGIN; {merge}; ROLLBACK")),
            ("s1", "SELECT count(*), sum(v), sum(k) FROM tgt"),
            // concurrent: MERGE waits for an update, a delete, a cold update, an insert
            ("s1", "BEGIN; UPDATE tgt SET v = v + 1 WHERE id = 1"),
            ("s2", &m1),
            ("s1", "COMMIT"),
            ("s1", "BEGIN; DELETE FROM tgt WHERE id = 2"),
            ("s2", &m2),
            ("s1", "COMMIT"),
            ("s1", "BEGIN; UPDATE tgt SET k = k + 100 WHERE id = 3"),
            ("s2", &m3),
            ("s1", "COMMIT"),
            ("s1", "BEGIN; INSERT INTO tgt VALUES (500, 0, 0, 'i')"),
            ("s2", &m500),
            ("s1", "COMMIT"),
            ("s1", state),
        ],
    )?;
    expect(
        &t,
        &format!("step s2: {m1} <waiting ...>\nstep s1: COMMIT\nstep s2: <... completed>\n"),
    );
    expect(&t, &format!("step s2: {m500} <waiting ...>\nstep s1: COMMIT\nstep s2: <... completed>\nERROR:  duplicate key value violates unique constraint \"tgt_pkey\" (SQLSTATE 23505)\n"));
    expect(&t, "1|12|1|o\n");
    expect(&t, "3|13|103|o\n");
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// Old row versions seen by AFTER triggers
// ---------------------------------------------------------------------------------------------

#[test]
fn after_triggers_see_old_and_new_rows() -> Result<()> {
    let c = iso_cluster("iso-triggers")?;
    let t = same_as_heap(
        &c,
        &["s1"],
        "CREATE TABLE tr (id int PRIMARY KEY, v int, k int, note text); \
         CREATE INDEX tr_k ON tr (k); \
         CREATE TABLE trlog (n serial, op text, old_row text, new_row text); \
         CREATE FUNCTION trf() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO trlog (op, old_row, new_row) VALUES (TG_OP, OLD::text, NEW::text); \
           RETURN NULL; END $$; \
         CREATE TRIGGER tr_after AFTER UPDATE OR DELETE ON tr FOR EACH ROW EXECUTE FUNCTION trf(); \
         CREATE FUNCTION trs() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO trlog (op, old_row, new_row) \
             SELECT 'stmt ' || TG_OP, (SELECT string_agg(o::text, ';' ORDER BY o.id) FROM old_t o), \
                    (SELECT string_agg(n::text, ';' ORDER BY n.id) FROM new_t n); \
           RETURN NULL; END $$; \
         CREATE TRIGGER tr_stmt AFTER UPDATE ON tr REFERENCING OLD TABLE AS old_t NEW TABLE AS new_t \
           FOR EACH STATEMENT EXECUTE FUNCTION trs(); \
         INSERT INTO tr SELECT g, g * 10, g, 'n' || g FROM generate_series(1, 5) g",
        &[
            // in place
            ("s1", "UPDATE tr SET v = v + 1 WHERE id = 1"),
            // cold (indexed column)
            ("s1", "UPDATE tr SET k = k + 100 WHERE id = 2"),
            // cold (key)
            ("s1", "UPDATE tr SET id = 30 WHERE id = 3"),
            // grows
            ("s1", "UPDATE tr SET note = repeat('x', 2000) WHERE id = 4"),
            // twice in one transaction, then deleted
            ("s1", "BEGIN; UPDATE tr SET v = v + 1 WHERE id = 5; UPDATE tr SET v = v + 1, k = 0 WHERE id = 5; DELETE FROM tr WHERE id = 5; COMMIT"),
            ("s1", "SELECT op, old_row, new_row FROM trlog ORDER BY n"),
        ],
    )?;
    expect(&t, "UPDATE|(1,10,1,n1)|(1,11,1,n1)\n");
    expect(&t, "UPDATE|(2,20,2,n2)|(2,20,102,n2)\n");
    expect(&t, "UPDATE|(3,30,3,n3)|(30,30,3,n3)\n");
    expect(&t, "UPDATE|(5,50,5,n5)|(5,51,5,n5)\n");
    expect(&t, "UPDATE|(5,51,5,n5)|(5,52,0,n5)\n");
    expect(&t, "DELETE|(5,52,0,n5)|NULL\n");
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// KEY SHARE in REPEATABLE READ
// ---------------------------------------------------------------------------------------------

/// A REPEATABLE READ transaction may take FOR KEY SHARE on a row whose non-key columns were
/// changed by a transaction that committed after its snapshot (heap locks the row: KEY SHARE does
/// not conflict with a no-key update). Foreign-key checks rely on it: inserting a child in
/// REPEATABLE READ must not fail because the parent's non-key columns changed meanwhile.
#[test]
fn key_share_in_repeatable_read_after_non_key_update() -> Result<()> {
    let c = iso_cluster("iso-rr-keyshare")?;
    let t = same_as_heap(
        &c,
        &["s1", "s2"],
        "CREATE TABLE parent (id int PRIMARY KEY, note text); \
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id)); \
         INSERT INTO parent VALUES (1, ''), (2, '')",
        &[
            (
                "s1",
                "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM child",
            ),
            (
                "s2",
                "UPDATE parent SET note = 'changed' WHERE id IN (1, 2)",
            ),
            (
                "s1",
                "SELECT id, note FROM parent WHERE id = 1 FOR KEY SHARE",
            ),
            ("s1", "INSERT INTO child VALUES (1, 2)"),
            ("s1", "COMMIT"),
            (
                "s1",
                "SELECT c.id, p.id, p.note FROM child c JOIN parent p ON p.id = c.parent_id",
            ),
        ],
    )?;
    expect(
        &t,
        "step s1: SELECT id, note FROM parent WHERE id = 1 FOR KEY SHARE\nid|note\n1|\n",
    );
    expect(
        &t,
        "step s1: INSERT INTO child VALUES (1, 2)\nstep s1: COMMIT\n",
    );
    expect(&t, "id|id|note\n1|2|changed\n");
    c.assert_no_crash()
}

/// EvalPlanQual re-reads the rows of tables the statement does not lock by TID: on heap that
/// TID names the version the statement's snapshot saw, so a concurrent committed change of
/// such a row stays invisible while the locked or updated table's row is rechecked at its
/// newest version. torii must give the same answers.
#[test]
fn recheck_reads_unlocked_tables_as_of_the_statement() -> Result<()> {
    let c = iso_cluster("iso-epq-rowmark")?;
    let t = same_as_heap(
        &c,
        &["a", "b"],
        "CREATE TABLE ea (id int PRIMARY KEY, v int); \
         CREATE TABLE eb (id int PRIMARY KEY, v int); \
         INSERT INTO ea VALUES (1, 10), (2, 20); \
         INSERT INTO eb VALUES (1, 100), (2, 200)",
        &[
            (
                "a",
                "BEGIN; UPDATE ea SET v = v + 1 WHERE id = 1; \
                 UPDATE eb SET v = v + 1 WHERE id = 1",
            ),
            (
                "b",
                "SELECT ea.id, ea.v, eb.v FROM ea JOIN eb ON ea.id = eb.id \
                 ORDER BY ea.id FOR UPDATE OF ea",
            ),
            ("a", "COMMIT"),
            (
                "a",
                "BEGIN; UPDATE ea SET v = v + 1 WHERE id = 2; \
                 UPDATE eb SET v = v + 1 WHERE id = 2",
            ),
            (
                "b",
                "UPDATE ea SET v = ea.v + eb.v FROM eb WHERE eb.id = ea.id AND ea.id = 2 \
                 RETURNING ea.v",
            ),
            ("a", "COMMIT"),
            ("a", "SELECT id, v FROM ea ORDER BY id"),
        ],
    )?;
    // The locked row at its newest version (11), the other table's as the statement saw it.
    expect(&t, "id|v|v\n1|11|100\n2|20|200\n");
    // 21 (ea's newest) + 200 (eb as of the statement's snapshot).
    expect(&t, "v\n221\n");
    c.assert_no_crash()
}
