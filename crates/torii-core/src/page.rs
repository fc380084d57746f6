//! # Pages
//!
//! Every block of a torii relation is an 8 kB page in PostgreSQL's standard layout, so that the
//! buffer manager, generic WAL (which relies on `pd_lower`/`pd_upper` to skip the hole) and tools
//! such as `pg_checksums` and `get_raw_page` treat it as any other page:
//!
//! ```text
//!  0        24 (+4 per line pointer)      pd_lower   pd_upper          pd_special  8192
//!  | header | line pointers ...           |  hole    | rows / undo ... | special   |
//! ```
//!
//! The 24-byte header is PostgreSQL's `PageHeaderData` (native endianness):
//!
//! | offset | size | field                 |
//! |-------:|-----:|-----------------------|
//! | 0      | 8    | `pd_lsn`              |
//! | 8      | 2    | `pd_checksum`         |
//! | 10     | 2    | `pd_flags`            |
//! | 12     | 2    | `pd_lower`            |
//! | 14     | 2    | `pd_upper`            |
//! | 16     | 2    | `pd_special`          |
//! | 18     | 2    | `pd_pagesize_version` |
//! | 20     | 4    | `pd_prune_xid`        |
//!
//! torii's own per-page data lives in the 16-byte *special space* at the end of the page
//! ([`Special`]): a magic number, the page kind, the CRC32C of the page, and a link to another
//! block (the next undo page, or the next free page).
//!
//! ## Checksum
//!
//! The CRC32C covers the whole page except `pd_lsn` and `pd_checksum` (which PostgreSQL itself
//! rewrites when it writes WAL and when `data_checksums` is on), the unused hole between
//! `pd_lower` and `pd_upper` (generic WAL zeroes it, full-page images omit it) and the CRC field
//! itself. It is recomputed on every modification, always under an exclusive buffer lock, and
//! checked whenever a page is read. Because it does not cover the block number or relation, a
//! page copied byte by byte to a new file (ALTER TABLE SET TABLESPACE) stays valid.

use core::fmt;

/// PostgreSQL's block size; torii needs the default build.
pub const BLCKSZ: usize = 8192;
/// `sizeof(PageHeaderData)` without line pointers.
pub const PAGE_HEADER_SIZE: usize = 24;
/// `sizeof(ItemIdData)`.
pub const ITEM_ID_SIZE: usize = 4;
/// `PG_PAGE_LAYOUT_VERSION` of PostgreSQL 15, stored in the low byte of `pd_pagesize_version`.
pub const PG_PAGE_LAYOUT_VERSION: u16 = 4;
/// `MaxHeapTuplesPerPage` for 8 kB pages: tidbitmap.c rejects larger offsets, so no data page
/// ever holds more slots than this.
pub const MAX_ROWS_PER_PAGE: usize = 291;

/// Size of the special space.
pub const SPECIAL_SIZE: usize = 16;
/// Offset of the special space in every torii page.
pub const SPECIAL_OFFSET: usize = BLCKSZ - SPECIAL_SIZE;
/// Identifies a torii page (in the special space), "to" in ASCII.
pub const PAGE_MAGIC: u16 = 0x746f;
/// Offset of the CRC32C field inside the page.
pub const CRC_OFFSET: usize = SPECIAL_OFFSET + 4;

/// What a page holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageKind {
    /// Block 0: the metapage ([`crate::meta`]).
    Meta = 1,
    /// Slotted page of rows ([`crate::row`]).
    Data = 2,
    /// Undo log page ([`crate::undo`]).
    Undo = 3,
    /// A page on the free list, ready for reuse.
    Free = 4,
    /// torii_btree metapage (block 0 of an index).
    BtreeMeta = 5,
    /// torii_btree leaf page.
    BtreeLeaf = 6,
    /// torii_btree internal page.
    BtreeInternal = 7,
    /// torii_btree page deleted and waiting for reuse.
    BtreeDeleted = 8,
}

