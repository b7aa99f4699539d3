// A function without #[cohort::remote] cannot be called remotely: a compile-time error that
// says to add the attribute.
use cohort::prelude::*;

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let _ = remotecall_fetch(square, 2, (3,))?;
    Ok(())
}
