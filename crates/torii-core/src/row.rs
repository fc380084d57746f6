//! # Rows
//!
//! A torii row is stored in a data page item and is laid out so that its first 23 bytes line up
//! with PostgreSQL's `HeapTupleHeaderData`: the executor deforms torii rows with its own heap
//! tuple code (`t_infomask2`, `t_infomask`, `t_hoff`, the null bitmap and the column data are
//! where heap has them), so there is no conversion between the page and a tuple slot, and
//! TOAST works through `heap_toast_insert_or_update`. The bytes that heap uses for xmin, xmax,
//! cmin/cmax and ctid hold torii's own version header instead:
//!
//! | offset | size | field | meaning |
//! |-------:|-----:|-------|---------|
//! | 0  | 8 | `xid`       | 64-bit full transaction id of the row's last writer; 0 = frozen (visible to all) |
//! | 8  | 4 | `cid`       | command id of that write (visibility inside the writing transaction) |
//! | 12 | 4 | `undo_blk`  | undo pointer to the previous version: block of the undo record |
//! | 16 | 2 | `undo_off`  | ... and its byte offset in that block; 0 = no previous version |
//! | 18 | 2 | `infomask2` | number of attributes (low 11 bits), as heap |
//! | 20 | 2 | `infomask`  | `HASNULL` 0x1, `HASVARWIDTH` 0x2, `HASEXTERNAL` 0x4 as heap; torii flags `DELETED` 0x1000, `MOVED` 0x2000, `LOCKED` 0x4000, `SPECULATIVE` 0x8000 |
//! | 22 | 1 | `hoff`      | offset of the column data, as heap (MAXALIGN(23 + null bitmap)) |
//! | 23 | n | null bitmap, as heap | |
//!
//! Since offset 0 is the low half of the 64-bit xid on little-endian machines, the system
//! columns `xmin` and `cmin` read through heap's code show the writer's 32-bit xid and command
//! id. torii's flags use infomask bits that only heap's visibility code interprets (never run on
//! torii rows), avoiding the `HEAP_XMIN_FROZEN` combination 0x0300 that `xmin` would decode.
//!
//! The column data area of a stored row is at least [`MIN_DATA_LEN`] bytes (zero-padded), so
//! that a row that moved away (a cold update) can keep the forwarding TID in place of its data,
//! whose old image is in undo.

/// Offset of `t_infomask2`.
pub const INFOMASK2_OFFSET: usize = 18;
/// Offset of `t_infomask`.
pub const INFOMASK_OFFSET: usize = 20;
/// Offset of `t_hoff`.
pub const HOFF_OFFSET: usize = 22;
/// `SizeofHeapTupleHeader`.
pub const HEADER_SIZE: usize = 23;
/// Minimum bytes of column data stored per row (room for a forwarding TID).
pub const MIN_DATA_LEN: usize = 8;

/// Heap's infomask bits that describe the column data; the only ones torii keeps from heap.
pub const HEAP_DATA_BITS: u16 = 0x0007;
/// The row was deleted (or moved away, with [`FLAG_MOVED`]) by `xid`.
pub const FLAG_DELETED: u16 = 0x1000;
/// The row moved to the forwarding TID stored at the start of its data area.
pub const FLAG_MOVED: u16 = 0x2000;
/// The row carries a lock taken by `xid` (the lock record is in undo).
pub const FLAG_LOCKED: u16 = 0x4000;
/// The row was inserted speculatively (INSERT ... ON CONFLICT) and not yet confirmed; its
/// undo pointer's block field holds the speculative insertion token.
pub const FLAG_SPECULATIVE: u16 = 0x8000;
/// Every torii flag.
pub const TORII_FLAGS: u16 = FLAG_DELETED | FLAG_MOVED | FLAG_LOCKED | FLAG_SPECULATIVE;
/// Bits of `infomask2` that hold the attribute count.
pub const NATTS_MASK: u16 = 0x07ff;

const _: () = assert!(HEADER_SIZE == 23 && HOFF_OFFSET == 22);
const _: () = assert!(TORII_FLAGS & 0x0300 == 0 && TORII_FLAGS & HEAP_DATA_BITS == 0);

