//! `torii.verify(regclass)`: one row per damaged or malformed page, none for a clean table.

use crate::am;
use crate::storage::buffer::{Lock, LockedBuffer};
use crate::storage::pages;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgRelation;
use torii_core::meta::Meta;
use torii_core::page::{self, PageKind};

/// Checks one page image; returns the problems found.
fn check_page(blk: u32, p: &[u8]) -> Vec<String> {
    if page::is_new(p) {
        return vec![];
    }
    if let Err(e) = page::verify(p) {
        return vec![e.to_string()];
    }
    let mut problems = vec![];
    let kind = page::kind(p);
    if blk == 0 {
        if let Err(e) = Meta::check(p) {
            problems.push(e);
        }
        return problems;
    }
    match kind {
        Some(PageKind::Meta) => problems.push("metapage outside block 0".into()),
        Some(PageKind::Data) => {
            let n = page::line_pointer_count(p);
            if n > page::MAX_ROWS_PER_PAGE {
                problems.push(format!(
                    "{n} line pointers (max {})",
                    page::MAX_ROWS_PER_PAGE
                ));
            }
            for off in 1..=n.min(page::MAX_ROWS_PER_PAGE) {
                let lp = page::line_pointer(p, off);
                if lp.flags != page::LP_NORMAL {
                    continue;
                }
                if lp.off < page::pd_upper(p) || lp.off + lp.len > page::SPECIAL_OFFSET {
                    problems.push(format!("line pointer {off} points outside the row area"));
                    continue;
                }
                if let Err(e) = torii_core::row::validate(&p[lp.off..lp.off + lp.len]) {
                    problems.push(format!("row {off}: {e}"));
                }
            }
        }
        _ => {}
    }
    problems
}

#[pg_extern(strict)]
fn verify(rel: PgRelation) -> TableIterator<'static, (name!(blkno, i64), name!(problem, String))> {
    let raw = rel.as_ptr();
    // SAFETY: PgRelation holds the relation open with AccessShareLock.
    unsafe {
        if (*(*raw).rd_rel).relkind as u8 != pg_sys::RELKIND_RELATION
            && (*(*raw).rd_rel).relkind as u8 != pg_sys::RELKIND_MATVIEW
            || (*raw).rd_tableam.is_null()
            || !am::is_torii(raw)
        {
            ereport!(
                PgLogLevel::ERROR,
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("\"{}\" is not a torii table", rel.name())
            );
        }
        let acl = pg_sys::pg_class_aclcheck(rel.oid(), pg_sys::GetUserId(), pg_sys::ACL_SELECT);
        if acl != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                acl,
                pg_sys::ObjectType::OBJECT_TABLE,
                (*(*raw).rd_rel).relname.data.as_ptr(),
            );
        }
    }
    let mut out = vec![];
    let n = pages::nblocks(raw);
    for blk in 0..n {
        pgrx::check_for_interrupts!();
        // SAFETY: blk is inside the relation; the guard releases pin and lock.
        let b = unsafe { LockedBuffer::read(raw, blk, Lock::Share, std::ptr::null_mut()) };
        for problem in check_page(blk, b.page()) {
            out.push((blk as i64, problem));
        }
    }
    TableIterator::new(out)
}
