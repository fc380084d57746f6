//! Fetching rows by TID: index scans, TID scans, trigger and EvalPlanQual fetches.
//!
//! The row is copied out of the page under the share lock into the slot's own memory, since
//! in-place updates may change the shared page as soon as the lock is released.

use super::visibility::{Snap, Version};
use crate::storage::buffer::Lock;
use crate::storage::{pages, tid_parts};
use pgrx::pg_sys;
use pgrx::prelude::*;
use torii_core::page::{self, PageKind, LP_DEAD, LP_NORMAL};
use torii_core::visibility::{SnapshotKind, XactOracle};

/// Reads the row at `tid` if `snapshot` sees it, and stores a copy in `slot`.
unsafe fn fetch_into(
    rel: pg_sys::Relation,
    tid: &pg_sys::ItemPointerData,
    snap: &Snap,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    fetch_version_into(rel, tid, snap, None, slot)
}

/// [`fetch_into`]; with `as_of`, the version that snapshot sees is returned instead when there
/// is one, unless this transaction wrote or locked the row's newest version (see
/// `tuple_fetch_row_version`).
unsafe fn fetch_version_into(
    rel: pg_sys::Relation,
    tid: &pg_sys::ItemPointerData,
    snap: &Snap,
    as_of: Option<&Snap>,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    let (blk, off) = tid_parts(tid);
    // Index entries and the executor's TIDs point inside the table (TID scans check
    // tuple_tid_valid first), so no size lookup is needed here.
    if blk == 0 || off == 0 {
        return false;
    }
    let (b, valid) = pages::read_verified(rel, blk, Lock::Share, std::ptr::null_mut());
    let p = b.page();
    if !valid || page::kind(p) != Some(PageKind::Data) || off as usize > page::line_pointer_count(p)
    {
        return false;
    }
    let lp = page::line_pointer(p, off as usize);
    if lp.flags != LP_NORMAL || lp.off + lp.len > page::SPECIAL_OFFSET {
        return false;
    }
    let row = &p[lp.off..lp.off + lp.len];
    if let Err(e) = torii_core::row::validate(row) {
        pages::report_corrupt(
            rel,
            blk,
            &page::PageError::Malformed(format!("row {off}: {e}")),
        );
    }
    // On a page marked all-visible the stored row is what an MVCC snapshot sees (as scans).
    let all_visible = torii_core::vm::page_all_visible(p);
    let resolve = |s: &Snap| {
        if all_visible && s.sees_all_visible_pages() {
            return Some(row.to_vec());
        }
        match s.resolve(rel, row) {
            Version::None => None,
            Version::Current(r) => Some(r.to_vec()),
            Version::Old(img) => Some(img),
        }
    };
    let newest = torii_core::row::RowHeader::read(row).xid;
    let version: Option<Vec<u8>> = as_of
        .filter(|a| {
            !a.oracle.is_current(newest) && !super::write::locked_version_is(rel, blk, off, newest)
        })
        .and_then(resolve)
        .or_else(|| resolve(snap));
    drop(b);
    let Some(v) = version else {
        return false;
    };
    if !snap.raw.is_null() && (*snap.raw).snapshot_type == pg_sys::SnapshotType::SNAPSHOT_MVCC {
        let writer = torii_core::row::RowHeader::read(&v).xid;
        let mut t = super::visibility::predicate_tid(blk, off, writer);
        crate::pg_extra::PredicateLockTID(rel, &mut t, snap.raw, super::visibility::xid_of(writer));
    }
    store_copy(rel, &v, *tid, slot);
    true
}

/// A copy of the row stored at `tid` as it is on the page (no visibility applied), if its
/// line pointer is normal.
///
/// # Safety
/// `rel` must be an open torii table.
pub unsafe fn stored_row(rel: pg_sys::Relation, tid: &pg_sys::ItemPointerData) -> Option<Vec<u8>> {
    let (blk, off) = tid_parts(tid);
    if blk == 0 || off == 0 || blk >= pages::nblocks(rel) {
        return None;
    }
    let (b, valid) = pages::read_verified(rel, blk, Lock::Share, std::ptr::null_mut());
    let p = b.page();
    if !valid || page::kind(p) != Some(PageKind::Data) || off as usize > page::line_pointer_count(p)
    {
        return None;
    }
    let lp = page::line_pointer(p, off as usize);
    if lp.flags != LP_NORMAL || lp.off + lp.len > page::SPECIAL_OFFSET {
        return None;
    }
    let row = &p[lp.off..lp.off + lp.len];
    if let Err(e) = torii_core::row::validate(row) {
        pages::report_corrupt(
            rel,
            blk,
            &page::PageError::Malformed(format!("row {off}: {e}")),
        );
    }
    Some(row.to_vec())
}