impl PageKind {
    pub fn from_u8(v: u8) -> Option<PageKind> {
        match v {
            1 => Some(PageKind::Meta),
            2 => Some(PageKind::Data),
            3 => Some(PageKind::Undo),
            4 => Some(PageKind::Free),
            5 => Some(PageKind::BtreeMeta),
            6 => Some(PageKind::BtreeLeaf),
            7 => Some(PageKind::BtreeInternal),
            8 => Some(PageKind::BtreeDeleted),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PageKind::Meta => "meta",
            PageKind::Data => "data",
            PageKind::Undo => "undo",
            PageKind::Free => "free",
            PageKind::BtreeMeta => "btree meta",
            PageKind::BtreeLeaf => "btree leaf",
            PageKind::BtreeInternal => "btree internal",
            PageKind::BtreeDeleted => "btree deleted",
        }
    }
}

/// The special space, 16 bytes at offset [`SPECIAL_OFFSET`]:
///
/// | offset | size | field                                      |
/// |-------:|-----:|--------------------------------------------|
/// | 0      | 2    | magic [`PAGE_MAGIC`]                       |
/// | 2      | 1    | kind ([`PageKind`])                        |
/// | 3      | 1    | flags (reserved, 0)                        |
/// | 4      | 4    | CRC32C of the page                         |
/// | 8      | 4    | next block (undo chain, free list), or `u32::MAX` |
/// | 12     | 4    | reserved, 0                                |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Special {
    pub magic: u16,
    pub kind: u8,
    pub flags: u8,
    pub crc: u32,
    pub next: u32,
    pub reserved: u32,
}

/// "No block" in links.
pub const NO_BLOCK: u32 = u32::MAX;

const _: () = assert!(SPECIAL_OFFSET + SPECIAL_SIZE == BLCKSZ);
const _: () = assert!(SPECIAL_OFFSET.is_multiple_of(8));

