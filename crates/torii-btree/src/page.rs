//! Leaf and internal pages: editing page images in place.
//!
//! ```text
//!  0      24   28   32 ...                pd_lower   pd_upper              8176    8192
//!  | hdr  | lp1| lp2| lp3 ...               |  hole    | items (any order)   | special |
//! ```
//!
//! Line pointer 1 is the page-info item:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | left-link (`prev`), or `u32::MAX` on the leftmost page of a level |
//! | 4 | 2 | level (0 = leaf) |
//! | 6 | 2 | flags: [`FLAG_HIGH_KEY`] |
//! | 8 | … | high key (a pivot index tuple) when [`FLAG_HIGH_KEY`] is set |
//!
//! Line pointers 2.. are the data items in key order (data item `i` is line pointer `i + 2`).
//! Items are stored at 8-byte aligned offsets. An item that grows (a posting list taking one
//! more TID) is written to fresh space and its line pointer moved; the old bytes become
//! garbage that [`compact`] reclaims when the page runs out of room. Removed items lose their
//! line pointer (the array is shifted), so offsets of data items are positions, not stable
//! identifiers (scans remember keys, not offsets).

use torii_core::page::{
    self, line_pointer, line_pointer_count, pd_lower, pd_upper, set_line_pointer, LinePointer,
    PageKind, BLCKSZ, ITEM_ID_SIZE, LP_NORMAL, NO_BLOCK, PAGE_HEADER_SIZE, SPECIAL_OFFSET,
};

use crate::tuple::maxalign;

pub const PAGE_INFO_SIZE: usize = 8;
pub const FLAG_HIGH_KEY: u16 = 1;

/// Largest item (leaf item, pivot or high key) a page accepts, so that a page always holds
/// the page-info item with a high key and two items: splits always succeed.
pub const MAX_ITEM_SIZE: usize = 2600;

/// Bytes of items and line pointers a page can hold (header and special space excluded).
pub const BODY_SIZE: usize = SPECIAL_OFFSET - PAGE_HEADER_SIZE;

const _: () = assert!(
    PAGE_INFO_SIZE + 3 * (MAX_ITEM_SIZE + ITEM_ID_SIZE) <= BODY_SIZE,
    "a page must hold a high key and two maximal items"
);
const _: () = assert!(MAX_ITEM_SIZE.is_multiple_of(8));

/// The page-info item, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageInfo {
    pub prev: u32,
    pub level: u16,
    pub flags: u16,
}

#[derive(Debug, PartialEq, Eq)]
pub struct NoRoom;

fn wr16(p: &mut [u8], o: usize, v: u16) {
    p[o..o + 2].copy_from_slice(&v.to_ne_bytes());
}
fn rd16(p: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([p[o], p[o + 1]])
}

fn set_lower(p: &mut [u8], v: usize) {
    wr16(p, 12, v as u16)
}
fn set_upper(p: &mut [u8], v: usize) {
    wr16(p, 14, v as u16)
}

fn lp_bytes(p: &[u8], n: usize) -> &[u8] {
    let lp = line_pointer(p, n);
    &p[lp.off..lp.off + lp.len]
}

/// Formats a leaf (`level == 0`) or internal page with no data items.
pub fn init(p: &mut [u8], level: u16, prev: u32, next: u32, high: Option<&[u8]>) {
    let kind = if level == 0 {
        PageKind::BtreeLeaf
    } else {
        PageKind::BtreeInternal
    };
    page::init_page(p, kind);
    page::set_next(p, next);
    let mut info = Vec::with_capacity(PAGE_INFO_SIZE + high.map_or(0, |h| h.len()));
    info.extend_from_slice(&prev.to_ne_bytes());
    info.extend_from_slice(&level.to_ne_bytes());
    info.extend_from_slice(&(if high.is_some() { FLAG_HIGH_KEY } else { 0 }).to_ne_bytes());
    if let Some(h) = high {
        info.extend_from_slice(h);
    }
    raw_insert(p, 1, &info).expect("page-info item fits an empty page");
}

/// Builds a page image from scratch (checksum stamped), or `None` if the items do not fit.
pub fn build(
    level: u16,
    prev: u32,
    next: u32,
    high: Option<&[u8]>,
    items: &[&[u8]],
) -> Option<Vec<u8>> {
    let need = PAGE_INFO_SIZE
        + high.map_or(0, |h| h.len())
        + ITEM_ID_SIZE
        + items
            .iter()
            .map(|i| maxalign(i.len()) + ITEM_ID_SIZE)
            .sum::<usize>();
    if need > BODY_SIZE {
        return None;
    }
    let mut p = vec![0u8; BLCKSZ];
    init(&mut p, level, prev, next, high);
    for (i, it) in items.iter().enumerate() {
        raw_insert(&mut p, i + 2, it).expect("checked above");
    }
    page::set_checksum(&mut p);
    Some(p)
}

