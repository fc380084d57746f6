//! # Visibility
//!
//! Whether a snapshot sees a row version is decided from the version's writer — the 64-bit xid
//! and command id in the row header — and from what the transaction system says about that
//! writer. This module holds the decision rules without PostgreSQL in them; the glue answers
//! the questions of [`XactOracle`] with `TransactionIdIsCurrentTransactionId`,
//! `XidInMVCCSnapshot` and `TransactionIdDidCommit`.
//!
//! The rules ask one question per version: is the *change* that produced this version in
//! effect for the snapshot? If it is, the version is what the snapshot sees (a deleted version
//! means: no row). If it is not, the snapshot sees the previous version, reached through the
//! undo pointer (none, for an insert: no row).
//!
//! | writer                                   | MVCC               | Self / NonVacuumable | Dirty            | Any | RowVersion |
//! |------------------------------------------|--------------------|----------------------|------------------|-----|------------|
//! | frozen (0) or below the resolved horizon | in effect          | in effect            | in effect        | in effect | in effect |
//! | this transaction                         | iff cid < curcid   | in effect            | in effect        | in effect | in effect |
//! | running for the snapshot                 | not in effect      | not in effect (Self) | in effect, wait  | in effect | not in effect |
//! | committed (not running for snapshot)     | in effect          | in effect            | in effect        | in effect | in effect |
//! | aborted or crashed                       | not in effect      | not in effect        | not in effect    | not in effect | not in effect |
//!
//! "Running for the snapshot" means in the MVCC snapshot's running set (or past its xmax); for
//! the other kinds, still in progress now. NonVacuumable treats a change by a running writer as
//! in effect (the row is not removable). `SnapshotAny` sees the newest version whose writer did
//! not abort — deleted or not (heap's SnapshotAny returns whatever tuple a TID holds; the
//! executor uses it to fetch the row it is about to update).
//!
//! `RowVersion` is what torii gives for `SnapshotAny` when the executor fetches one row by TID
//! (`table_tuple_fetch_row_version`): heap's TID names one version, the one the executor's scan
//! found or locked; a torii TID names the row. The executor builds the new row of an UPDATE from
//! that fetch (unchanged columns included), so the version must not be another transaction's
//! running change: if that transaction aborts, the update would write its values. Changes of
//! running transactions are therefore not in effect; the executor's own and committed ones
//! are (a committed change its snapshot does not see makes the update report a concurrent
//! update and re-fetch after locking, as with heap). Before falling back to `RowVersion`, the
//! glue (`tuple_fetch_row_version`) answers as of the active MVCC snapshot unless this
//! transaction wrote or locked the newest version: that is the version a heap TID from the
//! statement's scan names (EvalPlanQual re-reads rows of tables it does not lock that way).

/// The snapshot kinds the executor hands to a table AM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotKind {
    /// An MVCC snapshot; `curcid` is the snapshot's command id.
    Mvcc { curcid: u32 },
    /// `SnapshotSelf`: committed changes plus everything of this transaction.
    SelfSnap,
    /// `SnapshotAny`: every version.
    Any,
    /// `SnapshotDirty`: committed and in-progress changes (unique checks, EvalPlanQual).
    Dirty,
    /// `SnapshotNonVacuumable`: everything not yet removable.
    NonVacuumable,
    /// `SnapshotToast`: like Self for rows that are not in TOAST tables (torii's are heap).
    Toast,
    /// `SnapshotAny` for a fetch of one row by TID: committed changes and our own.
    RowVersion,
}

/// Questions about a writer xid that only the transaction system can answer.
pub trait XactOracle {
    /// The xid is the current transaction or one of its live subtransactions.
    fn is_current(&self, xid: u64) -> bool;
    /// The xid was running when the MVCC snapshot was taken (so its changes are invisible).
    fn running_in_snapshot(&self, xid: u64) -> bool;
    /// The xid is running now (for non-MVCC snapshots).
    fn in_progress(&self, xid: u64) -> bool;
    /// The xid committed (asked only when it is not running).
    fn did_commit(&self, xid: u64) -> bool;
}

/// Whether the change that produced a version is in effect for a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The snapshot sees this version.
    InEffect,
    /// The snapshot sees the previous version.
    NotInEffect,
    /// `SnapshotDirty` only: in effect, but written by this still-running transaction; callers
    /// that must wait for it (unique checks) get its xid.
    InEffectInProgress(u64),
}

