//! Index tuples: PostgreSQL's `IndexTupleData` plus torii_btree's posting items and pivots.
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 2 | `t_tid.ip_blkid.bi_hi` (heap block high half; posting: TID count high half; pivot: child high half) |
//! | 2 | 2 | `t_tid.ip_blkid.bi_lo` |
//! | 4 | 2 | `t_tid.ip_posid` (heap offset; posting: offset of the posting list) |
//! | 6 | 2 | `t_info`: size (13 bits), AM bit (posting), varwidth, has-nulls |
//! | 8 | … | null bitmap (if has-nulls), attributes (PostgreSQL's encoding) |
//! | `ip_posid` | … | posting items only: TIDs as LEB128 varints (first absolute, then deltas) |

/// `sizeof(IndexTupleData)`.
pub const HEADER_SIZE: usize = 8;
/// `INDEX_SIZE_MASK`.
pub const SIZE_MASK: u16 = 0x1FFF;
/// `INDEX_AM_RESERVED_BIT`: set on posting items.
pub const POSTING_BIT: u16 = 0x2000;
/// `INDEX_NULL_MASK`.
pub const NULL_BIT: u16 = 0x8000;
/// Posting items stop growing at this size (bounds the WAL written per insertion, which
/// rewrites the item); a key with more TIDs gets further posting items.
pub const POSTING_CAP: usize = 512;

/// Rounds up to 8 (`MAXALIGN` on 64-bit platforms).
pub const fn maxalign(n: usize) -> usize {
    (n + 7) & !7
}

const _: () = assert!(HEADER_SIZE == 8);
const _: () = assert!(maxalign(13) == 16 && maxalign(16) == 16);

/// A heap TID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tid {
    pub blk: u32,
    pub off: u16,
}

impl Tid {
    pub fn as_u64(self) -> u64 {
        ((self.blk as u64) << 16) | self.off as u64
    }
    pub fn from_u64(v: u64) -> Tid {
        Tid {
            blk: (v >> 16) as u32,
            off: (v & 0xffff) as u16,
        }
    }
}

fn rd16(t: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([t[o], t[o + 1]])
}
fn wr16(t: &mut [u8], o: usize, v: u16) {
    t[o..o + 2].copy_from_slice(&v.to_ne_bytes());
}

/// `t_info`.
pub fn info(t: &[u8]) -> u16 {
    rd16(t, 6)
}
/// The size recorded in `t_info` (whole item, posting list included).
pub fn size(t: &[u8]) -> usize {
    (info(t) & SIZE_MASK) as usize
}
pub fn set_size(t: &mut [u8], n: usize) {
    assert!(n <= SIZE_MASK as usize, "index tuple of {n} bytes");
    let i = (info(t) & !SIZE_MASK) | n as u16;
    wr16(t, 6, i);
}
pub fn is_posting(t: &[u8]) -> bool {
    info(t) & POSTING_BIT != 0
}
/// A "minus infinity" pivot: no attributes.
pub fn is_minus_inf(t: &[u8]) -> bool {
    size(t) == HEADER_SIZE
}
/// The block field of `t_tid` (heap block, child block of a pivot, TID count of a posting item).
pub fn tid_block(t: &[u8]) -> u32 {
    ((rd16(t, 0) as u32) << 16) | rd16(t, 2) as u32
}
pub fn set_tid_block(t: &mut [u8], b: u32) {
    wr16(t, 0, (b >> 16) as u16);
    wr16(t, 2, b as u16);
}
pub fn tid_offset(t: &[u8]) -> u16 {
    rd16(t, 4)
}
pub fn set_tid(t: &mut [u8], tid: Tid) {
    set_tid_block(t, tid.blk);
    wr16(t, 4, tid.off);
}
/// The heap TID of a plain leaf item.
pub fn heap_tid(t: &[u8]) -> Tid {
    Tid {
        blk: tid_block(t),
        off: tid_offset(t),
    }
}
/// Child block of a pivot.
pub fn child(t: &[u8]) -> u32 {
    tid_block(t)
}
/// Number of heap TIDs an item stands for.
pub fn tid_count(t: &[u8]) -> usize {
    if is_posting(t) {
        tid_block(t) as usize
    } else {
        1
    }
}

/// Length of the key part of an item (the index tuple without posting list).
pub fn key_len(t: &[u8]) -> usize {
    if is_posting(t) {
        tid_offset(t) as usize
    } else {
        size(t)
    }
}

/// The key part of an item as a stand-alone plain index tuple (size field and AM bit fixed,
/// `t_tid` = `tid`).
pub fn plain_with_tid(t: &[u8], tid: Tid) -> Vec<u8> {
    let n = key_len(t);
    let mut v = t[..n].to_vec();
    let i = (info(&v) & !(SIZE_MASK | POSTING_BIT)) | n as u16;
    wr16(&mut v, 6, i);
    set_tid(&mut v, tid);
    v
}

/// The heap TIDs of a leaf item, in increasing order.
pub fn tids(t: &[u8]) -> Vec<Tid> {
    if !is_posting(t) {
        return vec![heap_tid(t)];
    }
    let n = tid_block(t) as usize;
    let mut out = Vec::with_capacity(n);
    decode_posting(&t[tid_offset(t) as usize..size(t)], n, &mut out);
    out
}

