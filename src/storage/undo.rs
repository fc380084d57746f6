//! The undo log of a table: appending records (in the same WAL record as the row change they
//! belong to) and reading them back.
//!
//! Undo pages are chained from the metapage's `undo_head` (oldest) to `undo_tail` (newest),
//! each pointing at the next through its special space. Records are appended to the tail page;
//! when it is full, a new page is linked in. Lock order, always: data page, then undo tail
//! page, then metapage — so that no two backends can wait for each other's buffer locks.

use super::buffer::{Lock, LockedBuffer};
use super::pages;
use pgrx::pg_sys;
use torii_core::meta::Meta;
use torii_core::page::{self, PageKind, NO_BLOCK};
use torii_core::row::UndoPtr;

/// Where the next undo record goes: the locked tail page, and when it is full, a new page
/// and the locked metapage (both to be changed in the same WAL record).
pub struct UndoSpace {
    pub tail: Option<LockedBuffer>,
    pub new_page: Option<LockedBuffer>,
    pub meta: Option<LockedBuffer>,
}

/// Largest undo record an undo page takes.
pub const MAX_RECORD: usize = pages::MAX_ROW_SIZE;

/// Locks undo space for a record of `len` bytes. Called with the data page locked.
///
/// # Safety
/// `rel` must be an open torii table with a metapage.
pub unsafe fn reserve(rel: pg_sys::Relation, len: usize) -> UndoSpace {
    loop {
        let tail_blk = {
            let (m, _) = pages::read_verified(rel, 0, Lock::Share, std::ptr::null_mut());
            Meta::read(m.page()).undo_tail
        };
        if tail_blk != NO_BLOCK {
            let (t, _) = pages::read_verified(rel, tail_blk, Lock::Exclusive, std::ptr::null_mut());
            let p = t.page();
            if page::kind(p) != Some(PageKind::Undo) || page::read_special(p).next != NO_BLOCK {
                // Someone linked a newer tail meanwhile.
                continue;
            }
            if pages::fits_undo(p, len) {
                return UndoSpace {
                    tail: Some(t),
                    new_page: None,
                    meta: None,
                };
            }
            let (meta, new_page) = new_undo_page(rel);
            if Meta::read(meta.page()).undo_tail != tail_blk {
                continue;
            }
            return UndoSpace {
                tail: Some(t),
                new_page: Some(new_page),
                meta: Some(meta),
            };
        }
        let (meta, new_page) = new_undo_page(rel);
        if Meta::read(meta.page()).undo_tail != NO_BLOCK {
            continue;
        }
        return UndoSpace {
            tail: None,
            new_page: Some(new_page),
            meta: Some(meta),
        };
    }
}

/// Locks the metapage and a fresh block for a new undo page.
unsafe fn new_undo_page(rel: pg_sys::Relation) -> (LockedBuffer, LockedBuffer) {
    let (meta, _) = pages::read_verified(rel, 0, Lock::Exclusive, std::ptr::null_mut());
    let b = pages::free_or_new_page(rel, &meta);
    (meta, b)
}

/// Reads the undo record at `ptr` into a copy (the share lock is held only for the copy).
///
/// # Safety
/// `rel` must be an open torii table.
pub unsafe fn read_record(rel: pg_sys::Relation, ptr: UndoPtr) -> Vec<u8> {
    if ptr.blk == 0 {
        corrupt(rel, ptr, "points to the metapage");
    }
    let (b, valid) = pages::read_verified(rel, ptr.blk, Lock::Share, std::ptr::null_mut());
    let p = b.page();
    if !valid || page::kind(p) != Some(PageKind::Undo) {
        corrupt(rel, ptr, "points to a page that is not an undo page");
    }
    if ptr.off as usize > page::line_pointer_count(p) {
        corrupt(rel, ptr, "points past the last record of its page");
    }
    let lp = page::line_pointer(p, ptr.off as usize);
    if lp.flags != page::LP_NORMAL || lp.off + lp.len > page::SPECIAL_OFFSET {
        corrupt(rel, ptr, "points to an unused record");
    }
    p[lp.off..lp.off + lp.len].to_vec()
}

unsafe fn corrupt(rel: pg_sys::Relation, ptr: UndoPtr, why: &str) -> ! {
    pages::report_corrupt(
        rel,
        ptr.blk,
        &page::PageError::Malformed(format!("undo pointer ({},{}) {why}", ptr.blk, ptr.off)),
    )
}
