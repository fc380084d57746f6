//! `ambulkdelete` and `amvacuumcleanup`.
//!
//! Bulk delete reads every page in physical order under a cleanup lock (so no scan still holds
//! a pin on a leaf whose entries are removed) and drops the TIDs the callback reports dead,
//! shrinking posting lists and removing items left without TIDs. Pages are never freed or
//! reused in this version: an emptied leaf stays in the tree (scans skip it, inserts refill
//! it). Because new pages are only ever appended to the relation, a page split during the
//! pass moves items to a block above the pass's position, which the pass reaches because it
//! re-reads the relation size until it stops growing.

use super::build::to_item_pointer;
use crate::storage::buffer::{Lock, LockedBuffer};
use crate::storage::pages;
use pgrx::pg_sys;
use pgrx::prelude::*;
use torii_btree::{page, tuple};

unsafe fn stats_or_new(
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>())
            as *mut pg_sys::IndexBulkDeleteResult
    } else {
        stats
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    cb_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    let stats = stats_or_new(stats);
    let rel = (*info).index;
    let cb = callback.expect("bulk delete callback");
    let mut blk = 1u32;
    let mut live = 0f64;
    loop {
        let n = pages::nblocks(rel);
        if blk >= n {
            break;
        }
        while blk < n {
            pg_sys::vacuum_delay_point();
            let b = LockedBuffer::read_for_cleanup(rel, blk, (*info).strategy);
            if pages::check(rel, blk, b.page()) && page::is_leaf(b.page()) {
                let p = b.page();
                let mut edits: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
                for i in 0..page::nitems(p) {
                    let it = page::item(p, i);
                    let tids = tuple::tids(it);
                    let keep: Vec<_> = tids
                        .iter()
                        .copied()
                        .filter(|t| {
                            let mut ip = to_item_pointer(*t);
                            !cb(&mut ip, cb_state)
                        })
                        .collect();
                    (*stats).tuples_removed += (tids.len() - keep.len()) as f64;
                    live += keep.len() as f64;
                    if keep.len() != tids.len() {
                        edits.push((
                            i,
                            if keep.is_empty() {
                                None
                            } else {
                                Some(tuple::leaf_item(it, &keep))
                            },
                        ));
                    }
                }
                if !edits.is_empty() {
                    super::tree::wal_vacuum_page(rel, &b, |img| {
                        for (i, new) in edits.iter().rev() {
                            match new {
                                None => page::delete_item(img, *i),
                                Some(v) => {
                                    page::replace_item(img, *i, v).expect("a shrinking item fits")
                                }
                            }
                        }
                    });
                }
            }
            drop(b);
            blk += 1;
        }
    }
    (*stats).num_index_tuples = live;
    (*stats).num_pages = pages::nblocks(rel);
    (*stats).estimated_count = false;
    stats
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    if (*info).analyze_only {
        return stats;
    }
    if !stats.is_null() {
        return stats;
    }
    // No bulk delete ran (nothing to remove): count the entries for the statistics.
    let stats = stats_or_new(stats);
    let rel = (*info).index;
    let n = pages::nblocks(rel);
    let mut live = 0f64;
    for blk in 1..n {
        pg_sys::vacuum_delay_point();
        let (b, valid) = pages::read_verified(rel, blk, Lock::Share, (*info).strategy);
        if valid && page::is_leaf(b.page()) {
            let p = b.page();
            live += (0..page::nitems(p))
                .map(|i| tuple::tid_count(page::item(p, i)) as f64)
                .sum::<f64>();
        }
    }
    (*stats).num_index_tuples = live;
    (*stats).num_pages = n;
    (*stats).estimated_count = false;
    stats
}
