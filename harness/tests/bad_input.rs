//! torii's SQL functions with bad input: NULLs, relations that are not torii tables, OIDs that
//! name nothing, callers without privileges, nonsense hint text; and torii tables whose undo
//! page or metapage was damaged on disk.
//!
//! Every call must end in a clear ERROR with the expected SQLSTATE (or, for NULL arguments of
//! these STRICT functions, in a NULL result / no rows), never in a crash: after each one the
//! session still works and the server log shows no crashed backend and no PANIC.
//!
//! SQLSTATEs: 42809 (wrong_object_type) for a relation that is not a torii table, 42P01 or XX000
//! for a stale OID (what each function gives is printed), 42501 (insufficient_privilege) for a
//! caller without the privilege (`torii.vacuum`: ownership, like VACUUM; `torii.stats`,
//! `torii.verify`: SELECT), XX001 (data_corrupted) for a damaged page.
//!
//! torii-only: with `TORII_TEST_AM` set to another AM these tests do nothing.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use postgres::{Client, NoTls};
use torii_harness::testing::{cluster_with_db_conf, is_torii, torii_stats, verify, DB};
use torii_harness::{err, sql, Cluster, Result};

const CONF: &[&str] = &["shared_preload_libraries = 'torii'", "autovacuum = off"];
const BLCKSZ: usize = 8192;
/// torii's special space: magic at +0, kind at +2 (1 meta, 2 data, 3 undo, 4 free).
const SPECIAL: usize = 8176;

fn setup(name: &str) -> Result<Option<(Cluster, Client)>> {
    if !is_torii() {
        eprintln!(
            "torii-only test, skipped for TORII_TEST_AM={}",
            torii_harness::testing::am()
        );
        return Ok(None);
    }
    Ok(Some(cluster_with_db_conf(name, CONF)?))
}

/// Run `sql` expecting an ERROR whose SQLSTATE is one of `codes`; then check that the session
/// still works and that the server did not crash. Returns the error as one line.
fn expect_error(c: &Cluster, cl: &mut Client, sql: &str, codes: &[&str]) -> Result<String> {
    let log0 = c.log_len();
    let r = cl.batch_execute(sql);
    let text = match r {
        Ok(()) => {
            return Err(err(format!(
                "expected an error ({codes:?}), but it succeeded: {sql}"
            )))
        }
        Err(e) => {
            let code = sql::sqlstate(&e);
            let text = sql::describe(&e);
            if !code.as_deref().is_some_and(|c| codes.contains(&c)) {
                return Err(err(format!(
                    "expected SQLSTATE {codes:?} for {sql}, got {text}"
                )));
            }
            text
        }
    };
    still_fine(c, cl, log0, sql)?;
    Ok(text)
}

/// The session answers and the log since `log0` shows no crash.
fn still_fine(c: &Cluster, cl: &mut Client, log0: u64, what: &str) -> Result<()> {
    let one: i32 =
        sql::scalar(cl, "SELECT 1").map_err(|e| err(format!("session dead after {what}: {e}")))?;
    assert_eq!(one, 1);
    let crashes = c.crash_lines_since(log0);
    if !crashes.is_empty() {
        return Err(err(format!(
            "{what} crashed the server:\n{}",
            crashes.join("\n")
        )));
    }
    Ok(())
}

/// Rows returned by `sql` (which must succeed), after which the server is still fine.
fn row_count(c: &Cluster, cl: &mut Client, sql: &str) -> Result<usize> {
    let log0 = c.log_len();
    let n = sql::rows_text(cl, sql)
        .map_err(|e| err(format!("{sql}: {}", sql::describe(&e))))?
        .len();
    still_fine(c, cl, log0, sql)?;
    Ok(n)
}

const REL_FUNCTIONS: &[&str] = &["torii.verify", "torii.stats", "torii.vacuum"];

