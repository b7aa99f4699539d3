use cohort::loops::{mix, Op};
use cohort::prelude::*;
use std::time::Instant;
#[cohort::remote]
fn coin_flips(part: Part, seed: u64) -> u64 { part.reduce(|i| mix(seed ^ i as u64) & 1) }
#[cohort::remote]
fn timed(part: Part, seed: u64) -> (u64, f64) { let t = Instant::now(); let r = coin_flips(part, seed); (r, t.elapsed().as_secs_f64()) }
fn main() -> cohort::Result<()> {
    let _c = cohort::init()?;
    addprocs(2)?;
    let n = 200_000_000i64;
    for _ in 0..5 {
        let t = Instant::now();
        let _ = distributed_reduce(1..=n, coin_flips, 42, Reducer::sum())?;
        let d = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let a = remotecall(timed, 2, (Part { start: 1, end: n / 2, op: Op::Sum, index: 0, parts: 2 }, 42))?;
        let b = remotecall(timed, 3, (Part { start: n / 2, end: n + 1, op: Op::Sum, index: 1, parts: 2 }, 42))?;
        let (_, ta) = a.fetch()?; let (_, tb) = b.fetch()?;
        let d2 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = coin_flips(Part::whole(1..=n, Op::Sum), std::hint::black_box(42));
        let s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = coin_flips(Part::whole(1..=n/2, Op::Sum), std::hint::black_box(42));
        let h = t.elapsed().as_secs_f64();
        let (_, solo) = remotecall_fetch(timed, 2, (Part { start: 1, end: n / 2, op: Op::Sum, index: 0, parts: 2 }, 42))?;
        println!("solo worker half {:.0} ms", solo * 1e3);
        println!("dist {:.0} ms, remotecall {:.0} ms (inside {:.0} / {:.0}), serial {:.0} ms, serial half {:.0}", d*1e3, d2*1e3, ta*1e3, tb*1e3, s*1e3, h*1e3);
    }
    Ok(())
}