/// True if no snapshot, now or later, can see any version at `tid`: its line pointer is dead;
/// or it holds a row inserted by a transaction that aborted (an insert has no previous
/// version, and rollback never brings an aborted insert back); or a row whose delete (or move
/// away) committed before every snapshot's horizon (heap's "surely dead"). Then the index AM
/// may kill the entry (kill_prior_tuple).
///
/// # Safety
/// `rel` must be an open torii table.
unsafe fn never_visible(rel: pg_sys::Relation, tid: &pg_sys::ItemPointerData) -> bool {
    use super::visibility::{writer_status_in, WriterStatus};
    let (blk, off) = tid_parts(tid);
    if blk == 0 || off == 0 || blk >= pages::nblocks(rel) {
        return false;
    }
    let (b, valid) = pages::read_verified(rel, blk, Lock::Share, std::ptr::null_mut());
    let p = b.page();
    if !valid || page::kind(p) != Some(PageKind::Data) || off as usize > page::line_pointer_count(p)
    {
        return false;
    }
    let lp = page::line_pointer(p, off as usize);
    if lp.flags == LP_DEAD {
        return true;
    }
    if lp.flags != LP_NORMAL
        || lp.off + lp.len > page::SPECIAL_OFFSET
        || lp.len < torii_core::row::HEADER_SIZE
    {
        return false;
    }
    let h = torii_core::row::RowHeader::read(&p[lp.off..lp.off + lp.len]);
    drop(b);
    if h.is_deleted() {
        // Every older version is older than the delete, so invisible to everyone too.
        let removable = h.xid == 0
            || pg_sys::GlobalVisCheckRemovableFullXid(
                rel,
                pg_sys::FullTransactionId { value: h.xid },
            );
        return removable && writer_status_in(rel, h.xid) == WriterStatus::Committed;
    }
    let insert = h.undo.is_none() || h.is_speculative();
    insert && writer_status_in(rel, h.xid) == WriterStatus::Aborted
}

/// Stores a palloc'd copy of `row` in `slot` (freed with the slot's contents).
///
/// # Safety
/// `rel` must be an open relation and `slot` a valid heap tuple slot.
pub unsafe fn store_copy(
    rel: pg_sys::Relation,
    row: &[u8],
    t: pg_sys::ItemPointerData,
    slot: *mut pg_sys::TupleTableSlot,
) {
    let hsize = std::mem::size_of::<pg_sys::HeapTupleData>();
    let mem = pg_sys::MemoryContextAlloc((*slot).tts_mcxt, hsize + row.len()) as *mut u8;
    let tup = mem as pg_sys::HeapTuple;
    let data = mem.add(hsize);
    std::ptr::copy_nonoverlapping(row.as_ptr(), data, row.len());
    (*tup).t_len = row.len() as u32;
    (*tup).t_self = t;
    (*tup).t_tableOid = (*rel).rd_id;
    (*tup).t_data = data as pg_sys::HeapTupleHeader;
    pg_sys::ExecStoreHeapTuple(tup, slot, true);
}

#[repr(C)]
struct ToriiIndexFetch {
    base: pg_sys::IndexFetchTableData,
}

#[pg_guard]
pub unsafe extern "C-unwind" fn index_fetch_begin(
    rel: pg_sys::Relation,
) -> *mut pg_sys::IndexFetchTableData {
    let f = pg_sys::palloc0(std::mem::size_of::<ToriiIndexFetch>()) as *mut ToriiIndexFetch;
    (*f).base.rel = rel;
    f as *mut pg_sys::IndexFetchTableData
}

