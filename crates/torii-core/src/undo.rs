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
//! | 19 | 1 | format: 0 = full image, 1 = delta against the newer version |
//! | 20 | 2 | length of the image (or of the delta) |
//! | 22 | 2 | reserved, 0 |
//! | 24 | n | the row as stored before the change (header included), or its delta |
//!
//! The image's own header holds the previous writer and the previous undo pointer, so the
//! records of one row form a chain from the newest change to the oldest.
//!
//! **Deltas.** Whoever reads an undo record holds the version that the change produced (the
//! row in the page, or the image it reconstructed one step before), so a record can keep only
//! what differs: `old_len: u16`, then runs `offset: u16, len: u16, bytes` where the old image
//! differs from the newer version (zero-extended). An UPDATE of one integer column stores about
//! 40 bytes instead of the whole row ([`make_delta`], [`apply_delta`]).

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
    /// `image` is a delta against the newer version rather than the full old row.
    pub delta: bool,
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
        v.push(self.delta as u8);
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
            delta: b[19] == 1,
            image: &b[RECORD_HEADER..RECORD_HEADER + ilen],
        })
    }

    /// The old row, given the newer version that this record's change produced.
    pub fn old_row(&self, newer: &[u8]) -> Result<Vec<u8>, String> {
        if self.delta {
            apply_delta(newer, self.image)
        } else {
            Ok(self.image.to_vec())
        }
    }
}

/// Encodes `old` as a delta against `new` (see the module documentation). Runs of differing
/// bytes closer than 8 bytes apart are merged, since a run costs 4 bytes of framing.
pub fn make_delta(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(32);
    d.extend_from_slice(&(old.len() as u16).to_ne_bytes());
    let at = |i: usize| new.get(i).copied().unwrap_or(0);
    let mut i = 0;
    while i < old.len() {
        if old[i] == at(i) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1;
        let mut same = 0;
        let mut j = i + 1;
        while j < old.len() && same < 8 {
            if old[j] == at(j) {
                same += 1;
            } else {
                same = 0;
                end = j + 1;
            }
            j += 1;
        }
        d.extend_from_slice(&(start as u16).to_ne_bytes());
        d.extend_from_slice(&((end - start) as u16).to_ne_bytes());
        d.extend_from_slice(&old[start..end]);
        i = end;
    }
    d
}

/// Like [`make_delta`], but always keeps the old row's 23-byte version header whole: the newer
/// version's header (its undo pointer in particular) is only known once the record is placed.
pub fn make_row_delta(old: &[u8], new: &[u8]) -> Vec<u8> {
    let h = old.len().min(crate::row::HEADER_SIZE);
    let mut masked = new.to_vec();
    for (i, b) in masked.iter_mut().enumerate().take(h) {
        // Force a difference at every header byte.
        *b = !old[i];
    }
    make_delta(old, &masked)
}

/// Rebuilds the old row from the newer version and a delta made by [`make_delta`].
pub fn apply_delta(new: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    if delta.len() < 2 {
        return Err("undo delta without length".into());
    }
    let old_len = u16::from_ne_bytes([delta[0], delta[1]]) as usize;
    let mut old = vec![0u8; old_len];
    let n = new.len().min(old_len);
    old[..n].copy_from_slice(&new[..n]);
    let mut p = 2;
    while p < delta.len() {
        if p + 4 > delta.len() {
            return Err("truncated undo delta run".into());
        }
        let off = u16::from_ne_bytes([delta[p], delta[p + 1]]) as usize;
        let len = u16::from_ne_bytes([delta[p + 2], delta[p + 3]]) as usize;
        p += 4;
        if p + len > delta.len() || off + len > old_len {
            return Err(format!("undo delta run {off}+{len} out of bounds"));
        }
        old[off..off + len].copy_from_slice(&delta[p..p + len]);
        p += len;
    }
    Ok(old)
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
            delta: false,
            image: &img,
        };
        let e = r.encode();
        assert_eq!(e.len(), RECORD_HEADER + 40);
        assert_eq!(UndoRecord::decode(&e).unwrap(), r);
    }

    #[test]
    fn deltas_rebuild_the_old_row() {
        // A fixed-seed xorshift generator: rows of random lengths with random edits.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let old_len = (next() % 300) as usize + 1;
            let old: Vec<u8> = (0..old_len).map(|_| next() as u8).collect();
            let mut new = old.clone();
            for _ in 0..(next() % 5) {
                let i = (next() as usize) % new.len();
                new[i] ^= 1 + (next() % 255) as u8;
            }
            match next() % 3 {
                0 => new.truncate((next() as usize % old_len).max(1)),
                1 => new.extend((0..next() % 40).map(|_| next() as u8)),
                _ => {}
            }
            let d = make_delta(&old, &new);
            assert_eq!(apply_delta(&new, &d).unwrap(), old);
        }
    }

    #[test]
    fn row_deltas_do_not_depend_on_the_newer_header() {
        let old: Vec<u8> = (0..64u8).collect();
        let mut new = old.clone();
        new[40] = 0;
        let d = make_row_delta(&old, &new);
        new[12..18].copy_from_slice(&[9; 6]); // the undo pointer, stamped afterwards
        assert_eq!(apply_delta(&new, &d).unwrap(), old);
    }

    #[test]
    fn small_change_gives_small_delta() {
        let old = vec![7u8; 120];
        let mut new = old.clone();
        new[0..8].copy_from_slice(&[1; 8]);
        new[60] = 9;
        let d = make_delta(&old, &new);
        assert!(d.len() < 30, "{} bytes", d.len());
        assert_eq!(apply_delta(&new, &d).unwrap(), old);
    }

    #[test]
    fn broken_deltas_are_errors() {
        assert!(apply_delta(&[1, 2], &[]).is_err());
        assert!(apply_delta(&[1, 2], &[2, 0, 5, 0]).is_err());
        assert!(apply_delta(&[1, 2], &[2, 0, 1, 0, 5, 0, 9]).is_err());
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
            delta: false,
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
