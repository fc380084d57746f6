//! `#[pg_test]`s: run inside a server by `cargo pgrx test`.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn insert_and_scan_round_trip() {
        Spi::run("CREATE TABLE t (id int, v text) USING torii").unwrap();
        Spi::run("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g").unwrap();
        let n = Spi::get_one::<i64>("SELECT count(*) FROM t").unwrap();
        assert_eq!(n, Some(1000));
        let s = Spi::get_one::<i64>("SELECT sum(id) FROM t WHERE v LIKE 'v1%'").unwrap();
        let h = Spi::get_one::<i64>(
            "SELECT sum(g) FROM generate_series(1, 1000) g WHERE ('v' || g) LIKE 'v1%'",
        )
        .unwrap();
        assert_eq!(s, h);
    }

    #[pg_test]
    fn verify_is_clean_on_a_fresh_table() {
        Spi::run("CREATE TABLE v (id int) USING torii").unwrap();
        Spi::run("INSERT INTO v SELECT generate_series(1, 5000)").unwrap();
        let problems = Spi::get_one::<i64>("SELECT count(*) FROM torii.verify('v')").unwrap();
        assert_eq!(problems, Some(0));
    }

    #[pg_test(error = "\"h\" is not a torii table")]
    fn verify_rejects_heap_tables() {
        Spi::run("CREATE TABLE h (id int) USING heap").unwrap();
        Spi::run("SELECT * FROM torii.verify('h')").unwrap();
    }

    #[pg_test]
    fn update_in_place_and_cold_and_delete() {
        Spi::run("CREATE TABLE u (id int PRIMARY KEY, n int, t text) USING torii").unwrap();
        Spi::run("INSERT INTO u SELECT g, 0, 'x' FROM generate_series(1, 500) g").unwrap();
        let ctid = |q: &str| Spi::get_one::<String>(q).unwrap().unwrap();
        let before = ctid("SELECT ctid::text FROM u WHERE id = 10");
        Spi::run("UPDATE u SET n = n + 1").unwrap();
        assert_eq!(
            ctid("SELECT ctid::text FROM u WHERE id = 10"),
            before,
            "in place"
        );
        Spi::run("UPDATE u SET id = id + 1000 WHERE id = 10").unwrap();
        assert_ne!(
            ctid("SELECT ctid::text FROM u WHERE id = 1010"),
            before,
            "cold update moves"
        );
        Spi::run("DELETE FROM u WHERE id <= 5").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT sum(n) FROM u").unwrap(),
            Some(495),
            "495 rows with n = 1"
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM u WHERE id = 10").unwrap(),
            Some(0)
        );
    }

    #[pg_test]
    fn rolled_back_updates_are_undone_on_touch() {
        Spi::run("CREATE TABLE rb (id int, n int) USING torii").unwrap();
        Spi::run("INSERT INTO rb SELECT g, g FROM generate_series(1, 100) g").unwrap();
        Spi::run(
            "DO $$ BEGIN BEGIN UPDATE rb SET n = -1; DELETE FROM rb WHERE id > 50; \
             RAISE EXCEPTION 'x'; EXCEPTION WHEN OTHERS THEN NULL; END; END $$",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT sum(n) FROM rb").unwrap(),
            Some(5050)
        );
        Spi::run("UPDATE rb SET n = n + 1").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT sum(n) FROM rb").unwrap(),
            Some(5150)
        );
    }

    #[pg_test]
    fn rows_of_a_rolled_back_subtransaction_are_invisible() {
        Spi::run("CREATE TABLE r (id int) USING torii").unwrap();
        Spi::run("INSERT INTO r VALUES (1)").unwrap();
        Spi::run(
            "DO $$ BEGIN BEGIN INSERT INTO r VALUES (2); RAISE EXCEPTION 'x'; \
             EXCEPTION WHEN OTHERS THEN NULL; END; END $$",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM r").unwrap(),
            Some(1)
        );
    }

    #[pg_test]
    fn transition_table_sees_old_values_after_in_place_update() {
        Spi::run("CREATE TABLE tt (id int PRIMARY KEY, v text) USING torii").unwrap();
        Spi::run("CREATE TABLE tt_log (old_v text, new_v text)").unwrap();
        Spi::run(
            "CREATE FUNCTION tt_f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             INSERT INTO tt_log SELECT o.v, n.v FROM old_t o JOIN new_t n USING (id); \
             RETURN NULL; END $$",
        )
        .unwrap();
        Spi::run(
            "CREATE TRIGGER tt_t AFTER UPDATE ON tt REFERENCING OLD TABLE AS old_t \
             NEW TABLE AS new_t FOR EACH STATEMENT EXECUTE FUNCTION tt_f()",
        )
        .unwrap();
        Spi::run("INSERT INTO tt VALUES (1, 'a'), (2, 'b')").unwrap();
        Spi::run("UPDATE tt SET v = v || v").unwrap();
        let log = Spi::get_one::<String>(
            "SELECT string_agg(old_v || '>' || new_v, ',' ORDER BY old_v) FROM tt_log",
        )
        .unwrap();
        assert_eq!(log.as_deref(), Some("a>aa,b>bb"));
    }

    #[pg_test(error = "ON CONFLICT DO UPDATE command cannot affect row a second time")]
    fn on_conflict_meeting_its_own_row_is_a_cardinality_violation() {
        Spi::run("CREATE TABLE oc (k int PRIMARY KEY, v text) USING torii").unwrap();
        Spi::run("INSERT INTO oc VALUES (1, 'a')").unwrap();
        // The second (1, ...) meets the row the first one updated in place.
        Spi::run("INSERT INTO oc VALUES (1, 'b'), (1, 'c') ON CONFLICT (k) DO UPDATE SET v = 'x'")
            .unwrap();
    }

    #[pg_test]
    fn cluster_keeps_the_clustering_transactions_own_changes() {
        Spi::run("CREATE TABLE cl (k int PRIMARY KEY) USING torii").unwrap();
        Spi::run("INSERT INTO cl VALUES (10), (20), (30)").unwrap();
        // Same transaction: a cold update (key changes) and a delete, then CLUSTER.
        Spi::run("UPDATE cl SET k = 100 WHERE k = 10").unwrap();
        Spi::run("DELETE FROM cl WHERE k = 20").unwrap();
        Spi::run("CLUSTER cl USING cl_pkey").unwrap();
        let keys =
            Spi::get_one::<String>("SELECT string_agg(k::text, ',' ORDER BY k) FROM cl").unwrap();
        assert_eq!(keys.as_deref(), Some("30,100"));
    }

    #[pg_test]
    fn fillfactor_leaves_room_on_pages() {
        Spi::run("CREATE TABLE ff (id int, t text) USING torii WITH (fillfactor = 10)").unwrap();
        Spi::run("INSERT INTO ff SELECT g, repeat('x', 200) FROM generate_series(1, 30) g")
            .unwrap();
        // About 3 rows of ~240 bytes fit under an 819-byte fill target; without fillfactor
        // all 30 share one page.
        let pages = Spi::get_one::<i64>("SELECT count(DISTINCT (ctid::text::point)[0]) FROM ff")
            .unwrap()
            .unwrap();
        assert!(pages >= 8, "30 rows on {pages} pages");
    }

    #[pg_test(error = "removing partition \"dp2\" violates foreign key constraint \"dfk_a_fkey2\"")]
    fn detach_partition_checks_foreign_keys_while_hints_are_on() {
        // The planner hook's hint lookup must not make the detach's own catalog changes
        // visible half-way (it used to: "could not find tuple for parent of relation").
        Spi::run("CREATE TABLE dp (a int PRIMARY KEY) PARTITION BY RANGE (a)").unwrap();
        Spi::run("CREATE TABLE dp1 PARTITION OF dp FOR VALUES FROM (0) TO (1000) USING torii")
            .unwrap();
        Spi::run(
            "CREATE TABLE dp2 PARTITION OF dp FOR VALUES FROM (1000) TO (2000) \
             PARTITION BY RANGE (a)",
        )
        .unwrap();
        Spi::run("CREATE TABLE dp21 PARTITION OF dp2 FOR VALUES FROM (1000) TO (2000) USING torii")
            .unwrap();
        Spi::run("INSERT INTO dp VALUES (1), (1000)").unwrap();
        Spi::run("CREATE TABLE dfk (a int REFERENCES dp) USING torii").unwrap();
        Spi::run("INSERT INTO dfk VALUES (1), (1000)").unwrap();
        Spi::run("ALTER TABLE dp DETACH PARTITION dp2").unwrap();
    }
}
