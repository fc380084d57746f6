#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn smoke() {
        Spi::run("CREATE TABLE bt1 (a int, b text); INSERT INTO bt1 SELECT i, 'x' || i FROM generate_series(1, 1000) i; CREATE INDEX bt1_a ON bt1 USING torii_btree (a);").unwrap();
    }
}
