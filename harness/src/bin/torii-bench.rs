//! torii-bench: heap and torii side by side in one throwaway cluster, with ratios torii/heap.
//! It prints figures; it never fails because something is slow.
//!
//! Usage: torii-bench [WORKLOAD ...] [--rows N] [--runs N] [--am AM] [--keep]
//!                    [--scale N] [--clients N] [--duration S] [--rounds N]
//!
//! Workloads (default: all):
//!   load     COPY and INSERT ... SELECT rows/s, WAL bytes per row, table size, sequential scan
//!   pgbench  pgbench's TPC-B-like script on heap and on torii tables: TPS, WAL bytes per
//!            transaction, table sizes before and after
//!   bloat    rounds of UPDATE of every row: table size after each round, time, WAL
//!   vacuum   VACUUM FREEZE of a table whose rows are all older than the freeze age: time,
//!            pages read/hit, WAL

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use postgres::Client;
use torii_harness::cluster::pg_bindir;
use torii_harness::report::{thousands, SideBySide, Unit};
use torii_harness::testing::torii_stats;
use torii_harness::{err, sql, workload, Cluster, Result};

struct Args {
    workloads: Vec<String>,
    rows: u64,
    runs: usize,
    am: String,
    keep: bool,
    scale: u32,
    clients: u32,
    duration: u32,
    rounds: u32,
}

/// Everything a workload needs.
struct Ctx {
    cluster: Cluster,
    client: Client,
    /// table access method compared with heap
    am: String,
    rows: u64,
    runs: usize,
    /// pgbench: scale factor, clients, seconds per run
    scale: u32,
    clients: u32,
    duration: u32,
    /// bloat: update rounds
    rounds: u32,
}

impl Ctx {
    /// Table name for an AM: `{prefix}_heap` and `{prefix}_{am}` (`{prefix}_heap2` when the AM
    /// under comparison is heap itself).
    fn table(&self, prefix: &str, am: &str, second: bool) -> String {
        if second && am == "heap" {
            format!("{prefix}_heap2")
        } else {
            format!("{prefix}_{am}")
        }
    }
    /// (am, table) for heap and for the compared AM.
    fn pair(&self, prefix: &str) -> [(String, String); 2] {
        [
            ("heap".to_string(), self.table(prefix, "heap", false)),
            (self.am.clone(), self.table(prefix, &self.am, true)),
        ]
    }
}

type Workload = fn(&mut Ctx) -> Result<SideBySide>;

/// Registered workloads: name, description, function. Add new ones here (pgbench TPC-B,
/// update rounds, index benchmarks ...).
const WORKLOADS: &[(&str, &str, Workload)] = &[
    (
        "load",
        "COPY and INSERT ... SELECT rows/s, WAL bytes per row, table size, sequential scan",
        load,
    ),
    (
        "pgbench",
        "pgbench TPC-B-like (--scale, --clients, --duration): TPS, WAL bytes/txn, table sizes",
        pgbench,
    ),
    (
        "bloat",
        "--rounds UPDATEs of every row of --rows/10 rows: size after each round, time, WAL",
        bloat,
    ),
    (
        "vacuum",
        "VACUUM FREEZE of --rows rows all older than the freeze age: time, pages read/hit, WAL",
        vacuum_freeze,
    ),
];

