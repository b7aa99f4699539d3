//! The per-process runtime: links, the poller, requests and their replies, the owner-side
//! store, and departures; incoming frames are dispatched in `dispatch`, and the handshake, the
//! master's start and a worker's life are in `handshake`.

use crate::base::env;
use crate::base::error::{Error, Result, WireError};
use crate::base::ids::Pid;
use crate::base::ids::Rrid;
use crate::base::topology::Topology;
use crate::links::link::{read_exact_until, write_all, FrameSink, Leave, Link};
use crate::links::poller::{Poller, Woken};
use crate::links::transport::{Listener, Transport};
use crate::runtime::exec::{JobCtl, SerialQueue};
use crate::runtime::registry::CallError;
use crate::runtime::store::{Entry, ErasedChannel, Item, ItemChannel, Stored};
use crate::wire::codec::Body;
use crate::wire::frame::{Frame, PROTOCOL_VERSION};
use crate::wire::proto::*;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

pub(crate) mod clients;
pub mod cluster;
pub(crate) mod diag;
mod dispatch;
pub mod exec;
mod gate;
mod guard;
mod handshake;
pub(crate) mod mailbox;
mod owner;
pub mod placement;
pub mod refs;
pub mod registry;
mod requests;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod timer;
pub(crate) mod world;

pub(crate) use guard::{install_panic_hook, run_guarded, run_guarded_as};
pub(crate) use handshake::{raw_handshake, run_worker, start_master};
pub(crate) use requests::PendingReq;

const LISTENER_TOKEN: u64 = 1;
const FIRST_LINK_TOKEN: u64 = crate::links::poller::FIRST_FREE_TOKEN;

/// A running request: caller, request id, control, and the Future a `remotecall` fills.
type Inflight = (Pid, u64, Arc<JobCtl>, Option<Rrid>);
/// Told the pid of each worker that is gone.
pub(crate) type ExitHook = Box<dyn Fn(Pid) + Send + Sync>;

/// A process's place in the cluster: its links and their poller, the requests it waits on, the
/// entries it owns, and what it knows of the others.
///
/// A process has one, installed at `init` (`RT`); a test may build more in one process
/// ([`Runtime::detached`]), each with its own pid, poller and store, joined by socket pairs.
pub(crate) struct Runtime {
    pub(crate) is_master: bool,
    /// This runtime's pid (0: a worker not yet contacted). The process's runtime also publishes
    /// it as the process's `myid` (`base::ids`), which user code reads.
    me: AtomicUsize,
    /// Whether this is the process's runtime (`init`): it publishes its pid, and its process
    /// exits when the master goes or says `Exit`; a detached runtime just stops.
    process: bool,
    /// Set by [`Runtime::stop`]: the poller returns.
    stopping: AtomicBool,
    pub(crate) transport: Arc<dyn Transport>,
    cookie: Mutex<[u8; COOKIE_LEN]>,
    pub(crate) host: String,
    poller: Poller,
    /// Accepted connections waiting for their hello.
    gate: gate::Gate,
    pub(crate) links: RwLock<FxHashMap<Pid, Arc<Link>>>,
    tokens: RwLock<FxHashMap<u64, Arc<Link>>>,
    pub(crate) next_token: AtomicU64,
    queues: Mutex<FxHashMap<Pid, Arc<SerialQueue>>>,
    pub(crate) peers: RwLock<BTreeMap<Pid, PeerInfo>>,
    pub(crate) removed: Mutex<HashSet<Pid>>,
    /// Pids whose departure has been handled to the end (hooks and manager included), and its
    /// condition: what `rmprocs` waits for.
    pub(crate) exited: Mutex<HashSet<Pid>>,
    pub(crate) removed_cv: Condvar,
    requests: requests::Requests,
    /// The entries this runtime owns, with their books.
    owned: owner::Owned,
    next_rrid: AtomicU64,
    /// Running requests: caller, request id, control, and the Future a `remotecall` fills.
    inflight: Mutex<FxHashMap<u64, Inflight>>,
    next_job: AtomicU64,
    listener: Mutex<Option<Box<dyn Listener>>>,
    connect_lock: Mutex<()>,
    pub(crate) spin: Duration,
    max_frame: u64,
    pub(crate) topology: RwLock<Topology>,
    /// Custom topology, on a worker: the workers it may talk to.
    allowed: RwLock<Option<HashSet<Pid>>>,
    /// Called on the master when a worker's link goes (pools and the cluster table listen).
    pub(crate) on_exit: Mutex<Vec<ExitHook>>,
    /// The message-passing world, in MPI mode.
    pub(crate) world: OnceLock<Arc<dyn crate::links::transport::MessageWorld>>,
    /// Set to stop the world's progress thread before the library shuts down.
    pub(crate) world_stop: AtomicBool,
    pub(crate) world_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set when the master's [`Cluster`](crate::runtime::cluster::Cluster) guard is dropped: the cluster is shut
    /// down and every later call is an error that says so.
    pub(crate) closed: AtomicBool,
    /// Pieces of collective operations that arrived before they were asked for.
    pub(crate) coll: mailbox::Mailbox,
    /// Deadlines of timed requests parked here (one thread for all of them).
    timers: timer::Timers,
}