fn create_objects(cl: &mut Client) -> Result<()> {
    cl.batch_execute(
        "CREATE TABLE tt (id int PRIMARY KEY, v text) USING torii;
         INSERT INTO tt SELECT g, repeat('x', g % 100) FROM generate_series(1, 2000) g;
         UPDATE tt SET v = 'updated' WHERE id % 10 = 0;
         DELETE FROM tt WHERE id % 7 = 0;
         CREATE VIEW v_tt AS SELECT * FROM tt;
         CREATE SEQUENCE s_seq;
         CREATE TABLE h (id int, v text) USING heap;
         INSERT INTO h VALUES (1, 'heap');
         CREATE MATERIALIZED VIEW mv_heap USING heap AS SELECT * FROM h;
         CREATE MATERIALIZED VIEW mv_torii USING torii AS SELECT * FROM tt WHERE id < 100;
         CREATE TABLE pt (id int, v text) PARTITION BY RANGE (id);
         CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (0) TO (1000) USING torii;
         INSERT INTO pt VALUES (1, 'one');
         CREATE TYPE ct AS (a int, b text);
         CREATE TEMP TABLE temp_torii (id int) USING torii;
         INSERT INTO temp_torii VALUES (1);
         CREATE UNLOGGED TABLE unlogged_torii (id int) USING torii;
         INSERT INTO unlogged_torii VALUES (1);",
    )?;
    Ok(())
}

#[test]
fn null_arguments() -> Result<()> {
    let Some((c, mut cl)) = setup("bad-null")? else {
        return Ok(());
    };
    create_objects(&mut cl)?;
    for f in REL_FUNCTIONS {
        assert_eq!(
            row_count(&c, &mut cl, &format!("SELECT * FROM {f}(NULL)"))?,
            0,
            "{f}"
        );
        assert_eq!(
            row_count(&c, &mut cl, &format!("SELECT * FROM {f}(NULL::regclass)"))?,
            0,
            "{f}"
        );
        // As a scalar call in the select list: one NULL.
        assert_eq!(
            sql::rows_text(&mut cl, &format!("SELECT {f}(NULL) IS NULL"))?,
            Vec::<Vec<Option<String>>>::new(),
            "{f}"
        );
    }
    for q in [
        "SELECT torii.hint_set(NULL::bigint, 'SeqScan(tt)')",
        "SELECT torii.hint_set(1::bigint, NULL)",
        "SELECT torii.hint_set(NULL::text, 'SeqScan(tt)')",
        "SELECT torii.hint_set('SELECT * FROM tt', NULL)",
        "SELECT torii.hint_set(NULL::text, NULL::text)",
        "SELECT torii.hint_clear(NULL::bigint)",
        "SELECT torii.hint_clear(NULL::text)",
        "SELECT torii.query_id(NULL)",
    ] {
        let rows = sql::rows_text(&mut cl, q).map_err(|e| err(format!("{q}: {e}")))?;
        assert_eq!(rows, vec![vec![None]], "{q}");
    }
    assert_eq!(
        row_count(&c, &mut cl, "SELECT * FROM torii.explain_hints(NULL)")?,
        0
    );
    // Nothing was stored by the NULL calls.
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM torii.hint_store")?,
        0
    );
    c.assert_no_crash()
}

#[test]
fn wrong_relation_kinds() -> Result<()> {
    let Some((c, mut cl)) = setup("bad-kinds")? else {
        return Ok(());
    };
    create_objects(&mut cl)?;
    let toast: String = sql::scalar(
        &mut cl,
        "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'tt'::regclass",
    )?;
    let wrong: Vec<(&str, String)> = vec![
        ("view", "'v_tt'".into()),
        ("sequence", "'s_seq'".into()),
        ("index", "'tt_pkey'".into()),
        ("heap table", "'h'".into()),
        ("materialized view of heap", "'mv_heap'".into()),
        ("partitioned table", "'pt'".into()),
        ("composite type", "'ct'".into()),
        ("TOAST table of a torii table", format!("'{toast}'")),
        ("system catalog", "'pg_class'".into()),
        ("index of a catalog", "'pg_class_oid_index'".into()),
    ];
    for f in REL_FUNCTIONS {
        for (what, rel) in &wrong {
            let text = expect_error(
                &c,
                &mut cl,
                &format!("SELECT * FROM {f}({rel}::regclass)"),
                &["42809"],
            )
            .map_err(|e| err(format!("{f} on a {what}: {e}")))?;
            let name = rel.trim_matches('\'');
            let short = name.rsplit('.').next().unwrap_or(name);
            assert!(text.contains(short), "{f} on a {what}: {text}");
        }
        // torii relations of every kind work.
        for rel in ["tt", "mv_torii", "pt_1", "temp_torii", "unlogged_torii"] {
            let n = row_count(&c, &mut cl, &format!("SELECT * FROM {f}('{rel}')"))?;
            if *f == "torii.verify" {
                assert_eq!(n, 0, "torii.verify({rel})");
            } else {
                assert_eq!(n, 1, "{f}({rel})");
            }
        }
    }
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM tt")?,
        1715
    );
    c.assert_no_crash()
}

