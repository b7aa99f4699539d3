//! The `Transport` trait: how a process listens for and opens byte-stream links.
//!
//! A transport hands the core connected, bidirectional byte streams as file descriptors; the
//! core frames them itself (docs/ARCHITECTURE.md, decision 4) and waits on them with `epoll`. Concrete
//! transports (TCP, Unix sockets) live in `cohort-transports`.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

/// A listening endpoint.
pub trait Listener: Send + Sync {
    /// The address to give to peers, in the transport's own syntax (`host:port` for TCP).
    fn address(&self) -> String;
    /// Accepts one connection; the listener is non-blocking, so `WouldBlock` means none waits.
    fn accept(&self) -> io::Result<OwnedFd>;
    /// The descriptor to wait on for incoming connections.
    fn fd(&self) -> BorrowedFd<'_>;
}

/// A way of connecting processes with byte streams.
pub trait Transport: Send + Sync + 'static {
    /// Short name (`tcp`, `unix`).
    fn name(&self) -> &'static str;
    /// Binds a listener on `bind` (an interface address for TCP, a directory for Unix sockets).
    fn listen(&self, bind: &str) -> io::Result<Box<dyn Listener>>;
    /// Connects to a peer's listener address within `timeout`.
    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<OwnedFd>;
    /// Whether links between processes of one host may carry their frames in shared-memory
    /// rings (the stream then carries doorbells and the link's end only). False by default:
    /// a transport that encrypts or tunnels its streams keeps every byte on them.
    fn local_rings(&self) -> bool {
        false
    }
}

/// A fixed world of processes joined by a message-passing library (MPI): rank `r` is pid
/// `r + 1`, rank 0 the master. The core sends one frame per message (a large frame as two
/// messages, its head and its tail, to the same rank in order) and polls for arriving frames.
pub trait MessageWorld: Send + Sync + 'static {
    /// Short name (`mpi`).
    fn name(&self) -> &'static str;
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Each rank's host name, by rank.
    fn hosts(&self) -> Vec<String>;
    /// Sends one frame (the concatenation of `parts`: header, message, body) to `rank`. Called
    /// with the link's writer lock held, so frames to one rank never interleave.
    fn send(&self, rank: usize, parts: &[&[u8]]) -> io::Result<()>;
    /// The next whole frame from any rank, if one has arrived (never blocks for long).
    fn poll(&self) -> io::Result<Option<(usize, crate::wire::frame::Frame)>>;
    /// The library's own collectives, when it has them.
    fn native(&self) -> Option<&dyn NativeCollectives> {
        None
    }
    /// Shuts the library down; the last call into it.
    fn finalize(&self);
    /// Ends every rank at once (`MPI_Abort`), for a master that cannot finish.
    fn abort(&self, code: i32);
}

/// Element types a message-passing library reduces natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DType {
    /// `f64`.
    F64,
    /// `f32`.
    F32,
    /// `i64`.
    I64,
    /// `i32`.
    I32,
    /// `u64`.
    U64,
    /// `u32`.
    U32,
    /// `u8`.
    U8,
}

/// Collectives a message-passing library runs itself, on raw bytes of `DType` elements.
pub trait NativeCollectives: Send + Sync {
    /// `MPI_Barrier`.
    fn barrier(&self) -> io::Result<()>;
    /// `MPI_Bcast` of a byte buffer whose length only the root knows; returns it everywhere.
    fn broadcast(&self, root: usize, data: &[u8]) -> io::Result<Vec<u8>>;
    /// `MPI_Reduce`: `out` is `Some` on the root.
    fn reduce(
        &self,
        root: usize,
        dtype: DType,
        op: OpKind,
        data: &[u8],
        out: Option<&mut [u8]>,
    ) -> io::Result<()>;
    /// `MPI_Allreduce`.
    fn all_reduce(&self, dtype: DType, op: OpKind, data: &[u8], out: &mut [u8]) -> io::Result<()>;
}

/// Which built-in operation an `Op` (the collectives' operation) is (MPI runs those natively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpKind {
    /// Addition (`MPI_SUM`).
    Sum,
    /// Multiplication (`MPI_PROD`).
    Prod,
    /// Minimum (`MPI_MIN`).
    Min,
    /// Maximum (`MPI_MAX`).
    Max,
    /// A user function.
    Custom,
}
