//! # The metapage
//!
//! Block 0 of every torii table. Its contents follow the page header (so `pd_lower` covers them
//! and generic WAL logs them as ordinary page bytes):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 24 | 4 | magic `META_MAGIC` ("TORI") |
//! | 28 | 4 | format version `FORMAT_VERSION` |
//! | 32 | 4 | first (oldest) undo page, or `NO_BLOCK` |
//! | 36 | 4 | last (newest) undo page, or `NO_BLOCK` |
//! | 40 | 4 | head of the free-page list, or `NO_BLOCK` |
//! | 44 | 4 | pages on the free-page list |
//! | 48 | 8 | resolved horizon: every xid below it is known committed or rolled back in this table |
//! | 56 | 8 | bytes of undo pages linked since creation (8192 per page) |
//! | 64 | 8 | bytes of undo pages freed by discard since creation; the difference is the undo held now |
//! | 72 | 8 | dead line pointers waiting for index cleanup (set by undo discard, cleared by VACUUM) |

use crate::page::{self, PageKind, NO_BLOCK, PAGE_HEADER_SIZE};

pub const META_MAGIC: u32 = 0x544f_5249;
pub const FORMAT_VERSION: u32 = 1;
pub const META_SIZE: usize = 56;
/// `pd_lower` of a metapage.
pub const META_END: usize = PAGE_HEADER_SIZE + META_SIZE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub undo_head: u32,
    pub undo_tail: u32,
    pub free_head: u32,
    pub free_pages: u32,
    pub horizon: u64,
    pub undo_appended: u64,
    pub undo_discarded: u64,
    pub pending_dead: u64,
}

impl Meta {
    /// Undo pages the table holds now (linked minus freed).
    pub fn undo_pages(&self) -> u64 {
        self.undo_appended.saturating_sub(self.undo_discarded) / page::BLCKSZ as u64
    }

    /// Of `nblocks`, the pages that may hold rows: not the metapage, undo or free pages.
    pub fn data_pages(&self, nblocks: u32) -> u32 {
        (nblocks as u64).saturating_sub(1 + self.undo_pages() + self.free_pages as u64) as u32
    }

    pub fn new(horizon: u64) -> Meta {
        Meta {
            magic: META_MAGIC,
            version: FORMAT_VERSION,
            undo_head: NO_BLOCK,
            undo_tail: NO_BLOCK,
            free_head: NO_BLOCK,
            free_pages: 0,
            horizon,
            undo_appended: 0,
            undo_discarded: 0,
            pending_dead: 0,
        }
    }

    pub fn read(p: &[u8]) -> Meta {
        let u32at = |o: usize| u32::from_ne_bytes(p[o..o + 4].try_into().unwrap());
        let u64at = |o: usize| u64::from_ne_bytes(p[o..o + 8].try_into().unwrap());
        Meta {
            magic: u32at(24),
            version: u32at(28),
            undo_head: u32at(32),
            undo_tail: u32at(36),
            free_head: u32at(40),
            free_pages: u32at(44),
            horizon: u64at(48),
            undo_appended: u64at(56),
            undo_discarded: u64at(64),
            pending_dead: u64at(72),
        }
    }

    /// Writes the metapage contents and recomputes the checksum.
    pub fn write(&self, p: &mut [u8]) {
        p[24..28].copy_from_slice(&self.magic.to_ne_bytes());
        p[28..32].copy_from_slice(&self.version.to_ne_bytes());
        p[32..36].copy_from_slice(&self.undo_head.to_ne_bytes());
        p[36..40].copy_from_slice(&self.undo_tail.to_ne_bytes());
        p[40..44].copy_from_slice(&self.free_head.to_ne_bytes());
        p[44..48].copy_from_slice(&self.free_pages.to_ne_bytes());
        p[48..56].copy_from_slice(&self.horizon.to_ne_bytes());
        p[56..64].copy_from_slice(&self.undo_appended.to_ne_bytes());
        p[64..72].copy_from_slice(&self.undo_discarded.to_ne_bytes());
        p[72..80].copy_from_slice(&self.pending_dead.to_ne_bytes());
        page::set_checksum(p);
    }

    /// Formats `p` as a fresh metapage.
    pub fn init_page(p: &mut [u8], horizon: u64) {
        page::init_page(p, PageKind::Meta);
        p[12..14].copy_from_slice(&(META_END as u16).to_ne_bytes());
        Meta::new(horizon).write(p);
    }

    /// Checks what [`page::verify`] cannot: that this is a metapage of a version we read.
    pub fn check(p: &[u8]) -> Result<Meta, String> {
        if page::kind(p) != Some(PageKind::Meta) {
            return Err("block 0 is not a metapage".into());
        }
        if page::pd_lower(p) != META_END {
            return Err(format!("metapage pd_lower {}", page::pd_lower(p)));
        }
        let m = Meta::read(p);
        if m.magic != META_MAGIC {
            return Err(format!("metapage magic {:#010x}", m.magic));
        }
        if m.version != FORMAT_VERSION {
            return Err(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                m.version
            ));
        }
        Ok(m)
    }
}

const _: () = assert!(META_END == 80);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::BLCKSZ;

    #[test]
    fn metapage_round_trip() {
        let mut p = vec![0u8; BLCKSZ];
        Meta::init_page(&mut p, 77);
        assert_eq!(page::verify(&p), Ok(()));
        let m = Meta::check(&p).unwrap();
        assert_eq!(m, Meta::new(77));
        let mut m2 = m;
        m2.undo_head = 5;
        m2.undo_appended = 1 << 40;
        m2.free_head = 9;
        m2.free_pages = 3;
        m2.write(&mut p);
        assert_eq!(page::verify(&p), Ok(()));
        assert_eq!(Meta::check(&p).unwrap(), m2);
    }

    #[test]
    fn data_pages_leave_out_meta_undo_and_free_pages() {
        let mut m = Meta::new(1);
        assert_eq!(m.data_pages(1), 0);
        assert_eq!(m.data_pages(10), 9);
        m.undo_appended = 5 * BLCKSZ as u64;
        m.undo_discarded = 2 * BLCKSZ as u64;
        m.free_pages = 2;
        assert_eq!(m.undo_pages(), 3);
        assert_eq!(m.data_pages(10), 4);
        // Counters ahead of the file (a truncation racing the read) never go below zero.
        assert_eq!(m.data_pages(3), 0);
    }

    #[test]
    fn data_page_is_not_a_metapage() {
        let mut p = vec![0u8; BLCKSZ];
        page::init_page(&mut p, PageKind::Data);
        assert!(Meta::check(&p).is_err());
    }
}
