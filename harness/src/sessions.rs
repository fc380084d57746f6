//! A small multi-session step runner for isolation-style tests.
//!
//! Each session is a connection owned by its own thread. [`Sessions::step`] sends one step (SQL,
//! simple query protocol) to a session and waits until it has either finished or is *blocked*:
//! waiting for a heavyweight lock held by another session (as PostgreSQL's isolationtester
//! decides it, through `pg_blocking_pids()` polled from a separate monitor connection). A blocked
//! step keeps running on its thread; later steps of other sessions may release it, and each
//! following step reports which blocked steps have completed meanwhile. A step that neither
//! finishes nor blocks within the step timeout is cancelled and reported as an error of the
//! runner.
//!
//! ```no_run
//! # fn main() -> torii_harness::Result<()> {
//! use torii_harness::{Cluster, Sessions};
//! let c = Cluster::started("iso")?;
//! c.exec("CREATE TABLE t (id int primary key, v int); INSERT INTO t VALUES (1, 0)")?;
//! let mut s = Sessions::new(&c, "postgres", &["s1", "s2"])?;
//! let transcript = s.run(&[
//!     ("s1", "BEGIN; UPDATE t SET v = 1 WHERE id = 1"),
//!     ("s2", "UPDATE t SET v = 2 WHERE id = 1"), // blocks on s1's row lock
//!     ("s1", "COMMIT"),                          // releases s2
//!     ("s2", "SELECT v FROM t"),
//! ])?;
//! assert!(transcript.contains("step s2: UPDATE t SET v = 2 WHERE id = 1 <waiting ...>"));
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::{CancelToken, Client, NoTls, SimpleQueryMessage};

use crate::{err, Cluster, Result};

/// What a finished step returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Success: column names and rows (as text) of the last statement that returned rows.
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Option<String>>>,
    },
    /// Failure: SQLSTATE (empty for a connection error) and message.
    Error { code: String, message: String },
}

impl Outcome {
    pub fn is_error(&self) -> bool {
        matches!(self, Outcome::Error { .. })
    }
    /// SQLSTATE of an error outcome.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Outcome::Error { code, .. } => Some(code),
            _ => None,
        }
    }
    /// Rows of a successful outcome, NULL shown as `NULL`, columns joined by `|`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Outcome::Rows { rows, .. } => rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect(),
            Outcome::Error { .. } => Vec::new(),
        }
    }
    fn render(&self, out: &mut String) {
        match self {
            Outcome::Rows { columns, .. } => {
                if !columns.is_empty() {
                    out.push_str(&columns.join("|"));
                    out.push('\n');
                    for l in self.lines() {
                        out.push_str(&l);
                        out.push('\n');
                    }
                }
            }
            Outcome::Error { code, message } => {
                out.push_str(&format!("ERROR:  {message} (SQLSTATE {code})\n"));
            }
        }
    }
}

/// State of a step after [`Sessions::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepState {
    Done(Outcome),
    /// Waiting for a lock held by another session; see [`Sessions::wait`].
    Blocked,
}

/// A blocked step that completed later.
#[derive(Clone, Debug)]
pub struct Completion {
    pub session: String,
    pub sql: String,
    pub outcome: Outcome,
}

struct Session {
    pid: i32,
    tx: Option<Sender<String>>,
    rx: Receiver<Outcome>,
    cancel: CancelToken,
    /// SQL of the step still running (blocked), if any.
    pending: Option<String>,
    _thread: JoinHandle<()>,
}

/// Several sessions on one database plus a monitor connection. See the module documentation.
pub struct Sessions {
    sessions: BTreeMap<String, Session>,
    monitor: Client,
    step_timeout: Duration,
    poll: Duration,
    transcript: String,
    /// Blocked steps that completed during later steps, not yet taken.
    completed: Vec<Completion>,
}

fn run_sql(client: &mut Client, sql: &str) -> Outcome {
    match client.simple_query(sql) {
        Ok(msgs) => {
            let mut columns = Vec::new();
            let mut rows = Vec::new();
            let mut fresh = true;
            for m in msgs {
                match m {
                    SimpleQueryMessage::RowDescription(cols) => {
                        columns = cols.iter().map(|c| c.name().to_string()).collect();
                        rows.clear();
                        fresh = false;
                    }
                    SimpleQueryMessage::Row(r) => {
                        if fresh {
                            columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                            fresh = false;
                        }
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                    }
                    SimpleQueryMessage::CommandComplete(_) => fresh = true,
                    _ => {}
                }
            }
            Outcome::Rows { columns, rows }
        }
        Err(e) => match e.as_db_error() {
            Some(db) => Outcome::Error {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
            },
            None => Outcome::Error {
                code: String::new(),
                message: e.to_string(),
            },
        },
    }
}

