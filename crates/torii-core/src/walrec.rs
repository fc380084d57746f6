//! # Row-level WAL records
//!
//! torii's own WAL resource manager logs each row change as one small record instead of a
//! generic-WAL diff of whole pages. This module is the record format and, for each block a
//! record touches, the function that applies it to that block's page. The primary builds a
//! [`Rec`], applies it to copies of its locked pages with these functions, installs the copies
//! and logs the encoded record; redo decodes the record and applies the same functions to
//! each page that needs it. A block restored from a full-page image is skipped, so every
//! function below depends only on its own page and the record, never on another block.
//!
//! ## Blocks
//!
//! | id | page | present for |
//! |---:|------|-------------|
//! | 0 | the data page (the row) | every record |
//! | 1 | the undo page that takes the undo record or insert note | `Change`; `Insert` with a note |
//! | 2 | the old undo tail, linked to the new undo page | when a new undo page follows a tail |
//! | 3 | the metapage | when a new undo page is linked in; `Kill` |
//!
//! ## Main data (native byte order)
//!
//! `Insert` (info [`INFO_INSERT`]): `flags u8, xid u64, cid u32, first_off u16, nrows u16`,
//! `[undo_off u16]` with a note, `[free_next u32]`, then per row `len u16` and the row from
//! byte 18 on (its xid, command id and empty undo pointer are the record's), or whole rows with
//! [`F_RAW_ROWS`]. The insert note itself is not logged: it is `(xid, block, Insert)`.
//!
//! `Change` (info [`INFO_CHANGE`]): `flags u8, off u16, kind u8, xid u64, cid u32, undo_off u16`,
//! `[free_next u32]`, `undo_len u16, undo delta`, `new_len u16, new delta`, `[18 header bytes]`
//! with [`F_RAW_HEADER`]. The undo record is `(xid, cid, block 0, off, kind, undo delta)`; the
//! new row is the old row (read from the page) with the new delta applied and the header's
//! writer and undo pointer set to `(xid, cid, (block 1, undo_off))`. A redo that finds the data
//! page restored from a full-page image still has every byte of the undo record.
//!
//! `Overwrite` (info [`INFO_OVERWRITE`]): `off u16, delta` (the new row against the old).
//! `Kill` (info [`INFO_KILL`]): `off u16`; the metapage counts one more dead pointer.
//! `Conflict` (info [`INFO_CONFLICT`]), no blocks: `xid u64, spc u32, db u32, rel u32`, logged
//! before undo discard removes versions of transactions up to `xid`: a standby cancels the
//! queries whose snapshots may still need them, as heap's pruning records make it do.

use crate::meta::Meta;
use crate::page::{self, PageKind, BLCKSZ, MAX_ROWS_PER_PAGE, NO_BLOCK};
use crate::pageop::{self, OpError};
use crate::undo::{apply_delta, make_delta, UndoKind, UndoRecord};
use core::fmt;

pub const INFO_INSERT: u8 = 0x10;
pub const INFO_CHANGE: u8 = 0x20;
pub const INFO_OVERWRITE: u8 = 0x30;
pub const INFO_KILL: u8 = 0x40;
pub const INFO_CONFLICT: u8 = 0x50;
/// The bits of `xl_info` a resource manager owns (`XLR_RMGR_INFO_MASK`).
pub const INFO_MASK: u8 = 0xF0;

/// Insert: the data page is formatted by the record (no full-page image needed).
pub const F_INIT: u8 = 0x01;
/// Insert: an insert note goes to undo (block 1).
pub const F_NOTE: u8 = 0x02;
/// A new undo page (block 1) is linked in; the metapage is block 3.
pub const F_NEW_UNDO: u8 = 0x04;
/// ... and an old tail (block 2) points at it.
pub const F_HAD_TAIL: u8 = 0x08;
/// ... and the new page came off the free-page list (`free_next` follows).
pub const F_FREE_POP: u8 = 0x10;
/// Insert: rows are logged whole (a header that is not the record's, e.g. a speculative token).
pub const F_RAW_ROWS: u8 = 0x20;
/// Change: the new row's first 18 header bytes are logged (they are not the derived ones).
pub const F_RAW_HEADER: u8 = 0x40;

pub const BLK_DATA: u8 = 0;
pub const BLK_UNDO: u8 = 1;
pub const BLK_TAIL: u8 = 2;
pub const BLK_META: u8 = 3;

/// Bytes of a row header that hold the writer and the undo pointer.
const VERSION_BYTES: usize = 18;

/// A new undo page linked in by a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UndoLink {
    /// An old tail exists (block 2) and gets the new page as its next.
    pub had_tail: bool,
    /// The page was the head of the free-page list, whose next this is.
    pub free_next: Option<u32>,
}

/// Where an undo record or note goes: its item number on block 1, and the link when block 1
/// is a new page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UndoTarget {
    pub undo_off: u16,
    pub link: Option<UndoLink>,
}

