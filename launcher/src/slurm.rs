//! Slurm workers: the current program started as the tasks of one `srun` job step inside the
//! allocation the master runs in.
//!
//! # How the workers start
//!
//! Inside an allocation (`sbatch`, `salloc`: `SLURM_JOB_ID` is set), one `addprocs` runs
//!
//! ```text
//! srun --ntasks=N --label --kill-on-bad-exit=0 --wait=0 --no-kill --job-name=cohort-workers \
//!     --chdir=DIR [--overlap] [srun_flags] sh -c 'WRAPPER' cohort-worker EXE FLAGS
//! ```
//!
//! N is [`SlurmOptions::count`], or the allocation's task count (`SLURM_NTASKS`). The wrapper,
//! run by a POSIX `sh` on each node, picks the address the worker listens on (see below),
//! prints one tagged line naming its node, step and process, and `exec`s the program in worker
//! mode (`env COHORT_WORKER=1 ... EXE FLAGS`: the settings travel on the command line, so they
//! arrive even where the site exports no environment to job steps). The cluster cookie is the
//! first line written to srun's stdin, which srun hands to every task: it never appears on a
//! command line or in an environment. Each task reports its listener address on its stdout as
//! a tagged line (`cohort_worker:ADDR`); `--label` lets the manager tell the tasks' lines apart,
//! and everything else a task prints reaches the master as `From worker N: ...`, stdout on
//! stdout and stderr on stderr. srun's own messages are logged.
//!
//! # Where a worker listens
//!
//! By default on its node's address as Slurm names it (`NodeAddr` in `scontrol show node`,
//! the address the controller and srun reach the node at); with [`SlurmOptions::bind`] on the
//! address or network interface named there (`ib0`, say: the TCP transport binds an
//! interface's address); with `restrict = false` on every interface. Links start as TCP
//! connections; with the default transport (`shm`) a link between processes of one node (the
//! master's to the workers of its node, and the workers' among themselves) then carries its
//! frames in shared memory, and links between nodes stay TCP. The program must be at the same
//! path on every node (a shared filesystem, as clusters have).
//!
//! # Slurm's traps, and what the manager does about them
//!
//! - **Steps inside steps.** Since Slurm 20.11 a job step does not share its CPUs with other
//!   steps, so an `srun` issued from inside a step that holds the CPUs waits for ever (silently).
//!   A master that runs inside a step (`SLURM_STEP_ID` is set: it was started by `srun`) starts
//!   its workers with `--overlap`, and without the step's own `SLURM_NNODES`, `SLURM_NTASKS`,
//!   `SLURM_NPROCS` and `SLURM_NTASKS_PER_NODE`, which srun would otherwise take as the size of
//!   the new step; the task count is then the job's (`scontrol show job`). A master in a batch
//!   script or an `salloc` shell runs in no step and needs neither.
//! - **A worker that dies** ends only itself: srun is told not to end the step when one task
//!   fails or one node does (`--kill-on-bad-exit=0 --wait=0 --no-kill`), the master reports
//!   `ProcessExited` for it and the others go on.
//! - **A node fails.** In a job submitted with `--no-kill` the job outlives the node: srun
//!   reports the node failure (after the controller's `SlurmdTimeout`), the manager closes the
//!   master's links to that node's workers, which no TCP reset would ever close, and the master
//!   reports `ProcessExited` for them and goes on. Without `--no-kill` Slurm ends the job.
//! - **The job ends** (`scancel`, the time limit, a node failure): Slurm ends every task; the
//!   master's links to them close, so it reports `ProcessExited` for each, and when srun exits
//!   for any reason the manager closes the links of that step's workers. Slurm signals the
//!   master too, and kills what is left of the batch step when the script's shell exits.
//! - **Nothing outlives the job**: the workers are tasks of a step of the job, and a worker whose
//!   master link is gone exits by itself.
//!
//! A launch that fails (a task that exits or does not report within the launch timeout, srun
//! refusing the step) ends the whole step: no worker of it is left, and the error names the
//! nodes (and tasks) that never reported and what srun said.

use crate::output::tail;
use crate::ssh::{lock, parse_address, sh_quote, tcp_connect, thread, worker_env};
use cohort_core::{
    read_worker_address, AddProcsParams, ClusterManager, Error, ManageOp, Pid, Result, WorkerConfig,
};
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The tag of the wrapper's line: `cohort_slurm_task:NODE STEP OSPID`.
const TASK_TAG: &str = "cohort_slurm_task:";

/// srun's own messages kept for error reports.
const SRUN_LINES_KEPT: usize = 50;

/// How [`SlurmManager`] starts its job step.
///
/// `dir`, `exename`, `exeflags`, `env` and `launch_timeout` are defaults: the
/// [`AddProcsParams`] given to `addprocs_with` take precedence where they are set (its
/// `worker_timeout` is the launch timeout).
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Workers to start (default: the allocation's task count, `SLURM_NTASKS`).
    pub count: Option<usize>,
    /// The srun program (default `srun`, looked up in `PATH`).
    pub srun: PathBuf,
    /// The scontrol program, for node addresses and the job's task count (default
    /// `scontrol`).
    pub scontrol: PathBuf,
    /// Extra srun arguments, after cohort's own (e.g. `["--cpus-per-task=4"]`). Not the task
    /// count (use `count`) nor srun's I/O options, which the manager needs for itself.
    pub srun_flags: Vec<String>,
    /// The workers' working directory (default: the master's).
    pub dir: Option<PathBuf>,
    /// The program to start (default: the master's own path).
    pub exename: Option<PathBuf>,
    /// Its arguments (default: the master's).
    pub exeflags: Option<Vec<String>>,
    /// Environment variables set for the workers.
    pub env: Vec<(String, String)>,
    /// How long the workers may take to report their addresses (and then wait to be
    /// contacted): default `COHORT_WORKER_TIMEOUT`, 60 s.
    pub launch_timeout: Option<Duration>,
    /// The address, or network interface, every worker listens on (default: its node's
    /// address as Slurm names it).
    pub bind: Option<String>,
    /// Start the step with `--overlap` (default: when the master runs inside a job step).
    pub overlap: Option<bool>,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            count: None,
            srun: PathBuf::from("srun"),
            scontrol: PathBuf::from("scontrol"),
            srun_flags: Vec::new(),
            dir: None,
            exename: None,
            exeflags: None,
            env: Vec::new(),
            launch_timeout: None,
            bind: None,
            overlap: None,
        }
    }
}

