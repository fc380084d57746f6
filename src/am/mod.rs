//! The table access method `torii`: the `TableAmRoutine` and its callbacks, one module per
//! callback group. Each callback is a thin `#[pg_guard]` function over torii-core's formats and
//! rules.

pub mod ddl;
pub mod fetch;
pub mod index_build;
pub mod modify;
pub mod scan;
pub mod transition;
pub mod vacuum;
pub mod visibility;
pub mod write;

use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_guard]
unsafe extern "C-unwind" fn slot_callbacks(
    _rel: pg_sys::Relation,
) -> *const pg_sys::TupleTableSlotOps {
    // Rows are heap-format tuples (see torii_core::row), copied out of the page.
    &raw const pg_sys::TTSOpsHeapTuple
}

/// The routine lives for the life of the backend, as PostgreSQL requires.
static ROUTINE: pg_sys::TableAmRoutine = pg_sys::TableAmRoutine {
    type_: pg_sys::NodeTag::T_TableAmRoutine,
    slot_callbacks: Some(slot_callbacks),
    scan_begin: Some(scan::scan_begin),
    scan_end: Some(scan::scan_end),
    scan_rescan: Some(scan::scan_rescan),
    scan_getnextslot: Some(scan::scan_getnextslot),
    scan_set_tidrange: Some(scan::scan_set_tidrange),
    scan_getnextslot_tidrange: Some(scan::scan_getnextslot_tidrange),
    parallelscan_estimate: Some(scan::parallelscan_estimate),
    parallelscan_initialize: Some(scan::parallelscan_initialize),
    parallelscan_reinitialize: Some(scan::parallelscan_reinitialize),
    index_fetch_begin: Some(fetch::index_fetch_begin),
    index_fetch_reset: Some(fetch::index_fetch_reset),
    index_fetch_end: Some(fetch::index_fetch_end),
    index_fetch_tuple: Some(fetch::index_fetch_tuple),
    tuple_fetch_row_version: Some(fetch::tuple_fetch_row_version),
    tuple_tid_valid: Some(fetch::tuple_tid_valid),
    tuple_get_latest_tid: Some(fetch::tuple_get_latest_tid),
    tuple_satisfies_snapshot: Some(fetch::tuple_satisfies_snapshot),
    index_delete_tuples: Some(fetch::index_delete_tuples),
    tuple_insert: Some(modify::tuple_insert),
    tuple_insert_speculative: Some(write::tuple_insert_speculative),
    tuple_complete_speculative: Some(write::tuple_complete_speculative),
    multi_insert: Some(modify::multi_insert),
    tuple_delete: Some(write::tuple_delete),
    tuple_update: Some(write::tuple_update),
    tuple_lock: Some(write::tuple_lock),
    finish_bulk_insert: Some(modify::finish_bulk_insert),
    relation_set_new_filenode: Some(ddl::relation_set_new_filenode),
    relation_nontransactional_truncate: Some(ddl::relation_nontransactional_truncate),
    relation_copy_data: Some(ddl::relation_copy_data),
    relation_copy_for_cluster: Some(ddl::relation_copy_for_cluster),
    relation_vacuum: Some(vacuum::relation_vacuum),
    scan_analyze_next_block: Some(scan::scan_analyze_next_block),
    scan_analyze_next_tuple: Some(scan::scan_analyze_next_tuple),
    index_build_range_scan: Some(index_build::torii_index_build_range_scan),
    index_validate_scan: Some(index_build::torii_index_validate_scan),
    relation_size: Some(ddl::relation_size),
    relation_needs_toast_table: Some(ddl::relation_needs_toast_table),
    relation_toast_am: Some(ddl::relation_toast_am),
    relation_fetch_toast_slice: Some(ddl::relation_fetch_toast_slice),
    relation_estimate_size: Some(ddl::relation_estimate_size),
    scan_bitmap_next_block: Some(scan::scan_bitmap_next_block),
    scan_bitmap_next_tuple: Some(scan::scan_bitmap_next_tuple),
    scan_sample_next_block: Some(scan::scan_sample_next_block),
    scan_sample_next_tuple: Some(scan::scan_sample_next_tuple),
};

/// True if `rel` is a torii table.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn is_torii(rel: pg_sys::Relation) -> bool {
    std::ptr::eq((*rel).rd_tableam, &ROUTINE)
}

#[no_mangle]
pub extern "C" fn pg_finfo_torii_tableam_handler() -> &'static pg_sys::Pg_finfo_record {
    static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `torii_tableam_handler(internal) RETURNS table_am_handler`.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn torii_tableam_handler(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    pg_sys::Datum::from(&ROUTINE as *const pg_sys::TableAmRoutine)
}

extension_sql!(
    r#"
CREATE FUNCTION torii_tableam_handler(internal) RETURNS table_am_handler
    AS 'MODULE_PATHNAME', 'torii_tableam_handler' LANGUAGE C STRICT;
CREATE ACCESS METHOD torii TYPE TABLE HANDLER torii_tableam_handler;
COMMENT ON ACCESS METHOD torii IS 'torii: in-place updates with undo, 64-bit xids, CRC32C pages';
"#,
    name = "torii_table_am",
);
