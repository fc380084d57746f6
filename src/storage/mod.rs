//! Storage glue: torii-core's page formats applied to PostgreSQL's buffers.
//!
//! * [`buffer`]: RAII guards for pinned and locked buffers.
//! * [`wal`]: every page change, named by operation: row-level records or generic WAL.
//! * [`rmgr`]: torii's WAL resource manager (registration, redo, masking).
//! * [`pages`]: reading verified pages, finding room for rows, the metapage.
//! * [`vm`]: the visibility map fork (set by VACUUM, cleared by the first writer).

pub mod buffer;
pub mod pages;
pub mod rmgr;
pub mod undo;
pub mod vm;
pub mod wal;

use pgrx::pg_sys;

/// Builds an `ItemPointerData`.
pub fn tid(blk: pg_sys::BlockNumber, off: pg_sys::OffsetNumber) -> pg_sys::ItemPointerData {
    pg_sys::ItemPointerData {
        ip_blkid: pg_sys::BlockIdData {
            bi_hi: (blk >> 16) as u16,
            bi_lo: (blk & 0xffff) as u16,
        },
        ip_posid: off,
    }
}

/// Splits an `ItemPointerData` into block and offset.
pub fn tid_parts(t: &pg_sys::ItemPointerData) -> (pg_sys::BlockNumber, pg_sys::OffsetNumber) {
    (
        ((t.ip_blkid.bi_hi as u32) << 16) | t.ip_blkid.bi_lo as u32,
        t.ip_posid,
    )
}

/// The relation's name, for messages.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn rel_name(rel: pg_sys::Relation) -> String {
    std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr())
        .to_string_lossy()
        .into_owned()
}
