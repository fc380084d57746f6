//! The visibility map fork of a torii table (layout and invariant: `torii_core::vm`).
//!
//! VACUUM sets a block's all-visible bit together with its page's `PD_ALL_VISIBLE`
//! ([`set_all_visible`]); the first change of such a page clears both first
//! ([`clear_before_change`], called by `wal::PageEdit` when it registers the page). Both are one
//! generic WAL record over the data page and the map page; the map page is written directly,
//! without torii's page checksum (it is PostgreSQL's format).

use super::buffer::{Lock, LockedBuffer};
use pgrx::pg_sys;
use torii_core::page::{self, PageKind};
use torii_core::vm;

/// The map page holding `loc`'s bits, exclusively locked, if the fork has it (no extension).
///
/// # Safety
/// `rel` must be open.
unsafe fn existing_map_page(rel: pg_sys::Relation, loc: vm::Location) -> Option<LockedBuffer> {
    let smgr = pg_sys::RelationGetSmgr(rel);
    let fork = pg_sys::ForkNumber::VISIBILITYMAP_FORKNUM;
    if !pg_sys::smgrexists(smgr, fork) || pg_sys::smgrnblocks(smgr, fork) <= loc.map_block {
        return None;
    }
    let buf = pg_sys::ReadBufferExtended(
        rel,
        fork,
        loc.map_block,
        pg_sys::ReadBufferMode::RBM_ZERO_ON_ERROR,
        std::ptr::null_mut(),
    );
    Some(LockedBuffer::lock_pinned(buf, Lock::Exclusive))
}

/// One generic WAL record: `PD_ALL_VISIBLE` of the data page and the block's bits on the map
/// page (exclusively locked by the caller, or None when the fork has no page for it) set to
/// `on`.
///
/// # Safety
/// `rel` open; `data` its data page, exclusively locked; `map` pinned and exclusively locked.
unsafe fn log_change(
    rel: pg_sys::Relation,
    data: &LockedBuffer,
    map: Option<pg_sys::Buffer>,
    loc: vm::Location,
    on: bool,
) {
    let state = pg_sys::GenericXLogStart(rel);
    let dimg = pg_sys::GenericXLogRegisterBuffer(state, data.buffer(), 0) as *mut u8;
    // SAFETY: generic WAL gives a BLCKSZ image per registered buffer until finish.
    let dpage = std::slice::from_raw_parts_mut(dimg, page::BLCKSZ);
    vm::set_page_all_visible(dpage, on);
    page::set_checksum(dpage);
    if let Some(mb) = map {
        let cur = std::slice::from_raw_parts(pg_sys::BufferGetPage(mb) as *const u8, page::BLCKSZ);
        // A page torii has not changed yet still has its hole: log it whole.
        let flags = if u16::from_ne_bytes([cur[12], cur[13]]) as usize != page::BLCKSZ
            || page::is_new(cur)
        {
            pg_sys::GENERIC_XLOG_FULL_IMAGE as i32
        } else {
            0
        };
        let mimg = pg_sys::GenericXLogRegisterBuffer(state, mb, flags) as *mut u8;
        let mpage = std::slice::from_raw_parts_mut(mimg, page::BLCKSZ);
        if page::is_new(mpage) {
            pg_sys::PageInit(mimg as pg_sys::Page, page::BLCKSZ, 0);
        }
        vm::set_bits(mpage, loc, on);
    }
    pg_sys::GenericXLogFinish(state);
    super::pages::remember_written(rel, data.buffer(), data.block());
}

/// Clears the block's all-visible bit and its page's flag before a change of the page.
/// Cheap when the flag is not set (the usual case).
///
/// # Safety
/// `rel` must be open and `data` one of its pages, exclusively locked; no generic WAL record
/// may have registered `data` yet.
pub unsafe fn clear_before_change(rel: pg_sys::Relation, data: &LockedBuffer) {
    let p = data.page();
    if page::kind(p) != Some(PageKind::Data) || !vm::page_all_visible(p) {
        return;
    }
    let loc = vm::location(data.block());
    let map = existing_map_page(rel, loc);
    log_change(rel, data, map.as_ref().map(|m| m.buffer()), loc, false);
}

/// What VACUUM learns from one read of a data page, one writer lookup per row.
#[derive(Debug, Clone, Copy)]
pub struct PageCensus {
    /// Every row is visible to every snapshot: each normal row's writer is committed and
    /// older than `oldest` (no snapshot can need an older version), and no row is deleted,
    /// moved, speculative or a dead pointer.
    pub all_visible: bool,
    /// The rows heap's VACUUM would count live: committed rows not deleted, and rows whose
    /// delete or update is still running or rolled back (their previous version is the live
    /// one). Not counted: rows whose delete committed, inserts still running or rolled back
    /// (no previous version), speculative rows, the stubs of moved rows.
    pub live: u64,
}

/// Takes the [`PageCensus`] of a data page.
///
/// # Safety
/// Reads CLOG for the writers.
pub unsafe fn census(p: &[u8], oldest: u64) -> PageCensus {
    use crate::am::visibility::{writer_status, WriterStatus};
    let mut c = PageCensus {
        all_visible: true,
        live: 0,
    };
    for off in 1..=page::line_pointer_count(p) {
        let lp = page::line_pointer(p, off);
        match lp.flags {
            page::LP_UNUSED => continue,
            page::LP_NORMAL => {}
            _ => {
                c.all_visible = false;
                continue;
            }
        }
        let row = (lp.off >= page::pd_upper(p) && lp.off + lp.len <= page::SPECIAL_OFFSET)
            .then(|| &p[lp.off..lp.off + lp.len])
            .filter(|row| torii_core::row::validate(row).is_ok());
        let Some(row) = row else {
            c.all_visible = false;
            continue;
        };
        let h = torii_core::row::RowHeader::read(row);
        let committed = writer_status(h.xid) == WriterStatus::Committed;
        if h.is_deleted() || h.is_speculative() || h.xid >= oldest || !committed {
            c.all_visible = false;
        }
        if h.is_moved() || h.is_speculative() {
            continue;
        }
        let live = if h.is_deleted() {
            !committed
        } else {
            committed || !h.undo.is_none()
        };
        c.live += live as u64;
    }
    c
}

