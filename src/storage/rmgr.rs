//! torii's own WAL resource manager: row-level records instead of generic WAL's page diffs.
//!
//! Registered by `_PG_init` when torii is loaded through `shared_preload_libraries` (PostgreSQL
//! only lets a preloaded library register one). Then every row change ([`wal`](super::wal))
//! logs a [`torii_core::walrec`] record, and redo applies it with the same torii-core page
//! functions the primary used. Without preload, torii keeps writing generic WAL, which any
//! server replays without torii.
//!
//! Once a cluster's WAL holds torii records, recovery (crash recovery, standbys, archive
//! replay, base backups) needs torii preloaded: PostgreSQL stops with "resource manager with ID
//! 171 not registered" otherwise.

use super::buffer::LockedBuffer;
use pgrx::pg_sys;
use std::sync::atomic::{AtomicBool, Ordering};
use torii_core::page::{self, PageKind, BLCKSZ};
use torii_core::walrec::{self, Rec, BLK_DATA, BLK_META, BLK_TAIL, BLK_UNDO};

/// torii's resource manager id, in PostgreSQL's custom range 128–255. Not used by any
/// extension we know of (OrioleDB 129, Neon 134, pg_tde 140); `pg_get_wal_resource_managers()`
/// shows it as `torii`.
pub const RMGR_ID: u8 = 171;

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// True when this process has torii's resource manager (torii was preloaded): writes log
/// row-level records.
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Registers the resource manager; only possible while `shared_preload_libraries` load.
pub fn register() {
    // SAFETY: a plain read of a PostgreSQL global.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    // The struct must outlive the server; PostgreSQL keeps the pointer.
    let data = Box::leak(Box::new(pg_sys::RmgrData {
        rm_name: c"torii".as_ptr(),
        rm_redo: Some(torii_redo),
        rm_desc: Some(torii_desc),
        rm_identify: Some(torii_identify),
        rm_startup: None,
        rm_cleanup: None,
        rm_mask: Some(torii_mask),
        rm_decode: None,
    }));
    // SAFETY: called from _PG_init during shared_preload_libraries; `data` is 'static.
    unsafe { pg_sys::RegisterCustomRmgr(RMGR_ID, data) };
    ACTIVE.store(true, Ordering::Relaxed);
}

/// `RelationNeedsWAL`: permanent, and WAL is needed for it (not a relation created in this
/// transaction under `wal_level = minimal`, which is synced at commit instead).
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn needs_wal(rel: pg_sys::Relation) -> bool {
    let r = &*rel;
    (*r.rd_rel).relpersistence as u8 == pg_sys::RELPERSISTENCE_PERMANENT
        && (pg_sys::wal_level >= pg_sys::WalLevel::WAL_LEVEL_REPLICA as i32
            || (r.rd_createSubid == 0 && r.rd_firstRelfilenodeSubid == 0))
}

/// A page of a record: the locked buffer, its block id in the record, and whether the record
/// formats it (`REGBUF_WILL_INIT`: no full-page image is ever needed).
pub struct Block<'a> {
    pub id: u8,
    pub buf: &'a LockedBuffer,
    pub init: bool,
}

