//! `pmap`: a parallel map over the workers of a pool.
//!
//! ```ignore
//! use cohort::{pmap, pmap_with, PmapOptions, BatchSize};
//!
//! #[cohort::remote]
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! # fn main() -> cohort::Result<()> {
//! # let _c = cohort::init()?;
//! assert_eq!(pmap(square, 1..=4)?, [1, 4, 9, 16]); // input order
//! let opts = PmapOptions::new().batch_size(BatchSize::Auto).on_error(|_| Ok(0));
//! let v = pmap_with(square, 0..100_000, &opts)?;
//! # let _ = v;
//! # Ok(())
//! # }
//! ```
//!
//! # How it runs
//! The items are cut into jobs (one item each with `batch_size = 1`, the default; batches of
//! items otherwise). For each worker it checks out of the pool, `pmap` runs a driver thread
//! that sends jobs to that worker and collects their results; all drivers take jobs from one
//! queue, in input order, so a faster worker takes more. A job of one item is one remote call
//! of `f`; a batch is one remote call of a helper that applies `f` to each item on the worker
//! and returns every item's result or error. A driver keeps one call in flight while calls
//! take longer than a millisecond (each call is meant to be a lot of work, as in Julia), and
//! up to 16 when they are short, so that tiny items are pipelined instead of paying a round
//! trip each. Workers go back to the pool when the queue is empty.
//!
//! # Errors
//! An error of one item goes first to `on_error`, if given: a value it returns is placed
//! inline and the item is done; an error it returns (re-raise) goes on to the retries. With
//! `retry_delays`, an item is retried after the next delay when `retry_check` (default: every
//! error) accepts the error; otherwise, or when the delays are used up, `pmap` stops and
//! returns that error. A batch that fails as a whole (its worker died, say) fails each of its
//! items with that error, and its items are retried together. The loss of a worker is not
//! shown to `on_error` (in Julia it runs on the worker, which is gone): its items are retried
//! on the remaining workers when retries were asked for, otherwise `pmap` returns
//! `ProcessExited`. When no worker is left, `pmap` returns the error instead of waiting.
//!
//! # Julia
//! `pmap(f, [pool,] c...; distributed, batch_size, on_error, retry_delays, retry_check)`.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::patterns::pool::{default_worker_pool, WorkerPool};
use crate::remote::fanout::{self, call_here, decode_frame, Pending};
use crate::runtime::registry::{self, RemoteFn};
use crate::runtime::run_guarded;
use crate::wire::codec::Body;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many items travel in one remote call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// This many (1: one call per item, the default).
    Fixed(usize),
    /// Sized from the number of items and workers: about four batches per worker, at most
    /// 10,000 items each.
    Auto,
}

impl From<usize> for BatchSize {
    fn from(n: usize) -> Self {
        BatchSize::Fixed(n)
    }
}

type OnError<R> = Arc<dyn Fn(Error) -> Result<R> + Send + Sync>;
type RetryCheck = Arc<dyn Fn(&Error) -> bool + Send + Sync>;
type OnProgress = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// The options of [`pmap_with`] (Julia's keyword arguments), built with chained calls.
pub struct PmapOptions<R> {
    pool: Option<WorkerPool>,
    distributed: bool,
    batch: BatchSize,
    on_error: Option<OnError<R>>,
    retry_delays: Vec<Duration>,
    retry_check: Option<RetryCheck>,
    progress_bar: bool,
    on_progress: Option<OnProgress>,
    in_flight: Option<usize>,
    ntasks: Option<usize>,
}

impl<R> Default for PmapOptions<R> {
    fn default() -> Self {
        PmapOptions {
            pool: None,
            distributed: true,
            batch: BatchSize::Fixed(1),
            on_error: None,
            retry_delays: Vec::new(),
            retry_check: None,
            progress_bar: false,
            on_progress: None,
            in_flight: None,
            ntasks: None,
        }
    }
}

impl<R> Clone for PmapOptions<R> {
    fn clone(&self) -> Self {
        PmapOptions {
            pool: self.pool.clone(),
            distributed: self.distributed,
            batch: self.batch,
            on_error: self.on_error.clone(),
            retry_delays: self.retry_delays.clone(),
            retry_check: self.retry_check.clone(),
            progress_bar: self.progress_bar,
            on_progress: self.on_progress.clone(),
            in_flight: self.in_flight,
            ntasks: self.ntasks,
        }
    }
}

