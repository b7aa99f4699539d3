//! Requests this runtime waits on: a reply slot per request, the table of open slots by
//! request id, and what completes them (a reply from the pid asked, or that pid's death).

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::links::link::Link;
use crate::runtime::exec;
use crate::wire::frame::Frame;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// A reply slot: where the answer to a request lands, its message already decoded by the
/// dispatcher: the reply frame of a value, or the error the reply carries.
pub(crate) struct Slot {
    done: AtomicBool,
    /// The answer and who waits for it, under one lock: completing takes it once.
    inner: Mutex<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    val: Option<Result<Frame>>,
    waiter: Option<Thread>,
    /// The task awaiting the reply (`PendingReq::poll_done`): woken by whoever completes it.
    task: Option<Waker>,
}

/// How a parked wait for a slot ended.
pub(super) enum Parked {
    Done,
    TimedOut,
    Interrupted,
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            done: AtomicBool::new(false),
            inner: Mutex::new(SlotInner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn complete(&self, r: Result<Frame>) {
        let mut g = self.lock();
        if self.done.load(Ordering::Relaxed) {
            return;
        }
        g.val = Some(r);
        self.done.store(true, Ordering::Release);
        let (waiter, task) = (g.waiter.take(), g.task.take());
        drop(g);
        if let Some(t) = waiter {
            t.unpark();
        }
        if let Some(w) = task {
            w.wake();
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// The reply, once done.
    pub(super) fn take(&self) -> Result<Frame> {
        self.lock()
            .val
            .take()
            .unwrap_or_else(|| Err(Error::Protocol("reply taken twice".into())))
    }

    /// Parks this thread (marked blocking, for the executor) until the slot is done, the
    /// deadline passes, or the running request is interrupted.
    pub(super) fn park_until(&self, deadline: Option<Instant>) -> Parked {
        if self.is_done() {
            return Parked::Done;
        }
        let _b = exec::blocking();
        self.lock().waiter = Some(std::thread::current());
        while !self.is_done() {
            let mut nap = Duration::from_millis(100);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Parked::TimedOut;
                }
                nap = nap.min(left);
            }
            std::thread::park_timeout(nap);
            if exec::interrupted() {
                return Parked::Interrupted;
            }
        }
        Parked::Done
    }
}

/// A request sent and not answered yet (`Runtime::request_start`).
pub(crate) struct PendingReq {
    pub(super) id: u64,
    pub(super) slot: Arc<Slot>,
    pub(super) link: Arc<Link>,
}

impl PendingReq {
    /// Ready once the reply is in (or the request failed: the peer is gone); otherwise the
    /// slot keeps `cx`'s waker and wakes it then. No thread waits: the poller completes it.
    pub(crate) fn poll_done(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.slot.is_done() {
            return Poll::Ready(());
        }
        let mut g = self.slot.lock();
        // Completed since the check: its `complete` found no waker.
        if self.slot.is_done() {
            return Poll::Ready(());
        }
        g.task = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether the reply is in.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.slot.is_done()
    }
}

/// The open requests of a runtime, by request id, each with the pid it went to.
pub(super) struct Requests {
    open: Mutex<FxHashMap<u64, (Pid, Arc<Slot>)>>,
    next: AtomicU64,
}

impl Requests {
    pub(super) fn new() -> Requests {
        Requests {
            open: Mutex::new(FxHashMap::default()),
            next: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FxHashMap<u64, (Pid, Arc<Slot>)>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a slot for a request to `pid`; returns its id.
    pub(super) fn open(&self, pid: Pid) -> (u64, Arc<Slot>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Slot::new();
        self.lock().insert(id, (pid, Arc::clone(&slot)));
        (id, slot)
    }

    /// Closes request `id` without an answer (a reply that comes later is dropped).
    pub(super) fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Completes request `id` with a reply that came from `from`: only a reply from the pid the
    /// request went to counts (a peer cannot answer another's request by guessing its id).
    pub(super) fn complete(&self, from: Pid, id: u64, r: Result<Frame>) {
        let slot = {
            let mut open = self.lock();
            match open.get(&id) {
                Some((to, _)) if *to == from => open.remove(&id),
                Some((to, _)) => {
                    let to = *to;
                    drop(open);
                    crate::log!(
                        warn,
                        peer = from,
                        "dropped a reply from pid {from} to request {id}, which went to pid {to}"
                    );
                    return;
                }
                None => None,
            }
        };
        if let Some((_, s)) = slot {
            s.complete(r);
        }
    }

    /// Fails every request open to `pid`, which is gone.
    pub(super) fn fail_to(&self, pid: Pid) {
        let failed: Vec<Arc<Slot>> = {
            let mut open = self.lock();
            let ids: Vec<u64> = open
                .iter()
                .filter(|(_, (q, _))| *q == pid)
                .map(|(i, _)| *i)
                .collect();
            ids.into_iter()
                .filter_map(|i| open.remove(&i).map(|(_, s)| s))
                .collect()
        };
        for s in failed {
            s.complete(Err(Error::ProcessExited(pid)));
        }
    }

    /// The number of requests open to `pid` (all pids with `None`).
    #[cfg(test)]
    pub(super) fn open_to(&self, pid: Option<Pid>) -> usize {
        self.lock()
            .values()
            .filter(|(q, _)| pid.is_none_or(|p| p == *q))
            .count()
    }
}
