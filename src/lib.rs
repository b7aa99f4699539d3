//! # cohort
//!
//! Julia's `Distributed` and `SharedArrays` model for Rust: a master process and worker
//! processes, remote calls that return futures, remote channels, and (in `cohort::shm`)
//! shared-memory arrays, over interchangeable transports.
//!
//! ```no_run
//! use cohort::prelude::*;
//!
//! #[cohort::remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> cohort::Result<()> {
//!     let _cluster = cohort::init()?; // a worker serves here and never returns
//!     let pids = addprocs(2)?; // [2, 3]
//!     let f = remotecall(square, pids[0], (7,))?; // returns at once
//!     assert_eq!(f.fetch()?, 49);
//!     assert_eq!(remotecall_fetch(square, 3, (8,))?, 64);
//!     Ok(())
//! }
//! ```
//!
//! ## The model, for Julia and MPI users
//!
//! - **Every process runs the same binary.** `cohort::init()` is the first thing `main` does.
//!   In a worker (started by a cluster manager) it serves requests and never returns; in the
//!   master it returns a guard that removes the workers when dropped. `COHORT_PROCS=N` adds N
//!   local workers at `init`, like `julia -p N`.
//! - **Functions travel by name.** Mark a free function `#[cohort::remote]`; its arguments and
//!   result travel with serde. Passing an unmarked function or a closure to a remote call does
//!   not compile (the error says to add the attribute). What Julia would capture in a closure
//!   travels as an argument. The attribute makes the name a unit-struct value that derefs to the
//!   function: `f(x)` calls it here, `*f` is the plain `fn` (see [`remote`]).
//! - **Pids as in Julia**: the master is 1, workers 2, 3, ...; `workers()` is `[1]` when
//!   there are none.
//! - **Futures and RemoteChannels** are remote references: a `Future` is write-once, a
//!   `RemoteChannel` a bounded channel stored on one process and usable from all. Both can be
//!   passed to remote calls; the owner frees a value once no handle to it is left anywhere.
//! - **Errors are values**: a panic or `Err` in a remote function comes back as
//!   [`Error::Remote`] (`RemoteException`); a dead worker fails what waited on it with
//!   [`Error::ProcessExited`]. A function returning `Result<T, E>` (any `E: Display`) yields
//!   `T`, so callers write `f.fetch()?`.
//! - **Keep the guard** `init` returns (`let _cluster = cohort::init()?;`): dropping it shuts
//!   the cluster down, and later calls are errors saying so (`let _ = ...` drops it at once).
//! - **Calls to `myid()` run in-process** with their arguments moved, not serialized.
//!
//! | Julia | cohort |
//! |---|---|
//! | `addprocs(4)` | `addprocs(4)?` |
//! | `@everywhere f(x) = ...` | `#[cohort::remote] fn f(x: T) -> R` |
//! | `remotecall(f, 2, x)` | `remotecall(f, 2, (x,))?` |
//! | `remotecall_fetch(f, 2, x)` | `remotecall_fetch(f, 2, (x,))?` |
//! | `@spawnat :any f(x)` | `spawnat(Target::Any, f, (x,))?` |
//! | `fetch(r)` | `r.fetch()?` |
//! | `RemoteChannel(()->Channel{Int}(10), 3)` | `RemoteChannel::<i64>::new(10, 3)?` |
//! | `put!(c, v)`, `take!(c)` | `c.put(v)?`, `c.take()?` |
//! | `rmprocs(2, waitfor=0)` | `rmprocs(&[2], Duration::ZERO)?` |
//! | `pmap(f, c)`, `pmap(f, c1, c2)` | `pmap(f, c)?`, `pmap_zip(f, c1, c2)?` |
//! | `pmap(f, wp, c; batch_size=10, on_error=e->0, retry_delays=zeros(3))` | `pmap_with(f, c, &PmapOptions::new().pool(&wp).batch_size(10).on_error(\|_\| Ok(0)).retry_delays([Duration::ZERO; 3]))?` |
//! | `@distributed (+) for i = 1:n body end` | `distributed_reduce(1..=n, part_fn, args, Reducer::sum())?` |
//! | `@sync @distributed for i = 1:n body end` | `sync_distributed_for(1..=n, part_fn, args)?` (or `sync(&distributed_for(..)?)?`) |
//! | `@everywhere f(x)` | `everywhere(f, (x,))?` |
//! | `global A` on workers, `clear!(:A, workers())` | `local::set("A", a)`, `local::clear(&["A"], &workers())?` |
//! | `WorkerPool([2, 3])`, `CachingPool(workers())` | `WorkerPool::new([2, 3])`, `CachingPool::new(workers())` |
//! | `remotecall_fetch(f, wp, x)` | `wp.remotecall_fetch(f, (x,))?` |
//! | `default_worker_pool()` | `default_worker_pool()` |
//! | `wait(wp)`, `pgenerate(f, c)` | `wp.wait()?`, `pgenerate(f, c)` (an iterator of `Result`s) |
//! | `myrole()` | `myrole()` (`Role::Master` or `Role::Worker`) |
//!
//! ## Parallel patterns
//!
//! ```no_run
//! use cohort::prelude::*;
//!
//! #[cohort::remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! /// The body of `@distributed (+) for i = 1:n; i * k; end`, one worker's part of it.
//! #[cohort::remote]
//! fn scaled(part: Part, k: i64) -> i64 {
//!     part.reduce(|i| i * k)
//! }
//!
//! #[cohort::remote]
//! fn keep(v: Vec<f64>) {
//!     local::set("v", v); // a worker-local global
//! }
//!
//! #[cohort::remote]
//! fn sum_with(data: Cached<Vec<f64>>, i: u64) -> f64 {
//!     data.iter().sum::<f64>() + i as f64
//! }
//!
//! fn main() -> cohort::Result<()> {
//!     let _cluster = cohort::init()?;
//!     addprocs(2)?;
//!     assert_eq!(pmap(square, 1..=4)?, [1, 4, 9, 16]);
//!     let opts = PmapOptions::new().batch_size(BatchSize::Auto).on_error(|_| Ok(0));
//!     let _v = pmap_with(square, 0..100_000, &opts)?;
//!     assert_eq!(distributed_reduce(1..=100, scaled, 2, Reducer::sum())?, 10_100);
//!     everywhere(keep, (vec![1.0; 1000],))?;
//!     local::clear(&["v"], &workers())?;
//!     let data = Cached::new(vec![1.0; 1_000_000]);
//!     let cp = CachingPool::new(workers()); // ships `data` once per worker
//!     let opts = PmapOptions::new().pool(&cp);
//!     let _s = cohort::pmap_args(sum_with, (0..100).map(|i| (data.clone(), i)), &opts)?;
//!     Ok(())
//! }
//! ```
//!
//! ## Messages
//!
//! What cohort reports (a refused connection, a failed `accept`, an `rmprocs` warning, ssh's
//! notes) are [`tracing`](https://docs.rs/tracing) events with the fields `pid`, `error` and,
//! where there is one, `peer`: `warn` for what another process did, `error` for what failed
//! here, `info` for notes. **Install your subscriber before `cohort::init()`**, as the global
//! default (`tracing::subscriber::set_global_default`, or `tracing_subscriber::fmt::init()`):
//! cohort's own threads log too, and workers run the same `main`. Without a subscriber,
//! cohort writes each event as one line on stderr (`cohort[pid 3]: refused a connection:
//! wrong cluster cookie ...`; a worker's reaches the master through its manager), at
//! `COHORT_LOG`'s level or above (`off`, `error`, `warn`, `info` (default), `debug`, `trace`).
//! See [`cohort_core::log`].
//!
//! ## Crates
//!
//! `cohort-core` (the model), `cohort-transports` (shared memory, TCP, Unix sockets, MPI), `cohort-launcher`
//! (cluster managers), `cohort-shm` (shared arrays), `cohort-macros` (`#[remote]`). This crate
//! re-exports them and wires the defaults: shared memory within a host and TCP between hosts
//! (`Shm`), and the local manager.

