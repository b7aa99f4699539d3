//! The call rates the benches set beside their raw floors: a no-op round trip, and fetches of
//! prepared 64 MiB vectors.
//!
//! Fetch rounds alternate: a fetch timed once the worker is idle (the fetch's own cost), and
//! one right after it, while the worker still frees the vector it sent before (a 64 MiB vector
//! in 4 KiB pages takes ~3 ms to free on these machines, a third of a fetch's time): what a
//! loop of back-to-back fetches of fresh vectors sees.

use super::stash::{noop, stash_vecs, take_vec};
use cohort::prelude::*;
use std::time::Instant;

/// The median rates in GB/s of fetches of `n`-element vectors from `pid`, `(from an idle
/// worker, right after another fetch)`, over `pairs` rounds of each (after one warm-up).
pub(crate) fn fetch_rates(pid: Pid, n: usize, pairs: usize) -> cohort::Result<(f64, f64)> {
    remotecall_fetch(stash_vecs, pid, (n, 2 * pairs + 1))?;
    let bytes = (n * 8) as f64;
    let (mut settled, mut next) = (Vec::new(), Vec::new());
    for round in 0..=2 * pairs {
        let idle_first = round % 2 == 1;
        if idle_first {
            // Queued behind the worker's free of the last vector: the timer starts after it.
            remotecall_fetch(noop, pid, ())?;
        }
        let t0 = Instant::now();
        let v = remotecall_fetch(take_vec, pid, ())?;
        let gbs = bytes / t0.elapsed().as_secs_f64() / 1e9;
        assert_eq!((v.len(), v[n - 1]), (n, 1.5));
        match (round, idle_first) {
            (0, _) => {}
            (_, true) => settled.push(gbs),
            (_, false) => next.push(gbs),
        }
    }
    Ok((median(settled), median(next)))
}

/// The median round trip in µs of `iters` no-op calls to `pid`, after calling it for a while
/// first: for some tens of milliseconds after `addprocs` the scheduler may still run this
/// process on the core of the worker it calls, and a short timing would measure that instead
/// of the round trip.
pub(crate) fn noop_rtt_us(pid: Pid, iters: usize) -> cohort::Result<f64> {
    let warm = Instant::now();
    while warm.elapsed() < std::time::Duration::from_millis(300) {
        remotecall_fetch(noop, pid, ())?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        remotecall_fetch(noop, pid, ())?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(median(times))
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}
