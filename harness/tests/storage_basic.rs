//! Storage basics of the torii table AM, compared with heap on the same data.
//!
//! Every test starts its own cluster. `bulk_load_million` (1,000,000 rows per load) is ignored
//! by default for time; `cargo test -p torii-harness --test storage_basic -- --include-ignored`
//! runs it. `bulk_load` runs the same checks on 100,000 rows.
//!
//! `TORII_TEST_AM=heap` runs everything heap against heap (a self-test of the harness).

use std::time::Duration;

use postgres::Client;
use torii_harness::testing::{
    am, assert_verify_clean, cluster_with_db, exec_both, is_torii, same_result, table_am,
    torii_stats, DB,
};
use torii_harness::{err, sql, workload, Cluster, Result};

fn create_pair(client: &mut Client, h: &str, t: &str, columns: &str) -> Result<()> {
    client.batch_execute(&format!(
        "CREATE TABLE {h} ({columns}) USING heap; CREATE TABLE {t} ({columns}) USING {}",
        am()
    ))?;
    Ok(())
}

fn finish(c: &Cluster) -> Result<()> {
    c.assert_no_crash()
}

// ---------------------------------------------------------------------------------------------
// Bulk loads
// ---------------------------------------------------------------------------------------------

fn bulk_load(name: &str, n: u64) -> Result<()> {
    let (c, mut cl) = cluster_with_db(name)?;
    let am = am();
    for (h, t) in [("h_copy", "t_copy"), ("h_ins", "t_ins")] {
        workload::create_accounts_table(&mut cl, h, "heap")?;
        workload::create_accounts_table(&mut cl, t, &am)?;
    }
    for tbl in ["h_copy", "t_copy"] {
        let copied = workload::copy_in(&mut cl, tbl, 1, n, workload::SEED)?;
        assert_eq!(copied, n, "COPY into {tbl}");
    }
    for tbl in ["h_ins", "t_ins"] {
        let inserted = workload::insert_select(&mut cl, tbl, 1, n)?;
        assert_eq!(inserted, n, "INSERT ... SELECT into {tbl}");
    }
    assert_eq!(table_am(&mut cl, "t_copy")?, am);

    cl.batch_execute("SET max_parallel_workers_per_gather = 0")?;
    for (h, t) in [("h_copy", "t_copy"), ("h_ins", "t_ins")] {
        let agg = same_result(
            &mut cl,
            "SELECT count(*), sum(id), sum(account), sum(balance), count(note), \
             min(created), max(created) FROM {t}",
            h,
            t,
        )?;
        assert!(agg.starts_with(&format!("{n}|")), "{agg}");
        // Whole-content digest, independent of row order.
        same_result(
            &mut cl,
            "SELECT sum(hashtext(x::text)::bigint), count(DISTINCT id) FROM {t} x",
            h,
            t,
        )?;
        let sample = same_result(
            &mut cl,
            "SELECT x::text FROM {t} x WHERE id % 997 = 0 ORDER BY id",
            h,
            t,
        )?;
        assert_eq!(sample.lines().count() as u64, n / 997);
    }

    // A btree index on each; lookups through it return the same rows.
    for tbl in ["h_copy", "t_copy", "h_ins", "t_ins"] {
        cl.batch_execute(&format!(
            "CREATE INDEX {tbl}_account ON {tbl} (account); CREATE INDEX {tbl}_id ON {tbl} (id)"
        ))?;
    }
    cl.batch_execute("ANALYZE; SET enable_seqscan = off")?;
    for (h, t) in [("h_copy", "t_copy"), ("h_ins", "t_ins")] {
        for account in [1, 17, 4242, 9999, 10000] {
            let q = format!("SELECT x::text FROM {{t}} x WHERE account = {account} ORDER BY id");
            let plan = sql::explain(&mut cl, &q.replace("{t}", t))?;
            assert!(
                plan.contains(&format!("{t}_account")),
                "index not used:\n{plan}"
            );
            same_result(&mut cl, &q, h, t)?;
        }
        let mid = n as i64 / 2;
        for q in [
            format!("SELECT x::text FROM {{t}} x WHERE id = {mid}"),
            format!(
                "SELECT x::text FROM {{t}} x WHERE id BETWEEN {mid} AND {} ORDER BY id",
                mid + 500
            ),
            "SELECT x::text FROM {t} x WHERE id = -1".to_string(),
        ] {
            let plan = sql::explain(&mut cl, &q.replace("{t}", t))?;
            assert!(plan.contains(&format!("{t}_id")), "index not used:\n{plan}");
            same_result(&mut cl, &q, h, t)?;
        }
    }
    assert_verify_clean(&mut cl, "t_copy")?;
    assert_verify_clean(&mut cl, "t_ins")?;
    finish(&c)
}

#[test]
fn bulk_load_100k() -> Result<()> {
    bulk_load("bulk100k", 100_000)
}

#[test]
#[ignore = "slow: 4 loads of 1,000,000 rows; run with --include-ignored"]
fn bulk_load_million() -> Result<()> {
    bulk_load("bulk1m", 1_000_000)
}

// ---------------------------------------------------------------------------------------------
// Rollback and visibility between sessions
// ---------------------------------------------------------------------------------------------

