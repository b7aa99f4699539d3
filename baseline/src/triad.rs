//! STREAM triad: `a[i] = b[i] + s*c[i]` over `f64` arrays.

use std::hint::black_box;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use crate::stats;

/// Bytes STREAM counts per triad element: read `b[i]`, read `c[i]`, write `a[i]`.
///
/// With ordinary (write-allocating) stores the hardware moves 32, as in STREAM's C code.
pub const TRIAD_BYTES_PER_ELEM: usize = 24;

/// The scalar `s` of the triad.
pub const TRIAD_SCALAR: f64 = 3.0;

/// Elements per array for [`triad_gbs_default`]: 2²⁵ `f64` = 256 MiB per array, 768 MiB for
/// the three.
///
/// STREAM asks for each array to be at least 4× the last-level cache. This VM reports a
/// 300 MiB L3 (the host's, shared with other guests); arrays of 128, 256 and 512 MiB all give
/// the same figure here, so the reported L3 does not hold them, and 256 MiB keeps a default run
/// at about 1.4 s with one thread and 0.6 s with two, first touch included.
pub const TRIAD_DEFAULT_ELEMS: usize = 1 << 25;

/// Repetitions timed by [`triad_gbs_default`] (after one warm-up), as STREAM's `NTIMES`.
const DEFAULT_REPS: usize = 10;

/// The result of one [`triad`] run.
#[derive(Debug, Clone, PartialEq)]
pub struct Triad {
    /// Elements per array (all threads together).
    pub n_elems: usize,
    /// Threads that ran the kernel, each over its own contiguous chunk.
    pub threads: usize,
    /// Best repetition in GB/s (10⁹ bytes/s, 24 bytes per element) — STREAM's figure.
    pub best_gbs: f64,
    /// Median repetition in GB/s.
    pub median_gbs: f64,
    /// Wall time of each timed repetition, in order (warm-up excluded).
    pub times: Vec<Duration>,
}

/// The triad loop itself, as timed: `a[i] = b[i] + s * c[i]` over the common length.
///
/// A plain zipped loop that the compiler vectorises; no non-temporal stores.
pub fn triad_kernel(a: &mut [f64], b: &[f64], c: &[f64], s: f64) {
    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}

/// Runs the triad over arrays of `n_elems` `f64` split into `threads` contiguous chunks and
/// returns the best and median of `reps` timed repetitions, after one untimed warm-up.
///
/// Each thread (a scoped std thread) allocates and first-touches its own chunk of `a`, `b` and
/// `c`, so on a NUMA machine its pages are local to it (threads are not pinned). A repetition is
/// timed by the first thread between two barriers, so it spans the slowest thread. After the
/// last repetition every element of `a` is checked against its exact expected value.
///
/// # Panics
///
/// If `n_elems`, `threads` or `reps` is zero, or if the check of `a` fails.
pub fn triad(n_elems: usize, threads: usize, reps: usize) -> Triad {
    assert!(
        n_elems > 0 && threads > 0 && reps > 0,
        "triad needs n_elems, threads, reps > 0"
    );
    let times = run(n_elems, threads, reps, |start, a| {
        for (i, &v) in (start..).zip(a) {
            assert_eq!(v, expected(i), "triad: wrong a[{i}]");
        }
    });
    let mut gbs: Vec<f64> = times
        .iter()
        .map(|t| (n_elems * TRIAD_BYTES_PER_ELEM) as f64 / t.as_secs_f64() / 1e9)
        .collect();
    stats::sort(&mut gbs);
    Triad {
        n_elems,
        threads,
        best_gbs: gbs[gbs.len() - 1],
        median_gbs: stats::median(&gbs),
        times,
    }
}

/// Best triad bandwidth in GB/s over `reps` repetitions; see [`triad`].
pub fn triad_gbs(n_elems: usize, threads: usize, reps: usize) -> f64 {
    triad(n_elems, threads, reps).best_gbs
}

/// [`triad_gbs`] with [`TRIAD_DEFAULT_ELEMS`] elements and 10 repetitions.
pub fn triad_gbs_default(threads: usize) -> f64 {
    triad_gbs(TRIAD_DEFAULT_ELEMS, threads, DEFAULT_REPS)
}

/// Initial `b[i]`: the global index (exact in `f64` below 2⁵³).
fn init_b(i: usize) -> f64 {
    i as f64
}

/// Initial `c[i]`: a small repeating pattern, so that a misplaced chunk shows.
fn init_c(i: usize) -> f64 {
    (i % 8) as f64
}

/// The exact value of `a[i]` after any repetition.
fn expected(i: usize) -> f64 {
    init_b(i) + TRIAD_SCALAR * init_c(i)
}

/// Runs `1 + reps` repetitions on `threads` scoped threads and returns the `reps` timed ones;
/// afterwards each thread hands its chunk of `a` (with the chunk's first global index) to
/// `inspect`.
fn run(
    n: usize,
    threads: usize,
    reps: usize,
    inspect: impl Fn(usize, &[f64]) + Sync,
) -> Vec<Duration> {
    let barrier = Barrier::new(threads);
    let (barrier, inspect) = (&barrier, &inspect);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (start, end) = (n * t / threads, n * (t + 1) / threads);
                scope.spawn(move || {
                    // First touch happens here, on the thread that will use the pages.
                    let b: Vec<f64> = (start..end).map(init_b).collect();
                    let c: Vec<f64> = (start..end).map(init_c).collect();
                    let mut a = vec![-1.0; end - start];
                    let mut times = Vec::with_capacity(reps);
                    for rep in 0..=reps {
                        barrier.wait();
                        let t0 = Instant::now();
                        triad_kernel(
                            black_box(&mut a),
                            black_box(&b),
                            black_box(&c),
                            TRIAD_SCALAR,
                        );
                        barrier.wait();
                        if rep > 0 {
                            times.push(t0.elapsed());
                        }
                    }
                    inspect(start, &a);
                    times
                })
            })
            .collect();
        let mut all: Vec<Vec<Duration>> = handles
            .into_iter()
            .map(|h| h.join().expect("triad thread panicked"))
            .collect();
        all.swap_remove(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn values_are_exact_and_chunks_cover_the_array() {
        let n = 1001;
        for threads in [1, 2, 3] {
            let seen = Mutex::new(vec![f64::NAN; n]);
            let times = run(n, threads, 2, |start, a| {
                seen.lock().unwrap()[start..start + a.len()].copy_from_slice(a);
            });
            assert_eq!(times.len(), 2);
            let seen = seen.into_inner().unwrap();
            assert_eq!(seen[0], 0.0);
            assert_eq!(seen[1], 1.0 + 3.0);
            assert_eq!(seen[7], 7.0 + 21.0);
            assert_eq!(seen[8], 8.0);
            assert_eq!(seen[500], 500.0 + 12.0);
            assert_eq!(seen[1000], 1000.0);
            assert!((0..n).all(|i| seen[i] == expected(i)));
        }
    }
}