/// What [`scan_data_pages`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct MarkPass {
    /// Pages newly marked all-visible.
    pub marked: u32,
    /// Data pages read.
    pub data_read: u32,
    /// Pages skipped because they were marked already (all are data pages).
    pub skipped: u32,
    /// Live rows on the data pages read ([`PageCensus::live`]; 0 when not marking).
    pub live: u64,
}

/// The map page pinned by the `visibilitymap_*` calls, kept across blocks; released on drop
/// (also after an ERROR).
pub struct MapPin(pg_sys::Buffer);

impl MapPin {
    pub fn new() -> MapPin {
        MapPin(pg_sys::InvalidBuffer as pg_sys::Buffer)
    }
}

impl Default for MapPin {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for MapPin {
    fn drop(&mut self) {
        if self.0 != pg_sys::InvalidBuffer as pg_sys::Buffer {
            // SAFETY: a buffer pinned by visibilitymap_get_status/pin, pinned once.
            unsafe { pg_sys::ReleaseBuffer(self.0) }
        }
    }
}

/// VACUUM's one pass over the data pages, as heap's first phase: with `mark`, marks the pages
/// whose rows every snapshot sees all-visible and counts the live rows of the pages it reads
/// (for VACUUM's row count); with `dead`, collects the dead line pointers (as
/// `blk << 16 | offset`, sorted). Pages already marked are skipped without being read when they
/// form a long enough run ([`vm::skippable`]): a marked page has no dead pointers, its first
/// change clears the mark. `on_block` is told each block done (read or skipped).
///
/// # Safety
/// `rel` must be an open torii table locked by VACUUM.
pub unsafe fn scan_data_pages(
    rel: pg_sys::Relation,
    oldest: u64,
    strategy: pg_sys::BufferAccessStrategy,
    mark: bool,
    mut dead: Option<&mut Vec<i64>>,
    mut on_block: impl FnMut(u32),
) -> MarkPass {
    let nblocks = super::pages::nblocks(rel);
    let mut pin = MapPin::new();
    let mut copy = vec![0u8; page::BLCKSZ];
    let marked_now: Vec<bool> = (0..nblocks)
        .map(|blk| {
            blk > 0
                && pg_sys::visibilitymap_get_status(rel, blk, &mut pin.0) as u8 & vm::ALL_VISIBLE
                    != 0
        })
        .collect();
    let skip = vm::skippable(&marked_now);
    let mut pass = MarkPass::default();
    for blk in 1..nblocks {
        'block: {
            if skip[blk as usize] {
                pass.skipped += 1;
                break 'block;
            }
            if super::pages::copy_page(rel, blk, strategy, &mut copy) != Some(PageKind::Data) {
                break 'block;
            }
            pass.data_read += 1;
            if let Some(dead) = dead.as_deref_mut() {
                for off in 1..=page::line_pointer_count(&copy) {
                    if page::line_pointer(&copy, off).flags == page::LP_DEAD {
                        dead.push(((blk as i64) << 16) | off as i64);
                    }
                }
            }
            if !mark {
                break 'block;
            }
            let c = census(&copy, oldest);
            pass.live += c.live;
            if !marked_now[blk as usize]
                && c.all_visible
                && mark_if_all_visible(rel, blk, oldest, strategy, &mut pin)
            {
                pass.marked += 1;
            }
        }
        on_block(blk);
    }
    pass
}

/// Marks data page `blk` all-visible if, checked again under its exclusive lock, every
/// snapshot sees all its rows; true if it did.
///
/// # Safety
/// `rel` must be an open torii table locked by VACUUM; the caller holds no buffer lock.
pub unsafe fn mark_if_all_visible(
    rel: pg_sys::Relation,
    blk: u32,
    oldest: u64,
    strategy: pg_sys::BufferAccessStrategy,
    pin: &mut MapPin,
) -> bool {
    // Pin (and extend) the map before locking the data page, as heap does.
    pg_sys::visibilitymap_pin(rel, blk, &mut pin.0);
    let b = LockedBuffer::read(rel, blk, Lock::Exclusive, strategy);
    if page::kind(b.page()) != Some(PageKind::Data)
        || vm::page_all_visible(b.page())
        || !census(b.page(), oldest).all_visible
    {
        return false;
    }
    let vmbuf = pin.0;
    pg_sys::LockBuffer(vmbuf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
    struct Unlock(pg_sys::Buffer);
    impl Drop for Unlock {
        fn drop(&mut self) {
            // SAFETY: locked just above.
            unsafe { pg_sys::LockBuffer(self.0, pg_sys::BUFFER_LOCK_UNLOCK as i32) }
        }
    }
    let _unlock = Unlock(vmbuf);
    log_change(rel, &b, Some(vmbuf), vm::location(blk), true);
    true
}

/// Pages the map says are all-visible (for `relallvisible`).
///
/// # Safety
/// `rel` must be open.
pub unsafe fn count_all_visible(rel: pg_sys::Relation) -> u32 {
    let mut all_visible = 0;
    let mut all_frozen = 0;
    pg_sys::visibilitymap_count(rel, &mut all_visible, &mut all_frozen);
    all_visible
}
