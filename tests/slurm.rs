//! Slurm, for real: a throwaway one-node Slurm cluster (`ci/slurm start`: munged, slurmctld and
//! slurmd from Debian's packages, in a private directory) runs batch jobs of cohort programs.
//!
//! Jobs run `cluster_tour` with `SlurmManager` and under `cohort --slurm`, the advection example
//! at a small size, `mpi_sum` under `mpirun` and under `srun --mpi=pmix`, and this binary in
//! roles (a master started inside a job step, a master that loses a worker, a master whose job
//! is cancelled, launches that fail). Each job is bounded in time and cancelled by id if it
//! overruns; at the end the suite checks that no job is left, stops every daemon it started
//! and removes the directory (also when a test fails or hangs; the next run removes what a
//! killed run left). It prints the time from `sbatch` to all workers connected.
//!
//! Needs root and the packages slurm-wlm and munge; without them it prints why and passes.

mod slurm_env;
mod ssh_env;

use cohort::managers::{addprocs_slurm, SlurmOptions};
use cohort::prelude::*;
use cohort::Error;
use slurm_env::{exit_of, job_state, run_limited, scancel, squeue_all, Job};
use std::process::Command;
use std::time::{Duration, Instant};

/// The role this binary plays inside a job (a master there).
const ROLE: &str = "COHORT_SLURM_TEST_ROLE";
/// Set for a worker that must never report its address.
const SILENT: &str = "COHORT_SLURM_SILENT_WORKER";

// ---------- remote functions ----------

#[cohort::remote]
fn ospid() -> u32 {
    std::process::id()
}

#[cohort::remote]
fn sleep_then(secs: f64) -> u64 {
    std::thread::sleep(Duration::from_secs_f64(secs));
    7
}

#[cohort::remote]
fn triple(x: u64) -> u64 {
    3 * x
}

/// Whether this process's link to `pid` carries its frames in shared memory, after a call.
#[cohort::remote]
fn rings_after_a_call_to(pid: usize) -> cohort::Result<Option<bool>> {
    remotecall_fetch(triple, pid, (1,))?;
    Ok(cohort::__private::link_uses_rings(pid))
}

// ---------- helpers ----------

fn submit(ntasks: usize, body: &str, env: &[(&str, &str)]) -> Job {
    slurm_env::submit(&["-n", &ntasks.to_string()], body, env)
}

fn example(name: &str) -> Option<String> {
    ssh_env::example(name).map(|p| p.display().to_string())
}

/// `cohort`: the built binary when there is one, else this binary's `--as-cli`.
fn cohort_cli() -> String {
    let me = std::env::current_exe().unwrap();
    let bin = me.parent().unwrap().parent().unwrap().join("cohort");
    if bin.is_file() {
        bin.display().to_string()
    } else {
        format!("{} --as-cli", me.display())
    }
}

fn me() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn node_name() -> String {
    slurm_env::nodes().into_iter().next().unwrap_or_default()
}

// ---------- tests ----------

fn outside_an_allocation_is_a_clear_error() {
    if std::env::var_os("SLURM_JOB_ID").is_some() {
        println!("  skipped: this suite itself runs inside a Slurm job");
        return;
    }
    let e = addprocs_slurm(SlurmOptions::new()).unwrap_err();
    println!("  {e}");
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    let m = e.to_string();
    assert!(
        m.starts_with(
            "SlurmManager: this process is not inside a Slurm allocation (SLURM_JOB_ID is not set)"
        ),
        "{m}"
    );
    assert!(
        m.contains("sbatch -n 4") && m.contains("salloc -n 4"),
        "{m}"
    );
    assert_eq!(workers(), vec![1]);
    // `cohort --slurm` says the same, before running the program.
    let cli = cohort_cli();
    let mut parts = cli.split(' ');
    let mut c = Command::new(parts.next().unwrap());
    c.args(parts).args(["--slurm", "sh", "-c", "echo ran"]);
    let (code, text) = run_limited(&mut c, Duration::from_secs(10)).unwrap();
    println!("  cohort --slurm: {}", text.trim());
    assert_eq!(code, 2, "{text}");
    assert!(!text.contains("ran"), "{text}");
    assert!(
        text.starts_with(
            "cohort: --slurm: SlurmManager: this process is not inside a Slurm allocation"
        ),
        "{text}"
    );
}

