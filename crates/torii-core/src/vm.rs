//! # The visibility map
//!
//! torii keeps PostgreSQL's own visibility map fork (`_vm`), in PostgreSQL's format, so that
//! index-only scans skip fetching rows from pages whose rows every snapshot sees, and so that
//! ANALYZE and VACUUM report `relallvisible` to the planner as they do for heap.
//!
//! The fork holds two bits per table block (all-visible, all-frozen); torii sets only
//! all-visible (it never freezes rows). A map page is a standard page header followed by
//! [`MAPSIZE`] bytes of bits, four table blocks per byte, so one map page covers
//! [`BLOCKS_PER_MAP_PAGE`] blocks:
//!
//! | bits of byte `(blk % BLOCKS_PER_MAP_PAGE) / 4` | block |
//! |---|---|
//! | `0x01 << 2 * (blk % 4)` | all-visible |
//! | `0x02 << 2 * (blk % 4)` | all-frozen (never set by torii) |
//!
//! **WAL.** torii logs map pages with generic WAL, which leaves out a standard page's "hole"
//! between `pd_lower` and `pd_upper` — exactly where the bits live on a freshly initialized map
//! page (`pd_lower` 24, `pd_upper` 8192). So every map page torii changes gets `pd_lower` =
//! `pd_upper` = 8192 (no hole; PostgreSQL's map code reads the bits from fixed offsets and does
//! not look at `pd_lower`), and its first change is logged as a full image.
//!
//! **Invariant.** A block's all-visible bit is set only while the data page carries
//! `PD_ALL_VISIBLE` in `pd_flags`: VACUUM sets both in one WAL record, with the data page
//! exclusively locked, and the first writer that changes the page clears both in one record
//! before its own (under the same page lock). Writers therefore test only their page's flag.

use crate::page::BLCKSZ;

/// `PD_ALL_VISIBLE` of `pd_flags` (offset 10 of the page header).
pub const PD_ALL_VISIBLE: u16 = 0x0004;
/// The all-visible bit of a block (before shifting).
pub const ALL_VISIBLE: u8 = 0x01;
/// Both bits of a block (before shifting).
const BOTH_BITS: u8 = 0x03;
/// `MAXALIGN(SizeOfPageHeaderData)`: where the bits start on a map page.
pub const MAP_HEADER: usize = 24;
/// Bytes of bits per map page.
pub const MAPSIZE: usize = BLCKSZ - MAP_HEADER;
/// Table blocks one map page covers.
pub const BLOCKS_PER_MAP_PAGE: u32 = (MAPSIZE * 4) as u32;

/// Where block `blk`'s bits are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Block of the map fork.
    pub map_block: u32,
    /// Byte offset in that map page.
    pub byte: usize,
    /// Shift of the block's two bits in that byte.
    pub shift: u32,
}

pub fn location(blk: u32) -> Location {
    let in_page = blk % BLOCKS_PER_MAP_PAGE;
    Location {
        map_block: blk / BLOCKS_PER_MAP_PAGE,
        byte: MAP_HEADER + (in_page / 4) as usize,
        shift: 2 * (in_page % 4),
    }
}

/// Whether the all-visible bit at `loc` is set on map page `map`.
pub fn is_all_visible(map: &[u8], loc: Location) -> bool {
    (map[loc.byte] >> loc.shift) & ALL_VISIBLE != 0
}

/// Sets (all-visible) or clears (both bits) the bits at `loc`, and makes the page hole-free for
/// generic WAL. Returns whether the page's header still had the hole (a first change by torii,
/// to be logged as a full image).
pub fn set_bits(map: &mut [u8], loc: Location, all_visible: bool) -> bool {
    let had_hole = lower(map) != BLCKSZ;
    if all_visible {
        map[loc.byte] |= ALL_VISIBLE << loc.shift;
    } else {
        map[loc.byte] &= !(BOTH_BITS << loc.shift);
    }
    map[12..14].copy_from_slice(&(BLCKSZ as u16).to_ne_bytes());
    map[14..16].copy_from_slice(&(BLCKSZ as u16).to_ne_bytes());
    had_hole
}

fn lower(p: &[u8]) -> usize {
    u16::from_ne_bytes([p[12], p[13]]) as usize
}

/// Whether a torii page carries `PD_ALL_VISIBLE`.
pub fn page_all_visible(p: &[u8]) -> bool {
    u16::from_ne_bytes([p[10], p[11]]) & PD_ALL_VISIBLE != 0
}

