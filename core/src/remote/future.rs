//! `Future`: a write-once remote reference, the result of `remotecall`.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::remote::fanout;
use crate::runtime::exec;
use crate::runtime::refs::{copy_scope, refs_during, sent_to, RefInner, RefWire};
use crate::runtime::store::{decode_as, Item, Stored};
use crate::runtime::{rt, PendingReq};
use crate::wire::codec::{self as wire, Body};
use crate::wire::proto::Msg;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A reference to a value that is, or will be, stored on process [`Future::owner`].
///
/// `remotecall` returns one at once; `fetch` blocks until the value is there, copies it here
/// and caches it (a second `fetch` sends nothing), and tells the owner it may free its copy.
/// A `Future` can be passed as an argument to a remote call: it travels as an id, and a fetch
/// on the owner itself reads the value in place.
///
/// # Julia
/// `Distributed.Future`.
pub struct Future<T> {
    pub(crate) inner: Arc<RefInner>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Future<T> {
    fn clone(&self) -> Self {
        Future {
            inner: Arc::clone(&self.inner),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Future(owner={}, {:?})",
            self.inner.owner, self.inner.rrid
        )
    }
}

impl<T> Future<T> {
    pub(crate) fn from_inner(inner: Arc<RefInner>) -> Self {
        Future {
            inner,
            _t: PhantomData,
        }
    }
    /// The process that stores the value.
    pub fn owner(&self) -> Pid {
        self.inner.owner
    }
    /// The process that created the reference, and its id there.
    pub fn id(&self) -> crate::base::ids::Rrid {
        self.inner.rrid
    }
    /// Releases this process's hold on the remote value now instead of at drop, and drops the
    /// cached value: every later operation on this handle (and its clones here) is an error.
    ///
    /// # Julia
    /// `finalize(r)`.
    pub fn finalize(&self) {
        self.inner.finalize();
    }
}

/// What a thread finds when it asks to act on a reference (see `Future::lead`).
enum Lead<'a> {
    /// The value (or the call's error) is cached here.
    Cached,
    /// This thread talks to the owner; others wait until the guard is dropped.
    Leader(Leading<'a>),
    /// Another thread is talking to the owner (only when not asked to wait).
    Busy,
}

/// Held by the one thread of this process that is talking to the owner about a reference.
struct Leading<'a>(&'a RefInner);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        end_lead(self.0);
    }
}

/// Ends a thread's (or a task's) turn at talking to the owner: waiting threads and tasks go.
fn end_lead(inner: &RefInner) {
    let tasks = {
        let mut st = inner.lock();
        st.fetching = false;
        std::mem::take(&mut st.tasks)
    };
    inner.fetched.notify_all();
    for w in tasks {
        w.wake();
    }
}