fn cluster_tour_in_a_batch_job() {
    let Some(tour) = example("cluster_tour") else {
        println!("  skipped: examples/cluster_tour is not built (`cargo build --examples`)");
        return;
    };
    let job = submit(4, &tour, &[]);
    let t = job.wait(Duration::from_secs(60));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    assert!(
        t.contains("started 4 workers from the Slurm allocation"),
        "{t}"
    );
    assert!(t.contains("procs() = [1, 2, 3, 4, 5]"), "{t}");
    let node = node_name();
    let mut ospids = std::collections::BTreeSet::new();
    for w in 2..=5 {
        let l = t
            .lines()
            .find(|l| l.starts_with(&format!("worker {w}: host {node}, process ")))
            .unwrap_or_else(|| panic!("worker {w} on {node}: {t}"));
        ospids.insert(l.rsplit(' ').next().unwrap().to_string());
    }
    assert_eq!(ospids.len(), 4, "four processes: {t}");
    assert!(
        t.contains("pmap(collatz, 1..=24) = [0, 1, 7, 2, 5, 8, 16, 3, 19, 6, 14, 9, 9, 17, 17, 4, 12, 20, 20, 7, 7, 15, 15, 10]"),
        "{t}"
    );
    assert!(
        t.contains(&format!("items per host: {{\"{node}\": 24}}")),
        "{t}"
    );
    let connected = job.when("started 4 workers").unwrap();
    println!(
        "  sbatch to 4 workers connected: {:.2} s",
        connected - job.submitted
    );
}

fn cohort_slurm_runs_the_same_program() {
    let Some(tour) = example("cluster_tour") else {
        println!("  skipped: examples/cluster_tour is not built");
        return;
    };
    let job = submit(3, &format!("{} --slurm {tour}", cohort_cli()), &[]);
    let t = job.wait(Duration::from_secs(60));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    // The workers came with `init`: the program did not start any itself.
    assert!(!t.contains("started"), "{t}");
    assert!(t.contains("procs() = [1, 2, 3, 4]"), "{t}");
    assert!(t.contains("pmap(collatz, 1..=24) = [0, 1, 7, 2,"), "{t}");
}

fn advection_in_a_batch_job() {
    let Some(adv) = example("advection") else {
        println!("  skipped: examples/advection is not built");
        return;
    };
    let job = submit(
        2,
        &format!(
            "{} --slurm {adv} --size 40 --workers 2 --reps 1",
            cohort_cli()
        ),
        &[],
    );
    let t = job.wait(Duration::from_secs(120));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    assert!(
        t.contains("advection of 40×40×40 f64 on workers [2, 3]"),
        "{t}"
    );
    assert!(t.contains("all versions bit-identical to serial"), "{t}");
    assert!(t.contains("advection size=40 workers=2 "), "{t}");
}

fn mpi_inside_a_batch_job() {
    if !cfg!(feature = "mpi") {
        println!("  skipped: built without the `mpi` feature");
        return;
    }
    let Some(sum) = example("mpi_sum") else {
        println!("  skipped: examples/mpi_sum is not built");
        return;
    };
    if ssh_env::which("mpirun").is_none() {
        println!("  skipped: no mpirun");
        return;
    }
    // OpenMPI reads the allocation: 4 ranks, rank 0 the master.
    let job = submit(4, &format!("mpirun {sum}"), &[]);
    let t = job.wait(Duration::from_secs(60));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    assert_eq!(
        t.lines().filter(|l| l.contains("sum of ranks")).count(),
        1,
        "{t}"
    );
    assert!(t.contains("sum of ranks: 6\n"), "{t}");
    // srun starts the ranks itself through PMIx (Debian's OpenMPI is built with it).
    let job = submit(4, &format!("srun --mpi=pmix {sum}"), &[]);
    let t = job.wait(Duration::from_secs(60));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    assert!(t.contains("sum of ranks: 6\n"), "{t}");
}

/// Runs this binary in `role` as the master of a batch job; its output.
fn role_job(ntasks: usize, role: &str, launcher: &str, limit: Duration) -> (Job, String) {
    let job = submit(ntasks, &format!("{launcher}{}", me()), &[(ROLE, role)]);
    let t = job.wait(limit);
    (job, t)
}