impl<R> std::fmt::Debug for PmapOptions<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PmapOptions")
            .field("pool", &self.pool)
            .field("distributed", &self.distributed)
            .field("batch_size", &self.batch)
            .field("on_error", &self.on_error.is_some())
            .field("retry_delays", &self.retry_delays)
            .field("retry_check", &self.retry_check.is_some())
            .field("progress_bar", &self.progress_bar)
            .field("in_flight", &self.in_flight)
            .field("ntasks", &self.ntasks)
            .finish()
    }
}

impl<R> PmapOptions<R> {
    /// The defaults: the default pool, distributed, `batch_size = 1`, errors stop the map,
    /// no retries.
    pub fn new() -> Self {
        Self::default()
    }
    /// Runs on `pool` (a [`WorkerPool`] or, through deref, a
    /// [`CachingPool`](crate::patterns::pool::CachingPool)) instead of the default pool.
    pub fn pool(mut self, pool: &WorkerPool) -> Self {
        self.pool = Some(pool.clone());
        self
    }
    /// `false`: run in this process on as many threads as the pool has workers (or
    /// [`ntasks`](Self::ntasks)), calling `f` through the registry without serializing
    /// anything (Julia's `asyncmap`). Batching does not apply then.
    pub fn distributed(mut self, on: bool) -> Self {
        self.distributed = on;
        self
    }
    /// Items per remote call: a number, or [`BatchSize::Auto`].
    pub fn batch_size(mut self, b: impl Into<BatchSize>) -> Self {
        self.batch = b.into();
        self
    }
    /// Called with each item's error: `Ok(v)` places `v` as the item's result, `Err(e)`
    /// re-raises (retried if retries apply, otherwise `pmap` stops with `e`).
    pub fn on_error(mut self, f: impl Fn(Error) -> Result<R> + Send + Sync + 'static) -> Self {
        self.on_error = Some(Arc::new(f));
        self
    }
    /// Retry a failed item after each of these delays in turn (e.g. `[Duration::ZERO; 3]`,
    /// or an [`ExponentialBackOff`]).
    pub fn retry_delays(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.retry_delays = delays.into_iter().collect();
        self
    }
    /// Decides per error whether to retry it (default: always).
    pub fn retry_check(mut self, f: impl Fn(&Error) -> bool + Send + Sync + 'static) -> Self {
        self.retry_check = Some(Arc::new(f));
        self
    }
    /// Draws a progress bar on stderr (when stderr is a terminal).
    ///
    /// The bar needs the cargo feature `progress` (`cohort/progress`). In a build without it,
    /// a map with `progress(true)` returns [`Error::Invalid`] naming the feature before it
    /// runs anything; [`on_progress`](Self::on_progress) works in every build.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress_bar = on;
        self
    }
    /// Calls `f(done, total)` each time items are done, in order (keep it short: pmap's
    /// drivers wait while it runs).
    pub fn on_progress(mut self, f: impl Fn(usize, usize) + Send + Sync + 'static) -> Self {
        self.on_progress = Some(Arc::new(f));
        self
    }
    /// Remote calls each driver keeps in flight to its worker (default: adaptive, 1 for long
    /// calls and up to 16 for short ones; 2 with automatic batches).
    pub fn in_flight(mut self, n: usize) -> Self {
        self.in_flight = Some(n.max(1));
        self
    }
    /// Threads used with `distributed(false)` (default: the number of workers in the pool).
    pub fn ntasks(mut self, n: usize) -> Self {
        self.ntasks = Some(n.max(1));
        self
    }
}

/// Julia's `ExponentialBackOff`: `n` delays, the first `first_delay`, each next one `factor`
/// times longer up to `max_delay`, each varied by up to ±`jitter` (a fraction).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackOff {
    /// Number of delays (retries).
    pub n: usize,
    /// The first delay.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Growth from one delay to the next.
    pub factor: f64,
    /// Random variation of each delay, as a fraction.
    pub jitter: f64,
}

impl Default for ExponentialBackOff {
    /// Julia's defaults: `n = 1`, 0.05 s, at most 10 s, factor 5, jitter 0.1.
    fn default() -> Self {
        ExponentialBackOff {
            n: 1,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(10),
            factor: 5.0,
            jitter: 0.1,
        }
    }
}

