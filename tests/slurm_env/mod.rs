//! Test support for the Slurm tests (tests/slurm.rs, tests/netns.rs): a throwaway Slurm cluster
//! started and stopped by `ci/slurm`, and batch jobs that are bounded in time and cancelled by
//! id when they overrun.
//!
//! Every daemon, key, config, job script and job output lives in the cluster's directory,
//! which `stop` removes; a directory named after a pid that no longer exists is what a killed
//! run left, and the next run stops its daemons (`ci/slurm stop` signals only processes whose
//! command line names that directory) and removes it.

#![allow(dead_code, unreachable_pub)]

use crate::ssh_env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A running cluster.
pub struct Slurm {
    /// Its directory (`ci/slurm start DIR`).
    pub dir: PathBuf,
    /// Its `slurm.conf`, for `SLURM_CONF`.
    pub conf: PathBuf,
}

static CURRENT: OnceLock<Slurm> = OnceLock::new();

/// The cluster [`start`] started.
pub fn current() -> &'static Slurm {
    CURRENT.get().expect("Slurm started")
}

/// `ci/slurm`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/slurm")
}

/// Why no cluster runs: what is missing, if anything.
pub fn missing() -> Option<String> {
    if let Some(t) = ssh_env::missing_tool(&["munged", "slurmctld", "slurmd", "sbatch", "squeue"]) {
        return Some(format!(
            "`{t}` is not installed (apt-get install slurm-wlm munge)"
        ));
    }
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (slurmd starts jobs as their user)".into());
    }
    None
}

/// Stops the clusters of killed runs: `/tmp/{prefix}-{pid}{sub}` for pids that are gone.
pub fn sweep_stale(prefix: &str, sub: &str) {
    for dir in ssh_env::stale_dirs(prefix) {
        let d = dir.join(sub.trim_start_matches('/'));
        if d.is_dir() {
            let _ = run_limited(
                Command::new(script()).arg("stop").arg(&d),
                Duration::from_secs(30),
            );
        }
    }
}

/// Starts a cluster in `dir` (`ci/slurm start DIR ARGS`); it becomes [`current`].
pub fn start(dir: &Path, args: &[String]) -> Result<&'static Slurm, String> {
    let out = run_limited(
        Command::new(script()).arg("start").arg(dir).args(args),
        Duration::from_secs(90),
    );
    let conf = dir.join("slurm.conf");
    match out {
        Ok((0, text)) if text.contains(&format!("SLURM_CONF={}", conf.display())) => {
            let _ = CURRENT.set(Slurm {
                dir: dir.to_path_buf(),
                conf,
            });
            Ok(current())
        }
        Ok((_, text)) | Err(text) => {
            let _ = run_limited(
                Command::new(script()).arg("stop").arg(dir),
                Duration::from_secs(30),
            );
            Err(format!("ci/slurm start: {text}"))
        }
    }
}

/// Stops the current cluster (if one was started); what was left: jobs still queued, daemons
/// that would not stop, the directory.
pub fn stop() -> Vec<String> {
    static STOPPED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some(s) = CURRENT.get() else {
        return Vec::new();
    };
    // Teardown may run twice (on its way out, and as a guard is dropped).
    if STOPPED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Vec::new();
    }
    let mut left = Vec::new();
    let busy = squeue_all();
    if !busy.trim().is_empty() {
        left.push(format!("jobs: {}", busy.trim()));
    }
    match run_limited(
        Command::new(script()).arg("stop").arg(&s.dir),
        Duration::from_secs(30),
    ) {
        Ok((0, _)) => {}
        Ok((_, t)) | Err(t) => left.push(format!("ci/slurm stop: {t}")),
    }
    if s.dir.exists() {
        left.push(format!("directory {}", s.dir.display()));
    }
    left
}

/// Runs `cmd` with merged output within `limit` (killed by pid after it); (status, output).
pub fn run_limited(cmd: &mut Command, limit: Duration) -> Result<(i32, String), String> {
    let (r, w) = std::io::pipe().map_err(|e| e.to_string())?;
    let w2 = w.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(w)
        .stderr(w2)
        .spawn()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    // Our copies of the write end: EOF comes with the child's exit.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut { r }, &mut s);
        let _ = tx.send(s);
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let st = child.wait().map_err(|e| e.to_string())?;
            Ok((st.code().unwrap_or(-1), out))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "{:?} did not finish within {limit:?}",
                cmd.get_program()
            ))
        }
    }
}

/// A Slurm command for the current cluster.
pub fn cmd(prog: &str) -> Command {
    let mut c = Command::new(prog);
    c.env("SLURM_CONF", &current().conf);
    c
}

/// `squeue`: one `ID STATE NAME` line per job.
pub fn squeue_all() -> String {
    let mut c = cmd("squeue");
    c.args(["-h", "-o", "%i %T %j"]);
    run_limited(&mut c, Duration::from_secs(10)).map_or_else(|e| e, |(_, t)| t)
}