fn timeout_after(d: Duration) -> Option<Instant> {
    Some(
        Instant::now()
            .checked_add(d)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365)),
    )
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Future<T> {
    /// A new empty Future whose value will live on `pid`, to be set once with [`Future::put`].
    ///
    /// # Julia
    /// `Future(pid)`.
    pub fn new(pid: Pid) -> Result<Self> {
        let rt = rt()?;
        let rrid = rt.next_rrid();
        if pid == rt.myid() {
            rt.value_entry(rrid, pid);
        } else if !rt
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&pid)
        {
            return Err(Error::NoSuchProcess(pid));
        }
        Ok(Future::from_inner(RefInner::new(rrid, pid)))
    }

    fn finalized(&self, op: &str) -> Error {
        Error::invalid(format!(
            "{op} of a finalized reference: Future {:?} on pid {} was finalized, which makes it unusable",
            self.inner.rrid, self.inner.owner
        ))
    }

    /// Waits until no other thread of this process is talking to the owner about this
    /// reference, then either finds the value cached or makes this thread the one that talks.
    ///
    /// One thread at a time: the owner frees the value as soon as this process's weight comes
    /// back (after a fetch or a put), so a second request sent after that would find nothing.
    fn lead(&self, op: &str, deadline: Option<Instant>, wait: bool) -> Result<Lead<'_>> {
        let mut st = self.inner.lock();
        let mut blocking = None;
        loop {
            if st.finalized {
                return Err(self.finalized(op));
            }
            if st.cache.is_some() {
                return Ok(Lead::Cached);
            }
            if !st.fetching {
                if self.inner.weight() == 0 {
                    // Weight went back without a value kept (cannot happen short of finalize).
                    return Err(self.finalized(op));
                }
                st.fetching = true;
                return Ok(Lead::Leader(Leading(&self.inner)));
            }
            if !wait {
                return Ok(Lead::Busy);
            }
            let mut nap = Duration::from_millis(50);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout(format!(
                        "{op} of Future {:?}: another thread's {op} is still waiting",
                        self.inner.rrid
                    )));
                }
                nap = nap.min(left);
            }
            blocking.get_or_insert_with(exec::blocking);
            exec::check_interrupt()?;
            st = self
                .inner
                .fetched
                .wait_timeout(st, nap)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The cached outcome, if any.
    fn cached(&self) -> Option<Result<T>>
    where
        T: Clone,
    {
        let st = self.inner.lock();
        st.cache.as_ref().map(|r| match r {
            // Decoding again is a copy: references inside must not count their weight twice.
            Ok(item) => copy_scope(|| item.typed_clone("Future")),
            Err(e) => Err(e.clone()),
        })
    }

    /// Whether the value is there (a cached value, or a remote check).
    ///
    /// # Julia
    /// `isready(::Future)`.
    pub fn isready(&self) -> Result<bool> {
        let _lead = match self.lead("isready", None, true)? {
            Lead::Cached => return Ok(true),
            Lead::Leader(g) => g,
            Lead::Busy => unreachable!("lead waits"),
        };
        let rt = rt()?;
        if self.owner() == rt.myid() {
            let e = rt.value_entry(self.inner.rrid, rt.myid());
            return Ok(matches!(&e.stored, Stored::Value(c) if c.isready()));
        }
        let f = rt.request(
            self.owner(),
            &Msg::IsReady {
                rrid: self.inner.rrid,
            },
            &Body::Owned(Vec::new()),
        )?;
        Ok(f.body().first() == Some(&1))
    }

    /// Blocks until the value is there, without moving it. A call that failed gives its error
    /// (`Error::Remote`...), as `fetch` would.
    ///
    /// # Julia
    /// `wait(::Future)`.
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None)
    }

    /// [`Future::wait`] for at most `d`: `Err(Error::Timeout)` if the value is not there by
    /// then; the reference stays usable.
    ///
    /// # Julia
    /// `timedwait(() -> isready(f), d)`, which reports `:timed_out` instead of an error.
    pub fn wait_timeout(&self, d: Duration) -> Result<()> {
        self.wait_until(timeout_after(d))
            .map_err(|e| self.timed_out(e, "wait", d))
    }

    fn timed_out(&self, e: Error, op: &str, d: Duration) -> Error {
        match e {
            Error::Timeout(_) => Error::Timeout(format!(
                "{op} of Future {:?} on pid {}: no value within {d:?}",
                self.inner.rrid, self.inner.owner
            )),
            e => e,
        }
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<()> {
        let _lead = match self.lead("wait", deadline, true)? {
            Lead::Cached => {
                let st = self.inner.lock();
                return match &st.cache {
                    Some(Err(e)) => Err(e.clone()),
                    _ => Ok(()),
                };
            }
            Lead::Leader(g) => g,
            Lead::Busy => unreachable!("lead waits"),
        };
        let rt = rt()?;
        if self.owner() == rt.myid() {
            let e = rt.value_entry(self.inner.rrid, rt.myid());
            let Stored::Value(c) = &e.stored else {
                return Err(Error::invalid("reference is a channel"));
            };
            return c.with_until(deadline, |v| v.as_ref().map(|_| ()).map_err(Error::clone))?;
        }
        let p = rt.request_start(
            self.owner(),
            &Msg::Wait {
                rrid: self.inner.rrid,
            },
            &Body::Owned(Vec::new()),
        )?;
        rt.request_finish_until(p, deadline).map(|_| ())
    }

    /// Sets the value; `Err(AlreadySet)` if it has one. The value is kept here too, and this
    /// process's hold on the owner's copy is let go.
    ///
    /// # Julia
    /// `put!(::Future, v)`.
    pub fn put(&self, v: T) -> Result<()> {
        // A fetch in progress here may be waiting for this very value: do not wait for it, and
        // leave the weight to it (it gives the weight back once it has the value).
        let lead = match self.lead("put", None, false)? {
            Lead::Cached => return Err(Error::AlreadySet),
            Lead::Leader(g) => Some(g),
            Lead::Busy => None,
        };
        let rt = rt()?;
        let rrid = self.inner.rrid;
        if self.owner() == rt.myid() {
            let e = rt.value_entry(rrid, rt.myid());
            match &e.stored {
                Stored::Value(c) => c.set(Ok(Item::local(v)))?,
                Stored::Channel(_) => return Err(Error::invalid("reference is a channel")),
            }
            drop(e);
            if lead.is_none() {
                return Ok(());
            }
            // The value moves into this handle when no other holds the entry (Julia frees it
            // then); otherwise the entry keeps it for them, and this handle its weight.
            let mut st = self.inner.lock();
            if let Some(gone) = rt.release_if_last(rrid, self.inner.weight()) {
                self.inner.take_weight();
                if let Stored::Value(c) = &gone.stored {
                    st.cache = c.take();
                }
            }
            return Ok(());
        }
        let (body, has_refs) = refs_during(|| sent_to(self.owner(), || wire::encode(&v)));
        let body = body.map_err(|e| Error::Codec {
            action: "encode",
            what: "the value put in a Future".into(),
            pid: rt.myid(),
            reason: e.to_string(),
        })?;
        rt.request(self.owner(), &Msg::Put { rrid }, &body)?;
        // Bytes holding references carry their weight: only the owner's copy may keep them.
        if !has_refs && lead.is_some() {
            let mut st = self.inner.lock();
            if st.cache.is_none() {
                st.cache = Some(Ok(Item::Bytes(body.into_vec())));
            }
            drop(st);
            self.inner.release_weight();
        }
        Ok(())
    }

    /// Moves the value here (once; later calls use the cache) and returns a copy. Threads of
    /// one process fetching at once share one request.
    ///
    /// Errors: the remote call's error (`RemoteException`, `ProcessExited`...), cached too; a
    /// finalized Future is an `Error::Invalid` ("fetch of a finalized reference ...").
    ///
    /// # Julia
    /// `fetch(::Future)`. Julia's error for a finalized reference is whatever its lookup of
    /// process 0 raises (`no process with id 0 exists`); this one says what happened.
    pub fn fetch(&self) -> Result<T>
    where
        T: Clone,
    {
        self.fetch_until(None)
    }

    /// [`Future::fetch`] for at most `d`: `Err(Error::Timeout)` if the value is not there by
    /// then; the reference stays usable and a later fetch still gets the value.
    ///
    /// # Julia
    /// No direct counterpart (`fetch` has no timeout); `timedwait` then `fetch`.
    pub fn fetch_timeout(&self, d: Duration) -> Result<T>
    where
        T: Clone,
    {
        self.fetch_until(timeout_after(d))
            .map_err(|e| self.timed_out(e, "fetch", d))
    }

    fn fetch_until(&self, deadline: Option<Instant>) -> Result<T>
    where
        T: Clone,
    {
        loop {
            match self.lead("fetch", deadline, true)? {
                Lead::Cached => {
                    if let Some(r) = self.cached() {
                        return r;
                    }
                }
                Lead::Leader(_g) => return self.fetch_led(deadline),
                Lead::Busy => unreachable!("lead waits"),
            }
        }
    }

    /// The fetch itself, by the leading thread.
    fn fetch_led(&self, deadline: Option<Instant>) -> Result<T>
    where
        T: Clone,
    {
        let rt = rt()?;
        let rrid = self.inner.rrid;
        if self.owner() != rt.myid() {
            let p = rt.request_start(
                self.owner(),
                &Msg::Fetch { rrid, release: 0 },
                &Body::Owned(Vec::new()),
            )?;
            return self.keep(rt.request_finish_until(p, deadline));
        }
        let e = rt.value_entry(rrid, rt.myid());
        let Stored::Value(c) = &e.stored else {
            return Err(Error::invalid("reference is a channel"));
        };
        let out: Result<T> = c.with_until(deadline, |r| match r {
            Ok(item) => item.typed_clone("Future"),
            Err(e) => Err(e.clone()),
        })?;
        drop(e);
        // Cached here, released there (Julia's fetch frees the owner's copy): the value itself
        // moves into the cache when this handle was the last hold.
        let mut st = self.inner.lock();
        let w = self.inner.take_weight();
        match rt.release_if_last(rrid, w) {
            Some(gone) => {
                if let Stored::Value(c) = &gone.stored {
                    st.cache = c.take();
                }
            }
            None => {
                st.cache = Some(match &out {
                    Ok(v) => Ok(Item::local(v.clone())),
                    Err(e) => Err(e.clone()),
                });
                drop(st);
                rt.release(rrid, rt.myid(), w);
            }
        }
        out
    }

    /// Caches what a Fetch brought back (a value, or the call's error), then gives the weight
    /// back, and returns the value. A lost owner, an interrupt or a timeout is not cached: it is
    /// about this fetch, not the value, and the weight stays for the next one.
    fn keep(&self, r: Result<crate::wire::frame::Frame>) -> Result<T>
    where
        T: Clone,
    {
        let (cached, out) = match r {
            Ok(frame) => {
                let (v, has_refs) = refs_during(|| decode_as::<T>(&frame.body(), "Future"));
                match v {
                    // References inside were counted once, now: later reads use the decoded
                    // value, which hands out its own weight.
                    Ok(v) if has_refs => (Ok(Item::local(v.clone())), Ok(v)),
                    v => (Ok(Item::Frame(frame)), v),
                }
            }
            Err(e @ (Error::ProcessExited(_) | Error::Interrupted(_) | Error::Timeout(_))) => {
                return Err(e)
            }
            Err(e) => (Err(e.clone()), Err(e)),
        };
        let mut st = self.inner.lock();
        if st.cache.is_none() && !st.finalized {
            st.cache = Some(cached);
        }
        drop(st);
        self.inner.release_weight();
        out
    }
}

impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> Future<T> {
    /// [`Future::fetch`] as a `std::future::Future`, for any executor: `f.fetch_async().await`,
    /// or `f.await` / `(&f).await` (see [`IntoFuture`](std::future::IntoFuture)). Same result
    /// and errors as `fetch`, cached the same way; no thread of this process waits for the
    /// reply (the runtime's poller wakes the task), so many can be pending on one thread. A
    /// cached value, or one already stored on this process, is there on the first poll.
    /// Dropping it before it is done drops the request (the reference stays usable). Tasks and
    /// threads of one process fetching the same reference share one request, as with `fetch`.
    /// Unlike `fetch`, it does not see `interrupt` (the task's executor cancels it by dropping).
    ///
    /// # Julia
    /// `fetch(f)` inside a `@async` task.
    pub fn fetch_async(&self) -> Fetch<T> {
        Fetch {
            fut: self.clone(),
            step: Step::Start,
        }
    }

    /// The first step of an async fetch: the value at once (cached, local, or an error), or the
    /// request this task now leads, or `None` when it waits (its waker kept by the reference
    /// or the local cell).
    fn start_async(
        &self,
        cx: &mut Context<'_>,
    ) -> std::result::Result<PendingReq, Poll<Result<T>>> {
        loop {
            let g = match self.lead("fetch", None, false) {
                Err(e) => return Err(Poll::Ready(Err(e))),
                Ok(Lead::Cached) => match self.cached() {
                    Some(r) => return Err(Poll::Ready(r)),
                    // Finalized meanwhile: `lead` says so.
                    None => continue,
                },
                Ok(Lead::Busy) => {
                    let mut st = self.inner.lock();
                    if !st.fetching {
                        // That fetch ended after `lead` looked: look again.
                        continue;
                    }
                    if !st.tasks.iter().any(|w| w.will_wake(cx.waker())) {
                        st.tasks.push(cx.waker().clone());
                    }
                    return Err(Poll::Pending);
                }
                Ok(Lead::Leader(g)) => g,
            };
            let rt = match rt() {
                Ok(rt) => rt,
                Err(e) => return Err(Poll::Ready(Err(e))),
            };
            let rrid = self.inner.rrid;
            if self.owner() == rt.myid() {
                let e = rt.value_entry(rrid, rt.myid());
                return Err(match &e.stored {
                    // Waits for the cell, not as leader: the lead ends here (`g` drops).
                    Stored::Value(c) if !c.poll_ready(cx) => Poll::Pending,
                    Stored::Value(_) => {
                        drop(e);
                        Poll::Ready(self.fetch_led(None))
                    }
                    Stored::Channel(_) => {
                        Poll::Ready(Err(Error::invalid("reference is a channel")))
                    }
                });
            }
            let msg = Msg::Fetch { rrid, release: 0 };
            return match rt.request_start(self.owner(), &msg, &Body::Owned(Vec::new())) {
                Ok(p) => {
                    // The lead passes to the `Fetch`, which ends it when done or dropped.
                    std::mem::forget(g);
                    Ok(p)
                }
                Err(e) => Err(Poll::Ready(Err(e))),
            };
        }
    }
}

