//! Index support: building indexes over a torii table (`index_build_range_scan`) and the
//! validation pass of CREATE INDEX CONCURRENTLY (`index_validate_scan`).
//!
//! PostgreSQL calls the C entry points of `index_shim.c`, which call the bodies here and
//! re-throw an error they hand back: index expressions, predicates and the index AM's build
//! callback run user code, and their errors must reach the user with their CONTEXT lines,
//! which pgrx's error boundary would drop (see the top of `index_shim.c`).

use super::scan::ToriiScan;
use pgrx::pg_sys;
use pgrx::prelude::*;

extern "C-unwind" {
    /// The entry points PostgreSQL calls (in the table AM routine).
    #[allow(clippy::too_many_arguments)]
    pub fn torii_index_build_range_scan(
        table: pg_sys::Relation,
        index: pg_sys::Relation,
        index_info: *mut pg_sys::IndexInfo,
        allow_sync: bool,
        anyvisible: bool,
        progress: bool,
        start_blockno: pg_sys::BlockNumber,
        numblocks: pg_sys::BlockNumber,
        callback: pg_sys::IndexBuildCallback,
        callback_state: *mut std::ffi::c_void,
        scan: pg_sys::TableScanDesc,
    ) -> f64;
    pub fn torii_index_validate_scan(
        table: pg_sys::Relation,
        index: pg_sys::Relation,
        index_info: *mut pg_sys::IndexInfo,
        snapshot: pg_sys::Snapshot,
        state: *mut pg_sys::ValidateIndexState,
    );
    #[allow(clippy::too_many_arguments)]
    fn torii_form_index_row(
        index_info: *mut pg_sys::IndexInfo,
        predicate: *mut pg_sys::ExprState,
        econtext: *mut pg_sys::ExprContext,
        estate: *mut pg_sys::EState,
        slot: *mut pg_sys::TupleTableSlot,
        values: *mut pg_sys::Datum,
        isnull: *mut bool,
        error: *mut *mut pg_sys::ErrorData,
    ) -> i32;
    fn torii_call_build_callback(
        callback: unsafe extern "C-unwind" fn(
            pg_sys::Relation,
            pg_sys::ItemPointer,
            *mut pg_sys::Datum,
            *mut bool,
            bool,
            *mut std::ffi::c_void,
        ),
        index: pg_sys::Relation,
        tid: pg_sys::ItemPointer,
        values: *mut pg_sys::Datum,
        isnull: *mut bool,
        callback_state: *mut std::ffi::c_void,
        error: *mut *mut pg_sys::ErrorData,
    );
}

/// An error raised by user code during a build, copied and cleared; the C entry point
/// re-throws it once the Rust frames have returned.
struct CaughtError(*mut pg_sys::ErrorData);

/// Evaluates index expressions and the predicate for one row: the per-row executor state
/// that `FormIndexDatum` needs, freed on drop.
struct IndexRowState {
    estate: *mut pg_sys::EState,
    econtext: *mut pg_sys::ExprContext,
    predicate: *mut pg_sys::ExprState,
    slot: *mut pg_sys::TupleTableSlot,
    index_info: *mut pg_sys::IndexInfo,
    /// An error interrupted an evaluation: the executor state is left to the abort that
    /// follows (its memory goes with the transaction's), not freed here.
    failed: bool,
}

impl IndexRowState {
    unsafe fn new(table: pg_sys::Relation, index_info: *mut pg_sys::IndexInfo) -> Self {
        let estate = pg_sys::CreateExecutorState();
        let econtext = pg_sys::MakePerTupleExprContext(estate);
        let slot = pg_sys::table_slot_create(table, std::ptr::null_mut());
        (*econtext).ecxt_scantuple = slot;
        let predicate = pg_sys::ExecPrepareQual((*index_info).ii_Predicate, estate);
        IndexRowState {
            estate,
            econtext,
            predicate,
            slot,
            index_info,
            failed: false,
        }
    }