impl ExponentialBackOff {
    /// `n` delays with the other defaults.
    pub fn new(n: usize) -> Self {
        ExponentialBackOff {
            n,
            ..Self::default()
        }
    }
    /// The delays.
    pub fn delays(&self) -> Vec<Duration> {
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            seed = 0x5eed_u64.to_le_bytes();
        }
        let mut s = u64::from_le_bytes(seed);
        let mut cur = self.first_delay.as_secs_f64();
        let max = self.max_delay.as_secs_f64();
        (0..self.n)
            .map(|_| {
                s = crate::patterns::loops::mix(s);
                let u = (s >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
                let d = (cur * (1.0 + self.jitter * (2.0 * u - 1.0))).clamp(0.0, max);
                cur = (cur * self.factor).min(max);
                Duration::from_secs_f64(d)
            })
            .collect()
    }
}

impl IntoIterator for ExponentialBackOff {
    type Item = Duration;
    type IntoIter = std::vec::IntoIter<Duration>;
    fn into_iter(self) -> Self::IntoIter {
        self.delays().into_iter()
    }
}

/// Applies `f` to every item on the workers of the default pool; the results in input order.
///
/// # Julia
/// `pmap(f, c)`.
pub fn pmap<F, A>(f: F, items: impl IntoIterator<Item = A>) -> Result<Vec<F::Output>>
where
    F: RemoteFn<(A,)>,
    A: Serialize + Clone + Send + Sync + 'static,
    F::Output: DeserializeOwned,
{
    pmap_with(f, items, &PmapOptions::new())
}

/// [`pmap`] with options.
///
/// # Julia
/// `pmap(f, [pool,] c; distributed, batch_size, on_error, retry_delays, retry_check)`.
pub fn pmap_with<F, A>(
    f: F,
    items: impl IntoIterator<Item = A>,
    opts: &PmapOptions<F::Output>,
) -> Result<Vec<F::Output>>
where
    F: RemoteFn<(A,)>,
    A: Serialize + Clone + Send + Sync + 'static,
    F::Output: DeserializeOwned,
{
    pmap_args(f, items.into_iter().map(|a| (a,)), opts)
}

/// `f(a[i], b[i])` for every `i`, over two zipped collections (as long as the shorter).
///
/// # Julia
/// `pmap(f, c1, c2)`.
pub fn pmap_zip<F, A, B>(
    f: F,
    a: impl IntoIterator<Item = A>,
    b: impl IntoIterator<Item = B>,
) -> Result<Vec<F::Output>>
where
    F: RemoteFn<(A, B)>,
    A: Serialize + Clone + Send + Sync + 'static,
    B: Serialize + Clone + Send + Sync + 'static,
    F::Output: DeserializeOwned,
{
    pmap_args(f, a.into_iter().zip(b), &PmapOptions::new())
}

/// [`pmap_zip`] with options.
pub fn pmap_zip_with<F, A, B>(
    f: F,
    a: impl IntoIterator<Item = A>,
    b: impl IntoIterator<Item = B>,
    opts: &PmapOptions<F::Output>,
) -> Result<Vec<F::Output>>
where
    F: RemoteFn<(A, B)>,
    A: Serialize + Clone + Send + Sync + 'static,
    B: Serialize + Clone + Send + Sync + 'static,
    F::Output: DeserializeOwned,
{
    pmap_args(f, a.into_iter().zip(b), opts)
}