/// Pointer to an undo record: block and byte offset. `off == 0` means "none" (no record starts
/// inside a page header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UndoPtr {
    pub blk: u32,
    pub off: u16,
}

impl UndoPtr {
    pub const NONE: UndoPtr = UndoPtr { blk: 0, off: 0 };
    pub fn is_none(self) -> bool {
        self.off == 0
    }
}

/// The version header of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowHeader {
    pub xid: u64,
    pub cid: u32,
    pub undo: UndoPtr,
    pub infomask2: u16,
    pub infomask: u16,
    pub hoff: u8,
}

impl RowHeader {
    pub fn read(row: &[u8]) -> RowHeader {
        RowHeader {
            xid: u64::from_ne_bytes(row[0..8].try_into().unwrap()),
            cid: u32::from_ne_bytes(row[8..12].try_into().unwrap()),
            undo: UndoPtr {
                blk: u32::from_ne_bytes(row[12..16].try_into().unwrap()),
                off: u16::from_ne_bytes([row[16], row[17]]),
            },
            infomask2: u16::from_ne_bytes([row[18], row[19]]),
            infomask: u16::from_ne_bytes([row[20], row[21]]),
            hoff: row[22],
        }
    }

    /// Writes the version fields and flags; the data-describing fields are left as they are.
    pub fn write(&self, row: &mut [u8]) {
        row[0..8].copy_from_slice(&self.xid.to_ne_bytes());
        row[8..12].copy_from_slice(&self.cid.to_ne_bytes());
        row[12..16].copy_from_slice(&self.undo.blk.to_ne_bytes());
        row[16..18].copy_from_slice(&self.undo.off.to_ne_bytes());
        row[18..20].copy_from_slice(&self.infomask2.to_ne_bytes());
        row[20..22].copy_from_slice(&self.infomask.to_ne_bytes());
        row[22] = self.hoff;
    }

    pub fn natts(&self) -> usize {
        (self.infomask2 & NATTS_MASK) as usize
    }
    pub fn is_deleted(&self) -> bool {
        self.infomask & FLAG_DELETED != 0
    }
    pub fn is_moved(&self) -> bool {
        self.infomask & FLAG_MOVED != 0
    }
    pub fn is_locked(&self) -> bool {
        self.infomask & FLAG_LOCKED != 0
    }
    pub fn is_speculative(&self) -> bool {
        self.infomask & FLAG_SPECULATIVE != 0
    }
}

/// Turns the bytes of a heap tuple (as formed by `heap_form_tuple`, header included) into a
/// torii row in place: stamps the version header, keeps heap's data bits and attribute count,
/// and pads the data area to [`MIN_DATA_LEN`]. Returns the row length.
pub fn stamp_heap_tuple(buf: &mut Vec<u8>, xid: u64, cid: u32) -> Result<usize, RowError> {
    let h = validate(buf)?;
    let hdr = RowHeader {
        xid,
        cid,
        undo: UndoPtr::NONE,
        infomask2: h.infomask2 & NATTS_MASK,
        infomask: h.infomask & HEAP_DATA_BITS,
        hoff: h.hoff,
    };
    hdr.write(buf);
    let min = h.hoff as usize + MIN_DATA_LEN;
    if buf.len() < min {
        buf.resize(min, 0);
    }
    Ok(buf.len())
}

/// The forwarding TID of a row that moved away (kept in place of its data, whose image is in
/// undo): block and offset.
pub fn forward_tid(row: &[u8]) -> (u32, u16) {
    let h = row[HOFF_OFFSET] as usize;
    (
        u32::from_ne_bytes(row[h..h + 4].try_into().unwrap()),
        u16::from_ne_bytes([row[h + 4], row[h + 5]]),
    )
}

/// Stores the forwarding TID of a row that moved away.
pub fn set_forward_tid(row: &mut [u8], blk: u32, off: u16) {
    let h = row[HOFF_OFFSET] as usize;
    row[h..h + 4].copy_from_slice(&blk.to_ne_bytes());
    row[h + 4..h + 6].copy_from_slice(&off.to_ne_bytes());
}

/// What is wrong with a stored row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowError {
    TooShort(usize),
    BadHoff { hoff: usize, len: usize },
}

