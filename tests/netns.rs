//! Multi-host tests on one machine: three network namespaces play three hosts.
//!
//! A bridge in this (the root) namespace joins a veth pair per namespace; each namespace runs
//! an OpenSSH server with keys this test generates, its own host name (UTS namespace) and its
//! own `/dev/shm`, so it looks like another host to cohort. The master runs here and starts
//! workers in the namespaces through `SshManager` — this very test binary, reached through the
//! shared filesystem — with and without tunnels, then runs remote calls, pmap, a
//! RemoteChannel and worker-to-worker calls across hosts, checks that a SharedArray cannot
//! span hosts, checks the launch errors, cuts one host's link and checks that the master
//! reports `ProcessExited` for that host's workers and goes on with the others. Where Slurm is
//! installed, each namespace also runs a slurmd (a node of a cluster whose slurmctld runs here,
//! started by `ci/slurm`), and a batch job spanning the three nodes runs `cluster_tour` with
//! workers from its allocation. At the end it
//! removes every namespace, link, process, key and directory it made, also when a test fails
//! or hangs (and the next run removes what a killed run left).
//!
//! Needs root (or CAP_NET_ADMIN + CAP_SYS_ADMIN), iproute2, util-linux's `unshare`, and
//! OpenSSH (client and server). Where network namespaces cannot be created it prints why and
//! passes.

mod slurm_env;
mod ssh_env;

use cohort::managers::{Machine, SshManager, SshOptions};
use cohort::prelude::*;
use cohort::shm::ndarray::Ix1;
use cohort::{AddProcsParams, ClusterManager, Count, Error, ManageOp, WorkerConfig};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Set in the environment of a "worker" that must never report its address.
const SILENT: &str = "COHORT_NETNS_SILENT_WORKER";
/// Set for this binary run as the master of a Slurm job.
const ROLE: &str = "COHORT_NETNS_SLURM_ROLE";

// ---------- remote functions ----------

#[cohort::remote]
fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cohort::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cohort::remote]
fn square(x: u64) -> (u64, String) {
    (x * x, hostname())
}

/// Calls `pid` from this worker (a worker-to-worker link) and returns its host name.
/// Whether this worker's link to `pid` carries its frames in shared memory, after a call.
#[cohort::remote]
fn rings_after_call(pid: usize) -> Option<bool> {
    remotecall_fetch(add, pid, (1, 1)).expect("a call to the other worker");
    cohort::__private::link_uses_rings(pid)
}

#[cohort::remote]
fn host_of(pid: usize) -> cohort::Result<String> {
    remotecall_fetch(hostname, pid, ())
}

#[cohort::remote]
fn put_into(ch: RemoteChannel<String>, v: String) -> cohort::Result<()> {
    ch.put(format!("{v} from {} on {}", myid(), hostname()))
}

#[cohort::remote]
fn sleep_then(secs: f64) -> u64 {
    std::thread::sleep(Duration::from_secs_f64(secs));
    7
}

/// Makes a shared array with `pids` on this worker; the number of its pids.
#[cohort::remote]
fn shm_here(pids: Vec<usize>) -> std::result::Result<usize, String> {
    let s = SharedArray::<u64, Ix1>::new(pids.len(), Some(&pids)).map_err(|e| e.to_string())?;
    let r = s.pids().len();
    Ok(r)
}

#[cohort::remote]
fn shm_read(s: SharedArray<u64, Ix1>) -> u64 {
    s.as_slice().iter().sum()
}

// ---------- the network ----------

struct Host {
    key: char,
    ns: String,
    name: String,
    ip: String,
    veth_root: String,
}

/// What the tests need to know about the network (the owner is `Net`).
struct Info {
    hosts: Vec<(char, String, String)>, // key, host name, ip
    flags: Vec<String>,
    unreachable: String,
    cut: Box<dyn Fn(char) -> Result<(), String> + Send + Sync>,
    /// Why the hosts run no Slurm nodes, if they do not.
    no_slurm: Option<String>,
}

static INFO: OnceLock<Info> = OnceLock::new();