/// Applies `apply` to each block's page in place and logs the record over them, in one
/// critical section (WAL before data: the pages are dirtied and stamped with the record's LSN
/// under their locks). `apply` of the first block may fail only when it leaves its page as it
/// was: then nothing is logged and the error is returned. The other blocks' changes are
/// checked by the caller before, and cannot fail short of a bug, which is a PANIC here as in
/// heap's `RelationPutHeapTuple`.
///
/// # Safety
/// `rel` must be open; every block's buffer must be one of its pages, exclusively locked.
pub unsafe fn apply_and_log<E: std::fmt::Display>(
    rel: pg_sys::Relation,
    info: u8,
    main: &[u8],
    blocks: &[Block],
    mut apply: impl FnMut(u8, &mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    let wal = needs_wal(rel);
    pg_sys::CritSectionCount += 1;
    for (i, b) in blocks.iter().enumerate() {
        // SAFETY: the buffer is exclusively locked by `b.buf`; pages are BLCKSZ.
        let p = std::slice::from_raw_parts_mut(
            pg_sys::BufferGetPage(b.buf.buffer()) as *mut u8,
            BLCKSZ,
        );
        if let Err(e) = apply(b.id, p) {
            if i == 0 {
                pg_sys::CritSectionCount -= 1;
                return Err(e);
            }
            pgrx::error!("torii: page change of block {} failed: {e}", b.buf.block());
        }
    }
    for b in blocks {
        pg_sys::MarkBufferDirty(b.buf.buffer());
    }
    if wal {
        pg_sys::XLogBeginInsert();
        pg_sys::XLogRegisterData(main.as_ptr() as *mut _, main.len() as i32);
        for b in blocks {
            let mut flags = pg_sys::REGBUF_STANDARD;
            if b.init {
                flags |= pg_sys::REGBUF_WILL_INIT;
            }
            pg_sys::XLogRegisterBuffer(b.id, b.buf.buffer(), flags as u8);
        }
        let lsn = pg_sys::XLogInsert(RMGR_ID, info);
        for b in blocks {
            set_lsn(pg_sys::BufferGetPage(b.buf.buffer()) as *mut u8, lsn);
        }
    }
    pg_sys::CritSectionCount -= 1;
    Ok(())
}

/// `PageSetLSN`.
///
/// # Safety
/// `p` must be a locked page.
unsafe fn set_lsn(p: *mut u8, lsn: pg_sys::XLogRecPtr) {
    let hi = ((lsn >> 32) as u32).to_ne_bytes();
    let lo = (lsn as u32).to_ne_bytes();
    std::ptr::copy_nonoverlapping(hi.as_ptr(), p, 4);
    std::ptr::copy_nonoverlapping(lo.as_ptr(), p.add(4), 4);
}

/// The decoded record being replayed and its block numbers.
struct Replay<'a> {
    rec: Rec<'a>,
    blkno: [Option<u32>; 4],
}

/// # Safety
/// `record` is the reader state PostgreSQL passes to a resource manager callback.
unsafe fn decode<'a>(record: *mut pg_sys::XLogReaderState) -> Result<Replay<'a>, String> {
    let r = &*(*record).record;
    let info = r.header.xl_info & walrec::INFO_MASK;
    let main: &'a [u8] = if r.main_data_len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(r.main_data as *const u8, r.main_data_len as usize)
    };
    let rec = Rec::decode(info, main).map_err(|e| e.to_string())?;
    let mut blkno = [None; 4];
    let blocks = r.blocks.as_slice((r.max_block_id + 1).max(0) as usize);
    for (i, b) in blocks.iter().enumerate().take(4) {
        if b.in_use {
            blkno[i] = Some(b.blkno);
        }
    }
    Ok(Replay { rec, blkno })
}

/// A buffer locked by redo, released when dropped.
struct RedoBuffer(pg_sys::Buffer);

impl Drop for RedoBuffer {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: XLogReadBufferForRedo returned it pinned and exclusively locked.
            unsafe { pg_sys::UnlockReleaseBuffer(self.0) };
        }
    }
}