pub use cohort_core::read_worker_address;
pub use cohort_core::{
    addprocs, addprocs_with, blocking, check_interrupt, cluster_cookie, current_topology,
    fetch_all, fetch_any, fetchfrom, interrupt, interrupted, link_count, live_refs, live_refs_on,
    myid, myrole, next_pid, nprocs, nworkers, procs, procs_on, remote_do, remotecall,
    remotecall_fetch, remotecall_fetch_by_name, remotecall_wait, rmprocs, set_cluster_cookie,
    set_topology, spawnat, workers, AbstractChannel, AddProcsParams, Cluster, ClusterManager,
    Count, Error, Fetch, Future, ManageOp, NoAddress, Pid, RemoteChannel, RemoteException,
    RemoteFn, Result, RmProcs, Role, Target, Topology, WorkerConfig, WORKER_ADDRESS_TAG,
};
pub use cohort_core::{
    bytes_sent, default_worker_pool, distributed_for, distributed_reduce, everywhere,
    everywhere_on, pgenerate, pgenerate_on, pmap, pmap_args, pmap_with, pmap_zip, pmap_zip_with,
    set_default_worker_pool, split_range, sync, sync_distributed_for, BatchSize, Cached,
    CachingPool, ExponentialBackOff, PGenerator, Part, PmapOptions, Reducer, WorkerPool,
};
pub use cohort_core::{local, loops, placement};
pub use cohort_macros::remote;