/// Space a page needs for the given page-info/high key and items.
pub fn needed(high_len: usize, item_lens: impl Iterator<Item = usize>) -> usize {
    maxalign(PAGE_INFO_SIZE + high_len)
        + ITEM_ID_SIZE
        + item_lens.map(|l| maxalign(l) + ITEM_ID_SIZE).sum::<usize>()
}

pub fn info(p: &[u8]) -> PageInfo {
    let b = lp_bytes(p, 1);
    PageInfo {
        prev: u32::from_ne_bytes(b[0..4].try_into().unwrap()),
        level: rd16(b, 4),
        flags: rd16(b, 6),
    }
}

/// Sets the left-link in place.
pub fn set_prev(p: &mut [u8], prev: u32) {
    let lp = line_pointer(p, 1);
    p[lp.off..lp.off + 4].copy_from_slice(&prev.to_ne_bytes());
}

pub fn high_key(p: &[u8]) -> Option<&[u8]> {
    let b = lp_bytes(p, 1);
    if rd16(b, 6) & FLAG_HIGH_KEY != 0 {
        Some(&b[PAGE_INFO_SIZE..])
    } else {
        None
    }
}

/// Replaces the high key (or removes it, for a page becoming rightmost).
pub fn set_high_key(p: &mut [u8], high: Option<&[u8]>) -> Result<(), NoRoom> {
    let i = info(p);
    let mut b = Vec::new();
    b.extend_from_slice(&i.prev.to_ne_bytes());
    b.extend_from_slice(&i.level.to_ne_bytes());
    b.extend_from_slice(&(if high.is_some() { FLAG_HIGH_KEY } else { 0 }).to_ne_bytes());
    if let Some(h) = high {
        b.extend_from_slice(h);
    }
    raw_replace(p, 1, &b)
}

pub fn next(p: &[u8]) -> u32 {
    page::read_special(p).next
}
pub fn set_next(p: &mut [u8], next: u32) {
    page::set_next(p, next)
}
pub fn is_rightmost(p: &[u8]) -> bool {
    next(p) == NO_BLOCK
}
pub fn is_leaf(p: &[u8]) -> bool {
    page::kind(p) == Some(PageKind::BtreeLeaf)
}

/// Number of data items.
pub fn nitems(p: &[u8]) -> usize {
    line_pointer_count(p).saturating_sub(1)
}

/// Data item `i` (0-based).
pub fn item(p: &[u8], i: usize) -> &[u8] {
    lp_bytes(p, i + 2)
}

fn live_bytes(p: &[u8]) -> usize {
    (1..=line_pointer_count(p))
        .map(|n| maxalign(line_pointer(p, n).len))
        .sum()
}

/// Free bytes, counting garbage that [`compact`] would reclaim.
pub fn room(p: &[u8]) -> usize {
    let garbage = (SPECIAL_OFFSET - pd_upper(p)) - live_bytes(p);
    pd_upper(p) - pd_lower(p) + garbage
}

/// True if an item of `len` bytes can be added (possibly after compaction).
pub fn fits(p: &[u8], len: usize) -> bool {
    room(p) >= maxalign(len) + ITEM_ID_SIZE
}

/// True if item `i` can be replaced by one of `len` bytes.
pub fn fits_replace(p: &[u8], i: usize, len: usize) -> bool {
    let old = maxalign(item(p, i).len());
    room(p) + old >= maxalign(len)
}

/// Rewrites the items contiguously at the end of the page, in line-pointer order.
pub fn compact(p: &mut [u8]) {
    let n = line_pointer_count(p);
    let items: Vec<Vec<u8>> = (1..=n).map(|k| lp_bytes(p, k).to_vec()).collect();
    let mut upper = SPECIAL_OFFSET;
    for (k, it) in items.iter().enumerate() {
        upper -= maxalign(it.len());
        p[upper..upper + maxalign(it.len())].fill(0);
        p[upper..upper + it.len()].copy_from_slice(it);
        set_line_pointer(
            p,
            k + 1,
            LinePointer {
                off: upper,
                flags: LP_NORMAL,
                len: it.len(),
            },
        );
    }
    set_upper(p, upper);
}

