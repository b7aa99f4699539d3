//! Where the master places the workers of its host (`COHORT_CPU_BIND`): each in its own block
//! of the master's CPUs while there are enough, all of them otherwise, or left alone with
//! `none`. Runs with `harness = false` (see tests/common).

mod common;

use cohort::prelude::*;
use std::time::Duration;

/// Set in the child run that checks `COHORT_CPU_BIND=none`.
const UNBOUND: &str = "PLACEMENT_TEST_UNBOUND";

/// A `Cpus_allowed_list` (`0-2,5`) as CPU numbers.
fn parse_list(s: &str) -> Vec<usize> {
    s.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap(),
            None => {
                let c = p.parse::<usize>().unwrap();
                c..=c
            }
        })
        .collect()
}

/// The CPUs a thread may use, as the kernel reports them in its status file.
fn allowed(status: &str) -> Vec<usize> {
    let text = std::fs::read_to_string(status).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("a Cpus_allowed_list line");
    parse_list(line)
}

/// The kernel's scheduling policy of a thread (field 41 of its `stat` file: 0 normal, 3
/// batch), or `None` once the thread has ended.
fn policy(task: &std::path::Path) -> Option<u32> {
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // The fields after the command's closing parenthesis start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(41 - 3)?.parse().ok()
}

const SCHED_NORMAL: u32 = 0;
const SCHED_BATCH: u32 = 3;
const SCHED_IDLE: u32 = 5;

/// The thread a worker put in the idle class itself (0: none), left out of [`thread_places`].
static IDLE_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Starts a thread that puts itself in the kernel's idle class and then sleeps until the
/// worker ends; returns its thread id.
#[cohort::remote]
fn start_idle_thread() -> i32 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is valid for the call; 0 names the calling thread.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        tx.send(nix::unistd::gettid().as_raw()).unwrap();
        loop {
            std::thread::park();
        }
    });
    let tid = rx.recv().unwrap();
    IDLE_TID.store(tid, std::sync::atomic::Ordering::SeqCst);
    tid
}

/// The scheduling policy of thread `tid` of this process.
#[cohort::remote]
fn policy_of(tid: i32) -> u32 {
    policy(&std::path::Path::new("/proc/self/task").join(tid.to_string())).unwrap()
}

/// A thread's CPUs and scheduling policy.
type Place = (Vec<usize>, u32);

/// Every thread's CPUs and scheduling policy in this process, and those of a thread started
/// now.
#[cohort::remote]
fn thread_places() -> (Vec<Place>, Place) {
    let mut all = Vec::new();
    let idle = IDLE_TID
        .load(std::sync::atomic::Ordering::SeqCst)
        .to_string();
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = e.unwrap().path();
        if task.file_name().and_then(|n| n.to_str()) == Some(idle.as_str()) {
            continue;
        }
        let p = task.join("status");
        // A thread that ended meanwhile has no status file any more.
        if let (true, Some(pol)) = (p.exists(), policy(&task)) {
            all.push((allowed(p.to_str().unwrap()), pol));
        }
    }
    let fresh = std::thread::spawn(|| {
        let me = std::path::Path::new("/proc/thread-self");
        (allowed("/proc/thread-self/status"), policy(me).unwrap())
    })
    .join()
    .unwrap();
    (all, fresh)
}

/// Asserts that every thread of `pid`, and one it starts, runs on exactly `cpus`, in the batch
/// scheduling class when the host is `crowded`, else in the normal one.
fn assert_on(pid: Pid, cpus: &[usize], crowded: bool) {
    let (threads, fresh) = remotecall_fetch(thread_places, pid, ()).unwrap();
    assert!(
        threads.len() >= 2,
        "pid {pid} has {} threads",
        threads.len()
    );
    let class = if crowded { SCHED_BATCH } else { SCHED_NORMAL };
    for t in &threads {
        assert_eq!(*t, (cpus.to_vec(), class), "a thread of pid {pid}");
    }
    assert_eq!(
        fresh,
        (cpus.to_vec(), class),
        "a thread pid {pid} started after it was placed"
    );
}

/// Whether the master's host runs more of the cluster's processes (itself and its workers)
/// than the master has CPUs.
fn crowded() -> bool {
    nworkers() + 1 > master_cpus().len()
}

/// The master's CPUs: the first two it was given (or its one), set before `init`.
fn master_cpus() -> Vec<usize> {
    allowed("/proc/self/status")
}

fn one_worker_gets_all_the_cpus() {
    assert_eq!(addprocs(1).unwrap(), vec![2]);
    assert_on(2, &master_cpus(), crowded());
}

fn two_workers_split_the_cpus() {
    assert_eq!(addprocs(1).unwrap(), vec![3]);
    let cpus = master_cpus();
    if cpus.len() >= 2 {
        assert_on(2, &cpus[..1], crowded());
        assert_on(3, &cpus[1..2], crowded());
    } else {
        assert_on(2, &cpus, crowded());
        assert_on(3, &cpus, crowded());
    }
    // The master itself stays where it was.
    assert_eq!(cohort::placement::allowed_cpus(), cpus);
    assert_eq!(remotecall_fetch(add_one, 3, (41,)).unwrap(), 42);
}

/// Also: a thread that a worker put in another scheduling class itself keeps it when the
/// master places the workers again (only normal and batch threads are moved).
fn more_workers_than_cpus_share_them_all() {
    let cpus = master_cpus();
    let idle = remotecall_fetch(start_idle_thread, 2, ()).unwrap();
    assert_eq!(remotecall_fetch(policy_of, 2, (idle,)).unwrap(), SCHED_IDLE);
    let more = cpus.len() + 1 - nworkers();
    let added = addprocs(more).unwrap();
    assert_eq!(added.len(), more);
    assert!(crowded());
    for p in workers() {
        assert_on(p, &cpus, true);
    }
    assert_eq!(remotecall_fetch(policy_of, 2, (idle,)).unwrap(), SCHED_IDLE);
    rmprocs(&added, Duration::from_secs(10)).unwrap();
}

#[cohort::remote]
fn add_one(x: i64) -> i64 {
    x + 1
}

fn none_leaves_workers_unbound() {
    assert_eq!(std::env::var("COHORT_CPU_BIND").as_deref(), Ok("none"));
    assert!(!cohort::placement::binds_workers());
    assert_eq!(addprocs(2).unwrap(), vec![2, 3]);
    for p in [2, 3] {
        assert_on(p, &master_cpus(), crowded());
    }
}

fn main() {
    // The master runs on at most two CPUs, so that the division is known whatever the machine.
    let mine = cohort::placement::allowed_cpus();
    let two = &mine[..mine.len().min(2)];
    cohort::placement::bind_thread(two).unwrap();
    assert_eq!(master_cpus(), two);
    let cluster = cohort::init().unwrap();
    if std::env::var_os(UNBOUND).is_some() {
        common::run(
            cluster,
            &[("none_leaves_workers_unbound", none_leaves_workers_unbound)],
            Duration::from_secs(60),
            Vec::new(),
        );
        return;
    }
    let unbound = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env(UNBOUND, "1")
        .env("COHORT_CPU_BIND", "none")
        .spawn()
        .unwrap();
    common::run(
        cluster,
        &[
            ("one_worker_gets_all_the_cpus", one_worker_gets_all_the_cpus),
            ("two_workers_split_the_cpus", two_workers_split_the_cpus),
            (
                "more_workers_than_cpus_share_them_all",
                more_workers_than_cpus_share_them_all,
            ),
        ],
        Duration::from_secs(60),
        vec![unbound],
    );
}