/// Logs, before undo discard removes versions written by transactions up to `xid`, the record
/// that makes standbys cancel queries whose snapshots may still need them (heap's pruning
/// records carry the same horizon). Only with row-level WAL; with generic WAL a standby needs
/// `hot_standby_feedback` instead.
///
/// # Safety
/// `rel` must be an open relation.
pub unsafe fn log_discard_conflict(rel: pg_sys::Relation, xid: u64) {
    if !active()
        || !needs_wal(rel)
        || pg_sys::wal_level < pg_sys::WalLevel::WAL_LEVEL_REPLICA as i32
    {
        return;
    }
    let n = (*rel).rd_node;
    let rec = Rec::Conflict {
        xid,
        node: [n.spcNode.into(), n.dbNode.into(), n.relNode.into()],
    };
    let main = rec.encode();
    pg_sys::XLogBeginInsert();
    pg_sys::XLogRegisterData(main.as_ptr() as *mut _, main.len() as i32);
    pg_sys::XLogInsert(RMGR_ID, rec.info());
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn torii_redo(record: *mut pg_sys::XLogReaderState) {
    let rp = decode(record).unwrap_or_else(|e| pgrx::error!("torii redo: {e}"));
    if let Rec::Conflict { xid, node } = rp.rec {
        // InHotStandby: queries may be running.
        if pg_sys::standbyState >= pg_sys::HotStandbyState::STANDBY_INITIALIZED {
            pg_sys::ResolveRecoveryConflictWithSnapshotFullXid(
                pg_sys::FullTransactionId { value: xid },
                pg_sys::RelFileNode {
                    spcNode: node[0].into(),
                    dbNode: node[1].into(),
                    relNode: node[2].into(),
                },
            );
        }
        return;
    }
    let (has_undo, has_tail, has_meta) = rp.rec.blocks();
    let want = [
        (BLK_DATA, true),
        (BLK_UNDO, has_undo),
        (BLK_TAIL, has_tail),
        (BLK_META, has_meta),
    ];
    let data_blk = rp.blkno[0].unwrap_or_else(|| pgrx::error!("torii redo: no data block"));
    let undo_blk = rp.blkno[1].unwrap_or(0);
    // Every page is locked before any is changed and released only after all are, so that a
    // standby reader never sees a row whose undo record is not there yet.
    let mut held: Vec<(u8, RedoBuffer, bool)> = Vec::with_capacity(4);
    for (id, present) in want {
        let init = walrec::formats(&rp.rec, id);
        if !present {
            continue;
        }
        if rp.blkno[id as usize].is_none() {
            pgrx::error!("torii redo: block {id} missing from the record");
        }
        let mut buf: pg_sys::Buffer = 0;
        let action = pg_sys::XLogReadBufferForRedoExtended(
            record,
            id,
            if init {
                pg_sys::ReadBufferMode::RBM_ZERO_AND_LOCK
            } else {
                pg_sys::ReadBufferMode::RBM_NORMAL
            },
            false,
            &mut buf,
        );
        held.push((
            id,
            RedoBuffer(buf),
            action == pg_sys::XLogRedoAction::BLK_NEEDS_REDO,
        ));
    }
    let lsn = (*record).EndRecPtr;
    for (id, buf, redo) in &held {
        if !*redo {
            continue;
        }
        let p = std::slice::from_raw_parts_mut(pg_sys::BufferGetPage(buf.0) as *mut u8, BLCKSZ);
        if let Err(e) = walrec::apply_block(&rp.rec, *id, data_blk, undo_blk, p) {
            pgrx::error!(
                "torii redo of {} on block {}: {e}",
                walrec::describe(&rp.rec),
                rp.blkno[*id as usize].unwrap_or(0)
            );
        }
        set_lsn(p.as_mut_ptr(), lsn);
        pg_sys::MarkBufferDirty(buf.0);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn torii_desc(
    buf: pg_sys::StringInfo,
    record: *mut pg_sys::XLogReaderState,
) {
    let text = match decode(record) {
        Ok(rp) => walrec::describe(&rp.rec),
        Err(e) => format!("undecodable: {e}"),
    };
    let c = std::ffi::CString::new(text).unwrap_or_default();
    pg_sys::appendStringInfoString(buf, c.as_ptr());
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn torii_identify(info: u8) -> *const std::ffi::c_char {
    match walrec::identify(info) {
        Some("INSERT") => c"INSERT".as_ptr(),
        Some("CHANGE_ROW") => c"CHANGE_ROW".as_ptr(),
        Some("OVERWRITE_ROW") => c"OVERWRITE_ROW".as_ptr(),
        Some("KILL_ROW") => c"KILL_ROW".as_ptr(),
        _ => std::ptr::null(),
    }
}

/// What `wal_consistency_checking` may find different between a replayed page and the
/// primary's: the LSN and PostgreSQL's page checksum (set when written), and the hole between
/// `pd_lower` and `pd_upper`, which full-page images omit.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn torii_mask(
    pagedata: *mut std::ffi::c_char,
    _blkno: pg_sys::BlockNumber,
) {
    let p = std::slice::from_raw_parts_mut(pagedata as *mut u8, BLCKSZ);
    p[0..8].fill(0);
    p[8..10].fill(0);
    if page::check_header(p).is_ok() || page::kind(p) == Some(PageKind::Meta) {
        let (lower, upper) = (page::pd_lower(p), page::pd_upper(p));
        if lower <= upper && upper <= BLCKSZ {
            p[lower..upper].fill(0);
        }
    }
}
