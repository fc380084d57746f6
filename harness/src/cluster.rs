//! Throwaway PostgreSQL 15 clusters.
//!
//! A [`Cluster`] owns a fresh temporary directory holding a data directory (made by `initdb`), a
//! unix-socket directory and a server log. The postmaster is started as a direct child of the
//! calling process (as the `postgres` OS user when running as root), so that it can be stopped,
//! SIGKILLed and restarted at will. Nothing listens on TCP (`listen_addresses = ''`).
//!
//! Dropping a `Cluster` stops the server (immediate shutdown) and removes the directory, unless
//! the environment variable `TORII_KEEP_CLUSTER=1` is set.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls};

use crate::{err, Result};

/// Where the PostgreSQL 15 server programs live unless `TORII_PG_BINDIR` says otherwise.
pub const DEFAULT_PG_BINDIR: &str = "/usr/lib/postgresql/15/bin";

static CLUSTER_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The OS account the server runs as.
#[derive(Clone, Debug)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
    /// true when we are root and must switch to this user for server programs
    switch: bool,
}

fn os_user() -> Result<OsUser> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        // SAFETY: getegid has no preconditions.
        let egid = unsafe { libc::getegid() };
        let name = std::env::var("USER").unwrap_or_else(|_| "postgres".to_string());
        return Ok(OsUser {
            name,
            uid: euid,
            gid: egid,
            switch: false,
        });
    }
    // Root: PostgreSQL refuses to run as root, use the `postgres` account.
    let passwd = fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == "postgres" {
            return Ok(OsUser {
                name: "postgres".into(),
                uid: f[2].parse()?,
                gid: f[3].parse()?,
                switch: true,
            });
        }
    }
    Err(err(
        "running as root but there is no `postgres` OS user in /etc/passwd",
    ))
}

/// Directory of the PostgreSQL server binaries (initdb, postgres, pg_regress's psql ...).
pub fn pg_bindir() -> PathBuf {
    if let Ok(d) = std::env::var("TORII_PG_BINDIR") {
        return PathBuf::from(d);
    }
    PathBuf::from(DEFAULT_PG_BINDIR)
}

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if s.is_empty() {
        "cluster".into()
    } else {
        s
    }
}

fn env_secs(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// One process as seen in /proc: pid and start time (to survive pid reuse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProcId {
    pid: i32,
    start: u64,
}

/// (ppid, state, starttime) of a process from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(i32, char, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid is field 4, starttime field 22.
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((ppid, state, start))
}

fn children_of(ppid: i32) -> Vec<ProcId> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some((pp, state, start)) = proc_stat(pid) {
                    if pp == ppid && state != 'Z' {
                        out.push(ProcId { pid, start });
                    }
                }
            }
        }
    }
    out
}

