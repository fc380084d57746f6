//! Every change of a torii page goes through this module, as generic WAL records.
//!
//! [`PageEdit`] wraps `GenericXLogStart` … `GenericXLogFinish`: callers edit the page *images*
//! that generic WAL hands out, and [`PageEdit::finish`] stamps each image's CRC32C before
//! `GenericXLogFinish` computes the deltas, applies them, marks the buffers dirty and sets
//! their LSNs (inside its own critical section, in which no code of ours runs). A `PageEdit`
//! dropped without `finish` (an ERROR while editing) calls `GenericXLogAbort`, leaving the
//! buffers untouched.
//!
//! The functions below name the operation (format a page, add rows, …) so that a custom
//! resource manager with row-level records can replace generic WAL later without touching
//! the callers.

use super::buffer::{Lock, LockedBuffer};
use pgrx::pg_sys;
use torii_core::row::UndoPtr;
use torii_core::{meta::Meta, page, page::PageKind};

/// An open generic WAL record over at most 4 buffers.
pub struct PageEdit {
    state: *mut pg_sys::GenericXLogState,
    images: [*mut u8; 4],
    n: usize,
    rel: pg_sys::Relation,
    bufs: [(pg_sys::Buffer, u32); 4],
}

impl PageEdit {
    /// # Safety
    /// `rel` must be open; its buffers registered later must be exclusively locked.
    pub unsafe fn start(rel: pg_sys::Relation) -> PageEdit {
        PageEdit {
            state: pg_sys::GenericXLogStart(rel),
            images: [std::ptr::null_mut(); 4],
            n: 0,
            rel,
            bufs: [(0, 0); 4],
        }
    }

    /// Registers an exclusively locked buffer; `full_image` logs the whole page (for pages
    /// formatted from scratch). Returns the index of its image.
    pub fn register(&mut self, buf: &LockedBuffer, full_image: bool) -> usize {
        assert!(
            buf.lock() == Lock::Exclusive,
            "page edit needs an exclusive lock"
        );
        assert!(self.n < 4, "a generic WAL record covers at most 4 pages");
        let flags = if full_image {
            pg_sys::GENERIC_XLOG_FULL_IMAGE as i32
        } else {
            0
        };
        // A change of an all-visible data page first clears its visibility map bit, in a record
        // of its own logged before this one (torii_core::vm, "Invariant").
        // SAFETY: rel is open and buf exclusively locked; it is not registered yet.
        unsafe { super::vm::clear_before_change(self.rel, buf) };
        // SAFETY: state is open; the buffer is pinned and exclusively locked by `buf`.
        let img = unsafe { pg_sys::GenericXLogRegisterBuffer(self.state, buf.buffer(), flags) };
        self.images[self.n] = img as *mut u8;
        self.bufs[self.n] = (buf.buffer(), buf.block());
        self.n += 1;
        self.n - 1
    }

    /// The editable image of registered page `i`.
    pub fn page(&mut self, i: usize) -> &mut [u8] {
        assert!(i < self.n);
        // SAFETY: generic WAL owns a BLCKSZ image per registered buffer until finish/abort.
        unsafe { std::slice::from_raw_parts_mut(self.images[i], page::BLCKSZ) }
    }

    /// Stamps the checksums and writes the WAL record.
    pub fn finish(mut self) {
        for i in 0..self.n {
            page::set_checksum(self.page(i));
        }
        let state = std::mem::replace(&mut self.state, std::ptr::null_mut());
        // SAFETY: state is open; GenericXLogFinish frees it.
        unsafe { pg_sys::GenericXLogFinish(state) };
        // The pages we just stamped are valid: spare the next reader the CRC pass.
        for &(buf, blk) in &self.bufs[..self.n] {
            super::pages::remember_written(self.rel, buf, blk);
        }
    }
}

impl Drop for PageEdit {
    fn drop(&mut self) {
        if !self.state.is_null() {
            // SAFETY: the record was started and not finished.
            unsafe { pg_sys::GenericXLogAbort(self.state) };
        }
    }
}

/// Formats block 0 as the metapage.
///
/// # Safety
/// `rel` must be an open relation and `buf` its block 0, exclusively locked.
pub unsafe fn init_metapage(rel: pg_sys::Relation, buf: &LockedBuffer, horizon: u64) {
    // SAFETY: rel is open, buf exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, true);
    Meta::init_page(e.page(i), horizon);
    e.finish();
}

/// Adds rows to a data page (formatting it first when `format` is set) in one record, and
/// returns their offsets. The caller has checked that they fit.
///
/// # Safety
/// `rel` must be an open relation and `buf` a buffer of it, exclusively locked.
pub unsafe fn add_rows(
    rel: pg_sys::Relation,
    buf: &LockedBuffer,
    format: bool,
    rows: &[&[u8]],
) -> Vec<pg_sys::OffsetNumber> {
    // SAFETY: rel is open, buf exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, format);
    let img = e.page(i);
    if format {
        page::init_page(img, PageKind::Data);
    }
    let offs = rows.iter().map(|r| add_item_heap(img, r)).collect();
    e.finish();
    offs
}