/// A decoded record; borrowed parts point into the record's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rec<'a> {
    Insert {
        init: bool,
        xid: u64,
        cid: u32,
        first_off: u16,
        /// Whole rows (the primary's own) or rows from byte 18 on (decoded).
        rows: Rows<'a>,
        note: Option<UndoTarget>,
    },
    Change {
        off: u16,
        kind: UndoKind,
        xid: u64,
        cid: u32,
        target: UndoTarget,
        undo_delta: &'a [u8],
        new_delta: &'a [u8],
        raw_header: Option<&'a [u8]>,
    },
    Overwrite {
        off: u16,
        delta: &'a [u8],
    },
    Kill {
        off: u16,
    },
    Conflict {
        xid: u64,
        /// The relation's `RelFileNode`: tablespace, database, relation.
        node: [u32; 3],
    },
}

/// The rows of an insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rows<'a> {
    /// Whole rows.
    Whole(Vec<&'a [u8]>),
    /// Rows whose first 18 bytes are `(xid, cid, no undo pointer)`: stored from byte 18 on.
    Tails(Vec<&'a [u8]>),
}

/// A record that does not decode, or does not apply to the page it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecError {
    Truncated(&'static str),
    UnknownInfo(u8),
    BadKind(u8),
    Op(OpError),
    /// Redo put an item at another offset than the primary did.
    Diverged {
        want: u16,
        got: u16,
    },
    Delta(String),
}

impl fmt::Display for RecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecError::Truncated(what) => write!(f, "record truncated in {what}"),
            RecError::UnknownInfo(i) => write!(f, "unknown record type {i:#04x}"),
            RecError::BadKind(k) => write!(f, "unknown undo kind {k}"),
            RecError::Op(e) => write!(f, "{e}"),
            RecError::Diverged { want, got } => {
                write!(
                    f,
                    "item placed at offset {got}, the primary placed it at {want}"
                )
            }
            RecError::Delta(e) => write!(f, "{e}"),
        }
    }
}