#[test]
fn rollback_and_visibility() -> Result<()> {
    let (c, mut a) = cluster_with_db("visibility")?;
    let am = am();
    a.batch_execute(&format!("CREATE TABLE t (id int, v text) USING {am}"))?;

    // Rolled back INSERT and COPY leave nothing visible.
    a.batch_execute(
        "BEGIN; INSERT INTO t SELECT g, 'r' || g FROM generate_series(1, 5000) g; ROLLBACK",
    )?;
    assert_eq!(sql::scalar::<i64>(&mut a, "SELECT count(*) FROM t")?, 0);
    a.batch_execute("BEGIN")?;
    {
        let mut w = a.copy_in("COPY t FROM STDIN")?;
        use std::io::Write;
        for i in 0..3000 {
            writeln!(w, "{i}\tcopy {i}")?;
        }
        w.finish()?;
    }
    assert_eq!(
        sql::scalar::<i64>(&mut a, "SELECT count(*) FROM t")?,
        3000,
        "own rows visible"
    );
    a.batch_execute("ROLLBACK")?;
    assert_eq!(sql::scalar::<i64>(&mut a, "SELECT count(*) FROM t")?, 0);

    // Subtransactions: the rolled back savepoint's rows are gone, the others stay.
    a.batch_execute(
        "BEGIN; INSERT INTO t VALUES (1, 'one'); SAVEPOINT s1; \
         INSERT INTO t SELECT g, 'gone' FROM generate_series(100, 200) g; ROLLBACK TO s1; \
         INSERT INTO t VALUES (3, 'three'); SAVEPOINT s2; INSERT INTO t VALUES (4, 'four'); \
         RELEASE s2; COMMIT",
    )?;
    assert_eq!(
        sql::result_text(&mut a, "SELECT id, v FROM t ORDER BY id")?,
        "1|one\n3|three\n4|four"
    );
    // An error inside a transaction rolls back the whole transaction.
    let _ = a.batch_execute("BEGIN; INSERT INTO t VALUES (5, 'five'); SELECT 1/0");
    a.batch_execute("ROLLBACK")?;
    assert_eq!(sql::scalar::<i64>(&mut a, "SELECT count(*) FROM t")?, 3);

    // Session A's uncommitted rows are invisible to session B until commit.
    let mut b = c.connect(DB)?;
    let mut rr = c.connect(DB)?;
    a.batch_execute("BEGIN; INSERT INTO t SELECT g, 'a' FROM generate_series(10, 1009) g")?;
    assert_eq!(sql::scalar::<i64>(&mut a, "SELECT count(*) FROM t")?, 1003);
    assert_eq!(sql::scalar::<i64>(&mut b, "SELECT count(*) FROM t")?, 3);
    assert_eq!(
        sql::scalar::<i64>(&mut b, "SELECT count(*) FROM t WHERE v = 'a'")?,
        0
    );
    // A REPEATABLE READ snapshot taken now must not see them even after the commit.
    rr.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
    assert_eq!(sql::scalar::<i64>(&mut rr, "SELECT count(*) FROM t")?, 3);
    a.batch_execute("COMMIT")?;
    assert_eq!(sql::scalar::<i64>(&mut b, "SELECT count(*) FROM t")?, 1003);
    assert_eq!(
        sql::scalar::<i64>(&mut b, "SELECT sum(id) FROM t WHERE v = 'a'")?,
        (10..=1009).sum::<i64>()
    );
    assert_eq!(sql::scalar::<i64>(&mut rr, "SELECT count(*) FROM t")?, 3);
    rr.batch_execute("COMMIT")?;
    assert_eq!(sql::scalar::<i64>(&mut rr, "SELECT count(*) FROM t")?, 1003);

    // A rolled back transaction of session A is never visible to B.
    a.batch_execute("BEGIN; INSERT INTO t SELECT g, 'b' FROM generate_series(1, 500) g")?;
    assert_eq!(sql::scalar::<i64>(&mut b, "SELECT count(*) FROM t")?, 1003);
    a.batch_execute("ROLLBACK")?;
    assert_eq!(sql::scalar::<i64>(&mut b, "SELECT count(*) FROM t")?, 1003);
    assert_verify_clean(&mut a, "t")?;
    finish(&c)
}

// ---------------------------------------------------------------------------------------------
// Data types
// ---------------------------------------------------------------------------------------------

