//! The seeds' coin-flip count: two `@spawnat :any count_heads(100000000)`, summed.
//!
//! ```text
//! a = @spawnat :any count_heads(100000000)
//! b = @spawnat :any count_heads(100000000)
//! fetch(a) + fetch(b)
//! ```
use cohort::prelude::*;
use rand::{Rng, SeedableRng};

/// Flips `n` fair coins and counts the heads (64 flips per random word).
#[cohort::remote]
fn count_heads(n: u64) -> u64 {
    let mut rng = rand::rngs::SmallRng::from_entropy();
    let mut c = 0u64;
    for _ in 0..n / 64 {
        c += u64::from(rng.gen::<u64>().count_ones());
    }
    let rest = n % 64;
    if rest > 0 {
        c += u64::from((rng.gen::<u64>() & ((1u64 << rest) - 1)).count_ones());
    }
    c
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    if workers() == [1] {
        addprocs(2)?;
    }
    let n = 100_000_000;
    let t = std::time::Instant::now();
    let a = spawnat(Target::Any, count_heads, (n,))?;
    let b = spawnat(Target::Any, count_heads, (n,))?;
    let heads = a.fetch()? + b.fetch()?;
    println!(
        "{heads} heads in {} flips on workers {} and {} ({:.3} s)",
        2 * n,
        a.owner(),
        b.owner(),
        t.elapsed().as_secs_f64()
    );
    // 2e8 fair flips: the standard deviation is ~7071, so this holds but for 1 run in 10^20.
    assert!(heads.abs_diff(n) < 70_000, "{heads}");
    Ok(())
}