#[test]
fn stale_oids() -> Result<()> {
    let Some((c, mut cl)) = setup("bad-oids")? else {
        return Ok(());
    };
    create_objects(&mut cl)?;
    cl.batch_execute("CREATE TABLE gone (id int) USING torii")?;
    let dropped: i64 = sql::scalar(&mut cl, "SELECT 'gone'::regclass::oid::bigint")?;
    cl.batch_execute("DROP TABLE gone")?;
    let mut seen = Vec::new();
    for f in REL_FUNCTIONS {
        for oid in [123456789i64, dropped, 0, 4294967295] {
            let text = expect_error(
                &c,
                &mut cl,
                &format!("SELECT * FROM {f}({oid}::oid::regclass)"),
                &["42P01", "XX000"],
            )?;
            seen.push(format!("{f}({oid}): {text}"));
        }
    }
    eprintln!("stale OIDs:\n{}", seen.join("\n"));
    c.assert_no_crash()
}

fn connect_as(c: &Cluster, user: &str) -> Result<Client> {
    Ok(c.client_config(DB).user(user).connect(NoTls)?)
}

#[test]
fn unprivileged_role() -> Result<()> {
    let Some((c, mut cl)) = setup("bad-privs")? else {
        return Ok(());
    };
    create_objects(&mut cl)?;
    // Whatever the extension grants to PUBLIC, start from a role without USAGE on schema torii.
    cl.batch_execute(
        "CREATE ROLE nobody LOGIN; \
         REVOKE USAGE ON SCHEMA torii FROM PUBLIC; \
         SELECT torii.hint_set(42::bigint, 'SeqScan(tt)')",
    )?;
    let mut nb = connect_as(&c, "nobody")?;
    // Stored hints are looked up as the current user (see `unprivileged_role_runs_queries`):
    // without this, nobody cannot run any statement at all.
    nb.batch_execute("SET torii.enable_hints = off")?;
    // No USAGE on schema torii: refused before any torii code runs.
    for f in REL_FUNCTIONS {
        let t = expect_error(&c, &mut nb, &format!("SELECT * FROM {f}('tt')"), &["42501"])?;
        eprintln!("nobody, no USAGE on schema torii, {f}: {t}");
    }
    cl.batch_execute("GRANT USAGE ON SCHEMA torii TO nobody")?;
    // No SELECT on tt, not its owner.
    let mut seen = Vec::new();
    for f in REL_FUNCTIONS {
        let t = expect_error(&c, &mut nb, &format!("SELECT * FROM {f}('tt')"), &["42501"])?;
        assert!(t.contains("tt"), "{f}: {t}");
        seen.push(format!("{f}: {t}"));
    }
    // Stored hints: nobody must not be able to change the plans of others' queries.
    for q in [
        "SELECT torii.hint_set(7::bigint, 'SeqScan(tt)')",
        "SELECT torii.hint_set('SELECT * FROM h WHERE id = 1', 'SeqScan(h)')",
        "SELECT torii.hint_clear(42::bigint)",
        "SELECT torii.hint_clear('SELECT * FROM h WHERE id = 1')",
        "DELETE FROM torii.hint_store",
        "UPDATE torii.hint_store SET hints = 'IndexScan(tt)'",
        "INSERT INTO torii.hint_store (query_id, hints) VALUES (8, 'SeqScan(tt)')",
    ] {
        let t = expect_error(&c, &mut nb, q, &["42501"])?;
        seen.push(format!("{q}: {t}"));
    }
    assert_eq!(
        sql::result_text(&mut cl, "SELECT query_id, hints FROM torii.hint_store")?,
        "42|SeqScan(tt)"
    );
    // With SELECT: verify and stats work, vacuum still needs ownership.
    cl.batch_execute("GRANT SELECT ON tt TO nobody")?;
    assert_eq!(
        row_count(&c, &mut nb, "SELECT * FROM torii.verify('tt')")?,
        0
    );
    assert_eq!(
        row_count(&c, &mut nb, "SELECT * FROM torii.stats('tt')")?,
        1
    );
    let t = expect_error(&c, &mut nb, "SELECT * FROM torii.vacuum('tt')", &["42501"])?;
    assert!(t.contains("tt"), "{t}");
    seen.push(format!("torii.vacuum with SELECT privilege: {t}"));
    // Plain VACUUM, for comparison, skips the table with a WARNING.
    nb.batch_execute("VACUUM tt")?;
    // The owner of a table may run torii.vacuum on it.
    cl.batch_execute("GRANT CREATE ON SCHEMA public TO nobody")?;
    nb.batch_execute(
        "CREATE TABLE mine (id int, v text) USING torii; \
         INSERT INTO mine SELECT g, 'v' FROM generate_series(1, 100) g; \
         UPDATE mine SET v = 'w'; DELETE FROM mine WHERE id > 50",
    )?;
    assert_eq!(
        row_count(&c, &mut nb, "SELECT * FROM torii.vacuum('mine')")?,
        1
    );
    assert_eq!(
        row_count(&c, &mut nb, "SELECT * FROM torii.verify('mine')")?,
        0
    );
    assert_eq!(
        row_count(&c, &mut nb, "SELECT * FROM torii.stats('mine')")?,
        1
    );
    // A table nobody owns but may read: still not vacuumable; other's table with revoked
    // privileges: not readable.
    cl.batch_execute("REVOKE SELECT ON tt FROM nobody")?;
    expect_error(&c, &mut nb, "SELECT * FROM torii.stats('tt')", &["42501"])?;
    eprintln!("as role nobody:\n{}", seen.join("\n"));
    c.assert_no_crash()
}

