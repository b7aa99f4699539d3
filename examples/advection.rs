//! The seeds' advection benchmark: `q[i,j,t+1] = q[i,j,t] + u[i,j,t]` on `n × n × n` f64
//! arrays shared by the workers, in the seeds' versions (see `advection/kernels.rs`): serial,
//! one distributed loop per time step (`parallel`), one call per worker for all steps
//! (`shared`), and rayon threads in one process (`threads`, each thread bound to a block of
//! CPUs as the master binds its workers, `cohort::placement`); plus `shared_naive`, `shared`
//! with the seeds' loop as written, the yardstick of the kernel, and, for information,
//! `threads_step`, rayon synchronised per time step like `parallel`.
//!
//! ```text
//! cargo run --release --example advection [-- --size N] [--workers W] [--reps R]
//! ```
//!
//! Defaults: `N = 500` (two 1 GB arrays), `W` = the number of cores, `R = 7`. Before timing it
//! measures a STREAM triad on 1 thread and on `W` threads in the same run. Each version runs
//! once cold (its first run, printed beside), which is checked bit for bit against the serial
//! result (after `q` is overwritten with NaN, so nothing stale can pass; the serial result is
//! itself checked against a recomputation of 2000 columns from the initial values). Then all
//! versions run `R` times, in rounds, and the table shows each one's median. GB/s counts 24
//! bytes per update (read `q`, read `u`, write `q`, as STREAM counts its triad),
//! `n * n * (n - 1)` updates per run; "% triad" compares with the triad of as many threads as
//! the version uses. The last line sums it up in a fixed form for scripts.
//!
//! # The kernel: 16 bytes per update instead of 24
//!
//! `serial`, `shared` and `threads` run each chunk of columns blocked over `t`, with streaming
//! stores (`Kernel::Streaming` in `advection/kernels.rs`, AVX intrinsics behind a run-time
//! check, else a portable blocked loop). The seeds' loop, `t` outermost over all the chunk's
//! columns, moves 24 bytes per update through memory at best: it reads `u[i,j,t]` (8), and
//! its store to `q[i,j,t+1]` first reads the line from memory (8, the write-allocate) and later
//! writes it back (8); `q[i,j,t]` comes from the cache only while the chunk's slab
//! `q[:, jrange, t]` fits there. Blocking over `t` takes a block of columns (about one L2 per slab)
//! through all steps before the next block, so the block's running values `q[:, block, t]`
//! stay in a cache-resident buffer from one step to the next, whatever the slab's size; and
//! since nothing reads `q[:, :, t + 1]` back, its values go to memory with non-temporal
//! stores, which write whole lines without the write-allocate read. Memory then sees only
//! `u` read and `q` written: 16 bytes per update, 2/3 of the traffic, so at the same memory
//! bandwidth the kernel runs at 1.5 × the speed of the seeds' loop, and at 2 × the triad's
//! counted GB/s (the triad moves 32 bytes for the 24 it counts). All loops perform the
//! same additions on the same operands, so the results stay bit-identical. The per-step
//! versions (`parallel`, `threads_step`) run one step per call: nothing to block, and
//! streaming stores would only send `q[:, :, t + 1]` to memory just before the next step
//! reads it, so they run the seeds' loop.
//!
//! # Results on the 2-vCPU development VM (n = 500, 2 workers, 6 runs of 7 rounds)
//!
//! The VM shares its host's memory bandwidth with other guests: single runs vary by a factor
//! of two or more (the 2-thread triad from 32 to 52 GB/s over these runs); the ratios,
//! measured within one run (`*_vs_*`: the median of the ratios within each round), vary less.
//! Medians over the runs, ranges in brackets:
//!
//! | version | ms | ratio |
//! |---|---|---|
//! | serial | 63 (59–85) | 1.79 (1.03–1.97) × the 1-thread triad's GB/s |
//! | parallel | 64 (53–81) | 1.19 (1.10–1.26) × shared_naive's time (`parallel_vs_naive`); in 10 later runs with the workers placed (`COHORT_CPU_BIND`), 1.15 (1.13–1.27); in 14 runs after the call path was made lighter, 1.145 (1.08–1.28) |
//! | shared | 45.6 (43–54) | 1.38 (1.23–1.77) × the 2-thread triad's GB/s; 0.90 (0.84–1.00) × shared_naive's time |
//! | shared_naive | 49 (44–63) | |
//! | threads | 47 (31–53) | 0.97 (0.80–1.01) × shared's time (`threads_vs_shared`) |
//!
//! Before the streaming kernel (blocks of 32 KiB with ordinary stores; three runs in the same
//! hour, two of them quiet): shared 72–75 ms, threads the same, serial 113–117 ms. That loop
//! was slower than the seeds' (`threads_step`, one step at a time, took 69 ms in the same
//! runs): short blocks cost more than keeping `q[:, :, t]` in the L1 saves, when a slab fits
//! in the L2 and L3 anyway.
//!
//! * `shared` runs at 1.2–1.8 × the triad and 0.90 × the time of the seeds' loop, which gets
//!   `q[:, :, t]` from the cache here (a worker's slab is 1 MB): 16 bytes against 24 would be
//!   0.67 at the same bandwidth, which two runs of six of an earlier series came within 3 %
//!   of. Blocks of 1 MiB (this L2) were 10–25 % faster than blocks of 64–256 KiB
//!   (`ADVECTION_BLOCK_KIB`), and 2 MiB as fast.
//! * One core nearly saturates this VM's memory (the 1-thread triad is 0.5–1.0 × the
//!   2-thread one over these and earlier runs), so `serial` takes only 1.4 × the time of
//!   `shared`.
//! * `parallel` runs the seeds' loop one step at a time and pays, per step, one call per
//!   worker whose reply is the wait (`sync_distributed_for`), with the master and both workers
//!   sharing two cores: about 25 µs per step over `shared_naive` (12 ms over 499 steps), of
//!   which the fan-out itself is 9 µs (two calls, two replies, the two arrays' handles each
//!   way); the rest is the wait for the slower worker at each step. The master waits for the
//!   replies asleep in a futex on its rings once it has waited 20 µs on crowded cores, so
//!   that it takes no core from the workers (polling with yields, it shared their cores: 36 ms
//!   over the steps in an earlier series). The workers of such a crowded host run in the
//!   kernel's batch class, so a worker woken by a step's request does not take the master's
//!   CPU before the step's other requests are out: without it, on a second VM, the loop fell
//!   now and then into a mode where the two parts ran one after the other (~530 µs a step
//!   against ~205), and `parallel_vs_naive` had a median of 1.33 there against 1.20 with it.
//!   The seeds' Julia per-step version is 10 × slower than its shared one.
//! * `threads` runs the same kernel on the same split in one process: processes with shared
//!   memory and threads are a tie, which one is ahead changing from run to run (the order of
//!   the versions alternates between rounds).

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
        reps: 7,
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
        return Err(usage(
            "--size must be at least 2, --workers and --reps at least 1",
        ));
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
    /// Threads or processes it computes on (for the triad it is compared with).
    threads: usize,
    cold_ms: f64,
    ms: Vec<f64>,
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let args = parse_args()?;
    let n = args.size;
    let have = if workers() == [1] { 0 } else { nworkers() };
    if have < args.workers {
        addprocs(args.workers - have)?;
    }
    // (More when `COHORT_PROCS` started more: the arrays live on every worker.)
    let w = nworkers();
    println!("advection of {n}×{n}×{n} f64 on workers {:?}", workers());

    let t1 = triad(TRIAD_DEFAULT_ELEMS, 1, 10);
    let tw = triad(TRIAD_DEFAULT_ELEMS, w, 10);
    println!(
        "STREAM triad ({} MiB per array, best of 10): 1 thread {:.2} GB/s, {w} threads {:.2} GB/s",
        (TRIAD_DEFAULT_ELEMS * 8) >> 20,
        t1.best_gbs,
        tw.best_gbs
    );

    let t0 = Instant::now();
    let (q, u) = make_arrays(n)?;
    println!(
        "q and u: {} MB each, on pids {:?}, created and initialised there in {:.0} ms; \
         myrange of each: {:?}",
        q.len() * 8 / 1_000_000,
        q.pids(),
        t0.elapsed().as_secs_f64() * 1e3,
        q.chunks(Axis(1), q.pids().len())
    );
    // The threads are placed as the master places its workers (one block of CPUs each,
    // unless `COHORT_CPU_BIND=none`), so that `threads` and `shared` differ only in threads
    // against processes.
    let bind = cohort::placement::binds_workers();
    let blocks = cohort::placement::divide(&cohort::placement::allowed_cpus(), w);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .thread_name(|i| format!("rayon-{i}"))
        .start_handler(move |i| {
            // Placement only speeds the run up; a thread that cannot be bound runs anywhere.
            if bind {
                let _ = cohort::placement::bind_thread(&blocks[i]);
            }
        })
        .build()
        .map_err(|e| cohort::Error::Invalid(e.to_string()))?;

    type Run<'a> = Box<dyn Fn() -> cohort::Result<()> + 'a>;
    let nw = q.pids().len();
    let versions: Vec<(&'static str, usize, Run)> = vec![
        ("serial", 1, Box::new(|| advection_serial(&q, &u))),
        ("parallel", nw, Box::new(|| advection_parallel(&q, &u))),
        ("shared", nw, Box::new(|| advection_shared(&q, &u))),
        (
            "shared_naive",
            nw,
            Box::new(|| advection_shared_naive(&q, &u)),
        ),
        ("threads", w, Box::new(|| advection_threads(&q, &u, &pool))),
        (
            "threads_step",
            w,
            Box::new(|| advection_threads_step(&q, &u, &pool)),
        ),
    ];
    // Cold runs, each on a poisoned q and checked against the serial result.
    let mut reference: Option<Vec<u64>> = None;
    let mut rows = Vec::new();
    for (name, threads, run) in &versions {
        poison(&q)?;
        let t = Instant::now();
        run()?;
        let cold_ms = t.elapsed().as_secs_f64() * 1e3;
        match &reference {
            None => {
                spot_check(&q, 2000)?;
                reference = Some(bits(&q));
            }
            Some(r) if bits(&q) != *r => {
                return Err(cohort::Error::Invalid(format!(
                    "{name} differs from serial"
                )));
            }
            Some(_) => {}
        }
        rows.push(Row {
            name,
            threads: *threads,
            cold_ms,
            ms: Vec::with_capacity(args.reps),
        });
    }
    // Timed runs, in rounds over the versions, so a slow moment of the machine does not fall
    // on one version only; every other round runs them in reverse order, so no version always
    // follows the same one.
    for round in 0..args.reps {
        let mut order: Vec<usize> = (0..versions.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let t = Instant::now();
            (versions[k].2)()?;
            rows[k].ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    let updates = (n * n * (n - 1)) as f64;
    let gbs = |ms: f64| updates * 24.0 / (ms * 1e-3) / 1e9;
    let runs = |name: &str| &rows.iter().find(|r| r.name == name).expect("version").ms;
    let ms = |name: &str| median(runs(name));
    // A ratio of two versions: the median of the ratios within each round (paired, so that the
    // machine's slow and fast moments cancel).
    let ratio = |a: &str, b: &str| {
        let r: Vec<f64> = runs(a).iter().zip(runs(b)).map(|(x, y)| x / y).collect();
        median(&r)
    };
    let serial_ms = ms("serial");
    println!(
        "\n{:<13} {:>9} {:>9} {:>8} {:>8} {:>8}",
        "version", "ms", "cold ms", "GB/s", "% triad", "speedup"
    );
    for r in &rows {
        let m = median(&r.ms);
        let triad = if r.threads == 1 {
            t1.best_gbs
        } else {
            tw.best_gbs
        };
        println!(
            "{:<13} {:>9.1} {:>9.1} {:>8.2} {:>7.0}% {:>7.2}x",
            r.name,
            m,
            r.cold_ms,
            gbs(m),
            100.0 * gbs(m) / triad,
            serial_ms / m
        );
    }
    println!(
        "ms: median of {} runs after the cold one; GB/s: 24 bytes per update; % triad: against \
         the triad of as many threads; all versions bit-identical to serial",
        args.reps
    );
    let (s, p, sh, nv, th) = (
        ms("serial"),
        ms("parallel"),
        ms("shared"),
        ms("shared_naive"),
        ms("threads"),
    );
    println!(
        "targets: shared_gbs/triad_gbs {:.2} (>= 1.4), parallel_ms/shared_naive_ms {:.3} \
         (<= 1.15), serial_gbs/triad1_gbs {:.2} (>= 1.0), threads_ms/shared_ms {:.3} \
         (0.95-1.05); also shared_ms/shared_naive_ms {:.3}, parallel_ms/shared_ms {:.3}; \
         ms ratios: the median of the ratios within each round",
        gbs(sh) / tw.best_gbs,
        ratio("parallel", "shared_naive"),
        gbs(s) / t1.best_gbs,
        ratio("threads", "shared"),
        ratio("shared", "shared_naive"),
        ratio("parallel", "shared"),
    );
    println!(
        "advection size={n} workers={w} serial_ms={s:.1} parallel_ms={p:.1} shared_ms={sh:.1} \
         shared_naive_ms={nv:.1} threads_ms={th:.1} triad1_gbs={:.2} triad_gbs={:.2} \
         serial_gbs={:.2} shared_gbs={:.2} parallel_vs_naive={:.3} threads_vs_shared={:.3}",
        t1.best_gbs,
        tw.best_gbs,
        gbs(s),
        gbs(sh),
        ratio("parallel", "shared_naive"),
        ratio("threads", "shared")
    );
    Ok(())
}