/// Sets or clears `PD_ALL_VISIBLE` of a torii page (the caller restamps its checksum).
pub fn set_page_all_visible(p: &mut [u8], on: bool) {
    let mut f = u16::from_ne_bytes([p[10], p[11]]);
    if on {
        f |= PD_ALL_VISIBLE;
    } else {
        f &= !PD_ALL_VISIBLE;
    }
    p[10..12].copy_from_slice(&f.to_ne_bytes());
}

/// Marked pages VACUUM skips, as heap's VACUUM: only runs of at least this many, since
/// reading a few pages costs little next to a seek and keeps the row count exact.
pub const SKIP_PAGES_THRESHOLD: usize = 32;

/// Which blocks to skip, given which are marked all-visible: those in runs of marked blocks
/// at least [`SKIP_PAGES_THRESHOLD`] long.
pub fn skippable(marked: &[bool]) -> Vec<bool> {
    let mut skip = vec![false; marked.len()];
    let mut start = 0;
    while start < marked.len() {
        let len = marked[start..].iter().take_while(|&&m| m).count();
        if len >= SKIP_PAGES_THRESHOLD {
            skip[start..start + len].fill(true);
        }
        start += len.max(1);
    }
    skip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::{self, PageKind};

    #[test]
    fn locations_follow_postgres_layout() {
        // visibilitymap.c: HEAPBLK_TO_MAPBLOCK/MAPBYTE/OFFSET with 8 kB pages.
        assert_eq!(BLOCKS_PER_MAP_PAGE, 32672);
        assert_eq!(
            location(0),
            Location {
                map_block: 0,
                byte: 24,
                shift: 0
            }
        );
        assert_eq!(
            location(5),
            Location {
                map_block: 0,
                byte: 25,
                shift: 2
            }
        );
        assert_eq!(
            location(32671),
            Location {
                map_block: 0,
                byte: 8191,
                shift: 6
            }
        );
        assert_eq!(
            location(32672),
            Location {
                map_block: 1,
                byte: 24,
                shift: 0
            }
        );
    }

    #[test]
    fn set_and_clear_touch_only_their_block() {
        let mut map = vec![0u8; BLCKSZ];
        map[12..14].copy_from_slice(&24u16.to_ne_bytes());
        map[14..16].copy_from_slice(&(BLCKSZ as u16).to_ne_bytes());
        let a = location(7);
        let b = location(6);
        assert!(set_bits(&mut map, a, true));
        assert!(!set_bits(&mut map, b, true));
        assert!(is_all_visible(&map, a) && is_all_visible(&map, b));
        assert_eq!(lower(&map), BLCKSZ);
        map[a.byte] |= 0x02 << a.shift; // all-frozen, as PostgreSQL might have left it
        set_bits(&mut map, a, false);
        assert!(!is_all_visible(&map, a) && is_all_visible(&map, b));
        assert_eq!((map[a.byte] >> a.shift) & BOTH_BITS, 0);
    }

    #[test]
    fn page_flag_round_trip_keeps_the_page_valid() {
        let mut p = vec![0u8; BLCKSZ];
        page::init_page(&mut p, PageKind::Data);
        assert!(!page_all_visible(&p));
        set_page_all_visible(&mut p, true);
        page::set_checksum(&mut p);
        assert!(page_all_visible(&p) && page::verify(&p).is_ok());
        set_page_all_visible(&mut p, false);
        page::set_checksum(&mut p);
        assert!(!page_all_visible(&p) && page::verify(&p).is_ok());
    }

    #[test]
    fn vacuum_skips_only_long_runs_of_marked_pages() {
        let mut marked = vec![false; 100];
        marked[1..20].fill(true); // too short: read
        marked[30..30 + SKIP_PAGES_THRESHOLD].fill(true); // exactly long enough: skipped
        marked[80..99].fill(true);
        let skip = skippable(&marked);
        assert_eq!(skip.iter().filter(|&&s| s).count(), SKIP_PAGES_THRESHOLD);
        assert!(skip[30..30 + SKIP_PAGES_THRESHOLD].iter().all(|&s| s));
        assert!(!skip[29] && !skip[30 + SKIP_PAGES_THRESHOLD] && !skip[1] && !skip[98]);
        assert!(skippable(&[]).is_empty());
        assert_eq!(skippable(&[true; 40]), vec![true; 40]);
    }
}