/// Writes `bytes` over item `off` of a locked page image: same-size or shorter rows are
/// zero-padded to the item's current length (items never shrink while a change may still be
/// rolled back, so restoring an older image always fits); longer rows grow the item with
/// `PageIndexTupleOverwrite`, the caller having checked the page has room.
fn overwrite_item(img: &mut [u8], off: u16, bytes: &[u8]) {
    let lp = page::line_pointer(img, off as usize);
    if bytes.len() <= lp.len {
        img[lp.off..lp.off + bytes.len()].copy_from_slice(bytes);
        img[lp.off + bytes.len()..lp.off + lp.len].fill(0);
    } else {
        // SAFETY: img is a page image with a valid header and item `off` has storage.
        let ok = unsafe {
            pg_sys::PageIndexTupleOverwrite(
                img.as_mut_ptr() as pg_sys::Page,
                off,
                bytes.as_ptr() as pg_sys::Item,
                bytes.len(),
            )
        };
        if !ok {
            pgrx::error!("torii: failed to grow row {off} to {} bytes", bytes.len());
        }
    }
}

/// Room a row at `off` needs to grow to `len` bytes on this page.
pub fn growth_needed(p: &[u8], off: u16, len: usize) -> usize {
    let lp = page::line_pointer(p, off as usize);
    len.next_multiple_of(8)
        .saturating_sub(lp.len.next_multiple_of(8))
}

/// Appends undo record `record` (reserved space `space`) and writes `new_row` (built by
/// `make_row` from the record's undo pointer) over row `off` of the locked data page: one WAL
/// record over the data page, the undo tail, and — when a new undo page is linked in — that
/// page and the metapage.
///
/// # Safety
/// `rel` must be an open relation; `data` and the buffers of `space` must be its buffers,
/// exclusively locked.
pub unsafe fn change_row(
    rel: pg_sys::Relation,
    data: &LockedBuffer,
    off: u16,
    space: &super::undo::UndoSpace,
    record: &[u8],
    make_row: impl FnOnce(UndoPtr) -> Vec<u8>,
) -> UndoPtr {
    // SAFETY: rel is open; every registered buffer is exclusively locked by its guard.
    let mut e = unsafe { PageEdit::start(rel) };
    let di = e.register(data, false);
    let ptr = append_undo(&mut e, space, record);
    let row = make_row(ptr);
    overwrite_item(e.page(di), off, &row);
    e.finish();
    ptr
}

/// Registers the undo pages of `space` in `e` and appends `record`, linking in a new undo
/// page when the reservation has one.
fn append_undo(e: &mut PageEdit, space: &super::undo::UndoSpace, record: &[u8]) -> UndoPtr {
    match (&space.tail, &space.new_page) {
        (Some(t), None) => {
            let ti = e.register(t, false);
            let o = add_item(e.page(ti), record);
            UndoPtr {
                blk: t.block(),
                off: o,
            }
        }
        (tail, Some(np)) => {
            let new_blk = np.block();
            // A page taken from the head of the free-page list: the list goes on from its next.
            let free_next = (page::kind(np.page()) == Some(PageKind::Free))
                .then(|| page::read_special(np.page()).next);
            let ni = e.register(np, true);
            page::init_page(e.page(ni), PageKind::Undo);
            let o = add_item(e.page(ni), record);
            if let Some(t) = tail {
                let ti = e.register(t, false);
                page::set_next(e.page(ti), new_blk);
            }
            let meta = space
                .meta
                .as_ref()
                .expect("a new undo page comes with the metapage");
            let mi = e.register(meta, false);
            let mp = e.page(mi);
            let mut m = Meta::read(mp);
            if m.undo_head == page::NO_BLOCK {
                m.undo_head = new_blk;
            }
            m.undo_tail = new_blk;
            m.undo_appended += page::BLCKSZ as u64;
            if let Some(next) = free_next.filter(|_| m.free_head == new_blk) {
                m.free_head = next;
                m.free_pages = m.free_pages.saturating_sub(1);
            }
            m.write(mp);
            UndoPtr {
                blk: new_blk,
                off: o,
            }
        }
        (None, None) => unreachable!("undo space always has a page"),
    }
}

/// Adds rows to a data page like [`add_rows`], and in the same WAL record the insert note
/// `note` to the undo log (see `UndoKind::Insert`).
///
/// # Safety
/// `rel` must be an open relation; `buf` and the buffers of `space` must be its buffers,
/// exclusively locked.
pub unsafe fn add_rows_noted(
    rel: pg_sys::Relation,
    buf: &LockedBuffer,
    format: bool,
    rows: &[&[u8]],
    space: &super::undo::UndoSpace,
    note: &[u8],
) -> Vec<pg_sys::OffsetNumber> {
    // SAFETY: rel is open; all buffers are exclusively locked by their guards.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, format);
    append_undo(&mut e, space, note);
    let img = e.page(i);
    if format {
        page::init_page(img, PageKind::Data);
    }
    let offs = rows.iter().map(|r| add_item_heap(img, r)).collect();
    e.finish();
    offs
}

