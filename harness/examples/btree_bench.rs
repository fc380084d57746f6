//! Benchmark of torii_btree against PostgreSQL's btree (issue 6), in one run on one fresh
//! cluster: two identical tables of `TORII_BENCH_ROWS` rows (default 1,000,000), one indexed
//! with btree and one with torii_btree, and for each index kind:
//!
//! * build time and size of a unique int4 index (`id`) and of a text index with repeating
//!   values (`grp`, 1000 distinct values);
//! * point lookups per second (`SELECT pad FROM t WHERE id = $1`, random ids, one session);
//! * range scan time (`sum(v)` over 100,000 consecutive ids, index scan forced), 10 times;
//! * insert throughput with both indexes in place (100,000 rows in random key order,
//!   batches of 1,000).
//!
//! Prints figures side by side with the ratio torii_btree / btree. Figures, not pass/fail.
//! Run: `cargo run --release -p torii-harness --example btree_bench` (table AM from
//! `TORII_TEST_AM`, default torii; `heap` works too).

use std::time::Instant;

use postgres::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use torii_harness::testing::{am, cluster_with_db};
use torii_harness::{sql, Result};

fn timed(cl: &mut Client, sql: &str) -> Result<f64> {
    let t = Instant::now();
    cl.batch_execute(sql)?;
    Ok(t.elapsed().as_secs_f64())
}

struct Figures {
    build_id: f64,
    build_grp: f64,
    size_id: i64,
    size_grp: i64,
    lookups_per_s: f64,
    range_s: f64,
    inserts_per_s: f64,
}

fn run(cl: &mut Client, t: &str, method: &str, rows: i64) -> Result<Figures> {
    cl.batch_execute(
        "SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = 0",
    )?;
    let build_id = timed(
        cl,
        &format!("CREATE UNIQUE INDEX {t}_id ON {t} USING {method} (id)"),
    )?;
    let build_grp = timed(
        cl,
        &format!("CREATE INDEX {t}_grp ON {t} USING {method} (grp)"),
    )?;
    cl.batch_execute(&format!("VACUUM ANALYZE {t}"))?;
    let size_id = sql::relation_size(cl, &format!("{t}_id"))?;
    let size_grp = sql::relation_size(cl, &format!("{t}_grp"))?;
    // Point lookups.
    cl.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")?;
    let stmt = cl.prepare(&format!("SELECT pad FROM {t} WHERE id = $1"))?;
    let mut rng = StdRng::seed_from_u64(42);
    let n = 20_000;
    let t0 = Instant::now();
    for _ in 0..n {
        let id: i32 = rng.gen_range(1..=rows as i32);
        let r = cl.query(&stmt, &[&id])?;
        assert_eq!(r.len(), 1);
    }
    let lookups_per_s = n as f64 / t0.elapsed().as_secs_f64();
    // Range scans.
    let t0 = Instant::now();
    for i in 0..10 {
        let lo = 1 + i * (rows / 10 - 100_000).max(1);
        let s: i64 = sql::scalar(
            cl,
            &format!(
                "SELECT sum(v)::int8 FROM {t} WHERE id BETWEEN {lo} AND {}",
                lo + 99_999
            ),
        )?;
        assert!(s > 0);
    }
    let range_s = t0.elapsed().as_secs_f64() / 10.0;
    cl.batch_execute("RESET enable_seqscan; RESET enable_bitmapscan")?;
    // Inserts with the indexes in place: new ids in random order.
    let t0 = Instant::now();
    let mut ids: Vec<i64> = (rows + 1..=rows + 100_000).collect();
    let mut rng = StdRng::seed_from_u64(7);
    for i in (1..ids.len()).rev() {
        let j = rng.gen_range(0..=i);
        ids.swap(i, j);
    }
    for chunk in ids.chunks(1000) {
        let list = chunk
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        cl.batch_execute(&format!(
            "INSERT INTO {t} SELECT i, i % 1000, 'group-' || (i % 1000), i % 97, repeat('p', 40) FROM unnest(ARRAY[{list}]) i"
        ))?;
    }
    let inserts_per_s = 100_000.0 / t0.elapsed().as_secs_f64();
    Ok(Figures {
        build_id,
        build_grp,
        size_id,
        size_grp,
        lookups_per_s,
        range_s,
        inserts_per_s,
    })
}

fn main() -> Result<()> {
    let rows: i64 = std::env::var("TORII_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (_c, mut cl) = cluster_with_db("btree_bench")?;
    let tam = am();
    for t in ["t_btree", "t_torii"] {
        cl.batch_execute(&format!(
            "CREATE TABLE {t} (id int, g int, grp text, v int, pad text) USING {tam};
             INSERT INTO {t} SELECT i, i % 1000, 'group-' || (i % 1000), i % 97, repeat('p', 40)
               FROM generate_series(1, {rows}) i;"
        ))?;
        cl.batch_execute(&format!("VACUUM ANALYZE {t}"))?;
    }
    let b = run(&mut cl, "t_btree", "btree", rows)?;
    let o = run(&mut cl, "t_torii", "torii_btree", rows)?;
    println!("torii_btree vs btree, {rows} rows, table AM {tam}");
    println!(
        "{:<38} {:>14} {:>14} {:>8}",
        "", "btree", "torii_btree", "ratio"
    );
    let line = |name: &str, x: f64, y: f64, unit: &str| {
        println!(
            "{:<38} {:>11.3}{unit:>3} {:>11.3}{unit:>3} {:>8.2}",
            name,
            x,
            y,
            y / x
        );
    };
    line("build unique int4 index (s)", b.build_id, o.build_id, "s");
    line(
        "build text index, 1000 values (s)",
        b.build_grp,
        o.build_grp,
        "s",
    );
    line(
        "size unique int4 index (MB)",
        b.size_id as f64 / 1048576.0,
        o.size_id as f64 / 1048576.0,
        "MB",
    );
    line(
        "size text index, 1000 values (MB)",
        b.size_grp as f64 / 1048576.0,
        o.size_grp as f64 / 1048576.0,
        "MB",
    );
    line(
        "point lookups per second",
        b.lookups_per_s,
        o.lookups_per_s,
        "/s",
    );
    line("range scan, 100k ids (s)", b.range_s, o.range_s, "s");
    line(
        "inserts per second, 2 indexes",
        b.inserts_per_s,
        o.inserts_per_s,
        "/s",
    );
    Ok(())
}