/// A role without any privilege on torii's objects runs ordinary statements in a database with
/// the extension, torii preloaded: with the extension's default privileges, with USAGE on
/// schema torii, and after an administrator revoked everything on schema torii from PUBLIC;
/// through the simple and the extended query protocol.
#[test]
fn unprivileged_role_runs_queries() -> Result<()> {
    let Some((c, mut cl)) = setup("bad-app-role")? else {
        return Ok(());
    };
    cl.batch_execute(
        "CREATE ROLE app LOGIN; \
         CREATE TABLE app_data (id int PRIMARY KEY, v text) USING torii; \
         INSERT INTO app_data SELECT g, 'v' || g FROM generate_series(1, 100) g; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON app_data TO app; \
         SELECT torii.hint_set('SELECT * FROM app_data WHERE id = 1', 'SeqScan(app_data)')",
    )?;
    let mut failures = Vec::new();
    for grant in [
        "",
        "GRANT USAGE ON SCHEMA torii TO app",
        // An administrator locks the extension's schema down: queries must still run.
        "REVOKE USAGE ON SCHEMA torii FROM app; REVOKE USAGE ON SCHEMA torii FROM PUBLIC; \
         REVOKE SELECT ON torii.hint_store FROM PUBLIC; REVOKE SELECT ON torii.hints FROM PUBLIC",
    ] {
        if !grant.is_empty() {
            cl.batch_execute(grant)?;
        }
        let mut app = connect_as(&c, "app")?;
        for q in [
            "SELECT 1",
            "SELECT count(*) FROM app_data",
            "SELECT * FROM app_data WHERE id = 1",
            "UPDATE app_data SET v = 'app' WHERE id = 2",
            "/*+ SeqScan(app_data) */ SELECT v FROM app_data WHERE id = 3",
        ] {
            let log0 = c.log_len();
            if let Err(e) = app.batch_execute(q) {
                failures.push(format!(
                    "[{}] simple protocol, {q}: {}",
                    if grant.is_empty() {
                        "extension defaults"
                    } else {
                        grant
                    },
                    sql::describe(&e).lines().next().unwrap_or("")
                ));
            }
            if let Err(e) = app.query(q, &[]) {
                failures.push(format!(
                    "[{}] extended protocol, {q}: {}",
                    if grant.is_empty() {
                        "extension defaults"
                    } else {
                        grant
                    },
                    sql::describe(&e).lines().next().unwrap_or("")
                ));
            }
            assert!(c.crash_lines_since(log0).is_empty());
        }
    }
    if !failures.is_empty() {
        return Err(err(format!(
            "a role without privileges on torii's objects cannot run statements:\n{}",
            failures.join("\n")
        )));
    }
    c.assert_no_crash()
}

