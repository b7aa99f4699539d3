//! Where a host's workers run: the master divides the CPUs it may use among the workers on
//! its host (`COHORT_CPU_BIND`, by default `auto`), as an MPI launcher binds its ranks.
//!
//! Workers that poll their links for the next request are always runnable, and the kernel's
//! scheduler, left alone, now and then stacks two of them on one CPU while another idles: a
//! loop over all workers then takes twice as long for as long as that lasts (on two cores, one
//! per-step loop in three ran at half speed). Each worker gets a contiguous block of the
//! master's CPUs, so with fewer workers than CPUs a worker still has several for its own
//! threads (rayon in a worker keeps its parallelism). With more workers than CPUs nothing can
//! keep them apart, and every worker may use all of them, as MPI leaves oversubscribed ranks
//! unbound. The master itself is never bound: it mostly waits. On a host with more of the
//! cluster's processes than CPUs, the workers' threads run in the kernel's batch class
//! (`SCHED_BATCH`), so that a worker woken by a request does not take the CPU of the master
//! that is still sending (see `set_batch`).
//!
//! The division is redone after each `addprocs` over all the host's workers, through a call to
//! each. A worker whose own CPU set excludes the master's CPUs (another cgroup) keeps its own,
//! with a warning in its log.

use crate::base::env;
use crate::base::error::Error;
use crate::base::ids::Pid;
use crate::links::link::set_oversubscribed;
use crate::runtime::registry::RemoteFn;
use crate::runtime::Runtime;
use crate::wire::codec::{self, Body};
use crate::wire::proto::{Mode, Msg};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid as OsPid;

/// Whether the master binds the workers of its host (`COHORT_CPU_BIND` is `auto`, the
/// default, not `none`).
pub fn binds_workers() -> bool {
    env::cpu_bind()
}

/// The CPUs this thread may run on (the process's set unless changed), in increasing order.
pub fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(OsPid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// The CPUs of each of `workers` workers: contiguous blocks of `cpus` as equal as they can
/// be (the last ones one larger), or all of `cpus` for each when they are fewer than the
/// workers. The master divides [`allowed_cpus`] so among the workers of its host; a program
/// that runs its own threads (a rayon pool in the master) can place them the same way with
/// [`bind_thread`].
pub fn divide(cpus: &[usize], workers: usize) -> Vec<Vec<usize>> {
    if workers > cpus.len() {
        return vec![cpus.to_vec(); workers];
    }
    (0..workers)
        .map(|i| cpus[i * cpus.len() / workers..(i + 1) * cpus.len() / workers].to_vec())
        .collect()
}

/// Binds the calling thread to `cpus` (threads it starts later inherit them).
///
/// # Errors
/// A CPU number beyond what the kernel's sets hold, or a set with none of the CPUs this
/// thread may use (`EINVAL`).
pub fn bind_thread(cpus: &[usize]) -> std::io::Result<()> {
    sched_setaffinity(OsPid::from_raw(0), &cpu_set(cpus)?).map_err(std::io::Error::from)
}

fn cpu_set(cpus: &[usize]) -> std::io::Result<CpuSet> {
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c).map_err(std::io::Error::from)?;
    }
    Ok(set)
}

/// Binds every thread of this process to `cpus` (threads started later inherit it from the
/// thread that starts them).
fn bind_process(cpus: &[usize]) -> std::io::Result<()> {
    let set = cpu_set(cpus)?;
    each_thread(|tid| sched_setaffinity(OsPid::from_raw(tid), &set).map_err(Into::into))
}

