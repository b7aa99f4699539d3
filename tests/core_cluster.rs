//! The core runtime against real worker processes: remote calls, futures, channels, reference
//! counting, errors, process control. Runs with `harness = false` (see tests/common).

mod common;

use cohort::prelude::*;
use cohort::{Error, RemoteException};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const COOKIE: &str = "core-test-cookie";

#[cohort::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cohort::remote]
fn whoami() -> usize {
    myid()
}

#[cohort::remote]
fn ospid() -> u32 {
    std::process::id()
}

#[cohort::remote]
fn boom(msg: String) -> i64 {
    panic!("{msg}")
}

#[cohort::remote]
fn fails(x: i64) -> Result<i64, String> {
    if x < 0 {
        Err(format!("negative input {x}"))
    } else {
        Ok(x * 2)
    }
}

#[cohort::remote]
fn sleep_ms(ms: u64) -> u64 {
    let _b = cohort::blocking();
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Spins until interrupted (polling, as long loops should).
#[cohort::remote]
fn spin_until_interrupted() -> cohort::Result<u64> {
    let mut n = 0u64;
    loop {
        cohort::check_interrupt()?;
        n = std::hint::black_box(n + 1);
    }
}

static LOG: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[cohort::remote]
fn record(i: u64) {
    LOG.lock().unwrap().push(i);
}

#[cohort::remote]
fn take_log() -> Vec<u64> {
    std::mem::take(&mut *LOG.lock().unwrap())
}

#[cohort::remote]
fn call_other(pid: usize, a: i64) -> cohort::Result<(usize, i64)> {
    Ok((myid(), remotecall_fetch(add, pid, (a, 1))?))
}

#[cohort::remote]
fn fetch_sum(f: Future<Vec<i64>>) -> cohort::Result<i64> {
    Ok(f.fetch()?.iter().sum())
}

#[cohort::remote]
fn make_vec(n: i64) -> Vec<i64> {
    (0..n).collect()
}

#[cohort::remote]
fn put_part_sum(part: Part, out: RemoteChannel<i64>) -> cohort::Result<()> {
    out.put(part.range().sum())
}

#[cohort::remote]
fn part_sum_plus(part: Part, extra: (Vec<i64>, String)) -> i64 {
    part.range().sum::<i64>() + extra.0.iter().sum::<i64>() + extra.1.len() as i64
}

#[cohort::remote]
fn chan_put_all(c: RemoteChannel<i64>, from: i64, n: i64) -> cohort::Result<()> {
    for i in from..from + n {
        c.put(i)?;
    }
    Ok(())
}

#[cohort::remote]
fn chan_take(c: RemoteChannel<i64>) -> cohort::Result<i64> {
    c.take()
}

/// A type whose serialization panics: it can only be passed where nothing is serialized.
#[derive(Debug, Clone)]
struct NoWire(i64);

impl Serialize for NoWire {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("NoWire must not be serialized")
    }
}
impl<'de> Deserialize<'de> for NoWire {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("NoWire must not be deserialized")
    }
}

#[cohort::remote]
fn unwrap_nowire(x: NoWire) -> i64 {
    x.0 + 1
}

#[cohort::remote]
fn rings_to(pid: usize) -> Option<bool> {
    cohort::__private::link_uses_rings(pid)
}

/// On one host the default transport's links carry frames in shared memory, the master's and
/// the workers' among themselves; TCP and Unix sockets keep them on the socket.
fn links_on_one_host_use_rings() {
    let shm = cohort::__private::transport_name() == Some("shm");
    assert_eq!(remotecall_fetch(call_other, 2, (3, 1)).unwrap(), (2, 2));
    assert_eq!(cohort::__private::link_uses_rings(2), Some(shm));
    assert_eq!(cohort::__private::link_uses_rings(4), Some(shm));
    assert_eq!(remotecall_fetch(rings_to, 2, (1,)).unwrap(), Some(shm));
    assert_eq!(remotecall_fetch(rings_to, 2, (3,)).unwrap(), Some(shm));
    // A large value crosses the rings (several times their size) intact.
    let v: Vec<i64> = (0..3_000_000).collect();
    let f = remotecall(echo_vec, 3, (v.clone(),)).unwrap();
    assert_eq!(f.fetch().unwrap(), v);
}

#[cohort::remote]
fn echo_vec(v: Vec<i64>) -> Vec<i64> {
    v
}

fn basics() {
    assert_eq!(workers(), vec![2, 3, 4]);
    assert_eq!(procs(), vec![1, 2, 3, 4]);
    assert_eq!((nprocs(), nworkers(), myid()), (4, 3, 1));
    assert_eq!(cohort::procs_on(2).unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(cohort::cluster_cookie().unwrap(), COOKIE);
    for p in [2, 3, 4] {
        assert_eq!(remotecall_fetch(whoami, p, ()).unwrap(), p);
        assert_eq!(remotecall_fetch(add, p, (40, 2)).unwrap(), 42);
    }
    let f = remotecall(add, 3, (1, 2)).unwrap();
    assert_eq!(f.owner(), 3);
    assert_eq!(f.fetch().unwrap(), 3);
    assert!(f.isready().unwrap());
    assert_eq!(f.fetch().unwrap(), 3, "second fetch comes from the cache");
    let w = remotecall_wait(add, 4, (5, 5)).unwrap();
    assert!(w.isready().unwrap());
    assert_eq!(w.fetch().unwrap(), 10);
    // spawnat(:any) goes round the workers.
    let owners: Vec<usize> = (0..6)
        .map(|_| spawnat(Target::Any, whoami, ()).unwrap())
        .map(|f| f.fetch().unwrap())
        .collect();
    let mut sorted = owners.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![2, 2, 3, 3, 4, 4], "round robin: {owners:?}");
    assert!([2, 3, 4].contains(&cohort::fetch_any(whoami, ()).unwrap()));
    assert_eq!(cohort::fetchfrom(2, add, (2, 2)).unwrap(), 4);
}

fn remote_errors() {
    let e = remotecall_fetch(boom, 2, ("kaboom".to_string(),)).unwrap_err();
    match &e {
        Error::Remote(RemoteException {
            pid,
            error,
            backtrace,
        }) => {
            assert_eq!(*pid, 2);
            assert_eq!(error, "panic: kaboom");
            assert!(
                backtrace.contains("boom"),
                "backtrace names the function: {backtrace}"
            );
        }
        other => panic!("expected RemoteException, got {other:?}"),
    }
    let e = remotecall_fetch(fails, 3, (-4,)).unwrap_err();
    assert_eq!(
        e.as_remote().map(|r| (r.pid, r.error.as_str())),
        Some((3, "negative input -4"))
    );
    assert_eq!(remotecall_fetch(fails, 3, (4,)).unwrap(), 8);
    // The same through a Future, and the error is cached like a value.
    let f = remotecall(boom, 4, ("later".to_string(),)).unwrap();
    for _ in 0..2 {
        assert_eq!(
            f.fetch().unwrap_err().as_remote().map(|r| r.error.clone()),
            Some("panic: later".into())
        );
    }
    // Unknown function (only a call by name can reach one: an unmarked function does not
    // compile, see tests/compile_fail): named, with the pid.
    let e = cohort::remotecall_fetch_by_name::<_, i64>("core_cluster::not_registered", 2, (1,))
        .unwrap_err();
    match e {
        Error::UnknownFunction { name, pid } => {
            assert_eq!(pid, 2);
            assert!(name.ends_with("not_registered"), "{name}");
        }
        other => panic!("expected UnknownFunction, got {other:?}"),
    }
    let name = std::any::type_name_of_val(&add);
    // Arguments that do not decode: an error to this caller, and the link stays usable.
    let e = cohort::remotecall_fetch_by_name::<_, i64>(
        name,
        2,
        ("not".to_string(), "numbers".to_string()),
    )
    .unwrap_err();
    match e {
        Error::Codec {
            action: "decode",
            what,
            pid: 2,
            ..
        } => assert!(what.contains("arguments of"), "{what}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(
        cohort::remotecall_fetch_by_name::<_, i64>(name, 2, (1i64, 2i64)).unwrap(),
        3
    );
    assert_eq!(
        cohort::remotecall_fetch_by_name::<_, i64>(name, 1, (1i64, 2i64)).unwrap(),
        3,
        "by name on this process"
    );
    // Every worker is still fine.
    for p in [2, 3, 4] {
        assert_eq!(remotecall_fetch(add, p, (p as i64, 0)).unwrap(), p as i64);
    }
}

fn ordering() {
    remotecall_fetch(take_log, 3, ()).unwrap();
    for i in 0..1000 {
        remote_do(record, 3, (i,)).unwrap();
    }
    assert_eq!(
        remotecall_fetch(take_log, 3, ()).unwrap(),
        (0..1000).collect::<Vec<u64>>()
    );
    let fs: Vec<_> = (0..200)
        .map(|i| remotecall(record, 3, (i,)).unwrap())
        .collect();
    for f in &fs {
        f.wait().unwrap();
    }
    assert_eq!(
        remotecall_fetch(take_log, 3, ()).unwrap(),
        (0..200).collect::<Vec<u64>>()
    );
}

fn worker_to_worker() {
    assert_eq!(remotecall_fetch(call_other, 2, (3, 10)).unwrap(), (2, 11));
    assert_eq!(remotecall_fetch(call_other, 4, (2, 20)).unwrap(), (4, 21));
    assert_eq!(
        remotecall_fetch(call_other, 3, (1, 30)).unwrap(),
        (3, 31),
        "a worker calls the master"
    );
    // A Future passed to another worker is fetched from its owner; passed to its owner, in place.
    let v = remotecall(make_vec, 2, (100,)).unwrap();
    assert_eq!(remotecall_fetch(fetch_sum, 3, (v.clone(),)).unwrap(), 4950);
    assert_eq!(remotecall_fetch(fetch_sum, 2, (v.clone(),)).unwrap(), 4950);
    assert_eq!(v.fetch().unwrap().len(), 100);
}

fn local_calls_do_not_serialize() {
    assert_eq!(
        remotecall_fetch(unwrap_nowire, 1, (NoWire(41),)).unwrap(),
        42
    );
    let f = remotecall(unwrap_nowire, myid(), (NoWire(1),)).unwrap();
    assert_eq!(f.fetch().unwrap(), 2);
    let c: RemoteChannel<i64> = RemoteChannel::new(2, 1).unwrap();
    c.put(5).unwrap();
    assert_eq!(c.take().unwrap(), 5);
}

fn futures() {
    let f: Future<i64> = Future::new(2).unwrap();
    assert!(!f.isready().unwrap());
    f.put(7).unwrap();
    assert!(matches!(f.put(8), Err(Error::AlreadySet)));
    assert_eq!(f.fetch().unwrap(), 7);
    let g: Future<String> = Future::new(1).unwrap();
    g.put("here".into()).unwrap();
    assert!(matches!(g.put("again".into()), Err(Error::AlreadySet)));
    assert_eq!(g.fetch().unwrap(), "here");
    // A Future whose value another worker fills in.
    let h: Future<i64> = Future::new(3).unwrap();
    let hh = h.clone();
    let t = std::thread::spawn(move || hh.fetch());
    std::thread::sleep(Duration::from_millis(50));
    h.put(99).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), 99);
}

