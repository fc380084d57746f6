//! Sequential, parallel, TID-range, bitmap, sample and ANALYZE scans.
//!
//! All of them read a page the same way: pin, share-lock, copy the 8 kB page into the scan's
//! own memory, unlock, verify the copy's CRC32C, and decide visibility row by row on the copy.
//! Slots then point into that copy (`ExecStoreHeapTuple` with `shouldFree = false`), valid
//! until the next call, as the executor's contract for scan slots says. Copying is what makes
//! in-place updates safe: a writer may change the shared page as soon as the lock is released.

use super::visibility::{Snap, Version};
use crate::storage::{pages, tid, tid_parts};
use pgrx::pg_sys;
use pgrx::prelude::*;
use torii_core::page::{self, PageKind, LP_NORMAL, MAX_ROWS_PER_PAGE};

/// torii's scan descriptor; `base` first so that PostgreSQL can use it as a TableScanDesc.
#[repr(C)]
pub struct ToriiScan {
    pub base: pg_sys::TableScanDescData,
    pub snap: *mut Snap,
    pub nblocks: u32,
    /// Blocks [start, end) are scanned (TID range scans and index builds over a range).
    pub start_block: u32,
    pub end_block: u32,
    /// Block whose copy is in `page`, or InvalidBlockNumber.
    pub cur_block: u32,
    pub inited: bool,
    /// Index into `vis` of the row returned last (-1 before the first).
    pub pos: isize,
    pub nvis: usize,
    /// Visible rows of the loaded page: offset, and the version's bytes (in the page copy, or
    /// an older image from undo allocated in `page_cxt`).
    pub vis: [u16; MAX_ROWS_PER_PAGE],
    pub vis_ptr: [*const u8; MAX_ROWS_PER_PAGE],
    pub vis_len: [u32; MAX_ROWS_PER_PAGE],
    /// Memory for older images of the loaded page, reset when the next page is loaded.
    pub page_cxt: pg_sys::MemoryContext,
    pub page: *mut u8,
    pub tuple: pg_sys::HeapTupleData,
    pub strategy: pg_sys::BufferAccessStrategy,
    pub pwork: *mut pg_sys::ParallelBlockTableScanWorkerData,
    /// TID range scan bounds (inclusive), when set.
    pub min_tid: (u32, u16),
    pub max_tid: (u32, u16),
    /// Sample scans: next offset to consider on the current block.
    pub sample_off: u16,
    /// The loaded page is marked all-visible and the snapshot sees such a page as stored
    /// ([`Snap::sees_all_visible_pages`]): its rows need no visibility decision.
    pub sees_all: bool,
}

