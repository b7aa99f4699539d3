//! The README's parallel-patterns snippet, compiled and run by the examples test.
use cohort::prelude::*;

#[cohort::remote]
fn norm(v: Vec<f64>) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `@distributed (+) for i = 1:n ... end`: the body reduces this worker's part of the range.
#[cohort::remote]
fn count_odd(part: Part, offset: i64) -> i64 {
    part.reduce(|i| (i + offset) & 1)
}

#[cohort::remote]
fn warm_up() {}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    addprocs(2)?;
    let norms = pmap(norm, vec![vec![3.0, 4.0], vec![6.0, 8.0]])?; // [5.0, 10.0], input order
    let odd = distributed_reduce(1..=1_000_000, count_odd, 0, Reducer::sum())?; // 500000
    everywhere(warm_up, ())?; // every process, errors collected per pid
    println!("{norms:?} {odd}");
    Ok(())
}