pub(crate) static RT: OnceLock<Runtime> = OnceLock::new();

/// The runtime; `None` before `init`.
pub(crate) fn try_rt() -> Option<&'static Runtime> {
    RT.get()
}

/// The runtime, or an error telling the user to call `init`, or that the guard `init`
/// returned was dropped.
pub(crate) fn rt() -> Result<&'static Runtime> {
    let rt = RT
        .get()
        .ok_or_else(|| Error::invalid("cohort is not initialised: call cohort::init() first"))?;
    if rt.closed.load(Ordering::Acquire) {
        return Err(Error::invalid(
            "the cluster was shut down when the guard returned by cohort::init() was dropped; \
             keep it for the whole program: `let _cluster = cohort::init()?;` \
             (`let _ = cohort::init()?;` drops it at once)",
        ));
    }
    Ok(rt)
}

pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

fn random_cookie() -> [u8; COOKIE_LEN] {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut raw = [0u8; COOKIE_LEN];
    getrandom::getrandom(&mut raw).expect("the OS random source works");
    raw.map(|b| ALPHA[b as usize % ALPHA.len()])
}

/// Pads or cuts a cookie to its fixed length, as Julia does.
pub(crate) fn cookie_bytes(s: &str) -> Result<[u8; COOKIE_LEN]> {
    if s.is_empty() || !s.is_ascii() || s.contains(char::is_whitespace) {
        return Err(Error::invalid(
            "a cluster cookie is 1 to 16 printable ASCII characters without spaces",
        ));
    }
    let mut c = [b' '; COOKIE_LEN];
    let b = s.as_bytes();
    let n = b.len().min(COOKIE_LEN);
    c[..n].copy_from_slice(&b[..n]);
    Ok(c)
}

/// Runs `f`, a wait for replies that may read other frames, marked as such (see
/// `dispatch::AWAITING`).
fn awaiting<R>(f: impl FnOnce() -> R) -> R {
    let outer = dispatch::AWAITING.with(|a| a.replace(true));
    let r = f();
    dispatch::AWAITING.with(|a| a.set(outer));
    r
}

impl Runtime {
    /// The process's runtime (installed in `RT` by the caller): pid 1 on the master, none yet
    /// on a worker.
    pub(crate) fn new(is_master: bool, transport: Arc<dyn Transport>) -> io::Result<Runtime> {
        let rt = Runtime::build(is_master, true, transport)?;
        rt.set_pid(if is_master { 1 } else { 0 });
        Ok(rt)
    }