/// Runs `f` on the id of every thread of this process (a thread that ends meanwhile is
/// skipped; threads started later inherit what `f` set from the thread that starts them).
fn each_thread(mut f: impl FnMut(i32) -> std::io::Result<()>) -> std::io::Result<()> {
    let mut done = std::collections::HashSet::new();
    // A thread started while the list is read may be missing from it: read it again until
    // a pass finds no thread that is not done yet.
    loop {
        let mut fresh = false;
        for e in std::fs::read_dir("/proc/self/task")? {
            let Some(tid) = e?.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if !done.insert(tid) {
                continue;
            }
            fresh = true;
            match f(tid) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
        if !fresh {
            return Ok(());
        }
    }
}

/// Puts every thread of this process that runs in the kernel's normal class into its
/// `SCHED_BATCH` class when `batch`, and every batch thread back into the normal class when
/// not; a thread in another class (real-time, idle: the user's choice) is left as it is. A batch
/// thread that wakes never preempts the thread running on its CPU; it runs when that one
/// yields, sleeps or has had its slice. On crowded cores that is what a worker woken by a
/// request must do: the master is still sending the same step's requests to the other
/// workers, and a worker that took the master's CPU at its wake-up (for the whole of its part)
/// held back the others' requests, so the parts ran one after the other, each worker then too
/// late for the other's spin, which kept it so (a per-step loop at 2.5 × its step time for
/// hundreds of steps). The master stays normal: it waits polling with yields, and a worker
/// that has replied yields to it.
fn set_batch(batch: bool) -> std::io::Result<()> {
    let (from, to) = if batch {
        (libc::SCHED_OTHER, libc::SCHED_BATCH)
    } else {
        (libc::SCHED_BATCH, libc::SCHED_OTHER)
    };
    let param = libc::sched_param { sched_priority: 0 };
    each_thread(|tid| {
        // SAFETY: reads the policy of thread `tid`; an id that is not (or no longer) a thread
        // is an error, not UB.
        let now = unsafe { libc::sched_getscheduler(tid) };
        if now < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if now != from {
            return Ok(());
        }
        // SAFETY: `param` is a valid `sched_param` for the call's duration; the kernel only
        // reads it, and a `tid` that is not (or no longer) a thread is an error, not UB.
        let rc = unsafe { libc::sched_setscheduler(tid, to, &param) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    })
}

/// A worker's half: on a host with more of the cluster's processes than CPUs when `crowded`,
/// and from now on on `cpus` unless `None` (`COHORT_CPU_BIND=none`). A set the worker may not
/// use is logged and left, never an error: placement only speeds the cluster up.
#[cohort_macros::remote(crate = crate)]
fn bind_cpus(cpus: Option<Vec<usize>>, crowded: bool) {
    set_oversubscribed(crowded);
    if let Err(e) = set_batch(crowded) {
        crate::log!(
            warn,
            error = %e,
            "could not set this worker's scheduling class (batch: {crowded})"
        );
    }
    if let Some(cpus) = cpus {
        if let Err(e) = bind_process(&cpus) {
            crate::log!(
                warn,
                error = %e,
                "could not bind this worker to CPUs {cpus:?}; it runs where it ran"
            );
        }
    }
}

/// The master's half, after workers joined: tells each worker on its host whether the host
/// is crowded and, unless `COHORT_CPU_BIND` is `none`, its share of the master's CPUs, and
/// waits for all. A worker that cannot be reached is left out (its departure is reported as
/// usual).
pub(crate) fn place_host_workers(rt: &'static Runtime, host_workers: &[Pid]) {
    let cpus = allowed_cpus();
    // The master polls too while it waits, so it counts.
    let crowded = host_workers.len() + 1 > cpus.len();
    set_oversubscribed(crowded);
    let shares = divide(&cpus, host_workers.len());
    let msg = Msg::Call {
        func: bind_cpus.name().into(),
        mode: Mode::Fetch,
    };
    // All the calls go out before any reply is awaited: the workers bind at once.
    let sent: Vec<_> = host_workers
        .iter()
        .zip(shares)
        .map(|(&pid, share)| {
            let share = binds_workers().then_some(share);
            let req = codec::encode_vec(&(share, crowded))
                .map_err(|e| Error::invalid(e.to_string()))
                .and_then(|b| rt.request_start(pid, &msg, &Body::Owned(b)));
            (pid, req)
        })
        .collect();
    for (pid, req) in sent {
        if let Err(e) = req.and_then(|p| rt.request_finish(p)) {
            crate::log!(debug, peer = pid, error = %e, "worker {pid} not placed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_are_divided_in_contiguous_blocks_or_shared_when_too_few() {
        let cpus: Vec<usize> = (0..8).collect();
        assert_eq!(divide(&cpus, 2), [vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(divide(&cpus, 3), [vec![0, 1], vec![2, 3, 4], vec![5, 6, 7]]);
        assert_eq!(divide(&[0, 1], 2), [vec![0], vec![1]]);
        assert_eq!(divide(&[4, 6, 9], 3), [vec![4], vec![6], vec![9]]);
        assert_eq!(divide(&[0, 1], 3), [vec![0, 1], vec![0, 1], vec![0, 1]]);
        assert_eq!(divide(&[0, 1], 1), [vec![0, 1]]);
        assert!(divide(&[0, 1], 0).is_empty());
    }

    #[test]
    fn a_cpu_set_the_kernel_cannot_take_is_an_error_and_changes_nothing() {
        let before = allowed_cpus();
        let e = bind_thread(&[CpuSet::count()]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        let e = bind_thread(&[]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert_eq!(allowed_cpus(), before);
    }
}
