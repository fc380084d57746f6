//! `ambuild`, `ambuildempty`, `aminsert`: sorted bottom-up builds and single insertions, with
//! uniqueness checks that wait for in-progress inserters like btree does.

use super::keys::{same_key_bytes, KeyDesc, SearchKey};
use super::tree::{self, Aligned, Descent, Target};
use crate::storage::buffer::{Lock, LockedBuffer};
use crate::storage::pages;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cmp::Ordering;
use torii_btree::meta::{Meta, META_BLOCK};
use torii_btree::{page, search, split, tuple, Tid};
use torii_core::page::NO_BLOCK;

struct BuildState {
    tuples: Vec<(pg_sys::IndexTuple, bool)>,
    desc: pg_sys::TupleDesc,
}

#[pg_guard]
unsafe extern "C-unwind" fn build_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    alive: bool,
    state: *mut std::ffi::c_void,
) {
    let st = &mut *(state as *mut BuildState);
    let itup = pg_sys::index_form_tuple(st.desc, values, isnull);
    (*itup).t_tid = *tid;
    st.tuples.push((itup, alive));
}

fn tid_of(t: pg_sys::IndexTuple) -> Tid {
    // SAFETY: t is a palloc'd index tuple.
    unsafe { tuple::heap_tid(std::slice::from_raw_parts(t as *const u8, 8)) }
}

unsafe fn tuple_bytes<'a>(t: pg_sys::IndexTuple) -> &'a [u8] {
    let n = tuple::size(std::slice::from_raw_parts(t as *const u8, 8));
    std::slice::from_raw_parts(t as *const u8, n)
}

/// Raises the unique-violation error for index tuple `t`.
///
/// # Safety
/// `rel` open, `t` an 8-aligned index tuple of it.
pub unsafe fn unique_violation(rel: pg_sys::Relation, t: *const u8) -> ! {
    let natts = (*(*rel).rd_att).natts as usize;
    let mut values = vec![pg_sys::Datum::from(0usize); natts];
    let mut nulls = vec![false; natts];
    pg_sys::index_deform_tuple(
        t as pg_sys::IndexTuple,
        (*rel).rd_att,
        values.as_mut_ptr(),
        nulls.as_mut_ptr(),
    );
    let desc = pg_sys::BuildIndexValueDescription(rel, values.as_mut_ptr(), nulls.as_mut_ptr());
    let detail = if desc.is_null() {
        String::new()
    } else {
        format!(
            "Key {} already exists.",
            std::ffi::CStr::from_ptr(desc).to_string_lossy()
        )
    };
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
        format!(
            "duplicate key value violates unique constraint \"{}\"",
            tree::rel_name(rel)
        ),
        "torii_btree",
    )
    .set_detail(detail)
    .report(PgLogLevel::ERROR);
    unreachable!()
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambuild(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
) -> *mut pg_sys::IndexBuildResult {
    if pages::nblocks(index) != 0 {
        pgrx::error!(
            "torii_btree: index \"{}\" already contains data",
            tree::rel_name(index)
        );
    }
    let kd = KeyDesc::new(index);
    let mut st = BuildState {
        tuples: Vec::new(),
        desc: (*index).rd_att,
    };
    let reltuples = (*(*heap).rd_tableam).index_build_range_scan.unwrap()(
        heap,
        index,
        info,
        true,
        false,
        true,
        0,
        pg_sys::InvalidBlockNumber,
        Some(build_callback),
        &mut st as *mut BuildState as *mut std::ffi::c_void,
        std::ptr::null_mut(),
    );
    let mut tuples = std::mem::take(&mut st.tuples);
    tuples.sort_by(|a, b| {
        kd.cmp_tuples(a.0 as *const u8, b.0 as *const u8, kd.nkeys)
            .then_with(|| tid_of(a.0).cmp(&tid_of(b.0)))
    });
    if (*info).ii_Unique {
        check_build_unique(index, &kd, &tuples);
    }
    let ntuples = tuples.len();
    let items = make_leaf_items(&tuples);
    load(index, &kd, items);
    let res = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBuildResult>())
        as *mut pg_sys::IndexBuildResult;
    (*res).heap_tuples = reltuples;
    (*res).index_tuples = ntuples as f64;
    res
}