fn usage() -> String {
    let mut s = String::from(
        "usage: torii-bench [WORKLOAD ...] [--rows N] [--runs N] [--am AM] [--keep]\n\n\
         workloads (default: all):\n",
    );
    for (name, desc, _) in WORKLOADS {
        s.push_str(&format!("  {name:<8} {desc}\n"));
    }
    s.push_str(
        "\n  --rows N   rows per load (default 1000000)\n\
         \x20 --runs N   timed runs of each scan, the median is shown (default 5)\n\
         \x20 --am AM    access method compared with heap (default torii; `--am heap` compares\n\
         \x20            heap with heap, without the extension)\n\
         \x20 --keep     keep the cluster's directory (same as TORII_KEEP_CLUSTER=1)\n\
         \x20 --scale N  pgbench scale factor (default 10)\n\
         \x20 --clients N  pgbench clients (default 2)\n\
         \x20 --duration S  seconds of each pgbench run (default 30)\n\
         \x20 --rounds N  update rounds of the bloat workload (default 10)",
    );
    s
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        workloads: Vec::new(),
        rows: 1_000_000,
        runs: 5,
        am: "torii".into(),
        keep: false,
        scale: 10,
        clients: 2,
        duration: 30,
        rounds: 10,
    };
    let mut it = std::env::args().skip(1);
    let value = |it: &mut dyn Iterator<Item = String>, flag: &str| {
        it.next()
            .map(|v| v.replace(['_', ','], ""))
            .ok_or_else(|| err(format!("{flag} needs a value")))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rows" => a.rows = value(&mut it, "--rows")?.parse()?,
            "--runs" => a.runs = value(&mut it, "--runs")?.parse()?,
            "--am" => a.am = value(&mut it, "--am")?,
            "--keep" => a.keep = true,
            "--scale" => a.scale = value(&mut it, "--scale")?.parse()?,
            "--clients" => a.clients = value(&mut it, "--clients")?.parse()?,
            "--duration" => a.duration = value(&mut it, "--duration")?.parse()?,
            "--rounds" => a.rounds = value(&mut it, "--rounds")?.parse()?,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            "all" => a
                .workloads
                .extend(WORKLOADS.iter().map(|w| w.0.to_string())),
            w if WORKLOADS.iter().any(|x| x.0 == w) => a.workloads.push(w.to_string()),
            other => return Err(err(format!("unknown argument {other}\n\n{}", usage()))),
        }
    }
    if a.workloads.is_empty() {
        a.workloads = WORKLOADS.iter().map(|w| w.0.to_string()).collect();
    }
    a.workloads.dedup();
    if a.rows == 0 || a.runs == 0 || a.scale == 0 || a.clients == 0 || a.duration == 0 {
        return Err(err(
            "--rows, --runs, --scale, --clients and --duration must be positive",
        ));
    }
    if a.am.is_empty()
        || !a
            .am
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(err("--am must be a plain lower-case name"));
    }
    Ok(a)
}