    /// Forms the index values of the row in `self.slot`; false if the predicate rejects it.
    unsafe fn form(
        &mut self,
        values: &mut [pg_sys::Datum],
        isnull: &mut [bool],
    ) -> Result<bool, CaughtError> {
        let mut error = std::ptr::null_mut();
        let r = torii_form_index_row(
            self.index_info,
            self.predicate,
            self.econtext,
            self.estate,
            self.slot,
            values.as_mut_ptr(),
            isnull.as_mut_ptr(),
            &mut error,
        );
        if r < 0 {
            self.failed = true;
            return Err(CaughtError(error));
        }
        Ok(r > 0)
    }
}

impl Drop for IndexRowState {
    fn drop(&mut self) {
        // SAFETY: created in `new`; FormIndexDatum's cached states are reset like heap does.
        unsafe {
            if !self.failed {
                pg_sys::ExecDropSingleTupleTableSlot(self.slot);
                pg_sys::FreeExecutorState(self.estate);
            }
            (*self.index_info).ii_ExpressionsState = std::ptr::null_mut();
            (*self.index_info).ii_PredicateState = std::ptr::null_mut();
        }
    }
}

/// `index_build_range_scan`, called by `torii_index_build_range_scan` (index_shim.c), which
/// re-throws `*error` when set.
#[pg_guard]
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn torii_index_build_range_scan_body(
    table: pg_sys::Relation,
    index: pg_sys::Relation,
    index_info: *mut pg_sys::IndexInfo,
    _allow_sync: bool,
    _anyvisible: bool,
    progress: bool,
    start_blockno: pg_sys::BlockNumber,
    numblocks: pg_sys::BlockNumber,
    callback: pg_sys::IndexBuildCallback,
    callback_state: *mut std::ffi::c_void,
    scan: pg_sys::TableScanDesc,
    error: *mut *mut pg_sys::ErrorData,
) -> f64 {
    let mut st = IndexRowState::new(table, index_info);
    // Without a given scan: a concurrent build indexes what its MVCC snapshot sees (the
    // validation pass adds the rest); a normal build, under ShareLock, every row whose writer
    // did not abort (a null snapshot selects that mode in scan_begin).
    let mut registered: pg_sys::Snapshot = std::ptr::null_mut();
    let own_scan = scan.is_null();
    let scan = if own_scan {
        let snapshot = if (*index_info).ii_Concurrent {
            registered = pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot());
            registered
        } else {
            std::ptr::null_mut()
        };
        super::scan::scan_begin(
            table,
            snapshot,
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            pg_sys::ScanOptions::SO_TYPE_SEQSCAN | pg_sys::ScanOptions::SO_ALLOW_STRAT,
        )
    } else {
        scan
    };
    let ts = &mut *(scan as *mut ToriiScan);
    if own_scan {
        ts.start_block = start_blockno.max(1);
        if numblocks != pg_sys::InvalidBlockNumber {
            ts.end_block = start_blockno.saturating_add(numblocks).min(ts.nblocks);
        }
    }
    if progress {
        pg_sys::pgstat_progress_update_param(
            pg_sys::PROGRESS_SCAN_BLOCKS_TOTAL as i32,
            ts.nblocks as i64,
        );
    }
    let mut values = [pg_sys::Datum::from(0usize); pg_sys::INDEX_MAX_KEYS as usize];
    let mut isnull = [false; pg_sys::INDEX_MAX_KEYS as usize];
    let mut reltuples = 0.0;
    let mut last_block = pg_sys::InvalidBlockNumber;
    while super::scan::scan_getnextslot(scan, pg_sys::ScanDirection::ForwardScanDirection, st.slot)
    {
        pgrx::check_for_interrupts!();
        if progress && ts.cur_block != last_block {
            last_block = ts.cur_block;
            pg_sys::pgstat_progress_update_param(
                pg_sys::PROGRESS_SCAN_BLOCKS_DONE as i32,
                last_block as i64,
            );
        }
        reltuples += 1.0;
        let formed = st.form(&mut values, &mut isnull).and_then(|keep| {
            let (Some(cb), true) = (callback, keep) else {
                return Ok(());
            };
            let mut t = (*st.slot).tts_tid;
            let mut e = std::ptr::null_mut();
            torii_call_build_callback(
                cb,
                index,
                &mut t,
                values.as_mut_ptr(),
                isnull.as_mut_ptr(),
                callback_state,
                &mut e,
            );
            if e.is_null() {
                Ok(())
            } else {
                st.failed = true;
                Err(CaughtError(e))
            }
        });
        if let Err(CaughtError(e)) = formed {
            // The scan's pins go now; the snapshot and executor state with the abort.
            super::scan::scan_end(scan);
            *error = e;
            return reltuples;
        }
    }
    super::scan::scan_end(scan);
    if !registered.is_null() {
        pg_sys::UnregisterSnapshot(registered);
    }
    drop(st);
    reltuples
}

