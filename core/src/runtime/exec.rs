//! Where requests run: a cached thread pool and one serial queue per peer.
//!
//! Calls from one peer start in the order they arrived, one after another on that peer's
//! queue, like the tasks of a Julia worker (requests that run no user code take no queue: see
//! `dispatch`). A request that blocks on a cohort primitive (a
//! fetch, a channel take, a nested remote call) hands the rest of its queue to another thread
//! first, so it never holds up later requests; the same happens when it is interrupted.

use crate::base::error::{Error, Result};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// A unit of work.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

struct PoolState {
    tasks: VecDeque<Job>,
    idle: usize,
}

struct Pool {
    st: Mutex<PoolState>,
    cv: Condvar,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        st: Mutex::new(PoolState {
            tasks: VecDeque::new(),
            idle: 0,
        }),
        cv: Condvar::new(),
    })
}

/// Runs `job` on a pool thread, starting one when none is idle.
pub fn spawn(job: Job) {
    let p = pool();
    let mut st = p.st.lock().unwrap_or_else(|e| e.into_inner());
    st.tasks.push_back(job);
    if st.idle >= st.tasks.len() {
        p.cv.notify_one();
        return;
    }
    drop(st);
    let r = std::thread::Builder::new()
        .name("cohort-exec".into())
        .stack_size(1 << 20)
        .spawn(pool_thread);
    if let Err(e) = r {
        crate::log!(error, error = %e, "cannot start a thread");
    }
}

fn pool_thread() {
    let p = pool();
    let mut st = p.st.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = st.tasks.pop_front() {
            drop(st);
            // A panic in a job must not take the thread's pool slot with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            st = p.st.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        st.idle += 1;
        let (g, t) =
            p.cv.wait_timeout(st, Duration::from_secs(30))
                .unwrap_or_else(|e| e.into_inner());
        st = g;
        st.idle -= 1;
        if t.timed_out() && st.tasks.is_empty() {
            return;
        }
    }
}

/// Control of one running request.
#[derive(Default)]
pub struct JobCtl {
    interrupted: AtomicBool,
    escaped: AtomicBool,
    replied: AtomicBool,
}

impl JobCtl {
    /// Claims the right to send the reply; false if it was already sent.
    pub fn claim_reply(&self) -> bool {
        !self.replied.swap(true, Ordering::AcqRel)
    }
    /// Whether the reply was sent (or claimed).
    pub fn is_answered(&self) -> bool {
        self.replied.load(Ordering::Acquire)
    }
    /// Marks the request interrupted.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Release);
    }
}

struct QState {
    jobs: VecDeque<(Arc<JobCtl>, Job)>,
    active: bool,
    running: Option<Arc<JobCtl>>,
}

/// The serial queue of requests from one peer.
pub struct SerialQueue {
    st: Mutex<QState>,
    /// How many requests wait (kept beside `st`, changed under its lock): what the spin on
    /// the peer's link asks at every poll, without taking the lock.
    queued: AtomicUsize,
    idle: Box<dyn Fn(&SerialQueue) + Send + Sync>,
}