fn rd_u16(p: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([p[off], p[off + 1]])
}
fn rd_u32(p: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(p[off..off + 4].try_into().unwrap())
}
fn wr_u16(p: &mut [u8], off: usize, v: u16) {
    p[off..off + 2].copy_from_slice(&v.to_ne_bytes());
}
fn wr_u32(p: &mut [u8], off: usize, v: u32) {
    p[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

pub fn pd_lower(p: &[u8]) -> usize {
    rd_u16(p, 12) as usize
}
pub fn pd_upper(p: &[u8]) -> usize {
    rd_u16(p, 14) as usize
}
pub fn pd_special(p: &[u8]) -> usize {
    rd_u16(p, 16) as usize
}

/// Number of line pointers on a page with a sane header.
pub fn line_pointer_count(p: &[u8]) -> usize {
    pd_lower(p).saturating_sub(PAGE_HEADER_SIZE) / ITEM_ID_SIZE
}

/// A line pointer (`ItemIdData`: `lp_off:15, lp_flags:2, lp_len:15`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinePointer {
    pub off: usize,
    pub flags: u8,
    pub len: usize,
}

/// `LP_UNUSED`, `LP_NORMAL`, `LP_REDIRECT`, `LP_DEAD`.
pub const LP_UNUSED: u8 = 0;
pub const LP_NORMAL: u8 = 1;
pub const LP_REDIRECT: u8 = 2;
pub const LP_DEAD: u8 = 3;

/// Line pointer `n` (1-based, like `OffsetNumber`).
pub fn line_pointer(p: &[u8], n: usize) -> LinePointer {
    let raw = rd_u32(p, PAGE_HEADER_SIZE + (n - 1) * ITEM_ID_SIZE);
    LinePointer {
        off: (raw & 0x7fff) as usize,
        flags: ((raw >> 15) & 0x3) as u8,
        len: (raw >> 17) as usize,
    }
}

/// Encodes a line pointer in place (used when an item changes length or state).
pub fn set_line_pointer(p: &mut [u8], n: usize, lp: LinePointer) {
    let raw = (lp.off as u32 & 0x7fff) | ((lp.flags as u32 & 0x3) << 15) | ((lp.len as u32) << 17);
    wr_u32(p, PAGE_HEADER_SIZE + (n - 1) * ITEM_ID_SIZE, raw);
}

pub fn read_special(p: &[u8]) -> Special {
    let s = SPECIAL_OFFSET;
    Special {
        magic: rd_u16(p, s),
        kind: p[s + 2],
        flags: p[s + 3],
        crc: rd_u32(p, s + 4),
        next: rd_u32(p, s + 8),
        reserved: rd_u32(p, s + 12),
    }
}

pub fn write_special(p: &mut [u8], sp: &Special) {
    let s = SPECIAL_OFFSET;
    wr_u16(p, s, sp.magic);
    p[s + 2] = sp.kind;
    p[s + 3] = sp.flags;
    wr_u32(p, s + 4, sp.crc);
    wr_u32(p, s + 8, sp.next);
    wr_u32(p, s + 12, sp.reserved);
}

/// Sets the "next" link of the special space (the CRC must be recomputed afterwards).
pub fn set_next(p: &mut [u8], next: u32) {
    wr_u32(p, SPECIAL_OFFSET + 8, next);
}

/// Formats an empty torii page of the given kind, like `PageInit` with a 16-byte special space,
/// and stamps its checksum.
pub fn init_page(p: &mut [u8], kind: PageKind) {
    p.fill(0);
    wr_u16(p, 12, PAGE_HEADER_SIZE as u16);
    wr_u16(p, 14, SPECIAL_OFFSET as u16);
    wr_u16(p, 16, SPECIAL_OFFSET as u16);
    wr_u16(p, 18, BLCKSZ as u16 | PG_PAGE_LAYOUT_VERSION);
    write_special(
        p,
        &Special {
            magic: PAGE_MAGIC,
            kind: kind as u8,
            flags: 0,
            crc: 0,
            next: NO_BLOCK,
            reserved: 0,
        },
    );
    set_checksum(p);
}

/// Why a page failed its check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageError {
    /// The header is not one a torii page can have (lower/upper/special out of range, wrong
    /// layout version, wrong magic); no checksum can be trusted then.
    Malformed(String),
    /// The stored CRC32C differs from the one computed over the page.
    Checksum { stored: u32, computed: u32 },
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageError::Malformed(why) => write!(f, "malformed page: {why}"),
            PageError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: expected {computed:08x} (computed), found {stored:08x} (stored)"
            ),
        }
    }
}

/// Checks the header fields the checksum and every reader rely on.
pub fn check_header(p: &[u8]) -> Result<(), PageError> {
    if p.len() != BLCKSZ {
        return Err(PageError::Malformed(format!("page of {} bytes", p.len())));
    }
    let (lower, upper, special) = (pd_lower(p), pd_upper(p), pd_special(p));
    let version = rd_u16(p, 18);
    if version != (BLCKSZ as u16 | PG_PAGE_LAYOUT_VERSION) {
        return Err(PageError::Malformed(format!(
            "pd_pagesize_version is {version:#06x}"
        )));
    }
    if special != SPECIAL_OFFSET || lower < PAGE_HEADER_SIZE || lower > upper || upper > special {
        return Err(PageError::Malformed(format!(
            "pd_lower {lower}, pd_upper {upper}, pd_special {special}"
        )));
    }
    let magic = rd_u16(p, SPECIAL_OFFSET);
    if magic != PAGE_MAGIC {
        return Err(PageError::Malformed(format!(
            "special space magic {magic:#06x}"
        )));
    }
    if PageKind::from_u8(p[SPECIAL_OFFSET + 2]).is_none() {
        return Err(PageError::Malformed(format!(
            "unknown page kind {}",
            p[SPECIAL_OFFSET + 2]
        )));
    }
    Ok(())
}

