//! INSERT, COPY (multi-insert), and the write callbacks that come with undo.

use crate::storage::{pages, tid, wal};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// `TOAST_TUPLE_THRESHOLD` for 8 kB pages: rows above it are compressed or moved out of line.
const TOAST_TUPLE_THRESHOLD: u32 = 2032;

/// A row ready to be placed: its bytes, and the heap tuple of the slot whose `t_self` must be
/// set once the row has a TID.
struct PreparedRow {
    bytes: Vec<u8>,
    slot_tuple: pg_sys::HeapTuple,
}

/// Forms the stored row for a slot: TOASTs wide values like heap and stamps the version header.
unsafe fn prepare_row(
    rel: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    xid: u64,
    cid: pg_sys::CommandId,
    options: i32,
) -> PreparedRow {
    let mut should_free = false;
    let tup = pg_sys::ExecFetchSlotHeapTuple(slot, true, &mut should_free);
    (*slot).tts_tableOid = (*rel).rd_id;
    (*tup).t_tableOid = (*rel).rd_id;
    PreparedRow {
        bytes: form_stored_row(rel, tup, xid, cid, options),
        slot_tuple: tup,
    }
}

/// The bytes to store for heap tuple `tup` in `rel`: TOASTed like heap does (into `rel`'s
/// TOAST table) and stamped with the version header.
pub unsafe fn form_stored_row(
    rel: pg_sys::Relation,
    tup: pg_sys::HeapTuple,
    xid: u64,
    cid: pg_sys::CommandId,
    options: i32,
) -> Vec<u8> {
    let has_external = (*(*tup).t_data).t_infomask & pg_sys::HEAP_HASEXTERNAL as u16 != 0;
    let stored = if (*(*rel).rd_rel).relkind as u8 != pg_sys::RELKIND_TOASTVALUE
        && (has_external || (*tup).t_len > TOAST_TUPLE_THRESHOLD)
    {
        crate::pg_extra::heap_toast_insert_or_update(rel, tup, std::ptr::null_mut(), options)
    } else {
        tup
    };
    let bytes =
        std::slice::from_raw_parts((*stored).t_data as *const u8, (*stored).t_len as usize);
    let mut v = bytes.to_vec();
    if stored != tup {
        pg_sys::heap_freetuple(stored);
    }
    let len = torii_core::row::stamp_heap_tuple(&mut v, xid, cid).unwrap_or_else(|e| {
        error!("torii: cannot store row: {e}");
    });
    if len > pages::MAX_ROW_SIZE {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "row is too big: size {len}, maximum size {}",
                pages::MAX_ROW_SIZE
            )
        );
    }
    v
}

/// The writer's full transaction id (assigning one if needed).
pub fn current_xid() -> u64 {
    // SAFETY: plain transaction-state call.
    unsafe { pg_sys::GetCurrentFullTransactionId().value }
}

fn bulk_strategy(bistate: *mut pg_sys::BulkInsertStateData) -> pg_sys::BufferAccessStrategy {
    if bistate.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: a live BulkInsertState from the caller.
        unsafe { (*(bistate as *mut crate::pg_extra::BulkInsertStateData)).strategy }
    }
}

