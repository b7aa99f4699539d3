//! Test support for the SSH tests (tests/ssh_machines.rs, tests/netns.rs): throwaway OpenSSH
//! servers with test-generated keys (on loopback, or inside a network namespace as a "host"),
//! and a runner that tears everything down on every path — success, failure, panic, timeout.
//!
//! Every sshd runs in the foreground as a child of the test's main thread, with
//! `PR_SET_PDEATHSIG` so that it dies with the test even when the test is killed; its private
//! `/run` (for `/run/sshd`) is a tmpfs in a mount namespace of its own, so nothing is written to
//! the system's directories. Keys, configs and logs live in a private temporary directory that
//! teardown removes. Leftovers of a killed run (namespaces, links, directories named after a
//! pid that no longer exists) are removed by the next run.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
#[path = "../common/mod.rs"]
mod common;
pub use common::{child_pids, eventually, example, finish, kill_children, run_each};
use std::time::{Duration, Instant};

/// A named test.
pub type Test = (&'static str, fn());

/// Whether `name` is a program in `PATH` (or an existing path).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The first of `names` missing, if any.
pub fn missing_tool(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| which(n).is_none())
        .map(|n| n.to_string())
}

/// Runs a command; its stdout, or an error with its stderr.
pub fn cmd(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A private directory `/tmp/{prefix}-{pid}`, made fresh.
pub fn private_dir(prefix: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&d)
        .map_err(|e| format!("creating {}: {e}", d.display()))?;
    Ok(d)
}

/// The `/tmp/{prefix}-{pid}` directories whose pid is gone (left by killed runs).
pub fn stale_dirs(prefix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix(prefix)
                .and_then(|s| s.strip_prefix('-'))
                .and_then(|s| s.parse::<u32>().ok())
                .is_some_and(|pid| !alive(pid))
        })
        .map(|e| e.path())
        .collect()
}

/// Removes `/tmp/{prefix}-{pid}` directories whose pid is gone (left by killed runs).
pub fn sweep_dirs(prefix: &str) {
    for d in stale_dirs(prefix) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Generates the host key, the client key and `authorized_keys` in `dir`; the client key.
pub fn make_keys(dir: &Path) -> Result<PathBuf, String> {
    let host = dir.join("host_key");
    let client = dir.join("client_key");
    for k in [&host, &client] {
        cmd(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "cohort-test",
                "-f",
                &k.to_string_lossy(),
            ],
        )?;
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
        .map_err(|e| format!("authorized_keys: {e}"))?;
    Ok(client)
}

/// ssh flags that log in with the test's key and trust no file outside the test's directory.
pub fn ssh_flags(client_key: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-i",
        &client_key.to_string_lossy(),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ServerAliveInterval=1",
        "-o",
        "ServerAliveCountMax=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The current user's login name.
pub fn user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| cmd("id", &["-un"]).ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "root".into())
}

/// A running sshd.
pub struct Sshd {
    pub child: Child,
    pub ip: String,
    pub port: u16,
    pub log: PathBuf,
}

impl Sshd {
    /// Starts sshd listening on `ip:port`, in network namespace `netns` (with its own host name
    /// and `/dev/shm`, like another host) or in this one.
    pub fn start(
        dir: &Path,
        name: &str,
        ip: &str,
        port: u16,
        netns: Option<(&str, &str)>,
    ) -> Result<Sshd, String> {
        let cfg = dir.join(format!("sshd-{name}.conf"));
        let log = dir.join(format!("sshd-{name}.log"));
        let text = format!(
            "Port {port}\nListenAddress {ip}\nHostKey {d}/host_key\nPidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin yes\n\
             UsePAM no\nAllowTcpForwarding yes\nMaxStartups 200:30:400\nMaxSessions 64\n\
             ClientAliveInterval 2\nClientAliveCountMax 3\nLogLevel VERBOSE\n",
            d = dir.display()
        );
        std::fs::write(&cfg, text).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let sshd = which("sshd").ok_or("sshd not found (install openssh-server)")?;
        let mut script = String::new();
        if let Some((_, host)) = netns {
            script.push_str(&format!(
                "echo {host} > /proc/sys/kernel/hostname && mount -t tmpfs tmpfs /dev/shm && "
            ));
        }
        script.push_str(&format!(
            "mount -t tmpfs -o mode=755 tmpfs /run && mkdir /run/sshd && exec {} -D -e -f {}",
            sshd.display(),
            cfg.display()
        ));
        let mut c = match netns {
            Some((ns, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "unshare", "--uts", "--mount"]);
                c
            }
            None => {
                let mut c = Command::new("unshare");
                c.arg("--mount");
                c
            }
        };
        c.args(["sh", "-c", &script]);
        let logf = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf));
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe, between fork and
        // exec; it touches no memory of the parent.
        unsafe {
            c.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().map_err(|e| format!("starting sshd: {e}"))?;
        let mut s = Sshd {
            child,
            ip: ip.to_string(),
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = s.child.try_wait() {
                return Err(format!(
                    "sshd {name} exited ({st}): {}",
                    std::fs::read_to_string(&s.log).unwrap_or_default().trim()
                ));
            }
            let addr = format!("{ip}:{port}");
            if let Ok(addr) = addr.parse() {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(s);
                }
            }
            if Instant::now() > deadline {
                s.stop();
                return Err(format!(
                    "sshd {name} did not listen on {ip}:{port} within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free TCP port on `ip`.
pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The command line of process `pid`.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

type Teardown = Box<dyn FnOnce() -> Vec<String> + Send>;

static TEARDOWN: Mutex<Option<Teardown>> = Mutex::new(None);

/// Registers what removes the test environment; it runs once, on every way out of [`run`].
/// It returns what it could not remove.
pub fn on_teardown(f: impl FnOnce() -> Vec<String> + Send + 'static) {
    *TEARDOWN.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
}

fn teardown() -> Vec<String> {
    let f = TEARDOWN.lock().unwrap_or_else(|e| e.into_inner()).take();
    match f {
        Some(f) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(_) => vec!["teardown panicked".into()],
        },
        None => Vec::new(),
    }
}

/// Runs `tests` in order (filtered by the free command-line arguments), each within
/// `per_test`; then removes the workers, tears the environment down, and checks that no child
/// process and nothing the teardown reports is left. Exits with 101 on any failure.
pub fn run(cluster: cohort::Cluster, tests: &[Test], per_test: Duration) {
    let start = Instant::now();
    let Some(mut failed) = run_each(tests, per_test, &|| {
        for l in teardown() {
            println!("teardown: {l}");
        }
        kill_children();
    }) else {
        let _ = teardown();
        return;
    };
    let t0 = Instant::now();
    drop(cluster);
    let left = teardown();
    for l in &left {
        println!("left behind: {l}");
        failed.push(format!("left behind: {l}"));
    }
    if !eventually(Duration::from_secs(15), || child_pids().is_empty()) {
        let ps: Vec<String> = child_pids()
            .into_iter()
            .map(|p| format!("{p} ({})", cmdline(p)))
            .collect();
        println!("child processes left behind: {ps:?}");
        kill_children();
        failed.push("no child process left behind".into());
    } else {
        println!(
            "teardown ... ok ({:.2}s): no child process, namespace, key or directory left",
            t0.elapsed().as_secs_f64()
        );
    }
    finish(&failed, start);
}
