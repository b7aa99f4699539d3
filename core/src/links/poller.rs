//! A runtime's poller state: its `epoll` set, the eventfd that wakes it, and the list of links
//! a spin left disarmed (see the `link` module docs). One per runtime, so that two runtimes in
//! one process (the in-process tests) never see each other's links.

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The poller's own wake-up.
const WAKER_TOKEN: u64 = 2;
/// The first token free for links and listeners' owners (below: the poller's own).
pub(crate) const FIRST_FREE_TOKEN: u64 = 16;

/// How long a link may stay disarmed after a spin before the poller arms it.
pub(crate) const DEFER: Duration = Duration::from_millis(1);

/// The longest the poller sleeps while links are deferred. It sleeps [`DEFER`] at first and
/// twice as long after each pass that found every deferred link still in use (deferred again
/// within `DEFER`, or read by a spinner), as in a loop of short requests: there, waking every
/// `DEFER` only took a worker's core from its request (~15 µs a wake on these machines, a few
/// per cent of a per-step loop). A pass that arms a link, or a link deferred afresh, brings it
/// back to `DEFER`.
pub(crate) const DEFER_LONGEST: Duration = Duration::from_millis(16);

/// What one wait of the poller saw.
pub(crate) enum Woken<'a> {
    /// Events with these tokens (the poller's own wake-up already consumed).
    Events(&'a [EpollEvent]),
    /// Interrupted or failed: wait again.
    Again,
}

/// The `epoll` set of one runtime, with its wake-up and its deferred links.
pub(crate) struct Poller {
    ep: Epoll,
    waker: EventFd,
    /// Tokens of links a spin left disarmed.
    deferred: Mutex<Vec<u64>>,
    /// Set while the poller sleeps without a deadline for deferred links.
    idle: AtomicBool,
    /// How long the poller sleeps while links are deferred, in nanoseconds (see
    /// [`DEFER_LONGEST`]).
    defer_sleep: AtomicU64,
    /// Set while the poller sleeps longer than [`DEFER`] with links deferred: a link deferred
    /// afresh wakes it.
    napping: AtomicBool,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Poller> {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let waker = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        ep.add(&waker, EpollEvent::new(EpollFlags::EPOLLIN, WAKER_TOKEN))?;
        Ok(Poller {
            ep,
            waker,
            deferred: Mutex::new(Vec::new()),
            idle: AtomicBool::new(false),
            defer_sleep: AtomicU64::new(DEFER.as_nanos() as u64),
            napping: AtomicBool::new(false),
        })
    }

    /// Watches `fd` with `flags`, reporting `token`.
    pub(crate) fn add<F: AsFd>(&self, fd: F, flags: EpollFlags, token: u64) -> io::Result<()> {
        self.ep
            .add(fd, EpollEvent::new(flags, token))
            .map_err(io::Error::from)
    }

    pub(crate) fn modify<F: AsFd>(&self, fd: F, flags: EpollFlags, token: u64) {
        let mut ev = EpollEvent::new(flags, token);
        // A failure means the descriptor is already closed and deregistered: nothing to arm.
        let _ = self.ep.modify(fd, &mut ev);
    }

    pub(crate) fn delete<F: AsFd>(&self, fd: F) {
        let _ = self.ep.delete(fd);
    }

    /// Wakes the poller out of a sleep without deadline.
    pub(crate) fn wake(&self) {
        let _ = self.waker.write(1);
    }

