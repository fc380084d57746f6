//! UPDATE, DELETE, row locks (SELECT FOR UPDATE/SHARE, foreign keys) and speculative
//! insertion (INSERT ... ON CONFLICT).
//!
//! ## Protocol
//!
//! * Every writer of an existing row holds PostgreSQL's heavyweight *tuple lock* on its TID
//!   (`LockTuple`, in the mode heap uses for the same operation) while it checks and changes
//!   the row, so no two writers change one row at once, and toasting or placing a moved row
//!   can happen with the page unlocked.
//! * Explicit row locks are tuple locks kept until the end of the transaction: their conflicts
//!   with each other and with writers are the lock manager's (deadlock detection included).
//!   torii needs no MultiXacts: several sharers simply hold compatible tuple locks. (A
//!   transaction locking very many rows needs a lock table to match — `max_locks_per_transaction`.)
//! * The row header's writer tells whether a change is still running (wait for it with
//!   `XactLockTableWait`), aborted (restore the previous image from undo first: rollback on
//!   touch), or committed after our snapshot (`TM_Updated`: the executor's EvalPlanQual or a
//!   serialization failure follows).
//! * After `tuple_lock` has locked a newer version for EvalPlanQual, the update or delete that
//!   follows must accept that version although the statement's snapshot does not see it: a
//!   backend-local note of the locked version ([`LOCKED_VERSIONS`]) says so.

use super::modify::{current_xid, form_stored_row, insert_row_bytes, stamp_slot_tuple};
use super::visibility::{mvcc_sees_change, writer_status_in, xid_of, Snap, Version, WriterStatus};
use crate::storage::buffer::{Lock, LockedBuffer};
use crate::storage::{pages, tid, tid_parts, undo, wal};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use torii_core::page::{self, LP_NORMAL};
use torii_core::row::{self, RowHeader, FLAG_DELETED, FLAG_MOVED, FLAG_SPECULATIVE};
use torii_core::undo::{UndoKind, UndoRecord};

/// Heavyweight lock modes for `LockTupleMode` (KeyShare, Share, NoKeyExclusive, Exclusive),
/// the same mapping as heap's.
fn hw_mode(mode: pg_sys::LockTupleMode::Type) -> i32 {
    match mode {
        pg_sys::LockTupleMode::LockTupleKeyShare => pg_sys::AccessShareLock as i32,
        pg_sys::LockTupleMode::LockTupleShare => pg_sys::RowShareLock as i32,
        pg_sys::LockTupleMode::LockTupleNoKeyExclusive => pg_sys::ExclusiveLock as i32,
        _ => pg_sys::AccessExclusiveLock as i32,
    }
}

/// Does a running change of the given kind conflict with a row lock of `mode`? In-place
/// updates change no indexed column (they conflict like NO KEY UPDATE); deletes and moves
/// like FOR UPDATE.
fn change_conflicts(h: &RowHeader, mode: pg_sys::LockTupleMode::Type) -> bool {
    let exclusive = h.is_deleted() || h.is_moved();
    exclusive || mode != pg_sys::LockTupleMode::LockTupleKeyShare
}

/// (relation, block, offset) -> (our top-level xid, the writer of the version we locked).
type LockedVersions = HashMap<(u32, u32, u16), (u64, u64)>;

thread_local! {
    /// (relation, block, offset) -> (our top-level xid, the writer of the version we locked).
    static LOCKED_VERSIONS: RefCell<LockedVersions> =
        RefCell::new(HashMap::new());
}

fn top_xid() -> u64 {
    // SAFETY: plain transaction-state call.
    unsafe { pg_sys::GetTopFullTransactionIdIfAny().value }
}

unsafe fn note_locked_version(rel: pg_sys::Relation, blk: u32, off: u16, writer: u64) {
    let key = (u32::from((*rel).rd_id), blk, off);
    let top = top_xid();
    LOCKED_VERSIONS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 100_000 {
            // Only a hint for EvalPlanQual retries; dropping entries costs a retry, not safety.
            m.clear();
        }
        m.insert(key, (top, writer));
    });
}

pub(super) unsafe fn locked_version_is(
    rel: pg_sys::Relation,
    blk: u32,
    off: u16,
    writer: u64,
) -> bool {
    let key = (u32::from((*rel).rd_id), blk, off);
    let top = top_xid();
    LOCKED_VERSIONS.with(|m| m.borrow().get(&key) == Some(&(top, writer)))
}

