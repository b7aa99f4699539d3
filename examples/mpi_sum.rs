//! The seeds' MPI.jl example: every rank contributes its rank, `Reduce` with SUM to root 0,
//! and the root prints the sum.
//!
//! ```text
//! cargo run --release --example mpi_sum                                  # master + 3 TCP workers
//! mpirun -np 4 target/release/examples/mpi_sum     (built with --features mpi)  # 4 MPI ranks
//! ```
//!
//! The program is the same in both cases: under `mpirun` the ranks are the processes (rank 0
//! is the master, pid 1); otherwise the master starts 3 local workers.
use cohort::collective::{self, Op};
use cohort::prelude::*;

/// Each process's part: its rank into a sum on rank 0.
#[cohort::remote]
fn sum_of_ranks() -> cohort::Result<Option<i64>> {
    let rank = collective::rank()?;
    let size = collective::size();
    let s = collective::reduce(0, &[rank as i64], Op::sum())?.map(|v| v[0]);
    if let Some(s) = s {
        println!("sum of ranks: {s}");
        assert_eq!(s, (size * (size - 1) / 2) as i64);
    }
    collective::barrier()?;
    Ok(s)
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    if workers() == [1] {
        addprocs(3)?;
    }
    let others: Vec<_> = workers()
        .into_iter()
        .map(|p| remotecall(sum_of_ranks, p, ()))
        .collect::<cohort::Result<_>>()?;
    let mine = sum_of_ranks()?;
    for f in others {
        assert_eq!(f.fetch()?, None, "only the root gets the sum");
    }
    assert!(mine.is_some());
    Ok(())
}