    /// A runtime with pid `pid` that is not the process's: for tests that run several in one
    /// process. It lives for the rest of the process (like the process's runtime, which lives
    /// in a static), its poller runs until [`Runtime::stop`].
    #[cfg(test)]
    pub(crate) fn detached(
        pid: Pid,
        transport: Arc<dyn Transport>,
    ) -> io::Result<&'static Runtime> {
        let rt: &'static Runtime = Box::leak(Box::new(Runtime::build(pid == 1, false, transport)?));
        rt.set_pid(pid);
        rt.peers.write().unwrap_or_else(|e| e.into_inner()).insert(
            pid,
            PeerInfo {
                pid,
                addr: String::new(),
                host: rt.host.clone(),
            },
        );
        rt.start_poller()?;
        Ok(rt)
    }

    fn build(is_master: bool, process: bool, transport: Arc<dyn Transport>) -> io::Result<Runtime> {
        Ok(Runtime {
            is_master,
            me: AtomicUsize::new(0),
            process,
            stopping: AtomicBool::new(false),
            transport,
            cookie: Mutex::new(random_cookie()),
            host: hostname(),
            poller: Poller::new()?,
            gate: gate::Gate::new(),
            links: RwLock::new(FxHashMap::default()),
            tokens: RwLock::new(FxHashMap::default()),
            next_token: AtomicU64::new(FIRST_LINK_TOKEN),
            queues: Mutex::new(FxHashMap::default()),
            peers: RwLock::new(BTreeMap::new()),
            removed: Mutex::new(HashSet::new()),
            exited: Mutex::new(HashSet::new()),
            removed_cv: Condvar::new(),
            requests: requests::Requests::new(),
            owned: owner::Owned::default(),
            next_rrid: AtomicU64::new(1),
            inflight: Mutex::new(FxHashMap::default()),
            next_job: AtomicU64::new(1),
            listener: Mutex::new(None),
            connect_lock: Mutex::new(()),
            spin: env::spin(),
            max_frame: env::max_frame(),
            topology: RwLock::new(env::topology()),
            allowed: RwLock::new(None),
            on_exit: Mutex::new(Vec::new()),
            coll: mailbox::Mailbox::default(),
            world: OnceLock::new(),
            world_stop: AtomicBool::new(false),
            world_thread: Mutex::new(None),
            closed: AtomicBool::new(false),
            timers: timer::Timers::default(),
        })
    }

    /// This runtime's pid.
    pub(crate) fn myid(&self) -> Pid {
        self.me.load(Ordering::Acquire)
    }

    /// Sets this runtime's pid (at start, and from the rank in MPI mode).
    pub(crate) fn set_pid(&self, pid: Pid) {
        self.me.store(pid, Ordering::Release);
        if self.process {
            crate::base::ids::set_myid(pid);
        }
    }

    /// The handshake's assignment: takes `pid` if this runtime has none yet; returns the pid it
    /// has afterwards (another one means it was already assigned).
    pub(crate) fn assign_pid(&self, pid: Pid) -> Pid {
        match self
            .me
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                if self.process {
                    crate::base::ids::set_myid(pid);
                }
                pid
            }
            Err(now) => now,
        }
    }

    /// Starts the poller thread.
    pub(crate) fn start_poller(&'static self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("cohort-poller".into())
            .spawn(move || self.poll_loop())
            .map(|_| ())
    }

    /// Stops a detached runtime: closes its links (its peers see it gone) and ends its poller.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        drop(
            self.listener
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let links: Vec<Arc<Link>> = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for l in links {
            l.kill(&self.poller);
        }
        self.poller.wake();
    }

    pub(crate) fn cookie(&self) -> [u8; COOKIE_LEN] {
        *self.cookie.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_cookie(&self, c: [u8; COOKIE_LEN]) {
        *self.cookie.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    pub(crate) fn next_rrid(&self) -> Rrid {
        Rrid {
            whence: self.myid(),
            id: self.next_rrid.fetch_add(1, Ordering::Relaxed),
        }
    }

    // ---------- links ----------

    fn add_link(
        &self,
        pid: Pid,
        fd: OwnedFd,
        rings: Option<crate::links::ring::Rings>,
    ) -> io::Result<Arc<Link>> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let link = Arc::new(Link::new(pid, token, fd, self.max_frame, rings)?);
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, Arc::clone(&link));
        let chosen = Arc::clone(
            self.links
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(pid)
                .and_modify(|l| {
                    if l.is_dead() {
                        *l = Arc::clone(&link)
                    }
                })
                .or_insert_with(|| Arc::clone(&link)),
        );
        link.register(&self.poller)?;
        Ok(chosen)
    }

    pub(crate) fn link_of(&self, pid: Pid) -> Option<Arc<Link>> {
        self.links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .filter(|l| !l.is_dead())
            .cloned()
    }

    pub(crate) fn is_removed(&self, pid: Pid) -> bool {
        self.removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&pid)
    }

    /// The link to `pid`, connecting on first use (worker-to-worker links are lazy).
    pub(crate) fn link_to(&self, pid: Pid) -> Result<Arc<Link>> {
        if let Some(l) = self.link_of(pid) {
            return Ok(l);
        }
        if self.is_removed(pid) {
            return Err(Error::ProcessExited(pid));
        }
        let info = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .cloned()
            .ok_or(Error::NoSuchProcess(pid))?;
        if info.addr.is_empty() {
            return Err(Error::ProcessExited(pid));
        }
        let topo = *self.topology.read().unwrap_or_else(|e| e.into_inner());
        if topo == Topology::MasterWorker && self.myid() != 1 && pid != 1 {
            return Err(Error::invalid(format!(
                "worker {} cannot call worker {pid}: the cluster topology is master_worker, which only links the master with each worker",
                self.myid()
            )));
        }
        if topo == Topology::Custom && self.myid() != 1 && pid != 1 {
            let ok = self
                .allowed
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|a| a.contains(&pid));
            if !ok {
                return Err(Error::invalid(format!(
                    "worker {} cannot call worker {pid}: the custom cluster topology does not connect them (see WorkerConfig::connect_idents)",
                    self.myid()
                )));
            }
        }
        let _g = self.connect_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = self.link_of(pid) {
            return Ok(l);
        }
        let fd = match self.transport.connect(&info.addr, Duration::from_secs(10)) {
            Ok(fd) => fd,
            Err(e) => {
                // A peer that just died refuses connections before its death is recorded.
                for _ in 0..20 {
                    if self.is_removed(pid) {
                        return Err(Error::ProcessExited(pid));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Err(Error::io(
                    format!("connecting to pid {pid} at {}", info.addr),
                    e,
                ));
            }
        };
        let (_, _, rings) = self.handshake_out(&fd, pid, 0, &info.addr)?;
        self.add_link(pid, fd, rings)
            .map_err(|e| Error::io(format!("registering the link to pid {pid}"), e))
    }

    // ---------- requests ----------

    /// Sends a message without waiting for anything.
    pub(crate) fn send(&self, pid: Pid, msg: &Msg, body: &Body<'_>) -> Result<()> {
        let link = self.link_to(pid)?;
        link.send(0, &encode_msg(msg), body)
            .map_err(|e| Error::on_send(pid, e))
    }

    /// Sends a request and waits for its reply; returns the reply's body as a frame.
    pub(crate) fn request(&'static self, pid: Pid, msg: &Msg, body: &Body<'_>) -> Result<Frame> {
        let p = self.request_start(pid, msg, body)?;
        self.request_finish(p)
    }

    /// Sends a request without waiting for its reply (pipelined callers such as `pmap` keep
    /// several in flight); [`Runtime::request_finish`] waits for it.
    pub(crate) fn request_start(&self, pid: Pid, msg: &Msg, body: &Body<'_>) -> Result<PendingReq> {
        let link = self.link_to(pid)?;
        let (id, slot) = self.requests.open(pid);
        let sent = with_encoded(msg, |meta| link.send(id, meta, body));
        if sent.is_err() || link.is_dead() {
            self.requests.forget(pid, id);
            return Err(match sent {
                Err(e) if !link.is_dead() => Error::on_send(pid, e),
                _ => Error::ProcessExited(pid),
            });
        }
        Ok(PendingReq { id, slot, link })
    }

    /// Waits for the reply of a request sent with [`Runtime::request_start`].
    pub(crate) fn request_finish(&'static self, p: PendingReq) -> Result<Frame> {
        self.request_finish_until(p, None)
    }

    /// Like [`Runtime::request_finish`], giving up with `Error::Timeout` at `deadline` (a
    /// reply that comes later is dropped).
    pub(crate) fn request_finish_until(
        &'static self,
        p: PendingReq,
        deadline: Option<Instant>,
    ) -> Result<Frame> {
        let PendingReq { id, slot, link } = p;
        if !slot.is_done() {
            let past = || deadline.is_some_and(|d| Instant::now() >= d);
            awaiting(|| {
                link.spin(
                    &self.poller,
                    &self,
                    self.spin,
                    &|| slot.is_done() || past(),
                    true,
                    Leave::ForCaller,
                )
            });
        }
        match slot.park_until(deadline) {
            requests::Parked::Done => {}
            requests::Parked::TimedOut => {
                self.requests.forget(link.peer, id);
                if !slot.is_done() {
                    return Err(Error::Timeout(format!("no answer from pid {}", link.peer)));
                }
            }
            requests::Parked::Interrupted => {
                self.requests.forget(link.peer, id);
                return Err(Error::Interrupted(self.myid()));
            }
        }
        slot.take()
    }

    /// Gives up on a request without waiting for its reply, which is dropped when it comes.
    pub(crate) fn request_forget(&self, p: PendingReq) {
        self.requests.forget(p.link.peer, p.id);
    }

    /// Waits (polling, for the spin window) until every request in `pending` has its reply:
    /// the fan-out counterpart of the spin in [`Runtime::request_finish`], which then finds
    /// the replies there.
    pub(crate) fn await_all<'a>(&'static self, pending: impl IntoIterator<Item = &'a PendingReq>) {
        let pending: Vec<&PendingReq> = pending.into_iter().collect();
        if pending.iter().all(|p| p.slot.is_done()) {
            return;
        }
        let links: Vec<&Link> = pending.iter().map(|p| &*p.link).collect();
        awaiting(|| {
            crate::links::link::spin_many(
                &links,
                &self.poller,
                &self,
                self.spin,
                &|| pending.iter().all(|p| p.slot.is_done()),
                Leave::ForCaller,
            )
        });
    }

    fn reply(&self, to: Pid, id: u64, r: Result<Body<'_>>) {
        let Some(link) = self.link_of(to).or_else(|| self.link_to(to).ok()) else {
            return;
        };
        let res = match r {
            Ok(body) => link.send(id, reply_meta(true), &body),
            Err(e) => {
                let we = WireError::from(&e);
                let b = crate::wire::codec::encode_vec(&we).unwrap_or_default();
                link.send(id, reply_meta(false), &Body::Owned(b))
            }
        };
        // The caller is gone when this fails; its pending call fails on its side.
        let _ = res;
    }

    // ---------- owner-side store (runtime/owner.rs) ----------

    pub(crate) fn entry(&self, rrid: Rrid) -> Option<Arc<Entry>> {
        self.owned.get(rrid)
    }

    pub(crate) fn insert_entry(&self, rrid: Rrid, stored: Stored, creator: Pid) -> Arc<Entry> {
        self.owned
            .insert(rrid, stored, creator, &|p| self.is_gone(p))
    }

    /// The value entry under `rrid`, created empty on first mention (a fetch may arrive from a
    /// third process before the call that fills it).
    pub(crate) fn value_entry(&self, rrid: Rrid, creator: Pid) -> Arc<Entry> {
        self.owned.value(rrid, creator, &|p| self.is_gone(p))
    }

    /// Whether `pid` is another process that has died (its holds are dropped, see `clients`).
    fn is_gone(&self, pid: Pid) -> bool {
        pid != self.myid() && self.is_removed(pid)
    }

    /// Returns `from`'s reference weight to the owner's entry; frees it when none is left. A
    /// dead process's returns are ignored: its share went with it.
    pub(crate) fn release(&self, rrid: Rrid, from: Pid, weight: u64) {
        self.owned.release(rrid, from, weight, &|p| self.is_gone(p));
    }

    /// Books `weight` of `rrid` as `to`'s rather than `from`'s (`Msg::AddClient`).
    pub(crate) fn client_moved(&self, rrid: Rrid, from: Pid, to: Pid, weight: u64) {
        self.owned
            .moved(rrid, from, to, weight, &|p| self.is_gone(p));
    }

    /// Books `weight` more of `rrid` to `to`; false if the entry is gone (or `to` is).
    pub(crate) fn add_weight(&self, rrid: Rrid, to: Pid, weight: u64) -> bool {
        self.owned.add(rrid, to, weight, &|p| self.is_gone(p))
    }

    /// Frees the entry under `rrid` and returns it if `weight` is all that is left of it (the
    /// caller's hold is the last one); otherwise changes nothing.
    pub(crate) fn release_if_last(&self, rrid: Rrid, weight: u64) -> Option<Arc<Entry>> {
        self.owned.release_if_last(rrid, weight)
    }

    /// Sends weight back to `owner` (or releases it here).
    pub(crate) fn del_ref(&'static self, owner: Pid, rrid: Rrid, weight: u64) {
        if owner == self.myid() {
            self.release(rrid, owner, weight);
            return;
        }
        if let Some(l) = self.link_of(owner) {
            let _ = l.send(
                0,
                &encode_msg(&Msg::DelRef { rrid, weight }),
                &Body::Owned(Vec::new()),
            );
        } else if !self.is_removed(owner) {
            exec::spawn(Box::new(move || {
                let _ = self.send(
                    owner,
                    &Msg::DelRef { rrid, weight },
                    &Body::Owned(Vec::new()),
                );
            }));
        }
    }

    // ---------- interrupts and exits ----------

    fn interrupt_local(&'static self) {
        let running: Vec<Inflight> = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(p, i, c, r)| (*p, *i, Arc::clone(c), *r))
            .collect();
        let queues: Vec<_> = self
            .queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for q in queues {
            q.escape_running();
        }
        let me = self.myid();
        for (from, id, ctl, rrid) in running {
            ctl.interrupt();
            // The Future of an interrupted `remotecall` holds the interrupt error.
            // An entry freed meanwhile stays freed: nobody can read the error.
            if let Some(e) = rrid.and_then(|r| self.entry(r)) {
                if let Stored::Value(c) = &e.stored {
                    let _ = c.set(Err(Error::Interrupted(me)));
                }
            }
            if id != 0 && ctl.claim_reply() {
                exec::spawn(Box::new(move || {
                    self.reply(from, id, Err(Error::Interrupted(me)))
                }));
            }
        }
    }

    /// Forgets a process: fails what waits on it and marks it removed.
    pub(crate) fn peer_gone(&'static self, pid: Pid) {
        {
            let mut r = self.removed.lock().unwrap_or_else(|e| e.into_inner());
            if !r.insert(pid) {
                return;
            }
        }
        // Its last messages first (a share of a reference it moved to another process is told
        // in one): the news of its death can come by another link before them.
        let to_it: Vec<Arc<Link>> = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|l| l.peer == pid && !l.is_dead())
            .cloned()
            .collect();
        for l in &to_it {
            l.read_left(&self);
        }
        let link = self
            .links
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        if let Some(l) = link {
            l.kill(&self.poller);
        }
        self.owned.drop_holder(pid);
        self.requests.fail_to(pid);
        if let Some(i) = self
            .peers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&pid)
        {
            i.addr.clear();
        }
        self.coll.wake();
        if self.is_master {
            self.tell_all(&Msg::PeerRemoved(pid));
            let hooks = self.on_exit.lock().unwrap_or_else(|e| e.into_inner());
            for h in hooks.iter() {
                h(pid);
            }
        } else if pid == 1 && self.process {
            // The master is gone: a worker has nothing left to serve (as in Julia).
            std::process::exit(0);
        }
        // Last: `rmprocs` returns once the manager has been told (Finalize) and pools updated.
        self.exited
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
        self.removed_cv.notify_all();
    }

    // ---------- poller ----------

    pub(crate) fn poll_loop(&'static self) {
        let mut events = vec![EpollEvent::empty(); 64];
        while !self.stopping.load(Ordering::Acquire) {
            let Woken::Events(evs) = self.poller.wait(&mut events, Duration::from_secs(1)) else {
                continue;
            };
            for ev in evs {
                let t = ev.data();
                if t == LISTENER_TOKEN {
                    self.accept_all();
                    continue;
                }
                if Poller::is_own(t) {
                    continue;
                }
                if self.gate.is_waiting(t) {
                    self.advance_handshake(t);
                    continue;
                }
                let link = self.token_link(t);
                if let Some(link) = link {
                    link.service(&self.poller, &self);
                }
            }
            crate::links::link::arm_deferred(&self.poller, &self, &|t| self.token_link(t));
            self.expire_handshakes();
        }
    }

    fn token_link(&self, t: u64) -> Option<Arc<Link>> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&t)
            .cloned()
    }

    pub(crate) fn set_listener(&self, l: Box<dyn Listener>) -> io::Result<()> {
        self.poller
            .add(l.fd(), EpollFlags::EPOLLIN, LISTENER_TOKEN)?;
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
        Ok(())
    }

    /// Sends a bodiless message on every link (best effort: a dead peer is skipped).
    pub(crate) fn tell_all(&self, msg: &Msg) {
        let meta = encode_msg(msg);
        let links: Vec<_> = self
            .links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for l in links {
            let _ = l.send(0, &meta, &Body::Owned(Vec::new()));
        }
    }

    /// The live links to `pid` (incoming and outgoing).
    pub(crate) fn live_links_of(&self, pid: Pid) -> usize {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|l| l.peer == pid && !l.is_dead())
            .count()
    }

    /// The number of live links to other processes (for tests of topologies).
    pub(crate) fn link_count(&self) -> usize {
        self.links
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|l| !l.is_dead())
            .count()
    }

    pub(crate) fn live_refs(&self) -> usize {
        self.owned.len()
    }
}

