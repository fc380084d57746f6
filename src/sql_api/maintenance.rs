//! `torii.vacuum(regclass)` and `torii.stats(regclass)`.

use crate::am::{self, vacuum};
use crate::storage::pages;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgRelation;
use torii_core::meta::Meta;
use torii_core::page::{self, PageKind, LP_DEAD, LP_NORMAL};
use torii_core::row::RowHeader;
use torii_core::undo::UndoRecord;

/// Raises the errors every torii function gives for a relation that is not a torii table.
pub fn require_torii(rel: &PgRelation) {
    let raw = rel.as_ptr();
    // SAFETY: PgRelation keeps the relation open.
    let ok = unsafe {
        let kind = (*(*raw).rd_rel).relkind as u8;
        (kind == pg_sys::RELKIND_RELATION || kind == pg_sys::RELKIND_MATVIEW)
            && !(*raw).rd_tableam.is_null()
            && am::is_torii(raw)
    };
    if !ok {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{}\" is not a torii table", rel.name())
        );
    }
}

/// Opens a relation by OID with `lockmode`, with a clear error for OIDs that name nothing.
fn open(oid: pg_sys::Oid, lockmode: u32) -> PgRelation {
    // SAFETY: try_relation_open returns NULL for a missing relation instead of raising.
    let raw = unsafe { pg_sys::try_relation_open(oid, lockmode as i32) };
    if raw.is_null() {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", u32::from(oid))
        );
    }
    // SAFETY: raw is open; PgRelation closes it (the lock stays until transaction end).
    unsafe { PgRelation::from_pg_owned(raw) }
}

#[pg_extern(
    strict,
    name = "vacuum",
    sql = r#"
CREATE FUNCTION torii.vacuum(rel regclass,
    OUT undo_records_discarded bigint, OUT undo_bytes_discarded bigint,
    OUT undo_pages_freed bigint, OUT rows_rolled_back bigint,
    OUT rows_reclaimed bigint, OUT bytes_reclaimed bigint,
    OUT dead_pointers_freed bigint, OUT horizon_before xid8, OUT horizon_after xid8)
RETURNS SETOF record STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'torii_vacuum_wrapper';
COMMENT ON FUNCTION torii.vacuum(regclass) IS
  'Discards undo no snapshot needs, reclaims deleted rows and their index entries, advances the resolved horizon';
"#
)]
#[allow(clippy::type_complexity)]
fn torii_vacuum(
    rel: pg_sys::Oid,
) -> TableIterator<
    'static,
    (
        name!(undo_records_discarded, i64),
        name!(undo_bytes_discarded, i64),
        name!(undo_pages_freed, i64),
        name!(rows_rolled_back, i64),
        name!(rows_reclaimed, i64),
        name!(bytes_reclaimed, i64),
        name!(dead_pointers_freed, i64),
        name!(horizon_before, i64),
        name!(horizon_after, i64),
    ),
> {
    // Like VACUUM: it writes, so not during recovery (SQLSTATE 25006).
    // SAFETY: raises the standard error on a standby.
    unsafe { pg_sys::PreventCommandDuringRecovery(c"torii.vacuum()".as_ptr()) };
    let r = open(rel, pg_sys::ShareUpdateExclusiveLock);
    require_torii(&r);
    // Same privilege rule as VACUUM: owner of the table or of the database, or superuser.
    // SAFETY: catalog lookups.
    unsafe {
        if !pg_sys::pg_class_ownercheck(r.oid(), pg_sys::GetUserId())
            && !pg_sys::pg_database_ownercheck(pg_sys::MyDatabaseId, pg_sys::GetUserId())
        {
            pg_sys::aclcheck_error(
                pg_sys::AclResult::ACLCHECK_NOT_OWNER,
                pg_sys::ObjectType::OBJECT_TABLE,
                (*(*r.as_ptr()).rd_rel).relname.data.as_ptr(),
            );
        }
    }
    // SAFETY: the table is open with VACUUM's lock.
    // Reported in pg_stat_progress_vacuum, as VACUUM (it does VACUUM's first phases).
    let cmd = crate::progress::Command::start(
        pg_sys::ProgressCommandType::PROGRESS_COMMAND_VACUUM,
        r.oid(),
    );
    let st = unsafe { vacuum::vacuum(r.as_ptr(), std::ptr::null_mut(), false, &cmd) };
    TableIterator::once((
        st.undo_records_discarded,
        st.undo_bytes_discarded,
        st.undo_pages_freed,
        st.rows_rolled_back,
        st.rows_reclaimed,
        st.bytes_reclaimed,
        st.dead_pointers_freed,
        st.horizon_before,
        st.horizon_after,
    ))
}

