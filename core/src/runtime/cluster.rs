//! Processes: the cluster manager interface, adding and removing workers, and the queries.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::links::transport::Transport;
use crate::runtime::{self, rt, try_rt};
use crate::wire::codec::Body;
use crate::wire::proto::Msg;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::base::topology::Topology;

/// How many workers a spec asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Count {
    /// Exactly this many.
    N(usize),
    /// One per CPU thread of the host.
    #[default]
    Auto,
}

/// What a cluster manager knows about one worker it launched (Julia's `WorkerConfig`).
///
/// `launch` fills in what it knows (at least `address`, or what `connect` needs); the core
/// keeps the config for the worker's life and hands it back to `manage`, `connect` and `kill`.
#[derive(Default)]
pub struct WorkerConfig {
    /// The worker's standard output (what follows its address line, and what came before it:
    /// see [`read_worker_address`]); the master prints each line on its stdout as
    /// `From worker N: ...`.
    pub io: Option<Box<dyn Read + Send>>,
    /// The worker's standard error; the master prints each line on its stderr as
    /// `From worker N: ...`. Managers that cannot tell the two apart put both in `io`.
    pub err: Option<Box<dyn Read + Send>>,
    /// Host the worker runs on.
    pub host: Option<String>,
    /// Port it listens on.
    pub port: Option<u16>,
    /// The listener address the worker printed, in the transport's syntax (`host:port`).
    pub address: Option<String>,
    /// Address the worker was told to bind.
    pub bind_addr: Option<String>,
    /// Address the master connects to, when it differs from `address` (tunnels).
    pub connect_at: Option<String>,
    /// Workers to start on this host.
    pub count: Option<Count>,
    /// Program to start.
    pub exename: Option<PathBuf>,
    /// Its arguments.
    pub exeflags: Vec<String>,
    /// Environment variables set for it.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub dir: Option<PathBuf>,
    /// Its operating-system process id.
    pub ospid: Option<u32>,
    /// The manager's own name for it.
    pub ident: Option<String>,
    /// For the custom topology: the idents of the workers it connects to.
    pub connect_idents: Vec<String>,
    /// SSH: tunnel master-to-worker traffic through ssh.
    pub tunnel: Option<bool>,
    /// SSH: share one connection per host.
    pub multiplex: Option<bool>,
    /// SSH: extra flags.
    pub sshflags: Vec<String>,
    /// SSH: connections set up at once per host.
    pub max_parallel: Option<usize>,
    /// Anything else the manager wants to keep.
    pub userdata: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("host", &self.host)
            .field("address", &self.address)
            .field("ospid", &self.ospid)
            .field("ident", &self.ident)
            .finish_non_exhaustive()
    }
}

/// Events a manager hears about its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManageOp {
    /// The worker joined with this pid.
    Register,
    /// `rmprocs` is removing it.
    Deregister,
    /// `interrupt` was called for it.
    Interrupt,
    /// It is gone; release what the manager holds for it.
    Finalize,
}

pub use crate::wire::proto::WORKER_ADDRESS_TAG;

/// Lines kept of a worker's output before its address, for an error message.
const EARLY_LINES_KEPT: usize = 200;

/// What a worker printed on its stdout before its output ended without an address line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoAddress {
    /// Its lines (the last 200 at most), without line ends.
    pub output: Vec<String>,
}

