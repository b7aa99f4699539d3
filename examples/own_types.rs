//! The README's "types of one's own" snippet, compiled and run by the examples test: a struct
//! that travels (serde derives through `cohort::serde`) and a shared-array element type (a
//! bytemuck `Pod` through `cohort::bytemuck`), with no serde or bytemuck dependency.
use cohort::bytemuck::{Pod, Zeroable};
use cohort::prelude::*;
use cohort::serde::{Deserialize, Serialize};

/// An argument and a result of remote calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(crate = "cohort::serde")]
pub struct Job {
    name: String,
    weights: Vec<f64>,
}

/// An element of a shared array: plain old data, Julia's isbits.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[bytemuck(crate = "cohort::bytemuck")]
#[repr(C)]
pub struct Cell {
    density: f64,
    velocity: f64,
}

#[cohort::remote]
fn total(job: Job) -> Job {
    Job {
        name: format!("{} on {}", job.name, myid()),
        weights: vec![job.weights.iter().sum()],
    }
}

/// Each pid fills its own part of the array.
#[cohort::remote]
fn fill(s: SharedArray<Cell, Ix1>) -> Result<()> {
    let mut part = s.local_chunk_mut(myid())?;
    part.fill(Cell {
        density: myid() as f64,
        velocity: 0.5,
    });
    Ok(())
}

fn main() -> Result<()> {
    let _cluster = cohort::init()?;
    addprocs(2)?;
    let job = Job {
        name: "job".into(),
        weights: vec![1.0, 2.5],
    };
    println!("{:?}", remotecall_fetch(total, 2, (job,))?);
    let s = SharedArray::<Cell, Ix1>::with_init(4, None, fill)?;
    let densities: Vec<f64> = s.view().view().iter().map(|c| c.density).collect();
    println!("{densities:?}");
    Ok(())
}