fn say(msg: &str) {
    use std::io::Write;
    eprint!("{msg}");
    let _ = std::io::stderr().flush();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Time one statement and the WAL it wrote (from a checkpoint, so both AMs start alike).
fn timed_load(cl: &mut Client, statement: &str) -> Result<(Duration, i64, u64)> {
    cl.batch_execute("CHECKPOINT")?;
    let lsn0 = sql::current_wal_lsn(cl)?;
    let t0 = Instant::now();
    let n = cl.execute(statement, &[])?;
    let dt = t0.elapsed();
    let lsn1 = sql::current_wal_lsn(cl)?;
    Ok((dt, sql::wal_bytes_between(cl, &lsn0, &lsn1)?, n))
}

fn load(ctx: &mut Ctx) -> Result<SideBySide> {
    let rows = ctx.rows;
    let csv = ctx.cluster.base_dir().join("load.csv");
    say(&format!("  generating {} CSV rows ... ", thousands(rows)));
    workload::write_csv(&csv, 1, rows, workload::SEED)?;
    let csv_size = std::fs::metadata(&csv)?.len();
    say(&format!("{:.1} MB\n", csv_size as f64 / 1e6));

    let copy_pair = ctx.pair("copy");
    let ins_pair = ctx.pair("ins");
    let cl = &mut ctx.client;
    let mut copy = Vec::new();
    for (am, t) in &copy_pair {
        workload::create_accounts_table(cl, t, am)?;
        say(&format!("  COPY {} rows into {t} ... ", thousands(rows)));
        let (dt, wal, n) = timed_load(
            cl,
            &format!(
                "COPY {t} FROM {} (FORMAT csv)",
                sql::literal(&csv.to_string_lossy())
            ),
        )?;
        if n != rows {
            return Err(err(format!("COPY into {t} loaded {n} rows, not {rows}")));
        }
        say(&format!("{:.2} s\n", dt.as_secs_f64()));
        copy.push((dt, wal));
    }
    let mut ins = Vec::new();
    for (am, t) in &ins_pair {
        workload::create_accounts_table(cl, t, am)?;
        say(&format!(
            "  INSERT ... SELECT {} rows into {t} ... ",
            thousands(rows)
        ));
        let (dt, wal, n) = timed_load(
            cl,
            &format!("INSERT INTO {t} {}", workload::generate_select(1, rows)),
        )?;
        if n != rows {
            return Err(err(format!(
                "INSERT into {t} inserted {n} rows, not {rows}"
            )));
        }
        say(&format!("{:.2} s\n", dt.as_secs_f64()));
        ins.push((dt, wal));
    }
    std::fs::remove_file(&csv)?;

    // Sequential scans of the COPY tables, alternating, median of `runs` after a warm-up.
    cl.batch_execute("SET max_parallel_workers_per_gather = 0")?;
    cl.batch_execute("VACUUM ANALYZE")?;
    let mut scans: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut answers = [String::new(), String::new()];
    say(&format!("  sequential scans ({} runs each) ...", ctx.runs));
    for run in 0..=ctx.runs {
        for (i, (_, t)) in copy_pair.iter().enumerate() {
            let q = format!("SELECT count(*), sum(balance) FROM {t}");
            let t0 = Instant::now();
            let a = sql::result_text(cl, &q)?;
            let dt = t0.elapsed();
            if run > 0 {
                scans[i].push(dt);
            }
            answers[i] = a;
        }
    }
    say(" done\n");
    if answers[0] != answers[1] {
        eprintln!(
            "  WARNING: the scans disagree: heap {} vs {} {}",
            answers[0], ctx.am, answers[1]
        );
    }
    let sizes = [
        sql::relation_size(cl, &copy_pair[0].1)?,
        sql::relation_size(cl, &copy_pair[1].1)?,
    ];

    let r = rows as f64;
    let mut t = SideBySide::new(
        &format!("load: {} rows per table", thousands(rows)),
        "heap",
        &ctx.am,
    );
    t.add(
        "COPY",
        Some(r / copy[0].0.as_secs_f64()),
        Some(r / copy[1].0.as_secs_f64()),
        Unit::RowsPerSec,
    );
    t.add(
        "COPY WAL bytes/row",
        Some(copy[0].1 as f64 / r),
        Some(copy[1].1 as f64 / r),
        Unit::Number,
    );
    t.add(
        "INSERT ... SELECT",
        Some(r / ins[0].0.as_secs_f64()),
        Some(r / ins[1].0.as_secs_f64()),
        Unit::RowsPerSec,
    );
    t.add(
        "INSERT WAL bytes/row",
        Some(ins[0].1 as f64 / r),
        Some(ins[1].1 as f64 / r),
        Unit::Number,
    );
    t.add(
        "seq scan count+sum (median)",
        Some(median(scans[0].clone()).as_secs_f64()),
        Some(median(scans[1].clone()).as_secs_f64()),
        Unit::Seconds,
    );
    t.add(
        "table size (pg_relation_size)",
        Some(sizes[0] as f64),
        Some(sizes[1] as f64),
        Unit::Bytes,
    );
    t.add(
        "bytes/row",
        Some(sizes[0] as f64 / r),
        Some(sizes[1] as f64 / r),
        Unit::Number,
    );
    Ok(t)
}

/// Run a program to completion; its stdout and stderr, or an error with them.
fn run_program(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(err(format!("{what} failed ({}):\n{text}", out.status)));
    }
    Ok(text)
}

/// A `pgbench` command for database `db` of the bench cluster; tables it creates use `am`.
fn pgbench_command(ctx: &Ctx, db: &str, am: &str) -> Command {
    let mut c = Command::new(pg_bindir().join("pgbench"));
    for v in [
        "PGDATA",
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGOPTIONS",
        "PGSERVICE",
        "PGPASSWORD",
    ] {
        c.env_remove(v);
    }
    if am != "heap" {
        c.env("PGOPTIONS", format!("-c default_table_access_method={am}"));
    }
    c.arg("-h")
        .arg(ctx.cluster.socket_dir())
        .arg("-p")
        .arg(ctx.cluster.port().to_string())
        .args(["-U", "postgres", "-d", db]);
    c
}

