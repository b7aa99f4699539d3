//! cohort-transports: the byte-stream transports cohort's core runs over.
//!
//! - [`Shm`] — the default: shared-memory rings between processes of one host, TCP between
//!   hosts (every link starts as TCP; on one host its socket only wakes and ends it).
//! - [`Tcp`] — TCP only, with `TCP_NODELAY`; workers bind loopback unless told otherwise.
//! - [`Unix`] — Unix domain sockets, for processes on one host.
//! - `MpiWorld` (cargo feature `mpi`) — MPI through rsmpi, for programs started by `mpirun`.
//!
//! Each hands the core connected sockets; the core frames and authenticates them.
//!
//! Dependencies: `nix` (host names, sockets), `getrandom` (unguessable socket names), and, with
//! the `mpi` feature, rsmpi (`mpi`, the maintained MPI binding) plus `bytemuck` to view frames
//! as the element types MPI reduces.

#[cfg(feature = "mpi")]
mod mpi;
mod shm;
mod tcp;
mod unix;

#[cfg(feature = "mpi")]
pub use crate::mpi::MpiWorld;
/// rsmpi, for programs that also call MPI directly (on `MPI_COMM_WORLD`; cohort's own traffic
/// uses private duplicates of it).
#[cfg(feature = "mpi")]
pub use ::mpi as rsmpi;
pub use shm::Shm;
pub use tcp::Tcp;
pub use unix::Unix;
