//! `torii.verify(regclass)`: one row per damaged or malformed page, none for a clean table.

use crate::progress;
use crate::storage::buffer::{Lock, LockedBuffer};
use crate::storage::pages;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgRelation;
use torii_core::meta::Meta;
use torii_core::page::{self, PageKind};
use torii_core::undo::UndoRecord;

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

/// Follows the undo chain from the metapage: every page on it must be an undo page, the chain
/// must end at the recorded tail without loops, and every record must decode and name a row
/// inside the table. Then the free-page list.
fn check_undo_chain(rel: pg_sys::Relation, nblocks: u32, out: &mut Vec<(i64, String)>) {
    if nblocks == 0 {
        return;
    }
    // SAFETY: block 0 exists; guards release pins and locks.
    let meta = unsafe { LockedBuffer::read(rel, 0, Lock::Share, std::ptr::null_mut()) };
    if page::verify(meta.page()).is_err() || Meta::check(meta.page()).is_err() {
        return; // already reported for block 0
    }
    let m = Meta::read(meta.page());
    drop(meta);
    let last = walk_chain(
        rel,
        nblocks,
        m.undo_head,
        ("undo chain", PageKind::Undo, "an undo page"),
        out,
        |blk, p, out| {
            for off in 1..=page::line_pointer_count(p) {
                let lp = page::line_pointer(p, off);
                if lp.flags != page::LP_NORMAL {
                    continue;
                }
                if lp.off < page::pd_upper(p) || lp.off + lp.len > page::SPECIAL_OFFSET {
                    out.push((
                        blk as i64,
                        format!("undo record {off} points outside the page"),
                    ));
                    continue;
                }
                match UndoRecord::decode(&p[lp.off..lp.off + lp.len]) {
                    Err(e) => out.push((blk as i64, format!("undo record {off}: {e}"))),
                    Ok(r) if r.tid_blk == 0 || r.tid_blk >= nblocks => out.push((
                        blk as i64,
                        format!(
                            "undo record {off} names block {}, outside the table",
                            r.tid_blk
                        ),
                    )),
                    Ok(_) => {}
                }
            }
        },
    );
    if let Some(last) = last {
        if last != m.undo_tail {
            out.push((
                0,
                format!("undo tail is {} but the chain ends at {last}", m.undo_tail),
            ));
        }
    }
    // The free-page list: every page on it a free page, inside the table, no loop.
    walk_chain(
        rel,
        nblocks,
        m.free_head,
        ("free-page list", PageKind::Free, "a free page"),
        out,
        |_, _, _| {},
    );
}

/// Follows a chain of pages linked through their special space's `next` from `head`: each
/// must be inside the table and of the chain's kind, without a loop; `visit` checks each
/// page's contents. Returns the last block when the chain ended properly (None after a
/// reported problem, or a page that failed its checksum, which the page pass reports).
/// `what` is the chain's name, the page kind it holds, and that kind's name for messages.
fn walk_chain(
    rel: pg_sys::Relation,
    nblocks: u32,
    head: u32,
    what: (&str, PageKind, &str),
    out: &mut Vec<(i64, String)>,
    mut visit: impl FnMut(u32, &[u8], &mut Vec<(i64, String)>),
) -> Option<u32> {
    let (chain, kind, kind_name) = what;
    let mut blk = head;
    let mut last = page::NO_BLOCK;
    let mut steps = 0u32;
    while blk != page::NO_BLOCK {
        if blk == 0 || blk >= nblocks {
            out.push((
                blk as i64,
                format!("{chain} points to block {blk}, outside the table"),
            ));
            return None;
        }
        steps += 1;
        if steps > nblocks {
            out.push((blk as i64, format!("{chain} loops")));
            return None;
        }
        // SAFETY: blk is inside the relation.
        let b = unsafe { LockedBuffer::read(rel, blk, Lock::Share, std::ptr::null_mut()) };
        let p = b.page();
        if page::verify(p).is_err() {
            return None; // reported by the page pass
        }
        if page::kind(p) != Some(kind) {
            out.push((
                blk as i64,
                format!("page on the {chain} is not {kind_name}"),
            ));
            return None;
        }
        visit(blk, p, out);
        last = blk;
        blk = page::read_special(p).next;
    }
    Some(last)
}

#[pg_extern(strict)]
fn verify(rel: PgRelation) -> TableIterator<'static, (name!(blkno, i64), name!(problem, String))> {
    let raw = rel.as_ptr();
    // SAFETY: PgRelation keeps the relation open.
    if unsafe { crate::btree::verify::is_torii_btree(raw) } {
        // A torii_btree index: its own structure check (checksums, order, links).
        // SAFETY: as above; the check takes its own buffer locks.
        return TableIterator::new(unsafe { crate::btree::verify::check(raw, false) });
    }
    super::maintenance::require_torii(&rel);
    // SAFETY: privilege lookup on an open relation.
    unsafe {
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
    // SAFETY: raw is the relation `rel` holds open.
    let n = unsafe { pages::nblocks(raw) };
    let task = progress::Task::start(progress::TaskKind::Verify, rel.oid(), n as u64);
    for blk in 0..n {
        {
            // SAFETY: blk is inside the relation; the guard releases pin and lock.
            let b = unsafe { LockedBuffer::read(raw, blk, Lock::Share, std::ptr::null_mut()) };
            for problem in check_page(blk, b.page()) {
                out.push((blk as i64, problem));
            }
        }
        task.advance(blk as u64 + 1);
        progress::page_done();
    }
    check_undo_chain(raw, n, &mut out);
    TableIterator::new(out)
}
