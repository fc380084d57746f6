//! Relation-level callbacks: storage creation, TRUNCATE, SET TABLESPACE, VACUUM FULL/CLUSTER,
//! VACUUM, sizes and planner estimates, TOAST.

use super::visibility::{Snap, Version, BUILD};
use crate::progress;
use crate::storage::{pages, wal};
use pgrx::pg_sys;
use pgrx::prelude::*;
use torii_core::page::{self, PageKind};

#[pg_guard]
pub unsafe extern "C-unwind" fn relation_set_new_filenode(
    rel: pg_sys::Relation,
    newrnode: *const pg_sys::RelFileNode,
    persistence: std::ffi::c_char,
    freeze_xid: *mut pg_sys::TransactionId,
    minmulti: *mut pg_sys::MultiXactId,
) {
    // Rows carry 64-bit xids and torii uses no MultiXacts: relminmxid stays invalid.
    *freeze_xid = pg_sys::RecentXmin;
    *minmulti = pg_sys::MultiXactId::INVALID;
    let srel = pg_sys::RelationCreateStorage(*newrnode, persistence, true);
    if persistence as u8 == pg_sys::RELPERSISTENCE_UNLOGGED {
        pg_sys::smgrcreate(srel, pg_sys::ForkNumber::INIT_FORKNUM, false);
        crate::pg_extra::log_smgrcreate(newrnode, pg_sys::ForkNumber::INIT_FORKNUM);
        pg_sys::smgrimmedsync(srel, pg_sys::ForkNumber::INIT_FORKNUM);
    }
    pg_sys::smgrclose(srel);
    // The metapage is written by the first insert (an empty table has no blocks, like heap).
    let _ = rel;
}

#[pg_guard]
pub unsafe extern "C-unwind" fn relation_nontransactional_truncate(rel: pg_sys::Relation) {
    pg_sys::RelationTruncate(rel, 0);
    super::modify::forget_noted(rel);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn relation_copy_data(
    rel: pg_sys::Relation,
    newrnode: *const pg_sys::RelFileNode,
) {
    // Pages are copied byte for byte; their checksums do not cover the location, so they
    // stay valid in the new file.
    let dst = pg_sys::smgropen(*newrnode, (*rel).rd_backend);
    pg_sys::FlushRelationBuffers(rel);
    let persistence = (*(*rel).rd_rel).relpersistence;
    pg_sys::RelationCreateStorage(*newrnode, persistence, true);
    pg_sys::RelationCopyStorage(
        pg_sys::RelationGetSmgr(rel),
        dst,
        pg_sys::ForkNumber::MAIN_FORKNUM,
        persistence,
    );
    for fork in (pg_sys::ForkNumber::MAIN_FORKNUM + 1)..=pg_sys::ForkNumber::INIT_FORKNUM {
        if pg_sys::smgrexists(pg_sys::RelationGetSmgr(rel), fork) {
            pg_sys::smgrcreate(dst, fork, false);
            if persistence as u8 == pg_sys::RELPERSISTENCE_PERMANENT
                || (persistence as u8 == pg_sys::RELPERSISTENCE_UNLOGGED
                    && fork == pg_sys::ForkNumber::INIT_FORKNUM)
            {
                crate::pg_extra::log_smgrcreate(newrnode, fork);
            }
            pg_sys::RelationCopyStorage(pg_sys::RelationGetSmgr(rel), dst, fork, persistence);
        }
    }
    pg_sys::RelationDropStorage(rel);
    pg_sys::smgrclose(dst);
}

/// Copies a stored row into `new`, keeping its version header: deformed with the old
/// descriptor (which supplies `ADD COLUMN` defaults the row does not store) and formed again
/// with the new one (dropped columns become NULL), TOASTed into the new table's TOAST
/// relation, like heap's rewrite.
unsafe fn copy_row(old: pg_sys::Relation, new: pg_sys::Relation, row: &[u8], freeze_below: u64) {
    let old_desc = (*old).rd_att;
    let new_desc = (*new).rd_att;
    let natts = (*new_desc).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0usize); natts.max((*old_desc).natts as usize)];
    let mut isnull = vec![true; values.len()];
    let mut tup = pg_sys::HeapTupleData {
        t_len: row.len() as u32,
        t_data: row.as_ptr() as pg_sys::HeapTupleHeader,
        ..Default::default()
    };
    pg_sys::heap_deform_tuple(&mut tup, old_desc, values.as_mut_ptr(), isnull.as_mut_ptr());
    for (i, null) in isnull.iter_mut().enumerate().take(natts) {
        if (*(*new_desc).attrs.as_ptr().add(i)).attisdropped {
            *null = true;
        }
    }
    let formed = pg_sys::heap_form_tuple(new_desc, values.as_mut_ptr(), isnull.as_mut_ptr());
    let h = torii_core::row::RowHeader::read(row);
    // The new file's relfrozenxid is the caller's cutoff: writers below it are stored frozen
    // (0), since CLOG below relfrozenxid may be truncated. The copied version is committed (or
    // the rewriting transaction's own), so freezing it changes what no snapshot sees.
    let (xid, cid) = if h.xid < freeze_below {
        (0, 0)
    } else {
        (h.xid, h.cid)
    };
    let bytes = super::modify::form_stored_row(
        new,
        formed,
        std::ptr::null_mut(),
        xid,
        cid,
        pg_sys::HEAP_INSERT_SKIP_FSM as i32,
    );
    pg_sys::heap_freetuple(formed);
    let target = pages::find_room(new, bytes.len(), std::ptr::null_mut());
    wal::add_rows(new, &target.buf, target.format, &[&bytes]);
}

