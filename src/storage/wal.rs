//! Every change of a torii page goes through this module.
//!
//! Row changes (insert, multi-insert, in-place and cold update, delete, rollback on touch,
//! speculative confirm and kill) are [`torii_core::walrec`] records: the page change is the
//! torii-core function WAL redo also calls, applied to a copy of each locked page. With torii
//! preloaded the record is logged by torii's resource manager ([`super::rmgr`]); without, the
//! same page changes are logged as generic WAL (any server replays those without torii).
//!
//! [`PageEdit`] wraps `GenericXLogStart` … `GenericXLogFinish` for everything else (metapage
//! formatting, VACUUM's page edits, torii_btree pages, the visibility map): callers edit the
//! page *images* that generic WAL hands out, and [`PageEdit::finish`] stamps each image's
//! CRC32C before `GenericXLogFinish` computes the deltas, applies them, marks the buffers dirty
//! and sets their LSNs (inside its own critical section, in which no code of ours runs). A
//! `PageEdit` dropped without `finish` (an ERROR while editing) calls `GenericXLogAbort`,
//! leaving the buffers untouched.

use super::buffer::{Lock, LockedBuffer};
use pgrx::pg_sys;
use torii_core::row::{RowHeader, UndoPtr};
use torii_core::undo::UndoKind;
use torii_core::walrec::{self, Rec};
use torii_core::{meta::Meta, page, page::PageKind, pageop};

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

/// The pages a row record touches, locked by the caller (see `torii_core::walrec`, "Blocks").
struct RowPages<'a> {
    data: &'a LockedBuffer,
    /// The record formats the data page.
    data_init: bool,
    /// Block 1: the undo page that takes the record; a new page when `target.link` is set.
    undo: Option<&'a LockedBuffer>,
    /// Block 2: the old undo tail that gets linked to a new undo page.
    tail: Option<&'a LockedBuffer>,
    /// Block 3: the metapage.
    meta: Option<&'a LockedBuffer>,
}

/// Applies a row record to its pages and logs it: as a row-level record of torii's resource
/// manager when torii is preloaded, else as generic WAL over the same page changes. Either
/// way the pages change through the torii-core functions WAL redo uses. Returns the offsets
/// of inserted rows.
///
/// # Safety
/// `rel` must be open and every page of `pages` one of its buffers, exclusively locked.
unsafe fn log_row_record(rel: pg_sys::Relation, rec: &Rec, pages: RowPages) -> Vec<u16> {
    let data_blk = pages.data.block();
    let undo_blk = pages.undo.map(|b| b.block()).unwrap_or(0);
    let slots: [(u8, Option<&LockedBuffer>, bool); 4] = [
        (walrec::BLK_DATA, Some(pages.data), pages.data_init),
        (
            walrec::BLK_UNDO,
            pages.undo,
            walrec::formats(rec, walrec::BLK_UNDO),
        ),
        (walrec::BLK_TAIL, pages.tail, false),
        (walrec::BLK_META, pages.meta, false),
    ];
    let fail = |e: walrec::RecError| -> ! {
        pgrx::error!(
            "torii: cannot apply {} to block {data_blk}: {e}",
            walrec::describe(rec)
        )
    };
    if !super::rmgr::active() {
        notice_generic_wal_once();
        let mut e = PageEdit::start(rel);
        let idx: Vec<(u8, usize)> = slots
            .iter()
            .filter_map(|(id, b, init)| b.map(|b| (*id, e.register(b, *init))))
            .collect();
        let mut offs = Vec::new();
        for (id, i) in idx {
            let o = walrec::apply_block(rec, id, data_blk, undo_blk, e.page(i));
            let o = o.unwrap_or_else(|e| fail(e));
            if id == walrec::BLK_DATA {
                offs = o;
            }
        }
        e.finish();
        return offs;
    }
    // A change of an all-visible data page first clears its visibility map bit, in a record of
    // its own logged before this one (torii_core::vm, "Invariant").
    for (_, b, _) in &slots {
        if let Some(b) = b {
            super::vm::clear_before_change(rel, b);
        }
    }
    if let Some(u) = pages.undo {
        // Checked before the critical section: only the data page's change may fail in there.
        walrec::check_undo(rec, data_blk, u.page()).unwrap_or_else(|e| fail(e));
    }
    let blocks: Vec<super::rmgr::Block> = slots
        .iter()
        .filter_map(|(id, b, init)| {
            b.map(|buf| super::rmgr::Block {
                id: *id,
                buf,
                init: *init,
            })
        })
        .collect();
    let main = rec.encode();
    let mut offs = Vec::new();
    let res = super::rmgr::apply_and_log(rel, rec.info(), &main, &blocks, |id, p| {
        let o = walrec::apply_block(rec, id, data_blk, undo_blk, p)?;
        if id == walrec::BLK_DATA {
            offs = o;
        }
        Ok::<(), walrec::RecError>(())
    });
    if let Err(e) = res {
        fail(e);
    }
    for b in &blocks {
        super::pages::remember_written(rel, b.buf.buffer(), b.buf.block());
    }
    offs
}