/// The general form: each item is the whole argument tuple of `f` (`(x,)`, `(x, y)`, ...).
pub fn pmap_args<F, Args>(
    f: F,
    items: impl IntoIterator<Item = Args>,
    opts: &PmapOptions<F::Output>,
) -> Result<Vec<F::Output>>
where
    F: RemoteFn<Args>,
    Args: Serialize + Clone + Send + Sync + 'static,
    F::Output: DeserializeOwned,
{
    #[cfg(not(feature = "progress"))]
    if opts.progress_bar {
        return Err(Error::invalid(
            "pmap: progress(true) needs cohort's `progress` feature (`features = [\"progress\"]` on the cohort dependency); on_progress works without it",
        ));
    }
    let items: Vec<Args> = items.into_iter().collect();
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let pool = opts.pool.clone().unwrap_or_else(default_worker_pool);
    let me = crate::base::ids::myid();
    let pool_workers = pool.workers();
    let mut distributed = opts.distributed;
    if pool_workers.is_empty() && distributed {
        return Err(Error::invalid("pmap: the worker pool has no workers"));
    }
    if pool_workers == [me] {
        distributed = false;
    }
    let nworkers = pool_workers.len().max(1);
    let batch = if !distributed {
        1
    } else {
        match opts.batch {
            BatchSize::Fixed(n) => n.max(1),
            BatchSize::Auto => items.len().div_ceil(nworkers * 4).clamp(1, 10_000),
        }
    };
    let (window, adaptive) = match (opts.in_flight, opts.batch) {
        (Some(n), _) => (n, false),
        (None, BatchSize::Auto) => (2, false),
        (None, _) => (1, true),
    };
    let n = items.len();
    let mut queue = VecDeque::with_capacity(n.div_ceil(batch));
    let mut lo = 0;
    while lo < n {
        let hi = (lo + batch).min(n);
        queue.push_back(Job {
            idx: Idx::Range(lo, hi),
            attempt: 0,
        });
        lo = hi;
    }
    #[cfg(not(feature = "progress"))]
    let bar: Option<Bar> = None;
    #[cfg(feature = "progress")]
    let bar = opts.progress_bar.then(|| {
        let b = indicatif::ProgressBar::new(n as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "pmap {bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let run = Run {
        f,
        name: f.name(),
        items: &items,
        opts,
        pool: &pool,
        me,
        window,
        adaptive,
        bar,
        st: Mutex::new(State {
            results: (0..n).map(|_| None).collect(),
            done: 0,
            queue,
            delayed: Vec::new(),
            fatal: None,
            last_loss: None,
        }),
        cv: Condvar::new(),
        active: AtomicUsize::new(0),
    };
    let ntasks = if distributed {
        0
    } else {
        opts.ntasks.unwrap_or(nworkers)
    };
    run.run(ntasks)
}

// ---------- pgenerate ----------

/// A lazy [`pmap`] over the default pool: an iterator that yields `f(item)` for each item, in
/// input order, as the results come in.
///
/// Items are read from `items` only as the iteration advances: at most one per worker of the
/// pool is in flight ahead of the consumer, each a remote call on a worker checked out of the
/// pool (returned as soon as its call is done). An item's error is yielded in its place and
/// the iteration goes on. Dropping the iterator leaves the calls in flight to finish; their
/// workers go back to the pool.
///
/// # Julia
/// `pgenerate(f, c)`, a `Base.Generator` over `remote(default_worker_pool(), f)`; here the
/// calls ahead of the consumer run concurrently, and an item's error is an `Err` item rather
/// than an exception that ends the iteration.
pub fn pgenerate<F, A, I>(f: F, items: I) -> PGenerator<F, I::IntoIter, F::Output>
where
    F: RemoteFn<(A,)>,
    I: IntoIterator<Item = A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
    pgenerate_on(&default_worker_pool(), f, items)
}

/// [`pgenerate`] on the workers of `pool`.
///
/// # Julia
/// `pgenerate(pool, f, c)`.
pub fn pgenerate_on<F, A, I>(
    pool: &WorkerPool,
    f: F,
    items: I,
) -> PGenerator<F, I::IntoIter, F::Output>
where
    F: RemoteFn<(A,)>,
    I: IntoIterator<Item = A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
    PGenerator {
        f,
        window: pool.len().max(1),
        pool: pool.clone(),
        items: items.into_iter(),
        inflight: VecDeque::new(),
        done: false,
    }
}

/// The iterator of [`pgenerate`]: `Result`s of `f`, in input order.
pub struct PGenerator<F, I, R> {
    f: F,
    pool: WorkerPool,
    items: I,
    window: usize,
    inflight: VecDeque<std::sync::mpsc::Receiver<Result<R>>>,
    done: bool,
}

impl<F, I, R> std::fmt::Debug for PGenerator<F, I, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PGenerator")
            .field("pool", &self.pool)
            .field("in_flight", &self.inflight.len())
            .field("done", &self.done)
            .finish()
    }
}

