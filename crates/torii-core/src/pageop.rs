//! # Page operations
//!
//! The item-level changes torii makes to its pages, as pure functions on 8 kB page images.
//! They are the single implementation of each change: the primary applies them to a copy of
//! the locked page before it installs the copy and logs the change, and WAL redo
//! ([`crate::walrec`]) applies the very same functions to the page being recovered, so the two
//! cannot diverge. Every function leaves the page deterministic: bytes it exposes (alignment
//! slack after an item) are zeroed rather than left as whatever the hole held, because a
//! standby's hole may hold other bytes than the primary's (full-page images omit it).
//!
//! The placement rules follow PostgreSQL's `PageAddItemExtended` and
//! `PageIndexTupleOverwrite` (bufpage.c), so that pages stay readable by PostgreSQL's own page
//! tools and line-pointer reuse works as on heap.

use crate::page::{self, LinePointer, ITEM_ID_SIZE, LP_DEAD, LP_NORMAL, LP_UNUSED};
use core::fmt;

/// `PD_HAS_FREE_LINES` in `pd_flags`: some line pointer may be unused (a hint).
pub const PD_HAS_FREE_LINES: u16 = 0x0001;
/// `PD_ALL_VISIBLE` in `pd_flags`.
pub const PD_ALL_VISIBLE: u16 = 0x0004;

/// Why a page operation could not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    /// The item does not fit in the page's free space.
    NoRoom { need: usize, free: usize },
    /// A data page already has `MaxHeapTuplesPerPage` slots.
    TooManyItems,
    /// The operation names an item the page does not have (or one without storage).
    NoItem(u16),
    /// The item's line pointer points outside the page's item area.
    BadItem(u16),
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::NoRoom { need, free } => {
                write!(f, "item of {need} bytes does not fit in {free} free bytes")
            }
            OpError::TooManyItems => write!(f, "page already has the most line pointers allowed"),
            OpError::NoItem(o) => write!(f, "no item at offset {o}"),
            OpError::BadItem(o) => write!(f, "line pointer {o} points outside the item area"),
        }
    }
}

const MAXALIGN: usize = 8;

fn maxalign(n: usize) -> usize {
    n.next_multiple_of(MAXALIGN)
}

fn rd_u16(p: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([p[off], p[off + 1]])
}

fn wr_u16(p: &mut [u8], off: usize, v: u16) {
    p[off..off + 2].copy_from_slice(&v.to_ne_bytes());
}

pub fn pd_flags(p: &[u8]) -> u16 {
    rd_u16(p, 10)
}

pub fn set_pd_flags(p: &mut [u8], f: u16) {
    wr_u16(p, 10, f)
}

fn set_lower(p: &mut [u8], v: usize) {
    wr_u16(p, 12, v as u16)
}

fn set_upper(p: &mut [u8], v: usize) {
    wr_u16(p, 14, v as u16)
}

/// The offset [`add_item`] will give the next item: the first unused line pointer when the page
/// says it has some (`PD_HAS_FREE_LINES`), else one past the last. Pure: the hint flag is
/// cleared by `add_item` itself, not here.
pub fn next_offset(p: &[u8]) -> u16 {
    let n = page::line_pointer_count(p);
    if pd_flags(p) & PD_HAS_FREE_LINES != 0 {
        for o in 1..=n {
            let lp = page::line_pointer(p, o);
            if lp.flags == LP_UNUSED && lp.len == 0 {
                return o as u16;
            }
        }
    }
    (n + 1) as u16
}

