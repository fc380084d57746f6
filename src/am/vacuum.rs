//! Undo discard and VACUUM.
//!
//! **Discard** walks the undo log from its head (oldest page). A record can go once its
//! transaction is resolved and older than every snapshot (`GetOldestNonRemovableTransactionId`):
//! a committed change needs nothing more (every snapshot sees it); an aborted one is rolled back
//! first (its previous image restored, or for an insert note, the aborted rows of that block
//! killed). Rows whose committed DELETE or move is discarded lose their line pointer's storage
//! (LP_DEAD) and are counted in the metapage until VACUUM has removed their index entries. A
//! page whose records are all gone is unlinked and put in the free space map for reuse. The
//! first record that must stay stops the walk: a long-running transaction holds discard back.
//!
//! The **resolved horizon** — the smallest xid of any remaining undo record, or the oldest
//! running xid if smaller — goes to the metapage: every writer below it is committed, or was
//! rolled back here. Readers skip the CLOG for such rows, and VACUUM reports it as
//! `relfrozenxid`, so an anti-wraparound VACUUM of a torii table reads its undo, never its
//! data pages (except those with dead rows to clean).

use super::visibility::{writer_status, WriterStatus};
use crate::progress;
use crate::storage::buffer::{Lock, LockedBuffer};
use crate::storage::{pages, wal};
use pgrx::pg_sys;
use pgrx::prelude::*;
use torii_core::meta::Meta;
use torii_core::page::{self, PageKind, LP_DEAD, LP_NORMAL, LP_UNUSED, NO_BLOCK};
use torii_core::row::{RowHeader, UndoPtr};
use torii_core::undo::{UndoKind, UndoRecord};

/// What a discard or VACUUM did.
#[derive(Default, Debug, Clone)]
pub struct VacuumStats {
    pub undo_records_discarded: i64,
    pub undo_bytes_discarded: i64,
    pub undo_pages_freed: i64,
    pub rows_rolled_back: i64,
    pub rows_reclaimed: i64,
    pub bytes_reclaimed: i64,
    pub dead_pointers_freed: i64,
    pub horizon_before: i64,
    pub horizon_after: i64,
    /// Every index got its bulk delete and `amvacuumcleanup` already.
    pub indexes_cleaned: bool,
    /// Bulk deletes of the indexes (0 or 1).
    pub index_scans: i64,
    /// The data-page pass, when it marked pages all-visible.
    pub pass: Option<crate::storage::vm::MarkPass>,
    /// Pages marked all-visible once their dead pointers were freed.
    pub pages_marked_after_cleaning: u32,
}

/// The oldest xid any snapshot may still need, as a full xid.
unsafe fn oldest_needed(rel: pg_sys::Relation) -> u64 {
    super::visibility::full_xid(pg_sys::GetOldestNonRemovableTransactionId(rel))
}

/// Copies the metapage fields.
unsafe fn read_meta(rel: pg_sys::Relation) -> Meta {
    let (m, _) = pages::read_verified(rel, 0, Lock::Share, std::ptr::null_mut());
    Meta::read(m.page())
}

/// The normal row at `off` of a page, if any.
fn row_at(p: &[u8], off: u16) -> Option<&[u8]> {
    if off == 0 || off as usize > page::line_pointer_count(p) {
        return None;
    }
    let lp = page::line_pointer(p, off as usize);
    (lp.flags == LP_NORMAL).then(|| &p[lp.off..lp.off + lp.len])
}

/// Resolves one discardable record: rolls back an aborted change, prunes a committed delete.
unsafe fn settle(
    rel: pg_sys::Relation,
    ptr: UndoPtr,
    r: &UndoRecord,
    st: &mut VacuumStats,
    meta_dead: &mut u64,
) {
    let committed = writer_status(r.xid) == WriterStatus::Committed;
    if r.tid_blk == 0 || r.tid_blk >= pages::nblocks(rel) {
        return;
    }
    match r.kind {
        UndoKind::Insert => {
            if committed {
                return;
            }
            let (b, valid) =
                pages::read_verified(rel, r.tid_blk, Lock::Exclusive, std::ptr::null_mut());
            if !valid || page::kind(b.page()) != Some(PageKind::Data) {
                return;
            }
            let p = b.page();
            let victims: Vec<u16> = (1..=page::line_pointer_count(p) as u16)
                .filter(|&o| {
                    row_at(p, o).is_some_and(|row| {
                        let h = RowHeader::read(row);
                        h.xid == r.xid && (h.undo.is_none() || h.is_speculative())
                    })
                })
                .collect();
            if victims.is_empty() {
                return;
            }
            st.rows_rolled_back += victims.len() as i64;
            kill_slots(rel, &b, &victims, st, meta_dead);
        }
        // A committed in-place update leaves nothing to reclaim: the row holds a newer version.
        UndoKind::Update if committed => {}
        UndoKind::Update | UndoKind::Delete | UndoKind::Moved => {
            let (b, valid) =
                pages::read_verified(rel, r.tid_blk, Lock::Exclusive, std::ptr::null_mut());
            if !valid || page::kind(b.page()) != Some(PageKind::Data) {
                return;
            }
            if !committed {
                // Roll back every aborted change at the head of the row, newest first: a
                // transaction that changed the row several times left a chain, and this record
                // may be an older link of it, to be discarded before the newer ones.
                loop {
                    let Some(row) = row_at(b.page(), r.tid_off) else {
                        return;
                    };
                    let h = RowHeader::read(row);
                    if super::visibility::writer_status_in(rel, h.xid) != WriterStatus::Aborted {
                        return;
                    }
                    if h.undo.is_none() || h.is_speculative() {
                        // Back to a row the aborted transaction inserted (and then changed):
                        // its insert note may be gone already, so the row goes now. Left
                        // behind, it would outlive the undo that says its writer aborted.
                        kill_slots(rel, &b, &[r.tid_off], st, meta_dead);
                        return;
                    }
                    let rec = crate::storage::undo::read_record(rel, h.undo);
                    let old = UndoRecord::decode(&rec)
                        .and_then(|u| u.old_row(row))
                        .unwrap_or_else(|e| {
                            pages::report_corrupt(rel, h.undo.blk, &page::PageError::Malformed(e))
                        });
                    st.rows_rolled_back += 1;
                    wal::overwrite_row(rel, &b, r.tid_off, &old);
                }
            }
            let Some(row) = row_at(b.page(), r.tid_off) else {
                return;
            };
            let h = RowHeader::read(row);
            if h.xid != r.xid || h.undo != ptr {
                // The row has moved on: a later change, resolved on its own.
                return;
            }
            if h.is_deleted() {
                st.rows_reclaimed += 1;
                kill_slots(rel, &b, &[r.tid_off], st, meta_dead);
            }
        }
    }
}