impl From<OpError> for RecError {
    fn from(e: OpError) -> Self {
        RecError::Op(e)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecError> {
        if self.p + n > self.b.len() {
            return Err(RecError::Truncated(what));
        }
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, RecError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, RecError> {
        Ok(u16::from_ne_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, RecError> {
        Ok(u32::from_ne_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, RecError> {
        Ok(u64::from_ne_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn sized(&mut self, what: &'static str) -> Result<&'a [u8], RecError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
}

fn link_flags(link: Option<UndoLink>) -> u8 {
    match link {
        None => 0,
        Some(l) => {
            F_NEW_UNDO
                | if l.had_tail { F_HAD_TAIL } else { 0 }
                | if l.free_next.is_some() { F_FREE_POP } else { 0 }
        }
    }
}

fn read_link(flags: u8, r: &mut Reader) -> Result<Option<UndoLink>, RecError> {
    if flags & F_NEW_UNDO == 0 {
        return Ok(None);
    }
    let free_next = if flags & F_FREE_POP != 0 {
        Some(r.u32("free_next")?)
    } else {
        None
    };
    Ok(Some(UndoLink {
        had_tail: flags & F_HAD_TAIL != 0,
        free_next,
    }))
}

fn row_has_record_header(row: &[u8], xid: u64, cid: u32) -> bool {
    row.len() >= VERSION_BYTES && row[..VERSION_BYTES] == version_bytes(xid, cid, 0, 0)
}

fn version_bytes(xid: u64, cid: u32, undo_blk: u32, undo_off: u16) -> [u8; VERSION_BYTES] {
    let mut h = [0u8; VERSION_BYTES];
    h[0..8].copy_from_slice(&xid.to_ne_bytes());
    h[8..12].copy_from_slice(&cid.to_ne_bytes());
    h[12..16].copy_from_slice(&undo_blk.to_ne_bytes());
    h[16..18].copy_from_slice(&undo_off.to_ne_bytes());
    h
}

impl<'a> Rec<'a> {
    /// The `xl_info` bits of the record.
    pub fn info(&self) -> u8 {
        match self {
            Rec::Insert { .. } => INFO_INSERT,
            Rec::Change { .. } => INFO_CHANGE,
            Rec::Overwrite { .. } => INFO_OVERWRITE,
            Rec::Kill { .. } => INFO_KILL,
            Rec::Conflict { .. } => INFO_CONFLICT,
        }
    }

    /// Which of blocks 1–3 the record registers besides the data page.
    pub fn blocks(&self) -> (bool, bool, bool) {
        let target = match self {
            Rec::Insert { note, .. } => *note,
            Rec::Change { target, .. } => Some(*target),
            Rec::Overwrite { .. } | Rec::Conflict { .. } => None,
            Rec::Kill { .. } => return (false, false, true),
        };
        match target {
            None => (false, false, false),
            Some(t) => match t.link {
                None => (true, false, false),
                Some(l) => (true, l.had_tail, true),
            },
        }
    }

    /// Encodes the main data. An insert's rows whose version bytes are the record's are logged
    /// from byte 18 on.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        match self {
            Rec::Insert {
                init,
                xid,
                cid,
                first_off,
                rows,
                note,
            } => {
                let whole: &Vec<&[u8]> = match rows {
                    Rows::Whole(w) => w,
                    Rows::Tails(_) => panic!("only whole rows are encoded"),
                };
                let raw = !whole.iter().all(|r| row_has_record_header(r, *xid, *cid));
                let mut flags = if *init { F_INIT } else { 0 } | if raw { F_RAW_ROWS } else { 0 };
                if let Some(t) = note {
                    flags |= F_NOTE | link_flags(t.link);
                }
                v.push(flags);
                v.extend_from_slice(&xid.to_ne_bytes());
                v.extend_from_slice(&cid.to_ne_bytes());
                v.extend_from_slice(&first_off.to_ne_bytes());
                v.extend_from_slice(&(whole.len() as u16).to_ne_bytes());
                if let Some(t) = note {
                    v.extend_from_slice(&t.undo_off.to_ne_bytes());
                    if let Some(n) = t.link.and_then(|l| l.free_next) {
                        v.extend_from_slice(&n.to_ne_bytes());
                    }
                }
                for r in whole {
                    let part = if raw { r } else { &r[VERSION_BYTES..] };
                    v.extend_from_slice(&(part.len() as u16).to_ne_bytes());
                    v.extend_from_slice(part);
                }
            }
            Rec::Change {
                off,
                kind,
                xid,
                cid,
                target,
                undo_delta,
                new_delta,
                raw_header,
            } => {
                let flags = link_flags(target.link)
                    | if raw_header.is_some() {
                        F_RAW_HEADER
                    } else {
                        0
                    };
                v.push(flags);
                v.extend_from_slice(&off.to_ne_bytes());
                v.push(*kind as u8);
                v.extend_from_slice(&xid.to_ne_bytes());
                v.extend_from_slice(&cid.to_ne_bytes());
                v.extend_from_slice(&target.undo_off.to_ne_bytes());
                if let Some(n) = target.link.and_then(|l| l.free_next) {
                    v.extend_from_slice(&n.to_ne_bytes());
                }
                v.extend_from_slice(&(undo_delta.len() as u16).to_ne_bytes());
                v.extend_from_slice(undo_delta);
                v.extend_from_slice(&(new_delta.len() as u16).to_ne_bytes());
                v.extend_from_slice(new_delta);
                if let Some(h) = raw_header {
                    v.extend_from_slice(h);
                }
            }
            Rec::Overwrite { off, delta } => {
                v.extend_from_slice(&off.to_ne_bytes());
                v.extend_from_slice(delta);
            }
            Rec::Kill { off } => v.extend_from_slice(&off.to_ne_bytes()),
            Rec::Conflict { xid, node } => {
                v.extend_from_slice(&xid.to_ne_bytes());
                for n in node {
                    v.extend_from_slice(&n.to_ne_bytes());
                }
            }
        }
        v
    }

    /// Decodes the main data of a record with `xl_info` bits `info`.
    pub fn decode(info: u8, b: &'a [u8]) -> Result<Rec<'a>, RecError> {
        let mut r = Reader { b, p: 0 };
        match info & INFO_MASK {
            INFO_INSERT => {
                let flags = r.u8("flags")?;
                let xid = r.u64("xid")?;
                let cid = r.u32("cid")?;
                let first_off = r.u16("first_off")?;
                let n = r.u16("nrows")? as usize;
                let note = if flags & F_NOTE != 0 {
                    let undo_off = r.u16("undo_off")?;
                    Some(UndoTarget {
                        undo_off,
                        link: read_link(flags, &mut r)?,
                    })
                } else {
                    None
                };
                let mut rows = Vec::with_capacity(n);
                for _ in 0..n {
                    rows.push(r.sized("row")?);
                }
                Ok(Rec::Insert {
                    init: flags & F_INIT != 0,
                    xid,
                    cid,
                    first_off,
                    rows: if flags & F_RAW_ROWS != 0 {
                        Rows::Whole(rows)
                    } else {
                        Rows::Tails(rows)
                    },
                    note,
                })
            }
            INFO_CHANGE => {
                let flags = r.u8("flags")?;
                let off = r.u16("off")?;
                let k = r.u8("kind")?;
                let kind = UndoKind::from_u8(k).ok_or(RecError::BadKind(k))?;
                let xid = r.u64("xid")?;
                let cid = r.u32("cid")?;
                let undo_off = r.u16("undo_off")?;
                let link = read_link(flags, &mut r)?;
                let undo_delta = r.sized("undo delta")?;
                let new_delta = r.sized("new delta")?;
                let raw_header = if flags & F_RAW_HEADER != 0 {
                    Some(r.take(VERSION_BYTES, "raw header")?)
                } else {
                    None
                };
                Ok(Rec::Change {
                    off,
                    kind,
                    xid,
                    cid,
                    target: UndoTarget { undo_off, link },
                    undo_delta,
                    new_delta,
                    raw_header,
                })
            }
            INFO_OVERWRITE => {
                let off = r.u16("off")?;
                Ok(Rec::Overwrite {
                    off,
                    delta: &b[r.p..],
                })
            }
            INFO_KILL => Ok(Rec::Kill { off: r.u16("off")? }),
            INFO_CONFLICT => Ok(Rec::Conflict {
                xid: r.u64("xid")?,
                node: [r.u32("spc")?, r.u32("db")?, r.u32("rel")?],
            }),
            other => Err(RecError::UnknownInfo(other)),
        }
    }

    /// The change record for row `off`: `old` is the row on the page, `new` the row that
    /// replaces it (its version bytes normally `(xid, cid, (undo_blk, target.undo_off))`),
    /// `undo_delta` the undo record's image (a delta of `old` against `new`).
    #[allow(clippy::too_many_arguments)]
    pub fn change(
        off: u16,
        kind: UndoKind,
        xid: u64,
        cid: u32,
        target: UndoTarget,
        undo_blk: u32,
        old: &[u8],
        new: &'a [u8],
        undo_delta: &'a [u8],
        new_delta_buf: &'a mut Vec<u8>,
    ) -> Rec<'a> {
        let derived = version_bytes(xid, cid, undo_blk, target.undo_off);
        let raw_header = (new[..VERSION_BYTES] != derived).then(|| &new[..VERSION_BYTES]);
        // The delta ignores the version bytes: redo derives them (or takes the raw ones).
        let mut masked = new.to_vec();
        masked[..VERSION_BYTES].copy_from_slice(&old[..VERSION_BYTES]);
        *new_delta_buf = make_delta(&masked, old);
        let new_delta: &'a Vec<u8> = new_delta_buf;
        Rec::Change {
            off,
            kind,
            xid,
            cid,
            target,
            undo_delta,
            new_delta,
            raw_header,
        }
    }

    /// The overwrite record that turns row `old` into `new`.
    pub fn overwrite(off: u16, old: &[u8], new: &[u8], buf: &'a mut Vec<u8>) -> Rec<'a> {
        *buf = make_delta(new, old);
        let delta: &'a Vec<u8> = buf;
        Rec::Overwrite { off, delta }
    }
}

/// Applies the record to the data page (block 0), whose undo page (block 1) is `undo_blk`.
/// Returns the offsets of inserted rows. Stamps the page's checksum. All or nothing: on an
/// error the page is as it was.
pub fn apply_data(rec: &Rec, undo_blk: u32, p: &mut [u8]) -> Result<Vec<u16>, RecError> {
    let mut offs = Vec::new();
    match rec {
        Rec::Insert {
            init,
            xid,
            cid,
            first_off,
            rows,
            ..
        } => {
            let built: Vec<Vec<u8>>;
            let items: Vec<&[u8]> = match rows {
                Rows::Whole(w) => w.clone(),
                Rows::Tails(t) => {
                    built = t
                        .iter()
                        .map(|r| {
                            let mut b = Vec::with_capacity(VERSION_BYTES + r.len());
                            b.extend_from_slice(&version_bytes(*xid, *cid, 0, 0));
                            b.extend_from_slice(r);
                            b
                        })
                        .collect();
                    built.iter().map(|b| &b[..]).collect()
                }
            };
            if !*init && pageop::next_offset(p) != *first_off {
                return Err(RecError::Diverged {
                    want: *first_off,
                    got: pageop::next_offset(p),
                });
            }
            if *init {
                // Formatted on a scratch page first, so that rows that do not fit leave the page
                // as it was.
                let mut fresh = vec![0u8; BLCKSZ];
                page::init_page(&mut fresh, PageKind::Data);
                offs = pageop::add_items(&mut fresh, &items, Some(MAX_ROWS_PER_PAGE))?;
                p.copy_from_slice(&fresh);
            } else {
                offs = pageop::add_items(p, &items, Some(MAX_ROWS_PER_PAGE))?;
            }
        }
        Rec::Change {
            off,
            xid,
            cid,
            target,
            new_delta,
            raw_header,
            ..
        } => {
            let old = pageop::item(p, *off)?.to_vec();
            let mut new = apply_delta(&old, new_delta).map_err(RecError::Delta)?;
            if new.len() < VERSION_BYTES {
                return Err(RecError::Delta(format!("new row of {} bytes", new.len())));
            }
            match raw_header {
                Some(h) => new[..VERSION_BYTES].copy_from_slice(h),
                None => new[..VERSION_BYTES].copy_from_slice(&version_bytes(
                    *xid,
                    *cid,
                    undo_blk,
                    target.undo_off,
                )),
            }
            return overwrite_and_stamp(p, *off, &old, &new).map(|_| offs);
        }
        Rec::Overwrite { off, delta } => {
            let old = pageop::item(p, *off)?.to_vec();
            let new = apply_delta(&old, delta).map_err(RecError::Delta)?;
            return overwrite_and_stamp(p, *off, &old, &new).map(|_| offs);
        }
        Rec::Kill { off } => pageop::kill_item(p, *off)?,
        Rec::Conflict { .. } => return Ok(offs),
    }
    page::set_checksum(p);
    Ok(offs)
}

/// Writes `new` over item `off` (now `old`) and stamps the checksum: patched for the item's
/// bytes when the item keeps its place and length, recomputed when it grows.
fn overwrite_and_stamp(p: &mut [u8], off: u16, old: &[u8], new: &[u8]) -> Result<(), RecError> {
    let lp = page::line_pointer(p, off as usize);
    pageop::overwrite_item(p, off, new)?;
    if new.len() <= old.len() {
        page::patch_checksum(p, lp.off, old);
    } else {
        page::set_checksum(p);
    }
    Ok(())
}

/// The undo record or insert note a record appends to block 1, given the data page's number.
pub fn undo_item(rec: &Rec, data_blk: u32) -> Option<Vec<u8>> {
    match rec {
        Rec::Insert {
            xid, note: Some(_), ..
        } => Some(
            UndoRecord {
                xid: *xid,
                cid: 0,
                tid_blk: data_blk,
                tid_off: 0,
                kind: UndoKind::Insert,
                delta: false,
                image: &[],
            }
            .encode(),
        ),
        Rec::Change {
            off,
            kind,
            xid,
            cid,
            undo_delta,
            ..
        } => Some(
            UndoRecord {
                xid: *xid,
                cid: *cid,
                tid_blk: data_blk,
                tid_off: *off,
                kind: *kind,
                delta: true,
                image: undo_delta,
            }
            .encode(),
        ),
        _ => None,
    }
}

fn target_of(rec: &Rec) -> Option<UndoTarget> {
    match rec {
        Rec::Insert { note, .. } => *note,
        Rec::Change { target, .. } => Some(*target),
        _ => None,
    }
}

/// Applies the record to the undo page (block 1), formatting it first for a new undo page.
pub fn apply_undo(rec: &Rec, data_blk: u32, p: &mut [u8]) -> Result<(), RecError> {
    let (Some(t), Some(item)) = (target_of(rec), undo_item(rec, data_blk)) else {
        return Ok(());
    };
    if t.link.is_some() {
        page::init_page(p, PageKind::Undo);
    }
    let o = pageop::add_item(p, &item, None)?;
    if o != t.undo_off {
        return Err(RecError::Diverged {
            want: t.undo_off,
            got: o,
        });
    }
    page::set_checksum(p);
    Ok(())
}

/// Whether [`apply_undo`] would succeed on undo page `p`, without changing it.
pub fn check_undo(rec: &Rec, data_blk: u32, p: &[u8]) -> Result<(), RecError> {
    let (Some(t), Some(item)) = (target_of(rec), undo_item(rec, data_blk)) else {
        return Ok(());
    };
    if t.link.is_some() {
        let mut fresh = vec![0u8; BLCKSZ];
        page::init_page(&mut fresh, PageKind::Undo);
        return pageop::can_add(&fresh, item.len(), None).map_err(RecError::Op);
    }
    let next = pageop::next_offset(p);
    if next != t.undo_off {
        return Err(RecError::Diverged {
            want: t.undo_off,
            got: next,
        });
    }
    pageop::can_add(p, item.len(), None).map_err(RecError::Op)
}

/// Whether the record formats block `id` (`REGBUF_WILL_INIT`): a new data page, a new undo page.
pub fn formats(rec: &Rec, id: u8) -> bool {
    match id {
        BLK_DATA => matches!(rec, Rec::Insert { init: true, .. }),
        BLK_UNDO => target_of(rec).is_some_and(|t| t.link.is_some()),
        _ => false,
    }
}

/// Applies the record to block `id` of it (see "Blocks"): the one dispatch the primary (both
/// WAL modes) and redo use. Returns the offsets of inserted rows (block 0).
pub fn apply_block(
    rec: &Rec,
    id: u8,
    data_blk: u32,
    undo_blk: u32,
    p: &mut [u8],
) -> Result<Vec<u16>, RecError> {
    match id {
        BLK_DATA => apply_data(rec, undo_blk, p),
        BLK_UNDO => apply_undo(rec, data_blk, p).map(|_| Vec::new()),
        BLK_TAIL => {
            apply_tail(undo_blk, p);
            Ok(Vec::new())
        }
        _ => {
            apply_meta(rec, undo_blk, p);
            Ok(Vec::new())
        }
    }
}

/// Applies the record to the old undo tail (block 2): it now points at the new page.
pub fn apply_tail(new_undo_blk: u32, p: &mut [u8]) {
    page::set_next(p, new_undo_blk);
    page::set_checksum(p);
}

/// Applies the record to the metapage (block 3): a new undo page linked in (`new_undo_blk`),
/// or one more dead pointer.
pub fn apply_meta(rec: &Rec, new_undo_blk: u32, p: &mut [u8]) {
    let mut m = Meta::read(p);
    match rec {
        Rec::Kill { .. } => m.pending_dead += 1,
        _ => {
            if let Some(link) = target_of(rec).and_then(|t| t.link) {
                if m.undo_head == NO_BLOCK {
                    m.undo_head = new_undo_blk;
                }
                m.undo_tail = new_undo_blk;
                m.undo_appended += BLCKSZ as u64;
                if let Some(next) = link.free_next.filter(|_| m.free_head == new_undo_blk) {
                    m.free_head = next;
                    m.free_pages = m.free_pages.saturating_sub(1);
                }
            }
        }
    }
    m.write(p);
    page::set_checksum(p);
}

/// A one-line description of a record, for `pg_waldump` and error contexts.
pub fn describe(rec: &Rec) -> String {
    let link = |t: &Option<UndoTarget>| match t.and_then(|t| t.link) {
        None => String::new(),
        Some(l) => format!(
            ", new undo page{}{}",
            if l.had_tail { " after tail" } else { "" },
            l.free_next
                .map(|n| format!(" from free list (next {n})"))
                .unwrap_or_default()
        ),
    };
    match rec {
        Rec::Insert {
            init,
            xid,
            cid,
            first_off,
            rows,
            note,
        } => {
            let n = match rows {
                Rows::Whole(w) => w.len(),
                Rows::Tails(t) => t.len(),
            };
            format!(
                "rows {n} from off {first_off}, xid {xid}, cid {cid}{}{}{}",
                if *init { ", init page" } else { "" },
                note.map(|t| format!(", note at undo item {}", t.undo_off))
                    .unwrap_or_default(),
                link(note)
            )
        }
        Rec::Change {
            off,
            kind,
            xid,
            cid,
            target,
            undo_delta,
            new_delta,
            ..
        } => format!(
            "off {off} {kind:?}, xid {xid}, cid {cid}, undo item {} ({} + {} delta bytes){}",
            target.undo_off,
            undo_delta.len(),
            new_delta.len(),
            link(&Some(*target))
        ),
        Rec::Overwrite { off, delta } => format!("off {off} ({} delta bytes)", delta.len()),
        Rec::Kill { off } => format!("off {off}"),
        Rec::Conflict { xid, node } => format!(
            "latest removed xid {xid}, rel {}/{}/{}",
            node[0], node[1], node[2]
        ),
    }
}

/// The name of a record type, for `pg_get_wal_records_info` and `pg_waldump --stats`.
pub fn identify(info: u8) -> Option<&'static str> {
    match info & INFO_MASK {
        INFO_INSERT => Some("INSERT"),
        INFO_CHANGE => Some("CHANGE_ROW"),
        INFO_OVERWRITE => Some("OVERWRITE_ROW"),
        INFO_KILL => Some("KILL_ROW"),
        INFO_CONFLICT => Some("DISCARD_CONFLICT"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{RowHeader, UndoPtr};
    use crate::undo::make_row_delta;

    fn page(kind: PageKind) -> Vec<u8> {
        let mut p = vec![0u8; BLCKSZ];
        page::init_page(&mut p, kind);
        p
    }

    fn row(xid: u64, cid: u32, fill: u8, len: usize) -> Vec<u8> {
        let mut r = vec![fill; len];
        r[..VERSION_BYTES].copy_from_slice(&version_bytes(xid, cid, 0, 0));
        r[18..20].copy_from_slice(&2u16.to_ne_bytes());
        r[20..22].copy_from_slice(&0u16.to_ne_bytes());
        r[22] = 24;
        r
    }

    /// Encodes, decodes, and applies a record to `pages` (data, undo, tail, meta) as redo would.
    fn redo(rec: &Rec, blk: u32, undo_blk: u32, pages: &mut [Vec<u8>; 4]) -> Vec<u16> {
        let bytes = rec.encode();
        let d = Rec::decode(rec.info(), &bytes).unwrap();
        let offs = apply_block(&d, BLK_DATA, blk, undo_blk, &mut pages[0]).unwrap();
        let (u, t, m) = d.blocks();
        for (id, present) in [(BLK_UNDO, u), (BLK_TAIL, t), (BLK_META, m)] {
            if present {
                apply_block(&d, id, blk, undo_blk, &mut pages[id as usize]).unwrap();
            }
        }
        offs
    }

    fn meta_page() -> Vec<u8> {
        let mut p = vec![0u8; BLCKSZ];
        Meta::init_page(&mut p, 1);
        p
    }

    #[test]
    fn insert_compacts_record_headers_and_replays_to_the_same_page() {
        let rows = [row(7, 1, 0xaa, 60), row(7, 1, 0xbb, 41)];
        let rec = Rec::Insert {
            init: true,
            xid: 7,
            cid: 1,
            first_off: 1,
            rows: Rows::Whole(rows.iter().map(|r| &r[..]).collect()),
            note: Some(UndoTarget {
                undo_off: 1,
                link: Some(UndoLink {
                    had_tail: false,
                    free_next: None,
                }),
            }),
        };
        let bytes = rec.encode();
        // 20 bytes of record header plus each row from byte 18 on with its length.
        assert_eq!(bytes.len(), 1 + 8 + 4 + 2 + 2 + 2 + (2 + 42) + (2 + 23));
        let mut primary = [
            vec![0u8; BLCKSZ],
            vec![0u8; BLCKSZ],
            page(PageKind::Undo),
            meta_page(),
        ];
        let offs = apply_data(&rec, 9, &mut primary[0]).unwrap();
        apply_undo(&rec, 5, &mut primary[1]).unwrap();
        apply_meta(&rec, 9, &mut primary[3]);
        assert_eq!(offs, vec![1, 2]);
        let mut standby = [
            vec![0x55u8; BLCKSZ], // whatever was there: the record formats it
            vec![0x66u8; BLCKSZ],
            page(PageKind::Undo),
            meta_page(),
        ];
        assert_eq!(redo(&rec, 5, 9, &mut standby), vec![1, 2]);
        assert_eq!(standby[0], primary[0]);
        assert_eq!(standby[1], primary[1]);
        assert_eq!(standby[3], primary[3]);
        assert_eq!(pageop::item(&standby[0], 2).unwrap(), &rows[1][..]);
        let m = Meta::read(&standby[3]);
        assert_eq!((m.undo_head, m.undo_tail), (9, 9));
        let note = UndoRecord::decode(pageop::item(&standby[1], 1).unwrap()).unwrap();
        assert_eq!(
            (note.kind, note.xid, note.tid_blk),
            (UndoKind::Insert, 7, 5)
        );
        assert_eq!(page::verify(&standby[0]), Ok(()));
    }

    #[test]
    fn speculative_rows_are_logged_whole() {
        let mut r = row(7, 1, 0xaa, 40);
        r[12..16].copy_from_slice(&77u32.to_ne_bytes()); // a speculative token
        let rec = Rec::Insert {
            init: false,
            xid: 7,
            cid: 1,
            first_off: 1,
            rows: Rows::Whole(vec![&r]),
            note: None,
        };
        let mut pages = [
            page(PageKind::Data),
            vec![0; BLCKSZ],
            vec![0; BLCKSZ],
            vec![0; BLCKSZ],
        ];
        redo(&rec, 1, 0, &mut pages);
        assert_eq!(pageop::item(&pages[0], 1).unwrap(), &r[..]);
    }

    /// The in-place update as the primary makes it, replayed on a copy of the pages.
    #[test]
    fn change_replays_row_and_undo_record_from_either_page() {
        let mut data = page(PageKind::Data);
        let old = row(5, 0, 0x11, 64);
        pageop::add_item(&mut data, &old, None).unwrap();
        pageop::add_item(&mut data, &row(5, 0, 0x22, 64), None).unwrap();
        let mut undo = page(PageKind::Undo);
        pageop::add_item(&mut undo, &[9; 50], None).unwrap();
        let before = [data.clone(), undo.clone(), vec![0; BLCKSZ], vec![0; BLCKSZ]];

        let target = UndoTarget {
            undo_off: pageop::next_offset(&undo),
            link: None,
        };
        let mut new = old.clone();
        new[40] = 0x99; // one column changed
        new.extend_from_slice(&[0x33; 9]); // and the row grew
        let mut h = RowHeader::read(&new);
        h.xid = 8;
        h.cid = 2;
        h.undo = UndoPtr {
            blk: 3,
            off: target.undo_off,
        };
        h.write(&mut new);
        let undo_delta = make_row_delta(&old, &new);
        let mut buf = Vec::new();
        let rec = Rec::change(
            1,
            UndoKind::Update,
            8,
            2,
            target,
            3,
            &old,
            &new,
            &undo_delta,
            &mut buf,
        );
        assert!(matches!(
            rec,
            Rec::Change {
                raw_header: None,
                ..
            }
        ));
        // Far less than the two rows: the version fields plus one byte and the growth.
        assert!(rec.encode().len() < 90, "{} bytes", rec.encode().len());

        let mut primary = before.clone();
        apply_data(&rec, 3, &mut primary[0]).unwrap();
        apply_undo(&rec, 4, &mut primary[1]).unwrap();
        assert_eq!(pageop::item(&primary[0], 1).unwrap(), &new[..]);
        assert_eq!(
            pageop::item(&primary[0], 2).unwrap(),
            &row(5, 0, 0x22, 64)[..]
        );

        let mut standby = before.clone();
        redo(&rec, 4, 3, &mut standby);
        assert_eq!(standby[0], primary[0]);
        assert_eq!(standby[1], primary[1]);

        // The data page came back from a full-page image: the undo page alone still replays.
        let mut only_undo = before.clone();
        let bytes = rec.encode();
        let d = Rec::decode(INFO_CHANGE, &bytes).unwrap();
        apply_undo(&d, 4, &mut only_undo[1]).unwrap();
        assert_eq!(only_undo[1], primary[1]);
        // And the undo record rebuilds the old row from the new one, as readers do.
        let ur = UndoRecord::decode(pageop::item(&only_undo[1], 2).unwrap()).unwrap();
        assert_eq!(ur.old_row(&new).unwrap(), old);
        assert_eq!((ur.tid_blk, ur.tid_off, ur.xid, ur.cid), (4, 1, 8, 2));
    }

    #[test]
    fn change_with_new_undo_page_links_tail_and_metapage() {
        let mut data = page(PageKind::Data);
        let old = row(5, 0, 0x11, 64);
        pageop::add_item(&mut data, &old, None).unwrap();
        let mut meta = meta_page();
        let mut m = Meta::read(&meta);
        (m.undo_head, m.undo_tail, m.free_head, m.free_pages) = (2, 2, 6, 3);
        m.write(&mut meta);
        let before = [data, vec![0x77; BLCKSZ], page(PageKind::Undo), meta];
        let target = UndoTarget {
            undo_off: 1,
            link: Some(UndoLink {
                had_tail: true,
                free_next: Some(11),
            }),
        };
        let mut new = old.clone();
        let mut h = RowHeader::read(&new);
        h.xid = 8;
        h.infomask |= crate::row::FLAG_DELETED;
        h.undo = UndoPtr { blk: 6, off: 1 };
        h.write(&mut new);
        let ud = make_row_delta(&old, &new);
        let mut buf = Vec::new();
        let rec = Rec::change(
            1,
            UndoKind::Delete,
            8,
            0,
            target,
            6,
            &old,
            &new,
            &ud,
            &mut buf,
        );
        let mut standby = before.clone();
        redo(&rec, 1, 6, &mut standby);
        assert_eq!(pageop::item(&standby[0], 1).unwrap(), &new[..]);
        assert_eq!(page::read_special(&standby[2]).next, 6);
        let m = Meta::read(&standby[3]);
        assert_eq!(
            (m.undo_head, m.undo_tail, m.free_head, m.free_pages),
            (2, 6, 11, 2)
        );
        assert_eq!(page::kind(&standby[1]), Some(PageKind::Undo));
        assert_eq!(page::verify(&standby[1]), Ok(()));
        assert_eq!(page::verify(&standby[3]), Ok(()));
    }

    #[test]
    fn unexpected_headers_are_logged_raw() {
        let mut data = page(PageKind::Data);
        let old = row(5, 0, 0x11, 40);
        pageop::add_item(&mut data, &old, None).unwrap();
        let mut new = old.clone();
        new[0] = 0x42; // not the record's xid
        let mut buf = Vec::new();
        let target = UndoTarget {
            undo_off: 1,
            link: None,
        };
        let rec = Rec::change(
            1,
            UndoKind::Update,
            8,
            0,
            target,
            2,
            &old,
            &new,
            &[],
            &mut buf,
        );
        let mut pages = [data, page(PageKind::Undo), vec![0; BLCKSZ], vec![0; BLCKSZ]];
        redo(&rec, 1, 2, &mut pages);
        assert_eq!(pageop::item(&pages[0], 1).unwrap(), &new[..]);
    }

    #[test]
    fn overwrite_and_kill_replay() {
        let mut data = page(PageKind::Data);
        let old = row(5, 0, 0x11, 40);
        pageop::add_item(&mut data, &old, None).unwrap();
        let new = row(4, 0, 0x12, 40);
        let mut buf = Vec::new();
        let rec = Rec::overwrite(1, &old, &new, &mut buf);
        let mut pages = [data, vec![0; BLCKSZ], vec![0; BLCKSZ], meta_page()];
        redo(&rec, 1, 0, &mut pages);
        assert_eq!(pageop::item(&pages[0], 1).unwrap(), &new[..]);
        redo(&Rec::Kill { off: 1 }, 1, 0, &mut pages);
        let c = Rec::Conflict {
            xid: 1 << 40,
            node: [1663, 5, 16384],
        };
        assert_eq!(Rec::decode(INFO_CONFLICT, &c.encode()), Ok(c.clone()));
        assert_eq!(c.blocks(), (false, false, false));
        assert_eq!(page::line_pointer(&pages[0], 1).flags, page::LP_DEAD);
        assert_eq!(Meta::read(&pages[3]).pending_dead, 1);
    }

    #[test]
    fn redo_that_diverges_or_is_truncated_is_an_error() {
        let r = row(7, 1, 0xaa, 40);
        let rec = Rec::Insert {
            init: false,
            xid: 7,
            cid: 1,
            first_off: 3, // the primary's page had other rows
            rows: Rows::Whole(vec![&r]),
            note: None,
        };
        let mut p = page(PageKind::Data);
        let bytes = rec.encode();
        let d = Rec::decode(INFO_INSERT, &bytes).unwrap();
        assert_eq!(
            apply_data(&d, 0, &mut p),
            Err(RecError::Diverged { want: 3, got: 1 })
        );
        for cut in 0..bytes.len() - 1 {
            assert!(
                Rec::decode(INFO_INSERT, &bytes[..cut]).is_err(),
                "{cut} bytes decoded"
            );
        }
        assert_eq!(Rec::decode(0x70, &bytes), Err(RecError::UnknownInfo(0x70)));
        assert!(identify(INFO_CHANGE).is_some() && identify(0x70).is_none());
    }
}
