//! The `cohort` command: runs a cohort program with workers, as `julia -p N` and
//! `julia --machine-file FILE` do for Julia programs (and, inside a Slurm allocation, with
//! one worker per task of it).
//!
//! It only sets the environment that `cohort::init()` reads and then runs (execs) the program,
//! so a program runs unchanged under `cargo run` and under `cohort`. [`HELP`] documents every
//! flag; [`parse`] is the flag parser (used by the binary and by tests).

use crate::machines::read_machine_file;
use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The text of `cohort --help`.
pub const HELP: &str = "\
cohort - run a cohort program with workers (like `julia -p N` and `julia --machine-file FILE`)

USAGE:
    cohort [OPTIONS] PROGRAM [ARGS...]
    cohort [OPTIONS] -- PROGRAM [ARGS...]

cohort sets the environment that `cohort::init()` reads and then runs PROGRAM in its place,
so the same program runs unchanged under `cargo run` and under cohort. Options go before
PROGRAM; everything after PROGRAM is passed to it.

OPTIONS:
    -p, --procs N|auto       Start N local workers when the program calls cohort::init()
                             (auto: one per CPU thread). Sets COHORT_PROCS.
    --machine-file FILE      Start workers over ssh on the hosts listed in FILE, one per
                             line: `[count*][user@]host[:port] [bind_addr[:port]]` (count: a
                             number, default 1, or `auto` for one per CPU thread of the
                             host; `#` starts a comment). Needs passwordless ssh to each
                             host and the program at the same path there. The workers
                             listen on the address the master's ssh connection reached, or
                             on bind_addr (worker i of a host on port+i). Sets
                             COHORT_MACHINE_FILE.
    --bind-to ADDR[:PORT]    The address local workers listen on (default 127.0.0.1, so
                             that no other host can reach them; 0.0.0.0 for every
                             interface). A port is allowed with one local worker only.
                             Sets COHORT_BIND.
    --worker-timeout SECS    How long a new worker waits for the master to contact it, and
                             the master for a worker to report its address (default 60).
                             Sets COHORT_WORKER_TIMEOUT.
    --topology NAME          How workers connect: all_to_all (default: any process calls
                             any other, links open on first use), all_to_all_eager (the
                             same, each new worker connecting to the others as it joins),
                             master_worker (workers talk only to the master), or custom
                             (workers talk to those their cluster manager names; the
                             built-in managers name none). Sets COHORT_TOPOLOGY.
    --tunnel                 Reach the machine-file workers through ssh tunnels, so that
                             only their ssh port need be open. Sets COHORT_SSH_TUNNEL.
    --sshflags FLAGS         Extra ssh arguments for the machine-file hosts, split at
                             spaces, e.g. \"-i /home/me/.ssh/cluster\". Sets COHORT_SSHFLAGS.
    --slurm                  Inside a Slurm allocation (sbatch, salloc): start one worker
                             per task of it (SLURM_NTASKS), as the tasks of one srun job
                             step. Each listens on its node's address as Slurm names it,
                             or on the address or network interface (ib0, say) --bind-to
                             gives. Not with -p or --machine-file. Sets COHORT_SLURM (and
                             COHORT_SLURM_BIND).
    --srun-flags FLAGS       Extra srun arguments for those workers, split at spaces, e.g.
                             \"--cpus-per-task=4\". Sets COHORT_SRUN_FLAGS.
    -h, --help               Print this help.
    -V, --version            Print the version.

EXAMPLES:
    cohort -p 4 ./target/release/myprog --size 1000
    cohort -p auto cargo run --release --example pmap_svd
    cohort --machine-file hosts --tunnel ./target/release/myprog
    sbatch -n 16 --wrap \"cohort --slurm ./target/release/myprog\"

