//! SSH workers: the current program started on other hosts through `ssh`.
//!
//! # How a worker starts
//!
//! For each worker the master runs
//!
//! ```text
//! ssh [sshflags] -T -x -a -o BatchMode=yes -o ConnectTimeout=T -o ServerAliveInterval=5 \
//!     -o ServerAliveCountMax=3 [-p port] [user@]host \
//!     "cd -- DIR && exec env COHORT_WORKER=1 COHORT_WORKER_TIMEOUT=T ... COHORT_BIND=ADDR EXE FLAGS"
//! ```
//!
//! (the flags you give come first, and ssh takes the first value it sees for an option, so yours
//! win). The cluster cookie is the first line written to ssh's stdin, so it never appears on a
//! command line on either host. The remote login shell must be a POSIX shell (sh, bash, dash,
//! ksh, zsh). The worker reports its listener address on its stdout as a tagged line
//! (`cohort_worker:ADDR`), so nothing the program prints before `cohort::init()` is taken for it;
//! all its other output is shown by the master as `From worker N: ...`, stdout on stdout, and
//! stderr (with ssh's own messages) on stderr.
//!
//! # Where a worker listens
//!
//! - With a `bind_addr[:port]` in its machine spec: there (worker `i` of the host on `port+i`).
//! - Otherwise on the address its ssh connection came in on (the server address in
//!   `$SSH_CONNECTION`): the interface the master can evidently reach, and only that one.
//! - With `restrict = false` and no `bind_addr`: on every interface (`0.0.0.0`).
//!
//! The master listens on no port at all; it connects to each worker, and workers connect to
//! each other (all-to-all topology) at the addresses the workers reported.
//!
//! # Tunnels and multiplexing
//!
//! With `tunnel`, the master reaches each worker through an ssh local forward
//! (`-L 127.0.0.1:LPORT:ADDR:PORT`, one more ssh connection per worker, or `-O forward` on the
//! shared connection with `multiplex`): master-to-worker traffic is then encrypted and only the
//! ssh port of the host need be reachable from the master. `WorkerConfig::connect_at` is the
//! local end. Worker-to-worker links stay plain TCP.
//!
//! With `multiplex`, one ssh connection per host carries every worker's session (and its
//! tunnel): ssh's `ControlMaster`, with the control socket in a private temporary directory.
//! It needs the server's `MaxSessions` (default 10) above the number of workers per host.
//!
//! # Liveness
//!
//! A worker's ssh session is its lifeline: when the session ends (the host went away and
//! ssh's keepalive gave up, the worker died, someone killed the ssh client), the manager closes
//! the master's link to that worker, so the master reports `ProcessExited` for it at once and
//! goes on with the others. Tune the delay with sshflags such as
//! `-o ServerAliveInterval=1 -o ServerAliveCountMax=3`.

use crate::machines::{read_machine_file, Machine, SpecError};
use crate::output::{drain_lines, tail};
use cohort_core::{
    read_worker_address, AddProcsParams, ClusterManager, Count, Error, ManageOp, Pid, Result,
    WorkerConfig,
};
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// The keyword arguments of Julia's `addprocs(machines; ...)`.
///
/// `dir`, `exename`, `exeflags`, `env`, `worker_timeout` and `restrict` are defaults: the
/// [`AddProcsParams`] given to `addprocs_with` take precedence where they are set.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Tunnel master-to-worker traffic through ssh (default `false`).
    pub tunnel: bool,
    /// Share one ssh connection per host (default `false`).
    pub multiplex: bool,
    /// The ssh client (default `ssh`, looked up in `PATH`).
    pub ssh: PathBuf,
    /// Extra ssh arguments, before cohort's own (e.g. `["-i", "/home/me/key.pem"]`).
    pub sshflags: Vec<String>,
    /// ssh connections set up at once per host (default 10).
    pub max_parallel: usize,
    /// The workers' working directory (default: the master's).
    pub dir: Option<PathBuf>,
    /// The program to start on the hosts (default: the master's own path).
    pub exename: Option<PathBuf>,
    /// Its arguments (default: the master's).
    pub exeflags: Option<Vec<String>>,
    /// Environment variables set for the workers (`COHORT_WORKER_TIMEOUT` is always set).
    pub env: Vec<(String, String)>,
    /// How long a worker may take to report its address, and waits to be contacted
    /// (default: `COHORT_WORKER_TIMEOUT`, 60 s).
    pub worker_timeout: Option<Duration>,
    /// `true` (default): a worker without a `bind_addr` listens only on the address its ssh
    /// connection came in on; `false`: on every interface.
    pub restrict: bool,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            tunnel: false,
            multiplex: false,
            ssh: PathBuf::from("ssh"),
            sshflags: Vec::new(),
            max_parallel: 10,
            dir: None,
            exename: None,
            exeflags: None,
            env: Vec::new(),
            worker_timeout: None,
            restrict: true,
        }
    }
}

