//! Worker pools: [`WorkerPool`], [`CachingPool`] and the default pool.
//!
//! A pool is a set of worker pids and a queue of the idle ones. [`WorkerPool::take`] checks an
//! idle worker out (waiting for one), [`WorkerPool::put`] returns it; the remote call family on
//! a pool (`pool.remotecall(f, args)` ...) takes a worker, runs the call there and returns the
//! worker when the call has finished — for `remotecall`, which returns at once, a helper thread
//! returns it once the result is stored. `pmap` runs on the default pool or on a given one.
//!
//! A worker that dies is removed from every pool of the master (the runtime's exit hook), and
//! everyone waiting in `take` is woken: they get another worker, or an error when the pool has
//! none left. Nothing waits for ever on a dead worker.
//!
//! The default pool ([`default_worker_pool`]) follows the cluster: it holds every worker,
//! workers added later join it, and with no workers at all it is the master itself (as
//! `workers()` is `[1]`), so calls on it run in-process. On a worker it is the master's
//! default pool, reached remotely.
//!
//! A pool passed to a remote call travels as a handle to the pool on the process that made
//! it; operations through that handle are requests to that process (Julia's `WorkerPool`
//! serializes its `ref` the same way). They run no user code, so the owner starts them at
//! once, never behind the calls the same process has running or queued there (service
//! calls). A `take` or `wait` that finds no idle worker holds a thread of the owner until one
//! is idle.
//!
//! # Caching
//! A Julia closure sent to a worker carries what it captured; a [`CachingPool`] sends that
//! payload once per worker and reuses it until [`CachingPool::clear`]. In Rust the captured
//! state is an explicit argument: wrap it in a [`Cached`] and take a `Cached<T>` parameter in
//! the registered function. Sent through a caching pool, a `Cached` value travels in full to
//! a worker the first time and as a 16-byte id afterwards; sent any other way it always
//! travels in full.
//!
//! ```ignore
//! use cohort::{Cached, CachingPool};
//!
//! #[cohort::remote]
//! fn sum_plus(a: Cached<Vec<f64>>, i: u64) -> f64 {
//!     a.iter().sum::<f64>() + i as f64
//! }
//!
//! # fn main() -> cohort::Result<()> {
//! # let _c = cohort::init()?;
//! let foo = Cached::new(vec![1.0; 10_000_000]); // 80 MB
//! let wp = CachingPool::new(cohort::workers());
//! for i in 0..100 {
//!     wp.remotecall_fetch(sum_plus, (foo.clone(), i))?; // 80 MB per worker, once
//! }
//! wp.clear()?;
//! # Ok(())
//! # }
//! ```

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::remote::future::Future;
use crate::runtime::exec;
use crate::runtime::registry::RemoteFn;
use crate::runtime::try_rt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