fn nested_step_overlaps() {
    let (_, t) = role_job(4, "nested", "srun -n1 ", Duration::from_secs(60));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    assert!(t.contains("nested: 4 workers of step"), "{t}");
    assert!(
        t.contains("nested: pmap [3, 6, 9, 12, 15, 18, 21, 24]"),
        "{t}"
    );
    // Without --overlap the same launch waits for CPUs the step holds, and says so.
    let l = t
        .lines()
        .find(|l| l.starts_with("no-overlap: "))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(l.contains("Timeout"), "{l}");
    assert!(
        l.contains("2 of 2 workers") && l.contains("tasks 0, 1 never started"),
        "{l}"
    );
}

fn processes_of_one_node_talk_in_shared_memory() {
    // Master and workers share the node: the master's links and worker 2's link to worker 3
    // carry their frames in shared memory; with COHORT_TRANSPORT=tcp they stay on TCP.
    for (transport, want) in [("shm", true), ("tcp", false)] {
        let job = submit(
            3,
            &me(),
            &[(ROLE, "node_local"), ("COHORT_TRANSPORT", transport)],
        );
        let t = job.wait(Duration::from_secs(60));
        assert_eq!(exit_of(&t), Some(0), "{t}");
        let line = format!("node_local: {transport}: Some({want}) Some({want})");
        assert!(t.contains(&line), "{line} not in {t}");
    }
}

fn a_killed_worker_is_process_exited() {
    let (_, t) = role_job(4, "kill_one", "", Duration::from_secs(60));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    assert!(t.contains("kill_one: ProcessExited(3)"), "{t}");
    assert!(
        t.contains("kill_one: workers [2, 4, 5] answer; pmap [3, 6, 9, 12, 15, 18]"),
        "{t}"
    );
}

fn scancel_ends_master_and_workers() {
    for keep_master in [false, true] {
        let role = if keep_master {
            "hold_ignoring_term"
        } else {
            "hold"
        };
        // Slurm kills what is left of the batch step once the script's shell exits: a master
        // that outlives its workers is the script's own process.
        let job = slurm_env::submit_as(&["-n", "3"], &me(), &[(ROLE, role)], !keep_master);
        let ready = ssh_env::eventually(Duration::from_secs(30), || {
            job.when("hold: master").is_some()
        });
        let text = job.text();
        if !ready {
            scancel(&job.id);
            panic!("job {} never got ready:\n{text}", job.id);
        }
        let l = text
            .lines()
            .find(|l| l.starts_with("hold: master"))
            .unwrap();
        // "hold: master P workers A B C"
        let pids: Vec<u32> = l
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(pids.len(), 4, "{l}");
        assert!(pids.iter().all(|&p| ssh_env::alive(p)), "{l}");
        let t0 = Instant::now();
        scancel(&job.id);
        let gone = ssh_env::eventually(Duration::from_secs(15), || {
            pids.iter().all(|&p| !ssh_env::alive(p))
        });
        let secs = t0.elapsed().as_secs_f64();
        assert!(
            gone,
            "left running after scancel: {:?}",
            pids.iter()
                .filter(|&&p| ssh_env::alive(p))
                .collect::<Vec<_>>()
        );
        let over = ssh_env::eventually(Duration::from_secs(15), || job.over());
        assert!(over, "job {} still {:?}", job.id, job_state(&job.id));
        let t = job.text();
        for l in t.lines() {
            println!("  | {l}");
        }
        println!("  {role}: master and 3 workers gone {secs:.2} s after scancel");
        if keep_master {
            // It outlived the workers long enough to see them go.
            assert!(t.contains("hold: ProcessExited(2)"), "{t}");
        }
    }
}

fn launch_failures_say_where() {
    let (_, t) = role_job(2, "failures", "", Duration::from_secs(90));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    let node = node_name();
    let line = |p: &str| {
        t.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p}: {t}"))
            .to_string()
    };
    let l = line("silent: ");
    assert!(l.contains("Timeout"), "{l}");
    assert!(
        l.contains("2 of 2 workers")
            && l.contains(&format!("tasks 0, 1 on node {node} never reported")),
        "{l}"
    );
    let l = line("bad-env: ");
    assert!(l.contains("Invalid"), "{l}");
    assert!(
        l.contains(&format!("on node {node}")) && l.contains("COHORT_SPIN_US"),
        "{l}"
    );
    assert!(l.contains("exited before reporting its address"), "{l}");
    let l = line("bad-env took ");
    let secs: f64 = l["bad-env took ".len()..]
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!(
        secs < 20.0,
        "a failing worker ends the launch at once, not at the timeout: {l}"
    );
    let l = line("bad-flag: ");
    assert!(
        l.contains("srun ended") && l.contains("no-such-flag"),
        "{l}"
    );
    let l = line("owned-flag: ");
    assert!(l.contains("\"-n2\" is set by the manager"), "{l}");
    assert!(t.contains("failures: workers [1], no child process"), "{t}");
}

