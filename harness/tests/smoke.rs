//! Self-test of the harness on heap tables only (needs no torii): a cluster starts, queries run,
//! `kill -9` + restart recovers committed data, the session runner sees lock waits.

use std::time::Duration;

use torii_harness::sessions::{Outcome, StepState};
use torii_harness::{sql, workload, Cluster, Result, Sessions};

#[test]
fn cluster_start_query_kill9_restart() -> Result<()> {
    let c = Cluster::started("smoke")?;
    let v: String = c.query_scalar("SELECT current_setting('server_version_num')")?;
    assert!(v.starts_with("15"), "server_version_num = {v}");
    let listen: String = c.query_scalar("SHOW listen_addresses")?;
    assert_eq!(listen, "");

    let mut cl = c.connect("postgres")?;
    workload::create_accounts_table(&mut cl, "acc", "heap")?;
    assert_eq!(
        workload::copy_in(&mut cl, "acc", 1, 5000, workload::SEED)?,
        5000
    );
    assert_eq!(workload::insert_select(&mut cl, "acc", 5001, 5000)?, 5000);
    let n: i64 = sql::scalar(&mut cl, "SELECT count(*) FROM acc")?;
    assert_eq!(n, 10000);
    let p = c.relation_path(&mut cl, "acc")?;
    assert!(p.starts_with(c.data_dir()) && p.exists(), "{}", p.display());
    // Same seed, same rows.
    cl.batch_execute("CREATE TABLE acc2 (LIKE acc)")?;
    workload::copy_in(&mut cl, "acc2", 1, 5000, workload::SEED)?;
    let same: i64 = sql::scalar(
        &mut cl,
        "SELECT count(*) FROM (SELECT * FROM acc WHERE id <= 5000 EXCEPT SELECT * FROM acc2) d",
    )?;
    assert_eq!(same, 0);

    // An open transaction with uncommitted rows at the time of the kill.
    let mut open = c.connect("postgres")?;
    open.batch_execute("BEGIN; INSERT INTO acc SELECT * FROM acc")?;
    drop(cl);
    c.kill9()?;
    assert!(!c.is_running());
    assert!(open.simple_query("SELECT 1").is_err());
    c.start()?;
    let n: i64 = c.query_scalar("SELECT count(*) FROM acc")?;
    assert_eq!(n, 10000, "committed rows only after crash recovery");
    assert!(c.log_contents().contains("database system was interrupted"));

    // crash() (everything killed at once) and restart() work too.
    c.crash()?;
    c.start()?;
    c.restart()?;
    let n: i64 = c.query_scalar("SELECT count(*) FROM acc")?;
    assert_eq!(n, 10000);
    c.assert_no_crash()?;
    Ok(())
}

#[test]
fn sessions_see_lock_waits() -> Result<()> {
    let c = Cluster::started("smoke-iso")?;
    c.exec("CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0), (2, 0)")?;
    let mut s = Sessions::new(&c, "postgres", &["s1", "s2"])?;
    s.set_step_timeout(Duration::from_secs(30));
    let transcript = s.run(&[
        ("s1", "BEGIN; UPDATE t SET v = 1 WHERE id = 1"),
        ("s2", "UPDATE t SET v = 2 WHERE id = 1 RETURNING v"),
        ("s1", "SELECT v FROM t ORDER BY id"),
        ("s1", "COMMIT"),
        ("s2", "SELECT id, v FROM t ORDER BY id"),
        ("s1", "SELECT 1/0"),
    ])?;
    let expected = "\
step s1: BEGIN; UPDATE t SET v = 1 WHERE id = 1
step s2: UPDATE t SET v = 2 WHERE id = 1 RETURNING v <waiting ...>
step s1: SELECT v FROM t ORDER BY id
v
1
0
step s1: COMMIT
step s2: <... completed>
v
2
step s2: SELECT id, v FROM t ORDER BY id
id|v
1|2
2|0
step s1: SELECT 1/0
ERROR:  division by zero (SQLSTATE 22012)
";
    assert_eq!(transcript, expected);

    // Explicit wait() on a blocked step.
    assert_eq!(
        s.step("s1", "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE")?,
        StepState::Done(Outcome::Rows {
            columns: vec![],
            rows: vec![]
        })
    );
    assert_eq!(s.step("s2", "SELECT count(*) FROM t")?, StepState::Blocked);
    assert!(s.is_blocked("s2"));
    assert!(s.step("s2", "SELECT 1").is_err(), "s2 is still blocked");
    s.step("s1", "ROLLBACK")?;
    // s1's step already collected s2's completion; wait() is only for still-blocked sessions.
    assert!(!s.is_blocked("s2"));
    assert!(s
        .transcript()
        .ends_with("step s2: <... completed>\ncount\n2\n"));
    Ok(())
}
