//! What long torii work tells operators while it runs, and the per-page pacing it obeys.
//!
//! * [`Command`]: PostgreSQL's own progress views (`pg_stat_progress_vacuum`,
//!   `pg_stat_progress_cluster`), which a table AM must fill in itself (heap does it inside
//!   `heap_vacuum_rel` and its cluster copy).
//! * [`Task`]: `torii.progress`, for torii's own functions (`torii.verify`) that no core view
//!   covers: one slot per backend in shared memory, reserved when torii is preloaded.
//! * [`page_done`]: called once per page by every such loop: cost-based vacuum delay
//!   (`vacuum_delay_point`, a no-op unless the command runs under VACUUM's cost accounting),
//!   a cancel check, and the test pause `torii.debug_page_delay`.

use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// A command reported in PostgreSQL's progress view of its kind; ended on drop (also when an
/// ERROR unwinds, though the abort path ends it anyway).
pub struct Command(());

impl Command {
    /// Starts reporting `cmd` for relation `relid` in this backend's progress slot.
    pub fn start(cmd: pg_sys::ProgressCommandType::Type, relid: pg_sys::Oid) -> Command {
        // SAFETY: writes this backend's own status entry.
        unsafe { pg_sys::pgstat_progress_start_command(cmd, relid) };
        Command(())
    }

    /// Sets one of the command's counters (`PROGRESS_*` index of its view).
    pub fn set(&self, param: u32, value: i64) {
        set_param(param, value);
    }
}

/// Sets a counter of the command this backend reports, also one PostgreSQL started (CLUSTER
/// starts its command before calling the table AM); nothing when none runs.
pub fn set_param(param: u32, value: i64) {
    // SAFETY: writes this backend's own status entry; `param` is one of the view's
    // `PROGRESS_*` indexes (< PGSTAT_NUM_PROGRESS_PARAM).
    unsafe { pg_sys::pgstat_progress_update_param(param as i32, value) };
}

impl Drop for Command {
    fn drop(&mut self) {
        // SAFETY: as above; ending twice is harmless.
        unsafe { pg_sys::pgstat_progress_end_command() };
    }
}

/// `torii.debug_page_delay` (ms): a pause after every page of the loops that call
/// [`page_done`], so tests can watch them from another session. 0 (the default) in production.
pub static DEBUG_PAGE_DELAY: pgrx::guc::GucSetting<i32> = pgrx::guc::GucSetting::<i32>::new(0);

/// One page of a long loop is done: pace and check for cancel.
pub fn page_done() {
    // SAFETY: vacuum_delay_point only sleeps and checks interrupts; it acts only while
    // VacuumCostActive (VACUUM and autovacuum with a cost delay).
    unsafe { pg_sys::vacuum_delay_point() };
    let ms = DEBUG_PAGE_DELAY.get();
    if ms > 0 {
        // SAFETY: a plain sleep.
        unsafe { pg_sys::pg_usleep(ms as std::ffi::c_long * 1000) };
    }
    pgrx::check_for_interrupts!();
}

/// One backend's `torii.progress` entry. Written only by its backend, between two increments
/// of `changes` (odd while writing), so readers retry until they see an even, unchanged count.
#[repr(C)]
struct Slot {
    changes: AtomicU32,
    pid: AtomicI32,
    relid: AtomicU32,
    kind: AtomicU32,
    done: AtomicU64,
    total: AtomicU64,
    started: AtomicI64,
}

/// What a [`Task`] is (`torii.progress.command`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TaskKind {
    Verify = 1,
}

impl TaskKind {
    fn name(k: u32) -> Option<&'static str> {
        match k {
            1 => Some("torii.verify"),
            _ => None,
        }
    }
}

static SLOTS: AtomicU64 = AtomicU64::new(0);

/// The slots' space was reserved: torii is in `shared_preload_libraries` (set in the
/// postmaster, inherited by every backend).
static RESERVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Bytes of shared memory for the slots.
fn shmem_size() -> usize {
    // SAFETY: MaxBackends is set before shared memory is sized (shmem_request_hook).
    let n = unsafe { pg_sys::MaxBackends } as usize;
    n * std::mem::size_of::<Slot>()
}

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;

#[pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    if let Some(prev) = PREV_SHMEM_REQUEST {
        prev();
    }
    pg_sys::RequestAddinShmemSpace(shmem_size());
}

/// Defines the settings and, when preloaded, reserves the slots. Called once from `_PG_init`.
pub fn init() {
    pgrx::guc::GucRegistry::define_int_guc(
        c"torii.debug_page_delay",
        c"Milliseconds torii's long loops pause after each page (a test hook).",
        c"VACUUM, VACUUM FULL, undo discard and torii.verify pause this long per page, so that \
          their progress can be watched; 0 disables.",
        &DEBUG_PAGE_DELAY,
        0,
        10_000,
        pgrx::guc::GucContext::Suset,
        pgrx::guc::GucFlags::UNIT_MS,
    );
    // SAFETY: _PG_init runs once per process, before any hook can be called.
    unsafe {
        if pg_sys::process_shared_preload_libraries_in_progress {
            PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(shmem_request);
            RESERVED.store(true, Ordering::Relaxed);
        }
    }
}

