//! SQL API of the hints: stored hints and hint reports.

use std::ffi::CString;

use pgrx::pg_sys;
use pgrx::prelude::*;

use super::{start_collect, take_collect};

extension_sql!(
    r#"
CREATE TABLE torii.hint_store (
    query_id   bigint PRIMARY KEY,
    query_text text,
    hints      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE torii.hint_store IS 'planner hints applied to queries by query id';
SELECT pg_catalog.pg_extension_config_dump('torii.hint_store', '');

CREATE VIEW torii.hints AS
    SELECT query_id, query_text, hints, updated_at FROM torii.hint_store;
"#,
    name = "hints_catalog",
);

/// Parse, analyze and rewrite `query`; returns the resulting Query trees.
unsafe fn analyze(query: &CString) -> Vec<*mut pg_sys::Query> {
    let mut out = Vec::new();
    let raws = pg_sys::pg_parse_query(query.as_ptr());
    if raws.is_null() {
        return out;
    }
    for i in 0..(*raws).length as usize {
        let raw = (*(*raws).elements.add(i)).ptr_value as *mut pg_sys::RawStmt;
        let mut ptypes: *mut pg_sys::Oid = std::ptr::null_mut();
        let mut nparams: i32 = 0;
        let qs = pg_sys::pg_analyze_and_rewrite_varparams(
            raw,
            query.as_ptr(),
            &mut ptypes,
            &mut nparams,
            std::ptr::null_mut(),
        );
        if !qs.is_null() {
            for j in 0..(*qs).length as usize {
                out.push((*(*qs).elements.add(j)).ptr_value as *mut pg_sys::Query);
            }
        }
    }
    out
}

fn cstring(query: &str) -> CString {
    CString::new(query).unwrap_or_else(|_| error!("query text must not contain NUL bytes"))
}

/// The query id PostgreSQL computes for `query` (what stored hints are keyed
/// by). Constants do not matter: `WHERE a = 1` and `WHERE a = 2` share it.
#[pg_extern]
fn query_id(query: &str) -> i64 {
    let c = cstring(query);
    let qs = unsafe { analyze(&c) };
    let Some(q) = qs.first() else {
        error!("torii.query_id: no statement in query text");
    };
    let id = unsafe { super::query_id_of(*q, c.as_ptr()) };
    if id == 0 {
        error!("torii.query_id: query ids are not computed (set compute_query_id to on or auto and load torii before parsing)");
    }
    id
}

fn validate(hints: &str) {
    let parsed = torii_hints::parse_hints(hints);
    if let Some(e) = parsed.errors.first() {
        error!("invalid hints: {e}");
    }
    if parsed.hints.is_empty() {
        error!("invalid hints: no hint given");
    }
}

/// Stored hints are table rows: refuse cleanly where writes are not allowed (a standby, a
/// read-only transaction) instead of failing deep inside SPI.
fn require_writable(what: &std::ffi::CStr) {
    // SAFETY: raises the standard 25006 error when the transaction is read-only.
    unsafe { pg_sys::PreventCommandIfReadOnly(what.as_ptr()) }
}

fn store(id: i64, query_text: Option<&str>, hints: &str) {
    require_writable(c"torii.hint_set()");
    validate(hints);
    Spi::run_with_args(
        "INSERT INTO torii.hint_store(query_id, query_text, hints) VALUES ($1, $2, $3)
         ON CONFLICT (query_id) DO UPDATE
            SET query_text = coalesce(EXCLUDED.query_text, torii.hint_store.query_text),
                hints = EXCLUDED.hints, updated_at = now()",
        &[id.into(), query_text.into(), hints.into()],
    )
    .unwrap_or_else(|e| error!("torii.hint_set: {e}"));
}

/// Store hints (pg_hint_plan syntax, without the comment marks) for a query id.
#[pg_extern(name = "hint_set")]
fn hint_set_id(query_id: i64, hints: &str) -> i64 {
    store(query_id, None, hints);
    query_id
}

/// Store hints for the query id of `query_text`; returns the query id.
#[pg_extern(name = "hint_set")]
fn hint_set_text(query_text: &str, hints: &str) -> i64 {
    let id = query_id(query_text);
    store(id, Some(query_text), hints);
    id
}

fn clear(id: i64) -> bool {
    require_writable(c"torii.hint_clear()");
    Spi::get_one_with_args::<i64>(
        "WITH d AS (DELETE FROM torii.hint_store WHERE query_id = $1 RETURNING 1) SELECT count(*) FROM d",
        &[id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0)
        > 0
}

/// Remove the stored hints of a query id; true when there were some.
#[pg_extern(name = "hint_clear")]
fn hint_clear_id(query_id: i64) -> bool {
    clear(query_id)
}

/// Remove the stored hints of the query id of `query_text`.
#[pg_extern(name = "hint_clear")]
fn hint_clear_text(query_text: &str) -> bool {
    clear(query_id(query_text))
}

/// Plan `query` (without running it) and report, per hint, whether it was
/// used, not used, superseded by a later hint (duplicated) or erroneous.
#[pg_extern]
fn explain_hints(
    query: &str,
) -> TableIterator<
    'static,
    (
        name!(hint, String),
        name!(status, String),
        name!(detail, String),
    ),
> {
    let c = cstring(query);
    start_collect();
    unsafe {
        for q in analyze(&c) {
            if (*q).commandType != pg_sys::CmdType::CMD_UTILITY {
                pg_sys::pg_plan_query(
                    q,
                    c.as_ptr(),
                    pg_sys::CURSOR_OPT_PARALLEL_OK as i32,
                    std::ptr::null_mut(),
                );
            }
        }
    }
    let rows: Vec<_> = take_collect()
        .into_iter()
        .map(|e| (e.text, e.status.label().to_string(), e.detail))
        .collect();
    TableIterator::new(rows)
}