/// Applies the table of the module documentation. `horizon` is the table's resolved horizon:
/// writers below it need no questions.
pub fn change_effect(
    kind: SnapshotKind,
    xid: u64,
    cid: u32,
    horizon: u64,
    oracle: &impl XactOracle,
) -> Effect {
    if xid == 0 || xid < horizon {
        return Effect::InEffect;
    }
    if oracle.is_current(xid) {
        return match kind {
            SnapshotKind::Mvcc { curcid } if cid >= curcid => Effect::NotInEffect,
            _ => Effect::InEffect,
        };
    }
    match kind {
        SnapshotKind::Mvcc { .. } => {
            if oracle.running_in_snapshot(xid) {
                Effect::NotInEffect
            } else if oracle.did_commit(xid) {
                Effect::InEffect
            } else {
                Effect::NotInEffect
            }
        }
        SnapshotKind::RowVersion => {
            if !oracle.in_progress(xid) && oracle.did_commit(xid) {
                Effect::InEffect
            } else {
                Effect::NotInEffect
            }
        }
        SnapshotKind::Any => {
            if oracle.in_progress(xid) || oracle.did_commit(xid) {
                Effect::InEffect
            } else {
                Effect::NotInEffect
            }
        }
        SnapshotKind::SelfSnap
        | SnapshotKind::Toast
        | SnapshotKind::NonVacuumable
        | SnapshotKind::Dirty => {
            if oracle.in_progress(xid) {
                match kind {
                    SnapshotKind::Dirty => Effect::InEffectInProgress(xid),
                    SnapshotKind::NonVacuumable => Effect::InEffect,
                    _ => Effect::NotInEffect,
                }
            } else if oracle.did_commit(xid) {
                Effect::InEffect
            } else {
                Effect::NotInEffect
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A scripted transaction system: xid 10 is us, 20 is running, 30 committed, 40 aborted;
    /// the snapshot also counts 35 (committed after it was taken) as running.
    struct Script {
        current: HashSet<u64>,
        running_now: HashSet<u64>,
        running_in_snap: HashSet<u64>,
        committed: HashSet<u64>,
    }

    impl XactOracle for Script {
        fn is_current(&self, xid: u64) -> bool {
            self.current.contains(&xid)
        }
        fn running_in_snapshot(&self, xid: u64) -> bool {
            self.running_in_snap.contains(&xid)
        }
        fn in_progress(&self, xid: u64) -> bool {
            self.running_now.contains(&xid)
        }
        fn did_commit(&self, xid: u64) -> bool {
            self.committed.contains(&xid)
        }
    }

    fn script() -> Script {
        Script {
            current: [10].into(),
            running_now: [20].into(),
            running_in_snap: [20, 35].into(),
            committed: [30, 35].into(),
        }
    }

    #[test]
    fn mvcc_rules() {
        let s = script();
        let mvcc = SnapshotKind::Mvcc { curcid: 3 };
        let e = |xid, cid| change_effect(mvcc, xid, cid, 5, &s);
        assert_eq!(e(0, 0), Effect::InEffect, "frozen");
        assert_eq!(e(4, 0), Effect::InEffect, "below horizon");
        assert_eq!(e(10, 2), Effect::InEffect, "own earlier command");
        assert_eq!(e(10, 3), Effect::NotInEffect, "own current command");
        assert_eq!(e(20, 0), Effect::NotInEffect, "running");
        assert_eq!(e(30, 0), Effect::InEffect, "committed");
        assert_eq!(
            e(35, 0),
            Effect::NotInEffect,
            "committed after the snapshot"
        );
        assert_eq!(e(40, 0), Effect::NotInEffect, "aborted");
    }

    #[test]
    fn other_snapshot_kinds() {
        let s = script();
        let e = |k, xid| change_effect(k, xid, 9, 5, &s);
        use SnapshotKind::*;
        assert_eq!(e(SelfSnap, 10), Effect::InEffect);
        assert_eq!(e(SelfSnap, 20), Effect::NotInEffect);
        assert_eq!(e(SelfSnap, 35), Effect::InEffect);
        assert_eq!(e(Dirty, 20), Effect::InEffectInProgress(20));
        assert_eq!(e(Dirty, 40), Effect::NotInEffect);
        assert_eq!(e(Dirty, 30), Effect::InEffect);
        assert_eq!(e(NonVacuumable, 20), Effect::InEffect);
        assert_eq!(e(NonVacuumable, 40), Effect::NotInEffect);
        assert_eq!(e(Any, 40), Effect::NotInEffect, "aborted");
        assert_eq!(e(Any, 20), Effect::InEffect, "running");
        assert_eq!(e(Any, 30), Effect::InEffect);
        assert_eq!(e(Toast, 30), Effect::InEffect);
        assert_eq!(e(RowVersion, 10), Effect::InEffect, "own change");
        assert_eq!(e(RowVersion, 20), Effect::NotInEffect, "running elsewhere");
        assert_eq!(e(RowVersion, 35), Effect::InEffect, "committed");
        assert_eq!(e(RowVersion, 40), Effect::NotInEffect, "aborted");
    }
}