/// Two live entries with equal keys (no NULL keys, unless NULLS NOT DISTINCT) violate a unique
/// index; dead (recently dead) rows do not count, as in btree's build.
unsafe fn check_build_unique(
    index: pg_sys::Relation,
    kd: &KeyDesc,
    tuples: &[(pg_sys::IndexTuple, bool)],
) {
    let mut i = 0;
    while i < tuples.len() {
        let mut j = i + 1;
        while j < tuples.len()
            && kd.cmp_tuples(tuples[i].0 as *const u8, tuples[j].0 as *const u8, kd.nkeys)
                == Ordering::Equal
        {
            j += 1;
        }
        if j - i > 1
            && (kd.nulls_not_distinct || !kd.has_null_key(tuples[i].0 as *const u8))
            && tuples[i..j].iter().filter(|t| t.1).count() > 1
        {
            unique_violation(index, tuples[i].0 as *const u8);
        }
        i = j;
    }
}

/// Groups sorted tuples with byte-identical keys into posting items.
unsafe fn make_leaf_items(tuples: &[(pg_sys::IndexTuple, bool)]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tuples.len() {
        let first = tuple_bytes(tuples[i].0);
        let cap = tree::posting_cap(tuple::key_len(first));
        let mut tids = vec![tid_of(tuples[i].0)];
        let mut j = i + 1;
        while j < tuples.len() && same_key_bytes(first, tuple_bytes(tuples[j].0)) {
            let t = tid_of(tuples[j].0);
            tids.push(t);
            if tuple::leaf_item_len(first, &tids) > cap {
                tids.pop();
                break;
            }
            j += 1;
        }
        tids.dedup();
        if first.len() > page::MAX_ITEM_SIZE {
            item_too_big(first.len());
        }
        out.push(tuple::leaf_item(first, &tids));
        i = j;
    }
    out
}

pub fn item_too_big(len: usize) -> ! {
    pgrx::ereport!(
        PgLogLevel::ERROR,
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        format!(
            "index row size {len} exceeds torii_btree maximum {}",
            page::MAX_ITEM_SIZE
        )
    );
    unreachable!()
}

/// Writes the metapage and the tree bottom-up: leaves packed to the fill factor, then each
/// level of pivots, until one page holds a level.
unsafe fn load(index: pg_sys::Relation, kd: &KeyDesc, leaf_items: Vec<Vec<u8>>) {
    // Block numbers are handed out in order: metapage 0, then the pages of each level.
    let meta_buf = pages::extend(index, std::ptr::null_mut());
    assert_eq!(meta_buf.block(), META_BLOCK);
    let mut level: u16 = 0;
    let mut items = leaf_items;
    let mut next_blk = 1u32;
    loop {
        let lens: Vec<usize> = items.iter().map(|i| i.len()).collect();
        let fill = if level == 0 { split::FILL_FACTOR } else { 0.70 };
        let groups = if items.is_empty() {
            std::iter::once(0..0).collect()
        } else {
            split::pack(&lens, |k| tuple::key_len(&items[k]), fill)
        };
        let first_blk = next_blk;
        let npages = groups.len() as u32;
        let mut uppers: Vec<Vec<u8>> = Vec::with_capacity(groups.len());
        for (g, r) in groups.iter().enumerate() {
            let blk = first_blk + g as u32;
            let prev = if g == 0 { NO_BLOCK } else { blk - 1 };
            let next = if g + 1 == groups.len() {
                NO_BLOCK
            } else {
                blk + 1
            };
            let mut page_items: Vec<Vec<u8>> = items[r.clone()].to_vec();
            if level > 0 && !page_items.is_empty() {
                // The first pivot of each internal page is its minus infinity.
                let c = tuple::child(&page_items[0]);
                page_items[0] = tuple::minus_inf(c);
            }
            let high = if g + 1 < groups.len() {
                Some(separator(kd, &items[groups[g + 1].start], level))
            } else {
                None
            };
            // The downlink for this page in the level above.
            let down = if g == 0 {
                tuple::minus_inf(blk)
            } else {
                let s = separator(kd, &items[r.start], level);
                tuple::pivot(&s, blk)
            };
            uppers.push(down);
            let refs: Vec<&[u8]> = page_items.iter().map(|v| v.as_slice()).collect();
            let img = page::build(level, prev, next, high.as_deref(), &refs)
                .unwrap_or_else(|| pgrx::error!("torii_btree: build page overflow"));
            let b = pages::extend(index, std::ptr::null_mut());
            assert_eq!(b.block(), blk);
            tree::wal_new_page(index, &b, &img);
        }
        next_blk += npages;
        if npages == 1 {
            let mut img = vec![0u8; torii_core::page::BLCKSZ];
            Meta {
                root: first_blk,
                root_level: level as u32,
            }
            .init_page(&mut img);
            tree::wal_new_page(index, &meta_buf, &img);
            return;
        }
        items = uppers;
        level += 1;
    }
}

