//! torii-demo: load the same data into a heap table and a torii table in a throwaway cluster,
//! ask both the same questions, check the answers agree, and show the figures side by side.
//!
//! Usage: torii-demo [--rows N] [--am AM] [--keep]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use postgres::Client;
use torii_harness::report::{thousands, SideBySide, Unit};
use torii_harness::{err, sql, workload, Cluster, Result};

struct Args {
    rows: u64,
    am: String,
    keep: bool,
}

const USAGE: &str = "usage: torii-demo [--rows N] [--am AM] [--keep]

  --rows N   rows loaded into each table (default 200000): half with COPY, half with
             INSERT ... SELECT
  --am AM    table access method compared with heap (default torii; `--am heap` runs the
             demo heap against heap, without the extension)
  --keep     keep the cluster's directory afterwards (same as TORII_KEEP_CLUSTER=1)";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rows: 200_000,
        am: "torii".into(),
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rows" => {
                a.rows = it
                    .next()
                    .ok_or_else(|| err("--rows needs a value"))?
                    .replace(['_', ','], "")
                    .parse()?
            }
            "--am" => a.am = it.next().ok_or_else(|| err("--am needs a value"))?,
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(err(format!("unknown argument {other}\n{USAGE}"))),
        }
    }
    if a.rows < 2 {
        return Err(err("--rows must be at least 2"));
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

/// One question asked of both tables.
struct Question {
    label: &'static str,
    sql: &'static str,
}

const QUESTIONS: &[Question] = &[
    Question {
        label: "count and sums",
        sql: "SELECT count(*), sum(id), sum(account), sum(balance), count(note) FROM {t}",
    },
    Question {
        label: "lookups by account (btree index)",
        sql: "SELECT account, id, balance, note FROM {t} \
              WHERE account IN (1, 42, 777, 1234, 5000, 9999) ORDER BY account, id",
    },
    Question {
        label: "ordered sample (every 9973rd id)",
        sql: "SELECT x::text FROM {t} x WHERE id % 9973 = 0 ORDER BY id",
    },
    Question {
        label: "top 10 balances",
        sql: "SELECT id, balance FROM {t} ORDER BY balance DESC, id LIMIT 10",
    },
    Question {
        label: "group by account % 10",
        sql: "SELECT account % 10, count(*), sum(balance), max(created) FROM {t} \
              GROUP BY 1 ORDER BY 1",
    },
];

struct Figures {
    load: Duration,
    index: Duration,
    queries: Duration,
    rows: i64,
    size: i64,
}

fn load(cl: &mut Client, table: &str, am: &str, rows: u64) -> Result<Figures> {
    workload::create_accounts_table(cl, table, am)?;
    let copy_rows = rows / 2;
    let t0 = Instant::now();
    workload::copy_in(cl, table, 1, copy_rows, workload::SEED)?;
    workload::insert_select(cl, table, copy_rows as i64 + 1, rows - copy_rows)?;
    let load = t0.elapsed();
    let t0 = Instant::now();
    cl.batch_execute(&format!(
        "CREATE INDEX {table}_account ON {table} (account)"
    ))?;
    let index = t0.elapsed();
    cl.batch_execute(&format!("ANALYZE {table}"))?;
    Ok(Figures {
        load,
        index,
        queries: Duration::ZERO,
        rows: sql::scalar(cl, &format!("SELECT count(*) FROM {table}"))?,
        size: sql::relation_size(cl, table)?,
    })
}

/// Print without a newline, now.
fn say(msg: &str) {
    use std::io::Write;
    print!("{msg}");
    let _ = std::io::stdout().flush();
}

fn run() -> Result<bool> {
    let args = parse_args()?;
    if args.keep {
        std::env::set_var("TORII_KEEP_CLUSTER", "1");
    }
    let heap_t = "t_heap";
    let am_t = if args.am == "heap" {
        "t_heap2".to_string()
    } else {
        format!("t_{}", args.am)
    };
    println!(
        "torii demo: heap vs {} on {} rows per table\n",
        args.am,
        thousands(args.rows)
    );
    say("  starting a throwaway PostgreSQL cluster ... ");
    let c = Cluster::started("demo")?;
    println!("ok ({})", c.base_dir().display());
    c.create_db("demo")?;
    let mut cl = c.connect("demo")?;
    let version: String = sql::scalar(&mut cl, "SELECT current_setting('server_version')")?;
    if args.am == "torii" {
        if let Err(e) = cl.batch_execute("CREATE EXTENSION torii") {
            return Err(err(format!(
                "CREATE EXTENSION torii failed: {}\n  Is torii installed? Run scripts/setup.sh \
                 (cargo pgrx install --release --pg-config /usr/bin/pg_config).",
                sql::describe(&e)
            )));
        }
        println!("  PostgreSQL {version}, CREATE EXTENSION torii ... ok");
    } else {
        println!("  PostgreSQL {version}");
    }
    say(&format!("  loading {heap_t} (heap) ... "));
    let mut fh = load(&mut cl, heap_t, "heap", args.rows)?;
    println!("{:.2} s", fh.load.as_secs_f64());
    say(&format!("  loading {am_t} ({}) ... ", args.am));
    let mut ft = load(&mut cl, &am_t, &args.am, args.rows)?;
    println!("{:.2} s\n", ft.load.as_secs_f64());

    cl.batch_execute("SET max_parallel_workers_per_gather = 0")?;
    let mut checks: Vec<(String, bool, String)> = Vec::new();
    for q in QUESTIONS {
        let t0 = Instant::now();
        let h = sql::result_text(&mut cl, &q.sql.replace("{t}", heap_t))?;
        fh.queries += t0.elapsed();
        let t0 = Instant::now();
        let t = sql::result_text(&mut cl, &q.sql.replace("{t}", &am_t))?;
        ft.queries += t0.elapsed();
        let n = if h.is_empty() { 0 } else { h.lines().count() };
        checks.push((
            q.label.to_string(),
            h == t,
            format!("{n} row{}", if n == 1 { "" } else { "s" }),
        ));
    }
    let plan = sql::explain(
        &mut cl,
        &format!("SELECT * FROM {am_t} WHERE account IN (1, 42, 777, 1234, 5000, 9999)"),
    )?;
    let uses_index = plan.contains(&format!("{am_t}_account"));
    checks.push((
        format!("index used on {am_t}"),
        uses_index,
        plan.lines().next().unwrap_or("").trim().to_string(),
    ));
    if args.am == "torii" {
        let problems = sql::rows_text(
            &mut cl,
            &format!("SELECT blkno, problem FROM torii.verify('{am_t}')"),
        )?;
        checks.push((
            format!("torii.verify('{am_t}')"),
            problems.is_empty(),
            if problems.is_empty() {
                "no problems".into()
            } else {
                format!("{} problem(s): {:?}", problems.len(), problems)
            },
        ));
    }

    let mut t = SideBySide::new("", "heap", &args.am);
    t.add(
        "rows",
        Some(fh.rows as f64),
        Some(ft.rows as f64),
        Unit::Count,
    );
    t.add(
        "table size",
        Some(fh.size as f64),
        Some(ft.size as f64),
        Unit::Bytes,
    );
    t.add(
        "load time (COPY + INSERT)",
        Some(fh.load.as_secs_f64()),
        Some(ft.load.as_secs_f64()),
        Unit::Seconds,
    );
    t.add(
        "CREATE INDEX time",
        Some(fh.index.as_secs_f64()),
        Some(ft.index.as_secs_f64()),
        Unit::Seconds,
    );
    t.add(
        &format!("query time ({} queries)", QUESTIONS.len()),
        Some(fh.queries.as_secs_f64()),
        Some(ft.queries.as_secs_f64()),
        Unit::Seconds,
    );
    print!("{}", t.render());
    println!("\n  same answers from both tables?");
    let mut all_ok = true;
    for (label, ok, note) in &checks {
        all_ok &= ok;
        println!(
            "    {} {label:<40} {note}",
            if *ok { "ok  " } else { "FAIL" }
        );
    }
    drop(cl);
    c.stop()?;
    if all_ok {
        println!("\n  all checks passed; cluster stopped.");
    } else {
        println!("\n  SOME CHECKS FAILED (see above); cluster stopped.");
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("torii-demo: {}", sql::describe(&e));
            ExitCode::from(2)
        }
    }
}