#[test]
fn types_round_trip() -> Result<()> {
    let (c, mut cl) = cluster_with_db("types")?;
    cl.batch_execute(
        "SET timezone = 'UTC'; SET datestyle = 'ISO, YMD'; \
         CREATE TYPE comp AS (a int, b text, c numeric[]); \
         CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
    )?;
    let has_xml = cl.batch_execute("SELECT '<a/>'::xml").is_ok();
    let mut columns = String::from(
        "id int, c_int2 int2, c_int4 int4, c_int8 int8, c_float4 float4, c_float8 float8, \
         c_numeric numeric, c_text text, c_varchar varchar(10), c_char char(5), c_bytea bytea, \
         c_bool bool, c_date date, c_time time, c_timetz timetz, c_timestamp timestamp, \
         c_timestamptz timestamptz, c_interval interval, c_uuid uuid, c_json json, c_jsonb jsonb, \
         c_inet inet, c_cidr cidr, c_macaddr macaddr, c_point point, c_box box, \
         c_int4range int4range, c_int_arr int[], c_text_arr text[], c_comp comp, c_money money, \
         c_bit bit(8), c_varbit varbit(16), c_tsvector tsvector, c_char1 \"char\", c_name name, \
         c_oid oid, c_enum mood, c_domain posint, c_numrange numrange, c_tsrange tstzrange, \
         c_2d int[][], c_macaddr8 macaddr8, c_line line, c_lseg lseg, c_path path, \
         c_polygon polygon, c_circle circle, c_tsquery tsquery",
    );
    if has_xml {
        columns.push_str(", c_xml xml");
    }
    create_pair(&mut cl, "h_types", "t_types", &columns)?;
    let xml = |v: &str| {
        if has_xml {
            format!(", {v}")
        } else {
            String::new()
        }
    };
    let rows = [
        format!(
            "(1, 1, 2, 3, 1.5, 2.25, 12345.6789, 'hello', 'varchar', 'ch', '\\x00ff10', true, \
             '2024-02-29', '12:34:56.789', '12:34:56+05:30', '2024-01-01 00:00:01', \
             '2024-06-30 23:59:59.999999+00', '1 year 2 mons 3 days 04:05:06', \
             'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"a\": [1, 2, {{\"b\": null}}]}}', \
             '{{\"z\": 1, \"a\": [true, false], \"n\": 1.50}}', '192.168.0.1/24', '10.0.0.0/8', \
             '08:00:2b:01:02:03', '(1.5,-2)', '((0,0),(1,1))', '[1,10)', '{{1,2,3}}', \
             '{{\"a\",\"b c\",NULL}}', ROW(7, 'seven', '{{1.5,NULL}}'), 12.34, B'10101010', \
             B'1101', 'a fat cat sat on a mat', 'x', 'a_name', 12345, 'happy', 42, '[1.5,2.5]', \
             '[2024-01-01 00:00+00,2024-01-02 00:00+00)', '{{{{1,2}},{{3,4}}}}', \
             '08:00:2b:01:02:03:04:05', '{{1,-1,0}}', '[(0,0),(1,1)]', '((0,0),(1,1),(2,0))', \
             '((0,0),(1,1),(2,0))', '<(1,1),5>', 'fat & (rat | cat)'{})",
            xml("'<doc><a x=\"1\">text</a></doc>'")
        ),
        // extremes
        format!(
            "(2, -32768, -2147483648, 9223372036854775807, 'NaN', '-Infinity', \
             '-0.000000000000000000000000000001', '', '', '', '\\x', false, 'infinity', \
             '24:00:00', '00:00:00-12', '-infinity', '294276-12-31 23:59:59+00', \
             '-178000000 years', '00000000-0000-0000-0000-000000000000', '[]', '{{}}', '::1', \
             '::/0', 'ff:ff:ff:ff:ff:ff', '(1e300,-1e-300)', '((-1,-1),(-1,-1))', 'empty', \
             '{{}}', '{{}}', ROW(NULL, NULL, NULL), -92233720368547758.08, B'00000000', B'', \
             '', '\\\\', '', 0, 'sad', 1, '(,)', 'empty', '{{}}', '00:00:00:00:00:00:00:00', \
             '{{0,1,0}}', '[(0,0),(0,0)]', '[(0,0)]', '((0,0))', '<(0,0),0>', 'a'{})",
            xml("'<?xml version=\"1.0\"?><empty/>'")
        ),
        // all NULL
        format!("(3{})", ", NULL".repeat(columns.split(", c_").count() - 1)),
        // mixed NULL / long / multibyte values
        format!(
            "(4, NULL, 7, NULL, 3.4028235e38, NULL, repeat('9', 1000)::numeric, \
             repeat('日本語テキスト', 300), 'ñandú', NULL, decode(repeat('ab', 3000), 'hex'), \
             NULL, NULL, '23:59:59.999999', NULL, '1999-12-31 23:59:59', NULL, '-1 microsecond', \
             NULL, '\"just a string\"', '[1, \"two\", {{\"three\": [3]}}]', NULL, \
             '2001:db8::/32', NULL, NULL, '((3,4),(1,2))', '(,5]', '{{NULL,NULL}}', \
             ARRAY[repeat('x', 3000), NULL, ''], NULL, NULL, NULL, B'1111111111111111', \
             NULL, NULL, NULL, NULL, NULL, 2147483647, NULL, NULL, '{{{{NULL,1}},{{2,NULL}}}}', \
             NULL, NULL, NULL, NULL, NULL, NULL, '!a'{})",
            xml("NULL")
        ),
    ];
    for r in &rows {
        exec_both(
            &mut cl,
            &format!("INSERT INTO {{t}} VALUES {r}"),
            "h_types",
            "t_types",
        )?;
    }
    // Many rows with NULLs in varying positions (the null bitmap) via INSERT ... SELECT.
    exec_both(
        &mut cl,
        "INSERT INTO {t} (id, c_int2, c_int8, c_text, c_bool, c_jsonb, c_int_arr, c_comp) \
         SELECT g, CASE WHEN g % 2 = 0 THEN g::int2 END, CASE WHEN g % 3 = 0 THEN g END, \
         CASE WHEN g % 5 <> 0 THEN repeat('t', g % 50) END, CASE WHEN g % 7 <> 0 THEN g % 2 = 0 END, \
         CASE WHEN g % 11 <> 0 THEN jsonb_build_object('g', g) END, \
         CASE WHEN g % 13 <> 0 THEN ARRAY[g, NULL, -g] END, \
         CASE WHEN g % 4 <> 0 THEN ROW(g, g::text, ARRAY[g / 3.0])::comp END \
         FROM generate_series(10, 2000) g",
        "h_types",
        "t_types",
    )?;
    let text = same_result(
        &mut cl,
        "SELECT x::text FROM {t} x ORDER BY id",
        "h_types",
        "t_types",
    )?;
    assert_eq!(text.lines().count(), 4 + 1991);
    // The binary send format of every row, too.
    same_result(
        &mut cl,
        "SELECT id, md5(record_send(x)) FROM {t} x ORDER BY id",
        "h_types",
        "t_types",
    )?;
    assert_verify_clean(&mut cl, "t_types")?;
    finish(&c)
}

