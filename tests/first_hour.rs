//! What a new user meets in the first hour: output before `init`, a failed `addprocs`, fallible
//! remote functions, iterating a channel whose owner dies, and a guard dropped at once. Runs
//! with `harness = false` (see tests/common); some cases run this binary again as a master of
//! its own (`FIRST_HOUR_MODE`) and read what it printed.

mod common;

use cohort::managers::LocalManager;
use cohort::prelude::*;
use cohort::{AddProcsParams, Error};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cohort::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cohort::remote]
fn whoami() -> usize {
    myid()
}

#[cohort::remote]
fn exit_now() {
    std::process::exit(0)
}

/// An error type that is `Display` only: it never travels as a value.
#[derive(Debug)]
struct NotSerializable(u32);

impl std::fmt::Display for NotSerializable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {} is not allowed", self.0)
    }
}

#[cohort::remote]
fn checked(code: u32) -> Result<u32, NotSerializable> {
    if code % 2 == 1 {
        Err(NotSerializable(code))
    } else {
        Ok(code / 2)
    }
}

#[cohort::remote]
fn parse_on_worker(s: String) -> anyhow::Result<i64> {
    use anyhow::Context;
    let v: i64 = s
        .trim()
        .parse()
        .with_context(|| format!("parsing {s:?} on worker {}", myid()))?;
    Ok(v * 10)
}

#[cohort::remote]
fn fill_channel(c: RemoteChannel<i64>, n: i64) -> cohort::Result<()> {
    for i in 0..n {
        c.put(i)?;
    }
    Ok(())
}

/// Runs this binary as a master of its own in `mode`; its exit code, stdout and stderr.
fn run_mode(mode: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut envs = vec![("FIRST_HOUR_MODE", mode)];
    envs.extend_from_slice(env);
    common::run_self(&envs, &[], Duration::from_secs(30))
}

/// A program that prints a banner and logs before `init` still gets its workers, and the
/// banner lines of each worker arrive as its output: stdout on stdout, stderr on stderr.
fn output_before_init() {
    let (code, out, err) = run_mode("banner", &[]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("banner: my app v1\n"), "{out}");
    assert!(out.contains("workers [2, 3] answer [2, 3]"), "{out}");
    for w in [2, 3] {
        assert!(
            out.contains(&format!("From worker {w}:\tbanner: my app v1")),
            "{out}"
        );
        assert!(
            err.contains(&format!("From worker {w}:\tlog: starting up")),
            "{err}"
        );
        assert!(
            !out.contains(&format!("From worker {w}:\tlog: starting up")),
            "stderr stays on stderr: {out}"
        );
    }
    assert!(
        !out.contains("cohort_worker:") && !err.contains("cohort_worker:"),
        "the address line is the manager's, never shown: {out}{err}"
    );
}

fn banner_mode() -> cohort::Result<()> {
    println!("banner: my app v1");
    eprintln!("log: starting up");
    let _cluster = cohort::init()?;
    let pids = addprocs(2)?;
    let answers: Vec<usize> = pids
        .iter()
        .map(|&p| remotecall_fetch(whoami, p, ()))
        .collect::<cohort::Result<_>>()?;
    println!("workers {pids:?} answer {answers:?}");
    Ok(())
}

/// `let _ = cohort::init()?` drops the guard at once: the next call says so.
fn dropped_guard() {
    let (code, out, err) = run_mode("dropped_guard", &[("COHORT_PROCS", "1")]);
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("workers after the drop: [1]"),
        "the guard removed the worker: {out}"
    );
    assert!(
        out.contains(
            "addprocs: the cluster was shut down when the guard returned by cohort::init() was dropped; \
             keep it for the whole program: `let _cluster = cohort::init()?;` \
             (`let _ = cohort::init()?;` drops it at once)"
        ),
        "{out}"
    );
    assert!(
        out.contains("remotecall_fetch: the cluster was shut down"),
        "{out}"
    );
}

fn dropped_guard_mode() -> cohort::Result<()> {
    #[allow(clippy::let_underscore_must_use)]
    let _ = cohort::init()?;
    println!("workers after the drop: {:?}", workers());
    match addprocs(1) {
        Err(Error::Invalid(m)) => println!("addprocs: {m}"),
        other => println!("addprocs gave {other:?}"),
    }
    match remotecall_fetch(add, 1, (1, 2)) {
        Err(Error::Invalid(m)) => println!("remotecall_fetch: {m}"),
        other => println!("remotecall_fetch gave {other:?}"),
    }
    Ok(())
}

/// Local worker processes of this test, by os pid.
fn children() -> Vec<u32> {
    common::child_pids()
}

