//! How fast large shared arrays are made: the advection example's `q` and `u` (`n × n × n`
//! f64 each, 1 GB at the default n = 500), created on the workers and initialised there
//! (`make_arrays`: construction, each worker's `init` over its share, the master mapping
//! every page), against one process allocating the same bytes on its heap and filling them
//! with the same values, measured alternately in the same run.
//!
//! ```text
//! cargo run --release --example bench_construct [-- --size N] [--workers W] [--rounds R]
//! ```
//!
//! Prints, last, one line: `construct size=N workers=W bytes=B alloc_fill_ms=A shared_ms=S
//! ratio=S/A` (medians over the rounds). The target is a ratio of at most 2: construction
//! costs what the memory costs (fresh pages zeroed by the kernel, then written once), the
//! workers splitting the writing.
//!
//! On the 2-vCPU development VM (another build running beside it, 3 rounds): n = 500,
//! 2 workers: `alloc_fill_ms=1455.6 shared_ms=1267.2 ratio=0.87` (rounds 3261/1268,
//! 1456/1267, 972/1264 ms); n = 300: ratio 2.27 (233 against 528 ms; small arrays pay the
//! fixed cost of the remote calls and of the master mapping every page).

#[path = "advection/kernels.rs"]
mod kernels;

use std::time::Instant;

use cohort::prelude::*;
use kernels::{make_arrays, q0, u0};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One process: allocate `q` and `u` on the heap and write the same initial values.
fn alloc_fill(n: usize) -> f64 {
    let (len, slab) = (n * n * n, n * n);
    let t = Instant::now();
    let q: Vec<f64> = (0..len)
        .map(|k| if k < slab { q0(k) } else { 0.0 })
        .collect();
    let u: Vec<f64> = (0..len).map(u0).collect();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(q.len() + u.len(), 2 * len);
    std::hint::black_box((q, u));
    ms
}

fn shared(n: usize) -> cohort::Result<f64> {
    let t = Instant::now();
    let (q, u) = make_arrays(n)?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(q.len() + u.len(), 2 * n * n * n);
    drop((q, u));
    Ok(ms)
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let (n, w, rounds) = (
        arg("--size", 500),
        arg("--workers", 2),
        arg("--rounds", 3).max(1),
    );
    let have = if workers() == [1] { 0 } else { nworkers() };
    if have < w {
        addprocs(w - have)?;
    }
    let bytes = 2 * n * n * n * 8;
    println!(
        "q and u: {n}×{n}×{n} f64, {} MB in all, on workers {:?}",
        bytes / 1_000_000,
        workers()
    );
    let (mut a, mut s) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        a.push(alloc_fill(n));
        s.push(shared(n)?);
        println!("round {r}: alloc_fill_ms={:.0} shared_ms={:.0}", a[r], s[r]);
    }
    let (a, s) = (median(a), median(s));
    println!(
        "construct size={n} workers={} bytes={bytes} alloc_fill_ms={a:.1} shared_ms={s:.1} ratio={:.2}",
        nworkers(),
        s / a
    );
    Ok(())
}
