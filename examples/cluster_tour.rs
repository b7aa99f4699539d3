//! The first program to run on a real cluster: starts workers on the hosts of a machine file,
//! or the tasks of the Slurm allocation it runs in (or 2 local workers), then shows who runs
//! where and spreads a little work with pmap.
//!
//! ```text
//! cargo run --example cluster_tour                          # 2 local workers
//! cargo run --example cluster_tour -- hosts                 # workers on the hosts in `hosts`
//! cargo run --example cluster_tour -- hosts --tunnel        # ... reached through ssh tunnels
//! cohort --machine-file hosts target/debug/examples/cluster_tour   # the same, by the launcher
//! sbatch -n 4 --wrap target/debug/examples/cluster_tour     # one worker per Slurm task
//! sbatch -n 4 --wrap "cohort --slurm target/debug/examples/cluster_tour"   # the same
//! ```
//!
//! A machine file holds one `[count*][user@]host[:port] [bind_addr[:port]]` per line, e.g.
//!
//! ```text
//! node1
//! 4*alice@node2
//! auto*node3:2222 10.1.0.3
//! ```
//!
//! Each host needs passwordless ssh from this one, and this program at the same path (a shared
//! filesystem, or the same build copied there). Extra ssh flags (a key, say) go in
//! `COHORT_SSHFLAGS="-i /path/to/key"`.

use cohort::managers::{
    addprocs_machine_file, addprocs_slurm, Allocation, SlurmOptions, SshOptions,
};
use cohort::prelude::*;
use std::collections::BTreeMap;

/// Where this worker runs: its pid, host name and operating-system process id.
#[cohort::remote]
fn whereami() -> (usize, String, u32) {
    (myid(), host_name(), std::process::id())
}

/// Steps of the Collatz sequence from `n` to 1, and the host that counted them.
#[cohort::remote]
fn collatz(n: u64) -> (u64, String) {
    let (mut x, mut steps) = (n, 0);
    while x > 1 {
        x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
        steps += 1;
    }
    (steps, host_name())
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into())
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Started by `cohort -p N` or `cohort --machine-file`: the workers are already there.
    if workers() == [1] {
        match args.iter().find(|a| !a.starts_with('-')) {
            Some(file) => {
                let opts = SshOptions::from_env().tunnel(args.iter().any(|a| a == "--tunnel"));
                let pids = addprocs_machine_file(std::path::Path::new(file), opts)?;
                println!("started {} workers on the hosts in {file}", pids.len());
            }
            None if Allocation::from_env().is_ok() => {
                let t0 = std::time::Instant::now();
                let pids = addprocs_slurm(SlurmOptions::new())?;
                println!(
                    "started {} workers from the Slurm allocation in {:.2} s",
                    pids.len(),
                    t0.elapsed().as_secs_f64()
                );
            }
            None => {
                addprocs(2)?;
                println!("started 2 local workers (give a machine file to use other hosts)");
            }
        }
    }
    println!("procs() = {:?}", procs());
    println!("master: pid {} on {}", myid(), host_name());
    for w in workers() {
        let (pid, host, ospid) = remotecall_fetch(whereami, w, ())?;
        println!("worker {pid}: host {host}, process {ospid}");
    }
    let results = pmap(collatz, 1..=24u64)?;
    let steps: Vec<u64> = results.iter().map(|r| r.0).collect();
    println!("pmap(collatz, 1..=24) = {steps:?}");
    let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, h) in &results {
        *per_host.entry(h.as_str()).or_default() += 1;
    }
    println!("items per host: {per_host:?}");
    Ok(())
}
