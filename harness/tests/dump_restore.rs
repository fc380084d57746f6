//! `pg_dump` / `pg_restore` of a database with torii tables.
//!
//! The source database has torii tables of many column types with NULLs, a 1 MB TOAST value,
//! unique, partial, expression and GIN indexes, a foreign key between two torii tables, a
//! partitioned table with torii partitions (and one heap partition), a torii materialized view,
//! a heap table, rows updated (in place and cold) and deleted before the dump, and stored hints
//! in `torii.hint_store`. After a restore:
//!
//! * every table has the same access method as in the source (`pg_class.relam`);
//! * every table has the same content, row for row (`md5(string_agg(t::text, ...))`);
//! * the same indexes exist and are valid, index scans answer like the source, `bt_index_check`
//!   (with `heapallindexed`) is clean, and unique indexes and the foreign key still work;
//! * `torii.verify` is clean and `torii.stats` counts the rows;
//! * the rows of `torii.hint_store` are there;
//! * the restored tables take updates and deletes.
//!
//! Ways of restoring that are checked:
//!
//! * `custom_format_into_empty_database`: `pg_dump -Fc`, `pg_restore` into a new empty database
//!   (the dump creates the extension) — no errors at all;
//! * `custom_format_into_database_with_extension`: the same into a database that already has
//!   `CREATE EXTENSION torii`. pg_restore then reports one error, `schema "torii" already
//!   exists` (the dump has `CREATE SCHEMA torii;` because CREATE EXTENSION made the schema, it
//!   is not a member of the extension) and exits with status 1 ("errors ignored on restore:
//!   1"); `CREATE EXTENSION IF NOT EXISTS` is skipped and everything else restores. Any other
//!   error fails the test. So: restore into an empty database and let the dump create the
//!   extension, or expect that one error;
//! * `plain_format_through_psql`: `pg_dump -Fp` into `psql -v ON_ERROR_STOP=1`.
//!
//! Stored hints are keyed by query id, which depends on relation OIDs: after a restore the rows
//! of `torii.hint_store` are there, but `torii.query_id` of the same text differs, so they no
//! longer apply (printed by the test, not asserted: the documentation promises the rows only).

use std::path::Path;
use std::process::Output;

use postgres::Client;
use torii_harness::testing::{am, assert_verify_clean, cluster_with_db_conf, is_torii, DB};
use torii_harness::{err, sql, Cluster, Result};

/// Tables compared after a restore: (name, ORDER BY key, expected AM or None for the AM under
/// test).
const TABLES: &[(&str, &str, Option<&str>)] = &[
    ("parent", "id", None),
    ("child", "id", None),
    ("part_eu", "id", None),
    ("part_us", "id", None),
    ("part_other", "id", Some("heap")),
    ("mv", "parent_id", None),
    ("plain_heap", "id", Some("heap")),
    ("wide", "id", None),
];

/// The hints stored before the dump: (query text or None for a hint set by id, hints).
const HINT_QUERY: &str = "SELECT * FROM parent WHERE id = 5";

fn conf() -> Vec<&'static str> {
    if is_torii() {
        vec!["shared_preload_libraries = 'torii'"]
    } else {
        vec![]
    }
}

