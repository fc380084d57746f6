//! Planner hints (issue 7): pg_hint_plan-style `/*+ ... */` comments and
//! stored hints, applied through the planner hooks.
//!
//! The parsing lives in the pgrx-free `torii-hints` crate; this module keeps
//! the per-planning state, installs the hooks and exposes the SQL API.

use std::cell::RefCell;
use std::ffi::CStr;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use torii_hints::{Hint, HintKind, Resolution};

mod hooks;
mod sql;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

pub(crate) static ENABLE_HINTS: GucSetting<bool> = GucSetting::<bool>::new(true);
pub(crate) static HINTS_DEBUG: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Install the GUCs and the planner hooks. Call once from `_PG_init`.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"torii.enable_hints",
        c"Apply planner hints from /*+ ... */ comments and torii.hint_store.",
        c"When off, torii ignores all planner hints.",
        &ENABLE_HINTS,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"torii.hints_debug",
        c"Log which planner hints were used, not used, duplicated or erroneous.",
        c"Each planned statement with hints logs one LOG message.",
        &HINTS_DEBUG,
        GucContext::Userset,
        GucFlags::default(),
    );
    unsafe {
        hooks::install();
    }
}

/// The query id stored hints are keyed by: PostgreSQL's own (when `compute_query_id` or a
/// module such as pg_stat_statements computes it), else computed here with `JumbleQuery`
/// and left off the query. torii does not call `EnableQueryId()`: that would make every
/// session that loads torii compute query ids and print them in `EXPLAIN VERBOSE`.
///
/// # Safety
/// `query` must be a valid analyzed Query and `text` its source text (or null).
pub(crate) unsafe fn query_id_of(query: *mut pg_sys::Query, text: *const std::ffi::c_char) -> i64 {
    if (*query).queryId != 0 {
        return (*query).queryId as i64;
    }
    if text.is_null() {
        return 0;
    }
    pg_sys::JumbleQuery(query, text);
    let id = (*query).queryId;
    (*query).queryId = 0;
    id as i64
}

/// What became of one hint during planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    NotUsed,
    Used,
    Duplicated,
    Error(String),
}

impl Status {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Status::NotUsed => "not used",
            Status::Used => "used",
            Status::Duplicated => "duplicated",
            Status::Error(_) => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// `None` for a hint that failed to parse.
    pub hint: Option<Hint>,
    pub text: String,
    pub status: Status,
    pub detail: String,
}

impl Entry {
    fn active(&self) -> bool {
        self.hint.is_some() && !matches!(self.status, Status::Duplicated | Status::Error(_))
    }
}

/// The hints of the statement being planned.
#[derive(Debug, Clone, Default)]
pub(crate) struct HintState {
    pub entries: Vec<Entry>,
    /// "comment" or "stored".
    pub source: &'static str,
}

impl HintState {
    /// Build the state from hint text; `offset` maps spans to positions in
    /// the query (for messages); positions are reported 1-based.
    pub(crate) fn from_parsed(parsed: torii_hints::ParsedHints, source: &'static str) -> Self {
        let res = torii_hints::resolve(&parsed.hints);
        let mut entries: Vec<Entry> = parsed
            .hints
            .into_iter()
            .zip(res)
            .map(|(h, r)| Entry {
                text: h.text.clone(),
                status: if r == Resolution::Duplicated {
                    Status::Duplicated
                } else {
                    Status::NotUsed
                },
                detail: if r == Resolution::Duplicated {
                    "superseded by a later hint on the same target".into()
                } else {
                    String::new()
                },
                hint: Some(h),
            })
            .collect();
        for e in parsed.errors {
            let pos = e.span.start + 1;
            entries.push(Entry {
                hint: None,
                text: if e.text.is_empty() {
                    "(syntax error)".into()
                } else {
                    e.text.clone()
                },
                status: Status::Error(e.message.clone()),
                detail: format!("{} at position {}", e.message, pos),
            });
        }
        HintState { entries, source }
    }

