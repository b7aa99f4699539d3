//! A worker under hostile peers: connections that never send a hello, descriptor exhaustion,
//! a frame header announcing gigabytes, a huge frame on one link. Each case shows the worker's
//! cost (threads, CPU, memory from `/proc`) stays bounded and the cluster keeps answering.
//! Runs with `harness = false` (see tests/common).

mod common;

use cohort::prelude::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const COOKIE: &str = "hardening-cookie";

#[cohort::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cohort::remote]
fn ospid() -> u32 {
    std::process::id()
}

#[cohort::remote]
fn call_add_on(pid: usize) -> i64 {
    remotecall_fetch(add, pid, (20, 22)).expect("worker-to-worker call")
}

fn os_pid(pid: usize) -> u32 {
    remotecall_fetch(ospid, pid, ()).unwrap()
}

fn threads(os: u32) -> usize {
    std::fs::read_dir(format!("/proc/{os}/task"))
        .unwrap()
        .count()
}

fn fds(os: u32) -> usize {
    std::fs::read_dir(format!("/proc/{os}/fd")).unwrap().count()
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(os: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{os}/stat")).unwrap();
    let after = s.rsplit(')').next().unwrap();
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime); `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_per_s() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

/// A field of /proc/PID/status in KiB (VmSize, VmRSS).
fn status_kib(os: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{os}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn address(pid: usize) -> String {
    cohort::__private::peer_address(pid).expect("the worker's address")
}

/// Connections to `addr` that send nothing.
fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect()
}

fn raise_own_fd_limit() {
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

fn idle_connections_cost_no_thread() {
    let os = os_pid(2);
    let (t0, f0) = (threads(os), fds(os));
    let idle = idle_connections(&address(2), 1000);
    std::thread::sleep(Duration::from_millis(500));
    let (t1, f1) = (threads(os), fds(os));
    println!("worker 2: threads {t0} -> {t1}, descriptors {f0} -> {f1} with 1000 idle connections");
    assert!(t1 <= t0 + 2, "threads grew from {t0} to {t1}");
    assert!(f1 <= f0 + 260, "descriptors grew from {f0} to {f1}");
    // Peers with the cookie still get in: a new worker-to-worker link to pid 2.
    let t = Instant::now();
    assert_eq!(remotecall_fetch(call_add_on, 3, (2,)).unwrap(), 42);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(remotecall_fetch(add, 2, (1, 2)).unwrap(), 3);
    drop(idle);
}

fn descriptor_exhaustion_does_not_spin() {
    let os = os_pid(4);
    // Few descriptors left to worker 4: the idle connections below exhaust them.
    let lim = libc::rlimit {
        rlim_cur: 40,
        rlim_max: 40,
    };
    // SAFETY: prlimit with a valid limit for a child process of this test; no old value read.
    let r = unsafe {
        libc::prlimit(
            os as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(r, 0, "prlimit: {}", std::io::Error::last_os_error());
    let idle = idle_connections(&address(4), 600);
    std::thread::sleep(Duration::from_millis(300));
    let c0 = cpu_ticks(os);
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu_ticks(os) - c0) as f64 / ticks_per_s() as f64;
    println!("worker 4 at 40 descriptors with 600 idle connections: {used:.2} s of CPU in 2 s");
    assert!(used < 0.1, "the worker spun: {used:.2} s of CPU in 2 s");
    // The cluster still reaches it, and it still reaches others.
    assert_eq!(remotecall_fetch(add, 4, (2, 2)).unwrap(), 4);
    let t = Instant::now();
    assert_eq!(remotecall_fetch(call_add_on, 3, (4,)).unwrap(), 42);
    println!("a new link to worker 4 took {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(idle);
}

fn a_header_announcing_gigabytes_allocates_nothing() {
    let os = os_pid(2);
    let before = status_kib(os, "VmSize:");
    let mut s =
        cohort::__private::raw_handshake(&address(2), COOKIE, cohort::__private::PROTOCOL_VERSION)
            .unwrap();
    let h = cohort_core::frame::Header {
        id: 0,
        meta_len: 0,
        len: 3 << 30,
    };
    s.write_all(&h.encode()).unwrap();
    s.write_all(&[0u8; 4096]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = status_kib(os, "VmSize:");
    println!("worker 2 VmSize {before} KiB -> {after} KiB after a 3 GiB header");
    assert!(after <= before + 80 * 1024, "{before} KiB -> {after} KiB");
    assert_eq!(remotecall_fetch(add, 2, (5, 5)).unwrap(), 10);
    drop(s);
}

fn a_huge_frame_does_not_stall_other_links() {
    let addr = address(3);
    let sender = std::thread::spawn(move || {
        let mut s =
            cohort::__private::raw_handshake(&addr, COOKIE, cohort::__private::PROTOCOL_VERSION)
                .unwrap();
        let len: u64 = 256 << 20;
        let h = cohort_core::frame::Header {
            id: 0,
            meta_len: 0,
            len,
        };
        s.write_all(&h.encode()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let t = Instant::now();
        for _ in 0..256 {
            s.write_all(&chunk).unwrap();
        }
        t.elapsed()
    });
    // Calls on the same worker while the frame arrives.
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while !sender.is_finished() {
        let t = Instant::now();
        assert_eq!(remotecall_fetch(add, 3, (n, 1)).unwrap(), n + 1);
        worst = worst.max(t.elapsed());
        n += 1;
    }
    let took = sender.join().unwrap();
    println!("256 MiB sent in {took:?}; {n} calls meanwhile, the slowest {worst:?}");
    assert!(n > 0);
    assert!(
        worst < Duration::from_millis(400),
        "a call waited {worst:?}"
    );
}

fn main() {
    let cluster = cohort::init().unwrap();
    cohort::set_cluster_cookie(COOKIE).unwrap();
    raise_own_fd_limit();
    assert_eq!(addprocs(3).unwrap(), vec![2, 3, 4]);
    common::run(
        cluster,
        &[
            (
                "idle_connections_cost_no_thread",
                idle_connections_cost_no_thread,
            ),
            (
                "descriptor_exhaustion_does_not_spin",
                descriptor_exhaustion_does_not_spin,
            ),
            (
                "a_header_announcing_gigabytes_allocates_nothing",
                a_header_announcing_gigabytes_allocates_nothing,
            ),
            (
                "a_huge_frame_does_not_stall_other_links",
                a_huge_frame_does_not_stall_other_links,
            ),
            (
                "hostile_clients_change_no_answer",
                hostile_clients_change_no_answer,
            ),
        ],
        Duration::from_secs(60),
        Vec::new(),
    );
}

/// A frame as a peer would send it: header, message bytes, body.
fn frame(id: u64, meta: &[u8], body: &[u8]) -> Vec<u8> {
    let h = cohort_core::frame::Header {
        id,
        meta_len: meta.len() as u32,
        len: (meta.len() + body.len()) as u64,
    };
    let mut v = h.encode().to_vec();
    v.extend_from_slice(meta);
    v.extend_from_slice(body);
    v
}

/// One attempt of an attacker: the listener's address and the attempt's number.
type Attack = fn(&str, u64);

/// Every kind of hostile client at once against worker 2, while the master checks answers.
fn hostile_clients_change_no_answer() {
    let os = os_pid(2);
    let (t0, f0) = (threads(os), fds(os));
    let addr = address(2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    let kinds: [(&str, Attack); 6] = [
        ("garbage", |addr, i| {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let junk: Vec<u8> = (0..600u64).map(|k| (k * 31 + i) as u8).collect();
                let _ = s.write_all(&junk);
            }
        }),
        ("huge length before the hello", |addr, _| {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.write_all(&u64::MAX.to_le_bytes().repeat(20));
            }
        }),
        ("slowloris", |addr, _| {
            if let Ok(mut s) = TcpStream::connect(addr) {
                for b in b"cohort" {
                    let _ = s.write_all(&[*b]);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }),
        ("wrong cookie, wrong version", |addr, i| {
            let v = if i % 2 == 0 {
                99
            } else {
                cohort::__private::PROTOCOL_VERSION
            };
            let _ = cohort::__private::raw_handshake(addr, "wrong-cookie", v);
        }),
        ("forged replies", |addr, i| {
            // Authenticated as pid 1: replies to request ids it never received.
            if let Ok(mut s) =
                cohort::__private::raw_handshake(addr, COOKIE, cohort::__private::PROTOCOL_VERSION)
            {
                // Request ids count up from 1 in each process: guess the ones in use.
                let reply_ok = cohort::__private::reply_message(true);
                for id in 1..=500 {
                    let id = (i % 20) * 500 + id;
                    let _ = s.write_all(&frame(id, &reply_ok, &7i64.to_le_bytes()));
                }
            }
        }),
        ("duplicate pid", |addr, _| {
            // Worker 2 already has links with the master; a process claiming pid 1 gets at
            // most one more, then is refused.
            let held: Vec<_> = (0..5)
                .filter_map(|_| {
                    cohort::__private::raw_handshake(
                        addr,
                        COOKIE,
                        cohort::__private::PROTOCOL_VERSION,
                    )
                    .ok()
                })
                .collect();
            assert!(
                held.len() <= 1,
                "{} links claiming pid 1 accepted",
                held.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }),
    ];
    for (name, attack) in kinds {
        let (addr, stop) = (addr.clone(), stop.clone());
        attackers.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                attack(&addr, i);
                i += 1;
            }
            (name, i)
        }));
    }
    let end = Instant::now() + Duration::from_secs(4);
    let (mut calls, mut peak_threads, mut peak_fds) = (0i64, 0, 0);
    while Instant::now() < end {
        assert_eq!(remotecall_fetch(add, 2, (calls, 1)).unwrap(), calls + 1);
        assert_eq!(remotecall_fetch(call_add_on, 3, (2,)).unwrap(), 42);
        // Worker 2's own requests (to worker 3) get worker 3's answers, not forged ones.
        assert_eq!(remotecall_fetch(call_add_on, 2, (3,)).unwrap(), 42);
        calls += 1;
        peak_threads = peak_threads.max(threads(os));
        peak_fds = peak_fds.max(fds(os));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attackers {
        let (name, n) = a.join().expect("an attacker thread");
        println!("  {name}: {n} attempts");
    }
    println!(
        "worker 2 under attack: {calls} correct round trips; threads {t0} -> peak {peak_threads}, \
         descriptors {f0} -> peak {peak_fds}"
    );
    assert!(peak_threads <= t0 + 8, "threads {t0} -> {peak_threads}");
    assert!(peak_fds <= f0 + 300, "descriptors {f0} -> {peak_fds}");
    assert!(calls > 10);
}