/// The number after `key` in pgbench's output (e.g. `tps = `).
fn pgbench_figure(out: &str, key: &str) -> Result<f64> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .ok_or_else(|| err(format!("no `{key}` in pgbench's output:\n{out}")))?;
    let rest = line.trim_start()[key.len()..].trim_start();
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Ok(num.parse()?)
}

const PGBENCH_TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
];

/// Sizes of the pgbench tables (main fork each) and of all of them with their indexes.
fn pgbench_sizes(cl: &mut Client) -> Result<(Vec<i64>, i64)> {
    let mut sizes = Vec::new();
    for t in PGBENCH_TABLES {
        sizes.push(sql::relation_size(cl, t)?);
    }
    let total: i64 = sql::scalar(
        cl,
        "SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c \
         WHERE c.relname LIKE 'pgbench\\_%' AND c.relkind = 'r'",
    )?;
    Ok((sizes, total))
}

#[derive(Default)]
struct PgbenchSide {
    init: f64,
    tps: f64,
    txns: f64,
    failed: f64,
    wal_per_txn: f64,
    before: (Vec<i64>, i64),
    after: (Vec<i64>, i64),
    undo_pages: Option<f64>,
    data_pages: Option<(f64, f64)>,
}

fn pgbench(ctx: &mut Ctx) -> Result<SideBySide> {
    let mut sides = Vec::new();
    for (i, (am, db)) in ctx.pair("pgbench").iter().enumerate() {
        let mut s = PgbenchSide::default();
        ctx.cluster.create_db(db)?;
        let mut cl = ctx.cluster.connect(db)?;
        if am == "torii" {
            cl.batch_execute("CREATE EXTENSION torii")?;
        }
        say(&format!(
            "  pgbench -i -s {} into {db} ({am} tables) ... ",
            ctx.scale
        ));
        let t0 = Instant::now();
        let mut init = pgbench_command(ctx, db, am);
        init.args(["-i", "-q", "-s", &ctx.scale.to_string()]);
        run_program(init, "pgbench -i")?;
        s.init = t0.elapsed().as_secs_f64();
        say(&format!("{:.1} s\n", s.init));
        let got: String = sql::scalar(
            &mut cl,
            "SELECT a.amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam \
             WHERE c.relname = 'pgbench_accounts'",
        )?;
        if got != *am {
            return Err(err(format!(
                "pgbench_accounts of {db} uses {got}, not {am}"
            )));
        }
        s.before = pgbench_sizes(&mut cl)?;
        if am == "torii" {
            let st = torii_stats(&mut cl, "pgbench_accounts")?;
            s.data_pages = Some((st.data_pages as f64, 0.0));
        }
        cl.batch_execute("CHECKPOINT")?;
        let lsn0 = sql::current_wal_lsn(&mut cl)?;
        say(&format!(
            "  pgbench -c {c} -j {c} -T {} on {db} ... ",
            ctx.duration,
            c = ctx.clients
        ));
        let mut run = pgbench_command(ctx, db, am);
        run.args([
            "-c",
            &ctx.clients.to_string(),
            "-j",
            &ctx.clients.to_string(),
            "-T",
            &ctx.duration.to_string(),
        ]);
        let out = run_program(run, "pgbench")?;
        let lsn1 = sql::current_wal_lsn(&mut cl)?;
        s.tps = pgbench_figure(&out, "tps = ")?;
        s.txns = pgbench_figure(&out, "number of transactions actually processed: ")?;
        s.failed = pgbench_figure(&out, "number of failed transactions: ").unwrap_or(0.0);
        s.wal_per_txn = sql::wal_bytes_between(&mut cl, &lsn0, &lsn1)? as f64 / s.txns.max(1.0);
        say(&format!("{:.0} tps\n", s.tps));
        s.after = pgbench_sizes(&mut cl)?;
        if am == "torii" {
            let st = torii_stats(&mut cl, "pgbench_accounts")?;
            s.undo_pages = Some(st.undo_pages as f64);
            if let Some((d0, _)) = s.data_pages {
                s.data_pages = Some((d0, st.data_pages as f64));
            }
        }
        if i == 0 {
            // the same starting point for the second run
            drop(cl);
        }
        sides.push(s);
    }
    let (h, t) = (&sides[0], &sides[1]);
    let mut tab = SideBySide::new(
        &format!(
            "pgbench: TPC-B-like, scale {}, {} clients, {} s each",
            ctx.scale, ctx.clients, ctx.duration
        ),
        "heap",
        &ctx.am,
    );
    tab.add("pgbench -i", Some(h.init), Some(t.init), Unit::Seconds);
    tab.add("TPS", Some(h.tps), Some(t.tps), Unit::Number);
    tab.add("transactions", Some(h.txns), Some(t.txns), Unit::Count);
    tab.add(
        "failed transactions",
        Some(h.failed),
        Some(t.failed),
        Unit::Count,
    );
    tab.add(
        "WAL bytes/transaction",
        Some(h.wal_per_txn),
        Some(t.wal_per_txn),
        Unit::Number,
    );
    for (i, name) in PGBENCH_TABLES.iter().enumerate() {
        tab.add(
            &format!("{name} before"),
            Some(h.before.0[i] as f64),
            Some(t.before.0[i] as f64),
            Unit::Bytes,
        );
        tab.add(
            &format!("{name} after"),
            Some(h.after.0[i] as f64),
            Some(t.after.0[i] as f64),
            Unit::Bytes,
        );
    }
    tab.add(
        "tables + indexes before",
        Some(h.before.1 as f64),
        Some(t.before.1 as f64),
        Unit::Bytes,
    );
    tab.add(
        "tables + indexes after",
        Some(h.after.1 as f64),
        Some(t.after.1 as f64),
        Unit::Bytes,
    );
    if let Some((d0, d1)) = t.data_pages {
        tab.add(
            "accounts data pages before (torii)",
            None,
            Some(d0),
            Unit::Count,
        );
        tab.add(
            "accounts data pages after (torii)",
            None,
            Some(d1),
            Unit::Count,
        );
    }
    if let Some(u) = t.undo_pages {
        tab.add(
            "accounts undo pages after (torii)",
            None,
            Some(u),
            Unit::Count,
        );
    }
    Ok(tab)
}

