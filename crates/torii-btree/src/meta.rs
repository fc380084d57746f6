//! The metapage, block 0 of every torii_btree index.
//!
//! Stored right after the 24-byte page header; `pd_lower` points past it so that the checksum
//! and generic WAL cover it (special space kind `BtreeMeta`):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 24 | 4 | magic [`META_MAGIC`] (`"TBTR"`) |
//! | 28 | 4 | format version [`META_VERSION`] |
//! | 32 | 4 | root block, or `u32::MAX` for an empty index |
//! | 36 | 4 | level of the root (leaves are level 0) |

use torii_core::page::{self, PageKind, NO_BLOCK, PAGE_HEADER_SIZE};

pub const META_MAGIC: u32 = 0x5442_5452;
pub const META_VERSION: u32 = 1;
pub const META_SIZE: usize = 16;
pub const META_BLOCK: u32 = 0;

const _: () = assert!(PAGE_HEADER_SIZE + META_SIZE <= page::SPECIAL_OFFSET);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub root: u32,
    pub root_level: u32,
}

fn rd(p: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes(p[o..o + 4].try_into().unwrap())
}
fn wr(p: &mut [u8], o: usize, v: u32) {
    p[o..o + 4].copy_from_slice(&v.to_ne_bytes());
}

impl Meta {
    /// An empty index: no root yet.
    pub fn empty() -> Meta {
        Meta {
            root: NO_BLOCK,
            root_level: 0,
        }
    }

    /// Formats `p` as a metapage holding `self` (checksum stamped).
    pub fn init_page(&self, p: &mut [u8]) {
        page::init_page(p, PageKind::BtreeMeta);
        p[12..14].copy_from_slice(&((PAGE_HEADER_SIZE + META_SIZE) as u16).to_ne_bytes());
        wr(p, 24, META_MAGIC);
        wr(p, 28, META_VERSION);
        self.write(p);
        page::set_checksum(p);
    }

    /// Writes the root fields (the caller stamps the checksum).
    pub fn write(&self, p: &mut [u8]) {
        wr(p, 32, self.root);
        wr(p, 36, self.root_level);
    }

    pub fn read(p: &[u8]) -> Meta {
        Meta {
            root: rd(p, 32),
            root_level: rd(p, 36),
        }
    }

    /// Checks a (checksum-verified) page is a torii_btree metapage of a known version.
    pub fn check(p: &[u8]) -> Result<Meta, String> {
        if page::kind(p) != Some(PageKind::BtreeMeta) {
            return Err(format!(
                "block 0 is not a torii_btree metapage (kind {:?})",
                page::kind(p)
            ));
        }
        if page::pd_lower(p) < PAGE_HEADER_SIZE + META_SIZE {
            return Err("metapage pd_lower too small".into());
        }
        if rd(p, 24) != META_MAGIC {
            return Err(format!("bad metapage magic {:#x}", rd(p, 24)));
        }
        if rd(p, 28) != META_VERSION {
            return Err(format!("unsupported torii_btree version {}", rd(p, 28)));
        }
        Ok(Meta::read(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut p = vec![0u8; page::BLCKSZ];
        let m = Meta {
            root: 7,
            root_level: 2,
        };
        m.init_page(&mut p);
        assert_eq!(page::verify(&p), Ok(()));
        assert_eq!(Meta::check(&p), Ok(m));
        let mut q = p.clone();
        q[33] ^= 1;
        assert!(page::verify(&q).is_err());
        let mut d = vec![0u8; page::BLCKSZ];
        page::init_page(&mut d, PageKind::BtreeLeaf);
        assert!(Meta::check(&d).is_err());
    }
}