/// `itemptr_decode` of an int8 sort key.
fn decode_tid(v: i64) -> (u32, u16) {
    ((v >> 16) as u32, (v & 0xffff) as u16)
}

/// `index_validate_scan`, called by `torii_index_validate_scan` (index_shim.c), which
/// re-throws `*error` when set.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn torii_index_validate_scan_body(
    table: pg_sys::Relation,
    index: pg_sys::Relation,
    index_info: *mut pg_sys::IndexInfo,
    snapshot: pg_sys::Snapshot,
    state: *mut pg_sys::ValidateIndexState,
    error: *mut *mut pg_sys::ErrorData,
) {
    // Merge the sorted TIDs already in the index with the rows the reference snapshot sees
    // (visited in TID order) and insert the missing ones.
    let mut st = IndexRowState::new(table, index_info);
    let scan = super::scan::scan_begin(
        table,
        snapshot,
        0,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        pg_sys::ScanOptions::SO_TYPE_SEQSCAN | pg_sys::ScanOptions::SO_ALLOW_STRAT,
    );
    let mut values = [pg_sys::Datum::from(0usize); pg_sys::INDEX_MAX_KEYS as usize];
    let mut isnull = [false; pg_sys::INDEX_MAX_KEYS as usize];
    let mut indexed: Option<(u32, u16)> = None;
    let mut sort_done = false;
    while super::scan::scan_getnextslot(scan, pg_sys::ScanDirection::ForwardScanDirection, st.slot)
    {
        pgrx::check_for_interrupts!();
        (*state).htups += 1.0;
        let here = crate::storage::tid_parts(&(*st.slot).tts_tid);
        while !sort_done && indexed.is_none_or(|i| i < here) {
            let mut val = pg_sys::Datum::from(0usize);
            let mut null = false;
            if pg_sys::tuplesort_getdatum(
                (*state).tuplesort,
                true,
                &mut val,
                &mut null,
                std::ptr::null_mut(),
            ) {
                indexed = Some(decode_tid(val.value() as i64));
                (*state).itups += 1.0;
            } else {
                sort_done = true;
                indexed = None;
            }
        }
        if indexed == Some(here) {
            continue;
        }
        match st.form(&mut values, &mut isnull) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(CaughtError(e)) => {
                super::scan::scan_end(scan);
                *error = e;
                return;
            }
        }
        let mut t = (*st.slot).tts_tid;
        let unique = if (*index_info).ii_Unique {
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
        } else {
            pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
        };
        pg_sys::index_insert(
            index,
            values.as_mut_ptr(),
            isnull.as_mut_ptr(),
            &mut t,
            table,
            unique,
            false,
            index_info,
        );
        (*state).tups_inserted += 1.0;
    }
    super::scan::scan_end(scan);
    drop(st);
}