impl<F, A, I> PGenerator<F, I, F::Output>
where
    F: RemoteFn<(A,)>,
    I: Iterator<Item = A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
    /// Starts calls while workers are idle (waiting for one when nothing is in flight).
    fn top_up(&mut self) {
        while !self.done && self.inflight.len() < self.window {
            let pid = if self.inflight.is_empty() {
                self.pool.take()
            } else {
                match self.pool.try_take() {
                    Some(p) => Ok(p),
                    None => return,
                }
            };
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let pid = match pid {
                Ok(p) => p,
                Err(e) => {
                    // The item still gets its slot, with the error.
                    if self.items.next().is_none() {
                        self.done = true;
                        return;
                    }
                    let _ = tx.send(Err(e));
                    self.inflight.push_back(rx);
                    continue;
                }
            };
            let Some(args) = self.items.next() else {
                self.pool.put(pid);
                self.done = true;
                return;
            };
            let (f, pool) = (self.f, self.pool.clone());
            crate::runtime::exec::spawn(Box::new(move || {
                let r = pool.shipping_to(pid, || {
                    crate::remote::calls::remotecall_fetch(f, pid, (args,))
                });
                if matches!(&r, Err(Error::Codec { .. })) {
                    pool.forget_cached(pid);
                }
                pool.put(pid);
                let _ = tx.send(r);
            }));
            self.inflight.push_back(rx);
        }
    }
}

impl<F, A, I> Iterator for PGenerator<F, I, F::Output>
where
    F: RemoteFn<(A,)>,
    I: Iterator<Item = A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
    type Item = Result<F::Output>;
    fn next(&mut self) -> Option<Result<F::Output>> {
        self.top_up();
        let rx = self.inflight.pop_front()?;
        let _b = crate::runtime::exec::blocking();
        Some(
            rx.recv().unwrap_or_else(|_| {
                Err(Error::invalid("pgenerate: a call ended without a result"))
            }),
        )
    }
}

impl<F, A, I> std::iter::FusedIterator for PGenerator<F, I, F::Output>
where
    F: RemoteFn<(A,)>,
    I: Iterator<Item = A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
}

// ---------- the run ----------

#[cfg(feature = "progress")]
type Bar = indicatif::ProgressBar;

/// Stands for the progress bar in a build without it: there is never one.
#[cfg(not(feature = "progress"))]
enum Bar {}

#[cfg(not(feature = "progress"))]
impl Bar {
    fn inc(&self, _: u64) {
        match *self {}
    }
    fn finish(&self) {
        match *self {}
    }
}

enum Idx {
    Range(usize, usize),
    List(Vec<usize>),
}

impl Idx {
    fn len(&self) -> usize {
        match self {
            Idx::Range(a, b) => b - a,
            Idx::List(v) => v.len(),
        }
    }
    fn get(&self, k: usize) -> usize {
        match self {
            Idx::Range(a, _) => a + k,
            Idx::List(v) => v[k],
        }
    }
}

struct Job {
    idx: Idx,
    /// Tries made before this one.
    attempt: usize,
}

enum Outcome<R> {
    /// One result per item of the job, in order.
    Items(Vec<Result<R>>),
    /// The job failed as a whole.
    Whole(Error),
}

struct State<R> {
    results: Vec<Option<R>>,
    done: usize,
    queue: VecDeque<Job>,
    delayed: Vec<(Instant, Job)>,
    fatal: Option<Error>,
    /// The last loss of a worker (returned when no worker is left).
    last_loss: Option<Error>,
}

struct Run<'a, F, Args, R> {
    f: F,
    name: &'static str,
    items: &'a [Args],
    opts: &'a PmapOptions<R>,
    pool: &'a WorkerPool,
    me: Pid,
    window: usize,
    adaptive: bool,
    bar: Option<Bar>,
    st: Mutex<State<R>>,
    cv: Condvar,
    active: AtomicUsize,
}

const MAX_WINDOW: usize = 16;
const SHORT_CALL: Duration = Duration::from_millis(1);
const POLL: Duration = Duration::from_millis(5);

fn is_loss(e: &Error, pid: Pid) -> bool {
    matches!(e, Error::ProcessExited(p) | Error::NoSuchProcess(p) if *p == pid)
}