impl SshOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The options the `cohort` launcher passes in the environment: `COHORT_SSHFLAGS` (split at
    /// whitespace) and `COHORT_SSH_TUNNEL`.
    pub fn from_env() -> Self {
        SshOptions {
            tunnel: cohort_core::env::ssh_tunnel(),
            sshflags: cohort_core::env::ssh_flags(),
            ..Self::default()
        }
    }

    /// Sets [`tunnel`](Self::tunnel).
    pub fn tunnel(mut self, on: bool) -> Self {
        self.tunnel = on;
        self
    }
    /// Sets [`multiplex`](Self::multiplex).
    pub fn multiplex(mut self, on: bool) -> Self {
        self.multiplex = on;
        self
    }
    /// Sets [`ssh`](Self::ssh).
    pub fn ssh(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssh = path.into();
        self
    }
    /// Sets [`sshflags`](Self::sshflags).
    pub fn sshflags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, flags: I) -> Self {
        self.sshflags = flags.into_iter().map(Into::into).collect();
        self
    }
    /// Sets [`max_parallel`](Self::max_parallel) (at least 1).
    pub fn max_parallel(mut self, n: usize) -> Self {
        self.max_parallel = n.max(1);
        self
    }
    /// Sets [`dir`](Self::dir).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
    /// Sets [`exename`](Self::exename).
    pub fn exename(mut self, path: impl Into<PathBuf>) -> Self {
        self.exename = Some(path.into());
        self
    }
    /// Sets [`exeflags`](Self::exeflags).
    pub fn exeflags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, flags: I) -> Self {
        self.exeflags = Some(flags.into_iter().map(Into::into).collect());
        self
    }
    /// Adds a variable to [`env`](Self::env).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// Sets [`worker_timeout`](Self::worker_timeout).
    pub fn worker_timeout(mut self, t: Duration) -> Self {
        self.worker_timeout = Some(t);
        self
    }
    /// Sets [`restrict`](Self::restrict).
    pub fn restrict(mut self, on: bool) -> Self {
        self.restrict = on;
        self
    }
}

/// Something that names a machine: a [`Machine`], a spec string, or `(spec, count)`.
pub trait IntoMachine {
    /// The machine, or why the spec is malformed.
    fn into_machine(self) -> std::result::Result<Machine, SpecError>;
}

impl IntoMachine for Machine {
    fn into_machine(self) -> std::result::Result<Machine, SpecError> {
        Ok(self)
    }
}
impl IntoMachine for &Machine {
    fn into_machine(self) -> std::result::Result<Machine, SpecError> {
        Ok(self.clone())
    }
}
impl IntoMachine for &str {
    fn into_machine(self) -> std::result::Result<Machine, SpecError> {
        Machine::parse(self)
    }
}
impl IntoMachine for String {
    fn into_machine(self) -> std::result::Result<Machine, SpecError> {
        Machine::parse(&self)
    }
}
impl IntoMachine for &String {
    fn into_machine(self) -> std::result::Result<Machine, SpecError> {
        Machine::parse(self)
    }
}
impl IntoMachine for (&str, usize) {
    fn into_machine(self) -> std::result::Result<Machine, SpecError> {
        Machine::with_count(self.0, Count::N(self.1))
    }
}
impl IntoMachine for (&str, Count) {
    fn into_machine(self) -> std::result::Result<Machine, SpecError> {
        Machine::with_count(self.0, self.1)
    }
}

/// Adds workers on other hosts through ssh and returns their pids.
///
/// ```no_run
/// use cohort_launcher::{addprocs_machines, SshOptions};
/// let pids = addprocs_machines(
///     ["node1", "alice@node2:2222", "4*node3", "auto*node4 10.1.0.4"],
///     SshOptions::new().tunnel(true).sshflags(["-i", "/home/alice/.ssh/cluster"]),
/// )?;
/// # Ok::<(), cohort_core::Error>(())
/// ```
///
/// On an error (a host that cannot be reached, a wrong `exename`, a worker that does not
/// report its address within the worker timeout) the error names the host, and the workers
/// that did start are part of the cluster.
///
/// # Julia
/// `addprocs(machines; tunnel, multiplex, ssh, sshflags, max_parallel, dir, exename, exeflags,
/// env)`.
pub fn addprocs_machines<I>(machines: I, options: SshOptions) -> Result<Vec<Pid>>
where
    I: IntoIterator,
    I::Item: IntoMachine,
{
    let ms = machines
        .into_iter()
        .map(IntoMachine::into_machine)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let m = SshManager::new(ms, options);
    let params = m.default_addprocs_params();
    cohort_core::addprocs_with(Arc::new(m), params)
}

/// Adds workers on the hosts of a machine file (see [`crate::machines`]).
///
/// # Julia
/// `julia --machine-file FILE`.
pub fn addprocs_machine_file(path: &Path, options: SshOptions) -> Result<Vec<Pid>> {
    addprocs_machines(read_machine_file(path)?, options)
}

