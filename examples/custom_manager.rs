//! A cluster manager of our own (the counterpart of the seeds' `clustermanager/simple`): it
//! starts local workers itself and links the master to them over Unix domain sockets through
//! `connect`, while the program's own transport stays TCP.
//!
//! What a manager does:
//! - `launch` starts the workers (here: this program again, with `COHORT_WORKER=1`), hands each
//!   the cluster cookie on stdin, reads the address it reports (`cohort::read_worker_address`:
//!   the tagged line, whatever the program printed first), and reports one `WorkerConfig` per
//!   worker;
//! - `connect` opens the link to a worker (here: a Unix socket); returning `None` would let the
//!   transport connect to `config.address`;
//! - `manage` hears of each worker's `Register`, `Interrupt`, `Deregister` and `Finalize`;
//! - `kill` makes a worker that was asked to exit go for sure (`rmprocs`).
use cohort::prelude::*;
use cohort::{AddProcsParams, ClusterManager, ManageOp, WorkerConfig};
use std::io::{BufReader, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cohort::remote]
fn hello(from: String) -> String {
    format!(
        "worker {} (os pid {}) greets {from}",
        myid(),
        std::process::id()
    )
}

#[cohort::remote]
fn relay(to: usize) -> cohort::Result<String> {
    remotecall_fetch(hello, to, (format!("worker {}", myid()),))
}

/// Starts workers that listen on Unix sockets, and connects to them itself.
#[derive(Default)]
struct UnixSocketManager {
    children: Mutex<Vec<Child>>,
}

impl ClusterManager for UnixSocketManager {
    fn launch(
        &self,
        params: &AddProcsParams,
        launched: &mut dyn FnMut(WorkerConfig),
    ) -> cohort::Result<()> {
        let cookie = cohort::cluster_cookie()?;
        let io = |e| cohort::Error::Invalid(format!("starting a worker: {e}"));
        for _ in 0..params.count {
            let mut child = Command::new(std::env::current_exe().map_err(io)?)
                .env("COHORT_WORKER", "1")
                // The workers listen on Unix sockets, and talk to each other that way too.
                .env("COHORT_TRANSPORT", "unix")
                .env(
                    "COHORT_WORKER_TIMEOUT",
                    params.worker_timeout.as_secs_f64().to_string(),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(io)?;
            writeln!(child.stdin.take().expect("piped"), "{cookie}").map_err(io)?;
            let out = BufReader::new(child.stdout.take().expect("piped"));
            // A real manager reads on a thread with a deadline (the worker timeout).
            let (path, out) = cohort::read_worker_address(out).map_err(|none| {
                let _ = child.kill();
                let _ = child.wait();
                cohort::Error::Invalid(format!(
                    "worker exited before reporting its address: {}",
                    none.tail()
                ))
            })?;
            println!("launched worker os pid {} listening on {path}", child.id());
            launched(WorkerConfig {
                address: Some(path),
                ospid: Some(child.id()),
                io: Some(out),
                ..Default::default()
            });
            self.children.lock().unwrap().push(child);
        }
        Ok(())
    }

    fn connect(&self, pid: usize, config: &WorkerConfig) -> Option<cohort::Result<OwnedFd>> {
        use std::os::linux::net::SocketAddrExt;
        let path = config.address.clone()?;
        // Workers listen in the abstract namespace (`@name`: no file to clean up).
        let name = path.strip_prefix('@')?;
        Some(
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|a| std::os::unix::net::UnixStream::connect_addr(&a))
                .map(OwnedFd::from)
                .map_err(|e| {
                    cohort::Error::Invalid(format!("connecting to worker {pid} at {path}: {e}"))
                }),
        )
    }

    fn manage(&self, pid: usize, _config: &WorkerConfig, op: ManageOp) {
        println!("manage(pid {pid}, {op:?})");
    }

    fn kill(&self, _pid: usize, config: &WorkerConfig) {
        let mut children = self.children.lock().unwrap();
        if let Some(c) = children.iter_mut().find(|c| Some(c.id()) == config.ospid) {
            // It was asked to exit; give it a moment, then make sure.
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let manager = Arc::new(UnixSocketManager::default());
    let pids = cohort::addprocs_with(
        manager,
        AddProcsParams {
            count: 2,
            ..Default::default()
        },
    )?;
    println!("workers: {pids:?}");
    for &p in &pids {
        println!(
            "{}",
            remotecall_fetch(hello, p, ("the master".to_string(),))?
        );
    }
    println!("{}", remotecall_fetch(relay, pids[0], (pids[1],))?);
    rmprocs(&pids, Duration::from_secs(10))?;
    println!("removed; workers() = {:?}", workers());
    Ok(())
}
