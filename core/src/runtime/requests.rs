//! Requests this runtime waits on: a reply slot per request, the table of open slots by
//! request id, and what completes them (a reply from the pid asked, or that pid's death).

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::links::link::Link;
use crate::runtime::exec;
use crate::wire::frame::Frame;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Shards of the open requests, by the pid asked.
const SHARDS: usize = 16;

/// The open requests to the pids of one shard, by request id, each with the pid it went to, and
/// the shard's last id. Aligned to two cache lines, so that threads that call pids of different
/// shards (a fan-out's, pmap's drivers) share neither a lock nor a line: with one table, its
/// lock was contended and its line moved between the cores at every call of `pmap`'s two
/// drivers.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<ShardState>);

#[derive(Default)]
struct ShardState {
    open: FxHashMap<u64, (Pid, Arc<Slot>)>,
    last: u64,
}

/// The open requests of a runtime. A request's id is unique among those to its pid's shard,
/// which is all a reply is matched against (ids start at 1: 0 asks for no reply).
pub(super) struct Requests {
    shards: [Shard; SHARDS],
}

impl Requests {
    pub(super) fn new() -> Requests {
        Requests {
            shards: std::array::from_fn(|_| Shard::default()),
        }
    }

    fn lock(&self, pid: Pid) -> MutexGuard<'_, ShardState> {
        self.shards[pid % SHARDS]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a slot for a request to `pid`; returns its id.
    pub(super) fn open(&self, pid: Pid) -> (u64, Arc<Slot>) {
        let slot = Slot::new();
        let mut st = self.lock(pid);
        st.last += 1;
        let id = st.last;
        st.open.insert(id, (pid, Arc::clone(&slot)));
        (id, slot)
    }

    /// Closes request `id` to `pid` without an answer (a reply that comes later is dropped).
    pub(super) fn forget(&self, pid: Pid, id: u64) {
        let mut st = self.lock(pid);
        if st.open.get(&id).is_some_and(|(to, _)| *to == pid) {
            st.open.remove(&id);
        }
    }

    /// Completes request `id` with a reply that came from `from`: only a reply from the pid the
    /// request went to counts (a peer cannot answer another's request by guessing its id).
    pub(super) fn complete(&self, from: Pid, id: u64, r: Result<Frame>) {
        let slot = {
            let mut st = self.lock(from);
            match st.open.get(&id) {
                Some((to, _)) if *to == from => st.open.remove(&id),
                Some((to, _)) => {
                    let to = *to;
                    drop(st);
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
            let mut st = self.lock(pid);
            let ids: Vec<u64> = st
                .open
                .iter()
                .filter(|(_, (q, _))| *q == pid)
                .map(|(i, _)| *i)
                .collect();
            ids.into_iter()
                .filter_map(|i| st.open.remove(&i).map(|(_, s)| s))
                .collect()
        };
        for s in failed {
            s.complete(Err(Error::ProcessExited(pid)));
        }
    }

    /// The number of requests open to `pid` (all pids with `None`).
    #[cfg(test)]
    pub(super) fn open_to(&self, pid: Option<Pid>) -> usize {
        self.shards
            .iter()
            .map(|sh| {
                let st = sh.0.lock().unwrap_or_else(|e| e.into_inner());
                st.open
                    .values()
                    .filter(|(q, _)| pid.is_none_or(|p| p == *q))
                    .count()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::Header;

    fn reply(id: u64, byte: u8) -> Result<Frame> {
        let h = Header {
            id,
            meta_len: 0,
            len: 1,
        };
        Ok(Frame::new(h, vec![byte]))
    }

    fn byte(s: &Slot) -> u8 {
        s.take().expect("a reply").body()[0]
    }

    #[test]
    fn a_reply_completes_only_the_request_of_the_pid_it_came_from() {
        let r = Requests::new();
        // Pids 2 and 18 share a shard, pid 3 has its own: ids repeat between shards.
        let (a, sa) = r.open(2);
        let (b, sb) = r.open(18);
        let (c, sc) = r.open(3);
        assert_ne!(a, b);
        assert_eq!(a, c);
        assert!(a != 0 && b != 0, "0 asks for no reply");
        // A peer cannot answer another's request by its id, in its shard or another.
        r.complete(18, a, reply(a, 9));
        r.complete(3, b, reply(b, 9));
        assert!(!sa.is_done() && !sb.is_done());
        r.complete(3, c, reply(c, 3));
        r.complete(2, a, reply(a, 2));
        r.complete(18, b, reply(b, 18));
        assert_eq!((byte(&sa), byte(&sb), byte(&sc)), (2, 18, 3));
        // Answered once: a repeated reply finds nothing open.
        r.complete(2, a, reply(a, 7));
        assert_eq!(r.open_to(None), 0);
    }

    #[test]
    fn forgetting_and_failing_touch_only_their_pid() {
        let r = Requests::new();
        let (a, sa) = r.open(2);
        let (_, sb) = r.open(18);
        let (_, sc) = r.open(3);
        r.forget(18, a);
        assert_eq!(r.open_to(None), 3, "pid 18 has no request with pid 2's id");
        r.forget(2, a);
        r.complete(2, a, reply(a, 2));
        assert!(!sa.is_done(), "a forgotten request drops its late reply");
        r.fail_to(18);
        assert!(matches!(sb.take(), Err(Error::ProcessExited(18))));
        assert!(!sc.is_done());
        assert_eq!((r.open_to(Some(3)), r.open_to(None)), (1, 1));
    }
}