impl core::fmt::Display for RowError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RowError::TooShort(len) => write!(f, "row of {len} bytes is shorter than its header"),
            RowError::BadHoff { hoff, len } => {
                write!(f, "row data offset {hoff} outside row of {len} bytes")
            }
        }
    }
}

/// Checks that a stored row's header is self-consistent (used by readers before handing the
/// row to heap's deforming code, and by `torii.verify`).
pub fn validate(row: &[u8]) -> Result<RowHeader, RowError> {
    if row.len() < HEADER_SIZE + 1 {
        return Err(RowError::TooShort(row.len()));
    }
    let h = RowHeader::read(row);
    let natts = h.natts();
    let bitmap = if h.infomask & 0x1 != 0 {
        natts.div_ceil(8)
    } else {
        0
    };
    let hoff = h.hoff as usize;
    if hoff < HEADER_SIZE + bitmap || hoff > row.len() || !hoff.is_multiple_of(8) {
        return Err(RowError::BadHoff {
            hoff,
            len: row.len(),
        });
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap_tuple(natts: u16, hasnull: bool, data: &[u8]) -> Vec<u8> {
        let mut t = vec![0xeeu8; 24];
        t[18..20].copy_from_slice(&(natts | 0x4000).to_ne_bytes()); // a heap HOT bit
        t[20..22].copy_from_slice(&(0x0900u16 | hasnull as u16).to_ne_bytes()); // heap xact bits
        t[22] = 24;
        t.extend_from_slice(data);
        t
    }

    #[test]
    fn stamping_keeps_data_and_replaces_heap_fields() {
        let mut t = heap_tuple(3, true, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let len = stamp_heap_tuple(&mut t, 0x1_0000_0005, 7).unwrap();
        assert_eq!(len, 33);
        let h = RowHeader::read(&t);
        assert_eq!(h.xid, 0x1_0000_0005);
        assert_eq!(h.cid, 7);
        assert!(h.undo.is_none());
        assert_eq!(h.natts(), 3);
        assert_eq!(h.infomask2, 3, "heap's HOT bits are dropped");
        assert_eq!(h.infomask, 1, "only HASNULL survives");
        assert_eq!(&t[24..], &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        // xmin as heap would read it: the low 32 bits.
        assert_eq!(u32::from_ne_bytes(t[0..4].try_into().unwrap()), 5);
    }

    #[test]
    fn short_data_is_padded() {
        let mut t = heap_tuple(1, false, &[9, 9]);
        assert_eq!(stamp_heap_tuple(&mut t, 1, 0).unwrap(), 24 + MIN_DATA_LEN);
        assert_eq!(&t[24..], &[9, 9, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn header_round_trip_and_flags() {
        let mut t = heap_tuple(2, false, &[0; 8]);
        stamp_heap_tuple(&mut t, 42, 1).unwrap();
        let mut h = RowHeader::read(&t);
        h.undo = UndoPtr { blk: 9, off: 400 };
        h.infomask |= FLAG_DELETED | FLAG_MOVED;
        h.write(&mut t);
        let r = RowHeader::read(&t);
        assert_eq!(r, h);
        assert!(r.is_deleted() && r.is_moved() && !r.is_locked());
    }

    #[test]
    fn forwarding_tid_round_trip() {
        let mut t = heap_tuple(1, false, &[1]);
        stamp_heap_tuple(&mut t, 1, 0).unwrap();
        set_forward_tid(&mut t, 77_000, 12);
        assert_eq!(forward_tid(&t), (77_000, 12));
        assert_eq!(validate(&t).unwrap().natts(), 1);
    }

    #[test]
    fn validate_rejects_bad_rows() {
        assert_eq!(validate(&[0u8; 10]), Err(RowError::TooShort(10)));
        let mut t = heap_tuple(2, false, &[0; 8]);
        t[22] = 200;
        assert!(matches!(validate(&t), Err(RowError::BadHoff { .. })));
        let mut t = heap_tuple(40, true, &[0; 8]); // bitmap needs 5 bytes, hoff 24 < 28
        t[22] = 24;
        assert!(matches!(validate(&t), Err(RowError::BadHoff { .. })));
    }
}