/// A tuple lock held by a writer for the duration of one change.
struct TupleLock {
    rel: pg_sys::Relation,
    tid: pg_sys::ItemPointerData,
    mode: i32,
}

impl TupleLock {
    /// Acquires the lock, waiting if `wait`; None when it is not free and `wait` is false.
    unsafe fn acquire(
        rel: pg_sys::Relation,
        t: pg_sys::ItemPointerData,
        mode: i32,
        wait: bool,
    ) -> Option<TupleLock> {
        let mut tt = t;
        if wait {
            pg_sys::LockTuple(rel, &mut tt, mode);
        } else if !pg_sys::ConditionalLockTuple(rel, &mut tt, mode) {
            return None;
        }
        Some(TupleLock { rel, tid: t, mode })
    }
}

impl Drop for TupleLock {
    fn drop(&mut self) {
        // SAFETY: we hold this lock; releasing a lock does not raise an ERROR.
        unsafe { pg_sys::UnlockTuple(self.rel, &mut self.tid, self.mode) }
    }
}

/// Heap's forwarding TID for a row that moved to another partition
/// (`ItemPointerSetMovedPartitions`: InvalidBlockNumber, MovedPartitionsOffsetNumber).
const MOVED_PARTITIONS: (u32, u16) = (pg_sys::InvalidBlockNumber, 0xfffd);

/// The error heap raises when the newest version of a row to lock is in another partition.
fn moved_to_other_partition() {
    pgrx::ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
        "tuple to be locked was already moved to another partition due to concurrent update"
    );
}

/// The normal row at `off` of a locked page, or None.
fn row_at(p: &[u8], off: u16) -> Option<&[u8]> {
    if off == 0 || off as usize > page::line_pointer_count(p) {
        return None;
    }
    let lp = page::line_pointer(p, off as usize);
    if lp.flags != LP_NORMAL || lp.off + lp.len > page::SPECIAL_OFFSET {
        return None;
    }
    Some(&p[lp.off..lp.off + lp.len])
}

/// Restores the previous image of a row whose last change was aborted (rollback on touch).
/// Returns false when there is no previous image (an aborted insert: no row).
unsafe fn roll_back_on_touch(
    rel: pg_sys::Relation,
    b: &LockedBuffer,
    off: u16,
    h: &RowHeader,
) -> bool {
    if h.undo.is_none() || h.is_speculative() {
        wal::kill_row(rel, b, off);
        return false;
    }
    let rec = undo::read_record(rel, h.undo);
    let current = row_at(b.page(), off)
        .map(|r| r.to_vec())
        .unwrap_or_default();
    let old = UndoRecord::decode(&rec)
        .and_then(|r| r.old_row(&current))
        .unwrap_or_else(|e| pages::report_corrupt(rel, h.undo.blk, &page::PageError::Malformed(e)));
    wal::overwrite_row(rel, b, off, &old);
    true
}

fn fill_tmfd(
    tmfd: *mut pg_sys::TM_FailureData,
    t: pg_sys::ItemPointerData,
    h: &RowHeader,
    is_current: bool,
) {
    if tmfd.is_null() {
        return;
    }
    // SAFETY: the executor passes a valid TM_FailureData.
    unsafe {
        (*tmfd).ctid = t;
        (*tmfd).xmax = xid_of(h.xid);
        (*tmfd).cmax = if is_current {
            h.cid
        } else {
            pg_sys::InvalidCommandId
        };
        (*tmfd).traversed = false;
    }
}

/// Outcome of checking a row before changing it.
enum Check {
    /// Go ahead; the row bytes as they are now.
    Proceed(Vec<u8>),
    /// Report this result.
    Fail(pg_sys::TM_Result::Type),
}

