//! Layer 6: parallel patterns and collectives, on top of remote calls: pmap, distributed loops,
//! everywhere, worker pools, worker-local state, MPI-style collectives.

pub mod collective;
pub mod everywhere;
pub mod local;
pub mod loops;
pub mod pmap;
pub mod pool;