/// Starts workers on other hosts through ssh (Julia's `SSHManager`).
///
/// `params.count` of `addprocs_with` is not used: the machines say how many workers each host
/// gets. See the [module documentation](self) for what runs where.
pub struct SshManager {
    machines: Vec<Machine>,
    opts: SshOptions,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SshManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshManager")
            .field("machines", &self.machines)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl SshManager {
    /// A manager for `machines`.
    pub fn new(machines: Vec<Machine>, options: SshOptions) -> Self {
        SshManager {
            machines,
            opts: options,
            inner: Arc::new(Inner::default()),
        }
    }

    /// The machines it starts workers on.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// Its options.
    pub fn options(&self) -> &SshOptions {
        &self.opts
    }

    /// The ssh client processes it runs now (sessions, tunnels, shared connections).
    pub fn ssh_processes(&self) -> usize {
        lock(&self.inner.procs).len()
    }
}

/// The cookie the manager keeps in `WorkerConfig::userdata`.
#[derive(Debug)]
struct SshWorker {
    token: u64,
    timeout: Duration,
}

enum Tunnel {
    /// An ssh process of its own; dropping its stdin ends it.
    Proc { id: u64, _stdin: Option<ChildStdin> },
    /// A forward on the host's shared connection.
    Mux { spec: String },
}

struct WState {
    launch: Option<u64>,
    tunnel: Option<Tunnel>,
    link: Option<TcpStream>,
    lost: bool,
    mux: Option<Arc<MuxConn>>,
}

struct MuxConn {
    /// Private directory holding the control socket.
    dir: PathBuf,
    /// The master's process in `Inner::procs`.
    id: u64,
    /// ssh arguments that reach the host through the control socket (without the destination).
    args: Vec<String>,
    dest: String,
    ssh: PathBuf,
    stdin: Mutex<Option<ChildStdin>>,
    users: Mutex<usize>,
}

#[derive(Default)]
struct Inner {
    procs: Mutex<HashMap<u64, Child>>,
    workers: Mutex<HashMap<u64, WState>>,
    conns: Mutex<HashMap<String, Arc<MuxConn>>>,
    next: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Inner {
    fn drop(&mut self) {
        let procs: Vec<Child> = lock(&self.procs).drain().map(|(_, c)| c).collect();
        for mut c in procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        for (_, c) in lock(&self.conns).drain() {
            let _ = std::fs::remove_dir_all(&c.dir);
        }
    }
}

pub(crate) fn thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(name.into())
        .stack_size(128 * 1024)
        .spawn(f)
    {
        cohort_core::log!(error, error = %e, "cannot start a thread ({name})");
    }
}

impl Inner {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Spawns `cmd`, keeps the child, and calls `on_exit` once it has exited and been reaped.
    fn spawn_watched(
        self: &Arc<Self>,
        cmd: &mut Command,
        on_exit: impl FnOnce(&Arc<Inner>, Option<ExitStatus>) + Send + 'static,
    ) -> std::io::Result<(u64, Option<ChildStdin>)> {
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let ospid = child.id();
        let id = self.next_id();
        lock(&self.procs).insert(id, child);
        let weak: Weak<Inner> = Arc::downgrade(self);
        thread("cohort-ssh-watch", move || {
            use nix::sys::wait::{waitid, Id, WaitPidFlag};
            let pid = nix::unistd::Pid::from_raw(ospid as i32);
            // Wait for the exit without reaping, so that a signal sent under the lock never
            // reaches a reused pid.
            while let Err(nix::errno::Errno::EINTR) =
                waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
            {}
            let Some(inner) = weak.upgrade() else { return };
            let child = lock(&inner.procs).remove(&id);
            if let Some(mut c) = child {
                let status = c.wait().ok();
                on_exit(&inner, status);
            }
        });
        Ok((id, stdin))
    }

    /// Sends `sig` to process `id` if it is still running; whether it was.
    fn signal(&self, id: u64, sig: Signal) -> bool {
        let procs = lock(&self.procs);
        match procs.get(&id) {
            Some(c) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
                true
            }
            None => false,
        }
    }

    /// The worker's ssh session ended: close the master's link so the core sees it gone.
    fn session_ended(&self, token: u64) {
        let mut ws = lock(&self.workers);
        if let Some(w) = ws.get_mut(&token) {
            w.lost = true;
            w.launch = None;
            if let Some(l) = &w.link {
                let _ = l.shutdown(Shutdown::Both);
            }
        }
    }

    /// Releases everything held for a worker: gives its ssh session `grace` to end by itself
    /// (the worker exits when asked to, or when its master link is gone), then ends it, its
    /// tunnel, and its use of a shared connection.
    fn release(self: &Arc<Self>, token: u64, grace: Duration) {
        let Some(w) = lock(&self.workers).remove(&token) else {
            return;
        };
        let me = Arc::clone(self);
        thread("cohort-ssh-release", move || {
            if let Some(id) = w.launch {
                let end = Instant::now() + grace;
                while Instant::now() < end && lock(&me.procs).contains_key(&id) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                me.signal(id, Signal::SIGTERM);
            }
            drop(w.link);
            match w.tunnel {
                Some(Tunnel::Proc { id, _stdin }) => {
                    drop(_stdin);
                    me.signal(id, Signal::SIGTERM);
                }
                Some(Tunnel::Mux { spec }) => {
                    if let Some(c) = &w.mux {
                        let mut cmd = c.command();
                        cmd.args(["-O", "cancel", "-L", &spec, &c.dest]);
                        let _ = run_capture(&me, &mut cmd, Instant::now() + Duration::from_secs(5));
                    }
                }
                None => {}
            }
            if let Some(c) = w.mux {
                me.release_conn(&c);
            }
        });
    }

    fn release_conn(self: &Arc<Self>, c: &Arc<MuxConn>) {
        let mut users = lock(&c.users);
        *users = users.saturating_sub(1);
        if *users > 0 {
            return;
        }
        drop(users);
        {
            let mut conns = lock(&self.conns);
            conns.retain(|_, v| !Arc::ptr_eq(v, c));
        }
        // The master's own session (`cat`) ends at EOF; the connection closes once the last
        // worker session on it has ended.
        lock(&c.stdin).take();
        let me = Arc::clone(self);
        let id = c.id;
        thread("cohort-ssh-release", move || {
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end && lock(&me.procs).contains_key(&id) {
                std::thread::sleep(Duration::from_millis(20));
            }
            me.signal(id, Signal::SIGTERM);
        });
    }
}

impl MuxConn {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.ssh);
        c.args(&self.args);
        c
    }
}

/// Quotes `s` for a POSIX shell.
pub(crate) fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:=@%+,-".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub(crate) fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `host:port` as a worker prints it (IPv6 hosts without brackets).
pub(crate) fn parse_address(line: &str) -> Option<(String, u16)> {
    let l = line.trim();
    if l.is_empty() || l.contains(char::is_whitespace) {
        return None;
    }
    let (h, p) = l.rsplit_once(':')?;
    let port: u16 = p.parse().ok().filter(|&p| p > 0)?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:_%".contains(&b))
    {
        return None;
    }
    Some((h.to_string(), port))
}