impl ToriiScan {
    pub fn page(&self) -> &[u8] {
        // SAFETY: `page` is a palloc'd BLCKSZ buffer owned by the scan.
        unsafe { std::slice::from_raw_parts(self.page, page::BLCKSZ) }
    }
    fn page_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(self.page, page::BLCKSZ) }
    }
    pub fn rel(&self) -> pg_sys::Relation {
        self.base.rs_rd
    }
    pub fn snap(&self) -> &Snap {
        // SAFETY: set at scan_begin, freed at scan_end.
        unsafe { &*self.snap }
    }

    /// Loads block `blk` into the scan's page copy; returns its kind (None: new page).
    pub fn load(&mut self, blk: u32) -> Option<PageKind> {
        self.load_with(blk, None)
    }

    /// Loads of block `blk` only what rows `offsets` need (header, line pointers, those rows,
    /// special space) when the page was verified before, the whole page otherwise: a bitmap
    /// scan fetching a few rows of a page need not copy all of it.
    pub fn load_rows(&mut self, blk: u32, offsets: &[u16]) -> Option<PageKind> {
        self.load_with(blk, Some(offsets))
    }

    fn load_with(&mut self, blk: u32, offsets: Option<&[u16]>) -> Option<PageKind> {
        let rel = self.rel();
        let strategy = self.strategy;
        let pg = self.page;
        self.cur_block = blk;
        self.nvis = 0;
        self.sees_all = false;
        // SAFETY: page_cxt belongs to the scan; nothing points into it past this page. Most
        // pages allocate nothing there: skip the (guarded, so not free) call then.
        unsafe {
            if !(*self.page_cxt).isReset {
                pg_sys::MemoryContextReset(self.page_cxt)
            }
        };
        // SAFETY: rel is open; the copy buffer is ours.
        let kind = unsafe {
            let dst = std::slice::from_raw_parts_mut(pg, page::BLCKSZ);
            match offsets {
                None => pages::copy_page(rel, blk, strategy, dst),
                Some(offs) => pages::copy_rows(rel, blk, strategy, dst, offs),
            }
        };
        self.sees_all = kind == Some(PageKind::Data)
            && torii_core::vm::page_all_visible(self.page())
            && self.snap().sees_all_visible_pages();
        kind
    }

    /// Loads a block and collects the offsets of the rows visible to the scan's snapshot.
    pub fn load_visible(&mut self, blk: u32) {
        let kind = self.load(blk);
        if kind != Some(PageKind::Data) {
            return;
        }
        let n = page::line_pointer_count(self.page());
        for off in 1..=n {
            self.consider(off as u16);
        }
    }

    fn push_visible(&mut self, off: u16, ptr: *const u8, len: usize) {
        let i = self.nvis;
        self.vis[i] = off;
        self.vis_ptr[i] = ptr;
        self.vis_len[i] = len as u32;
        self.nvis += 1;
    }

    /// Adds the version of row `off` that the snapshot sees (if any) to the visible list.
    pub fn consider(&mut self, off: u16) -> bool {
        let rel = self.rel();
        let Some(row) = self.row(off) else {
            return false;
        };
        if self.sees_all {
            // Page at a time, as heap: on a page marked all-visible every normal row is the
            // version every MVCC snapshot sees (the mark is cleared before any change).
            let (ptr, len) = (row.as_ptr(), row.len());
            self.push_visible(off, ptr, len);
            return true;
        }
        // SAFETY: rel is the scan's open relation; page_cxt is the scan's context.
        let (ptr, len) = match unsafe { self.snap().resolve(rel, row) } {
            Version::None => return false,
            Version::Current(r) => (r.as_ptr(), r.len()),
            Version::Old(img) => unsafe {
                let mem = pg_sys::MemoryContextAlloc(self.page_cxt, img.len()) as *mut u8;
                std::ptr::copy_nonoverlapping(img.as_ptr(), mem, img.len());
                (mem as *const u8, img.len())
            },
        };
        self.push_visible(off, ptr, len);
        true
    }

    /// The stored row at `off` of the loaded page, if it is a normal, well-formed item.
    pub fn row(&self, off: u16) -> Option<&[u8]> {
        let p = self.page();
        if off == 0 || off as usize > page::line_pointer_count(p) {
            return None;
        }
        let lp = page::line_pointer(p, off as usize);
        if lp.flags != LP_NORMAL {
            return None;
        }
        if lp.off + lp.len > page::SPECIAL_OFFSET || lp.off < page::pd_upper(p) {
            // SAFETY: rel is open.
            unsafe {
                pages::report_corrupt(
                    self.rel(),
                    self.cur_block,
                    &page::PageError::Malformed(format!("line pointer {off} out of bounds")),
                )
            }
        }
        let row = &p[lp.off..lp.off + lp.len];
        if let Err(e) = torii_core::row::validate(row) {
            // SAFETY: rel is open.
            unsafe {
                pages::report_corrupt(
                    self.rel(),
                    self.cur_block,
                    &page::PageError::Malformed(format!("row {off}: {e}")),
                )
            }
        }
        Some(row)
    }

    /// Points the scan's HeapTupleData at visible version `i` and stores it in `slot`.
    ///
    /// # Safety
    /// `slot` must be a valid heap tuple slot.
    pub unsafe fn store(&mut self, i: usize, slot: *mut pg_sys::TupleTableSlot) {
        let (off, ptr, len) = (self.vis[i], self.vis_ptr[i], self.vis_len[i] as usize);
        self.tuple.t_len = len as u32;
        self.tuple.t_self = tid(self.cur_block, off);
        self.tuple.t_tableOid = unsafe { (*self.rel()).rd_id };
        self.tuple.t_data = ptr as *mut pg_sys::HeapTupleHeaderData;
        // SAFETY: the tuple points into our page copy, which stays valid until the next call.
        unsafe {
            pg_sys::ExecStoreHeapTuple(&mut self.tuple, slot, false);
        }
    }
}