/// The state of job `id`, or `None` once Slurm has forgotten it.
pub fn job_state(id: &str) -> Option<String> {
    let mut c = cmd("squeue");
    c.args(["-h", "-j", id, "-o", "%T"]);
    match run_limited(&mut c, Duration::from_secs(10)) {
        Ok((0, t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => None,
    }
}

/// Cancels job `id`.
pub fn scancel(id: &str) {
    let mut c = cmd("scancel");
    c.arg(id);
    let _ = run_limited(&mut c, Duration::from_secs(10));
}

/// The node names, as sinfo lists them.
pub fn nodes() -> Vec<String> {
    let mut c = cmd("sinfo");
    c.args(["-h", "-N", "-o", "%N"]);
    let out = run_limited(&mut c, Duration::from_secs(10)).unwrap().1;
    let mut v: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    v.dedup();
    v
}

/// A submitted batch job.
pub struct Job {
    /// Its id.
    pub id: String,
    /// Its output file.
    pub out: PathBuf,
    /// When `sbatch` was run (seconds since the epoch).
    pub submitted: f64,
}

/// Seconds since the epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Submits `body` as a batch script (`sbatch SBATCH_ARGS`): each output line is stamped with
/// the time (seconds since the epoch) and the script's exit status is its last line.
pub fn submit(sbatch: &[&str], body: &str, env: &[(&str, &str)]) -> Job {
    submit_as(sbatch, body, env, true)
}

/// [`submit`]; unstamped, the script `exec`s `body` (which is then the batch step's process).
pub fn submit_as(sbatch: &[&str], body: &str, env: &[(&str, &str)], stamped: bool) -> Job {
    static N: Mutex<u32> = Mutex::new(0);
    let n = {
        let mut g = N.lock().unwrap();
        *g += 1;
        *g
    };
    let dir = &current().dir;
    let path = dir.join(format!("job{n}.sh"));
    let text = if stamped {
        // The stamper ignores SIGTERM, so that what the program prints as a job is
        // cancelled still arrives.
        format!(
            "#!/bin/bash\nset -o pipefail\n\
             stamp() {{ trap '' TERM; while IFS= read -r l; do printf '%s %s\\n' \"$(date +%s.%N)\" \"$l\"; done; }}\n\
             ( {body} ) 2>&1 | stamp\nrc=$?\necho \"$(date +%s.%N) exit=$rc\"\n"
        )
    } else {
        format!("#!/bin/bash\nexec {body}\n")
    };
    std::fs::write(&path, text).unwrap();
    let out = dir.join(format!("job{n}.out"));
    let mut c = cmd("sbatch");
    c.arg("--parsable")
        .args(sbatch)
        .arg("-o")
        .arg(&out)
        .arg("-D")
        .arg(dir)
        .arg(&path);
    // Jobs inherit this environment: root may run OpenMPI, with more ranks than cores.
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env_remove("COHORT_PROCS")
        .env_remove("COHORT_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    let submitted = now();
    let (code, text) = run_limited(&mut c, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("sbatch: {e}; slurmctld's log ends:\n{}", log_tail(dir)));
    assert_eq!(code, 0, "sbatch: {text}");
    let id = text.trim().split(';').next().unwrap().to_string();
    println!("  job {id} ({}): {body}", sbatch.join(" "));
    Job { id, out, submitted }
}

/// The last lines of slurmctld's log, for a failure's message.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("slurmctld.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl Job {
    /// Its output so far: (stamp, line), the stamp 0 on unstamped lines.
    pub fn lines(&self) -> Vec<(f64, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| match l.split_once(' ') {
                Some((t, rest)) if t.parse::<f64>().is_ok() => {
                    (t.parse().unwrap(), rest.to_string())
                }
                _ => (0.0, l.to_string()),
            })
            .collect()
    }

    /// Its output so far, without the stamps.
    pub fn text(&self) -> String {
        self.lines().into_iter().map(|(_, l)| l + "\n").collect()
    }

    /// Waits until the job is over (at most `limit`, then cancels it and fails); its output.
    pub fn wait(&self, limit: Duration) -> String {
        let end = Instant::now() + limit;
        while let Some(st) = job_state(&self.id) {
            if !matches!(
                st.as_str(),
                "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING"
            ) {
                break;
            }
            if Instant::now() > end {
                scancel(&self.id);
                let _ = ssh_env::eventually(Duration::from_secs(15), || self.over());
                panic!(
                    "job {} did not finish within {limit:?}:\n{}",
                    self.id,
                    self.text()
                );
            }
            // Each poll is a request to slurmctld: a few a second.
            std::thread::sleep(Duration::from_millis(150));
        }
        // Its output file is complete once the job is.
        let _ = ssh_env::eventually(Duration::from_secs(5), || {
            self.text().lines().any(|l| l.starts_with("exit="))
        });
        let t = self.text();
        for l in t.lines() {
            println!("  | {l}");
        }
        t
    }

    /// Whether it no longer runs.
    pub fn over(&self) -> bool {
        job_state(&self.id).is_none_or(|s| s != "RUNNING" && s != "COMPLETING")
    }

    /// The stamp of the first line containing `s`.
    pub fn when(&self, s: &str) -> Option<f64> {
        self.lines()
            .into_iter()
            .find(|(_, l)| l.contains(s))
            .map(|(t, _)| t)
    }
}

/// The exit status a stamped job's script reported.
pub fn exit_of(text: &str) -> Option<i32> {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("exit="))
        .and_then(|s| s.trim().parse().ok())
}