impl SlurmOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The options the `cohort` launcher passes in the environment: `COHORT_SRUN_FLAGS`
    /// (split at whitespace) and `COHORT_SLURM_BIND`.
    pub fn from_env() -> Self {
        SlurmOptions {
            srun_flags: cohort_core::env::srun_flags(),
            bind: cohort_core::env::slurm_bind(),
            ..Self::default()
        }
    }

    /// Sets [`count`](Self::count).
    pub fn count(mut self, n: usize) -> Self {
        self.count = Some(n);
        self
    }
    /// Sets [`srun`](Self::srun).
    pub fn srun(mut self, path: impl Into<PathBuf>) -> Self {
        self.srun = path.into();
        self
    }
    /// Sets [`scontrol`](Self::scontrol).
    pub fn scontrol(mut self, path: impl Into<PathBuf>) -> Self {
        self.scontrol = path.into();
        self
    }
    /// Sets [`srun_flags`](Self::srun_flags).
    pub fn srun_flags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, flags: I) -> Self {
        self.srun_flags = flags.into_iter().map(Into::into).collect();
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
    /// Sets [`launch_timeout`](Self::launch_timeout).
    pub fn launch_timeout(mut self, t: Duration) -> Self {
        self.launch_timeout = Some(t);
        self
    }
    /// Sets [`bind`](Self::bind).
    pub fn bind(mut self, addr_or_interface: impl Into<String>) -> Self {
        self.bind = Some(addr_or_interface.into());
        self
    }
    /// Sets [`overlap`](Self::overlap).
    pub fn overlap(mut self, on: bool) -> Self {
        self.overlap = Some(on);
        self
    }
}

/// The allocation this process runs in, as the environment tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// `SLURM_JOB_ID`.
    pub job_id: String,
    /// `SLURM_STEP_ID`, when this process is a task of a job step.
    pub step_id: Option<String>,
    /// `SLURM_NTASKS` (the step's when in a step).
    pub ntasks: Option<usize>,
    /// `SLURM_JOB_NODELIST`.
    pub nodelist: Option<String>,
}

impl Allocation {
    /// The allocation named by the environment, or `Error::Invalid` saying how to get one.
    pub fn from_env() -> Result<Allocation> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`from_env`](Self::from_env), with the variables from `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Allocation> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let Some(job_id) = get("SLURM_JOB_ID").or_else(|| get("SLURM_JOBID")) else {
            return Err(not_in_allocation());
        };
        Ok(Allocation {
            job_id: job_id.trim().to_string(),
            step_id: get("SLURM_STEP_ID").map(|s| s.trim().to_string()),
            ntasks: get("SLURM_NTASKS")
                .or_else(|| get("SLURM_NPROCS"))
                .and_then(|s| s.trim().parse().ok()),
            nodelist: get("SLURM_JOB_NODELIST").or_else(|| get("SLURM_NODELIST")),
        })
    }
}

fn not_in_allocation() -> Error {
    Error::Invalid(
        "SlurmManager: this process is not inside a Slurm allocation (SLURM_JOB_ID is not set): \
         submit a batch job whose script runs the program (`sbatch -n 4 job.sh`, with \
         `cohort --slurm ./prog` or `./prog` in job.sh), or run it in an interactive \
         allocation (`salloc -n 4`, then `cohort --slurm ./prog`)"
            .into(),
    )
}

/// Adds one worker per task of the allocation (or `options.count`) and returns their pids.
///
/// ```no_run
/// use cohort_launcher::{addprocs_slurm, SlurmOptions};
/// let pids = addprocs_slurm(SlurmOptions::new().srun_flags(["--cpus-per-task=2"]))?;
/// # Ok::<(), cohort_core::Error>(())
/// ```
///
/// # Julia
/// `addprocs(SlurmManager())` of SlurmClusterManager.jl.
pub fn addprocs_slurm(options: SlurmOptions) -> Result<Vec<Pid>> {
    let m = SlurmManager::new(options);
    let params = m.default_addprocs_params();
    cohort_core::addprocs_with(Arc::new(m), params)
}

/// Starts workers as the tasks of an `srun` job step inside the current Slurm allocation.
///
/// `params.count` of `addprocs_with` is the number of tasks (by default
/// [`SlurmOptions::count`] or the allocation's). See the [module documentation](self) for what
/// runs where and how Slurm's traps are handled.
///
/// # Julia
/// `SlurmManager` of SlurmClusterManager.jl (ClusterManagers.jl's older one took the srun
/// options as keyword arguments, as [`SlurmOptions::srun_flags`] does here).
pub struct SlurmManager {
    opts: SlurmOptions,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SlurmManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlurmManager")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Default for SlurmManager {
    fn default() -> Self {
        Self::new(SlurmOptions::default())
    }
}

impl SlurmManager {
    /// A manager with these options.
    pub fn new(options: SlurmOptions) -> Self {
        SlurmManager {
            opts: options,
            inner: Arc::new(Inner::default()),
        }
    }

    /// Its options.
    pub fn options(&self) -> &SlurmOptions {
        &self.opts
    }

    /// The srun processes (one per running step) it holds now.
    pub fn steps(&self) -> usize {
        lock(&self.inner.steps).len()
    }
}