fn fetch_all_pipelines() {
    let fs: Vec<_> = [2, 3, 4]
        .iter()
        .map(|&p| remotecall(add, p, (p as i64, 1)).unwrap())
        .collect();
    let got: Vec<i64> = cohort::fetch_all(&fs)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, vec![3, 4, 5]);
    assert_eq!(fs[1].fetch().unwrap(), 4, "fetched values are cached");
    // Each future keeps its own outcome; a local one is read in place.
    let mixed = vec![
        remotecall(fails, 2, (-1,)).unwrap(),
        remotecall(fails, 3, (2,)).unwrap(),
        remotecall(fails, 1, (5,)).unwrap(),
    ];
    let r = cohort::fetch_all(&mixed);
    assert_eq!(
        r[0].as_ref()
            .unwrap_err()
            .as_remote()
            .map(|e| e.error.as_str()),
        Some("negative input -1")
    );
    assert_eq!(r[1].as_ref().unwrap(), &4);
    assert_eq!(r[2].as_ref().unwrap(), &10);
}

fn channels() {
    // Capacity blocks, on a worker.
    let c: RemoteChannel<i64> = RemoteChannel::new(2, 2).unwrap();
    c.put(1).unwrap();
    c.put(2).unwrap();
    assert!(c.isready().unwrap());
    assert_eq!(c.fetch().unwrap(), 1, "fetch peeks");
    let c2 = c.clone();
    let t0 = Instant::now();
    let putter = std::thread::spawn(move || {
        c2.put(3).unwrap();
        t0.elapsed()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.take().unwrap(), 1);
    assert!(
        putter.join().unwrap() >= Duration::from_millis(190),
        "put waited for room"
    );
    assert_eq!((c.take().unwrap(), c.take().unwrap()), (2, 3));
    assert!(!c.isready().unwrap());
    // Close: drained takes fail, puts fail.
    c.put(4).unwrap();
    c.close().unwrap();
    assert!(matches!(c.put(5), Err(Error::ChannelClosed)));
    assert_eq!(c.take().unwrap(), 4);
    assert!(matches!(c.take(), Err(Error::ChannelClosed)));
    // Several processes see the same store; iteration ends at close.
    let d: RemoteChannel<i64> = RemoteChannel::new(4, 3).unwrap();
    let a = remotecall(chan_put_all, 2, (d.clone(), 0, 50)).unwrap();
    let b = remotecall(chan_put_all, 4, (d.clone(), 100, 50)).unwrap();
    let mut got: Vec<i64> = (0..100).map(|_| d.take().unwrap()).collect();
    a.fetch().unwrap();
    b.fetch().unwrap();
    d.put(-1).unwrap();
    d.close().unwrap();
    got.extend(d.iter().map(Result::unwrap));
    got.sort_unstable();
    let mut want: Vec<i64> = (0..50).chain(100..150).collect();
    want.insert(0, -1);
    assert_eq!(got, want);
    // Rendezvous: put returns only once a taker has the value.
    let r: RemoteChannel<i64> = RemoteChannel::new(0, 4).unwrap();
    let r2 = r.clone();
    let t0 = Instant::now();
    let putter = std::thread::spawn(move || {
        r2.put(11).unwrap();
        t0.elapsed()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!putter.is_finished(), "rendezvous put waits for a taker");
    assert_eq!(remotecall_fetch(chan_take, 2, (r.clone(),)).unwrap(), 11);
    assert!(putter.join().unwrap() >= Duration::from_millis(190));
}

#[cohort::remote]
fn role_here() -> (usize, bool) {
    (myid(), myrole() == Role::Worker)
}

#[cohort::remote]
fn chan_state(c: RemoteChannel<i64>) -> cohort::Result<(bool, bool)> {
    Ok((c.isopen()?, c.isempty()?))
}

fn channel_state() {
    // On a worker, read from the master and from another worker; then on the master itself.
    for owner in [2, 1] {
        let c: RemoteChannel<i64> = RemoteChannel::new(2, owner).unwrap();
        assert_eq!((c.isopen().unwrap(), c.isempty().unwrap()), (true, true));
        c.put(7).unwrap();
        assert!(!c.isempty().unwrap());
        assert_eq!(
            remotecall_fetch(chan_state, 3, (c.clone(),)).unwrap(),
            (true, false)
        );
        c.close().unwrap();
        // Closed, with a value left to take.
        assert_eq!((c.isopen().unwrap(), c.isempty().unwrap()), (false, false));
        assert_eq!(
            remotecall_fetch(chan_state, 3, (c.clone(),)).unwrap(),
            (false, false)
        );
        assert_eq!(c.take().unwrap(), 7);
        assert_eq!((c.isopen().unwrap(), c.isempty().unwrap()), (false, true));
    }
    // Capacity 0: empty until a put waits for a taker.
    let r: RemoteChannel<i64> = RemoteChannel::new(0, 4).unwrap();
    assert!(r.isempty().unwrap());
    let r2 = r.clone();
    let putter = std::thread::spawn(move || r2.put(5));
    assert!(common::eventually(Duration::from_secs(2), || !r
        .isempty()
        .unwrap()));
    assert_eq!(r.take().unwrap(), 5);
    putter.join().unwrap().unwrap();
    assert!(r.isempty().unwrap());
    // A finalized handle (and its clones, which share its hold) refuses; other channels work.
    let f: RemoteChannel<i64> = RemoteChannel::new(1, 2).unwrap();
    let kept = f.clone();
    let other: RemoteChannel<i64> = RemoteChannel::new(1, 2).unwrap();
    f.finalize();
    assert!(matches!(f.isopen(), Err(Error::Invalid(m)) if m.contains("finalized")));
    assert!(matches!(kept.isempty(), Err(Error::Invalid(_))));
    assert!(other.isopen().unwrap());
}

fn roles() {
    assert_eq!(myrole(), Role::Master);
    for w in workers() {
        assert_eq!(remotecall_fetch(role_here, w, ()).unwrap(), (w, true));
    }
    assert_eq!(remotecall_fetch(role_here, 1, ()).unwrap(), (1, false));
}

/// A loop's shared arguments reach every part whole, encoded once when they hold no
/// reference; a reference among them reaches every part with its own share of the weight:
/// each part uses it, and it is freed once all are dropped.
fn loop_args_shared_by_the_parts() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    let n = workers().len() as i64;
    let extra = ((1..=10).collect::<Vec<i64>>(), "four".to_string());
    let sums = sync_distributed_for(1..=100, part_sum_plus, extra).unwrap();
    assert_eq!(sums.len() as i64, n);
    assert_eq!(sums.iter().sum::<i64>(), 5050 + n * (55 + 4));
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    let out: RemoteChannel<i64> = RemoteChannel::new(64, 2).unwrap();
    for _ in 0..3 {
        sync_distributed_for(1..=100, put_part_sum, out.clone()).unwrap();
        let got: i64 = (0..n).map(|_| out.take().unwrap()).sum();
        assert_eq!(got, 5050);
    }
    assert_eq!(live(2), 1, "the channel lives while the master holds it");
    drop(out);
    assert!(
        common::eventually(Duration::from_secs(5), || live(2) == 0),
        "freed once every part's share came back: {}",
        live(2)
    );
}

fn ref_counting() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    assert!(
        common::eventually(Duration::from_secs(5), || live(2) == 0),
        "start clean: {}",
        live(2)
    );
    // Dropped unfetched: freed.
    let f = remotecall(make_vec, 2, (10,)).unwrap();
    f.wait().unwrap();
    assert_eq!(live(2), 1);
    drop(f);
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    // Fetch releases the remote store, even while the handle lives.
    let f = remotecall(make_vec, 2, (10,)).unwrap();
    assert_eq!(f.fetch().unwrap().len(), 10);
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    assert_eq!(f.fetch().unwrap().len(), 10, "cached");
    drop(f);
    // Copies on other processes keep it alive; the last drop anywhere frees it.
    let f = remotecall(make_vec, 2, (10,)).unwrap();
    f.wait().unwrap();
    let keeper: RemoteChannel<Future<Vec<i64>>> = RemoteChannel::new(1, 3).unwrap();
    keeper.put(f.clone()).unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(live(2), 1, "a copy stored on worker 3 keeps the value");
    let back = keeper.take().unwrap();
    assert_eq!(back.fetch().unwrap(), (0..10).collect::<Vec<i64>>());
    drop(back);
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    // finalize releases at once.
    let c: RemoteChannel<i64> = RemoteChannel::new(1, 4).unwrap();
    assert_eq!(live(4), 1);
    c.finalize();
    assert!(common::eventually(Duration::from_secs(5), || live(4) == 0));
    assert!(c.put(1).is_err(), "a finalized channel is unusable");
    drop(keeper);
    assert!(common::eventually(Duration::from_secs(5), || live(3) == 0));
}

