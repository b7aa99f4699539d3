//! Every environment variable cohort reads, parsed in one place.
//!
//! `init` parses them all once ([`startup`]) and fails with `Error::Invalid` naming each
//! variable whose value it cannot use; a worker process with such a value exits with the
//! message on its stderr, which its manager reports to the master. An empty value is unset.
//!
//! | variable | meaning | accepted | default |
//! |---|---|---|---|
//! | `COHORT_PROCS` | `init` adds this many local workers (Julia's `julia -p N`) | a whole number, or `auto` (one per CPU thread) | 0 |
//! | `COHORT_WORKER` | set by a manager: this process is a worker | `1`/`true` or `0`/`false` | `0` |
//! | `COHORT_WORKER_TIMEOUT` | seconds a worker waits for the master's connection, and the master for a worker's address | a number of seconds > 0 | 60 |
//! | `COHORT_BIND` | address a worker binds (`restrict = false` sets `0.0.0.0`) | an address, `address:port`, or a network interface's name (the TCP transport binds its address) | `127.0.0.1` |
//! | `COHORT_CPU_BIND` | how the master places the workers of its host: `auto` divides the CPUs it may use among them in contiguous blocks (each worker bound to its block; all of them when there are more workers than CPUs), `none` leaves them where the scheduler puts them | `auto`, `none` | `auto` |
//! | `COHORT_SPIN_US` | microseconds a thread polls a link before it sleeps | a whole number (0: no polling) | 200 |
//! | `COHORT_MAX_FRAME` | largest frame payload accepted | a whole number of bytes > 0 | 4 GiB |
//! | `COHORT_TRANSPORT` | the transport `cohort::init` uses | `shm` (shared memory on one host, TCP between hosts), `tcp`, `unix`, `mpi` (with the `mpi` feature), any case | `shm` |
//! | `COHORT_TOPOLOGY` | how workers connect ([`Topology`]) | `all_to_all`, `all_to_all_eager`, `master_worker`, `custom` | `all_to_all` |
//! | `COHORT_MPIRUN` | the MPI launcher `cohort::managers::mpirun_command` starts (read by the launcher crate) | a program | `mpirun` |
//! | `COHORT_MACHINE_FILE` | the facade's `init` adds SSH workers on the hosts of this machine file (`cohort --machine-file`) | a path | unset |
//! | `COHORT_SSHFLAGS` | extra ssh arguments for those workers, split at whitespace | any text | empty |
//! | `COHORT_SSH_TUNNEL` | those workers are reached through ssh tunnels | `1`/`true` or `0`/`false` | `0` |
//! | `COHORT_SLURM` | the facade's `init` adds one worker per task of the Slurm allocation it runs in (`cohort --slurm`) | `1`/`true` or `0`/`false` | `0` |
//! | `COHORT_SRUN_FLAGS` | extra srun arguments for those workers, split at whitespace | any text | empty |
//! | `COHORT_SLURM_BIND` | the address or network interface those workers listen on | an address or interface name | each node's address as Slurm names it |
//! | `COHORT_LOG` | level of the stderr lines when no `tracing` subscriber is set (parsed in [`crate::base::log`]) | `off`, `error`, `warn`, `info`, `debug`, `trace` | `info` |
//!
//! `COHORT_TRANSPORT` names a transport of the program's choosing under `init_with` (workers
//! inherit the master's), so only `cohort::init` limits it to the names above.

use crate::base::error::{Error, Result};
use crate::base::topology::Topology;
use std::sync::OnceLock;
use std::time::Duration;

/// Default cap on a frame's payload (4 GiB); `COHORT_MAX_FRAME` changes it.
pub const DEFAULT_MAX_FRAME: u64 = 4 << 30;

/// The settings the environment gives this process.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `COHORT_PROCS`, with `auto` resolved.
    pub procs: usize,
    /// `COHORT_WORKER`.
    pub worker: bool,
    /// `COHORT_WORKER_TIMEOUT`.
    pub worker_timeout: Duration,
    /// `COHORT_BIND`.
    pub bind: String,
    /// `COHORT_CPU_BIND`: `auto` (true) or `none`.
    pub cpu_bind: bool,
    /// `COHORT_SPIN_US`.
    pub spin: Duration,
    /// `COHORT_MAX_FRAME`.
    pub max_frame: u64,
    /// `COHORT_TRANSPORT`, lower-cased.
    pub transport: String,
    /// `COHORT_TOPOLOGY`.
    pub topology: Topology,
    /// `COHORT_MACHINE_FILE`.
    pub machine_file: Option<String>,
    /// `COHORT_SSHFLAGS`, split at whitespace.
    pub ssh_flags: Vec<String>,
    /// `COHORT_SSH_TUNNEL`.
    pub ssh_tunnel: bool,
    /// `COHORT_SLURM`.
    pub slurm: bool,
    /// `COHORT_SRUN_FLAGS`, split at whitespace.
    pub srun_flags: Vec<String>,
    /// `COHORT_SLURM_BIND`.
    pub slurm_bind: Option<String>,
}