/// Counts a scan in pg_stat_user_tables (`pgstat_count_heap_scan`).
unsafe fn count_scan(rel: pg_sys::Relation) {
    if should_count(rel) {
        (*(*rel).pgstat_info).t_counts.t_numscans += 1;
    }
}

/// `pgstat_should_count_relation`.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn should_count(rel: pg_sys::Relation) -> bool {
    if !(*rel).pgstat_info.is_null() {
        return true;
    }
    if (*rel).pgstat_enabled {
        pg_sys::pgstat_assoc_relation(rel);
        return !(*rel).pgstat_info.is_null();
    }
    false
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_begin(
    rel: pg_sys::Relation,
    snapshot: pg_sys::Snapshot,
    nkeys: i32,
    key: *mut pg_sys::ScanKeyData,
    pscan: pg_sys::ParallelTableScanDesc,
    flags: u32,
) -> pg_sys::TableScanDesc {
    let s = pg_sys::palloc0(std::mem::size_of::<ToriiScan>()) as *mut ToriiScan;
    let scan = &mut *s;
    pg_sys::RelationIncrementReferenceCount(rel);
    scan.base.rs_rd = rel;
    scan.base.rs_snapshot = snapshot;
    scan.base.rs_nkeys = nkeys;
    scan.base.rs_key = key;
    scan.base.rs_flags = flags;
    scan.base.rs_parallel = pscan;
    scan.page = pg_sys::palloc(page::BLCKSZ) as *mut u8;
    scan.page_cxt = pg_sys::AllocSetContextCreateExtended(
        pg_sys::CurrentMemoryContext,
        c"torii scan versions".as_ptr(),
        0,
        8 * 1024,
        8 * 1024 * 1024,
    );
    scan.cur_block = pg_sys::InvalidBlockNumber;
    scan.pos = -1;
    let snap = if snapshot.is_null() {
        Snap::of_kind(super::visibility::BUILD)
    } else {
        Snap::new(snapshot)
    };
    scan.snap = pg_sys::palloc(std::mem::size_of::<Snap>()) as *mut Snap;
    std::ptr::write(scan.snap, snap);
    init_range(scan);
    if flags & pg_sys::ScanOptions::SO_TYPE_SEQSCAN != 0 {
        count_scan(rel);
    }
    // SERIALIZABLE: a scan that reads the whole table (or any of it, for sample and TID range
    // scans) takes a relation predicate lock, as heap's do. A bitmap scan locked the index
    // pages of its predicate already and locks each row it returns (scan_bitmap_next_block).
    if flags
        & (pg_sys::ScanOptions::SO_TYPE_SEQSCAN
            | pg_sys::ScanOptions::SO_TYPE_SAMPLESCAN
            | pg_sys::ScanOptions::SO_TYPE_TIDRANGESCAN)
        != 0
        && !snapshot.is_null()
        && (*snapshot).snapshot_type == pg_sys::SnapshotType::SNAPSHOT_MVCC
    {
        crate::pg_extra::PredicateLockRelation(rel, snapshot);
    }
    if !pscan.is_null() {
        scan.pwork =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::ParallelBlockTableScanWorkerData>())
                as *mut pg_sys::ParallelBlockTableScanWorkerData;
    }
    s as pg_sys::TableScanDesc
}