fn bloat(ctx: &mut Ctx) -> Result<SideBySide> {
    let rows = (ctx.rows / 10).max(1000);
    let rounds = ctx.rounds.max(1);
    let pair = ctx.pair("bloat");
    let cl = &mut ctx.client;
    let mut marks: Vec<u32> = vec![1, rounds.div_ceil(2), rounds];
    marks.dedup();
    // per side: sizes after load, after each marked round, after VACUUM, after one more round;
    // update seconds in all; WAL bytes in all
    let mut sizes: Vec<Vec<i64>> = Vec::new();
    let mut secs = Vec::new();
    let mut wal = Vec::new();
    for (am, t) in &pair {
        cl.batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, counter int NOT NULL, payload text) \
             USING {am} WITH (autovacuum_enabled = off); \
             INSERT INTO {t} SELECT g, 0, md5(g::text) FROM generate_series(1, {rows}) g"
        ))?;
        let mut sz = vec![sql::relation_size(cl, t)?];
        say(&format!(
            "  {rounds} x UPDATE of all {} rows of {t} ... ",
            thousands(rows)
        ));
        cl.batch_execute("CHECKPOINT")?;
        let lsn0 = sql::current_wal_lsn(cl)?;
        let mut dt = Duration::ZERO;
        for r in 1..=rounds {
            let t0 = Instant::now();
            cl.batch_execute(&format!("UPDATE {t} SET counter = counter + 1"))?;
            dt += t0.elapsed();
            if marks.contains(&r) {
                sz.push(sql::relation_size(cl, t)?);
            }
        }
        let lsn1 = sql::current_wal_lsn(cl)?;
        cl.batch_execute(&format!("VACUUM {t}"))?;
        sz.push(sql::relation_size(cl, t)?);
        cl.batch_execute(&format!("UPDATE {t} SET counter = counter + 1"))?;
        sz.push(sql::relation_size(cl, t)?);
        let n: i64 = sql::scalar(cl, &format!("SELECT min(counter)::bigint FROM {t}"))?;
        if n != rounds as i64 + 1 {
            return Err(err(format!("{t}: counter {n} after {} rounds", rounds + 1)));
        }
        say(&format!("{:.2} s\n", dt.as_secs_f64()));
        sizes.push(sz);
        secs.push(dt.as_secs_f64());
        wal.push(sql::wal_bytes_between(cl, &lsn0, &lsn1)? as f64);
    }
    let mut tab = SideBySide::new(
        &format!(
            "bloat: {rounds} rounds of UPDATE t SET counter = counter + 1 over {} rows (no indexed column), autovacuum off",
            thousands(rows)
        ),
        "heap",
        &ctx.am,
    );
    let mut labels = vec!["size after load".to_string()];
    labels.extend(marks.iter().map(|r| format!("size after round {r}")));
    labels.push("size after VACUUM".into());
    labels.push("size after one more round".into());
    for (i, l) in labels.iter().enumerate() {
        tab.add(
            l,
            Some(sizes[0][i] as f64),
            Some(sizes[1][i] as f64),
            Unit::Bytes,
        );
    }
    tab.add(
        "UPDATE time per round",
        Some(secs[0] / rounds as f64),
        Some(secs[1] / rounds as f64),
        Unit::Seconds,
    );
    let updated = (rows * rounds as u64) as f64;
    tab.add(
        "WAL bytes per updated row",
        Some(wal[0] / updated),
        Some(wal[1] / updated),
        Unit::Number,
    );
    Ok(tab)
}

