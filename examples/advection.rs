//! The seeds' advection benchmark: `q[i,j,t+1] = q[i,j,t] + u[i,j,t]` on `n × n × n` f64
//! arrays shared by the workers, in four versions (see `advection/kernels.rs`): serial,
//! one distributed loop per time step, one call per worker for all steps (`advection_shared`),
//! and rayon threads in one process.
//!
//! ```text
//! cargo run --release --example advection [-- --size N] [--workers W] [--reps R]
//! ```
//!
//! Defaults: `N = 500` (two 1 GB arrays), `W` = the number of cores, `R = 5`. Before timing it
//! measures a STREAM triad on 1 thread and on `W` threads in the same run. Each version runs
//! once cold (its first run, printed beside), which is also checked bit for bit against the
//! serial result (after `q` is overwritten with NaN, so nothing stale can pass), then `R` times;
//! the table shows the median. GB/s counts 24 bytes per update (read `q`, read `u`, write `q`),
//! `n * n * (n - 1)` updates per run; "% triad" compares with the triad of as many threads as
//! the version uses. The last line sums it up in a fixed form for scripts.

#[path = "advection/kernels.rs"]
mod kernels;

use std::time::Instant;

use cohort::prelude::*;
use cohort::shm::ndarray::Axis;
use cohort_baseline::{triad, TRIAD_DEFAULT_ELEMS};
use kernels::*;

struct Args {
    size: usize,
    workers: usize,
    reps: usize,
}

fn usage(msg: &str) -> cohort::Error {
    cohort::Error::Invalid(format!(
        "{msg}\nusage: advection [--size N] [--workers W] [--reps R]"
    ))
}

fn parse_args() -> cohort::Result<Args> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut a = Args {
        size: 500,
        workers: cores,
        reps: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--size" => &mut a.size,
            "--workers" => &mut a.workers,
            "--reps" => &mut a.reps,
            // Ignore what cargo's runners may pass along (e.g. `--bench`).
            _ => continue,
        };
        let v = it
            .next()
            .ok_or_else(|| usage(&format!("{flag} needs a value")))?;
        *slot = v
            .parse()
            .map_err(|_| usage(&format!("{flag} {v}: not a number")))?;
    }
    if a.size < 2 || a.workers == 0 || a.reps == 0 {
        return Err(usage("--size must be at least 2, --workers and --reps at least 1"));
    }
    Ok(a)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `q`'s data as bits (NaN-safe comparison).
fn bits(q: &Arr) -> Vec<u64> {
    q.as_slice().iter().map(|x| x.to_bits()).collect()
}

/// Recompute `samples` columns `(i, j)` of the serial result from the initial values alone.
fn spot_check(q: &Arr, samples: usize) -> cohort::Result<()> {
    let n = q.shape()[0];
    let v = q.view();
    for s in 0..samples {
        let k = (s * 7919 + 13) % (n * n);
        let (i, j) = (k % n, k / n);
        let mut x = q0(k);
        for t in 0..n - 1 {
            x += u0(k + n * n * t);
            if v[[i, j, t + 1]].to_bits() != x.to_bits() {
                return Err(cohort::Error::Invalid(format!(
                    "serial result wrong at [{i}, {j}, {}]: {} instead of {x}",
                    t + 1,
                    v[[i, j, t + 1]]
                )));
            }
        }
    }
    Ok(())
}

struct Row {
    name: &'static str,
    median_ms: f64,
    cold_ms: f64,
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let args = parse_args()?;
    let (n, w) = (args.size, args.workers);
    let have = if workers() == [1] { 0 } else { nworkers() };
    if have < w {
        addprocs(w - have)?;
    }
    println!("advection of {n}×{n}×{n} f64 on workers {:?}", workers());

    let t1 = triad(TRIAD_DEFAULT_ELEMS, 1, 10);
    let tw = triad(TRIAD_DEFAULT_ELEMS, w, 10);
    println!(
        "STREAM triad ({} MiB per array, best of 10): 1 thread {:.2} GB/s, {w} threads {:.2} GB/s",
        (TRIAD_DEFAULT_ELEMS * 8) >> 20,
        t1.best_gbs,
        tw.best_gbs
    );

