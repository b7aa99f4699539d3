//! Runs the examples as users do and checks what they print (each within a time bound; the
//! example's own cluster guard removes its workers, and a killed example's workers exit when
//! their master link closes).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} not built: `cargo build --examples` first (`cargo test --all-targets` builds examples only as test harnesses)",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str], limit: Duration) -> String {
    let path = example(name);
    let mut child = Command::new(&path)
        .args(args)
        .env_remove("COHORT_PROCS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{name} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{name} failed: {status}\n{out}\n{err}");
    out
}

fn field(line: &str, key: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        .parse()
        .unwrap()
}

#[test]
fn remote_basics() {
    let out = run("remote_basics", &[], Duration::from_secs(60));
    assert!(out.contains("procs() = [1, 2, 3]"), "{out}");
    assert!(out.contains("s = 1 .+ r = ["), "{out}");
    assert!(out.contains("@spawnat :any: r on 2, s on 3"), "{out}");
    // A worker's output reaches the master's stdout, labelled.
    assert!(
        out.contains("From worker 2:\tadding 1 on worker 2"),
        "{out}"
    );
}

#[test]
fn count_heads() {
    let out = run("count_heads", &[], Duration::from_secs(60));
    let heads: u64 = out.split_whitespace().next().unwrap().parse().unwrap();
    assert!(heads.abs_diff(100_000_000) < 70_000, "{out}");
    assert!(
        out.contains("in 200000000 flips on workers 2 and 3"),
        "{out}"
    );
}

#[test]
fn jobs_results() {
    let out = run("jobs_results", &[], Duration::from_secs(60));
    let mut jobs: Vec<u32> = Vec::new();
    for l in out.lines().filter(|l| l.contains(" finished in ")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        // "J finished in S seconds on worker P"
        assert_eq!(
            (w[1], w[2], w[4], w[5], w[6]),
            ("finished", "in", "seconds", "on", "worker"),
            "{l}"
        );
        let s: f64 = w[3].parse().unwrap();
        assert!((0.0..=1.0).contains(&s), "{l}");
        assert!((2..=5).contains(&w[7].parse::<usize>().unwrap()), "{l}");
        jobs.push(w[0].parse().unwrap());
    }
    jobs.sort_unstable();
    assert_eq!(jobs, (1..=12).collect::<Vec<_>>(), "{out}");
}

#[test]
fn dict_channel() {
    let out = run("dict_channel", &[], Duration::from_secs(60));
    let want = "DictChannel on worker 2\nisready(d, :k) = false\nisready(d, :k) = true\nfetch(d, :k) = v\ntake!(d, :k) = v\nisready(d, :k) = false\ntake!(d, :w) = from worker 3\n";
    assert_eq!(out, want);
}

#[test]
fn bench_remotecall_prints_its_line() {
    let out = std::process::Command::new(example("bench_remotecall"))
        .env("ITERS", "300")
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = String::from_utf8(out.stdout).unwrap();
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("remotecall rtt_us="), "{last}");
    for k in [
        "rtt_us",
        "raw_rtt_us",
        "rtt_ratio",
        "fetch_gbs",
        "raw_gbs",
        "bw_ratio",
        "addprocs2_ms",
        "worker_rss_kib",
    ] {
        assert!(field(last, k) > 0.0, "{k} in {last}");
    }
}