/// Stores bytes in the hole (compacting first if needed), returning their offset.
fn place(p: &mut [u8], bytes: &[u8], extra_lp: usize) -> Result<usize, NoRoom> {
    let need = maxalign(bytes.len());
    if pd_upper(p) - pd_lower(p) < need + extra_lp {
        if room(p) < need + extra_lp {
            return Err(NoRoom);
        }
        compact(p);
    }
    let upper = pd_upper(p) - need;
    p[upper..upper + need].fill(0);
    p[upper..upper + bytes.len()].copy_from_slice(bytes);
    set_upper(p, upper);
    Ok(upper)
}

/// Inserts at line pointer `n` (1-based), shifting later line pointers.
fn raw_insert(p: &mut [u8], n: usize, bytes: &[u8]) -> Result<(), NoRoom> {
    let count = line_pointer_count(p);
    assert!(n >= 1 && n <= count + 1);
    let off = place(p, bytes, ITEM_ID_SIZE)?;
    let lower = pd_lower(p);
    let at = PAGE_HEADER_SIZE + (n - 1) * ITEM_ID_SIZE;
    p.copy_within(at..lower, at + ITEM_ID_SIZE);
    set_lower(p, lower + ITEM_ID_SIZE);
    set_line_pointer(
        p,
        n,
        LinePointer {
            off,
            flags: LP_NORMAL,
            len: bytes.len(),
        },
    );
    Ok(())
}

fn raw_replace(p: &mut [u8], n: usize, bytes: &[u8]) -> Result<(), NoRoom> {
    let lp = line_pointer(p, n);
    if maxalign(bytes.len()) == maxalign(lp.len) {
        p[lp.off..lp.off + maxalign(lp.len)].fill(0);
        p[lp.off..lp.off + bytes.len()].copy_from_slice(bytes);
        set_line_pointer(
            p,
            n,
            LinePointer {
                len: bytes.len(),
                ..lp
            },
        );
        return Ok(());
    }
    if room(p) + maxalign(lp.len) < maxalign(bytes.len()) {
        return Err(NoRoom);
    }
    // Free the old copy first (a zero-length line pointer), so compaction can reclaim it.
    set_line_pointer(
        p,
        n,
        LinePointer {
            off: 0,
            flags: LP_NORMAL,
            len: 0,
        },
    );
    let off = place(p, bytes, 0).expect("room checked");
    set_line_pointer(
        p,
        n,
        LinePointer {
            off,
            flags: LP_NORMAL,
            len: bytes.len(),
        },
    );
    Ok(())
}

/// Inserts data item `i` (0-based: before the current item `i`).
pub fn insert_item(p: &mut [u8], i: usize, bytes: &[u8]) -> Result<(), NoRoom> {
    raw_insert(p, i + 2, bytes)
}

/// Replaces data item `i`.
pub fn replace_item(p: &mut [u8], i: usize, bytes: &[u8]) -> Result<(), NoRoom> {
    raw_replace(p, i + 2, bytes)
}

/// Removes data item `i`; its bytes become garbage.
pub fn delete_item(p: &mut [u8], i: usize) {
    let n = i + 2;
    let lower = pd_lower(p);
    let at = PAGE_HEADER_SIZE + (n - 1) * ITEM_ID_SIZE;
    p.copy_within(at + ITEM_ID_SIZE..lower, at);
    set_lower(p, lower - ITEM_ID_SIZE);
    p[lower - ITEM_ID_SIZE..lower].fill(0);
}