    if std::env::var("ADVECTION_PIN").is_ok() {
        for (k, &p) in workers().iter().enumerate() {
            let n = remotecall_fetch(pin_to_core, p, (k % 2,))?;
            println!("pinned {n} threads of {p} to core {}", k % 2);
        }
    }
    let t0 = Instant::now();
    let (q, u) = make_arrays(n)?;
    println!(
        "q and u created on pids {:?} and initialised in {:.0} ms (myrange of each: {:?})",
        q.pids(),
        t0.elapsed().as_secs_f64() * 1e3,
        q.chunks(Axis(1), q.pids().len())
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .map_err(|e| cohort::Error::Invalid(e.to_string()))?;

    type Version<'a> = (&'static str, Box<dyn Fn() -> cohort::Result<()> + 'a>);
    let versions: Vec<Version> = vec![
        ("serial", Box::new(|| advection_serial(&q, &u))),
        ("parallel", Box::new(|| advection_parallel(&q, &u))),
        ("shared", Box::new(|| advection_shared(&q, &u))),
        ("threads", Box::new(|| advection_threads(&q, &u, &pool))),
        ("thr_step", Box::new(|| advection_threads_step(&q, &u, &pool))),
        ("par_dbg", Box::new(|| advection_parallel_dbg(&q, &u))),
    ];
    let mut reference: Option<Vec<u64>> = None;
    let mut rows = Vec::new();
    let only = std::env::var("ADVECTION_ONLY").ok();
    for (name, run) in &versions {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|x| x == *name || x == "serial")) { continue; }
        poison(&q)?;
        let t = Instant::now();
        run()?;
        let cold_ms = t.elapsed().as_secs_f64() * 1e3;
        match &reference {
            None => {
                spot_check(&q, 2000)?;
                reference = Some(bits(&q));
            }
            Some(r) => {
                if bits(&q) != *r {
                    return Err(cohort::Error::Invalid(format!(
                        "{name} differs from serial"
                    )));
                }
            }
        }
        let mut ms = Vec::with_capacity(args.reps);
        for _ in 0..args.reps {
            let t = Instant::now();
            run()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        rows.push(Row {
            name,
            median_ms: median(&ms),
            cold_ms,
        });
    }

    let updates = (n * n * (n - 1)) as f64;
    let gbs = |ms: f64| updates * 24.0 / (ms * 1e-3) / 1e9;
    let serial_ms = rows[0].median_ms;
    println!(
        "\n{:<10} {:>10} {:>10} {:>8} {:>8} {:>8}",
        "version", "ms", "cold ms", "GB/s", "% triad", "speedup"
    );
    for r in &rows {
        let triad = if r.name == "serial" { t1.best_gbs } else { tw.best_gbs };
        println!(
            "{:<10} {:>10.1} {:>10.1} {:>8.2} {:>7.0}% {:>7.2}x",
            r.name,
            r.median_ms,
            r.cold_ms,
            gbs(r.median_ms),
            100.0 * gbs(r.median_ms) / triad,
            serial_ms / r.median_ms
        );
    }
    println!(
        "all versions bit-identical; median of {} runs after the cold one; \
         % triad: serial against 1 thread, the others against {w}",
        args.reps
    );
    if only.is_some() { return Ok(()); }
    let [s, p, sh, th] = [0, 1, 2, 3].map(|i| rows[i].median_ms);
    println!(
        "targets: shared/triad {:.2} (>= 1.0), parallel/shared {:.2} (<= 1.5), \
         serial/triad1 {:.2} (>= 1.0), threads/shared time {:.2} (>= 1.0)",
        gbs(sh) / tw.best_gbs,
        p / sh,
        gbs(s) / t1.best_gbs,
        th / sh
    );
    println!(
        "advection size={n} workers={w} serial_ms={s:.1} parallel_ms={p:.1} shared_ms={sh:.1} \
         threads_ms={th:.1} triad1_gbs={:.2} triad_gbs={:.2} serial_gbs={:.2} shared_gbs={:.2}",
        t1.best_gbs,
        tw.best_gbs,
        gbs(s),
        gbs(sh)
    );
    Ok(())
}