impl NoAddress {
    /// The last few lines, joined, for an error message (`"(no output)"` when there were none).
    pub fn tail(&self) -> String {
        let lines: Vec<&str> = self
            .output
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return "(no output)".into();
        }
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

/// Reads a worker's stdout up to its address line (`WORKER_ADDRESS_TAG` + address) and returns
/// the address and the worker's whole output apart from that line: what it printed before
/// the address, then the rest of the stream. Hand the output to [`WorkerConfig::io`] so that
/// every line reaches the master as `From worker N: ...`. A stream that ends (the worker
/// exited) before an address line gives what it printed. Blocks: run it on a thread of its own
/// with a deadline (the worker timeout).
pub fn read_worker_address<R: BufRead + Send + 'static>(
    mut r: R,
) -> std::result::Result<(String, Box<dyn Read + Send>), NoAddress> {
    let mut early = Vec::new();
    let mut lines = std::collections::VecDeque::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(n) if n > 0 => {}
            _ => {
                return Err(NoAddress {
                    output: lines.into(),
                })
            }
        }
        let text = String::from_utf8_lossy(&line);
        if let Some(addr) = text.trim_end().strip_prefix(WORKER_ADDRESS_TAG) {
            let addr = addr.trim().to_string();
            if !addr.is_empty() {
                return Ok((addr, Box::new(std::io::Cursor::new(early).chain(r))));
            }
        }
        if lines.len() == EARLY_LINES_KEPT {
            lines.pop_front();
        }
        lines.push_back(text.trim_end_matches(['\r', '\n']).to_string());
        early.extend_from_slice(&line);
    }
}

/// Parameters of one `addprocs` call.
#[derive(Debug, Clone)]
pub struct AddProcsParams {
    /// Workers to start.
    pub count: usize,
    /// Program to start (default: this program).
    pub exename: Option<PathBuf>,
    /// Its arguments (default: this program's).
    pub exeflags: Option<Vec<String>>,
    /// Extra environment for the workers.
    pub env: Vec<(String, String)>,
    /// Working directory (default: this one).
    pub dir: Option<PathBuf>,
    /// Bind workers to loopback only (`true`, default) or to all interfaces.
    pub restrict: bool,
    /// Seconds a worker waits to be contacted, and the master for its address.
    pub worker_timeout: Duration,
}

impl Default for AddProcsParams {
    fn default() -> Self {
        AddProcsParams {
            count: 1,
            exename: None,
            exeflags: None,
            env: Vec::new(),
            dir: None,
            restrict: true,
            worker_timeout: crate::base::env::worker_timeout(),
        }
    }
}

/// Starts workers and looks after them (Julia's `ClusterManager`).
pub trait ClusterManager: Send + Sync + 'static {
    /// Starts `params.count` workers, calling `launched` with each one's config as it comes up;
    /// returns once all are started (or with the first error; those launched stay usable).
    fn launch(&self, params: &AddProcsParams, launched: &mut dyn FnMut(WorkerConfig))
        -> Result<()>;

    /// Told about each worker's life events.
    fn manage(&self, _pid: Pid, _config: &WorkerConfig, _op: ManageOp) {}

    /// Opens the link to a worker; `None` (the default) connects with the transport to
    /// `config.connect_at` or `config.address`.
    fn connect(&self, _pid: Pid, _config: &WorkerConfig) -> Option<Result<OwnedFd>> {
        None
    }

    /// Makes the worker exit; called by `rmprocs` after the worker was asked to exit.
    fn kill(&self, _pid: Pid, _config: &WorkerConfig) {}

    /// Defaults for `addprocs` with this manager.
    fn default_addprocs_params(&self) -> AddProcsParams {
        AddProcsParams::default()
    }
}

struct WorkerRecord {
    config: WorkerConfig,
    manager: Arc<dyn ClusterManager>,
}

fn records() -> &'static Mutex<BTreeMap<Pid, WorkerRecord>> {
    static R: OnceLock<Mutex<BTreeMap<Pid, WorkerRecord>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(BTreeMap::new()))
}

static NEXT_PID: AtomicUsize = AtomicUsize::new(2);
static DEFAULT_MANAGER: OnceLock<Arc<dyn ClusterManager>> = OnceLock::new();

/// In MPI mode the processes are the ranks `mpirun` started, from start to end.
fn fixed_world(what: &str) -> Result<()> {
    match try_rt().and_then(|r| r.world.get()) {
        Some(w) => Err(Error::invalid(format!(
            "{what} in MPI mode: the processes are the {} ranks mpirun started, fixed until the program ends",
            w.size()
        ))),
        None => Ok(()),
    }
}

/// Refuses `what` outside the master: `"{what}: only process 1 can {does} (this is process N)"`.
fn master_only(what: &str, does: &str) -> Result<&'static runtime::Runtime> {
    let rt = rt()?;
    if !rt.is_master {
        return Err(Error::invalid(format!(
            "{what}: only process 1 can {does} (this is process {})",
            rt.myid()
        )));
    }
    Ok(rt)
}