#[test]
fn toast_round_trip() -> Result<()> {
    let (c, mut cl) = cluster_with_db("toast")?;
    create_pair(&mut cl, "h_toast", "t_toast", "id int, v text, b bytea")?;
    // 1 MB of hex digits (hardly compressible), 1 MB of one letter (very compressible), and a
    // 1 MB bytea.
    exec_both(
        &mut cl,
        "INSERT INTO {t} SELECT 1, string_agg(md5(g::text), ''), NULL FROM generate_series(1, 32768) g; \
         INSERT INTO {t} VALUES (2, repeat('x', 1048576), NULL); \
         INSERT INTO {t} SELECT 3, NULL, decode(string_agg(md5(g::text), ''), 'hex') \
           FROM generate_series(1, 65536) g",
        "h_toast",
        "t_toast",
    )?;
    let expected = sql::result_text(
        &mut cl,
        "SELECT md5(string_agg(md5(g::text), '')) FROM generate_series(1, 32768) g",
    )?;
    let digests = same_result(
        &mut cl,
        "SELECT id, length(v), md5(v), length(b), md5(b) FROM {t} ORDER BY id",
        "h_toast",
        "t_toast",
    )?;
    assert!(
        digests.starts_with(&format!("1|1048576|{expected}|")),
        "{digests}"
    );
    assert!(digests.contains("3|NULL|NULL|1048576|"), "{digests}");

    // A 1 MB value sent by the client comes back byte for byte.
    let big: String = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        (0..1_048_576)
            .map(|_| char::from(rng.gen_range(b' '..=b'~')))
            .collect()
    };
    cl.execute("INSERT INTO t_toast VALUES (4, $1, NULL)", &[&big])?;
    let back: String = cl
        .query_one("SELECT v FROM t_toast WHERE id = 4", &[])?
        .get(0);
    assert!(back == big, "1 MB value differs after the round trip");
    let md5s: (String, String) = {
        let r = cl.query_one(
            "SELECT md5(v), md5($1::text) FROM t_toast WHERE id = 4",
            &[&big],
        )?;
        (r.get(0), r.get(1))
    };
    assert_eq!(md5s.0, md5s.1);
    // The value really went to the TOAST table.
    let toast_rows: i64 = sql::scalar(
        &mut cl,
        "SELECT count(*) FROM pg_class c WHERE c.oid = (SELECT reltoastrelid FROM pg_class \
         WHERE oid = 't_toast'::regclass)",
    )?;
    assert_eq!(toast_rows, 1, "t_toast has a TOAST table");
    assert_verify_clean(&mut cl, "t_toast")?;
    finish(&c)
}

// ---------------------------------------------------------------------------------------------
// DDL: dropped / added columns, TRUNCATE, temp, unlogged, tablespaces
// ---------------------------------------------------------------------------------------------

#[test]
fn dropped_and_added_columns() -> Result<()> {
    let (c, mut cl) = cluster_with_db("columns")?;
    let am = am();
    create_pair(&mut cl, "h_cols", "t_cols", "a int, b text, c int, d text")?;
    let compare = |cl: &mut Client| {
        same_result(
            cl,
            "SELECT x::text FROM {t} x ORDER BY a",
            "h_cols",
            "t_cols",
        )
    };
    for step in [
        "INSERT INTO {t} SELECT g, 'b' || g, g * 2, CASE WHEN g % 3 = 0 THEN NULL ELSE 'd' || g END \
         FROM generate_series(1, 1000) g",
        "ALTER TABLE {t} DROP COLUMN b",
        "ALTER TABLE {t} ADD COLUMN e int DEFAULT 42",
        "ALTER TABLE {t} ADD COLUMN f text DEFAULT 'fff', ADD COLUMN n numeric",
        "INSERT INTO {t} (a, c, d) VALUES (1001, 2002, 'new')",
        // a volatile default rewrites the table
        "ALTER TABLE {t} ADD COLUMN g int DEFAULT (random() * 0)::int",
        // so does a type change
        "ALTER TABLE {t} ALTER COLUMN c TYPE bigint",
        "ALTER TABLE {t} DROP COLUMN d",
        "INSERT INTO {t} (a, c, e, f) VALUES (1002, 7, NULL, NULL)",
        "ALTER TABLE {t} ADD COLUMN h timestamptz DEFAULT '2024-01-01 00:00+00' NOT NULL",
    ] {
        exec_both(&mut cl, step, "h_cols", "t_cols")?;
        compare(&mut cl).map_err(|e| err(format!("after `{step}`: {e}")))?;
    }
    assert_eq!(table_am(&mut cl, "t_cols")?, am, "rewrite kept the AM");
    assert_verify_clean(&mut cl, "t_cols")?;
    finish(&c)
}