/// Checks the row at `t` for a writer that holds the tuple lock: waits for running writers,
/// rolls back aborted changes, and reports changes our snapshot must not overwrite.
unsafe fn check_for_write(
    rel: pg_sys::Relation,
    t: pg_sys::ItemPointerData,
    snapshot: pg_sys::Snapshot,
    crosscheck: pg_sys::Snapshot,
    wait: bool,
    tmfd: *mut pg_sys::TM_FailureData,
    xltw: pg_sys::XLTW_Oper::Type,
) -> Check {
    let (blk, off) = tid_parts(&t);
    loop {
        let (b, _) = pages::read_verified(rel, blk, Lock::Exclusive, std::ptr::null_mut());
        let Some(row) = row_at(b.page(), off) else {
            return Check::Fail(pg_sys::TM_Result::TM_Deleted);
        };
        let h = RowHeader::read(row);
        match writer_status_in(rel, h.xid) {
            WriterStatus::Aborted => {
                if !roll_back_on_touch(rel, &b, off, &h) {
                    return Check::Fail(pg_sys::TM_Result::TM_Deleted);
                }
                continue;
            }
            WriterStatus::InProgress => {
                drop(b);
                if !wait {
                    fill_tmfd(tmfd, t, &h, false);
                    return Check::Fail(pg_sys::TM_Result::TM_WouldBlock);
                }
                let mut tt = t;
                pg_sys::XactLockTableWait(xid_of(h.xid), rel, &mut tt, xltw);
                continue;
            }
            WriterStatus::Current => {
                let curcid = (*snapshot).curcid;
                if h.cid >= curcid {
                    fill_tmfd(tmfd, t, &h, true);
                    return Check::Fail(if h.undo.is_none() && !h.is_deleted() {
                        pg_sys::TM_Result::TM_Invisible
                    } else {
                        pg_sys::TM_Result::TM_SelfModified
                    });
                }
                if h.is_deleted() {
                    fill_tmfd(tmfd, t, &h, true);
                    return Check::Fail(pg_sys::TM_Result::TM_Invisible);
                }
            }
            WriterStatus::Committed => {
                if h.is_deleted() {
                    fill_tmfd(tmfd, t, &h, false);
                    if h.is_moved() {
                        let (fb, fo) = row::forward_tid(row);
                        (*tmfd).ctid = tid(fb, fo);
                        return Check::Fail(pg_sys::TM_Result::TM_Updated);
                    }
                    return Check::Fail(pg_sys::TM_Result::TM_Deleted);
                }
                let seen = (*snapshot).snapshot_type != pg_sys::SnapshotType::SNAPSHOT_MVCC
                    || mvcc_sees_change(rel, snapshot, h.xid, h.cid)
                    || locked_version_is(rel, blk, off, h.xid);
                let cross_ok =
                    crosscheck.is_null() || mvcc_sees_change(rel, crosscheck, h.xid, h.cid);
                if !seen || !cross_ok {
                    fill_tmfd(tmfd, t, &h, false);
                    return Check::Fail(pg_sys::TM_Result::TM_Updated);
                }
            }
        }
        return Check::Proceed(row.to_vec());
    }
}

/// Appends the undo record for a change of the row at `t` and writes the new row, whose
/// header the closure stamps with the record's pointer; one WAL record. With `grows`, the new
/// row may be longer: whether the page has the room is decided under the same exclusive lock
/// as the change, and `false` (nothing done) means it has not.
#[allow(clippy::too_many_arguments)]
unsafe fn apply_change(
    rel: pg_sys::Relation,
    t: pg_sys::ItemPointerData,
    old_row: &[u8],
    kind: UndoKind,
    xid: u64,
    cid: u32,
    grows: bool,
    make_row: impl Fn(row::UndoPtr) -> Vec<u8>,
) -> bool {
    let (blk, off) = tid_parts(&t);
    // The record keeps only what differs from the new version (header always), which every
    // reader of the record holds.
    let unplaced = make_row(row::UndoPtr::NONE);
    let new_len = unplaced.len();
    let delta = torii_core::undo::make_row_delta(old_row, &unplaced);
    let record_len = torii_core::undo::RECORD_HEADER + delta.len();
    if record_len > undo::MAX_RECORD {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "torii: row of {} bytes is too large to change (its undo record would exceed {} bytes)",
                old_row.len(),
                undo::MAX_RECORD
            )
        );
    }
    let (b, _) = pages::read_verified(rel, blk, Lock::Exclusive, std::ptr::null_mut());
    let now = row_at(b.page(), off).map(|r| r.to_vec());
    if now.as_deref() != Some(old_row) {
        // We hold the tuple lock, so nobody else may change the row.
        error!("torii: row ({blk},{off}) changed under its tuple lock");
    }
    if grows {
        let p = b.page();
        if wal::growth_needed(p, off, new_len) > page::pd_upper(p) - page::pd_lower(p) {
            return false;
        }
    }
    let space = undo::reserve(rel, record_len);
    wal::change_row(rel, &b, off, &space, kind, xid, cid, &delta, make_row);
    true
}

