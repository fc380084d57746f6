#![allow(non_snake_case)] // PostgreSQL's own function names.
//! PostgreSQL functions torii calls that pgrx's bindings do not include (their headers are
//! not in pgrx's binding set). `#[pg_guard]` turns an ERROR raised inside them into a Rust
//! panic, as for every other `pg_sys` function.

use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_guard]
unsafe extern "C-unwind" {
    /// access/heaptoast.h
    pub fn heap_toast_insert_or_update(
        rel: pg_sys::Relation,
        newtup: pg_sys::HeapTuple,
        oldtup: pg_sys::HeapTuple,
        options: i32,
    ) -> pg_sys::HeapTuple;
    /// access/heaptoast.h
    pub fn heap_fetch_toast_slice(
        toastrel: pg_sys::Relation,
        valueid: pg_sys::Oid,
        attrsize: i32,
        sliceoffset: i32,
        slicelength: i32,
        result: *mut pg_sys::varlena,
    );
    /// postmaster/autovacuum.h
    pub fn IsAutoVacuumWorkerProcess() -> bool;
    /// catalog/storage_xlog.h
    pub fn log_smgrcreate(rnode: *const pg_sys::RelFileNode, fork: pg_sys::ForkNumber::Type);
    /// storage/predicate.h
    pub fn CheckForSerializableConflictIn(
        rel: pg_sys::Relation,
        tid: pg_sys::ItemPointer,
        blkno: pg_sys::BlockNumber,
    );
    /// storage/predicate.h
    pub fn CheckForSerializableConflictOut(
        rel: pg_sys::Relation,
        xid: pg_sys::TransactionId,
        snapshot: pg_sys::Snapshot,
    );
    /// access/heaptoast.h
    pub fn heap_toast_delete(
        rel: pg_sys::Relation,
        oldtup: pg_sys::HeapTuple,
        is_speculative: bool,
    );
    /// utils/datum.h
    pub fn datumIsEqual(
        value1: pg_sys::Datum,
        value2: pg_sys::Datum,
        typByVal: bool,
        typLen: i32,
    ) -> bool;
    /// storage/predicate.h
    pub fn PredicateLockRelation(rel: pg_sys::Relation, snapshot: pg_sys::Snapshot);
    /// storage/predicate.h
    pub fn PredicateLockTID(
        rel: pg_sys::Relation,
        tid: pg_sys::ItemPointer,
        snapshot: pg_sys::Snapshot,
        tuple_xid: pg_sys::TransactionId,
    );
}

/// `BulkInsertStateData` of access/hio.h (PostgreSQL 15): only its strategy is used.
#[repr(C)]
pub struct BulkInsertStateData {
    pub strategy: pg_sys::BufferAccessStrategy,
    pub current_buf: pg_sys::Buffer,
}