/// One srun job step.
struct Step {
    /// srun, until it has exited and been reaped.
    child: Mutex<Option<Child>>,
    /// `JOB.STEP`, once a task said it.
    name: Mutex<Option<String>>,
    /// The master's links to the tasks (a clone of each), to close when Slurm ends them.
    links: Mutex<HashMap<usize, TcpStream>>,
    /// Each task's node.
    nodes: Mutex<BTreeMap<usize, TaskInfo>>,
    /// Tasks not yet finalized.
    live: Mutex<usize>,
    /// srun has exited.
    ended: Mutex<bool>,
    /// How srun exited.
    status: Mutex<Option<std::process::ExitStatus>>,
    /// srun's own messages (the last few).
    said: Mutex<Vec<String>>,
    /// srun's output streams still being read: what srun said is complete once none is.
    streams_open: std::sync::atomic::AtomicUsize,
    /// Each task's stdout and stderr, as the manager passes them on; closed when srun says
    /// the task exited (or srun's own stream ends).
    task_out: Mutex<Vec<Option<std::io::PipeWriter>>>,
    task_err: Mutex<Vec<Option<std::io::PipeWriter>>>,
}

#[derive(Debug, Clone)]
struct TaskInfo {
    node: String,
    ospid: Option<u32>,
}

#[derive(Default)]
struct Inner {
    steps: Mutex<HashMap<u64, Arc<Step>>>,
    next: AtomicU64,
}

impl Drop for Inner {
    /// The core drops the manager with its last worker: the steps get a moment to end by
    /// themselves (their workers were told to exit), then are ended.
    fn drop(&mut self) {
        for (_, s) in lock(&self.steps).drain() {
            thread("cohort-srun-release", move || {
                s.end_after(Duration::from_secs(5))
            });
        }
    }
}

/// What the manager keeps in `WorkerConfig::userdata`.
#[derive(Debug)]
struct SlurmWorker {
    step: u64,
    task: usize,
    timeout: Duration,
}

impl Step {
    fn signal(&self, sig: Signal) -> bool {
        match lock(&self.child).as_ref() {
            Some(c) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
                true
            }
            None => false,
        }
    }

    fn running(&self) -> bool {
        lock(&self.child).is_some()
    }

    /// Ends the step: srun is asked to end it (SIGTERM: srun cancels the step, which ends its
    /// tasks), then killed after `grace`; reaps srun.
    fn end(&self, grace: Duration) {
        if !self.signal(Signal::SIGTERM) {
            return;
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && self.running() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(Signal::SIGKILL);
        while self.running() && Instant::now() < deadline + Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gives srun `grace` to exit by itself (its tasks were told to), then ends the step.
    fn end_after(&self, grace: Duration) {
        let end = Instant::now() + grace;
        while Instant::now() < end && self.running() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.end(Duration::from_secs(5));
    }

    /// Closes the master's links to `tasks` (all when `None`): the core then reports them gone.
    fn close_links(&self, tasks: Option<&[usize]>) {
        let links = lock(&self.links);
        for (t, l) in links.iter() {
            if tasks.is_none_or(|ts| ts.contains(t)) {
                let _ = l.shutdown(Shutdown::Both);
            }
        }
    }

    fn tasks_on(&self, node: &str) -> Vec<usize> {
        lock(&self.nodes)
            .iter()
            .filter(|(_, i)| i.node == node)
            .map(|(t, _)| *t)
            .collect()
    }

    /// One of srun's own lines: kept, logged, and acted on where it says tasks ended or a
    /// node failed.
    fn srun_said(self: &Arc<Self>, line: String) {
        cohort_core::log!(info, "{line}");
        // "srun: error: NODE: tasks 0-1,3: Exited with exit code 1": their output is over
        // (so a task that never reported fails its launch at once). Their stderr came before
        // this line on the same stream; their stdout, on the other, gets a moment to drain.
        if let Some((_, ts)) = parse_task_exit(&line) {
            for &t in &ts {
                if let Some(p) = lock(&self.task_err).get_mut(t) {
                    *p = None;
                }
            }
            let me = Arc::downgrade(self);
            thread("cohort-srun-close", move || {
                std::thread::sleep(Duration::from_millis(300));
                if let Some(s) = me.upgrade() {
                    for t in ts {
                        if let Some(p) = lock(&s.task_out).get_mut(t) {
                            *p = None;
                        }
                    }
                }
            });
        }
        // "srun: error: Node failure on NODE": that node's workers are gone.
        if let Some(node) = line.split("Node failure on ").nth(1) {
            let node = node.trim().trim_end_matches('.');
            let ts = self.tasks_on(node);
            self.close_links(Some(&ts));
        }
        let mut said = lock(&self.said);
        if said.len() == SRUN_LINES_KEPT {
            said.remove(0);
        }
        said.push(line);
    }
}

/// `12: text` as srun's `--label` writes it: the task and the text.
fn split_label(line: &str) -> Option<(usize, &str)> {
    let t = line.trim_start();
    let (n, rest) = t.split_once(':')?;
    let task = n.parse().ok()?;
    Some((task, rest.strip_prefix(' ').unwrap_or(rest)))
}

/// `NODE STEP OSPID` from the wrapper's line.
fn parse_task_line(text: &str) -> Option<(String, String, Option<u32>)> {
    let rest = text.trim_end().strip_prefix(TASK_TAG)?;
    let mut it = rest.split_whitespace();
    let node = it.next()?.to_string();
    let step = it.next().unwrap_or("").to_string();
    let ospid = it.next().and_then(|p| p.parse().ok());
    Some((node, step, ospid))
}

/// `(NODE, tasks)` from srun's "srun: error: NODE: tasks 0-1,3: Exited with exit code 1"
/// (or "task 2: Killed").
fn parse_task_exit(line: &str) -> Option<(String, Vec<usize>)> {
    let parts: Vec<&str> = line.split(": ").collect();
    let i = parts
        .iter()
        .position(|p| p.starts_with("task ") || p.starts_with("tasks "))?;
    if i == 0 || i + 1 >= parts.len() {
        return None;
    }
    let list = parts[i].split_once(' ')?.1;
    let mut ts = Vec::new();
    for r in list.split(',') {
        match r.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a || b - a > 1_000_000 {
                    return None;
                }
                ts.extend(a..=b);
            }
            None => ts.push(r.trim().parse().ok()?),
        }
    }
    Some((parts[i - 1].trim().to_string(), ts))
}