/// Table and index block reads and hits of a table so far (statistics flushed first).
fn blocks(cl: &mut Client, t: &str) -> Result<[i64; 4]> {
    cl.batch_execute("SELECT pg_stat_force_next_flush()")?;
    cl.batch_execute("SELECT pg_stat_clear_snapshot()")?;
    let r = cl.query_one(
        "SELECT coalesce(heap_blks_read, 0), coalesce(heap_blks_hit, 0), \
                coalesce(idx_blks_read, 0), coalesce(idx_blks_hit, 0) \
         FROM pg_statio_user_tables WHERE relid = $1::text::regclass",
        &[&t],
    )?;
    Ok([r.get(0), r.get(1), r.get(2), r.get(3)])
}

fn vacuum_freeze(ctx: &mut Ctx) -> Result<SideBySide> {
    let rows = ctx.rows;
    let pair = ctx.pair("vac");
    let cl = &mut ctx.client;
    // per side: [seconds, table blocks read, hit, index read, hit, WAL, second run seconds,
    // second run table blocks]
    let mut res: Vec<[f64; 8]> = Vec::new();
    for (am, t) in &pair {
        workload::create_accounts_table(cl, t, am)?;
        cl.batch_execute(&format!("ALTER TABLE {t} SET (autovacuum_enabled = off)"))?;
        say(&format!("  {} rows into {t} ... ", thousands(rows)));
        workload::insert_select(cl, t, 1, rows)?;
        cl.batch_execute(&format!("CREATE INDEX {t}_id ON {t} (id)"))?;
        // An ordinary VACUUM first (hint bits, visibility map), then more transactions so
        // that every row is older than the freeze age below.
        cl.batch_execute(&format!("VACUUM {t}"))?;
        for _ in 0..10 {
            cl.batch_execute("SELECT txid_current()")?;
        }
        cl.batch_execute("CHECKPOINT")?;
        let b0 = blocks(cl, t)?;
        let lsn0 = sql::current_wal_lsn(cl)?;
        say("VACUUM FREEZE ... ");
        cl.batch_execute("SET vacuum_freeze_min_age = 0")?;
        let t0 = Instant::now();
        cl.batch_execute(&format!("VACUUM FREEZE {t}"))?;
        let dt = t0.elapsed().as_secs_f64();
        let lsn1 = sql::current_wal_lsn(cl)?;
        let b1 = blocks(cl, t)?;
        let t1 = Instant::now();
        cl.batch_execute(&format!("VACUUM FREEZE {t}"))?;
        let dt2 = t1.elapsed().as_secs_f64();
        let b2 = blocks(cl, t)?;
        cl.batch_execute("RESET vacuum_freeze_min_age")?;
        let age: i32 = sql::scalar(
            cl,
            &format!("SELECT age(relfrozenxid) FROM pg_class WHERE oid = '{t}'::regclass"),
        )?;
        say(&format!("{dt:.2} s (relfrozenxid age afterwards {age})\n"));
        res.push([
            dt,
            (b1[0] - b0[0]) as f64,
            (b1[1] - b0[1]) as f64,
            (b1[2] - b0[2]) as f64,
            (b1[3] - b0[3]) as f64,
            sql::wal_bytes_between(cl, &lsn0, &lsn1)? as f64,
            dt2,
            ((b2[0] - b1[0]) + (b2[1] - b1[1])) as f64,
        ]);
    }
    let mut tab = SideBySide::new(
        &format!(
            "vacuum: VACUUM FREEZE of {} rows (+ btree on id), all older than the freeze age",
            thousands(rows)
        ),
        "heap",
        &ctx.am,
    );
    let (h, t) = (&res[0], &res[1]);
    tab.add("VACUUM FREEZE time", Some(h[0]), Some(t[0]), Unit::Seconds);
    tab.add("table blocks read", Some(h[1]), Some(t[1]), Unit::Count);
    tab.add("table blocks hit", Some(h[2]), Some(t[2]), Unit::Count);
    tab.add("index blocks read", Some(h[3]), Some(t[3]), Unit::Count);
    tab.add("index blocks hit", Some(h[4]), Some(t[4]), Unit::Count);
    tab.add("WAL bytes", Some(h[5]), Some(t[5]), Unit::Bytes);
    tab.add(
        "second VACUUM FREEZE time",
        Some(h[6]),
        Some(t[6]),
        Unit::Seconds,
    );
    tab.add(
        "second: table blocks read+hit",
        Some(h[7]),
        Some(t[7]),
        Unit::Count,
    );
    Ok(tab)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if args.keep {
        std::env::set_var("TORII_KEEP_CLUSTER", "1");
    }
    say("  starting a throwaway PostgreSQL cluster ... ");
    let cluster = Cluster::started("bench")?;
    say(&format!("ok ({})\n", cluster.base_dir().display()));
    cluster.create_db("bench")?;
    let mut client = cluster.connect("bench")?;
    if args.am == "torii" {
        if let Err(e) = client.batch_execute("CREATE EXTENSION torii") {
            return Err(err(format!(
                "CREATE EXTENSION torii failed: {}\n  Is torii installed? Run scripts/setup.sh \
                 (cargo pgrx install --release --pg-config /usr/bin/pg_config).",
                sql::describe(&e)
            )));
        }
    }
    let version: String = sql::scalar(&mut client, "SELECT current_setting('server_version')")?;
    let mut ctx = Ctx {
        cluster,
        client,
        am: args.am.clone(),
        rows: args.rows,
        runs: args.runs,
        scale: args.scale,
        clients: args.clients,
        duration: args.duration,
        rounds: args.rounds,
    };
    println!(
        "torii-bench: heap vs {} — PostgreSQL {version}, {} CPUs, shared_buffers 128MB\n",
        ctx.am,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for name in &args.workloads {
        let (_, _, f) = WORKLOADS
            .iter()
            .find(|w| w.0 == name)
            .ok_or_else(|| err(format!("no workload {name}")))?;
        let table = f(&mut ctx)?;
        println!("{}", table.render());
    }
    let Ctx {
        cluster, client, ..
    } = ctx;
    drop(client);
    cluster.stop()?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torii-bench: {}", sql::describe(&e));
            ExitCode::from(2)
        }
    }
}