#[pg_extern(
    strict,
    name = "stats",
    sql = r#"
CREATE FUNCTION torii.stats(rel regclass,
    OUT pages bigint, OUT data_pages bigint, OUT undo_pages bigint, OUT free_pages bigint,
    OUT live_rows bigint, OUT dead_rows bigint, OUT dead_pointers bigint,
    OUT free_bytes bigint, OUT undo_records bigint, OUT undo_bytes bigint,
    OUT oldest_undo_xid xid8, OUT oldest_undo_age bigint, OUT horizon xid8)
RETURNS SETOF record STRICT VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'torii_stats_wrapper';
COMMENT ON FUNCTION torii.stats(regclass) IS
  'Pages by kind, live and dead rows, free space, undo size and age, resolved horizon (the pgstattuple of torii)';
"#
)]
#[allow(clippy::type_complexity)]
fn torii_stats(
    rel: pg_sys::Oid,
) -> TableIterator<
    'static,
    (
        name!(pages, i64),
        name!(data_pages, i64),
        name!(undo_pages, i64),
        name!(free_pages, i64),
        name!(live_rows, i64),
        name!(dead_rows, i64),
        name!(dead_pointers, i64),
        name!(free_bytes, i64),
        name!(undo_records, i64),
        name!(undo_bytes, i64),
        name!(oldest_undo_xid, Option<i64>),
        name!(oldest_undo_age, Option<i64>),
        name!(horizon, i64),
    ),
> {
    let r = open(rel, pg_sys::AccessShareLock);
    require_torii(&r);
    // SAFETY: privilege lookup.
    unsafe {
        let acl = pg_sys::pg_class_aclcheck(r.oid(), pg_sys::GetUserId(), pg_sys::ACL_SELECT);
        if acl != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                acl,
                pg_sys::ObjectType::OBJECT_TABLE,
                (*(*r.as_ptr()).rd_rel).relname.data.as_ptr(),
            );
        }
    }
    let raw = r.as_ptr();
    // SAFETY: raw is the relation `r` holds open.
    let n = unsafe { pages::nblocks(raw) };
    let (mut data, mut undo, mut free) = (0i64, 0i64, 0i64);
    let (mut live, mut dead, mut dead_lp, mut free_bytes) = (0i64, 0i64, 0i64, 0i64);
    let (mut undo_recs, mut undo_bytes) = (0i64, 0i64);
    let mut oldest: Option<u64> = None;
    let mut horizon = 0u64;
    let mut copy = vec![0u8; page::BLCKSZ];
    for blk in 0..n {
        pgrx::check_for_interrupts!();
        // SAFETY: blk is inside the relation.
        let kind = unsafe { pages::copy_page(raw, blk, std::ptr::null_mut(), &mut copy) };
        match kind {
            Some(PageKind::Meta) => horizon = Meta::read(&copy).horizon,
            Some(PageKind::Data) => {
                data += 1;
                free_bytes += page::free_space(&copy) as i64;
                for off in 1..=page::line_pointer_count(&copy) {
                    let lp = page::line_pointer(&copy, off);
                    if lp.flags == LP_DEAD {
                        dead_lp += 1;
                    } else if lp.flags == LP_NORMAL {
                        if RowHeader::read(&copy[lp.off..lp.off + lp.len]).is_deleted() {
                            dead += 1;
                        } else {
                            live += 1;
                        }
                    }
                }
            }
            Some(PageKind::Undo) => {
                undo += 1;
                for off in 1..=page::line_pointer_count(&copy) {
                    let lp = page::line_pointer(&copy, off);
                    if lp.flags != LP_NORMAL {
                        continue;
                    }
                    undo_recs += 1;
                    undo_bytes += lp.len as i64;
                    if let Ok(rec) = UndoRecord::decode(&copy[lp.off..lp.off + lp.len]) {
                        oldest = Some(oldest.map_or(rec.xid, |o| o.min(rec.xid)));
                    }
                }
            }
            Some(PageKind::Free) | None => {
                free += 1;
                free_bytes += (page::SPECIAL_OFFSET - page::PAGE_HEADER_SIZE) as i64;
            }
            _ => {}
        }
    }
    // SAFETY: plain transaction-state call.
    let next = unsafe { pg_sys::ReadNextFullTransactionId().value };
    TableIterator::once((
        n as i64,
        data,
        undo,
        free,
        live,
        dead,
        dead_lp,
        free_bytes,
        undo_recs,
        undo_bytes,
        oldest.map(|o| o as i64),
        oldest.map(|o| next.saturating_sub(o) as i64),
        horizon as i64,
    ))
}