/// The launch benchmark runs in a job; its figures are printed, not checked (they vary).
fn bench_launch_in_a_batch_job() {
    let Some(bench) = example("bench_launch") else {
        println!("  skipped: examples/bench_launch is not built");
        return;
    };
    let job = submit(4, &format!("{bench} --reps 3"), &[]);
    let t = job.wait(Duration::from_secs(90));
    assert_eq!(exit_of(&t), Some(0), "{t}");
    let l = t
        .lines()
        .find(|l| l.starts_with("launch workers=4 local_ms="))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        l.contains(" slurm_ms=") && l.contains(" slurm_vs_local="),
        "{l}"
    );
    if cfg!(feature = "mpi") && ssh_env::which("mpirun").is_some() {
        assert!(l.contains(" mpirun_vs_local="), "{l}");
    }
    // No round waited for the previous round's step.
    assert!(!t.contains("step creation temporarily disabled"), "{t}");
}

fn nothing_left() {
    let q = squeue_all();
    assert!(q.trim().is_empty(), "jobs left: {q}");
}

// ---------- roles (the master of a job) ----------

fn role_nested() {
    let _c = cohort::init().unwrap();
    let t0 = Instant::now();
    let pids = addprocs_slurm(SlurmOptions::new()).unwrap();
    println!(
        "nested: {} workers of step {} in {:.2} s",
        pids.len(),
        std::env::var("SLURM_STEP_ID").unwrap_or_default(),
        t0.elapsed().as_secs_f64()
    );
    println!("nested: pmap {:?}", pmap(triple, 1..=8u64).unwrap());
    rmprocs(&pids, Duration::from_secs(20)).unwrap();
    let e = addprocs_slurm(
        SlurmOptions::new()
            .overlap(false)
            .count(2)
            .launch_timeout(Duration::from_secs(4)),
    )
    .unwrap_err();
    println!("no-overlap: {e:?}");
}

fn role_node_local() {
    let _c = cohort::init().unwrap();
    let name = cohort::__private::transport_name()
        .unwrap_or("?")
        .to_string();
    let pids = addprocs_slurm(SlurmOptions::new().count(2)).unwrap();
    let theirs = remotecall_fetch(rings_after_a_call_to, pids[0], (pids[1],)).unwrap();
    let mine = cohort::__private::link_uses_rings(pids[0]);
    println!("node_local: {name}: {mine:?} {theirs:?}");
    rmprocs(&pids, Duration::from_secs(20)).unwrap();
}