/// Adds `item` to the page, as `PageAddItemExtended` without a requested offset: into the first
/// unused line pointer if the page has one, else a new one; `max_items` limits the offset (data
/// pages: `MaxHeapTuplesPerPage`). Returns the item's offset.
pub fn add_item(p: &mut [u8], item: &[u8], max_items: Option<usize>) -> Result<u16, OpError> {
    let n = page::line_pointer_count(p);
    let off = next_offset(p) as usize;
    let reuse = off <= n;
    if let Some(max) = max_items {
        if off > max {
            return Err(OpError::TooManyItems);
        }
    }
    let lower = page::pd_lower(p) + if reuse { 0 } else { ITEM_ID_SIZE };
    let aligned = maxalign(item.len());
    let upper_now = page::pd_upper(p);
    if aligned > upper_now || lower > upper_now - aligned {
        return Err(OpError::NoRoom {
            need: aligned + if reuse { 0 } else { ITEM_ID_SIZE },
            free: upper_now.saturating_sub(page::pd_lower(p)),
        });
    }
    let upper = upper_now - aligned;
    if !reuse && pd_flags(p) & PD_HAS_FREE_LINES != 0 {
        // The hint was stale: no unused pointer left.
        set_pd_flags(p, pd_flags(p) & !PD_HAS_FREE_LINES);
    }
    set_lower(p, lower);
    set_upper(p, upper);
    page::set_line_pointer(
        p,
        off,
        LinePointer {
            off: upper,
            flags: LP_NORMAL,
            len: item.len(),
        },
    );
    p[upper..upper + item.len()].copy_from_slice(item);
    p[upper + item.len()..upper + aligned].fill(0);
    Ok(off as u16)
}

/// Whether [`add_item`] of an item of `len` bytes would succeed, without changing the page.
pub fn can_add(p: &[u8], len: usize, max_items: Option<usize>) -> Result<(), OpError> {
    let n = page::line_pointer_count(p);
    let off = next_offset(p) as usize;
    if max_items.is_some_and(|max| off > max) {
        return Err(OpError::TooManyItems);
    }
    let need = maxalign(len) + if off <= n { 0 } else { ITEM_ID_SIZE };
    let free = page::pd_upper(p) - page::pd_lower(p);
    if need > free {
        return Err(OpError::NoRoom { need, free });
    }
    Ok(())
}

/// Unused line pointers [`add_item`] will reuse (it looks for them only when the page's
/// `PD_HAS_FREE_LINES` hint is set).
pub fn reusable_pointers(p: &[u8]) -> usize {
    if pd_flags(p) & PD_HAS_FREE_LINES == 0 {
        return 0;
    }
    (1..=page::line_pointer_count(p))
        .filter(|&o| {
            let lp = page::line_pointer(p, o);
            lp.flags == LP_UNUSED && lp.len == 0
        })
        .count()
}

/// How many of the items of lengths `lens` [`add_items`] puts on page `p` (a fresh page when
/// `None`) in one go, each after the first keeping `reserve` bytes free as well (the
/// fillfactor), with at most `max_items` line pointers.
pub fn fitting_prefix(p: Option<&[u8]>, lens: &[usize], max_items: usize, reserve: usize) -> usize {
    let (mut lower, upper, mut nlp, mut reusable) = match p {
        Some(p) => (
            page::pd_lower(p),
            page::pd_upper(p),
            page::line_pointer_count(p),
            reusable_pointers(p),
        ),
        None => (page::PAGE_HEADER_SIZE, page::SPECIAL_OFFSET, 0, 0),
    };
    let mut upper = upper;
    for (k, &len) in lens.iter().enumerate() {
        let new_pointer = if reusable > 0 { 0 } else { ITEM_ID_SIZE };
        if new_pointer > 0 && nlp >= max_items {
            return k;
        }
        let need = maxalign(len) + new_pointer + if k == 0 { 0 } else { reserve };
        if upper - lower < need {
            return k;
        }
        if new_pointer > 0 {
            nlp += 1;
            lower += ITEM_ID_SIZE;
        } else {
            reusable -= 1;
        }
        upper -= maxalign(len);
    }
    lens.len()
}

