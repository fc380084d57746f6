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

    /// One node of an `EXPLAIN (COSTS OFF)` text plan.
    #[derive(Debug)]
    struct Node {
        /// The node type: "Seq Scan", "Index Scan", "Hash Join", "Nested Loop", "Hash" ...
        kind: String,
        /// The index of an index scan (after "using", or after "on" for a Bitmap Index Scan).
        index: Option<String>,
        /// The scanned relation.
        relation: Option<String>,
        /// The name the query gives the scanned relation: its alias, else the relation's name.
        alias: Option<String>,
        /// The node this one is a child of (index in the plan's node list).
        parent: Option<usize>,
    }

    /// The plan nodes of an `EXPLAIN (COSTS OFF)` text plan, in plan order (a parent before its
    /// children, the outer child before the inner one). The first line is the top node; every
    /// other node is a line `->  <node>` whose arrow is indented further than its parent's
    /// node; the remaining lines (`Hash Cond: ...`, `Workers Planned: 2` ...) are details.
    fn parse_plan(plan: &str) -> Vec<Node> {
        let mut nodes: Vec<Node> = Vec::new();
        // (indentation of the node's arrow, or 0 for the top node; index in `nodes`)
        let mut open: Vec<(usize, usize)> = Vec::new();
        for (n, line) in plan.lines().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let text = if n == 0 {
                trimmed
            } else if let Some(t) = trimmed.strip_prefix("->") {
                t.trim_start()
            } else {
                continue;
            };
            while open.last().is_some_and(|&(i, _)| i >= indent) {
                open.pop();
            }
            let (kind, index, target) = if let Some((kind, rest)) = text.split_once(" using ") {
                match rest.split_once(" on ") {
                    Some((index, target)) => (kind, Some(index), Some(target)),
                    None => (kind, Some(rest), None),
                }
            } else if let Some((kind, target)) = text.split_once(" on ") {
                if kind == "Bitmap Index Scan" {
                    (kind, Some(target), None)
                } else {
                    (kind, None, Some(target))
                }
            } else {
                (text, None, None)
            };
            let mut words = target.unwrap_or_default().split_whitespace();
            let relation = words.next().map(str::to_string);
            let alias = words
                .next()
                .map(str::to_string)
                .or_else(|| relation.clone());
            nodes.push(Node {
                kind: kind.trim().to_string(),
                index: index.map(|i| i.trim().to_string()),
                relation,
                alias,
                parent: open.last().map(|&(_, p)| p),
            });
            open.push((indent, nodes.len() - 1));
        }
        nodes
    }

    /// The plan of `/*+ hints */ EXPLAIN (COSTS OFF) query` (`hints` may be empty), as text
    /// and parsed.
    fn plan_nodes(hints: &str, query: &str) -> (String, Vec<Node>) {
        let p = if hints.is_empty() {
            unhinted(query)
        } else {
            plan(&format!("/*+ {hints} */ EXPLAIN (COSTS OFF) {query}"))
        };
        let nodes = parse_plan(&p);
        assert!(!nodes.is_empty(), "no plan nodes in:\n{p}");
        (p, nodes)
    }

    /// The one node of the plan that scans the relation the query calls `alias`.
    fn scan_of<'a>(nodes: &'a [Node], alias: &str, p: &str) -> &'a Node {
        let scans: Vec<&Node> = nodes
            .iter()
            .filter(|n| n.alias.as_deref() == Some(alias))
            .collect();
        assert_eq!(scans.len(), 1, "one scan of {alias} expected in plan:\n{p}");
        scans[0]
    }

    /// Assert that the plan scans the relation the query calls `alias` (relation `relation`)
    /// with a node of type `kind` (exactly: "Index Scan" is not "Index Only Scan" nor
    /// "Parallel Index Scan") and, for index scans, with index `index`.
    fn assert_scan(
        nodes: &[Node],
        p: &str,
        alias: &str,
        relation: &str,
        kind: &str,
        index: Option<&str>,
    ) {
        let n = scan_of(nodes, alias, p);
        assert_eq!(
            (n.kind.as_str(), n.relation.as_deref(), n.index.as_deref()),
            (kind, Some(relation), index),
            "scan of {alias} in plan:\n{p}"
        );
    }

    /// Whether a plan node joins (Nested Loop, Hash Join, Merge Left Join ...).
    fn is_join(kind: &str) -> bool {
        kind.starts_with("Nested Loop") || kind.ends_with(" Join")
    }

    /// The aliases of the relations scanned at or below node `i`.
    fn aliases_below(nodes: &[Node], i: usize) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (j, n) in nodes.iter().enumerate() {
            let mut k = Some(j);
            while let Some(x) = k {
                if x == i {
                    if let Some(a) = &n.alias {
                        out.insert(a.clone());
                    }
                    break;
                }
                k = nodes[x].parent;
            }
        }
        out
    }

    /// The sets of relations (aliases) that the plan's join nodes join, smallest first.
    fn join_sets(nodes: &[Node]) -> Vec<Vec<String>> {
        let mut sets: Vec<Vec<String>> = (0..nodes.len())
            .filter(|&i| is_join(&nodes[i].kind))
            .map(|i| aliases_below(nodes, i).into_iter().collect())
            .collect();
        sets.sort_by_key(|s| s.len());
        sets
    }

    /// The join sets of a left-deep join in the order `order`: {o1 o2}, {o1 o2 o3} ...
    fn left_deep(order: &[&str]) -> Vec<Vec<String>> {
        (2..=order.len())
            .map(|n| {
                let mut s: Vec<String> = order[..n].iter().map(|a| a.to_string()).collect();
                s.sort();
                s
            })
            .collect()
    }

    /// Assert that the plan joins the relations in the order `order` (o1 with o2 first, then
    /// the result with o3, ...; inner and outer sides free), and nothing else.
    fn assert_join_order(nodes: &[Node], p: &str, order: &[&str]) {
        assert_eq!(
            join_sets(nodes),
            left_deep(order),
            "join order {order:?} expected in plan:\n{p}"
        );
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
        // the first two relations form the innermost join, then one relation at a time joins
        let (p, nodes) = plan_nodes("Leading(t4 t3 t2 t1)", J4);
        assert_join_order(&nodes, &p, &["t4", "t3", "t2", "t1"]);
        // an order the planner does not choose by itself
        let (p, nodes) = plan_nodes("", J4);
        assert_ne!(join_sets(&nodes)[0], ["t1", "t2"], "unhinted plan:\n{p}");
        let (p, nodes) = plan_nodes("Leading(t1 t2 t3 t4)", J4);
        assert_join_order(&nodes, &p, &["t1", "t2", "t3", "t4"]);
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
        // a legal order is followed: t2 and t3 are joined first, then t1
        let (p, nodes) = plan_nodes("Leading(((t2 t3) t1))", q);
        assert_join_order(&nodes, &p, &["t2", "t3", "t1"]);
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
            ("Leading((((t5 t4) t3) (t2 t1))) HashJoin(t5 t4) HashJoin(t5 t4 t3)", J5, &["on t5", "on t4", "on t3", "on t2", "on t1"]),
            ("Set(random_page_cost 100) Set(enable_seqscan off)", "SELECT * FROM t1 WHERE val = 3", &["t1_val"]),
        ];
        assert!(cases.len() >= 30);
        for (hints, query, expect) in cases {
            check(hints, query, expect);
        }

        // Cases checked on the parsed plan: the node that scans a relation, the joins' order.
        // NoSeqScan(a): where there is another path (the planner's own choice is a Seq Scan),
        // the hinted scan of `a` is not a Seq Scan. (Without a usable index condition, as in
        // `WHERE abalance = 0`, the Seq Scan is the only path and stays.)
        let q = "SELECT * FROM pgbench_accounts a WHERE aid > 100";
        let (p, nodes) = plan_nodes("", q);
        assert_scan(&nodes, &p, "a", "pgbench_accounts", "Seq Scan", None);
        let (p, nodes) = plan_nodes("NoSeqScan(a)", q);
        assert_scan(
            &nodes,
            &p,
            "a",
            "pgbench_accounts",
            "Index Scan",
            Some("pgbench_accounts_pkey"),
        );
        // Leading with a list: the first two relations are joined first, then one at a time.
        let (p, nodes) = plan_nodes("Leading(t5 t4 t3 t2 t1)", J5);
        assert_join_order(&nodes, &p, &["t5", "t4", "t3", "t2", "t1"]);
        // ... also in orders the planner does not choose by itself
        let (p, nodes) = plan_nodes("", J5);
        assert_ne!(join_sets(&nodes)[0], ["t1", "t2"], "unhinted plan:\n{p}");
        assert_ne!(join_sets(&nodes)[0], ["t2", "t3"], "unhinted plan:\n{p}");
        for order in [
            ["t1", "t2", "t3", "t4", "t5"],
            ["t3", "t2", "t4", "t1", "t5"],
        ] {
            let (p, nodes) = plan_nodes(&format!("Leading({})", order.join(" ")), J5);
            assert_join_order(&nodes, &p, &order);
        }
        // both scans are the hinted Seq Scans, under the hinted Nested Loop
        let (p, nodes) = plan_nodes(
            "SeqScan(t1) SeqScan(t2) NestLoop(t1 t2)",
            "SELECT * FROM t1, t2 WHERE t1.id = t2.t1_id AND t1.id < 3",
        );
        assert_eq!(nodes[0].kind, "Nested Loop", "{p}");
        assert_join_order(&nodes, &p, &["t1", "t2"]);
        assert_scan(&nodes, &p, "t1", "t1", "Seq Scan", None);
        assert_scan(&nodes, &p, "t2", "t2", "Seq Scan", None);
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
