//! Deadlines of parked requests: one thread per runtime, started on first use, runs each job
//! once its instant has passed (a timed channel operation that expires on the owner).
//!
//! Jobs are kept in order of their deadline; the thread sleeps until the earliest. A job must
//! not block: it runs on the one thread every deadline shares.

use crate::runtime::exec::Job;
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// A job's place in the schedule: its deadline and an id unique in the process.
pub(crate) type TimerKey = (Instant, u64);

#[derive(Default)]
struct State {
    due: BTreeMap<TimerKey, Job>,
    started: bool,
}

/// The schedule and its thread's condition.
#[derive(Default)]
pub(crate) struct Timers {
    st: Mutex<State>,
    cv: Condvar,
}

impl Timers {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `job` on the timer thread once `key.0` has passed, unless [`Timers::cancel`]led
    /// first. Never earlier: when it runs, `Instant::now() >= key.0`.
    pub(crate) fn at(&'static self, key: TimerKey, job: Job) {
        let mut st = self.lock();
        let earliest = st.due.first_key_value().is_none_or(|(k, _)| key < *k);
        st.due.insert(key, job);
        if !st.started {
            st.started = true;
            let r = std::thread::Builder::new()
                .name("cohort-timer".into())
                .stack_size(1 << 20)
                .spawn(move || self.run());
            if let Err(e) = r {
                st.started = false;
                crate::log!(error, error = %e, "cannot start the timer thread");
            }
        } else if earliest {
            self.cv.notify_one();
        }
    }

    /// Drops `key`'s job if it has not run yet.
    pub(crate) fn cancel(&self, key: TimerKey) {
        // Dropped outside the lock: a job may own values whose drop does anything.
        let job = self.lock().due.remove(&key);
        drop(job);
    }

    fn run(&self) {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            match st.due.first_key_value().map(|(k, _)| *k) {
                Some(k) if k.0 <= now => {
                    let job = st.due.remove(&k).expect("the first key");
                    drop(st);
                    // A panic in one job must not stop every later deadline.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    st = self.lock();
                }
                Some(k) => {
                    st = self
                        .cv
                        .wait_timeout(st, k.0 - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn jobs_run_in_deadline_order_never_early_and_cancelled_ones_never() {
        let timers: &'static Timers = Box::leak(Box::default());
        let (tx, rx) = mpsc::channel();
        let t0 = Instant::now();
        let ms = move |n| t0 + Duration::from_millis(n);
        for (n, id) in [(120, 1), (40, 2), (80, 3), (60, 4)] {
            let tx = tx.clone();
            timers.at(
                (ms(n), id),
                Box::new(move || tx.send((id, Instant::now() >= ms(n))).unwrap()),
            );
        }
        timers.cancel((ms(80), 3));
        // Cancelling what is not scheduled (ran already, or another id) changes nothing.
        timers.cancel((ms(80), 9));
        let got: Vec<(u64, bool)> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [(2, true), (4, true), (1, true)]);
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        // A job scheduled earlier than every waiting one wakes the thread for it.
        let (tx2, rx2) = mpsc::channel();
        timers.at((t0 + Duration::from_secs(3600), 5), Box::new(|| ()));
        let soon = Instant::now() + Duration::from_millis(20);
        timers.at(
            (soon, 6),
            Box::new(move || tx2.send(Instant::now()).unwrap()),
        );
        let ran = rx2.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(ran >= soon && ran < soon + Duration::from_secs(2));
        timers.cancel((t0 + Duration::from_secs(3600), 5));
        assert!(timers.lock().due.is_empty());
    }
}