/// Appends LEB128 varint `v`.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Reads a LEB128 varint at `*pos`.
pub fn get_varint(p: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = p[*pos];
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// Encodes strictly increasing TIDs.
pub fn encode_posting(tids: &[Tid]) -> Vec<u8> {
    let mut out = Vec::with_capacity(tids.len() * 2);
    let mut prev = 0u64;
    for (i, t) in tids.iter().enumerate() {
        let v = t.as_u64();
        debug_assert!(i == 0 || v > prev, "posting TIDs must increase");
        put_varint(&mut out, if i == 0 { v } else { v - prev });
        prev = v;
    }
    out
}

/// Encoded size of strictly increasing TIDs.
pub fn posting_len(tids: &[Tid]) -> usize {
    let mut n = 0;
    let mut prev = 0u64;
    for (i, t) in tids.iter().enumerate() {
        let v = t.as_u64();
        let d = if i == 0 { v } else { v - prev };
        n += varint_len(d);
        prev = v;
    }
    n
}

pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Decodes `n` TIDs.
pub fn decode_posting(p: &[u8], n: usize, out: &mut Vec<Tid>) {
    let mut pos = 0;
    let mut prev = 0u64;
    for i in 0..n {
        let d = get_varint(p, &mut pos);
        let v = if i == 0 { d } else { prev + d };
        out.push(Tid::from_u64(v));
        prev = v;
    }
}

/// Size of the leaf item `leaf_item` would build.
pub fn leaf_item_len(key: &[u8], tids: &[Tid]) -> usize {
    let kl = key_len(key);
    if tids.len() == 1 {
        kl
    } else {
        maxalign(maxalign(kl) + posting_len(tids))
    }
}

/// Builds a leaf item from an item's key part and sorted, distinct TIDs (at least one): plain
/// for one TID, posting otherwise.
pub fn leaf_item(key: &[u8], tids: &[Tid]) -> Vec<u8> {
    assert!(!tids.is_empty());
    if tids.len() == 1 {
        return plain_with_tid(key, tids[0]);
    }
    let kl = maxalign(key_len(key));
    let mut v = key[..key_len(key)].to_vec();
    v.resize(kl, 0);
    v.extend_from_slice(&encode_posting(tids));
    v.resize(maxalign(v.len()), 0);
    let total = v.len();
    let i = (info(&v) & !SIZE_MASK) | POSTING_BIT | total as u16;
    wr16(&mut v, 6, i);
    set_tid_block(&mut v, tids.len() as u32);
    wr16(&mut v, 4, kl as u16);
    v
}

/// A pivot with the key part of `key` (already truncated to key columns by the caller) and
/// downlink `child`.
pub fn pivot(key: &[u8], child: u32) -> Vec<u8> {
    let mut v = plain_with_tid(key, Tid { blk: child, off: 0 });
    set_tid_block(&mut v, child);
    v
}

/// The "minus infinity" pivot pointing to `child`.
pub fn minus_inf(child: u32) -> Vec<u8> {
    let mut v = vec![0u8; HEADER_SIZE];
    wr16(&mut v, 6, HEADER_SIZE as u16);
    set_tid_block(&mut v, child);
    v
}

/// Merges `add` into sorted `tids` (dropping duplicates); returns false if nothing was new.
pub fn merge_tids(tids: &mut Vec<Tid>, add: &[Tid]) -> bool {
    let before = tids.len();
    tids.extend_from_slice(add);
    tids.sort_unstable();
    tids.dedup();
    tids.len() != before
}

#[cfg(test)]
pub(crate) use tests::int_key;

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake index tuple of one int4 attribute (size 16, like index_form_tuple makes).
    pub fn int_key(v: i32) -> Vec<u8> {
        let mut t = vec![0u8; 16];
        wr16(&mut t, 6, 16);
        t[8..12].copy_from_slice(&v.to_ne_bytes());
        t
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, 1 << 20, u64::MAX >> 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            let mut pos = 0;
            assert_eq!(get_varint(&b, &mut pos), v);
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn posting_round_trip() {
        let tids: Vec<Tid> = (0..100)
            .map(|i| Tid {
                blk: i / 7 + 1000,
                off: (i % 7 + 1) as u16,
            })
            .collect();
        let k = int_key(42);
        let item = leaf_item(&k, &tids);
        assert!(is_posting(&item));
        assert_eq!(item.len(), size(&item));
        assert_eq!(item.len(), leaf_item_len(&k, &tids));
        assert_eq!(item.len() % 8, 0);
        assert_eq!(tid_count(&item), 100);
        assert_eq!(super::tids(&item), tids);
        assert_eq!(key_len(&item), 16);
        // 16-byte key + about 1-2 bytes per TID, instead of 100 * 20 bytes.
        assert!(item.len() < 16 + 100 * 3, "{}", item.len());
        let plain = plain_with_tid(&item, tids[5]);
        assert!(!is_posting(&plain));
        assert_eq!(plain.len(), 16);
        assert_eq!(heap_tid(&plain), tids[5]);
        assert_eq!(&plain[8..12], &42i32.to_ne_bytes());
        let one = leaf_item(&item, &tids[..1]);
        assert_eq!(one, plain_with_tid(&k, tids[0]));
    }

    #[test]
    fn pivots() {
        let k = int_key(7);
        let p = pivot(&k, 123456);
        assert_eq!(child(&p), 123456);
        assert!(!is_minus_inf(&p));
        let m = minus_inf(99);
        assert!(is_minus_inf(&m));
        assert_eq!(child(&m), 99);
    }

    #[test]
    fn merge() {
        let mut v = vec![Tid { blk: 1, off: 2 }, Tid { blk: 3, off: 1 }];
        assert!(merge_tids(&mut v, &[Tid { blk: 2, off: 9 }]));
        assert!(!merge_tids(&mut v, &[Tid { blk: 2, off: 9 }]));
        assert_eq!(v.len(), 3);
        assert!(v.windows(2).all(|w| w[0] < w[1]));
    }
}