fn role_kill_one() {
    let _c = cohort::init().unwrap();
    let pids = addprocs_slurm(SlurmOptions::new()).unwrap();
    assert_eq!(pids, [2, 3, 4, 5]);
    let victim = remotecall_fetch(ospid, 3, ()).unwrap();
    let pending = remotecall(sleep_then, 3, (60.0,)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    match pending.fetch() {
        Err(Error::ProcessExited(p)) => println!("kill_one: ProcessExited({p})"),
        other => println!("kill_one: unexpected {other:?}"),
    }
    let ws = workers();
    for &w in &ws {
        remotecall_fetch(ospid, w, ()).unwrap();
    }
    println!(
        "kill_one: workers {ws:?} answer; pmap {:?}",
        pmap(triple, 1..=6u64).unwrap()
    );
}

fn role_hold(ignore_term: bool) {
    let _c = cohort::init().unwrap();
    if ignore_term {
        // SAFETY: setting a signal's disposition to "ignore" runs no code of ours in a
        // signal handler; nothing else in this process changes SIGTERM's disposition.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
    let pids = addprocs_slurm(SlurmOptions::new()).unwrap();
    let os: Vec<String> = pids
        .iter()
        .map(|&p| remotecall_fetch(ospid, p, ()).unwrap().to_string())
        .collect();
    let pending = remotecall(sleep_then, pids[0], (600.0,)).unwrap();
    println!(
        "hold: master {} workers {}",
        std::process::id(),
        os.join(" ")
    );
    match pending.fetch() {
        Err(Error::ProcessExited(p)) => println!("hold: ProcessExited({p})"),
        other => println!("hold: unexpected {other:?}"),
    }
}

fn role_failures() {
    let _c = cohort::init().unwrap();
    let e = addprocs_slurm(
        SlurmOptions::new()
            .env(SILENT, "1")
            .launch_timeout(Duration::from_secs(3)),
    )
    .unwrap_err();
    println!("silent: {e:?}");
    let t0 = Instant::now();
    let e = addprocs_slurm(SlurmOptions::new().env("COHORT_SPIN_US", "soon")).unwrap_err();
    println!("bad-env: {e:?}");
    println!("bad-env took {:.2} s", t0.elapsed().as_secs_f64());
    let e = addprocs_slurm(SlurmOptions::new().srun_flags(["--no-such-flag"])).unwrap_err();
    println!("bad-flag: {e:?}");
    let e = addprocs_slurm(SlurmOptions::new().srun_flags(["-n2"])).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    println!("owned-flag: {e}");
    // Every failed launch ended its step: srun is gone, and no worker joined.
    let left = ssh_env::eventually(Duration::from_secs(10), || ssh_env::child_pids().is_empty());
    println!(
        "failures: workers {:?}, {}",
        workers(),
        if left {
            "no child process".to_string()
        } else {
            format!("child processes {:?}", ssh_env::child_pids())
        }
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--as-cli") {
        std::process::exit(cohort_launcher::cli::run(std::env::args_os().skip(2)));
    }
    let worker = std::env::var_os("COHORT_WORKER").is_some();
    if worker && std::env::var_os(SILENT).is_some() {
        // A worker that never reports; it gives up after a while.
        std::thread::sleep(Duration::from_secs(20));
        return;
    }
    if !worker {
        if let Ok(role) = std::env::var(ROLE) {
            match role.as_str() {
                "nested" => role_nested(),
                "kill_one" => role_kill_one(),
                "node_local" => role_node_local(),
                "hold" => role_hold(false),
                "hold_ignoring_term" => role_hold(true),
                "failures" => role_failures(),
                r => panic!("unknown role {r}"),
            }
            return;
        }
    }
    let cluster = cohort::init().expect("cohort::init");
    if args.iter().any(|a| a == "--list") {
        ssh_env::run(cluster, &[], Duration::from_secs(1));
        return;
    }
    if let Some(why) = slurm_env::missing() {
        println!("slurm suite skipped: {why}");
        return;
    }
    slurm_env::sweep_stale("cohort-slurm", "");
    let dir = std::env::temp_dir().join(format!("cohort-slurm-{}", std::process::id()));
    let slurm = match slurm_env::start(&dir, &[]) {
        Ok(s) => s,
        Err(e) => {
            println!("slurm suite: starting Slurm failed: {e}");
            std::process::exit(101);
        }
    };
    println!(
        "slurm: one node ({}) from {}",
        node_name(),
        slurm.conf.display()
    );
    ssh_env::on_teardown(slurm_env::stop);
    ssh_env::run(
        cluster,
        &[
            (
                "outside_an_allocation_is_a_clear_error",
                outside_an_allocation_is_a_clear_error,
            ),
            ("cluster_tour_in_a_batch_job", cluster_tour_in_a_batch_job),
            (
                "cohort_slurm_runs_the_same_program",
                cohort_slurm_runs_the_same_program,
            ),
            ("advection_in_a_batch_job", advection_in_a_batch_job),
            ("mpi_inside_a_batch_job", mpi_inside_a_batch_job),
            ("nested_step_overlaps", nested_step_overlaps),
            (
                "processes_of_one_node_talk_in_shared_memory",
                processes_of_one_node_talk_in_shared_memory,
            ),
            (
                "a_killed_worker_is_process_exited",
                a_killed_worker_is_process_exited,
            ),
            (
                "scancel_ends_master_and_workers",
                scancel_ends_master_and_workers,
            ),
            ("launch_failures_say_where", launch_failures_say_where),
            ("bench_launch_in_a_batch_job", bench_launch_in_a_batch_job),
            ("nothing_left", nothing_left),
        ],
        Duration::from_secs(150),
    );
}
