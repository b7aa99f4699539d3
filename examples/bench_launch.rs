//! How long it takes to get N workers, by each launch path, measured in the same run: the local
//! manager (the baseline), Slurm (`SlurmManager`: one srun step, inside an allocation) and
//! `mpirun` (N ranks of this program in MPI mode, with the `mpi` feature).
//!
//! ```text
//! sbatch -n 4 --wrap "target/release/examples/bench_launch --reps 5"
//! cargo run --release --example bench_launch -- --workers 4     # outside Slurm: local only
//! ```
//!
//! For the managers it times `addprocs` (started until every worker is connected) and then
//! `rmprocs` (until every worker is gone, and for Slurm until srun has exited, so that the next
//! round's step does not wait for this one's CPUs); for mpirun, the whole run of a program that starts
//! MPI mode and ends it (`mpirun` to exit: start, wire-up and teardown together, which is what
//! the managers' start plus stop is compared with). Medians of `--reps` rounds, the paths
//! alternating within each round; the last line sums it up for scripts, with each path's
//! start-plus-stop as a ratio of the local manager's.
use cohort::managers::{Allocation, SlurmManager, SlurmOptions};
use cohort::prelude::*;
use cohort::ClusterManager;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

/// `addprocs` by `add`, then `rmprocs` and `gone`: (start, stop) in ms.
fn time_manager(
    add: &dyn Fn() -> cohort::Result<Vec<Pid>>,
    gone: &dyn Fn() -> bool,
) -> cohort::Result<(f64, f64)> {
    let t0 = Instant::now();
    let pids = add()?;
    let start = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    rmprocs(&pids, Duration::from_secs(60))?;
    while !gone() {
        if t1.elapsed() > Duration::from_secs(60) {
            return Err(cohort::Error::Timeout("the launch did not end".into()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((start, t1.elapsed().as_secs_f64() * 1e3))
}

/// One run of `mpirun -np n` of this program in MPI mode, in ms.
#[cfg(feature = "mpi")]
fn time_mpirun(n: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let mut c = cohort::managers::mpirun_command(n, exe).ok()?;
    c.arg("--mpi-child")
        .env_remove("COHORT_PROCS")
        .stdout(std::process::Stdio::null());
    let t0 = Instant::now();
    let st = c.status().ok()?;
    st.success().then(|| t0.elapsed().as_secs_f64() * 1e3)
}

#[cfg(not(feature = "mpi"))]
fn time_mpirun(_n: usize) -> Option<f64> {
    None
}

fn main() -> cohort::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let _cluster = cohort::init()?;
    if args.iter().any(|a| a == "--mpi-child") {
        // A rank of the mpirun path: MPI mode started; the guard ends it.
        return Ok(());
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let alloc = Allocation::from_env().ok();
    let n = flag("--workers")
        .or(alloc.as_ref().and_then(|a| a.ntasks))
        .unwrap_or(4);
    let reps = flag("--reps").unwrap_or(5).max(1);
    let mpirun = cfg!(feature = "mpi") && cohort::managers::find_mpirun().is_ok();
    println!(
        "launch of {n} workers, {reps} rounds: local manager{}{}",
        if alloc.is_some() {
            ", Slurm (one srun step)"
        } else {
            ""
        },
        if mpirun { ", mpirun" } else { "" }
    );
    let (mut local, mut slurm, mut mpi) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..reps {
        // Alternate the order, so that neither path always runs first.
        let order: &[u8] = if r % 2 == 0 { b"lsm" } else { b"msl" };
        for p in order {
            match p {
                b'l' => local.push(time_manager(&|| addprocs(n), &|| true)?),
                b's' if alloc.is_some() => {
                    let m = Arc::new(SlurmManager::new(SlurmOptions::new().count(n)));
                    let params = m.default_addprocs_params();
                    slurm.push(time_manager(
                        &|| cohort::addprocs_with(m.clone(), params.clone()),
                        &|| m.steps() == 0,
                    )?)
                }
                b'm' if mpirun => {
                    if let Some(t) = time_mpirun(n) {
                        mpi.push(t);
                    }
                }
                _ => {}
            }
        }
    }
    let med = |v: &[(f64, f64)]| {
        (
            median(v.iter().map(|x| x.0).collect()),
            median(v.iter().map(|x| x.1).collect()),
        )
    };
    let (ls, lr) = med(&local);
    let base = ls + lr;
    println!("path          start ms   stop ms   start+stop ms   × local");
    println!("local      {ls:>11.1} {lr:>9.1} {base:>15.1} {:>9.2}", 1.0);
    let mut summary = format!("launch workers={n} local_ms={base:.1}");
    if !slurm.is_empty() {
        let (ss, sr) = med(&slurm);
        println!(
            "slurm      {ss:>11.1} {sr:>9.1} {:>15.1} {:>9.2}",
            ss + sr,
            (ss + sr) / base
        );
        summary.push_str(&format!(
            " slurm_ms={:.1} slurm_start_ms={ss:.1} slurm_vs_local={:.2}",
            ss + sr,
            (ss + sr) / base
        ));
    }
    if !mpi.is_empty() {
        let m = median(mpi);
        println!(
            "mpirun     {:>11} {:>9} {m:>15.1} {:>9.2}",
            "-",
            "-",
            m / base
        );
        summary.push_str(&format!(
            " mpirun_ms={m:.1} mpirun_vs_local={:.2}",
            m / base
        ));
    }
    println!("{summary}");
    Ok(())
}
