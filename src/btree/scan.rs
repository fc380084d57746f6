//! Index scans: equality and range quals, ordered output in both directions, bitmap scans and
//! index-only scans.
//!
//! A scan positions itself with a descent, then reads one leaf page at a time: under the share
//! lock it copies out the TIDs (and, for index-only scans, the tuples) of every item that
//! satisfies the quals, remembers the page's right- and left-links *as read*, and keeps only a
//! pin (which makes VACUUM wait before it removes entries of that page). Concurrent splits
//! only move items to new pages between this page and the remembered right-link, so nothing
//! is returned twice or skipped. Moving left follows the left-link and then right-links until
//! the page whose right-link is the current page (pages are never deleted).
//!
//! Quals are evaluated with the operator class's comparison function for the (index type,
//! argument type) pair. A qual is *required* when every earlier column has an equality qual;
//! a required upper bound (in index order) that fails ends a forward scan, a required lower
//! bound ends a backward one.

use super::build::to_item_pointer;
use super::keys::{cmp_values, getattr, ColOrder, KeyCol, KeyDesc, SearchKey};
use super::tree::{self, Aligned, Target};
use crate::storage::buffer::Lock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cmp::Ordering;
use torii_btree::{page, search, tuple, Tid};
use torii_core::page::NO_BLOCK;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Strategy 1..5 in index order (DESC columns flipped).
    Op(u16),
    IsNull,
    NotNull,
}

struct Qual {
    col: usize,
    kind: Kind,
    arg: pg_sys::Datum,
    coll: pg_sys::Oid,
    order: ColOrder,
    proc_: Box<pg_sys::FmgrInfo>,
    required: bool,
}

struct Entry {
    tid: Tid,
    itup: Option<Aligned>,
}

struct State {
    kd: KeyDesc,
    quals: Vec<Qual>,
    qual_ok: bool,
    items: Vec<Entry>,
    /// Position of the last returned entry (-1: before the first).
    pos: isize,
    blk: u32,
    next: u32,
    prev: u32,
    more_right: bool,
    more_left: bool,
    started: bool,
    pin: pg_sys::Buffer,
}

impl State {
    fn release_pin(&mut self) {
        if self.pin != 0 {
            // SAFETY: we own this pin.
            unsafe { pg_sys::ReleaseBuffer(self.pin) };
            self.pin = 0;
        }
    }
}

unsafe fn state<'a>(scan: pg_sys::IndexScanDesc) -> &'a mut State {
    &mut *((*scan).opaque as *mut State)
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
    let st = Box::new(State {
        kd: KeyDesc::new(index),
        quals: Vec::new(),
        qual_ok: true,
        items: Vec::new(),
        pos: -1,
        blk: NO_BLOCK,
        next: NO_BLOCK,
        prev: NO_BLOCK,
        more_right: true,
        more_left: true,
        started: false,
        pin: 0,
    });
    (*scan).opaque = Box::into_raw(st) as *mut std::ffi::c_void;
    (*scan).xs_itupdesc = (*index).rd_att;
    scan
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    keys: pg_sys::ScanKey,
    nkeys: i32,
    _orderbys: pg_sys::ScanKey,
    _norderbys: i32,
) {
    if !keys.is_null() && nkeys > 0 {
        std::ptr::copy(keys, (*scan).keyData, nkeys as usize);
    }
    let st = state(scan);
    st.release_pin();
    st.items.clear();
    st.pos = -1;
    st.started = false;
    st.blk = NO_BLOCK;
    st.more_left = true;
    st.more_right = true;
    preprocess(scan, st);
}

