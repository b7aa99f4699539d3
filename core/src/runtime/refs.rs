//! Remote references and their distributed reference counting.
//!
//! Counting uses weights, so that passing a handle between processes needs no message to the
//! owner and no ordering between links: the owner starts an entry with a total weight of 2^62,
//! the first handle holds all of it, a handle serialized to another process gives half of its
//! weight to the copy, and a handle dropped (or a Future fetched, or `finalize`d) sends its
//! weight back. The owner frees the entry when all weight has returned. A handle down to weight
//! 1 asks the owner for more before splitting (after 62 hops; in practice never). The owner
//! also books which pid holds how much (`clients`), so that a dead process's holds are freed.
//!
//! Weight travels inside the bytes of a value, so bytes decoded more than once (a channel value
//! read with `fetch`, a cached Future value) would count it again: those are coded in a
//! `copy_scope`, where handles go without weight and get their own on arrival.
//!
//! # Julia
//! Julia's owner keeps the set of pids holding a reference, where adding a pid twice is
//! harmless; weights need no message per hop but must not be copied, hence the copy rule. A
//! reference inside a value put remotely into a Future and fetched by several processes is
//! still counted once per fetch: the owner holds such a value only as bytes.

use crate::base::error::{Error, Result};
use crate::base::ids::{Pid, Rrid};
use crate::runtime::store::Item;
use crate::runtime::store::INITIAL_WEIGHT;
use crate::runtime::{rt, try_rt};
use crate::wire::codec::Body;
use crate::wire::proto::Msg;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

/// This process's live handles, by reference: an arriving copy of a reference this process
/// already holds joins that hold instead of starting a second one.
static HANDLES: std::sync::LazyLock<Mutex<std::collections::HashMap<Rrid, Weak<RefInner>>>> =
    std::sync::LazyLock::new(|| Mutex::new(std::collections::HashMap::new()));

/// What one process knows of a reference beside its weight.
#[derive(Default)]
pub(crate) struct RefState {
    /// The fetched (or put) value, or the call's error.
    pub(crate) cache: Option<Result<Item>>,
    /// A thread of this process is fetching: others wait for its result instead of asking the
    /// owner again (the owner frees the value once this process's weight is back).
    pub(crate) fetching: bool,
    /// Tasks awaiting the end of that fetch (async fetches), woken with `fetched`.
    pub(crate) tasks: Vec<std::task::Waker>,
    /// `finalize` was called (or the handle arrived without weight or value): unusable.
    pub(crate) finalized: bool,
}

/// One process's hold on a remote reference, shared by all its local copies.
pub(crate) struct RefInner {
    pub(crate) rrid: Rrid,
    pub(crate) owner: Pid,
    weight: AtomicU64,
    pub(crate) state: Mutex<RefState>,
    /// Signalled when a fetch in progress ends.
    pub(crate) fetched: Condvar,
}

/// A reference as it travels.
#[derive(Serialize, Deserialize)]
pub(crate) struct RefWire {
    rrid: Rrid,
    owner: Pid,
    weight: u64,
    /// The pid the owner books `weight` to (see `clients`): the destination where the sender
    /// knew it, else the sender.
    holder: Pid,
    cached: Option<Vec<u8>>,
}

thread_local! {
    /// Set while encoding or decoding a copy of stored bytes (see [`copy_scope`]).
    static COPY: Cell<bool> = const { Cell::new(false) };
    /// References exported or imported by this thread, to tell whether a value holds any.
    static CODED: Cell<u64> = const { Cell::new(0) };
    /// Where the bytes being encoded go, if known (see [`sent_to`]); 0: unknown.
    static DEST: Cell<Pid> = const { Cell::new(0) };
}

/// Runs `f`, an encoding of bytes that `dest` keeps as they are (a value put into a channel or
/// a Future there): weight exported inside is booked to `dest` on its owner at once, so that
/// the reference outlives this process while the bytes wait there.
pub(crate) fn sent_to<R>(dest: Pid, f: impl FnOnce() -> R) -> R {
    let outer = DEST.with(|c| c.replace(dest));
    let r = f();
    DEST.with(|c| c.set(outer));
    r
}

