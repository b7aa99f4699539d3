//! `RemoteChannel`: a channel that lives on one process and is used from any.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::runtime::refs::{copy_scope, sent_to, RefInner, RefWire};
use crate::runtime::registry::RemoteFn;
use crate::runtime::rt;
use crate::runtime::store::{
    deadline_in, decode_as, empty_under, ErasedChannel, Item, ItemChannel, Stored,
};
use crate::wire::codec::{self as wire, Body};
use crate::wire::proto::{ChanOp, Msg};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// A handle to a channel stored on process [`RemoteChannel::owner`].
///
/// Every process holding a handle sees the same channel. `put` blocks while the channel is
/// full, `take` while it is empty; capacity 0 is a rendezvous (`put` returns once a taker has
/// the value). After `close`, `put` fails and `take` fails once the channel is drained. A
/// channel of a user type (Julia's `AbstractChannel`, e.g. the seeds' `DictChannel`) is made
/// with [`RemoteChannel::from_fn`] and used with the keyed methods (`put_at`, `take_at`...).
/// Operations from the owner itself move values without serializing them.
///
/// # Julia
/// `RemoteChannel(() -> Channel{T}(n), pid)`.
pub struct RemoteChannel<T, K = ()> {
    inner: Arc<RefInner>,
    _t: PhantomData<fn() -> (T, K)>,
}

impl<T, K> Clone for RemoteChannel<T, K> {
    fn clone(&self) -> Self {
        RemoteChannel {
            inner: Arc::clone(&self.inner),
            _t: PhantomData,
        }
    }
}

impl<T, K> std::fmt::Debug for RemoteChannel<T, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteChannel(owner={}, {:?})",
            self.inner.owner, self.inner.rrid
        )
    }
}

