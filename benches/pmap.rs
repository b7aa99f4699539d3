//! Criterion benches of the parallel patterns on 2 workers: `pmap` of a trivial function over
//! 10,000 items one call per item and with automatic batches, the same map with rayon in this
//! process, and a distributed sum against the serial loop. `cargo bench --bench pmap`;
//! `examples/bench_pmap.rs` prints the figures in one line.
use cohort::loops::Op;
use cohort::prelude::*;
use criterion::{black_box, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::time::Duration;

#[cohort::remote]
fn inc(x: u64) -> u64 {
    x + 1
}

/// One part of the coin-flip sum (`Int(rand(Bool))` with a generator seeded for the part).
#[cohort::remote]
fn coin_flips(part: Part, seed: u64) -> u64 {
    let mut rng = SmallRng::seed_from_u64(seed ^ part.start as u64);
    part.reduce(|_| u64::from(rng.gen::<bool>()))
}

const ITEMS: u64 = 10_000;
const LOOP: i64 = 20_000_000;

fn maps(c: &mut Criterion) {
    let mut g = c.benchmark_group("pmap_10000_trivial");
    g.throughput(Throughput::Elements(ITEMS))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    g.bench_function("batch_size_1", |b| {
        b.iter(|| black_box(pmap(inc, 0..ITEMS).unwrap()))
    });
    let auto = PmapOptions::new().batch_size(BatchSize::Auto);
    g.bench_function("batch_size_auto", |b| {
        b.iter(|| black_box(pmap_with(inc, 0..ITEMS, &auto).unwrap()))
    });
    let items: Vec<u64> = (0..ITEMS).collect();
    g.bench_function("rayon_in_process", |b| {
        b.iter(|| black_box(items.par_iter().map(|&x| inc(x)).collect::<Vec<_>>()))
    });
    g.finish();
}

fn loops(c: &mut Criterion) {
    let mut g = c.benchmark_group("sum_20M_coin_flips");
    g.throughput(Throughput::Elements(LOOP as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    g.bench_function("distributed_reduce", |b| {
        b.iter(|| black_box(distributed_reduce(1..=LOOP, coin_flips, 7, Reducer::sum()).unwrap()))
    });
    g.bench_function("serial", |b| {
        b.iter(|| black_box(coin_flips(Part::whole(1..=LOOP, Op::Sum), black_box(7))))
    });
    g.finish();
}

fn main() {
    let _cluster = cohort::init().unwrap();
    addprocs(2).unwrap();
    let mut c = Criterion::default().configure_from_args();
    maps(&mut c);
    loops(&mut c);
    c.final_summary();
}
