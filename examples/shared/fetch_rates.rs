//! Fetch rates of prepared 64 MiB vectors, for the benches that set them beside a raw stream.
//!
//! Rounds alternate: a fetch timed once the worker is idle (the fetch's own cost), and one
//! right after it, while the worker still frees the vector it sent before (a 64 MiB vector in
//! 4 KiB pages takes ~3 ms to free on these machines, a third of a fetch's time): what a loop
//! of back-to-back fetches of fresh vectors sees.

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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}
