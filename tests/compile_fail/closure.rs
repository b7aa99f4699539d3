// A closure cannot travel: what it captures travels as an argument of a marked function.
use cohort::prelude::*;

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let k = 3u64;
    let _ = remotecall(move |x: u64| x * k, 2, (3,))?;
    Ok(())
}