    /// Sleeps until events come: within [`DEFER`] to [`DEFER_LONGEST`] while links wait on the
    /// deferred list, else up to `longest` (a sleep a spin ending meanwhile interrupts, see
    /// [`Poller::defer`]).
    pub(crate) fn wait<'a>(&self, events: &'a mut [EpollEvent], longest: Duration) -> Woken<'a> {
        let timeout = self
            .timeout()
            .unwrap_or(longest)
            .as_millis()
            .clamp(1, u16::MAX as u128 - 1) as u16;
        let r = self.ep.wait(events, EpollTimeout::from(timeout));
        self.idle.store(false, Ordering::SeqCst);
        self.napping.store(false, Ordering::SeqCst);
        match r {
            Ok(n) => {
                if events[..n].iter().any(|e| e.data() == WAKER_TOKEN) {
                    let _ = self.waker.read();
                }
                Woken::Events(&events[..n])
            }
            Err(nix::errno::Errno::EINTR) => Woken::Again,
            Err(e) => {
                crate::log!(error, error = %e, "epoll failed");
                std::thread::sleep(Duration::from_millis(10));
                Woken::Again
            }
        }
    }

    /// Whether `token` is the poller's own wake-up.
    pub(crate) fn is_own(token: u64) -> bool {
        token == WAKER_TOKEN
    }

    fn has_deferred(&self) -> bool {
        !self
            .deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// How long the poller may sleep: [`Poller::defer_sleep`] with deferred links; otherwise
    /// it marks itself idle first, so that a spin ending meanwhile wakes it.
    fn timeout(&self) -> Option<Duration> {
        if self.has_deferred() {
            return Some(self.defer_sleep());
        }
        self.idle.store(true, Ordering::SeqCst);
        if self.has_deferred() {
            self.idle.store(false, Ordering::SeqCst);
            return Some(self.defer_sleep());
        }
        None
    }

    /// The sleep while links are deferred; a sleep longer than [`DEFER`] is marked first, so
    /// that a link deferred afresh meanwhile wakes it (the mark and the reset in
    /// [`Poller::defer`] are in one order: either this load sees the reset, or that swap sees
    /// the mark).
    fn defer_sleep(&self) -> Duration {
        self.napping.store(true, Ordering::SeqCst);
        let ns = self.defer_sleep.load(Ordering::SeqCst);
        if ns <= DEFER.as_nanos() as u64 {
            self.napping.store(false, Ordering::SeqCst);
        }
        Duration::from_nanos(ns)
    }

    /// Books a pass over the deferred links: one that found them all still in use lets the
    /// poller sleep twice as long next time (up to [`DEFER_LONGEST`]); any other brings the
    /// sleep back to [`DEFER`].
    pub(crate) fn deferred_pass(&self, all_in_use: bool) {
        let least = DEFER.as_nanos() as u64;
        let ns = if all_in_use {
            (self.defer_sleep.load(Ordering::Relaxed) * 2).min(DEFER_LONGEST.as_nanos() as u64)
        } else {
            least
        };
        self.defer_sleep.store(ns, Ordering::SeqCst);
    }

    /// The sleep while links are deferred, now (tests of the passes that set it).
    #[cfg(test)]
    pub(crate) fn sleep_while_deferred(&self) -> Duration {
        Duration::from_nanos(self.defer_sleep.load(Ordering::SeqCst))
    }

    /// Puts `token` on the deferred list (once); wakes a poller that sleeps without deadline,
    /// or longer than [`DEFER`] when the link is deferred afresh, as it would not come back for
    /// this link in time.
    pub(crate) fn defer(&self, token: u64, first: bool) {
        if first {
            self.deferred
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(token);
            // A link deferred afresh is armed within `DEFER`, whatever the others do.
            self.defer_sleep
                .store(DEFER.as_nanos() as u64, Ordering::SeqCst);
            if self.napping.swap(false, Ordering::SeqCst) {
                self.wake();
            }
        } else if !self.idle.load(Ordering::Relaxed) {
            // Already listed: a poller going idle sees the list non-empty, and one idle now
            // (raised before this link was listed) is seen here on a later spin at the latest.
            return;
        }
        if self
            .idle
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.wake();
        }
    }

    /// The deferred tokens now.
    pub(crate) fn deferred(&self) -> Vec<u64> {
        self.deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the tokens `done` says off the deferred list, deciding under the list's lock.
    pub(crate) fn undefer(&self, done: &dyn Fn(u64) -> bool) {
        self.deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&t| !done(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Passes that find every deferred link in use double the sleep up to `DEFER_LONGEST`;
    /// any other pass, or a link deferred afresh, brings it back to `DEFER`.
    #[test]
    fn the_sleep_while_links_are_deferred_backs_off_and_comes_back() {
        let p = Poller::new().unwrap();
        assert_eq!(p.timeout(), None, "nothing deferred: no deadline");
        p.idle.store(false, Ordering::SeqCst);
        p.defer(100, true);
        assert_eq!(p.timeout(), Some(DEFER));
        let mut seen = Vec::new();
        for _ in 0..6 {
            p.deferred_pass(true);
            seen.push(p.timeout().unwrap());
        }
        assert_eq!(seen, [ms(2), ms(4), ms(8), ms(16), ms(16), ms(16)]);
        assert_eq!(DEFER_LONGEST, ms(16));
        p.deferred_pass(false);
        assert_eq!(p.timeout(), Some(DEFER));
        for _ in 0..3 {
            p.deferred_pass(true);
        }
        assert_eq!(p.timeout(), Some(ms(8)));
        // Already listed, deferred again: the sleep stays.
        p.defer(100, false);
        assert_eq!(p.timeout(), Some(ms(8)));
        p.defer(101, true);
        assert_eq!(p.timeout(), Some(DEFER));
    }

    /// A poller that sleeps longer than `DEFER` is woken by a link deferred afresh (its own
    /// wake-up among the events, not a timeout), so that link is still armed within `DEFER`.
    #[test]
    fn a_link_deferred_afresh_wakes_a_poller_that_sleeps_long() {
        let p = std::sync::Arc::new(Poller::new().unwrap());
        p.defer(100, true);
        for _ in 0..4 {
            p.deferred_pass(true);
        }
        let sleeper = {
            let p = std::sync::Arc::clone(&p);
            std::thread::spawn(move || {
                let mut events = vec![EpollEvent::empty(); 4];
                match p.wait(&mut events, Duration::from_secs(5)) {
                    Woken::Events(evs) => evs.iter().any(|e| Poller::is_own(e.data())),
                    Woken::Again => false,
                }
            })
        };
        while !p.napping.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        p.defer(101, true);
        let woken = sleeper.join().unwrap();
        assert!(woken, "woken by the defer, not by its 16 ms timeout");
        assert!(!p.napping.load(Ordering::SeqCst));
        assert_eq!(p.timeout(), Some(DEFER));
    }
}
