//! Test and benchmark harness for torii.
//!
//! * [`cluster`]: throwaway PostgreSQL 15 clusters (initdb, start/stop, `kill -9`, restart).
//! * [`sessions`]: a small multi-session step runner for isolation-style tests.
//! * [`sql`]: helpers on a `postgres::Client` (scalars, rows as text, SQLSTATEs, EXPLAIN).
//! * [`workload`]: deterministic test data (the `accounts`-like table used by demo, bench and tests).
//! * [`report`]: side-by-side heap/torii tables for the demo and the benchmark.
//! * [`testing`]: helpers shared by the integration tests (AM under test, heap comparisons).
//!
//! See `docs/testing.md`.

pub mod cluster;
pub mod report;
pub mod sessions;
pub mod sql;
pub mod testing;
pub mod workload;

pub use cluster::Cluster;
pub use sessions::Sessions;

/// Error type of the harness: anything, with a readable message.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
/// Result type of the harness.
pub type Result<T> = std::result::Result<T, Error>;

/// Make an [`Error`] from a message.
pub fn err(msg: impl Into<String>) -> Error {
    msg.into().into()
}

/// Whether the `torii` extension is installed in the PostgreSQL that the harness runs (its
/// control file is in the share directory). Tests of torii itself need it.
pub fn torii_installed() -> bool {
    let share = std::process::Command::new("pg_config")
        .arg("--sharedir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "/usr/share/postgresql/15".to_string());
    std::path::Path::new(&share)
        .join("extension/torii.control")
        .exists()
}