/// Julia: "Only process 1 can add and remove workers".
const MANAGES: &str = "add or remove workers";

/// Adds `n` workers with the default manager (local processes unless configured otherwise)
/// and returns their pids.
///
/// # Collective
/// Master only.
///
/// # Julia
/// `addprocs(n)`.
pub fn addprocs(n: usize) -> Result<Vec<Pid>> {
    fixed_world("addprocs")?;
    master_only("addprocs", MANAGES)?;
    let m = DEFAULT_MANAGER
        .get()
        .cloned()
        .ok_or_else(|| Error::invalid("no default cluster manager: call cohort::init()"))?;
    let params = AddProcsParams {
        count: n,
        ..m.default_addprocs_params()
    };
    addprocs_with(m, params)
}

/// Adds workers with `manager`.
///
/// # Julia
/// `addprocs(manager::ClusterManager; kwargs...)`.
pub fn addprocs_with(
    manager: Arc<dyn ClusterManager>,
    mut params: AddProcsParams,
) -> Result<Vec<Pid>> {
    fixed_world("addprocs")?;
    let rt = master_only("addprocs", MANAGES)?;
    // Workers speak the master's transport.
    if !params.env.iter().any(|(k, _)| k == "COHORT_TRANSPORT") {
        params
            .env
            .push(("COHORT_TRANSPORT".into(), rt.transport.name().into()));
    }
    let mut configs = Vec::new();
    let launched = manager.launch(&params, &mut |c| configs.push(c));
    let mut pids = Vec::new();
    let mut errors = Vec::new();
    for mut config in configs {
        let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
        let addr = config
            .connect_at
            .clone()
            .or_else(|| config.address.clone())
            .unwrap_or_default();
        let fd = match manager.connect(pid, &config) {
            Some(r) => r,
            None => rt
                .transport
                .connect(&addr, params.worker_timeout)
                .map_err(|e| Error::io(format!("connecting to worker at {addr}"), e)),
        };
        let allowed = (current_topology() == Topology::Custom).then(|| custom_peers(&config));
        let joined = fd.and_then(|fd| {
            rt.attach_worker(pid, fd, config.address.as_deref().unwrap_or(&addr), allowed)
        });
        match joined {
            Ok(host) => {
                if config.host.is_none() {
                    config.host = Some(host);
                }
                if let Some(io) = config.io.take() {
                    forward_output(pid, io, false);
                }
                if let Some(err) = config.err.take() {
                    forward_output(pid, err, true);
                }
                manager.manage(pid, &config, ManageOp::Register);
                records().lock().unwrap_or_else(|e| e.into_inner()).insert(
                    pid,
                    WorkerRecord {
                        config,
                        manager: Arc::clone(&manager),
                    },
                );
                pids.push(pid);
            }
            Err(e) => {
                manager.kill(pid, &config);
                errors.push((pid, e));
            }
        }
    }
    if !pids.is_empty() {
        let me = rt.myid();
        let host: Vec<Pid> = procs_on(me)
            .unwrap_or_default()
            .into_iter()
            .filter(|&p| p != me)
            .collect();
        crate::runtime::placement::place_host_workers(rt, &host);
    }
    launched?;
    if errors.len() == 1 {
        return Err(errors.pop().expect("one").1);
    }
    if !errors.is_empty() {
        return Err(Error::Composite(errors));
    }
    Ok(pids)
}