/// MPI-style collectives over all processes: `barrier`, `broadcast`, `reduce`, `all_reduce`,
/// `gather`, `scatter`, with built-in and user operations.
pub mod collective {
    pub use cohort_core::collective::*;
}

/// Transports: `Shm` (the default: TCP to start every link, shared-memory rings between
/// processes of one host), TCP and Unix domain sockets.
pub mod transports {
    pub use cohort_core::transport::{Listener, Transport};
    pub use cohort_transports::{Shm, Tcp, Unix};
}

/// rsmpi, for calling MPI directly next to cohort (feature `mpi`).
#[cfg(feature = "mpi")]
pub use cohort_transports::rsmpi as mpi;

/// Cluster managers: local workers, workers on other hosts through ssh, and workers from a
/// Slurm allocation.
pub mod managers {
    pub use cohort_launcher::machines;
    pub use cohort_launcher::mpirun::{find_mpirun, mpirun_command};
    pub use cohort_launcher::{
        addprocs_machine_file, addprocs_machines, addprocs_slurm, parse_machine_file,
        read_machine_file, Allocation, IntoMachine, LocalManager, Machine, SlurmManager,
        SlurmOptions, SpecError, SshManager, SshOptions,
    };
}

pub use cohort_launcher::{
    addprocs_machines, addprocs_slurm, Machine, SlurmManager, SlurmOptions, SshOptions,
};

/// Shared-memory arrays (Julia's `SharedArrays`): [`SharedArray`](shm::SharedArray),
/// `localindices`, `indexpids`, `myrange`; see the `cohort-shm` crate docs.
pub mod shm {
    pub use cohort_shm::*;
}

/// The names most programs use: `use cohort::prelude::*;`.
///
/// It brings [`Result`], which shadows the standard `Result` in that module.
/// Its error type defaults to [`Error`] and can still be given, so `Result<T>` means
/// `Result<T, cohort::Error>` and `Result<T, String>` keeps its standard meaning.
pub mod prelude {
    pub use crate::collective;
    pub use crate::local;
    pub use crate::shm::ndarray::{Axis, Ix1, Ix2, Ix3};
    pub use crate::shm::{indexpids, localindices, myrange, SharedArray};
    pub use crate::{
        addprocs, fetch_any, interrupt, myid, myrole, nprocs, nworkers, procs, remote_do,
        remotecall, remotecall_fetch, remotecall_wait, rmprocs, spawnat, workers, Error, Future,
        Pid, RemoteChannel, RemoteException, Result, Role, Target,
    };
    pub use crate::{
        default_worker_pool, distributed_for, distributed_reduce, everywhere, pgenerate, pmap,
        pmap_args, pmap_with, pmap_zip, sync, sync_distributed_for, BatchSize, Cached, CachingPool,
        ExponentialBackOff, Part, PmapOptions, Reducer, WorkerPool,
    };
}

/// serde, for the derives of one's own types that travel: with
/// `#[serde(crate = "cohort::serde")]` a program needs no serde dependency of its own.
pub use serde;