#[test]
fn hint_functions_with_bad_input() -> Result<()> {
    let Some((c, mut cl)) = setup("bad-hints")? else {
        return Ok(());
    };
    create_objects(&mut cl)?;
    let mut seen = Vec::new();
    // Errors the user caused: any SQLSTATE but a crash; the code is printed.
    for (q, must_mention) in [
        ("SELECT torii.hint_set(1::bigint, 'NoSuchHint(tt)')", "hint"),
        ("SELECT torii.hint_set(1::bigint, 'SeqScan(tt')", "hint"),
        ("SELECT torii.hint_set(1::bigint, '')", "hint"),
        ("SELECT torii.hint_set(1::bigint, '   ')", "hint"),
        (
            "SELECT torii.hint_set('SELECT * FROM tt', 'NoSuchHint(tt)')",
            "hint",
        ),
        ("SELECT torii.hint_set('', 'SeqScan(tt)')", "statement"),
        (
            "SELECT torii.hint_set('not sql at all', 'SeqScan(tt)')",
            "syntax",
        ),
        (
            "SELECT torii.hint_set('SELECT * FROM no_such_table', 'SeqScan(x)')",
            "no_such_table",
        ),
        ("SELECT torii.query_id('')", "statement"),
        ("SELECT torii.query_id('-- only a comment')", "statement"),
        ("SELECT torii.query_id('SELEC 1')", "syntax"),
        (
            "SELECT torii.query_id('SELECT * FROM no_such_table')",
            "no_such_table",
        ),
        ("SELECT torii.query_id('SELECT $1 + $2::int')", ""),
        ("SELECT torii.hint_clear('SELECT nothing FROM')", "syntax"),
        ("SELECT * FROM torii.explain_hints('SELEC 1')", "syntax"),
        (
            "SELECT * FROM torii.explain_hints('SELECT * FROM no_such_table')",
            "no_such_table",
        ),
    ] {
        let log0 = c.log_len();
        match cl.batch_execute(q) {
            Ok(()) => seen.push(format!("{q}: accepted")),
            Err(e) => {
                let t = sql::describe(&e);
                assert!(
                    t.to_lowercase().contains(must_mention),
                    "{q}: the error does not mention {must_mention:?}: {t}"
                );
                seen.push(format!("{q}: {t}"));
            }
        }
        still_fine(&c, &mut cl, log0, q)?;
    }
    // explain_hints plans, never runs: DML, DDL and utility statements change nothing.
    for q in [
        "INSERT INTO tt VALUES (100000, 'inserted by explain_hints')",
        "WITH d AS (DELETE FROM tt RETURNING *) SELECT count(*) FROM d",
        "UPDATE tt SET v = 'changed by explain_hints'",
        "DROP TABLE tt",
        "TRUNCATE tt",
        "CREATE TABLE made_by_explain_hints (a int)",
        "SELECT 1; DELETE FROM tt",
        "VACUUM tt",
        "SELECT pg_sleep(0) FROM tt LIMIT 1",
    ] {
        let log0 = c.log_len();
        let r = sql::rows_text(
            &mut cl,
            &format!("SELECT * FROM torii.explain_hints({})", sql::literal(q)),
        );
        seen.push(format!(
            "explain_hints({q}): {}",
            match &r {
                Ok(rows) => format!("{} rows", rows.len()),
                Err(e) => sql::describe(e),
            }
        ));
        still_fine(&c, &mut cl, log0, q)?;
    }
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM tt")?,
        1715
    );
    assert_eq!(
        sql::scalar::<i64>(
            &mut cl,
            "SELECT count(*) FROM tt WHERE v LIKE '%explain_hints%'"
        )?,
        0
    );
    assert!(sql::scalar::<Option<String>>(
        &mut cl,
        "SELECT to_regclass('made_by_explain_hints')::text"
    )?
    .is_none());
    // Huge and odd values.
    let long_hint = format!("SeqScan(tt) {}", "IndexScan(tt) ".repeat(5000));
    let log0 = c.log_len();
    let r = cl.query_one("SELECT torii.hint_set(5::bigint, $1)", &[&long_hint]);
    seen.push(format!(
        "hint_set with {} bytes of hints: {}",
        long_hint.len(),
        match &r {
            Ok(_) => "accepted".to_string(),
            Err(e) => sql::describe(e),
        }
    ));
    still_fine(&c, &mut cl, log0, "long hint")?;
    let deep = format!("Leading({}a b{})", "(".repeat(2000), ")".repeat(2000));
    let r = cl.query_one("SELECT torii.hint_set(6::bigint, $1)", &[&deep]);
    seen.push(format!(
        "hint_set with 2000 nested parentheses: {}",
        match &r {
            Ok(_) => "accepted".to_string(),
            Err(e) => sql::describe(e),
        }
    ));
    still_fine(&c, &mut cl, log0, "deeply nested hint")?;
    let r = cl.batch_execute(&format!("/*+ {deep} */ SELECT count(*) FROM tt"));
    seen.push(format!(
        "a query with 2000 nested parentheses in its hint comment: {}",
        match &r {
            Ok(_) => "ran".to_string(),
            Err(e) => sql::describe(e),
        }
    ));
    still_fine(&c, &mut cl, log0, "deeply nested hint comment")?;
    for extreme in [i64::MIN, i64::MAX, 0, -1] {
        let id: i64 = sql::scalar(
            &mut cl,
            &format!("SELECT torii.hint_set(({extreme})::bigint, 'SeqScan(tt)')"),
        )?;
        assert_eq!(id, extreme);
        assert!(sql::scalar::<bool>(
            &mut cl,
            &format!("SELECT torii.hint_clear(({extreme})::bigint)")
        )?);
        assert!(!sql::scalar::<bool>(
            &mut cl,
            &format!("SELECT torii.hint_clear(({extreme})::bigint)")
        )?);
    }
    eprintln!("hint functions:\n{}", seen.join("\n"));
    c.assert_no_crash()
}

