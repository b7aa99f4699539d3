//! Real processes: the test binary re-runs itself as a worker or a creator
//! (`COHORT_SHM_ROLE` set), as rayon's tests do with `current_exe()`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};

use cohort_shm::ndarray::Ix2;
use cohort_shm::{Pid, SegmentId, SharedArray, ShmError};
use common::{attachable, decode_handle, encode_handle};

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
        // Expect the creator's descriptor to be gone.
        "expect_gone" => {
            let e = SharedArray::<f64, Ix2>::attach(handle.as_ref().unwrap(), pid).unwrap_err();
            assert!(
                matches!(&e, ShmError::Io { op, .. } if op.contains("descriptor is gone")),
                "{e}"
            );
            assert!(cohort_shm::mapped_segments().is_empty());
            println!("DONE");
        }
        // A first construction in a fresh process (which sweeps the names of dead creators).
        "create_one" => {
            let s = SharedArray::<u8, Ix2>::create((4, 4), &[pid], pid).unwrap();
            drop(s.finish().unwrap());
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
    assert!(!attachable(&s.handle()));
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
    assert!(!attachable(&handle), "closed to attachers before the kill");
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
fn creator_killed_before_finish_leaves_nothing() {
    let mut guard = KillOnDrop(spawn("creator", None, 1));
    let child = &mut guard.0;
    let creator = child.id();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let handle = decode_handle(&read_tagged(&mut out, "HANDLE "));
    // This process attaches while the creator constructs, then the creator dies mid-way.
    let s = SharedArray::<f64, Ix2>::attach(&handle, 2).unwrap();
    s.local_chunk_mut(2).unwrap().fill(2.0);
    writeln!(child.stdin.as_mut().unwrap(), "stall").unwrap();
    read_tagged(&mut out, "STALLED");
    assert!(
        attachable(&handle),
        "open to attachers while the creator lives"
    );
    assert!(names_of(creator).is_empty(), "a segment never has a name");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!attachable(&handle), "the door closed with the creator");
    assert!(names_of(creator).is_empty());
    // A pid that had not attached yet gets a clear error, and maps nothing.
    let out = spawn("expect_gone", Some(&encode_handle(&handle)), 2)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The pids that had mapped it keep the memory and every write.
    let data = s.as_slice();
    assert!(s.localindices(1).all(|k| data[k] == 1.0));
    assert!(s.localindices(2).all(|k| data[k] == 2.0));
    drop(data);
    drop(s);
    assert!(cohort_shm::release(handle.id()));
}

/// `/dev/shm` names of the legacy form made by OS process `pid`.
fn names_of(pid: u32) -> Vec<String> {
    let prefix = format!("{}{pid}-", cohort_shm::NAME_PREFIX);
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// A `/dev/shm` name of the legacy form for OS pid `pid`, created here, unlinked on drop.
struct LegacyName(String);

impl LegacyName {
    fn new(pid: u32) -> (LegacyName, std::os::fd::OwnedFd) {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        let name = format!(
            "/{}{pid}-{}",
            cohort_shm::NAME_PREFIX,
            SegmentId::random().unwrap()
        );
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
        let fd =
            nix::sys::mman::shm_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        (LegacyName(name), fd)
    }

    fn exists(&self) -> bool {
        std::path::Path::new("/dev/shm")
            .join(self.0.trim_start_matches('/'))
            .exists()
    }
}

impl Drop for LegacyName {
    fn drop(&mut self) {
        let _ = nix::sys::mman::shm_unlink(self.0.as_str());
    }
}

#[test]
fn first_construction_sweeps_names_whose_creator_is_gone() {
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    // A live process that holds nothing: the pid of the name's creator, reused.
    let reused = KillOnDrop(Command::new("sleep").arg("60").spawn().unwrap());
    let (of_dead, _) = LegacyName::new(dead);
    let (of_reused, _) = LegacyName::new(reused.0.id());
    // This process as a live creator: one holding a descriptor, one holding a mapping only.
    let (held_fd, _keep_fd) = LegacyName::new(std::process::id());
    let (held_map, fd) = LegacyName::new(std::process::id());
    let map = memmap2::MmapOptions::new()
        .len(4096)
        .map_raw(&std::fs::File::from(fd))
        .unwrap();
    // Another user's name of a dead creator (only root can make one here).
    let others = nix::unistd::geteuid().is_root().then(|| {
        let (n, fd) = LegacyName::new(dead);
        nix::unistd::fchown(fd.as_raw_fd(), Some(65534.into()), Some(65534.into())).unwrap();
        n
    });
    assert!(of_dead.exists() && of_reused.exists());
    let out = spawn("create_one", None, 1).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!of_dead.exists(), "the name of a dead creator is swept");
    assert!(!of_reused.exists(), "the name of a reused pid is swept");
    assert!(held_fd.exists(), "a live creator's name (descriptor) stays");
    assert!(held_map.exists(), "a live creator's name (mapping) stays");
    if let Some(n) = &others {
        assert!(n.exists(), "another user's name stays");
    }
    drop(map);
}
