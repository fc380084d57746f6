#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn verify_clean(index: &str, heapallindexed: bool) {
        let problems = Spi::get_one::<String>(&format!(
            "SELECT string_agg(blkno || ': ' || problem, E'\\n') FROM torii.verify_index('{index}', {heapallindexed})"
        ))
        .unwrap();
        assert_eq!(problems, None, "verify_index({index})");
    }

    fn rows(sql: &str) -> Vec<String> {
        Spi::connect(|c| {
            c.select(&format!("SELECT x::text FROM ({sql}) x"), None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
                .collect()
        })
    }

    fn plan(sql: &str) -> String {
        Spi::connect(|c| {
            c.select(&format!("EXPLAIN (COSTS OFF) {sql}"), None, &[])
                .unwrap()
                .map(|r| r.get::<String>(1).unwrap().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> i64 {
            (self.next() % n) as i64
        }
    }

    /// The same random workload on a table with a btree index and on a copy with a
    /// torii_btree index; every query must give the same answer.
    fn differential(am: &str, seed: u64) {
        Spi::run(&format!(
            "CREATE TABLE d_bt (a int, b text, c bigint, d float8) USING {am};
             CREATE TABLE d_tb (a int, b text, c bigint, d float8) USING {am};
             CREATE INDEX d_bt_ab ON d_bt USING btree (a, b);
             CREATE INDEX d_tb_ab ON d_tb USING torii_btree (a, b);
             CREATE INDEX d_bt_c ON d_bt USING btree (c DESC NULLS LAST) INCLUDE (d);
             CREATE INDEX d_tb_c ON d_tb USING torii_btree (c DESC NULLS LAST) INCLUDE (d);"
        ))
        .unwrap();
        let mut rng = Rng(seed);
        let val = |rng: &mut Rng, range: u64| -> String {
            if rng.below(20) == 0 {
                "NULL".into()
            } else {
                rng.below(range).to_string()
            }
        };
        for round in 0..30 {
            // Writes: a batch of inserts with many duplicates, sometimes deletes.
            let mut values = Vec::new();
            for _ in 0..(50 + rng.below(300)) {
                let a = val(&mut rng, 500);
                let b = if rng.below(10) == 0 {
                    "NULL".to_string()
                } else {
                    format!("'k{}'", rng.below(40))
                };
                let c = val(&mut rng, 100_000);
                let d = rng.below(1000);
                values.push(format!("({a}, {b}, {c}, {d})"));
            }
            let ins = values.join(",");
            Spi::run(&format!(
                "INSERT INTO d_bt VALUES {ins}; INSERT INTO d_tb VALUES {ins};"
            ))
            .unwrap();
            // (torii tables take DELETE once the undo log is merged.)
            if am != "torii" && rng.below(3) == 0 {
                let lo = rng.below(500);
                let hi = lo + rng.below(40);
                Spi::run(&format!(
                    "DELETE FROM d_bt WHERE a BETWEEN {lo} AND {hi}; DELETE FROM d_tb WHERE a BETWEEN {lo} AND {hi};"
                ))
                .unwrap();
            }
            for _ in 0..25 {
                let x = rng.below(520) - 10;
                let y = x + rng.below(60);
                let k = rng.below(40);
                let n = 1 + rng.below(30);
                let cx = rng.below(100_000);
                let q = match rng.below(16) {
                    0 => format!("SELECT a, b, c FROM T WHERE a = {x}"),
                    1 => format!("SELECT a, b FROM T WHERE a < {x}"),
                    2 => format!("SELECT a, b FROM T WHERE a > {x}"),
                    3 => format!("SELECT a, b, d FROM T WHERE a BETWEEN {x} AND {y}"),
                    4 => format!("SELECT a, b FROM T WHERE a >= {x} ORDER BY a, b LIMIT {n}"),
                    5 => format!(
                        "SELECT a, b FROM T WHERE a <= {y} ORDER BY a DESC, b DESC LIMIT {n}"
                    ),
                    6 => format!("SELECT a, b FROM T WHERE a IN ({x}, {y}, {k}, 7)"),
                    7 => "SELECT a, b, c FROM T WHERE a IS NULL".to_string(),
                    8 => format!("SELECT a, b FROM T WHERE a = {x} AND b > 'k{k}'"),
                    9 => format!("SELECT a, b FROM T WHERE a = {x} AND b = 'k{k}'"),
                    10 => format!("SELECT a, b FROM T WHERE a = {x} AND b IS NULL"),
                    11 => format!("SELECT c, d FROM T WHERE c > {cx} ORDER BY c DESC LIMIT {n}"),
                    12 => format!("SELECT c, d FROM T WHERE c <= {cx} ORDER BY c LIMIT {n}"),
                    13 => "SELECT c FROM T WHERE c IS NULL".to_string(),
                    14 => format!(
                        "SELECT a FROM T WHERE a IS NOT NULL ORDER BY a DESC NULLS LAST LIMIT {n}"
                    ),
                    _ => format!("SELECT a, b FROM T WHERE b = 'k{k}' AND a < {x}"),
                };
                let ordered = q.contains("ORDER BY");
                for scans in [
                    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off",
                    "SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off",
                ] {
                    if ordered && scans.contains("enable_indexscan = off") {
                        continue;
                    }
                    Spi::run(scans).unwrap();
                    let mut r1 = rows(&q.replace(" T ", " d_bt "));
                    let mut r2 = rows(&q.replace(" T ", " d_tb "));
                    Spi::run("RESET enable_seqscan; RESET enable_bitmapscan; RESET enable_indexscan; RESET enable_indexonlyscan").unwrap();
                    if !ordered {
                        r1.sort();
                        r2.sort();
                    }
                    assert_eq!(r1, r2, "round {round}, {scans}: {q}");
                }
            }
        }
        // The torii_btree index was really used.
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        assert!(plan("SELECT a FROM d_tb WHERE a = 5").contains("d_tb_ab"));
        assert!(plan("SELECT c, d FROM d_tb ORDER BY c DESC LIMIT 3").contains("d_tb_c"));
        verify_clean("d_tb_ab", true);
        verify_clean("d_tb_c", true);
    }

    #[pg_test]
    fn differential_heap() {
        differential("heap", 0x5eed_0001);
    }

    #[pg_test]
    fn differential_torii() {
        differential("torii", 0x5eed_0002);
    }

    #[pg_test]
    fn splits_keep_structure_and_compress() {
        Spi::run(
            "CREATE TABLE s (a int, b text);
             CREATE INDEX s_a ON s USING torii_btree (a);
             CREATE INDEX s_b ON s USING torii_btree (b);
             INSERT INTO s SELECT (i * 7919) % 20000, 'group-' || (i % 50) FROM generate_series(1, 60000) i;",
        )
        .unwrap();
        verify_clean("s_a", true);
        verify_clean("s_b", true);
        // Inserted (not built) with many duplicates: still smaller than btree.
        Spi::run("CREATE INDEX s_b_bt ON s USING btree (b)").unwrap();
        let ours = Spi::get_one::<i64>("SELECT pg_relation_size('s_b')")
            .unwrap()
            .unwrap();
        let theirs = Spi::get_one::<i64>("SELECT pg_relation_size('s_b_bt')")
            .unwrap()
            .unwrap();
        assert!(ours < theirs, "torii_btree {ours} vs btree {theirs}");
        Spi::run("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM s WHERE b = 'group-7'").unwrap(),
            Some(1200)
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM s WHERE a BETWEEN 100 AND 199").unwrap(),
            Some(300)
        );
    }

    #[pg_test]
    fn unique_and_on_conflict() {
        Spi::run(
            "CREATE TABLE u (id int, v text);
             CREATE UNIQUE INDEX u_id ON u USING torii_btree (id);
             INSERT INTO u SELECT i, 'a' FROM generate_series(1, 1000) i;",
        )
        .unwrap();
        // PostgreSQL 15 refuses INSERT ... ON CONFLICT on any table with a non-btree unique
        // index (BuildSpeculativeIndexInfo, catalog/index.c), so that cannot be tested here.
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM u").unwrap(),
            Some(1000)
        );
        // NULLs are distinct; deleted rows do not conflict.
        Spi::run("INSERT INTO u VALUES (NULL, 'n'), (NULL, 'n'); DELETE FROM u WHERE id = 7; INSERT INTO u VALUES (7, 'again')").unwrap();
        verify_clean("u_id", true);
    }

    #[pg_test]
    #[should_panic(expected = "duplicate key value violates unique constraint")]
    fn unique_violation_message() {
        Spi::run(
            "CREATE TABLE u2 (id int); CREATE UNIQUE INDEX u2_id ON u2 USING torii_btree (id);
             INSERT INTO u2 VALUES (1), (2), (1);",
        )
        .unwrap();
    }

    #[pg_test]
    #[should_panic(expected = "duplicate key value violates unique constraint")]
    fn unique_build_rejects_duplicates() {
        Spi::run(
            "CREATE TABLE u3 (id int); INSERT INTO u3 VALUES (1), (2), (2);
             CREATE UNIQUE INDEX u3_id ON u3 USING torii_btree (id);",
        )
        .unwrap();
    }

    #[pg_test]
    fn all_opclasses() {
        let cases = [
            ("int2", "(i % 300)::int2", "150::int2", "= 150"),
            ("int4", "i", "17", "= 17::int8"),
            ("int8", "i::int8 * 1000000000", "3000000000", "= 3000000000"),
            ("float4", "(i / 3.0)::float4", "10", "< 10.0::float8"),
            ("float8", "i / 7.0", "5", "<= 5"),
            ("numeric", "(i / 3.0)::numeric", "2.5", ">= 2.5 AND x < 4"),
            ("text", "'t' || i", "'t5'", "= 't5'"),
            (
                "varchar(20)",
                "('v' || i)::varchar",
                "'v9'",
                "> 'v9' AND x < 'v95'",
            ),
            (
                "bytea",
                "decode(lpad(to_hex(i), 4, '0'), 'hex')",
                "'\\x0010'",
                "= '\\x0010'::bytea",
            ),
            ("bool", "i % 2 = 0", "true", "= true"),
            (
                "date",
                "date '2020-01-01' + i",
                "'2020-02-01'",
                "< date '2020-01-10'",
            ),
            (
                "timestamp",
                "timestamp '2020-01-01' + i * interval '1 hour'",
                "x",
                "> date '2020-02-10'",
            ),
            (
                "timestamptz",
                "timestamptz '2020-01-01 UTC' + i * interval '1 hour'",
                "x",
                "BETWEEN timestamp '2020-01-02' AND timestamp '2020-01-03'",
            ),
            (
                "uuid",
                "md5(i::text)::uuid",
                "x",
                "< 'a0000000-0000-0000-0000-000000000000'",
            ),
            ("oid", "i::oid", "x", "= 12::oid"),
        ];
        for (i, (ty, expr, _, cond)) in cases.iter().enumerate() {
            Spi::run(&format!(
                "CREATE TABLE oc{i} (x {ty}); INSERT INTO oc{i} SELECT {expr} FROM generate_series(1, 2000) i;
                 CREATE INDEX oc{i}_x ON oc{i} USING torii_btree (x);"
            ))
            .unwrap();
            let q = format!("SELECT count(*) FROM oc{i} WHERE x {cond}");
            let seq = Spi::get_one::<i64>(&q).unwrap();
            Spi::run("SET LOCAL enable_seqscan = off").unwrap();
            let p = plan(&q);
            assert!(
                p.contains(&format!("oc{i}_x")),
                "{ty}: {q} not using the index:\n{p}"
            );
            let idx = Spi::get_one::<i64>(&q).unwrap();
            Spi::run("RESET enable_seqscan").unwrap();
            assert_eq!(seq, idx, "{ty}: {q}");
            let ord = rows(&format!("SELECT x FROM oc{i} ORDER BY x LIMIT 50"));
            Spi::run("SET LOCAL enable_seqscan = off").unwrap();
            assert_eq!(
                ord,
                rows(&format!("SELECT x FROM oc{i} ORDER BY x LIMIT 50")),
                "{ty} order"
            );
            Spi::run("RESET enable_seqscan").unwrap();
            verify_clean(&format!("oc{i}_x"), true);
        }
    }

    #[pg_test]
    fn collations_and_desc() {
        Spi::run(
            "CREATE TABLE co (s text COLLATE \"C\", n int);
             INSERT INTO co SELECT chr(65 + i % 26) || chr(97 + i % 26) || i, i FROM generate_series(1, 3000) i;
             INSERT INTO co VALUES (NULL, NULL), (NULL, 5);
             CREATE INDEX co_s ON co USING torii_btree (s DESC NULLS FIRST, n);",
        )
        .unwrap();
        let expect = rows("SELECT s, n FROM co ORDER BY s DESC NULLS FIRST, n LIMIT 40");
        Spi::run("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off").unwrap();
        assert!(
            plan("SELECT s, n FROM co ORDER BY s DESC NULLS FIRST, n LIMIT 40").contains("co_s")
        );
        assert_eq!(
            rows("SELECT s, n FROM co ORDER BY s DESC NULLS FIRST, n LIMIT 40"),
            expect
        );
        let back = rows("SELECT s, n FROM co ORDER BY s ASC NULLS LAST, n DESC LIMIT 40");
        Spi::run("RESET enable_seqscan; RESET enable_sort").unwrap();
        assert_eq!(
            back,
            rows("SELECT s, n FROM co ORDER BY s ASC NULLS LAST, n DESC LIMIT 40")
        );
        verify_clean("co_s", true);
    }

    #[pg_test]
    fn index_only_scan_with_include() {
        Spi::run(
            "CREATE TABLE io (k int, v int, pad text);
             INSERT INTO io SELECT i, i * 2, repeat('p', 50) FROM generate_series(1, 5000) i;
             CREATE INDEX io_k ON io USING torii_btree (k) INCLUDE (v);
             ANALYZE io;",
        )
        .unwrap();
        Spi::run("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off").unwrap();
        let p = plan("SELECT k, v FROM io WHERE k BETWEEN 10 AND 20");
        assert!(p.contains("Index Only Scan using io_k"), "{p}");
        assert_eq!(
            Spi::get_one::<i64>("SELECT sum(v) FROM io WHERE k BETWEEN 10 AND 20").unwrap(),
            Some(330)
        );
    }

    #[pg_test]
    fn cursor_moves_both_ways() {
        Spi::run(
            "CREATE TABLE cu (k int); INSERT INTO cu SELECT i FROM generate_series(1, 3000) i;
             CREATE INDEX cu_k ON cu USING torii_btree (k);
             SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
             DECLARE c SCROLL CURSOR FOR SELECT k FROM cu WHERE k > 100 ORDER BY k;
             MOVE FORWARD 1500 IN c;",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i32>("FETCH BACKWARD 1 FROM c").unwrap(),
            Some(1599)
        );
        Spi::run("MOVE BACKWARD 1000 IN c").unwrap();
        assert_eq!(
            Spi::get_one::<i32>("FETCH FORWARD 1 FROM c").unwrap(),
            Some(600)
        );
        Spi::run("MOVE BACKWARD ALL IN c").unwrap();
        assert_eq!(
            Spi::get_one::<i32>("FETCH FORWARD 1 FROM c").unwrap(),
            Some(101)
        );
    }

    #[pg_test]
    fn planner_treats_it_like_btree() {
        Spi::run(
            "CREATE TABLE pl (id int, v int);
             INSERT INTO pl SELECT i, i % 1000 FROM generate_series(1, 100000) i;
             CREATE INDEX pl_id ON pl USING torii_btree (id);
             ANALYZE pl;",
        )
        .unwrap();
        assert!(plan("SELECT * FROM pl WHERE id = 42").contains("Index Scan using pl_id"));
        assert!(plan("SELECT * FROM pl WHERE id BETWEEN 100 AND 200").contains("pl_id"));
        assert!(plan("SELECT * FROM pl ORDER BY id LIMIT 5").contains("Index Scan using pl_id"));
        assert!(!plan("SELECT * FROM pl WHERE v = 3").contains("pl_id"));
    }

    #[pg_test]
    #[should_panic(expected = "checksum mismatch")]
    fn corruption_is_detected() {
        Spi::run(
            "CREATE TABLE cr (k int); INSERT INTO cr SELECT i FROM generate_series(1, 100) i;
             CREATE INDEX cr_k ON cr USING torii_btree (k);",
        )
        .unwrap();
        // Flip a byte of the root leaf through the buffer manager (no WAL: test only).
        let oid = Spi::get_one::<pg_sys::Oid>("SELECT 'cr_k'::regclass::oid")
            .unwrap()
            .unwrap();
        unsafe {
            let rel = pg_sys::index_open(oid, pg_sys::AccessExclusiveLock as i32);
            let buf = pg_sys::ReadBuffer(rel, 1);
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            let p = pg_sys::BufferGetPage(buf) as *mut u8;
            *p.add(8000) ^= 0x55;
            pg_sys::MarkBufferDirty(buf);
            pg_sys::UnlockReleaseBuffer(buf);
            pg_sys::index_close(rel, pg_sys::NoLock as i32);
        }
        crate::storage::pages::forget_verified();
        Spi::run("SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off").unwrap();
        Spi::get_one::<i64>("SELECT count(*) FROM cr WHERE k = 5").unwrap();
    }

    #[pg_test]
    fn verify_reports_corruption() {
        Spi::run(
            "CREATE TABLE vr (k int); INSERT INTO vr SELECT i FROM generate_series(1, 100) i;
             CREATE INDEX vr_k ON vr USING torii_btree (k);",
        )
        .unwrap();
        let oid = Spi::get_one::<pg_sys::Oid>("SELECT 'vr_k'::regclass::oid")
            .unwrap()
            .unwrap();
        unsafe {
            let rel = pg_sys::index_open(oid, pg_sys::AccessExclusiveLock as i32);
            let buf = pg_sys::ReadBuffer(rel, 1);
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            let p = pg_sys::BufferGetPage(buf) as *mut u8;
            *p.add(8000) ^= 0x55;
            pg_sys::MarkBufferDirty(buf);
            pg_sys::UnlockReleaseBuffer(buf);
            pg_sys::index_close(rel, pg_sys::NoLock as i32);
        }
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM torii.verify_index('vr_k') WHERE blkno = 1 AND problem LIKE '%checksum%'",
        )
        .unwrap();
        assert_eq!(n, Some(1));
    }

    #[pg_test]
    #[should_panic(expected = "unexpected non-btree speculative unique index")]
    fn on_conflict_is_refused_by_postgres_15() {
        Spi::run(
            "CREATE TABLE oc (id int); CREATE UNIQUE INDEX oc_id ON oc USING torii_btree (id);
             INSERT INTO oc VALUES (1) ON CONFLICT DO NOTHING;",
        )
        .unwrap();
    }

    /// VACUUM cannot run in a test's transaction: see harness/tests/btree_concurrency.rs.
    #[pg_test]
    fn reindex_truncate_unlogged() {
        Spi::run(
            "CREATE TABLE va (k int, t text);
             INSERT INTO va SELECT i % 100, 'x' FROM generate_series(1, 20000) i;
             CREATE INDEX va_k ON va USING torii_btree (k);
             DELETE FROM va WHERE k < 90;",
        )
        .unwrap();
        verify_clean("va_k", true);
        Spi::run("REINDEX INDEX va_k; TRUNCATE va; INSERT INTO va VALUES (1, 'a');").unwrap();
        verify_clean("va_k", true);
        Spi::run("CREATE UNLOGGED TABLE ul (k int); CREATE INDEX ul_k ON ul USING torii_btree (k); INSERT INTO ul SELECT generate_series(1, 1000);").unwrap();
        verify_clean("ul_k", true);
    }

    #[pg_test]
    #[should_panic(expected = "exceeds torii_btree maximum")]
    fn oversized_keys_are_refused() {
        Spi::run(
            "CREATE TABLE big (t text); CREATE INDEX big_t ON big USING torii_btree (t);
             INSERT INTO big SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i;",
        )
        .unwrap();
    }
}
