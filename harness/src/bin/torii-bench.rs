//! torii-bench: heap and torii side by side in one throwaway cluster, with ratios torii/heap.
//! It prints figures; it never fails because something is slow.
//!
//! Usage: torii-bench [WORKLOAD ...] [--rows N] [--runs N] [--am AM] [--keep]
//!
//! Workloads (default: all):
//!   load   COPY and INSERT ... SELECT rows/s, WAL bytes per row, table size, sequential scan

use std::process::ExitCode;
use std::time::{Duration, Instant};

use postgres::Client;
use torii_harness::report::{thousands, SideBySide, Unit};
use torii_harness::{err, sql, workload, Cluster, Result};

struct Args {
    workloads: Vec<String>,
    rows: u64,
    runs: usize,
    am: String,
    keep: bool,
}

/// Everything a workload needs.
struct Ctx {
    cluster: Cluster,
    client: Client,
    /// table access method compared with heap
    am: String,
    rows: u64,
    runs: usize,
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
const WORKLOADS: &[(&str, &str, Workload)] = &[(
    "load",
    "COPY and INSERT ... SELECT rows/s, WAL bytes per row, table size, sequential scan",
    load,
)];

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
         \x20 --keep     keep the cluster's directory (same as TORII_KEEP_CLUSTER=1)",
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
    if a.rows == 0 || a.runs == 0 {
        return Err(err("--rows and --runs must be positive"));
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
