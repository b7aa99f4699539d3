//! Joining a cluster: the cookie-and-version handshake on each new link, the master's start,
//! and a worker's life from its address line to serving.

use super::*;
use crate::links::ring::Rings;

impl Runtime {
    /// Runs the connecting side of the handshake with the peer at `addr`; returns the peer's
    /// pid and host, and the shared-memory rings of the link when the peer took them.
    pub(crate) fn handshake_out(
        &self,
        fd: &OwnedFd,
        expect: Pid,
        assign: Pid,
        addr: &str,
    ) -> Result<(Pid, String, Option<Rings>)> {
        crate::links::link::set_nonblocking(fd).map_err(|e| Error::io("handshake", e))?;
        let rings = if self.rings_to(addr) {
            match Rings::create() {
                Ok(r) => Some(r),
                Err(e) => {
                    crate::log!(debug, error = %e, "no shared-memory rings for the link to {addr}");
                    None
                }
            }
        } else {
            None
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cookie: self.cookie(),
            from: self.myid(),
            assign,
            host: self.host.clone(),
            ring: rings.as_ref().map(|(_, o)| *o),
        };
        write_all(fd, &[&hello.encode()]).map_err(|e| Error::io("sending the handshake", e))?;
        let mut b = [0u8; WELCOME_LEN];
        let deadline = Instant::now() + env::worker_timeout();
        read_exact_until(fd, &mut b, deadline).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::Protocol(format!(
                    "pid {expect} refused the connection (wrong cluster cookie?)"
                ))
            } else {
                Error::io(format!("handshake with pid {expect}"), e)
            }
        })?;
        let w = Welcome::decode(&b).ok_or_else(|| {
            Error::Protocol(format!("pid {expect} answered the handshake with garbage"))
        })?;
        if w.status == 1 || w.version != PROTOCOL_VERSION {
            return Err(Error::Protocol(format!(
                "pid {expect} speaks protocol version {} and this process {PROTOCOL_VERSION}",
                w.version
            )));
        }
        if expect != 0 && w.pid != expect {
            return Err(Error::Protocol(format!(
                "connected to pid {} where pid {expect} was expected",
                w.pid
            )));
        }
        // The peer has opened the segment (or never will): its descriptor here goes.
        let rings = rings.and_then(|(r, _)| {
            r.close_door();
            w.ring.then_some(r)
        });
        Ok((w.pid, w.host, rings))
    }

    /// Whether a link to `addr` should carry its frames in shared memory: the transport allows
    /// it and the address is this host's (loopback, or this host's name).
    fn rings_to(&self, addr: &str) -> bool {
        if !self.transport.local_rings() {
            return false;
        }
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        host == "localhost"
            || host == self.host
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || local_addresses().contains(&ip))
    }

    /// Runs the listening side of the handshake once an accepted connection's hello is in
    /// (read by the gate, on the poller). Before the cookie is checked nothing is said: a wrong
    /// cookie is closed without an answer, whatever the version.
    pub(super) fn hello_in(&'static self, fd: OwnedFd, hello: &[u8; HELLO_LEN]) {
        let refuse = |why: String| self.gate.refused(&why);
        let Some(h) = Hello::decode(hello) else {
            return refuse("not a cohort handshake".into());
        };
        if !same_cookie(&h.cookie, &self.cookie()) {
            return refuse(format!(
                "wrong cluster cookie from a process claiming pid {}",
                h.from
            ));
        }
        if h.version != PROTOCOL_VERSION {
            let w = Welcome {
                version: PROTOCOL_VERSION,
                status: 1,
                ring: false,
                pid: self.myid(),
                host: self.host.clone(),
            };
            let _ = write_all(&fd, &[&w.encode()]);
            return refuse(format!(
                "protocol version {} (this process speaks {PROTOCOL_VERSION})",
                h.version
            ));
        }
        if h.assign != 0 {
            if h.from != 1 {
                return refuse("only the master assigns pids".into());
            }
            let now = self.assign_pid(h.assign);
            if now != h.assign {
                return refuse(format!("already pid {now}, asked to be {}", h.assign));
            }
        } else if self.myid() == 0 {
            return refuse("not yet part of a cluster".into());
        }
        // One link each way per peer (two when both opened one at once): a process claiming
        // the pid of a peer that is linked both ways gets no third.
        if h.from == self.myid() || self.live_links_of(h.from) >= 2 {
            return refuse(format!("pid {} is already linked to this process", h.from));
        }
        // Rings offered by a process of this host and user are taken; otherwise the socket
        // carries the frames.
        let rings = h
            .ring
            .filter(|_| self.transport.local_rings())
            .and_then(|o| Rings::attach(&o).ok());
        let w = Welcome {
            version: PROTOCOL_VERSION,
            status: 0,
            ring: rings.is_some(),
            pid: self.myid(),
            host: self.host.clone(),
        };
        if write_all(&fd, &[&w.encode()]).is_err() {
            return;
        }
        if let Err(e) = self.add_link(h.from, fd, rings) {
            refuse(format!("cannot register the link: {e}"));
        }
    }

    /// Connects to a freshly launched worker, gives it `pid`, and tells it the cluster.
    pub(crate) fn attach_worker(
        &self,
        pid: Pid,
        fd: OwnedFd,
        addr: &str,
        allowed: Option<Vec<Pid>>,
    ) -> Result<String> {
        let (_, host, rings) = self.handshake_out(&fd, pid, pid, addr)?;
        let link = self
            .add_link(pid, fd, rings)
            .map_err(|e| Error::io(format!("registering the link to pid {pid}"), e))?;
        let info = PeerInfo {
            pid,
            addr: addr.to_string(),
            host: host.clone(),
        };
        let others: Vec<PeerInfo> = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let topology = *self.topology.read().unwrap_or_else(|e| e.into_inner());
        let cfg = Msg::Config {
            pid,
            peers: others.clone(),
            topology,
            allowed: allowed.clone(),
        };
        link.send(0, &encode_msg(&cfg), &Body::Owned(Vec::new()))
            .map_err(|_| Error::ProcessExited(pid))?;
        self.peers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, info.clone());
        let added = encode_msg(&Msg::PeerAdded(info));
        let allow = encode_msg(&Msg::Allow(vec![pid]));
        for p in others.iter().filter(|p| p.pid != 1) {
            if let Some(l) = self.link_of(p.pid) {
                let _ = l.send(0, &added, &Body::Owned(Vec::new()));
                if allowed.as_ref().is_some_and(|a| a.contains(&p.pid)) {
                    let _ = l.send(0, &allow, &Body::Owned(Vec::new()));
                }
            }
        }
        Ok(host)
    }
}

