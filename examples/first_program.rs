//! The README's first program, compiled and run by the examples test.
use cohort::prelude::*;

#[cohort::remote]
fn square(x: u64) -> u64 {
    x * x
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?; // a worker serves here and never returns
    let pids = addprocs(2)?; // [2, 3]: this program started again in worker mode
    let f = remotecall(square, pids[0], (7,))?; // returns a Future at once
    assert_eq!(f.fetch()?, 49);
    assert_eq!(remotecall_fetch(square, 3, (8,))?, 64);
    let c: RemoteChannel<u64> = RemoteChannel::new(10, 3)?; // a channel stored on worker 3
    c.put(5)?;
    assert_eq!(c.take()?, 5);
    Ok(())
} // the guard removes the workers