fn interrupts() {
    let f = remotecall(spin_until_interrupted, 3, ()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    cohort::interrupt(&[3]).unwrap();
    assert!(matches!(f.fetch(), Err(Error::Interrupted(3))));
    // A call that does not poll: the caller is still answered, and the worker serves on.
    let t0 = Instant::now();
    let g = remotecall(sleep_ms, 3, (3000,)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    cohort::interrupt(&[3]).unwrap();
    assert!(matches!(g.fetch(), Err(Error::Interrupted(3))));
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(remotecall_fetch(add, 3, (1, 1)).unwrap(), 2);
    // Back to back: the worker's queue thread is still polling the link when the long call
    // arrives, and leaves the link disarmed while it runs; the interrupt still gets through
    // (the poller arms the link within a millisecond).
    for _ in 0..3 {
        assert_eq!(remotecall_fetch(add, 3, (1, 1)).unwrap(), 2);
        let t0 = Instant::now();
        let f = remotecall(spin_until_interrupted, 3, ()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        cohort::interrupt(&[3]).unwrap();
        assert!(matches!(f.fetch(), Err(Error::Interrupted(3))));
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
    assert_eq!(remotecall_fetch(add, 3, (2, 2)).unwrap(), 4);
}

fn kill_worker_fails_pending() {
    let new = addprocs(1).unwrap();
    let p = new[0];
    assert_eq!(p, 5, "pids are never reused");
    let os_pid = remotecall_fetch(ospid, p, ()).unwrap();
    let f = remotecall(sleep_ms, p, (60_000,)).unwrap();
    let c: RemoteChannel<i64> = RemoteChannel::new(1, p).unwrap();
    let c2 = c.clone();
    let taker = std::thread::spawn(move || c2.take());
    // A fan-out that includes the worker about to die: the others' results still arrive.
    let fan = vec![
        remotecall(sleep_ms, 2, (300,)).unwrap(),
        remotecall(sleep_ms, p, (60_000,)).unwrap(),
    ];
    let fanned = std::thread::spawn(move || cohort::fetch_all(&fan));
    std::thread::sleep(Duration::from_millis(100));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(os_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = Instant::now();
    let r = f.fetch();
    assert!(matches!(r, Err(Error::ProcessExited(q)) if q == p), "{r:?}");
    assert!(matches!(taker.join().unwrap(), Err(Error::ProcessExited(q)) if q == p));
    assert!(matches!(c.isopen(), Err(Error::ProcessExited(q)) if q == p));
    let fanned = fanned.join().unwrap();
    assert_eq!(fanned[0].as_ref().unwrap(), &300);
    assert!(
        matches!(fanned[1], Err(Error::ProcessExited(q)) if q == p),
        "{fanned:?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "pending calls fail within a second"
    );
    assert!(matches!(remotecall_fetch(add, p, (1, 1)), Err(Error::ProcessExited(q)) if q == p));
    assert!(common::eventually(Duration::from_secs(2), || workers() == vec![2, 3, 4]));
    for q in [2, 3, 4] {
        assert_eq!(remotecall_fetch(add, q, (1, 1)).unwrap(), 2);
    }
}

fn rmprocs_semantics() {
    let p = addprocs(2).unwrap();
    let (a, b) = (p[0], p[1]);
    assert!(a > 4 && b == a + 1, "new pids follow the old ones: {p:?}");
    let h = rmprocs(&[a], Duration::ZERO).unwrap();
    h.wait(Duration::from_secs(10)).unwrap();
    assert!(matches!(remotecall_fetch(add, a, (1, 1)), Err(Error::ProcessExited(q)) if q == a));
    rmprocs(&[b], Duration::from_secs(10)).unwrap();
    assert_eq!(workers(), vec![2, 3, 4]);
    assert!(matches!(
        rmprocs(&[42], Duration::from_secs(1)),
        Err(Error::NoSuchProcess(42))
    ));
    assert!(matches!(
        remotecall_fetch(add, 42, (1, 1)),
        Err(Error::NoSuchProcess(42))
    ));
    // A worker that cannot answer (stopped) makes rmprocs time out with an error naming it.
    let p = addprocs(1).unwrap()[0];
    let os = remotecall_fetch(ospid, p, ()).unwrap() as i32;
    let pid_t = nix::unistd::Pid::from_raw(os);
    nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{os}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            })
            .unwrap_or(false)
    };
    assert!(
        common::eventually(Duration::from_secs(5), stopped),
        "the worker stops"
    );
    let e = rmprocs(&[p], Duration::from_millis(300)).unwrap_err();
    assert!(
        matches!(&e, Error::Timeout(m) if m == &format!("rmprocs: pids [{p}] not terminated after 0.3 seconds")),
        "{e}"
    );
    nix::sys::signal::kill(pid_t, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(common::eventually(Duration::from_secs(10), || !workers().contains(&p)));
    // Removing a worker busy in a call that never polls still completes: the manager kills it.
    let p = addprocs(1).unwrap()[0];
    let _busy = remotecall(sleep_ms, p, (60_000,)).unwrap();
    rmprocs(&[p], Duration::from_secs(20)).unwrap();
}

fn wrong_cookie_refused() {
    let addr = cohort::__private::peer_address(2).expect("worker 2's address");
    let e = cohort::__private::raw_handshake(
        &addr,
        "not-the-cookie",
        cohort::__private::PROTOCOL_VERSION,
    )
    .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
    let e = cohort::__private::raw_handshake(&addr, COOKIE, 99).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    // The right cookie is accepted; garbage on that link closes only it.
    let mut s =
        cohort::__private::raw_handshake(&addr, COOKIE, cohort::__private::PROTOCOL_VERSION)
            .unwrap();
    use std::io::{Read, Write};
    s.write_all(b"this is not a frame at all, not even close")
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        s.read(&mut buf).unwrap_or(0),
        0,
        "the worker closes a link that sends garbage"
    );
    assert_eq!(remotecall_fetch(add, 2, (2, 3)).unwrap(), 5);
    assert_eq!(remotecall_fetch(call_other, 3, (2, 1)).unwrap(), (3, 2));
}

fn worker_timeout_exits() {
    use std::io::{BufRead, Write};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("COHORT_WORKER", "1")
        .env("COHORT_WORKER_TIMEOUT", "0.5")
        .env_remove("COHORT_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{COOKIE}").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let printed_ok = if tcp() {
        line.trim().starts_with("cohort_worker:127.0.0.1:")
    } else {
        line.trim().starts_with("cohort_worker:@cohort-")
    };
    if !printed_ok {
        let _ = child.kill();
        let _ = child.wait();
        panic!("a worker prints its listener address (loopback for TCP): {line}");
    }
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("worker did not exit on its own");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    // The readable line cohort writes when no subscriber is set.
    assert!(
        err.lines().any(|l| l.starts_with(&format!(
            "cohort: worker start-up failed: no master contacted this worker at {}",
            line.trim().trim_start_matches(cohort::WORKER_ADDRESS_TAG)
        ))),
        "{err}"
    );
}

fn cookie_fixed_after_workers() {
    assert!(
        matches!(cohort::set_cluster_cookie("x"), Err(Error::Invalid(_))),
        "cookie changes only before workers"
    );
}

/// Whether workers listen on TCP (the shared-memory transport starts its links on TCP too).
fn tcp() -> bool {
    matches!(cohort::__private::transport_name(), Some("tcp" | "shm"))
}

fn restrict_false_binds_all_interfaces() {
    if !tcp() {
        println!(
            "(binding interfaces is a TCP matter; skipped over {:?})",
            cohort::__private::transport_name()
        );
        return;
    }
    let params = cohort::AddProcsParams {
        count: 1,
        restrict: false,
        ..Default::default()
    };
    let p = cohort::addprocs_with(
        std::sync::Arc::new(cohort::managers::LocalManager::new()),
        params,
    )
    .unwrap();
    let addr = cohort::__private::peer_address(p[0]).unwrap();
    assert!(
        !addr.starts_with("127.0.0.1:"),
        "an unrestricted worker advertises its host: {addr}"
    );
    assert_eq!(remotecall_fetch(add, p[0], (1, 2)).unwrap(), 3);
    rmprocs(&p, Duration::from_secs(10)).unwrap();
    // Restricted workers (the default) bind loopback.
    assert!(cohort::__private::peer_address(2)
        .unwrap()
        .starts_with("127.0.0.1:"));
}

/// A worker bound to the IPv6 loopback advertises `[::1]:port` and is reached by the master
/// and by other workers.
fn ipv6_worker() {
    if !tcp() || std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("(IPv6 loopback: a TCP matter, and needs ::1; skipped here)");
        return;
    }
    let params = cohort::AddProcsParams {
        count: 1,
        env: vec![("COHORT_BIND".into(), "::1".into())],
        ..Default::default()
    };
    let p = cohort::addprocs_with(
        std::sync::Arc::new(cohort::managers::LocalManager::new()),
        params,
    )
    .unwrap();
    let addr = cohort::__private::peer_address(p[0]).unwrap();
    assert!(addr.starts_with("[::1]:"), "{addr}");
    assert_eq!(remotecall_fetch(add, p[0], (1, 2)).unwrap(), 3);
    assert_eq!(remotecall_fetch(call_other_add, 2, (p[0],)).unwrap(), 7);
    rmprocs(&p, Duration::from_secs(10)).unwrap();
}

#[cohort::remote]
fn call_other_add(pid: usize) -> cohort::Result<i64> {
    remotecall_fetch(add, pid, (3, 4))
}

/// Set in a child that reports what `myid()` and `init()` give it (`init_report`).
const ROLE: &str = "COHORT_CORE_TEST_ROLE";

fn invalid_text<T: std::fmt::Debug>(r: cohort::Result<T>) -> String {
    match r {
        Err(Error::Invalid(m)) => m,
        other => format!("not Error::Invalid: {other:?}"),
    }
}

/// The child's side: `myid()` before `init`, then what `init` returned.
fn init_report() {
    println!("myid {}", myid());
    let r = cohort::init();
    println!("procs {:?}", procs());
    match r {
        Ok(_cluster) => println!("init ok"),
        Err(e) => println!("{}", invalid_text::<()>(Err(e))),
    }
}

/// Runs this binary as a fresh master with `vars` set (and no inherited COHORT_PROCS or
/// COHORT_WORKER); returns its stdout lines. Bounded: a child still running after 20 s is
/// killed and fails the test.
fn init_child(vars: &[(&str, &str)]) -> Vec<String> {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, "init")
        .env_remove("COHORT_PROCS")
        .env_remove("COHORT_WORKER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("init child {vars:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{vars:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Every bad `COHORT_*` value makes `init()` fail with a message naming it; `myid()` is 1
/// before `init`; a good value still starts a master.
fn bad_env_refused_by_init() {
    for (var, val, msg) in [
        (
            "COHORT_WORKER_TIMEOUT",
            "abc",
            r#"COHORT_WORKER_TIMEOUT="abc" is not a number of seconds greater than 0"#,
        ),
        (
            "COHORT_PROCS",
            "-1",
            r#"COHORT_PROCS="-1" is not a number of workers or `auto`"#,
        ),
        (
            "COHORT_PROCS",
            "two",
            r#"COHORT_PROCS="two" is not a number of workers or `auto`"#,
        ),
        (
            "COHORT_SPIN_US",
            "x",
            r#"COHORT_SPIN_US="x" is not a whole number of microseconds"#,
        ),
        (
            "COHORT_TOPOLOGY",
            "ring",
            r#"COHORT_TOPOLOGY="ring" is not a topology (all_to_all, all_to_all_eager, master_worker or custom)"#,
        ),
        (
            "COHORT_TRANSPORT",
            "carrier-pigeon",
            r#"COHORT_TRANSPORT="carrier-pigeon" is not a transport (shm, tcp, unix or mpi)"#,
        ),
        (
            "COHORT_SSH_TUNNEL",
            "maybe",
            r#"COHORT_SSH_TUNNEL="maybe" is not 1, true, 0 or false"#,
        ),
    ] {
        assert_eq!(
            init_child(&[(var, val)]),
            ["myid 1", "procs [1]", msg],
            "{var}={val}"
        );
    }
    assert_eq!(
        init_child(&[("COHORT_SPIN_US", "x"), ("COHORT_MAX_FRAME", "0")]),
        [
            "myid 1",
            "procs [1]",
            r#"COHORT_SPIN_US="x" is not a whole number of microseconds; COHORT_MAX_FRAME="0" is not a whole number of bytes greater than 0"#
        ],
        "every bad variable is named"
    );
    assert_eq!(
        init_child(&[("COHORT_TOPOLOGY", "master_worker"), ("COHORT_PROCS", "1")]),
        ["myid 1", "procs [1, 2]", "init ok"]
    );
    // This cluster is untouched.
    assert_eq!(workers(), vec![2, 3, 4]);
    assert_eq!(remotecall_fetch(add, 4, (2, 2)).unwrap(), 4);
}

/// A worker given a bad value exits with the message, which the master's `addprocs` reports;
/// nothing joins, and the cluster grows as usual afterwards.
fn bad_env_in_worker() {
    for (var, val, msg) in [
        (
            "COHORT_SPIN_US",
            "x",
            r#"cohort worker: COHORT_SPIN_US="x" is not a whole number of microseconds"#,
        ),
        (
            "COHORT_WORKER_TIMEOUT",
            "abc",
            r#"cohort worker: COHORT_WORKER_TIMEOUT="abc" is not a number of seconds greater than 0"#,
        ),
    ] {
        let params = cohort::AddProcsParams {
            count: 1,
            env: vec![(var.into(), val.into())],
            ..Default::default()
        };
        let e = invalid_text(cohort::addprocs_with(
            std::sync::Arc::new(cohort::managers::LocalManager::new()),
            params,
        ));
        assert!(
            e.starts_with("worker process ")
                && e.ends_with(&format!(" exited before reporting its address: {msg}")),
            "{var}={val}: {e}"
        );
        assert_eq!(workers(), vec![2, 3, 4]);
    }
    let p = addprocs(1).unwrap();
    assert_eq!(remotecall_fetch(whoami, p[0], ()).unwrap(), p[0]);
    rmprocs(&p, Duration::from_secs(10)).unwrap();
    assert_eq!(workers(), vec![2, 3, 4]);
}

/// What a worker gets when it tries what only process 1 may do.
#[cohort::remote]
fn manage_from_worker(other: usize) -> Vec<String> {
    let local = || std::sync::Arc::new(cohort::managers::LocalManager::new());
    vec![
        invalid_text(addprocs(1)),
        invalid_text(cohort::addprocs_with(local(), Default::default())),
        invalid_text(cohort::addprocs_machines(
            ["localhost"],
            cohort::SshOptions::new(),
        )),
        invalid_text(rmprocs(&[other], Duration::ZERO)),
        invalid_text(cohort::interrupt(&[other])),
    ]
}

/// Julia: "Only process 1 can add and remove workers", and `interrupt` is process 1's; a
/// worker's attempt changes nothing (the call it tried to interrupt finishes).
fn cluster_management_is_master_only() {
    let busy = remotecall(sleep_ms, 3, (300,)).unwrap();
    let mine =
        |what: &str, does: &str| format!("{what}: only process 1 can {does} (this is process 2)");
    assert_eq!(
        remotecall_fetch(manage_from_worker, 2, (3,)).unwrap(),
        [
            mine("addprocs", "add or remove workers"),
            mine("addprocs", "add or remove workers"),
            mine("addprocs", "add or remove workers"),
            mine("rmprocs", "add or remove workers"),
            mine("interrupt", "interrupt workers"),
        ]
    );
    assert_eq!(busy.fetch().unwrap(), 300, "not interrupted");
    assert_eq!(workers(), vec![2, 3, 4]);
    for q in [2, 3, 4] {
        assert_eq!(remotecall_fetch(whoami, q, ()).unwrap(), q);
    }
}

#[cohort::remote]
fn fetch_i64(f: Future<i64>) -> cohort::Result<i64> {
    f.fetch()
}

#[cohort::remote]
fn slow_add(ms: u64, a: i64, b: i64) -> i64 {
    let _b = cohort::blocking();
    std::thread::sleep(Duration::from_millis(ms));
    a + b
}

/// Reads (without taking) the Future in `c` twice and fetches each copy.
#[cohort::remote]
fn peek_twice(c: RemoteChannel<Future<Vec<i64>>>) -> cohort::Result<usize> {
    let a = c.fetch()?.fetch()?.len();
    let b = c.fetch()?.fetch()?.len();
    Ok(a + b)
}

/// Fetches `f` from `n` threads of this process at once.
fn fetch_from_threads(f: &Future<i64>, n: usize) -> Vec<i64> {
    let ts: Vec<_> = (0..n)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || f.fetch().unwrap())
        })
        .collect();
    ts.into_iter().map(|t| t.join().unwrap()).collect()
}

fn concurrent_fetches() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    // Ten threads of one process, the value not there yet and already there.
    for ms in [100, 0] {
        let f = remotecall(slow_add, 2, (ms, 20, 1)).unwrap();
        if ms == 0 {
            f.wait().unwrap();
        }
        assert_eq!(fetch_from_threads(&f, 10), vec![21; 10]);
        assert_eq!(f.fetch().unwrap(), 21);
    }
    // The master and a worker at once, the worker's copy sent while the master fetches.
    for i in 0..20 {
        let f = remotecall(add, 2, (i, 1)).unwrap();
        let g = f.clone();
        let t = std::thread::spawn(move || g.fetch().unwrap());
        let other = remotecall_fetch(fetch_i64, 3, (f.clone(),)).unwrap();
        assert_eq!((t.join().unwrap(), other), (i + 1, i + 1));
    }
    // A Future the master owns, fetched by the master's threads and a worker together.
    let f = remotecall(slow_add, 1, (100, 2, 3)).unwrap();
    let w = remotecall(fetch_i64, 4, (f.clone(),)).unwrap();
    assert_eq!(fetch_from_threads(&f, 10), vec![5; 10]);
    assert_eq!(w.fetch().unwrap(), 5);
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
}