/// Tells the owner of `rrid` that `weight` of it is now `to`'s rather than `from`'s. Sent at
/// once on the link to the owner, ahead of any later return of that weight on it.
fn rebook(owner: Pid, rrid: Rrid, from: Pid, to: Pid, weight: u64) {
    let Some(rt) = try_rt() else { return };
    if owner == rt.myid() {
        rt.client_moved(rrid, from, to, weight);
        return;
    }
    let msg = Msg::AddClient {
        rrid,
        from,
        to,
        weight,
    };
    // An owner that cannot be reached cannot free the reference either.
    let _ = rt.send(owner, &msg, &Body::Owned(Vec::new()));
}

/// Runs `f` as the encoding or decoding of a *copy*: bytes that may be decoded more than once
/// (a channel value read with `fetch`, a cached Future value). References exported inside carry
/// no weight, and references imported inside ignore the weight they carry and join this
/// process's handle or get their own weight from the owner. Without this, every decode of the
/// same bytes would count their weight again and the owner would free the value too early.
pub(crate) fn copy_scope<R>(f: impl FnOnce() -> R) -> R {
    let outer = COPY.with(|c| c.replace(true));
    let r = f();
    COPY.with(|c| c.set(outer));
    r
}

/// Runs `f` (an encode or a decode) and says whether it met a reference.
pub(crate) fn refs_during<R>(f: impl FnOnce() -> R) -> (R, bool) {
    let before = CODED.with(|c| c.get());
    let r = f();
    (r, CODED.with(|c| c.get()) != before)
}

impl RefInner {
    fn with_weight(rrid: Rrid, owner: Pid, weight: u64, st: RefState) -> Arc<RefInner> {
        Arc::new(RefInner {
            rrid,
            owner,
            weight: AtomicU64::new(weight),
            state: Mutex::new(st),
            fetched: Condvar::new(),
        })
    }

    /// A new reference owned by `owner`, holding the whole weight.
    pub(crate) fn new(rrid: Rrid, owner: Pid) -> Arc<RefInner> {
        let r = Self::with_weight(rrid, owner, INITIAL_WEIGHT, RefState::default());
        if try_rt().is_some() {
            HANDLES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rrid, Arc::downgrade(&r));
        }
        r
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, RefState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes all the weight this process holds (to send it back).
    pub(crate) fn take_weight(&self) -> u64 {
        self.weight.swap(0, Ordering::AcqRel)
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight.load(Ordering::Acquire)
    }

    /// Sends all this process's weight back to the owner.
    pub(crate) fn release_weight(&self) {
        let w = self.take_weight();
        if w > 0 {
            if let Ok(rt) = rt() {
                rt.del_ref(self.owner, self.rrid, w);
            }
        }
    }

    /// Gives the owner back this process's weight now and makes the handle unusable (Julia's
    /// `finalize`, which also drops the cached value).
    pub(crate) fn finalize(&self) {
        let mut st = self.lock();
        st.finalized = true;
        st.cache = None;
        drop(st);
        self.release_weight();
    }

    /// The form sent to another process, carrying half of this process's weight (none inside
    /// a [`copy_scope`]). The value and the weight are read under one lock, so that a fetch
    /// finishing meanwhile cannot leave the copy with neither.
    pub(crate) fn export(&self) -> Result<RefWire> {
        CODED.with(|c| c.set(c.get() + 1));
        let st = self.lock();
        let cached = match &st.cache {
            Some(Ok(item)) => Some(copy_scope(|| item.encode().map(Body::into_vec))?),
            _ => None,
        };
        let give = if COPY.with(|c| c.get()) || st.finalized {
            0
        } else {
            self.split_weight()?
        };
        drop(st);
        let me = crate::base::ids::myid();
        let holder = match DEST.with(|c| c.get()) {
            0 => me,
            d => d,
        };
        if give > 0 && holder != me {
            rebook(self.owner, self.rrid, me, holder, give);
        }
        Ok(RefWire {
            rrid: self.rrid,
            owner: self.owner,
            weight: give,
            holder,
            cached,
        })
    }