/// The slot array, attached on first use; None when torii was not preloaded (no space for it).
fn slots() -> Option<&'static [Slot]> {
    if !RESERVED.load(Ordering::Relaxed) {
        return None;
    }
    let n = unsafe { pg_sys::MaxBackends } as usize;
    let mut p = SLOTS.load(Ordering::Relaxed) as *mut Slot;
    if p.is_null() {
        // SAFETY: the standard add-in attach: under AddinShmemInitLock, the first backend
        // zeroes the space reserved by shmem_request (all-zero slots are free).
        unsafe {
            let lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
            pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
            let mut found = false;
            p = pg_sys::ShmemInitStruct(c"torii progress".as_ptr(), shmem_size(), &mut found)
                as *mut Slot;
            if !found {
                std::ptr::write_bytes(p as *mut u8, 0, shmem_size());
            }
            pg_sys::LWLockRelease(lock);
        }
        SLOTS.store(p as u64, Ordering::Relaxed);
    }
    // SAFETY: n slots live as long as the shared memory segment.
    Some(unsafe { std::slice::from_raw_parts(p, n) })
}

/// This backend's slot.
fn my_slot() -> Option<&'static Slot> {
    // SAFETY: MyBackendId is 1..=MaxBackends in a backend that has a status entry.
    let id = unsafe { pg_sys::MyBackendId };
    slots()?.get((id as usize).checked_sub(1)?)
}

impl Slot {
    fn write(&self, f: impl FnOnce(&Slot)) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        f(self);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }
}

/// A `torii.progress` row of this backend for the task's life; the row goes on drop (also when
/// an ERROR unwinds).
pub struct Task {
    slot: Option<&'static Slot>,
}

impl Task {
    /// Shows `kind` on relation `relid` with `total` pages to go.
    pub fn start(kind: TaskKind, relid: pg_sys::Oid, total: u64) -> Task {
        let slot = my_slot();
        if let Some(s) = slot {
            // SAFETY: plain reads of this backend's globals.
            let (pid, now) = unsafe { (pg_sys::MyProcPid, pg_sys::GetCurrentTimestamp()) };
            s.write(|s| {
                s.relid.store(relid.into(), Ordering::Relaxed);
                s.kind.store(kind as u32, Ordering::Relaxed);
                s.done.store(0, Ordering::Relaxed);
                s.total.store(total, Ordering::Relaxed);
                s.started.store(now, Ordering::Relaxed);
                s.pid.store(pid, Ordering::Relaxed);
            });
        }
        Task { slot }
    }

    /// `done` pages are done.
    pub fn advance(&self, done: u64) {
        if let Some(s) = self.slot {
            s.write(|s| s.done.store(done, Ordering::Relaxed));
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            s.write(|s| s.pid.store(0, Ordering::Relaxed));
        }
    }
}

/// One `torii.progress` row.
pub struct TaskRow {
    pub pid: i32,
    pub datid: pg_sys::Oid,
    pub userid: pg_sys::Oid,
    pub command: &'static str,
    pub relid: pg_sys::Oid,
    pub done: i64,
    pub total: i64,
    pub started: pg_sys::TimestampTz,
}

/// The running tasks of every backend, each read consistently. Errors when torii is not
/// preloaded: the slots need shared memory reserved at server start.
pub fn running() -> Vec<TaskRow> {
    let Some(slots) = slots() else {
        ereport!(
            PgLogLevel::ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "torii.progress needs torii in shared_preload_libraries",
            "Add torii to shared_preload_libraries and restart the server."
        );
        unreachable!()
    };
    let mut out = Vec::new();
    for s in slots {
        let row = loop {
            let before = s.changes.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let pid = s.pid.load(Ordering::Relaxed);
            // A backend that exited without ending its task (FATAL) left its row behind: only
            // live backends count.
            // SAFETY: a proc-array lookup; the PGPROC stays valid memory (fields may be stale).
            let proc = if pid == 0 {
                std::ptr::null_mut()
            } else {
                unsafe { pg_sys::BackendPidGetProc(pid) }
            };
            let row = TaskKind::name(s.kind.load(Ordering::Relaxed))
                .filter(|_| !proc.is_null())
                .map(|command| TaskRow {
                    pid,
                    // SAFETY: proc is a PGPROC of the proc array (non-null here).
                    datid: unsafe { (*proc).databaseId },
                    userid: unsafe { (*proc).roleId },
                    command,
                    relid: pg_sys::Oid::from(s.relid.load(Ordering::Relaxed)),
                    done: s.done.load(Ordering::Relaxed) as i64,
                    total: s.total.load(Ordering::Relaxed) as i64,
                    started: s.started.load(Ordering::Relaxed),
                });
            std::sync::atomic::fence(Ordering::Acquire);
            if s.changes.load(Ordering::Relaxed) == before {
                break row;
            }
        };
        out.extend(row);
    }
    out
}
