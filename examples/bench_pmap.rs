//! Throughput of the parallel patterns on 2 workers, measured in one run:
//!
//! - `pmap` of a trivial function over 100,000 items with `batch_size = 1` (one remote call per
//!   item; the calls are pipelined) and with automatic batches;
//! - the same map with rayon in this process, for scale;
//! - a distributed sum over 200,000,000 items (`@distributed (+) for i = 1:200000000
//!   Int(rand(Bool)) end`) against the same loop run serially here;
//! - what a per-step loop costs beyond its body: `sync_distributed_for` over the workers, each
//!   part spinning for 100 µs, step after step (`step_overhead_us`, the median of 5 rounds of
//!   300 steps, per step; on two cores the master shares a core with a worker, and a worker
//!   that has to share one with another worker makes the step take twice the body).
//!
//! `cargo run --release --example bench_pmap` prints a table, then the line
//! `pmap items=100000 workers=2 batch1_per_s=X auto_per_s=Y rayon_per_s=Z dsum_speedup=W step_overhead_us=S transport=T`
//! (`T`: the transport the calls used, `COHORT_TRANSPORT`, by default `shm`).
//! `--items N` and `--loop N` change the sizes (for a quick run).
use cohort::loops::Op;
use cohort::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

/// The trivial item function.
#[cohort::remote]
fn inc(x: u64) -> u64 {
    x + 1
}

/// One part of the coin-flip sum: the body `Int(rand(Bool))` inlined in the worker's loop,
/// with a generator (xoshiro256++, as Julia's) seeded for the part.
#[cohort::remote]
fn coin_flips(part: Part, seed: u64) -> u64 {
    let mut rng = SmallRng::seed_from_u64(seed ^ part.start as u64);
    part.reduce(|_| u64::from(rng.gen::<bool>()))
}

/// A part of a step that keeps its core busy for `us` microseconds.
#[cohort::remote]
fn spin_for(_part: Part, us: u64) {
    let t = Instant::now();
    while t.elapsed().as_micros() < u128::from(us) {
        std::hint::spin_loop();
    }
}

/// The median time per step beyond a 100 µs body, in microseconds.
fn step_overhead_us() -> cohort::Result<f64> {
    const BODY_US: u64 = 100;
    const STEPS: u32 = 300;
    let nw = nworkers() as i64;
    let mut per_round = Vec::new();
    for round in 0..6 {
        let t = Instant::now();
        for _ in 0..STEPS {
            sync_distributed_for(0..nw, spin_for, BODY_US)?;
        }
        if round > 0 {
            per_round.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(STEPS) - BODY_US as f64);
        }
    }
    per_round.sort_by(|a, b| a.total_cmp(b));
    Ok(per_round[per_round.len() / 2])
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The best (shortest) of several timings: on a shared two-core machine the other runs are
/// slowed by whatever else runs, not by what is measured.
fn best(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

/// Best wall time of `runs` runs of `f` (after one warm-up run).
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    best(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let have = workers().into_iter().filter(|&p| p != 1).count();
    if have < 2 {
        addprocs(2 - have)?;
    }
    let nw = nworkers();
    let items_n = arg("--items", 100_000);
    let loop_n = arg("--loop", 200_000_000) as i64;
    let expect: Vec<u64> = (1..=items_n).collect();

    let batch1 = time(3, || {
        let v = pmap(inc, 0..items_n).expect("pmap");
        assert_eq!(v, expect);
    });
    let auto = PmapOptions::new().batch_size(BatchSize::Auto);
    let batched = time(5, || {
        let v = pmap_with(inc, 0..items_n, &auto).expect("pmap");
        assert_eq!(v, expect);
    });
    let items: Vec<u64> = (0..items_n).collect();
    let rayon = time(5, || {
        let v: Vec<u64> = items.par_iter().map(|&x| inc(x)).collect();
        assert_eq!(v, expect);
    });

    // The distributed and the serial loop alternate, so that both see the same conditions.
    let (mut heads, mut serial_heads) = (0, 0);
    let (mut dists, mut serials) = (Vec::new(), Vec::new());
    for round in 0..6 {
        let t = Instant::now();
        heads = distributed_reduce(1..=loop_n, coin_flips, 42, Reducer::sum()).expect("loop");
        let d = t.elapsed().as_secs_f64();
        let t = Instant::now();
        serial_heads = coin_flips(Part::whole(1..=loop_n, Op::Sum), black_box(42));
        let s = t.elapsed().as_secs_f64();
        if round > 0 {
            dists.push(d);
            serials.push(s);
        }
    }
    let (dist, serial) = (best(dists), best(serials));
    let sd = (loop_n as f64).sqrt() / 2.0;
    for h in [heads, serial_heads] {
        assert!((h as f64 - loop_n as f64 / 2.0).abs() < 10.0 * sd, "{h}");
    }

    let n = items_n as f64;
    let row = |what: &str, secs: f64, per_s: f64| {
        println!("{what:<44} {:>10.2} ms {per_s:>14.0} /s", secs * 1e3);
    };
    println!(
        "{:<44} {:>13} {:>16}",
        "what (best of 3-5 runs)", "time", "rate"
    );
    row("pmap, batch_size=1 (pipelined calls)", batch1, n / batch1);
    row("pmap, batch_size=auto", batched, n / batched);
    row("rayon par_iter in-process", rayon, n / rayon);
    row(
        &format!("distributed_reduce (+), {loop_n} flips"),
        dist,
        loop_n as f64 / dist,
    );
    row(
        &format!("serial loop, {loop_n} flips"),
        serial,
        loop_n as f64 / serial,
    );
    let overhead = step_overhead_us()?;
    println!(
        "{:<44} {overhead:>10.2} us",
        "per step beyond a 100 us body, median"
    );
    println!("heads: {heads} of {loop_n}");
    println!(
        "pmap items={items_n} workers={nw} batch1_per_s={:.0} auto_per_s={:.0} rayon_per_s={:.0} dsum_speedup={:.2} step_overhead_us={overhead:.2} transport={}",
        n / batch1,
        n / batched,
        n / rayon,
        serial / dist,
        cohort_core::env::transport()
    );
    Ok(())
}