/// Reads srun's labelled `stream` and writes each task's lines into its pipe (in the step);
/// the first line of each task on stdout (the wrapper's) is recorded, not passed on;
/// unlabelled lines are srun's own. When srun's stream ends, every task's pipe is closed.
fn demux(stream: std::io::PipeReader, step: Weak<Step>, job: String, stdout: bool) {
    let mut seen = Vec::new();
    let mut r = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
        let Some(s) = step.upgrade() else { return };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        let pipes = if stdout { &s.task_out } else { &s.task_err };
        let n = lock(pipes).len();
        match split_label(text) {
            Some((t, rest)) if t < n => {
                if seen.len() < n {
                    seen.resize(n, false);
                }
                if stdout && !seen[t] {
                    if let Some((node, st, ospid)) = parse_task_line(rest) {
                        seen[t] = true;
                        lock(&s.nodes).insert(t, TaskInfo { node, ospid });
                        let mut name = lock(&s.name);
                        if name.is_none() && !st.is_empty() {
                            *name = Some(format!("{job}.{st}"));
                        }
                        continue;
                    }
                }
                let mut ps = lock(pipes);
                if let Some(p) = &mut ps[t] {
                    let ok = p
                        .write_all(rest.as_bytes())
                        .and_then(|_| p.write_all(b"\n"));
                    if ok.is_err() {
                        // Nobody reads this task any more (its launch failed).
                        ps[t] = None;
                    }
                }
            }
            _ => s.srun_said(text.to_string()),
        }
    }
    if let Some(s) = step.upgrade() {
        let pipes = if stdout { &s.task_out } else { &s.task_err };
        lock(pipes).iter_mut().for_each(|p| *p = None);
        s.streams_open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `scontrol ARGS` (at most `timeout`); its stdout.
fn scontrol(
    prog: &PathBuf,
    args: &[&str],
    timeout: Duration,
) -> std::result::Result<String, String> {
    let mut c = Command::new(prog);
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", prog.display()))?;
    let (tx, rx) = mpsc::channel();
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    thread("cohort-scontrol", move || {
        use std::io::Read;
        let mut o = String::new();
        let mut e = String::new();
        let _ = out.read_to_string(&mut o);
        let _ = err.read_to_string(&mut e);
        let _ = tx.send((o, e));
    });
    let got = rx.recv_timeout(timeout);
    if got.is_err() {
        let _ = child.kill();
    }
    let st = child.wait();
    match (got, st) {
        (Ok((o, _)), Ok(s)) if s.success() => Ok(o),
        (Ok((_, e)), Ok(s)) => Err(format!("scontrol {}: {s}: {}", args.join(" "), e.trim())),
        _ => Err(format!(
            "scontrol {} did not answer within {timeout:?}",
            args.join(" ")
        )),
    }
}

/// `Key=value` fields of an `scontrol show ... -o` line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// Node name → NodeAddr for the nodes of the job.
fn node_addresses(prog: &PathBuf, nodelist: &str, timeout: Duration) -> BTreeMap<String, String> {
    match scontrol(prog, &["show", "node", "-o", nodelist], timeout) {
        Ok(out) => out
            .lines()
            .filter_map(|l| {
                Some((
                    field(l, "NodeName")?.to_string(),
                    field(l, "NodeAddr")?.to_string(),
                ))
            })
            .collect(),
        Err(e) => {
            cohort_core::log!(warn, error = %e, "cannot read the node addresses; workers listen on their node's name");
            BTreeMap::new()
        }
    }
}

/// The wrapper `sh -c` runs on each node before the worker.
fn wrapper(bind: &Bind, env: &[(String, String)]) -> String {
    let mut s = String::new();
    match bind {
        Bind::Nodes(addrs) => {
            s.push_str("case \"$SLURMD_NODENAME\" in ");
            for (n, a) in addrs {
                s.push_str(&format!("{}) b={} ;; ", sh_quote(n), sh_quote(a)));
            }
            s.push_str("*) b=\"$SLURMD_NODENAME\" ;; esac; ");
        }
        Bind::All(a) => s.push_str(&format!("b={}; ", sh_quote(a))),
    }
    s.push_str(&format!(
        "echo \"{TASK_TAG}$SLURMD_NODENAME ${{SLURM_STEP_ID:-}} $$\"; exec env"
    ));
    for (k, v) in env {
        s.push_str(&format!(" {k}={}", sh_quote(v)));
    }
    s.push_str(" COHORT_BIND=\"$b\" \"$@\"");
    s
}

enum Bind {
    /// Each node's own address (node name → address).
    Nodes(BTreeMap<String, String>),
    /// The same for all.
    All(String),
}

/// srun options the manager sets itself or needs left alone.
fn check_flags(flags: &[String]) -> Result<()> {
    for f in flags {
        let name = f.split('=').next().unwrap_or("");
        let bad = match name {
            "--ntasks" | "--input" | "--output" | "--error" | "--pty" | "--label" => true,
            _ => {
                !f.starts_with("--")
                    && (f.starts_with("-n")
                        || f.starts_with("-i")
                        || f.starts_with("-o")
                        || f.starts_with("-e"))
            }
        };
        if bad {
            return Err(Error::Invalid(format!(
                "SlurmManager: srun flag {f:?} is set by the manager (the task count is SlurmOptions::count; \
                 the tasks' input and output are how workers report)"
            )));
        }
    }
    Ok(())
}

impl SlurmManager {
    /// The task count of this launch: the params', which default to the options' or the
    /// allocation's.
    fn job_tasks(&self, alloc: &Allocation) -> Result<usize> {
        if let Some(n) = self.opts.count {
            return Ok(n);
        }
        if alloc.step_id.is_none() {
            if let Some(n) = alloc.ntasks {
                return Ok(n);
            }
        }
        // Inside a step the variables describe the step: ask for the job's.
        let out = scontrol(
            &self.opts.scontrol,
            &["show", "job", "-o", &alloc.job_id],
            Duration::from_secs(10),
        )
        .map_err(|e| {
            Error::Invalid(format!(
                "SlurmManager: cannot read the job's task count ({e}): give SlurmOptions::count"
            ))
        })?;
        field(&out, "NumTasks")
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                Error::Invalid(
                    "SlurmManager: scontrol shows no task count for the job: give SlurmOptions::count"
                        .into(),
                )
            })
    }
}

