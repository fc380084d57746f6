//! Reading and changing the tree: descents with Lehman–Yao move-right, leaf insertion with
//! posting-list merging, page splits and downlink insertion. Every change is one generic WAL
//! record (functions named `wal_*`) over at most 4 pages.

use super::keys::{same_key_bytes, KeyDesc, SearchKey};
use crate::storage::buffer::{Lock, LockedBuffer};
use crate::storage::pages;
use crate::storage::wal::PageEdit;
use pgrx::pg_sys;
use std::cmp::Ordering;
use torii_btree::meta::{Meta, META_BLOCK};
use torii_btree::{page, search, split, tuple};
use torii_core::page::{PageKind, NO_BLOCK};

/// Reads, locks and verifies a tree page (XX001 on a bad checksum).
///
/// # Safety
/// `rel` must be an open torii_btree index.
pub unsafe fn read(rel: pg_sys::Relation, blk: u32, lock: Lock) -> LockedBuffer {
    let (b, valid) = pages::read_verified(rel, blk, lock, std::ptr::null_mut());
    if !valid {
        pgrx::error!(
            "torii_btree: block {blk} of index \"{}\" is not initialized",
            rel_name(rel)
        );
    }
    b
}

pub(crate) fn rel_name(rel: pg_sys::Relation) -> String {
    // SAFETY: rel is open.
    unsafe {
        std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// Reads the metapage.
///
/// # Safety
/// `rel` must be an open torii_btree index.
pub unsafe fn read_meta(rel: pg_sys::Relation) -> Meta {
    let b = read(rel, META_BLOCK, Lock::Share);
    match Meta::check(b.page()) {
        Ok(m) => m,
        Err(e) => pgrx::error!("torii_btree: index \"{}\": {e}", rel_name(rel)),
    }
}

/// The root as last read from the metapage, cached in the relcache entry (`rd_amcache`, freed
/// with it). A stale root is harmless: an old root stays the leftmost page of its level, from
/// which right-links reach every page of the level.
///
/// # Safety
/// `rel` must be an open torii_btree index.
pub unsafe fn cached_root(rel: pg_sys::Relation) -> Meta {
    let c = (*rel).rd_amcache as *const Meta;
    if !c.is_null() {
        return *c;
    }
    let m = read_meta(rel);
    let p =
        pg_sys::MemoryContextAlloc((*rel).rd_indexcxt, std::mem::size_of::<Meta>()) as *mut Meta;
    p.write(m);
    (*rel).rd_amcache = p as *mut std::ffi::c_void;
    m
}

/// Drops the cached root.
///
/// # Safety
/// `rel` must be an open torii_btree index.
pub unsafe fn forget_root(rel: pg_sys::Relation) {
    let c = (*rel).rd_amcache;
    if !c.is_null() {
        (*rel).rd_amcache = std::ptr::null_mut();
        pg_sys::pfree(c);
    }
}

fn check_level(rel: pg_sys::Relation, b: &LockedBuffer, level: u32) {
    let p = b.page();
    let kind = torii_core::page::kind(p);
    if !matches!(
        kind,
        Some(PageKind::BtreeLeaf) | Some(PageKind::BtreeInternal)
    ) || page::info(p).level as u32 != level
    {
        pgrx::error!(
            "torii_btree: block {} of index \"{}\" is a {:?} page at level {}, expected level {level}",
            b.block(),
            rel_name(rel),
            kind,
            page::info(p).level
        );
    }
}

/// Where a descent goes.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// The leftmost page that can hold the key (`strict`), or the rightmost (`!strict`).
    Key(&'a SearchKey, bool),
    Leftmost,
    Rightmost,
}

/// The result of a descent: the page reached, locked, and the internal pages passed through
/// (`stack[level]`, `NO_BLOCK` where unknown).
pub struct Descent {
    pub buf: LockedBuffer,
    pub stack: Vec<u32>,
}

/// Should a reader at page `p` move right to find `target`?
///
/// # Safety
/// `p` is a locked page of the index `desc` describes.
unsafe fn must_move_right(p: &[u8], target: Target, desc: pg_sys::TupleDesc) -> bool {
    match target {
        Target::Key(k, strict) => match page::high_key(p) {
            None => false,
            Some(h) => {
                let c = k.cmp_item(h, desc);
                c == Ordering::Less || (!strict && c == Ordering::Equal)
            }
        },
        Target::Leftmost => false,
        Target::Rightmost => !page::is_rightmost(p),
    }
}

/// Moves right from `b` (locked with `lock`) as long as `target` requires.
///
/// # Safety
/// `rel` is open, `b` one of its pages.
pub unsafe fn move_right(
    rel: pg_sys::Relation,
    mut b: LockedBuffer,
    target: Target,
    lock: Lock,
) -> LockedBuffer {
    let desc = (*rel).rd_att;
    while must_move_right(b.page(), target, desc) {
        let next = page::next(b.page());
        let level = page::info(b.page()).level as u32;
        drop(b);
        b = read(rel, next, lock);
        check_level(rel, &b, level);
    }
    b
}

/// Descends from the root to the page of level `stop_level` for `target`, locking it with
/// `lock` (upper levels are share-locked one at a time).
///
/// # Safety
/// `rel` must be an open torii_btree index.
pub unsafe fn descend(
    rel: pg_sys::Relation,
    target: Target,
    stop_level: u32,
    lock: Lock,
) -> Descent {
    let desc = (*rel).rd_att;
    let mut meta = cached_root(rel);
    if meta.root_level < stop_level {
        forget_root(rel);
        meta = cached_root(rel);
    }
    let mut blk = meta.root;
    let mut level = meta.root_level;
    if level < stop_level {
        pgrx::error!(
            "torii_btree: index \"{}\" has no level {stop_level}",
            rel_name(rel)
        );
    }
    let mut stack = vec![NO_BLOCK; level as usize + 1];
    loop {
        let l = if level == stop_level {
            lock
        } else {
            Lock::Share
        };
        let b = read(rel, blk, l);
        check_level(rel, &b, level);
        if level == meta.root_level && !page::is_rightmost(b.page()) {
            // The cached root has split since: still a correct start (the leftmost page of
            // its level), but read the metapage next time.
            forget_root(rel);
        }
        let b = move_right(rel, b, target, l);
        if level == stop_level {
            return Descent { buf: b, stack };
        }
        stack[level as usize] = b.block();
        let p = b.page();
        let n = page::nitems(p);
        if n == 0 {
            pgrx::error!(
                "torii_btree: internal block {} of index \"{}\" is empty",
                b.block(),
                rel_name(rel)
            );
        }
        let idx = match target {
            Target::Key(k, strict) => {
                search::choose_child(n, strict, |i| k.cmp_item(page::item(p, i), desc))
            }
            Target::Leftmost => 0,
            Target::Rightmost => n - 1,
        };
        blk = tuple::child(page::item(p, idx));
        level -= 1;
    }
}

/// Largest posting item for a key of `key_len` bytes.
pub fn posting_cap(key_len: usize) -> usize {
    tuple::POSTING_CAP
        .max(key_len + 64)
        .min(page::MAX_ITEM_SIZE)
}

/// Inserts the plain index tuple `itup` (heap TID in `t_tid`) into the locked leaf `d.buf`,
/// which must be a valid place for its key; splits as needed.
///
/// # Safety
/// `rel` open, `d.buf` exclusively locked leaf of it, `itup` 8-aligned.
pub unsafe fn insert_on_leaf(rel: pg_sys::Relation, kd: &KeyDesc, d: Descent, itup: &[u8]) {
    let key = SearchKey::from_tuple(kd, itup.as_ptr());
    let desc = kd.tupdesc;
    let tid = tuple::heap_tid(itup);
    let p = d.buf.page();
    let n = page::nitems(p);
    let ub = search::upper_bound(n, |i| key.cmp_item(page::item(p, i), desc));
    if ub > 0 && same_key_bytes(page::item(p, ub - 1), itup) {
        let old = page::item(p, ub - 1);
        let mut tids = tuple::tids(old);
        if !tuple::merge_tids(&mut tids, &[tid]) {
            return; // already there
        }
        let new = tuple::leaf_item(old, &tids);
        if new.len() <= posting_cap(tuple::key_len(old)) && page::fits_replace(p, ub - 1, new.len())
        {
            wal_replace_item(rel, &d.buf, ub - 1, &new);
            return;
        }
    }
    if page::fits(p, itup.len()) {
        wal_insert_item(rel, &d.buf, ub, itup);
        return;
    }
    let mut items: Vec<Vec<u8>> = (0..n).map(|i| page::item(p, i).to_vec()).collect();
    items.insert(ub, itup.to_vec());
    split(rel, kd, d.buf, items, ub, &d.stack);
}

/// The separator for a split before leaf item `t`: its key columns, no TIDs.
unsafe fn leaf_separator(kd: &KeyDesc, t: &[u8]) -> Vec<u8> {
    let plain = tuple::plain_with_tid(t, tuple::Tid { blk: 0, off: 0 });
    if kd.natts == kd.nkeys {
        return plain;
    }
    let aligned = Aligned::from(&plain);
    let tr = pg_sys::index_truncate_tuple(
        kd.tupdesc,
        aligned.ptr() as pg_sys::IndexTuple,
        kd.nkeys as i32,
    );
    let len = tuple::size(std::slice::from_raw_parts(tr as *const u8, 8));
    let v = std::slice::from_raw_parts(tr as *const u8, len).to_vec();
    pg_sys::pfree(tr as *mut std::ffi::c_void);
    v
}

/// Splits the exclusively locked page `buf` whose new contents would be `items` (the new item
/// at `new_pos`), then inserts the downlink of the new right page into the parent.
///
/// # Safety
/// `rel` open; `buf` exclusively locked.
pub unsafe fn split(
    rel: pg_sys::Relation,
    kd: &KeyDesc,
    buf: LockedBuffer,
    mut items: Vec<Vec<u8>>,
    new_pos: usize,
    stack: &[u32],
) {
    let p = buf.page();
    let info = page::info(p);
    let level = info.level;
    let leaf = level == 0;
    let high = page::high_key(p).map(|h| h.to_vec());
    let old_next = page::next(p);
    let is_root = info.prev == NO_BLOCK && old_next == NO_BLOCK;
    let lens: Vec<usize> = items.iter().map(|i| i.len()).collect();
    let append = old_next == NO_BLOCK && new_pos + 1 == items.len();
    let k = split::choose_split(
        &lens,
        |k| tuple::key_len(&items[k]),
        high.as_ref().map_or(0, |h| h.len()),
        append,
    )
    .unwrap_or_else(|| pgrx::error!("torii_btree: no split point for block {}", buf.block()));
    let sep = if leaf {
        leaf_separator(kd, &items[k])
    } else {
        let mut s = items[k].clone();
        tuple::set_tid_block(&mut s, 0);
        let child = tuple::child(&items[k]);
        items[k] = tuple::minus_inf(child);
        s
    };
    let left_blk = buf.block();
    let nbuf = pages::extend(rel, std::ptr::null_mut());
    let right_blk = nbuf.block();
    let lrefs: Vec<&[u8]> = items[..k].iter().map(|v| v.as_slice()).collect();
    let rrefs: Vec<&[u8]> = items[k..].iter().map(|v| v.as_slice()).collect();
    let left = page::build(level, info.prev, right_blk, Some(&sep), &lrefs)
        .unwrap_or_else(|| pgrx::error!("torii_btree: left half of split does not fit"));
    let right = page::build(level, left_blk, old_next, high.as_deref(), &rrefs)
        .unwrap_or_else(|| pgrx::error!("torii_btree: right half of split does not fit"));
    if is_root {
        let rbuf = pages::extend(rel, std::ptr::null_mut());
        let root_blk = rbuf.block();
        let a = tuple::minus_inf(left_blk);
        let b = tuple::pivot(&sep, right_blk);
        let root = page::build(level + 1, NO_BLOCK, NO_BLOCK, None, &[&a, &b])
            .expect("two pivots fit a page");
        let mbuf = LockedBuffer::read(rel, META_BLOCK, Lock::Exclusive, std::ptr::null_mut());
        pages::check(rel, META_BLOCK, mbuf.page());
        wal_split_root(
            rel,
            [&buf, &nbuf, &rbuf, &mbuf],
            [&left, &right, &root],
            Meta {
                root: root_blk,
                root_level: level as u32 + 1,
            },
        );
        return;
    }
    let rsib = if old_next != NO_BLOCK {
        let r = read(rel, old_next, Lock::Exclusive);
        check_level(rel, &r, level as u32);
        Some(r)
    } else {
        None
    };
    wal_split(rel, &buf, &nbuf, rsib.as_ref(), &left, &right);
    drop(rsib);
    drop(nbuf);
    insert_downlink(rel, kd, buf, level, &sep, right_blk, stack);
}

/// Inserts the downlink `(sep, right_blk)` for the right half of the split of `child` (still
/// locked, released here) into the level above.
unsafe fn insert_downlink(
    rel: pg_sys::Relation,
    kd: &KeyDesc,
    child: LockedBuffer,
    level: u16,
    sep: &[u8],
    right_blk: u32,
    stack: &[u32],
) {
    let parent_level = level as u32 + 1;
    let child_blk = child.block();
    let pivot = tuple::pivot(sep, right_blk);
    let hint = stack
        .get(parent_level as usize)
        .copied()
        .unwrap_or(NO_BLOCK);
    let mut pb = if hint != NO_BLOCK {
        let b = read(rel, hint, Lock::Exclusive);
        check_level(rel, &b, parent_level);
        b
    } else {
        descend(rel, Target::Leftmost, parent_level, Lock::Exclusive).buf
    };
    loop {
        let p = pb.page();
        let n = page::nitems(p);
        if let Some(i) = (0..n).find(|&i| tuple::child(page::item(p, i)) == child_blk) {
            drop(child);
            return add_to_parent(rel, kd, pb, i + 1, pivot, stack);
        }
        if page::is_rightmost(p) {
            break;
        }
        let next = page::next(p);
        drop(pb);
        pb = read(rel, next, Lock::Exclusive);
        check_level(rel, &pb, parent_level);
    }
    drop(pb);
    // The child has no downlink: its own split was interrupted by a crash (it is reachable
    // through its left neighbour's right-link). Place the new downlink by key instead.
    drop(child);
    let aligned = Aligned::from(sep);
    let key = SearchKey::from_tuple(kd, aligned.ptr());
    let d = descend(rel, Target::Key(&key, false), parent_level, Lock::Exclusive);
    let p = d.buf.page();
    let n = page::nitems(p);
    let desc = kd.tupdesc;
    let pos = search::upper_bound(n, |i| key.cmp_item(page::item(p, i), desc)).max(1);
    add_to_parent(rel, kd, d.buf, pos, pivot, &d.stack);
}

unsafe fn add_to_parent(
    rel: pg_sys::Relation,
    kd: &KeyDesc,
    pb: LockedBuffer,
    pos: usize,
    pivot: Vec<u8>,
    stack: &[u32],
) {
    let p = pb.page();
    if page::fits(p, pivot.len()) {
        wal_insert_item(rel, &pb, pos, &pivot);
        return;
    }
    let n = page::nitems(p);
    let mut items: Vec<Vec<u8>> = (0..n).map(|i| page::item(p, i).to_vec()).collect();
    items.insert(pos, pivot);
    split(rel, kd, pb, items, pos, stack);
}

/// An 8-aligned copy of an index tuple (for `index_getattr`-style access).
pub struct Aligned(Vec<u64>, usize);

impl Aligned {
    pub fn from(b: &[u8]) -> Aligned {
        let mut v = vec![0u64; b.len().div_ceil(8)];
        // SAFETY: v has at least b.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr() as *mut u8, b.len()) };
        Aligned(v, b.len())
    }
    pub fn ptr(&self) -> *const u8 {
        self.0.as_ptr() as *const u8
    }
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the vector holds self.1 initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.1) }
    }
}