/// Adds `items` in order as [`add_item`] would, all or none: when they do not all fit, the page
/// is left as it was. Returns their offsets.
pub fn add_items(
    p: &mut [u8],
    items: &[&[u8]],
    max_items: Option<usize>,
) -> Result<Vec<u16>, OpError> {
    let n = page::line_pointer_count(p);
    let unused = reusable_pointers(p);
    let new_pointers = items.len().saturating_sub(unused);
    if let Some(max) = max_items {
        if n + new_pointers > max {
            return Err(OpError::TooManyItems);
        }
    }
    let need: usize =
        items.iter().map(|i| maxalign(i.len())).sum::<usize>() + new_pointers * ITEM_ID_SIZE;
    let free = page::pd_upper(p) - page::pd_lower(p);
    if need > free {
        return Err(OpError::NoRoom { need, free });
    }
    // Each add now fits: pd_upper only falls and pd_lower only rises, so the last state decides.
    items.iter().map(|i| add_item(p, i, max_items)).collect()
}

/// The bytes of item `off` (a line pointer with storage inside the item area).
pub fn item(p: &[u8], off: u16) -> Result<&[u8], OpError> {
    let lp = item_pointer(p, off)?;
    Ok(&p[lp.off..lp.off + lp.len])
}

fn item_pointer(p: &[u8], off: u16) -> Result<LinePointer, OpError> {
    if off == 0 || off as usize > page::line_pointer_count(p) {
        return Err(OpError::NoItem(off));
    }
    let lp = page::line_pointer(p, off as usize);
    if lp.len == 0 {
        return Err(OpError::NoItem(off));
    }
    if lp.off < page::pd_upper(p) || lp.off + lp.len > page::pd_special(p) {
        return Err(OpError::BadItem(off));
    }
    Ok(lp)
}

/// Room item `off` needs to grow to `len` bytes on this page.
pub fn growth_needed(p: &[u8], off: u16, len: usize) -> usize {
    let lp = page::line_pointer(p, off as usize);
    maxalign(len).saturating_sub(maxalign(lp.len))
}

/// Writes `bytes` over item `off`. A same-size or shorter row is zero-padded to the item's
/// length: items never shrink while a change may still be rolled back, so restoring an older
/// image always fits. A longer row grows the item in place, moving the items stored below it
/// as `PageIndexTupleOverwrite` does.
pub fn overwrite_item(p: &mut [u8], off: u16, bytes: &[u8]) -> Result<(), OpError> {
    let lp = item_pointer(p, off)?;
    if bytes.len() <= lp.len {
        p[lp.off..lp.off + bytes.len()].copy_from_slice(bytes);
        p[lp.off + bytes.len()..lp.off + lp.len].fill(0);
        return Ok(());
    }
    let (lower, upper) = (page::pd_lower(p), page::pd_upper(p));
    let old_aligned = maxalign(lp.len);
    let new_aligned = maxalign(bytes.len());
    let grow = new_aligned - old_aligned;
    if grow > upper - lower {
        return Err(OpError::NoRoom {
            need: grow,
            free: upper - lower,
        });
    }
    let mut new_off = lp.off;
    if grow > 0 {
        // Items stored between pd_upper and this one move down by `grow`.
        p.copy_within(upper..lp.off, upper - grow);
        set_upper(p, upper - grow);
        new_off = lp.off - grow;
        for i in 1..=page::line_pointer_count(p) {
            let mut other = page::line_pointer(p, i);
            if i != off as usize && other.len != 0 && other.off <= lp.off {
                other.off -= grow;
                page::set_line_pointer(p, i, other);
            }
        }
    }
    page::set_line_pointer(
        p,
        off as usize,
        LinePointer {
            off: new_off,
            flags: lp.flags,
            len: bytes.len(),
        },
    );
    p[new_off..new_off + bytes.len()].copy_from_slice(bytes);
    p[new_off + bytes.len()..new_off + new_aligned].fill(0);
    Ok(())
}