/// Total bytes of frames this process has written to its links (headers included), since it
/// started. Compare two readings to see what an operation shipped.
pub fn bytes_sent() -> u64 {
    crate::links::link::BYTES_SENT.load(Ordering::Relaxed)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An id unique in the cluster: this process's pid in the high bits.
fn unique_id() -> u64 {
    ((crate::base::ids::myid() as u64) << 40) | NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

struct State {
    /// Every worker of the pool, idle or busy.
    all: BTreeSet<Pid>,
    /// The idle ones, in the order they became idle.
    idle: VecDeque<Pid>,
    /// Every pid ever added (the default pool adds new cluster workers once).
    known: HashSet<Pid>,
}

pub(crate) struct Inner {
    id: u64,
    st: Mutex<State>,
    cv: Condvar,
    /// The default pool follows `workers()`.
    tracks_cluster: bool,
    /// For a caching pool: per worker, the ids of the payloads it holds.
    cache: Option<Mutex<HashMap<Pid, HashSet<u64>>>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, pid: Pid) {
        {
            let mut st = self.lock();
            st.all.remove(&pid);
            st.idle.retain(|&p| p != pid);
        }
        if let Some(c) = &self.cache {
            c.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
        }
        self.cv.notify_all();
    }

    /// Brings the default pool up to date with the cluster.
    fn sync(&self, st: &mut State) {
        if !self.tracks_cluster {
            return;
        }
        let ws = crate::runtime::cluster::workers();
        let alone = ws == [1];
        for p in ws {
            if p == 1 && alone {
                if !st.all.contains(&1) && st.all.is_empty() {
                    st.known.insert(1);
                    st.all.insert(1);
                    st.idle.push_back(1);
                }
            } else if st.known.insert(p) {
                st.all.insert(p);
                st.idle.push_back(p);
            }
        }
        if !alone && st.all.contains(&1) {
            st.all.remove(&1);
            st.idle.retain(|&p| p != 1);
        }
    }

    fn is_gone(pid: Pid) -> bool {
        try_rt().is_some_and(|rt| pid != rt.myid() && rt.is_removed(pid))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(c) = &self.cache {
            let held = std::mem::take(&mut *c.lock().unwrap_or_else(|e| e.into_inner()));
            for (pid, ids) in held {
                if !ids.is_empty() {
                    let _ = crate::remote::calls::remote_do(
                        cache_clear_here,
                        pid,
                        (cache_prefix(self.id),),
                    );
                }
            }
        }
    }
}

fn pools() -> MutexGuard<'static, Vec<Weak<Inner>>> {
    static POOLS: OnceLock<Mutex<Vec<Weak<Inner>>>> = OnceLock::new();
    POOLS
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

static HOOKED: AtomicBool = AtomicBool::new(false);

/// Registers (once, when the runtime exists) the hook that removes dead workers from pools.
fn ensure_hook() {
    if HOOKED.load(Ordering::Acquire) {
        return;
    }
    let Some(rt) = try_rt() else { return };
    let mut hooks = rt.on_exit.lock().unwrap_or_else(|e| e.into_inner());
    if HOOKED.swap(true, Ordering::AcqRel) {
        return;
    }
    hooks.push(Box::new(|pid| {
        let live: Vec<Arc<Inner>> = {
            let mut ps = pools();
            ps.retain(|w| w.strong_count() > 0);
            ps.iter().filter_map(Weak::upgrade).collect()
        };
        for p in live {
            p.remove(pid);
        }
    }));
}

/// A pool of workers: remote calls on it run on an idle worker.
///
/// Cloning gives another handle to the same pool. Passed as an argument to a remote call, a
/// pool travels as a handle to the same pool on the process that made it: on the receiver,
/// `take`, `put`, `push`, `wait`, the queries and the pool calls all act on the original
/// (each a request to its owner, answered whatever user code runs there), as in Julia.
///
/// # Differences from Julia
/// A handle on another process does not keep the pool alive: once every handle on the owner
/// is dropped, its operations fail with [`Error::Invalid`]. Through such a handle a
/// [`CachingPool`] acts as a plain pool (`Cached` values travel in full). The queries that
/// cannot fail here (`len`, `isready`, `workers`, `idle_count`, `try_take`) read as an empty
/// pool when the owner cannot be reached, and `put`/`push` are then dropped. A `take` or
/// `wait` through such a handle that has to wait holds a thread on the owner meanwhile
/// (Julia's task waiting there costs no thread); every other operation is answered at once.
///
/// # Julia
/// `WorkerPool(workers)`; the `AbstractWorkerPool` operations `push!`, `put!`, `take!`,
/// `length`, `isready`, `wait`.
#[derive(Clone)]
pub struct WorkerPool {
    place: Place,
}

#[derive(Clone)]
enum Place {
    Here(Arc<Inner>),
    /// A pool of another process; `id` 0 is that process's default pool.
    There {
        owner: Pid,
        id: u64,
    },
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = match &self.place {
            Place::Here(inner) => inner,
            Place::There { owner, id } => {
                return f
                    .debug_struct("WorkerPool")
                    .field("owner", owner)
                    .field("id", id)
                    .finish()
            }
        };
        let st = inner.lock();
        f.debug_struct(if inner.cache.is_some() {
            "CachingPool"
        } else {
            "WorkerPool"
        })
        .field("workers", &st.all)
        .field("idle", &st.idle)
        .finish()
    }
}