fn codec<'a, E: std::fmt::Display>(
    action: &'static str,
    what: &'a str,
) -> impl FnOnce(E) -> Error + 'a {
    move |e| Error::Codec {
        action,
        what: what.to_string(),
        pid: crate::base::ids::myid(),
        reason: e.to_string(),
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> RemoteChannel<T> {
    /// A channel of capacity `cap` (0: rendezvous) stored on `pid`.
    ///
    /// # Julia
    /// `RemoteChannel(() -> Channel{T}(cap), pid)`.
    pub fn new(cap: usize, pid: Pid) -> Result<Self> {
        let rt = rt()?;
        let rrid = rt.next_rrid();
        if pid == rt.myid() {
            rt.insert_entry(rrid, Stored::Channel(Box::new(ItemChannel::new(cap))), pid);
        } else {
            rt.request(
                pid,
                &Msg::NewChan {
                    rrid,
                    cap: cap as u64,
                },
                &Body::Owned(Vec::new()),
            )?;
        }
        Ok(RemoteChannel {
            inner: RefInner::new(rrid, pid),
            _t: PhantomData,
        })
    }
}

impl<T, K> RemoteChannel<T, K>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    K: Serialize + DeserializeOwned + Send + 'static,
{
    /// A channel built on `pid` by the registered function `f` applied to `args`; `f` returns a
    /// type implementing [`AbstractChannel`](crate::runtime::store::AbstractChannel) with `Item = T`, `Key = K`.
    ///
    /// # Julia
    /// `RemoteChannel(() -> DictChannel(), pid)`.
    pub fn from_fn<F, A>(f: F, pid: Pid, args: A) -> Result<Self>
    where
        F: RemoteFn<A>,
        F::Output: crate::runtime::store::AbstractChannel<Item = T, Key = K>,
        A: Serialize + Send + 'static,
    {
        let rt = rt()?;
        let rrid = rt.next_rrid();
        let name = f.name();
        if pid == rt.myid() {
            let ch = rt.construct_channel(name, |e| (e.call_local)(Box::new(args)))?;
            rt.insert_entry(rrid, Stored::Channel(ch), pid);
        } else {
            let body = wire::encode(&args).map_err(codec("encode", "constructor arguments"))?;
            rt.request(
                pid,
                &Msg::NewChanFrom {
                    rrid,
                    func: name.into(),
                },
                &body,
            )?;
        }
        Ok(RemoteChannel {
            inner: RefInner::new(rrid, pid),
            _t: PhantomData,
        })
    }

    /// The process that stores the channel.
    pub fn owner(&self) -> Pid {
        self.inner.owner
    }

    /// Releases this process's hold now instead of at drop.
    pub fn finalize(&self) {
        self.inner.finalize();
    }

    fn local<R>(&self, f: impl FnOnce(&dyn ErasedChannel) -> Result<R>) -> Option<Result<R>> {
        let rt = rt().ok()?;
        if self.owner() != rt.myid() {
            return None;
        }
        Some(match rt.entry(self.inner.rrid) {
            Some(e) => match &e.stored {
                Stored::Channel(ch) => f(ch.as_ref()),
                Stored::Value(_) => Err(Error::invalid("reference is a Future")),
            },
            None => Err(Error::invalid("RemoteChannel was freed (finalize called?)")),
        })
    }

    fn remote(&self, op: ChanOp, key: &K, body: &Body<'_>) -> Result<crate::wire::frame::Frame> {
        let key = wire::encode_vec(key).map_err(codec("encode", "channel key"))?;
        self.remote_raw(op, key, body)
    }

    fn remote_raw(
        &self,
        op: ChanOp,
        key: Vec<u8>,
        body: &Body<'_>,
    ) -> Result<crate::wire::frame::Frame> {
        let rt = rt()?;
        if self.inner.weight() == 0 {
            return Err(Error::invalid("RemoteChannel was finalized"));
        }
        rt.request(
            self.owner(),
            &Msg::Chan {
                rrid: self.inner.rrid,
                op,
                key,
            },
            body,
        )
    }

    /// Stores `v` under `key` (for keyed user channels).
    pub fn put_at(&self, key: K, v: T) -> Result<()> {
        let (key, v) = match self.local_kv(key, v) {
            Ok(r) => return r,
            Err(kv) => kv,
        };
        // The owner keeps the bytes: references inside are its to hold.
        let body =
            sent_to(self.owner(), || wire::encode(&v)).map_err(codec("encode", "channel value"))?;
        self.remote(ChanOp::Put, &key, &body).map(|_| ())
    }

    fn local_kv(&self, key: K, v: T) -> std::result::Result<Result<()>, (K, T)> {
        match rt() {
            Ok(rt) if self.owner() == rt.myid() => Ok(self
                .local(|ch| ch.put(Item::local(key), Item::local(v)))
                .expect("owner is local")),
            _ => Err((key, v)),
        }
    }

    /// Removes and returns the value under `key`, blocking until there is one.
    pub fn take_at(&self, key: K) -> Result<T> {
        let rt = rt()?;
        if self.owner() == rt.myid() {
            return self
                .local(|ch| ch.take(Item::local(key))?.into_typed("channel"))
                .expect("owner is local");
        }
        let f = self.remote(ChanOp::Take, &key, &Body::Owned(Vec::new()))?;
        decode_as(&f.body(), "channel value")
    }

    /// A copy of the value under `key`, blocking until there is one.
    pub fn fetch_at(&self, key: K) -> Result<T>
    where
        T: Clone,
    {
        let rt = rt()?;
        if self.owner() == rt.myid() {
            return self
                .local(|ch| {
                    let mut out = None;
                    ch.peek(Item::local(key), &mut |i| {
                        // A peek is a copy: references inside must not count the stored weight.
                        out = Some(copy_scope(|| i.typed_clone::<T>("channel")));
                        Ok(())
                    })?;
                    out.expect("peek calls back")
                })
                .expect("owner is local");
        }
        let f = self.remote(ChanOp::Fetch, &key, &Body::Owned(Vec::new()))?;
        copy_scope(|| decode_as(&f.body(), "channel value"))
    }

    /// Whether a value under `key` is ready.
    pub fn isready_at(&self, key: K) -> Result<bool> {
        let rt = rt()?;
        if self.owner() == rt.myid() {
            return self
                .local(|ch| ch.isready(Item::local(key)))
                .expect("owner is local");
        }
        let f = self.remote(ChanOp::IsReady, &key, &Body::Owned(Vec::new()))?;
        Ok(f.body().first() == Some(&1))
    }

    /// Blocks until a value under `key` is in the channel.
    pub fn wait_at(&self, key: K) -> Result<()> {
        let rt = rt()?;
        if self.owner() == rt.myid() {
            return self
                .local(|ch| ch.wait(Item::local(key)))
                .expect("owner is local");
        }
        self.remote(ChanOp::Wait, &key, &Body::Owned(Vec::new()))
            .map(|_| ())
    }

    /// Whether the channel is open: `false` once [`close`](Self::close)d, even while values
    /// are left to take. A user channel answers through
    /// [`AbstractChannel::isopen`](crate::runtime::store::AbstractChannel::isopen).
    ///
    /// # Julia
    /// `isopen(rr)`.
    pub fn isopen(&self) -> Result<bool> {
        if let Some(r) = self.local(|ch| Ok(ch.isopen())) {
            return r;
        }
        // A protocol operation, not a call: the owner answers it while user calls run.
        let f = self.remote_raw(ChanOp::IsOpen, Vec::new(), &Body::Owned(Vec::new()))?;
        Ok(f.body().first() == Some(&1))
    }

    /// Closes the channel: later `put`s fail, `take`s fail once it is drained.
    pub fn close(&self) -> Result<()> {
        if let Some(r) = self.local(|ch| {
            ch.close();
            Ok(())
        }) {
            return r;
        }
        self.remote_raw(ChanOp::Close, Vec::new(), &Body::Owned(Vec::new()))
            .map(|_| ())
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> RemoteChannel<T> {
    /// Puts a value, blocking while the channel is full (until taken, for capacity 0).
    ///
    /// # Julia
    /// `put!(rr, v)`.
    pub fn put(&self, v: T) -> Result<()> {
        self.put_at((), v)
    }
    /// Takes the next value, blocking while the channel is empty.
    ///
    /// # Julia
    /// `take!(rr)`.
    pub fn take(&self) -> Result<T> {
        self.take_at(())
    }
    /// A copy of the next value, without removing it.
    ///
    /// # Julia
    /// `fetch(rr)`.
    pub fn fetch(&self) -> Result<T>
    where
        T: Clone,
    {
        self.fetch_at(())
    }
    /// Whether a value is waiting.
    ///
    /// # Julia
    /// `isready(rr)`.
    pub fn isready(&self) -> Result<bool> {
        self.isready_at(())
    }
    /// Blocks until a value is in the channel.
    ///
    /// # Julia
    /// `wait(rr)`.
    pub fn wait(&self) -> Result<()> {
        self.wait_at(())
    }
    /// Whether no value is waiting (for capacity 0: no `put` is waiting for a taker). Like
    /// [`isready`](Self::isready), it may be out of date when it arrives.
    ///
    /// # Julia
    /// `isempty(rr)`.
    pub fn isempty(&self) -> Result<bool> {
        if let Some(r) = self.local(|ch| empty_under(ch, Item::local(()))) {
            return r;
        }
        let f = self.remote(ChanOp::IsEmpty, &(), &Body::Owned(Vec::new()))?;
        Ok(f.body().first() == Some(&1))
    }
    /// [`take`](Self::take) for at most `d`: `Err(Error::Timeout)` if no value came by then,
    /// and nothing was taken (a later `take` gets the next value). `d` is measured on the
    /// owner, so the call may return up to a round trip later. The owner answers it whatever
    /// user code runs there, and a take waiting there holds none of its threads. A channel of
    /// a user type ([`RemoteChannel::from_fn`]) has no timed take: `Error::Invalid`.
    ///
    /// # Julia
    /// No counterpart (`take!` has no timeout); cohort's own.
    pub fn take_timeout(&self, d: Duration) -> Result<T> {
        let rt = rt()?;
        let r = if self.owner() == rt.myid() {
            self.local(|ch| {
                ch.take_until(Item::local(()), deadline_in(d))?
                    .into_typed("channel")
            })
            .expect("owner is local")
        } else {
            self.timed(d, None)
                .and_then(|f| decode_as(&f.body(), "channel value"))
        };
        r.map_err(|e| self.timed_out(e, "take", d))
    }

    /// [`put`](Self::put) for at most `d`: `Err(Error::Timeout)` if the channel had no room
    /// by then (for capacity 0: no taker), and `v` was not inserted. `d` is measured on the
    /// owner, so the call may return up to a round trip later; as for `take_timeout`, the
    /// owner answers it whatever user code runs there, holding no thread while it waits. A
    /// channel of a user type has no timed put: `Error::Invalid`.
    ///
    /// # Julia
    /// No counterpart (`put!` has no timeout); cohort's own.
    pub fn put_timeout(&self, v: T, d: Duration) -> Result<()> {
        let rt = rt()?;
        let r = if self.owner() == rt.myid() {
            self.local(|ch| ch.put_until(Item::local(()), Item::local(v), deadline_in(d)))
                .expect("owner is local")
        } else {
            // As for `put`: the owner keeps the bytes, references inside are its to hold.
            let body = sent_to(self.owner(), || wire::encode(&v))
                .map_err(codec("encode", "channel value"))?;
            self.timed(d, Some(body)).map(|_| ())
        };
        r.map_err(|e| self.timed_out(e, "put", d))
    }

    /// A timed take (`value` `None`) or put of `value` on the owner: a protocol operation,
    /// parked there without a thread and answered whatever user code runs; the owner gives
    /// it up at the deadline.
    fn timed(&self, d: Duration, value: Option<Body<'_>>) -> Result<crate::wire::frame::Frame> {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        match value {
            None => self.remote_raw(
                ChanOp::TakeWithin { nanos },
                Vec::new(),
                &Body::Owned(Vec::new()),
            ),
            Some(v) => self.remote_raw(ChanOp::PutWithin { nanos }, Vec::new(), &v),
        }
    }

    /// The owner's timeout (why: "no value", "no room", "no taker"), said for this handle.
    fn timed_out(&self, e: Error, op: &str, d: Duration) -> Error {
        match e {
            Error::Timeout(why) => Error::Timeout(format!(
                "{op} of RemoteChannel {:?} on pid {}: {why} within {d:?}",
                self.inner.rrid, self.inner.owner
            )),
            e => e,
        }
    }

    /// Iterates by `take` until the channel is closed and drained.
    ///
    /// Items are `Result`s: a closed, drained channel ends the iteration, and any other error
    /// (the owner died, a topology refusal, a value that does not decode) is yielded once as
    /// `Err`, after which the iteration ends. Write `for v in c.iter() { let v = v?; ... }`
    /// (or `for v in &c`). Julia's `for v in c` raises the same errors.
    ///
    /// # Julia
    /// `for v in c ... end`.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            chan: self,
            done: false,
        }
    }
}

/// The iterator of [`RemoteChannel::iter`]: `take` until closed and drained, errors yielded.
#[derive(Debug)]
pub struct Iter<'a, T> {
    chan: &'a RemoteChannel<T>,
    done: bool,
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Iterator for Iter<'_, T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        match self.chan.take() {
            Ok(v) => Some(Ok(v)),
            Err(Error::ChannelClosed) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> std::iter::FusedIterator for Iter<'_, T> {}

impl<'a, T: Serialize + DeserializeOwned + Send + 'static> IntoIterator for &'a RemoteChannel<T> {
    type Item = Result<T>;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: Serialize + Send + 'static, K> Serialize for RemoteChannel<T, K> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner
            .export()
            .map_err(crate::wire::codec::ser_error)?
            .serialize(s)
    }
}

impl<'de, T, K> Deserialize<'de> for RemoteChannel<T, K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(RemoteChannel {
            inner: RefInner::import(RefWire::deserialize(d)?)
                .map_err(crate::wire::codec::de_error)?,
            _t: PhantomData,
        })
    }
}