#[pg_guard]
pub unsafe extern "C-unwind" fn index_fetch_reset(_data: *mut pg_sys::IndexFetchTableData) {}

#[pg_guard]
pub unsafe extern "C-unwind" fn index_fetch_end(data: *mut pg_sys::IndexFetchTableData) {
    pg_sys::pfree(data as *mut _);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn index_fetch_tuple(
    scan: *mut pg_sys::IndexFetchTableData,
    tid: pg_sys::ItemPointer,
    snapshot: pg_sys::Snapshot,
    slot: *mut pg_sys::TupleTableSlot,
    call_again: *mut bool,
    all_dead: *mut bool,
) -> bool {
    // One version per TID is reachable from an index entry.
    *call_again = false;
    if !all_dead.is_null() {
        *all_dead = false;
    }
    let rel = (*scan).rel;
    let snap = Snap::new(snapshot);
    let found = fetch_into(rel, &*tid, &snap, slot);
    if !found && !all_dead.is_null() {
        // Lets the index AM mark the entry dead (kill_prior_tuple) when no snapshot can ever
        // see a version behind it; otherwise entries are left for VACUUM.
        *all_dead = never_visible(rel, &*tid);
    }
    if found && super::scan::should_count(rel) {
        (*(*rel).pgstat_info).t_counts.t_tuples_fetched += 1;
    }
    found
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_fetch_row_version(
    rel: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    snapshot: pg_sys::Snapshot,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    let snap = Snap::for_row_fetch(snapshot);
    // A heap TID names one version: the one the executor's scan found (its snapshot's), or
    // the newest it locked or wrote since. A torii TID names the row, so a SnapshotAny fetch
    // answers as of the active snapshot unless this transaction wrote or locked the newest
    // version: EvalPlanQual re-reading a row of a table it does not lock (ROW_MARK_REFERENCE)
    // then sees the row the statement saw, as on heap; an UPDATE builds its new row from the
    // version its scan saw, and the concurrent update it then reports takes it through
    // EvalPlanQual to the newest version (locked, so fetched as the newest), as on heap.
    let as_of = if snap.kind == SnapshotKind::RowVersion
        && pg_sys::ActiveSnapshotSet()
        && (*pg_sys::GetActiveSnapshot()).snapshot_type == pg_sys::SnapshotType::SNAPSHOT_MVCC
    {
        Some(Snap::new(pg_sys::GetActiveSnapshot()))
    } else {
        None
    };
    fetch_version_into(rel, &*tid, &snap, as_of.as_ref(), slot)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_tid_valid(
    sscan: pg_sys::TableScanDesc,
    tid: pg_sys::ItemPointer,
) -> bool {
    let scan = &*(sscan as *mut super::scan::ToriiScan);
    let (blk, off) = tid_parts(&*tid);
    off != 0 && blk != 0 && blk < scan.nblocks
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_get_latest_tid(
    _sscan: pg_sys::TableScanDesc,
    _tid: pg_sys::ItemPointer,
) {
    // Rows do not move yet: the TID is the latest.
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_satisfies_snapshot(
    rel: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    snapshot: pg_sys::Snapshot,
) -> bool {
    // The slot's copy may be stale: ask the page.
    let (blk, off) = tid_parts(&(*slot).tts_tid);
    if blk == 0 || blk >= pages::nblocks(rel) {
        return false;
    }
    let (b, valid) = pages::read_verified(rel, blk, Lock::Share, std::ptr::null_mut());
    let p = b.page();
    if !valid || page::kind(p) != Some(PageKind::Data) || off as usize > page::line_pointer_count(p)
    {
        return false;
    }
    let lp = page::line_pointer(p, off as usize);
    if lp.flags != LP_NORMAL {
        return false;
    }
    Snap::new(snapshot).sees(rel, &p[lp.off..lp.off + lp.len])
}

#[pg_guard]
pub unsafe extern "C-unwind" fn index_delete_tuples(
    _rel: pg_sys::Relation,
    _delstate: *mut pg_sys::TM_IndexDeleteOp,
) -> pg_sys::TransactionId {
    // torii never reports index entries as dead (all_dead stays false) and rows are not
    // removed yet, so no entry is known deletable.
    pg_sys::InvalidTransactionId
}