/// The new row's header fields on top of `bytes` (a freshly formed, stamped row).
fn restamp(mut bytes: Vec<u8>, xid: u64, cid: u32, undo: row::UndoPtr, flags: u16) -> Vec<u8> {
    let mut h = RowHeader::read(&bytes);
    h.xid = xid;
    h.cid = cid;
    h.undo = undo;
    h.infomask |= flags;
    h.write(&mut bytes);
    bytes
}

/// Do the old row and the new tuple differ in any attribute of the given index bitmap?
unsafe fn index_attrs_changed(
    rel: pg_sys::Relation,
    old_row: &[u8],
    newtup: pg_sys::HeapTuple,
    which: pg_sys::IndexAttrBitmapKind::Type,
) -> bool {
    let attrs = pg_sys::RelationGetIndexAttrBitmap(rel, which);
    if attrs.is_null() {
        return false;
    }
    let desc = (*rel).rd_att;
    let natts = (*desc).natts as usize;
    let mut ov = vec![pg_sys::Datum::from(0usize); natts];
    let mut on = vec![true; natts];
    let mut nv = vec![pg_sys::Datum::from(0usize); natts];
    let mut nn = vec![true; natts];
    let mut old = pg_sys::HeapTupleData {
        t_len: old_row.len() as u32,
        t_data: old_row.as_ptr() as pg_sys::HeapTupleHeader,
        ..Default::default()
    };
    pg_sys::heap_deform_tuple(&mut old, desc, ov.as_mut_ptr(), on.as_mut_ptr());
    pg_sys::heap_deform_tuple(newtup, desc, nv.as_mut_ptr(), nn.as_mut_ptr());
    let mut changed = false;
    let mut m = -1;
    loop {
        m = pg_sys::bms_next_member(attrs, m);
        if m < 0 {
            break;
        }
        let attno = m + pg_sys::FirstLowInvalidHeapAttributeNumber;
        if attno <= 0 || attno as usize > natts {
            changed = true;
            break;
        }
        let i = attno as usize - 1;
        let att = &*(*desc).attrs.as_ptr().add(i);
        if on[i] != nn[i]
            || (!on[i]
                && !crate::pg_extra::datumIsEqual(ov[i], nv[i], att.attbyval, att.attlen as i32))
        {
            changed = true;
            break;
        }
    }
    pg_sys::bms_free(attrs);
    changed
}

/// Does the table have a user-defined AFTER UPDATE row trigger? Such triggers read OLD and NEW
/// by TID with SnapshotAny once the statement is done; an in-place update leaves one TID for
/// both, so these tables get cold updates (the old TID then yields the row's image before the
/// update). Foreign-key triggers are exempt: they compare key columns, which an in-place update
/// never changes (no indexed column does).
unsafe fn has_user_after_update_trigger(rel: pg_sys::Relation) -> bool {
    let td = (*rel).trigdesc;
    if td.is_null() || !(*td).trig_update_after_row {
        return false;
    }
    let triggers = std::slice::from_raw_parts((*td).triggers, (*td).numtriggers as usize);
    triggers.iter().any(|t| {
        let ty = t.tgtype as u32;
        !t.tgisinternal
            && ty & pg_sys::TRIGGER_TYPE_ROW != 0
            && ty & (pg_sys::TRIGGER_TYPE_BEFORE | pg_sys::TRIGGER_TYPE_INSTEAD) == 0
            && ty & pg_sys::TRIGGER_TYPE_UPDATE != 0
    })
}

