//! Local workers: the current program started again in worker mode.

use crate::output::{drain_lines, tail};
use cohort_core::{
    read_worker_address, AddProcsParams, ClusterManager, Error, ManageOp, Pid, Result, WorkerConfig,
};
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts workers on this host by running this program again with `COHORT_WORKER=1`.
///
/// The cluster cookie goes to the worker on its stdin, never on its command line. The worker
/// reports its listener address on its stdout as a tagged line
/// ([`WORKER_ADDRESS_TAG`](cohort_core::WORKER_ADDRESS_TAG)), so that whatever the program
/// prints before `cohort::init()` cannot be taken for it. Everything else the worker prints
/// (before and after the address) reaches the master as `From worker N: ...` lines, stdout on
/// stdout and stderr on stderr. A worker that exits or does not report within the worker
/// timeout is killed and reported with what it printed, and no process of a failed launch is
/// left running.
///
/// # Julia
/// `LocalManager`, `addprocs(n)`.
#[derive(Default)]
pub struct LocalManager {
    children: Arc<Mutex<HashMap<u32, Child>>>,
}

impl LocalManager {
    /// A manager with no workers yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn spawn_one(
        &self,
        params: &AddProcsParams,
        cookie: &str,
    ) -> Result<(Child, std::io::PipeReader, std::io::PipeReader)> {
        let exe = match &params.exename {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| Error::Io {
                context: "finding this program".into(),
                source: e,
            })?,
        };
        let args: Vec<String> = match &params.exeflags {
            Some(a) => a.clone(),
            None => std::env::args().skip(1).collect(),
        };
        let io = |context: &str, source| Error::Io {
            context: context.into(),
            source,
        };
        let (reader, writer) = std::io::pipe().map_err(|e| io("creating a pipe", e))?;
        let (err_reader, err_writer) = std::io::pipe().map_err(|e| io("creating a pipe", e))?;
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("COHORT_WORKER", "1")
            .env(
                "COHORT_WORKER_TIMEOUT",
                params.worker_timeout.as_secs_f64().to_string(),
            )
            .env_remove("COHORT_PROCS")
            .stdin(Stdio::piped())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(err_writer));
        if !params.restrict {
            cmd.env("COHORT_BIND", "0.0.0.0");
        }
        for (k, v) in &params.env {
            cmd.env(k, v);
        }
        if let Some(d) = &params.dir {
            cmd.current_dir(d);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| io(&format!("starting worker {}", exe.display()), e))?;
        drop(cmd);
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A closed pipe is a worker that already exited: its output, read next, says why.
        match writeln!(stdin, "{cookie}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                let _ = child.kill();
                let _ = child.wait();
                Err(io("sending the cookie to a worker", e))
            }
            _ => Ok((child, reader, err_reader)),
        }
    }

    fn reap_later(&self, ospid: u32, grace: Duration) {
        let children = Arc::clone(&self.children);
        let _ = std::thread::Builder::new()
            .name("cohort-reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let deadline = Instant::now() + grace;
                loop {
                    let mut map = children.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(child) = map.get_mut(&ospid) else {
                        return;
                    };
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => {
                            map.remove(&ospid);
                            return;
                        }
                        Ok(None) if Instant::now() >= deadline => {
                            let _ = child.kill();
                            let _ = child.wait();
                            map.remove(&ospid);
                            return;
                        }
                        Ok(None) => {}
                    }
                    drop(map);
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
    }
}

impl Drop for LocalManager {
    fn drop(&mut self) {
        let mut map = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for (_, mut c) in map.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl ClusterManager for LocalManager {
    fn launch(
        &self,
        params: &AddProcsParams,
        launched: &mut dyn FnMut(WorkerConfig),
    ) -> Result<()> {
        let cookie = cohort_core::cluster_cookie()?;
        let mut started = Vec::new();
        for _ in 0..params.count {
            started.push(self.spawn_one(params, &cookie)?);
        }
        // Read every worker's address line in parallel, each within the timeout.
        let (tx, rx) = std::sync::mpsc::channel();
        let mut errs = HashMap::new();
        for (i, (child, reader, err)) in started.into_iter().enumerate() {
            let tx = tx.clone();
            let ospid = child.id();
            self.children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ospid, child);
            errs.insert(ospid, err);
            std::thread::spawn(move || {
                let _ = tx.send((i, ospid, read_worker_address(BufReader::new(reader))));
            });
        }
        drop(tx);
        let deadline = Instant::now() + params.worker_timeout;
        let mut got = Vec::new();
        let mut first_err = None;
        for _ in 0..params.count {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, ospid, Ok((addr, out)))) => {
                    let (host, port) = match addr.rsplit_once(':') {
                        // `[addr]:port` for IPv6: the host is the bare address.
                        Some((h, p)) => (
                            Some(h.trim_start_matches('[').trim_end_matches(']').to_string()),
                            p.parse().ok(),
                        ),
                        None => (None, None),
                    };
                    got.push((
                        i,
                        WorkerConfig {
                            io: Some(out),
                            err: errs
                                .remove(&ospid)
                                .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
                            host,
                            port,
                            address: Some(addr),
                            ospid: Some(ospid),
                            exeflags: params.exeflags.clone().unwrap_or_default(),
                            exename: params.exename.clone(),
                            env: params.env.clone(),
                            dir: params.dir.clone(),
                            ..WorkerConfig::default()
                        },
                    ));
                }
                Ok((_, ospid, Err(none))) => {
                    self.reap_later(ospid, Duration::ZERO);
                    let err = errs.remove(&ospid).map(drain_lines).unwrap_or_default();
                    // Its stderr first: that is where a program says why it stopped.
                    let mut why = Vec::new();
                    if !err.is_empty() {
                        why.push(tail(&err));
                    }
                    if none.output.iter().any(|l| !l.trim().is_empty()) {
                        why.push(format!("stdout: {}", tail(&none.output)));
                    }
                    if why.is_empty() {
                        why.push("no output".into());
                    }
                    first_err.get_or_insert(Error::Invalid(format!(
                        "worker process {ospid} exited before reporting its address: {}",
                        why.join("; ")
                    )));
                }
                Err(_) => {
                    first_err.get_or_insert(Error::Timeout(format!(
                        "a local worker did not report its address within {:?} (COHORT_WORKER_TIMEOUT)",
                        params.worker_timeout
                    )));
                    break;
                }
            }
        }
        got.sort_by_key(|(i, _)| *i);
        let reported: Vec<u32> = got.iter().filter_map(|(_, c)| c.ospid).collect();
        if first_err.is_some() {
            // Kill those that never reported.
            let stale: Vec<u32> = self
                .children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .copied()
                .filter(|p| !reported.contains(p))
                .collect();
            for p in stale {
                self.reap_later(p, Duration::ZERO);
            }
        }
        for (_, c) in got {
            launched(c);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn manage(&self, _pid: Pid, config: &WorkerConfig, op: ManageOp) {
        if op == ManageOp::Finalize {
            if let Some(p) = config.ospid {
                self.reap_later(p, Duration::from_secs(2));
            }
        }
    }

    fn kill(&self, _pid: Pid, config: &WorkerConfig) {
        // The worker was asked to exit; make sure within a few seconds, then reap it.
        if let Some(p) = config.ospid {
            self.reap_later(p, Duration::from_secs(5));
        }
    }
}
