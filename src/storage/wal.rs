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
use torii_core::{meta::Meta, page, page::PageKind};

/// An open generic WAL record over at most 4 buffers.
pub struct PageEdit {
    state: *mut pg_sys::GenericXLogState,
    images: [*mut u8; 4],
    n: usize,
}

impl PageEdit {
    /// # Safety
    /// `rel` must be open; its buffers registered later must be exclusively locked.
    pub unsafe fn start(rel: pg_sys::Relation) -> PageEdit {
        PageEdit {
            state: pg_sys::GenericXLogStart(rel),
            images: [std::ptr::null_mut(); 4],
            n: 0,
        }
    }

    /// Registers an exclusively locked buffer; `full_image` logs the whole page (for pages
    /// formatted from scratch). Returns the index of its image.
    pub fn register(&mut self, buf: &LockedBuffer, full_image: bool) -> usize {
        assert!(buf.lock() == Lock::Exclusive, "page edit needs an exclusive lock");
        assert!(self.n < 4, "a generic WAL record covers at most 4 pages");
        let flags = if full_image {
            pg_sys::GENERIC_XLOG_FULL_IMAGE as i32
        } else {
            0
        };
        // SAFETY: state is open; the buffer is pinned and exclusively locked by `buf`.
        let img = unsafe { pg_sys::GenericXLogRegisterBuffer(self.state, buf.buffer(), flags) };
        self.images[self.n] = img as *mut u8;
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
pub fn init_metapage(rel: pg_sys::Relation, buf: &LockedBuffer, horizon: u64) {
    // SAFETY: rel is open, buf exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, true);
    Meta::init_page(e.page(i), horizon);
    e.finish();
}

/// Adds rows to a data page (formatting it first when `format` is set) in one record, and
/// returns their offsets. The caller has checked that they fit.
pub fn add_rows(
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
    let mut offs = Vec::with_capacity(rows.len());
    for row in rows {
        // SAFETY: img is a BLCKSZ page image with a valid header; PAI_IS_HEAP caps the slot
        // count at MaxHeapTuplesPerPage.
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
        offs.push(off);
    }
    e.finish();
    offs
}
