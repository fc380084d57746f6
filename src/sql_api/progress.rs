//! `torii.progress`: torii's long functions as they run (see `crate::progress`).

use crate::progress;
use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_extern(
    name = "progress_rows",
    sql = r#"
CREATE FUNCTION torii.progress_rows(OUT pid integer, OUT datid oid, OUT command text,
    OUT relid oid, OUT blocks_done bigint, OUT blocks_total bigint, OUT started timestamptz)
RETURNS SETOF record VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'progress_rows_wrapper';
CREATE VIEW torii.progress AS SELECT * FROM torii.progress_rows();
COMMENT ON VIEW torii.progress IS
  'Running torii functions (torii.verify), one row per backend, with the blocks done so far';
GRANT SELECT ON torii.progress TO PUBLIC;
"#
)]
#[allow(clippy::type_complexity)]
fn progress_rows() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(datid, pg_sys::Oid),
        name!(command, String),
        name!(relid, Option<pg_sys::Oid>),
        name!(blocks_done, Option<i64>),
        name!(blocks_total, Option<i64>),
        name!(started, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    // As pg_stat_progress_*: the details of other roles' commands only for pg_read_all_stats.
    // SAFETY: catalog lookups of role membership.
    let (me, all) = unsafe {
        let me = pg_sys::GetUserId();
        let all = pg_sys::has_privs_of_role(me, pg_sys::Oid::from(pg_sys::ROLE_PG_READ_ALL_STATS));
        (me, all)
    };
    let rows = progress::running().into_iter().map(move |r| {
        // SAFETY: as above.
        let mine = all || unsafe { pg_sys::has_privs_of_role(me, r.userid) };
        let started = pgrx::datum::TimestampWithTimeZone::try_from(r.started).ok();
        (
            r.pid,
            r.datid,
            r.command.to_string(),
            mine.then_some(r.relid),
            mine.then_some(r.done),
            mine.then_some(r.total),
            started.filter(|_| mine),
        )
    });
    TableIterator::new(rows.collect::<Vec<_>>())
}
