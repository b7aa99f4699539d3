//! A runtime's poller state: its `epoll` set, the eventfd that wakes it, and the list of links
//! a spin left disarmed (see the `link` module docs). One per runtime, so that two runtimes in
//! one process (the in-process tests) never see each other's links.

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The poller's own wake-up.
const WAKER_TOKEN: u64 = 2;
/// The first token free for links and listeners' owners (below: the poller's own).
pub(crate) const FIRST_FREE_TOKEN: u64 = 16;

/// How long a link may stay disarmed after a spin before the poller arms it.
pub(crate) const DEFER: Duration = Duration::from_millis(1);

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

    /// Sleeps until events come: within [`DEFER`] while links wait on the deferred list, else
    /// up to `longest` (a sleep a spin ending meanwhile interrupts, see [`Poller::defer`]).
    pub(crate) fn wait<'a>(&self, events: &'a mut [EpollEvent], longest: Duration) -> Woken<'a> {
        let timeout = self
            .timeout()
            .unwrap_or(longest)
            .as_millis()
            .clamp(1, u16::MAX as u128 - 1) as u16;
        let r = self.ep.wait(events, EpollTimeout::from(timeout));
        self.idle.store(false, Ordering::SeqCst);
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

    /// How long the poller may sleep: [`DEFER`] with deferred links; otherwise it marks itself
    /// idle first, so that a spin ending meanwhile wakes it.
    fn timeout(&self) -> Option<Duration> {
        if self.has_deferred() {
            return Some(DEFER);
        }
        self.idle.store(true, Ordering::SeqCst);
        if self.has_deferred() {
            self.idle.store(false, Ordering::SeqCst);
            return Some(DEFER);
        }
        None
    }

    /// Puts `token` on the deferred list (once); wakes a poller that sleeps without deadline,
    /// as it would not come back for this link.
    pub(crate) fn defer(&self, token: u64, first: bool) {
        if first {
            self.deferred
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(token);
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