/// The cluster's topology (`COHORT_TOPOLOGY` at start, or [`set_topology`]).
pub fn current_topology() -> Topology {
    try_rt()
        .map(|r| *r.topology.read().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or(Topology::AllToAll)
}

/// Sets the topology; only on the master and before any worker is added.
pub fn set_topology(t: Topology) -> Result<()> {
    let rt = master_only("set_topology", "set the topology")?;
    if !records()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty()
    {
        return Err(Error::invalid(
            "the topology can only be set before workers are added",
        ));
    }
    *rt.topology.write().unwrap_or_else(|e| e.into_inner()) = t;
    Ok(())
}

/// Custom topology: the pids of the workers `config` names, and of those that name it.
fn custom_peers(config: &WorkerConfig) -> Vec<Pid> {
    let recs = records().lock().unwrap_or_else(|e| e.into_inner());
    recs.iter()
        .filter(|(_, r)| {
            r.config
                .ident
                .as_ref()
                .is_some_and(|i| config.connect_idents.contains(i))
                || config
                    .ident
                    .as_ref()
                    .is_some_and(|i| r.config.connect_idents.contains(i))
        })
        .map(|(p, _)| *p)
        .collect()
}

/// The number of open links from this process to others.
pub fn link_count() -> usize {
    try_rt().map_or(0, |r| r.link_count())
}

/// Prints each line of a worker's output as Julia does, on the master's stdout or stderr.
fn forward_output(pid: Pid, io: Box<dyn Read + Send>, to_stderr: bool) {
    let r = std::thread::Builder::new()
        .name(format!("cohort-out-{pid}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            for line in BufReader::new(io).split(b'\n') {
                let Ok(l) = line else { break };
                let l = String::from_utf8_lossy(&l);
                let l = l.strip_suffix('\r').unwrap_or(&l);
                // One write per line: stderr is unbuffered, and the pieces of an `eprintln!`
                // could be split by what another thread prints.
                let text = format!("      From worker {pid}:\t{l}\n");
                use std::io::Write;
                let _ = if to_stderr {
                    std::io::stderr().lock().write_all(text.as_bytes())
                } else {
                    std::io::stdout().lock().write_all(text.as_bytes())
                };
            }
        });
    if let Err(e) = r {
        crate::log!(error, peer = pid, error = %e, "cannot forward the output of worker {pid}");
    }
}

/// Called by the runtime when a worker's link is gone.
pub(crate) fn on_worker_exit(pid: Pid) {
    let rec = records()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid);
    if let Some(r) = rec {
        r.manager.manage(pid, &r.config, ManageOp::Finalize);
    }
}

/// A pending `rmprocs`: wait on it for the workers to be gone.
#[derive(Debug, Clone)]
pub struct RmProcs {
    pids: Vec<Pid>,
}

impl RmProcs {
    /// The pids being removed.
    pub fn pids(&self) -> &[Pid] {
        &self.pids
    }
    /// Waits until every pid is gone, at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<()> {
        let rt = rt()?;
        let deadline = Instant::now().checked_add(timeout);
        let mut exited = rt.exited.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left: Vec<Pid> = self
                .pids
                .iter()
                .copied()
                .filter(|p| !exited.contains(p))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout(format!(
                            "rmprocs: pids {left:?} not terminated after {:.1} seconds",
                            timeout.as_secs_f64()
                        )));
                    }
                    (d - now).min(Duration::from_millis(100))
                }
                None => Duration::from_millis(100),
            };
            exited = rt
                .removed_cv
                .wait_timeout(exited, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Removes workers: asks each to exit and has its manager make sure. Waits up to `waitfor`
/// (`Duration::MAX` for ever) and fails with `Timeout` if they are not all gone; with
/// `waitfor == Duration::ZERO` returns at once with a handle to wait on.
///
/// # Collective
/// Master only.
///
/// # Julia
/// `rmprocs(pids...; waitfor)`.
pub fn rmprocs(pids: &[Pid], waitfor: Duration) -> Result<RmProcs> {
    fixed_world("rmprocs")?;
    let rt = master_only("rmprocs", MANAGES)?;
    let mut todo = Vec::new();
    // Already going: waited for, as its departure may still be being handled.
    let mut going = Vec::new();
    for &pid in pids {
        if pid == 1 {
            crate::log!(warn, "rmprocs: process 1 not removed");
            continue;
        }
        if rt.is_removed(pid) {
            going.push(pid);
            continue;
        }
        if !records()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&pid)
        {
            return Err(Error::NoSuchProcess(pid));
        }
        todo.push(pid);
    }
    for &pid in &todo {
        let recs = records().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = recs.get(&pid) {
            r.manager.manage(pid, &r.config, ManageOp::Deregister);
            let _ = rt.send(pid, &Msg::Exit, &Body::Owned(Vec::new()));
            r.manager.kill(pid, &r.config);
        }
    }
    todo.extend(going);
    let h = RmProcs { pids: todo };
    if !waitfor.is_zero() {
        h.wait(waitfor)?;
    }
    Ok(h)
}

