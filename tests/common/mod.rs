//! A small harness for integration tests that start real worker processes.
//!
//! Every test binary runs with `harness = false`: `main` calls `cohort::init()` first (so that a
//! worker started from the same binary serves instead of running tests), then runs the listed
//! tests in order on the one cluster this process can have. Each test is bounded in time; a
//! test that hangs fails the run, and the watchdog kills every child process by pid before
//! exiting. After the last test, no child process may remain.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

/// A named test.
pub type Test = (&'static str, fn());

/// Children of this process (pids), from `/proc`.
pub fn child_pids() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Kills every child process of this one, by pid.
pub fn kill_children() {
    for p in child_pids() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Polls `cond` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Runs `tests` (filtered by the first free command-line argument, as libtest does), each
/// within `per_test`, then removes the workers and checks that no child process is left.
/// `others` are child processes running the same suite another way (another transport,
/// another topology); their failure fails this run too.
pub fn run(
    cluster: cohort::Cluster,
    tests: &[Test],
    per_test: Duration,
    others: Vec<std::process::Child>,
) {
    let start = Instant::now();
    let Some(mut failed) = run_each(tests, per_test, &|| {
        println!("killing child processes");
        kill_children();
    }) else {
        return;
    };
    drop(cluster);
    for mut c in others {
        let deadline = Instant::now() + per_test * tests.len() as u32;
        loop {
            match c.try_wait() {
                Ok(Some(s)) if s.success() => break,
                Ok(Some(s)) => {
                    println!("a child suite (another transport or topology) failed: {s}");
                    failed.push("child suite".into());
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    failed.push("child suite (timed out)".into());
                    break;
                }
            }
        }
    }
    let left = eventually(Duration::from_secs(10), || child_pids().is_empty());
    if !left {
        println!("child processes left behind: {:?}", child_pids());
        kill_children();
        failed.push("no child process left behind".into());
    }
    finish(&failed, start);
}

/// Runs the tests chosen by the free command-line arguments (as libtest filters), in order,
/// each within `per_test`; a test that hangs calls `on_timeout` and ends the process with 101.
/// Returns the failed tests' names, or `None` after answering `--list`.
pub fn run_each(tests: &[Test], per_test: Duration, on_timeout: &dyn Fn()) -> Option<Vec<String>> {
    if std::env::args().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return None;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<&Test> = tests
        .iter()
        .filter(|(n, _)| args.is_empty() || args.iter().any(|a| n.contains(a.as_str())))
        .collect();
    println!("\nrunning {} tests", chosen.len());
    let mut failed = Vec::new();
    for (name, f) in chosen {
        let (tx, rx) = std::sync::mpsc::channel();
        let t0 = Instant::now();
        let f = *f;
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let r = std::panic::catch_unwind(f);
                let _ = tx.send(r.is_ok());
            })
            .expect("spawn test thread");
        match rx.recv_timeout(per_test) {
            Ok(true) => println!("test {name} ... ok ({:.2}s)", t0.elapsed().as_secs_f64()),
            Ok(false) => {
                println!("test {name} ... FAILED");
                failed.push(name.to_string());
            }
            Err(_) => {
                println!("test {name} ... FAILED (timed out after {per_test:?})");
                on_timeout();
                let _ = std::io::Write::flush(&mut std::io::stdout());
                std::process::exit(101);
            }
        }
    }
    Some(failed)
}

/// Prints the result line; ends the process with 101 when anything failed.
pub fn finish(failed: &[String], start: Instant) {
    println!(
        "\ntest result: {}. {} failed; finished in {:.2}s",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!("failures: {failed:?}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::process::exit(101);
    }
}

/// An example binary built by `cargo test` (next to the test binaries), if it is there.
pub fn example(name: &str) -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join(name);
    p.is_file().then_some(p)
}

/// Runs this binary with `envs` (the rest inherited, but for `COHORT_LOG` and `COHORT_PROCS`,
/// which only `envs` set), stdin closed, within `limit` (then killed, by pid, and the test
/// fails); returns its exit code, stdout and stderr.
pub fn run_self(
    envs: &[(&str, &str)],
    args: &[&str],
    limit: Duration,
) -> (Option<i32>, String, String) {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(args)
        .env_remove("COHORT_LOG")
        .env_remove("COHORT_PROCS")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} with {envs:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}
