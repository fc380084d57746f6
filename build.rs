//! Compiles the C entry points of the planner-hint hooks (src/hints/shim.c)
//! and of index builds (src/am/index_shim.c); why they are in C is explained
//! at the top of those files.
//!
//! The server headers come from `pg_config --includedir-server`: the
//! pg_config cargo-pgrx builds against (`PGRX_PG_CONFIG_PATH`), else
//! `PG_CONFIG`, else `pg_config` on `PATH`.

use std::env;
use std::process::Command;

fn pg_config_path() -> String {
    for var in ["PGRX_PG_CONFIG_PATH", "PG_CONFIG"] {
        if let Ok(p) = env::var(var) {
            if !p.is_empty() {
                return p;
            }
        }
    }
    "pg_config".to_string()
}

fn main() {
    println!("cargo:rerun-if-changed=src/hints/shim.c");
    println!("cargo:rerun-if-changed=src/am/index_shim.c");
    println!("cargo:rerun-if-env-changed=PGRX_PG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PG_CONFIG");
    println!("cargo:rerun-if-env-changed=PATH");

    let pg_config = pg_config_path();
    let out = Command::new(&pg_config)
        .arg("--includedir-server")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {pg_config}: {e}"));
    assert!(
        out.status.success(),
        "{pg_config} --includedir-server failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let include = String::from_utf8(out.stdout)
        .expect("pg_config output is not UTF-8")
        .trim()
        .to_string();

    cc::Build::new()
        .file("src/hints/shim.c")
        .file("src/am/index_shim.c")
        .include(&include)
        // PostgreSQL's headers are not warning-clean under -Wextra.
        .warnings(false)
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wno-unused-parameter")
        // as PostgreSQL itself is compiled
        .flag_if_supported("-fno-strict-aliasing")
        .flag_if_supported("-fwrapv")
        .compile("torii_c_shims");
}