/// The addresses of this host's network interfaces (in this network namespace), read once: a
/// peer listening on one of them is on this host.
fn local_addresses() -> &'static [std::net::IpAddr] {
    static ADDRS: std::sync::OnceLock<Vec<std::net::IpAddr>> = std::sync::OnceLock::new();
    ADDRS.get_or_init(|| {
        let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        ifs.filter_map(|i| {
            let a = i.address?;
            a.as_sockaddr_in()
                .map(|s| std::net::IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())))
        })
        .collect()
    })
}

/// Compares two cookies in time that does not depend on where they differ.
pub(super) fn same_cookie(a: &[u8; COOKIE_LEN], b: &[u8; COOKIE_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A handshake as a foreign process would run it (for tests of refusal).
pub(crate) fn raw_handshake(addr: &str, cookie: &str, version: u8) -> io::Result<std::fs::File> {
    use std::io::{Read, Write};
    let transport = rt().map_err(io::Error::other)?.transport.clone();
    let fd = transport.connect(addr, Duration::from_secs(5))?;
    // A plain blocking stream, with a bound on how long the refusing side may take.
    let tv = nix::sys::time::TimeVal::new(5, 0);
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
    let mut s = std::fs::File::from(fd);
    let mut c = [b' '; COOKIE_LEN];
    let n = cookie.len().min(COOKIE_LEN);
    c[..n].copy_from_slice(&cookie.as_bytes()[..n]);
    let hello = Hello {
        version,
        cookie: c,
        from: 1,
        assign: 0,
        host: hostname(),
        ring: None,
    };
    s.write_all(&hello.encode())?;
    let mut b = [0u8; WELCOME_LEN];
    s.read_exact(&mut b)?;
    match Welcome::decode(&b) {
        Some(w) if w.status == 0 => Ok(s),
        Some(w) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("refused with status {}", w.status),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "garbage welcome",
        )),
    }
}

/// Starts the runtime of the master (pid 1).
pub(crate) fn start_master(transport: Arc<dyn Transport>) -> Result<&'static Runtime> {
    crate::base::log::check_env()?;
    let rt = Runtime::new(true, transport).map_err(|e| Error::io("creating the runtime", e))?;
    if RT.set(rt).is_err() {
        return Err(Error::invalid("cohort::init was already called"));
    }
    let rt = RT.get().expect("just set");
    rt.peers.write().unwrap_or_else(|e| e.into_inner()).insert(
        1,
        PeerInfo {
            pid: 1,
            addr: String::new(),
            host: rt.host.clone(),
        },
    );
    install_panic_hook();
    rt.start_poller()
        .map_err(|e| Error::io("starting the poller thread", e))?;
    Ok(rt)
}

/// Runs this process as a worker; never returns.
pub(crate) fn run_worker(transport: Arc<dyn Transport>) -> ! {
    let fail = |msg: String| -> ! {
        crate::log!(error, error = %msg, "worker start-up failed");
        std::process::exit(1)
    };
    let rt = Runtime::new(false, transport).unwrap_or_else(|e| fail(format!("cannot start: {e}")));
    if RT.set(rt).is_err() {
        fail("runtime started twice".into());
    }
    let rt = RT.get().expect("just set");
    install_panic_hook();
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() || line.trim().is_empty() {
        fail("no cluster cookie on stdin".into());
    }
    match cookie_bytes(line.trim()) {
        Ok(c) => rt.set_cookie(c),
        Err(e) => fail(e.to_string()),
    }
    let listener = rt
        .transport
        .listen(&env::bind_addr())
        .unwrap_or_else(|e| fail(format!("cannot listen on {}: {e}", env::bind_addr())));
    let addr = listener.address();
    if let Err(e) = rt.set_listener(listener) {
        fail(format!("cannot watch the listener: {e}"));
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // Tagged: the program may have printed anything on this stream before `init`.
        let _ = writeln!(out, "{}{addr}", crate::wire::proto::WORKER_ADDRESS_TAG);
        let _ = out.flush();
    }
    rt.start_poller()
        .unwrap_or_else(|e| fail(format!("cannot start the poller: {e}")));
    let deadline = Instant::now() + env::worker_timeout();
    while rt.myid() == 0 || rt.link_of(1).is_none() {
        if Instant::now() > deadline {
            fail(format!(
                "no master contacted this worker at {addr} within {:?} (COHORT_WORKER_TIMEOUT); exiting",
                env::worker_timeout()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    loop {
        std::thread::park();
    }
}
