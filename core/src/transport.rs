//! The `Transport` trait: how a process listens for and opens byte-stream links.
//!
//! A transport hands the core connected, bidirectional byte streams as file descriptors; the
//! core frames them itself (DESIGN decision 4) and waits on them with `epoll`. Concrete
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
}