/// What a thread that drains a queue holds: the queue, for the whole of its drain, and the
/// control of the request it runs (none while it waits for the next). Both move in and out
/// rather than being cloned per request: an `Arc` clone and its drop are two atomic
/// read-modify-writes, 18 ns on the development VMs.
struct Current {
    queue: Arc<SerialQueue>,
    job: Option<Arc<JobCtl>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

impl SerialQueue {
    /// A queue; `idle` runs when the queue runs dry, before its thread lets go (the runtime
    /// spins on the peer's link there, so the next request starts without a thread wake-up).
    pub fn new(idle: Box<dyn Fn(&SerialQueue) + Send + Sync>) -> Arc<Self> {
        Arc::new(SerialQueue {
            st: Mutex::new(QState {
                jobs: VecDeque::new(),
                active: false,
                running: None,
            }),
            queued: AtomicUsize::new(0),
            idle,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when requests wait.
    pub fn has_jobs(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// Appends a request; starts a thread for the queue when none serves it.
    pub fn push(self: &Arc<Self>, ctl: Arc<JobCtl>, job: Job) {
        let mut st = self.lock();
        st.jobs.push_back((ctl, job));
        self.queued.store(st.jobs.len(), Ordering::Release);
        if !st.active {
            st.active = true;
            drop(st);
            let q = Arc::clone(self);
            spawn(Box::new(move || q.drain()));
        }
    }

    /// Hands the queue to a new thread so that requests behind the running one start.
    pub fn escape_running(self: &Arc<Self>) {
        let running = self.lock().running.clone();
        if let Some(r) = running {
            self.escape(&r);
        }
    }

    fn escape(self: &Arc<Self>, ctl: &Arc<JobCtl>) {
        if !ctl.escaped.swap(true, Ordering::AcqRel) {
            let mut st = self.lock();
            if st.running.as_ref().is_some_and(|r| Arc::ptr_eq(r, ctl)) {
                st.running = None;
            }
            drop(st);
            let q = Arc::clone(self);
            spawn(Box::new(move || q.drain()));
        }
    }

    fn drain(self: Arc<Self>) {
        /// Clears `CURRENT` however the drain ends.
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                CURRENT.with(|c| *c.borrow_mut() = None);
            }
        }
        CURRENT.with(|c| {
            *c.borrow_mut() = Some(Current {
                queue: Arc::clone(&self),
                job: None,
            })
        });
        let _done = Done;
        self.drain_here();
    }

    /// [`SerialQueue::drain`]'s loop, with the queue in `CURRENT`.
    fn drain_here(&self) {
        let mut spun = false;
        loop {
            let (ctl, job) = {
                let mut st = self.lock();
                let next = st.jobs.pop_front();
                self.queued.store(st.jobs.len(), Ordering::Release);
                match next {
                    Some(j) => {
                        st.running = Some(Arc::clone(&j.0));
                        j
                    }
                    None if !spun => {
                        drop(st);
                        spun = true;
                        (self.idle)(self);
                        continue;
                    }
                    None => {
                        st.active = false;
                        return;
                    }
                }
            };
            spun = false;
            set_job(Some(ctl));
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let Some(ctl) = set_job(None) else {
                return;
            };
            if ctl.escaped.load(Ordering::Acquire) {
                return;
            }
            let mut st = self.lock();
            if st.running.as_ref().is_some_and(|r| Arc::ptr_eq(r, &ctl)) {
                st.running = None;
            }
        }
    }
}

/// Puts `job` in this thread's `CURRENT` and returns what was there.
fn set_job(job: Option<Arc<JobCtl>>) -> Option<Arc<JobCtl>> {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(cur) => std::mem::replace(&mut cur.job, job),
        None => None,
    })
}

/// Appends a request to the queue this thread drains, if it drains one and runs no request of
/// it now (it waits for the next one on the peer's link): what that spin hands on, without
/// looking the queue up. Gives the request back otherwise.
pub fn push_to_drained(ctl: Arc<JobCtl>, job: Job) -> std::result::Result<(), (Arc<JobCtl>, Job)> {
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(cur) if cur.job.is_none() => {
            cur.queue.push(ctl, job);
            Ok(())
        }
        _ => Err((ctl, job)),
    })
}

/// Marks that the calling request is about to block: its queue moves on without it.
///
/// Called by every blocking cohort primitive; user code that blocks on something else for long
/// (a lock, a sleep) should call it too.
pub fn blocking() -> Blocking {
    CURRENT.with(|c| {
        if let Some(Current {
            queue,
            job: Some(ctl),
        }) = c.borrow().as_ref()
        {
            queue.escape(ctl);
        }
    });
    Blocking(())
}

