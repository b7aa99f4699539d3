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

/// Every thread's CPUs in this process, and those of a thread started now.
#[cohort::remote]
fn thread_cpus() -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = e.unwrap().path().join("status");
        // A thread that ended meanwhile has no status file any more.
        if p.exists() {
            all.push(allowed(p.to_str().unwrap()));
        }
    }
    let fresh = std::thread::spawn(|| allowed("/proc/thread-self/status"))
        .join()
        .unwrap();
    (all, fresh)
}

/// Asserts that every thread of `pid`, and one it starts, runs on exactly `cpus`.
fn assert_on(pid: Pid, cpus: &[usize]) {
    let (threads, fresh) = remotecall_fetch(thread_cpus, pid, ()).unwrap();
    assert!(
        threads.len() >= 2,
        "pid {pid} has {} threads",
        threads.len()
    );
    for t in &threads {
        assert_eq!(t, cpus, "a thread of pid {pid}");
    }
    assert_eq!(
        fresh, cpus,
        "a thread pid {pid} started after it was placed"
    );
}

/// The master's CPUs: the first two it was given (or its one), set before `init`.
fn master_cpus() -> Vec<usize> {
    allowed("/proc/self/status")
}

fn one_worker_gets_all_the_cpus() {
    assert_eq!(addprocs(1).unwrap(), vec![2]);
    assert_on(2, &master_cpus());
}

fn two_workers_split_the_cpus() {
    assert_eq!(addprocs(1).unwrap(), vec![3]);
    let cpus = master_cpus();
    if cpus.len() >= 2 {
        assert_on(2, &cpus[..1]);
        assert_on(3, &cpus[1..2]);
    } else {
        assert_on(2, &cpus);
        assert_on(3, &cpus);
    }
    // The master itself stays where it was.
    assert_eq!(cohort::placement::allowed_cpus(), cpus);
    assert_eq!(remotecall_fetch(add_one, 3, (41,)).unwrap(), 42);
}

fn more_workers_than_cpus_share_them_all() {
    let cpus = master_cpus();
    let more = cpus.len() + 1 - nworkers();
    let added = addprocs(more).unwrap();
    assert_eq!(added.len(), more);
    for p in workers() {
        assert_on(p, &cpus);
    }
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
        assert_on(p, &master_cpus());
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