impl Sessions {
    /// Connect one session per name to database `db` (and a monitor connection).
    pub fn new(cluster: &Cluster, db: &str, names: &[&str]) -> Result<Sessions> {
        let mut monitor = cluster.connect(db)?;
        monitor.batch_execute("SET application_name = 'torii-harness monitor'")?;
        let mut sessions = BTreeMap::new();
        for name in names {
            let mut cfg = cluster.client_config(db);
            cfg.application_name(&format!("torii-harness {name}"));
            let mut client = cfg.connect(NoTls)?;
            let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[])?.get(0);
            let cancel = client.cancel_token();
            let (tx, thread_rx) = channel::<String>();
            let (thread_tx, rx) = channel::<Outcome>();
            let thread = std::thread::Builder::new()
                .name(format!("session-{name}"))
                .spawn(move || {
                    while let Ok(sql) = thread_rx.recv() {
                        let out = run_sql(&mut client, &sql);
                        if thread_tx.send(out).is_err() {
                            break;
                        }
                    }
                })?;
            sessions.insert(
                name.to_string(),
                Session {
                    pid,
                    tx: Some(tx),
                    rx,
                    cancel,
                    pending: None,
                    _thread: thread,
                },
            );
        }
        Ok(Sessions {
            sessions,
            monitor,
            step_timeout: Duration::from_secs(60),
            poll: Duration::from_millis(10),
            transcript: String::new(),
            completed: Vec::new(),
        })
    }

    /// How long a step may run without finishing or blocking before it is cancelled (default
    /// 60 s).
    pub fn set_step_timeout(&mut self, d: Duration) {
        self.step_timeout = d;
    }

    /// Backend pid of a session.
    pub fn pid(&self, session: &str) -> Result<i32> {
        Ok(self.get(session)?.pid)
    }

    fn get(&self, session: &str) -> Result<&Session> {
        self.sessions
            .get(session)
            .ok_or_else(|| err(format!("no session named {session}")))
    }

    fn get_mut(&mut self, session: &str) -> Result<&mut Session> {
        self.sessions
            .get_mut(session)
            .ok_or_else(|| err(format!("no session named {session}")))
    }

    /// Whether a session's backend waits for a lock held by another backend.
    pub fn waits_for_lock(&mut self, session: &str) -> Result<bool> {
        let pid = self.pid(session)?;
        let row = self
            .monitor
            .query_one("SELECT cardinality(pg_blocking_pids($1)) > 0", &[&pid])?;
        Ok(row.get(0))
    }

    /// Whether a session has a blocked step that has not completed yet.
    pub fn is_blocked(&self, session: &str) -> bool {
        self.sessions
            .get(session)
            .map(|s| s.pending.is_some())
            .unwrap_or(false)
    }

    /// Wait until the running step of `session` finishes (Done) or waits for a lock (Blocked).
    fn settle(&mut self, session: &str) -> Result<StepState> {
        let t0 = Instant::now();
        loop {
            let s = self.get(session)?;
            match s.rx.recv_timeout(self.poll) {
                Ok(out) => {
                    self.get_mut(session)?.pending = None;
                    return Ok(StepState::Done(out));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(err(format!("session {session}'s thread has gone")));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.waits_for_lock(session)? {
                // Re-check for a result that arrived between the two looks.
                if let Ok(out) = self.get(session)?.rx.try_recv() {
                    self.get_mut(session)?.pending = None;
                    return Ok(StepState::Done(out));
                }
                return Ok(StepState::Blocked);
            }
            if t0.elapsed() > self.step_timeout {
                let s = self.get(session)?;
                let sql = s.pending.clone().unwrap_or_default();
                let _ = s.cancel.cancel_query(NoTls);
                // Collect the cancelled result so the session is usable again.
                let _ = s.rx.recv_timeout(Duration::from_secs(30));
                self.get_mut(session)?.pending = None;
                return Err(err(format!(
                    "step of session {session} neither finished nor blocked within {:?}: {sql}",
                    self.step_timeout
                )));
            }
        }
    }

    /// Check every blocked session other than `except`: report those that have completed.
    fn collect_completions(&mut self, except: Option<&str>) -> Result<Vec<Completion>> {
        let mut done = Vec::new();
        let names: Vec<String> = self
            .sessions
            .iter()
            .filter(|(n, s)| s.pending.is_some() && Some(n.as_str()) != except)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let sql = self.get(&name)?.pending.clone().unwrap_or_default();
            if let StepState::Done(outcome) = self.settle(&name)? {
                self.transcript
                    .push_str(&format!("step {name}: <... completed>\n"));
                outcome.render(&mut self.transcript);
                let c = Completion {
                    session: name,
                    sql,
                    outcome,
                };
                self.completed.push(c.clone());
                done.push(c);
            }
        }
        Ok(done)
    }

    /// Run one step on a session. Returns Done with its outcome, or Blocked if it waits for a
    /// lock. Blocked steps of other sessions that completed meanwhile are recorded in the
    /// transcript; [`Sessions::wait`] waits for a blocked step and returns its outcome.
    pub fn step(&mut self, session: &str, sql: &str) -> Result<StepState> {
        if self.get(session)?.pending.is_some() {
            return Err(err(format!(
                "session {session} is still blocked in an earlier step; wait() for it first"
            )));
        }
        self.transcript.push_str(&format!("step {session}: {sql}"));
        {
            let s = self.get_mut(session)?;
            s.pending = Some(sql.to_string());
            s.tx.as_ref()
                .ok_or_else(|| err("session closed"))?
                .send(sql.to_string())
                .map_err(|_| err(format!("session {session}'s thread has gone")))?;
        }
        let state = self.settle(session)?;
        match &state {
            StepState::Done(out) => {
                self.transcript.push('\n');
                out.render(&mut self.transcript);
            }
            StepState::Blocked => self.transcript.push_str(" <waiting ...>\n"),
        }
        self.collect_completions(Some(session))?;
        Ok(state)
    }

    /// Wait (up to the step timeout) for a blocked session's step to complete.
    pub fn wait(&mut self, session: &str) -> Result<Outcome> {
        if self.get(session)?.pending.is_none() {
            return Err(err(format!("session {session} has no blocked step")));
        }
        let t0 = Instant::now();
        loop {
            let s = self.get(session)?;
            match s.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(out) => {
                    self.get_mut(session)?.pending = None;
                    self.transcript
                        .push_str(&format!("step {session}: <... completed>\n"));
                    out.render(&mut self.transcript);
                    return Ok(out);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(err(format!("session {session}'s thread has gone")));
                }
                Err(RecvTimeoutError::Timeout) if t0.elapsed() > self.step_timeout => {
                    return Err(err(format!(
                        "blocked step of session {session} did not complete within {:?}",
                        self.step_timeout
                    )));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Run steps in order and return the transcript, in the style of isolationtester:
    ///
    /// ```text
    /// step s2: UPDATE t SET v = 2 WHERE id = 1 <waiting ...>
    /// step s1: COMMIT
    /// step s2: <... completed>
    /// ```
    ///
    /// Result rows follow a step as `col|col` header and `val|val` lines, errors as
    /// `ERROR:  message (SQLSTATE xxxxx)`. A step on a session that is still blocked is an error
    /// of the runner (the script is wrong), as in isolationtester.
    pub fn run(&mut self, steps: &[(&str, &str)]) -> Result<String> {
        let start = self.transcript.len();
        for (session, sql) in steps {
            self.step(session, sql)?;
        }
        Ok(self.transcript[start..].to_string())
    }

    /// Blocked steps that completed while later steps ran (not those returned by
    /// [`Sessions::wait`]), oldest first, since the last call.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completed)
    }

    /// Everything run so far, as in [`Sessions::run`].
    pub fn transcript(&self) -> &str {
        &self.transcript
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for s in self.sessions.values_mut() {
            if s.pending.is_some() {
                let _ = s.cancel.cancel_query(NoTls);
            }
            // Closing the channel ends the session's thread (after its running step, if any).
            s.tx = None;
        }
    }
}