fn setup_source(cl: &mut Client) -> Result<()> {
    let am = am();
    cl.batch_execute(&format!(
        "SET default_table_access_method = {am};
         CREATE TABLE parent (
             id int PRIMARY KEY,
             name text NOT NULL UNIQUE,
             created date
         );
         CREATE TABLE child (
             id bigserial PRIMARY KEY,
             parent_id int REFERENCES parent (id),
             amount numeric(12,2),
             tags text[],
             doc jsonb,
             payload bytea,
             flag bool,
             ts timestamptz,
             f float8,
             u uuid,
             iv interval,
             note varchar(40),
             big text
         );
         CREATE INDEX child_parent ON child (parent_id);
         CREATE INDEX child_amount_flagged ON child (amount) WHERE flag;
         CREATE INDEX child_doc_name ON child (lower(doc ->> 'name'));
         CREATE INDEX child_tags ON child USING gin (tags);
         CREATE UNIQUE INDEX child_u ON child (u);
         INSERT INTO parent
             SELECT g, 'parent ' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE date '2020-01-01' + g END
             FROM generate_series(1, 300) g;
         INSERT INTO child (parent_id, amount, tags, doc, payload, flag, ts, f, u, iv, note)
             SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE g % 300 + 1 END,
                    CASE WHEN g % 7 = 0 THEN NULL ELSE (g * 12.34)::numeric(12,2) END,
                    CASE WHEN g % 5 = 0 THEN NULL ELSE ARRAY['t' || g % 3, 'x' || g % 11] END,
                    CASE WHEN g % 6 = 0 THEN NULL
                         ELSE jsonb_build_object('name', 'Name' || g % 50, 'n', g) END,
                    CASE WHEN g % 8 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
                    CASE WHEN g % 9 = 0 THEN NULL ELSE g % 2 = 0 END,
                    CASE WHEN g % 11 = 0 THEN NULL
                         ELSE timestamptz '2021-06-01 12:00:00+00' + g * interval '37 minutes' END,
                    CASE WHEN g % 12 = 0 THEN NULL ELSE g / 3.0 END,
                    CASE WHEN g % 13 = 0 THEN NULL ELSE md5('u' || g)::uuid END,
                    CASE WHEN g % 14 = 0 THEN NULL ELSE g * interval '1 hour' END,
                    CASE WHEN g % 15 = 0 THEN NULL ELSE 'note ''' || g || '''\t\\ \"q\"' END
             FROM generate_series(1, 5000) g;
         -- a 1 MB value (hex digits: TOASTed out of line, hardly compressible)
         UPDATE child SET big = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 32768) g)
             WHERE id = 42;
         UPDATE child SET big = repeat('small ', 10) WHERE id BETWEEN 100 AND 110;
         -- changed before the dump: in place, cold (indexed column), deleted
         UPDATE child SET note = 'updated in place', f = f * 2 WHERE id % 17 = 0;
         UPDATE child SET amount = amount + 1, flag = NOT flag WHERE id % 19 = 0;
         UPDATE child SET parent_id = 1 WHERE id % 23 = 0;
         DELETE FROM child WHERE id % 29 = 0;
         DELETE FROM child WHERE parent_id = 300;
         DELETE FROM parent WHERE id = 300;
         UPDATE parent SET name = name || ' renamed' WHERE id % 10 = 0;"
    ))?;
    // (a transaction block in a multi-statement string would take the statements before it)
    cl.batch_execute("BEGIN; UPDATE child SET note = 'rolled back' WHERE id % 2 = 0; ROLLBACK")?;
    cl.batch_execute(&format!(
        "SET default_table_access_method = {am};

         CREATE TABLE part (id int, region text, v text, PRIMARY KEY (region, id))
             PARTITION BY LIST (region);
         CREATE TABLE part_eu PARTITION OF part FOR VALUES IN ('eu') USING {am};
         CREATE TABLE part_us PARTITION OF part FOR VALUES IN ('us') USING {am};
         CREATE TABLE part_other PARTITION OF part DEFAULT USING heap;
         INSERT INTO part SELECT g, (ARRAY['eu', 'us', 'asia'])[g % 3 + 1], 'p' || g
             FROM generate_series(1, 900) g;
         UPDATE part SET v = v || '!' WHERE id % 4 = 0;
         DELETE FROM part WHERE id % 50 = 0;

         CREATE MATERIALIZED VIEW mv USING {am} AS
             SELECT parent_id, count(*) AS n, sum(amount) AS total FROM child GROUP BY parent_id;
         CREATE UNIQUE INDEX mv_parent ON mv (parent_id);

         CREATE TABLE plain_heap (id int PRIMARY KEY, v text) USING heap;
         INSERT INTO plain_heap SELECT g, 'heap ' || g FROM generate_series(1, 100) g;

         -- a table with a dropped column and one added later
         CREATE TABLE wide (id int PRIMARY KEY, a text, gone text, b int);
         INSERT INTO wide SELECT g, 'a' || g, 'gone', g FROM generate_series(1, 200) g;
         ALTER TABLE wide DROP COLUMN gone;
         ALTER TABLE wide ADD COLUMN c text DEFAULT 'dflt';
         UPDATE wide SET c = NULL WHERE id % 3 = 0;
         RESET default_table_access_method;"
    ))?;
    if is_torii() {
        let id: i64 = sql::scalar(
            cl,
            &format!(
                "SELECT torii.hint_set({}, 'SeqScan(parent)')",
                sql::literal(HINT_QUERY)
            ),
        )?;
        assert_ne!(id, 0);
        cl.batch_execute("SELECT torii.hint_set(1234567890123::bigint, 'IndexScan(child)')")?;
    }
    Ok(())
}

/// Run a PostgreSQL client program as the server's OS user.
fn run(c: &Cluster, program: &str, args: &[&str]) -> Result<Output> {
    let out = c
        .pg_command(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()?;
    Ok(out)
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn must(o: Output, what: &str) -> Result<Output> {
    if o.status.success() {
        Ok(o)
    } else {
        Err(err(format!(
            "{what} failed ({}):\n{}",
            o.status,
            output_text(&o)
        )))
    }
}

/// Everything compared between source and restored database, as (what, text) pairs.
fn fingerprint(cl: &mut Client) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (t, key, _) in TABLES {
        let q = format!("SELECT count(*), md5(string_agg(x::text, ',' ORDER BY {key})) FROM {t} x");
        out.push((q.clone(), sql::result_text(cl, &q)?));
    }
    let q = "SELECT length(big), md5(big) FROM child WHERE big IS NOT NULL ORDER BY id";
    out.push((q.into(), sql::result_text(cl, q)?));
    let q = "SELECT c.relname, c.relkind, coalesce(a.amname, '-') FROM pg_class c \
             LEFT JOIN pg_am a ON a.oid = c.relam \
             WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1";
    out.push((q.into(), sql::result_text(cl, q)?));
    let q = "SELECT i.indexrelid::regclass::text, i.indisvalid, i.indisready, i.indisunique, \
             pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             WHERE c.relnamespace = 'public'::regnamespace ORDER BY 1";
    out.push((q.into(), sql::result_text(cl, q)?));
    let q = "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE connamespace = 'public'::regnamespace ORDER BY 1";
    out.push((q.into(), sql::result_text(cl, q)?));
    if is_torii() {
        let q = "SELECT query_id, query_text, hints FROM torii.hint_store ORDER BY query_id";
        out.push((q.into(), sql::result_text(cl, q)?));
    }
    // Index scans (each checked to be one) over every kind of index.
    cl.batch_execute(
        "SET enable_seqscan = off; SET enable_bitmapscan = off; \
         SET max_parallel_workers_per_gather = 0",
    )?;
    for (q, node) in [
        (
            "SELECT id, amount FROM child WHERE flag AND amount > 1000 ORDER BY amount, id",
            "child_amount_flagged",
        ),
        (
            "SELECT id, doc FROM child WHERE lower(doc ->> 'name') = 'name7' ORDER BY id",
            "child_doc_name",
        ),
        (
            "SELECT id, u FROM child WHERE u = md5('u77')::uuid",
            "child_u",
        ),
        (
            "SELECT id, parent_id FROM child WHERE parent_id BETWEEN 10 AND 20 ORDER BY id",
            "child_parent",
        ),
        (
            "SELECT id, name FROM parent WHERE name > 'parent 25' ORDER BY name",
            "parent_name_key",
        ),
        (
            "SELECT * FROM mv WHERE parent_id < 50 ORDER BY parent_id",
            "mv_parent",
        ),
        (
            "SELECT * FROM part WHERE region = 'eu' AND id < 100 ORDER BY id",
            "part_eu_pkey",
        ),
    ] {
        let plan = sql::explain(cl, q)?;
        if !plan.contains(node) {
            return Err(err(format!("expected a scan of {node} for {q}:\n{plan}")));
        }
        out.push((q.into(), sql::result_text(cl, q)?));
    }
    cl.batch_execute(
        "RESET enable_seqscan; SET enable_bitmapscan = on; SET enable_indexscan = off",
    )?;
    let q = "SELECT id FROM child WHERE tags @> ARRAY['x7'] ORDER BY id";
    let plan = sql::explain(cl, q)?;
    if !plan.contains("child_tags") {
        return Err(err(format!(
            "expected a bitmap scan of child_tags:\n{plan}"
        )));
    }
    out.push((q.into(), sql::result_text(cl, q)?));
    cl.batch_execute(
        "RESET enable_seqscan; RESET enable_bitmapscan; RESET enable_indexscan; \
         RESET max_parallel_workers_per_gather",
    )?;
    Ok(out)
}

fn assert_same_fingerprint(a: &[(String, String)], b: &[(String, String)]) -> Result<()> {
    assert_eq!(a.len(), b.len());
    for ((q, x), (_, y)) in a.iter().zip(b) {
        if x != y {
            return Err(err(format!(
                "after restore, {q}\n--- source:\n{}\n--- restored:\n{}",
                torii_harness::testing::clip(x),
                torii_harness::testing::clip(y)
            )));
        }
    }
    Ok(())
}

/// All checks of a restored database against the source.
fn check_restored(c: &Cluster, source: &[(String, String)], db: &str) -> Result<()> {
    let mut cl = c.connect(db)?;
    let restored = fingerprint(&mut cl)?;
    assert_same_fingerprint(source, &restored)?;
    let want_am = am();
    for (t, _, expected) in TABLES {
        let got = torii_harness::testing::table_am(&mut cl, t)?;
        assert_eq!(
            got,
            expected.unwrap_or(want_am.as_str()),
            "access method of {t}"
        );
    }
    // The 1 MB value is there and stored out of line.
    assert_eq!(
        sql::scalar::<i32>(&mut cl, "SELECT length(big) FROM child WHERE id = 42")?,
        1 << 20
    );
    assert!(
        sql::scalar::<i32>(&mut cl, "SELECT pg_column_size(big) FROM child WHERE id = 42")?
            < 1 << 20
            || sql::scalar::<i64>(
                &mut cl,
                "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE oid = 'child'::regclass"
            )? > 1 << 19
    );
    // Indexes agree with their tables.
    cl.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")?;
    let btrees = sql::column_text(
        &mut cl,
        "SELECT i.indexrelid::regclass::text FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
         JOIN pg_class t ON t.oid = i.indrelid \
         WHERE a.amname = 'btree' AND t.relnamespace = 'public'::regnamespace \
         AND t.relkind IN ('r', 'm') ORDER BY 1",
    )?;
    assert!(btrees.len() >= 10, "{btrees:?}");
    for idx in &btrees {
        cl.batch_execute(&format!("SELECT bt_index_check('{idx}', true)"))?;
    }
    for (t, _, expected) in TABLES {
        if expected.is_none() {
            assert_verify_clean(&mut cl, t)?;
            if is_torii() {
                let st = torii_harness::testing::torii_stats(&mut cl, t)?;
                let n: i64 = sql::scalar(&mut cl, &format!("SELECT count(*) FROM {t}"))?;
                assert_eq!(st.live_rows, n, "torii.stats({t}).live_rows: {st:?}");
            }
        }
    }
    // Constraints work.
    sql::expect_sqlstate(
        &mut cl,
        "INSERT INTO child (parent_id, note) VALUES (300, 'no such parent')",
        "23503",
    )?;
    sql::expect_sqlstate(&mut cl, "DELETE FROM parent WHERE id = 1", "23503")?;
    sql::expect_sqlstate(&mut cl, "UPDATE parent SET id = 1000 WHERE id = 2", "23503")?;
    sql::expect_sqlstate(
        &mut cl,
        "INSERT INTO parent VALUES (1000, 'parent 7', NULL)",
        "23505",
    )?;
    sql::expect_sqlstate(
        &mut cl,
        "INSERT INTO child (parent_id, u) VALUES (1, md5('u1')::uuid)",
        "23505",
    )?;
    sql::expect_sqlstate(&mut cl, "INSERT INTO part VALUES (1, 'us', 'dup')", "23505")?;
    // The restored tables take changes (the serial goes on after the restored rows).
    cl.batch_execute(
        "INSERT INTO parent VALUES (301, 'parent 301', NULL); \
         INSERT INTO child (parent_id, note) VALUES (301, 'after restore'); \
         UPDATE child SET note = 'changed after restore' WHERE id % 31 = 0; \
         UPDATE child SET amount = -amount WHERE id % 37 = 0; \
         DELETE FROM child WHERE id % 41 = 0; \
         UPDATE part SET v = 'after' WHERE id % 5 = 0; \
         REFRESH MATERIALIZED VIEW mv",
    )?;
    let new_id: i64 = sql::scalar(&mut cl, "SELECT id FROM child WHERE note = 'after restore'")?;
    assert!(new_id > 5000, "the serial restarted: {new_id}");
    for (t, _, expected) in TABLES {
        if expected.is_none() {
            assert_verify_clean(&mut cl, t)?;
        }
    }
    assert_eq!(
        torii_harness::testing::table_am(&mut cl, "mv")?,
        want_am,
        "REFRESH kept the access method"
    );
    for idx in &btrees {
        cl.batch_execute(&format!("SELECT bt_index_check('{idx}', true)"))?;
    }
    Ok(())
}

/// Stored hints after the restore: the rows are there (checked by the fingerprint); report
/// whether the one stored by query text still applies (query ids depend on relation OIDs).
fn report_hint_keys(c: &Cluster, db: &str) -> Result<()> {
    if !is_torii() {
        return Ok(());
    }
    let mut src = c.connect(DB)?;
    let mut dst = c.connect(db)?;
    let q = format!("SELECT torii.query_id({})", sql::literal(HINT_QUERY));
    let a: i64 = sql::scalar(&mut src, &q)?;
    let b: i64 = sql::scalar(&mut dst, &q)?;
    let stored: i64 = sql::scalar(
        &mut dst,
        &format!(
            "SELECT query_id FROM torii.hint_store WHERE query_text = {}",
            sql::literal(HINT_QUERY)
        ),
    )?;
    eprintln!(
        "{db}: query id of {HINT_QUERY:?}: source {a}, restored {b}, stored key {stored}: the \
         stored hint {} after the restore",
        if b == stored {
            "applies"
        } else {
            "no longer applies"
        }
    );
    Ok(())
}

fn source() -> Result<(Cluster, Vec<(String, String)>)> {
    let (c, mut cl) = cluster_with_db_conf("dump", &conf())?;
    setup_source(&mut cl)?;
    let fp = fingerprint(&mut cl)?;
    for (t, _, expected) in TABLES {
        if expected.is_none() {
            assert_verify_clean(&mut cl, t)?;
        }
    }
    Ok((c, fp))
}

fn dump_file(c: &Cluster, name: &str) -> Result<String> {
    let dir = c.make_dir("dumps")?;
    Ok(dir.join(name).display().to_string())
}

fn conn_args(c: &Cluster) -> Vec<String> {
    vec![
        "-h".into(),
        c.socket_dir().display().to_string(),
        "-p".into(),
        c.port().to_string(),
        "-U".into(),
        "postgres".into(),
    ]
}

fn args<'a>(base: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

#[test]
fn custom_format_into_empty_database() -> Result<()> {
    let (c, fp) = source()?;
    let file = dump_file(&c, "src.dump")?;
    let ca = conn_args(&c);
    must(
        run(&c, "pg_dump", &args(&ca, &["-Fc", "-f", &file, DB]))?,
        "pg_dump -Fc",
    )?;
    assert!(Path::new(&file).metadata()?.len() > 1 << 19);
    c.exec("CREATE DATABASE restored")?;
    let out = must(
        run(
            &c,
            "pg_restore",
            &args(&ca, &["--exit-on-error", "-d", "restored", &file]),
        )?,
        "pg_restore into an empty database",
    )?;
    let text = output_text(&out);
    assert!(text.trim().is_empty(), "pg_restore said:\n{text}");
    check_restored(&c, &fp, "restored")?;
    report_hint_keys(&c, "restored")?;
    c.assert_no_crash()
}

#[test]
fn custom_format_into_database_with_extension() -> Result<()> {
    let (c, fp) = source()?;
    let file = dump_file(&c, "src.dump")?;
    let ca = conn_args(&c);
    must(
        run(&c, "pg_dump", &args(&ca, &["-Fc", "-f", &file, DB]))?,
        "pg_dump -Fc",
    )?;
    if is_torii() {
        c.create_db_with_torii("restored")?;
    } else {
        c.create_db("restored")?;
    }
    let out = run(&c, "pg_restore", &args(&ca, &["-d", "restored", &file]))?;
    let text = output_text(&out);
    eprintln!(
        "pg_restore into a database that has the extension already: {}\n{text}",
        out.status
    );
    // Whatever pg_restore reports about objects that exist already, no error may concern the
    // tables, their data or their indexes.
    for line in text.lines().filter(|l| l.contains("error")) {
        assert!(
            line.contains("already exists") || line.contains("errors ignored"),
            "pg_restore: {line}\n{text}"
        );
    }
    check_restored(&c, &fp, "restored")?;
    c.assert_no_crash()
}

#[test]
fn plain_format_through_psql() -> Result<()> {
    let (c, fp) = source()?;
    let file = dump_file(&c, "src.sql")?;
    let ca = conn_args(&c);
    must(
        run(&c, "pg_dump", &args(&ca, &["-Fp", "-f", &file, DB]))?,
        "pg_dump -Fp",
    )?;
    let dump = std::fs::read_to_string(&file)?;
    if is_torii() {
        assert!(
            dump.contains("CREATE EXTENSION IF NOT EXISTS torii"),
            "no CREATE EXTENSION"
        );
        assert!(dump.contains("SET default_table_access_method = torii;"));
    }
    c.exec("CREATE DATABASE restored")?;
    must(
        run(
            &c,
            "psql",
            &args(
                &ca,
                &[
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    "restored",
                    "-f",
                    &file,
                ],
            ),
        )?,
        "psql < plain dump",
    )?;
    check_restored(&c, &fp, "restored")?;
    c.assert_no_crash()
}