/// Sets the block range and buffer strategy for a (re)started scan.
unsafe fn init_range(scan: &mut ToriiScan) {
    let rel = scan.rel();
    scan.nblocks = if scan.base.rs_parallel.is_null() {
        pages::nblocks(rel)
    } else {
        (*(scan.base.rs_parallel as pg_sys::ParallelBlockTableScanDesc)).phs_nblocks
    };
    scan.start_block = 1;
    scan.end_block = scan.nblocks;
    let bulk = scan.base.rs_flags & pg_sys::ScanOptions::SO_ALLOW_STRAT != 0
        && scan.nblocks > (pg_sys::NBuffers / 4) as u32;
    if bulk && scan.strategy.is_null() {
        scan.strategy = pg_sys::GetAccessStrategy(pg_sys::BufferAccessStrategyType::BAS_BULKREAD);
    }
    scan.inited = false;
    scan.cur_block = pg_sys::InvalidBlockNumber;
    scan.nvis = 0;
    scan.pos = -1;
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_end(sscan: pg_sys::TableScanDesc) {
    let scan = &mut *(sscan as *mut ToriiScan);
    pg_sys::RelationDecrementReferenceCount(scan.rel());
    if !scan.strategy.is_null() {
        pg_sys::FreeAccessStrategy(scan.strategy);
    }
    if scan.base.rs_flags & pg_sys::ScanOptions::SO_TEMP_SNAPSHOT != 0 {
        pg_sys::UnregisterSnapshot(scan.base.rs_snapshot);
    }
    pg_sys::pfree(scan.page as *mut _);
    pg_sys::MemoryContextDelete(scan.page_cxt);
    pg_sys::pfree(scan.snap as *mut _);
    if !scan.pwork.is_null() {
        pg_sys::pfree(scan.pwork as *mut _);
    }
    pg_sys::pfree(sscan as *mut _);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_rescan(
    sscan: pg_sys::TableScanDesc,
    key: *mut pg_sys::ScanKeyData,
    set_params: bool,
    allow_strat: bool,
    allow_sync: bool,
    allow_pagemode: bool,
) {
    let scan = &mut *(sscan as *mut ToriiScan);
    if !key.is_null() && scan.base.rs_nkeys > 0 {
        std::ptr::copy(key, scan.base.rs_key, scan.base.rs_nkeys as usize);
    }
    if set_params {
        let f = &mut scan.base.rs_flags;
        for (on, bit) in [
            (allow_strat, pg_sys::ScanOptions::SO_ALLOW_STRAT),
            (allow_sync, pg_sys::ScanOptions::SO_ALLOW_SYNC),
            (allow_pagemode, pg_sys::ScanOptions::SO_ALLOW_PAGEMODE),
        ] {
            if on {
                *f |= bit;
            } else {
                *f &= !bit;
            }
        }
    }
    let (min, max) = (scan.min_tid, scan.max_tid);
    init_range(scan);
    if scan.base.rs_flags & pg_sys::ScanOptions::SO_TYPE_TIDRANGESCAN != 0 {
        set_tid_bounds(scan, min, max);
    }
}

/// Next block of a forward scan, or None at the end.
unsafe fn next_block(scan: &mut ToriiScan, forward: bool) -> Option<u32> {
    if !scan.base.rs_parallel.is_null() {
        let pbscan = scan.base.rs_parallel as pg_sys::ParallelBlockTableScanDesc;
        if !scan.inited {
            pg_sys::table_block_parallelscan_startblock_init(scan.rel(), scan.pwork, pbscan);
            scan.inited = true;
        }
        let b = pg_sys::table_block_parallelscan_nextpage(scan.rel(), scan.pwork, pbscan);
        return (b != pg_sys::InvalidBlockNumber).then_some(b);
    }
    if !scan.inited {
        scan.inited = true;
        if scan.start_block >= scan.end_block {
            return None;
        }
        return Some(if forward {
            scan.start_block
        } else {
            scan.end_block - 1
        });
    }
    let cur = scan.cur_block;
    if forward {
        (cur + 1 < scan.end_block).then_some(cur + 1)
    } else {
        (cur > scan.start_block).then_some(cur.wrapping_sub(1))
    }
}

/// Does the row at `off` satisfy the scan keys (rarely used outside catalogs)?
unsafe fn keys_match(scan: &mut ToriiScan, slot: *mut pg_sys::TupleTableSlot) -> bool {
    for i in 0..scan.base.rs_nkeys as usize {
        let k = &mut *scan.base.rs_key.add(i);
        let mut isnull = false;
        let d = pg_sys::slot_getattr(slot, k.sk_attno as i32, &mut isnull);
        if k.sk_flags & pg_sys::SK_ISNULL as i32 != 0 || isnull {
            return false;
        }
        let r = pg_sys::FunctionCall2Coll(&mut k.sk_func, k.sk_collation, d, k.sk_argument);
        if r.value() == 0 {
            return false;
        }
    }
    true
}

/// Whether TID (blk, off) is inside the scan's TID range.
fn in_tid_range(scan: &ToriiScan, blk: u32, off: u16) -> bool {
    if scan.base.rs_flags & pg_sys::ScanOptions::SO_TYPE_TIDRANGESCAN == 0 {
        return true;
    }
    (blk, off) >= scan.min_tid && (blk, off) <= scan.max_tid
}

/// Returns the next visible row in `direction`.
unsafe fn getnext(
    scan: &mut ToriiScan,
    direction: pg_sys::ScanDirection::Type,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    let forward = direction != pg_sys::ScanDirection::BackwardScanDirection;
    loop {
        if scan.inited && scan.cur_block != pg_sys::InvalidBlockNumber {
            scan.pos += if forward { 1 } else { -1 };
            if scan.pos >= 0 && (scan.pos as usize) < scan.nvis {
                let off = scan.vis[scan.pos as usize];
                if !in_tid_range(scan, scan.cur_block, off) {
                    continue;
                }
                scan.store(scan.pos as usize, slot);
                if scan.base.rs_nkeys > 0 && !keys_match(scan, slot) {
                    continue;
                }
                if should_count(scan.rel()) {
                    (*(*scan.rel()).pgstat_info).t_counts.t_tuples_returned += 1;
                }
                return true;
            }
        }
        match next_block(scan, forward) {
            None => {
                scan.inited = false;
                scan.cur_block = pg_sys::InvalidBlockNumber;
                scan.nvis = 0;
                pg_sys::ExecClearTuple(slot);
                return false;
            }
            Some(blk) => {
                pgrx::check_for_interrupts!();
                scan.load_visible(blk);
                scan.pos = if forward { -1 } else { scan.nvis as isize };
            }
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_getnextslot(
    sscan: pg_sys::TableScanDesc,
    direction: pg_sys::ScanDirection::Type,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    getnext(&mut *(sscan as *mut ToriiScan), direction, slot)
}

unsafe fn set_tid_bounds(scan: &mut ToriiScan, min: (u32, u16), max: (u32, u16)) {
    scan.min_tid = min;
    scan.max_tid = max;
    scan.start_block = min.0.max(1);
    scan.end_block = if max.0 == u32::MAX {
        scan.nblocks
    } else {
        (max.0 + 1).min(scan.nblocks)
    };
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_set_tidrange(
    sscan: pg_sys::TableScanDesc,
    mintid: pg_sys::ItemPointer,
    maxtid: pg_sys::ItemPointer,
) {
    let scan = &mut *(sscan as *mut ToriiScan);
    init_range(scan);
    set_tid_bounds(scan, tid_parts(&*mintid), tid_parts(&*maxtid));
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_getnextslot_tidrange(
    sscan: pg_sys::TableScanDesc,
    direction: pg_sys::ScanDirection::Type,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    getnext(&mut *(sscan as *mut ToriiScan), direction, slot)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn parallelscan_estimate(rel: pg_sys::Relation) -> pg_sys::Size {
    pg_sys::table_block_parallelscan_estimate(rel)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn parallelscan_initialize(
    rel: pg_sys::Relation,
    pscan: pg_sys::ParallelTableScanDesc,
) -> pg_sys::Size {
    pg_sys::table_block_parallelscan_initialize(rel, pscan)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn parallelscan_reinitialize(
    rel: pg_sys::Relation,
    pscan: pg_sys::ParallelTableScanDesc,
) {
    pg_sys::table_block_parallelscan_reinitialize(rel, pscan)
}

// ---------------------------------------------------------------------------------------
// Bitmap heap scans.

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_bitmap_next_block(
    sscan: pg_sys::TableScanDesc,
    tbmres: *mut pg_sys::TBMIterateResult,
) -> bool {
    let scan = &mut *(sscan as *mut ToriiScan);
    let res = &*tbmres;
    scan.nvis = 0;
    scan.pos = -1;
    scan.inited = true;
    if res.blockno == 0 || res.blockno >= scan.nblocks {
        return false;
    }
    if res.ntuples >= 0 {
        let offsets = std::slice::from_raw_parts(res.offsets.as_ptr(), res.ntuples as usize);
        if scan.load_rows(res.blockno, offsets) != Some(PageKind::Data) {
            return false;
        }
        for &off in offsets {
            scan.consider(off);
        }
    } else {
        scan.load_visible(res.blockno);
    }
    predicate_lock_visible(scan, res.blockno);
    scan.nvis > 0
}

/// SERIALIZABLE: a predicate lock on every row version a bitmap scan returns from the loaded
/// page (heap's bitmap scans do the same; PredicateLockTID does nothing outside SERIALIZABLE).
unsafe fn predicate_lock_visible(scan: &ToriiScan, blk: u32) {
    let snapshot = scan.base.rs_snapshot;
    if snapshot.is_null() || (*snapshot).snapshot_type != pg_sys::SnapshotType::SNAPSHOT_MVCC {
        return;
    }
    for i in 0..scan.nvis {
        // SAFETY: vis_ptr/vis_len describe a row version kept alive until the next page loads.
        let row = std::slice::from_raw_parts(scan.vis_ptr[i], scan.vis_len[i] as usize);
        let writer = torii_core::row::RowHeader::read(row).xid;
        let mut t = super::visibility::predicate_tid(blk, scan.vis[i], writer);
        crate::pg_extra::PredicateLockTID(
            scan.rel(),
            &mut t,
            snapshot,
            super::visibility::xid_of(writer),
        );
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_bitmap_next_tuple(
    sscan: pg_sys::TableScanDesc,
    _tbmres: *mut pg_sys::TBMIterateResult,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    let scan = &mut *(sscan as *mut ToriiScan);
    scan.pos += 1;
    if scan.pos as usize >= scan.nvis {
        return false;
    }
    scan.store(scan.pos as usize, slot);
    if should_count(scan.rel()) {
        (*(*scan.rel()).pgstat_info).t_counts.t_tuples_fetched += 1;
    }
    true
}

// ---------------------------------------------------------------------------------------
// TABLESAMPLE.

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_sample_next_block(
    sscan: pg_sys::TableScanDesc,
    scanstate: *mut pg_sys::SampleScanState,
) -> bool {
    let scan = &mut *(sscan as *mut ToriiScan);
    let tsm = (*scanstate).tsmroutine;
    let blk = if let Some(next) = (*tsm).NextSampleBlock {
        next(scanstate, scan.nblocks)
    } else {
        // Sequential block order, starting after the metapage.
        if !scan.inited {
            scan.inited = true;
            if scan.nblocks > 1 {
                1
            } else {
                pg_sys::InvalidBlockNumber
            }
        } else if scan.cur_block + 1 < scan.nblocks {
            scan.cur_block + 1
        } else {
            pg_sys::InvalidBlockNumber
        }
    };
    if blk == pg_sys::InvalidBlockNumber || blk >= scan.nblocks {
        scan.inited = false;
        scan.cur_block = pg_sys::InvalidBlockNumber;
        return false;
    }
    scan.inited = true;
    if blk == 0 {
        // The metapage holds no rows.
        scan.cur_block = 0;
        scan.nvis = 0;
        return true;
    }
    scan.load(blk);
    scan.sample_off = 0;
    true
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_sample_next_tuple(
    sscan: pg_sys::TableScanDesc,
    scanstate: *mut pg_sys::SampleScanState,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    let scan = &mut *(sscan as *mut ToriiScan);
    let tsm = (*scanstate).tsmroutine;
    let is_data = scan.cur_block != 0 && page::kind(scan.page()) == Some(PageKind::Data);
    let maxoff = if is_data {
        page::line_pointer_count(scan.page()) as u16
    } else {
        0
    };
    loop {
        let off = match (*tsm).NextSampleTuple {
            Some(f) => f(scanstate, scan.cur_block, maxoff),
            None => pg_sys::InvalidOffsetNumber,
        };
        if off == pg_sys::InvalidOffsetNumber || off > maxoff {
            pg_sys::ExecClearTuple(slot);
            return false;
        }
        scan.nvis = 0;
        if scan.consider(off) {
            scan.store(0, slot);
            return true;
        }
    }
}

// ---------------------------------------------------------------------------------------
// ANALYZE.

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_analyze_next_block(
    sscan: pg_sys::TableScanDesc,
    blockno: pg_sys::BlockNumber,
    bstrategy: pg_sys::BufferAccessStrategy,
) -> bool {
    let scan = &mut *(sscan as *mut ToriiScan);
    scan.strategy = bstrategy;
    let kind = if blockno == 0 {
        None
    } else {
        scan.load(blockno)
    };
    scan.strategy = std::ptr::null_mut();
    scan.cur_block = blockno;
    scan.sample_off = 0;
    if kind != Some(PageKind::Data) {
        // Make the page look empty to the tuple loop.
        let p = scan.page_mut();
        page::init_page(p, PageKind::Meta);
    }
    true
}

#[pg_guard]
pub unsafe extern "C-unwind" fn scan_analyze_next_tuple(
    sscan: pg_sys::TableScanDesc,
    _oldest_xmin: pg_sys::TransactionId,
    liverows: *mut f64,
    deadrows: *mut f64,
    slot: *mut pg_sys::TupleTableSlot,
) -> bool {
    let scan = &mut *(sscan as *mut ToriiScan);
    let is_data = page::kind(scan.page()) == Some(PageKind::Data);
    let n = if is_data {
        page::line_pointer_count(scan.page())
    } else {
        0
    };
    while (scan.sample_off as usize) < n {
        scan.sample_off += 1;
        let off = scan.sample_off;
        if scan.row(off).is_none() {
            // Like heap: a dead pointer (a row removed, its index entries not yet) is a dead
            // row, so that autovacuum's n_dead_tup still sees it after ANALYZE.
            if page::line_pointer(scan.page(), off as usize).flags == page::LP_DEAD {
                *deadrows += 1.0;
            }
            continue;
        }
        // The scan's snapshot kind for ANALYZE is the build mode: rows whose writer did not
        // abort; a deleted row counts as dead.
        scan.nvis = 0;
        if scan.consider(off) {
            *liverows += 1.0;
            scan.store(0, slot);
            return true;
        }
        *deadrows += 1.0;
    }
    pg_sys::ExecClearTuple(slot);
    false
}