impl<F, Args, R> Run<'_, F, Args, R>
where
    F: RemoteFn<Args, Output = R>,
    Args: Serialize + Clone + Send + Sync + 'static,
    R: DeserializeOwned + Send + 'static,
{
    fn lock(&self) -> MutexGuard<'_, State<R>> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The main thread: hands workers to drivers until every item is done or the map failed.
    fn run(self, ntasks: usize) -> Result<Vec<R>> {
        let n = self.items.len();
        std::thread::scope(|s| {
            let mut st = self.lock();
            loop {
                if st.done == n || st.fatal.is_some() {
                    break;
                }
                let now = Instant::now();
                let mut k = 0;
                while k < st.delayed.len() {
                    if st.delayed[k].0 <= now {
                        let (_, job) = st.delayed.swap_remove(k);
                        st.queue.push_back(job);
                    } else {
                        k += 1;
                    }
                }
                if !st.queue.is_empty() {
                    drop(st);
                    if ntasks > 0 {
                        while self.active.load(Ordering::Acquire) < ntasks {
                            self.active.fetch_add(1, Ordering::AcqRel);
                            let me = self.me;
                            let this = &self;
                            s.spawn(move || this.driver(me, false));
                        }
                    } else {
                        while let Some(pid) = self.pool.try_take() {
                            self.active.fetch_add(1, Ordering::AcqRel);
                            let this = &self;
                            s.spawn(move || this.driver(pid, true));
                        }
                    }
                    st = self.lock();
                    if ntasks == 0
                        && self.active.load(Ordering::Acquire) == 0
                        && !st.queue.is_empty()
                        && self.pool.is_empty()
                    {
                        let e = st.last_loss.clone().unwrap_or_else(|| {
                            Error::invalid("pmap: the worker pool has no workers left")
                        });
                        st.fatal = Some(e);
                        continue;
                    }
                }
                let mut wait = POLL;
                if let Some(due) = st.delayed.iter().map(|(t, _)| *t).min() {
                    wait = wait.min(due.saturating_duration_since(now));
                }
                st = self
                    .cv
                    .wait_timeout(st, wait.max(Duration::from_micros(100)))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            // Stop the drivers: they finish the calls in flight and return their workers.
            if st.fatal.is_some() {
                st.queue.clear();
                st.delayed.clear();
            }
            drop(st);
            self.cv.notify_all();
        });
        if let Some(b) = &self.bar {
            b.finish();
        }
        let st = self.st.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = st.fatal {
            return Err(e);
        }
        Ok(st
            .results
            .into_iter()
            .map(|r| r.expect("every item is done"))
            .collect())
    }

    fn next_job(&self) -> Option<Job> {
        let mut st = self.lock();
        if st.fatal.is_some() {
            return None;
        }
        st.queue.pop_front()
    }

    /// One worker's driver: sends it jobs, keeping up to `window` calls in flight (or runs
    /// them here when the worker is this process). A worker taken from the pool goes back to
    /// it at the end, unless it died.
    fn driver(&self, pid: Pid, from_pool: bool) {
        let local = pid == self.me;
        let mut inflight: VecDeque<(Job, Result<Pending>)> = VecDeque::new();
        let mut dead = false;
        let mut window = self.window;
        let mut last = Instant::now();
        let mut ewma: Option<f64> = None;
        loop {
            while !dead && inflight.len() < window {
                let Some(job) = self.next_job() else { break };
                if local {
                    let out = self.run_local(&job);
                    self.settle(job, out, pid);
                    continue;
                }
                let sent = self.send(pid, &job);
                if matches!(&sent, Err(e) if is_loss(e, pid)) {
                    dead = true;
                }
                if inflight.is_empty() {
                    last = Instant::now();
                }
                inflight.push_back((job, sent));
            }
            let Some((job, sent)) = inflight.pop_front() else {
                break;
            };
            let out = match sent.and_then(Pending::finish) {
                Ok(frame) => self.decode(&job, frame),
                Err(e) => {
                    if is_loss(&e, pid) {
                        dead = true;
                    }
                    Outcome::Whole(e)
                }
            };
            if self.adaptive && !dead {
                let now = Instant::now();
                let dt = now.duration_since(last).as_secs_f64();
                last = now;
                let avg = ewma.map_or(dt, |a| 0.75 * a + 0.25 * dt);
                ewma = Some(avg);
                window = if avg < SHORT_CALL.as_secs_f64() {
                    MAX_WINDOW
                } else {
                    1
                };
            }
            self.settle(job, out, pid);
        }
        if from_pool && !dead {
            self.pool.put(pid);
        }
        self.active.fetch_sub(1, Ordering::AcqRel);
        self.cv.notify_all();
    }

    fn send(&self, pid: Pid, job: &Job) -> Result<Pending> {
        if job.idx.len() == 1 {
            let i = job.idx.get(0);
            let body = self
                .pool
                .shipping_to(pid, || encode_value(&self.items[i], self.name))?;
            return fanout::start_call(pid, self.name, &Body::Owned(body));
        }
        let blob = self.pool.shipping_to(pid, || {
            let mut b = Vec::with_capacity(64 + 16 * job.idx.len());
            put_u32(&mut b, self.name.len());
            b.extend_from_slice(self.name.as_bytes());
            put_u32(&mut b, job.idx.len());
            for k in 0..job.idx.len() {
                let at = b.len();
                b.extend_from_slice(&[0; 4]);
                encode_into(&mut b, &self.items[job.idx.get(k)])
                    .map_err(|e| codec("encode", format!("arguments of {}", self.name), e))?;
                let len = (b.len() - at - 4) as u32;
                b[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Ok::<_, Error>(b)
        })?;
        // The argument tuple `(Blob,)`: the blob as a byte string, not copied again.
        let body = Body::Raw {
            prefix: Prefix::byte_string(blob.len()),
            bytes: &blob,
        };
        fanout::start_call(pid, apply_batch_name(), &body)
    }

    fn decode(&self, job: &Job, frame: crate::wire::frame::Frame) -> Outcome<R> {
        let what = || format!("result of {}", self.name);
        if job.idx.len() == 1 {
            return Outcome::Items(vec![decode_frame::<R>(
                frame,
                format_args!("result of {}", self.name),
            )]);
        }
        let body = frame.body();
        let parsed = (|| {
            let mut r = Reader(decode_byte_string(&body).map_err(|_| "not a byte string")?);
            match r.u8()? {
                0 => {}
                _ => {
                    let e: Error = crate::wire::codec::decode(r.0).map_err(|_| "bad error")?;
                    return Ok(Outcome::Whole(e));
                }
            }
            let mut out = Vec::with_capacity(job.idx.len());
            for _ in 0..job.idx.len() {
                let tag = r.u8()?;
                let len = r.u32()? as usize;
                let bytes = r.take(len)?;
                out.push(if tag == 0 {
                    crate::wire::codec::decode::<R>(bytes).map_err(|e| codec("decode", what(), e))
                } else {
                    Err(crate::wire::codec::decode::<Error>(bytes)
                        .unwrap_or_else(|e| Error::Protocol(format!("undecodable error: {e}"))))
                });
            }
            Ok::<_, &'static str>(Outcome::Items(out))
        })();
        parsed.unwrap_or_else(|why| {
            Outcome::Whole(Error::Protocol(format!(
                "malformed batch reply from pmap: {why}"
            )))
        })
    }

    fn run_local(&self, job: &Job) -> Outcome<R> {
        Outcome::Items(
            (0..job.idx.len())
                .map(|k| call_here(self.f, self.items[job.idx.get(k)].clone()))
                .collect(),
        )
    }

    /// Records a job's outcome: results in place, errors through `on_error` and the retries.
    fn settle(&self, job: Job, out: Outcome<R>, pid: Pid) {
        let len = job.idx.len();
        let mut placed: Vec<(usize, R)> = Vec::new();
        let mut retry: Vec<usize> = Vec::new();
        let mut fatal: Option<Error> = None;
        let mut loss: Option<Error> = None;
        let delays = &self.opts.retry_delays;
        // An item's error: `Some(value)` from on_error, or `None` (retried or fatal).
        let mut handle = |i: usize, e: Error| -> Option<R> {
            let e = if is_loss(&e, pid) {
                loss = Some(e.clone());
                e
            } else if let Some(h) = &self.opts.on_error {
                match h(e) {
                    Ok(v) => return Some(v),
                    Err(e) => e,
                }
            } else {
                e
            };
            let again = job.attempt < delays.len()
                && match &self.opts.retry_check {
                    Some(check) => check(&e),
                    None => true,
                };
            if again {
                retry.push(i);
            } else if fatal.is_none() {
                fatal = Some(e);
            }
            None
        };
        match out {
            Outcome::Items(v) => {
                for (k, r) in v.into_iter().enumerate() {
                    let i = job.idx.get(k);
                    match r {
                        Ok(x) => placed.push((i, x)),
                        Err(e) => placed.extend(handle(i, e).map(|x| (i, x))),
                    }
                }
            }
            Outcome::Whole(e) => {
                for k in 0..len {
                    let i = job.idx.get(k);
                    placed.extend(handle(i, e.clone()).map(|x| (i, x)));
                }
            }
        }
        let newly = placed.len();
        let wake = {
            let mut st = self.lock();
            if st.fatal.is_some() {
                return;
            }
            for (i, v) in placed {
                st.results[i] = Some(v);
            }
            st.done += newly;
            if let Some(l) = loss {
                st.last_loss = Some(l);
            }
            let mut wake = st.done == st.results.len();
            if let Some(e) = fatal {
                st.fatal = Some(e);
                wake = true;
            } else if !retry.is_empty() {
                let due = Instant::now() + delays[job.attempt];
                st.delayed.push((
                    due,
                    Job {
                        idx: Idx::List(retry),
                        attempt: job.attempt + 1,
                    },
                ));
                wake = true;
            }
            // Reported under the lock, so that the counts arrive in order.
            if newly > 0 {
                if let Some(b) = &self.bar {
                    b.inc(newly as u64);
                }
                if let Some(p) = &self.opts.on_progress {
                    p(st.done, self.items.len());
                }
            }
            wake
        };
        if wake {
            self.cv.notify_all();
        }
    }
}

fn codec(action: &'static str, what: String, e: CodecError) -> Error {
    Error::Codec {
        action,
        what,
        pid: crate::base::ids::myid(),
        reason: e.to_string(),
    }
}

use crate::wire::codec::{decode_byte_string, encode_into, encode_value, CodecError, Prefix};

fn put_u32(b: &mut Vec<u8>, n: usize) {
    b.extend_from_slice(&(n as u32).to_le_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> std::result::Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, &'static str> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

// ---------- the worker side of a batch ----------

/// Bytes that travel as one byte string (the codec's `serialize_bytes`, copied whole rather
/// than element by element).
#[derive(Debug, Default)]
pub(crate) struct Blob(pub(crate) Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Blob, E> {
                Ok(Blob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(
                self,
                v: Vec<u8>,
            ) -> std::result::Result<Blob, E> {
                Ok(Blob(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Blob, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Blob(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

fn apply_batch_name() -> &'static str {
    RemoteFn::<(Blob,)>::name(&apply_batch)
}

/// Applies the function named in the request to each encoded argument tuple in it; returns
/// each item's encoded result or error (see `Run::send` and `Run::decode` for the layout).
#[cohort_macros::remote(crate = crate)]
fn apply_batch(req: Blob) -> Blob {
    let mut out = Vec::with_capacity(req.0.len() + 64);
    if let Err(e) = run_batch(&req.0, &mut out) {
        out.clear();
        out.push(1);
        let _ = encode_into(&mut out, &e);
    }
    Blob(out)
}

fn run_batch(req: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let bad = |why: &str| Error::Protocol(format!("malformed pmap batch: {why}"));
    let mut r = Reader(req);
    let nlen = r.u32().map_err(bad)? as usize;
    let name = std::str::from_utf8(r.take(nlen).map_err(bad)?).map_err(|_| bad("name"))?;
    let count = r.u32().map_err(bad)? as usize;
    let entry = registry::lookup(name).ok_or_else(|| Error::UnknownFunction {
        name: name.to_string(),
        pid: crate::base::ids::myid(),
    })?;
    let encode = (entry.encoder)()
        .ok_or_else(|| Error::invalid(format!("the result of {name} is not serializable")))?;
    out.push(0);
    for _ in 0..count {
        crate::runtime::exec::check_interrupt()?;
        let len = r.u32().map_err(bad)? as usize;
        let args = r.take(len).map_err(bad)?;
        let res = run_guarded(name, || (entry.call)(args)).and_then(|v| {
            let at = out.len();
            out.extend_from_slice(&[0; 5]);
            match encode(v.as_ref()) {
                Ok(body) => {
                    for p in body.parts() {
                        out.extend_from_slice(p);
                    }
                    let n = (out.len() - at - 5) as u32;
                    out[at + 1..at + 5].copy_from_slice(&n.to_le_bytes());
                    Ok(())
                }
                Err(e) => {
                    out.truncate(at);
                    Err(codec("encode", format!("result of {name}"), e))
                }
            }
        });
        if let Err(e) = res {
            let at = out.len();
            out.extend_from_slice(&[1, 0, 0, 0, 0]);
            let _ = encode_into(out, &e);
            let n = (out.len() - at - 5) as u32;
            out[at + 1..at + 5].copy_from_slice(&n.to_le_bytes());
        }
    }
    Ok(())
}
