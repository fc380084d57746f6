//! # Undo records
//!
//! When a row changes in place (UPDATE, DELETE, a cold update that moves the row away), its
//! previous image goes to the table's undo log and the row's header points at it
//! ([`crate::row::UndoPtr`]). Readers whose snapshot does not see the change follow the
//! pointer; writers that meet a change of an aborted transaction copy the image back
//! ("rollback on touch"). An insert writes no undo record: a row whose inserter aborted does
//! not exist.
//!
//! Undo records are items of undo pages (page kind `Undo`, same relation, chained through the
//! special space's `next` link from the metapage's undo head to its tail), addressed by block
//! and item number. A record:
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0  | 8 | xid of the transaction that made the change |
//! | 8  | 4 | its command id |
//! | 12 | 4 | TID of the changed row: block |
//! | 16 | 2 | ... and offset |
//! | 18 | 1 | kind ([`UndoKind`]) |
//! | 19 | 1 | reserved, 0 |
//! | 20 | 2 | length of the image |
//! | 22 | 2 | reserved, 0 |
//! | 24 | n | the row as stored before the change (header included) |
//!
//! The image's own header holds the previous writer and the previous undo pointer, so the
//! records of one row form a chain from the newest change to the oldest.

/// Size of the record header.
pub const RECORD_HEADER: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum UndoKind {
    /// UPDATE in place: the row kept its TID.
    Update = 1,
    /// DELETE.
    Delete = 2,
    /// Cold update: the row moved to a new TID (the old slot keeps a forwarding TID).
    Moved = 3,
    /// Insert note: transaction `xid` inserted rows into block `tid_blk` (no image). One per
    /// transaction and block, so that discard can remove the rows of an aborted insert and
    /// every xid below the resolved horizon is known resolved.
    Insert = 4,
}

impl UndoKind {
    pub fn from_u8(v: u8) -> Option<UndoKind> {
        match v {
            1 => Some(UndoKind::Update),
            2 => Some(UndoKind::Delete),
            3 => Some(UndoKind::Moved),
            4 => Some(UndoKind::Insert),
            _ => None,
        }
    }
}

/// A decoded record, borrowing its image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UndoRecord<'a> {
    pub xid: u64,
    pub cid: u32,
    pub tid_blk: u32,
    pub tid_off: u16,
    pub kind: UndoKind,
    pub image: &'a [u8],
}

impl<'a> UndoRecord<'a> {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RECORD_HEADER + self.image.len());
        v.extend_from_slice(&self.xid.to_ne_bytes());
        v.extend_from_slice(&self.cid.to_ne_bytes());
        v.extend_from_slice(&self.tid_blk.to_ne_bytes());
        v.extend_from_slice(&self.tid_off.to_ne_bytes());
        v.push(self.kind as u8);
        v.push(0);
        v.extend_from_slice(&(self.image.len() as u16).to_ne_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(self.image);
        v
    }

    /// Decodes a stored record, checking its lengths.
    pub fn decode(b: &'a [u8]) -> Result<UndoRecord<'a>, String> {
        if b.len() < RECORD_HEADER {
            return Err(format!("undo record of {} bytes", b.len()));
        }
        let kind = UndoKind::from_u8(b[18]).ok_or_else(|| format!("undo kind {}", b[18]))?;
        let ilen = u16::from_ne_bytes([b[20], b[21]]) as usize;
        if RECORD_HEADER + ilen > b.len() {
            return Err(format!(
                "undo image of {ilen} bytes in a record of {} bytes",
                b.len()
            ));
        }
        Ok(UndoRecord {
            xid: u64::from_ne_bytes(b[0..8].try_into().unwrap()),
            cid: u32::from_ne_bytes(b[8..12].try_into().unwrap()),
            tid_blk: u32::from_ne_bytes(b[12..16].try_into().unwrap()),
            tid_off: u16::from_ne_bytes([b[16], b[17]]),
            kind,
            image: &b[RECORD_HEADER..RECORD_HEADER + ilen],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let img = [7u8; 40];
        let r = UndoRecord {
            xid: 1 << 33,
            cid: 4,
            tid_blk: 12,
            tid_off: 9,
            kind: UndoKind::Delete,
            image: &img,
        };
        let e = r.encode();
        assert_eq!(e.len(), RECORD_HEADER + 40);
        assert_eq!(UndoRecord::decode(&e).unwrap(), r);
    }

    #[test]
    fn corrupt_records_are_rejected() {
        assert!(UndoRecord::decode(&[0u8; 10]).is_err());
        let mut e = UndoRecord {
            xid: 1,
            cid: 0,
            tid_blk: 1,
            tid_off: 1,
            kind: UndoKind::Update,
            image: &[1, 2, 3],
        }
        .encode();
        e[18] = 9;
        assert!(UndoRecord::decode(&e).is_err());
        e[18] = 1;
        e[20] = 200;
        assert!(UndoRecord::decode(&e).is_err());
    }
}
