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
    let bytes = form_stored_row(rel, tup, std::ptr::null_mut(), xid, cid, options);
    stamp_slot_tuple(tup, xid, cid);
    PreparedRow {
        bytes,
        slot_tuple: tup,
    }
}

/// Gives the executor's copy of a row just written the system columns heap gives it (`xmin` =
/// the writer, `xmax` = none, `cmin` = the command), which `RETURNING xmin, cmin` read. The
/// stored row has torii's header instead; only the slot's tuple is changed.
///
/// # Safety
/// `tup` must be a valid, writable heap tuple (a slot's materialized tuple).
pub unsafe fn stamp_slot_tuple(tup: pg_sys::HeapTuple, xid: u64, cid: pg_sys::CommandId) {
    let td = (*tup).t_data;
    (*td).t_choice.t_heap.t_xmin = pg_sys::TransactionId::from_inner(xid as u32);
    (*td).t_choice.t_heap.t_xmax = pg_sys::InvalidTransactionId;
    (*td).t_choice.t_heap.t_field3.t_cid = cid;
    (*td).t_infomask &= !(pg_sys::HEAP_XACT_MASK as u16);
    (*td).t_infomask |= pg_sys::HEAP_XMAX_INVALID as u16;
}

/// The bytes to store for heap tuple `tup` in `rel`: TOASTed like heap does (into `rel`'s
/// TOAST table) and stamped with the version header.
///
/// # Safety
/// `rel` must be an open relation, `tup` a valid heap tuple for it and `old` null or a valid
/// heap tuple.
pub unsafe fn form_stored_row(
    rel: pg_sys::Relation,
    tup: pg_sys::HeapTuple,
    old: pg_sys::HeapTuple,
    xid: u64,
    cid: pg_sys::CommandId,
    options: i32,
) -> Vec<u8> {
    let external = |t: pg_sys::HeapTuple| {
        !t.is_null() && (*(*t).t_data).t_infomask & pg_sys::HEAP_HASEXTERNAL as u16 != 0
    };
    let stored = if (*(*rel).rd_rel).relkind as u8 != pg_sys::RELKIND_TOASTVALUE
        && (external(tup) || external(old) || (*tup).t_len > TOAST_TUPLE_THRESHOLD)
    {
        crate::pg_extra::heap_toast_insert_or_update(rel, tup, old, options)
    } else {
        tup
    };
    let bytes = std::slice::from_raw_parts((*stored).t_data as *const u8, (*stored).t_len as usize);
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
        // Gather the rows that fit on this page, counted as the page operation will place them
        // (reused line pointers first); find_room chose the page for the first row, later
        // ones keep the fillfactor reserve.
        let lens: Vec<usize> = rows[i..].iter().map(|r| r.bytes.len()).collect();
        let n = torii_core::pageop::fitting_prefix(
            (!target.format).then(|| target.buf.page()),
            &lens,
            torii_core::page::MAX_ROWS_PER_PAGE,
            pages::fillfactor_reserve(rel),
        );
        let batch: Vec<&[u8]> = rows[i..i + n].iter().map(|r| &r.bytes[..]).collect();
        assert!(
            !batch.is_empty(),
            "find_room chose a page the row does not fit on"
        );
        let blk = target.buf.block();
        let offs = add_noted(rel, &target, &batch);
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

/// Inserts one slot; a speculative insertion (ON CONFLICT) marks the row with its token
/// until `tuple_complete_speculative`.
///
/// # Safety
/// `rel` must be open with at least RowExclusiveLock, `slot` a valid slot holding a row of it,
/// and `bistate` null or a live bulk insert state.
pub unsafe fn insert_slot(
    rel: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    cid: pg_sys::CommandId,
    options: i32,
    bistate: *mut pg_sys::BulkInsertStateData,
    spec_token: Option<u32>,
) {
    crate::pg_extra::CheckForSerializableConflictIn(
        rel,
        std::ptr::null_mut(),
        pg_sys::InvalidBlockNumber,
    );
    let mut row = prepare_row(rel, slot, current_xid(), cid, options);
    if let Some(token) = spec_token {
        let mut h = torii_core::row::RowHeader::read(&row.bytes);
        h.infomask |= torii_core::row::FLAG_SPECULATIVE;
        h.undo = torii_core::row::UndoPtr { blk: token, off: 0 };
        h.write(&mut row.bytes);
    }
    place_rows(rel, &[row], &[slot], bulk_strategy(bistate));
    pg_sys::pgstat_count_heap_insert(rel, 1);
}

/// Places already formed row bytes (the new version of a cold update) and returns its TID.
///
/// # Safety
/// `rel` must be open with at least RowExclusiveLock and `bytes` a row formed for it by
/// [`form_stored_row`].
pub unsafe fn insert_row_bytes(rel: pg_sys::Relation, bytes: &[u8]) -> pg_sys::ItemPointerData {
    let target = pages::find_room(rel, bytes.len(), std::ptr::null_mut());
    let offs = add_noted(rel, &target, &[bytes]);
    tid(target.buf.block(), offs[0])
}

/// The top-level xid the set belongs to, and the blocks it noted: (relfilenode, block, writer xid).
type NotedBlocks = (u64, std::collections::HashSet<(u32, u32, u64)>);

thread_local! {
    /// Blocks this transaction already noted in undo: (relfilenode, block, writer xid).
    static NOTED: std::cell::RefCell<NotedBlocks> =
        std::cell::RefCell::new((0, std::collections::HashSet::new()));
}

/// Forgets the blocks noted for `rel`: a truncation in place (of a table created in this
/// transaction) empties the file and its undo, so the next rows in those blocks need notes anew.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn forget_noted(rel: pg_sys::Relation) {
    // SAFETY: reading the relation's file number from a live relcache entry.
    let node: u32 = unsafe { (*rel).rd_node.relNode.into() };
    NOTED.with(|n| n.borrow_mut().1.retain(|k| k.0 != node));
}

