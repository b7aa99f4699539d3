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

thread_local! {
    static CURRENT: RefCell<Option<(Arc<SerialQueue>, Arc<JobCtl>)>> = const { RefCell::new(None) };
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
                        (self.idle)(&self);
                        continue;
                    }
                    None => {
                        st.active = false;
                        return;
                    }
                }
            };
            spun = false;
            CURRENT.with(|c| *c.borrow_mut() = Some((Arc::clone(&self), Arc::clone(&ctl))));
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            CURRENT.with(|c| *c.borrow_mut() = None);
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

/// Marks that the calling request is about to block: its queue moves on without it.
///
/// Called by every blocking cohort primitive; user code that blocks on something else for long
/// (a lock, a sleep) should call it too.
pub fn blocking() -> Blocking {
    CURRENT.with(|c| {
        if let Some((q, ctl)) = c.borrow().as_ref() {
            q.escape(ctl);
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
            .is_some_and(|(_, ctl)| ctl.interrupted.load(Ordering::Acquire))
    })
}
