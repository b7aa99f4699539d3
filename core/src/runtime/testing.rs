//! In-process clusters for unit tests: runtimes with pids 1..=n in this test process, every
//! pair joined by a Unix socket pair, each with its own poller, store and request table, so
//! that dispatch, the owner store, reference books and reply slots are tested without starting
//! a process.

use super::*;
use crate::wire::codec;
use std::os::unix::net::UnixStream;

/// A transport that opens nothing: every link of an in-process cluster exists from the start.
/// `rings`: whether it lets links take shared-memory rings (offered through a listener).
struct Preconnected {
    rings: bool,
}

impl Transport for Preconnected {
    fn name(&self) -> &'static str {
        "in-process"
    }
    fn listen(&self, _: &str) -> io::Result<Box<dyn Listener>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "in-process runtimes do not listen",
        ))
    }
    fn connect(&self, addr: &str, _: Duration) -> io::Result<OwnedFd> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("in-process runtimes do not connect (asked for {addr})"),
        ))
    }
    fn local_rings(&self) -> bool {
        self.rings
    }
}

/// Runtimes with pids 1 (the master) to n, fully linked; dropping it stops them all.
pub(crate) struct Local {
    rts: Vec<&'static Runtime>,
}

impl Local {
    pub(crate) fn new(n: usize) -> Local {
        Local::build(n, false)
    }

    /// [`Local::new`] with links in shared-memory rings, and transports that take the rings
    /// offered to a listener.
    pub(crate) fn with_rings(n: usize) -> Local {
        Local::build(n, true)
    }

    fn build(n: usize, rings: bool) -> Local {
        let rts: Vec<&'static Runtime> = (1..=n)
            .map(|p| {
                Runtime::detached(p, Arc::new(Preconnected { rings })).expect("a detached runtime")
            })
            .collect();
        for (i, a) in rts.iter().enumerate() {
            for b in &rts[i + 1..] {
                let (x, y) = UnixStream::pair().expect("a socket pair");
                // With rings, the pre-made links carry their frames in rings too.
                let (ra, rb) = if rings {
                    let (ra, offer) = crate::links::ring::Rings::create().expect("rings");
                    let rb = crate::links::ring::Rings::attach(&offer).expect("attached rings");
                    ra.close_door();
                    (Some(ra), Some(rb))
                } else {
                    (None, None)
                };
                a.add_link(b.myid(), OwnedFd::from(x), ra)
                    .expect("link a-b");
                b.add_link(a.myid(), OwnedFd::from(y), rb)
                    .expect("link b-a");
            }
        }
        let infos: Vec<PeerInfo> = rts
            .iter()
            .map(|r| PeerInfo {
                pid: r.myid(),
                // Not empty: a peer whose address is cleared reads as gone.
                addr: format!("in-process:{}", r.myid()),
                host: r.host.clone(),
            })
            .collect();
        let cookie = rts[0].cookie();
        for r in &rts {
            r.set_cookie(cookie);
            let mut p = r.peers.write().unwrap_or_else(|e| e.into_inner());
            for i in &infos {
                p.insert(i.pid, i.clone());
            }
        }
        Local { rts }
    }

    /// The runtime with pid `pid`.
    pub(crate) fn rt(&self, pid: Pid) -> &'static Runtime {
        self.rts[pid - 1]
    }

    /// Stops `pid` as a `kill -9` would: its links close under the others, who see it gone.
    pub(crate) fn kill(&self, pid: Pid) {
        self.rt(pid).stop();
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        for r in &self.rts {
            r.stop();
        }
    }
}

/// Waits up to 5 s for `cond`.
pub(crate) fn eventually(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The encoded argument tuple of a call.
pub(crate) fn args<T: serde::Serialize + 'static>(t: &T) -> Body<'static> {
    Body::Owned(codec::encode_vec(t).expect("arguments encode"))
}

/// A Unix-socket listener for a runtime of an in-process cluster; removes its socket file when
/// dropped.
pub(crate) struct TestListener {
    l: std::os::unix::net::UnixListener,
    path: std::path::PathBuf,
}

impl Listener for TestListener {
    fn address(&self) -> String {
        self.path.display().to_string()
    }
    fn accept(&self) -> io::Result<OwnedFd> {
        self.l.accept().map(|(s, _)| OwnedFd::from(s))
    }
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.l.as_fd()
    }
}

impl Drop for TestListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes `rt` listen on a fresh Unix socket; returns its path.
pub(crate) fn listen(rt: &Runtime) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "cohort-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let l = std::os::unix::net::UnixListener::bind(&path).expect("a test socket");
    l.set_nonblocking(true).expect("non-blocking");
    rt.set_listener(Box::new(TestListener {
        l,
        path: path.clone(),
    }))
    .expect("the listener watched");
    path
}
