//! The index access method `torii_btree` (issue 6): an ordered B+-tree with Lehman–Yao
//! right-links, posting lists of compressed TIDs, CRC32C-checked pages and generic WAL. It
//! works on heap and torii tables alike (it only deals in TIDs).
//!
//! The page and item formats live in the pgrx-free crate `torii-btree`; this module applies
//! them to PostgreSQL buffers:
//!
//! * [`keys`]: comparing keys with the operator classes' comparison functions;
//! * [`tree`]: descents, insertion, page splits, and the WAL records (`wal_*`);
//! * [`build`]: `ambuild` (sort in memory, load bottom-up), `ambuildempty`, `aminsert` with
//!   uniqueness checks;
//! * [`scan`]: `amgettuple` (both directions), `amgetbitmap`, index-only scans;
//! * [`vacuum`]: `ambulkdelete`, `amvacuumcleanup` (pages are not recycled in this version);
//! * [`verify`]: the structure check, `torii.verify_index(regclass, boolean)`.
//!
//! Operator classes (default for their types) use btree's operators and comparison functions,
//! so the planner maps them to btree's sort orders (ORDER BY, merge joins) and estimates them
//! with btree's own cost function.

pub mod build;
pub mod keys;
pub mod scan;
pub mod tree;
pub mod vacuum;
pub mod verify;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

use pgrx::pg_sys;
use pgrx::prelude::*;

mod selfuncs {
    #![allow(clippy::too_many_arguments)]
    use pgrx::pg_sys;
    use pgrx::prelude::*;

    #[pg_guard]
    unsafe extern "C-unwind" {
        /// utils/index_selfuncs.h: btree's cost estimate, used as is (our operator classes have
        /// btree's strategy numbers).
        pub fn btcostestimate(
            root: *mut pg_sys::PlannerInfo,
            path: *mut pg_sys::IndexPath,
            loop_count: f64,
            startup: *mut pg_sys::Cost,
            total: *mut pg_sys::Cost,
            selectivity: *mut pg_sys::Selectivity,
            correlation: *mut f64,
            pages: *mut f64,
        );
    }
}
use selfuncs::btcostestimate;

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn amcostestimate(
    root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    loop_count: f64,
    startup: *mut pg_sys::Cost,
    total: *mut pg_sys::Cost,
    selectivity: *mut pg_sys::Selectivity,
    correlation: *mut f64,
    pages: *mut f64,
) {
    let info = (*path).indexinfo;
    if (*info).tree_height < 0 {
        // The planner reads btree's root height from its metapage; ours is in our metapage.
        let rel = pg_sys::index_open((*info).indexoid, pg_sys::NoLock as i32);
        if crate::storage::pages::nblocks(rel) > 0 {
            (*info).tree_height = tree::read_meta(rel).root_level as i32;
        }
        pg_sys::index_close(rel, pg_sys::NoLock as i32);
    }
    btcostestimate(
        root,
        path,
        loop_count,
        startup,
        total,
        selectivity,
        correlation,
        pages,
    );
}

#[pg_guard]
unsafe extern "C-unwind" fn amoptions(
    reloptions: pg_sys::Datum,
    validate: bool,
) -> *mut pg_sys::bytea {
    if validate && reloptions.value() != 0 {
        pgrx::error!("torii_btree indexes take no storage parameters");
    }
    std::ptr::null_mut()
}

#[pg_guard]
unsafe extern "C-unwind" fn amvalidate(_opclass: pg_sys::Oid) -> bool {
    true
}

/// `torii_btree_handler(internal) RETURNS index_am_handler`.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn torii_btree_handler(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // The relcache copies the routine and pfrees this one: it must be palloc'd.
    let r = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexAmRoutine>())
        as *mut pg_sys::IndexAmRoutine;
    (*r).type_ = pg_sys::NodeTag::T_IndexAmRoutine;
    (*r).amstrategies = 5;
    (*r).amsupport = 1;
    (*r).amoptsprocnum = 0;
    (*r).amcanorder = true;
    (*r).amcanorderbyop = false;
    (*r).amcanbackward = true;
    (*r).amcanunique = true;
    (*r).amcanmulticol = true;
    (*r).amoptionalkey = true;
    (*r).amsearcharray = false;
    (*r).amsearchnulls = true;
    (*r).amstorage = false;
    (*r).amclusterable = true;
    (*r).ampredlocks = false;
    (*r).amcanparallel = false;
    (*r).amcaninclude = true;
    (*r).amusemaintenanceworkmem = false;
    (*r).amparallelvacuumoptions = (pg_sys::VACUUM_OPTION_PARALLEL_BULKDEL
        | pg_sys::VACUUM_OPTION_PARALLEL_COND_CLEANUP) as u8;
    (*r).amkeytype = pg_sys::InvalidOid;
    (*r).ambuild = Some(build::ambuild);
    (*r).ambuildempty = Some(build::ambuildempty);
    (*r).aminsert = Some(build::aminsert);
    (*r).ambulkdelete = Some(vacuum::ambulkdelete);
    (*r).amvacuumcleanup = Some(vacuum::amvacuumcleanup);
    (*r).amcanreturn = Some(scan::amcanreturn);
    (*r).amcostestimate = Some(amcostestimate);
    (*r).amoptions = Some(amoptions);
    (*r).amvalidate = Some(amvalidate);
    (*r).ambeginscan = Some(scan::ambeginscan);
    (*r).amrescan = Some(scan::amrescan);
    (*r).amgettuple = Some(scan::amgettuple);
    (*r).amgetbitmap = Some(scan::amgetbitmap);
    (*r).amendscan = Some(scan::amendscan);
    pg_sys::Datum::from(r)
}

#[no_mangle]
pub extern "C" fn pg_finfo_torii_btree_handler() -> &'static pg_sys::Pg_finfo_record {
    static V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

extension_sql!(
    r#"
CREATE FUNCTION torii_btree_handler(internal) RETURNS index_am_handler
    AS 'MODULE_PATHNAME', 'torii_btree_handler' LANGUAGE C STRICT;
CREATE ACCESS METHOD torii_btree TYPE INDEX HANDLER torii_btree_handler;
COMMENT ON ACCESS METHOD torii_btree IS 'torii_btree: B+-tree with compressed posting lists, CRC32C pages, generic WAL';
"#,
    name = "torii_btree_am",
);

extension_sql_file!(
    "opclasses.sql",
    name = "torii_btree_opclasses",
    requires = ["torii_btree_am"]
);
