//! What an owner stores behind a remote reference: a Future's value, or a channel.
//!
//! Values put by the owner's own process are kept as they were moved in (`Item::Local`,
//! docs/ARCHITECTURE.md, decision 8); values that arrived from elsewhere stay in their encoded
//! form until someone asks for them with a type.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::runtime::clients::{Booked, Clients};
use crate::runtime::exec;
use crate::wire::codec::{self as wire, Body};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// The total weight of a new reference: the owner's entry starts with it, the first handle
/// holds all of it.
pub(crate) const INITIAL_WEIGHT: u64 = 1 << 62;

/// A type-erased value produced or consumed by a registered function.
pub type AnyBox = Box<dyn std::any::Any + Send>;
/// Encoder of a registered function's result type.
pub type EncodeFn = for<'a> fn(&'a (dyn std::any::Any + Send)) -> Result<Body<'a>, bincode::Error>;

/// A value in a store.
pub enum Item {
    /// Moved in by the owning process; encoded only if another process asks for it.
    Local {
        /// The value.
        value: AnyBox,
        /// Its encoder.
        encode: EncodeFn,
    },
    /// Arrived encoded.
    Bytes(Vec<u8>),
    /// Arrived encoded, still inside its frame.
    Frame(crate::wire::frame::Frame),
}

fn encode_as<T: Serialize + Send + 'static>(
    v: &(dyn Any + Send),
) -> Result<Body<'_>, bincode::Error> {
    wire::encode(v.downcast_ref::<T>().expect("item type"))
}

impl Item {
    /// Wraps a local value.
    pub fn local<T: Serialize + Send + 'static>(v: T) -> Item {
        Item::Local {
            value: Box::new(v),
            encode: encode_as::<T>,
        }
    }
    /// The value as `T`, decoding if needed.
    pub fn into_typed<T: DeserializeOwned + 'static>(self, what: &str) -> Result<T> {
        match self {
            Item::Local { value, .. } => value.downcast::<T>().map(|b| *b).map_err(|_| {
                Error::invalid(format!(
                    "{what} does not hold a value of type {}",
                    std::any::type_name::<T>()
                ))
            }),
            Item::Bytes(b) => decode_as(&b, what),
            Item::Frame(f) => decode_as(&f.body(), what),
        }
    }
    /// A copy of the value as `T`.
    pub fn typed_clone<T: DeserializeOwned + Clone + 'static>(&self, what: &str) -> Result<T> {
        match self {
            Item::Local { value, .. } => value.downcast_ref::<T>().cloned().ok_or_else(|| {
                Error::invalid(format!(
                    "{what} does not hold a value of type {}",
                    std::any::type_name::<T>()
                ))
            }),
            Item::Bytes(b) => decode_as(b, what),
            Item::Frame(f) => decode_as(&f.body(), what),
        }
    }
    /// The encoded form.
    pub fn encode(&self) -> Result<Body<'_>> {
        match self {
            Item::Local { value, encode } => encode(value.as_ref()).map_err(|e| Error::Codec {
                action: "encode",
                what: "a stored value".into(),
                pid: crate::base::ids::myid(),
                reason: e.to_string(),
            }),
            Item::Bytes(b) => Ok(Body::Borrowed(b)),
            Item::Frame(f) => Ok(match f.body() {
                std::borrow::Cow::Borrowed(b) => Body::Borrowed(b),
                std::borrow::Cow::Owned(v) => Body::Owned(v),
            }),
        }
    }
}

pub(crate) fn decode_as<T: DeserializeOwned + 'static>(b: &[u8], what: &str) -> Result<T> {
    wire::decode(b).map_err(|e| Error::Codec {
        action: "decode",
        what: format!("{what} as {}", std::any::type_name::<T>()),
        pid: crate::base::ids::myid(),
        reason: e.to_string(),
    })
}

fn wait_on<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> Result<MutexGuard<'a, T>> {
    exec::check_interrupt()?;
    let (g, _) = cv
        .wait_timeout(g, std::time::Duration::from_millis(50))
        .unwrap_or_else(|e| e.into_inner());
    exec::check_interrupt()?;
    Ok(g)
}

