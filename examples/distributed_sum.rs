//! The seeds' coin-flip count as a distributed reducing loop, beside the two-`spawnat` version.
//!
//! ```text
//! nheads = @distributed (+) for i = 1:200000000
//!     Int(rand(Bool))
//! end
//! ```
//!
//! `cargo run --release --example distributed_sum [-- --n 200000000]`
use cohort::prelude::*;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// One worker's part of the loop: the body `Int(rand(Bool))` for each index of the part,
/// summed with the loop's reducer. The generator is seeded per part.
#[cohort::remote]
fn flip_coins(part: Part, seed: u64) -> u64 {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ part.start as u64);
    part.reduce(|_| u64::from(rng.gen::<bool>()))
}

/// The seeds' `count_heads(n)`, for the two-spawnat version.
#[cohort::remote]
fn count_heads(n: u64) -> u64 {
    let mut rng = rand::rngs::SmallRng::from_entropy();
    (0..n).map(|_| u64::from(rng.gen::<bool>())).sum()
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    if workers() == [1] {
        addprocs(2)?;
    }
    let args: Vec<String> = std::env::args().collect();
    let n: i64 = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000_000);
    let seed = rand::random::<u64>();

    let t = Instant::now();
    let nheads = distributed_reduce(1..=n, flip_coins, seed, Reducer::sum())?;
    let dist = t.elapsed().as_secs_f64();
    println!(
        "@distributed (+): {nheads} heads in {n} flips on {} workers ({dist:.3} s)",
        nworkers()
    );

    let t = Instant::now();
    let a = spawnat(Target::Any, count_heads, (n as u64 / 2,))?;
    let b = spawnat(Target::Any, count_heads, (n as u64 / 2,))?;
    let heads = a.fetch()? + b.fetch()?;
    let two = t.elapsed().as_secs_f64();
    println!(
        "two spawnat:      {heads} heads in {n} flips on workers {} and {} ({two:.3} s)",
        a.owner(),
        b.owner()
    );

    let t = Instant::now();
    let serial = flip_coins(Part::whole(1..=n, cohort::loops::Op::Sum), seed);
    let one = t.elapsed().as_secs_f64();
    println!("serial loop here: {serial} heads ({one:.3} s)");
    println!(
        "speed-up over the serial loop: distributed {:.2}, two spawnat {:.2}",
        one / dist,
        one / two
    );
    // n fair flips: ten standard deviations (sqrt(n)/2) fail once in 10^23 runs.
    let sd = (n as f64).sqrt() / 2.0;
    for h in [nheads, heads, serial] {
        assert!((h as f64 - n as f64 / 2.0).abs() < 10.0 * sd, "{h}");
    }
    Ok(())
}