/// Frees the storage of rows of a locked data page whose index entries may still point at
/// them (LP_DEAD until VACUUM removed those entries; counted for the metapage).
unsafe fn kill_slots(
    rel: pg_sys::Relation,
    b: &LockedBuffer,
    offs: &[u16],
    st: &mut VacuumStats,
    meta_dead: &mut u64,
) {
    *meta_dead += offs.len() as u64;
    wal::edit_page(rel, b, |img| {
        for &o in offs {
            let mut lp = page::line_pointer(img, o as usize);
            st.bytes_reclaimed += lp.len as i64;
            lp.flags = LP_DEAD;
            lp.off = 0;
            lp.len = 0;
            page::set_line_pointer(img, o as usize, lp);
        }
        repair_fragmentation(img);
    });
    pages::record_free(rel, b.block(), b.page());
}

/// Compacts a page image after items lost their storage.
fn repair_fragmentation(img: &mut [u8]) {
    // SAFETY: a page image with a valid header.
    unsafe { pg_sys::PageRepairFragmentation(img.as_mut_ptr() as pg_sys::Page) }
}

/// Discards what undo no snapshot needs, and advances the resolved horizon.
///
/// # Safety
/// `rel` must be an open torii table (any lock that allows writes by others is fine).
pub unsafe fn discard(rel: pg_sys::Relation, st: &mut VacuumStats) {
    discard_pages(rel, st);
    advance_horizon(rel, st);
}

/// `torii.undo_warn_size` (kB): retained undo of one table above which discard logs a warning.
pub static UNDO_WARN_SIZE: pgrx::guc::GucSetting<i32> =
    pgrx::guc::GucSetting::<i32>::new(1024 * 1024);

/// Defines this module's settings. Called once from `_PG_init`.
pub fn init_gucs() {
    pgrx::guc::GucRegistry::define_int_guc(
        c"torii.undo_warn_size",
        c"Undo a torii table may retain before discard warns in the server log.",
        c"Undo is retained while a snapshot or transaction older than it runs; -1 disables the warning.",
        &UNDO_WARN_SIZE,
        -1,
        i32::MAX,
        pgrx::guc::GucContext::Userset,
        pgrx::guc::GucFlags::UNIT_KB,
    );
}

/// Seconds between two retained-undo warnings of one backend.
const WARN_EVERY_SECS: u64 = 60;