    fn split_weight(&self) -> Result<u64> {
        loop {
            let w = self.weight.load(Ordering::Acquire);
            if w == 0 {
                return Ok(0);
            }
            if w == 1 {
                self.weight
                    .fetch_add(add_weight(self.rrid, self.owner)?, Ordering::AcqRel);
                continue;
            }
            let half = w / 2;
            if self
                .weight
                .compare_exchange(w, w - half, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(half);
            }
        }
    }

    /// The local hold for a reference that arrived from another process.
    pub(crate) fn import(w: RefWire) -> Result<Arc<RefInner>> {
        CODED.with(|c| c.set(c.get() + 1));
        let copy = COPY.with(|c| c.get());
        let cached = w.cached.map(|b| Ok(Item::Bytes(b)));
        let Some(rt) = try_rt() else {
            let st = RefState {
                cache: cached,
                ..RefState::default()
            };
            return Ok(Self::with_weight(w.rrid, w.owner, w.weight, st));
        };
        // Before this hold can be dropped (and its return sent after this on the same link).
        if !copy && w.weight > 0 && w.holder != rt.myid() {
            rebook(w.owner, w.rrid, w.holder, rt.myid(), w.weight);
        }
        // A finalized handle stays unusable; what arrives now is a new hold. Handles found are
        // dropped only once the table is unlocked (a last drop locks it).
        let live = || {
            let h = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
            let found = h.get(&w.rrid).and_then(Weak::upgrade);
            drop(h);
            found.filter(|r| !r.lock().finalized)
        };
        if let Some(existing) = live() {
            if !copy {
                existing.weight.fetch_add(w.weight, Ordering::AcqRel);
            }
            let mut st = existing.lock();
            if st.cache.is_none() {
                st.cache = cached;
            }
            drop(st);
            return Ok(existing);
        }
        // A copy's weight belongs to the bytes it was decoded from: a new handle gets its own
        // from the owner (not needed when the value came along).
        let weight = match (copy, &cached) {
            (false, _) => w.weight,
            (true, Some(_)) => 0,
            (true, None) => add_weight(w.rrid, w.owner)?,
        };
        let st = RefState {
            finalized: weight == 0 && cached.is_none(),
            cache: cached,
            ..RefState::default()
        };
        let r = Self::with_weight(w.rrid, w.owner, weight, st);
        let mut h = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
        let other = h.get(&w.rrid).and_then(Weak::upgrade);
        match other {
            Some(existing) if !existing.lock().finalized => {
                // Another thread imported it meanwhile: join it.
                drop(h);
                existing.weight.fetch_add(r.take_weight(), Ordering::AcqRel);
                Ok(existing)
            }
            other => {
                h.insert(w.rrid, Arc::downgrade(&r));
                drop(h);
                drop(other);
                Ok(r)
            }
        }
    }
}

/// Asks the owner for more weight on `rrid` (which someone must still hold) and returns it.
fn add_weight(rrid: Rrid, owner: Pid) -> Result<u64> {
    let rt = rt()?;
    if owner == rt.myid() {
        if !rt.add_weight(rrid, owner, INITIAL_WEIGHT) {
            return Err(Error::invalid(format!(
                "reference {rrid:?} was already freed"
            )));
        }
    } else {
        let msg = Msg::AddWeight {
            rrid,
            weight: INITIAL_WEIGHT,
        };
        rt.request(owner, &msg, &Body::Owned(Vec::new()))?;
    }
    Ok(INITIAL_WEIGHT)
}

impl Drop for RefInner {
    fn drop(&mut self) {
        let Some(rt) = try_rt() else { return };
        {
            let mut h = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
            if h.get(&self.rrid).is_some_and(|w| w.strong_count() == 0) {
                h.remove(&self.rrid);
            }
        }
        let w = self.take_weight();
        if w > 0 {
            rt.del_ref(self.owner, self.rrid, w);
        }
    }
}