Without -p or --machine-file the program starts no workers by itself (it may call addprocs).
With both, the local workers listen on loopback, where the remote workers cannot call them:
give --bind-to an address the other hosts reach (or use --topology master_worker).
Exit status: the program's; 2 for a usage error; 126 or 127 when PROGRAM cannot be run.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cli {
    /// Run a program with this environment.
    Run(Launch),
    /// `--help`.
    Help,
    /// `--version`.
    Version,
}

/// A program to run and the environment to add for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Variables to set (name, value).
    pub env: Vec<(String, String)>,
    /// The program (looked up in `PATH` when it has no `/`).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
}

impl Launch {
    /// The value this launch gives `name`, if it sets it.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn value(
    flag: &str,
    inline: Option<String>,
    rest: &mut std::vec::IntoIter<OsString>,
) -> Result<String, String> {
    if let Some(v) = inline {
        return Ok(v);
    }
    match rest.next() {
        Some(v) => v
            .into_string()
            .map_err(|v| format!("{flag}: {v:?} is not valid UTF-8")),
        None => Err(format!("{flag} needs a value")),
    }
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Cli, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut rest = args
        .into_iter()
        .map(Into::into)
        .collect::<Vec<OsString>>()
        .into_iter();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut procs: Option<String> = None;
    let mut bind: Option<String> = None;
    let mut machine_file = false;
    let mut slurm = false;
    let mut program = None;
    while let Some(arg) = rest.next() {
        let Some(s) = arg.to_str() else {
            program = Some(arg);
            break;
        };
        if s == "--" {
            program = rest.next();
            if program.is_none() {
                return Err("no program given after `--`".into());
            }
            break;
        }
        if !s.starts_with('-') || s == "-" {
            program = Some(arg);
            break;
        }
        let (flag, inline) = if let Some(v) = s.strip_prefix("-p").filter(|v| !v.is_empty()) {
            ("-p".to_string(), Some(v.to_string()))
        } else if let Some((f, v)) = s.split_once('=').filter(|(f, _)| f.starts_with("--")) {
            (f.to_string(), Some(v.to_string()))
        } else {
            (s.to_string(), None)
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Cli::Help),
            "-V" | "--version" => return Ok(Cli::Version),
            "-p" | "--procs" => {
                let v = value(&flag, inline, &mut rest)?;
                let v = v.trim().to_string();
                if v != "auto" && v.parse::<usize>().is_err() {
                    return Err(format!(
                        "{flag}: {v:?} is not a number of workers or `auto`"
                    ));
                }
                env.push(("COHORT_PROCS".into(), v.clone()));
                procs = Some(v);
            }
            "--machine-file" => {
                let v = value(&flag, inline, &mut rest)?;
                let path = Path::new(&v);
                read_machine_file(path).map_err(|e| format!("--machine-file: {e}"))?;
                let abs =
                    std::path::absolute(path).map_err(|e| format!("--machine-file: {v}: {e}"))?;
                env.push((
                    "COHORT_MACHINE_FILE".into(),
                    abs.to_string_lossy().into_owned(),
                ));
                machine_file = true;
            }
            "--bind-to" => {
                let v = value(&flag, inline, &mut rest)?;
                check_bind(&v)?;
                env.push(("COHORT_BIND".into(), v.clone()));
                bind = Some(v);
            }
            "--worker-timeout" => {
                let v = value(&flag, inline, &mut rest)?;
                match v.trim().parse::<f64>() {
                    Ok(t) if t > 0.0 && t.is_finite() => {}
                    _ => {
                        return Err(format!(
                            "--worker-timeout: {v:?} is not a positive number of seconds"
                        ))
                    }
                }
                env.push(("COHORT_WORKER_TIMEOUT".into(), v.trim().to_string()));
            }
            "--topology" => {
                let v = value(&flag, inline, &mut rest)?;
                cohort_core::Topology::parse(&v).map_err(|e| format!("--topology: {e}"))?;
                env.push(("COHORT_TOPOLOGY".into(), v));
            }
            "--tunnel" => {
                if inline.is_some() {
                    return Err("--tunnel takes no value".into());
                }
                env.push(("COHORT_SSH_TUNNEL".into(), "1".into()));
            }
            "--sshflags" => {
                let v = value(&flag, inline, &mut rest)?;
                env.push(("COHORT_SSHFLAGS".into(), v));
            }
            "--slurm" => {
                if inline.is_some() {
                    return Err("--slurm takes no value".into());
                }
                env.push(("COHORT_SLURM".into(), "1".into()));
                slurm = true;
            }
            "--srun-flags" => {
                let v = value(&flag, inline, &mut rest)?;
                env.push(("COHORT_SRUN_FLAGS".into(), v));
            }
            _ => return Err(format!("unknown option {s:?}")),
        }
    }
    let Some(program) = program else {
        return Err("no program given".into());
    };
    if let (Some(b), Some(p)) = (&bind, &procs) {
        let n = if p == "auto" {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            p.parse().unwrap_or(0)
        };
        if bind_has_port(b) && n > 1 {
            return Err(format!(
                "--bind-to {b}: a port is allowed with one local worker only (each worker listens on a port of its own)"
            ));
        }
    }
    if slurm && (procs.is_some() || machine_file) {
        return Err(
            "--slurm starts the workers of the allocation: give it without -p and --machine-file"
                .into(),
        );
    }
    if env.iter().any(|(k, _)| k == "COHORT_SRUN_FLAGS") && !slurm {
        return Err("--srun-flags applies to --slurm workers: give --slurm".into());
    }
    if slurm {
        // The Slurm workers' address; local workers keep their loopback default.
        for (k, _) in env.iter_mut().filter(|(k, _)| k == "COHORT_BIND") {
            *k = "COHORT_SLURM_BIND".into();
        }
    }
    let tunnel = env.iter().any(|(k, _)| k == "COHORT_SSH_TUNNEL");
    let flags = env.iter().any(|(k, _)| k == "COHORT_SSHFLAGS");
    if (tunnel || flags) && !machine_file {
        return Err(
            "--tunnel and --sshflags apply to --machine-file hosts: give a machine file".into(),
        );
    }
    Ok(Cli::Run(Launch {
        env,
        program,
        args: rest.collect(),
    }))
}