/// Interrupts what each process is running: the callers waiting on those calls get
/// `Error::Interrupted`, and the processes stay usable. Long-running functions see it through
/// [`interrupted`](crate::runtime::exec::interrupted).
///
/// # Collective
/// Master only, as in Julia.
///
/// # Julia
/// `interrupt(pids)`.
pub fn interrupt(pids: &[Pid]) -> Result<()> {
    let rt = master_only("interrupt", "interrupt workers")?;
    for &pid in pids {
        {
            let recs = records().lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = recs.get(&pid) {
                r.manager.manage(pid, &r.config, ManageOp::Interrupt);
            }
        }
        rt.send(pid, &Msg::Interrupt, &Body::Owned(Vec::new()))?;
    }
    Ok(())
}

/// What this process is in the cluster: see [`myrole`].
///
/// # Julia
/// The symbols `:master` and `:worker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process that started the cluster (pid 1).
    Master,
    /// A process a cluster manager started (or an MPI rank other than 0).
    Worker,
}

/// This process's role: [`Role::Master`] on the master (and before `init`, as with
/// [`myid`](crate::myid)), [`Role::Worker`] on a worker.
///
/// # Julia
/// `myrole()`, which returns `:master` or `:worker`.
pub fn myrole() -> Role {
    match try_rt() {
        Some(rt) if !rt.is_master => Role::Worker,
        _ => Role::Master,
    }
}

/// The workers' pids, ascending; `[1]` when there are none.
///
/// # Julia
/// `workers()`.
pub fn workers() -> Vec<Pid> {
    let Some(rt) = try_rt() else { return vec![1] };
    let removed = rt.removed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let v: Vec<Pid> = if rt.is_master && rt.world.get().is_none() {
        records()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .filter(|p| !removed.contains(p))
            .collect()
    } else {
        let mut v: Vec<Pid> = rt
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .filter(|&p| p != 1 && !removed.contains(&p))
            .collect();
        if rt.myid() != 1 && !v.contains(&rt.myid()) {
            v.push(rt.myid());
            v.sort_unstable();
        }
        v
    };
    if v.is_empty() {
        vec![1]
    } else {
        v
    }
}

/// All pids: the master and the workers.
///
/// # Julia
/// `procs()`.
pub fn procs() -> Vec<Pid> {
    let w = workers();
    if w == [1] {
        w
    } else {
        std::iter::once(1).chain(w).collect()
    }
}

/// The pids on the same host as `pid`.
///
/// # Julia
/// `procs(pid)`.
pub fn procs_on(pid: Pid) -> Result<Vec<Pid>> {
    let rt = rt()?;
    let all = procs();
    let peers = rt.peers.read().unwrap_or_else(|e| e.into_inner());
    let host_of = |p: Pid| {
        if p == rt.myid() {
            Some(rt.host.clone())
        } else {
            peers.get(&p).map(|i| i.host.clone())
        }
    };
    let h = host_of(pid).ok_or(Error::NoSuchProcess(pid))?;
    Ok(all
        .into_iter()
        .filter(|&p| host_of(p).as_deref() == Some(h.as_str()))
        .collect())
}

/// Number of processes.
///
/// # Julia
/// `nprocs()`.
pub fn nprocs() -> usize {
    procs().len()
}

/// Number of workers (1 when the master is alone, as in Julia).
///
/// # Julia
/// `nworkers()`.
pub fn nworkers() -> usize {
    workers().len()
}

/// The cluster cookie.
///
/// # Julia
/// `cluster_cookie()`.
pub fn cluster_cookie() -> Result<String> {
    let c = rt()?.cookie();
    Ok(String::from_utf8_lossy(&c).trim_end().to_string())
}