/// Marks item `off` dead (`LP_DEAD`), keeping its storage until VACUUM.
pub fn kill_item(p: &mut [u8], off: u16) -> Result<(), OpError> {
    if off == 0 || off as usize > page::line_pointer_count(p) {
        return Err(OpError::NoItem(off));
    }
    let mut lp = page::line_pointer(p, off as usize);
    lp.flags = LP_DEAD;
    page::set_line_pointer(p, off as usize, lp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{init_page, PageKind, BLCKSZ, SPECIAL_OFFSET};

    fn data_page() -> Vec<u8> {
        let mut p = vec![0u8; BLCKSZ];
        init_page(&mut p, PageKind::Data);
        p
    }

    #[test]
    fn add_places_items_downwards_with_zeroed_slack() {
        let mut p = data_page();
        // Garbage in the hole must not leak into the page through alignment slack.
        p[4000..SPECIAL_OFFSET].fill(0xee);
        let a = add_item(&mut p, &[1; 13], None).unwrap();
        let b = add_item(&mut p, &[2; 8], None).unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(page::pd_upper(&p), SPECIAL_OFFSET - 16 - 8);
        assert_eq!(item(&p, 1).unwrap(), &[1; 13]);
        assert_eq!(&p[SPECIAL_OFFSET - 3..SPECIAL_OFFSET], &[0, 0, 0]);
        assert_eq!(item(&p, 2).unwrap(), &[2; 8]);
    }

    #[test]
    fn add_reuses_unused_pointers_when_the_page_says_so() {
        let mut p = data_page();
        for i in 0..3u8 {
            add_item(&mut p, &[i; 16], None).unwrap();
        }
        page::set_line_pointer(
            &mut p,
            2,
            LinePointer {
                off: 0,
                flags: LP_UNUSED,
                len: 0,
            },
        );
        // Without the hint the pointer is not looked for.
        assert_eq!(next_offset(&p), 4);
        set_pd_flags(&mut p, PD_HAS_FREE_LINES);
        assert_eq!(add_item(&mut p, &[9; 16], None).unwrap(), 2);
        // The hint stays until an add finds no unused pointer, then it is cleared.
        assert_eq!(add_item(&mut p, &[8; 16], None).unwrap(), 4);
        assert_eq!(pd_flags(&p) & PD_HAS_FREE_LINES, 0);
    }

    #[test]
    fn add_respects_room_and_slot_limits() {
        let mut p = data_page();
        assert_eq!(
            add_item(&mut p, &[0; 16], Some(0)),
            Err(OpError::TooManyItems)
        );
        assert!(matches!(
            add_item(&mut p, &vec![0; BLCKSZ], None),
            Err(OpError::NoRoom { .. })
        ));
        let big = vec![5u8; SPECIAL_OFFSET - 24 - 8];
        assert_eq!(add_item(&mut p, &big, None), Ok(1));
        assert!(add_item(&mut p, &[1], None).is_err());
        assert!(can_add(&p, 1, None).is_err());
        let mut q = data_page();
        assert_eq!(can_add(&q, 100, None), Ok(()));
        assert_eq!(can_add(&q, 100, Some(0)), Err(OpError::TooManyItems));
        add_item(&mut q, &[0; 100], None).unwrap();
    }

    #[test]
    fn add_items_is_all_or_nothing() {
        let mut p = data_page();
        let big = vec![1u8; 3000];
        let before = p.clone();
        assert!(add_items(&mut p, &[&big, &big, &big], None).is_err());
        assert_eq!(p, before);
        assert_eq!(add_items(&mut p, &[&big, &big], None), Ok(vec![1, 2]));
        let small = [2u8; 10];
        let many: Vec<&[u8]> = (0..300).map(|_| &small[..]).collect();
        let before = p.clone();
        assert_eq!(
            add_items(&mut p, &many, Some(291)),
            Err(OpError::TooManyItems)
        );
        assert_eq!(p, before);
        // Reused pointers cost no pointer room.
        page::set_line_pointer(
            &mut p,
            1,
            LinePointer {
                off: 0,
                flags: LP_UNUSED,
                len: 0,
            },
        );
        set_pd_flags(&mut p, PD_HAS_FREE_LINES);
        assert_eq!(add_items(&mut p, &[&small, &small], None), Ok(vec![1, 3]));
    }

    #[test]
    fn fitting_prefix_agrees_with_add_items() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..300 {
            let mut p = data_page();
            for _ in 0..(next() % 200) {
                let _ = add_item(&mut p, &vec![1u8; (next() % 90) as usize + 1], Some(291));
            }
            // Free some pointers, as VACUUM does.
            if round % 2 == 0 {
                for o in 1..=page::line_pointer_count(&p) {
                    if next() % 3 == 0 {
                        page::set_line_pointer(
                            &mut p,
                            o,
                            LinePointer {
                                off: 0,
                                flags: LP_UNUSED,
                                len: 0,
                            },
                        );
                    }
                }
                set_pd_flags(&mut p, PD_HAS_FREE_LINES);
            }
            let lens: Vec<usize> = (0..(next() % 120))
                .map(|_| (next() % 200) as usize + 1)
                .collect();
            let k = fitting_prefix(Some(&p), &lens, 291, 0);
            let rows: Vec<Vec<u8>> = lens.iter().map(|&l| vec![2u8; l]).collect();
            let refs: Vec<&[u8]> = rows.iter().map(|r| &r[..]).collect();
            let mut q = p.clone();
            assert!(
                add_items(&mut q, &refs[..k], Some(291)).is_ok(),
                "round {round}"
            );
            if k < refs.len() {
                let mut q = p.clone();
                assert!(
                    add_items(&mut q, &refs[..k + 1], Some(291)).is_err(),
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn overwrite_pads_shorter_rows_and_grows_longer_ones() {
        let mut p = data_page();
        add_item(&mut p, &[1; 40], None).unwrap();
        add_item(&mut p, &[2; 40], None).unwrap();
        add_item(&mut p, &[3; 40], None).unwrap();
        overwrite_item(&mut p, 2, &[7; 30]).unwrap();
        let mut want = vec![7u8; 30];
        want.resize(40, 0);
        assert_eq!(item(&p, 2).unwrap(), &want[..]);
        // Growing item 2 moves item 3 (stored below it) down; item 1 stays.
        let upper = page::pd_upper(&p);
        overwrite_item(&mut p, 2, &[8; 57]).unwrap();
        assert_eq!(page::pd_upper(&p), upper - 24);
        assert_eq!(item(&p, 1).unwrap(), &[1; 40]);
        assert_eq!(item(&p, 2).unwrap(), &[8; 57]);
        assert_eq!(item(&p, 3).unwrap(), &[3; 40]);
        let lp = page::line_pointer(&p, 2);
        assert_eq!(&p[lp.off + 57..lp.off + 64], &[0; 7]);
        assert_eq!(overwrite_item(&mut p, 9, &[1]), Err(OpError::NoItem(9)));
        assert!(matches!(
            overwrite_item(&mut p, 1, &vec![0; BLCKSZ - 100]),
            Err(OpError::NoRoom { .. })
        ));
    }

    #[test]
    fn growth_needed_counts_aligned_bytes() {
        let mut p = data_page();
        add_item(&mut p, &[1; 40], None).unwrap();
        assert_eq!(growth_needed(&p, 1, 40), 0);
        assert_eq!(growth_needed(&p, 1, 41), 8);
        assert_eq!(growth_needed(&p, 1, 20), 0);
    }

    #[test]
    fn kill_keeps_storage() {
        let mut p = data_page();
        add_item(&mut p, &[1; 40], None).unwrap();
        kill_item(&mut p, 1).unwrap();
        let lp = page::line_pointer(&p, 1);
        assert_eq!((lp.flags, lp.len), (LP_DEAD, 40));
        assert_eq!(kill_item(&mut p, 2), Err(OpError::NoItem(2)));
    }
}
