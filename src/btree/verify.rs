//! The structure check of a torii_btree index: one `(block, problem)` per problem, none when
//! the index is sound.
//!
//! * every page: checksum, header, slotted structure, kind;
//! * every level, left to right along the right-links from its leftmost page: levels, left-links
//!   matching, keys in order within each page, not above the page's high key, not below the
//!   previous page's high key;
//! * every downlink: the child is on the level below, its keys are not below the downlink's
//!   key, its high key not above the next downlink's key; pages that no level walk reaches.
//!   A page without a downlink is fine when it is on its level's chain (a split interrupted
//!   by a crash between its two WAL records, which searches handle through right-links).
//! * with `heapallindexed`: every row visible to a fresh snapshot has exactly one entry with
//!   the same key bytes, and every entry points at an existing row version.

use super::build::to_item_pointer;
use super::keys::KeyDesc;
use super::tree::Aligned;
use crate::storage::buffer::{Lock, LockedBuffer};
use crate::storage::pages;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use torii_btree::meta::Meta;
use torii_btree::{page, tuple, Tid};
use torii_core::page::{self as cpage, PageKind, NO_BLOCK};

type Problems = Vec<(i64, String)>;

/// Copies of the sound pages, by block.
struct Pages(HashMap<u32, Vec<u8>>);

/// Checks `index` (an open torii_btree index).
///
/// # Safety
/// `index` must be open with at least AccessShareLock.
pub unsafe fn check(index: pg_sys::Relation, heapallindexed: bool) -> Problems {
    let mut out: Problems = Vec::new();
    let n = pages::nblocks(index);
    if n == 0 {
        out.push((0, "index has no metapage".into()));
        return out;
    }
    // 1. Every page on its own.
    let mut good = Pages(HashMap::new());
    let mut meta = None;
    let task =
        crate::progress::Task::start(crate::progress::TaskKind::Verify, (*index).rd_id, n as u64);
    for blk in 0..n {
        task.advance(blk as u64);
        crate::progress::page_done();
        let b = LockedBuffer::read(index, blk, Lock::Share, std::ptr::null_mut());
        let p = b.page();
        if cpage::is_new(p) {
            continue; // extended, never written (crash): holds nothing
        }
        if let Err(e) = cpage::verify(p) {
            out.push((blk as i64, e.to_string()));
            continue;
        }
        if blk == 0 {
            match Meta::check(p) {
                Ok(m) => meta = Some(m),
                Err(e) => out.push((0, e)),
            }
            continue;
        }
        match cpage::kind(p) {
            Some(PageKind::BtreeLeaf) | Some(PageKind::BtreeInternal) => {
                let probs = page::check_structure(p);
                if probs.is_empty() {
                    good.0.insert(blk, p.to_vec());
                }
                out.extend(probs.into_iter().map(|s| (blk as i64, s)));
            }
            k => out.push((blk as i64, format!("unexpected page kind {k:?}"))),
        }
    }
    let Some(meta) = meta else {
        return out;
    };
    let kd = KeyDesc::new(index);
    // 2. Levels from the root down.
    let mut reached: HashSet<u32> = HashSet::new();
    let mut level_start = meta.root;
    let mut level = meta.root_level as i64;
    let mut leaf_blocks = Vec::new();
    while level >= 0 {
        let Some(first) = good.0.get(&level_start) else {
            out.push((
                level_start as i64,
                format!("leftmost page of level {level} is missing or damaged"),
            ));
            break;
        };
        let next_level_start = if level > 0 && page::nitems(first) > 0 {
            tuple::child(page::item(first, 0))
        } else {
            NO_BLOCK
        };
        let chain = walk_level(&kd, &good, level_start, level as u16, &mut out);
        for &b in &chain {
            reached.insert(b);
        }
        if level == meta.root_level as i64 && chain.len() != 1 {
            out.push((
                meta.root as i64,
                format!("root level has {} pages", chain.len()),
            ));
        }
        if level > 0 {
            let below: HashSet<u32> = {
                let mut tmp = Vec::new();
                let c = walk_level_quiet(&good, next_level_start);
                tmp.extend(c);
                tmp.into_iter().collect()
            };
            for &b in &chain {
                check_downlinks(&kd, &good, b, &below, &mut out);
            }
        } else {
            leaf_blocks = chain;
        }
        if level == 0 {
            break;
        }
        level -= 1;
        level_start = next_level_start;
    }
    for &b in good.0.keys() {
        if !reached.contains(&b) {
            out.push((b as i64, "page not reachable from the root".into()));
        }
    }
    if heapallindexed {
        check_heap(index, &kd, &good, &leaf_blocks, &mut out);
    }
    out.sort_by_key(|x| x.0);
    out
}

fn walk_level_quiet(good: &Pages, start: u32) -> Vec<u32> {
    let mut v = Vec::new();
    let mut b = start;
    let mut seen = HashSet::new();
    while b != NO_BLOCK && seen.insert(b) {
        v.push(b);
        match good.0.get(&b) {
            Some(p) => b = page::next(p),
            None => break,
        }
    }
    v
}