fn future_in_channel_fetched_twice() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    let f = remotecall(make_vec, 2, (10,)).unwrap();
    f.wait().unwrap();
    let keeper: RemoteChannel<Future<Vec<i64>>> = RemoteChannel::new(1, 3).unwrap();
    keeper.put(f.clone()).unwrap();
    // Read twice by another worker, and twice on the channel's owner.
    assert_eq!(
        remotecall_fetch(peek_twice, 4, (keeper.clone(),)).unwrap(),
        20
    );
    assert_eq!(
        remotecall_fetch(peek_twice, 3, (keeper.clone(),)).unwrap(),
        20
    );
    assert_eq!(
        f.fetch_timeout(Duration::from_secs(10)).unwrap(),
        (0..10).collect::<Vec<i64>>()
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(live(2), 1, "the copy in the channel still holds the value");
    let back = keeper.take().unwrap();
    assert_eq!(back.fetch().unwrap().len(), 10);
    drop((back, f));
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    drop(keeper);
    assert!(common::eventually(Duration::from_secs(5), || live(3) == 0));
}

fn finalized_text<T: std::fmt::Debug>(r: cohort::Result<T>) -> String {
    match r {
        Err(Error::Invalid(m)) => m,
        other => panic!("expected Error::Invalid, got {other:?}"),
    }
}

