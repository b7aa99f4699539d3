//! A closure capturing an 80 MB array, run 100 times through a `CachingPool` and through a
//! `WorkerPool`, with the bytes each one shipped.
//!
//! ```text
//! const foo = rand(10^7);
//! wp = CachingPool(workers())
//! let foo = foo
//!     pmap(i -> sum(foo) + i, wp, 1:100)
//! end
//! ```
//!
//! The closure is a registered function whose captured state is a `Cached` argument: through
//! the caching pool the array travels once per worker, through the plain pool with every call.
//!
//! `cargo run --release --example caching_pool [-- --mb 80 --calls 100]`
use cohort::prelude::*;
use cohort::{bytes_sent, pmap_args};
use std::time::Instant;

/// `i -> sum(foo) + i`, with `foo` captured.
#[cohort::remote]
fn sum_plus(captured: Cached<Vec<f64>>, i: u64) -> f64 {
    captured.iter().sum::<f64>() + i as f64
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    if workers() == [1] {
        addprocs(2)?;
    }
    let arg = |name: &str, default: u64| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = (arg("--mb", 80) * 1_000_000 / 8) as usize; // 80 MB of f64: 10^7 elements
    let captured = Cached::new((0..n).map(|i| (i % 7) as f64).collect::<Vec<f64>>());
    let total: f64 = captured.iter().sum();
    let calls = 1..=arg("--calls", 100);
    let expect: Vec<f64> = calls.clone().map(|i| total + i as f64).collect();
    let mb = |b: u64| b as f64 / 1e6;

    let cp = CachingPool::new(workers());
    let before = bytes_sent();
    let t = Instant::now();
    let opts = PmapOptions::new().pool(&cp);
    let v = pmap_args(
        sum_plus,
        calls.clone().map(|i| (captured.clone(), i)),
        &opts,
    )?;
    let cached = bytes_sent() - before;
    let cached_s = t.elapsed().as_secs_f64();
    assert_eq!(v, expect);
    let copies: usize = workers().iter().map(|&w| cp.cached_on(w)).sum();
    cp.clear()?;

    let wp = WorkerPool::new(workers());
    let before = bytes_sent();
    let t = Instant::now();
    let opts = PmapOptions::new().pool(&wp);
    let v = pmap_args(
        sum_plus,
        calls.clone().map(|i| (captured.clone(), i)),
        &opts,
    )?;
    let plain = bytes_sent() - before;
    let plain_s = t.elapsed().as_secs_f64();
    assert_eq!(v, expect);

    println!(
        "{} calls of sum(foo) + i, foo = {:.0} MB, {} workers",
        expect.len(),
        mb(n as u64 * 8),
        nworkers()
    );
    println!(
        "CachingPool: {:>9.1} MB shipped ({copies} copies of foo), {cached_s:.2} s",
        mb(cached)
    );
    println!(
        "WorkerPool:  {:>9.1} MB shipped (foo with every call), {plain_s:.2} s",
        mb(plain)
    );
    assert!(cached < 2 * (n as u64 * 8) * copies as u64);
    assert!(plain >= expect.len() as u64 * n as u64 * 8);
    Ok(())
}