/// One launch: what its workers are started with.
struct Launch {
    count: usize,
    job: String,
    exe: PathBuf,
    flags: Vec<String>,
    dir: PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
}

/// A task's address and the rest of its output.
type Address = (String, Box<dyn std::io::Read + Send>);

/// What a task's stdout gave: its address, or why it has none.
type Reported = std::result::Result<Address, cohort_core::NoAddress>;

/// A started step: its id, the step, and each task's stdout and stderr.
type Started = (
    u64,
    Arc<Step>,
    Vec<std::io::PipeReader>,
    Vec<Option<std::io::PipeReader>>,
);

fn io_err(context: &str, source: std::io::Error) -> Error {
    Error::Io {
        context: context.into(),
        source,
    }
}

impl SlurmManager {
    /// The program, its arguments, directory and environment for `params`.
    fn plan(&self, params: &AddProcsParams, alloc: &Allocation) -> Result<Launch> {
        let o = &self.opts;
        check_flags(&o.srun_flags)?;
        let exe = match params.exename.clone().or_else(|| o.exename.clone()) {
            Some(p) => p,
            None => std::env::current_exe().map_err(|e| io_err("finding this program", e))?,
        };
        let flags = match params.exeflags.clone().or_else(|| o.exeflags.clone()) {
            Some(f) => f,
            None => std::env::args().skip(1).collect(),
        };
        let dir = match params.dir.clone().or_else(|| o.dir.clone()) {
            Some(d) => d,
            None => {
                std::env::current_dir().map_err(|e| io_err("finding the working directory", e))?
            }
        };
        let timeout = params.worker_timeout;
        let env = worker_env(
            "Slurm",
            "use SlurmOptions::bind",
            timeout,
            &["COHORT_MAX_FRAME", "COHORT_SPIN_US", "COHORT_LOG"],
            o.env.iter().chain(params.env.iter()),
        )?;
        Ok(Launch {
            count: params.count,
            job: alloc.job_id.clone(),
            exe,
            flags,
            dir,
            env,
            timeout,
        })
    }