fn finalized_future_errors() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    for owner in [2, 1] {
        // Unfetched: the owner lets go, and every use is an error.
        let before = live(owner);
        let f = remotecall(add, owner, (1, 2)).unwrap();
        f.wait().unwrap();
        let g = f.clone();
        f.finalize();
        let m = finalized_text(g.fetch());
        assert!(m.starts_with("fetch of a finalized reference"), "{m}");
        assert!(finalized_text(f.wait()).starts_with("wait of a finalized reference"));
        assert!(finalized_text(f.isready()).starts_with("isready of a finalized"));
        assert!(finalized_text(f.put(5)).starts_with("put of a finalized"));
        assert!(finalized_text(f.fetch_timeout(Duration::from_secs(1))).contains("finalized"));
        assert!(common::eventually(Duration::from_secs(5), || live(owner) == before));
        // Fetched: the cached value goes too.
        let h = remotecall(add, owner, (2, 2)).unwrap();
        assert_eq!(h.fetch().unwrap(), 4);
        h.finalize();
        assert!(finalized_text(h.fetch()).starts_with("fetch of a finalized reference"));
    }
    assert_eq!(remotecall_fetch(add, 2, (1, 1)).unwrap(), 2);
}

fn wait_raises_remote_error() {
    for p in [2, 1] {
        let e = remotecall_wait(fails, p, (-3,)).unwrap_err();
        assert_eq!(
            e.as_remote().map(|r| (r.pid, r.error.as_str())),
            Some((p, "negative input -3"))
        );
        let f = remotecall(boom, p, ("waited".to_string(),)).unwrap();
        for _ in 0..2 {
            let e = f.wait().unwrap_err();
            assert_eq!(
                e.as_remote().map(|r| r.error.as_str()),
                Some("panic: waited")
            );
        }
        let e = f.fetch().unwrap_err();
        assert_eq!(
            e.as_remote().map(|r| r.error.as_str()),
            Some("panic: waited")
        );
        // A cached error is raised by wait too.
        assert!(f.wait().unwrap_err().as_remote().is_some());
        let ok = remotecall_wait(fails, p, (3,)).unwrap();
        assert_eq!(ok.fetch().unwrap(), 6);
    }
    assert_eq!(remotecall_fetch(add, 2, (2, 3)).unwrap(), 5);
}

fn owner_frees_on_fetch_and_put() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    // The master's own Future: fetch frees the stored value while the handle lives.
    let before = cohort::live_refs();
    let f = remotecall(make_vec, 1, (5,)).unwrap();
    f.wait().unwrap();
    assert_eq!(cohort::live_refs(), before + 1);
    assert_eq!(f.fetch().unwrap(), vec![0, 1, 2, 3, 4]);
    assert_eq!(cohort::live_refs(), before);
    assert_eq!(f.fetch().unwrap(), vec![0, 1, 2, 3, 4], "cached");
    let g: Future<i64> = Future::new(1).unwrap();
    assert_eq!(cohort::live_refs(), before + 1);
    g.put(8).unwrap();
    assert_eq!(
        cohort::live_refs(),
        before,
        "put keeps the value in the handle"
    );
    assert_eq!(g.fetch().unwrap(), 8);
    assert!(matches!(g.put(9), Err(Error::AlreadySet)));
    // A worker's Future set by the master: the worker lets go at once.
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    let h: Future<i64> = Future::new(2).unwrap();
    assert!(!h.isready().unwrap());
    assert_eq!(live(2), 1);
    h.put(7).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    assert!(h.isready().unwrap());
    assert_eq!(h.fetch().unwrap(), 7);
    assert!(matches!(h.put(8), Err(Error::AlreadySet)));
    // With a copy elsewhere the owner keeps it for that copy.
    let k: Future<i64> = Future::new(2).unwrap();
    let reader = remotecall(fetch_i64, 3, (k.clone(),)).unwrap();
    k.put(11).unwrap();
    assert_eq!(reader.fetch().unwrap(), 11);
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
}

#[cohort::remote]
fn hold_chan(c: RemoteChannel<i64>) {
    cohort::local::set("held_chan", c);
}

/// Puts through the channel this worker holds (it is still usable there).
#[cohort::remote]
fn held_chan_put(v: i64) -> cohort::Result<()> {
    let c = cohort::local::get::<RemoteChannel<i64>>("held_chan").expect("held");
    c.put(v)
}

#[cohort::remote]
fn hold_future(f: Future<Vec<i64>>) {
    cohort::local::set("held_future", f);
}

#[cohort::remote]
fn held_future_ready() -> cohort::Result<bool> {
    cohort::local::get::<Future<Vec<i64>>>("held_future")
        .expect("held")
        .isready()
}

/// A new worker (the holder to be killed) and its OS pid.
fn new_holder() -> (usize, i32) {
    let b = addprocs(1).unwrap()[0];
    (b, remotecall_fetch(ospid, b, ()).unwrap() as i32)
}

/// Kills the holder with SIGKILL (no chance to give anything back) and waits until it is gone.
fn kill_holder(b: usize, os: i32) -> Instant {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(os),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = Instant::now();
    assert!(common::eventually(Duration::from_secs(5), || !workers().contains(&b)));
    t0
}

static BIG: Mutex<Vec<i64>> = Mutex::new(Vec::new());

/// Makes a large vector here, for `take_big`.
#[cohort::remote]
fn stash_big(n: usize) -> usize {
    *BIG.lock().unwrap() = vec![7; n];
    n
}

#[cohort::remote]
fn take_big() -> Vec<i64> {
    std::mem::take(&mut *BIG.lock().unwrap())
}

/// A peer killed in the middle of a message, either way, fails what waits on it and blocks
/// nothing else (over shared memory: the ring's state never blocks the survivor).
fn a_peer_killed_mid_message_blocks_nothing() {
    let big = 40_000_000usize; // 320 MB: hundreds of times a ring
                               // The worker dies while its reply streams to the master.
    let (b, os) = new_holder();
    assert_eq!(remotecall_fetch(stash_big, b, (big,)).unwrap(), big);
    let call = std::thread::spawn(move || remotecall_fetch(take_big, b, ()).map(|v| v.len()));
    std::thread::sleep(Duration::from_millis(20));
    let t0 = kill_holder(b, os);
    let r = call.join().unwrap();
    assert!(matches!(r, Err(Error::ProcessExited(q)) if q == b), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    // The worker dies while the master sends it a large value.
    let (b, os) = new_holder();
    let v = vec![1i64; big];
    let call = std::thread::spawn(move || remotecall_fetch(echo_vec, b, (v,)).map(|v| v.len()));
    std::thread::sleep(Duration::from_millis(150));
    kill_holder(b, os);
    let r = call.join().unwrap();
    assert!(matches!(r, Err(Error::ProcessExited(q)) if q == b), "{r:?}");
    // The rest of the cluster keeps answering, worker to worker too.
    assert_eq!(remotecall_fetch(add, 2, (2, 2)).unwrap(), 4);
    assert_eq!(remotecall_fetch(call_other, 2, (3, 1)).unwrap(), (2, 2));
}

/// Worker 2 owns what a killed worker alone held: it frees it (Julia's `deregister_worker`).
fn killed_holder_frees_channel() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    let (b, os) = new_holder();
    let c: RemoteChannel<i64> = RemoteChannel::new(1, 2).unwrap();
    remotecall_fetch(hold_chan, b, (c.clone(),)).unwrap();
    remotecall_fetch(held_chan_put, b, (5,)).unwrap();
    assert_eq!(c.take().unwrap(), 5);
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(live(2), 1, "the holder keeps it");
    let t0 = kill_holder(b, os);
    assert!(
        common::eventually(Duration::from_secs(2), || live(2) == 0),
        "freed after {:?}: {}",
        t0.elapsed(),
        live(2)
    );
    assert_eq!(remotecall_fetch(add, 2, (1, 1)).unwrap(), 2);
}

fn killed_holder_frees_future() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    let (b, os) = new_holder();
    let f = remotecall(make_vec, 2, (3,)).unwrap();
    f.wait().unwrap();
    remotecall_fetch(hold_future, b, (f.clone(),)).unwrap();
    drop(f);
    assert!(remotecall_fetch(held_future_ready, b, ()).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(live(2), 1, "the holder keeps it");
    let t0 = kill_holder(b, os);
    assert!(
        common::eventually(Duration::from_secs(2), || live(2) == 0),
        "freed after {:?}: {}",
        t0.elapsed(),
        live(2)
    );
    // Dropped while its call runs: freed once stored.
    let f = remotecall(slow_add, 2, (300, 1, 2)).unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(400));
    assert!(common::eventually(Duration::from_secs(2), || live(2) == 0));
    // A Future whose call is still running when its only holder dies: freed once stored.
    let (b, os) = new_holder();
    let f = remotecall(slow_add, 2, (500, 1, 2)).unwrap();
    remotecall_fetch(hold_future_i64, b, (f.clone(),)).unwrap();
    drop(f);
    kill_holder(b, os);
    std::thread::sleep(Duration::from_millis(600));
    assert!(common::eventually(Duration::from_secs(2), || live(2) == 0));
}

#[cohort::remote]
fn hold_future_i64(f: Future<i64>) {
    cohort::local::set("held_future_i64", f);
}

/// Held by the killed worker and the master: it stays for the master, freed when it drops it.
fn killed_holder_shared_ref_survives() {
    let live = |p: usize| cohort::live_refs_on(p).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || live(2) == 0));
    let (b, os) = new_holder();
    let c: RemoteChannel<i64> = RemoteChannel::new(2, 2).unwrap();
    let f = remotecall(make_vec, 2, (4,)).unwrap();
    f.wait().unwrap();
    remotecall_fetch(hold_chan, b, (c.clone(),)).unwrap();
    remotecall_fetch(hold_future, b, (f.clone(),)).unwrap();
    remotecall_fetch(held_chan_put, b, (6,)).unwrap();
    assert_eq!(live(2), 2);
    kill_holder(b, os);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(live(2), 2, "the master's holds keep them");
    assert_eq!(c.take().unwrap(), 6);
    c.put(7).unwrap();
    assert_eq!(c.take().unwrap(), 7);
    assert_eq!(f.fetch().unwrap(), vec![0, 1, 2, 3]);
    assert!(common::eventually(Duration::from_secs(2), || live(2) == 1));
    drop(c);
    assert!(common::eventually(Duration::from_secs(2), || live(2) == 0));
    drop(f);
}