#[test]
fn truncate_temp_unlogged_tablespace() -> Result<()> {
    let (c, mut cl) = cluster_with_db("ddl")?;
    let am = am();
    // TRUNCATE in the transaction that created the table.
    cl.batch_execute(&format!(
        "BEGIN; CREATE TABLE tr (id int, v text) USING {am}; \
         INSERT INTO tr SELECT g, 'v' || g FROM generate_series(1, 1000) g; \
         TRUNCATE tr; INSERT INTO tr SELECT g, 'w' || g FROM generate_series(1, 10) g; COMMIT"
    ))?;
    assert_eq!(
        sql::result_text(&mut cl, "SELECT count(*), sum(id), min(v) FROM tr")?,
        "10|55|w1"
    );
    // A rolled back TRUNCATE keeps the rows.
    cl.batch_execute("BEGIN; TRUNCATE tr; ROLLBACK")?;
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM tr")?, 10);
    cl.batch_execute("BEGIN; TRUNCATE tr; INSERT INTO tr VALUES (99, 'x'); ROLLBACK")?;
    assert_eq!(
        sql::result_text(&mut cl, "SELECT count(*), sum(id) FROM tr")?,
        "10|55"
    );
    // A committed TRUNCATE empties it; the table stays usable.
    cl.batch_execute("TRUNCATE tr")?;
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM tr")?, 0);
    cl.batch_execute("INSERT INTO tr SELECT g, 'z' FROM generate_series(1, 100) g")?;
    assert_eq!(sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM tr")?, 100);
    assert_verify_clean(&mut cl, "tr")?;

    // Temporary table, with an index.
    cl.batch_execute(&format!(
        "CREATE TEMP TABLE tmp (id int, v text) USING {am}; \
         INSERT INTO tmp SELECT g, md5(g::text) FROM generate_series(1, 20000) g; \
         CREATE INDEX ON tmp (id); ANALYZE tmp"
    ))?;
    assert_eq!(
        sql::result_text(&mut cl, "SELECT count(*), sum(id) FROM tmp")?,
        "20000|200010000"
    );
    cl.batch_execute("SET enable_seqscan = off")?;
    assert_eq!(
        sql::result_text(&mut cl, "SELECT v FROM tmp WHERE id = 777")?,
        sql::result_text(&mut cl, "SELECT md5('777')")?
    );
    cl.batch_execute("RESET enable_seqscan")?;
    assert_eq!(table_am(&mut cl, "tmp")?, am);
    assert_verify_clean(&mut cl, "tmp")?;

    // Unlogged table: has an init fork on disk.
    cl.batch_execute(&format!(
        "CREATE UNLOGGED TABLE unl (id int, v text) USING {am}; \
         INSERT INTO unl SELECT g, 'u' FROM generate_series(1, 5000) g"
    ))?;
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM unl")?,
        5000
    );
    let persistence: i8 = sql::scalar(
        &mut cl,
        "SELECT relpersistence::\"char\" FROM pg_class WHERE oid = 'unl'::regclass",
    )?;
    assert_eq!(persistence as u8, b'u');
    let path = c.relation_path(&mut cl, "unl")?;
    let init = path.with_file_name(format!(
        "{}_init",
        path.file_name().unwrap().to_string_lossy()
    ));
    assert!(init.exists(), "no init fork {}", init.display());
    assert_verify_clean(&mut cl, "unl")?;

    // ALTER TABLE SET TABLESPACE and back.
    let dir = c.make_dir("tblspc1")?;
    cl.batch_execute(&format!(
        "CREATE TABLESPACE ts1 LOCATION {}",
        sql::literal(&dir.to_string_lossy())
    ))?;
    cl.batch_execute(&format!(
        "CREATE TABLE tsp (id int, v text) USING {am}; \
         INSERT INTO tsp SELECT g, repeat('s', g % 100) FROM generate_series(1, 10000) g"
    ))?;
    let before = sql::result_text(&mut cl, "SELECT x::text FROM tsp x ORDER BY id")?;
    cl.batch_execute("ALTER TABLE tsp SET TABLESPACE ts1")?;
    let p = c.relation_path(&mut cl, "tsp")?;
    assert!(
        p.to_string_lossy().contains("pg_tblspc"),
        "not moved: {}",
        p.display()
    );
    assert!(p.exists());
    assert_eq!(
        sql::result_text(&mut cl, "SELECT x::text FROM tsp x ORDER BY id")?,
        before
    );
    cl.batch_execute("INSERT INTO tsp VALUES (10001, 'after move')")?;
    // Survives a restart (buffers dropped, files read back).
    drop(cl);
    c.restart()?;
    let mut cl = c.connect(DB)?;
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM tsp")?,
        10001
    );
    cl.batch_execute("ALTER TABLE tsp SET TABLESPACE pg_default")?;
    assert_eq!(
        sql::result_text(
            &mut cl,
            "SELECT x::text FROM tsp x WHERE id <= 10000 ORDER BY id"
        )?,
        before
    );
    assert_eq!(table_am(&mut cl, "tsp")?, am);
    assert_verify_clean(&mut cl, "tsp")?;
    assert_eq!(
        sql::scalar::<i64>(&mut cl, "SELECT count(*) FROM unl")?,
        5000
    );
    finish(&c)
}

// ---------------------------------------------------------------------------------------------
// Planner: estimates, parallel scans, bitmap scans, TABLESAMPLE
// ---------------------------------------------------------------------------------------------

#[test]
fn planner_and_scans() -> Result<()> {
    let (c, mut cl) = cluster_with_db("planner")?;
    let n: u64 = 100_000;
    workload::create_accounts_table(&mut cl, "h_acc", "heap")?;
    workload::create_accounts_table(&mut cl, "t_acc", &am())?;
    for t in ["h_acc", "t_acc"] {
        workload::insert_select(&mut cl, t, 1, n)?;
        cl.batch_execute(&format!(
            "CREATE INDEX {t}_account ON {t} (account); ANALYZE {t}"
        ))?;
    }

    // Row estimates within 2x of heap's.
    for q in [
        "SELECT * FROM {t}",
        "SELECT * FROM {t} WHERE account < 100",
        "SELECT * FROM {t} WHERE note IS NULL",
        "SELECT * FROM {t} WHERE id BETWEEN 1000 AND 30000",
        "SELECT * FROM {t} WHERE account = 5",
    ] {
        let h = sql::estimated_rows(&mut cl, &q.replace("{t}", "h_acc"))?;
        let t = sql::estimated_rows(&mut cl, &q.replace("{t}", "t_acc"))?;
        assert!(
            t >= h / 2.0 && t <= h * 2.0,
            "estimate for {q}: heap {h}, {} {t}",
            am()
        );
    }
    let reltuples: f64 = sql::scalar(
        &mut cl,
        "SELECT reltuples::float8 FROM pg_class WHERE oid = 't_acc'::regclass",
    )?;
    assert!(
        (reltuples - n as f64).abs() <= n as f64 * 0.25,
        "reltuples {reltuples} for {n} rows"
    );

    // Parallel sequential scan.
    cl.batch_execute(
        "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
         SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2",
    )?;
    let q = "SELECT count(*), sum(id), sum(balance), count(note) FROM {t}";
    let plan = sql::explain(&mut cl, &q.replace("{t}", "t_acc"))?;
    assert!(
        plan.contains("Gather") && plan.contains("Parallel Seq Scan"),
        "{plan}"
    );
    let plan = sql::column_text(
        &mut cl,
        &format!("EXPLAIN (ANALYZE, COSTS OFF) {}", q.replace("{t}", "t_acc")),
    )?
    .join("\n");
    assert!(plan.contains("Workers Launched: 2"), "{plan}");
    let par = same_result(&mut cl, q, "h_acc", "t_acc")?;
    assert!(par.starts_with(&format!("{n}|")), "{par}");
    cl.batch_execute(
        "RESET parallel_setup_cost; RESET parallel_tuple_cost; \
         RESET min_parallel_table_scan_size; SET max_parallel_workers_per_gather = 0",
    )?;
    assert_eq!(sql::result_text(&mut cl, &q.replace("{t}", "t_acc"))?, par);

    // Bitmap heap scan.
    cl.batch_execute(
        "SET enable_seqscan = off; SET enable_indexscan = off; SET enable_indexonlyscan = off",
    )?;
    for q in [
        "SELECT x::text FROM {t} x WHERE account BETWEEN 10 AND 20 ORDER BY id",
        "SELECT count(*), sum(balance) FROM {t} WHERE account < 500",
        "SELECT x::text FROM {t} x WHERE account IN (3, 333, 3333) ORDER BY id",
    ] {
        let plan = sql::explain(&mut cl, &q.replace("{t}", "t_acc"))?;
        assert!(plan.contains("Bitmap Heap Scan"), "{plan}");
        let r = same_result(&mut cl, q, "h_acc", "t_acc")?;
        assert!(!r.is_empty());
    }
    cl.batch_execute("RESET enable_seqscan; RESET enable_indexscan; RESET enable_indexonlyscan")?;

    // TABLESAMPLE: a plausible, repeatable subset of existing rows.
    for method in ["SYSTEM", "BERNOULLI"] {
        let sample = format!("SELECT id FROM t_acc TABLESAMPLE {method} (50) REPEATABLE (1)");
        let counts = sql::rows_text(
            &mut cl,
            &format!(
                "SELECT count(*), count(DISTINCT s.id), count(x.id) FROM ({sample}) s \
                 LEFT JOIN t_acc x ON x.id = s.id"
            ),
        )?;
        let v: Vec<i64> = counts[0]
            .iter()
            .map(|v| v.as_deref().unwrap_or("0").parse().unwrap())
            .collect();
        let (total, distinct, existing) = (v[0], v[1], v[2]);
        assert!(
            total >= (n as i64) / 5 && total <= (n as i64) * 4 / 5,
            "{method}: {total} of {n} rows"
        );
        assert_eq!(distinct, total, "{method}: duplicate rows in the sample");
        assert_eq!(existing, total, "{method}: rows that do not exist");
        let again = sql::result_text(
            &mut cl,
            &format!("SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM ({sample}) s"),
        )?;
        let again2 = sql::result_text(
            &mut cl,
            &format!("SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM ({sample}) s"),
        )?;
        assert_eq!(again, again2, "{method} REPEATABLE gives the same sample");
    }
    assert_verify_clean(&mut cl, "t_acc")?;
    finish(&c)
}