/// Checks the slotted structure of a leaf or internal page (after its checksum): line
/// pointers inside the item area, no overlaps, a page-info item. Returns the problems.
pub fn check_structure(p: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let n = line_pointer_count(p);
    if n == 0 {
        out.push("no page-info item".into());
        return out;
    }
    let mut spans = Vec::new();
    for k in 1..=n {
        let lp = line_pointer(p, k);
        if lp.flags != LP_NORMAL
            || !lp.off.is_multiple_of(8)
            || lp.off < pd_upper(p)
            || lp.off + lp.len > SPECIAL_OFFSET
        {
            out.push(format!(
                "line pointer {k} invalid (off {}, len {}, flags {})",
                lp.off, lp.len, lp.flags
            ));
            continue;
        }
        spans.push((lp.off, lp.off + maxalign(lp.len), k));
    }
    spans.sort();
    for w in spans.windows(2) {
        if w[0].1 > w[1].0 {
            out.push(format!("items {} and {} overlap", w[0].2, w[1].2));
        }
    }
    if out.is_empty() {
        let b = lp_bytes(p, 1);
        if b.len() < PAGE_INFO_SIZE {
            out.push("page-info item too short".into());
        } else {
            let i = info(p);
            let want = if i.level == 0 {
                PageKind::BtreeLeaf
            } else {
                PageKind::BtreeInternal
            };
            if page::kind(p) != Some(want) {
                out.push(format!("level {} on a {:?} page", i.level, page::kind(p)));
            }
            if (i.flags & FLAG_HIGH_KEY != 0) != (next(p) != NO_BLOCK) {
                out.push("high key present iff not rightmost is violated".into());
            }
        }
        for k in 2..=n {
            let it = lp_bytes(p, k);
            if it.len() < crate::tuple::HEADER_SIZE || crate::tuple::size(it) != it.len() {
                out.push(format!("item {} has a bad size", k - 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::{self, int_key, Tid};

    fn leaf_with(vals: &[i32]) -> Vec<u8> {
        let items: Vec<Vec<u8>> = vals
            .iter()
            .map(|&v| {
                tuple::leaf_item(
                    &int_key(v),
                    &[Tid {
                        blk: v as u32,
                        off: 1,
                    }],
                )
            })
            .collect();
        let refs: Vec<&[u8]> = items.iter().map(|v| v.as_slice()).collect();
        build(0, NO_BLOCK, 5, Some(&int_key(100)), &refs).unwrap()
    }

    fn vals(p: &[u8]) -> Vec<i32> {
        (0..nitems(p))
            .map(|i| i32::from_ne_bytes(item(p, i)[8..12].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn build_and_read() {
        let p = leaf_with(&[1, 2, 3]);
        assert_eq!(page::verify(&p), Ok(()));
        assert_eq!(nitems(&p), 3);
        assert_eq!(vals(&p), vec![1, 2, 3]);
        assert_eq!(high_key(&p).unwrap(), &int_key(100)[..]);
        assert_eq!(next(&p), 5);
        assert_eq!(
            info(&p),
            PageInfo {
                prev: NO_BLOCK,
                level: 0,
                flags: FLAG_HIGH_KEY
            }
        );
        assert!(check_structure(&p).is_empty());
    }

    #[test]
    fn edit_in_place() {
        let mut p = leaf_with(&[10, 30]);
        insert_item(
            &mut p,
            1,
            &tuple::leaf_item(&int_key(20), &[Tid { blk: 1, off: 1 }]),
        )
        .unwrap();
        insert_item(
            &mut p,
            0,
            &tuple::leaf_item(&int_key(5), &[Tid { blk: 1, off: 2 }]),
        )
        .unwrap();
        assert_eq!(vals(&p), vec![5, 10, 20, 30]);
        let big = tuple::leaf_item(
            &int_key(20),
            &(1..50).map(|b| Tid { blk: b, off: 1 }).collect::<Vec<_>>(),
        );
        replace_item(&mut p, 2, &big).unwrap();
        assert_eq!(tuple::tid_count(item(&p, 2)), 49);
        delete_item(&mut p, 0);
        assert_eq!(vals(&p), vec![10, 20, 30]);
        set_prev(&mut p, 77);
        assert_eq!(info(&p).prev, 77);
        set_high_key(&mut p, None).unwrap();
        assert!(high_key(&p).is_none());
        set_next(&mut p, NO_BLOCK);
        assert!(check_structure(&p).is_empty(), "{:?}", check_structure(&p));
    }

    #[test]
    fn fill_until_full_then_compact() {
        let mut p = leaf_with(&[]);
        let mut n = 0;
        while fits(&p, 16) {
            insert_item(
                &mut p,
                n,
                &tuple::leaf_item(&int_key(n as i32), &[Tid { blk: 1, off: 1 }]),
            )
            .unwrap();
            n += 1;
        }
        // 16-byte items + 4-byte line pointers: the same density as a built-in btree leaf.
        assert!(n > 390, "{n}");
        assert_eq!(
            insert_item(&mut p, 0, &int_key(1)),
            Err(NoRoom),
            "full page refuses"
        );
        // Delete half, garbage is reclaimed by the next insertions.
        for _ in 0..n / 2 {
            delete_item(&mut p, 0);
        }
        for k in 0..n / 2 - 1 {
            insert_item(&mut p, k, &int_key(-1)).unwrap();
        }
        assert!(check_structure(&p).is_empty());
    }
}
