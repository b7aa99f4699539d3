//! Collectives with 1, 2, 3 and 4 processes, built-in and user operations, scalars and slices.

mod common;

use cohort::collective::{self, Op};
use cohort::prelude::*;
use std::time::Duration;

/// What each process computes; returned so the master can check every rank's view.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Seen {
    rank: usize,
    size: usize,
    bcast: Vec<f64>,
    sum: Option<Vec<i64>>,
    all_max: Vec<f64>,
    all_custom: Vec<u32>,
    prod: Option<i64>,
    gathered: Option<Vec<Vec<u16>>>,
    scattered: Vec<i32>,
}

#[cohort::remote]
fn spmd() -> cohort::Result<Seen> {
    let rank = collective::rank()?;
    let size = collective::size();
    collective::barrier()?;
    let bcast = collective::broadcast(1 % size, &[rank as f64 + 0.5, 7.0])?;
    let sum = collective::reduce(0, &[rank as i64, 10 * rank as i64, 1], Op::sum())?;
    let all_max = collective::all_reduce(&[rank as f64, -(rank as f64)], Op::max())?;
    // A user operation that is associative but not commutative: keeps the leftmost non-zero.
    let all_custom = collective::all_reduce(
        &[rank as u32 + 1],
        Op::custom(|a, b| if *a != 0 { *a } else { *b }),
    )?;
    let prod = collective::reduce(size - 1, &[rank as i64 + 1], Op::prod())?.map(|v| v[0]);
    let mine: Vec<u16> = (0..rank as u16 + 1).collect();
    let gathered = collective::gather(0, &mine)?;
    let parts: Vec<Vec<i32>> = (0..size as i32)
        .map(|r| vec![r * 100; r as usize])
        .collect();
    let scattered = collective::scatter(size / 2, (rank == size / 2).then_some(parts.as_slice()))?;
    collective::barrier()?;
    Ok(Seen {
        rank,
        size,
        bcast,
        sum,
        all_max,
        all_custom,
        prod,
        gathered,
        scattered,
    })
}

/// Runs `spmd` on every process (the master's part here) and returns each rank's view.
fn run_everywhere() -> Vec<Seen> {
    let fs: Vec<_> = workers()
        .into_iter()
        .filter(|&p| p != 1)
        .map(|p| remotecall(spmd, p, ()).unwrap())
        .collect();
    let mut all = vec![spmd().unwrap()];
    for f in fs {
        all.push(f.fetch().unwrap());
    }
    all
}

fn check(n: usize) {
    let all = run_everywhere();
    assert_eq!(all.len(), n);
    for (r, s) in all.iter().enumerate() {
        assert_eq!((s.rank, s.size), (r, n));
        assert_eq!(s.bcast, vec![(1 % n) as f64 + 0.5, 7.0]);
        let tri = (n * (n - 1) / 2) as i64;
        assert_eq!(s.sum, (r == 0).then(|| vec![tri, 10 * tri, n as i64]));
        assert_eq!(s.all_max, vec![(n - 1) as f64, 0.0]);
        assert_eq!(s.all_custom, vec![1]);
        assert_eq!(s.prod, (r == n - 1).then(|| (1..=n as i64).product()));
        let want: Vec<Vec<u16>> = (0..n).map(|k| (0..k as u16 + 1).collect()).collect();
        assert_eq!(s.gathered, (r == 0).then_some(want));
        assert_eq!(s.scattered, vec![r as i32 * 100; r]);
    }
}

fn one_process() {
    check(1);
}

fn two_three_four_processes() {
    for n in 2..=4 {
        addprocs(1).unwrap();
        assert_eq!(nprocs(), n);
        check(n);
    }
}

fn errors() {
    assert!(matches!(
        collective::reduce(9, &[1i32], Op::sum()),
        Err(cohort::Error::Invalid(_))
    ));
    assert!(
        collective::scatter::<i32>(0, None).is_err(),
        "the root must pass the parts"
    );
}

fn main() {
    let cluster = cohort::init().unwrap();
    common::run(
        cluster,
        &[
            ("one_process", one_process),
            ("two_three_four_processes", two_three_four_processes),
            ("errors", errors),
        ],
        Duration::from_secs(60),
        Vec::new(),
    );
}
