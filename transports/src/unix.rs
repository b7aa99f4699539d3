//! Unix domain sockets.

use cohort_core::{Listener, Transport};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Unix-socket transport for processes on one host.
///
/// By default a listener lives in Linux's abstract socket namespace under an unguessable name
/// (address `@cohort-<pid>-<random>`): no file is created, and the name disappears with the
/// process even when it is killed. `listen` on a directory path instead creates a socket file
/// there, removed when the listener is dropped. Addresses are `@name` or socket paths.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unix;

struct UnixListen {
    l: UnixListener,
    /// The socket file, for a listener bound to a path.
    path: Option<PathBuf>,
    address: String,
}

impl Drop for UnixListen {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Listener for UnixListen {
    fn address(&self) -> String {
        self.address.clone()
    }
    fn accept(&self) -> io::Result<OwnedFd> {
        let (s, _) = self.l.accept()?;
        Ok(OwnedFd::from(s))
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.l.as_fd()
    }
}

impl Transport for Unix {
    fn name(&self) -> &'static str {
        "unix"
    }

    fn listen(&self, bind: &str) -> io::Result<Box<dyn Listener>> {
        let mut r = [0u8; 16];
        getrandom::getrandom(&mut r).map_err(io::Error::other)?;
        let name = format!(
            "cohort-{}-{:032x}",
            std::process::id(),
            u128::from_le_bytes(r)
        );
        let (l, path, address) = match bind {
            "" | "127.0.0.1" | "0.0.0.0" | "localhost" => {
                let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
                (UnixListener::bind_addr(&addr)?, None, format!("@{name}"))
            }
            dir => {
                let path = PathBuf::from(dir).join(format!("{name}.sock"));
                let l = UnixListener::bind(&path)?;
                let a = path.display().to_string();
                (l, Some(path), a)
            }
        };
        l.set_nonblocking(true)?;
        Ok(Box::new(UnixListen { l, path, address }))
    }

    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<OwnedFd> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = match addr.strip_prefix('@') {
                Some(name) => {
                    UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
                }
                None => UnixStream::connect(addr),
            };
            match r {
                Ok(s) => return Ok(OwnedFd::from(s)),
                Err(e) if Instant::now() < deadline && e.kind() == io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(e),
            }
        }
    }
}