/// CRC32C of a page with a sane header (see the module documentation for what it covers).
pub fn compute_checksum(p: &[u8]) -> u32 {
    let (lower, upper) = (pd_lower(p), pd_upper(p));
    let mut crc = crc32c::crc32c(&p[10..lower]);
    crc = crc32c::crc32c_append(crc, &p[upper..CRC_OFFSET]);
    crc32c::crc32c_append(crc, &p[CRC_OFFSET + 4..BLCKSZ])
}

/// Recomputes and stores the checksum; call after every modification, on the page image that
/// will be WAL-logged.
pub fn set_checksum(p: &mut [u8]) {
    let crc = compute_checksum(p);
    wr_u32(p, CRC_OFFSET, crc);
}

/// Updates the stored checksum after bytes `at..at + old.len()` of the row area (between
/// `pd_upper` and the special space) changed from `old` to what the page holds now, with
/// `pd_lower` and `pd_upper` unchanged: O(changed bytes) instead of a pass over the page.
/// CRC32C is linear, so for messages of equal length `crc(a) ^ crc(b)` is the raw CRC of
/// `a ^ b`, which here is the CRC of the changed bytes shifted past the bytes that follow them.
/// A wrong stored checksum stays wrong (the result equals [`set_checksum`]'s only when the old
/// one was right), so damage is still detected.
pub fn patch_checksum(p: &mut [u8], at: usize, old: &[u8]) {
    debug_assert!(at >= pd_upper(p) && at + old.len() <= SPECIAL_OFFSET);
    let new = &p[at..at + old.len()];
    // The covered bytes after the changed ones: up to the CRC field, and the 12 after it.
    let after = (CRC_OFFSET - (at + old.len())) + (BLCKSZ - CRC_OFFSET - 4);
    let delta = crc32c::crc32c(old) ^ crc32c::crc32c(new);
    let crc = rd_u32(p, CRC_OFFSET) ^ shift_crc(delta, after);
    wr_u32(p, CRC_OFFSET, crc);
}

/// CRC-32C's polynomial, bit-reflected.
const CRC32C_POLY: u32 = 0x82f6_3b78;

/// `a * b mod P` for bit-reflected polynomials (zlib's `multmodp`).
fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 {
            (b >> 1) ^ CRC32C_POLY
        } else {
            b >> 1
        };
    }
}

/// The raw CRC `c` of some bytes followed by `n` zero bytes: `c * x^(8n) mod P`, with
/// `x^(8n) mod P` for every `n` below BLCKSZ from a table made once per process (32 kB).
fn shift_crc(c: u32, n: usize) -> u32 {
    static POWERS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let t = POWERS.get_or_init(|| {
        let mut t = Vec::with_capacity(BLCKSZ);
        let mut x = 1u32 << 31; // x^0
        for _ in 0..BLCKSZ {
            t.push(x);
            x = multmodp(x, 1 << 23); // times x^8
        }
        t
    });
    multmodp(t[n], c)
}

/// True for a page that was never initialised (all zeros), as left by a relation extension
/// that crashed before its WAL record: such a page holds nothing and is not corrupt.
pub fn is_new(p: &[u8]) -> bool {
    pd_upper(p) == 0 && p.iter().all(|&b| b == 0)
}

/// Verifies a page read from disk or from a shared buffer.
pub fn verify(p: &[u8]) -> Result<(), PageError> {
    check_header(p)?;
    let stored = rd_u32(p, CRC_OFFSET);
    let computed = compute_checksum(p);
    if stored != computed {
        return Err(PageError::Checksum { stored, computed });
    }
    Ok(())
}

/// The kind of a page whose header has been checked.
pub fn kind(p: &[u8]) -> Option<PageKind> {
    PageKind::from_u8(p[SPECIAL_OFFSET + 2])
}

