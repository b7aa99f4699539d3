//! cohort-transports: the byte-stream transports cohort's core runs over.
//!
//! - [`Tcp`] — the default: TCP with `TCP_NODELAY`, workers bind loopback unless told otherwise.
//! - [`Unix`] — Unix domain sockets, for processes on one host.
//!
//! Each hands the core connected sockets; the core frames and authenticates them.

mod tcp;
mod unix;

pub use tcp::Tcp;
pub use unix::Unix;