unsafe fn walk_level(
    kd: &KeyDesc,
    good: &Pages,
    start: u32,
    level: u16,
    out: &mut Problems,
) -> Vec<u32> {
    let mut chain = Vec::new();
    let mut b = start;
    let mut prev = NO_BLOCK;
    let mut prev_high: Option<Vec<u8>> = None;
    let mut seen = HashSet::new();
    while b != NO_BLOCK {
        if !seen.insert(b) {
            out.push((b as i64, "right-link cycle".into()));
            break;
        }
        let Some(p) = good.0.get(&b) else {
            out.push((
                prev as i64,
                format!("right-link to missing or damaged block {b}"),
            ));
            break;
        };
        chain.push(b);
        let info = page::info(p);
        if info.level != level {
            out.push((
                b as i64,
                format!("level {} on the chain of level {level}", info.level),
            ));
        }
        if info.prev != prev {
            out.push((
                b as i64,
                format!("left-link {} but left neighbour is {prev}", info.prev),
            ));
        }
        let n = page::nitems(p);
        let high = page::high_key(p);
        let first_real = if level > 0 { 1 } else { 0 };
        if level > 0 && (n == 0 || !tuple::is_minus_inf(page::item(p, 0))) {
            out.push((
                b as i64,
                "internal page does not start with a minus-infinity downlink".into(),
            ));
        }
        for i in first_real..n {
            let it = Aligned::from(page::item(p, i));
            if level == 0 && tuple::is_posting(it.bytes()) {
                let t = tuple::tids(it.bytes());
                if t.len() < 2 || t.windows(2).any(|w| w[0] >= w[1]) {
                    out.push((
                        b as i64,
                        format!("item {} has a malformed posting list", i + 1),
                    ));
                }
            }
            if i > first_real {
                let prev_it = Aligned::from(page::item(p, i - 1));
                if kd.cmp_tuples(prev_it.ptr(), it.ptr(), kd.nkeys) == Ordering::Greater {
                    out.push((b as i64, format!("items {} and {} out of order", i, i + 1)));
                }
            }
            if let Some(h) = high {
                let h = Aligned::from(h);
                if kd.cmp_tuples(it.ptr(), h.ptr(), kd.nkeys) == Ordering::Greater {
                    out.push((b as i64, format!("item {} above the high key", i + 1)));
                }
            }
            if let Some(ph) = &prev_high {
                let ph = Aligned::from(ph);
                if kd.cmp_tuples(it.ptr(), ph.ptr(), kd.nkeys) == Ordering::Less {
                    out.push((
                        b as i64,
                        format!("item {} below the left neighbour's high key", i + 1),
                    ));
                }
            }
        }
        prev_high = high.map(|h| h.to_vec());
        prev = b;
        b = page::next(p);
    }
    chain
}

unsafe fn check_downlinks(
    kd: &KeyDesc,
    good: &Pages,
    blk: u32,
    below: &HashSet<u32>,
    out: &mut Problems,
) {
    let p = &good.0[&blk];
    let level = page::info(p).level;
    let n = page::nitems(p);
    for i in 0..n {
        let it = page::item(p, i);
        let c = tuple::child(it);
        if !below.contains(&c) {
            out.push((
                blk as i64,
                format!(
                    "downlink {} to block {c}, not on level {}",
                    i + 1,
                    level - 1
                ),
            ));
            continue;
        }
        let Some(cp) = good.0.get(&c) else { continue };
        if !tuple::is_minus_inf(it) {
            let k = Aligned::from(it);
            let cn = page::nitems(cp);
            let from = if level > 1 { 1 } else { 0 };
            for j in from..cn.min(from + 1) {
                let ci = Aligned::from(page::item(cp, j));
                if kd.cmp_tuples(ci.ptr(), k.ptr(), kd.nkeys) == Ordering::Less {
                    out.push((
                        c as i64,
                        format!("first key below its downlink's key in block {blk}"),
                    ));
                }
            }
        }
        if i + 1 < n {
            if let Some(h) = page::high_key(cp) {
                let h = Aligned::from(h);
                let nk = Aligned::from(page::item(p, i + 1));
                if kd.cmp_tuples(h.ptr(), nk.ptr(), kd.nkeys) == Ordering::Greater {
                    out.push((
                        c as i64,
                        format!("high key above the next downlink's key in block {blk}"),
                    ));
                }
            }
        }
    }
}

struct HeapCheck {
    entries: HashMap<Tid, (u32, Vec<u8>, u32)>,
    missing: Vec<(Tid, u32)>,
    desc: pg_sys::TupleDesc,
}

#[pg_guard]
unsafe extern "C-unwind" fn heap_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    let st = &mut *(state as *mut HeapCheck);
    let t = super::build::from_item_pointer(&*tid);
    let itup = pg_sys::index_form_tuple(st.desc, values, isnull);
    let bytes = std::slice::from_raw_parts(
        itup as *const u8,
        tuple::size(std::slice::from_raw_parts(itup as *const u8, 8)),
    );
    match st.entries.get_mut(&t) {
        Some((count, key, _)) => {
            *count += 1000; // mark seen
            if key.as_slice() != &bytes[6..] {
                st.missing.push((t, 1));
            }
        }
        None => st.missing.push((t, 0)),
    }
    pg_sys::pfree(itup as *mut std::ffi::c_void);
}