/// The separator before item `t` of a level: for leaves its key columns; for internal items
/// the pivot's key (downlink cleared).
unsafe fn separator(kd: &KeyDesc, t: &[u8], level: u16) -> Vec<u8> {
    if level == 0 {
        let plain = tuple::plain_with_tid(t, Tid { blk: 0, off: 0 });
        if kd.natts == kd.nkeys {
            return plain;
        }
        let a = Aligned::from(&plain);
        let tr = pg_sys::index_truncate_tuple(
            kd.tupdesc,
            a.ptr() as pg_sys::IndexTuple,
            kd.nkeys as i32,
        );
        let v = tuple_bytes(tr).to_vec();
        pg_sys::pfree(tr as *mut std::ffi::c_void);
        v
    } else {
        let mut s = t.to_vec();
        tuple::set_tid_block(&mut s, 0);
        s
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    // The init fork: a metapage and an empty root leaf, written and WAL-logged directly.
    let mut meta = vec![0u8; torii_core::page::BLCKSZ];
    Meta {
        root: 1,
        root_level: 0,
    }
    .init_page(&mut meta);
    let root = page::build(0, NO_BLOCK, NO_BLOCK, None, &[]).expect("empty page");
    let smgr = pg_sys::RelationGetSmgr(index);
    for (blk, img) in [(0u32, meta), (1u32, root)] {
        let mut img = img;
        pg_sys::PageSetChecksumInplace(img.as_mut_ptr() as pg_sys::Page, blk);
        pg_sys::smgrwrite(
            smgr,
            pg_sys::ForkNumber::INIT_FORKNUM,
            blk,
            img.as_mut_ptr() as *mut std::ffi::c_char,
            true,
        );
        pg_sys::log_newpage(
            &mut (*smgr).smgr_rnode.node,
            pg_sys::ForkNumber::INIT_FORKNUM,
            blk,
            img.as_mut_ptr() as *mut std::ffi::c_char,
            true,
        );
    }
    pg_sys::smgrimmedsync(smgr, pg_sys::ForkNumber::INIT_FORKNUM);
}

/// What a uniqueness check found.
enum Unique {
    Ok,
    /// A committed live duplicate, reported (partial checks) instead of raised.
    Conflict,
    /// Wait for this transaction (or speculative insertion) and retry.
    Wait(pg_sys::TransactionId, u32, pg_sys::ItemPointerData),
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    heap: pg_sys::Relation,
    check: pg_sys::IndexUniqueCheck::Type,
    _indexunchanged: bool,
    _info: *mut pg_sys::IndexInfo,
) -> bool {
    let kd = KeyDesc::new(index);
    let itup = pg_sys::index_form_tuple((*index).rd_att, values, isnull);
    (*itup).t_tid = *heap_tid;
    let bytes = tuple_bytes(itup);
    if bytes.len() > page::MAX_ITEM_SIZE {
        item_too_big(bytes.len());
    }
    let key = SearchKey::from_tuple(&kd, itup as *const u8);
    let checking = check != pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
        && (kd.nulls_not_distinct || !kd.has_null_key(itup as *const u8));
    let mut result = true;
    loop {
        if !checking {
            let d = tree::descend(index, Target::Key(&key, false), 0, Lock::Exclusive);
            tree::insert_on_leaf(index, &kd, d, bytes);
            break;
        }
        let d = tree::descend(index, Target::Key(&key, true), 0, Lock::Exclusive);
        match check_unique(index, heap, &kd, &key, &d, bytes, check) {
            Unique::Wait(xid, token, mut tid) => {
                drop(d);
                if token != 0 {
                    pg_sys::SpeculativeInsertionWait(xid, token);
                } else {
                    pg_sys::XactLockTableWait(
                        xid,
                        heap,
                        &mut tid,
                        pg_sys::XLTW_Oper::XLTW_InsertIndex,
                    );
                }
                continue;
            }
            Unique::Conflict => result = false,
            Unique::Ok => {}
        }
        if check != pg_sys::IndexUniqueCheck::UNIQUE_CHECK_EXISTING {
            tree::insert_on_leaf(index, &kd, d, bytes);
        }
        break;
    }
    pg_sys::pfree(itup as *mut std::ffi::c_void);
    result
}

/// Looks at every entry with the new key, from the leftmost leaf that can hold it (locked by
/// the caller, which serialises inserters of one key) rightwards.
unsafe fn check_unique(
    index: pg_sys::Relation,
    heap: pg_sys::Relation,
    kd: &KeyDesc,
    key: &SearchKey,
    d: &Descent,
    itup: &[u8],
    check: pg_sys::IndexUniqueCheck::Type,
) -> Unique {
    let desc = kd.tupdesc;
    let own = tuple::heap_tid(itup);
    let mut extra: Vec<LockedBuffer> = Vec::new();
    let mut p = d.buf.page();
    let mut i = search::lower_bound(page::nitems(p), |i| key.cmp_item(page::item(p, i), desc));
    loop {
        if i >= page::nitems(p) {
            let more = page::high_key(p).is_some_and(|h| key.cmp_item(h, desc) == Ordering::Equal);
            if !more {
                return Unique::Ok;
            }
            let b = tree::read(index, page::next(p), Lock::Share);
            extra.push(b);
            p = extra.last().unwrap().page();
            i = 0;
            continue;
        }
        let it = page::item(p, i);
        if key.cmp_item(it, desc) != Ordering::Equal {
            return Unique::Ok;
        }
        for t in tuple::tids(it) {
            if t == own {
                continue;
            }
            let mut tid = to_item_pointer(t);
            let mut snap: pg_sys::SnapshotData = std::mem::zeroed();
            snap.snapshot_type = pg_sys::SnapshotType::SNAPSHOT_DIRTY;
            let mut all_dead = false;
            if pg_sys::table_index_fetch_tuple_check(heap, &mut tid, &mut snap, &mut all_dead) {
                let xwait = if snap.xmin != pg_sys::InvalidTransactionId {
                    snap.xmin
                } else {
                    snap.xmax
                };
                if xwait != pg_sys::InvalidTransactionId {
                    return Unique::Wait(xwait, snap.speculativeToken, tid);
                }
                if check == pg_sys::IndexUniqueCheck::UNIQUE_CHECK_PARTIAL {
                    return Unique::Conflict;
                }
                // A definite conflict, unless our own row is dead by now.
                let mut own_tid = to_item_pointer(own);
                if pg_sys::table_index_fetch_tuple_check(
                    heap,
                    &mut own_tid,
                    &raw mut pg_sys::SnapshotSelfData,
                    std::ptr::null_mut(),
                ) {
                    drop(extra);
                    unique_violation(index, Aligned::from(itup).ptr());
                }
                return Unique::Ok;
            }
        }
        i += 1;
    }
}

pub fn to_item_pointer(t: Tid) -> pg_sys::ItemPointerData {
    pg_sys::ItemPointerData {
        ip_blkid: pg_sys::BlockIdData {
            bi_hi: (t.blk >> 16) as u16,
            bi_lo: t.blk as u16,
        },
        ip_posid: t.off,
    }
}

pub fn from_item_pointer(p: &pg_sys::ItemPointerData) -> Tid {
    Tid {
        blk: ((p.ip_blkid.bi_hi as u32) << 16) | p.ip_blkid.bi_lo as u32,
        off: p.ip_posid,
    }
}

/// The root of an empty index built by `ambuild` is a leaf; make sure `rel` has a metapage.
///
/// # Safety
/// `rel` open.
pub unsafe fn has_meta(rel: pg_sys::Relation) -> bool {
    pages::nblocks(rel) > 0
}