#[test]
fn custom_manager() {
    let out = run("custom_manager", &[], Duration::from_secs(60));
    for want in [
        "manage(pid 2, Register)\nmanage(pid 3, Register)\nworkers: [2, 3]\n",
        "worker 2 (os pid ",
        "worker 3 (os pid ",
        "greets worker 2\n",
        "removed; workers() = [1]\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert_eq!(out.matches("listening on @cohort-").count(), 2, "{out}");
    // Each worker's life, in order (the two workers' events may interleave).
    for p in [2, 3] {
        let at = |op: &str| {
            out.find(&format!("manage(pid {p}, {op})"))
                .unwrap_or_else(|| panic!("no {op} for {p}: {out}"))
        };
        assert!(
            at("Register") < at("Deregister") && at("Deregister") < at("Finalize"),
            "{out}"
        );
    }
}

#[test]
fn mpi_sum_over_tcp() {
    let out = run("mpi_sum", &[], Duration::from_secs(60));
    assert_eq!(out, "sum of ranks: 6\n");
}

#[test]
fn pmap_svd() {
    let out = run("pmap_svd", &["--size", "60"], Duration::from_secs(120));
    assert_eq!(out.matches("largest singular value").count(), 10, "{out}");
    assert!(out.contains("pmap on 2 workers:"), "{out}");
}

#[test]
fn caching_pool_ships_once() {
    let out = run(
        "caching_pool",
        &["--mb", "8", "--calls", "20"],
        Duration::from_secs(120),
    );
    assert!(
        out.contains("CachingPool:      16.0 MB shipped (2 copies of foo)"),
        "{out}"
    );
    assert!(
        out.contains("WorkerPool:      160.0 MB shipped (foo with every call)"),
        "{out}"
    );
}

#[test]
fn distributed_sum() {
    let out = run(
        "distributed_sum",
        &["--n", "2000000"],
        Duration::from_secs(120),
    );
    let heads: Vec<u64> = out
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(heads.len(), 3, "{out}");
    for h in heads {
        assert!(h.abs_diff(1_000_000) < 10_000, "{out}");
    }
}

#[test]
fn bench_pmap_prints_its_line() {
    let out = run(
        "bench_pmap",
        &["--items", "2000", "--loop", "2000000"],
        Duration::from_secs(120),
    );
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("pmap items=2000 workers=2 batch1_per_s="),
        "{last}"
    );
    for k in [
        "batch1_per_s",
        "auto_per_s",
        "rayon_per_s",
        "dsum_speedup",
        "step_overhead_us",
    ] {
        assert!(field(last, k) > 0.0, "{k} in {last}");
    }
}

#[test]
fn readme_programs_run() {
    run("first_program", &[], Duration::from_secs(60));
    assert_eq!(
        run("readme_patterns", &[], Duration::from_secs(60)),
        "[5.0, 10.0] 500000\n"
    );
}

/// Types of one's own through `cohort::serde` and `cohort::bytemuck`: a struct travels both
/// ways, and a `Pod` struct fills a shared array (pids 2, 3 own two elements each).
#[test]
fn readme_own_types() {
    assert_eq!(
        run("own_types", &[], Duration::from_secs(60)),
        "Job { name: \"job on 2\", weights: [3.5] }\n[2.0, 2.0, 3.0, 3.0]\n"
    );
}

#[test]
fn readme_shared_array() {
    assert_eq!(
        run("readme_shared", &[], Duration::from_secs(60)),
        "2 2 3 4\n2 3 3 4\n2 3 4 4\n"
    );
}

/// The advection benchmark at a small odd size (its columns and slabs off the cache lines that
/// the streaming kernel writes whole): it checks every version bit for bit against the serial
/// result itself (and fails otherwise), and ends with its fixed line.
#[test]
fn advection_prints_its_line() {
    let out = run(
        "advection",
        &["--size", "37", "--workers", "2", "--reps", "3"],
        Duration::from_secs(120),
    );
    let last = out.lines().last().unwrap();
    let keys: Vec<&str> = last
        .split_whitespace()
        .skip(1)
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "size",
            "workers",
            "serial_ms",
            "parallel_ms",
            "shared_ms",
            "shared_naive_ms",
            "threads_ms",
            "triad1_gbs",
            "triad_gbs",
            "serial_gbs",
            "shared_gbs",
            "parallel_vs_naive",
            "threads_vs_shared"
        ],
        "{last}"
    );
    assert!(last.starts_with("advection size=37 workers=2 "), "{last}");
    for k in [
        "triad1_gbs",
        "triad_gbs",
        "parallel_vs_naive",
        "threads_vs_shared",
    ] {
        assert!(field(last, k) > 0.0, "{k} in {last}");
    }
    for v in [
        "serial",
        "parallel",
        "shared",
        "shared_naive",
        "threads",
        "threads_step",
    ] {
        assert!(
            out.lines().any(|l| l.split_whitespace().next() == Some(v)),
            "no {v} row in\n{out}"
        );
    }
}