impl Default for Config {
    /// The settings with no variable set.
    fn default() -> Self {
        Config {
            procs: 0,
            worker: false,
            worker_timeout: Duration::from_secs(60),
            bind: "127.0.0.1".into(),
            cpu_bind: true,
            spin: Duration::from_micros(200),
            max_frame: DEFAULT_MAX_FRAME,
            transport: "shm".into(),
            topology: Topology::AllToAll,
            machine_file: None,
            ssh_flags: Vec::new(),
            ssh_tunnel: false,
            slurm: false,
            srun_flags: Vec::new(),
            slurm_bind: None,
        }
    }
}

impl Config {
    /// Parses the environment; `Error::Invalid` names every variable whose value is not
    /// usable, with the value and what is accepted (`;`-separated when several are).
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), with the variables from `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let mut v = Vars {
            get,
            bad: Vec::new(),
        };
        let d = Config::default();
        const FLAG: &str = "1, true, 0 or false";
        let c = Config {
            procs: v
                .read(
                    "COHORT_PROCS",
                    "a number of workers or `auto`",
                    |s| match s {
                        "auto" => Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
                        _ => s.parse().ok(),
                    },
                )
                .unwrap_or(d.procs),
            worker: v
                .read("COHORT_WORKER", FLAG, parse_flag)
                .unwrap_or(d.worker),
            worker_timeout: v
                .read(
                    "COHORT_WORKER_TIMEOUT",
                    "a number of seconds greater than 0",
                    |s| {
                        let secs = s.parse::<f64>().ok().filter(|t| *t > 0.0)?;
                        Duration::try_from_secs_f64(secs).ok()
                    },
                )
                .unwrap_or(d.worker_timeout),
            bind: v
                .read("COHORT_BIND", "an address", |s| Some(s.to_string()))
                .unwrap_or(d.bind),
            cpu_bind: v
                .read("COHORT_CPU_BIND", "`auto` or `none`", |s| {
                    match s.to_ascii_lowercase().as_str() {
                        "auto" => Some(true),
                        "none" => Some(false),
                        _ => None,
                    }
                })
                .unwrap_or(d.cpu_bind),
            spin: v
                .read("COHORT_SPIN_US", "a whole number of microseconds", |s| {
                    s.parse().ok().map(Duration::from_micros)
                })
                .unwrap_or(d.spin),
            max_frame: v
                .read(
                    "COHORT_MAX_FRAME",
                    "a whole number of bytes greater than 0",
                    |s| s.parse().ok().filter(|n| *n > 0),
                )
                .unwrap_or(d.max_frame),
            transport: v
                .read("COHORT_TRANSPORT", "a transport", |s| {
                    Some(s.to_ascii_lowercase())
                })
                .unwrap_or(d.transport),
            topology: v
                .read("COHORT_TOPOLOGY", &Topology::accepted(), |s| {
                    Topology::parse(s).ok()
                })
                .unwrap_or(d.topology),
            machine_file: v.read("COHORT_MACHINE_FILE", "a path", |s| Some(s.to_string())),
            ssh_flags: v
                .read("COHORT_SSHFLAGS", "ssh arguments", |s| {
                    Some(s.split_whitespace().map(String::from).collect())
                })
                .unwrap_or(d.ssh_flags),
            ssh_tunnel: v
                .read("COHORT_SSH_TUNNEL", FLAG, parse_flag)
                .unwrap_or(d.ssh_tunnel),
            slurm: v.read("COHORT_SLURM", FLAG, parse_flag).unwrap_or(d.slurm),
            srun_flags: v
                .read("COHORT_SRUN_FLAGS", "srun arguments", |s| {
                    Some(s.split_whitespace().map(String::from).collect())
                })
                .unwrap_or(d.srun_flags),
            slurm_bind: v
                .read("COHORT_SLURM_BIND", "an address", |s| {
                    Some(Some(s.to_string()))
                })
                .unwrap_or(d.slurm_bind),
        };
        if v.bad.is_empty() {
            Ok(c)
        } else {
            Err(Error::Invalid(v.bad.join("; ")))
        }
    }
}

/// The variables being parsed, and the messages for those that do not parse.
struct Vars<F> {
    get: F,
    bad: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// `name` parsed (trimmed) by `parse`; `None` when it is unset or empty, or does not parse
    /// (then noted as not being `accepted`).
    fn read<T>(
        &mut self,
        name: &str,
        accepted: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let raw = (self.get)(name).filter(|s| !s.trim().is_empty())?;
        let v = parse(raw.trim());
        if v.is_none() {
            self.bad.push(format!("{name}={raw:?} is not {accepted}"));
        }
        v
    }
}

fn parse_flag(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// This process's settings: the environment as first parsed without error (the variables
/// are read once; `init` does that first read).
pub fn config() -> Result<&'static Config> {
    if let Some(c) = CONFIG.get() {
        return Ok(c);
    }
    let c = Config::from_env()?;
    Ok(CONFIG.get_or_init(|| c))
}

/// [`config`] for `init`: in a worker (`COHORT_WORKER=1`) a value that does not parse ends
/// the process through [`exit_worker`], as a worker must not serve with settings other than
/// those its master gave it.
pub fn startup() -> Result<&'static Config> {
    config().inspect_err(|e| {
        let worker = std::env::var("COHORT_WORKER")
            .ok()
            .and_then(|v| parse_flag(v.trim()));
        if worker == Some(true) {
            exit_worker(e)
        }
    })
}

/// Ends a worker that cannot start: `cohort worker: WHY` on stderr, exit status 1. Before its
/// handshake a worker's stderr is its only way to the master, whose manager reports it.
pub fn exit_worker(why: &dyn std::fmt::Display) -> ! {
    // Not a log line: the master's manager reads it, with or without a log subscriber here.
    eprintln!("cohort worker: {why}");
    std::process::exit(1)
}

/// The settings in use: [`config`], or the defaults where the environment does not parse
/// (`init` has refused it then; this is for code running without `init`).
fn current() -> &'static Config {
    static DEFAULTS: OnceLock<Config> = OnceLock::new();
    config().unwrap_or_else(|_| DEFAULTS.get_or_init(Config::default))
}

/// `COHORT_PROCS`: workers to add at `init`.
pub fn procs() -> Result<usize> {
    config().map(|c| c.procs)
}

/// `COHORT_WORKER`: this process is a worker.
pub fn is_worker() -> bool {
    current().worker
}

/// `COHORT_WORKER_TIMEOUT`.
pub fn worker_timeout() -> Duration {
    current().worker_timeout
}

/// `COHORT_BIND`.
pub fn bind_addr() -> String {
    current().bind.clone()
}

/// `COHORT_CPU_BIND`: whether the master binds the workers of its host.
pub fn cpu_bind() -> bool {
    current().cpu_bind
}

/// `COHORT_SPIN_US`.
pub fn spin() -> Duration {
    current().spin
}

/// `COHORT_MAX_FRAME`.
pub fn max_frame() -> u64 {
    current().max_frame
}

/// `COHORT_TOPOLOGY`.
pub fn topology() -> Topology {
    current().topology
}

/// `COHORT_TRANSPORT`, lower-cased.
pub fn transport() -> String {
    current().transport.clone()
}

/// `COHORT_MACHINE_FILE`.
pub fn machine_file() -> Option<String> {
    current().machine_file.clone()
}

/// `COHORT_SSHFLAGS`, split at whitespace.
pub fn ssh_flags() -> Vec<String> {
    current().ssh_flags.clone()
}

/// `COHORT_LOG`, unparsed: [`crate::base::log`] reads its level from it.
pub fn log() -> Option<String> {
    std::env::var("COHORT_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// `COHORT_SSH_TUNNEL`.
pub fn ssh_tunnel() -> bool {
    current().ssh_tunnel
}

/// `COHORT_SLURM`.
pub fn slurm() -> bool {
    current().slurm
}

/// `COHORT_SRUN_FLAGS`, split at whitespace.
pub fn srun_flags() -> Vec<String> {
    current().srun_flags.clone()
}

/// `COHORT_SLURM_BIND`.
pub fn slurm_bind() -> Option<String> {
    current().slurm_bind.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Config> {
        Config::from_lookup(|n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        })
    }

    fn err(vars: &[(&str, &str)]) -> String {
        match parse(vars) {
            Err(Error::Invalid(m)) => m,
            other => panic!("{vars:?}: {other:?}"),
        }
    }

    #[test]
    fn unset_and_empty_are_the_defaults() {
        assert_eq!(parse(&[]).unwrap(), Config::default());
        assert_eq!(
            parse(&[("COHORT_SPIN_US", " "), ("COHORT_PROCS", "")]).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn good_values() {
        let c = parse(&[
            ("COHORT_PROCS", " 3 "),
            ("COHORT_WORKER", "TRUE"),
            ("COHORT_WORKER_TIMEOUT", "0.5"),
            ("COHORT_BIND", "::1"),
            ("COHORT_SPIN_US", "0"),
            ("COHORT_MAX_FRAME", "1024"),
            ("COHORT_TRANSPORT", "Unix"),
            ("COHORT_TOPOLOGY", "master_worker"),
            ("COHORT_MACHINE_FILE", "/tmp/hosts"),
            ("COHORT_SSHFLAGS", "-i k  -v"),
            ("COHORT_SSH_TUNNEL", "1"),
            ("COHORT_SLURM", "true"),
            ("COHORT_SRUN_FLAGS", " --cpus-per-task=2  -N2 "),
            ("COHORT_SLURM_BIND", "ib0"),
            ("COHORT_CPU_BIND", "none"),
        ])
        .unwrap();
        assert_eq!(
            c,
            Config {
                procs: 3,
                worker: true,
                worker_timeout: Duration::from_millis(500),
                bind: "::1".into(),
                cpu_bind: false,
                spin: Duration::ZERO,
                max_frame: 1024,
                transport: "unix".into(),
                topology: Topology::MasterWorker,
                machine_file: Some("/tmp/hosts".into()),
                ssh_flags: vec!["-i".into(), "k".into(), "-v".into()],
                ssh_tunnel: true,
                slurm: true,
                srun_flags: vec!["--cpus-per-task=2".into(), "-N2".into()],
                slurm_bind: Some("ib0".into()),
            }
        );
        assert!(parse(&[("COHORT_PROCS", "auto")]).unwrap().procs >= 1);
        let off = parse(&[("COHORT_WORKER", "0"), ("COHORT_SSH_TUNNEL", "false")]).unwrap();
        assert!(!off.worker && !off.ssh_tunnel);
    }

    #[test]
    fn each_bad_value_is_named() {
        for (var, val, want) in [
            ("COHORT_PROCS", "-1", "is not a number of workers or `auto`"),
            (
                "COHORT_PROCS",
                "two",
                "is not a number of workers or `auto`",
            ),
            ("COHORT_WORKER", "yes", "is not 1, true, 0 or false"),
            (
                "COHORT_WORKER_TIMEOUT",
                "abc",
                "is not a number of seconds greater than 0",
            ),
            (
                "COHORT_WORKER_TIMEOUT",
                "0",
                "is not a number of seconds greater than 0",
            ),
            (
                "COHORT_WORKER_TIMEOUT",
                "-3",
                "is not a number of seconds greater than 0",
            ),
            (
                "COHORT_WORKER_TIMEOUT",
                "inf",
                "is not a number of seconds greater than 0",
            ),
            (
                "COHORT_WORKER_TIMEOUT",
                "NaN",
                "is not a number of seconds greater than 0",
            ),
            (
                "COHORT_SPIN_US",
                "x",
                "is not a whole number of microseconds",
            ),
            (
                "COHORT_SPIN_US",
                "-5",
                "is not a whole number of microseconds",
            ),
            (
                "COHORT_MAX_FRAME",
                "4G",
                "is not a whole number of bytes greater than 0",
            ),
            (
                "COHORT_MAX_FRAME",
                "0",
                "is not a whole number of bytes greater than 0",
            ),
            (
                "COHORT_TOPOLOGY",
                "ring",
                "is not a topology (all_to_all, all_to_all_eager, master_worker or custom)",
            ),
            ("COHORT_SSH_TUNNEL", "maybe", "is not 1, true, 0 or false"),
        ] {
            assert_eq!(err(&[(var, val)]), format!("{var}={val:?} {want}"));
        }
    }

    #[test]
    fn cpu_bind_is_auto_or_none_in_any_case() {
        assert!(parse(&[]).unwrap().cpu_bind);
        assert!(parse(&[("COHORT_CPU_BIND", "AUTO")]).unwrap().cpu_bind);
        assert!(!parse(&[("COHORT_CPU_BIND", " none ")]).unwrap().cpu_bind);
        assert_eq!(
            err(&[("COHORT_CPU_BIND", "cores")]),
            "COHORT_CPU_BIND=\"cores\" is not `auto` or `none`"
        );
    }

    #[test]
    fn several_bad_values_are_all_named() {
        assert_eq!(
            err(&[("COHORT_SPIN_US", "x"), ("COHORT_PROCS", "two")]),
            "COHORT_PROCS=\"two\" is not a number of workers or `auto`; \
             COHORT_SPIN_US=\"x\" is not a whole number of microseconds"
        );
    }
}
