//! # torii-btree
//!
//! The pgrx-free half of the `torii_btree` index access method: the byte layout of its pages
//! and items, and the algorithms that do not need to know how keys compare (binary search
//! over a comparator closure, split-point choice, posting-list encoding, page-image editing).
//! The extension's `src/btree` module applies these to PostgreSQL buffers, with generic WAL.
//!
//! ## The tree
//!
//! A B+-tree in the Lehman–Yao style: every page has a right-link (the `next` field of torii's
//! special space, [`torii_core::page::Special`]) and, unless it is the rightmost page of its
//! level, a *high key*: an upper bound (inclusive) of the keys on the page. A reader that
//! arrives at a page after a concurrent split moved its key to the right follows right-links
//! while its key is above the high key, so readers take one buffer lock at a time and never
//! block splits for long. Pages also keep a left-link (`prev`, in the page-info item) for
//! backward scans; it may be stale after a split of the left neighbour, which the reader
//! corrects by walking right from it (pages are never deleted in this version, so a stale
//! left-link still points at a page to the left).
//!
//! Keys are *not* made unique with the heap TID: equal keys may straddle a page boundary.
//! Every page holds keys `k` with `low <= k <= high`, where `low` is the separator in the
//! parent (the page's downlink key) and `high` the page's high key. Insertions of a key `k`
//! may go to any page with `low <= k <= high`; searches for the first `k` descend along the
//! last downlink whose key is `< k` (strictly), so they find the leftmost page that can hold
//! `k`, and then move right.
//!
//! ## Page layout
//!
//! Every page is a standard PostgreSQL page with torii's 16-byte special space (page kind
//! `BtreeMeta`, `BtreeLeaf`, `BtreeInternal`, CRC32C, right-link), see [`torii_core::page`].
//!
//! * **Block 0, the metapage** ([`meta`]): the metadata sits right after the page header and
//!   `pd_lower` points past it (like PostgreSQL's own metapages, so that generic WAL and the
//!   checksum cover it).
//! * **Leaf and internal pages** ([`page`]): slotted pages. Line pointer 1 is the
//!   *page-info item* (left-link, level, flags, then the high key if any); line pointers 2..
//!   are the data items in key order. Items are stored 8-byte aligned (MAXALIGN), so that the
//!   index tuples inside can be decoded in place by PostgreSQL's `index_getattr`.
//!
//! ## Items
//!
//! Items are PostgreSQL `IndexTupleData` ([`tuple`]): `t_tid` (6 bytes), `t_info` (2 bytes:
//! size in the low 13 bits, bit 13 reserved for the AM, bit 14 "has varwidth", bit 15 "has
//! nulls"), an optional null bitmap, then the attributes. On top of that:
//!
//! * a **plain leaf item** is a normal index tuple whose `t_tid` is the heap TID;
//! * a **posting item** (AM bit set) holds one key and many heap TIDs: `t_tid.ip_blkid` is the
//!   number of TIDs, `t_tid.ip_posid` the offset of the posting list, which follows the key
//!   (8-byte aligned) as LEB128 varints: the first TID as `block << 16 | offset`, then the
//!   deltas to the next (TIDs strictly increasing). TIDs of a table read in order take 1–2
//!   bytes each, against 6 in a built-in btree posting list and 16+4 for separate tuples;
//! * a **pivot** (internal pages, and high keys) is an index tuple of the key columns only
//!   (INCLUDE columns truncated) whose `t_tid.ip_blkid` is the child block (unused in high
//!   keys). The first data item of an internal page is a "minus infinity" pivot: no
//!   attributes (size 8), only the downlink.

pub mod meta;
pub mod page;
pub mod search;
pub mod split;
pub mod tuple;

pub use tuple::Tid;