impl WorkerPool {
    fn build(pids: impl IntoIterator<Item = Pid>, tracks: bool, caching: bool) -> WorkerPool {
        let mut st = State {
            all: BTreeSet::new(),
            idle: VecDeque::new(),
            known: HashSet::new(),
        };
        for p in pids {
            if st.all.insert(p) {
                st.known.insert(p);
                st.idle.push_back(p);
            }
        }
        let inner = Arc::new(Inner {
            id: unique_id(),
            st: Mutex::new(st),
            cv: Condvar::new(),
            tracks_cluster: tracks,
            cache: caching.then(|| Mutex::new(HashMap::new())),
        });
        ensure_hook();
        let mut ps = pools();
        ps.retain(|w| w.strong_count() > 0);
        ps.push(Arc::downgrade(&inner));
        drop(ps);
        WorkerPool {
            place: Place::Here(inner),
        }
    }

    /// A pool of these pids (a `Vec`, a slice iterator or a range), all idle.
    ///
    /// # Julia
    /// `WorkerPool([2, 3])`, `WorkerPool(2:4)`.
    pub fn new(pids: impl IntoIterator<Item = Pid>) -> WorkerPool {
        Self::build(pids, false, false)
    }

    /// The pool's state when it lives in this process.
    fn here(&self) -> Option<&Arc<Inner>> {
        match &self.place {
            Place::Here(inner) => Some(inner),
            Place::There { .. } => None,
        }
    }

    fn local_inner(&self) -> &Arc<Inner> {
        self.here().expect("a caching pool lives in its process")
    }

    /// The process that holds the pool (this one, unless the pool came from elsewhere).
    pub fn owner(&self) -> Pid {
        match &self.place {
            Place::Here(_) => crate::base::ids::myid(),
            Place::There { owner, .. } => *owner,
        }
    }

    /// Runs `op` on the owner of a pool that lives elsewhere: as a service call, which the
    /// owner starts at once, whatever calls of this process run or wait there.
    fn on_owner(&self, op: PoolOp) -> Option<Result<PoolReply>> {
        let Place::There { owner, id } = self.place else {
            return None;
        };
        Some(
            crate::remote::calls::service_fetch(pool_op, owner, (id, op)).and_then(|r| match r {
                PoolReply::Failed(e) => Err(e),
                r => Ok(r),
            }),
        )
    }

    /// Adds a worker to the pool, idle.
    ///
    /// # Julia
    /// `push!(pool, pid)`.
    pub fn push(&self, pid: Pid) {
        let Some(inner) = self.here() else {
            let _ = self.on_owner(PoolOp::Push(pid));
            return;
        };
        ensure_hook();
        {
            let mut st = inner.lock();
            st.known.insert(pid);
            if st.all.insert(pid) {
                st.idle.push_back(pid);
            }
        }
        inner.cv.notify_one();
    }

    /// Returns a checked-out worker to the idle queue. A pid that is not (or no longer) in the
    /// pool, such as a worker that died meanwhile, is ignored.
    ///
    /// # Julia
    /// `put!(pool, pid)`.
    pub fn put(&self, pid: Pid) {
        let Some(inner) = self.here() else {
            let _ = self.on_owner(PoolOp::Put(pid));
            return;
        };
        {
            let mut st = inner.lock();
            if !st.all.contains(&pid) || st.idle.contains(&pid) {
                return;
            }
            if Inner::is_gone(pid) {
                st.all.remove(&pid);
                drop(st);
                inner.cv.notify_all();
                return;
            }
            st.idle.push_back(pid);
        }
        inner.cv.notify_one();
    }

    /// Checks an idle worker out, waiting until one is idle. Fails (rather than waiting for
    /// ever) when the pool has no worker left.
    ///
    /// # Julia
    /// `take!(pool)`.
    pub fn take(&self) -> Result<Pid> {
        match self.on_owner(PoolOp::Take) {
            Some(r) => r.and_then(PoolReply::pid),
            None => Ok(self.await_idle(true)?.expect("take pops a worker")),
        }
    }

    /// Blocks until a worker is idle (until `take` would not wait), without checking it out.
    /// Fails (rather than waiting for ever) when the pool has no worker left.
    ///
    /// # Julia
    /// `wait(pool)`.
    pub fn wait(&self) -> Result<()> {
        match self.on_owner(PoolOp::Wait) {
            Some(r) => r.map(|_| ()),
            None => self.await_idle(false).map(|_| ()),
        }
    }