/// [`wait_on`] until `deadline` at most: `Err(Timeout(why))` once it has passed.
fn wait_until<'a, T>(
    cv: &Condvar,
    g: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    why: &str,
) -> Result<MutexGuard<'a, T>> {
    let Some(d) = deadline else {
        return wait_on(cv, g);
    };
    let left = d.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(why.into()));
    }
    exec::check_interrupt()?;
    let (g, _) = cv
        .wait_timeout(g, left.min(std::time::Duration::from_millis(50)))
        .unwrap_or_else(|e| e.into_inner());
    exec::check_interrupt()?;
    Ok(g)
}

fn untimed() -> Error {
    Error::invalid("a user channel (AbstractChannel) has no timed put or take: use put or take")
}

/// The write-once cell behind a `Future`.
#[derive(Default)]
pub struct ValueCell {
    state: Mutex<Option<std::result::Result<Item, Error>>>,
    cond: Condvar,
    /// Tasks awaiting the value here (an async fetch on the owner), woken by `set`.
    tasks: Mutex<Vec<std::task::Waker>>,
}

impl ValueCell {
    /// Sets the value or error; `AlreadySet` if it holds one.
    pub fn set(&self, v: std::result::Result<Item, Error>) -> Result<()> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_some() {
            return Err(Error::AlreadySet);
        }
        *g = Some(v);
        drop(g);
        self.cond.notify_all();
        for w in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner())) {
            w.wake();
        }
        Ok(())
    }
    /// True once set; otherwise `cx`'s waker is kept and woken by `set`.
    pub(crate) fn poll_ready(&self, cx: &std::task::Context<'_>) -> bool {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_some() {
            return true;
        }
        // Registered under the state lock, so a `set` after the check finds it.
        let mut t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if !t.iter().any(|w| w.will_wake(cx.waker())) {
            t.push(cx.waker().clone());
        }
        false
    }
    /// True once set.
    pub fn isready(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
    /// Blocks until set, then calls `f` on the value.
    pub fn with<R>(&self, f: impl FnOnce(&std::result::Result<Item, Error>) -> R) -> Result<R> {
        self.with_until(None, f)
    }
    /// Like [`ValueCell::with`], giving up with `Error::Timeout` at `deadline`.
    pub fn with_until<R>(
        &self,
        deadline: Option<std::time::Instant>,
        f: impl FnOnce(&std::result::Result<Item, Error>) -> R,
    ) -> Result<R> {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            let _b = exec::blocking();
            while g.is_none() {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Err(Error::Timeout("the Future has no value yet".into()));
                }
                g = wait_on(&self.cond, g)?;
            }
        }
        Ok(f(g.as_ref().expect("set")))
    }
    /// Moves the value out (for an entry nobody else can reach any more).
    pub(crate) fn take(&self) -> Option<std::result::Result<Item, Error>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A channel implemented by the user, for `RemoteChannel::from_fn` (Julia's `AbstractChannel`).
///
/// `Key` is `()` for a plain channel; the seeds' `DictChannel` uses its dictionary key. Methods
/// may block (they run on their own thread when called from another process). `fetch` returns
/// a copy without removing.
pub trait AbstractChannel: Send + Sync + 'static {
    /// What `put`, `take`, `fetch` and `isready` are keyed by.
    type Key: Serialize + DeserializeOwned + Send + 'static;
    /// The element type.
    type Item: Serialize + DeserializeOwned + Send + 'static;
    /// Stores a value.
    fn put(&self, key: Self::Key, v: Self::Item) -> Result<()>;
    /// Removes and returns a value, blocking until there is one.
    fn take(&self, key: Self::Key) -> Result<Self::Item>;
    /// Returns a copy, blocking until there is one.
    fn fetch(&self, key: Self::Key) -> Result<Self::Item>;
    /// Whether `take` would return at once.
    fn isready(&self, key: Self::Key) -> bool;
    /// Blocks until a value under `key` is present.
    fn wait(&self, key: Self::Key) -> Result<()>;
    /// Closes the channel (optional).
    fn close(&self) {}
    /// Whether the channel is open (default: always).
    ///
    /// # Julia
    /// `isopen(c)`.
    fn isopen(&self) -> bool {
        true
    }
}