/// Where a [`Fetch`] is.
enum Step {
    /// Not asked yet (or waiting for another fetch of the same reference, or a local value).
    Start,
    /// Leading: the Fetch request is out.
    Asked(PendingReq),
    /// The result was returned.
    Done,
}

/// The `std::future::Future` of [`Future::fetch_async`] (and of `.await` on a `Future`):
/// resolves to what [`Future::fetch`] returns.
#[must_use = "a Fetch does nothing unless polled (`.await`)"]
pub struct Fetch<T> {
    fut: Future<T>,
    step: Step,
}

impl<T> std::fmt::Debug for Fetch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match self.step {
            Step::Start => "start",
            Step::Asked(_) => "asked",
            Step::Done => "done",
        };
        write!(f, "Fetch({:?}, {step})", self.fut)
    }
}

impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> std::future::Future for Fetch<T> {
    type Output = Result<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = &mut *self;
        match std::mem::replace(&mut this.step, Step::Done) {
            Step::Done => Poll::Ready(Err(Error::invalid(format!(
                "{:?} polled again after it returned its result",
                this.fut
            )))),
            Step::Start => match this.fut.start_async(cx) {
                Err(out) => {
                    if out.is_pending() {
                        this.step = Step::Start;
                    }
                    out
                }
                Ok(p) => {
                    this.step = Step::Asked(p);
                    // The reply may be in already.
                    Pin::new(this).poll(cx)
                }
            },
            Step::Asked(p) => {
                if p.poll_done(cx).is_pending() {
                    this.step = Step::Asked(p);
                    return Poll::Pending;
                }
                let out = match rt() {
                    Ok(rt) => this.fut.keep(rt.request_finish(p)),
                    Err(e) => Err(e),
                };
                end_lead(&this.fut.inner);
                Poll::Ready(out)
            }
        }
    }
}