fn future_timeouts() {
    let short = Duration::from_millis(50);
    for p in [2, 1] {
        let f = remotecall(slow_add, p, (2000, 1, 1)).unwrap();
        let t0 = Instant::now();
        assert!(matches!(f.fetch_timeout(short), Err(Error::Timeout(_))));
        assert!(matches!(f.wait_timeout(short), Err(Error::Timeout(_))));
        // Well before the value (a loaded machine can add some hundreds of ms).
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t0.elapsed()
        );
        // Another thread's fetch in progress: a timed fetch gives up too.
        let g = f.clone();
        let t = std::thread::spawn(move || g.fetch().unwrap());
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(f.fetch_timeout(short), Err(Error::Timeout(_))));
        assert_eq!(f.fetch_timeout(Duration::from_secs(10)).unwrap(), 2);
        assert_eq!(t.join().unwrap(), 2);
        f.wait_timeout(short).unwrap();
    }
    // Never set, then set: the timed-out reference still works.
    let h: Future<i64> = Future::new(3).unwrap();
    match h.fetch_timeout(short) {
        Err(Error::Timeout(m)) => assert!(m.contains("no value within"), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    h.put(4).unwrap();
    assert_eq!(h.fetch_timeout(Duration::from_secs(5)).unwrap(), 4);
    assert_eq!(remotecall_fetch(add, 3, (1, 1)).unwrap(), 2);
}

/// The number of threads of this process.
fn threads() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads: in /proc/self/status")
}

/// A minimal executor: polls `f` on this thread and parks until woken (a missing wake-up
/// hangs the test); `idle` runs before each park.
fn block_on<F: std::future::IntoFuture>(f: F, mut idle: impl FnMut()) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f.into_future());
    loop {
        if let std::task::Poll::Ready(v) = std::future::Future::poll(f.as_mut(), &mut cx) {
            return v;
        }
        idle();
        std::thread::park();
    }
}

/// Polls once: `Some` if it is done at once.
fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::future::Future::poll(std::pin::Pin::new(f), &mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn async_fetch_without_threads() {
    let before = threads();
    let futs: Vec<Future<u64>> = (0..100u64)
        .map(|i| remotecall(sleep_ms, 2 + (i % 3) as usize, (400 + i,)).unwrap())
        .collect();
    let t0 = Instant::now();
    let (mut most, mut waits) = (0, 0);
    let out = block_on(
        futures_util::future::join_all(futs.iter().map(|f| f.fetch_async())),
        || {
            most = most.max(threads());
            waits += 1;
        },
    );
    let out: Vec<u64> = out.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(out, (400..500).collect::<Vec<u64>>());
    assert!(waits > 0, "the fetches were pending");
    assert!(
        most <= before + 3,
        "100 pending fetches, threads {before} -> {most}"
    );
    // One after another they would take 45 s.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // Fetched: from the cache, on the first poll.
    for (i, f) in futs.iter().enumerate() {
        assert_eq!(
            poll_once(&mut f.fetch_async()).unwrap().unwrap(),
            400 + i as u64
        );
    }
    // The `.await` forms, and a remote error, cached like a value.
    let g = remotecall(add, 3, (2, 3)).unwrap();
    assert_eq!(block_on(async { (&g).await }, || ()).unwrap(), 5);
    assert_eq!(block_on(g, || ()).unwrap(), 5);
    let b = remotecall(boom, 4, ("async".to_string(),)).unwrap();
    for _ in 0..2 {
        let e = block_on(&b, || ()).unwrap_err();
        assert_eq!(
            e.as_remote().map(|r| (r.pid, r.error.clone())),
            Some((4, "panic: async".to_string()))
        );
    }
    // Another thread's fetch of the same Future in progress: the task gets its value too.
    let h = remotecall(sleep_ms, 2, (300,)).unwrap();
    let h2 = h.clone();
    let t = std::thread::spawn(move || h2.fetch());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(block_on(h.fetch_async(), || ()).unwrap(), 300);
    assert_eq!(t.join().unwrap().unwrap(), 300);
    // Dropped while pending: the request goes, the reference stays usable.
    let k = remotecall(sleep_ms, 3, (200,)).unwrap();
    let mut pending = k.fetch_async();
    assert!(poll_once(&mut pending).is_none());
    drop(pending);
    assert_eq!(k.fetch().unwrap(), 200);
    assert_eq!(remotecall_fetch(add, 2, (1, 1)).unwrap(), 2);
}

fn async_fetch_ready_at_once() {
    // Any executor, multi-threaded ones included.
    fn send<T: Send + Unpin>(_: &T) {}
    // Cached by a fetch.
    let f = remotecall(add, 2, (1, 2)).unwrap();
    assert_eq!(f.fetch().unwrap(), 3);
    assert_eq!(poll_once(&mut f.fetch_async()).unwrap().unwrap(), 3);
    send(&f.fetch_async());
    // Stored on this process.
    let l = remotecall_wait(add, 1, (2, 2)).unwrap();
    assert_eq!(poll_once(&mut l.fetch_async()).unwrap().unwrap(), 4);
    let p: Future<i64> = Future::new(1).unwrap();
    p.put(6).unwrap();
    assert_eq!(poll_once(&mut p.fetch_async()).unwrap().unwrap(), 6);
    // Local and not set yet: pending, then woken by the put.
    let h: Future<i64> = Future::new(1).unwrap();
    let mut pending = h.fetch_async();
    assert!(poll_once(&mut pending).is_none());
    let h2 = h.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        h2.put(9)
    });
    assert_eq!(block_on(pending, || ()).unwrap(), 9);
    t.join().unwrap().unwrap();
    // Finalized: the error at once.
    let g = remotecall(add, 3, (1, 1)).unwrap();
    g.finalize();
    match poll_once(&mut g.fetch_async()) {
        Some(Err(Error::Invalid(m))) => {
            assert!(m.starts_with("fetch of a finalized reference"), "{m}")
        }
        other => panic!("expected the finalized error, got {other:?}"),
    }
}

fn async_fetch_worker_killed() {
    let p = addprocs(1).unwrap()[0];
    let os_pid = remotecall_fetch(ospid, p, ()).unwrap();
    let f = remotecall(sleep_ms, p, (60_000,)).unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(os_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        Instant::now()
    });
    let r = block_on(f.fetch_async(), || ());
    let killed = killer.join().unwrap();
    assert!(matches!(r, Err(Error::ProcessExited(q)) if q == p), "{r:?}");
    assert!(killed.elapsed() < Duration::from_secs(2));
    // Not cached: a later fetch says the same.
    assert!(matches!(block_on(&f, || ()), Err(Error::ProcessExited(q)) if q == p));
    assert!(common::eventually(Duration::from_secs(2), || workers() == vec![2, 3, 4]));
    assert_eq!(
        block_on(remotecall(add, 2, (1, 1)).unwrap(), || ()).unwrap(),
        2
    );
}

fn channel_timeouts() {
    let short = Duration::from_millis(50);
    let timeout = |r: Result<(), Error>| match r {
        Err(Error::Timeout(m)) => m,
        other => panic!("expected a timeout, got {other:?}"),
    };
    for p in [2, 1] {
        let said = |why: &str| format!("on pid {p}: {why} within 50ms");
        let c: RemoteChannel<i64> = RemoteChannel::new(1, p).unwrap();
        let t0 = Instant::now();
        let m = timeout(c.take_timeout(short).map(|_| ()));
        assert!(t0.elapsed() >= short && t0.elapsed() < Duration::from_millis(1500));
        assert!(m.starts_with("take of RemoteChannel"), "{m}");
        assert!(m.ends_with(&said("no value")), "{m}");
        // A value put after the timed-out take is there for the next one.
        remotecall_fetch(chan_put_all, 3, (c.clone(), 10, 1)).unwrap();
        assert_eq!(c.take_timeout(Duration::from_secs(5)).unwrap(), 10);
        // Full: the timed-out put did not insert its value.
        c.put(1).unwrap();
        let m = timeout(c.put_timeout(2, short));
        assert!(m.starts_with("put of RemoteChannel"), "{m}");
        assert!(m.ends_with(&said("no room")), "{m}");
        assert_eq!(c.take().unwrap(), 1);
        assert!(!c.isready().unwrap(), "2 was not put");
        c.put_timeout(3, Duration::from_secs(5)).unwrap();
        assert_eq!(c.take().unwrap(), 3);
        // A take waiting when the value comes.
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c2.put(7)
        });
        assert_eq!(c.take_timeout(Duration::from_secs(5)).unwrap(), 7);
        t.join().unwrap().unwrap();
        // Rendezvous: no taker, no value left behind; with one, the value goes through.
        let r: RemoteChannel<i64> = RemoteChannel::new(0, p).unwrap();
        let m = timeout(r.put_timeout(5, short));
        assert!(m.ends_with(&said("no taker")), "{m}");
        assert!(!r.isready().unwrap(), "5 was not left in the channel");
        let r2 = r.clone();
        let taker = std::thread::spawn(move || r2.take());
        r.put_timeout(6, Duration::from_secs(5)).unwrap();
        assert_eq!(taker.join().unwrap().unwrap(), 6);
        // Closed: the channel's own errors.
        c.close().unwrap();
        assert!(matches!(c.put_timeout(1, short), Err(Error::ChannelClosed)));
        assert!(matches!(c.take_timeout(short), Err(Error::ChannelClosed)));
    }
    assert_eq!(remotecall_fetch(add, 2, (1, 1)).unwrap(), 2);
}

