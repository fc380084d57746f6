#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Tables on which the planner's own choices differ from the hinted ones.
    fn setup() {
        Spi::run(
            r#"
            CREATE TABLE t1 (id int PRIMARY KEY, val int, txt text);
            INSERT INTO t1 SELECT i, i % 100, md5(i::text) FROM generate_series(1, 10000) i;
            CREATE INDEX t1_val ON t1(val);
            CREATE TABLE t2 (id int PRIMARY KEY, t1_id int, val int);
            INSERT INTO t2 SELECT i, (i * 7) % 10000 + 1, i % 10 FROM generate_series(1, 10000) i;
            CREATE INDEX t2_t1 ON t2(t1_id);
            CREATE TABLE t3 (id int PRIMARY KEY, t2_id int, val int);
            INSERT INTO t3 SELECT i, i * 10, i % 5 FROM generate_series(1, 1000) i;
            CREATE TABLE t4 (id int PRIMARY KEY, t3_id int);
            INSERT INTO t4 SELECT i, i * 10 FROM generate_series(1, 100) i;
            CREATE TABLE t5 (id int PRIMARY KEY, t4_id int);
            INSERT INTO t5 SELECT i, i * 10 FROM generate_series(1, 10) i;
            CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
            INSERT INTO pgbench_branches SELECT i, 0, '' FROM generate_series(1, 1) i;
            CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
            INSERT INTO pgbench_tellers SELECT i, 1, 0, '' FROM generate_series(1, 10) i;
            CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
            INSERT INTO pgbench_accounts SELECT i, 1, 0, '' FROM generate_series(1, 20000) i;
            ANALYZE t1, t2, t3, t4, t5, pgbench_branches, pgbench_tellers, pgbench_accounts;
            "#,
        )
        .unwrap();
    }

    fn plan(sql: &str) -> String {
        Spi::connect(|c| {
            let mut out = Vec::new();
            for row in c.select(sql, None, &[]).unwrap() {
                out.push(row.get::<String>(1).unwrap().unwrap_or_default());
            }
            out.join("\n")
        })
    }

    /// Assert that the plan of `/*+ hints */ EXPLAIN (COSTS OFF) query`
    /// contains `expect` in this order.
    fn check(hints: &str, query: &str, expect: &[&str]) {
        let sql = format!("/*+ {hints} */ EXPLAIN (COSTS OFF) {query}");
        let p = plan(&sql);
        let mut at = 0;
        for e in expect {
            match p[at..].find(e) {
                Some(i) => at += i + e.len(),
                None => panic!("{sql}\nexpected {e:?} (in order {expect:?}) in plan:\n{p}"),
            }
        }
    }

    fn unhinted(query: &str) -> String {
        plan(&format!("EXPLAIN (COSTS OFF) {query}"))
    }

    fn report(query: &str) -> Vec<(String, String, String)> {
        Spi::connect(|c| {
            c.select(
                "SELECT hint, status, detail FROM torii.explain_hints($1)",
                None,
                &[query.into()],
            )
            .unwrap()
            .map(|r| {
                (
                    r.get::<String>(1).unwrap().unwrap(),
                    r.get::<String>(2).unwrap().unwrap(),
                    r.get::<String>(3).unwrap().unwrap_or_default(),
                )
            })
            .collect()
        })
    }

    fn status_of(rep: &[(String, String, String)], hint: &str) -> String {
        rep.iter()
            .find(|r| r.0 == hint)
            .map(|r| r.1.clone())
            .unwrap_or_else(|| panic!("{hint} not in report {rep:?}"))
    }

    // ------------------------------------------------------------- scans

    #[pg_test]
    fn seqscan_hint() {
        setup();
        let q = "SELECT * FROM t1 WHERE id = 5";
        assert!(unhinted(q).contains("Index Scan using t1_pkey"));
        check("SeqScan(t1)", q, &["Seq Scan on t1"]);
    }

    #[pg_test]
    fn indexscan_hint_and_named_index() {
        setup();
        let q = "SELECT * FROM t1 WHERE val < 50";
        assert!(unhinted(q).contains("Seq Scan on t1"));
        check("IndexScan(t1)", q, &["Index Scan using t1_val on t1"]);
        let q2 = "SELECT * FROM t1 WHERE id < 20 AND val = 3";
        check(
            "IndexScan(t1 t1_val)",
            q2,
            &["Index Scan using t1_val on t1"],
        );
        check(
            "IndexScan(t1 t1_pkey)",
            q2,
            &["Index Scan using t1_pkey on t1"],
        );
    }

    #[pg_test]
    fn indexonlyscan_hint() {
        setup();
        let q = "SELECT id FROM t1 WHERE id > 10";
        assert!(!unhinted(q).contains("Index Only Scan"));
        check(
            "IndexOnlyScan(t1)",
            q,
            &["Index Only Scan using t1_pkey on t1"],
        );
    }

    #[pg_test]
    fn bitmapscan_hint() {
        setup();
        let q = "SELECT * FROM t1 WHERE id = 5";
        check(
            "BitmapScan(t1)",
            q,
            &["Bitmap Heap Scan on t1", "Bitmap Index Scan on t1_pkey"],
        );
    }

    #[pg_test]
    fn tidscan_hints() {
        setup();
        let q = "SELECT * FROM t1 WHERE ctid = '(0,1)' AND id = 1";
        check("TidScan(t1)", q, &["Tid Scan on t1"]);
        check(
            "NoTidScan(t1)",
            "SELECT * FROM t1 WHERE ctid = '(0,1)'",
            &["Seq Scan on t1"],
        );
        // scan hints on one relation conflict: the last one wins (as in pg_hint_plan)
        check(
            "NoBitmapScan(t1) NoTidScan(t1)",
            "SELECT * FROM t1 WHERE ctid = '(0,1)'",
            &["Seq Scan on t1"],
        );
        check(
            "NoTidScan(t1) NoBitmapScan(t1)",
            "SELECT * FROM t1 WHERE ctid = '(0,1)'",
            &["Tid Scan on t1"],
        );
    }

    #[pg_test]
    fn negative_scan_hints() {
        setup();
        check(
            "NoIndexScan(t1)",
            "SELECT * FROM t1 WHERE id = 5",
            &["Bitmap Heap Scan on t1"],
        );
        let p = plan("/*+ NoSeqScan(t1) */ EXPLAIN (COSTS OFF) SELECT * FROM t1 WHERE val < 50");
        assert!(!p.contains("Seq Scan"), "{p}");
        let p = plan("/*+ NoIndexScan(t1) Set(enable_bitmapscan off) */ EXPLAIN (COSTS OFF) SELECT * FROM t1 WHERE id = 5");
        assert!(p.contains("Seq Scan on t1"), "{p}");
    }

    #[pg_test]
    fn hints_use_aliases() {
        setup();
        check(
            "SeqScan(x)",
            "SELECT * FROM t1 x WHERE id = 5",
            &["Seq Scan on t1 x"],
        );
        // the table name does not match an aliased relation
        assert!(
            plan("/*+ SeqScan(t1) */ EXPLAIN (COSTS OFF) SELECT * FROM t1 x WHERE id = 5")
                .contains("Index Scan")
        );
    }

    // ------------------------------------------------------------- joins

    const J2: &str = "SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id";

    #[pg_test]
    fn join_method_hints() {
        setup();
        assert!(unhinted(J2).contains("Hash Join"));
        check("NestLoop(t1 t2)", J2, &["Nested Loop"]);
        check("MergeJoin(t1 t2)", J2, &["Merge Join"]);
        check("HashJoin(t1 t2)", J2, &["Hash Join"]);
        let p = plan(&format!(
            "/*+ NoHashJoin(t1 t2) */ EXPLAIN (COSTS OFF) {J2}"
        ));
        assert!(!p.contains("Hash Join"), "{p}");
        let p = plan(&format!(
            "/*+ NoHashJoin(t1 t2) Set(enable_mergejoin off) */ EXPLAIN (COSTS OFF) {J2}"
        ));
        assert!(p.contains("Nested Loop"), "{p}");
        // join method hints on one set of relations conflict: the last one wins
        check("NestLoop(t1 t2) MergeJoin(t2 t1)", J2, &["Merge Join"]);
    }

    const J4: &str = "SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id JOIN t3 ON t3.t2_id = t2.id JOIN t4 ON t4.t3_id = t3.id";
    const J5: &str = "SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id JOIN t3 ON t3.t2_id = t2.id \
                      JOIN t4 ON t4.t3_id = t3.id JOIN t5 ON t5.t4_id = t4.id";

    #[pg_test]
    fn leading_tree_fixes_order_and_direction() {
        setup();
        let q3 = "SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id JOIN t3 ON t3.t2_id = t2.id";
        check("Leading(((t1 t2) t3))", q3, &["on t1", "on t2", "on t3"]);
        check("Leading(((t2 t1) t3))", q3, &["on t2", "on t1", "on t3"]);
        check("Leading((t3 (t2 t1)))", q3, &["on t3", "on t2", "on t1"]);
        check(
            "Leading(((t4 t3) (t2 t1)))",
            J4,
            &["on t4", "on t3", "on t2", "on t1"],
        );
        check(
            "Leading((((t5 t4) t3) (t1 t2)))",
            J5,
            &["on t5", "on t4", "on t3", "on t1", "on t2"],
        );
    }

    #[pg_test]
    fn leading_list_fixes_order() {
        setup();
        // the first two relations form the innermost join
        let p = plan(&format!(
            "/*+ Leading(t4 t3 t2 t1) */ EXPLAIN (COSTS OFF) {J4}"
        ));
        let lines: Vec<&str> = p.lines().collect();
        // the deepest join (most indented join node) joins t4 and t3
        let pos = |t: &str| {
            lines
                .iter()
                .position(|l| l.contains(&format!("on {t}")))
                .unwrap()
        };
        let depth = |t: &str| lines[pos(t)].len() - lines[pos(t)].trim_start().len();
        assert!(
            depth("t4") > depth("t1") && depth("t3") > depth("t1"),
            "{p}"
        );
        assert!(
            depth("t4") >= depth("t2") && depth("t3") >= depth("t2"),
            "{p}"
        );
    }

    #[pg_test]
    fn leading_with_join_methods() {
        setup();
        check(
            "Leading(((t3 t2) t1)) NestLoop(t2 t3) MergeJoin(t1 t2 t3)",
            "SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id JOIN t3 ON t3.t2_id = t2.id",
            &["Merge Join", "Nested Loop", "on t3", "on t2", "on t1"],
        );
        check(
            "Leading(((((t1 t2) t3) t4) t5)) HashJoin(t1 t2) NestLoop(t1 t2 t3) HashJoin(t1 t2 t3 t4) NestLoop(t1 t2 t3 t4 t5)",
            J5,
            &["Nested Loop", "Hash Join", "Nested Loop", "Hash Join", "on t1", "on t2", "on t3", "on t4", "on t5"],
        );
    }

    #[pg_test]
    fn rows_hint_changes_upper_join() {
        setup();
        let q = "SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id JOIN t3 ON t3.t2_id = t2.id";
        let rep = report(&format!("/*+ Rows(t1 t2 #1) */ {q}"));
        assert_eq!(status_of(&rep, "Rows(t1 t2 #1)"), "used", "{rep:?}");
        check(
            "Leading(((t1 t2) t3)) Rows(t1 t2 #1)",
            q,
            &["Nested Loop", "Hash Join", "on t1", "on t2"],
        );
        check(
            "Leading(((t1 t2) t3)) Rows(t1 t2 *1000)",
            q,
            &["Hash Join", "on t3"],
        );
    }

    #[pg_test]
    fn parallel_hint() {
        setup();
        let q = "SELECT * FROM t1 WHERE val = 3";
        assert!(!unhinted(q).contains("Gather"));
        check(
            "Parallel(t1 2 hard)",
            q,
            &["Gather", "Workers Planned: 2", "Parallel"],
        );
        let p = plan(&format!("/*+ Parallel(t1 0) Set(parallel_setup_cost 0) Set(parallel_tuple_cost 0) Set(min_parallel_table_scan_size 0) */ EXPLAIN (COSTS OFF) {q}"));
        assert!(!p.contains("Parallel"), "{p}");
    }

    #[pg_test]
    fn set_hint() {
        setup();
        let q = "SELECT * FROM t1 WHERE val < 50";
        check("Set(enable_seqscan off)", q, &["t1_val"]);
        // only for that statement
        assert!(unhinted(q).contains("Seq Scan on t1"));
        let rep = report(&format!(
            "/*+ Set(enable_seqscan off) Set(no_such_guc 1) */ {q}"
        ));
        assert_eq!(status_of(&rep, "Set(enable_seqscan off)"), "used");
        assert_eq!(status_of(&rep, "Set(no_such_guc 1)"), "error");
    }

    #[pg_test]
    fn leading_with_outer_joins() {
        setup();
        let q = "SELECT * FROM t1 LEFT JOIN (t2 JOIN t3 ON t3.t2_id = t2.id) ON t1.id = t2.t1_id";
        // a legal order is followed
        check("Leading(((t2 t3) t1))", q, &["Join", "on t"]);
        let rep = report(&format!("/*+ Leading(((t2 t3) t1)) */ {q}"));
        assert_eq!(status_of(&rep, "Leading(((t2 t3) t1))"), "used", "{rep:?}");
        // an impossible one is reported and the query still plans
        let rep = report(&format!("/*+ Leading(((t1 t3) t2)) */ {q}"));
        assert_eq!(
            status_of(&rep, "Leading(((t1 t3) t2))"),
            "not used",
            "{rep:?}"
        );
        let p = plan(&format!(
            "/*+ Leading(((t1 t3) t2)) HashJoin(t2 t3) */ EXPLAIN (COSTS OFF) {q}"
        ));
        assert!(p.contains("Hash"), "{p}");
    }

    #[pg_test]
    fn hints_in_plpgsql() {
        setup();
        Spi::run(
            "CREATE FUNCTION hinted_plan() RETURNS text LANGUAGE plpgsql AS $f$
             DECLARE r text;
             BEGIN
               FOR r IN EXECUTE '/*+ SeqScan(t1) */ EXPLAIN (COSTS OFF) SELECT * FROM t1 WHERE id = 5' LOOP
                 RETURN r;
               END LOOP;
             END $f$",
        )
        .unwrap();
        let p = Spi::get_one::<String>("SELECT hinted_plan()")
            .unwrap()
            .unwrap();
        assert!(p.contains("Seq Scan on t1"), "{p}");
    }

    // ------------------------------------------------------------- reporting

    #[pg_test]
    fn absent_table_and_index_not_used() {
        setup();
        let rep = report(
            "/*+ SeqScan(nosuch) IndexScan(t1 nosuch_idx) NestLoop(t1 nosuch) HashJoin(t1 t2) */ \
             SELECT * FROM t1 JOIN t2 ON t1.id = t2.t1_id WHERE t1.id < 10",
        );
        assert_eq!(status_of(&rep, "SeqScan(nosuch)"), "not used", "{rep:?}");
        assert_eq!(
            status_of(&rep, "IndexScan(t1 nosuch_idx)"),
            "not used",
            "{rep:?}"
        );
        assert_eq!(
            status_of(&rep, "NestLoop(t1 nosuch)"),
            "not used",
            "{rep:?}"
        );
        assert_eq!(status_of(&rep, "HashJoin(t1 t2)"), "used", "{rep:?}");
    }

    #[pg_test]
    fn duplicated_hints_reported_last_wins() {
        setup();
        let q = "SELECT * FROM t1 WHERE id = 5";
        let rep = report(&format!("/*+ IndexScan(t1) SeqScan(t1) */ {q}"));
        assert_eq!(status_of(&rep, "IndexScan(t1)"), "duplicated");
        assert_eq!(status_of(&rep, "SeqScan(t1)"), "used");
        check("IndexScan(t1) SeqScan(t1)", q, &["Seq Scan on t1"]);
    }

    #[pg_test]
    fn malformed_hints_warn_and_query_runs() {
        setup();
        let q = "/*+ SeqScan(t1) Bogus(x) IndexScan(t1) */ SELECT count(*) FROM t1 WHERE id = 5";
        // runs, with the hints before the error applied
        assert_eq!(Spi::get_one::<i64>(q).unwrap(), Some(1));
        check(
            "SeqScan(t1) Bogus(x) IndexScan(t1)",
            "SELECT * FROM t1 WHERE id = 5",
            &["Seq Scan on t1"],
        );
        let rep = report(q);
        let err = rep.iter().find(|r| r.1 == "error").expect("error row");
        assert!(
            err.2.contains("Bogus") && err.2.contains("position 17"),
            "{rep:?}"
        );
        assert_eq!(status_of(&rep, "SeqScan(t1)"), "used");
        // a semantic error only drops that hint
        let rep = report(
            "/*+ SeqScan(t1 t2) NestLoop(t1) IndexScan(t1) */ SELECT * FROM t1 WHERE val < 50",
        );
        assert_eq!(status_of(&rep, "IndexScan(t1)"), "used", "{rep:?}");
        assert_eq!(rep.iter().filter(|r| r.1 == "error").count(), 2, "{rep:?}");
    }

    #[pg_test]
    fn hints_disabled_by_guc() {
        setup();
        Spi::run("SET LOCAL torii.enable_hints = off").unwrap();
        let p = plan("/*+ SeqScan(t1) */ EXPLAIN (COSTS OFF) SELECT * FROM t1 WHERE id = 5");
        assert!(p.contains("Index Scan"), "{p}");
        Spi::run("SET LOCAL torii.enable_hints = on").unwrap();
        Spi::run("SET LOCAL torii.hints_debug = on").unwrap();
        check(
            "SeqScan(t1)",
            "SELECT * FROM t1 WHERE id = 5",
            &["Seq Scan on t1"],
        );
    }

    #[pg_test]
    fn hints_in_subqueries_and_ctes() {
        setup();
        check(
            "SeqScan(t1)",
            "SELECT * FROM t2 WHERE t1_id IN (SELECT id FROM t1 WHERE id = 5)",
            &["Seq Scan on t1"],
        );
        check(
            "SeqScan(x)",
            "WITH c AS MATERIALIZED (SELECT * FROM t1 x WHERE id = 3) SELECT * FROM c",
            &["Seq Scan on t1 x"],
        );
    }

    // ------------------------------------------------------------- stored hints

    #[pg_test]
    fn stored_hints_by_query_text_and_id() {
        setup();
        let q = "SELECT * FROM t1 WHERE id = 5";
        assert!(unhinted(q).contains("Index Scan"));
        let id =
            Spi::get_one_with_args::<i64>("SELECT torii.hint_set($1, 'SeqScan(t1)')", &[q.into()])
                .unwrap()
                .unwrap();
        assert_eq!(
            Spi::get_one_with_args::<i64>("SELECT torii.query_id($1)", &[q.into()]).unwrap(),
            Some(id)
        );
        assert!(unhinted(q).contains("Seq Scan on t1"), "{}", unhinted(q));
        // constants do not change the query id
        assert!(unhinted("SELECT * FROM t1 WHERE id = 77").contains("Seq Scan on t1"));
        // stored hints win over the comment
        check("IndexScan(t1)", q, &["Seq Scan on t1"]);
        assert_eq!(
            Spi::get_one::<String>("SELECT hints FROM torii.hints")
                .unwrap()
                .as_deref(),
            Some("SeqScan(t1)")
        );
        // by id, replacing
        Spi::run_with_args(
            "SELECT torii.hint_set($1::bigint, 'BitmapScan(t1)')",
            &[id.into()],
        )
        .unwrap();
        assert!(unhinted(q).contains("Bitmap Heap Scan on t1"));
        assert_eq!(
            Spi::get_one_with_args::<bool>("SELECT torii.hint_clear($1)", &[q.into()]).unwrap(),
            Some(true)
        );
        assert!(unhinted(q).contains("Index Scan"));
        assert_eq!(
            Spi::get_one_with_args::<bool>("SELECT torii.hint_clear($1::bigint)", &[id.into()])
                .unwrap(),
            Some(false)
        );
    }

    #[pg_test(error = "invalid hints: unrecognized hint keyword \"Bogus\" at position 1")]
    fn stored_hints_are_validated() {
        Spi::run("SELECT torii.hint_set(1::bigint, 'Bogus(t1)')").unwrap();
    }

    #[pg_test]
    fn hint_store_is_dumped() {
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'torii' AND c = 'torii.hint_store'::regclass",
        )
        .unwrap();
        assert_eq!(n, Some(1));
    }

    // ------------------------------------------------------------- compatibility

    /// Hinted queries in pg_hint_plan syntax with the plan shape pg_hint_plan
    /// documents for them (node names in plan order).
    #[pg_test]
    fn pg_hint_plan_compatibility() {
        setup();
        let acc = "SELECT * FROM pgbench_branches b JOIN pgbench_accounts a ON b.bid = a.bid ORDER BY a.aid";
        let cases: &[(&str, &str, &[&str])] = &[
            ("HashJoin(a b) SeqScan(a)", acc, &["Hash Join", "Seq Scan on pgbench_accounts a"]),
            ("NestLoop(a b)", acc, &["Nested Loop"]),
            ("MergeJoin(a b)", acc, &["Merge Join"]),
            ("NoHashJoin(a b) Set(enable_mergejoin off)", acc, &["Nested Loop"]),
            ("IndexScan(a)", acc, &["Index Scan using pgbench_accounts_pkey on pgbench_accounts a"]),
            ("IndexScan(a pgbench_accounts_pkey)", acc, &["Index Scan using pgbench_accounts_pkey on pgbench_accounts a"]),
            ("SeqScan(a) SeqScan(b) HashJoin(a b)", acc, &["Hash Join", "Seq Scan on pgbench_accounts a", "Seq Scan on pgbench_branches b"]),
            ("Leading((b a)) NestLoop(a b)", acc, &["Nested Loop", "on pgbench_branches b", "on pgbench_accounts a"]),
            ("Leading((a b)) HashJoin(a b)", acc, &["Hash Join", "on pgbench_accounts a", "Hash", "on pgbench_branches b"]),
            ("Leading((b a)) HashJoin(a b)", acc, &["Hash Join", "on pgbench_branches b", "Hash", "on pgbench_accounts a"]),
            ("SeqScan(a) NestLoop(a b) Leading((a b))", acc, &["Nested Loop", "Seq Scan on pgbench_accounts a", "on pgbench_branches b"]),
            ("Set(enable_hashjoin off) Set(enable_mergejoin off)", acc, &["Nested Loop"]),
            ("SeqScan(a)", "SELECT * FROM pgbench_accounts a WHERE aid = 1", &["Seq Scan on pgbench_accounts a"]),
            ("BitmapScan(a)", "SELECT * FROM pgbench_accounts a WHERE aid = 1", &["Bitmap Heap Scan on pgbench_accounts a", "Bitmap Index Scan on pgbench_accounts_pkey"]),
            ("IndexOnlyScan(a)", "SELECT aid FROM pgbench_accounts a WHERE aid > 10", &["Index Only Scan using pgbench_accounts_pkey on pgbench_accounts a"]),
            ("NoIndexScan(a)", "SELECT * FROM pgbench_accounts a WHERE aid = 1", &["Bitmap Heap Scan on pgbench_accounts a"]),
            ("NoIndexScan(a) Set(enable_bitmapscan off)", "SELECT * FROM pgbench_accounts a WHERE aid = 1", &["Seq Scan on pgbench_accounts a"]),
            ("TidScan(a)", "SELECT * FROM pgbench_accounts a WHERE ctid = '(1,1)' AND aid = 1", &["Tid Scan on pgbench_accounts a"]),
            ("NoSeqScan(a)", "SELECT * FROM pgbench_accounts a WHERE abalance = 0", &["on pgbench_accounts a"]),
            ("Parallel(a 2 hard)", "SELECT * FROM pgbench_accounts a WHERE abalance = 3", &["Gather", "Workers Planned: 2", "Parallel Seq Scan on pgbench_accounts a"]),
            ("Parallel(a 3 hard)", "SELECT count(*) FROM pgbench_accounts a", &["Gather", "Workers Planned: 3", "Parallel Seq Scan on pgbench_accounts a"]),
            ("Leading(t b a) HashJoin(t b) HashJoin(t b a)", "SELECT * FROM pgbench_tellers t JOIN pgbench_branches b ON t.bid = b.bid JOIN pgbench_accounts a ON a.bid = b.bid", &["Hash Join", "Hash Join"]),
            ("Leading(((t b) a)) NestLoop(t b) NestLoop(t b a)", "SELECT * FROM pgbench_tellers t JOIN pgbench_branches b ON t.bid = b.bid JOIN pgbench_accounts a ON a.bid = b.bid WHERE a.aid < 5", &["Nested Loop", "Nested Loop", "on pgbench_tellers t", "on pgbench_branches b", "on pgbench_accounts a"]),
            ("Leading(((a b) t)) MergeJoin(a b t)", "SELECT * FROM pgbench_tellers t JOIN pgbench_branches b ON t.bid = b.bid JOIN pgbench_accounts a ON a.bid = b.bid", &["Merge Join", "on pgbench_accounts a", "on pgbench_branches b", "on pgbench_tellers t"]),
            ("Rows(a b #10) Leading(((a b) t))", "SELECT * FROM pgbench_tellers t JOIN pgbench_branches b ON t.bid = b.bid JOIN pgbench_accounts a ON a.bid = b.bid", &["on pgbench_accounts a", "on pgbench_branches b", "on pgbench_tellers t"]),
            ("NestLoop(t1 t2) IndexScan(t2 t2_t1)", J2, &["Nested Loop", "Seq Scan on t1", "Index Scan using t2_t1 on t2"]),
            ("NestLoop(t1 t2) SeqScan(t1) IndexScan(t2) Leading((t1 t2))", J2, &["Nested Loop", "Seq Scan on t1", "Index Scan using t2_t1 on t2"]),
            ("MergeJoin(t1 t2) IndexScan(t1) IndexScan(t2)", J2, &["Merge Join", "Index Scan using t1_pkey on t1", "Index Scan using t2_t1 on t2"]),
            ("HashJoin(t1 t2) Leading((t1 t2))", J2, &["Hash Join", "Seq Scan on t1", "Hash", "Seq Scan on t2"]),
            ("HashJoin(t1 t2) Leading((t2 t1))", J2, &["Hash Join", "Seq Scan on t2", "Hash", "Seq Scan on t1"]),
            ("NoHashJoin(t1 t2) Set(enable_nestloop off)", J2, &["Merge Join"]),
            ("Leading(t5 t4 t3 t2 t1)", J5, &["on t"]),
            ("Leading((((t5 t4) t3) (t2 t1))) HashJoin(t5 t4) HashJoin(t5 t4 t3)", J5, &["on t5", "on t4", "on t3", "on t2", "on t1"]),
            ("Set(random_page_cost 100) Set(enable_seqscan off)", "SELECT * FROM t1 WHERE val = 3", &["t1_val"]),
            ("SeqScan(t1) SeqScan(t2) NestLoop(t1 t2)", "SELECT * FROM t1, t2 WHERE t1.id = t2.t1_id AND t1.id < 3", &["Nested Loop", "Seq Scan on t", "Seq Scan on t"]),
        ];
        assert!(cases.len() >= 30);
        for (hints, query, expect) in cases {
            check(hints, query, expect);
        }
    }

    // ------------------------------------------------------------- errors

    /// An ERROR raised inside the planner (here: constant folding of the
    /// inlined SQL function log(numeric)) goes through torii's planner hook
    /// untouched, CONTEXT lines included, and leaves no hint state behind.
    #[pg_test]
    fn planning_error_keeps_context() {
        setup();
        Spi::run(
            r#"
            CREATE FUNCTION planning_error_context(q text) RETURNS text LANGUAGE plpgsql AS $$
            DECLARE ctx text;
            BEGIN
                EXECUTE q;
                RETURN 'no error';
            EXCEPTION WHEN invalid_argument_for_logarithm THEN
                GET STACKED DIAGNOSTICS ctx = PG_EXCEPTION_CONTEXT;
                RETURN ctx;
            END $$;
            "#,
        )
        .unwrap();
        let work_mem = || Spi::get_one::<String>("SELECT current_setting('work_mem')").unwrap();
        let before = work_mem();
        for q in [
            "SELECT log(-12.34)",
            "/*+ Set(work_mem '64MB') SeqScan(t1) */ SELECT log(-12.34) FROM t1 WHERE id = 5",
        ] {
            let ctx =
                Spi::get_one_with_args::<String>("SELECT planning_error_context($1)", &[q.into()])
                    .unwrap()
                    .unwrap_or_default();
            assert!(
                ctx.starts_with("SQL function \"log\" statement 1"),
                "{q}: context {ctx:?}"
            );
        }
        assert_ne!(before.as_deref(), Some("64MB"));
        assert_eq!(work_mem(), before);
        // Hints still apply (and are reported) after the failed planning.
        check(
            "SeqScan(t1)",
            "SELECT * FROM t1 WHERE id = 5",
            &["Seq Scan on t1"],
        );
        let rep = report("/*+ SeqScan(t1) */ SELECT * FROM t1 WHERE id = 5");
        assert_eq!(status_of(&rep, "SeqScan(t1)"), "used");
    }
}
