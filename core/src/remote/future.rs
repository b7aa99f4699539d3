//! `Future`: a write-once remote reference, the result of `remotecall`.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::runtime::refs::{RefInner, RefWire};
use crate::runtime::rt;
use crate::runtime::store::{Item, Stored};
use crate::wire::codec::{self as wire, Body};
use crate::wire::proto::Msg;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use std::sync::Arc;

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
    /// Releases this process's hold on the remote value now instead of at drop.
    ///
    /// # Julia
    /// `finalize(r)`.
    pub fn finalize(&self) {
        self.inner.finalize();
    }
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

    /// Whether the value is there (a cached value, or a remote check).
    pub fn isready(&self) -> Result<bool> {
        if self
            .inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(true);
        }
        let rt = rt()?;
        if self.owner() == rt.myid() {
            return Ok(match rt.entry(self.inner.rrid) {
                Some(e) => matches!(&e.stored, Stored::Value(c) if c.isready()),
                None => false,
            });
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

    /// Blocks until the value is there, without moving it.
    pub fn wait(&self) -> Result<()> {
        if self
            .inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let rt = rt()?;
        if self.owner() == rt.myid() {
            let e = rt.value_entry(self.inner.rrid, rt.myid());
            if let Stored::Value(c) = &e.stored {
                return c.with(|_| ());
            }
            return Err(Error::invalid("reference is a channel"));
        }
        rt.request(
            self.owner(),
            &Msg::Wait {
                rrid: self.inner.rrid,
            },
            &Body::Owned(Vec::new()),
        )
        .map(|_| ())
    }

    /// Sets the value; `Err(AlreadySet)` if it has one.
    ///
    /// # Julia
    /// `put!(::Future, v)`.
    pub fn put(&self, v: T) -> Result<()> {
        let rt = rt()?;
        if self.owner() == rt.myid() {
            let e = rt.value_entry(self.inner.rrid, rt.myid());
            return match &e.stored {
                Stored::Value(c) => c.set(Ok(Item::local(v))),
                Stored::Channel(_) => Err(Error::invalid("reference is a channel")),
            };
        }
        let body = wire::encode(&v).map_err(|e| Error::Codec {
            action: "encode",
            what: "the value put in a Future".into(),
            pid: rt.myid(),
            reason: e.to_string(),
        })?;
        rt.request(
            self.owner(),
            &Msg::Put {
                rrid: self.inner.rrid,
            },
            &body,
        )
        .map(|_| ())
    }

    /// Moves the value here (once; later calls use the cache) and returns a copy.
    ///
    /// Errors: the remote call's error (`RemoteException`, `ProcessExited`...), cached too.
    ///
    /// # Julia
    /// `fetch(::Future)`.
    pub fn fetch(&self) -> Result<T>
    where
        T: Clone,
    {
        {
            let c = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = &*c {
                return match r {
                    Ok(item) => item.typed_clone("Future"),
                    Err(e) => Err(e.clone()),
                };
            }
        }
        let rt = rt()?;
        if self.owner() == rt.myid() {
            let e = rt.value_entry(self.inner.rrid, rt.myid());
            let Stored::Value(c) = &e.stored else {
                return Err(Error::invalid("reference is a channel"));
            };
            return c.with(|r| match r {
                Ok(item) => item.typed_clone("Future"),
                Err(e) => Err(e.clone()),
            })?;
        }
        let release = self.inner.take_weight();
        let r = rt.request(
            self.owner(),
            &Msg::Fetch {
                rrid: self.inner.rrid,
                release,
            },
            &Body::Owned(Vec::new()),
        );
        self.keep(r)
    }

    /// Caches what a Fetch brought back (a value, or the call's error) and returns a copy. A
    /// lost owner or an interrupt is not cached: it is about this fetch, not the value.
    fn keep(&self, r: Result<crate::wire::frame::Frame>) -> Result<T>
    where
        T: Clone,
    {
        let cached = match r {
            Ok(frame) => Ok(Item::Frame(frame)),
            Err(Error::ProcessExited(p)) => return Err(Error::ProcessExited(p)),
            Err(Error::Interrupted(p)) => return Err(Error::Interrupted(p)),
            Err(e) => Err(e),
        };
        let out = match &cached {
            Ok(item) => item.typed_clone("Future"),
            Err(e) => Err(e.clone()),
        };
        *self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(cached);
        out
    }

    fn is_cached(&self) -> bool {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
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
    let started: Vec<Option<Result<crate::runtime::PendingReq>>> = futures
        .iter()
        .map(|f| {
            if f.is_cached() || f.owner() == rt.myid() {
                return None;
            }
            let release = f.inner.take_weight();
            let msg = Msg::Fetch {
                rrid: f.inner.rrid,
                release,
            };
            Some(rt.request_start(f.owner(), &msg, &Body::Owned(Vec::new())))
        })
        .collect();
    rt.await_all(started.iter().filter_map(|s| s.as_ref()?.as_ref().ok()));
    futures
        .iter()
        .zip(started)
        .map(|(f, p)| match p {
            None => f.fetch(),
            Some(Ok(p)) => f.keep(rt.request_finish(p)),
            Some(Err(e)) => f.keep(Err(e)),
        })
        .collect()
}

impl<T: Serialize + Send + 'static> Serialize for Future<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner
            .export()
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Future<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Future::from_inner(RefInner::import(RefWire::deserialize(
            d,
        )?)))
    }
}

pub(crate) fn decode_frame<T: DeserializeOwned + 'static>(
    f: crate::wire::frame::Frame,
    what: &str,
) -> Result<T> {
    wire::decode_frame(f).map_err(|e| Error::Codec {
        action: "decode",
        what: format!("{what} as {}", std::any::type_name::<T>()),
        pid: crate::base::ids::myid(),
        reason: e.to_string(),
    })
}