/// Returned by [`blocking`]; nothing to do on drop, the hand-off is permanent.
pub struct Blocking(());

/// `Err(Interrupted)` when `interrupt` was called for the request this thread runs.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted(crate::base::ids::myid()))
    } else {
        Ok(())
    }
}

/// Whether the request this thread runs was interrupted; long loops poll this.
///
/// # Julia
/// The `InterruptException` a worker's task receives.
pub fn interrupted() -> bool {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .and_then(|cur| cur.job.as_ref())
            .is_some_and(|ctl| ctl.interrupted.load(Ordering::Acquire))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn record(log: &Arc<Mutex<Vec<u32>>>, k: u32) -> Job {
        let log = Arc::clone(log);
        Box::new(move || log.lock().unwrap().push(k))
    }

    #[test]
    fn a_request_pushed_to_the_drained_queue_outside_a_drain_comes_back() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let back = push_to_drained(Arc::new(JobCtl::default()), record(&log, 1));
        let Err((_, job)) = back else {
            panic!("no queue is drained on this thread")
        };
        job();
        assert_eq!(*log.lock().unwrap(), vec![1]);
    }

    #[test]
    fn requests_the_idle_drainer_reads_run_after_those_queued_and_in_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Vec<bool>>();
        let idle_log = Arc::clone(&log);
        let first_idle = AtomicBool::new(true);
        let q = SerialQueue::new(Box::new(move |_q: &SerialQueue| {
            if !first_idle.swap(false, Ordering::AcqRel) {
                return;
            }
            // What a spin on the peer's link does with the requests it reads.
            let taken: Vec<bool> = (3..=4)
                .map(|k| push_to_drained(Arc::new(JobCtl::default()), record(&idle_log, k)).is_ok())
                .collect();
            tx.send(taken).unwrap();
        }));
        // A request that runs now finds its own drain busy with it: it is given back.
        let (itx, irx) = mpsc::channel::<bool>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        q.push(
            Arc::new(JobCtl::default()),
            Box::new(move || {
                // The second request is queued before this one ends and the queue runs dry.
                go_rx.recv_timeout(Duration::from_secs(10)).unwrap();
                let inside = push_to_drained(Arc::new(JobCtl::default()), Box::new(|| {}));
                itx.send(inside.is_err()).unwrap();
            }),
        );
        q.push(Arc::new(JobCtl::default()), record(&log, 2));
        go_tx.send(()).unwrap();
        let wait = Duration::from_secs(10);
        assert!(
            irx.recv_timeout(wait).unwrap(),
            "a running request is not idle"
        );
        assert_eq!(rx.recv_timeout(wait).unwrap(), vec![true, true]);
        let t0 = std::time::Instant::now();
        while log.lock().unwrap().len() < 3 {
            assert!(t0.elapsed() < wait, "the handed requests never ran");
            std::thread::yield_now();
        }
        assert_eq!(*log.lock().unwrap(), vec![2, 3, 4]);
    }

    #[test]
    fn a_request_that_blocks_lets_the_next_one_start_and_is_not_interrupted_by_it() {
        let q = SerialQueue::new(Box::new(|_q: &SerialQueue| {}));
        let (tx, rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<(bool, bool)>();
        let first = Arc::new(JobCtl::default());
        q.push(
            Arc::clone(&first),
            Box::new(move || {
                let _b = blocking();
                // The second request runs meanwhile, on the thread the queue moved to.
                let came = rx.recv_timeout(Duration::from_secs(10)).is_ok();
                done_tx.send((came, interrupted())).unwrap();
            }),
        );
        let second = Arc::new(JobCtl::default());
        second.interrupt();
        q.push(
            second,
            Box::new(move || {
                assert!(interrupted(), "the second request sees its own interrupt");
                tx.send(()).unwrap();
            }),
        );
        assert_eq!(
            done_rx.recv_timeout(Duration::from_secs(20)).unwrap(),
            (true, false)
        );
    }
}