/// Sleeps without marking itself blocking: holds its caller's request queue the whole time.
#[cohort::remote]
fn hold_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// `n` takes from `c` at once, each on its own thread here.
#[cohort::remote]
fn parallel_takes(c: RemoteChannel<i64>, n: usize) -> cohort::Result<Vec<i64>> {
    let _b = cohort::blocking();
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || c.take())
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Waits for each Future here, each on its own thread; their values.
#[cohort::remote]
fn parallel_waits(fs: Vec<Future<i64>>) -> cohort::Result<Vec<i64>> {
    let _b = cohort::blocking();
    let hs: Vec<_> = fs
        .into_iter()
        .map(|f| std::thread::spawn(move || f.wait().and_then(|_| f.fetch())))
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// The number of threads of a process, from `/proc`.
fn threads_of(os: u32) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{os}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Requests that run no user code are answered at once while a long call holds the worker.
fn owner_answers_during_long_call() {
    let c: RemoteChannel<i64> = RemoteChannel::new(4, 2).unwrap();
    let t0 = Instant::now();
    let long = remotecall(hold_ms, 2, (2000,)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    quick("isready", &mut || assert!(!long.isready().unwrap()));
    let mut made = None;
    quick("RemoteChannel::new", &mut || {
        made = Some(RemoteChannel::<i64>::new(1, 2).unwrap())
    });
    quick("put", &mut || c.put(7).unwrap());
    quick("isopen", &mut || assert!(c.isopen().unwrap()));
    quick("isempty with a value", &mut || {
        assert!(!c.isempty().unwrap())
    });
    quick("isready on a channel", &mut || {
        assert!(c.isready().unwrap())
    });
    quick("fetch on a channel", &mut || {
        assert_eq!(c.fetch().unwrap(), 7)
    });
    quick("take", &mut || assert_eq!(c.take().unwrap(), 7));
    quick("isempty once taken", &mut || assert!(c.isempty().unwrap()));
    let made = made.unwrap();
    quick("put on the new channel", &mut || made.put(1).unwrap());
    let h: Future<i64> = Future::new(2).unwrap();
    quick("put on a Future", &mut || h.put(3).unwrap());
    // Calls still start in the order they were made: this one after the long call.
    assert_eq!(remotecall_fetch(add, 2, (1, 2)).unwrap(), 3);
    assert!(
        t0.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t0.elapsed()
    );
    assert!(long.isready().unwrap());
    assert_eq!(long.fetch().unwrap(), 2000);
}

/// 1,000 takes parked on an empty channel cost its owner no threads; every one gets exactly
/// one of the values put later. A parked take fails when the channel closes or when the owner
/// is interrupted, and then takes no value.
fn parked_takes_cost_no_threads() {
    let owner = 3;
    let os = remotecall_fetch(ospid, owner, ()).unwrap();
    let c: RemoteChannel<i64> = RemoteChannel::new(8, owner).unwrap();
    // Links from the other callers exist before counting.
    for p in [2, 4] {
        let f = remotecall(parallel_takes, p, (c.clone(), 1)).unwrap();
        c.put(-1).unwrap();
        assert_eq!(f.fetch().unwrap(), vec![-1]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = threads_of(os);
    let on_workers: Vec<Future<Vec<i64>>> = [2, 4]
        .iter()
        .map(|&p| remotecall(parallel_takes, p, (c.clone(), 250)).unwrap())
        .collect();
    let here: Vec<_> = (0..500)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || c.take().unwrap())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let parked = threads_of(os);
    assert!(
        parked <= before + 8,
        "the owner went from {before} to {parked} threads with 1000 takes parked"
    );
    assert!(!c.isready().unwrap());
    for i in 0..1000 {
        c.put(i).unwrap();
    }
    let mut got: Vec<i64> = here.into_iter().map(|h| h.join().unwrap()).collect();
    for f in on_workers {
        got.extend(f.fetch().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, (0..1000).collect::<Vec<i64>>());
    assert!(!c.isready().unwrap());
    // Closed while parked: the take fails with ChannelClosed, the owner serves on.
    let d: RemoteChannel<i64> = RemoteChannel::new(1, owner).unwrap();
    let d2 = d.clone();
    let t = std::thread::spawn(move || d2.take());
    std::thread::sleep(Duration::from_millis(100));
    d.close().unwrap();
    assert!(matches!(t.join().unwrap(), Err(Error::ChannelClosed)));
    // Interrupted while parked: the take fails, and the next value goes to the next take.
    let e: RemoteChannel<i64> = RemoteChannel::new(1, owner).unwrap();
    let e2 = e.clone();
    let t = std::thread::spawn(move || e2.take());
    std::thread::sleep(Duration::from_millis(100));
    cohort::interrupt(&[owner]).unwrap();
    assert!(matches!(t.join().unwrap(), Err(Error::Interrupted(3))));
    e.put(5).unwrap();
    assert_eq!(e.take().unwrap(), 5);
    assert_eq!(remotecall_fetch(add, owner, (1, 1)).unwrap(), 2);
}

/// 200 waits parked on unset Futures cost their owner no threads, and all return once the
/// values are put. (Threads of one process waiting on one Future send one request between
/// them, so the 200 are on 200 Futures; one Future waited from three processes at once is
/// answered by one put.)
fn parked_waits_cost_no_threads() {
    let owner = 3;
    let os = remotecall_fetch(ospid, owner, ()).unwrap();
    let fs: Vec<Future<i64>> = (0..200).map(|_| Future::new(owner).unwrap()).collect();
    let shared: Future<i64> = Future::new(owner).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = threads_of(os);
    let on_workers: Vec<Future<Vec<i64>>> = [2, 4]
        .iter()
        .map(|&p| {
            let mine: Vec<Future<i64>> = fs[..50].to_vec();
            let mine = if p == 2 { mine } else { fs[50..100].to_vec() };
            let mut mine = mine;
            mine.push(shared.clone());
            remotecall(parallel_waits, p, (mine,)).unwrap()
        })
        .collect();
    let here: Vec<_> = fs[100..]
        .iter()
        .cloned()
        .chain([shared.clone()])
        .map(|f| std::thread::spawn(move || f.wait().and_then(|_| f.fetch())))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let parked = threads_of(os);
    assert!(
        parked <= before + 8,
        "the owner went from {before} to {parked} threads with 200 waits parked"
    );
    assert!(!fs[0].isready().unwrap());
    shared.put(-1).unwrap();
    for (i, f) in fs.iter().enumerate() {
        f.put(i as i64).unwrap();
    }
    let mut got: Vec<i64> = here
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    for f in on_workers {
        got.extend(f.fetch().unwrap());
    }
    got.sort_unstable();
    let want: Vec<i64> = [-1, -1, -1].into_iter().chain(0..200).collect();
    assert_eq!(got, want);
}

/// Times `f`; fails when it took 50 ms or more.
fn quick(what: &str, f: &mut dyn FnMut()) {
    let t = Instant::now();
    f();
    let d = t.elapsed();
    assert!(d < Duration::from_millis(50), "{what} took {d:?}");
}

/// A pool of `pids` made here and kept here (a handle elsewhere reaches it while it is kept).
#[cohort::remote]
fn make_kept_pool(pids: Vec<usize>) -> WorkerPool {
    let p = WorkerPool::new(pids);
    local::set("kept-pool", p.clone());
    p
}

/// Each operation's name and duration, what `len` read, the worker taken, and whether the
/// long call was still running at the end.
type PoolOpsSeen = (Vec<(String, Duration)>, usize, usize, bool);

/// On a worker: keeps the master busy with a 2 s call from this process and uses the master's
/// default pool meanwhile.
#[cohort::remote]
fn pool_ops_while_master_busy() -> cohort::Result<PoolOpsSeen> {
    let long = remotecall(hold_ms, 1, (2000,))?;
    std::thread::sleep(Duration::from_millis(100));
    let pool = default_worker_pool();
    let mut times = Vec::new();
    let mut timed = |what: &str, t: Instant| times.push((what.to_string(), t.elapsed()));
    let t = Instant::now();
    let n = pool.len();
    timed("len", t);
    let t = Instant::now();
    let p = pool.take()?;
    timed("take", t);
    let t = Instant::now();
    pool.put(p);
    timed("put", t);
    let running = !long.isready()?;
    assert_eq!(long.fetch()?, 2000);
    Ok((times, n, p, running))
}

/// Pool operations through a handle run no user code: the owner answers them at once while
/// a long call from the same process holds that process's queue there.
fn pool_ops_during_long_call() {
    let pool: WorkerPool = remotecall_fetch(make_kept_pool, 2, (vec![3, 4],)).unwrap();
    assert_eq!(pool.owner(), 2);
    let long = remotecall(hold_ms, 2, (2000,)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    quick("len", &mut || assert_eq!(pool.len(), 2));
    let mut took = 0;
    quick("take", &mut || took = pool.take().unwrap());
    assert!([3, 4].contains(&took), "{took}");
    quick("idle_count", &mut || assert_eq!(pool.idle_count(), 1));
    quick("put", &mut || pool.put(took));
    quick("idle_count after put", &mut || {
        assert_eq!(pool.idle_count(), 2)
    });
    // A take that has to wait holds up neither the other operations nor the put it waits for.
    let a = pool.take().unwrap();
    let b = pool.take().unwrap();
    let waiting = pool.clone();
    let waiter = std::thread::spawn(move || waiting.take());
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiter.is_finished(), "no worker is idle");
    quick("len with a take waiting", &mut || assert_eq!(pool.len(), 2));
    quick("try_take with none idle", &mut || {
        assert_eq!(pool.try_take(), None)
    });
    quick("put for the waiting take", &mut || pool.put(a));
    assert_eq!(waiter.join().unwrap().unwrap(), a);
    pool.put(a);
    pool.put(b);
    assert!(
        !long.isready().unwrap(),
        "all of it while the long call ran"
    );
    assert_eq!(long.fetch().unwrap(), 2000);
    assert_eq!(pool.idle_count(), 2);
    // The master's default pool, used from a worker that keeps the master busy.
    let (times, n, p, running) = remotecall_fetch(pool_ops_while_master_busy, 3, ()).unwrap();
    for (what, d) in &times {
        assert!(*d < Duration::from_millis(50), "{what} took {d:?}");
    }
    assert_eq!(times.len(), 3);
    assert_eq!(n, 3);
    assert!([2, 3, 4].contains(&p), "{p}");
    assert!(running, "the master's long call ran meanwhile");
    assert!(common::eventually(Duration::from_secs(2), || {
        default_worker_pool().idle_count() == 3
    }));
    local::clear(&["kept-pool"], &[2]).unwrap();
}

/// Timed channel operations are answered by the owner while a long call from the caller holds
/// its queue there: each times out after its own duration, takes or inserts nothing, and the
/// channel serves on.
fn timed_channel_ops_during_long_call() {
    let d = Duration::from_millis(150);
    let c: RemoteChannel<i64> = RemoteChannel::new(1, 2).unwrap();
    let r: RemoteChannel<i64> = RemoteChannel::new(0, 2).unwrap();
    let long = remotecall(hold_ms, 2, (2000,)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let times_out = |what: &str, f: &mut dyn FnMut() -> cohort::Result<()>| -> String {
        let t = Instant::now();
        let out = f();
        let e = t.elapsed();
        assert!(
            e >= d && e < d + Duration::from_millis(400),
            "{what} took {e:?}"
        );
        match out {
            Err(Error::Timeout(m)) => m,
            other => panic!("{what}: expected a timeout, got {other:?}"),
        }
    };
    let said = |why: &str| format!("on pid 2: {why} within 150ms");
    let m = times_out("take_timeout", &mut || c.take_timeout(d).map(|_| ()));
    assert!(m.starts_with("take of RemoteChannel"), "{m}");
    assert!(m.ends_with(&said("no value")), "{m}");
    // The timed-out take took nothing: the next value goes to the next take.
    quick("put after a timed-out take", &mut || c.put(11).unwrap());
    quick("take_timeout with a value", &mut || {
        assert_eq!(c.take_timeout(d).unwrap(), 11)
    });
    c.put(12).unwrap();
    let m = times_out("put_timeout on a full channel", &mut || {
        c.put_timeout(13, d)
    });
    assert!(m.starts_with("put of RemoteChannel"), "{m}");
    assert!(m.ends_with(&said("no room")), "{m}");
    assert_eq!(c.take().unwrap(), 12);
    assert!(!c.isready().unwrap(), "13 was not inserted");
    let m = times_out("put_timeout without a taker", &mut || r.put_timeout(5, d));
    assert!(m.ends_with(&said("no taker")), "{m}");
    assert!(!r.isready().unwrap(), "5 was not left in the channel");
    // A timed take that a put answers in time.
    let c2 = c.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        c2.put(21)
    });
    let t0 = Instant::now();
    assert_eq!(c.take_timeout(Duration::from_secs(5)).unwrap(), 21);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    t.join().unwrap().unwrap();
    assert!(
        !long.isready().unwrap(),
        "all of it while the long call ran"
    );
    assert_eq!(long.fetch().unwrap(), 2000);
    c.put(31).unwrap();
    assert_eq!(c.take().unwrap(), 31);
    assert!(!c.isready().unwrap());
}

/// Timed takes' outcomes: the value taken, or `None` for a timeout, and how long each took.
type TimedTakes = Vec<(Option<i64>, Duration)>;

/// `n` timed takes (`ms` each) from `c` at once, each on its own thread here: each value
/// taken, or `None` for a timeout, with the time the take took.
#[cohort::remote]
fn parallel_timed_takes(c: RemoteChannel<i64>, n: usize, ms: u64) -> cohort::Result<TimedTakes> {
    let _b = cohort::blocking();
    let d = Duration::from_millis(ms);
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                match c.take_timeout(d) {
                    Ok(v) => Ok((Some(v), t.elapsed())),
                    Err(Error::Timeout(_)) => Ok((None, t.elapsed())),
                    Err(e) => Err(e),
                }
            })
        })
        .collect();
    hs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// 500 timed takes parked on an empty channel cost its owner no threads; the values put