impl FrameSink for &'static Runtime {
    fn on_world_frame(&self, from: Pid, frame: Frame) {
        self.dispatch(from, frame);
    }
    fn on_frame(&self, link: &Link, frame: Frame) {
        self.dispatch(link.peer, frame);
    }
    fn on_close(&self, link: &Link, why: io::Error) {
        let rt: &'static Runtime = self;
        if why.kind() != io::ErrorKind::UnexpectedEof
            && why.kind() != io::ErrorKind::ConnectionReset
            && !rt.stopping.load(Ordering::Acquire)
        {
            crate::log!(
                warn,
                peer = link.peer,
                error = %why,
                "closing the link to pid {}",
                link.peer
            );
        }
        // Mark the peer gone before its link reads as dead, so that nobody sees a dead link
        // of a live peer and tries to reconnect to a process that no longer exists.
        let other_alive = rt
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|l| l.peer == link.peer && l.token != link.token && !l.is_dead());
        if !other_alive {
            rt.peer_gone(link.peer);
        }
        link.kill(&rt.poller);
        rt.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&link.token);
        if other_alive {
            let mut links = rt.links.write().unwrap_or_else(|e| e.into_inner());
            if links.get(&link.peer).is_some_and(|l| l.token == link.token) {
                links.remove(&link.peer);
            }
        }
    }
}

/// What a reply frame answers, from its `Reply { ok }` message decoded by the dispatcher: the
/// value body, or the error it carries.
fn reply_result(ok: bool, frame: Frame) -> Result<Frame> {
    if ok {
        return Ok(frame);
    }
    match crate::wire::codec::decode::<WireError>(&frame.body()) {
        Ok(e) => Err(e.into()),
        Err(e) => Err(Error::Protocol(format!("undecodable error reply: {e}"))),
    }
}
