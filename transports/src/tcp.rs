//! TCP.

use cohort_core::{Listener, Transport};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// TCP transport. Addresses are `host:port` (`[addr]:port` for IPv6); `listen` binds an
/// ephemeral port on the given interface address (`127.0.0.1` by default, `0.0.0.0` when
/// `restrict = false`; `::1`, `[::1]` and `[::1]:port` work too). A bind address that names a
/// network interface of this host (`ib0`, `eth1`) binds that interface's first IPv4 address
/// (or, with none, its first IPv6 address that is not link-local); an interface name wins
/// over a host of the same name.
///
/// Between processes of one host, the default transport (`Shm`) runs its links on TCP too and
/// then moves their frames into shared memory.
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

impl Tcp {
    fn listen_on(&self, bind: &str) -> io::Result<Box<dyn Listener>> {
        let bare = bind
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(bind);
        let with_port = if bind.parse::<SocketAddr>().is_ok() {
            bind.to_string()
        } else if let Ok(ip) = bare.parse::<IpAddr>() {
            SocketAddr::new(ip, 0).to_string()
        } else if let Some(ip) = interface_address(bind) {
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

    fn connect_to(&self, addr: &str, timeout: Duration) -> io::Result<OwnedFd> {
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

impl Transport for Tcp {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn listen(&self, bind: &str) -> io::Result<Box<dyn Listener>> {
        self.listen_on(bind)
    }

    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<OwnedFd> {
        self.connect_to(addr, timeout)
    }
}

/// The address `listen` binds for the network interface `name`, if this host has one so named.
fn interface_address(name: &str) -> Option<IpAddr> {
    if name.is_empty() || name.contains(['.', ':', '/']) {
        return None;
    }
    let mut v4 = None;
    let mut v6 = None;
    for ifa in nix::ifaddrs::getifaddrs().ok()? {
        if ifa.interface_name != name {
            continue;
        }
        let Some(a) = ifa.address else { continue };
        if let Some(sin) = a.as_sockaddr_in() {
            v4.get_or_insert(IpAddr::V4(sin.ip()));
        } else if let Some(sin6) = a.as_sockaddr_in6() {
            let ip = sin6.ip();
            // fe80::/10 needs a scope id the address syntax does not carry.
            if ip.segments()[0] & 0xffc0 != 0xfe80 {
                v6.get_or_insert(IpAddr::V6(ip));
            }
        }
    }
    v4.or(v6)
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
    fn an_interface_name_binds_its_address() {
        assert_eq!(interface_address("lo"), Some(IpAddr::from([127, 0, 0, 1])));
        assert!(round_trip("lo").starts_with("127.0.0.1:"));
        assert_eq!(interface_address("cohort-no-such-if0"), None);
        assert_eq!(interface_address("10.0.0.1"), None);
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