    /// The srun command line of `l` (its I/O is set by the caller).
    fn srun_command(&self, l: &Launch, alloc: &Allocation, restrict: bool) -> Command {
        let o = &self.opts;
        let bind = match (&o.bind, restrict) {
            (Some(b), _) => Bind::All(b.clone()),
            (None, false) => Bind::All("0.0.0.0".into()),
            (None, true) => Bind::Nodes(
                alloc
                    .nodelist
                    .as_deref()
                    .map(|n| node_addresses(&o.scontrol, n, Duration::from_secs(10)))
                    .unwrap_or_default(),
            ),
        };
        let in_step = alloc.step_id.is_some();
        let mut cmd = Command::new(&o.srun);
        cmd.arg(format!("--ntasks={}", l.count))
            .args([
                "--label",
                "--kill-on-bad-exit=0",
                "--wait=0",
                "--no-kill",
                "--job-name=cohort-workers",
            ])
            .arg(format!("--chdir={}", l.dir.display()));
        if o.overlap.unwrap_or(in_step) {
            cmd.arg("--overlap");
        }
        cmd.args(&o.srun_flags)
            .args(["sh", "-c", &wrapper(&bind, &l.env), "cohort-worker"])
            .arg(&l.exe)
            .args(&l.flags);
        if in_step {
            // The step's own sizes would size the new step.
            for k in [
                "SLURM_NNODES",
                "SLURM_NTASKS",
                "SLURM_NPROCS",
                "SLURM_NTASKS_PER_NODE",
            ] {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("COHORT_PROCS")
            .env_remove("COHORT_SLURM")
            .env_remove("COHORT_MACHINE_FILE");
        cmd
    }

    /// Starts srun and the threads that pass each task's output on; the step, and each
    /// task's stdout and stderr.
    fn start_step(&self, l: &Launch, mut cmd: Command) -> Result<Started> {
        let pipe = || std::io::pipe().map_err(|e| io_err("creating a pipe", e));
        let mut outs = Vec::new();
        let mut out_ws = Vec::new();
        let mut errs = Vec::new();
        let mut err_ws = Vec::new();
        for _ in 0..l.count {
            let (r, w) = pipe()?;
            outs.push(r);
            out_ws.push(Some(w));
            let (r, w) = pipe()?;
            errs.push(Some(r));
            err_ws.push(Some(w));
        }
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        let srun = &self.opts.srun;
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Invalid(format!(
                    "SlurmManager: `{}` was not found: run on a node of a Slurm cluster (the slurm-client package)",
                    srun.display()
                ))
            } else {
                io_err(&format!("starting {}", srun.display()), e)
            }
        })?;
        // Our copies of the write ends close with `cmd`, so EOF comes with srun's exit.
        drop(cmd);
        let stdin = child.stdin.take();
        let step = Arc::new(Step {
            child: Mutex::new(Some(child)),
            name: Mutex::new(None),
            links: Mutex::new(HashMap::new()),
            nodes: Mutex::new(BTreeMap::new()),
            live: Mutex::new(l.count),
            ended: Mutex::new(false),
            status: Mutex::new(None),
            said: Mutex::new(Vec::new()),
            streams_open: std::sync::atomic::AtomicUsize::new(2),
            task_out: Mutex::new(out_ws),
            task_err: Mutex::new(err_ws),
        });
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.steps).insert(id, Arc::clone(&step));
        self.watch(id, &step);
        for (r, stdout) in [(out_r, true), (err_r, false)] {
            let (w, job) = (Arc::downgrade(&step), l.job.clone());
            thread("cohort-srun-io", move || demux(r, w, job, stdout));
        }
        // The cookie: the first line of every task's stdin, never on a command line.
        let cookie = cohort_core::cluster_cookie();
        match (stdin, &cookie) {
            (Some(mut stdin), Ok(c)) => {
                let _ = writeln!(stdin, "{c}");
            }
            (_, Err(_)) => {
                step.end(Duration::from_secs(5));
                lock(&self.inner.steps).remove(&id);
                return Err(cookie.unwrap_err());
            }
            _ => {}
        }
        Ok((id, step, outs, errs))
    }

    /// Why the launch failed, once its step has been ended.
    fn failure(
        &self,
        id: u64,
        step: &Step,
        l: &Launch,
        reported: &[usize],
        failed: Option<(usize, String)>,
    ) -> Error {
        let nodes = lock(&step.nodes).clone();
        if nodes.is_empty() && failed.is_some() {
            // No task started and their output ended: srun is exiting.
            let end = Instant::now() + Duration::from_millis(500);
            while step.running() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let srun_ended = lock(&step.status).map(|s| s.to_string());
        step.end(Duration::from_secs(5));
        lock(&self.inner.steps).remove(&id);
        // srun's last words may still be in its pipes: read them to the end first.
        let end = Instant::now() + Duration::from_secs(1);
        while step.streams_open.load(Ordering::Acquire) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let said = match tail(&lock(&step.said)).as_str() {
            "no output" => "srun said nothing".to_string(),
            s => s.to_string(),
        };
        if let (true, Some(st)) = (nodes.is_empty(), &srun_ended) {
            return Error::Invalid(format!(
                "Slurm: srun ended ({st}) before starting any worker: {said}"
            ));
        }
        let step_name = match lock(&step.name).as_deref() {
            Some(s) => format!("step {s}"),
            None => format!("job {}", l.job),
        };
        if let Some((t, why)) = failed {
            let on = nodes
                .get(&t)
                .map_or(String::new(), |i| format!(" on node {}", i.node));
            return Error::Invalid(format!(
                "Slurm worker task {t}{on} ({step_name}) exited before reporting its address: {}; {said}",
                if why.is_empty() { "no output" } else { &why }
            ));
        }
        let missing: Vec<usize> = (0..l.count).filter(|t| !reported.contains(t)).collect();
        Error::Timeout(format!(
            "Slurm: {} of {} workers ({step_name}) did not report an address within {:.1} s \
             (COHORT_WORKER_TIMEOUT): {}; {said}",
            missing.len(),
            l.count,
            l.timeout.as_secs_f64(),
            describe_missing(&missing, &nodes),
        ))
    }
}

/// Each task's address, read from its stdout, until all have one, the first fails (its
/// stderr and early stdout say why), or the deadline passes (`None` then).
fn await_addresses(
    outs: Vec<std::io::PipeReader>,
    errs: &mut [Option<std::io::PipeReader>],
    deadline: Instant,
) -> (BTreeMap<usize, Address>, Option<(usize, String)>) {
    let count = outs.len();
    let (tx, rx) = mpsc::channel::<(usize, Reported)>();
    for (t, r) in outs.into_iter().enumerate() {
        let tx = tx.clone();
        thread("cohort-srun-read", move || {
            let _ = tx.send((t, read_worker_address(BufReader::new(r))));
        });
    }
    drop(tx);
    let mut got = BTreeMap::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((t, Ok(x))) => {
                got.insert(t, x);
            }
            Ok((t, Err(none))) => {
                let mut why = Vec::new();
                if let Some(e) = errs[t].take() {
                    let lines = crate::output::drain_lines(e);
                    if !lines.is_empty() {
                        why.push(tail(&lines));
                    }
                }
                if none.output.iter().any(|l| !l.trim().is_empty()) {
                    why.push(format!("stdout: {}", tail(&none.output)));
                }
                // The first failure ends the launch: the step goes as a whole.
                return (got, Some((t, why.join("; "))));
            }
            Err(_) => break,
        }
    }
    (got, None)
}

impl ClusterManager for SlurmManager {
    fn launch(
        &self,
        params: &AddProcsParams,
        launched: &mut dyn FnMut(WorkerConfig),
    ) -> Result<()> {
        let alloc = Allocation::from_env()?;
        if params.count == 0 {
            return Ok(());
        }
        let l = self.plan(params, &alloc)?;
        let cmd = self.srun_command(&l, &alloc, params.restrict);
        wait_for_ending_steps(Duration::from_secs(10));
        let t0 = Instant::now();
        let (id, step, outs, mut errs) = self.start_step(&l, cmd)?;
        let (got, mut failed) = await_addresses(outs, &mut errs, t0 + l.timeout);
        let reported: Vec<usize> = got.keys().copied().collect();
        if failed.is_none() && got.len() == l.count {
            let mut configs = Vec::new();
            for (t, (address, reader)) in got {
                let Some((ahost, aport)) = parse_address(&address) else {
                    failed = Some((t, format!("it reported a malformed address {address:?}")));
                    break;
                };
                let info = lock(&step.nodes).get(&t).cloned();
                configs.push(WorkerConfig {
                    io: Some(reader),
                    err: errs[t]
                        .take()
                        .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
                    host: info.as_ref().map(|i| i.node.clone()),
                    port: Some(aport),
                    address: Some(address),
                    bind_addr: Some(ahost),
                    ospid: info.as_ref().and_then(|i| i.ospid),
                    ident: Some(match lock(&step.name).as_deref() {
                        Some(s) => format!("{s}.{t}"),
                        None => format!("{}.?.{t}", l.job),
                    }),
                    exename: Some(l.exe.clone()),
                    exeflags: l.flags.clone(),
                    env: l.env.clone(),
                    dir: Some(l.dir.clone()),
                    userdata: Some(Box::new(SlurmWorker {
                        step: id,
                        task: t,
                        timeout: l.timeout,
                    })),
                    ..WorkerConfig::default()
                });
            }
            if failed.is_none() {
                cohort_core::log!(
                    debug,
                    "srun step {} reported {} workers in {:.2} s",
                    lock(&step.name).as_deref().unwrap_or("?"),
                    l.count,
                    t0.elapsed().as_secs_f64()
                );
                for c in configs {
                    launched(c);
                }
                return Ok(());
            }
        }
        // The launch failed: end the whole step, and say who never reported.
        Err(self.failure(id, &step, &l, &reported, failed))
    }