/// A launch that fails leaves no process behind, says what the program printed, and the
/// cluster goes on.
fn failed_addprocs_leaves_nothing() {
    let before = children();
    let manager: Arc<dyn cohort::ClusterManager> = Arc::new(LocalManager::new());
    // A program that never reports an address: a timeout, the process killed.
    let params = AddProcsParams {
        count: 2,
        exename: Some("/bin/sh".into()),
        exeflags: Some(vec![
            "-c".into(),
            "echo 'banner: not a worker'; exec sleep 30".into(),
        ]),
        worker_timeout: Duration::from_millis(700),
        ..AddProcsParams::default()
    };
    let t0 = Instant::now();
    let e = cohort::addprocs_with(Arc::clone(&manager), params).unwrap_err();
    assert!(
        matches!(&e, Error::Timeout(m) if m.contains("did not report its address within")),
        "{e:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(
        common::eventually(Duration::from_secs(5), || children() == before),
        "processes left: {:?} (before {before:?})",
        children()
    );
    // A program that exits: its output in the error.
    let params = AddProcsParams {
        count: 1,
        exename: Some("/bin/sh".into()),
        exeflags: Some(vec![
            "-c".into(),
            "echo 'banner: v2'; echo 'cannot open config' >&2; exit 3".into(),
        ]),
        worker_timeout: Duration::from_secs(5),
        ..AddProcsParams::default()
    };
    let e = cohort::addprocs_with(Arc::clone(&manager), params).unwrap_err();
    match &e {
        Error::Invalid(m) => {
            assert!(
                m.ends_with(
                    " exited before reporting its address: cannot open config; stdout: banner: v2"
                ),
                "{m}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        common::eventually(Duration::from_secs(5), || children() == before),
        "processes left: {:?}",
        children()
    );
    assert_eq!(workers(), vec![2, 3]);
    assert_eq!(remotecall_fetch(add, 3, (20, 22)).unwrap(), 42);
}

/// `Result<T, E>` with `E: Display` only: `Ok` travels as `T`, `Err` as `Error::Remote`.
fn fallible_functions() {
    assert_eq!(remotecall_fetch(checked, 2, (8,)).unwrap(), 4);
    let e = remotecall_fetch(checked, 2, (7,)).unwrap_err();
    let r = e.as_remote().expect("a RemoteException");
    assert_eq!((r.pid, r.error.as_str()), (2, "code 7 is not allowed"));
    // Through a Future, remotecall_wait, and on this process.
    assert_eq!(remotecall(checked, 3, (10,)).unwrap().fetch().unwrap(), 5);
    let f = remotecall(checked, 3, (9,)).unwrap();
    assert_eq!(
        f.fetch().unwrap_err().as_remote().map(|r| r.error.as_str()),
        Some("code 9 is not allowed")
    );
    assert_eq!(remotecall_fetch(checked, 1, (2,)).unwrap(), 1);
    let e = remotecall_fetch(checked, 1, (3,)).unwrap_err();
    assert_eq!(
        e.as_remote().map(|r| (r.pid, r.error.as_str())),
        Some((1, "code 3 is not allowed"))
    );
    // anyhow: the whole context chain.
    assert_eq!(
        remotecall_fetch(parse_on_worker, 3, (" 12 ".to_string(),)).unwrap(),
        120
    );
    let e = remotecall_fetch(parse_on_worker, 3, ("twelve".to_string(),)).unwrap_err();
    assert_eq!(
        e.as_remote().map(|r| r.error.as_str()),
        Some("parsing \"twelve\" on worker 3: invalid digit found in string")
    );
    // pmap of a fallible function: plain values.
    let v: Vec<u32> = pmap(checked, [0u32, 2, 4, 6]).unwrap();
    assert_eq!(v, [0, 1, 2, 3]);
    assert_eq!(remotecall_fetch(add, 2, (1, 1)).unwrap(), 2);
}

/// Iterating a channel ends on close; any other error reaches the caller.
fn channel_iteration() {
    let c: RemoteChannel<i64> = RemoteChannel::new(8, 2).unwrap();
    remotecall_fetch(fill_channel, 3, (c.clone(), 5)).unwrap();
    c.close().unwrap();
    let got: Vec<i64> = c.iter().collect::<cohort::Result<_>>().unwrap();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert!(c.iter().next().is_none(), "closed and drained");
    // The owner dies while a reader waits: the reader gets ProcessExited, then the end.
    let p = addprocs(1).unwrap()[0];
    let d: RemoteChannel<i64> = RemoteChannel::new(8, p).unwrap();
    d.put(7).unwrap();
    let reader = {
        let d = d.clone();
        std::thread::spawn(move || d.iter().collect::<Vec<_>>())
    };
    std::thread::sleep(Duration::from_millis(200));
    remote_do(exit_now, p, ()).unwrap();
    let seen = reader.join().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(*seen[0].as_ref().unwrap(), 7);
    assert!(
        matches!(seen[1], Err(Error::ProcessExited(q)) if q == p),
        "{seen:?}"
    );
    assert!(common::eventually(Duration::from_secs(5), || workers() == vec![2, 3]));
    assert_eq!(remotecall_fetch(add, 2, (2, 2)).unwrap(), 4);
}

fn main() {
    match std::env::var("FIRST_HOUR_MODE").as_deref() {
        Ok("banner") => return banner_mode().unwrap(),
        Ok("dropped_guard") => return dropped_guard_mode().unwrap(),
        _ => {}
    }
    let cluster = cohort::init().unwrap();
    assert_eq!(addprocs(2).unwrap(), vec![2, 3]);
    common::run(
        cluster,
        &[
            ("output_before_init", output_before_init),
            (
                "failed_addprocs_leaves_nothing",
                failed_addprocs_leaves_nothing,
            ),
            ("fallible_functions", fallible_functions),
            ("channel_iteration", channel_iteration),
            ("dropped_guard", dropped_guard),
        ],
        Duration::from_secs(60),
        Vec::new(),
    );
}
