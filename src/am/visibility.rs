//! Visibility glue: answers torii-core's [`XactOracle`] questions with PostgreSQL's transaction
//! system and applies the rules to stored rows.

use pgrx::pg_sys;
use torii_core::row::RowHeader;
use torii_core::visibility::{change_effect, Effect, SnapshotKind, XactOracle};

/// The 32-bit xid PostgreSQL's functions take. Rows keep 64-bit xids; the low half identifies
/// the transaction as long as its CLOG is kept (the table's relfrozenxid holds that back).
fn xid32(xid: u64) -> pg_sys::TransactionId {
    pg_sys::TransactionId::from_inner(xid as u32)
}

pub struct PgOracle {
    snapshot: pg_sys::Snapshot,
}

impl XactOracle for PgOracle {
    fn is_current(&self, xid: u64) -> bool {
        // SAFETY: plain transaction-state lookups.
        unsafe { pg_sys::TransactionIdIsCurrentTransactionId(xid32(xid)) }
    }
    fn running_in_snapshot(&self, xid: u64) -> bool {
        // SAFETY: snapshot is a live MVCC snapshot when this is asked.
        unsafe { pg_sys::XidInMVCCSnapshot(xid32(xid), self.snapshot) }
    }
    fn in_progress(&self, xid: u64) -> bool {
        unsafe { pg_sys::TransactionIdIsInProgress(xid32(xid)) }
    }
    fn did_commit(&self, xid: u64) -> bool {
        unsafe { pg_sys::TransactionIdDidCommit(xid32(xid)) }
    }
}

/// A snapshot as torii sees it.
pub struct Snap {
    pub raw: pg_sys::Snapshot,
    pub kind: SnapshotKind,
    oracle: PgOracle,
}

/// Special "snapshot" for index builds and VACUUM FULL: every row whose writer did not abort.
pub const BUILD: SnapshotKind = SnapshotKind::NonVacuumable;

impl Snap {
    /// # Safety
    /// `snapshot` must be a valid snapshot for the duration of use.
    pub unsafe fn new(snapshot: pg_sys::Snapshot) -> Snap {
        let kind = match (*snapshot).snapshot_type {
            pg_sys::SnapshotType::SNAPSHOT_MVCC => SnapshotKind::Mvcc {
                curcid: (*snapshot).curcid,
            },
            pg_sys::SnapshotType::SNAPSHOT_SELF => SnapshotKind::SelfSnap,
            pg_sys::SnapshotType::SNAPSHOT_ANY => SnapshotKind::Any,
            pg_sys::SnapshotType::SNAPSHOT_TOAST => SnapshotKind::Toast,
            pg_sys::SnapshotType::SNAPSHOT_DIRTY => SnapshotKind::Dirty,
            pg_sys::SnapshotType::SNAPSHOT_NON_VACUUMABLE => SnapshotKind::NonVacuumable,
            _ => pgrx::error!("torii: historic (logical decoding) snapshots are not supported"),
        };
        if kind == SnapshotKind::Dirty {
            (*snapshot).xmin = pg_sys::InvalidTransactionId;
            (*snapshot).xmax = pg_sys::InvalidTransactionId;
            (*snapshot).speculativeToken = 0;
        }
        Snap {
            raw: snapshot,
            kind,
            oracle: PgOracle { snapshot },
        }
    }

    /// A snapshot-less mode (index builds): rows whose writer did not abort.
    pub fn of_kind(kind: SnapshotKind) -> Snap {
        Snap {
            raw: std::ptr::null_mut(),
            kind,
            oracle: PgOracle {
                snapshot: std::ptr::null_mut(),
            },
        }
    }

    /// Is the stored row (its current version) visible? For versions not in effect, older
    /// versions live in undo; until undo exists, a row not in effect was inserted by a writer
    /// this snapshot does not see, so there is no row.
    pub fn sees(&self, row: &[u8]) -> bool {
        let h = RowHeader::read(row);
        let effect = change_effect(self.kind, h.xid, h.cid, 0, &self.oracle);
        match effect {
            Effect::InEffect => !h.is_deleted(),
            Effect::InEffectInProgress(xid) => {
                if !self.raw.is_null() && !h.is_deleted() {
                    // SAFETY: a dirty snapshot reports whom to wait for in xmin.
                    unsafe { (*self.raw).xmin = xid32(xid) };
                }
                !h.is_deleted()
            }
            Effect::NotInEffect => false,
        }
    }
}