// ---------------------------------------------------------------------------------------------
// Indexes
// ---------------------------------------------------------------------------------------------

#[test]
fn indexes_of_every_kind() -> Result<()> {
    let (c, mut cl) = cluster_with_db("indexes")?;
    create_pair(
        &mut cl,
        "h_ix",
        "t_ix",
        "id int NOT NULL, a int, arr int[], doc jsonb, p point, r int4range, txt text",
    )?;
    exec_both(
        &mut cl,
        "INSERT INTO {t} SELECT g, g % 1000, ARRAY[g % 10, g % 7, g % 13], \
         jsonb_build_object('k', g % 100, 'tags', jsonb_build_array('t' || (g % 5))), \
         point(g % 100, g / 100), int4range(g, g + g % 50), md5(g::text) \
         FROM generate_series(1, 30000) g",
        "h_ix",
        "t_ix",
    )?;
    let indexes = [
        ("bt", "btree (a)"),
        ("hash", "hash (txt)"),
        ("gin_arr", "gin (arr)"),
        ("gin_doc", "gin (doc)"),
        ("gist_p", "gist (p)"),
        ("gist_r", "gist (r)"),
        ("brin", "brin (id) WITH (pages_per_range = 4)"),
    ];
    for t in ["h_ix", "t_ix"] {
        for (name, def) in indexes {
            cl.batch_execute(&format!("CREATE INDEX {t}_{name} ON {t} USING {def}"))?;
        }
        cl.batch_execute(&format!("ANALYZE {t}"))?;
    }
    cl.batch_execute("SET enable_seqscan = off")?;
    let queries = [
        ("bt", "SELECT id FROM {t} WHERE a = 17 ORDER BY id"),
        (
            "bt",
            "SELECT id, a FROM {t} WHERE a BETWEEN 10 AND 12 ORDER BY id",
        ),
        ("hash", "SELECT id, txt FROM {t} WHERE txt = md5('777')"),
        ("hash", "SELECT id FROM {t} WHERE txt = 'no such value'"),
        (
            "gin_arr",
            "SELECT id FROM {t} WHERE arr @> ARRAY[3, 5] ORDER BY id",
        ),
        (
            "gin_arr",
            "SELECT id FROM {t} WHERE arr && ARRAY[12] ORDER BY id",
        ),
        (
            "gin_doc",
            "SELECT id FROM {t} WHERE doc @> '{\"k\": 42}' ORDER BY id",
        ),
        ("gin_doc", "SELECT count(*) FROM {t} WHERE doc ? 'tags'"),
        (
            "gist_p",
            "SELECT id FROM {t} WHERE p <@ box '((10,10),(20,20))' ORDER BY id",
        ),
        (
            "gist_p",
            "SELECT p <-> point '(50.3,50.7)' FROM {t} ORDER BY p <-> point '(50.3,50.7)' LIMIT 10",
        ),
        (
            "gist_r",
            "SELECT id FROM {t} WHERE r && int4range(1000, 1010) ORDER BY id",
        ),
        ("gist_r", "SELECT id FROM {t} WHERE r @> 5000 ORDER BY id"),
        (
            "brin",
            "SELECT id FROM {t} WHERE id BETWEEN 5000 AND 5100 ORDER BY id",
        ),
    ];
    for (ix, q) in queries {
        let plan = sql::explain(&mut cl, &q.replace("{t}", "t_ix"))?;
        assert!(
            plan.contains(&format!("t_ix_{ix}")),
            "index t_ix_{ix} not used for {q}:\n{plan}"
        );
        let r = same_result(&mut cl, q, "h_ix", "t_ix")?;
        if !q.contains("no such") {
            assert!(!r.is_empty() && r != "0", "{q} found nothing");
        }
    }
    cl.batch_execute("RESET enable_seqscan")?;

    // Unique index rejects a duplicate with 23505.
    cl.batch_execute("CREATE UNIQUE INDEX t_ix_uniq ON t_ix (id)")?;
    let e = sql::expect_sqlstate(&mut cl, "INSERT INTO t_ix (id) VALUES (77)", "23505")?;
    assert!(
        sql::describe(&e).contains("t_ix_uniq"),
        "{}",
        sql::describe(&e)
    );
    sql::expect_sqlstate(
        &mut cl,
        "INSERT INTO t_ix (id) VALUES (40001), (40001)",
        "23505",
    )?;
    cl.batch_execute("INSERT INTO t_ix (id) VALUES (40001)")?;
    // Building a unique index over duplicates fails too.
    cl.batch_execute("INSERT INTO t_ix (id, a) VALUES (40002, -1), (40003, -1)")?;
    sql::expect_sqlstate(&mut cl, "CREATE UNIQUE INDEX t_ix_ua ON t_ix (a)", "23505")?;

    // CREATE INDEX CONCURRENTLY while another session inserts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writer = c.connect(DB)?;
    let stop2 = stop.clone();
    let inserter = std::thread::spawn(move || -> Result<i64> {
        let mut n = 0i64;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) || n < 200 {
            writer.execute(
                "INSERT INTO t_ix (id, txt) VALUES (100000 + $1, 'late')",
                &[&(n as i32)],
            )?;
            n += 1;
            if n >= 20000 {
                break;
            }
        }
        Ok(n)
    });
    std::thread::sleep(Duration::from_millis(200));
    cl.batch_execute("CREATE INDEX CONCURRENTLY t_ix_cic ON t_ix (lower(txt))")?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let late = inserter.join().map_err(|_| err("inserter panicked"))??;
    let valid = sql::result_text(
        &mut cl,
        "SELECT indisvalid, indisready FROM pg_index WHERE indexrelid = 't_ix_cic'::regclass",
    )?;
    assert_eq!(valid, "t|t");
    cl.batch_execute(
        "ANALYZE t_ix; SET enable_seqscan = off; SET enable_indexscan = off; \
         SET enable_indexonlyscan = off",
    )?;
    let q = "SELECT count(*) FROM t_ix WHERE lower(txt) > ''";
    let plan = sql::explain(&mut cl, q)?;
    assert!(plan.contains("t_ix_cic"), "{plan}");
    let via_index: i64 = sql::scalar(&mut cl, q)?;
    cl.batch_execute("RESET ALL")?;
    cl.batch_execute(
        "SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off",
    )?;
    let via_seq: i64 = sql::scalar(&mut cl, q)?;
    assert_eq!(via_index, via_seq, "CIC index misses rows");
    assert_eq!(via_seq, 30000 + late);
    assert_verify_clean(&mut cl, "t_ix")?;
    finish(&c)
}

