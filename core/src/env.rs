//! Every environment variable cohort reads, parsed in one place.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `COHORT_PROCS` | `init` adds this many local workers (Julia's `julia -p N`); `auto` = one per core | 0 |
//! | `COHORT_WORKER` | set by a manager: this process is a worker | unset |
//! | `COHORT_WORKER_TIMEOUT` | seconds a worker waits for the master's connection, and the master for a worker's address | 60 |
//! | `COHORT_BIND` | address a worker binds (`restrict = false` sets `0.0.0.0`) | `127.0.0.1` |
//! | `COHORT_SPIN_US` | microseconds a thread polls a link before it sleeps | 200 |
//! | `COHORT_MAX_FRAME` | largest frame payload accepted, in bytes | 4 GiB |
//! | `COHORT_TRANSPORT` | `tcp` (default), `unix`, or `mpi` (with the `mpi` feature) | `tcp` |
//! | `COHORT_TOPOLOGY` | `all_to_all` (default) or `master_worker` | `all_to_all` |
//! | `COHORT_MPIRUN` | the MPI launcher `cohort::managers::mpirun_command` starts (read by the launcher crate) | `mpirun` |
//! | `COHORT_MACHINE_FILE` | the facade's `init` adds SSH workers on the hosts of this machine file (`cohort --machine-file`) | unset |
//! | `COHORT_SSHFLAGS` | extra ssh arguments for those workers, split at whitespace | empty |
//! | `COHORT_SSH_TUNNEL` | `1`: those workers are reached through ssh tunnels | unset |
//! | `COHORT_LOG` | level of the stderr lines when no `tracing` subscriber is set (parsed in [`crate::log`]) | `info` |

use std::time::Duration;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.trim().is_empty())
}

/// `COHORT_PROCS`: workers to add at `init`.
pub fn procs() -> Result<usize, String> {
    match var("COHORT_PROCS") {
        None => Ok(0),
        Some(s) if s.trim() == "auto" => {
            Ok(std::thread::available_parallelism().map_or(1, |n| n.get()))
        }
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("COHORT_PROCS={s:?} is not a number of workers or `auto`")),
    }
}

/// `COHORT_WORKER`: this process is a worker.
pub fn is_worker() -> bool {
    var("COHORT_WORKER").is_some()
}

/// `COHORT_WORKER_TIMEOUT`.
pub fn worker_timeout() -> Duration {
    let secs = var("COHORT_WORKER_TIMEOUT")
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(60.0);
    Duration::from_secs_f64(secs)
}

/// `COHORT_BIND`.
pub fn bind_addr() -> String {
    var("COHORT_BIND").unwrap_or_else(|| "127.0.0.1".into())
}

/// `COHORT_SPIN_US`.
pub fn spin() -> Duration {
    Duration::from_micros(
        var("COHORT_SPIN_US")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(200),
    )
}

/// `COHORT_MAX_FRAME`.
pub fn max_frame() -> u64 {
    var("COHORT_MAX_FRAME")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(crate::frame::DEFAULT_MAX_FRAME)
}

/// `COHORT_TOPOLOGY`.
pub fn topology() -> String {
    var("COHORT_TOPOLOGY").unwrap_or_else(|| "all_to_all".into())
}

/// `COHORT_TRANSPORT`.
pub fn transport() -> String {
    var("COHORT_TRANSPORT")
        .unwrap_or_else(|| "tcp".into())
        .trim()
        .to_ascii_lowercase()
}

/// `COHORT_MACHINE_FILE`.
pub fn machine_file() -> Option<String> {
    var("COHORT_MACHINE_FILE")
}

/// `COHORT_SSHFLAGS`, split at whitespace.
pub fn ssh_flags() -> Vec<String> {
    var("COHORT_SSHFLAGS")
        .map(|s| s.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// `COHORT_LOG`, unparsed: [`crate::log`] reads its level from it.
pub fn log() -> Option<String> {
    var("COHORT_LOG")
}

/// `COHORT_SSH_TUNNEL`: set and not `0`/`false`/`no`.
pub fn ssh_tunnel() -> bool {
    var("COHORT_SSH_TUNNEL").is_some_and(|s| !matches!(s.trim(), "0" | "false" | "no"))
}