fn info() -> &'static Info {
    INFO.get().expect("network set up")
}

fn ip_of(k: char) -> String {
    info()
        .hosts
        .iter()
        .find(|h| h.0 == k)
        .map(|h| h.2.clone())
        .expect("host")
}

fn name_of(k: char) -> String {
    info()
        .hosts
        .iter()
        .find(|h| h.0 == k)
        .map(|h| h.1.clone())
        .expect("host")
}

fn machine(k: char, n: usize) -> Machine {
    Machine::with_count(&format!("{}@{}", ssh_env::user(), ip_of(k)), Count::N(n)).unwrap()
}

fn opts() -> SshOptions {
    SshOptions::new()
        .sshflags(info().flags.clone())
        .worker_timeout(Duration::from_secs(20))
}

/// Owns everything the suite creates; dropping it removes all of it.
struct Net {
    tag: u32,
    dir: Option<std::path::PathBuf>,
    bridge: Option<String>,
    hosts: Vec<Host>,
    sshds: Vec<ssh_env::Sshd>,
}

enum SetupError {
    Skip(String),
    Fail(String),
}

fn ip(args: &[&str]) -> Result<String, String> {
    ssh_env::cmd("ip", args)
}

/// Removes namespaces, links and directories left by runs that were killed.
fn sweep_stale() {
    let dead = |s: &str| s.parse::<u32>().is_ok_and(|p| !ssh_env::alive(p));
    if let Ok(list) = ip(&["netns", "list"]) {
        for line in list.lines() {
            let ns = line.split_whitespace().next().unwrap_or("");
            if let Some(rest) = ns.strip_prefix("cohort-t") {
                if rest.rsplit_once('-').is_some_and(|(p, _)| dead(p)) {
                    kill_netns_procs(ns);
                    let _ = ip(&["netns", "del", ns]);
                }
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show"]) {
        for line in list.lines() {
            let name = line
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .split('@')
                .next()
                .unwrap_or("");
            let stale = name.strip_prefix("ctb").is_some_and(dead)
                || name
                    .strip_prefix("cta")
                    .is_some_and(|s| s.len() > 1 && dead(&s[..s.len() - 1]));
            if stale {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
    slurm_env::sweep_stale("cohort-netns", "slurm");
    ssh_env::sweep_dirs("cohort-netns");
    ssh_env::sweep_dirs("cohort-netns-tour");
}

fn kill_netns_procs(ns: &str) {
    for _ in 0..50 {
        let pids: Vec<i32> = ip(&["netns", "pids", ns])
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(40));
    }
}

impl Net {
    fn create() -> Result<Net, SetupError> {
        use SetupError::*;
        if let Some(t) = ssh_env::missing_tool(&["ip", "unshare", "ssh", "ssh-keygen", "sshd"]) {
            return Err(Skip(format!(
                "`{t}` is not installed (needs iproute2, util-linux, openssh-client, openssh-server)"
            )));
        }
        sweep_stale();
        let tag = std::process::id();
        // Probe: can this process create network namespaces at all?
        let probe = format!("cohort-t{tag}-probe");
        match ip(&["netns", "add", &probe]) {
            Ok(_) => {
                let _ = ip(&["netns", "del", &probe]);
            }
            Err(e) => {
                return Err(Skip(format!(
                    "cannot create network namespaces here (needs root / CAP_SYS_ADMIN): {e}"
                )))
            }
        }
        let mut net = Net {
            tag,
            dir: None,
            bridge: None,
            hosts: Vec::new(),
            sshds: Vec::new(),
        };
        let fail = |e: String| Fail(e);
        let dir = ssh_env::private_dir("cohort-netns").map_err(fail)?;
        net.dir = Some(dir.clone());
        let key = ssh_env::make_keys(&dir).map_err(fail)?;
        // A /24 in 10.213.0.0/16 that no interface here uses.
        let used = ip(&["-o", "-4", "addr", "show"]).unwrap_or_default();
        let third = (0..200)
            .map(|i| 20 + (tag + i) % 200)
            .find(|t| !used.contains(&format!("10.213.{t}.")))
            .ok_or_else(|| Fail("no free 10.213.x.0/24 subnet".into()))?;
        let bridge = format!("ctb{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"]).map_err(fail)?;
        net.bridge = Some(bridge.clone());
        ip(&[
            "addr",
            "add",
            &format!("10.213.{third}.1/24"),
            "dev",
            &bridge,
        ])
        .map_err(fail)?;
        ip(&["link", "set", &bridge, "up"]).map_err(fail)?;
        for (i, k) in ['a', 'b', 'c'].into_iter().enumerate() {
            let ns = format!("cohort-t{tag}-{k}");
            let veth_root = format!("cta{tag}{k}");
            let veth_ns = format!("ctn{tag}{k}");
            let hip = format!("10.213.{third}.{}", i + 2);
            ip(&["netns", "add", &ns]).map_err(fail)?;
            net.hosts.push(Host {
                key: k,
                ns: ns.clone(),
                name: format!("cohort-host-{k}"),
                ip: hip.clone(),
                veth_root: veth_root.clone(),
            });
            ip(&[
                "link", "add", &veth_root, "type", "veth", "peer", "name", &veth_ns,
            ])
            .map_err(fail)?;
            ip(&["link", "set", &veth_ns, "netns", &ns]).map_err(fail)?;
            ip(&["link", "set", &veth_root, "master", &bridge, "up"]).map_err(fail)?;
            let nsip = |a: &[&str]| {
                let mut v = vec!["netns", "exec", ns.as_str(), "ip"];
                v.extend_from_slice(a);
                ip(&v)
            };
            nsip(&["addr", "add", &format!("{hip}/24"), "dev", &veth_ns]).map_err(fail)?;
            nsip(&["link", "set", &veth_ns, "up"]).map_err(fail)?;
            nsip(&["link", "set", "lo", "up"]).map_err(fail)?;
            let name = format!("cohort-host-{k}");
            let sshd = ssh_env::Sshd::start(&dir, &k.to_string(), &hip, 22, Some((&ns, &name)))
                .map_err(fail)?;
            net.sshds.push(sshd);
        }
        // A Slurm node per host, the controller here on the bridge.
        let no_slurm = match slurm_env::missing() {
            Some(why) => Some(why),
            None => {
                let mut args = vec!["--controller".to_string(), format!("10.213.{third}.1")];
                for h in &net.hosts {
                    args.push("--node".into());
                    args.push(format!("{}={}@{}", h.name, h.ip, h.ns));
                }
                slurm_env::start(&dir.join("slurm"), &args).map_err(fail)?;
                None
            }
        };
        let hosts: Vec<(char, String, String)> = net
            .hosts
            .iter()
            .map(|h| (h.key, h.name.clone(), h.ip.clone()))
            .collect();
        let links: Vec<(char, String)> = net
            .hosts
            .iter()
            .map(|h| (h.key, h.veth_root.clone()))
            .collect();
        let _ = INFO.set(Info {
            hosts,
            flags: ssh_env::ssh_flags(&key),
            unreachable: format!("10.213.{third}.250"),
            cut: Box::new(move |k| {
                let (_, l) = links.iter().find(|(h, _)| *h == k).ok_or("no such host")?;
                ip(&["link", "set", l, "down"]).map(|_| ())
            }),
            no_slurm,
        });
        println!(
            "netns: 3 hosts on bridge {bridge} (10.213.{third}.0/24): {}",
            net.hosts
                .iter()
                .map(|h| format!("{} = {} in {}", h.name, h.ip, h.ns))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(net)
    }

    /// Removes everything; what could not be removed.
    fn teardown(&mut self) -> Vec<String> {
        // Slurm's jobs and daemons first, while its nodes are still there.
        let mut left = slurm_env::stop();
        for s in &mut self.sshds {
            s.stop();
        }
        self.sshds.clear();
        for h in self.hosts.drain(..) {
            kill_netns_procs(&h.ns);
            if let Err(e) = ip(&["netns", "del", &h.ns]) {
                left.push(format!("namespace {}: {e}", h.ns));
            }
            // Deleting the namespace deleted its end of the pair, and so the pair.
            if ip(&["link", "show", &h.veth_root]).is_ok() {
                let _ = ip(&["link", "del", &h.veth_root]);
            }
        }
        if let Some(b) = self.bridge.take() {
            if let Err(e) = ip(&["link", "del", &b]) {
                left.push(format!("bridge {b}: {e}"));
            }
        }
        if let Some(d) = self.dir.take() {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                left.push(format!("directory {}: {e}", d.display()));
            }
        }
        // Check: nothing of ours is left.
        let tag = self.tag;
        if let Ok(l) = ip(&["netns", "list"]) {
            if l.contains(&format!("cohort-t{tag}-")) {
                left.push(format!("namespaces: {l}"));
            }
        }
        if let Ok(l) = ip(&["-o", "link", "show"]) {
            for line in l.lines() {
                if line.contains(&format!("ctb{tag}")) || line.contains(&format!("cta{tag}")) {
                    left.push(format!("link: {line}"));
                }
            }
        }
        left
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for l in self.teardown() {
            eprintln!("netns teardown: {l}");
        }
    }
}

/// A registered worker: pid, address, connect_at.
type Registered = (usize, Option<String>, Option<String>);

// ---------- a manager that records the configs the core registers ----------

struct Recording {
    inner: SshManager,
    configs: Mutex<Vec<Registered>>, // pid, address, connect_at
}

impl ClusterManager for Recording {
    fn launch(
        &self,
        params: &AddProcsParams,
        launched: &mut dyn FnMut(WorkerConfig),
    ) -> cohort::Result<()> {
        self.inner.launch(params, launched)
    }
    fn connect(
        &self,
        pid: usize,
        config: &WorkerConfig,
    ) -> Option<cohort::Result<std::os::fd::OwnedFd>> {
        self.inner.connect(pid, config)
    }
    fn manage(&self, pid: usize, config: &WorkerConfig, op: ManageOp) {
        if op == ManageOp::Register {
            self.configs.lock().unwrap().push((
                pid,
                config.address.clone(),
                config.connect_at.clone(),
            ));
        }
        self.inner.manage(pid, config, op)
    }
    fn kill(&self, pid: usize, config: &WorkerConfig) {
        self.inner.kill(pid, config)
    }
}

// ---------- tests ----------

/// Pids on hosts a (2 workers) and b (1 worker), started by the first test.
static DIRECT: Mutex<Vec<(char, usize)>> = Mutex::new(Vec::new());

fn pids_on(k: char) -> Vec<usize> {
    DIRECT
        .lock()
        .unwrap()
        .iter()
        .filter(|(h, _)| *h == k)
        .map(|(_, p)| *p)
        .collect()
}

fn direct_workers_across_hosts() {
    let t0 = Instant::now();
    let m = SshManager::new(vec![machine('a', 2), machine('b', 1)], opts());
    let params = m.default_addprocs_params();
    let pids = cohort::addprocs_with(Arc::new(m), params).unwrap();
    println!(
        "  3 direct workers in {:.2}s: {pids:?}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(pids.len(), 3);
    let (a1, a2, b1) = (pids[0], pids[1], pids[2]);
    *DIRECT.lock().unwrap() = vec![('a', a1), ('a', a2), ('b', b1)];
    // Each worker runs on its host, and listens on that host's address only.
    assert_eq!(remotecall_fetch(hostname, a1, ()).unwrap(), name_of('a'));
    assert_eq!(remotecall_fetch(hostname, a2, ()).unwrap(), name_of('a'));
    assert_eq!(remotecall_fetch(hostname, b1, ()).unwrap(), name_of('b'));
    for (p, k) in [(a1, 'a'), (a2, 'a'), (b1, 'b')] {
        let addr = cohort::__private::peer_address(p).unwrap();
        assert!(addr.starts_with(&format!("{}:", ip_of(k))), "{p}: {addr}");
    }
    assert_eq!(cohort::procs_on(a1).unwrap(), vec![a1, a2]);
    assert_eq!(cohort::procs_on(b1).unwrap(), vec![b1]);
    // Remote calls and pmap across hosts.
    assert_eq!(remotecall_fetch(add, b1, (40, 2)).unwrap(), 42);
    let r = pmap(square, 1..=12u64).unwrap();
    assert_eq!(
        r.iter().map(|x| x.0).collect::<Vec<_>>(),
        (1..=12u64).map(|x| x * x).collect::<Vec<_>>()
    );
    let hosts: std::collections::BTreeSet<String> = r.into_iter().map(|x| x.1).collect();
    println!("  pmap ran on {hosts:?}");
    assert!(hosts
        .iter()
        .all(|h| h == &name_of('a') || h == &name_of('b')));
    // Worker-to-worker calls across hosts, both ways.
    assert_eq!(remotecall_fetch(host_of, a1, (b1,)).unwrap(), name_of('b'));
    assert_eq!(remotecall_fetch(host_of, b1, (a2,)).unwrap(), name_of('a'));
    // Shared memory within a host, TCP between hosts (and between the master and them).
    assert_eq!(
        remotecall_fetch(rings_after_call, a1, (a2,)).unwrap(),
        Some(true)
    );
    assert_eq!(
        remotecall_fetch(rings_after_call, a1, (b1,)).unwrap(),
        Some(false)
    );
    assert_eq!(cohort::__private::link_uses_rings(a1), Some(false));
    // A RemoteChannel stored on host a, filled from host b, read by the master.
    let ch = RemoteChannel::<String>::new(4, a1).unwrap();
    remotecall_fetch(put_into, b1, (ch.clone(), "hello".to_string())).unwrap();
    let got = ch.take().unwrap();
    assert_eq!(got, format!("hello from {b1} on {}", name_of('b')));
}

fn shared_arrays_stay_on_one_host() {
    let a = pids_on('a');
    let b = pids_on('b');
    // The master cannot share an array with workers on other hosts.
    let e = SharedArray::<u64, Ix1>::new(4, Some(&[a[0]])).unwrap_err();
    println!("  master with [{}]: {e}", a[0]);
    assert!(e.to_string().contains("another host"), "{e}");
    // Workers of one host can; a pid of another host is refused with a clear error.
    assert_eq!(
        remotecall_fetch(shm_here, a[0], (vec![a[0], a[1]],)).unwrap(),
        2
    );
    let e = remotecall_fetch(shm_here, a[0], (vec![a[0], b[0]],)).unwrap_err();
    println!("  worker {} with [{}, {}]: {e}", a[0], a[0], b[0]);
    assert!(e.to_string().contains("another host"), "{e}");
    // A handle of the master's array sent to another host is refused on arrival.
    let s = SharedArray::<u64, Ix1>::new(4, None).unwrap();
    let e = remotecall_fetch(shm_read, b[0], (s.clone(),)).unwrap_err();
    println!("  handle sent to {}: {e}", b[0]);
    let msg = e.to_string();
    assert!(msg.contains("host") || msg.contains("not one of"), "{msg}");
}

fn tunnel_workers() {
    let rec = Arc::new(Recording {
        inner: SshManager::new(vec![machine('c', 2)], opts().tunnel(true)),
        configs: Mutex::new(Vec::new()),
    });
    let params = rec.inner.default_addprocs_params();
    let pids = cohort::addprocs_with(rec.clone(), params).unwrap();
    assert_eq!(pids.len(), 2);
    for (pid, address, connect_at) in rec.configs.lock().unwrap().iter() {
        let at = connect_at.as_deref().unwrap();
        println!(
            "  worker {pid} at {} reached through {at}",
            address.as_deref().unwrap()
        );
        assert!(at.starts_with("127.0.0.1:"), "{at}");
        assert!(address.as_deref().unwrap().starts_with(&ip_of('c')));
    }
    for &p in &pids {
        assert_eq!(remotecall_fetch(hostname, p, ()).unwrap(), name_of('c'));
        assert_eq!(
            remotecall_fetch(add, p, (p as i64, 1)).unwrap(),
            p as i64 + 1
        );
    }
    // Worker-to-worker links stay direct: c calls a, a calls c.
    let a1 = pids_on('a')[0];
    assert_eq!(
        remotecall_fetch(host_of, pids[0], (a1,)).unwrap(),
        name_of('a')
    );
    assert_eq!(
        remotecall_fetch(host_of, a1, (pids[1],)).unwrap(),
        name_of('c')
    );
    let s: u64 = pmap(square, 1..=6u64).unwrap().iter().map(|x| x.0).sum();
    assert_eq!(s, 91);
    rmprocs(&pids, Duration::from_secs(15)).unwrap();
    assert!(
        ssh_env::eventually(Duration::from_secs(10), || rec.inner.ssh_processes() == 0),
        "ssh processes left: {}",
        rec.inner.ssh_processes()
    );
}

fn multiplexed_tunnel_workers() {
    let m = Arc::new(SshManager::new(
        vec![machine('c', 3)],
        opts().tunnel(true).multiplex(true).max_parallel(2),
    ));
    let params = m.default_addprocs_params();
    let pids = cohort::addprocs_with(m.clone(), params).unwrap();
    assert_eq!(pids.len(), 3);
    // One shared connection, one session per worker; no tunnel process of its own.
    println!("  ssh processes with multiplex: {}", m.ssh_processes());
    assert_eq!(m.ssh_processes(), 4);
    for &p in &pids {
        assert_eq!(remotecall_fetch(hostname, p, ()).unwrap(), name_of('c'));
    }
    rmprocs(&pids, Duration::from_secs(15)).unwrap();
    assert!(
        ssh_env::eventually(Duration::from_secs(15), || m.ssh_processes() == 0),
        "ssh processes left: {}",
        m.ssh_processes()
    );
}

fn launch_errors_name_the_host() {
    let before = workers();
    // A host that does not answer.
    let bad = format!("{}@{}", ssh_env::user(), info().unreachable);
    let t0 = Instant::now();
    let e = cohort::addprocs_machines(
        [bad.as_str()],
        opts().worker_timeout(Duration::from_secs(4)),
    )
    .unwrap_err();
    println!("  unreachable ({:.1}s): {e}", t0.elapsed().as_secs_f64());
    assert!(e.to_string().contains(&info().unreachable), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(12));
    // A wrong exename.
    let e = cohort::addprocs_machines(
        [machine('a', 1)],
        opts().exename("/nonexistent/cohort-worker"),
    )
    .unwrap_err();
    println!("  wrong exename: {e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&ip_of('a')) && msg.contains("/nonexistent/cohort-worker"),
        "{msg}"
    );
    // A worker that never reports its address.
    let t0 = Instant::now();
    let e = cohort::addprocs_machines(
        [machine('b', 1)],
        opts()
            .env(SILENT, "1")
            .worker_timeout(Duration::from_secs(3)),
    )
    .unwrap_err();
    println!("  silent worker ({:.1}s): {e}", t0.elapsed().as_secs_f64());
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert!(e.to_string().contains(&ip_of('b')), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(8));
    assert_eq!(workers(), before);
    // One good host and one bad: the error names the bad one, the good workers are usable.
    let e = cohort::addprocs_machines(
        [machine('a', 1), Machine::parse(&bad).unwrap()],
        opts().worker_timeout(Duration::from_secs(4)),
    )
    .unwrap_err();
    println!("  mixed: {e}");
    assert!(e.to_string().contains(&info().unreachable), "{e}");
    let new: Vec<usize> = workers()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(
        remotecall_fetch(hostname, new[0], ()).unwrap(),
        name_of('a')
    );
    rmprocs(&new, Duration::from_secs(15)).unwrap();
}

/// Runs examples/cluster_tour.rs (built by `cargo test`) on hosts a and c.
fn cluster_tour_example() {
    let Some(tour) = ssh_env::example("cluster_tour") else {
        println!(
            "  skipped: examples/cluster_tour is not built (`cargo build --examples` builds it)"
        );
        return;
    };
    let dir = ssh_env::private_dir("cohort-netns-tour").unwrap();
    let hosts = dir.join("hosts");
    let u = ssh_env::user();
    std::fs::write(
        &hosts,
        format!("2*{u}@{}\n{u}@{}\n", ip_of('a'), ip_of('c')),
    )
    .unwrap();
    for tunnel in [false, true] {
        let mut c = std::process::Command::new(&tour);
        c.arg(&hosts);
        if tunnel {
            c.arg("--tunnel");
        }
        let out = c
            .env("COHORT_SSHFLAGS", info().flags.join(" "))
            .env_remove("COHORT_PROCS")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for l in text.lines() {
            println!("  | {l}");
        }
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("procs() = [1, 2, 3, 4]"), "{text}");
        assert!(text.contains(&format!("host {}", name_of('a'))), "{text}");
        assert!(text.contains(&format!("host {}", name_of('c'))), "{text}");
        assert!(
            text.contains("pmap(collatz, 1..=24) = [0, 1, 7, 2,"),
            "{text}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A batch job on the three Slurm nodes: `cluster_tour` with a worker per task, two per host.
fn slurm_job_spans_hosts() {
    if let Some(why) = &info().no_slurm {
        println!("  skipped: {why}");
        return;
    }
    let Some(tour) = ssh_env::example("cluster_tour") else {
        println!("  skipped: examples/cluster_tour is not built");
        return;
    };
    let job = slurm_env::submit(
        &["-N", "3", "--ntasks-per-node", "2"],
        &tour.display().to_string(),
        &[],
    );
    let t = job.wait(Duration::from_secs(90));
    assert_eq!(slurm_env::exit_of(&t), Some(0), "{t}");
    assert!(
        t.contains("started 6 workers from the Slurm allocation"),
        "{t}"
    );
    assert!(t.contains("procs() = [1, 2, 3, 4, 5, 6, 7]"), "{t}");
    // The batch script, and so the master, runs on the first node.
    assert!(
        t.contains(&format!("master: pid 1 on {}", name_of('a'))),
        "{t}"
    );
    for k in ['a', 'b', 'c'] {
        let n = t
            .lines()
            .filter(|l| l.starts_with("worker ") && l.contains(&format!("host {},", name_of(k))))
            .count();
        assert_eq!(n, 2, "two workers on {}: {t}", name_of(k));
    }
    assert!(
        t.contains("pmap(collatz, 1..=24) = [0, 1, 7, 2, 5, 8, 16, 3, 19, 6, 14, 9,"),
        "{t}"
    );
    let connected = job.when("started 6 workers").unwrap();
    println!(
        "  sbatch to 6 workers on 3 nodes connected: {:.2} s",
        connected - job.submitted
    );
}

/// A node of a running job fails (its link is cut: no connection reset ever arrives): srun
/// reports the node failure, the manager closes that node's links, and the master (in a job
/// submitted with `--no-kill`, which outlives a node) sees `ProcessExited` and goes on.
fn slurm_node_failure_is_process_exited() {
    if let Some(why) = &info().no_slurm {
        println!("  skipped: {why}");
        return;
    }
    let me = std::env::current_exe().unwrap().display().to_string();
    let job = slurm_env::submit(
        &["-N", "3", "--ntasks-per-node", "1", "--no-kill"],
        &me,
        &[(ROLE, "node_failure")],
    );
    let ready = ssh_env::eventually(Duration::from_secs(30), || {
        job.when("node_failure: ready").is_some()
    });
    if !ready {
        slurm_env::scancel(&job.id);
        panic!("job {} never got ready:\n{}", job.id, job.text());
    }
    (info().cut)('c').unwrap();
    let t0 = Instant::now();
    let t = job.wait(Duration::from_secs(90));
    println!(
        "  job over {:.1} s after the cut",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(slurm_env::exit_of(&t), Some(0), "{t}");
    assert!(t.contains("node_failure: Err(ProcessExited("), "{t}");
    assert!(
        t.contains("node_failure: the workers on cohort-host-a and cohort-host-b answer"),
        "{t}"
    );
}

/// The master of the node-failure job: a worker per node, a call pending on host c's.
fn role_node_failure() {
    let _c = cohort::init().unwrap();
    let pids = cohort::addprocs_slurm(cohort::SlurmOptions::new()).unwrap();
    let hosts: Vec<(usize, String)> = pids
        .iter()
        .map(|&p| (p, remotecall_fetch(hostname, p, ()).unwrap()))
        .collect();
    let victim = hosts
        .iter()
        .find(|h| h.1 == "cohort-host-c")
        .expect("a worker on host c")
        .0;
    let pending = remotecall(sleep_then, victim, (300.0,)).unwrap();
    println!("node_failure: ready, worker {victim} on cohort-host-c");
    let t0 = Instant::now();
    let r = pending.fetch();
    println!(
        "node_failure: {r:?} after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut answered = Vec::new();
    for (p, h) in &hosts {
        if *p != victim {
            assert_eq!(remotecall_fetch(add, *p, (1, 2)).unwrap(), 3);
            answered.push(h.clone());
        }
    }
    answered.sort();
    println!(
        "node_failure: the workers on {} answer",
        answered.join(" and ")
    );
}

fn cut_link_reports_process_exited() {
    let b1 = pids_on('b')[0];
    let a = pids_on('a');
    let pending = remotecall(sleep_then, b1, (120.0,)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    (info().cut)('b').unwrap();
    let t0 = Instant::now();
    let r = pending.fetch();
    println!(
        "  after cutting host b's link ({:.1}s): {r:?}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        matches!(r, Err(Error::ProcessExited(p)) if p == b1),
        "{r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert!(!workers().contains(&b1));
    assert!(matches!(
        remotecall_fetch(add, b1, (1, 1)),
        Err(Error::ProcessExited(_))
    ));
    // The others go on, including calls between them.
    assert_eq!(remotecall_fetch(add, a[0], (2, 2)).unwrap(), 4);
    assert_eq!(
        remotecall_fetch(host_of, a[1], (a[0],)).unwrap(),
        name_of('a')
    );
    let s: u64 = pmap(square, 1..=4u64).unwrap().iter().map(|x| x.0).sum();
    assert_eq!(s, 30);
    rmprocs(&a, Duration::from_secs(15)).unwrap();
}

fn main() {
    if std::env::var_os(SILENT).is_some() && std::env::var_os("COHORT_WORKER").is_some() {
        // A worker that hangs before reporting its address; it gives up after a while.
        std::thread::sleep(Duration::from_secs(8));
        return;
    }
    if std::env::var_os("COHORT_WORKER").is_none()
        && std::env::var(ROLE).as_deref() == Ok("node_failure")
    {
        role_node_failure();
        return;
    }
    let cluster = cohort::init().expect("cohort::init");
    if std::env::args().any(|a| a == "--list") {
        ssh_env::run(cluster, &[], Duration::from_secs(1));
        return;
    }
    let net = match Net::create() {
        Ok(n) => n,
        Err(SetupError::Skip(why)) => {
            println!("netns suite skipped: {why}");
            return;
        }
        Err(SetupError::Fail(e)) => {
            println!("netns suite: setting up the network failed: {e}");
            std::process::exit(101);
        }
    };
    let net = Mutex::new(net);
    ssh_env::on_teardown(move || net.lock().unwrap_or_else(|e| e.into_inner()).teardown());
    ssh_env::run(
        cluster,
        &[
            ("direct_workers_across_hosts", direct_workers_across_hosts),
            (
                "shared_arrays_stay_on_one_host",
                shared_arrays_stay_on_one_host,
            ),
            ("tunnel_workers", tunnel_workers),
            ("multiplexed_tunnel_workers", multiplexed_tunnel_workers),
            ("launch_errors_name_the_host", launch_errors_name_the_host),
            ("cluster_tour_example", cluster_tour_example),
            ("slurm_job_spans_hosts", slurm_job_spans_hosts),
            (
                "slurm_node_failure_is_process_exited",
                slurm_node_failure_is_process_exited,
            ),
            (
                "cut_link_reports_process_exited",
                cut_link_reports_process_exited,
            ),
        ],
        Duration::from_secs(90),
    );
}
