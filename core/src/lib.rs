//! cohort-core: the model of cohort — pids, frames, the per-process runtime, remote calls,
//! `Future`, `RemoteChannel`, distributed reference counting, and the `Transport` and
//! `ClusterManager` traits. Users reach all of this through the `cohort` facade crate.
//!
//! The crate is in layers, one folder each, bottom first: `base` (ids, errors, environment,
//! logging), `wire` (codec, frames, protocol), `links` (a link to a peer, the transport traits),
//! `runtime` (the per-process runtime: requests, dispatch, the owner store, reference counting,
//! the executor, the handshake, MPI mode, cluster management), `remote` (calls, `Future`,
//! `RemoteChannel`), `patterns` (pmap, loops, everywhere, pools, collectives). A file imports
//! only its own layer and lower ones (`tests/layers.rs` checks it); docs/ARCHITECTURE.md has
//! the picture.
//!
//! Dependencies: `serde`/`postcard` (the wire format of values; why postcard: [`codec`]), `inventory` (link-time
//! registration of remote functions), `nix` (epoll, sockets, signals), `getrandom` (cookies),
//! `bytemuck` (raw numeric vectors), `thiserror` (error types), `libc` (`madvise` for huge-page
//! receive buffers, `read(2)` into unfilled ones), `rustc-hash` (the hasher of the tables a
//! round trip looks up: request ids, pids, link tokens, function names; keys this runtime
//! assigns or an authenticated peer sends, so SipHash's resistance to chosen keys buys
//! nothing there, and it cost a tenth of a shared-memory round trip), `indicatif` (feature `progress`: pmap's progress bar on stderr), `tracing`
//! (library messages as events a user's subscriber can filter and redirect; without one,
//! [`log`] writes them to stderr itself, so `tracing-subscriber` is not needed).

// The layers, bottom first; each imports only itself and the layers below (docs/ARCHITECTURE.md).
mod base;
mod links;
mod patterns;
mod remote;
mod runtime;
mod wire;

// The modules users and the other cohort crates name, at their old paths.
pub use base::{env, error, log};
pub use links::transport;
pub use patterns::{collective, everywhere, local, loops, pmap, pool};
pub use remote::{calls, channel, future};
pub use runtime::{cluster, exec, placement, refs, registry, store};

#[doc(hidden)]
pub use wire::codec;
pub use wire::frame;

pub use base::ids::{myid, Pid, Rrid};
pub use calls::{
    fetch_any, fetchfrom, next_pid, remote_do, remotecall, remotecall_fetch,
    remotecall_fetch_by_name, remotecall_wait, spawnat, Target,
};
pub use channel::RemoteChannel;
pub use cluster::{
    addprocs, addprocs_with, cluster_cookie, current_topology, init_with, init_world, interrupt,
    link_count, live_refs, live_refs_on, myrole, nprocs, nworkers, procs, procs_on,
    read_worker_address, rmprocs, set_cluster_cookie, set_topology, workers, AddProcsParams,
    Cluster, ClusterManager, Count, ManageOp, NoAddress, RmProcs, Role, Topology, WorkerConfig,
    WORKER_ADDRESS_TAG,
};
pub use error::{Error, RemoteException, Result};
pub use everywhere::{everywhere, everywhere_on};
pub use exec::{blocking, check_interrupt, interrupted};
pub use future::{fetch_all, Fetch, Future};
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
    pub use crate::wire::codec::zeroed_vec;
    pub use crate::wire::proto::bench::{sample_messages, SampleMsg};

    pub use crate::runtime::diag::{
        decode_hello, decode_message, link_uses_rings, peer_address, raw_handshake, reply_message,
        transport_name,
    };
}