/// bytemuck, for shared-array element types: with `#[bytemuck(crate = "cohort::bytemuck")]`
/// the `Pod` and `Zeroable` derives need no bytemuck dependency of one's own.
pub use bytemuck;

#[doc(hidden)]
pub use cohort_core::__private;

use std::sync::Arc;

/// Starts cohort in this process with the default transport (`COHORT_TRANSPORT`, `shm`) and
/// local workers.
///
/// Call it first in `main`. In a worker it serves until told to exit and never returns. In
/// the master it returns a guard that removes all workers when dropped, after adding
/// `COHORT_PROCS` workers when that variable is set, SSH workers on the hosts of the
/// machine file `COHORT_MACHINE_FILE` when that is set, and one worker per task of the Slurm
/// allocation when `COHORT_SLURM` is set (all three set by the `cohort` command).
///
/// # Errors
/// `Error::Invalid` naming each `COHORT_*` variable whose value does not parse, with the
/// accepted values (see [`cohort_core::env`]); in a worker such a value ends the process with the
/// message on stderr, which the master reports.
///
/// # Julia
/// Starting `julia` (with `-p N`).
pub fn init() -> Result<Cluster> {
    let config = cohort_core::env::startup()?;
    if !matches!(config.transport.as_str(), "shm" | "tcp" | "unix" | "mpi") {
        let e = Error::Invalid(format!(
            "COHORT_TRANSPORT={:?} is not a transport (shm, tcp, unix or mpi)",
            std::env::var("COHORT_TRANSPORT").unwrap_or_default()
        ));
        if config.worker {
            cohort_core::env::exit_worker(&e);
        }
        return Err(e);
    }
    if let Some(c) = init_mpi()? {
        return Ok(c);
    }
    let transport: Arc<dyn transports::Transport> = match config.transport.as_str() {
        "unix" => Arc::new(cohort_transports::Unix),
        "tcp" => Arc::new(cohort_transports::Tcp),
        _ => Arc::new(cohort_transports::Shm),
    };
    let cluster = init_with(transport, Arc::new(cohort_launcher::LocalManager::new()))?;
    // `cohort --machine-file FILE`: workers on the hosts of the file.
    if let Some(file) = &config.machine_file {
        cohort_launcher::addprocs_machine_file(
            std::path::Path::new(file),
            cohort_launcher::SshOptions::from_env(),
        )?;
    }
    // `cohort --slurm`: the tasks of the allocation.
    if config.slurm {
        cohort_launcher::addprocs_slurm(cohort_launcher::SlurmOptions::from_env())?;
    }
    Ok(cluster)
}

/// Whether `mpirun` (OpenMPI, MPICH/Hydra, or a PMIx launcher) started this process.
pub fn launched_by_mpirun() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

#[cfg(feature = "mpi")]
fn init_mpi() -> Result<Option<Cluster>> {
    let t = cohort_core::env::transport();
    let wanted = std::env::var_os("COHORT_TRANSPORT").is_some();
    if (wanted && t == "mpi") || (!wanted && launched_by_mpirun()) {
        let w = cohort_transports::MpiWorld::init().map_err(|e| Error::Io {
            context: "starting MPI".into(),
            source: e,
        })?;
        return cohort_core::init_world(Arc::new(w)).map(Some);
    }
    Ok(None)
}

#[cfg(not(feature = "mpi"))]
fn init_mpi() -> Result<Option<Cluster>> {
    if cohort_core::env::transport() == "mpi" {
        return Err(Error::Invalid(
            "COHORT_TRANSPORT=mpi, but this program was built without MPI: rebuild with `--features mpi`".into(),
        ));
    }
    let ranks = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .and_then(|s| s.parse::<usize>().ok());
    if ranks.is_some_and(|n| n > 1) {
        return Err(Error::Invalid(
            "this program was started by mpirun but built without MPI: rebuild with `--features mpi` (or run it without mpirun)".into(),
        ));
    }
    Ok(None)
}

/// Like [`init`] with another transport and default manager.
pub fn init_with(
    transport: Arc<dyn transports::Transport>,
    manager: Arc<dyn ClusterManager>,
) -> Result<Cluster> {
    cohort_core::init_with(transport, manager)
}