pub(crate) fn valid_env_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The environment of workers a remote-launching manager (`who`: "SSH", "Slurm") starts: worker
/// mode and its timeout, the settings of `forward` this process has, then `given` (the user's),
/// checked. A variable the manager sets itself is an error that says to use `bind_hint`; so is a
/// transport other than shared memory or TCP (between hosts cohort speaks TCP).
pub(crate) fn worker_env<'a>(
    who: &str,
    bind_hint: &str,
    timeout: Duration,
    forward: &[&str],
    given: impl IntoIterator<Item = &'a (String, String)>,
) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = vec![
        ("COHORT_WORKER".into(), "1".into()),
        (
            "COHORT_WORKER_TIMEOUT".into(),
            timeout.as_secs_f64().to_string(),
        ),
    ];
    // Settings that must agree across the cluster travel with the workers.
    for &k in forward {
        if let Ok(v) = std::env::var(k) {
            env.push((k.into(), v));
        }
    }
    for (k, v) in given {
        if !valid_env_name(k) {
            return Err(Error::Invalid(format!(
                "{who} workers: {k:?} is not an environment variable name"
            )));
        }
        if k == "COHORT_WORKER" || k == "COHORT_BIND" {
            return Err(Error::Invalid(format!(
                "{who} workers: {k} is set by the manager ({bind_hint})"
            )));
        }
        env.retain(|(e, _)| e != k);
        env.push((k.clone(), v.clone()));
    }
    let transport = env
        .iter()
        .find(|(k, _)| k == "COHORT_TRANSPORT")
        .map_or("shm", |(_, v)| v.as_str());
    // Shared memory is TCP between hosts (and rings between processes of one host).
    if transport != "tcp" && transport != "shm" {
        return Err(Error::Invalid(format!(
            "{who} workers need the shm or tcp transport, not {transport:?} (COHORT_TRANSPORT)"
        )));
    }
    Ok(env)
}

/// Runs a short command with merged output; its exit status and output, within `deadline`.
fn run_capture(
    inner: &Arc<Inner>,
    cmd: &mut Command,
    deadline: Instant,
) -> std::result::Result<(Option<ExitStatus>, String), String> {
    let (r, w) = std::io::pipe().map_err(|e| format!("creating a pipe: {e}"))?;
    let w2 = w.try_clone().map_err(|e| format!("creating a pipe: {e}"))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2));
    let (stx, srx) = mpsc::channel();
    let (id, _) = inner
        .spawn_watched(cmd, move |_, st| {
            let _ = stx.send(st);
        })
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    // Close our copies of the pipe's write end so that EOF comes with the child's exit.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (otx, orx) = mpsc::channel();
    thread("cohort-ssh-read", move || {
        let mut s = String::new();
        let mut r = r;
        let _ = r.read_to_string(&mut s);
        let _ = otx.send(s);
    });
    let left = deadline.saturating_duration_since(Instant::now());
    let out = match orx.recv_timeout(left) {
        Ok(s) => s,
        Err(_) => {
            inner.signal(id, Signal::SIGKILL);
            return Err(format!(
                "no answer within {:.1} s",
                left.as_secs_f64().max(0.0)
            ));
        }
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let st = srx.recv_timeout(left).ok().flatten();
    Ok((st, out))
}

fn free_local_port() -> std::result::Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free local port for the tunnel: {e}"))
}

/// What a host thread reports.
enum HostErr {
    Timeout(String),
    Other(String),
}

impl HostErr {
    fn msg(&self) -> &str {
        match self {
            HostErr::Timeout(s) | HostErr::Other(s) => s,
        }
    }
}

/// One `launch` call: what every worker of it is started with.
struct Job<'a> {
    mgr: &'a SshManager,
    cookie: String,
    exe: String,
    flags: Vec<String>,
    dir: String,
    env: Vec<(String, String)>,
    timeout: Duration,
    restrict: bool,
}

type Launched = std::result::Result<(usize, usize, WorkerConfig), HostErr>;

