//! Who is who: process ids and remote reference ids, and this process's own pid.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A process id: 1 is the master, workers are 2, 3, ... in order of joining, never reused.
pub type Pid = usize;

/// A remote reference id: the creating process and a number unique there (Julia's `RRID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rrid {
    /// The process that created the reference.
    pub whence: Pid,
    /// Unique on `whence`.
    pub id: u64,
}

/// This process's pid once the runtime knows it (0: a worker not yet contacted).
static MYID: AtomicUsize = AtomicUsize::new(0);
/// Whether this process has started cohort (`init`).
static STARTED: AtomicBool = AtomicBool::new(false);

/// This process's id: 1 on the master, 2, 3, ... on workers; 1 before `init`, as the process
/// that has not started cohort is the master-to-be (and Julia's process 1); 0 in a worker
/// that no master has contacted yet.
///
/// # Julia
/// `myid()`.
pub fn myid() -> Pid {
    if STARTED.load(Ordering::Acquire) {
        MYID.load(Ordering::Acquire)
    } else {
        1
    }
}

/// Set by the runtime: at start (1 on the master, 0 on a worker) and when the master assigns
/// the pid (the handshake, or the rank in MPI mode).
pub(crate) fn set_myid(pid: Pid) {
    MYID.store(pid, Ordering::Release);
    STARTED.store(true, Ordering::Release);
}

/// The pid for log lines: none before the process has one.
pub(crate) fn known_pid() -> Option<Pid> {
    Some(MYID.load(Ordering::Acquire)).filter(|&p| p != 0 && STARTED.load(Ordering::Acquire))
}
