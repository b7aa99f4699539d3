//! Criterion bench of the advection versions (`examples/advection/kernels.rs`) at a size that
//! finishes in a few minutes: `n = 200` by default (`ADVECTION_BENCH_SIZE`), on one worker per
//! core, with a one-thread STREAM triad over the same bytes beside them.
//!
//! `cargo bench --bench advection` (add a filter, e.g. `-- shared`, as usual). Throughput is
//! reported per 24 bytes per update, as in the example.

#[path = "../examples/advection/kernels.rs"]
mod kernels;

use std::hint::black_box;

use cohort::prelude::*;
use criterion::{Criterion, Throughput};
use kernels::*;

fn main() {
    // Workers re-execute this binary with the same arguments: `init` serves them here.
    let _cluster = cohort::init().expect("cohort::init");
    let n: usize = std::env::var("ADVECTION_BENCH_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let w = std::thread::available_parallelism().map_or(1, |c| c.get());
    if workers() == [1] {
        addprocs(w).expect("addprocs");
    }
    let (q, u) = make_arrays(n).expect("q and u");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .expect("rayon pool");
    let updates = n * n * (n - 1);

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group(format!("advection_{n}"));
    g.throughput(Throughput::Bytes(24 * updates as u64));
    g.sample_size(20);
    g.bench_function("serial", |b| b.iter(|| advection_serial(&q, &u).unwrap()));
    g.bench_function("parallel", |b| {
        b.iter(|| advection_parallel(&q, &u).unwrap())
    });
    g.bench_function("shared", |b| b.iter(|| advection_shared(&q, &u).unwrap()));
    g.bench_function("shared_naive", |b| {
        b.iter(|| advection_shared_naive(&q, &u).unwrap())
    });
    g.bench_function("threads", |b| {
        b.iter(|| advection_threads(&q, &u, &pool).unwrap())
    });
    // The memory-bandwidth yardstick: a one-thread triad over the same bytes.
    let (mut a, x, y) = (vec![0.0; updates], vec![1.0; updates], vec![2.0; updates]);
    g.bench_function("triad1_same_bytes", |b| {
        b.iter(|| cohort_baseline::triad_kernel(black_box(&mut a), &x, &y, 3.0))
    });
    g.finish();
    c.final_summary();
}