    fn connect(&self, _pid: Pid, config: &WorkerConfig) -> Option<Result<OwnedFd>> {
        let w = config.userdata.as_ref()?.downcast_ref::<SlurmWorker>()?;
        let target = config.address.clone()?;
        let host = config.host.clone().unwrap_or_default();
        let s = match tcp_connect(&target, w.timeout) {
            Ok(s) => s,
            Err(e) => {
                return Some(Err(Error::Io {
                    context: format!("connecting to the worker on node {host} at {target}"),
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
        let step = lock(&self.inner.steps).get(&w.step).cloned();
        match step {
            Some(st) if !*lock(&st.ended) => {
                lock(&st.links).insert(w.task, watch);
                Some(Ok(OwnedFd::from(s)))
            }
            _ => Some(Err(Error::Invalid(format!(
                "node {host}: the workers' job step ended before the master connected"
            )))),
        }
    }

    fn manage(&self, _pid: Pid, config: &WorkerConfig, op: ManageOp) {
        if op == ManageOp::Finalize {
            self.release(config, Duration::from_secs(5));
        }
    }

    fn kill(&self, _pid: Pid, config: &WorkerConfig) {
        // The worker was asked to exit; its step ends once all its workers have.
        self.release(config, Duration::from_secs(10));
    }

    fn default_addprocs_params(&self) -> AddProcsParams {
        let o = &self.opts;
        let d = AddProcsParams::default();
        let count = match Allocation::from_env() {
            Ok(a) => self.job_tasks(&a).unwrap_or(1),
            // `launch` says what is wrong.
            Err(_) => 1,
        };
        AddProcsParams {
            count,
            exename: o.exename.clone(),
            exeflags: o.exeflags.clone(),
            env: Vec::new(),
            dir: o.dir.clone(),
            restrict: true,
            worker_timeout: o.launch_timeout.unwrap_or(d.worker_timeout),
        }
    }
}

/// "tasks 2, 3 on node n2; task 5 never started".
fn describe_missing(missing: &[usize], nodes: &BTreeMap<usize, TaskInfo>) -> String {
    let mut by_node: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut unstarted = Vec::new();
    for t in missing {
        match nodes.get(t) {
            Some(i) => by_node.entry(i.node.as_str()).or_default().push(*t),
            None => unstarted.push(*t),
        }
    }
    let list = |ts: &[usize]| {
        let s: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
        format!(
            "task{} {}",
            if ts.len() > 1 { "s" } else { "" },
            s.join(", ")
        )
    };
    let mut parts: Vec<String> = by_node
        .iter()
        .map(|(n, ts)| format!("{} on node {n} never reported", list(ts)))
        .collect();
    if !unstarted.is_empty() {
        parts.push(format!(
            "{} never started (the step was not created, or is waiting for resources)",
            list(&unstarted)
        ));
    }
    parts.join("; ")
}

impl SlurmManager {
    /// Watches srun: when it exits, the step is over; its workers' links are closed.
    fn watch(&self, id: u64, step: &Arc<Step>) {
        let ospid = match lock(&step.child).as_ref() {
            Some(c) => c.id(),
            None => return,
        };
        let weak = Arc::downgrade(step);
        let inner = Arc::downgrade(&self.inner);
        thread("cohort-srun-watch", move || {
            use nix::sys::wait::{waitid, Id, WaitPidFlag};
            let pid = nix::unistd::Pid::from_raw(ospid as i32);
            // Wait without reaping, so that no signal sent under the lock reaches a reused pid.
            while let Err(nix::errno::Errno::EINTR) =
                waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT)
            {}
            let Some(step) = weak.upgrade() else { return };
            let status = {
                // The status is set before srun counts as gone.
                let mut child = lock(&step.child);
                let status = child.as_mut().and_then(|c| c.wait().ok());
                *lock(&step.status) = status;
                *child = None;
                status
            };
            *lock(&step.ended) = true;
            cohort_core::log!(
                debug,
                "srun of step {} exited: {}",
                lock(&step.name).as_deref().unwrap_or("?"),
                status.map_or("?".to_string(), |s| s.to_string())
            );
            step.close_links(None);
            if let Some(inner) = inner.upgrade() {
                lock(&inner.steps).remove(&id);
            }
        });
    }

    /// A worker is gone or going: once all of its step's are, srun gets `grace` to end by
    /// itself, then the step is ended.
    fn release(&self, config: &WorkerConfig, grace: Duration) {
        let Some(w) = config
            .userdata
            .as_ref()
            .and_then(|u| u.downcast_ref::<SlurmWorker>())
        else {
            return;
        };
        let Some(step) = lock(&self.inner.steps).get(&w.step).cloned() else {
            return;
        };
        if lock(&step.links).remove(&w.task).is_none() {
            // Already released (kill, then finalize).
            return;
        }
        let mut live = lock(&step.live);
        *live = live.saturating_sub(1);
        if *live > 0 {
            return;
        }
        drop(live);
        let mut ending = lock(ending());
        ending.retain(|s| s.upgrade().is_some_and(|s| s.running()));
        ending.push(Arc::downgrade(&step));
        drop(ending);
        thread("cohort-srun-release", move || step.end_after(grace));
    }
}

/// Steps whose workers are all gone, while their srun ends (any manager's).
fn ending() -> &'static Mutex<Vec<Weak<Step>>> {
    static E: Mutex<Vec<Weak<Step>>> = Mutex::new(Vec::new());
    &E
}

/// Waits (at most `limit`) for the steps that are ending: a new step would otherwise wait
/// for the CPUs they still hold ("step creation temporarily disabled").
fn wait_for_ending_steps(limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let busy = {
            let mut e = lock(ending());
            e.retain(|s| s.upgrade().is_some_and(|s| s.running()));
            !e.is_empty()
        };
        if !busy || Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(split_label("0: hello"), Some((0, "hello")));
        assert_eq!(split_label(" 3: a: b"), Some((3, "a: b")));
        assert_eq!(split_label("12: "), Some((12, "")));
        assert_eq!(split_label("12:"), Some((12, "")));
        assert_eq!(split_label("srun: error: x"), None);
        assert_eq!(split_label("slurmstepd-n1: error: *** STEP"), None);
    }

    #[test]
    fn task_exits() {
        assert_eq!(
            parse_task_exit("srun: error: n1: tasks 0-1,3: Exited with exit code 1"),
            Some(("n1".into(), vec![0, 1, 3]))
        );
        assert_eq!(
            parse_task_exit("srun: error: cohort-host-b: task 2: Killed"),
            Some(("cohort-host-b".into(), vec![2]))
        );
        assert_eq!(parse_task_exit("srun: error: Node failure on n2"), None);
        assert_eq!(
            parse_task_exit("srun: Job step aborted: Waiting up to 4 seconds"),
            None
        );
    }

    #[test]
    fn task_lines() {
        assert_eq!(
            parse_task_line("cohort_slurm_task:node1 3 4242"),
            Some(("node1".into(), "3".into(), Some(4242)))
        );
        assert_eq!(
            parse_task_line("cohort_slurm_task:n2  77"),
            Some(("n2".into(), "77".into(), None))
        );
        assert_eq!(parse_task_line("cohort_worker:1.2.3.4:5"), None);
    }

    #[test]
    fn allocation_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let e = Allocation::from_lookup(env(&[])).unwrap_err().to_string();
        assert!(e.starts_with("SlurmManager: this process is not inside a Slurm allocation (SLURM_JOB_ID is not set)"), "{e}");
        assert!(e.contains("sbatch") && e.contains("salloc"), "{e}");
        let a = Allocation::from_lookup(env(&[
            ("SLURM_JOB_ID", "17"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_JOB_NODELIST", "n[1-2]"),
        ]))
        .unwrap();
        assert_eq!(
            a,
            Allocation {
                job_id: "17".into(),
                step_id: None,
                ntasks: Some(4),
                nodelist: Some("n[1-2]".into()),
            }
        );
        let a = Allocation::from_lookup(env(&[
            ("SLURM_JOB_ID", "17"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NPROCS", "1"),
        ]))
        .unwrap();
        assert_eq!(a.step_id.as_deref(), Some("0"));
        assert_eq!(a.ntasks, Some(1));
    }

    #[test]
    fn flags_the_manager_owns() {
        assert!(check_flags(&[
            "--cpus-per-task=2".into(),
            "-N2".into(),
            "--mpi=none".into()
        ])
        .is_ok());
        assert!(check_flags(&["--ntasks-per-node=2".into()]).is_ok());
        for f in [
            "-n4",
            "--ntasks=4",
            "--ntasks",
            "-o",
            "--output=x",
            "--pty",
            "-i0",
            "--label",
        ] {
            let e = check_flags(&[f.to_string()]).unwrap_err().to_string();
            assert!(e.contains(&format!("{f:?}")), "{f}: {e}");
        }
    }

    #[test]
    fn the_wrapper_picks_each_nodes_address() {
        let mut m = BTreeMap::new();
        m.insert("n1".to_string(), "10.0.0.1".to_string());
        m.insert("n 2".to_string(), "10.0.0.2".to_string());
        let w = wrapper(
            &Bind::Nodes(m),
            &[
                ("COHORT_WORKER".into(), "1".into()),
                ("X".into(), "a b".into()),
            ],
        );
        assert_eq!(
            w,
            "case \"$SLURMD_NODENAME\" in 'n 2') b=10.0.0.2 ;; n1) b=10.0.0.1 ;; *) b=\"$SLURMD_NODENAME\" ;; esac; \
             echo \"cohort_slurm_task:$SLURMD_NODENAME ${SLURM_STEP_ID:-} $$\"; \
             exec env COHORT_WORKER=1 X='a b' COHORT_BIND=\"$b\" \"$@\""
        );
        let w = wrapper(&Bind::All("ib0".into()), &[]);
        assert!(w.starts_with("b=ib0; echo"), "{w}");
    }

    #[test]
    fn missing_workers_are_named_by_node() {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            1,
            TaskInfo {
                node: "n2".into(),
                ospid: None,
            },
        );
        nodes.insert(
            2,
            TaskInfo {
                node: "n2".into(),
                ospid: None,
            },
        );
        nodes.insert(
            3,
            TaskInfo {
                node: "n3".into(),
                ospid: None,
            },
        );
        assert_eq!(
            describe_missing(&[1, 2, 3, 4], &nodes),
            "tasks 1, 2 on node n2 never reported; task 3 on node n3 never reported; \
             task 4 never started (the step was not created, or is waiting for resources)"
        );
    }
}