// ---- WAL: one function per operation --------------------------------------------------------

/// Writes a freshly built page image to a new, exclusively locked buffer.
pub(crate) fn wal_new_page(rel: pg_sys::Relation, buf: &LockedBuffer, img: &[u8]) {
    // SAFETY: rel is open, buf exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, true);
    e.page(i).copy_from_slice(img);
    e.finish();
}

/// Inserts data item `pos` on a page.
pub(crate) fn wal_insert_item(rel: pg_sys::Relation, buf: &LockedBuffer, pos: usize, item: &[u8]) {
    // SAFETY: rel is open, buf exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, false);
    if page::insert_item(e.page(i), pos, item).is_err() {
        pgrx::error!("torii_btree: item does not fit after all");
    }
    e.finish();
}

/// Replaces data item `pos` (a posting list grew).
pub(crate) fn wal_replace_item(rel: pg_sys::Relation, buf: &LockedBuffer, pos: usize, item: &[u8]) {
    // SAFETY: rel is open, buf exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, false);
    if page::replace_item(e.page(i), pos, item).is_err() {
        pgrx::error!("torii_btree: item does not fit after all");
    }
    e.finish();
}

/// A split: the left page rewritten, the new right page, the old right sibling's left-link.
pub(crate) fn wal_split(
    rel: pg_sys::Relation,
    left: &LockedBuffer,
    right: &LockedBuffer,
    rsib: Option<&LockedBuffer>,
    left_img: &[u8],
    right_img: &[u8],
) {
    // SAFETY: rel is open, all buffers exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let l = e.register(left, false);
    let r = e.register(right, true);
    e.page(l).copy_from_slice(left_img);
    e.page(r).copy_from_slice(right_img);
    if let Some(s) = rsib {
        let si = e.register(s, false);
        page::set_prev(e.page(si), right.block());
    }
    e.finish();
}

/// A split of the root: left, right, the new root and the metapage in one record.
pub(crate) fn wal_split_root(
    rel: pg_sys::Relation,
    bufs: [&LockedBuffer; 4],
    imgs: [&[u8]; 3],
    meta: Meta,
) {
    // SAFETY: rel is open, all buffers exclusively locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let l = e.register(bufs[0], false);
    let r = e.register(bufs[1], true);
    let t = e.register(bufs[2], true);
    let m = e.register(bufs[3], false);
    e.page(l).copy_from_slice(imgs[0]);
    e.page(r).copy_from_slice(imgs[1]);
    e.page(t).copy_from_slice(imgs[2]);
    meta.write(e.page(m));
    e.finish();
}

/// Vacuum rewrote a leaf's items.
pub(crate) fn wal_vacuum_page(
    rel: pg_sys::Relation,
    buf: &LockedBuffer,
    edit: impl FnOnce(&mut [u8]),
) {
    // SAFETY: rel is open, buf exclusively (cleanup) locked.
    let mut e = unsafe { PageEdit::start(rel) };
    let i = e.register(buf, false);
    edit(e.page(i));
    e.finish();
}
