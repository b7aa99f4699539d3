//! TCP.

use cohort_core::{Listener, Transport};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// TCP transport. Addresses are `host:port`; `listen` binds an ephemeral port on the given
/// interface address (`127.0.0.1` by default, `0.0.0.0` when `restrict = false`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Tcp;

struct TcpListen {
    l: TcpListener,
    addr: String,
}

impl Listener for TcpListen {
    fn address(&self) -> String {
        self.addr.clone()
    }
    fn accept(&self) -> io::Result<OwnedFd> {
        let (s, _) = self.l.accept()?;
        s.set_nodelay(true)?;
        Ok(OwnedFd::from(s))
    }
    fn fd(&self) -> BorrowedFd<'_> {
        self.l.as_fd()
    }
}

impl Transport for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn listen(&self, bind: &str) -> io::Result<Box<dyn Listener>> {
        let with_port = if bind.parse::<SocketAddr>().is_ok() {
            bind.to_string()
        } else {
            format!("{bind}:0")
        };
        let l = TcpListener::bind(&with_port)?;
        l.set_nonblocking(true)?;
        let local = l.local_addr()?;
        // A worker bound to every interface advertises the host's name, not 0.0.0.0.
        let host = if local.ip().is_unspecified() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        } else {
            local.ip().to_string()
        };
        Ok(Box::new(TcpListen {
            l,
            addr: format!("{host}:{}", local.port()),
        }))
    }

    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<OwnedFd> {
        let mut last = io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no address for {addr:?}"),
        );
        for sa in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, timeout) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(OwnedFd::from(s));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