/// Whether this very process (same pid, same start time) still runs (zombies count as gone).
fn alive(p: ProcId) -> bool {
    match proc_stat(p.pid) {
        Some((_, state, start)) => start == p.start && state != 'Z' && state != 'X',
        None => false,
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A throwaway PostgreSQL cluster. See the module documentation.
pub struct Cluster {
    name: String,
    base: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    port: u16,
    user: OsUser,
    bindir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Cluster {
    /// initdb a new cluster (not started) with the standard harness settings.
    pub fn new(name: &str) -> Result<Cluster> {
        Self::with_conf(name, &[])
    }

    /// initdb a new cluster and start it.
    pub fn started(name: &str) -> Result<Cluster> {
        let c = Self::new(name)?;
        c.start()?;
        Ok(c)
    }

    /// initdb a new cluster (not started) with extra `postgresql.conf` lines appended after the
    /// standard ones (later lines win).
    pub fn with_conf(name: &str, extra_conf: &[&str]) -> Result<Cluster> {
        Self::with_options(name, &[], extra_conf)
    }

    /// initdb a new cluster (not started) with extra initdb arguments (e.g.
    /// `--data-checksums`) and extra `postgresql.conf` lines.
    pub fn with_options(name: &str, initdb_args: &[&str], extra_conf: &[&str]) -> Result<Cluster> {
        let cluster = Self::allocate(name)?;
        cluster.initdb(initdb_args)?;
        cluster.append_standard_conf(extra_conf)?;
        Ok(cluster)
    }

    /// A hot standby of `primary` (not started): a new cluster directory whose data directory is
    /// a `pg_basebackup -X stream -R` of the running `primary` (so it holds `standby.signal` and
    /// a `primary_conninfo` over the primary's unix socket in `postgresql.auto.conf`). The
    /// standard harness settings (its own socket directory and port) are appended to the copied
    /// `postgresql.conf`, then `extra_conf` (later lines win: e.g.
    /// `shared_preload_libraries = ''` so that the standby does not preload what the primary
    /// does). The primary needs `wal_level = replica` (the default) and free WAL senders.
    pub fn standby_of(primary: &Cluster, name: &str, extra_conf: &[&str]) -> Result<Cluster> {
        let cluster = Self::allocate(name)?;
        let out = cluster
            .pg_command("pg_basebackup")
            .arg("-D")
            .arg(&cluster.data)
            .arg("-h")
            .arg(&primary.sock)
            .arg("-p")
            .arg(primary.port.to_string())
            .args([
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "-c",
                "fast",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(err(format!(
                "pg_basebackup of {} failed ({}):\n{}{}",
                primary.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if !cluster.data.join("standby.signal").exists() {
            return Err(err("pg_basebackup -R wrote no standby.signal"));
        }
        cluster.append_standard_conf(extra_conf)?;
        Ok(cluster)
    }

    /// Wait until this (standby) server has replayed WAL up to `lsn` (text form, e.g. a
    /// primary's `pg_current_wal_lsn()`), or fail after `timeout`.
    pub fn wait_for_replay(&self, lsn: &str, timeout: Duration) -> Result<()> {
        let mut c = self.connect("postgres")?;
        let t0 = Instant::now();
        loop {
            let row = c.query_one(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false), \
                 pg_last_wal_replay_lsn()::text",
                &[&lsn],
            )?;
            if row.get::<_, bool>(0) {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                let at: Option<String> = row.get(1);
                return Err(err(format!(
                    "{} did not replay up to {lsn} within {timeout:?} (replayed up to {at:?})",
                    self.name
                )));
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// A new cluster directory (base, socket dir, port), no data directory yet.
    fn allocate(name: &str) -> Result<Cluster> {
        let user = os_user()?;
        let bindir = pg_bindir();
        let n = CLUSTER_COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = std::env::var_os("TORII_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let base = root.join(format!(
            "torii-{}-{pid}-{n}-{:x}",
            sanitize(name),
            nanos & 0xffff
        ));
        fs::create_dir_all(&base)?;
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700))?;
        let sock = base.join("sock");
        fs::create_dir(&sock)?;
        // A port unique per cluster within this process, spread by pid across processes. The
        // socket directory is private anyway, so a clash between processes would be harmless.
        let port = 20000 + ((pid.wrapping_mul(97).wrapping_add(n)) % 40000) as u16;
        let data = base.join("data");
        let log = base.join("postgres.log");
        let cluster = Cluster {
            name: sanitize(name),
            base,
            data,
            sock,
            log,
            port,
            user,
            bindir,
            child: Mutex::new(None),
        };
        cluster.chown(&cluster.base)?;
        cluster.chown(&cluster.sock)?;
        Ok(cluster)
    }

    /// Append the standard harness settings, then `extra_conf`, to postgresql.conf.
    fn append_standard_conf(&self, extra_conf: &[&str]) -> Result<()> {
        let mut conf = vec![
            "# --- torii harness settings ---".to_string(),
            "listen_addresses = ''".into(),
            format!("unix_socket_directories = '{}'", self.sock.display()),
            format!("port = {}", self.port),
            "fsync = on".into(),
            "shared_buffers = 128MB".into(),
            "max_wal_size = 2GB".into(),
            "max_connections = 50".into(),
            "max_prepared_transactions = 10".into(),
            "logging_collector = off".into(),
            "log_destination = 'stderr'".into(),
            "log_line_prefix = '%m [%p] %q%a '".into(),
            "log_checkpoints = off".into(),
            "lc_messages = 'C'".into(),
            "dynamic_shared_memory_type = posix".into(),
            // crash recovery starts by syncing the data directory; syncfs is much faster here
            "recovery_init_sync_method = syncfs".into(),
        ];
        // torii's row-level WAL needs its resource manager, which only a preloaded library can
        // register; TORII_WAL=generic runs torii unloaded, with generic WAL.
        if !crate::testing::generic_wal() {
            conf.push("shared_preload_libraries = 'torii'".into());
        }
        conf.push("# --- extra settings ---".into());
        conf.extend(extra_conf.iter().map(|s| s.to_string()));
        self.append_conf(&conf.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    }

    fn chown(&self, p: &Path) -> Result<()> {
        if self.user.switch {
            std::os::unix::fs::chown(p, Some(self.user.uid), Some(self.user.gid))?;
        }
        Ok(())
    }

    /// A command for a PostgreSQL program, run as the server's OS user.
    pub fn pg_command(&self, program: &str) -> Command {
        let path = if Path::new(program).is_absolute() {
            PathBuf::from(program)
        } else {
            self.bindir.join(program)
        };
        let mut c = Command::new(path);
        if self.user.switch {
            c.uid(self.user.uid).gid(self.user.gid);
        }
        for v in [
            "PGDATA",
            "PGHOST",
            "PGHOSTADDR",
            "PGPORT",
            "PGDATABASE",
            "PGUSER",
            "PGOPTIONS",
            "PGSERVICE",
            "PGPASSWORD",
        ] {
            c.env_remove(v);
        }
        c.env("HOME", &self.base).current_dir(&self.base);
        c
    }

    fn initdb(&self, extra: &[&str]) -> Result<()> {
        let mut last_output = String::new();
        for locale in ["C.UTF-8", "C"] {
            let out = self
                .pg_command("initdb")
                .arg("-D")
                .arg(&self.data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .arg(format!("--locale={locale}"))
                .args(extra)
                .stdin(Stdio::null())
                .output()?;
            if out.status.success() {
                return Ok(());
            }
            last_output = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = fs::remove_dir_all(&self.data);
        }
        Err(err(format!("initdb failed:\n{last_output}")))
    }

    /// Append lines to postgresql.conf (they take effect at the next start/restart or reload).
    pub fn append_conf(&self, lines: &[&str]) -> Result<()> {
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        for l in lines {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    /// The cluster's private temporary directory (owned by the server's OS user).
    pub fn base_dir(&self) -> &Path {
        &self.base
    }
    pub fn data_dir(&self) -> &Path {
        &self.data
    }
    pub fn socket_dir(&self) -> &Path {
        &self.sock
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// Name of the OS user the server runs as.
    pub fn os_user(&self) -> &str {
        &self.user.name
    }
    /// A libpq-style connection string (for psql, pgbench ...).
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={db}",
            self.sock.display(),
            self.port
        )
    }

    /// Make a directory below the cluster's temp dir owned by the server's OS user (for
    /// tablespaces, COPY files, pg_regress output ...).
    pub fn make_dir(&self, rel: &str) -> Result<PathBuf> {
        let p = self.base.join(rel);
        fs::create_dir_all(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700))?;
        self.chown(&p)?;
        Ok(p)
    }

    /// Give a file or directory (not recursive) to the server's OS user.
    pub fn give_to_server(&self, p: &Path) -> Result<()> {
        self.chown(p)
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the postmaster we started is still running.
    pub fn is_running(&self) -> bool {
        let mut g = self.lock_child();
        match g.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// pid of the running postmaster, if any.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let mut g = self.lock_child();
        match g.as_mut() {
            Some(c) => match c.try_wait() {
                Ok(None) => Some(c.id() as i32),
                _ => None,
            },
            None => None,
        }
    }

    /// Start the server and wait until it accepts connections (after crash recovery if needed).
    pub fn start(&self) -> Result<()> {
        let mut g = self.lock_child();
        if let Some(c) = g.as_mut() {
            if c.try_wait()?.is_none() {
                return Err(err(format!("cluster {} is already running", self.name)));
            }
        }
        *g = None;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let log_offset = log.metadata()?.len();
        let mut cmd = self.pg_command("postgres");
        cmd.arg("-D")
            .arg(&self.data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let timeout = env_secs("TORII_START_TIMEOUT", 600);
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(err(format!(
                    "postmaster of cluster {} exited during start ({status}); log:\n{}",
                    self.name,
                    self.log_since(log_offset)
                )));
            }
            if let Ok(pidfile) = fs::read_to_string(self.data.join("postmaster.pid")) {
                let lines: Vec<&str> = pidfile.lines().collect();
                if lines.len() >= 8
                    && lines[0].trim() == pid.to_string()
                    && lines[7].trim() == "ready"
                {
                    break;
                }
            }
            if t0.elapsed() > timeout {
                signal(pid as i32, libc::SIGQUIT);
                let _ = child.wait();
                return Err(err(format!(
                    "cluster {} did not become ready within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_since(log_offset)
                )));
            }
            sleep(Duration::from_millis(20));
        }
        *g = Some(child);
        Ok(())
    }

    fn shutdown(&self, sig: i32, what: &str) -> Result<()> {
        let mut g = self.lock_child();
        let Some(mut child) = g.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = child.id() as i32;
        signal(pid, sig);
        let timeout = env_secs("TORII_STOP_TIMEOUT", 300);
        let t0 = Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if t0.elapsed() > timeout {
                eprintln!(
                    "torii-harness: {what} shutdown of {} timed out, sending SIGQUIT",
                    self.name
                );
                signal(pid, libc::SIGQUIT);
                sleep(Duration::from_secs(5));
                if child.try_wait()?.is_none() {
                    signal(pid, libc::SIGKILL);
                    child.wait()?;
                }
                return Err(err(format!("{what} shutdown of {} timed out", self.name)));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Fast shutdown (like `pg_ctl stop -m fast`): abort sessions, checkpoint, exit.
    pub fn stop(&self) -> Result<()> {
        self.shutdown(libc::SIGINT, "fast")
    }

    /// Immediate shutdown (like `pg_ctl stop -m immediate`): the next start does crash recovery.
    pub fn stop_immediate(&self) -> Result<()> {
        self.shutdown(libc::SIGQUIT, "immediate")
    }

    /// Fast stop, then start.
    pub fn restart(&self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    fn postmaster_pid_from_file(&self) -> Result<i32> {
        let pidfile = fs::read_to_string(self.data.join("postmaster.pid"))
            .map_err(|e| err(format!("cannot read postmaster.pid: {e}")))?;
        let pid = pidfile.lines().next().unwrap_or("").trim().parse::<i32>()?;
        Ok(pid)
    }

    /// `kill -9` of the postmaster (pid read from postmaster.pid), then wait until it and all of
    /// its children are gone. Children notice the postmaster's death and exit by themselves; any
    /// that is still running after `TORII_KILL9_GRACE` seconds (default 10: a backend busy in a
    /// long query does not look) is SIGKILLed too. Nothing is removed: the next [`start`] does
    /// crash recovery.
    ///
    /// [`start`]: Cluster::start
    pub fn kill9(&self) -> Result<()> {
        self.kill9_inner(false)
    }

    /// Simulated crash of the whole server: SIGKILL the postmaster and every child at once, as
    /// an OOM kill or a power cut (minus the page cache) would. Next [`start`] recovers.
    ///
    /// [`start`]: Cluster::start
    pub fn crash(&self) -> Result<()> {
        self.kill9_inner(true)
    }

    fn kill9_inner(&self, all_at_once: bool) -> Result<()> {
        let mut g = self.lock_child();
        // Only ever signal a postmaster we started and that still runs: a stale postmaster.pid
        // may name a pid that is reused by now.
        let ours = match g.as_mut() {
            Some(c) => match c.try_wait()? {
                None => c.id() as i32,
                Some(_) => return Err(err(format!("cluster {} is not running", self.name))),
            },
            None => return Err(err(format!("cluster {} is not running", self.name))),
        };
        let pid = self.postmaster_pid_from_file()?;
        if ours != pid {
            return Err(err(format!(
                "postmaster.pid of {} names {pid}, but the postmaster we started is {ours}",
                self.name
            )));
        }
        let mut child = match g.take() {
            Some(c) => c,
            None => return Err(err("postmaster handle vanished")),
        };
        // Freeze the postmaster first so that it forks no child between our look at its
        // children and the kill.
        signal(pid, libc::SIGSTOP);
        let t_stop = Instant::now();
        while !matches!(proc_stat(pid), Some((_, 'T', _)) | Some((_, 't', _)))
            && t_stop.elapsed() < Duration::from_secs(2)
        {
            sleep(Duration::from_millis(1));
        }
        let children = children_of(pid);
        signal(pid, libc::SIGKILL);
        if all_at_once {
            for c in &children {
                signal(c.pid, libc::SIGKILL);
            }
        }
        child.wait()?;
        let grace = env_secs("TORII_KILL9_GRACE", 10);
        let t0 = Instant::now();
        let mut forced = false;
        loop {
            let left: Vec<ProcId> = children.iter().copied().filter(|c| alive(*c)).collect();
            if left.is_empty() {
                break;
            }
            if t0.elapsed() > grace {
                if !forced {
                    eprintln!(
                        "torii-harness: {} child(ren) of the killed postmaster of {} still ran \
                         after {grace:?}; SIGKILL",
                        left.len(),
                        self.name
                    );
                    forced = true;
                }
                for c in &left {
                    signal(c.pid, libc::SIGKILL);
                }
            }
            if t0.elapsed() > grace + Duration::from_secs(60) {
                return Err(err(format!(
                    "children of killed postmaster {pid} still alive: {left:?}"
                )));
            }
            sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Connect to database `db` over the unix socket as user postgres.
    pub fn connect(&self, db: &str) -> Result<Client> {
        Ok(self.client_config(db).connect(NoTls)?)
    }

    /// The connection settings for database `db`, to adjust before connecting.
    pub fn client_config(&self, db: &str) -> postgres::Config {
        let mut cfg = postgres::Config::new();
        cfg.host_path(&self.sock)
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .application_name("torii-harness")
            .connect_timeout(Duration::from_secs(30));
        cfg
    }

    /// Run SQL (one or more statements, simple query protocol) in database `postgres`.
    pub fn exec(&self, sql: &str) -> Result<()> {
        self.exec_in("postgres", sql)
    }

    /// Run SQL (one or more statements, simple query protocol) in database `db`.
    pub fn exec_in(&self, db: &str, sql: &str) -> Result<()> {
        let mut c = self.connect(db)?;
        c.batch_execute(sql)?;
        Ok(())
    }

    /// First column of the first row of a query in database `postgres`.
    pub fn query_scalar<T>(&self, sql: &str) -> Result<T>
    where
        T: for<'a> postgres::types::FromSql<'a>,
    {
        self.query_scalar_in("postgres", sql)
    }

    /// First column of the first row of a query in database `db`.
    pub fn query_scalar_in<T>(&self, db: &str, sql: &str) -> Result<T>
    where
        T: for<'a> postgres::types::FromSql<'a>,
    {
        let mut c = self.connect(db)?;
        crate::sql::scalar(&mut c, sql)
    }

    /// `CREATE DATABASE name`.
    pub fn create_db(&self, name: &str) -> Result<()> {
        self.exec(&format!("CREATE DATABASE {}", crate::sql::ident(name)))
    }

    /// `CREATE DATABASE name` and `CREATE EXTENSION torii` in it.
    pub fn create_db_with_torii(&self, name: &str) -> Result<()> {
        self.create_db(name)?;
        self.exec_in(name, "CREATE EXTENSION torii")
    }

    /// Absolute path of a relation's first data file (`pg_relation_filepath`).
    pub fn relation_path(&self, client: &mut Client, rel: &str) -> Result<PathBuf> {
        let row = client.query_one("SELECT pg_relation_filepath($1::text::regclass)", &[&rel])?;
        let p: Option<String> = row.get(0);
        let p = p.ok_or_else(|| err(format!("relation {rel} has no storage")))?;
        Ok(self.data.join(p))
    }

    /// The whole server log (all starts of this cluster).
    pub fn log_contents(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Current length of the server log, to read only what comes later with [`log_since`].
    ///
    /// [`log_since`]: Cluster::log_since
    pub fn log_len(&self) -> u64 {
        fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// The server log from byte `offset` on.
    pub fn log_since(&self, offset: u64) -> String {
        let b = fs::read(&self.log).unwrap_or_default();
        let start = (offset as usize).min(b.len());
        String::from_utf8_lossy(&b[start..]).into_owned()
    }

    /// Lines of the log that show a backend crash or a PANIC (from byte `offset` on).
    pub fn crash_lines_since(&self, offset: u64) -> Vec<String> {
        self.log_since(offset)
            .lines()
            .filter(|l| {
                l.contains("terminated by signal")
                    || l.contains("PANIC:")
                    || l.contains("was terminated by exception")
                    || (l.contains("server process") && l.contains("exited with exit code"))
            })
            .map(|l| l.to_string())
            .collect()
    }

    /// Error if the log shows a crashed backend or a PANIC.
    pub fn assert_no_crash(&self) -> Result<()> {
        let lines = self.crash_lines_since(0);
        if lines.is_empty() {
            Ok(())
        } else {
            Err(err(format!(
                "server log of {} shows a crash:\n{}",
                self.name,
                lines.join("\n")
            )))
        }
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let all = self.log_contents();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep = std::env::var("TORII_KEEP_CLUSTER")
            .map(|v| v == "1")
            .unwrap_or(false);
        // On a failed test (a panic), or when the server log shows a crash, show the log's end.
        if std::thread::panicking() || !self.crash_lines_since(0).is_empty() {
            eprintln!(
                "torii-harness: cluster {} ({}) — last lines of the server log:\n{}",
                self.name,
                self.base.display(),
                self.log_tail(40)
            );
        }
        if let Err(e) = self.stop_immediate() {
            eprintln!("torii-harness: stopping cluster {}: {e}", self.name);
        }
        if keep {
            eprintln!(
                "torii-harness: keeping cluster {} in {} (TORII_KEEP_CLUSTER=1)",
                self.name,
                self.base.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.base) {
            eprintln!("torii-harness: removing {}: {e}", self.base.display());
        }
    }
}