/// Adds a row to a data page image (at most MaxHeapTuplesPerPage slots).
fn add_item_heap(img: &mut [u8], row: &[u8]) -> pg_sys::OffsetNumber {
    // SAFETY: img is a page image with a valid header.
    let off = unsafe {
        pg_sys::PageAddItemExtended(
            img.as_mut_ptr() as pg_sys::Page,
            row.as_ptr() as pg_sys::Item,
            row.len(),
            pg_sys::InvalidOffsetNumber,
            pg_sys::PAI_IS_HEAP as i32,
        )
    };
    if off == pg_sys::InvalidOffsetNumber {
        pgrx::error!("torii: failed to add row of {} bytes to page", row.len());
    }
    off
}

/// Adds an item to a page image, returning its offset.
fn add_item(img: &mut [u8], item: &[u8]) -> u16 {
    // SAFETY: img is a page image with a valid header.
    let o = unsafe {
        pg_sys::PageAddItemExtended(
            img.as_mut_ptr() as pg_sys::Page,
            item.as_ptr() as pg_sys::Item,
            item.len(),
            pg_sys::InvalidOffsetNumber,
            0,
        )
    };
    if o == pg_sys::InvalidOffsetNumber {
        pgrx::error!("torii: failed to add an item of {} bytes", item.len());
    }
    o
}

/// Overwrites row `off` without an undo record: rollback on touch (restoring an aborted
/// change's previous image), confirming a speculative insertion, marking a row locked.
///
/// # Safety
/// `rel` must be an open relation and `data` a buffer of it, exclusively locked.
pub unsafe fn overwrite_row(rel: pg_sys::Relation, data: &LockedBuffer, off: u16, bytes: &[u8]) {
    // SAFETY: rel is open; data is exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let di = e.register(data, false);
    overwrite_item(e.page(di), off, bytes);
    e.finish();
}

/// Applies `f` to the image of a locked page in one WAL record (pruning, setting line
/// pointers unused, unlinking undo pages).
///
/// # Safety
/// `rel` must be an open relation and `buf` a buffer of it, exclusively locked.
pub unsafe fn edit_page(rel: pg_sys::Relation, buf: &LockedBuffer, f: impl FnOnce(&mut [u8])) {
    // SAFETY: rel is open; buf is exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, false);
    f(e.page(i));
    e.finish();
}

/// Applies `f` to the images of up to four locked pages in one WAL record.
///
/// # Safety
/// `rel` must be an open relation and `bufs` buffers of it, exclusively locked.
pub unsafe fn edit_pages(
    rel: pg_sys::Relation,
    bufs: &[&LockedBuffer],
    f: impl FnOnce(&mut [&mut [u8]]),
) {
    // SAFETY: rel is open; every buffer is exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let idx: Vec<usize> = bufs.iter().map(|b| e.register(b, false)).collect();
    let mut imgs: Vec<&mut [u8]> = Vec::with_capacity(idx.len());
    for &i in &idx {
        // SAFETY: each registered image is a distinct BLCKSZ buffer owned by generic WAL.
        let p = e.page(i).as_mut_ptr();
        imgs.push(unsafe { std::slice::from_raw_parts_mut(p, page::BLCKSZ) });
    }
    f(&mut imgs);
    e.finish();
}

/// Marks row `off` dead (a speculative insertion that lost, an aborted insert): no snapshot
/// sees it any more, and its line pointer stays until the indexes forget it.
///
/// # Safety
/// `rel` must be an open relation with a metapage and `data` a buffer of it, exclusively
/// locked.
pub unsafe fn kill_row(rel: pg_sys::Relation, data: &LockedBuffer, off: u16) {
    // The metapage counts the dead pointer (VACUUM then removes its index entries); it is
    // locked after the data page, as the lock order says, and changed in the same record.
    // SAFETY: rel is open with a metapage (the row exists); data is exclusively locked.
    let (meta, _) =
        unsafe { super::pages::read_verified(rel, 0, Lock::Exclusive, std::ptr::null_mut()) };
    // SAFETY: rel is open; both buffers are exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let di = e.register(data, false);
    let mi = e.register(&meta, false);
    let img = e.page(di);
    let mut lp = page::line_pointer(img, off as usize);
    lp.flags = page::LP_DEAD;
    page::set_line_pointer(img, off as usize, lp);
    let mp = e.page(mi);
    let mut m = Meta::read(mp);
    m.pending_dead += 1;
    m.write(mp);
    e.finish();
}