/// The owner-side face of any channel, built-in or user-defined, with values as [`Item`]s.
pub trait ErasedChannel: Send + Sync {
    /// Stores `v` under `key`.
    fn put(&self, key: Item, v: Item) -> Result<()>;
    /// Removes a value.
    fn take(&self, key: Item) -> Result<Item>;
    /// Calls `f` with the next value without removing it.
    fn peek(&self, key: Item, f: &mut dyn FnMut(&Item) -> Result<()>) -> Result<()>;
    /// Whether a value is ready.
    fn isready(&self, key: Item) -> Result<bool>;
    /// Blocks until a value is ready under `key`.
    fn wait(&self, key: Item) -> Result<()>;
    /// Closes it.
    fn close(&self);
    /// [`put`](Self::put), giving up with `Error::Timeout` at `deadline` without inserting
    /// `v`; a user channel cannot (`Error::Invalid`).
    fn put_until(&self, key: Item, v: Item, deadline: Instant) -> Result<()> {
        let _ = (key, v, deadline);
        Err(untimed())
    }
    /// [`take`](Self::take), giving up with `Error::Timeout` at `deadline` without removing
    /// anything; a user channel cannot (`Error::Invalid`).
    fn take_until(&self, key: Item, deadline: Instant) -> Result<Item> {
        let _ = (key, deadline);
        Err(untimed())
    }
    /// Whether it is open (a user channel: see [`AbstractChannel::isopen`]).
    fn isopen(&self) -> bool {
        true
    }
    /// Whether no value is waiting; `None` where that needs a key (a user channel).
    fn isempty(&self) -> Option<bool> {
        None
    }
}

/// Adapter of a user channel to [`ErasedChannel`].
pub struct Typed<C>(pub C);

impl<C: AbstractChannel> ErasedChannel for Typed<C> {
    fn put(&self, key: Item, v: Item) -> Result<()> {
        self.0.put(
            key.into_typed("channel key")?,
            v.into_typed("channel value")?,
        )
    }
    fn take(&self, key: Item) -> Result<Item> {
        let _b = exec::blocking();
        Ok(Item::local(self.0.take(key.into_typed("channel key")?)?))
    }
    fn peek(&self, key: Item, f: &mut dyn FnMut(&Item) -> Result<()>) -> Result<()> {
        let _b = exec::blocking();
        f(&Item::local(self.0.fetch(key.into_typed("channel key")?)?))
    }
    fn isready(&self, key: Item) -> Result<bool> {
        Ok(self.0.isready(key.into_typed("channel key")?))
    }
    fn wait(&self, key: Item) -> Result<()> {
        let _b = exec::blocking();
        self.0.wait(key.into_typed("channel key")?)
    }
    fn close(&self) {
        self.0.close()
    }
    fn isopen(&self) -> bool {
        self.0.isopen()
    }
}

struct ChanState {
    queue: VecDeque<(u64, Item)>,
    cap: usize,
    closed: bool,
    put_seq: u64,
    taken: Vec<u64>,
}

/// The built-in channel: FIFO, bounded by `cap`, `cap == 0` a rendezvous.
pub struct ItemChannel {
    st: Mutex<ChanState>,
    cond: Condvar,
}

