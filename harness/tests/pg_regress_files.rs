//! Runs PostgreSQL's `pg_regress` over `tests/pg_regress/sql/*.sql` (every file that has an
//! `expected/*.out`) against a database where `CREATE EXTENSION torii` ran.
//!
//! `setup.sql`, if present, is left out: it is for `cargo pgrx regress`, and the extension
//! already exists here. With `TORII_TEST_AM=<am>`, `USING torii` is replaced by `USING <am>` in
//! both the SQL and the expected output (a self-test of the files on heap).

use std::fs;
use std::path::{Path, PathBuf};

use torii_harness::testing::{am, cluster_with_db, is_torii, DB};
use torii_harness::{err, sql, Result};

fn pg_regress() -> PathBuf {
    if let Ok(p) = std::env::var("TORII_PG_REGRESS") {
        return PathBuf::from(p);
    }
    let pkglib = std::process::Command::new("pg_config")
        .arg("--pkglibdir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "/usr/lib/postgresql/15/lib".into());
    Path::new(&pkglib).join("pgxs/src/test/regress/pg_regress")
}

#[test]
fn pg_regress_sql_files() -> Result<()> {
    let repo_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| err("no parent of the harness crate"))?
        .join("tests/pg_regress");
    let mut tests: Vec<String> = Vec::new();
    for e in fs::read_dir(repo_dir.join("sql"))? {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) != Some("sql") {
            continue;
        }
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if name != "setup" && repo_dir.join(format!("expected/{name}.out")).exists() {
            tests.push(name);
        }
    }
    tests.sort();
    assert!(
        !tests.is_empty(),
        "no tests in {}/sql with expected output",
        repo_dir.display()
    );

    let (c, mut cl) = cluster_with_db("regress")?;
    // What pg_regress itself sets on a database it creates (it creates none with
    // --use-existing).
    cl.batch_execute(&format!(
        "ALTER DATABASE {db} SET lc_messages TO 'C'; \
         ALTER DATABASE {db} SET lc_monetary TO 'C'; \
         ALTER DATABASE {db} SET lc_numeric TO 'C'; \
         ALTER DATABASE {db} SET lc_time TO 'C'; \
         ALTER DATABASE {db} SET bytea_output TO 'hex'; \
         ALTER DATABASE {db} SET timezone_abbreviations TO 'Default'",
        db = sql::ident(DB)
    ))?;
    drop(cl);

    // A private copy of the inputs, readable by the server's OS user.
    let input = c.make_dir("regress_in")?;
    for sub in ["sql", "expected"] {
        let dst = c.make_dir(&format!("regress_in/{sub}"))?;
        for e in fs::read_dir(repo_dir.join(sub))? {
            let p = e?.path();
            if !p.is_file() {
                continue;
            }
            let mut text = fs::read_to_string(&p)?;
            if !is_torii() {
                text = text.replace("USING torii", &format!("USING {}", am()));
            }
            let target = dst.join(p.file_name().unwrap());
            fs::write(&target, text)?;
            c.give_to_server(&target)?;
        }
    }
    let output = c.make_dir("regress_out")?;
    let out = c
        .pg_command(&pg_regress().to_string_lossy())
        .arg("--use-existing")
        .arg(format!("--host={}", c.socket_dir().display()))
        .arg(format!("--port={}", c.port()))
        .arg("--user=postgres")
        .arg(format!("--dbname={DB}"))
        .arg(format!(
            "--bindir={}",
            torii_harness::cluster::pg_bindir().display()
        ))
        .arg(format!("--inputdir={}", input.display()))
        .arg(format!("--outputdir={}", output.display()))
        .args(&tests)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    if !out.status.success() {
        let diffs = fs::read_to_string(output.join("regression.diffs")).unwrap_or_default();
        return Err(err(format!(
            "pg_regress failed ({}):\n{stdout}{stderr}\n--- regression.diffs:\n{diffs}",
            out.status
        )));
    }
    for t in &tests {
        assert!(
            stdout.contains(t.as_str()),
            "pg_regress did not report test {t}:\n{stdout}"
        );
    }
    c.assert_no_crash()
}
