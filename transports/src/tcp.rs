//! TCP.

use cohort_core::{Listener, Transport};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// TCP transport. Addresses are `host:port` (`[addr]:port` for IPv6); `listen` binds an
/// ephemeral port on the given interface address (`127.0.0.1` by default, `0.0.0.0` when
/// `restrict = false`; `::1`, `[::1]` and `[::1]:port` work too).
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
        let bare = bind
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(bind);
        let with_port = if bind.parse::<SocketAddr>().is_ok() {
            bind.to_string()
        } else if let Ok(ip) = bare.parse::<IpAddr>() {
            SocketAddr::new(ip, 0).to_string()
        } else {
            format!("{bind}:0")
        };
        let l = TcpListener::bind(&with_port)?;
        l.set_nonblocking(true)?;
        let local = l.local_addr()?;
        // A worker bound to every interface advertises the host's name, not 0.0.0.0.
        let addr = if local.ip().is_unspecified() {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{}", local.port())
        } else {
            // `[addr]:port` for IPv6.
            local.to_string()
        };
        Ok(Box::new(TcpListen { l, addr }))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn round_trip(bind: &str) -> String {
        let l = Tcp.listen(bind).unwrap();
        let addr = l.address();
        let c = Tcp.connect(&addr, Duration::from_secs(2)).unwrap();
        let s = loop {
            match l.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept on {addr}: {e}"),
            }
        };
        std::fs::File::from(c).write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        std::fs::File::from(s).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        addr
    }

    #[test]
    fn ipv4_loopback() {
        assert!(round_trip("127.0.0.1").starts_with("127.0.0.1:"));
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            println!("skipped: no IPv6 loopback here");
            return;
        }
        for bind in ["::1", "[::1]", "[::1]:0"] {
            let addr = round_trip(bind);
            assert!(addr.starts_with("[::1]:"), "{bind} gave {addr}");
        }
    }
}
