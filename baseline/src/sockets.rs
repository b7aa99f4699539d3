//! Loopback TCP and temporary Unix-socket endpoints for the measurements.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};

/// Binds a TCP listener to `127.0.0.1` on a free port and returns it with its address.
pub fn tcp_listener_loopback() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Connects to `addr` with `TCP_NODELAY` set.
pub fn tcp_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Accepts one connection on `listener` with `TCP_NODELAY` set.
pub fn tcp_accept(listener: &TcpListener) -> io::Result<TcpStream> {
    let (stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A connected pair of loopback TCP streams in this process, both with `TCP_NODELAY`.
pub fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let (listener, addr) = tcp_listener_loopback()?;
    let client = tcp_connect(addr)?;
    let server = tcp_accept(&listener)?;
    Ok((client, server))
}

/// The path of a Unix socket made by [`unix_listener_tmp`]; the file is removed on drop.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    /// The socket's path, to hand to `UnixStream::connect` (in this or another process).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for SocketFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds a Unix stream listener to a fresh path in the temporary directory.
///
/// The returned [`SocketFile`] removes the path when dropped; keep it alive as long as peers
/// may still connect.
pub fn unix_listener_tmp() -> io::Result<(UnixListener, SocketFile)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut attempts = 0;
    loop {
        let name = format!(
            "cohort-baseline-{}-{}.sock",
            process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        match UnixListener::bind(&path) {
            Ok(listener) => return Ok((listener, SocketFile { path })),
            // A stale file from an earlier process with the same pid: try the next name.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempts < 16 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}