/// Adds rows written by the current (sub)transaction to a locked page; the first time this
/// transaction writes rows to the block, an insert note goes to undo in the same WAL record,
/// so that discard can find and remove the rows if the transaction aborts.
unsafe fn add_noted(
    rel: pg_sys::Relation,
    target: &pages::Target,
    rows: &[&[u8]],
) -> Vec<pg_sys::OffsetNumber> {
    let blk = target.buf.block();
    let xid = torii_core::row::RowHeader::read(rows[0]).xid;
    let top = pg_sys::GetTopFullTransactionIdIfAny().value;
    let key = ((*rel).rd_node.relNode.into(), blk, xid);
    let noted = NOTED.with(|n| {
        let mut n = n.borrow_mut();
        if n.0 != top {
            n.0 = top;
            n.1.clear();
        }
        n.1.contains(&key)
    });
    if noted {
        return wal::add_rows(rel, &target.buf, target.format, rows);
    }
    let note = torii_core::undo::UndoRecord {
        xid,
        cid: 0,
        tid_blk: blk,
        tid_off: 0,
        kind: torii_core::undo::UndoKind::Insert,
        delta: false,
        image: &[],
    }
    .encode();
    let space = crate::storage::undo::reserve(rel, note.len());
    let offs = wal::add_rows_noted(rel, &target.buf, target.format, rows, &space);
    // Remembered only once the note is written: an ERROR before must not skip it next time.
    NOTED.with(|n| n.borrow_mut().1.insert(key));
    offs
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_insert(
    rel: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    cid: pg_sys::CommandId,
    options: i32,
    bistate: *mut pg_sys::BulkInsertStateData,
) {
    insert_slot(rel, slot, cid, options, bistate, None);
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
    crate::pg_extra::CheckForSerializableConflictIn(
        rel,
        std::ptr::null_mut(),
        pg_sys::InvalidBlockNumber,
    );
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
