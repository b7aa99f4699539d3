//! cohort-transports: the byte-stream transports cohort's core runs over.
//!
//! - [`Tcp`] — the default: TCP with `TCP_NODELAY`, workers bind loopback unless told otherwise.
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
mod tcp;
mod unix;

#[cfg(feature = "mpi")]
pub use crate::mpi::MpiWorld;
/// rsmpi, for programs that also call MPI directly (on `MPI_COMM_WORLD`; cohort's own traffic
/// uses private duplicates of it).
#[cfg(feature = "mpi")]
pub use ::mpi as rsmpi;
pub use tcp::Tcp;
pub use unix::Unix;
