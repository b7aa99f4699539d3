//! Machine specs, machine files, the `cohort` command, and SSH workers against a throwaway
//! OpenSSH server on loopback (started by the test with its own keys; see tests/ssh_env).
//!
//! The SSH tests need root (the server runs with privilege separation in a mount namespace of
//! its own) and OpenSSH; where they are missing those tests print why and pass. The parsing
//! and CLI tests run everywhere.
//!
//! This binary has two more roles, chosen by its first argument: `--as-cli ARGS...` runs the
//! `cohort` command's code (when the `cohort` binary is not built), and `--as-program` is the
//! cohort program that the command runs (it reports what `cohort::init()` set up).

mod ssh_env;

use cohort::managers::{
    parse_machine_file, read_machine_file, Machine, SpecError, SshManager, SshOptions,
};
use cohort::prelude::*;
use cohort::{AddProcsParams, ClusterManager, Count, Error, ManageOp, WorkerConfig};
use cohort_launcher::cli::{self, Cli, HELP};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const SILENT: &str = "COHORT_SSHM_SILENT_WORKER";

#[cohort::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cohort::remote]
fn ssh_connection() -> String {
    std::env::var("SSH_CONNECTION").unwrap_or_default()
}

#[cohort::remote]
fn timeout_env() -> String {
    std::env::var("COHORT_WORKER_TIMEOUT").unwrap_or_default()
}

#[cohort::remote]
fn my_env(k: String) -> String {
    std::env::var(k).unwrap_or_default()
}