    fn active(&self) -> impl Iterator<Item = (usize, &Hint)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.active())
            .map(|(i, e)| (i, e.hint.as_ref().unwrap()))
    }

    pub(crate) fn mark(&mut self, idx: usize, status: Status, detail: impl Into<String>) {
        if let Some(e) = self.entries.get_mut(idx) {
            // "used" anywhere wins over "not used" elsewhere
            if e.status == Status::Used && status == Status::NotUsed {
                return;
            }
            e.status = status;
            e.detail = detail.into();
        }
    }
}

thread_local! {
    /// One entry per nested planner invocation.
    static STACK: RefCell<Vec<HintState>> = const { RefCell::new(Vec::new()) };
    /// Set while `explain_hints` plans a query: receives the outermost state.
    static COLLECT: RefCell<Option<(usize, Vec<Entry>)>> = const { RefCell::new(None) };
}

/// Run `f` on the innermost hint state, if any. `f` must not call into
/// PostgreSQL (the state is borrowed meanwhile).
pub(crate) fn with_state<R>(f: impl FnOnce(&mut HintState) -> R) -> Option<R> {
    STACK.with(|s| s.borrow_mut().last_mut().map(f))
}

pub(crate) fn push_state(st: HintState) {
    STACK.with(|s| s.borrow_mut().push(st));
}

pub(crate) fn pop_state() -> Option<HintState> {
    STACK.with(|s| s.borrow_mut().pop())
}

pub(crate) fn stack_depth() -> usize {
    STACK.with(|s| s.borrow().len())
}

/// Scan-related hints for one relation (by alias).
#[derive(Debug, Clone, Default)]
pub(crate) struct RelHints {
    pub scan: Option<(usize, Hint)>,
    pub parallel: Option<(usize, Hint)>,
}

pub(crate) fn rel_hints(name: &str) -> RelHints {
    with_state(|st| {
        let mut out = RelHints::default();
        for (i, h) in st.active() {
            match &h.kind {
                HintKind::Scan { rel, .. } if rel == name => out.scan = Some((i, h.clone())),
                HintKind::Parallel { rel, .. } if rel == name => {
                    out.parallel = Some((i, h.clone()))
                }
                _ => {}
            }
        }
        out
    })
    .unwrap_or_default()
}

/// Join-level hints (join methods, Leading, Rows) of the current statement.
pub(crate) fn join_hints() -> Vec<(usize, Hint)> {
    with_state(|st| {
        st.active()
            .filter(|(_, h)| {
                matches!(
                    h.kind,
                    HintKind::Join { .. } | HintKind::Leading(_) | HintKind::Rows { .. }
                )
            })
            .map(|(i, h)| (i, h.clone()))
            .collect()
    })
    .unwrap_or_default()
}

pub(crate) fn all_active() -> Vec<(usize, Hint)> {
    with_state(|st| st.active().map(|(i, h)| (i, h.clone())).collect()).unwrap_or_default()
}

pub(crate) fn mark(idx: usize, status: Status, detail: impl Into<String>) {
    let detail = detail.into();
    with_state(|st| st.mark(idx, status, detail));
}

pub(crate) fn start_collect() {
    let base = stack_depth();
    COLLECT.with(|c| *c.borrow_mut() = Some((base, Vec::new())));
}

pub(crate) fn take_collect() -> Vec<Entry> {
    COLLECT
        .with(|c| c.borrow_mut().take())
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// Record the state of a finished planning if it is the one `explain_hints`
/// asked for (`depth` is the stack depth after popping it).
pub(crate) fn collect_state(st: &HintState, depth: usize) {
    COLLECT.with(|c| {
        if let Some((base, v)) = c.borrow_mut().as_mut() {
            if *base == depth && v.is_empty() {
                v.extend(st.entries.iter().cloned());
            }
        }
    });
}

pub(crate) unsafe fn cstr_to_string(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