    /// Waits for an idle worker; checks it out when `pop`.
    fn await_idle(&self, pop: bool) -> Result<Option<Pid>> {
        let inner = self.local_inner();
        ensure_hook();
        let mut st = inner.lock();
        let mut announced = false;
        loop {
            inner.sync(&mut st);
            while let Some(&p) = st.idle.front() {
                if Inner::is_gone(p) {
                    st.idle.pop_front();
                    st.all.remove(&p);
                    continue;
                }
                if pop {
                    st.idle.pop_front();
                    return Ok(Some(p));
                }
                return Ok(None);
            }
            if st.all.is_empty() {
                return Err(Error::invalid("the worker pool has no workers"));
            }
            if !announced {
                announced = true;
                drop(st);
                let _b = exec::blocking();
                st = inner.lock();
                continue;
            }
            // The timeout re-checks for workers that died where no exit hook runs (pools on
            // workers) and for workers the default pool gains.
            st = inner
                .cv
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Checks an idle worker out if one is idle now.
    pub fn try_take(&self) -> Option<Pid> {
        let Some(inner) = self.here() else {
            return match self.on_owner(PoolOp::TryTake) {
                Some(Ok(PoolReply::MaybePid(p))) => p,
                _ => None,
            };
        };
        ensure_hook();
        let mut st = inner.lock();
        inner.sync(&mut st);
        while let Some(p) = st.idle.pop_front() {
            if Inner::is_gone(p) {
                st.all.remove(&p);
                continue;
            }
            return Some(p);
        }
        None
    }

    /// Reads the pool's state here, or on its owner.
    fn query<R>(&self, op: PoolOp, here: impl FnOnce(&State) -> R, there: fn(PoolReply) -> R) -> R
    where
        R: Default,
    {
        match self.here() {
            Some(inner) => {
                let mut st = inner.lock();
                inner.sync(&mut st);
                here(&st)
            }
            None => match self.on_owner(op) {
                Some(Ok(r)) => there(r),
                _ => R::default(),
            },
        }
    }

    /// Number of workers in the pool, idle or busy.
    ///
    /// # Julia
    /// `length(pool)`.
    pub fn len(&self) -> usize {
        self.query(PoolOp::Len, |st| st.all.len(), PoolReply::count)
    }

    /// True when the pool has no worker at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a worker is idle now (`take` would not wait).
    ///
    /// # Julia
    /// `isready(pool)`.
    pub fn isready(&self) -> bool {
        self.idle_count() > 0
    }

    /// The pool's workers, ascending.
    pub fn workers(&self) -> Vec<Pid> {
        self.query(
            PoolOp::Workers,
            |st| st.all.iter().copied().collect(),
            |r| match r {
                PoolReply::Pids(v) => v,
                _ => Vec::new(),
            },
        )
    }

    /// Number of idle workers.
    pub fn idle_count(&self) -> usize {
        self.query(PoolOp::Idle, |st| st.idle.len(), PoolReply::count)
    }

    /// Whether this pool caches `Cached` payloads on its workers.
    pub fn is_caching(&self) -> bool {
        self.here().is_some_and(|i| i.cache.is_some())
    }

    /// Runs `encode` with `Cached` values shipping as this pool decides for `pid`.
    pub(crate) fn shipping_to<T>(&self, pid: Pid, encode: impl FnOnce() -> T) -> T {
        let Some(inner) = self.here().filter(|i| i.cache.is_some()) else {
            return encode();
        };
        let prev = SHIP.with(|s| s.replace(Some((Arc::clone(inner), pid))));
        let r = encode();
        SHIP.with(|s| *s.borrow_mut() = prev);
        r
    }

    /// Forgets what `pid` caches (after a call there failed, the payload may not have arrived).
    pub(crate) fn forget_cached(&self, pid: Pid) {
        if let Some(c) = self.here().and_then(|i| i.cache.as_ref()) {
            c.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
        }
    }

    fn checked_out<R>(&self, call: impl FnOnce(Pid) -> Result<R>) -> Result<R> {
        let pid = self.take()?;
        let r = self.shipping_to(pid, || call(pid));
        if matches!(&r, Err(Error::Codec { .. })) {
            self.forget_cached(pid);
        }
        self.put(pid);
        r
    }

    /// Waits for an idle worker and calls `f(args...)` there; returns the [`Future`] at once.
    /// The worker stays checked out until the call has finished (with a value or an error),
    /// whether or not the Future is fetched meanwhile.
    ///
    /// # Julia
    /// `remotecall(f, pool, args...)`.
    pub fn remotecall<F, A>(&self, f: F, args: A) -> Result<Future<F::Output>>
    where
        F: RemoteFn<A>,
        A: Serialize + Send + 'static,
        F::Output: Serialize + DeserializeOwned,
    {
        let pid = self.take()?;
        let r = self.shipping_to(pid, || {
            crate::remote::calls::remotecall_notified(f, pid, args)
        });
        match r {
            Ok((fut, pending)) => {
                let pool = self.clone();
                let waiter = fut.clone();
                exec::spawn(Box::new(move || {
                    let _b = exec::blocking();
                    match pending {
                        Some(p) => {
                            let _ = p.finish();
                        }
                        // In this process: the handle keeps the value until the call is done.
                        None => {
                            let _ = waiter.wait();
                        }
                    }
                    drop(waiter);
                    pool.put(pid);
                }));
                Ok(fut)
            }
            Err(e) => {
                if matches!(&e, Error::Codec { .. }) {
                    self.forget_cached(pid);
                }
                self.put(pid);
                Err(e)
            }
        }
    }

    /// Waits for an idle worker, calls `f(args...)` there and waits for the result.
    ///
    /// # Julia
    /// `remotecall_fetch(f, pool, args...)`.
    pub fn remotecall_fetch<F, A>(&self, f: F, args: A) -> Result<F::Output>
    where
        F: RemoteFn<A>,
        A: Serialize + Send + 'static,
        F::Output: DeserializeOwned,
    {
        self.checked_out(|pid| crate::remote::calls::remotecall_fetch(f, pid, args))
    }

    /// Waits for an idle worker, calls `f(args...)` there and waits until it has finished;
    /// returns a [`Future`] for the result stored there.
    ///
    /// # Julia
    /// `remotecall_wait(f, pool, args...)`.
    pub fn remotecall_wait<F, A>(&self, f: F, args: A) -> Result<Future<F::Output>>
    where
        F: RemoteFn<A>,
        A: Serialize + Send + 'static,
        F::Output: Serialize + DeserializeOwned,
    {
        self.checked_out(|pid| crate::remote::calls::remotecall_wait(f, pid, args))
    }

    /// Waits for an idle worker and starts `f(args...)` there, without a result; the worker
    /// goes back to the pool at once.
    ///
    /// # Julia
    /// `remote_do(f, pool, args...)`.
    pub fn remote_do<F, A>(&self, f: F, args: A) -> Result<()>
    where
        F: RemoteFn<A>,
        A: Serialize + Send + 'static,
    {
        self.checked_out(|pid| crate::remote::calls::remote_do(f, pid, args))
    }
}

/// Finds a pool of this process by id (0: the default pool).
fn find_pool(id: u64) -> Option<WorkerPool> {
    if id == 0 {
        return Some(default_worker_pool());
    }
    let ps = pools();
    ps.iter()
        .filter_map(Weak::upgrade)
        .find(|i| i.id == id)
        .map(|inner| WorkerPool {
            place: Place::Here(inner),
        })
}

/// An operation on a pool, sent to its owner.
#[derive(Serialize, Deserialize)]
enum PoolOp {
    Take,
    TryTake,
    Wait,
    Put(Pid),
    Push(Pid),
    Len,
    Idle,
    Workers,
}

#[derive(Serialize, Deserialize)]
enum PoolReply {
    Pid(Pid),
    MaybePid(Option<Pid>),
    Count(usize),
    Pids(Vec<Pid>),
    Done,
    Failed(Error),
}

impl PoolReply {
    fn pid(self) -> Result<Pid> {
        match self {
            PoolReply::Pid(p) => Ok(p),
            _ => Err(Error::Protocol("unexpected reply to a pool take".into())),
        }
    }
    fn count(self) -> usize {
        match self {
            PoolReply::Count(n) => n,
            _ => 0,
        }
    }
}

/// Runs a pool operation for another process's handle (the errors as values, to keep kinds).
/// Called as a service (see [`WorkerPool::on_owner`]): no user code runs here.
#[cohort_macros::remote(crate = crate)]
fn pool_op(id: u64, op: PoolOp) -> PoolReply {
    let Some(pool) = find_pool(id) else {
        return PoolReply::Failed(Error::invalid(format!(
            "the worker pool {id} is gone from pid {} (its last handle there was dropped)",
            crate::base::ids::myid()
        )));
    };
    let done = |r: Result<PoolReply>| r.unwrap_or_else(PoolReply::Failed);
    match op {
        PoolOp::Take => done(pool.take().map(PoolReply::Pid)),
        PoolOp::TryTake => PoolReply::MaybePid(pool.try_take()),
        PoolOp::Wait => done(pool.wait().map(|_| PoolReply::Done)),
        PoolOp::Put(p) => {
            pool.put(p);
            PoolReply::Done
        }
        PoolOp::Push(p) => {
            pool.push(p);
            PoolReply::Done
        }
        PoolOp::Len => PoolReply::Count(pool.len()),
        PoolOp::Idle => PoolReply::Count(pool.idle_count()),
        PoolOp::Workers => PoolReply::Pids(pool.workers()),
    }
}

impl Serialize for WorkerPool {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let (owner, id) = match &self.place {
            Place::Here(inner) => (crate::base::ids::myid(), inner.id),
            Place::There { owner, id } => (*owner, *id),
        };
        (owner, id).serialize(s)
    }
}

impl<'de> Deserialize<'de> for WorkerPool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (owner, id): (Pid, u64) = Deserialize::deserialize(d)?;
        if owner == crate::base::ids::myid() {
            if let Some(p) = find_pool(id) {
                return Ok(p);
            }
        }
        Ok(WorkerPool {
            place: Place::There { owner, id },
        })
    }
}

