//! The planner hooks that apply hints.
//!
//! The entry points PostgreSQL calls are in C (`shim.c`, compiled by
//! build.rs): they call into core (the next planner, standard_join_search,
//! geqo, the chained hooks, the scan-path builders) under `PG_TRY`, so that an
//! ERROR raised there reaches PostgreSQL with its original ErrorData (CONTEXT
//! lines included), which pgrx's FFI guard would replace with a copy missing
//! most fields. The `torii_hints_*` functions below are what the shim calls
//! back: `#[pg_guard]`, and holding no Rust value with a destructor while the
//! shim runs core code.
//!
//! * `planner_hook`: finds the statement's hints (comment or stored), applies
//!   `Set(...)` and parallel-cost settings for the duration of planning, and
//!   reports the outcome.
//! * `set_rel_pathlist_hook`: for a hinted base relation, regenerates its
//!   scan paths with the enable_* switches set as the scan hint says, and the
//!   index list restricted to the named indexes (what the planner would do
//!   with those settings for that relation alone).
//! * `join_search_hook`: when join hints apply, runs a dynamic-programming
//!   join search of its own that only builds join relations allowed by
//!   `Leading`, sets the join-method switches while building a hinted join
//!   relation, and corrects row estimates for `Rows`.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void, CString};

use pgrx::pg_sys;
use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
use pgrx::prelude::*;
use torii_hints::{Hint, HintKind, JoinMethod, Leading, LeadingTree, RowsCorrection, ScanMethod};

use super::{
    all_active, collect_state, cstr_to_string, join_hints, mark, pop_state, push_state, rel_hints,
    stack_depth, HintState, Status, ENABLE_HINTS, HINTS_DEBUG,
};

thread_local! {
    /// Set while the planner hook itself queries torii.hint_store.
    static IN_LOOKUP: Cell<bool> = const { Cell::new(false) };
}

extern "C-unwind" {
    // Not in pgrx's bindings (joininfo.h), exported by the server.
    fn have_relevant_joinclause(
        root: *mut pg_sys::PlannerInfo,
        rel1: *mut pg_sys::RelOptInfo,
        rel2: *mut pg_sys::RelOptInfo,
    ) -> bool;
}

extern "C" {
    // shim.c: saves the previous planner, set_rel_pathlist and join_search
    // hooks and installs its entry points (plain assignments, cannot fail).
    fn torii_hints_install_hooks();
}

extern "C-unwind" {
    // shim.c: build a join relation (make_join_rel, or with `direction` +1 /
    // -1 an inner join with r1 / r2 as the outer side only) with the join
    // switches set as `switches` says; finish a join relation of a level
    // (partitionwise paths, gather paths when `gather`, set_cheapest). An
    // ERROR raised by core in there is caught, copied into `*error` (and the
    // error state flushed): torii_hints_join_search returns it to the shim,
    // which re-throws it unchanged with ReThrowError once the Rust frames are
    // gone. Called through pg_guard_ffi_boundary all the same.
    fn torii_hints_make_join_rel(
        root: *mut pg_sys::PlannerInfo,
        r1: *mut pg_sys::RelOptInfo,
        r2: *mut pg_sys::RelOptInfo,
        switches: *const JoinSwitches,
        direction: c_int,
        error: *mut *mut pg_sys::ErrorData,
    ) -> *mut pg_sys::RelOptInfo;
    fn torii_hints_finish_join_rel(
        root: *mut pg_sys::PlannerInfo,
        rel: *mut pg_sys::RelOptInfo,
        gather: bool,
        error: *mut *mut pg_sys::ErrorData,
    );
}

/// An ERROR raised by core while torii builds hinted join relations, copied
/// (see torii_hints_make_join_rel); re-thrown as is by shim.c.
type CoreError = *mut pg_sys::ErrorData;

/// Join-method switches for one join relation. Same layout as
/// `ToriiJoinSwitches` in shim.c.
#[repr(C)]
struct JoinSwitches {
    nestloop: bool,
    hashjoin: bool,
    mergejoin: bool,
}

pub(super) unsafe fn install() {
    torii_hints_install_hooks();
}

// ---------------------------------------------------------------------------
// small helpers

unsafe fn list_ptrs<T>(l: *mut pg_sys::List) -> Vec<*mut T> {
    if l.is_null() {
        return Vec::new();
    }
    (0..(*l).length as usize)
        .map(|i| (*(*l).elements.add(i)).ptr_value as *mut T)
        .collect()
}

unsafe fn list_from<T>(v: &[*mut T]) -> *mut pg_sys::List {
    let mut l: *mut pg_sys::List = std::ptr::null_mut();
    for p in v {
        l = pg_sys::lappend(l, *p as *mut c_void);
    }
    l
}