impl<'a> Job<'a> {
    fn new(mgr: &'a SshManager, params: &AddProcsParams, cookie: String) -> Result<Self> {
        let o = &mgr.opts;
        let io = |context: &str, source| Error::Io {
            context: context.into(),
            source,
        };
        let exe = match params.exename.clone().or_else(|| o.exename.clone()) {
            Some(p) => p,
            None => std::env::current_exe().map_err(|e| io("finding this program", e))?,
        };
        let flags = match params.exeflags.clone().or_else(|| o.exeflags.clone()) {
            Some(f) => f,
            None => std::env::args().skip(1).collect(),
        };
        let dir = match params.dir.clone().or_else(|| o.dir.clone()) {
            Some(d) => d,
            None => std::env::current_dir().map_err(|e| io("finding the working directory", e))?,
        };
        let env = worker_env(
            "SSH",
            "use a bind_addr in the machine spec",
            params.worker_timeout,
            &["COHORT_MAX_FRAME", "COHORT_SPIN_US"],
            o.env.iter().chain(params.env.iter()),
        )?;
        Ok(Job {
            mgr,
            cookie,
            exe: exe.to_string_lossy().into_owned(),
            flags,
            dir: dir.to_string_lossy().into_owned(),
            env,
            timeout: params.worker_timeout,
            restrict: params.restrict && o.restrict,
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.mgr.inner
    }

    /// `ssh [flags] [cohort's options] [-p port] ` (the destination and command follow).
    fn ssh(&self, m: &Machine, mux: Option<&MuxConn>) -> Command {
        if let Some(c) = mux {
            return c.command();
        }
        let o = &self.mgr.opts;
        let mut c = Command::new(&o.ssh);
        c.args(self.base_args(m));
        c
    }

    fn base_args(&self, m: &Machine) -> Vec<String> {
        let o = &self.mgr.opts;
        let secs = self.timeout.as_secs_f64().ceil().max(1.0) as u64;
        let mut a: Vec<String> = o.sshflags.clone();
        for s in [
            "-T",
            "-x",
            "-a",
            "-o",
            "BatchMode=yes",
            "-o",
            &format!("ConnectTimeout={secs}"),
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
        ] {
            a.push(s.to_string());
        }
        if let Some(p) = m.port {
            a.push("-p".into());
            a.push(p.to_string());
        }
        a
    }

    /// The remote command line of worker `wi` on `m`.
    fn worker_command(&self, m: &Machine, wi: usize) -> std::result::Result<String, String> {
        let bind = match (&m.bind_addr, m.bind_port) {
            (Some(a), Some(p)) => {
                let port = (p as usize)
                    .checked_add(wi)
                    .filter(|&q| q <= 65535)
                    .ok_or_else(|| format!("bind port {p} + {wi} is past 65535"))?;
                Some(format!("{}:{port}", bracket(a)))
            }
            (Some(a), None) => Some(bracket(a)),
            (None, _) if !self.restrict => Some("0.0.0.0".to_string()),
            (None, _) => None,
        };
        let mut s = format!("cd -- {} && ", sh_quote(&self.dir));
        if bind.is_none() {
            // The server's address of this ssh connection: an interface the master reaches.
            s.push_str(
                "set -- $SSH_CONNECTION && case \"$3\" in *:*) b=\"[$3]\" ;; *) b=\"$3\" ;; esac && ",
            );
        }
        s.push_str("exec env");
        for (k, v) in &self.env {
            s.push_str(&format!(" {k}={}", sh_quote(v)));
        }
        match &bind {
            Some(b) => s.push_str(&format!(" COHORT_BIND={}", sh_quote(b))),
            None => s.push_str(" COHORT_BIND=\"$b\""),
        }
        s.push(' ');
        s.push_str(&sh_quote(&self.exe));
        for f in &self.flags {
            s.push(' ');
            s.push_str(&sh_quote(f));
        }
        Ok(s)
    }

    /// Starts every worker of machine `mi`, at most `max_parallel` at a time.
    fn launch_host(&self, mi: usize, m: &Machine, tx: &mpsc::Sender<Launched>) {
        let host = m.login();
        let fail = |e: HostErr| {
            let _ = tx.send(Err(e));
        };
        let mux = if self.mgr.opts.multiplex {
            match self.mux_conn(m) {
                Ok(c) => Some(c),
                Err(e) => {
                    return fail(HostErr::Other(format!(
                        "host {host}: cannot open the shared ssh connection: {e}"
                    )))
                }
            }
        } else {
            None
        };
        let count = match m.count {
            Count::N(n) => Ok(n),
            Count::Auto => self
                .count_cpus(m, mux.as_deref())
                .map_err(|e| format!("host {host}: cannot count its CPU threads: {e}")),
        };
        let count = match count {
            Ok(n) => n,
            Err(e) => {
                if let Some(c) = &mux {
                    self.inner().release_conn(c);
                }
                return fail(HostErr::Other(e));
            }
        };
        let max = self.mgr.opts.max_parallel.max(1);
        std::thread::scope(|s| {
            let (wtx, wrx) = mpsc::channel();
            let mut next = 0;
            let mut inflight = 0;
            let mut started = 0;
            let mut first_err: Option<(usize, HostErr)> = None;
            loop {
                while inflight < max && next < count && first_err.is_none() {
                    let wtx = wtx.clone();
                    let wi = next;
                    let mux = mux.clone();
                    let spawned = std::thread::Builder::new()
                        .name("cohort-ssh-launch".into())
                        .stack_size(256 * 1024)
                        .spawn_scoped(s, move || {
                            let _ = wtx.send((wi, self.start_worker(m, wi, mux)));
                        });
                    if let Err(e) = spawned {
                        first_err =
                            Some((wi, HostErr::Other(format!("cannot start a thread: {e}"))));
                        break;
                    }
                    next += 1;
                    inflight += 1;
                }
                if inflight == 0 {
                    break;
                }
                let Ok((wi, r)) = wrx.recv() else { break };
                inflight -= 1;
                match r {
                    Ok(c) => {
                        started += 1;
                        let _ = tx.send(Ok((mi, wi, c)));
                    }
                    Err(e) => {
                        if first_err.is_none() {
                            first_err = Some((wi, e));
                        }
                    }
                }
            }
            if let Some((wi, e)) = first_err {
                let msg = format!(
                    "host {host}: worker {} of {count}: {} ({started} of {count} workers started there)",
                    wi + 1,
                    e.msg()
                );
                fail(match e {
                    HostErr::Timeout(_) => HostErr::Timeout(msg),
                    HostErr::Other(_) => HostErr::Other(msg),
                });
            }
        });
        if let Some(c) = &mux {
            self.inner().release_conn(c);
        }
    }

    fn count_cpus(&self, m: &Machine, mux: Option<&MuxConn>) -> std::result::Result<usize, String> {
        let mut cmd = self.ssh(m, mux);
        cmd.arg(m.destination())
            .arg("nproc 2>/dev/null || getconf _NPROCESSORS_ONLN");
        let (st, out) = run_capture(self.inner(), &mut cmd, Instant::now() + self.timeout)?;
        let n = out
            .lines()
            .filter_map(|l| l.trim().parse::<usize>().ok())
            .next_back()
            .filter(|&n| n > 0);
        match (st, n) {
            (Some(s), Some(n)) if s.success() => Ok(n),
            (s, _) => Err(format!(
                "`nproc` over ssh {}: {}",
                s.map_or("did not finish".to_string(), |s| s.to_string()),
                tail(&out.lines().map(String::from).collect::<Vec<_>>())
            )),
        }
    }

    /// The host's shared connection (`multiplex`), opened if needed; holds one use of it.
    fn mux_conn(&self, m: &Machine) -> std::result::Result<Arc<MuxConn>, String> {
        let inner = self.inner();
        let key = format!("{}\u{0}{}", m.login(), self.mgr.opts.sshflags.join("\u{0}"));
        if let Some(c) = lock(&inner.conns).get(&key).cloned() {
            let mut users = lock(&c.users);
            if *users > 0 && lock(&inner.procs).contains_key(&c.id) {
                *users += 1;
                drop(users);
                return Ok(c);
            }
        }
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cohort-ssh-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let ctl = dir.join("ctl");
        let mut args = self.base_args(m);
        args.extend([
            "-o".to_string(),
            "ControlMaster=no".to_string(),
            "-S".to_string(),
            ctl.to_string_lossy().into_owned(),
        ]);
        let mut cmd = Command::new(&self.mgr.opts.ssh);
        cmd.args(self.base_args(m))
            .args(["-M", "-S"])
            .arg(&ctl)
            .args(["-o", "ControlPersist=no"])
            .arg(m.destination())
            .arg("echo cohort-ssh-ready && exec cat");
        let ready = self.start_session(&mut cmd, "cohort-ssh-ready", &m.login(), {
            let dir = dir.clone();
            move |inner: &Arc<Inner>| {
                let _ = std::fs::remove_dir_all(&dir);
                lock(&inner.conns).retain(|_, v| v.dir != dir);
            }
        });
        let (id, stdin) = match ready {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.msg().to_string());
            }
        };
        let c = Arc::new(MuxConn {
            dir,
            id,
            args,
            dest: m.destination(),
            ssh: self.mgr.opts.ssh.clone(),
            stdin: Mutex::new(stdin),
            users: Mutex::new(1),
        });
        lock(&inner.conns).insert(key, Arc::clone(&c));
        Ok(c)
    }

