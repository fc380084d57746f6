//! # torii-core
//!
//! The parts of torii that do not need PostgreSQL: on-disk formats (page, metapage, row) with
//! their byte layouts, and the visibility rules. Everything here is tested with plain
//! `cargo test -p torii-core`; the extension crate is a thin layer that applies these to
//! PostgreSQL's buffers and transaction system.

pub mod meta;
pub mod page;
pub mod pageop;
pub mod row;
pub mod undo;
pub mod visibility;
pub mod vm;
pub mod walrec;
