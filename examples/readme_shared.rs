//! The README's shared-array snippet, compiled and run by the examples test.
use cohort::prelude::*;

/// The seeds' `init = S -> S[localindices(S)] = myid()`: each pid fills its own part.
#[cohort::remote]
fn fill(s: SharedArray<i64, Ix2>) -> cohort::Result<()> {
    let mut part = s.local_chunk_mut(myid())?;
    part.fill(myid() as i64);
    Ok(())
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    addprocs(3)?;
    // On workers [2, 3, 4]: [2 2 3 4; 2 3 3 4; 2 3 4 4], column-major like Julia.
    let s = SharedArray::<i64, Ix2>::with_init((3, 4), None, fill)?;
    let v = s.view();
    for i in 0..3 {
        let row: Vec<String> = (0..4).map(|j| v.view()[[i, j]].to_string()).collect();
        println!("{}", row.join(" "));
    }
    Ok(())
}
