//! Does an UPDATE of a table feed an OLD TABLE transition table (`REFERENCING OLD TABLE` of
//! an AFTER UPDATE trigger on the table or on one of its inheritance/partition ancestors)?
//!
//! The executor captures the old row right after the update by fetching the updated TID with
//! SnapshotAny. An in-place update leaves the new version at that TID, so the transition table
//! would show new values as old ones: such updates must be cold (a new TID, the old TID keeps
//! the old image), as for AFTER UPDATE row triggers.

use pgrx::pg_sys;
use std::cell::Cell;

/// pg_inherits (catalog/pg_inherits.h), which pgrx's bindings leave out.
const INHERITS_RELATION_ID: pg_sys::Oid = pg_sys::Oid::from_u32(2611);
const INHERITS_RELID_SEQNO_INDEX_ID: pg_sys::Oid = pg_sys::Oid::from_u32(2680);
const ANUM_PG_INHERITS_INHRELID: pg_sys::AttrNumber = 1;

/// `FormData_pg_inherits`: the fixed-width start of a pg_inherits row.
#[repr(C)]
#[allow(dead_code)] // only inhparent is read
struct FormPgInherits {
    inhrelid: pg_sys::Oid,
    inhparent: pg_sys::Oid,
    inhseqno: i32,
    inhdetachpending: bool,
}

thread_local! {
    /// Last answer: (relation, local xid, command id) -> captured. Triggers cannot change
    /// while a command runs (CREATE/DROP TRIGGER lock out writers), so one lookup per table
    /// and command is enough.
    static LAST: Cell<(pg_sys::Oid, u32, u32, bool)> =
        const { Cell::new((pg_sys::Oid::INVALID, 0, 0, false)) };
}

/// True if updates of `rel` may be captured in an OLD TABLE transition table.
///
/// # Safety
/// `rel` must be an open relation, in a transaction.
pub unsafe fn old_rows_captured(rel: pg_sys::Relation) -> bool {
    let relid = (*rel).rd_id;
    let lxid = if pg_sys::MyProc.is_null() {
        0
    } else {
        (*pg_sys::MyProc).lxid
    };
    let cid = pg_sys::GetCurrentCommandId(false);
    let (r, x, c, v) = LAST.with(|l| l.get());
    if r == relid && x == lxid && c == cid {
        return v;
    }
    let v = captures_old(relid, 0);
    LAST.with(|l| l.set((relid, lxid, cid, v)));
    v
}

/// Does `relid` or an ancestor have an AFTER UPDATE trigger with an OLD TABLE?
unsafe fn captures_old(relid: pg_sys::Oid, depth: u32) -> bool {
    // Inheritance cannot loop; the bound only guards against a damaged catalog.
    if depth > 1000 {
        return false;
    }
    let r = pg_sys::RelationIdGetRelation(relid);
    if r.is_null() {
        return false;
    }
    let td = (*r).trigdesc;
    let own = !td.is_null() && (*td).trig_update_old_table;
    pg_sys::RelationClose(r);
    if own {
        return true;
    }
    parents(relid)
        .into_iter()
        .any(|p| captures_old(p, depth + 1))
}

/// The direct inheritance (or partition) parents of `relid`.
unsafe fn parents(relid: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    let mut out = Vec::new();
    let inh = pg_sys::table_open(INHERITS_RELATION_ID, pg_sys::AccessShareLock as i32);
    let mut key: pg_sys::ScanKeyData = std::mem::zeroed();
    pg_sys::ScanKeyInit(
        &mut key,
        ANUM_PG_INHERITS_INHRELID,
        pg_sys::BTEqualStrategyNumber as u16,
        pg_sys::Oid::from_u32(pg_sys::F_OIDEQ),
        pg_sys::Datum::from(relid),
    );
    let scan = pg_sys::systable_beginscan(
        inh,
        INHERITS_RELID_SEQNO_INDEX_ID,
        true,
        std::ptr::null_mut(),
        1,
        &mut key,
    );
    loop {
        let tup = pg_sys::systable_getnext(scan);
        if tup.is_null() {
            break;
        }
        // GETSTRUCT: the row's fixed-width columns start at t_hoff.
        let data = (*tup).t_data as *const u8;
        let form = data.add((*(*tup).t_data).t_hoff as usize) as *const FormPgInherits;
        out.push((*form).inhparent);
    }
    pg_sys::systable_endscan(scan);
    pg_sys::table_close(inh, pg_sys::AccessShareLock as i32);
    out
}
