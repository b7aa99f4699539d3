//! TCP.

use cohort_core::{Listener, Transport};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::time::Duration;

/// TCP transport. Addresses are `host:port` (`[addr]:port` for IPv6); `listen` binds an
/// ephemeral port on the given interface address (`127.0.0.1` by default, `0.0.0.0` when
/// `restrict = false`; `::1`, `[::1]` and `[::1]:port` work too). A bind address that names a
/// network interface of this host (`ib0`, `eth1`) binds that interface's first IPv4 address
/// (or, with none, its first IPv6 address that is not link-local); an interface name wins
/// over a host of the same name.
///
/// # Node-local links
/// With `COHORT_NODE_LOCAL` set (the Slurm manager sets it for its workers), a listener also
/// answers on an abstract Unix socket named after its address (`@cohort-tcp/ADDR`, which,
/// like the address, exists only on its host, or in its network namespace), and a connection
/// to `ADDR` tries that socket first: processes on one host then talk over a Unix socket,
/// the rest over TCP, with the same addresses. The connecting side takes the Unix socket only
/// when the process behind it runs as the same user (`SO_PEERCRED`), so a squatter of the
/// name gets no cookie; otherwise, and when there is no such socket, it connects over TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tcp;

struct TcpListen {
    l: TcpListener,
    addr: String,
    /// Node-local mode: the Unix socket beside the TCP one, and an epoll set of the two,
    /// which is what the runtime watches.
    local: Option<(UnixListener, Epoll)>,
}

impl Listener for TcpListen {
    fn address(&self) -> String {
        self.addr.clone()
    }
    fn accept(&self) -> io::Result<OwnedFd> {
        if let Some((u, _)) = &self.local {
            match u.accept() {
                Ok((s, _)) => return Ok(OwnedFd::from(s)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let (s, _) = self.l.accept()?;
        s.set_nodelay(true)?;
        Ok(OwnedFd::from(s))
    }
    fn fd(&self) -> BorrowedFd<'_> {
        match &self.local {
            Some((_, ep)) => ep.0.as_fd(),
            None => self.l.as_fd(),
        }
    }
}

/// The abstract Unix socket a node-local listener at `addr` also answers on.
fn local_name(addr: &str) -> io::Result<UnixAddr> {
    UnixAddr::from_abstract_name(format!("cohort-tcp/{addr}").as_bytes())
}

/// The Unix socket beside a TCP listener at `addr`, and an epoll set watching both; `None`
/// when the name is taken (then connections come over TCP).
fn local_listener(tcp: &TcpListener, addr: &str) -> io::Result<Option<(UnixListener, Epoll)>> {
    let u = match UnixListener::bind_addr(&local_name(addr)?) {
        Ok(u) => u,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(None),
        Err(e) => return Err(e),
    };
    u.set_nonblocking(true)?;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)?;
    for fd in [tcp.as_fd(), u.as_fd()] {
        ep.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .map_err(io::Error::from)?;
    }
    Ok(Some((u, ep)))
}

/// A connection to the node-local socket of `addr`, if there is one on this host and a
/// process of this user holds it.
fn connect_local(addr: &str) -> Option<OwnedFd> {
    let s = UnixStream::connect_addr(&local_name(addr).ok()?).ok()?;
    let cred = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    (Some(cred.uid()) == my_uid()).then(|| OwnedFd::from(s))
}

/// This process's effective user id (the owner of its `/proc` entry).
fn my_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    static UID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UID.get_or_init(|| std::fs::metadata("/proc/self").ok().map(|m| m.uid()))
}

impl Tcp {
    fn listen_with(&self, bind: &str, node_local: bool) -> io::Result<Box<dyn Listener>> {
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
        let local = if node_local {
            local_listener(&l, &addr)?
        } else {
            None
        };
        Ok(Box::new(TcpListen { l, addr, local }))
    }

    fn connect_with(&self, addr: &str, timeout: Duration, node_local: bool) -> io::Result<OwnedFd> {
        if node_local {
            if let Some(fd) = connect_local(addr) {
                return Ok(fd);
            }
        }
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
        self.listen_with(bind, cohort_core::env::node_local())
    }

    fn connect(&self, addr: &str, timeout: Duration) -> io::Result<OwnedFd> {
        self.connect_with(addr, timeout, cohort_core::env::node_local())
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

    /// The address family of a connected socket's local end.
    fn family(fd: &OwnedFd) -> nix::sys::socket::AddressFamily {
        use nix::sys::socket::{getsockname, SockaddrLike, SockaddrStorage};
        getsockname::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(fd))
            .unwrap()
            .family()
            .unwrap()
    }

    fn accept_one(l: &dyn Listener) -> OwnedFd {
        loop {
            match l.accept() {
                Ok(s) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    #[test]
    fn node_local_links_go_over_a_unix_socket() {
        use nix::sys::socket::AddressFamily::{Inet, Unix};
        let t = Duration::from_secs(2);
        let l = Tcp.listen_with("127.0.0.1", true).unwrap();
        let addr = l.address();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        // Node-local on both sides: a Unix socket, accepted by the same listener.
        let c = Tcp.connect_with(&addr, t, true).unwrap();
        assert_eq!(family(&c), Unix);
        let s = accept_one(&*l);
        assert_eq!(family(&s), Unix);
        std::fs::File::from(c).write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        std::fs::File::from(s).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        // A connector without it takes TCP to the same listener.
        let c = Tcp.connect_with(&addr, t, false).unwrap();
        assert_eq!(family(&c), Inet);
        assert_eq!(family(&accept_one(&*l)), Inet);
        // A listener without it: node-local connectors fall back to TCP.
        let plain = Tcp.listen_with("127.0.0.1", false).unwrap();
        let c = Tcp.connect_with(&plain.address(), t, true).unwrap();
        assert_eq!(family(&c), Inet);
        assert_eq!(family(&accept_one(&*plain)), Inet);
        // The name goes with the listener.
        drop(l);
        assert!(connect_local(&addr).is_none());
    }

    #[test]
    fn a_taken_name_leaves_tcp() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let _squatter = UnixListener::bind_addr(&local_name(&addr).unwrap()).unwrap();
        assert!(local_listener(&tcp, &addr).unwrap().is_none());
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