/// Kind byte of each block of a relation file (from torii's special space).
fn page_kinds(path: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(path)?;
    Ok(data
        .chunks(BLCKSZ)
        .map(|p| {
            if p[SPECIAL] == 0x6f && p[SPECIAL + 1] == 0x74 {
                p[SPECIAL + 2]
            } else {
                0
            }
        })
        .collect())
}

/// Flip one byte at `offset` of block `blk` (offset None: the middle of the item area).
fn flip_byte(path: &Path, blk: u64, offset: Option<u64>) -> Result<u64> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut page = vec![0u8; BLCKSZ];
    f.seek(SeekFrom::Start(blk * BLCKSZ as u64))?;
    f.read_exact(&mut page)?;
    let off = match offset {
        Some(o) => o,
        None => {
            let upper = u16::from_le_bytes([page[14], page[15]]) as u64;
            let special = u16::from_le_bytes([page[16], page[17]]) as u64;
            assert!(upper < special, "block {blk}: no items (upper {upper})");
            (upper + special) / 2
        }
    };
    let pos = blk * BLCKSZ as u64 + off;
    f.seek(SeekFrom::Start(pos))?;
    f.write_all(&[page[off as usize] ^ 0x5a])?;
    f.sync_all()?;
    Ok(off)
}

/// After damage to block `blk`: the message of an XX001 names the relation and the block.
fn check_xx001_text(text: &str, table: &str, blk: u64) {
    assert!(text.contains(table), "does not name {table}: {text}");
    assert!(
        text.contains(&format!("block {blk}")),
        "does not name block {blk}: {text}"
    );
}