/// meanwhile go one to each of as many takes, the others time out after their duration, and
/// no timed-out take consumes a later value.
fn parked_timed_takes_cost_no_threads() {
    let owner = 3;
    let os = remotecall_fetch(ospid, owner, ()).unwrap();
    let c: RemoteChannel<i64> = RemoteChannel::new(8, owner).unwrap();
    // Links from the other callers exist before counting.
    for p in [2, 4] {
        let f = remotecall(parallel_timed_takes, p, (c.clone(), 1, 5000)).unwrap();
        c.put(-1).unwrap();
        assert_eq!(f.fetch().unwrap()[0].0, Some(-1));
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = threads_of(os);
    let d = Duration::from_millis(3000);
    let on_workers: Vec<Future<TimedTakes>> = [2, 4]
        .iter()
        .map(|&p| remotecall(parallel_timed_takes, p, (c.clone(), 250, 3000)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let parked = threads_of(os);
    assert!(
        parked <= before + 8,
        "the owner went from {before} to {parked} threads with 500 timed takes parked"
    );
    assert!(!c.isready().unwrap());
    for i in 0..200 {
        c.put(i).unwrap();
    }
    let mut got = Vec::new();
    let mut timed_out = 0;
    for f in on_workers {
        for (v, took) in f.fetch().unwrap() {
            match v {
                Some(v) => got.push(v),
                None => {
                    assert!(took >= d, "a take timed out after {took:?}");
                    timed_out += 1;
                }
            }
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<i64>>());
    assert_eq!(timed_out, 300);
    assert!(threads_of(os) <= before + 8);
    // Nothing is left, and no timed-out take is still waiting for a value.
    assert!(!c.isready().unwrap());
    c.put(7).unwrap();
    assert!(c.isready().unwrap());
    assert_eq!(c.take_timeout(Duration::from_secs(1)).unwrap(), 7);
    // Interrupted while parked: the take fails, and the next value goes to the next take.
    let c2 = c.clone();
    let t = std::thread::spawn(move || c2.take_timeout(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(100));
    cohort::interrupt(&[owner]).unwrap();
    assert!(matches!(t.join().unwrap(), Err(Error::Interrupted(3))));
    c.put(8).unwrap();
    assert_eq!(c.take().unwrap(), 8);
    // Closed while parked: the channel's own error, before the deadline.
    let c2 = c.clone();
    let t = std::thread::spawn(move || c2.take_timeout(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    c.close().unwrap();
    assert!(matches!(t.join().unwrap(), Err(Error::ChannelClosed)));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

fn main() {
    if std::env::var_os(ROLE).is_some() && std::env::var_os("COHORT_WORKER").is_none() {
        return init_report();
    }
    assert_eq!(myid(), 1, "the master-to-be is process 1 before init");
    assert_eq!(myrole(), Role::Master, "and has the master's role");
    let cluster = cohort::init().unwrap();
    // The same suite runs over every transport: shared memory here (the default), plain TCP
    // and Unix sockets in child processes.
    let others: Vec<std::process::Child> = if std::env::var_os("COHORT_TRANSPORT").is_none() {
        ["tcp", "unix"]
            .into_iter()
            .map(|t| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args(std::env::args().skip(1))
                    .env("COHORT_TRANSPORT", t)
                    .spawn()
                    .unwrap()
            })
            .collect()
    } else {
        Vec::new()
    };
    println!(
        "transport: {}",
        cohort::__private::transport_name().unwrap()
    );
    cohort::set_cluster_cookie(COOKIE).unwrap();
    assert_eq!(addprocs(3).unwrap(), vec![2, 3, 4]);
    common::run(
        cluster,
        &[
            ("basics", basics),
            ("links_on_one_host_use_rings", links_on_one_host_use_rings),
            ("remote_errors", remote_errors),
            ("ordering", ordering),
            ("worker_to_worker", worker_to_worker),
            ("local_calls_do_not_serialize", local_calls_do_not_serialize),
            ("futures", futures),
            ("fetch_all_pipelines", fetch_all_pipelines),
            ("channels", channels),
            ("channel_state", channel_state),
            ("roles", roles),
            ("ref_counting", ref_counting),
            (
                "loop_args_shared_by_the_parts",
                loop_args_shared_by_the_parts,
            ),
            ("concurrent_fetches", concurrent_fetches),
            (
                "future_in_channel_fetched_twice",
                future_in_channel_fetched_twice,
            ),
            ("finalized_future_errors", finalized_future_errors),
            ("wait_raises_remote_error", wait_raises_remote_error),
            ("owner_frees_on_fetch_and_put", owner_frees_on_fetch_and_put),
            ("future_timeouts", future_timeouts),
            ("interrupts", interrupts),
            ("wrong_cookie_refused", wrong_cookie_refused),
            ("worker_timeout_exits", worker_timeout_exits),
            ("cookie_fixed_after_workers", cookie_fixed_after_workers),
            ("kill_worker_fails_pending", kill_worker_fails_pending),
            ("rmprocs_semantics", rmprocs_semantics),
            (
                "restrict_false_binds_all_interfaces",
                restrict_false_binds_all_interfaces,
            ),
            ("ipv6_worker", ipv6_worker),
            ("bad_env_refused_by_init", bad_env_refused_by_init),
            ("bad_env_in_worker", bad_env_in_worker),
            (
                "cluster_management_is_master_only",
                cluster_management_is_master_only,
            ),
            ("killed_holder_frees_channel", killed_holder_frees_channel),
            ("killed_holder_frees_future", killed_holder_frees_future),
            (
                "killed_holder_shared_ref_survives",
                killed_holder_shared_ref_survives,
            ),
            ("async_fetch_without_threads", async_fetch_without_threads),
            ("async_fetch_ready_at_once", async_fetch_ready_at_once),
            ("async_fetch_worker_killed", async_fetch_worker_killed),
            ("channel_timeouts", channel_timeouts),
            (
                "owner_answers_during_long_call",
                owner_answers_during_long_call,
            ),
            ("parked_takes_cost_no_threads", parked_takes_cost_no_threads),
            ("parked_waits_cost_no_threads", parked_waits_cost_no_threads),
            ("pool_ops_during_long_call", pool_ops_during_long_call),
            (
                "timed_channel_ops_during_long_call",
                timed_channel_ops_during_long_call,
            ),
            (
                "parked_timed_takes_cost_no_threads",
                parked_timed_takes_cost_no_threads,
            ),
            (
                "a_peer_killed_mid_message_blocks_nothing",
                a_peer_killed_mid_message_blocks_nothing,
            ),
        ],
        Duration::from_secs(60),
        others,
    );
}
