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

    #[pg_test(error = "torii: UPDATE is not supported yet on torii tables")]
    fn update_is_an_explicit_error() {
        Spi::run("CREATE TABLE u (id int) USING torii").unwrap();
        Spi::run("INSERT INTO u VALUES (1)").unwrap();
        Spi::run("UPDATE u SET id = 2").unwrap();
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
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM r").unwrap(), Some(1));
    }
}