unsafe fn check_heap(
    index: pg_sys::Relation,
    kd: &KeyDesc,
    good: &Pages,
    leaves: &[u32],
    out: &mut Problems,
) {
    let mut st = HeapCheck {
        entries: HashMap::new(),
        missing: Vec::new(),
        desc: kd.tupdesc,
    };
    for &b in leaves {
        let p = &good.0[&b];
        for i in 0..page::nitems(p) {
            let it = page::item(p, i);
            for t in tuple::tids(it) {
                let plain = tuple::plain_with_tid(it, t);
                let e = st.entries.entry(t).or_insert((0, plain[6..].to_vec(), b));
                e.0 += 1;
            }
        }
    }
    let heap_oid = (*(*index).rd_index).indrelid;
    let heap = pg_sys::table_open(heap_oid, pg_sys::AccessShareLock as i32);
    let info = pg_sys::BuildIndexInfo(index);
    (*info).ii_Concurrent = true;
    let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot());
    let scan = pg_sys::table_beginscan_strat(heap, snapshot, 0, std::ptr::null_mut(), true, false);
    (*(*heap).rd_tableam).index_build_range_scan.unwrap()(
        heap,
        index,
        info,
        true,
        false,
        false,
        0,
        pg_sys::InvalidBlockNumber,
        Some(heap_callback),
        &mut st as *mut HeapCheck as *mut std::ffi::c_void,
        scan,
    );
    pg_sys::UnregisterSnapshot(snapshot);
    for (t, why) in &st.missing {
        out.push((
            t.blk as i64,
            if *why == 0 {
                format!("table row ({},{}) has no index entry", t.blk, t.off)
            } else {
                format!(
                    "table row ({},{}) has an index entry with a different key",
                    t.blk, t.off
                )
            },
        ));
    }
    for (t, (count, _, leaf)) in &st.entries {
        let entries = count % 1000;
        if *count >= 1000 && entries != 1 {
            out.push((
                *leaf as i64,
                format!(
                    "table row ({},{}) has {entries} index entries",
                    t.blk, t.off
                ),
            ));
        }
        if *count < 1000 {
            // Not visible: it must at least exist as a row version (dead rows keep entries
            // until VACUUM).
            let mut ip = to_item_pointer(*t);
            if !(pg_sys::table_index_fetch_tuple_check(
                heap,
                &mut ip,
                &raw mut pg_sys::SnapshotAnyData,
                std::ptr::null_mut(),
            ) || crate::am::is_torii(heap) && torii_slot_in_use(heap, t.blk, t.off))
            {
                out.push((
                    *leaf as i64,
                    format!(
                        "index entry for ({},{}) points to no table row",
                        t.blk, t.off
                    ),
                ));
            }
        }
    }
    pg_sys::table_close(heap, pg_sys::AccessShareLock as i32);
}

/// On a torii table, a row of an aborted insert (or one whose line pointer is dead, waiting
/// for VACUUM) has no version SnapshotAny returns, yet still legitimately has index entries
/// until VACUUM removes them: only an unused or missing slot is a dangling entry.
unsafe fn torii_slot_in_use(heap: pg_sys::Relation, blk: u32, off: u16) -> bool {
    if blk == 0 || blk >= pages::nblocks(heap) || off == 0 {
        return false;
    }
    let b = crate::storage::buffer::LockedBuffer::read(
        heap,
        blk,
        crate::storage::buffer::Lock::Share,
        std::ptr::null_mut(),
    );
    let p = b.page();
    if torii_core::page::verify(p).is_err()
        || off as usize > torii_core::page::line_pointer_count(p)
    {
        return false;
    }
    torii_core::page::line_pointer(p, off as usize).flags != torii_core::page::LP_UNUSED
}

/// True if `rel` is a torii_btree index.
///
/// # Safety
/// `rel` must be open.
pub unsafe fn is_torii_btree(rel: pg_sys::Relation) -> bool {
    (*(*rel).rd_rel).relkind == pg_sys::RELKIND_INDEX as std::ffi::c_char
        && (*(*rel).rd_rel).relam == pg_sys::get_am_oid(c"torii_btree".as_ptr(), true)
}

/// `torii.verify_index(index regclass, heapallindexed boolean DEFAULT false)`.
#[pg_extern(strict)]
fn verify_index(
    index: pgrx::PgRelation,
    heapallindexed: default!(bool, false),
) -> TableIterator<'static, (name!(blkno, i64), name!(problem, String))> {
    let raw = index.as_ptr();
    // SAFETY: PgRelation keeps the relation open with AccessShareLock.
    let rows = unsafe {
        if !is_torii_btree(raw) {
            pgrx::error!("\"{}\" is not a torii_btree index", index.name());
        }
        check(raw, heapallindexed)
    };
    TableIterator::new(rows)
}