fn bind_has_port(b: &str) -> bool {
    b.parse::<std::net::SocketAddr>().is_ok()
        || (!b.starts_with('[') && b.matches(':').count() == 1)
}

fn check_bind(b: &str) -> Result<(), String> {
    if b.parse::<std::net::IpAddr>().is_ok() || b.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    if let Some(inner) = b.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        if inner.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(());
        }
    }
    // A host name, with or without a port.
    let (h, p) = match b.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (b, None),
    };
    let host_ok = !h.is_empty()
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
    let port_ok = p.is_none_or(|p| p.parse::<u16>().is_ok());
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!(
            "--bind-to: {b:?} is not an address or address:port"
        ))
    }
}

/// Runs the `cohort` command with this process's arguments; returns only on failure, with
/// the exit status to use.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    match parse(args) {
        Ok(Cli::Help) => {
            print!("{HELP}");
            0
        }
        Ok(Cli::Version) => {
            println!("cohort {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Cli::Run(l))
            if l.var("COHORT_SLURM").is_some() && crate::Allocation::from_env().is_err() =>
        {
            let e = crate::Allocation::from_env().unwrap_err();
            eprintln!("cohort: --slurm: {e}");
            2
        }
        Ok(Cli::Run(l)) => {
            use std::os::unix::process::CommandExt;
            let err = std::process::Command::new(&l.program)
                .args(&l.args)
                .envs(l.env.iter().map(|(k, v)| (OsStr::new(k), OsStr::new(v))))
                .exec();
            eprintln!(
                "cohort: cannot run {}: {err}",
                Path::new(&l.program).display()
            );
            if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            }
        }
        Err(e) => {
            eprintln!("cohort: {e}\nTry `cohort --help` for the options.");
            2
        }
    }
}