unsafe fn relids_vec(b: *const pg_sys::Bitmapset) -> Vec<i32> {
    let mut out = Vec::new();
    let mut x = -1;
    loop {
        x = pg_sys::bms_next_member(b, x);
        if x < 0 {
            break;
        }
        out.push(x);
    }
    out
}

unsafe fn rte_alias(rte: *mut pg_sys::RangeTblEntry) -> String {
    if rte.is_null() || (*rte).eref.is_null() {
        return String::new();
    }
    cstr_to_string((*(*rte).eref).aliasname)
}

fn is_subset(a: &[i32], b: &[i32]) -> bool {
    a.iter().all(|x| b.contains(x))
}

fn union(a: &[i32], b: &[i32]) -> Vec<i32> {
    let mut v: Vec<i32> = a.iter().chain(b.iter()).copied().collect();
    v.sort_unstable();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------
// planner_hook

/// Pops the hint state if `torii_hints_planner_begin` fails after pushing it.
struct StackGuard(usize);

impl Drop for StackGuard {
    fn drop(&mut self) {
        while stack_depth() > self.0 {
            pop_state();
        }
    }
}

struct LookupGuard;

impl Drop for LookupGuard {
    fn drop(&mut self) {
        IN_LOOKUP.with(|c| c.set(false));
    }
}

/// The hints stored for a query id, if torii.hint_store exists and has them.
unsafe fn stored_hints(query_id: i64) -> Option<String> {
    if query_id == 0 || !pg_sys::ActiveSnapshotSet() {
        return None;
    }
    let nsp = pg_sys::get_namespace_oid(c"torii".as_ptr(), true);
    if nsp == pg_sys::InvalidOid {
        return None;
    }
    let store = pg_sys::get_relname_relid(c"hint_store".as_ptr(), nsp);
    if store == pg_sys::InvalidOid {
        return None;
    }
    // A role that may not read the store plans without stored hints instead of failing.
    let me = pg_sys::GetUserId();
    if pg_sys::pg_namespace_aclcheck(nsp, me, pg_sys::ACL_USAGE) != pg_sys::AclResult::ACLCHECK_OK
        || pg_sys::pg_class_aclcheck(store, me, pg_sys::ACL_SELECT)
            != pg_sys::AclResult::ACLCHECK_OK
    {
        return None;
    }
    IN_LOOKUP.with(|c| c.set(true));
    let _g = LookupGuard;
    Spi::connect(|_client| lookup_read_only(query_id))
}

/// Runs the hint_store lookup through SPI as a read-only query, inside the caller's
/// `Spi::connect`. Read-only matters: pgrx's own `select` runs non-read-only SPI once the
/// transaction has an xid, and that does a `CommandCounterIncrement` and takes a new snapshot
/// in the middle of whatever is being planned; e.g. ALTER TABLE ... DETACH PARTITION plans its
/// foreign-key check between deleting the pg_inherits row and clearing relispartition, and the
/// early CCI made the planner fail with "could not find tuple for parent of relation".
///
/// # Safety
/// SPI must be connected; an active snapshot must be set.
unsafe fn lookup_read_only(query_id: i64) -> Option<String> {
    let mut argtypes = [pg_sys::INT8OID];
    let mut values = [pg_sys::Datum::from(query_id)];
    let rc = pg_sys::SPI_execute_with_args(
        c"SELECT hints FROM torii.hint_store WHERE query_id = $1".as_ptr(),
        1,
        argtypes.as_mut_ptr(),
        values.as_mut_ptr(),
        std::ptr::null(),
        true,
        1,
    );
    let tt = pg_sys::SPI_tuptable;
    if rc != pg_sys::SPI_OK_SELECT as i32 || tt.is_null() || pg_sys::SPI_processed == 0 {
        return None;
    }
    let mut isnull = false;
    let d = pg_sys::SPI_getbinval(*(*tt).vals, (*tt).tupdesc, 1, &mut isnull);
    // Copied into a Rust String before SPI_finish frees the SPI memory.
    String::from_datum(d, isnull)
}

/// The text of the statement being planned (a multi-statement string is cut
/// to the statement's own location).
unsafe fn statement_text(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
) -> String {
    let qs = cstr_to_string(query_string);
    let loc = (*parse).stmt_location;
    let len = (*parse).stmt_len;
    if loc > 0 {
        let loc = loc as usize;
        let end = if len > 0 {
            loc + len as usize
        } else {
            qs.len()
        };
        if let Some(s) = qs.get(loc..end.min(qs.len())) {
            return s.to_string();
        }
    }
    if loc == 0 && len > 0 {
        if let Some(s) = qs.get(..(len as usize).min(qs.len())) {
            return s.to_string();
        }
    }
    qs
}

/// What `torii_hints_planner_begin` hands to the shim (as an opaque pointer)
/// and gets back in `torii_hints_planner_end`.
struct PlanCtx {
    /// Hint-stack depth before this statement's state was pushed.
    depth: usize,
    has_hints: bool,
    /// GUC nest level of the `Set(...)` / `Parallel` settings.
    nest: Option<c_int>,
}

/// planner_hook, first half (called by shim.c before the next planner):
/// finds the statement's hints, pushes them on the hint stack and applies
/// the query-wide settings. Returns null when hints are off (the shim then
/// just calls the next planner); otherwise the shim calls
/// `torii_hints_planner_end` with the pointer exactly once, also when
/// planning fails.
#[pg_guard]
#[no_mangle]
unsafe extern "C-unwind" fn torii_hints_planner_begin(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
) -> *mut c_void {
    if !ENABLE_HINTS.get() || IN_LOOKUP.with(|c| c.get()) {
        return std::ptr::null_mut();
    }

    // Stored hints win over a comment (as pg_hint_plan's hint table does).
    let stored = stored_hints(super::query_id_of(parse, query_string));
    let state = match stored {
        Some(text) => HintState::from_parsed(torii_hints::parse_hints(&text), "stored"),
        None => {
            let text = statement_text(parse, query_string);
            match torii_hints::parse_query(&text) {
                Some(p) => HintState::from_parsed(p, "comment"),
                None => HintState::default(),
            }
        }
    };
    for e in &state.entries {
        if let Status::Error(_) = e.status {
            pgrx::warning!("torii: hint error in {} hint: {}", state.source, e.detail);
        }
    }
    let depth = stack_depth();
    let has_hints = !state.entries.is_empty();
    push_state(state);
    // Pops the state if applying the settings fails; once this function
    // returns, popping is torii_hints_planner_end's job.
    let guard = StackGuard(depth);
    let nest = has_hints.then(|| apply_query_settings());
    std::mem::forget(guard);
    Box::into_raw(Box::new(PlanCtx {
        depth,
        has_hints,
        nest,
    })) as *mut c_void
}

/// planner_hook, second half (called by shim.c after the next planner
/// returned, or from its `PG_CATCH` before re-throwing the error as is):
/// pops the GUC level and the hint state; on success, logs and collects the
/// hints' outcome. With `failed`, only does what cannot raise an error.
#[pg_guard]
#[no_mangle]
unsafe extern "C-unwind" fn torii_hints_planner_end(ctx: *mut c_void, failed: bool) {
    let ctx = Box::from_raw(ctx as *mut PlanCtx);
    if let Some(level) = ctx.nest {
        pg_sys::AtEOXact_GUC(true, level);
    }
    while stack_depth() > ctx.depth + 1 {
        pop_state();
    }
    let state = pop_state().unwrap_or_default();
    if ctx.has_hints && !failed {
        if HINTS_DEBUG.get() {
            log_state(&state);
        }
        collect_state(&state, stack_depth());
    }
}

/// Whether a statement is being planned with hints on (the scan and join
/// entry points of shim.c ask before calling the functions below).
#[pg_guard]
#[no_mangle]
unsafe extern "C-unwind" fn torii_hints_active() -> bool {
    stack_depth() > 0 && ENABLE_HINTS.get()
}

/// Apply `Set(...)` hints and the query-wide parts of `Parallel` hints at a
/// new GUC nest level; returns the level to pop after planning.
unsafe fn apply_query_settings() -> c_int {
    let level = pg_sys::NewGUCNestLevel();
    let context = if pg_sys::superuser() {
        pg_sys::GucContext::PGC_SUSET
    } else {
        pg_sys::GucContext::PGC_USERSET
    };
    let set = |name: &str, value: &str| -> bool {
        let (Ok(n), Ok(v)) = (CString::new(name), CString::new(value)) else {
            return false;
        };
        pg_sys::set_config_option(
            n.as_ptr(),
            v.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            pg_sys::WARNING as c_int,
            false,
        ) > 0
    };
    let mut max_workers = 0u32;
    let mut hard = false;
    for (idx, h) in all_active() {
        match &h.kind {
            HintKind::Set { name, value } => {
                if set(name, value) {
                    mark(idx, Status::Used, "");
                } else {
                    mark(
                        idx,
                        Status::Error("invalid parameter".into()),
                        format!("could not set \"{name}\" to \"{value}\""),
                    );
                }
            }
            HintKind::Parallel {
                workers, hard: h, ..
            } => {
                max_workers = max_workers.max(*workers);
                hard |= *h && *workers > 0;
            }
            _ => {}
        }
    }
    if max_workers as c_int > pg_sys::max_parallel_workers_per_gather {
        set("max_parallel_workers_per_gather", &max_workers.to_string());
    }
    if hard {
        set("parallel_setup_cost", "0");
        set("parallel_tuple_cost", "0");
        set("min_parallel_table_scan_size", "0");
        set("min_parallel_index_scan_size", "0");
    }
    level
}

fn log_state(st: &HintState) {
    let mut msg = format!("torii hints ({}):", st.source);
    for (title, want) in [
        ("used hint", "used"),
        ("not used hint", "not used"),
        ("duplication hint", "duplicated"),
        ("error hint", "error"),
    ] {
        msg.push_str(&format!("\n{title}:"));
        for e in st.entries.iter().filter(|e| e.status.label() == want) {
            msg.push_str(&format!("\n{}", e.text));
            if !e.detail.is_empty() {
                msg.push_str(&format!("  -- {}", e.detail));
            }
        }
    }
    pgrx::log!("{msg}");
}

// ---------------------------------------------------------------------------
// scan hints

/// A hinted base relation's scan settings, filled by
/// `torii_hints_scan_prepare` for shim.c, which regenerates the relation's
/// paths with them (what set_plain_rel_pathlist does) and restores the
/// switches even when that fails. Same layout as `ToriiScanPlan` in shim.c.
#[repr(C)]
struct ScanPlan {
    enable_seqscan: bool,
    enable_indexscan: bool,
    enable_indexonlyscan: bool,
    enable_bitmapscan: bool,
    enable_tidscan: bool,
    /// `Parallel(t n)`: n; -1 without a Parallel hint for the relation.
    workers: c_int,
    // Read by torii_hints_scan_finish only.
    /// Index of the scan hint applied, -1 for none.
    scan_idx: i64,
    /// Index of the Parallel hint applied, -1 for none.
    parallel_idx: i64,
    hard: bool,
    prefer_index_only: bool,
}

/// set_rel_pathlist_hook, first half: whether torii regenerates `rel`'s scan
/// paths (then `plan` is filled). Restricts the index list for
/// `IndexScan(t idx ...)`.
#[pg_guard]
#[no_mangle]
unsafe extern "C-unwind" fn torii_hints_scan_prepare(
    _root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    rte: *mut pg_sys::RangeTblEntry,
    plan: *mut ScanPlan,
) -> bool {
    if (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION
        || (*rel).reloptkind != pg_sys::RelOptKind::RELOPT_BASEREL
        || (*rte).inh
        || !(*rte).tablesample.is_null()
        || (*rte).relkind as u8 == pg_sys::RELKIND_FOREIGN_TABLE
        || pg_sys::is_dummy_rel(rel)
    {
        return false;
    }
    let name = rte_alias(rte);
    let hints = rel_hints(&name);
    let mut scan = hints.scan;
    let parallel = hints.parallel;
    if scan.is_none() && parallel.is_none() {
        return false;
    }

    // IndexScan(t idx ...): keep only the named indexes.
    if let Some((
        idx,
        Hint {
            kind:
                HintKind::Scan {
                    indexes,
                    negated: false,
                    ..
                },
            ..
        },
    )) = &scan
    {
        if !indexes.is_empty() {
            let all: Vec<*mut pg_sys::IndexOptInfo> = list_ptrs((*rel).indexlist);
            let kept: Vec<*mut pg_sys::IndexOptInfo> = all
                .iter()
                .copied()
                .filter(|ix| {
                    let n = cstr_to_string(pg_sys::get_rel_name((**ix).indexoid));
                    indexes.contains(&n)
                })
                .collect();
            if kept.is_empty() {
                mark(
                    *idx,
                    Status::NotUsed,
                    format!("no index named {} on \"{name}\"", indexes.join(", ")),
                );
                scan = None;
            } else {
                (*rel).indexlist = list_from(&kept);
            }
        }
    }
    if scan.is_none() && parallel.is_none() {
        return false;
    }

    let mut p = ScanPlan {
        enable_seqscan: pg_sys::enable_seqscan,
        enable_indexscan: pg_sys::enable_indexscan,
        enable_indexonlyscan: pg_sys::enable_indexonlyscan,
        enable_bitmapscan: pg_sys::enable_bitmapscan,
        enable_tidscan: pg_sys::enable_tidscan,
        workers: -1,
        scan_idx: scan.as_ref().map_or(-1, |(i, _)| *i as i64),
        parallel_idx: parallel.as_ref().map_or(-1, |(i, _)| *i as i64),
        hard: false,
        prefer_index_only: false,
    };
    if let Some((
        _,
        Hint {
            kind: HintKind::Scan {
                method, negated, ..
            },
            ..
        },
    )) = &scan
    {
        if *negated {
            match method {
                ScanMethod::SeqScan => p.enable_seqscan = false,
                ScanMethod::IndexScan => {
                    p.enable_indexscan = false;
                    p.enable_indexonlyscan = false;
                }
                ScanMethod::IndexOnlyScan => p.enable_indexonlyscan = false,
                ScanMethod::BitmapScan => p.enable_bitmapscan = false,
                ScanMethod::TidScan => p.enable_tidscan = false,
            }
        } else {
            p.enable_seqscan = *method == ScanMethod::SeqScan;
            p.enable_indexscan =
                matches!(method, ScanMethod::IndexScan | ScanMethod::IndexOnlyScan);
            p.enable_indexonlyscan = *method == ScanMethod::IndexOnlyScan;
            p.enable_bitmapscan = *method == ScanMethod::BitmapScan;
            p.enable_tidscan = *method == ScanMethod::TidScan;
            p.prefer_index_only = *method == ScanMethod::IndexOnlyScan;
        }
    }
    if let Some((
        _,
        Hint {
            kind: HintKind::Parallel {
                workers: n, hard, ..
            },
            ..
        },
    )) = &parallel
    {
        p.workers = (*n).min(c_int::MAX as u32) as c_int;
        p.hard = *hard;
        if *n > 0 {
            (*rel).rel_parallel_workers = p.workers;
        }
    }
    plan.write(p);
    true
}

/// set_rel_pathlist_hook, second half: after shim.c regenerated the paths
/// as `plan` says, applies what the switches cannot express and reports the
/// hints' outcome.
#[pg_guard]
#[no_mangle]
unsafe extern "C-unwind" fn torii_hints_scan_finish(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    rte: *mut pg_sys::RangeTblEntry,
    plan: *const ScanPlan,
) {
    let p = &*plan;
    let name = rte_alias(rte);
    if p.workers == 0 {
        (*rel).partial_pathlist = std::ptr::null_mut();
    }
    if p.hard && p.workers > 0 && !(*rel).partial_pathlist.is_null() {
        // Parallel(t n hard): gather the partial paths now (the parallel
        // costs are zero for this statement) and keep only those.
        // Start from an empty pathlist so that no serial path rejects them.
        let serial = (*rel).pathlist;
        (*rel).pathlist = std::ptr::null_mut();
        pg_sys::generate_useful_gather_paths(root, rel, false);
        if (*rel).pathlist.is_null() {
            (*rel).pathlist = serial;
        }
    }
    if p.prefer_index_only {
        for list in [&mut (*rel).pathlist, &mut (*rel).partial_pathlist] {
            let paths: Vec<*mut pg_sys::Path> = list_ptrs(*list);
            if paths
                .iter()
                .any(|p| (**p).pathtype == pg_sys::NodeTag::T_IndexOnlyScan)
            {
                let kept: Vec<_> = paths
                    .into_iter()
                    .filter(|p| (**p).pathtype != pg_sys::NodeTag::T_IndexScan)
                    .collect();
                *list = list_from(&kept);
            }
        }
    }

    if p.scan_idx >= 0 {
        mark(
            p.scan_idx as usize,
            Status::Used,
            format!("applied to \"{name}\""),
        );
    }
    if p.parallel_idx >= 0 {
        if p.workers != 0 && !(*rel).consider_parallel {
            mark(
                p.parallel_idx as usize,
                Status::NotUsed,
                format!("\"{name}\" cannot be scanned in parallel"),
            );
        } else {
            mark(
                p.parallel_idx as usize,
                Status::Used,
                format!("applied to \"{name}\""),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// join hints

/// Leading tree with relid sets: `Node(set, left, right)`.
#[derive(Debug, Clone)]
enum Lead {
    Rel(Vec<i32>),
    Node(Vec<i32>, Box<Lead>, Box<Lead>),
}

impl Lead {
    fn set(&self) -> &[i32] {
        match self {
            Lead::Rel(s) | Lead::Node(s, _, _) => s,
        }
    }

    /// The internal node whose relid set is exactly `s`.
    fn find(&self, s: &[i32]) -> Option<(&Lead, &Lead)> {
        match self {
            Lead::Rel(_) => None,
            Lead::Node(set, l, r) => {
                if set.as_slice() == s {
                    Some((l, r))
                } else {
                    l.find(s).or_else(|| r.find(s))
                }
            }
        }
    }
}

struct JoinPlan {
    /// (hint index, relids, method, negated)
    methods: Vec<(usize, Vec<i32>, JoinMethod, bool)>,
    /// (hint index, tree, whether the direction is fixed)
    leading: Option<(usize, Lead, bool)>,
    rows: Vec<(usize, Vec<i32>, RowsCorrection)>,
}

enum Allowed {
    No,
    Free,
    /// A node of the Leading tree: always tried; with a fixed direction the
    /// first relation must be the outer one.
    Forced {
        outer_first: Option<bool>,
    },
}

impl JoinPlan {
    fn is_empty(&self) -> bool {
        self.methods.is_empty() && self.leading.is_none() && self.rows.is_empty()
    }

    fn allowed(&self, a: &[i32], b: &[i32], joined: &[i32]) -> Allowed {
        let Some((_, lead, fixed)) = &self.leading else {
            return Allowed::Free;
        };
        let l = lead.set();
        let inter: Vec<i32> = joined.iter().copied().filter(|x| l.contains(x)).collect();
        if inter.is_empty() {
            return Allowed::Free;
        }
        if is_subset(joined, l) {
            return match lead.find(joined) {
                Some((left, right)) => {
                    if left.set() == a && right.set() == b {
                        Allowed::Forced {
                            outer_first: fixed.then_some(true),
                        }
                    } else if left.set() == b && right.set() == a {
                        Allowed::Forced {
                            outer_first: fixed.then_some(false),
                        }
                    } else {
                        Allowed::No
                    }
                }
                None => Allowed::No,
            };
        }
        // Above the Leading block: one side must hold the whole block.
        if is_subset(l, a) && !b.iter().any(|x| l.contains(x))
            || is_subset(l, b) && !a.iter().any(|x| l.contains(x))
        {
            Allowed::Free
        } else {
            Allowed::No
        }
    }
}

unsafe fn base_rel_names(root: *mut pg_sys::PlannerInfo) -> HashMap<String, Vec<i32>> {
    let mut map: HashMap<String, Vec<i32>> = HashMap::new();
    for i in 1..(*root).simple_rel_array_size {
        let rel = *(*root).simple_rel_array.add(i as usize);
        if rel.is_null() || (*rel).reloptkind != pg_sys::RelOptKind::RELOPT_BASEREL {
            continue;
        }
        let rte = *(*root).simple_rte_array.add(i as usize);
        map.entry(rte_alias(rte)).or_default().push(i);
    }
    map
}

/// Resolve relation names to relids; `Err` carries a message for hints that
/// are wrong here (ambiguous names), `Ok(None)` means "not this query level".
fn resolve_names(
    names: &[String],
    map: &HashMap<String, Vec<i32>>,
    scope: &[i32],
) -> Result<Option<Vec<i32>>, String> {
    let mut out = Vec::new();
    for n in names {
        match map.get(n) {
            None => return Ok(None),
            Some(v) if v.len() > 1 => return Err(format!("relation name \"{n}\" is ambiguous")),
            Some(v) => out.push(v[0]),
        }
    }
    if !is_subset(&out, scope) {
        return Ok(None);
    }
    out.sort_unstable();
    Ok(Some(out))
}

fn lead_from_tree(
    t: &LeadingTree,
    map: &HashMap<String, Vec<i32>>,
    scope: &[i32],
) -> Result<Option<Lead>, String> {
    Ok(match t {
        LeadingTree::Rel(n) => resolve_names(std::slice::from_ref(n), map, scope)?.map(Lead::Rel),
        LeadingTree::Join(l, r) => {
            let (Some(l), Some(r)) = (
                lead_from_tree(l, map, scope)?,
                lead_from_tree(r, map, scope)?,
            ) else {
                return Ok(None);
            };
            Some(Lead::Node(
                union(l.set(), r.set()),
                Box::new(l),
                Box::new(r),
            ))
        }
    })
}

unsafe fn build_join_plan(
    root: *mut pg_sys::PlannerInfo,
    initial_rels: *mut pg_sys::List,
) -> JoinPlan {
    let mut plan = JoinPlan {
        methods: vec![],
        leading: None,
        rows: vec![],
    };
    let hints = join_hints();
    if hints.is_empty() {
        return plan;
    }
    let map = base_rel_names(root);
    let mut scope: Vec<i32> = Vec::new();
    for r in list_ptrs::<pg_sys::RelOptInfo>(initial_rels) {
        scope.extend(relids_vec((*r).relids));
    }
    scope.sort_unstable();
    for (idx, h) in hints {
        let res = match &h.kind {
            HintKind::Join {
                method,
                negated,
                rels,
            } => resolve_names(rels, &map, &scope)
                .map(|o| o.map(|ids| plan.methods.push((idx, ids, *method, *negated)))),
            HintKind::Rows { rels, correction } => resolve_names(rels, &map, &scope)
                .map(|o| o.map(|ids| plan.rows.push((idx, ids, *correction)))),
            HintKind::Leading(l) => {
                let (tree, fixed) = match l {
                    Leading::Tree(t) => (t.clone(), true),
                    Leading::Order(names) => {
                        let mut t = LeadingTree::Rel(names[0].clone());
                        for n in &names[1..] {
                            t = LeadingTree::Join(
                                Box::new(t),
                                Box::new(LeadingTree::Rel(n.clone())),
                            );
                        }
                        (t, false)
                    }
                };
                lead_from_tree(&tree, &map, &scope)
                    .map(|o| o.map(|lead| plan.leading = Some((idx, lead, fixed))))
            }
            _ => Ok(None),
        };
        if let Err(msg) = res {
            mark(idx, Status::Error(msg.clone()), msg);
        }
    }
    plan
}

/// join_search_hook (called by shim.c): the hinted join search when join
/// hints apply at this query level, else null (the shim then calls the
/// previous hook, geqo or standard_join_search itself). When core raised an
/// ERROR while building the join relations, returns null with the copied
/// error in `*error`, for the shim to re-throw.
#[pg_guard]
#[no_mangle]
unsafe extern "C-unwind" fn torii_hints_join_search(
    root: *mut pg_sys::PlannerInfo,
    levels_needed: c_int,
    initial_rels: *mut pg_sys::List,
    error: *mut CoreError,
) -> *mut pg_sys::RelOptInfo {
    match join_search_inner(root, levels_needed, initial_rels) {
        Ok(rel) => rel,
        Err(e) => {
            *error = e;
            std::ptr::null_mut()
        }
    }
}

unsafe fn join_search_inner(
    root: *mut pg_sys::PlannerInfo,
    levels_needed: c_int,
    initial_rels: *mut pg_sys::List,
) -> Result<*mut pg_sys::RelOptInfo, CoreError> {
    let plan = build_join_plan(root, initial_rels);
    if plan.is_empty() {
        return Ok(std::ptr::null_mut());
    }
    if let Some(rel) = hinted_join_search(root, levels_needed, initial_rels, &plan)? {
        if let Some((idx, _, _)) = &plan.leading {
            mark(*idx, Status::Used, "");
        }
        return Ok(rel);
    }
    // The Leading order could not be built (e.g. outer-join constraints):
    // search again without it.
    let mut plan = plan;
    if let Some((idx, _, _)) = plan.leading.take() {
        mark(
            idx,
            Status::NotUsed,
            "the join order is not possible for this query",
        );
    }
    match hinted_join_search(root, levels_needed, initial_rels, &plan)? {
        Some(rel) => Ok(rel),
        None => pgrx::error!("torii: failed to build any {levels_needed}-way joins"),
    }
}

/// standard_join_search with the hints' constraints; `None` when no join
/// relation of the top level could be built.
unsafe fn hinted_join_search(
    root: *mut pg_sys::PlannerInfo,
    levels_needed: c_int,
    initial_rels: *mut pg_sys::List,
    plan: &JoinPlan,
) -> Result<Option<*mut pg_sys::RelOptInfo>, CoreError> {
    let n = levels_needed as usize;
    let levels = pg_sys::palloc0((n + 1) * std::mem::size_of::<*mut pg_sys::List>())
        as *mut *mut pg_sys::List;
    *levels.add(1) = initial_rels;
    (*root).join_rel_level = levels;

    for lev in 2..=n {
        (*root).join_cur_level = lev as c_int;
        join_one_level(root, levels, lev, plan, false)?;
        if (*levels.add(lev)).is_null() {
            // like core: fall back to clauseless joins. A level may stay
            // empty under a bushy Leading tree.
            join_one_level(root, levels, lev, plan, true)?;
        }
        let rels: Vec<*mut pg_sys::RelOptInfo> = list_ptrs(*levels.add(lev));
        for rel in rels {
            apply_rows(rel, plan);
            let mut error: CoreError = std::ptr::null_mut();
            pg_guard_ffi_boundary(|| torii_hints_finish_join_rel(root, rel, lev < n, &mut error));
            if !error.is_null() {
                return Err(error);
            }
        }
    }
    let result = list_ptrs::<pg_sys::RelOptInfo>(*levels.add(n))
        .first()
        .copied();
    (*root).join_rel_level = std::ptr::null_mut();
    Ok(result)
}

unsafe fn apply_rows(rel: *mut pg_sys::RelOptInfo, plan: &JoinPlan) {
    let ids = relids_vec((*rel).relids);
    for (idx, set, corr) in &plan.rows {
        if *set == ids {
            let old = (*rel).rows;
            let new = corr.apply(old);
            (*rel).rows = new;
            let factor = if old > 0.0 { new / old } else { 1.0 };
            for list in [(*rel).pathlist, (*rel).partial_pathlist] {
                for p in list_ptrs::<pg_sys::Path>(list) {
                    (*p).rows = ((*p).rows * factor).max(1.0).round();
                }
            }
            mark(*idx, Status::Used, format!("{old} -> {new} rows"));
        }
    }
}

unsafe fn join_one_level(
    root: *mut pg_sys::PlannerInfo,
    levels: *mut *mut pg_sys::List,
    lev: usize,
    plan: &JoinPlan,
    clauseless: bool,
) -> Result<(), CoreError> {
    for k in 1..=lev / 2 {
        let left: Vec<*mut pg_sys::RelOptInfo> = list_ptrs(*levels.add(k));
        let right: Vec<*mut pg_sys::RelOptInfo> = list_ptrs(*levels.add(lev - k));
        for (i, &r1) in left.iter().enumerate() {
            for (j, &r2) in right.iter().enumerate() {
                if k == lev - k && j <= i {
                    continue;
                }
                if pg_sys::bms_overlap((*r1).relids, (*r2).relids) {
                    continue;
                }
                let a = relids_vec((*r1).relids);
                let b = relids_vec((*r2).relids);
                let joined = union(&a, &b);
                let allowed = plan.allowed(&a, &b, &joined);
                let forced = match allowed {
                    Allowed::No => continue,
                    Allowed::Free => false,
                    Allowed::Forced { .. } => true,
                };
                if !forced && !clauseless {
                    let has_clause =
                        pg_guard_ffi_boundary(|| have_relevant_joinclause(root, r1, r2))
                            || pg_sys::have_join_order_restriction(root, r1, r2)
                            || (k == 1 && ((*r2).joininfo.is_null() || (*r1).joininfo.is_null()));
                    if !has_clause {
                        continue;
                    }
                }
                let outer_first = match allowed {
                    Allowed::Forced { outer_first } => outer_first,
                    _ => None,
                };
                let rel = make_hinted_join(root, r1, r2, &joined, outer_first, plan)?;
                if !rel.is_null()
                    && !pg_sys::list_member_ptr(*levels.add(lev), rel as *const c_void)
                {
                    *levels.add(lev) = pg_sys::lappend(*levels.add(lev), rel as *mut c_void);
                }
            }
        }
    }
    Ok(())
}

unsafe fn make_hinted_join(
    root: *mut pg_sys::PlannerInfo,
    r1: *mut pg_sys::RelOptInfo,
    r2: *mut pg_sys::RelOptInfo,
    joined: &[i32],
    outer_first: Option<bool>,
    plan: &JoinPlan,
) -> Result<*mut pg_sys::RelOptInfo, CoreError> {
    let mut switches = JoinSwitches {
        nestloop: pg_sys::enable_nestloop,
        hashjoin: pg_sys::enable_hashjoin,
        mergejoin: pg_sys::enable_mergejoin,
    };
    let mut used_method = None;
    for (idx, set, method, negated) in &plan.methods {
        if set.as_slice() == joined {
            if *negated {
                match method {
                    JoinMethod::NestLoop => switches.nestloop = false,
                    JoinMethod::HashJoin => switches.hashjoin = false,
                    JoinMethod::MergeJoin => switches.mergejoin = false,
                }
            } else {
                switches.nestloop = *method == JoinMethod::NestLoop;
                switches.hashjoin = *method == JoinMethod::HashJoin;
                switches.mergejoin = *method == JoinMethod::MergeJoin;
            }
            used_method = Some(*idx);
        }
    }
    let direct_ok = (*root).join_info_list.is_null()
        && !(*root).hasLateralRTEs
        && !pg_sys::is_dummy_rel(r1)
        && !pg_sys::is_dummy_rel(r2);
    // What make_join_rel does for a plain inner join, minus the reversed
    // pair, when the Leading direction is fixed.
    let direction: c_int = match outer_first {
        Some(true) if direct_ok => 1,
        Some(false) if direct_ok => -1,
        _ => 0,
    };
    let mut error: CoreError = std::ptr::null_mut();
    let rel = pg_guard_ffi_boundary(|| {
        torii_hints_make_join_rel(root, r1, r2, &switches, direction, &mut error)
    });
    if !error.is_null() {
        return Err(error);
    }
    if let Some(idx) = used_method {
        if !rel.is_null() {
            mark(idx, Status::Used, "");
        }
    }
    Ok(rel)
}