    /// Starts an ssh session whose remote command prints `marker` once it is up (and then
    /// waits for stdin to close); returns it when the marker came. Output after the marker is
    /// shown on stderr.
    fn start_session(
        &self,
        cmd: &mut Command,
        marker: &'static str,
        host: &str,
        on_exit: impl FnOnce(&Arc<Inner>) + Send + 'static,
    ) -> std::result::Result<(u64, Option<ChildStdin>), HostErr> {
        let deadline = Instant::now() + self.timeout;
        let (r, w) = std::io::pipe().map_err(|e| HostErr::Other(format!("pipe: {e}")))?;
        let w2 = w
            .try_clone()
            .map_err(|e| HostErr::Other(format!("pipe: {e}")))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(w2));
        let (id, stdin) = self
            .inner()
            .spawn_watched(cmd, move |inner, _| on_exit(inner))
            .map_err(|e| HostErr::Other(format!("cannot run {:?}: {e}", cmd.get_program())))?;
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let (tx, rx) = mpsc::channel();
        let host = host.to_string();
        thread("cohort-ssh-read", move || {
            let mut r = BufReader::new(r);
            let mut seen = Vec::new();
            let mut line = String::new();
            let mut ready = false;
            while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                let l = line.trim_end().to_string();
                line.clear();
                if ready {
                    cohort_core::log!(info, host = %host, "ssh {host}: {l}");
                } else if l == marker {
                    ready = true;
                    let _ = tx.send(Ok(()));
                } else {
                    seen.push(l);
                }
            }
            if !ready {
                let _ = tx.send(Err(seen));
            }
        });
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(())) => Ok((id, stdin)),
            Ok(Err(seen)) => Err(HostErr::Other(format!("ssh failed: {}", tail(&seen)))),
            Err(_) => {
                self.inner().signal(id, Signal::SIGKILL);
                Err(HostErr::Timeout(format!(
                    "ssh did not connect within {:.1} s (COHORT_WORKER_TIMEOUT)",
                    self.timeout.as_secs_f64()
                )))
            }
        }
    }

    /// Starts worker `wi` of `m` and waits for its address (and tunnel).
    fn start_worker(
        &self,
        m: &Machine,
        wi: usize,
        mux: Option<Arc<MuxConn>>,
    ) -> std::result::Result<WorkerConfig, HostErr> {
        let other = HostErr::Other;
        let deadline = Instant::now() + self.timeout;
        let inner = self.inner();
        let remote = self.worker_command(m, wi).map_err(other)?;
        let (r, w) = std::io::pipe().map_err(|e| other(format!("pipe: {e}")))?;
        let (er, ew) = std::io::pipe().map_err(|e| other(format!("pipe: {e}")))?;
        let mut cmd = self.ssh(m, mux.as_deref());
        cmd.arg(m.destination())
            .arg(&remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(ew));
        let token = inner.next_id();
        lock(&inner.workers).insert(
            token,
            WState {
                launch: None,
                tunnel: None,
                link: None,
                lost: false,
                mux: mux.clone(),
            },
        );
        if let Some(c) = &mux {
            *lock(&c.users) += 1;
        }
        let spawned = inner.spawn_watched(&mut cmd, move |inner, _| inner.session_ended(token));
        drop(cmd);
        let (id, stdin) = match spawned {
            Ok(x) => x,
            Err(e) => {
                inner.release(token, Duration::ZERO);
                return Err(other(format!(
                    "cannot run {}: {e}",
                    self.mgr.opts.ssh.display()
                )));
            }
        };
        if let Some(w) = lock(&inner.workers).get_mut(&token) {
            w.launch = Some(id);
        }
        // The cookie: the first line of the worker's stdin, never on a command line.
        if let Some(mut stdin) = stdin {
            let _ = writeln!(stdin, "{}", self.cookie);
        }
        // The address is the worker's tagged stdout line; what it printed before that, and
        // what ssh and the remote shell print on stderr, reach the master as worker output.
        let (tx, rx) = mpsc::channel();
        thread("cohort-ssh-read", move || {
            let _ = tx.send(read_worker_address(BufReader::new(r)));
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let failed = |out: Vec<String>, er| {
            let mut seen = out;
            seen.extend(drain_lines(er));
            tail(&seen)
        };
        let (address, reader) = match rx.recv_timeout(left) {
            Ok(Ok(x)) => x,
            Ok(Err(none)) => {
                inner.release(token, Duration::ZERO);
                return Err(other(format!(
                    "the ssh session ended before the worker reported its address: {}",
                    failed(none.output, er)
                )));
            }
            Err(_) => {
                inner.signal(id, Signal::SIGKILL);
                inner.release(token, Duration::ZERO);
                return Err(HostErr::Timeout(format!(
                    "no address reported within {:.1} s (COHORT_WORKER_TIMEOUT): {}",
                    self.timeout.as_secs_f64(),
                    failed(Vec::new(), er)
                )));
            }
        };
        let Some((ahost, aport)) = parse_address(&address) else {
            inner.signal(id, Signal::SIGKILL);
            inner.release(token, Duration::ZERO);
            return Err(other(format!(
                "the worker reported a malformed address {address:?}"
            )));
        };
        let connect_at = if self.mgr.opts.tunnel {
            match self.tunnel(m, mux.as_deref(), &ahost, aport, deadline) {
                Ok((t, local)) => {
                    if let Some(w) = lock(&inner.workers).get_mut(&token) {
                        w.tunnel = Some(t);
                    }
                    Some(local)
                }
                Err(e) => {
                    inner.release(token, Duration::ZERO);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let o = &self.mgr.opts;
        Ok(WorkerConfig {
            io: Some(reader),
            err: Some(Box::new(er)),
            host: Some(m.host.clone()),
            port: Some(aport),
            address: Some(address),
            bind_addr: Some(ahost),
            connect_at,
            count: Some(m.count),
            exename: Some(PathBuf::from(&self.exe)),
            exeflags: self.flags.clone(),
            env: self.env.clone(),
            dir: Some(PathBuf::from(&self.dir)),
            tunnel: Some(o.tunnel),
            multiplex: Some(o.multiplex),
            sshflags: o.sshflags.clone(),
            max_parallel: Some(o.max_parallel),
            userdata: Some(Box::new(SshWorker {
                token,
                timeout: self.timeout,
            })),
            ..WorkerConfig::default()
        })
    }

    /// Forwards a local port to the worker's `addr:port` on the host; the tunnel and its
    /// local address.
    fn tunnel(
        &self,
        m: &Machine,
        mux: Option<&MuxConn>,
        addr: &str,
        port: u16,
        deadline: Instant,
    ) -> std::result::Result<(Tunnel, String), HostErr> {
        let mut last = String::new();
        for _ in 0..3 {
            let lport = free_local_port().map_err(HostErr::Other)?;
            let spec = format!("127.0.0.1:{lport}:{}:{port}", bracket(addr));
            let local = format!("127.0.0.1:{lport}");
            if let Some(c) = mux {
                let mut cmd = c.command();
                cmd.args(["-O", "forward", "-L", &spec, &c.dest]);
                match run_capture(self.inner(), &mut cmd, deadline) {
                    Ok((Some(s), _)) if s.success() => return Ok((Tunnel::Mux { spec }, local)),
                    Ok((_, out)) => last = out.trim().replace('\n', " | "),
                    Err(e) => return Err(HostErr::Timeout(format!("tunnel: {e}"))),
                }
            } else {
                let mut cmd = self.ssh(m, None);
                cmd.args(["-o", "ExitOnForwardFailure=yes", "-L", &spec])
                    .arg(m.destination())
                    .arg("echo cohort-tunnel-ready && exec cat");
                match self.start_session(&mut cmd, "cohort-tunnel-ready", &m.login(), |_| {}) {
                    Ok((id, stdin)) => return Ok((Tunnel::Proc { id, _stdin: stdin }, local)),
                    Err(HostErr::Other(e)) => last = e,
                    Err(e @ HostErr::Timeout(_)) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(HostErr::Other(format!(
            "cannot set up the ssh tunnel to {addr}:{port}: {last}"
        )))
    }
}

pub(crate) fn tcp_connect(target: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let (h, p) = parse_address(target).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad worker address {target:?}"),
        )
    })?;
    let mut last = std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("no address for {target:?}"),
    );
    for sa in (h.as_str(), p).to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl ClusterManager for SshManager {
    fn launch(
        &self,
        params: &AddProcsParams,
        launched: &mut dyn FnMut(WorkerConfig),
    ) -> Result<()> {
        if self.machines.is_empty() {
            return Err(Error::Invalid(
                "SshManager: no machines to start workers on".into(),
            ));
        }
        let cookie = cohort_core::cluster_cookie()?;
        let job = Job::new(self, params, cookie)?;
        let (tx, rx) = mpsc::channel::<Launched>();
        let mut got = Vec::new();
        let mut errors = Vec::new();
        std::thread::scope(|s| {
            for (mi, m) in self.machines.iter().enumerate() {
                let tx = tx.clone();
                let job = &job;
                let r = std::thread::Builder::new()
                    .name("cohort-ssh-host".into())
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || job.launch_host(mi, m, &tx));
                if let Err(e) = r {
                    errors.push(HostErr::Other(format!(
                        "host {}: cannot start a thread: {e}",
                        m.login()
                    )));
                }
            }
            drop(tx);
            for msg in rx {
                match msg {
                    Ok(x) => got.push(x),
                    Err(e) => errors.push(e),
                }
            }
        });
        got.sort_by_key(|(mi, wi, _)| (*mi, *wi));
        for (_, _, c) in got {
            launched(c);
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(match errors.pop().expect("one") {
                HostErr::Timeout(m) => Error::Timeout(m),
                HostErr::Other(m) => Error::Invalid(m),
            }),
            _ => Err(Error::Invalid(
                errors
                    .iter()
                    .map(|e| e.msg())
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    fn connect(&self, _pid: Pid, config: &WorkerConfig) -> Option<Result<OwnedFd>> {
        let w = config.userdata.as_ref()?.downcast_ref::<SshWorker>()?;
        let target = config
            .connect_at
            .clone()
            .or_else(|| config.address.clone())?;
        let host = config.host.clone().unwrap_or_default();
        let s = match tcp_connect(&target, w.timeout) {
            Ok(s) => s,
            Err(e) => {
                return Some(Err(Error::Io {
                    context: format!("connecting to the worker on host {host} at {target}"),
                    source: e,
                }))
            }
        };
        let watch = match s.try_clone() {
            Ok(c) => c,
            Err(e) => {
                return Some(Err(Error::Io {
                    context: "duplicating a socket".into(),
                    source: e,
                }))
            }
        };
        let mut ws = lock(&self.inner.workers);
        match ws.get_mut(&w.token) {
            Some(st) if !st.lost => {
                st.link = Some(watch);
                Some(Ok(OwnedFd::from(s)))
            }
            _ => Some(Err(Error::Invalid(format!(
                "host {host}: the worker's ssh session ended before the master connected"
            )))),
        }
    }

    fn manage(&self, _pid: Pid, config: &WorkerConfig, op: ManageOp) {
        if op != ManageOp::Finalize {
            return;
        }
        if let Some(w) = config
            .userdata
            .as_ref()
            .and_then(|u| u.downcast_ref::<SshWorker>())
        {
            self.inner.release(w.token, Duration::from_secs(2));
        }
    }

    fn kill(&self, _pid: Pid, config: &WorkerConfig) {
        // The worker was asked to exit; its session ends with it. Make sure within a while.
        if let Some(w) = config
            .userdata
            .as_ref()
            .and_then(|u| u.downcast_ref::<SshWorker>())
        {
            self.inner.release(w.token, Duration::from_secs(5));
        }
    }

    fn default_addprocs_params(&self) -> AddProcsParams {
        let o = &self.opts;
        let d = AddProcsParams::default();
        AddProcsParams {
            count: self
                .machines
                .iter()
                .map(|m| match m.count {
                    Count::N(n) => n,
                    Count::Auto => 1,
                })
                .sum(),
            exename: o.exename.clone(),
            exeflags: o.exeflags.clone(),
            env: Vec::new(),
            dir: o.dir.clone(),
            restrict: o.restrict,
            worker_timeout: o.worker_timeout.unwrap_or(d.worker_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_env_checks_what_the_user_gives() {
        let d = Duration::from_secs(7);
        let env = |given: &[(&str, &str)]| {
            let g: Vec<(String, String)> = given
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            worker_env("SSH", "use a bind_addr", d, &[], g.iter())
        };
        let ok = env(&[("FOO", "1"), ("COHORT_TRANSPORT", "tcp"), ("FOO", "2")]).unwrap();
        assert_eq!(
            ok,
            [
                ("COHORT_WORKER".to_string(), "1".to_string()),
                ("COHORT_WORKER_TIMEOUT".into(), "7".into()),
                ("COHORT_TRANSPORT".into(), "tcp".into()),
                ("FOO".into(), "2".into()),
            ]
        );
        let msg = |r: Result<Vec<(String, String)>>| match r {
            Err(Error::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        };
        assert_eq!(
            msg(env(&[("COHORT_TRANSPORT", "unix")])),
            "SSH workers need the shm or tcp transport, not \"unix\" (COHORT_TRANSPORT)"
        );
        assert_eq!(
            msg(env(&[("COHORT_BIND", "0.0.0.0")])),
            "SSH workers: COHORT_BIND is set by the manager (use a bind_addr)"
        );
        assert_eq!(
            msg(env(&[("1BAD", "x")])),
            "SSH workers: \"1BAD\" is not an environment variable name"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("abc/d.e"), "abc/d.e");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("10.0.0.2:4000\n"),
            Some(("10.0.0.2".into(), 4000))
        );
        assert_eq!(parse_address("::1:4000"), Some(("::1".into(), 4000)));
        assert_eq!(parse_address("node-3:1"), Some(("node-3".into(), 1)));
        assert_eq!(parse_address("Warning: Permanently added 'x:22'"), None);
        assert_eq!(parse_address("host:0"), None);
        assert_eq!(parse_address("host:"), None);
        assert_eq!(parse_address(""), None);
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("A_1"));
        assert!(valid_env_name("_x"));
        assert!(!valid_env_name("1A"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }
}