/// Deletes the TOAST values of a row that is going away.
unsafe fn toast_delete(rel: pg_sys::Relation, row_bytes: &[u8], is_speculative: bool) {
    let h = RowHeader::read(row_bytes);
    if h.infomask & pg_sys::HEAP_HASEXTERNAL as u16 == 0 {
        return;
    }
    let mut tup = pg_sys::HeapTupleData {
        t_len: row_bytes.len() as u32,
        t_data: row_bytes.as_ptr() as pg_sys::HeapTupleHeader,
        t_tableOid: (*rel).rd_id,
        ..Default::default()
    };
    crate::pg_extra::heap_toast_delete(rel, &mut tup, is_speculative);
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn tuple_delete(
    rel: pg_sys::Relation,
    tidp: pg_sys::ItemPointer,
    cid: pg_sys::CommandId,
    snapshot: pg_sys::Snapshot,
    crosscheck: pg_sys::Snapshot,
    wait: bool,
    tmfd: *mut pg_sys::TM_FailureData,
    changing_part: bool,
) -> pg_sys::TM_Result::Type {
    let t = *tidp;
    super::vacuum::maybe_discard(rel);
    let xid = current_xid();
    let Some(_lock) = TupleLock::acquire(rel, t, pg_sys::AccessExclusiveLock as i32, wait) else {
        return pg_sys::TM_Result::TM_WouldBlock;
    };
    let old = match check_for_write(
        rel,
        t,
        snapshot,
        crosscheck,
        wait,
        tmfd,
        pg_sys::XLTW_Oper::XLTW_Delete,
    ) {
        Check::Fail(r) => return r,
        Check::Proceed(old) => old,
    };
    let (blk, off) = tid_parts(&t);
    // SSI: readers of the version this delete ends (see visibility::predicate_tid).
    let mut tt = super::visibility::predicate_tid(blk, off, RowHeader::read(&old).xid);
    crate::pg_extra::CheckForSerializableConflictIn(rel, &mut tt, blk);
    // A row moving to another partition is marked moved, with heap's "moved partitions" TID
    // as its forwarding TID: concurrent writers and lockers then get a serialization error
    // instead of taking it for deleted.
    let kind = if changing_part {
        UndoKind::Moved
    } else {
        UndoKind::Delete
    };
    apply_change(rel, t, &old, kind, xid, cid, false, |ptr| {
        let mut new = old.clone();
        let mut h = RowHeader::read(&new);
        h.xid = xid;
        h.cid = cid;
        h.undo = ptr;
        h.infomask |= FLAG_DELETED;
        if changing_part {
            h.infomask |= FLAG_MOVED;
        }
        h.write(&mut new);
        if changing_part {
            row::set_forward_tid(&mut new, MOVED_PARTITIONS.0, MOVED_PARTITIONS.1);
        }
        new
    });
    toast_delete(rel, &old, false);
    pg_sys::pgstat_count_heap_delete(rel);
    pg_sys::TM_Result::TM_Ok
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn tuple_update(
    rel: pg_sys::Relation,
    otid: pg_sys::ItemPointer,
    slot: *mut pg_sys::TupleTableSlot,
    cid: pg_sys::CommandId,
    snapshot: pg_sys::Snapshot,
    crosscheck: pg_sys::Snapshot,
    wait: bool,
    tmfd: *mut pg_sys::TM_FailureData,
    lockmode: *mut pg_sys::LockTupleMode::Type,
    update_indexes: *mut bool,
) -> pg_sys::TM_Result::Type {
    let t = *otid;
    let (blk, off) = tid_parts(&t);
    super::vacuum::maybe_discard(rel);
    let xid = current_xid();
    let mut should_free = false;
    let newtup = pg_sys::ExecFetchSlotHeapTuple(slot, true, &mut should_free);
    (*slot).tts_tableOid = (*rel).rd_id;
    (*newtup).t_tableOid = (*rel).rd_id;

    // Which lock mode: key columns (those of unique indexes usable by foreign keys) decide
    // between NO KEY UPDATE and UPDATE; the row as we last saw it tells.
    let peek = {
        let (b, _) = pages::read_verified(rel, blk, Lock::Share, std::ptr::null_mut());
        row_at(b.page(), off).map(|r| r.to_vec())
    };
    // A deleted or moved row (its change may have aborted and await rollback on touch) has
    // no attributes to compare: a moved stub's data starts with the forwarding TID. Take the
    // stronger mode; the check below rolls the row back or reports the change.
    let key_changed = match &peek {
        Some(r) if RowHeader::read(r).is_deleted() => true,
        Some(r) => index_attrs_changed(
            rel,
            r,
            newtup,
            pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_KEY,
        ),
        None => true,
    };
    let mode = if key_changed {
        pg_sys::LockTupleMode::LockTupleExclusive
    } else {
        pg_sys::LockTupleMode::LockTupleNoKeyExclusive
    };
    *lockmode = mode;
    // A non-key update of a row whose newest version this transaction wrote needs no tuple
    // lock, as in heap: whoever else wants the row waits for this transaction (possibly
    // holding the tuple lock meanwhile, as heap's waiters do), and the only row locks others
    // can have taken since are KEY SHARE, which it does not conflict with. Waiting here could
    // only deadlock with those waiters (isolation spec fk-deadlock2). A cold update still
    // takes the exclusive lock below.
    let own_change = peek.as_deref().is_some_and(|r| {
        let h = RowHeader::read(r);
        !h.is_deleted() && !h.is_locked() && writer_status_in(rel, h.xid) == WriterStatus::Current
    });
    let _lock = if own_change && mode == pg_sys::LockTupleMode::LockTupleNoKeyExclusive {
        None
    } else {
        let Some(l) = TupleLock::acquire(rel, t, hw_mode(mode), wait) else {
            return pg_sys::TM_Result::TM_WouldBlock;
        };
        Some(l)
    };
    let old = match check_for_write(
        rel,
        t,
        snapshot,
        crosscheck,
        wait,
        tmfd,
        pg_sys::XLTW_Oper::XLTW_Update,
    ) {
        Check::Fail(r) => return r,
        Check::Proceed(old) => old,
    };
    // SSI: readers of the version this update replaces (see visibility::predicate_tid).
    let mut tt = super::visibility::predicate_tid(blk, off, RowHeader::read(&old).xid);
    crate::pg_extra::CheckForSerializableConflictIn(rel, &mut tt, blk);

    // Form the new row (TOAST with the old row, so unchanged values are shared and replaced
    // ones deleted — MVCC-safely, the TOAST table being heap) with the page unlocked.
    let mut old_tup = pg_sys::HeapTupleData {
        t_len: old.len() as u32,
        t_data: old.as_ptr() as pg_sys::HeapTupleHeader,
        t_self: t,
        t_tableOid: (*rel).rd_id,
    };
    let new_bytes = form_stored_row(rel, newtup, &mut old_tup, xid, cid, 0);
    stamp_slot_tuple(newtup, xid, cid);
    let indexes_changed = index_attrs_changed(
        rel,
        &old,
        newtup,
        pg_sys::IndexAttrBitmapKind::INDEX_ATTR_BITMAP_ALL,
    );
    let flags_kept = RowHeader::read(&old).infomask
        & !(FLAG_DELETED | FLAG_MOVED | FLAG_SPECULATIVE)
        & row::TORII_FLAGS;
    // In place when no indexed column changes and the row fits on its page (decided under
    // the lock the change is made under: an insert may take the room until then).
    let in_place = !indexes_changed
        && !has_user_after_update_trigger(rel)
        && !super::transition::old_rows_captured(rel)
        && apply_change(rel, t, &old, UndoKind::Update, xid, cid, true, |ptr| {
            restamp(new_bytes.clone(), xid, cid, ptr, flags_kept)
        });
    if in_place {
        (*slot).tts_tid = t;
        (*newtup).t_self = t;
        *update_indexes = false;
        pg_sys::pgstat_count_heap_update(rel, true);
    } else {
        // Cold update: the new version goes elsewhere with new index entries; the old slot
        // keeps a forwarding TID in place of its data (the data is in undo).
        // Row locks are tuple locks on the old TID and do not follow the row to its new one:
        // wait until no other transaction holds one (stricter than heap, which carries
        // KEY SHARE lockers over to the new version).
        let Some(_all) = TupleLock::acquire(rel, t, pg_sys::AccessExclusiveLock as i32, wait)
        else {
            return pg_sys::TM_Result::TM_WouldBlock;
        };
        let new_tid = insert_row_bytes(rel, &new_bytes);
        let (nb, no) = tid_parts(&new_tid);
        apply_change(rel, t, &old, UndoKind::Moved, xid, cid, false, |ptr| {
            let mut moved = restamp(old.clone(), xid, cid, ptr, FLAG_DELETED | FLAG_MOVED);
            row::set_forward_tid(&mut moved, nb, no);
            moved
        });
        (*slot).tts_tid = new_tid;
        (*newtup).t_self = new_tid;
        *update_indexes = true;
        pg_sys::pgstat_count_heap_update(rel, false);
    }
    pg_sys::TM_Result::TM_Ok
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn tuple_lock(
    rel: pg_sys::Relation,
    tidp: pg_sys::ItemPointer,
    snapshot: pg_sys::Snapshot,
    slot: *mut pg_sys::TupleTableSlot,
    _cid: pg_sys::CommandId,
    mode: pg_sys::LockTupleMode::Type,
    wait_policy: pg_sys::LockWaitPolicy::Type,
    flags: u8,
    tmfd: *mut pg_sys::TM_FailureData,
) -> pg_sys::TM_Result::Type {
    let find_last = flags & pg_sys::TUPLE_LOCK_FLAG_FIND_LAST_VERSION as u8 != 0;
    // Like heap, a row lock belongs to a transaction with an xid (the note of the locked
    // version is keyed by it, and the update that follows would assign one anyway).
    current_xid();
    let mut t = *tidp;
    let mut traversed = false;
    let hw = hw_mode(mode);
    'versions: loop {
        // The tuple lock is kept until the end of the transaction: that is the row lock.
        let mut tt = t;
        match wait_policy {
            pg_sys::LockWaitPolicy::LockWaitBlock => pg_sys::LockTuple(rel, &mut tt, hw),
            _ => {
                if !pg_sys::ConditionalLockTuple(rel, &mut tt, hw) {
                    if wait_policy == pg_sys::LockWaitPolicy::LockWaitSkip {
                        return pg_sys::TM_Result::TM_WouldBlock;
                    }
                    lock_not_available(rel);
                }
            }
        }
        let (blk, off) = tid_parts(&t);
        loop {
            let (b, _) = pages::read_verified(rel, blk, Lock::Exclusive, std::ptr::null_mut());
            let Some(row) = row_at(b.page(), off) else {
                return pg_sys::TM_Result::TM_Deleted;
            };
            let h = RowHeader::read(row);
            let mut head_is_version = true;
            match writer_status_in(rel, h.xid) {
                WriterStatus::Aborted => {
                    if !roll_back_on_touch(rel, &b, off, &h) {
                        return pg_sys::TM_Result::TM_Deleted;
                    }
                    continue;
                }
                WriterStatus::InProgress => {
                    if change_conflicts(&h, mode) {
                        drop(b);
                        match wait_policy {
                            pg_sys::LockWaitPolicy::LockWaitBlock => {
                                let mut tt = t;
                                pg_sys::XactLockTableWait(
                                    xid_of(h.xid),
                                    rel,
                                    &mut tt,
                                    pg_sys::XLTW_Oper::XLTW_Lock,
                                );
                                continue;
                            }
                            pg_sys::LockWaitPolicy::LockWaitSkip => {
                                return pg_sys::TM_Result::TM_WouldBlock
                            }
                            _ => lock_not_available(rel),
                        }
                    }
                    // A compatible running change (KEY SHARE vs. an in-place update): the
                    // row is locked; the version to return is the one our snapshot sees.
                    head_is_version = false;
                }
                WriterStatus::Current => {
                    if !snapshot.is_null() && h.cid >= (*snapshot).curcid {
                        fill_tmfd(tmfd, t, &h, true);
                        // As heap: a row this command inserted is invisible to it (ON CONFLICT
                        // then reports a cardinality violation, reading xmin from the slot);
                        // one it changed is self-modified. ON CONFLICT (READ COMMITTED without
                        // FIND_LAST_VERSION, see below) means the newest version, which heap
                        // would find created by this command: invisible too. Above READ
                        // COMMITTED it cannot be told from a BEFORE trigger's lock of the old
                        // version, which must be self-modified.
                        let on_conflict = !find_last
                            && pg_sys::XactIsoLevel < pg_sys::XACT_REPEATABLE_READ as i32;
                        if !h.is_deleted() && (h.undo.is_none() || on_conflict) {
                            super::fetch::store_copy(rel, row, t, slot);
                            return pg_sys::TM_Result::TM_Invisible;
                        }
                        return pg_sys::TM_Result::TM_SelfModified;
                    }
                    if h.is_deleted() {
                        fill_tmfd(tmfd, t, &h, true);
                        return pg_sys::TM_Result::TM_Deleted;
                    }
                }
                WriterStatus::Committed => {
                    if h.is_deleted() {
                        fill_tmfd(tmfd, t, &h, false);
                        if h.is_moved() {
                            let (fb, fo) = row::forward_tid(row);
                            if (fb, fo) == MOVED_PARTITIONS && find_last {
                                // As heapam_tuple_lock: there is no newer version to lock here.
                                drop(b);
                                moved_to_other_partition();
                            }
                            if find_last {
                                t = tid(fb, fo);
                                traversed = true;
                                continue 'versions;
                            }
                            (*tmfd).ctid = tid(fb, fo);
                            return pg_sys::TM_Result::TM_Updated;
                        }
                        return pg_sys::TM_Result::TM_Deleted;
                    }
                    // A version this backend has locked before (EvalPlanQual came back for it)
                    // counts as seen: it is the caller's version now, no new traversal.
                    // (MERGE's recheck locks again and would loop otherwise; the price is one
                    // recheck less than heap in a FOR UPDATE subquery re-run by an outer
                    // EvalPlanQual, isolation spec eval-plan-qual.)
                    let seen = snapshot.is_null()
                        || (*snapshot).snapshot_type != pg_sys::SnapshotType::SNAPSHOT_MVCC
                        || mvcc_sees_change(rel, snapshot, h.xid, h.cid)
                        || locked_version_is(rel, blk, off, h.xid);
                    if !seen {
                        if mode == pg_sys::LockTupleMode::LockTupleKeyShare {
                            // Every change kept at this TID is in place, and an in-place
                            // update changes no indexed (so no key) column: like heap after a
                            // non-key update, KEY SHARE locks the version the snapshot sees,
                            // without following the row to its newest version.
                            head_is_version = false;
                        } else if find_last {
                            traversed = true;
                        } else if pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 {
                            // The caller's snapshot must not lock a newer version.
                            fill_tmfd(tmfd, t, &h, false);
                            return pg_sys::TM_Result::TM_Updated;
                        }
                        // READ COMMITTED without FIND_LAST_VERSION is INSERT ... ON CONFLICT,
                        // whose TID came from a dirty index lookup: it means the newest
                        // version, as a heap TID would.
                    }
                }
            }
            // Locked. Hand the version to the caller.
            let bytes: Vec<u8> = if head_is_version || snapshot.is_null() {
                row.to_vec()
            } else {
                let snap = Snap::new(snapshot);
                match snap.resolve(rel, row) {
                    Version::Current(r) => r.to_vec(),
                    Version::Old(v) => v,
                    Version::None => row.to_vec(),
                }
            };
            let writer = h.xid;
            drop(b);
            super::fetch::store_copy(rel, &bytes, t, slot);
            note_locked_version(rel, blk, off, writer);
            if !tmfd.is_null() {
                (*tmfd).traversed = traversed;
            }
            // Like heap, report where the locked version lives: the executor then updates
            // or deletes that TID.
            *tidp = t;
            return pg_sys::TM_Result::TM_Ok;
        }
    }
}

fn lock_not_available(rel: pg_sys::Relation) -> ! {
    ereport!(
        PgLogLevel::ERROR,
        PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
        // SAFETY: rel is open.
        format!("could not obtain lock on row in relation \"{}\"", unsafe {
            crate::storage::rel_name(rel)
        })
    );
    unreachable!()
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_insert_speculative(
    rel: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    cid: pg_sys::CommandId,
    options: i32,
    bistate: *mut pg_sys::BulkInsertStateData,
    spec_token: u32,
) {
    super::modify::insert_slot(rel, slot, cid, options, bistate, Some(spec_token));
}

#[pg_guard]
pub unsafe extern "C-unwind" fn tuple_complete_speculative(
    rel: pg_sys::Relation,
    slot: *mut pg_sys::TupleTableSlot,
    _spec_token: u32,
    succeeded: bool,
) {
    let (blk, off) = tid_parts(&(*slot).tts_tid);
    let (b, _) = pages::read_verified(rel, blk, Lock::Exclusive, std::ptr::null_mut());
    let Some(row) = row_at(b.page(), off) else {
        error!("torii: speculative row ({blk},{off}) is gone");
    };
    if succeeded {
        let mut confirmed = row.to_vec();
        let mut h = RowHeader::read(&confirmed);
        h.infomask &= !FLAG_SPECULATIVE;
        h.undo = row::UndoPtr::NONE;
        h.write(&mut confirmed);
        wal::overwrite_row(rel, &b, off, &confirmed);
    } else {
        // "Super-delete": no snapshot may see the row any more, not even ours.
        let bytes = row.to_vec();
        wal::kill_row(rel, &b, off);
        drop(b);
        // As heap_abort_speculative: the values were inserted by this very command, which
        // cannot delete them (they are invisible to it); the TOAST rows are super-deleted too.
        toast_delete(rel, &bytes, true);
    }
}