/// Copies the version of `row` whose writer did not abort (if any) and counts it. The copy
/// has no undo: snapshots older than the rewrite lose older versions, as they lose rows
/// after TRUNCATE.
unsafe fn copy_version(
    old: pg_sys::Relation,
    new: pg_sys::Relation,
    build: &Snap,
    row: &[u8],
    freeze_below: u64,
    num_tuples: *mut f64,
    tups_vacuumed: *mut f64,
) {
    match build.resolve(old, row) {
        Version::None => *tups_vacuumed += 1.0,
        Version::Current(r) => {
            copy_row(old, new, r, freeze_below);
            *num_tuples += 1.0;
        }
        Version::Old(img) => {
            copy_row(old, new, &img, freeze_below);
            *num_tuples += 1.0;
        }
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn relation_copy_for_cluster(
    old: pg_sys::Relation,
    new: pg_sys::Relation,
    old_index: pg_sys::Relation,
    _use_sort: bool,
    _oldest_xmin: pg_sys::TransactionId,
    xid_cutoff: *mut pg_sys::TransactionId,
    _multi_cutoff: *mut pg_sys::MultiXactId,
    num_tuples: *mut f64,
    tups_vacuumed: *mut f64,
    tups_recently_dead: *mut f64,
) {
    // VACUUM FULL / CLUSTER: copy every row whose writer did not abort, keeping its version
    // header, in index order when an index is given.
    *num_tuples = 0.0;
    *tups_vacuumed = 0.0;
    *tups_recently_dead = 0.0;
    // PostgreSQL records *xid_cutoff as the new file's relfrozenxid.
    let freeze_below = super::visibility::full_xid(*xid_cutoff);
    // pg_stat_progress_cluster, as heap's copy reports it (CLUSTER started the command).
    let scanned = std::cell::Cell::new(0i64);
    let count = |num_tuples: *mut f64| {
        scanned.set(scanned.get() + 1);
        progress::set_param(pg_sys::PROGRESS_CLUSTER_HEAP_TUPLES_SCANNED, scanned.get());
        progress::set_param(
            pg_sys::PROGRESS_CLUSTER_HEAP_TUPLES_WRITTEN,
            *num_tuples as i64,
        );
    };
    if !old_index.is_null() {
        progress::set_param(
            pg_sys::PROGRESS_CLUSTER_PHASE,
            pg_sys::PROGRESS_CLUSTER_PHASE_INDEX_SCAN_HEAP as i64,
        );
        let slot = pg_sys::table_slot_create(old, std::ptr::null_mut());
        let iscan = pg_sys::index_beginscan(old, old_index, &raw mut pg_sys::SnapshotAnyData, 0, 0);
        pg_sys::index_rescan(iscan, std::ptr::null_mut(), 0, std::ptr::null_mut(), 0);
        let build = Snap::of_kind(BUILD);
        while pg_sys::index_getnext_slot(iscan, pg_sys::ScanDirection::ForwardScanDirection, slot) {
            // The index gives the order; the version to copy is decided on the row as stored,
            // as the sequential path does: the slot holds SnapshotAny's answer, which for a
            // deleted or moved row is its last image without the deletion.
            if let Some(row) = super::fetch::stored_row(old, &(*slot).tts_tid) {
                copy_version(
                    old,
                    new,
                    &build,
                    &row,
                    freeze_below,
                    num_tuples,
                    tups_vacuumed,
                );
                count(num_tuples);
            }
            // About a page of rows: pace and allow cancel as the sequential path does.
            if scanned.get() % 64 == 0 {
                progress::page_done();
            }
        }
        pg_sys::index_endscan(iscan);
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        return;
    }
    let nblocks = pages::nblocks(old);
    progress::set_param(
        pg_sys::PROGRESS_CLUSTER_PHASE,
        pg_sys::PROGRESS_CLUSTER_PHASE_SEQ_SCAN_HEAP as i64,
    );
    progress::set_param(pg_sys::PROGRESS_CLUSTER_TOTAL_HEAP_BLKS, nblocks as i64);
    let mut copy = vec![0u8; page::BLCKSZ];
    let build = Snap::of_kind(BUILD);
    for blk in 1..nblocks {
        progress::set_param(pg_sys::PROGRESS_CLUSTER_HEAP_BLKS_SCANNED, blk as i64);
        progress::page_done();
        if pages::copy_page(old, blk, std::ptr::null_mut(), &mut copy) != Some(PageKind::Data) {
            continue;
        }
        for off in 1..=page::line_pointer_count(&copy) {
            let lp = page::line_pointer(&copy, off);
            if lp.flags != page::LP_NORMAL {
                continue;
            }
            let row = &copy[lp.off..lp.off + lp.len];
            copy_version(
                old,
                new,
                &build,
                row,
                freeze_below,
                num_tuples,
                tups_vacuumed,
            );
            count(num_tuples);
        }
    }
    progress::set_param(pg_sys::PROGRESS_CLUSTER_HEAP_BLKS_SCANNED, nblocks as i64);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn relation_size(
    rel: pg_sys::Relation,
    fork: pg_sys::ForkNumber::Type,
) -> u64 {
    pg_sys::table_block_relation_size(rel, fork)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn relation_needs_toast_table(rel: pg_sys::Relation) -> bool {
    // Like heap: a TOAST table is needed when a row can exceed TOAST_TUPLE_THRESHOLD, i.e.
    // when some column is variable-length and may be stored out of line.
    let desc = (*rel).rd_att;
    let mut data_length: usize = 0;
    let mut maxlength_unknown = false;
    let mut has_toastable = false;
    for i in 0..(*desc).natts as usize {
        let att = &*(*desc).attrs.as_ptr().add(i);
        if att.attisdropped {
            continue;
        }
        let align = match att.attalign as u8 {
            b's' => 2,
            b'i' => 4,
            b'd' => 8,
            _ => 1,
        };
        data_length = data_length.next_multiple_of(align);
        if att.attlen > 0 {
            data_length += att.attlen as usize;
        } else {
            let maxlen = pg_sys::type_maximum_size(att.atttypid, att.atttypmod);
            if maxlen < 0 {
                maxlength_unknown = true;
            } else {
                data_length += maxlen as usize;
            }
            if att.attstorage as u8 != b'p' {
                has_toastable = true;
            }
        }
    }
    if !has_toastable {
        return false;
    }
    if maxlength_unknown {
        return true;
    }
    let bitmap = (*desc).natts as usize / 8 + 1;
    (23 + bitmap).next_multiple_of(8) + data_length > 2032
}

#[pg_guard]
pub unsafe extern "C-unwind" fn relation_toast_am(_rel: pg_sys::Relation) -> pg_sys::Oid {
    pg_sys::HEAP_TABLE_AM_OID
}

#[pg_guard]
pub unsafe extern "C-unwind" fn relation_fetch_toast_slice(
    toastrel: pg_sys::Relation,
    valueid: pg_sys::Oid,
    attrsize: i32,
    sliceoffset: i32,
    slicelength: i32,
    result: *mut pg_sys::varlena,
) {
    crate::pg_extra::heap_fetch_toast_slice(
        toastrel,
        valueid,
        attrsize,
        sliceoffset,
        slicelength,
        result,
    )
}

/// The planner's size estimate, as heap's `table_block_relation_estimate_size`, except that
/// the pages reported (which cost scans and index fetches, and against which `relallvisible`
/// is a fraction) are the data pages only: the metapage, undo and free pages hold no rows.
/// Row counts still scale with the whole file, as `relpages` in pg_class counts every block.
#[pg_guard]
pub unsafe extern "C-unwind" fn relation_estimate_size(
    rel: pg_sys::Relation,
    attr_widths: *mut i32,
    pages_out: *mut pg_sys::BlockNumber,
    tuples: *mut f64,
    allvisfrac: *mut f64,
) {
    let nblocks = pages::nblocks(rel);
    let mut data = if nblocks == 0 {
        0
    } else {
        let (m, _) = pages::read_verified(
            rel,
            0,
            crate::storage::buffer::Lock::Share,
            std::ptr::null_mut(),
        );
        torii_core::meta::Meta::read(m.page()).data_pages(nblocks)
    };
    let relpages = (*(*rel).rd_rel).relpages as u32;
    let reltuples = (*(*rel).rd_rel).reltuples as f64;
    let relallvisible = (*(*rel).rd_rel).relallvisible as u32;
    // As heap: a table never vacuumed or analyzed is taken to have at least 10 pages.
    let never_counted = data < 10 && reltuples < 0.0 && !(*(*rel).rd_rel).relhassubclass;
    if never_counted {
        data = 10;
    }
    *pages_out = data;
    if data == 0 {
        *tuples = 0.0;
        *allvisfrac = 0.0;
        return;
    }
    *tuples = if reltuples >= 0.0 && relpages > 0 {
        (reltuples / relpages as f64 * nblocks as f64).round()
    } else {
        // Overhead per row: the 23-byte header (MAXALIGNed with the data) and the line
        // pointer, as heap; usable bytes per page: everything but header and special space.
        let width = pg_sys::get_rel_data_width(rel, attr_widths) as usize + 24 + 4;
        let density = (page::SPECIAL_OFFSET - page::PAGE_HEADER_SIZE) / width.max(1);
        (density as f64 * data as f64).round()
    };
    *allvisfrac = if relallvisible == 0 {
        0.0
    } else if relallvisible >= data {
        1.0
    } else {
        relallvisible as f64 / data as f64
    };
}