/// A [`WorkerPool`] that ships each [`Cached`] payload to each worker once.
///
/// It dereferences to a `WorkerPool`: every operation of a pool works on it, and
/// `pmap_with(.., &PmapOptions::new().pool(&caching_pool))` caches too. The payloads stay on
/// the workers until [`CachingPool::clear`] or until the last handle to the pool is dropped.
///
/// # Julia
/// `CachingPool(workers)`, `clear!(pool)`.
#[derive(Clone, Debug)]
pub struct CachingPool {
    pool: WorkerPool,
}

impl CachingPool {
    /// A caching pool of these pids.
    ///
    /// # Julia
    /// `CachingPool(workers())`.
    pub fn new(pids: impl IntoIterator<Item = Pid>) -> CachingPool {
        CachingPool {
            pool: WorkerPool::build(pids, false, true),
        }
    }

    /// The pool as a plain handle (it keeps caching).
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// Number of payloads cached on `pid` by this pool.
    pub fn cached_on(&self, pid: Pid) -> usize {
        self.pool.local_inner().cache.as_ref().map_or(0, |c| {
            c.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&pid)
                .map_or(0, HashSet::len)
        })
    }

    /// Removes every payload this pool cached from its workers; the next call ships again.
    ///
    /// # Julia
    /// `clear!(pool::CachingPool)`.
    pub fn clear(&self) -> Result<()> {
        let held: Vec<Pid> = {
            let c = self
                .pool
                .local_inner()
                .cache
                .as_ref()
                .expect("a caching pool");
            let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
            let pids = c
                .iter()
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(p, _)| *p)
                .collect();
            c.clear();
            pids
        };
        let prefix = cache_prefix(self.pool.local_inner().id);
        let mut errors = Vec::new();
        for pid in held {
            match crate::remote::calls::remotecall_fetch(cache_clear_here, pid, (prefix.clone(),)) {
                Ok(_) | Err(Error::ProcessExited(_)) => {}
                Err(e) => errors.push((pid, e)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Composite(errors))
        }
    }
}

