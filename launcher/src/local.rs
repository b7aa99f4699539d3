//! Local workers: the current program started again in worker mode.

use cohort_core::{AddProcsParams, ClusterManager, Error, ManageOp, Pid, Result, WorkerConfig};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts workers on this host by running this program again with `COHORT_WORKER=1`.
///
/// The cluster cookie goes to the worker on its stdin, never on its command line. The worker
/// prints its listener address as the first line of its stdout; its later output (stdout and
/// stderr together) is shown by the master as `From worker N: ...`. A worker that does not
/// answer within the worker timeout is killed and reported.
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
    ) -> Result<(Child, std::io::PipeReader)> {
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
        let writer2 = writer.try_clone().map_err(|e| io("creating a pipe", e))?;
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
            .stderr(Stdio::from(writer2));
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
            _ => Ok((child, reader)),
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
        for (i, (child, reader)) in started.into_iter().enumerate() {
            let tx = tx.clone();
            let ospid = child.id();
            self.children
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ospid, child);
            std::thread::spawn(move || {
                let mut r = BufReader::new(reader);
                let mut line = String::new();
                let res = r.read_line(&mut line).map(|n| (n, line));
                let _ = tx.send((i, ospid, res, r));
            });
        }
        drop(tx);
        let deadline = Instant::now() + params.worker_timeout;
        let mut got = Vec::new();
        let mut first_err = None;
        for _ in 0..params.count {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                // A worker that cannot start says so on its first line (`env::exit_worker`).
                Ok((i, ospid, Ok((n, line)), reader))
                    if n > 0 && !line.trim().is_empty() && !line.starts_with("cohort worker: ") =>
                {
                    let addr = line.trim().to_string();
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
                            io: Some(Box::new(reader)),
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
                Ok((_, ospid, res, mut reader)) => {
                    let mut rest = res.as_ref().map(|(_, l)| l.clone()).unwrap_or_default();
                    let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
                    self.reap_later(ospid, Duration::ZERO);
                    first_err.get_or_insert(Error::Invalid(format!(
                        "worker process {ospid} exited before reporting its address{}{}",
                        res.err().map(|e| format!(" ({e})")).unwrap_or_default(),
                        if rest.trim().is_empty() {
                            String::new()
                        } else {
                            format!(": {}", rest.trim())
                        }
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
