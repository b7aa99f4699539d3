//! Shared memory between processes of one host, TCP between hosts.

use crate::Tcp;
use cohort_core::{Listener, Transport};
use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

/// The default transport: links between processes of one host carry their frames through
/// shared-memory rings (see the core's `links::ring`), links between hosts are TCP. Every link
/// starts as a TCP connection (the handshake, the cookie), and on one host the socket then only
/// wakes a sleeping reader and tells when the peer is gone, as MPI uses shared memory on a node
/// and the network across nodes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Shm;

impl Transport for Shm {
    fn name(&self) -> &'static str {
        "shm"
    }
    fn listen(&self, bind: &str) -> io::Result<Box<dyn Listener>> {
        Tcp.listen(bind)
    }
    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<OwnedFd> {
        Tcp.connect(addr, timeout)
    }
    fn local_rings(&self) -> bool {
        true
    }
}