/// Free bytes for one more item with its line pointer, like `PageGetFreeSpace`.
pub fn free_space(p: &[u8]) -> usize {
    (pd_upper(p) - pd_lower(p)).saturating_sub(ITEM_ID_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Vec<u8> {
        let mut p = vec![0u8; BLCKSZ];
        init_page(&mut p, PageKind::Data);
        p
    }

    #[test]
    fn init_gives_valid_empty_page() {
        let p = page();
        assert_eq!(verify(&p), Ok(()));
        assert_eq!(kind(&p), Some(PageKind::Data));
        assert_eq!(line_pointer_count(&p), 0);
        assert_eq!(
            free_space(&p),
            SPECIAL_OFFSET - PAGE_HEADER_SIZE - ITEM_ID_SIZE
        );
        assert!(!is_new(&p));
        assert!(is_new(&[0u8; BLCKSZ]));
    }

    #[test]
    fn every_covered_bit_flip_is_detected() {
        let p = page();
        // Put some content in the row area so flips there matter.
        let mut p2 = p.clone();
        p2[SPECIAL_OFFSET - 100..SPECIAL_OFFSET].fill(0xab);
        wr_u16(&mut p2, 14, (SPECIAL_OFFSET - 100) as u16);
        set_checksum(&mut p2);
        assert_eq!(verify(&p2), Ok(()));
        for byte in (0..BLCKSZ).step_by(7) {
            let covered = !(byte < 10
                || (pd_lower(&p2)..pd_upper(&p2)).contains(&byte)
                || (CRC_OFFSET..CRC_OFFSET + 4).contains(&byte));
            let mut q = p2.clone();
            q[byte] ^= 0x10;
            let r = verify(&q);
            if covered || (CRC_OFFSET..CRC_OFFSET + 4).contains(&byte) {
                assert!(r.is_err(), "flip at {byte} not detected");
            } else {
                assert_eq!(r, Ok(()), "flip at {byte} should not matter");
            }
        }
    }

    #[test]
    fn patched_checksum_equals_recomputed_one() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut p = page();
        wr_u16(&mut p, 14, 4000);
        for b in p[4000..SPECIAL_OFFSET].iter_mut() {
            *b = next() as u8;
        }
        set_checksum(&mut p);
        for _ in 0..500 {
            let len = (next() % 64) as usize + 1;
            let at = 4000 + (next() as usize % (SPECIAL_OFFSET - 4000 - len));
            let old = p[at..at + len].to_vec();
            for b in p[at..at + len].iter_mut() {
                *b = next() as u8;
            }
            patch_checksum(&mut p, at, &old);
            assert_eq!(verify(&p), Ok(()));
        }
        // A page whose checksum was already wrong stays wrong.
        p[5000] ^= 1;
        let old = p[6000..6010].to_vec();
        p[6000] ^= 0xff;
        patch_checksum(&mut p, 6000, &old);
        assert!(verify(&p).is_err());
    }

    #[test]
    fn lsn_and_pg_checksum_are_not_covered() {
        let mut p = page();
        p[0..10].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(verify(&p), Ok(()));
    }

    #[test]
    fn malformed_headers_are_reported() {
        let mut p = page();
        wr_u16(&mut p, 12, 9000);
        assert!(matches!(verify(&p), Err(PageError::Malformed(_))));
        let mut p = page();
        wr_u16(&mut p, SPECIAL_OFFSET, 0xdead);
        assert!(matches!(verify(&p), Err(PageError::Malformed(_))));
        assert!(matches!(verify(&[0u8; 100]), Err(PageError::Malformed(_))));
    }

    #[test]
    fn line_pointer_round_trip() {
        let mut p = page();
        wr_u16(&mut p, 12, (PAGE_HEADER_SIZE + 8) as u16);
        let lp = LinePointer {
            off: 8000,
            flags: LP_NORMAL,
            len: 123,
        };
        set_line_pointer(&mut p, 2, lp);
        assert_eq!(line_pointer(&p, 2), lp);
        assert_eq!(line_pointer_count(&p), 2);
    }
}