unsafe fn preprocess(scan: pg_sys::IndexScanDesc, st: &mut State) {
    let index = (*scan).indexRelation;
    st.quals.clear();
    st.qual_ok = true;
    let n = (*scan).numberOfKeys as usize;
    for k in 0..n {
        let sk = &*(*scan).keyData.add(k);
        let col = sk.sk_attno as usize - 1;
        let order = st.kd.order[col];
        let flags = sk.sk_flags as u32;
        let kind = if flags & pg_sys::SK_SEARCHNULL != 0 {
            Kind::IsNull
        } else if flags & pg_sys::SK_SEARCHNOTNULL != 0 {
            Kind::NotNull
        } else {
            if flags & pg_sys::SK_ISNULL != 0 {
                st.qual_ok = false; // x op NULL is never true
                continue;
            }
            if flags & (pg_sys::SK_ROW_HEADER | pg_sys::SK_SEARCHARRAY) != 0 {
                pgrx::error!(
                    "torii_btree: row comparisons and arrays are not supported in scan keys"
                );
            }
            let s = sk.sk_strategy;
            Kind::Op(if order.desc { 6 - s } else { s })
        };
        let mut proc_: Box<pg_sys::FmgrInfo> = Box::new(std::mem::zeroed());
        if let Kind::Op(_) = kind {
            let opfamily = *(*index).rd_opfamily.add(col);
            let opcintype = *(*index).rd_opcintype.add(col);
            let subtype = if sk.sk_subtype == pg_sys::InvalidOid {
                opcintype
            } else {
                sk.sk_subtype
            };
            if subtype == opcintype {
                // Same type: the relcache already has the function.
                let cached = pg_sys::index_getprocinfo(index, (col + 1) as i16, 1);
                pg_sys::fmgr_info_copy(&mut *proc_, cached, pg_sys::CurrentMemoryContext);
            } else {
                let f = pg_sys::get_opfamily_proc(opfamily, opcintype, subtype, 1);
                if f == pg_sys::InvalidOid {
                    pgrx::error!(
                    "torii_btree: missing comparison function for types {} and {} in operator family {}",
                    opcintype.to_u32(),
                    subtype.to_u32(),
                    opfamily.to_u32()
                    );
                }
                pg_sys::fmgr_info_cxt(f, &mut *proc_, pg_sys::CurrentMemoryContext);
            }
        }
        st.quals.push(Qual {
            col,
            kind,
            arg: sk.sk_argument,
            coll: sk.sk_collation,
            order,
            proc_,
            required: false,
        });
    }
    st.quals.sort_by_key(|q| q.col);
    // Required: every earlier column has an equality (or IS NULL) qual.
    let mut eq_upto = 0; // columns 0..eq_upto have equality quals
    for c in 0..st.kd.nkeys {
        let here: Vec<usize> = (0..st.quals.len())
            .filter(|&i| st.quals[i].col == c)
            .collect();
        if c > eq_upto {
            break;
        }
        for &i in &here {
            st.quals[i].required = true;
        }
        if here
            .iter()
            .any(|&i| matches!(st.quals[i].kind, Kind::Op(3) | Kind::IsNull))
        {
            eq_upto = c + 1;
        }
    }
}

/// The positioning key: equality quals on leading columns, then one bound for the direction.
unsafe fn position_key(st: &State, forward: bool) -> Option<SearchKey> {
    let mut cols = Vec::new();
    for c in 0..st.kd.nkeys {
        let quals: Vec<&Qual> = st.quals.iter().filter(|q| q.col == c).collect();
        let eq = quals
            .iter()
            .find(|q| matches!(q.kind, Kind::Op(3) | Kind::IsNull));
        if let Some(q) = eq {
            cols.push(key_col(q));
            continue;
        }
        let bound = quals.iter().find(|q| match q.kind {
            Kind::Op(s) => {
                if forward {
                    s >= 4
                } else {
                    s <= 2
                }
            }
            _ => false,
        });
        if let Some(q) = bound {
            cols.push(key_col(q));
        }
        break;
    }
    if cols.is_empty() {
        None
    } else {
        Some(SearchKey { cols })
    }
}

fn key_col(q: &Qual) -> KeyCol {
    KeyCol {
        value: q.arg,
        isnull: q.kind == Kind::IsNull,
        proc_: &*q.proc_ as *const pg_sys::FmgrInfo as *mut pg_sys::FmgrInfo,
        coll: q.coll,
        order: q.order,
    }
}

/// Result of checking an item against the quals.
struct Check {
    ok: bool,
    stop_fwd: bool,
    stop_bwd: bool,
}

unsafe fn check_item(st: &State, t: &[u8]) -> Check {
    let mut r = Check {
        ok: true,
        stop_fwd: false,
        stop_bwd: false,
    };
    for q in &st.quals {
        let (v, isnull) = getattr(t.as_ptr(), q.col + 1, st.kd.tupdesc);
        // Which way the scan has passed the matching range, when this qual fails.
        let (pass, fwd_side) = match q.kind {
            Kind::IsNull => (isnull, q.order.nulls_first),
            Kind::NotNull => (!isnull, !q.order.nulls_first),
            Kind::Op(s) => {
                if isnull {
                    (false, !q.order.nulls_first)
                } else {
                    let o = cmp_values(
                        &*q.proc_ as *const _ as *mut _,
                        q.coll,
                        q.order,
                        (v, false),
                        (q.arg, false),
                    );
                    match s {
                        1 => (o == Ordering::Less, true),
                        2 => (o != Ordering::Greater, true),
                        3 => (o == Ordering::Equal, o == Ordering::Greater),
                        4 => (o != Ordering::Less, false),
                        _ => (o == Ordering::Greater, false),
                    }
                }
            }
        };
        if !pass {
            r.ok = false;
            if q.required {
                if fwd_side {
                    r.stop_fwd = true;
                } else {
                    r.stop_bwd = true;
                }
            }
        }
    }
    r
}

