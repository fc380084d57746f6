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
}