#[test]
fn corrupt_undo_page() -> Result<()> {
    let Some((c, mut cl)) = setup("bad-undo")? else {
        return Ok(());
    };
    cl.batch_execute(
        "CREATE TABLE cu (id int PRIMARY KEY, v text) USING torii; \
         INSERT INTO cu SELECT g, 'row ' || g FROM generate_series(1, 3000) g",
    )?;
    // Changes rolled back: every reader needs their undo to see the rows' committed values.
    cl.batch_execute("BEGIN; UPDATE cu SET v = v || ' rolled back'; ROLLBACK")?;
    let st = torii_stats(&mut cl, "cu")?;
    assert!(st.undo_pages >= 2, "{st:?}");
    let path = c.relation_path(&mut cl, "cu")?;
    cl.batch_execute("CHECKPOINT")?;
    drop(cl);
    c.stop()?;
    let kinds = page_kinds(&path)?;
    let undo: Vec<u64> = (0..kinds.len() as u64)
        .filter(|&b| kinds[b as usize] == 3)
        .collect();
    assert!(!undo.is_empty(), "no undo page found: kinds {kinds:?}");
    let blk = undo[undo.len() / 2];
    flip_byte(&path, blk, None)?;
    c.start()?;
    let mut cl = c.connect(DB)?;
    let mut seen = Vec::new();
    // Reading the table reads its undo.
    let t = expect_error(
        &c,
        &mut cl,
        "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM cu",
        &["XX001"],
    )?;
    check_xx001_text(&t, "cu", blk);
    seen.push(format!("seq scan: {t}"));
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    let t = expect_error(
        &c,
        &mut cl,
        "SELECT sum(length(v)) FROM cu WHERE id > 0",
        &["XX001"],
    )?;
    check_xx001_text(&t, "cu", blk);
    seen.push(format!("index scan: {t}"));
    cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
    let problems = verify(&mut cl, "cu")?;
    assert!(
        problems.iter().any(|(b, _)| *b == blk as i64),
        "torii.verify does not report undo block {blk}: {problems:?}"
    );
    seen.push(format!("torii.verify: {problems:?}"));
    let t = expect_error(&c, &mut cl, "SELECT * FROM torii.stats('cu')", &["XX001"])?;
    seen.push(format!("torii.stats: {t}"));
    let t = expect_error(&c, &mut cl, "SELECT * FROM torii.vacuum('cu')", &["XX001"])?;
    seen.push(format!("torii.vacuum: {t}"));
    let t = expect_error(&c, &mut cl, "VACUUM cu", &["XX001"])?;
    seen.push(format!("VACUUM: {t}"));
    eprintln!("damaged undo block {blk} of cu:\n{}", seen.join("\n"));
    // Other tables are not affected.
    cl.batch_execute(
        "CREATE TABLE other (id int) USING torii; INSERT INTO other VALUES (1); \
         UPDATE other SET id = 2",
    )?;
    assert_eq!(sql::scalar::<i32>(&mut cl, "SELECT id FROM other")?, 2);
    c.assert_no_crash()
}

#[test]
fn corrupt_metapage() -> Result<()> {
    let Some((c, mut cl)) = setup("bad-meta")? else {
        return Ok(());
    };
    cl.batch_execute(
        "CREATE TABLE cm (id int PRIMARY KEY, v text) USING torii; \
         INSERT INTO cm SELECT g, 'row ' || g FROM generate_series(1, 3000) g; \
         UPDATE cm SET v = v || ' updated' WHERE id % 3 = 0",
    )?;
    let path = c.relation_path(&mut cl, "cm")?;
    cl.batch_execute("CHECKPOINT")?;
    drop(cl);
    c.stop()?;
    assert_eq!(page_kinds(&path)?[0], 1, "block 0 is not a metapage");
    // Byte 60: inside the metapage's statistics (undo bytes appended), covered by the CRC.
    flip_byte(&path, 0, Some(60))?;
    c.start()?;
    let mut cl = c.connect(DB)?;
    let mut seen = Vec::new();
    let problems = verify(&mut cl, "cm")?;
    assert!(
        problems.iter().any(|(b, _)| *b == 0),
        "torii.verify does not report the metapage: {problems:?}"
    );
    seen.push(format!("torii.verify: {problems:?}"));
    for q in [
        "SELECT * FROM torii.stats('cm')",
        "SELECT * FROM torii.vacuum('cm')",
        "UPDATE cm SET v = 'x' WHERE id = 1",
        "DELETE FROM cm WHERE id = 2",
    ] {
        let t = expect_error(&c, &mut cl, q, &["XX001"])?;
        check_xx001_text(&t, "cm", 0);
        seen.push(format!("{q}: {t}"));
    }
    // Whatever a plain read or an insert does with a damaged metapage, it does not crash.
    for q in [
        "SELECT count(*), sum(length(v)) FROM cm",
        "INSERT INTO cm VALUES (100000, 'new')",
        "VACUUM cm",
    ] {
        let log0 = c.log_len();
        let r = cl.batch_execute(q);
        seen.push(format!(
            "{q}: {}",
            match &r {
                Ok(()) => "works".to_string(),
                Err(e) => sql::describe(e),
            }
        ));
        if let Err(e) = &r {
            assert_eq!(
                sql::sqlstate(e).as_deref(),
                Some("XX001"),
                "{q}: {}",
                sql::describe(e)
            );
        }
        still_fine(&c, &mut cl, log0, q)?;
    }
    eprintln!("damaged metapage of cm:\n{}", seen.join("\n"));
    c.assert_no_crash()
}