/// Reads the locked leaf `b` into the scan's entries, from item `start` in direction `forward`.
unsafe fn read_page(
    scan: pg_sys::IndexScanDesc,
    st: &mut State,
    b: crate::storage::buffer::LockedBuffer,
    start: Option<usize>,
    forward: bool,
) {
    let want_itup = (*scan).xs_want_itup;
    let p = b.page();
    if !page::is_leaf(p) {
        pgrx::error!("torii_btree: scan reached non-leaf block {}", b.block());
    }
    let n = page::nitems(p);
    st.items.clear();
    st.blk = b.block();
    st.next = page::next(p);
    st.prev = page::info(p).prev;
    st.more_left = true;
    st.more_right = true;
    let push = |st: &mut State, it: &[u8]| {
        for t in tuple::tids(it) {
            let itup = if want_itup {
                Some(Aligned::from(&tuple::plain_with_tid(it, t)))
            } else {
                None
            };
            st.items.push(Entry { tid: t, itup });
        }
    };
    if forward {
        let s = start.unwrap_or(0);
        for i in s..n {
            let it = page::item(p, i);
            let c = check_item(st, it);
            if c.ok {
                push(st, it);
            } else if c.stop_fwd {
                st.more_right = false;
                break;
            }
        }
        st.pos = -1;
    } else {
        let s = start.unwrap_or(n);
        for i in (0..s).rev() {
            let it = page::item(p, i);
            let c = check_item(st, it);
            if c.ok {
                let before = st.items.len();
                push(st, it);
                st.items[before..].reverse();
            } else if c.stop_bwd {
                st.more_left = false;
                break;
            }
        }
        st.items.reverse();
        st.pos = st.items.len() as isize;
    }
    // Keep a pin (not the lock) on the page while its entries are returned.
    st.release_pin();
    pg_sys::IncrBufferRefCount(b.buffer());
    st.pin = b.buffer();
    drop(b);
}

/// Advances to the next entry in the direction; false at the end.
unsafe fn step(scan: pg_sys::IndexScanDesc, st: &mut State, forward: bool) -> bool {
    let index = (*scan).indexRelation;
    if !st.qual_ok {
        return false;
    }
    if !st.started {
        st.started = true;
        let key = position_key(st, forward);
        let (target, stop) = match &key {
            Some(k) => (Target::Key(k, forward), true),
            None if forward => (Target::Leftmost, false),
            None => (Target::Rightmost, false),
        };
        let d = tree::descend(index, target, 0, Lock::Share);
        let p = d.buf.page();
        let desc = st.kd.tupdesc;
        let start = if stop {
            let k = key.as_ref().unwrap();
            let n = page::nitems(p);
            Some(if forward {
                search::lower_bound(n, |i| k.cmp_item(page::item(p, i), desc))
            } else {
                search::upper_bound(n, |i| k.cmp_item(page::item(p, i), desc))
            })
        } else {
            None
        };
        read_page(scan, st, d.buf, start, forward);
    }
    loop {
        if forward {
            if st.pos + 1 < st.items.len() as isize {
                st.pos += 1;
                return true;
            }
            if !st.more_right || st.next == NO_BLOCK {
                st.pos = st.items.len() as isize;
                return false;
            }
            let b = tree::read(index, st.next, Lock::Share);
            read_page(scan, st, b, None, true);
        } else {
            if st.pos > 0 {
                st.pos -= 1;
                return true;
            }
            if !st.more_left || st.prev == NO_BLOCK {
                st.pos = -1;
                return false;
            }
            // The page left of the current one: the left-link, then right while needed.
            let cur = st.blk;
            let mut lb = st.prev;
            let b = loop {
                let b = tree::read(index, lb, Lock::Share);
                let nx = page::next(b.page());
                if nx == cur {
                    break b;
                }
                if nx == NO_BLOCK {
                    pgrx::error!(
                        "torii_btree: lost the left sibling of block {cur} in index \"{}\"",
                        tree::rel_name(index)
                    );
                }
                lb = nx;
            };
            read_page(scan, st, b, None, false);
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(
    scan: pg_sys::IndexScanDesc,
    dir: pg_sys::ScanDirection::Type,
) -> bool {
    let st = state(scan);
    let forward = dir != pg_sys::ScanDirection::BackwardScanDirection;
    if !step(scan, st, forward) {
        return false;
    }
    let e = &st.items[st.pos as usize];
    (*scan).xs_heaptid = to_item_pointer(e.tid);
    (*scan).xs_recheck = false;
    if let Some(t) = &e.itup {
        (*scan).xs_itup = t.ptr() as pg_sys::IndexTuple;
    }
    true
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgetbitmap(
    scan: pg_sys::IndexScanDesc,
    tbm: *mut pg_sys::TIDBitmap,
) -> i64 {
    let st = state(scan);
    let mut n = 0i64;
    let mut batch: Vec<pg_sys::ItemPointerData> = Vec::with_capacity(256);
    while step(scan, st, true) {
        batch.push(to_item_pointer(st.items[st.pos as usize].tid));
        if batch.len() == 256 {
            pg_sys::tbm_add_tuples(tbm, batch.as_mut_ptr(), batch.len() as i32, false);
            n += batch.len() as i64;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        pg_sys::tbm_add_tuples(tbm, batch.as_mut_ptr(), batch.len() as i32, false);
        n += batch.len() as i64;
    }
    n
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    let p = (*scan).opaque as *mut State;
    if !p.is_null() {
        let mut st = Box::from_raw(p);
        st.release_pin();
        (*scan).opaque = std::ptr::null_mut();
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amcanreturn(_index: pg_sys::Relation, _attno: i32) -> bool {
    true
}