impl<T> Drop for Fetch<T> {
    fn drop(&mut self) {
        if let Step::Asked(p) = std::mem::replace(&mut self.step, Step::Done) {
            if let Some(rt) = crate::runtime::try_rt() {
                rt.request_forget(p);
            }
            end_lead(&self.fut.inner);
        }
    }
}

/// `f.await`: [`Future::fetch_async`].
impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> IntoFuture for Future<T> {
    type Output = Result<T>;
    type IntoFuture = Fetch<T>;
    fn into_future(self) -> Fetch<T> {
        Fetch {
            fut: self,
            step: Step::Start,
        }
    }
}

/// `(&f).await`: [`Future::fetch_async`], keeping `f`.
impl<T: Serialize + DeserializeOwned + Clone + Send + 'static> IntoFuture for &Future<T> {
    type Output = Result<T>;
    type IntoFuture = Fetch<T>;
    fn into_future(self) -> Fetch<T> {
        self.fetch_async()
    }
}

/// Fetches several Futures at once: every request goes out before any reply is awaited, so
/// the wait is that of the slowest, not the sum of round trips. Results come in order.
///
/// # Julia
/// `fetch.(futures)` inside `@sync` (one task per future).
pub fn fetch_all<T>(futures: &[Future<T>]) -> Vec<Result<T>>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    let Ok(rt) = rt() else {
        return futures.iter().map(|f| f.fetch()).collect();
    };
    type Started<'a> = Option<(Leading<'a>, Result<fanout::Pending>)>;
    let started: Vec<Started<'_>> = futures
        .iter()
        .map(|f| {
            if f.owner() == rt.myid() {
                return None;
            }
            // Cached, finalized or being fetched by another thread: the plain fetch below.
            let Ok(Lead::Leader(g)) = f.lead("fetch", None, false) else {
                return None;
            };
            let msg = Msg::Fetch {
                rrid: f.inner.rrid,
                release: 0,
            };
            Some((g, fanout::start(f.owner(), &msg, &Body::Owned(Vec::new()))))
        })
        .collect();
    fanout::wait_all(
        started
            .iter()
            .filter_map(|s| s.as_ref().and_then(|(_, p)| p.as_ref().ok())),
    );
    futures
        .iter()
        .zip(started)
        .map(|(f, p)| match p {
            None => f.fetch(),
            Some((_g, Ok(p))) => f.keep(p.finish()),
            Some((_g, Err(e))) => Err(e),
        })
        .collect()
}

impl<T: Serialize + Send + 'static> Serialize for Future<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner
            .export()
            .map_err(crate::wire::codec::ser_error)?
            .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Future<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        RefInner::import(RefWire::deserialize(d)?)
            .map(Future::from_inner)
            .map_err(crate::wire::codec::de_error)
    }
}