#[cohort::remote]
fn cwd() -> String {
    std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

#[cohort::remote]
fn shout() {
    println!("shout from {}", myid());
    eprintln!("and on stderr from {}", myid());
}

#[cohort::remote]
fn call(pid: usize) -> cohort::Result<i64> {
    remotecall_fetch(add, pid, (1, 2))
}

// ---------- machine specs ----------

fn m(
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    bind: Option<&str>,
    bport: Option<u16>,
    count: Count,
) -> Machine {
    Machine {
        user: user.map(String::from),
        host: host.into(),
        port,
        bind_addr: bind.map(String::from),
        bind_port: bport,
        count,
    }
}

fn spec_forms() {
    use Count::*;
    let cases: Vec<(&str, Machine)> = vec![
        ("remote1", m(None, "remote1", None, None, None, N(1))),
        (
            "user@remote2",
            m(Some("user"), "remote2", None, None, None, N(1)),
        ),
        (
            "user@remote3:2222",
            m(Some("user"), "remote3", Some(2222), None, None, N(1)),
        ),
        (
            "node.example.org:22",
            m(None, "node.example.org", Some(22), None, None, N(1)),
        ),
        (
            "4*user@remote4",
            m(Some("user"), "remote4", None, None, None, N(4)),
        ),
        ("auto*remote5", m(None, "remote5", None, None, None, Auto)),
        (
            "host 10.0.0.1",
            m(None, "host", None, Some("10.0.0.1"), None, N(1)),
        ),
        (
            "2*u@h:23 10.0.0.1:9000",
            m(Some("u"), "h", Some(23), Some("10.0.0.1"), Some(9000), N(2)),
        ),
        (
            "  h\t  b-addr  ",
            m(None, "h", None, Some("b-addr"), None, N(1)),
        ),
        ("[::1]", m(None, "::1", None, None, None, N(1))),
        ("::1", m(None, "::1", None, None, None, N(1))),
        (
            "u@[fe80::1%eth0]:2200 [fe80::2]:9000",
            m(
                Some("u"),
                "fe80::1%eth0",
                Some(2200),
                Some("fe80::2"),
                Some(9000),
                N(1),
            ),
        ),
        ("10.1.2.3", m(None, "10.1.2.3", None, None, None, N(1))),
    ];
    for (s, want) in cases {
        let got = Machine::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(got, want, "{s:?}");
        // Display gives a spec that parses back to the same machine.
        let again = Machine::parse(&got.to_string()).unwrap();
        assert_eq!(again, got, "{s:?} -> {got}");
    }
    // (spec, count), as Julia's tuples.
    let t: Machine = ("user@remote4", 4usize).try_into().unwrap();
    assert_eq!(t.count, N(4));
    let t: Machine = ("user@remote5", Auto).try_into().unwrap();
    assert_eq!(t.count, Auto);
    assert_eq!(Machine::with_count("h", N(3)).unwrap().count, N(3));
    assert!(Machine::with_count("2*h", N(3)).is_err());
    assert!(Machine::with_count("h", N(0)).is_err());
    assert_eq!(
        Machine::parse("alice@h:22").unwrap().destination(),
        "alice@h"
    );
    assert_eq!(Machine::parse("[::1]:22").unwrap().login(), "[::1]:22");
    let specs = cohort::managers::machines::parse_machines(["a", "b:2"]).unwrap();
    assert_eq!(specs.len(), 2);
}

fn spec_errors() {
    let bad = [
        ("", "empty"),
        ("   ", "empty"),
        ("0*host", "at least 1"),
        ("x*host", "invalid count"),
        ("-1*host", "invalid count"),
        ("2*3*host", "more than one"),
        ("*host", "invalid count"),
        ("@host", "empty user"),
        ("user@", "empty host"),
        ("-oProxyCommand=x", "invalid host"),
        ("-host", "invalid host"),
        ("-u@host", "invalid user"),
        ("host:", "invalid port"),
        ("host:abc", "invalid port"),
        ("host:0", "invalid port"),
        ("host:70000", "invalid port"),
        ("host:+22", "invalid port"),
        ("host:22:33", "IPv6"),
        ("[::1", "unclosed"),
        ("[::1]x", "after `]`"),
        ("[node]:22", "only an IPv6"),
        ("a b c", "unexpected \"c\""),
        ("host bind@x", "bind address"),
        ("host 2*x", "bind address"),
        ("host b:99999", "invalid port"),
        ("ho$t", "invalid host"),
        ("host;rm", "invalid host"),
    ];
    for (s, want) in bad {
        let e = Machine::parse(s).expect_err(s);
        assert_eq!(e.text, s);
        assert!(e.line.is_none());
        let msg = e.to_string();
        assert!(msg.contains(want), "{s:?}: {msg}");
        assert!(
            msg.contains(&format!("{s:?}")),
            "the error quotes the spec: {msg}"
        );
        // It converts into cohort's error.
        assert!(matches!(Error::from(e), Error::Invalid(_)));
    }
}

fn machine_file_forms() {
    let text = "\
# the cluster
node1
alice@node2:2222        # a comment after a spec

3*node3 10.0.0.3
auto*bob@node4:22 10.0.0.4:9000
\t[::1]:2022
";
    let ms = parse_machine_file(text, "hosts").unwrap();
    assert_eq!(
        ms,
        vec![
            m(None, "node1", None, None, None, Count::N(1)),
            m(Some("alice"), "node2", Some(2222), None, None, Count::N(1)),
            m(None, "node3", None, Some("10.0.0.3"), None, Count::N(3)),
            m(
                Some("bob"),
                "node4",
                Some(22),
                Some("10.0.0.4"),
                Some(9000),
                Count::Auto
            ),
            m(None, "::1", Some(2022), None, None, Count::N(1)),
        ]
    );
    assert!(parse_machine_file("# nothing\n\n", "f").unwrap().is_empty());
    let dir = ssh_env::private_dir("cohort-sshm-files").unwrap();
    let f = dir.join("hosts");
    std::fs::write(&f, text).unwrap();
    assert_eq!(read_machine_file(&f).unwrap().len(), 5);
    // An empty file and a missing file are errors naming the file.
    std::fs::write(&f, "# only comments\n").unwrap();
    let e = read_machine_file(&f).unwrap_err().to_string();
    assert!(e.contains("names no host") && e.contains("hosts"), "{e}");
    let e = read_machine_file(&dir.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn machine_file_errors() {
    // Every malformed form, at line 3 of a file: the error names the file, the line and its text.
    let bad = [
        "0*node",
        "x*node",
        "2*3*node",
        "@node",
        "user@",
        "node:",
        "node:abc",
        "node:0",
        "node:65536",
        "node:1:2",
        "[::1",
        "[::1]:x",
        "a b c",
        "node b@c",
        "node 2*b",
        "-node",
        "*node",
        "no$de",
    ];
    for line in bad {
        let text = format!("good1\n# comment\n{line}   # trailing\ngood2\n");
        let e: SpecError = parse_machine_file(&text, "cluster.hosts").expect_err(line);
        assert_eq!(e.line, Some(3), "{line}");
        assert_eq!(e.file.as_deref(), Some("cluster.hosts"));
        let msg = e.to_string();
        assert!(
            msg.contains("cluster.hosts") && msg.contains("line 3") && msg.contains(line),
            "{line}: {msg}"
        );
    }
}

// ---------- the CLI ----------

fn run_of(args: &[&str]) -> cli::Launch {
    match cli::parse(args.iter().copied()) {
        Ok(Cli::Run(l)) => l,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn cli_err(args: &[&str]) -> String {
    match cli::parse(args.iter().copied()) {
        Err(e) => e,
        other => panic!("{args:?} should fail: {other:?}"),
    }
}

fn cli_flags() {
    let l = run_of(&["-p", "4", "prog", "a", "-p", "b"]);
    assert_eq!(l.var("COHORT_PROCS"), Some("4"));
    assert_eq!(l.program, "prog");
    assert_eq!(
        l.args,
        ["a", "-p", "b"],
        "options after the program are the program's"
    );
    assert_eq!(run_of(&["-p3", "x"]).var("COHORT_PROCS"), Some("3"));
    assert_eq!(
        run_of(&["--procs=auto", "x"]).var("COHORT_PROCS"),
        Some("auto")
    );
    assert_eq!(
        run_of(&["--procs", "0", "x"]).var("COHORT_PROCS"),
        Some("0")
    );
    let l = run_of(&["x"]);
    assert!(l.env.is_empty() && l.args.is_empty());
    let l = run_of(&["--", "-weird-name", "--flag"]);
    assert_eq!(l.program, "-weird-name");
    assert_eq!(l.args, ["--flag"]);
    assert_eq!(
        run_of(&["--bind-to", "127.0.0.2", "-p", "2", "x"]).var("COHORT_BIND"),
        Some("127.0.0.2")
    );
    assert_eq!(
        run_of(&["--bind-to=0.0.0.0", "x"]).var("COHORT_BIND"),
        Some("0.0.0.0")
    );
    assert_eq!(
        run_of(&["-p", "1", "--bind-to", "10.0.0.1:9000", "x"]).var("COHORT_BIND"),
        Some("10.0.0.1:9000")
    );
    assert_eq!(
        run_of(&["--bind-to", "node7", "x"]).var("COHORT_BIND"),
        Some("node7")
    );
    assert_eq!(
        run_of(&["--worker-timeout", "7.5", "x"]).var("COHORT_WORKER_TIMEOUT"),
        Some("7.5")
    );
    for t in ["all_to_all", "all_to_all_eager", "master_worker", "custom"] {
        assert_eq!(
            run_of(&["--topology", t, "x"]).var("COHORT_TOPOLOGY"),
            Some(t)
        );
    }
    // The machine file is checked now and passed as an absolute path.
    let dir = ssh_env::private_dir("cohort-sshm-cli").unwrap();
    let f = dir.join("hosts");
    std::fs::write(&f, "2*node1\nnode2\n").unwrap();
    let l = run_of(&[
        "--machine-file",
        f.to_str().unwrap(),
        "--tunnel",
        "--sshflags",
        "-i k -v",
        "x",
    ]);
    assert_eq!(l.var("COHORT_MACHINE_FILE"), Some(f.to_str().unwrap()));
    assert_eq!(l.var("COHORT_SSH_TUNNEL"), Some("1"));
    assert_eq!(l.var("COHORT_SSHFLAGS"), Some("-i k -v"));
    std::fs::write(&f, "node1\nnode2:bad\n").unwrap();
    let e = cli_err(&["--machine-file", f.to_str().unwrap(), "x"]);
    assert!(e.contains("line 2") && e.contains("node2:bad"), "{e}");
    let e = cli_err(&["--machine-file", dir.join("nope").to_str().unwrap(), "x"]);
    assert!(e.contains("nope"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    // Malformed command lines.
    let bad: [(&[&str], &str); 15] = [
        (&[], "no program"),
        (&["-p", "4"], "no program"),
        (&["--"], "no program"),
        (&["-p"], "needs a value"),
        (&["-p", "four", "x"], "not a number"),
        (&["-p", "-1", "x"], "not a number"),
        (&["--worker-timeout", "0", "x"], "positive"),
        (&["--worker-timeout", "soon", "x"], "positive"),
        (&["--topology", "ring", "x"], "ring"),
        (
            &["--bind-to", "10.0.0.1:9000", "-p", "2", "x"],
            "one local worker",
        ),
        (&["--bind-to", "a b", "x"], "not an address"),
        (&["--tunnel", "x"], "machine file"),
        (&["--sshflags", "-v", "x"], "machine file"),
        (&["--frobnicate", "x"], "unknown option"),
        (&["--tunnel=yes", "x"], "no value"),
    ];
    for (args, want) in bad {
        let e = cli_err(args);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert_eq!(cli::parse(["--help"]), Ok(Cli::Help));
    assert_eq!(cli::parse(["-h", "prog"]), Ok(Cli::Help));
    assert_eq!(cli::parse(["-V"]), Ok(Cli::Version));
    // --help documents every flag and the variables it sets.
    for f in [
        "-p, --procs N|auto",
        "--machine-file FILE",
        "--bind-to ADDR[:PORT]",
        "--worker-timeout SECS",
        "--topology NAME",
        "--tunnel",
        "--sshflags FLAGS",
        "--help",
        "--version",
        "COHORT_PROCS",
        "COHORT_MACHINE_FILE",
        "COHORT_BIND",
        "COHORT_WORKER_TIMEOUT",
        "COHORT_TOPOLOGY",
        "COHORT_SSH_TUNNEL",
        "COHORT_SSHFLAGS",
        "[count*][user@]host[:port] [bind_addr[:port]]",
    ] {
        assert!(HELP.contains(f), "--help does not mention {f}");
    }
}

/// The `cohort` command: the built binary when there is one, else this binary's `--as-cli`.
fn cohort_cmd() -> Command {
    let me = std::env::current_exe().unwrap();
    let bin = me.parent().unwrap().parent().unwrap().join("cohort");
    if bin.is_file() {
        Command::new(bin)
    } else {
        let mut c = Command::new(me);
        c.arg("--as-cli");
        c
    }
}

/// Runs the `cohort` command within `limit`; (exit code, stdout, stderr).
fn run_cohort(args: &[&str], limit: Duration) -> (i32, String, String) {
    let mut c = cohort_cmd();
    println!("  $ {:?} {}", c.get_program(), args.join(" "));
    let child = c
        .args(args)
        .env_remove("COHORT_PROCS")
        .env_remove("COHORT_MACHINE_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!(
                "`cohort {}` did not finish within {limit:?}",
                args.join(" ")
            );
        }
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn me() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in output:\n{out}"))
}

fn cli_help_and_errors() {
    let (code, out, _) = run_cohort(&["--help"], Duration::from_secs(20));
    assert_eq!(code, 0);
    assert_eq!(out, HELP);
    let (code, out, _) = run_cohort(&["--version"], Duration::from_secs(20));
    assert_eq!(
        (code, out.trim()),
        (0, format!("cohort {}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let (code, _, err) = run_cohort(&["-p", "many", "prog"], Duration::from_secs(20));
    assert_eq!(code, 2);
    assert!(err.contains("many") && err.contains("--help"), "{err}");
    let (code, _, err) = run_cohort(&[], Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cohort(&["/nonexistent/prog"], Duration::from_secs(20));
    assert_eq!(code, 127);
    assert!(err.contains("/nonexistent/prog"), "{err}");
}

fn cli_runs_local_workers() {
    let exe = me();
    let (code, out, err) = run_cohort(
        &[
            "-p",
            "2",
            "--worker-timeout",
            "7",
            "--topology",
            "master_worker",
            "--bind-to",
            "127.0.0.2",
            &exe,
            "--as-program",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(line(&out, "procs="), "[1, 2, 3]");
    assert_eq!(line(&out, "topology="), "MasterWorker");
    assert_eq!(line(&out, "worker_timeout="), "7");
    for a in line(&out, "addresses=").split(',') {
        assert!(a.starts_with("127.0.0.2:"), "{out}");
    }
    let (code, out, err) = run_cohort(
        &["-p", "auto", &exe, "--as-program"],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(line(&out, "nworkers="), n.to_string());
    assert_eq!(line(&out, "topology="), "AllToAll");
}

/// `--as-program`: what the `cohort` command ran. Reports the cluster `init` set up.
fn as_program() {
    // Output before `init`, in the master and in every worker (the same program): it must not
    // be taken for a worker's address, and it reaches the master as the worker's output.
    println!("banner: as-program v1");
    eprintln!("log: as-program starting");
    let _c = cohort::init().expect("init");
    println!("procs={:?}", procs());
    println!("nworkers={}", nworkers());
    println!("topology={:?}", cohort::current_topology());
    println!(
        "worker_timeout={}",
        cohort::__private::worker_timeout().as_secs_f64()
    );
    let ws: Vec<usize> = workers().into_iter().filter(|&p| p != 1).collect();
    let addrs: Vec<String> = ws
        .iter()
        .map(|&p| cohort::__private::peer_address(p).unwrap_or_default())
        .collect();
    println!("addresses={}", addrs.join(","));
    let sums: Vec<i64> = ws
        .iter()
        .map(|&p| remotecall_fetch(add, p, (p as i64, 1)).expect("remote call"))
        .collect();
    println!("sums={sums:?}");
    let via: Vec<String> = ws
        .iter()
        .map(|&p| remotecall_fetch(ssh_connection, p, ()).unwrap_or_default())
        .collect();
    println!("ssh={}", via.iter().filter(|s| !s.is_empty()).count());
    // The workers' output comes back as `From worker N: ...`.
    for &p in &ws {
        remotecall_fetch(shout, p, ()).expect("shout");
    }
    std::thread::sleep(Duration::from_millis(300));
}

// ---------- SSH on loopback ----------

struct Lo {
    dir: PathBuf,
    port: u16,
    flags: Vec<String>,
}

static LO: OnceLock<Result<Lo, String>> = OnceLock::new();

fn lo() -> Option<&'static Lo> {
    match LO.get() {
        Some(Ok(l)) => Some(l),
        Some(Err(why)) => {
            println!("  skipped: {why}");
            None
        }
        None => None,
    }
}

fn spec(count: usize) -> Machine {
    let l = LO.get().unwrap().as_ref().unwrap();
    Machine::with_count(
        &format!("{}@127.0.0.1:{}", ssh_env::user(), l.port),
        Count::N(count),
    )
    .unwrap()
}

fn opts() -> SshOptions {
    let l = LO.get().unwrap().as_ref().unwrap();
    SshOptions::new()
        .sshflags(l.flags.clone())
        .worker_timeout(Duration::from_secs(20))
}

/// Starts the loopback sshd (from the main thread); registers its teardown.
fn start_lo() {
    let r = (|| {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Err(
                "needs root (sshd with privilege separation in a mount namespace)".to_string(),
            );
        }
        if let Some(t) = ssh_env::missing_tool(&["ssh", "ssh-keygen", "sshd", "unshare"]) {
            return Err(format!(
                "`{t}` is not installed (needs openssh-client, openssh-server, util-linux)"
            ));
        }
        for d in ["cohort-sshm", "cohort-sshm-files", "cohort-sshm-cli"] {
            ssh_env::sweep_dirs(d);
        }
        let dir = ssh_env::private_dir("cohort-sshm")?;
        let key = ssh_env::make_keys(&dir)?;
        let port = ssh_env::free_port("127.0.0.1");
        let sshd = ssh_env::Sshd::start(&dir, "lo", "127.0.0.1", port, None)?;
        let d2 = dir.clone();
        let sshd = Mutex::new(Some(sshd));
        ssh_env::on_teardown(move || {
            let mut left = Vec::new();
            if let Some(mut s) = sshd.lock().unwrap_or_else(|e| e.into_inner()).take() {
                s.stop();
            }
            if let Err(e) = std::fs::remove_dir_all(&d2) {
                left.push(format!("{}: {e}", d2.display()));
            }
            left
        });
        Ok(Lo {
            dir,
            port,
            flags: ssh_env::ssh_flags(&key),
        })
    })();
    if let Err(e) = &r {
        println!("SSH tests will be skipped: {e}");
    }
    let _ = LO.set(r);
}

/// A registered worker: pid, address, connect_at.
type Registered = (usize, Option<String>, Option<String>);

struct Recording {
    inner: SshManager,
    configs: Mutex<Vec<Registered>>,
}

impl ClusterManager for Recording {
    fn launch(&self, p: &AddProcsParams, l: &mut dyn FnMut(WorkerConfig)) -> cohort::Result<()> {
        self.inner.launch(p, l)
    }
    fn connect(
        &self,
        pid: usize,
        c: &WorkerConfig,
    ) -> Option<cohort::Result<std::os::fd::OwnedFd>> {
        self.inner.connect(pid, c)
    }
    fn manage(&self, pid: usize, c: &WorkerConfig, op: ManageOp) {
        if op == ManageOp::Register {
            self.configs
                .lock()
                .unwrap()
                .push((pid, c.address.clone(), c.connect_at.clone()));
        }
        self.inner.manage(pid, c, op)
    }
    fn kill(&self, pid: usize, c: &WorkerConfig) {
        self.inner.kill(pid, c)
    }
}

fn ssh_counts_env_dir_and_bind_addr() {
    let Some(l) = lo() else { return };
    let m = Arc::new(SshManager::new(
        vec![spec(2), spec(1)],
        opts().env("COHORT_TEST_VAR", "it's here").dir("/tmp"),
    ));
    let params = m.default_addprocs_params();
    assert_eq!(params.count, 3);
    let pids = cohort::addprocs_with(m.clone(), params).unwrap();
    assert_eq!(pids.len(), 3);
    for &p in &pids {
        assert_eq!(
            remotecall_fetch(add, p, (p as i64, 1)).unwrap(),
            p as i64 + 1
        );
        // Started over ssh, with the variables asked for, in the directory asked for.
        let via = remotecall_fetch(ssh_connection, p, ()).unwrap();
        assert!(via.ends_with(&format!("127.0.0.1 {}", l.port)), "{via}");
        assert_eq!(remotecall_fetch(timeout_env, p, ()).unwrap(), "20");
        assert_eq!(
            remotecall_fetch(my_env, p, ("COHORT_TEST_VAR".into(),)).unwrap(),
            "it's here"
        );
        assert_eq!(remotecall_fetch(cwd, p, ()).unwrap(), "/tmp");
        // The worker listens on the interface the ssh connection came in on.
        let a = cohort::__private::peer_address(p).unwrap();
        assert!(a.starts_with("127.0.0.1:"), "{a}");
    }
    assert_eq!(remotecall_fetch(call, pids[0], (pids[2],)).unwrap(), 3);
    rmprocs(&pids, Duration::from_secs(15)).unwrap();
    assert!(ssh_env::eventually(Duration::from_secs(10), || m
        .ssh_processes()
        == 0));
    // bind_addr:port in the spec: worker i listens on port + i.
    let base = ssh_env::free_port("127.0.0.3");
    let spec = format!(
        "2*{}@127.0.0.1:{} 127.0.0.3:{base}",
        ssh_env::user(),
        l.port
    );
    let pids = cohort::addprocs_machines([spec.as_str()], opts()).unwrap();
    let addrs: Vec<String> = pids
        .iter()
        .map(|&p| cohort::__private::peer_address(p).unwrap())
        .collect();
    println!("  with bind_addr: {addrs:?}");
    assert_eq!(
        addrs,
        [
            format!("127.0.0.3:{base}"),
            format!("127.0.0.3:{}", base + 1)
        ]
    );
    assert_eq!(remotecall_fetch(call, pids[1], (pids[0],)).unwrap(), 3);
    rmprocs(&pids, Duration::from_secs(15)).unwrap();
}

fn ssh_auto_count() {
    let Some(l) = lo() else { return };
    let want = ssh_env::cmd("nproc", &[])
        .unwrap()
        .trim()
        .parse::<usize>()
        .unwrap();
    let auto = format!("auto*{}@127.0.0.1:{}", ssh_env::user(), l.port);
    let t0 = Instant::now();
    let pids = cohort::addprocs_machines([auto.as_str()], opts()).unwrap();
    println!(
        "  auto: {} workers ({want} CPU threads) in {:.2}s",
        pids.len(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(pids.len(), want);
    let tuple = (
        format!("{}@127.0.0.1:{}", ssh_env::user(), l.port),
        Count::Auto,
    );
    let more = cohort::addprocs_machines([(tuple.0.as_str(), tuple.1)], opts()).unwrap();
    assert_eq!(more.len(), want);
    rmprocs(&[pids, more].concat(), Duration::from_secs(15)).unwrap();
}

fn ssh_machine_file_and_max_parallel() {
    let Some(l) = lo() else { return };
    let f = l.dir.join("hosts");
    std::fs::write(
        &f,
        format!(
            "# loopback twice\n3*{u}@127.0.0.1:{p}\n{u}@127.0.0.1:{p}\n",
            u = ssh_env::user(),
            p = l.port
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let pids = cohort::managers::addprocs_machine_file(&f, opts().max_parallel(1)).unwrap();
    println!(
        "  4 workers one at a time in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(pids.len(), 4);
    for &p in &pids {
        assert_eq!(remotecall_fetch(add, p, (1, 1)).unwrap(), 2);
    }
    rmprocs(&pids, Duration::from_secs(15)).unwrap();
}

fn ssh_tunnel_and_multiplex() {
    if lo().is_none() {
        return;
    }
    for (tunnel, multiplex) in [(true, false), (true, true), (false, true)] {
        let rec = Arc::new(Recording {
            inner: SshManager::new(vec![spec(2)], opts().tunnel(tunnel).multiplex(multiplex)),
            configs: Mutex::new(Vec::new()),
        });
        let params = rec.inner.default_addprocs_params();
        let pids = cohort::addprocs_with(rec.clone(), params).unwrap();
        assert_eq!(pids.len(), 2);
        for (pid, address, at) in rec.configs.lock().unwrap().iter() {
            println!("  tunnel={tunnel} multiplex={multiplex}: worker {pid} at {address:?} through {at:?}");
            if tunnel {
                let at = at.as_deref().unwrap();
                assert!(at.starts_with("127.0.0.1:") && Some(at) != address.as_deref());
            } else {
                assert!(at.is_none());
            }
        }
        for &p in &pids {
            assert_eq!(remotecall_fetch(add, p, (2, 3)).unwrap(), 5);
        }
        assert_eq!(remotecall_fetch(call, pids[0], (pids[1],)).unwrap(), 3);
        let procs_now = rec.inner.ssh_processes();
        // Per worker: a session (+ a tunnel without multiplex); + the shared connection.
        let want = match (tunnel, multiplex) {
            (true, false) => 4,
            (_, true) => 3,
            _ => 2,
        };
        assert_eq!(procs_now, want, "ssh processes");
        rmprocs(&pids, Duration::from_secs(15)).unwrap();
        assert!(
            ssh_env::eventually(Duration::from_secs(15), || rec.inner.ssh_processes() == 0),
            "ssh processes left: {}",
            rec.inner.ssh_processes()
        );
    }
}

fn ssh_errors_name_the_host() {
    let Some(l) = lo() else { return };
    let before = workers();
    // Nothing listens on this port: ssh is refused at once.
    let closed = ssh_env::free_port("127.0.0.1");
    let bad = format!("{}@127.0.0.1:{closed}", ssh_env::user());
    let e = cohort::addprocs_machines([bad.as_str()], opts()).unwrap_err();
    println!("  refused: {e}");
    assert!(e.to_string().contains(&bad), "{e}");
    // An ssh client that does not exist.
    let e = cohort::addprocs_machines([spec(1)], opts().ssh("/nonexistent/ssh")).unwrap_err();
    println!("  no ssh: {e}");
    assert!(e.to_string().contains("/nonexistent/ssh"), "{e}");
    // A wrong exename, a missing directory.
    let e = cohort::addprocs_machines([spec(1)], opts().exename("/nonexistent/exe")).unwrap_err();
    println!("  wrong exename: {e}");
    assert!(
        e.to_string().contains("/nonexistent/exe") && e.to_string().contains(&l.port.to_string()),
        "{e}"
    );
    let e = cohort::addprocs_machines([spec(1)], opts().dir("/nonexistent/dir")).unwrap_err();
    println!("  missing dir: {e}");
    assert!(e.to_string().contains("/nonexistent/dir"), "{e}");
    // A worker that never reports its address, within the worker timeout.
    let t0 = Instant::now();
    let e = cohort::addprocs_machines(
        [spec(2)],
        opts()
            .env(SILENT, "1")
            .worker_timeout(Duration::from_secs(2)),
    )
    .unwrap_err();
    println!("  silent ({:.1}s): {e}", t0.elapsed().as_secs_f64());
    assert!(
        matches!(e, Error::Timeout(_)) && e.to_string().contains("127.0.0.1"),
        "{e:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(6));
    // Bad options.
    let e = cohort::addprocs_machines([spec(1)], opts().env("BAD-NAME", "x")).unwrap_err();
    assert!(e.to_string().contains("BAD-NAME"), "{e}");
    let e = cohort::addprocs_machines([spec(1)], opts().env("COHORT_BIND", "x")).unwrap_err();
    assert!(e.to_string().contains("bind_addr"), "{e}");
    let e = cohort::addprocs_machines(["a b c"], opts()).unwrap_err();
    assert!(e.to_string().contains("a b c"), "{e}");
    let e = cohort::addprocs_with(
        Arc::new(SshManager::new(vec![], opts())),
        AddProcsParams::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("no machines"), "{e}");
    assert_eq!(workers(), before);
    // Good and bad together: the good workers join and stay usable.
    let e =
        cohort::addprocs_machines([spec(2), Machine::parse(&bad).unwrap()], opts()).unwrap_err();
    assert!(e.to_string().contains(&bad), "{e}");
    let new: Vec<usize> = workers()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 2);
    for &p in &new {
        assert_eq!(remotecall_fetch(add, p, (1, 2)).unwrap(), 3);
    }
    rmprocs(&new, Duration::from_secs(15)).unwrap();
}

fn cli_machine_file() {
    let Some(l) = lo() else { return };
    let f = l.dir.join("cli-hosts");
    std::fs::write(&f, format!("2*{}@127.0.0.1:{}\n", ssh_env::user(), l.port)).unwrap();
    let flags = l.flags.join(" ");
    let exe = me();
    for tunnel in [false, true] {
        let mut args = vec![
            "-p",
            "1",
            "--machine-file",
            f.to_str().unwrap(),
            "--sshflags",
            &flags,
        ];
        if tunnel {
            args.push("--tunnel");
        }
        args.extend([exe.as_str(), "--as-program"]);
        let (code, out, err) = run_cohort(&args, Duration::from_secs(60));
        assert_eq!(code, 0, "{out}\n{err}");
        assert_eq!(line(&out, "procs="), "[1, 2, 3, 4]");
        assert_eq!(line(&out, "sums="), "[3, 4, 5]");
        assert_eq!(
            line(&out, "ssh="),
            "2",
            "two of the three workers came over ssh"
        );
        // Local and SSH workers alike: what they printed before `init` and later, stdout on
        // stdout and stderr on stderr, as that worker's.
        for p in 2..=4 {
            for (text, on, other) in [
                ("banner: as-program v1", &out, &err),
                ("shout from {p}", &out, &err),
                ("log: as-program starting", &err, &out),
                ("and on stderr from {p}", &err, &out),
            ] {
                let l = format!("From worker {p}:\t{}", text.replace("{p}", &p.to_string()));
                assert!(
                    on.contains(&l),
                    "{l:?} missing (tunnel {tunnel}):\n{out}\n{err}"
                );
                assert!(
                    !other.contains(&l),
                    "{l:?} on the wrong stream:\n{out}\n{err}"
                );
            }
        }
        assert!(!out.contains("cohort_worker:"), "{out}");
    }
}

/// examples/cluster_tour.rs (built by `cargo test`): local workers, a machine file, the CLI.
fn cluster_tour_example() {
    let Some(tour) = ssh_env::example("cluster_tour") else {
        println!(
            "  skipped: examples/cluster_tour is not built (`cargo build --examples` builds it)"
        );
        return;
    };
    let run = |c: &mut Command| {
        let out = c
            .env_remove("COHORT_PROCS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("pmap(collatz, 1..=24) = [0, 1, 7, 2,"),
            "{text}"
        );
        text
    };
    let text = run(&mut Command::new(&tour));
    assert!(text.contains("procs() = [1, 2, 3]"), "{text}");
    let Some(l) = lo() else { return };
    let f = l.dir.join("tour-hosts");
    std::fs::write(&f, format!("3*{}@127.0.0.1:{}\n", ssh_env::user(), l.port)).unwrap();
    let text = run(Command::new(&tour)
        .arg(&f)
        .env("COHORT_SSHFLAGS", l.flags.join(" ")));
    assert!(text.contains("procs() = [1, 2, 3, 4]"), "{text}");
    let tour_s = tour.to_string_lossy().into_owned();
    let flags = l.flags.join(" ");
    let (code, text, err) = run_cohort(
        &[
            "--machine-file",
            f.to_str().unwrap(),
            "--sshflags",
            &flags,
            "--tunnel",
            &tour_s,
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("procs() = [1, 2, 3, 4]"), "{text}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--as-cli") {
        std::process::exit(cli::run(std::env::args_os().skip(2)));
    }
    if std::env::var_os(SILENT).is_some() && std::env::var_os("COHORT_WORKER").is_some() {
        std::thread::sleep(Duration::from_secs(5));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--as-program") {
        as_program();
        return;
    }
    let cluster = cohort::init().expect("cohort::init");
    if !args.iter().any(|a| a == "--list") {
        start_lo();
    }
    ssh_env::run(
        cluster,
        &[
            ("spec_forms", spec_forms),
            ("spec_errors", spec_errors),
            ("machine_file_forms", machine_file_forms),
            ("machine_file_errors", machine_file_errors),
            ("cli_flags", cli_flags),
            ("cli_help_and_errors", cli_help_and_errors),
            ("cli_runs_local_workers", cli_runs_local_workers),
            (
                "ssh_counts_env_dir_and_bind_addr",
                ssh_counts_env_dir_and_bind_addr,
            ),
            ("ssh_auto_count", ssh_auto_count),
            (
                "ssh_machine_file_and_max_parallel",
                ssh_machine_file_and_max_parallel,
            ),
            ("ssh_tunnel_and_multiplex", ssh_tunnel_and_multiplex),
            ("ssh_errors_name_the_host", ssh_errors_name_the_host),
            ("cli_machine_file", cli_machine_file),
            ("cluster_tour_example", cluster_tour_example),
        ],
        Duration::from_secs(90),
    );
}
