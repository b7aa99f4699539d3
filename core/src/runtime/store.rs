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
pub type EncodeFn =
    for<'a> fn(&'a (dyn std::any::Any + Send)) -> Result<Body<'a>, wire::CodecError>;

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
) -> Result<Body<'_>, wire::CodecError> {
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

/// `now + d`, or far ahead where that does not fit.
pub(crate) fn deadline_in(d: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(86400 * 365))
}

fn untimed() -> Error {
    Error::invalid("a user channel (AbstractChannel) has no timed put or take: use put or take")
}

/// What a parked request does with a Future's value once it is there (see [`ValueCell::when_set`]).
pub type OnSet = Box<dyn FnOnce(&std::result::Result<Item, Error>) + Send>;

#[derive(Default)]
struct CellState {
    value: Option<std::result::Result<Item, Error>>,
    /// Requests from other processes waiting for the value, without a thread each.
    waiters: Vec<OnSet>,
}

/// The write-once cell behind a `Future`.
#[derive(Default)]
pub struct ValueCell {
    state: Mutex<CellState>,
    cond: Condvar,
    /// Tasks awaiting the value here (an async fetch on the owner), woken by `set`.
    tasks: Mutex<Vec<std::task::Waker>>,
}

impl ValueCell {
    fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Sets the value or error; `AlreadySet` if it holds one. Parked waiters run here, on the
    /// setter's thread.
    pub fn set(&self, v: std::result::Result<Item, Error>) -> Result<()> {
        let mut g = self.lock();
        if g.value.is_some() {
            return Err(Error::AlreadySet);
        }
        g.value = Some(v);
        let waiters = std::mem::take(&mut g.waiters);
        self.cond.notify_all();
        for w in std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner())) {
            w.wake();
        }
        // Under the lock, as `with` answers: the value cannot be moved out meanwhile.
        let v = g.value.as_ref().expect("just set");
        for w in waiters {
            w(v);
        }
        Ok(())
    }
    /// True once set; otherwise `cx`'s waker is kept and woken by `set`.
    pub(crate) fn poll_ready(&self, cx: &std::task::Context<'_>) -> bool {
        let g = self.lock();
        if g.value.is_some() {
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
        self.lock().value.is_some()
    }
    /// Calls `f` with the value: now if it is set, else when it is set, on the setter's thread.
    /// Holds no thread meanwhile; `f` must not block.
    pub fn when_set(&self, f: OnSet) {
        let mut g = self.lock();
        match g.value.as_ref() {
            Some(v) => f(v),
            None => g.waiters.push(f),
        }
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
        let mut g = self.lock();
        if g.value.is_none() {
            let _b = exec::blocking();
            while g.value.is_none() {
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Err(Error::Timeout("the Future has no value yet".into()));
                }
                g = wait_on(&self.cond, g)?;
            }
        }
        Ok(f(g.value.as_ref().expect("set")))
    }
    /// Moves the value out (for an entry nobody else can reach any more).
    pub(crate) fn take(&self) -> Option<std::result::Result<Item, Error>> {
        self.lock().value.take()
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

/// Whether no value is waiting in `ch`: a user channel, which cannot tell without a key,
/// answers by `isready` under `key`.
pub(crate) fn empty_under(ch: &dyn ErasedChannel, key: Item) -> Result<bool> {
    match ch.isempty() {
        Some(empty) => Ok(empty),
        None => ch.isready(key).map(|r| !r),
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
    /// Whether [`ErasedChannel::park`] works: true for the built-in channel. A user channel's
    /// methods may block, so a request from another process runs them on a thread of its own.
    fn parks(&self) -> bool {
        false
    }
    /// Starts `op` for a request from another process without holding a thread: `p.done` gets
    /// the outcome now or, on the thread that makes it possible, later. Only where
    /// [`ErasedChannel::parks`].
    fn park(&self, op: ParkOp, p: Parked) {
        let _ = op;
        (p.done)(Err(Error::invalid("this channel cannot park requests")));
    }
    /// Gives up the parked put or take whose [`Parked::tag`] is `tag`, if it is still waiting:
    /// it is answered `Error::Timeout` (why: "no value", "no room", "no taker"), having taken
    /// or inserted nothing. Only where [`ErasedChannel::parks`].
    fn expire(&self, tag: u64) {
        let _ = tag;
    }
}

/// How a parked `fetch` copies a channel's next value.
pub type CopyFn = fn(&Item) -> Result<Item>;

/// A channel operation that may have to wait, for [`ErasedChannel::park`].
pub enum ParkOp {
    /// Store the value once there is room (done: an empty item).
    Put(Item),
    /// Remove the next value (done: the value).
    Take,
    /// Copy the next value with this function (done: the copy).
    Peek(CopyFn),
    /// Wait for a value (done: an empty item).
    Wait,
}

/// A request parked on a channel or a Future until it can be answered.
pub struct Parked {
    /// False once nobody wants the answer (the request was interrupted, or its caller is
    /// gone): the request is dropped without taking a value.
    pub live: Box<dyn Fn() -> bool + Send>,
    /// Receives the outcome; must not block.
    pub done: Box<dyn FnOnce(Result<Item>) + Send>,
    /// For a timed request, the id [`ErasedChannel::expire`] knows it by; 0 for none.
    pub tag: u64,
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

type Completion = Box<dyn FnOnce() + Send>;

struct ChanState {
    queue: VecDeque<(u64, Item)>,
    cap: usize,
    closed: bool,
    put_seq: u64,
    /// Rendezvous tickets taken, for local putters waiting on the condition.
    taken: Vec<u64>,
    /// Parked requests (from other processes): takers, readers (peek or wait), putters waiting
    /// for room, and rendezvous putters waiting for their value to be taken, by ticket.
    takers: VecDeque<Parked>,
    readers: Vec<(Option<CopyFn>, Parked)>,
    putters: VecDeque<(Item, Parked)>,
    rendezvous: Vec<(u64, Parked)>,
}

impl ChanState {
    fn push(&mut self, v: Item) -> u64 {
        self.put_seq += 1;
        let ticket = self.put_seq;
        self.queue.push_back((ticket, v));
        ticket
    }

    /// A value leaves the queue: a rendezvous putter learns it was taken.
    fn taken_now(&mut self, ticket: u64, out: &mut Vec<Completion>) {
        if self.cap != 0 {
            return;
        }
        match self.rendezvous.iter().position(|(t, _)| *t == ticket) {
            Some(i) => {
                let (_, p) = self.rendezvous.swap_remove(i);
                out.push(Box::new(move || (p.done)(Ok(Item::Bytes(Vec::new())))));
            }
            None => self.taken.push(ticket),
        }
    }

    /// Serves every parked request the state allows; returns what to run once unlocked.
    fn pump(&mut self) -> Vec<Completion> {
        let mut out: Vec<Completion> = Vec::new();
        loop {
            let mut progress = false;
            while !self.closed && self.cap > 0 && self.queue.len() < self.cap {
                let Some((v, p)) = self.putters.pop_front() else {
                    break;
                };
                if (p.live)() {
                    self.push(v);
                    out.push(Box::new(move || (p.done)(Ok(Item::Bytes(Vec::new())))));
                    progress = true;
                }
            }
            if !self.queue.is_empty() && !self.readers.is_empty() {
                for (peek, p) in std::mem::take(&mut self.readers) {
                    if !(p.live)() {
                        continue;
                    }
                    let r = match peek {
                        Some(copy) => copy(&self.queue.front().expect("not empty").1),
                        None => Ok(Item::Bytes(Vec::new())),
                    };
                    out.push(Box::new(move || (p.done)(r)));
                }
            }
            while !self.queue.is_empty() {
                let Some(p) = self.takers.pop_front() else {
                    break;
                };
                if !(p.live)() {
                    continue;
                }
                let (ticket, v) = self.queue.pop_front().expect("not empty");
                self.taken_now(ticket, &mut out);
                out.push(Box::new(move || (p.done)(Ok(v))));
                progress = true;
            }
            if !progress {
                break;
            }
        }
        if self.closed {
            let closed =
                |p: Parked| -> Completion { Box::new(move || (p.done)(Err(Error::ChannelClosed))) };
            out.extend(self.putters.drain(..).map(|(_, p)| closed(p)));
            for (ticket, p) in std::mem::take(&mut self.rendezvous) {
                if let Some(i) = self.queue.iter().position(|(t, _)| *t == ticket) {
                    self.queue.remove(i);
                }
                out.push(closed(p));
            }
            if self.queue.is_empty() {
                out.extend(self.takers.drain(..).map(closed));
                out.extend(self.readers.drain(..).map(|(_, p)| closed(p)));
            }
        }
        out
    }
}

/// The built-in channel: FIFO, bounded by `cap`, `cap == 0` a rendezvous.
///
/// Threads of the owning process block on its condition; requests from other processes park
/// on it instead ([`ErasedChannel::park`]) and are answered by whichever thread changes it.
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
                takers: VecDeque::new(),
                readers: Vec::new(),
                putters: VecDeque::new(),
                rendezvous: Vec::new(),
            }),
            cond: Condvar::new(),
        }
    }
    fn lock(&self) -> MutexGuard<'_, ChanState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Serves parked requests after a change, wakes local threads, and answers outside the lock.
    fn changed(&self, mut g: MutexGuard<'_, ChanState>) {
        let out = g.pump();
        drop(g);
        self.cond.notify_all();
        for c in out {
            c();
        }
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
        let ticket = g.push(v);
        if g.cap > 0 {
            self.changed(g);
            return Ok(());
        }
        let out = g.pump();
        self.cond.notify_all();
        if !out.is_empty() {
            drop(g);
            for c in out {
                c();
            }
            g = self.lock();
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
                let mut out = Vec::new();
                g.taken_now(ticket, &mut out);
                out.extend(g.pump());
                drop(g);
                self.cond.notify_all();
                for c in out {
                    c();
                }
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
        let mut g = self.lock();
        g.closed = true;
        self.changed(g);
    }
    fn isopen(&self) -> bool {
        !self.lock().closed
    }
    fn isempty(&self) -> Option<bool> {
        Some(self.lock().queue.is_empty())
    }
    fn parks(&self) -> bool {
        true
    }
    fn park(&self, op: ParkOp, p: Parked) {
        let mut g = self.lock();
        match op {
            ParkOp::Put(v) => {
                if g.closed {
                    drop(g);
                    return (p.done)(Err(Error::ChannelClosed));
                }
                if g.cap == 0 {
                    let ticket = g.push(v);
                    g.rendezvous.push((ticket, p));
                } else {
                    g.putters.push_back((v, p));
                }
            }
            ParkOp::Take => g.takers.push_back(p),
            ParkOp::Peek(copy) => g.readers.push((Some(copy), p)),
            ParkOp::Wait => g.readers.push((None, p)),
        }
        self.changed(g);
    }
    fn expire(&self, tag: u64) {
        if tag == 0 {
            return;
        }
        let mut g = self.lock();
        // Under the lock, where `pump` serves: a request is either answered or removed here.
        let (p, why) = if let Some(i) = g.takers.iter().position(|p| p.tag == tag) {
            (g.takers.remove(i).expect("found"), "no value")
        } else if let Some(i) = g.putters.iter().position(|(_, p)| p.tag == tag) {
            // Its value goes with it, never inserted.
            (g.putters.remove(i).expect("found").1, "no room")
        } else if let Some(i) = g.rendezvous.iter().position(|(_, p)| p.tag == tag) {
            let (ticket, p) = g.rendezvous.swap_remove(i);
            if let Some(i) = g.queue.iter().position(|(t, _)| *t == ticket) {
                g.queue.remove(i);
            }
            (p, "no taker")
        } else {
            return;
        };
        drop(g);
        (p.done)(Err(Error::Timeout(why.into())));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Outcome = Arc<Mutex<Vec<(u64, Result<Vec<u8>>)>>>;

    /// A parked request that records its outcome under `tag`.
    fn parked(out: &Outcome, tag: u64) -> Parked {
        let out = Arc::clone(out);
        Parked {
            live: Box::new(|| true),
            done: Box::new(move |r| {
                let r = r.and_then(|i| i.encode().map(|b| b.into_vec()));
                out.lock().unwrap().push((tag, r));
            }),
            tag,
        }
    }

    fn bytes(b: u8) -> Item {
        Item::Bytes(vec![b])
    }

    fn timeout_why(r: &Result<Vec<u8>>) -> &str {
        match r {
            Err(Error::Timeout(why)) => why,
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[test]
    fn an_expired_take_takes_nothing_later() {
        let ch = ItemChannel::new(2);
        let out = Outcome::default();
        ch.park(ParkOp::Take, parked(&out, 7));
        ch.park(ParkOp::Take, parked(&out, 8));
        ch.expire(7);
        // Expiring again, or a tag nobody has, changes nothing.
        ch.expire(7);
        ch.expire(99);
        ch.put(bytes(0), bytes(1)).unwrap();
        ch.put(bytes(0), bytes(2)).unwrap();
        let got = std::mem::take(&mut *out.lock().unwrap());
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0, timeout_why(&got[0].1)), (7, "no value"));
        assert_eq!(got[1].0, 8);
        assert_eq!(got[1].1.as_ref().unwrap(), &vec![1]);
        // 2 is still there, for the next take.
        assert_eq!(ch.isempty(), Some(false));
        assert!(matches!(ch.take(bytes(0)).unwrap(), Item::Bytes(b) if b == [2]));
        // Served before its deadline: a later expire finds nothing to answer.
        ch.put(bytes(0), bytes(3)).unwrap();
        ch.park(ParkOp::Take, parked(&out, 9));
        ch.expire(9);
        let got = std::mem::take(&mut *out.lock().unwrap());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.as_ref().unwrap(), &vec![3]);
    }

    #[test]
    fn an_expired_put_inserts_nothing() {
        let ch = ItemChannel::new(1);
        let out = Outcome::default();
        ch.put(bytes(0), bytes(1)).unwrap();
        ch.park(ParkOp::Put(bytes(2)), parked(&out, 3));
        ch.expire(3);
        let got = std::mem::take(&mut *out.lock().unwrap());
        assert_eq!((got[0].0, timeout_why(&got[0].1)), (3, "no room"));
        assert!(matches!(ch.take(bytes(0)).unwrap(), Item::Bytes(b) if b == [1]));
        assert_eq!(ch.isempty(), Some(true), "2 was not inserted");
        // Rendezvous: the value offered leaves the channel with its expired put.
        let r = ItemChannel::new(0);
        r.park(ParkOp::Put(bytes(5)), parked(&out, 4));
        assert_eq!(r.isempty(), Some(false));
        r.expire(4);
        let got = std::mem::take(&mut *out.lock().unwrap());
        assert_eq!((got[0].0, timeout_why(&got[0].1)), (4, "no taker"));
        assert_eq!(r.isempty(), Some(true));
        // With a taker in time, the put is answered and a later expire does nothing.
        r.park(ParkOp::Put(bytes(6)), parked(&out, 5));
        r.park(ParkOp::Take, parked(&out, 6));
        r.expire(5);
        let mut got = std::mem::take(&mut *out.lock().unwrap());
        got.sort_by_key(|(t, _)| *t);
        assert_eq!(got[0].1.as_ref().unwrap(), &Vec::<u8>::new());
        assert_eq!(got[1].1.as_ref().unwrap(), &vec![6]);
    }
}