impl Deref for CachingPool {
    type Target = WorkerPool;
    fn deref(&self) -> &WorkerPool {
        &self.pool
    }
}

impl AsRef<WorkerPool> for CachingPool {
    fn as_ref(&self) -> &WorkerPool {
        &self.pool
    }
}

impl AsRef<WorkerPool> for WorkerPool {
    fn as_ref(&self) -> &WorkerPool {
        self
    }
}

fn default_slot() -> MutexGuard<'static, Option<WorkerPool>> {
    static DEFAULT: OnceLock<Mutex<Option<WorkerPool>>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The pool `pmap` and the pool calls use unless given another: every worker of the cluster
/// (workers added later join it), or the master alone when there are no workers.
///
/// On a worker it is the master's default pool, reached remotely, so that a `pmap` started
/// on a worker spreads over all workers and shares them with the master's calls.
///
/// # Julia
/// `default_worker_pool()`. On a worker, Julia fetches the master's pool once and keeps that
/// pool; here the handle names "the master's default pool", so a later
/// `set_default_worker_pool` on the master applies to workers too (unless a worker set its
/// own).
pub fn default_worker_pool() -> WorkerPool {
    default_slot()
        .get_or_insert_with(|| {
            if try_rt().is_some_and(|rt| !rt.is_master) {
                WorkerPool {
                    place: Place::There { owner: 1, id: 0 },
                }
            } else {
                WorkerPool::build(std::iter::empty(), true, false)
            }
        })
        .clone()
}