thread_local! {
    static LAST_WARNING: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Discard stopped at a record of `xid` that must stay: warn (at most once a minute per
/// backend) when the table's retained undo exceeds `torii.undo_warn_size`.
unsafe fn warn_if_undo_retained(rel: pg_sys::Relation, xid: u64) {
    let limit = UNDO_WARN_SIZE.get();
    if limit < 0 {
        return;
    }
    let m = read_meta(rel);
    // Whole undo pages linked minus those freed: the undo the table holds now.
    let retained = m.undo_appended.saturating_sub(m.undo_discarded);
    if retained <= limit as u64 * 1024 {
        return;
    }
    let due = LAST_WARNING.with(|l| {
        let now = std::time::Instant::now();
        let due = l
            .get()
            .is_none_or(|t| now.duration_since(t).as_secs() >= WARN_EVERY_SECS);
        if due {
            l.set(Some(now));
        }
        due
    });
    if !due {
        return;
    }
    ereport!(
        PgLogLevel::WARNING,
        PgSqlErrorCode::ERRCODE_WARNING,
        format!(
            "torii: table \"{}\" retains {} kB of undo, above torii.undo_warn_size ({} kB)",
            crate::storage::rel_name(rel),
            retained / 1024,
            limit
        ),
        format!(
            "The oldest undo that must stay was written by transaction {xid}; undo is kept while \
             a transaction or snapshot older than it runs."
        )
    );
}

/// Undo-producing writes per backend and table between two opportunistic discards.
const DISCARD_EVERY: u32 = 256;

thread_local! {
    static WRITES: std::cell::RefCell<std::collections::HashMap<u32, u32>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Called by writers before they take any lock: every [`DISCARD_EVERY`] undo-producing writes
/// of this backend to a table, discard what undo can go, so undo is recycled without VACUUM.
///
/// # Safety
/// `rel` must be an open torii table; the caller holds no buffer locks.
pub unsafe fn maybe_discard(rel: pg_sys::Relation) {
    let key: u32 = (*rel).rd_node.relNode.into();
    let due = WRITES.with(|w| {
        let mut w = w.borrow_mut();
        let n = w.entry(key).or_insert(0);
        *n += 1;
        if *n >= DISCARD_EVERY {
            *n = 0;
            true
        } else {
            false
        }
    });
    if due {
        let mut st = VacuumStats::default();
        discard_pages(rel, &mut st);
    }
}

/// The page-freeing part of [`discard`].
unsafe fn discard_pages(rel: pg_sys::Relation, st: &mut VacuumStats) {
    if pages::nblocks(rel) == 0 {
        return;
    }
    let oldest = oldest_needed(rel);
    let meta0 = read_meta(rel);
    st.horizon_before = meta0.horizon as i64;
    let mut dead_added = 0u64;
    let mut copy = vec![0u8; page::BLCKSZ];
    'pages: loop {
        progress::page_done();
        let head = read_meta(rel).undo_head;
        if head == NO_BLOCK {
            break;
        }
        if pages::copy_page(rel, head, std::ptr::null_mut(), &mut copy) != Some(PageKind::Undo) {
            break;
        }
        let n = page::line_pointer_count(&copy);
        // Standbys first cancel the queries that may still need what this page's settled
        // records hold (the newest writer among them).
        if let Some(latest) = settleable_latest_xid(rel, &copy, head, oldest) {
            crate::storage::rmgr::log_discard_conflict(rel, latest);
        }
        let mut bytes = 0i64;
        for off in 1..=n as u16 {
            let lp = page::line_pointer(&copy, off as usize);
            if lp.flags != LP_NORMAL {
                continue;
            }
            let rec = &copy[lp.off..lp.off + lp.len];
            let r = match UndoRecord::decode(rec) {
                Ok(r) => r,
                Err(e) => pages::report_corrupt(rel, head, &page::PageError::Malformed(e)),
            };
            let status = writer_status(r.xid);
            if r.xid >= oldest || matches!(status, WriterStatus::InProgress | WriterStatus::Current)
            {
                warn_if_undo_retained(rel, r.xid);
                break 'pages;
            }
            settle(rel, UndoPtr { blk: head, off }, &r, st, &mut dead_added);
            bytes += lp.len as i64;
        }
        // Every record is settled: unlink the page (head page, then metapage: lock order).
        let hb = LockedBuffer::read(rel, head, Lock::Exclusive, std::ptr::null_mut());
        if page::line_pointer_count(hb.page()) != n || page::kind(hb.page()) != Some(PageKind::Undo)
        {
            continue; // records were appended meanwhile (it is the tail): look again
        }
        let (mb, _) = pages::read_verified(rel, 0, Lock::Exclusive, std::ptr::null_mut());
        let mut m = Meta::read(mb.page());
        if m.undo_head != head {
            continue;
        }
        let next = page::read_special(hb.page()).next;
        m.undo_head = next;
        if next == NO_BLOCK {
            m.undo_tail = NO_BLOCK;
        }
        m.undo_discarded += page::BLCKSZ as u64;
        m.pending_dead += dead_added;
        dead_added = 0;
        // Onto the free-page list (not the free space map): undo takes these pages first, and
        // inserts only once the data pages' own room is used up.
        let free_next = m.free_head;
        m.free_head = head;
        m.free_pages += 1;
        wal::edit_pages(rel, &[&hb, &mb], |imgs| {
            page::init_page(imgs[0], PageKind::Free);
            page::set_next(imgs[0], free_next);
            m.write(imgs[1]);
        });
        st.undo_records_discarded += n as i64;
        st.undo_bytes_discarded += bytes;
        st.undo_pages_freed += 1;
    }
    if dead_added > 0 {
        let (mb, _) = pages::read_verified(rel, 0, Lock::Exclusive, std::ptr::null_mut());
        let mut m = Meta::read(mb.page());
        m.pending_dead += dead_added;
        wal::edit_page(rel, &mb, |img| m.write(img));
    }
    if st.undo_pages_freed > 0 || st.rows_reclaimed > 0 || st.rows_rolled_back > 0 {
        // Make the recorded free space visible to searches (the map's upper levels).
        pg_sys::FreeSpaceMapVacuum(rel);
    }
}

/// The newest writer among the records of undo page `p` (block `blk`) that discard will settle:
/// those before the first one a snapshot may still need.
///
/// # Safety
/// Reads CLOG and the proc array for the writers.
unsafe fn settleable_latest_xid(
    rel: pg_sys::Relation,
    p: &[u8],
    blk: u32,
    oldest: u64,
) -> Option<u64> {
    let mut latest = None;
    for off in 1..=page::line_pointer_count(p) {
        let lp = page::line_pointer(p, off);
        if lp.flags != LP_NORMAL {
            continue;
        }
        let r = match UndoRecord::decode(&p[lp.off..lp.off + lp.len]) {
            Ok(r) => r,
            Err(e) => pages::report_corrupt(rel, blk, &page::PageError::Malformed(e)),
        };
        if r.xid >= oldest
            || matches!(
                writer_status(r.xid),
                WriterStatus::InProgress | WriterStatus::Current
            )
        {
            break;
        }
        latest = latest.max(Some(r.xid));
    }
    latest
}

/// Recomputes the resolved horizon (reads every undo page: VACUUM only).
unsafe fn advance_horizon(rel: pg_sys::Relation, st: &mut VacuumStats) {
    if pages::nblocks(rel) == 0 {
        return;
    }
    let oldest = oldest_needed(rel);
    let mut copy = vec![0u8; page::BLCKSZ];
    // Horizon: the smallest xid still in undo, or the oldest one any snapshot may need.
    let mut horizon = oldest;
    let mut blk = read_meta(rel).undo_head;
    let mut seen = 0;
    while blk != NO_BLOCK && seen < 1_000_000 {
        seen += 1;
        progress::page_done();
        if pages::copy_page(rel, blk, std::ptr::null_mut(), &mut copy) != Some(PageKind::Undo) {
            break;
        }
        for off in 1..=page::line_pointer_count(&copy) {
            let lp = page::line_pointer(&copy, off);
            if lp.flags == LP_NORMAL {
                if let Ok(r) = UndoRecord::decode(&copy[lp.off..lp.off + lp.len]) {
                    horizon = horizon.min(r.xid);
                }
            }
        }
        blk = page::read_special(&copy).next;
    }
    let (mb, _) = pages::read_verified(rel, 0, Lock::Exclusive, std::ptr::null_mut());
    let mut m = Meta::read(mb.page());
    if horizon > m.horizon {
        m.horizon = horizon;
        wal::edit_page(rel, &mb, |img| m.write(img));
    }
    st.horizon_after = m.horizon as i64;
}

/// The resolved horizon of a table (0 before its first discard).
///
/// # Safety
/// `rel` must be an open torii table.
pub unsafe fn horizon(rel: pg_sys::Relation) -> u64 {
    if pages::nblocks(rel) == 0 {
        return 0;
    }
    read_meta(rel).horizon
}

/// Removes the index entries of the dead line pointers `dead` (sorted, as
/// [`vm::scan_data_pages`] collects them), then frees the pointers, and with `mark` marks the
/// pages that became all-visible. `counted` dead pointers of the metapage are settled (those
/// discard added meanwhile stay counted for the next VACUUM: the scan may have passed their
/// pages).
#[allow(clippy::too_many_arguments)]
unsafe fn clean_dead_pointers(
    rel: pg_sys::Relation,
    bstrategy: pg_sys::BufferAccessStrategy,
    dead: Vec<i64>,
    counted: u64,
    mark: Option<u64>,
    cmd: &progress::Command,
    st: &mut VacuumStats,
) {
    cmd.set(pg_sys::PROGRESS_VACUUM_MAX_DEAD_TUPLES, dead.len() as i64);
    cmd.set(pg_sys::PROGRESS_VACUUM_NUM_DEAD_TUPLES, dead.len() as i64);
    if !dead.is_empty() {
        cmd.set(
            pg_sys::PROGRESS_VACUUM_PHASE,
            pg_sys::PROGRESS_VACUUM_PHASE_VACUUM_INDEX as i64,
        );
        let mut nindexes = 0;
        let mut irel: *mut pg_sys::Relation = std::ptr::null_mut();
        pg_sys::vac_open_indexes(
            rel,
            pg_sys::RowExclusiveLock as i32,
            &mut nindexes,
            &mut irel,
        );
        for i in 0..nindexes as usize {
            let mut info = vacuum_info(rel, *irel.add(i), bstrategy);
            let stats = pg_sys::index_bulk_delete(
                &mut info,
                std::ptr::null_mut(),
                Some(dead_tid_callback),
                &dead as *const Vec<i64> as *mut std::ffi::c_void,
            );
            let stats = pg_sys::index_vacuum_cleanup(&mut info, stats);
            if !stats.is_null() {
                pg_sys::pfree(stats as *mut _);
            }
        }
        pg_sys::vac_close_indexes(nindexes, irel, pg_sys::NoLock as i32);
        st.indexes_cleaned = true;
        if nindexes > 0 {
            st.index_scans += 1;
        }
        cmd.set(pg_sys::PROGRESS_VACUUM_NUM_INDEX_VACUUMS, st.index_scans);
        cmd.set(
            pg_sys::PROGRESS_VACUUM_PHASE,
            pg_sys::PROGRESS_VACUUM_PHASE_VACUUM_HEAP as i64,
        );
        // Index entries are gone: the pointers can be reused.
        let mut pin = crate::storage::vm::MapPin::new();
        let mut vacuumed = 0i64;
        for group in dead.chunk_by(|a, b| a >> 16 == b >> 16) {
            let blk = (group[0] >> 16) as u32;
            {
                let b = LockedBuffer::read(rel, blk, Lock::Exclusive, bstrategy);
                wal::edit_page(rel, &b, |img| {
                    for &t in group {
                        let o = (t & 0xffff) as usize;
                        let mut lp = page::line_pointer(img, o);
                        if lp.flags == LP_DEAD {
                            lp.flags = LP_UNUSED;
                            page::set_line_pointer(img, o, lp);
                        }
                    }
                    // Lets PageAddItem reuse the unused pointers.
                    repair_fragmentation(img);
                });
                pages::record_free(rel, blk, b.page());
            }
            st.dead_pointers_freed += group.len() as i64;
            // The page's dead pointers kept it from being marked in the scan.
            if let Some(oldest) = mark {
                if crate::storage::vm::mark_if_all_visible(rel, blk, oldest, bstrategy, &mut pin) {
                    st.pages_marked_after_cleaning += 1;
                }
            }
            vacuumed += 1;
            cmd.set(pg_sys::PROGRESS_VACUUM_HEAP_BLKS_VACUUMED, vacuumed);
            progress::page_done();
        }
    }
    let (mb, _) = pages::read_verified(rel, 0, Lock::Exclusive, std::ptr::null_mut());
    let mut m = Meta::read(mb.page());
    m.pending_dead = m.pending_dead.saturating_sub(counted);
    wal::edit_page(rel, &mb, |img| m.write(img));
    drop(mb);
    pg_sys::FreeSpaceMapVacuum(rel);
}

/// `IndexBulkDeleteCallback`: is this TID one of the dead ones (sorted)?
#[pg_guard]
unsafe extern "C-unwind" fn dead_tid_callback(
    itemptr: pg_sys::ItemPointer,
    state: *mut std::ffi::c_void,
) -> bool {
    let dead = &*(state as *const Vec<i64>);
    let (b, o) = crate::storage::tid_parts(&*itemptr);
    dead.binary_search(&(((b as i64) << 16) | o as i64)).is_ok()
}

/// Discards undo, then, in one pass over the data pages, marks all-visible pages (with
/// `mark_visible`) and collects dead pointers (when the metapage counts any), whose index
/// entries and storage are then freed: heap's phases, reported in `pg_stat_progress_vacuum`
/// through `cmd` (see docs/operations.md for what each column means for torii).
///
/// # Safety
/// `rel` must be an open torii table locked by VACUUM (ShareUpdateExclusiveLock).
pub unsafe fn vacuum(
    rel: pg_sys::Relation,
    bstrategy: pg_sys::BufferAccessStrategy,
    mark_visible: bool,
    cmd: &progress::Command,
) -> VacuumStats {
    let mut st = VacuumStats::default();
    cmd.set(
        pg_sys::PROGRESS_VACUUM_PHASE,
        pg_sys::PROGRESS_VACUUM_PHASE_SCAN_HEAP as i64,
    );
    cmd.set(
        pg_sys::PROGRESS_VACUUM_TOTAL_HEAP_BLKS,
        pages::nblocks(rel) as i64,
    );
    discard(rel, &mut st);
    if pages::nblocks(rel) == 0 {
        return st;
    }
    let counted = read_meta(rel).pending_dead;
    if !mark_visible && counted == 0 {
        return st;
    }
    let oldest = oldest_needed(rel);
    let mut dead = Vec::new();
    let pass = crate::storage::vm::scan_data_pages(
        rel,
        oldest,
        bstrategy,
        mark_visible,
        (counted > 0).then_some(&mut dead),
        |blk| {
            cmd.set(pg_sys::PROGRESS_VACUUM_HEAP_BLKS_SCANNED, blk as i64 + 1);
            progress::page_done();
        },
    );
    st.pass = mark_visible.then_some(pass);
    if counted > 0 {
        let mark = mark_visible.then_some(oldest);
        clean_dead_pointers(rel, bstrategy, dead, counted, mark, cmd, &mut st);
    }
    st
}

/// Tells the statistics system that `rel` was vacuumed (`last_vacuum`/`last_autovacuum`, and
/// `n_dead_tup` back to 0: deleted rows were reclaimed and dead pointers freed, or they are
/// counted again when discard or ANALYZE meets them), and the live row count `reltuples`
/// (unknown, -1, when no pass counted rows: the statistics system's count stays).
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn report_vacuum_stats(rel: pg_sys::Relation, reltuples: f64) {
    let relid = (*rel).rd_id;
    let live = if reltuples >= 0.0 {
        reltuples as i64
    } else {
        let entry = pg_sys::pgstat_fetch_stat_tabentry(relid);
        if entry.is_null() {
            0
        } else {
            (*entry).n_live_tuples
        }
    };
    pg_sys::pgstat_report_vacuum(relid, (*(*rel).rd_rel).relisshared, live, 0);
}

/// The table's row count after a visibility pass that counted the live rows of the data pages
/// it read, as heap's `vac_estimate_reltuples` over data pages: exact when no page was
/// skipped; otherwise the skipped (all-visible) pages are taken to hold their share of the old
/// count `old` (-1: unknown), or the density of the pages read when there is none.
fn estimate_rows(old: f64, pass: crate::storage::vm::MarkPass) -> f64 {
    let (read, skipped, live) = (pass.data_read as f64, pass.skipped as f64, pass.live);
    if pass.skipped == 0 {
        live as f64
    } else if pass.data_read == 0 {
        old
    } else if old < 0.0 {
        (live as f64 / read * (read + skipped)).round()
    } else {
        (old * skipped / (read + skipped) + live as f64).round()
    }
}

/// What index AMs are told about a VACUUM of `rel` (row count estimated, quiet).
///
/// # Safety
/// `rel` and `index` must be open.
unsafe fn vacuum_info(
    rel: pg_sys::Relation,
    index: pg_sys::Relation,
    bstrategy: pg_sys::BufferAccessStrategy,
) -> pg_sys::IndexVacuumInfo {
    pg_sys::IndexVacuumInfo {
        index,
        analyze_only: false,
        report_progress: false,
        estimated_count: true,
        message_level: pg_sys::DEBUG2 as i32,
        num_heap_tuples: (*(*rel).rd_rel).reltuples as f64,
        strategy: bstrategy,
    }
}

/// Runs every index's `amvacuumcleanup` (GIN flushes its pending list there, BRIN summarizes
/// new ranges), as heap's VACUUM does even when no entries were removed.
unsafe fn cleanup_indexes(rel: pg_sys::Relation, bstrategy: pg_sys::BufferAccessStrategy) {
    if !(*(*rel).rd_rel).relhasindex {
        return;
    }
    let mut nindexes = 0;
    let mut irel: *mut pg_sys::Relation = std::ptr::null_mut();
    pg_sys::vac_open_indexes(
        rel,
        pg_sys::RowExclusiveLock as i32,
        &mut nindexes,
        &mut irel,
    );
    for i in 0..nindexes as usize {
        let mut info = vacuum_info(rel, *irel.add(i), bstrategy);
        let stats = pg_sys::index_vacuum_cleanup(&mut info, std::ptr::null_mut());
        if !stats.is_null() {
            pg_sys::pfree(stats as *mut _);
        }
    }
    pg_sys::vac_close_indexes(nindexes, irel, pg_sys::NoLock as i32);
}

/// Empty pages at the end of a table VACUUM keeps for undo (unless the table is empty).
const UNDO_RESERVE_PAGES: u32 = 8;

/// Gives trailing free pages back to the file system, like heap's VACUUM, if the exclusive
/// lock that needs can be had at once. A table with no rows and no undo left goes to zero
/// blocks (the first insert writes a new metapage).
unsafe fn truncate_tail(rel: pg_sys::Relation) {
    if pages::nblocks(rel) == 0 {
        return;
    }
    // Take the lock first: only then can no committed or running writer put rows into the
    // pages we find empty.
    if !pg_sys::ConditionalLockRelation(rel, pg_sys::AccessExclusiveLock as i32) {
        return;
    }
    let n = pages::nblocks(rel);
    let m = read_meta(rel);
    let mut copy = vec![0u8; page::BLCKSZ];
    let mut keep = n;
    while keep > 1 {
        let kind = pages::copy_page(rel, keep - 1, std::ptr::null_mut(), &mut copy);
        let empty = match kind {
            None | Some(PageKind::Free) => true,
            Some(PageKind::Data) => (1..=page::line_pointer_count(&copy))
                .all(|o| page::line_pointer(&copy, o).flags == LP_UNUSED),
            _ => false,
        };
        if !empty {
            break;
        }
        keep -= 1;
    }
    if keep == 1 && m.undo_head == NO_BLOCK && m.pending_dead == 0 {
        keep = 0;
    } else {
        // Leave a few empty pages for the next undo pages (and insert notes): cut to the last
        // row, the first writes after the VACUUM would extend the file again at once.
        keep = (keep + UNDO_RESERVE_PAGES).min(n);
    }
    if keep < n {
        if keep > 0 {
            unlink_free_pages_from(rel, keep, n);
        }
        pg_sys::RelationTruncate(rel, keep);
    }
    pg_sys::UnlockRelation(rel, pg_sys::AccessExclusiveLock as i32);
}

/// Takes the pages at or after block `keep` out of the free-page list (before the file is cut
/// there). Called with AccessExclusiveLock: nobody else walks or changes the list.
unsafe fn unlink_free_pages_from(rel: pg_sys::Relation, keep: u32, nblocks: u32) {
    let mut list = Vec::new();
    let mut blk = read_meta(rel).free_head;
    let mut copy = vec![0u8; page::BLCKSZ];
    // Bounded by the file's size: a damaged list cannot loop for ever.
    while blk != NO_BLOCK && blk != 0 && blk < nblocks && list.len() < nblocks as usize {
        if pages::copy_page(rel, blk, std::ptr::null_mut(), &mut copy) != Some(PageKind::Free) {
            break;
        }
        list.push(blk);
        blk = page::read_special(&copy).next;
    }
    let kept: Vec<u32> = list.iter().copied().filter(|&b| b < keep).collect();
    if kept.len() == list.len() && blk == NO_BLOCK {
        return;
    }
    // Relink the kept pages in their order; only changed links are written.
    for (i, &b) in kept.iter().enumerate() {
        let next = kept.get(i + 1).copied().unwrap_or(NO_BLOCK);
        let fb = LockedBuffer::read(rel, b, Lock::Exclusive, std::ptr::null_mut());
        if page::read_special(fb.page()).next != next {
            wal::edit_page(rel, &fb, |img| page::set_next(img, next));
        }
    }
    let (mb, _) = pages::read_verified(rel, 0, Lock::Exclusive, std::ptr::null_mut());
    let mut m = Meta::read(mb.page());
    m.free_head = kept.first().copied().unwrap_or(NO_BLOCK);
    m.free_pages = kept.len() as u32;
    wal::edit_page(rel, &mb, |img| m.write(img));
}

#[pg_guard]
pub unsafe extern "C-unwind" fn relation_vacuum(
    rel: pg_sys::Relation,
    params: *mut pg_sys::VacuumParams,
    bstrategy: pg_sys::BufferAccessStrategy,
) {
    if (*params).nworkers > 0
        && (*(*rel).rd_rel).relpersistence as u8 == pg_sys::RELPERSISTENCE_TEMP
    {
        warning!(
            "disabling parallel option of vacuum on \"{}\" --- cannot vacuum temporary tables in parallel",
            crate::storage::rel_name(rel)
        );
    }
    let report = VacuumReport::begin(rel, &*params);
    let cmd = progress::Command::start(
        pg_sys::ProgressCommandType::PROGRESS_COMMAND_VACUUM,
        (*rel).rd_id,
    );
    let blocks_before = pages::nblocks(rel);
    // The visibility map, for index-only scans. An anti-wraparound VACUUM only advances
    // relfrozenxid, which needs no data page: it leaves the map to the next ordinary VACUUM.
    let st = vacuum(rel, bstrategy, !(*params).is_wraparound, &cmd);
    // After a bulk delete the indexes had their cleanup; a second one would rescan them.
    if (*params).index_cleanup != pg_sys::VacOptValue::VACOPTVALUE_DISABLED && !st.indexes_cleaned {
        cmd.set(
            pg_sys::PROGRESS_VACUUM_PHASE,
            pg_sys::PROGRESS_VACUUM_PHASE_INDEX_CLEANUP as i64,
        );
        cleanup_indexes(rel, bstrategy);
    }
    if (*params).truncate != pg_sys::VacOptValue::VACOPTVALUE_DISABLED {
        cmd.set(
            pg_sys::PROGRESS_VACUUM_PHASE,
            pg_sys::PROGRESS_VACUUM_PHASE_TRUNCATE as i64,
        );
        truncate_tail(rel);
    }
    cmd.set(
        pg_sys::PROGRESS_VACUUM_PHASE,
        pg_sys::PROGRESS_VACUUM_PHASE_FINAL_CLEANUP as i64,
    );
    let nblocks = pages::nblocks(rel);
    // VACUUM counts no rows: keep ANALYZE's estimate (-1 would make it unknown again) unless
    // the visibility pass counted them.
    let old_reltuples = (*(*rel).rd_rel).reltuples as f64;
    let reltuples = match st.pass {
        Some(pass) => estimate_rows(old_reltuples, pass),
        None => old_reltuples,
    };
    let all_visible = if nblocks > 0 {
        crate::storage::vm::count_all_visible(rel)
    } else {
        0
    };
    // relfrozenxid: every xid below the horizon is resolved in this table, so CLOG below it
    // may go. Never move it backwards, nor past what PostgreSQL allows.
    let h = horizon(rel);
    // While readers still ask CLOG for every writer (the horizon shortcut is disabled, see
    // visibility::horizon_of), relfrozenxid must not move: CLOG below it may be truncated.
    let h = if super::visibility::HORIZON_SHORTCUT {
        h
    } else {
        0
    };
    let frozen = if h == 0 {
        pg_sys::InvalidTransactionId
    } else {
        pg_sys::TransactionId::from_inner(h as u32)
    };
    let old_frozen = (*(*rel).rd_rel).relfrozenxid;
    pg_sys::vac_update_relstats(
        rel,
        nblocks,
        reltuples,
        all_visible,
        (*(*rel).rd_rel).relhasindex,
        frozen,
        pg_sys::MultiXactId::INVALID,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        false,
    );
    report_vacuum_stats(rel, reltuples);
    drop(cmd);
    report.finish(
        rel,
        &st,
        VacuumOutcome {
            blocks_before,
            blocks_after: nblocks,
            reltuples,
            old_frozen,
            new_frozen: (*(*rel).rd_rel).relfrozenxid,
        },
    );
}

/// Figures of a finished VACUUM for its report beside [`VacuumStats`].
struct VacuumOutcome {
    blocks_before: u32,
    blocks_after: u32,
    reltuples: f64,
    old_frozen: pg_sys::TransactionId,
    new_frozen: pg_sys::TransactionId,
}

/// The lines VACUUM (VERBOSE) and autovacuum's `log_autovacuum_min_duration` write, as heap's:
/// started before the work, written after it.
struct VacuumReport {
    /// Where the final report goes (INFO for VERBOSE, LOG for autovacuum), if anywhere.
    level: Option<PgLogLevel>,
    autovacuum: bool,
    wraparound: bool,
    min_duration_ms: i32,
    started: std::time::Instant,
    buffers: pg_sys::BufferUsage,
    wal: pg_sys::WalUsage,
}

impl VacuumReport {
    /// # Safety
    /// `rel` must be open.
    unsafe fn begin(rel: pg_sys::Relation, params: &pg_sys::VacuumParams) -> VacuumReport {
        let verbose = params.options & pg_sys::VACOPT_VERBOSE != 0;
        let autovacuum = crate::pg_extra::IsAutoVacuumWorkerProcess();
        let level = if verbose {
            Some(PgLogLevel::INFO)
        } else if autovacuum && params.log_min_duration >= 0 {
            Some(PgLogLevel::LOG)
        } else {
            None
        };
        if verbose {
            info!("vacuuming \"{}\"", qualified_name(rel));
        }
        VacuumReport {
            level,
            autovacuum,
            wraparound: params.is_wraparound,
            min_duration_ms: params.log_min_duration,
            started: std::time::Instant::now(),
            buffers: pg_sys::pgBufferUsage,
            wal: pg_sys::pgWalUsage,
        }
    }

    /// # Safety
    /// `rel` must be open.
    unsafe fn finish(&self, rel: pg_sys::Relation, st: &VacuumStats, out: VacuumOutcome) {
        let Some(level) = self.level else { return };
        let elapsed = self.started.elapsed();
        if self.autovacuum
            && level == PgLogLevel::LOG
            && elapsed.as_millis() < self.min_duration_ms as u128
        {
            return;
        }
        let (b0, b1) = (&self.buffers, &{ pg_sys::pgBufferUsage });
        let (w0, w1) = (&self.wal, &{ pg_sys::pgWalUsage });
        let what = match (self.autovacuum, self.wraparound) {
            (true, true) => "automatic aggressive vacuum to prevent wraparound of table",
            (true, false) => "automatic vacuum of table",
            (false, _) => "finished vacuuming",
        };
        let scanned = st.pass.map_or(0, |p| p.data_read);
        let pct = if out.blocks_before > 0 {
            100.0 * scanned as f64 / out.blocks_before as f64
        } else {
            100.0
        };
        let marked = st.pass.map_or(0, |p| p.marked) + st.pages_marked_after_cleaning;
        let secs = elapsed.as_secs_f64();
        let mb = |blocks: i64| blocks as f64 * page::BLCKSZ as f64 / (1024.0 * 1024.0);
        let read =
            b1.shared_blks_read - b0.shared_blks_read + b1.local_blks_read - b0.local_blks_read;
        let dirtied = b1.shared_blks_dirtied - b0.shared_blks_dirtied + b1.local_blks_dirtied
            - b0.local_blks_dirtied;
        let rate = |x: i64| if secs > 0.0 { mb(x) / secs } else { 0.0 };
        let mut msg = format!(
            "{what} \"{}\": index scans: {}\n\
             pages: {} removed, {} remain, {} data pages scanned ({:.2}% of total), {} newly all-visible\n\
             tuples: {} removed, {} remain, {} rolled back\n\
             undo: {} records discarded ({} bytes), {} pages freed\n\
             dead pointers freed: {}\n\
             resolved horizon: {} (was {})\n",
            qualified_name(rel),
            st.index_scans,
            out.blocks_before.saturating_sub(out.blocks_after),
            out.blocks_after,
            scanned,
            pct,
            marked,
            st.rows_reclaimed,
            out.reltuples.max(0.0) as i64,
            st.rows_rolled_back,
            st.undo_records_discarded,
            st.undo_bytes_discarded,
            st.undo_pages_freed,
            st.dead_pointers_freed,
            st.horizon_after,
            st.horizon_before,
        );
        if out.new_frozen != out.old_frozen && out.new_frozen != pg_sys::InvalidTransactionId {
            let ahead = u32::from(out.new_frozen).wrapping_sub(u32::from(out.old_frozen)) as i32;
            msg += &format!(
                "new relfrozenxid: {}, which is {ahead} XIDs ahead of previous value\n",
                u32::from(out.new_frozen)
            );
        }
        msg += &format!(
            "avg read rate: {:.3} MB/s, avg write rate: {:.3} MB/s\n\
             buffer usage: {} hits, {} misses, {} dirtied\n\
             WAL usage: {} records, {} full page images, {} bytes\n\
             elapsed: {:.3} s",
            rate(read),
            rate(dirtied),
            b1.shared_blks_hit - b0.shared_blks_hit + b1.local_blks_hit - b0.local_blks_hit,
            read,
            dirtied,
            w1.wal_records - w0.wal_records,
            w1.wal_fpi - w0.wal_fpi,
            w1.wal_bytes - w0.wal_bytes,
            secs,
        );
        ereport!(level, PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, msg);
    }
}

/// `database.schema.table`, as heap's VACUUM names a table in its reports.
///
/// # Safety
/// `rel` must be open.
unsafe fn qualified_name(rel: pg_sys::Relation) -> String {
    let cstr = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::from("?")
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    format!(
        "{}.{}.{}",
        cstr(pg_sys::get_database_name(pg_sys::MyDatabaseId)),
        cstr(pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace)),
        crate::storage::rel_name(rel)
    )
}