/// Sets the cluster cookie; only before any worker was added.
///
/// # Julia
/// `cluster_cookie(cookie)`.
pub fn set_cluster_cookie(cookie: &str) -> Result<()> {
    let rt = master_only("set_cluster_cookie", "set the cluster cookie")?;
    if !records()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty()
    {
        return Err(Error::invalid(
            "the cluster cookie can only be changed before workers are added",
        ));
    }
    rt.set_cookie(runtime::cookie_bytes(cookie)?);
    Ok(())
}

/// The number of values and channels this process stores for remote references (for tests
/// and diagnostics of reference counting).
pub fn live_refs() -> usize {
    try_rt().map_or(0, |r| r.live_refs())
}

/// [`live_refs`] of another process.
pub fn live_refs_on(pid: Pid) -> Result<usize> {
    let rt = rt()?;
    if pid == rt.myid() {
        return Ok(rt.live_refs());
    }
    let f = rt.request(
        pid,
        &Msg::Query(crate::wire::proto::Query::LiveRefs),
        &Body::Owned(Vec::new()),
    )?;
    let b: [u8; 8] = f
        .body()
        .as_ref()
        .try_into()
        .map_err(|_| Error::Protocol("bad live_refs reply".into()))?;
    Ok(u64::from_le_bytes(b) as usize)
}

/// Removes every worker when dropped; returned by `init` on the master.
///
/// Keep it for the whole program: `let _cluster = cohort::init()?;`. Dropping it shuts the
/// cluster down for good, and every cohort call after that returns [`Error::Invalid`] saying so
/// — which is what `let _ = cohort::init()?;` (a binding that drops at once, and that
/// `#[must_use]` cannot catch) leads to on the first call.
#[must_use = "dropping the guard removes the workers: bind it with `let _cluster = ...`"]
#[derive(Debug)]
pub struct Cluster {
    _p: (),
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Some(rt) = try_rt() else { return };
        if rt.closed.load(Ordering::Acquire) {
            return;
        }
        if let Some(w) = rt.world.get() {
            if std::thread::panicking() {
                // Ranks may be blocked in a collective the master will never join.
                w.abort(1);
            }
            rt.shutdown_world();
        } else {
            let ws = workers();
            if ws != [1] {
                if let Err(e) = rmprocs(&ws, Duration::from_secs(10)) {
                    crate::log!(error, error = %e, "shutting down");
                }
            }
        }
        // From here on every call says the guard is gone: `let _ = cohort::init()?;` would
        // otherwise shut the cluster down without a word and let the program go on.
        rt.closed.store(true, Ordering::Release);
    }
}

/// Starts cohort in a message-passing world (MPI mode): rank 0 becomes the master (pid 1) and
/// returns the guard; ranks 1.. become workers 2.. and never return. All traffic goes through
/// the world; no listener is opened.
pub fn init_world(world: Arc<dyn crate::links::transport::MessageWorld>) -> Result<Cluster> {
    crate::base::env::startup()?;
    let rt = crate::runtime::world::start_world(world)?;
    rt.on_exit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(on_worker_exit));
    Ok(Cluster { _p: () })
}

/// Starts cohort in this process with `transport` and a default manager.
///
/// In a worker (the environment a manager sets) it serves until told to exit and never
/// returns. In the master it returns a guard that removes the workers when dropped, after
/// adding `COHORT_PROCS` local workers if that is set. A `COHORT_*` variable that does not
/// parse is `Error::Invalid` naming it (see [`crate::base::env`]); a worker exits with that message.
pub fn init_with(
    transport: Arc<dyn Transport>,
    default_manager: Arc<dyn ClusterManager>,
) -> Result<Cluster> {
    let config = crate::base::env::startup()?;
    if config.worker {
        runtime::run_worker(transport);
    }
    let rt = runtime::start_master(transport)?;
    let _ = DEFAULT_MANAGER.set(default_manager);
    rt.on_exit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(on_worker_exit));
    if config.procs > 0 {
        addprocs(config.procs)?;
    }
    Ok(Cluster { _p: () })
}
