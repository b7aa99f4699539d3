//! cohort-core: the model of cohort — pids, frames, the per-process runtime, remote calls,
//! `Future`, `RemoteChannel`, distributed reference counting, and the `Transport` and
//! `ClusterManager` traits. Users reach all of this through the `cohort` facade crate.
//!
//! Dependencies: `serde`/`bincode` (the wire format of values), `inventory` (link-time
//! registration of remote functions), `nix` (epoll, sockets, signals), `getrandom` (cookies),
//! `bytemuck` (raw numeric vectors), `thiserror` (error types), `libc` (`madvise` for huge-page
//! receive buffers), `indicatif` (feature `progress`: pmap's progress bar on stderr), `tracing`
//! (library messages as events a user's subscriber can filter and redirect; without one,
//! [`log`] writes them to stderr itself, so `tracing-subscriber` is not needed).

pub mod calls;
pub mod channel;
pub mod cluster;
pub mod collective;
pub mod env;
pub mod error;
pub mod everywhere;
pub mod exec;
pub mod frame;
pub mod future;
mod link;
pub mod local;
pub mod log;
pub mod loops;
pub mod pmap;
pub mod pool;
mod proto;
pub mod refs;
pub mod registry;
mod runtime;
pub mod store;
mod topology;
pub mod transport;
pub mod wire;
mod world;

/// A process id: 1 is the master, workers are 2, 3, ... in order of joining, never reused.
pub type Pid = usize;

pub use calls::{
    fetch_any, fetchfrom, next_pid, remote_do, remotecall, remotecall_fetch,
    remotecall_fetch_by_name, remotecall_wait, spawnat, Target,
};
pub use channel::RemoteChannel;
pub use cluster::{
    addprocs, addprocs_with, cluster_cookie, current_topology, init_with, init_world, interrupt,
    link_count, live_refs, live_refs_on, myid, myrole, nprocs, nworkers, procs, procs_on,
    read_worker_address, rmprocs, set_cluster_cookie, set_topology, workers, AddProcsParams,
    Cluster, ClusterManager, Count, ManageOp, NoAddress, RmProcs, Role, Topology, WorkerConfig,
    WORKER_ADDRESS_TAG,
};
pub use error::{Error, RemoteException, Result};
pub use everywhere::{everywhere, everywhere_on};
pub use exec::{blocking, check_interrupt, interrupted};
pub use future::{fetch_all, Future};
pub use loops::{
    distributed_for, distributed_reduce, split_range, sync, sync_distributed_for, Op, Part, Reducer,
};
pub use pmap::{
    pgenerate, pgenerate_on, pmap, pmap_args, pmap_with, pmap_zip, pmap_zip_with, BatchSize,
    ExponentialBackOff, PGenerator, PmapOptions,
};
pub use pool::{
    bytes_sent, default_worker_pool, set_default_worker_pool, Cached, CachingPool, WorkerPool,
};
pub use registry::RemoteFn;
pub use store::AbstractChannel;
pub use transport::{DType, Listener, MessageWorld, NativeCollectives, Transport};

/// Paths used by the code `#[cohort::remote]` generates.
#[doc(hidden)]
pub mod __private {
    pub use crate::registry::support::*;
    pub use crate::registry::{AnyBox, AsChannelFn, CallError, EncodeFn, RemoteEntry};
    pub use inventory;

    // For cohort's own tests and benches, which are not to reach into the modules.
    pub use crate::env::worker_timeout;
    pub use crate::frame::PROTOCOL_VERSION;
    pub use crate::wire::zeroed_vec;

    /// The name of the transport this process runs over.
    pub fn transport_name() -> Option<&'static str> {
        Some(crate::runtime::try_rt()?.transport.name())
    }

    /// The listener address this process knows for `pid` (tests, diagnostics).
    pub fn peer_address(pid: crate::Pid) -> Option<String> {
        crate::runtime::try_rt()?
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .map(|i| i.addr.clone())
            .filter(|a| !a.is_empty())
    }

    /// Runs the connecting side of a handshake with `cookie` and protocol `version` against a
    /// listener, as a foreign process would (tests of refusal). Returns the open socket when
    /// the listener accepted.
    pub fn raw_handshake(addr: &str, cookie: &str, version: u8) -> std::io::Result<std::fs::File> {
        crate::runtime::raw_handshake(addr, cookie, version)
    }
}