thread_local! {
    static GENERIC_NOTICE_GIVEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Says once per backend that torii writes generic WAL because it is not preloaded.
fn notice_generic_wal_once() {
    if GENERIC_NOTICE_GIVEN.with(|g| g.replace(true)) {
        return;
    }
    pgrx::ereport!(
        pgrx::PgLogLevel::NOTICE,
        pgrx::PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        "torii is not loaded through shared_preload_libraries: its writes use generic WAL",
        "Generic WAL logs page diffs: about twice the WAL and CPU of torii's row-level records. Add torii to shared_preload_libraries and restart to use them."
    );
}

/// Where the undo record of `space` goes: its item number and the link of a new page.
fn undo_target(space: &super::undo::UndoSpace) -> (walrec::UndoTarget, &LockedBuffer) {
    match (&space.tail, &space.new_page) {
        (Some(t), None) => (
            walrec::UndoTarget {
                undo_off: pageop::next_offset(t.page()),
                link: None,
            },
            t,
        ),
        (tail, Some(np)) => {
            // A page taken from the head of the free-page list: the list goes on from its next.
            let free_next = (page::kind(np.page()) == Some(PageKind::Free))
                .then(|| page::read_special(np.page()).next);
            (
                walrec::UndoTarget {
                    undo_off: 1,
                    link: Some(walrec::UndoLink {
                        had_tail: tail.is_some(),
                        free_next,
                    }),
                },
                np,
            )
        }
        (None, None) => unreachable!("undo space always has a page"),
    }
}

/// The pages of a record that appends to undo `space`.
fn undo_pages<'a>(
    data: &'a LockedBuffer,
    data_init: bool,
    space: &'a super::undo::UndoSpace,
    target: &walrec::UndoTarget,
    target_page: &'a LockedBuffer,
) -> RowPages<'a> {
    let new_page = target.link.is_some();
    RowPages {
        data,
        data_init,
        undo: Some(target_page),
        tail: if new_page { space.tail.as_ref() } else { None },
        meta: if new_page { space.meta.as_ref() } else { None },
    }
}

/// The insert record for `rows` on `buf` (formatted first when `format` is set).
fn insert_record<'a>(
    buf: &LockedBuffer,
    format: bool,
    rows: &[&'a [u8]],
    note: Option<walrec::UndoTarget>,
) -> Rec<'a> {
    let h = RowHeader::read(rows[0]);
    Rec::Insert {
        init: format,
        xid: h.xid,
        cid: h.cid,
        first_off: if format {
            1
        } else {
            pageop::next_offset(buf.page())
        },
        rows: walrec::Rows::Whole(rows.to_vec()),
        note,
    }
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
    let rec = insert_record(buf, format, rows, None);
    log_row_record(
        rel,
        &rec,
        RowPages {
            data: buf,
            data_init: format,
            undo: None,
            tail: None,
            meta: None,
        },
    )
}

/// Adds rows to a data page like [`add_rows`], and in the same WAL record the insert note of
/// the rows' writer for this block (see `UndoKind::Insert`) to the undo log.
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
) -> Vec<pg_sys::OffsetNumber> {
    let (target, tp) = undo_target(space);
    let rec = insert_record(buf, format, rows, Some(target));
    log_row_record(rel, &rec, undo_pages(buf, format, space, &target, tp))
}

/// Room a row at `off` needs to grow to `len` bytes on this page.
pub fn growth_needed(p: &[u8], off: u16, len: usize) -> usize {
    pageop::growth_needed(p, off, len)
}

/// Appends the undo record of a `kind` change by (`xid`, `cid`) of row `off` (image
/// `undo_delta`, the old row against the new) to undo `space`, and writes `new_row` (built by
/// `make_row` from the record's undo pointer) over the row: one WAL record over the data page,
/// the undo page, and — when a new undo page is linked in — the old tail and the metapage.
///
/// # Safety
/// `rel` must be an open relation; `data` and the buffers of `space` must be its buffers,
/// exclusively locked.
#[allow(clippy::too_many_arguments)]
pub unsafe fn change_row(
    rel: pg_sys::Relation,
    data: &LockedBuffer,
    off: u16,
    space: &super::undo::UndoSpace,
    kind: UndoKind,
    xid: u64,
    cid: u32,
    undo_delta: &[u8],
    make_row: impl FnOnce(UndoPtr) -> Vec<u8>,
) -> UndoPtr {
    let (target, tp) = undo_target(space);
    let ptr = UndoPtr {
        blk: tp.block(),
        off: target.undo_off,
    };
    let new = make_row(ptr);
    let old = pageop::item(data.page(), off)
        .unwrap_or_else(|e| pgrx::error!("torii: row {off} of block {}: {e}", data.block()))
        .to_vec();
    let mut buf = Vec::new();
    let rec = Rec::change(
        off, kind, xid, cid, target, ptr.blk, &old, &new, undo_delta, &mut buf,
    );
    log_row_record(rel, &rec, undo_pages(data, false, space, &target, tp));
    ptr
}

/// Overwrites row `off` without an undo record: rollback on touch (restoring an aborted
/// change's previous image), confirming a speculative insertion.
///
/// # Safety
/// `rel` must be an open relation and `data` a buffer of it, exclusively locked.
pub unsafe fn overwrite_row(rel: pg_sys::Relation, data: &LockedBuffer, off: u16, bytes: &[u8]) {
    let old = pageop::item(data.page(), off)
        .unwrap_or_else(|e| pgrx::error!("torii: row {off} of block {}: {e}", data.block()))
        .to_vec();
    let mut buf = Vec::new();
    let rec = Rec::overwrite(off, &old, bytes, &mut buf);
    log_row_record(
        rel,
        &rec,
        RowPages {
            data,
            data_init: false,
            undo: None,
            tail: None,
            meta: None,
        },
    );
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
    log_row_record(
        rel,
        &Rec::Kill { off },
        RowPages {
            data,
            data_init: false,
            undo: None,
            tail: None,
            meta: Some(&meta),
        },
    );
}
