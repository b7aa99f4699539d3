//! Real processes: the test binary re-runs itself as a worker or a creator
//! (`COHORT_SHM_ROLE` set), as rayon's tests do with `current_exe()`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use cohort_shm::ndarray::Ix2;
use cohort_shm::{Pid, SharedArray, ShmError};
use common::{decode_handle, encode_handle, name_exists};

/// Kills the child if the test fails before it does (the creator role sleeps for minutes).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(role: &str, handle: Option<&str>, pid: Pid) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_main",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env("COHORT_SHM_ROLE", role)
    .env("COHORT_SHM_PID", pid.to_string())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    if let Some(h) = handle {
        cmd.env("COHORT_SHM_HANDLE", h);
    }
    cmd.spawn().unwrap()
}

/// Read stdout lines until one starts with `tag`, returning the rest of it.
fn read_tagged(reader: &mut impl BufRead, tag: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child exited before printing {tag}"
        );
        if let Some(rest) = line.strip_prefix(tag) {
            return rest.trim().to_owned();
        }
    }
}

/// The child side. A no-op when run as an ordinary test.
#[test]
fn child_main() {
    let Ok(role) = std::env::var("COHORT_SHM_ROLE") else {
        return;
    };
    let pid: Pid = std::env::var("COHORT_SHM_PID").unwrap().parse().unwrap();
    let handle = std::env::var("COHORT_SHM_HANDLE")
        .ok()
        .map(|h| decode_handle(&h));
    let stdin = std::io::stdin();
    match role.as_str() {
        // Attach, prefault and fill this pid's localindices with the pid.
        "fill" => {
            let s = SharedArray::<f64, Ix2>::attach(handle.as_ref().unwrap(), pid).unwrap();
            s.prefault_local(pid).unwrap();
            s.local_chunk_mut(pid).unwrap().fill(pid as f64);
            println!("DONE");
        }
        // Expect a size mismatch from a tampered handle.
        "expect_size_mismatch" => {
            let e = SharedArray::<f64, Ix2>::attach(handle.as_ref().unwrap(), pid).unwrap_err();
            assert!(matches!(e, ShmError::SizeMismatch { .. }), "{e}");
            println!("DONE");
        }
        // Create for pids [1, 2], write own share, hand out the handle, wait for the go, then
        // (if told to) finish, and wait to be killed.
        "creator" => {
            let pending = SharedArray::<f64, Ix2>::create((100, 10), &[1, 2], 1).unwrap();
            pending.array().local_chunk_mut(1).unwrap().fill(1.0);
            println!("HANDLE {}", encode_handle(pending.handle()));
            let mut line = String::new();
            stdin.lock().read_line(&mut line).unwrap();
            if line.trim() == "finish" {
                let _s = pending.finish().unwrap();
                println!("FINISHED");
                std::thread::sleep(std::time::Duration::from_secs(600));
            } else {
                std::mem::forget(pending); // pretend to die before finishing
                println!("STALLED");
                std::thread::sleep(std::time::Duration::from_secs(600));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn workers_attach_by_name_and_fill_their_shares() {
    let pids = [1, 2, 3, 4];
    let pending = SharedArray::<f64, Ix2>::create((301, 7), &pids, 1).unwrap();
    let h = encode_handle(pending.handle());
    let children: Vec<Child> = pids[1..]
        .iter()
        .map(|&p| spawn("fill", Some(&h), p))
        .collect();
    pending.array().local_chunk_mut(1).unwrap().fill(1.0);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("DONE"));
    }
    let s = pending.finish().unwrap();
    assert!(!name_exists(&s.handle()));
    let data = s.as_slice();
    for p in pids {
        assert!(
            s.localindices(p).all(|k| data[k] == p as f64),
            "pid {p}'s share"
        );
    }
}

#[test]
fn attach_checks_the_object_size() {
    let pending = SharedArray::<f64, Ix2>::create((10, 10), &[1, 2], 1).unwrap();
    let bad = common::tamper(pending.handle(), |m| m.dims = vec![10, 11]);
    let out = spawn("expect_size_mismatch", Some(&encode_handle(&bad)), 2)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn killed_creator_after_finish_leaves_nothing_and_memory_survives() {
    let mut guard = KillOnDrop(spawn("creator", None, 1));
    let child = &mut guard.0;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let handle = decode_handle(&read_tagged(&mut out, "HANDLE "));
    let s = SharedArray::<f64, Ix2>::attach(&handle, 2).unwrap();
    s.local_chunk_mut(2).unwrap().fill(2.0);
    writeln!(child.stdin.as_mut().unwrap(), "finish").unwrap();
    read_tagged(&mut out, "FINISHED");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!name_exists(&handle), "unlinked before the kill");
    let data = s.as_slice();
    assert!(
        s.localindices(1).all(|k| data[k] == 1.0),
        "creator's writes survive it"
    );
    assert!(s.localindices(2).all(|k| data[k] == 2.0));
    drop(data);
    cohort_shm::release(handle.id());
}

#[test]
fn creator_killed_before_finish_is_swept() {
    let mut guard = KillOnDrop(spawn("creator", None, 1));
    let child = &mut guard.0;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let handle = decode_handle(&read_tagged(&mut out, "HANDLE "));
    writeln!(child.stdin.as_mut().unwrap(), "stall").unwrap();
    read_tagged(&mut out, "STALLED");
    assert!(name_exists(&handle), "still named while the creator lives");
    cohort_shm::sweep_orphans().unwrap();
    assert!(name_exists(&handle), "a live creator's name is not swept");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        name_exists(&handle),
        "a SIGKILL inside the window leaks the name..."
    );
    let removed = cohort_shm::sweep_orphans().unwrap();
    assert!(
        !name_exists(&handle),
        "...and sweep_orphans removes it ({removed:?})"
    );
}