impl ItemChannel {
    /// A channel of capacity `cap`.
    pub fn new(cap: usize) -> Self {
        ItemChannel {
            st: Mutex::new(ChanState {
                queue: VecDeque::new(),
                cap,
                closed: false,
                put_seq: 0,
                taken: Vec::new(),
            }),
            cond: Condvar::new(),
        }
    }
    fn lock(&self) -> MutexGuard<'_, ChanState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ItemChannel {
    fn put_by(&self, v: Item, deadline: Option<Instant>) -> Result<()> {
        let mut g = self.lock();
        let _b = exec::blocking();
        while !g.closed && g.cap > 0 && g.queue.len() >= g.cap {
            g = wait_until(&self.cond, g, deadline, "no room")?;
        }
        if g.closed {
            return Err(Error::ChannelClosed);
        }
        g.put_seq += 1;
        let ticket = g.put_seq;
        g.queue.push_back((ticket, v));
        self.cond.notify_all();
        if g.cap > 0 {
            return Ok(());
        }
        // Rendezvous: return once a taker has the value.
        loop {
            if let Some(i) = g.taken.iter().position(|&t| t == ticket) {
                g.taken.swap_remove(i);
                return Ok(());
            }
            let gone = |g: &mut ChanState| {
                if let Some(i) = g.queue.iter().position(|(t, _)| *t == ticket) {
                    g.queue.remove(i);
                }
            };
            if g.closed {
                gone(&mut g);
                return Err(Error::ChannelClosed);
            }
            g = match wait_until(&self.cond, g, deadline, "no taker") {
                Ok(g) => g,
                Err(e) => {
                    let mut g = self.lock();
                    // Taken while this waited for the lock: the put happened.
                    if let Some(i) = g.taken.iter().position(|&t| t == ticket) {
                        g.taken.swap_remove(i);
                        return Ok(());
                    }
                    gone(&mut g);
                    return Err(e);
                }
            };
        }
    }
    fn take_by(&self, deadline: Option<Instant>) -> Result<Item> {
        let mut g = self.lock();
        let _b = exec::blocking();
        loop {
            if let Some((ticket, v)) = g.queue.pop_front() {
                if g.cap == 0 {
                    g.taken.push(ticket);
                }
                self.cond.notify_all();
                return Ok(v);
            }
            if g.closed {
                return Err(Error::ChannelClosed);
            }
            g = wait_until(&self.cond, g, deadline, "no value")?;
        }
    }
}

impl ErasedChannel for ItemChannel {
    fn put(&self, _key: Item, v: Item) -> Result<()> {
        self.put_by(v, None)
    }
    fn take(&self, _key: Item) -> Result<Item> {
        self.take_by(None)
    }
    fn put_until(&self, _key: Item, v: Item, deadline: Instant) -> Result<()> {
        self.put_by(v, Some(deadline))
    }
    fn take_until(&self, _key: Item, deadline: Instant) -> Result<Item> {
        self.take_by(Some(deadline))
    }
    fn peek(&self, _key: Item, f: &mut dyn FnMut(&Item) -> Result<()>) -> Result<()> {
        let mut g = self.lock();
        let _b = exec::blocking();
        loop {
            if let Some((_, v)) = g.queue.front() {
                return f(v);
            }
            if g.closed {
                return Err(Error::ChannelClosed);
            }
            g = wait_on(&self.cond, g)?;
        }
    }
    fn isready(&self, _key: Item) -> Result<bool> {
        Ok(!self.lock().queue.is_empty())
    }
    fn wait(&self, _key: Item) -> Result<()> {
        let mut g = self.lock();
        let _b = exec::blocking();
        loop {
            if !g.queue.is_empty() {
                return Ok(());
            }
            if g.closed {
                return Err(Error::ChannelClosed);
            }
            g = wait_on(&self.cond, g)?;
        }
    }
    fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }
    fn isopen(&self) -> bool {
        !self.lock().closed
    }
    fn isempty(&self) -> Option<bool> {
        Some(self.lock().queue.is_empty())
    }
}

/// What an owner keeps under a remote reference id.
pub enum Stored {
    /// A Future's value.
    Value(ValueCell),
    /// A channel.
    Channel(Box<dyn ErasedChannel>),
}

/// An owner's entry: the stored thing and the reference weight still held by handles elsewhere.
pub struct Entry {
    /// The value or channel.
    pub stored: Stored,
    /// Outstanding weight by holder; the entry is dropped when none is left.
    pub(crate) clients: Mutex<Clients>,
    /// Who created the reference (for diagnostics).
    pub creator: Pid,
}

impl Entry {
    /// A new entry, all its weight held by `holder` (the process that made the reference).
    pub(crate) fn new(stored: Stored, holder: Pid, creator: Pid) -> Entry {
        Entry {
            stored,
            clients: Mutex::new(Clients::new(holder, INITIAL_WEIGHT)),
            creator,
        }
    }
}

impl Booked for Entry {
    fn clients(&self) -> MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}