/// Places rows on pages, as many per page (and per WAL record) as fit, and sets the TIDs.
unsafe fn place_rows(
    rel: pg_sys::Relation,
    rows: &[PreparedRow],
    slots: &[*mut pg_sys::TupleTableSlot],
    strategy: pg_sys::BufferAccessStrategy,
) {
    let mut i = 0;
    while i < rows.len() {
        let target = pages::find_room(rel, rows[i].bytes.len(), strategy);
        // Gather the rows that fit on this page.
        let p = target.buf.page();
        let (mut lower, mut upper, mut nlp) = if target.format {
            (
                torii_core::page::PAGE_HEADER_SIZE,
                torii_core::page::SPECIAL_OFFSET,
                0,
            )
        } else {
            (
                torii_core::page::pd_lower(p),
                torii_core::page::pd_upper(p),
                torii_core::page::line_pointer_count(p),
            )
        };
        let mut batch: Vec<&[u8]> = Vec::new();
        while i + batch.len() < rows.len() {
            let len = rows[i + batch.len()].bytes.len();
            let need = pages::space_needed(len);
            if nlp >= torii_core::page::MAX_ROWS_PER_PAGE || upper - lower < need {
                break;
            }
            lower += torii_core::page::ITEM_ID_SIZE;
            upper -= len.next_multiple_of(8);
            nlp += 1;
            batch.push(&rows[i + batch.len()].bytes);
        }
        assert!(!batch.is_empty(), "a fresh page takes any row");
        let offs = wal::add_rows(rel, &target.buf, target.format, &batch);
        let blk = target.buf.block();
        for (k, off) in offs.iter().enumerate() {
            let t = tid(blk, *off);
            (*slots[i + k]).tts_tid = t;
            (*rows[i + k].slot_tuple).t_self = t;
        }
        i += batch.len();
        if i < rows.len() {
            pages::record_free(rel, blk, target.buf.page());
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_insert(
    rel: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    cid: pg_sys::CommandId,
    options: i32,
    bistate: *mut pg_sys::BulkInsertStateData,
) {
    crate::pg_extra::CheckForSerializableConflictIn(rel, std::ptr::null_mut(), pg_sys::InvalidBlockNumber);
    let row = prepare_row(rel, slot, current_xid(), cid, options);
    place_rows(rel, &[row], &[slot], bulk_strategy(bistate));
    pg_sys::pgstat_count_heap_insert(rel, 1);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn multi_insert(
    rel: pg_sys::Relation,
    slots: *mut *mut pg_sys::TupleTableSlot,
    nslots: i32,
    cid: pg_sys::CommandId,
    options: i32,
    bistate: *mut pg_sys::BulkInsertStateData,
) {
    crate::pg_extra::CheckForSerializableConflictIn(rel, std::ptr::null_mut(), pg_sys::InvalidBlockNumber);
    let slots = std::slice::from_raw_parts(slots, nslots as usize);
    let xid = current_xid();
    let rows: Vec<PreparedRow> = slots
        .iter()
        .map(|&s| prepare_row(rel, s, xid, cid, options))
        .collect();
    place_rows(rel, &rows, slots, bulk_strategy(bistate));
    pg_sys::pgstat_count_heap_insert(rel, nslots as i64);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn finish_bulk_insert(_rel: pg_sys::Relation, _options: i32) {}

fn not_yet(what: &str) -> ! {
    ereport!(
        PgLogLevel::ERROR,
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        format!("torii: {what} is not supported yet on torii tables"),
        "UPDATE, DELETE, row locks and ON CONFLICT arrive with torii's undo log."
    );
    unreachable!()
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_insert_speculative(
    _rel: pg_sys::Relation,
    _slot: *mut pg_sys::TupleTableSlot,
    _cid: pg_sys::CommandId,
    _options: i32,
    _bistate: *mut pg_sys::BulkInsertStateData,
    _spec_token: u32,
) {
    not_yet("INSERT ... ON CONFLICT")
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_complete_speculative(
    _rel: pg_sys::Relation,
    _slot: *mut pg_sys::TupleTableSlot,
    _spec_token: u32,
    _succeeded: bool,
) {
    not_yet("INSERT ... ON CONFLICT")
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_delete(
    _rel: pg_sys::Relation,
    _tid: pg_sys::ItemPointer,
    _cid: pg_sys::CommandId,
    _snapshot: pg_sys::Snapshot,
    _crosscheck: pg_sys::Snapshot,
    _wait: bool,
    _tmfd: *mut pg_sys::TM_FailureData,
    _changing_part: bool,
) -> pg_sys::TM_Result::Type {
    not_yet("DELETE")
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_update(
    _rel: pg_sys::Relation,
    _otid: pg_sys::ItemPointer,
    _slot: *mut pg_sys::TupleTableSlot,
    _cid: pg_sys::CommandId,
    _snapshot: pg_sys::Snapshot,
    _crosscheck: pg_sys::Snapshot,
    _wait: bool,
    _tmfd: *mut pg_sys::TM_FailureData,
    _lockmode: *mut pg_sys::LockTupleMode::Type,
    _update_indexes: *mut bool,
) -> pg_sys::TM_Result::Type {
    not_yet("UPDATE")
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_lock(
    _rel: pg_sys::Relation,
    _tid: pg_sys::ItemPointer,
    _snapshot: pg_sys::Snapshot,
    _slot: *mut pg_sys::TupleTableSlot,
    _cid: pg_sys::CommandId,
    _mode: pg_sys::LockTupleMode::Type,
    _wait_policy: pg_sys::LockWaitPolicy::Type,
    _flags: u8,
    _tmfd: *mut pg_sys::TM_FailureData,
) -> pg_sys::TM_Result::Type {
    not_yet("row locking (SELECT FOR UPDATE/SHARE, foreign key checks)")
}
