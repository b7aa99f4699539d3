//! Unix domain sockets.

use cohort_core::{Listener, Transport};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Unix-socket transport for processes on one host. `listen` takes a directory (default: the
/// system temporary directory) and creates a socket file there with an unguessable name,
/// removed when the listener is dropped. Addresses are socket paths.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unix;

struct UnixListen {
    l: UnixListener,
    path: PathBuf,
}

impl Drop for UnixListen {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Listener for UnixListen {
    fn address(&self) -> String {
        self.path.display().to_string()
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
        let dir = match bind {
            "" | "127.0.0.1" | "0.0.0.0" | "localhost" => std::env::temp_dir(),
            d => PathBuf::from(d),
        };
        let mut r = [0u8; 8];
        getrandom::getrandom(&mut r).map_err(io::Error::other)?;
        let name = format!(
            "cohort-{}-{}.sock",
            std::process::id(),
            u64::from_le_bytes(r)
        );
        let path = dir.join(name);
        let l = UnixListener::bind(&path)?;
        l.set_nonblocking(true)?;
        Ok(Box::new(UnixListen { l, path }))
    }

    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<OwnedFd> {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(addr) {
                Ok(s) => return Ok(OwnedFd::from(s)),
                Err(e) if Instant::now() < deadline && e.kind() == io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(e),
            }
        }
    }
}
