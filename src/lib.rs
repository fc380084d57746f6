//! # torii
//!
//! A PostgreSQL 15 table access method without bloat. The layers:
//!
//! * `torii-core` (workspace crate, no pgrx): page, metapage and row formats, visibility rules,
//!   the page operations and row-level WAL records that the primary and WAL redo share.
//! * [`storage`]: those formats applied to PostgreSQL's buffers; WAL through torii's resource
//!   manager (preloaded) or generic WAL.
//! * [`am`]: the `TableAmRoutine` callbacks, grouped by kind (scan, modify, fetch, DDL, index).
//! * [`sql_api`]: SQL functions in schema `torii`.
//! * `hints`: planner hints (`torii-hints` parses them, pgrx-free).

pgrx::pg_module_magic!();

/// `#[pg_guard]` on an `extern` block (see [`pg_extra`]) expands to `crate::ffi::…`.
pub(crate) use pgrx::pg_sys::ffi;

pub mod am;
pub mod btree;
mod hints;
pub mod pg_extra;
pub mod progress;
pub mod sql_api;
pub mod storage;

/// Loads torii: registers its WAL resource manager when preloaded (`storage::rmgr`), installs
/// the planner-hint hooks (see docs/hints.md).
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    storage::rmgr::register();
    hints::init();
    am::vacuum::init_gucs();
    progress::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // Row-level WAL, as users run torii; redo is checked by the crash and replication
        // tests of the harness.
        vec!["shared_preload_libraries = 'torii'"]
    }
}