/// Makes `pool` the default pool.
///
/// # Julia
/// `default_worker_pool!(pool)`.
pub fn set_default_worker_pool(pool: &WorkerPool) {
    *default_slot() = Some(pool.clone());
}

// ---------- cached payloads ----------

thread_local! {
    /// While a caching pool encodes arguments for a worker: the pool and the worker.
    static SHIP: RefCell<Option<(Arc<Inner>, Pid)>> = const { RefCell::new(None) };
}

fn cache_prefix(pool: u64) -> String {
    format!("cohort.cache.{pool}.")
}

/// Removes the payloads of one caching pool from this process.
#[cohort_macros::remote(crate = crate)]
fn cache_clear_here(prefix: String) -> usize {
    crate::patterns::local::remove_prefix(&prefix)
}

/// A captured payload that a [`CachingPool`] ships to each worker once.
///
/// Take it as a parameter of a registered function; it dereferences to the value. Cloning is
/// cheap (a shared handle).
///
/// # Julia
/// The data a closure captures (`let foo = foo; pmap(i -> sum(foo) + i, wp, 1:100) end`).
pub struct Cached<T> {
    id: u64,
    value: Arc<T>,
}

impl<T> Cached<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Cached<T> {
        Cached::from_arc(Arc::new(value))
    }
    /// Wraps a shared value.
    pub fn from_arc(value: Arc<T>) -> Cached<T> {
        Cached {
            id: unique_id(),
            value,
        }
    }
    /// The shared value.
    pub fn arc(&self) -> &Arc<T> {
        &self.value
    }
    /// The payload's id (the same on every process).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Cached {
            id: self.id,
            value: Arc::clone(&self.value),
        }
    }
}

impl<T> Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Cached<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cached")
            .field("id", &self.id)
            .field("value", &self.value)
            .finish()
    }
}

impl<T: Serialize> Serialize for Cached<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // (pool id or 0, payload id, the payload when the target does not hold it yet)
        let (pool, ship) = SHIP.with(|c| match &*c.borrow() {
            Some((inner, pid)) => {
                let cache = inner.cache.as_ref().expect("only caching pools set SHIP");
                let fresh = cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(*pid)
                    .or_default()
                    .insert(self.id);
                (inner.id, fresh)
            }
            None => (0, true),
        });
        (pool, self.id, ship.then_some(&*self.value)).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Cached<T>
where
    T: Deserialize<'de> + Send + Sync + 'static,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (pool, id, value): (u64, u64, Option<T>) = Deserialize::deserialize(d)?;
        let key = format!("{}{id}", cache_prefix(pool));
        match value {
            Some(v) => {
                let value = Arc::new(v);
                if pool != 0 {
                    crate::patterns::local::set_arc(&key, Arc::clone(&value));
                }
                Ok(Cached { id, value })
            }
            None => match crate::patterns::local::get::<T>(&key) {
                Some(value) => Ok(Cached { id, value }),
                None => Err(crate::wire::codec::de_error(format!(
                    "cached payload {id} of a CachingPool is not on pid {} (cleared?)",
                    crate::base::ids::myid()
                ))),
            },
        }
    }
}
