//! The seeds' jobs/results example: 4 workers take job ids from a `RemoteChannel` on the
//! master, "work" for a random time, and put `(job_id, exec_time, pid)` into a results channel.
use cohort::prelude::*;
use rand::Rng;
use std::time::{Duration, Instant};

/// Takes jobs until the jobs channel is closed, posting a result for each.
#[cohort::remote]
fn do_work(
    jobs: RemoteChannel<u32>,
    results: RemoteChannel<(u32, f64, usize)>,
) -> cohort::Result<()> {
    while let Ok(job_id) = jobs.take() {
        let exec_time: f64 = rand::thread_rng().gen();
        std::thread::sleep(Duration::from_secs_f64(exec_time));
        results.put((job_id, exec_time, myid()))?;
    }
    Ok(())
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    if nworkers() < 4 || workers() == [1] {
        addprocs(4 - if workers() == [1] { 0 } else { nworkers() })?;
    }
    let jobs: RemoteChannel<u32> = RemoteChannel::new(32, 1)?;
    let results: RemoteChannel<(u32, f64, usize)> = RemoteChannel::new(32, 1)?;
    let n = 12;
    let feeder = {
        let jobs = jobs.clone();
        std::thread::spawn(move || (1..=n).try_for_each(|i| jobs.put(i)))
    };
    for p in workers() {
        remote_do(do_work, p, (jobs.clone(), results.clone()))?;
    }
    let t = Instant::now();
    let mut seen = Vec::new();
    for _ in 0..n {
        let (job_id, exec_time, pid) = results.take()?;
        println!("{job_id} finished in {exec_time:.2} seconds on worker {pid}");
        seen.push(job_id);
    }
    println!("elapsed: {:.2} s", t.elapsed().as_secs_f64());
    feeder.join().expect("feeder thread")?;
    jobs.close()?;
    seen.sort_unstable();
    assert_eq!(seen, (1..=n).collect::<Vec<_>>());
    Ok(())
}