// ---------------------------------------------------------------------------------------------
// UPDATE / DELETE / ON CONFLICT / row locks / VACUUM: they work, with heap's results
// ---------------------------------------------------------------------------------------------

#[test]
fn update_delete_upsert_locks_and_vacuum_work_like_heap() -> Result<()> {
    let (c, mut cl) = cluster_with_db("updel")?;
    create_pair(
        &mut cl,
        "h_ud",
        "t_ud",
        "id int PRIMARY KEY, v int, note text",
    )?;
    exec_both(
        &mut cl,
        "INSERT INTO {t} SELECT g, g % 100, 'n' || g FROM generate_series(1, 2000) g; \
         CREATE INDEX ON {t} (v)",
        "h_ud",
        "t_ud",
    )?;
    let compare = |cl: &mut Client| -> Result<()> {
        let q = "SELECT x::text FROM {t} x ORDER BY id";
        cl.batch_execute("SET enable_seqscan = on")?;
        same_result(cl, q, "h_ud", "t_ud")?;
        cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
        same_result(
            cl,
            "SELECT x::text FROM {t} x WHERE v = 7 ORDER BY id",
            "h_ud",
            "t_ud",
        )?;
        same_result(
            cl,
            "SELECT x::text FROM {t} x WHERE id BETWEEN 90 AND 120 ORDER BY id",
            "h_ud",
            "t_ud",
        )?;
        cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
        Ok(())
    };
    // Each statement with the number of rows it returns on heap (so that it did something).
    let ops = [
        (
            "UPDATE {t} SET note = note || '+' WHERE id < 50 RETURNING id, note",
            49,
        ),
        (
            "UPDATE {t} SET v = v + 1000 WHERE id % 10 = 0 RETURNING id, v",
            200,
        ),
        (
            "UPDATE {t} SET id = id + 100000 WHERE id % 100 = 1 RETURNING id",
            20,
        ),
        (
            "UPDATE {t} SET note = repeat('long', 2000) WHERE id = 5 RETURNING length(note)",
            1,
        ),
        ("DELETE FROM {t} WHERE id % 7 = 0 RETURNING id", 285),
        ("DELETE FROM {t} WHERE v = 3 RETURNING id, v", 17),
        (
            "UPDATE {t} SET note = NULL WHERE id BETWEEN 100 AND 110 RETURNING id",
            8,
        ),
        (
            "INSERT INTO {t} VALUES (2, 0, 'dup') ON CONFLICT (id) DO UPDATE SET note = 'upserted' \
             RETURNING id, note",
            1,
        ),
        (
            "INSERT INTO {t} VALUES (7, 0, 'was deleted') ON CONFLICT (id) DO NOTHING RETURNING id",
            1,
        ),
        (
            "INSERT INTO {t} VALUES (8, 0, 'exists') ON CONFLICT (id) DO NOTHING RETURNING id",
            0,
        ),
        (
            "SELECT id FROM {t} WHERE id < 20 ORDER BY id FOR UPDATE",
            16,
        ),
        (
            "SELECT id FROM {t} WHERE id < 20 ORDER BY id FOR KEY SHARE",
            16,
        ),
    ];
    for (op, rows) in ops {
        let mut h: Vec<String> = sql::result_text(&mut cl, &op.replace("{t}", "h_ud"))?
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(h.len(), rows, "rows of `{op}` on heap: {h:?}");
        let mut t: Vec<String> = sql::result_text(&mut cl, &op.replace("{t}", "t_ud"))
            .map_err(|e| err(format!("`{op}` on {}: {}", am(), sql::describe(&e))))?
            .lines()
            .map(str::to_string)
            .collect();
        h.sort();
        t.sort();
        assert_eq!(h, t, "RETURNING/rows of {op}");
        compare(&mut cl).map_err(|e| err(format!("after `{op}`: {e}")))?;
    }

    // The row locks hold off other sessions as on heap.
    let mut other = c.connect(DB)?;
    other.batch_execute("SET lock_timeout = '200ms'")?;
    for tbl in ["h_ud", "t_ud"] {
        let on = |stmt: &str| stmt.replace("{t}", tbl);
        // FOR UPDATE: no other lock, update or delete of the row; other rows are free.
        cl.batch_execute(&on("BEGIN; SELECT id FROM {t} WHERE id = 12 FOR UPDATE"))?;
        for stmt in [
            "SELECT id FROM {t} WHERE id = 12 FOR KEY SHARE NOWAIT",
            "UPDATE {t} SET note = 'blocked' WHERE id = 12",
            "DELETE FROM {t} WHERE id = 12",
        ] {
            sql::expect_sqlstate(&mut other, &on(stmt), "55P03")
                .map_err(|e| err(format!("{tbl}, row locked FOR UPDATE: {e}")))?;
        }
        other
            .batch_execute(&on("UPDATE {t} SET note = 'free' WHERE id = 13"))
            .map_err(|e| err(format!("{tbl}: another row: {}", sql::describe(&e))))?;
        cl.batch_execute("COMMIT")?;
        // FOR KEY SHARE: a non-key update goes through, a delete or key update waits.
        cl.batch_execute(&on("BEGIN; SELECT id FROM {t} WHERE id = 12 FOR KEY SHARE"))?;
        other
            .batch_execute(&on("UPDATE {t} SET note = 'not a key' WHERE id = 12"))
            .map_err(|e| err(format!("{tbl}, FOR KEY SHARE: {}", sql::describe(&e))))?;
        for stmt in [
            "SELECT id FROM {t} WHERE id = 12 FOR UPDATE NOWAIT",
            "UPDATE {t} SET id = -12 WHERE id = 12",
            "DELETE FROM {t} WHERE id = 12",
        ] {
            sql::expect_sqlstate(&mut other, &on(stmt), "55P03")
                .map_err(|e| err(format!("{tbl}, row locked FOR KEY SHARE: {e}")))?;
        }
        cl.batch_execute("COMMIT")?;
        // Released at commit.
        other
            .batch_execute(&on("UPDATE {t} SET note = 'after' WHERE id = 12"))
            .map_err(|e| err(format!("{tbl}, after the lock: {}", sql::describe(&e))))?;
    }
    drop(other);
    compare(&mut cl).map_err(|e| err(format!("after the row locks: {e}")))?;

    // A rolled back UPDATE / DELETE is seen by its own transaction and changes nothing.
    let total: i64 = sql::scalar(&mut cl, "SELECT count(*) FROM h_ud")?;
    for (op, check, want) in [
        (
            "UPDATE {t} SET v = -1",
            "SELECT count(*) FROM {t} WHERE v = -1",
            total,
        ),
        ("DELETE FROM {t}", "SELECT count(*) FROM {t}", 0),
    ] {
        for tbl in ["h_ud", "t_ud"] {
            cl.batch_execute(&format!("BEGIN; {}", op.replace("{t}", tbl)))
                .map_err(|e| err(format!("{tbl}: {op}: {}", sql::describe(&e))))?;
            let seen: i64 = sql::scalar(&mut cl, &check.replace("{t}", tbl))?;
            cl.batch_execute("ROLLBACK")?;
            assert_eq!(seen, want, "{tbl}: {check} inside `{op}`'s transaction");
        }
        compare(&mut cl).map_err(|e| err(format!("after `{op}` rolled back: {e}")))?;
    }
    assert_verify_clean(&mut cl, "t_ud")?;

    // VACUUM works, changes no result, and (torii) leaves no undo and no dead row behind.
    for tbl in ["h_ud", "t_ud"] {
        cl.batch_execute(&format!("VACUUM {tbl}"))
            .map_err(|e| err(format!("VACUUM {tbl}: {}", sql::describe(&e))))?;
    }
    compare(&mut cl).map_err(|e| err(format!("after VACUUM: {e}")))?;
    assert_verify_clean(&mut cl, "t_ud")?;
    if is_torii() {
        let st = torii_stats(&mut cl, "t_ud")?;
        assert_eq!(
            (st.live_rows, st.dead_rows, st.undo_records),
            (total, 0, 0),
            "torii.stats after VACUUM: {st:?}"
        );
    }
    // And the table takes more changes after it.
    for op in [
        "UPDATE {t} SET v = v + 1 WHERE id % 3 = 0",
        "DELETE FROM {t} WHERE id % 11 = 0",
        "INSERT INTO {t} SELECT g, g % 100, 'again' FROM generate_series(1, 2000, 7) g \
         ON CONFLICT (id) DO UPDATE SET note = excluded.note",
    ] {
        exec_both(&mut cl, op, "h_ud", "t_ud")
            .map_err(|e| err(format!("after VACUUM, `{op}`: {}", sql::describe(&e))))?;
    }
    compare(&mut cl).map_err(|e| err(format!("after the changes after VACUUM: {e}")))?;
    assert_verify_clean(&mut cl, "t_ud")?;
    finish(&c)
}
