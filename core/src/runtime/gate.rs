//! The door of a process: accepting connections and reading their hellos on the poller, with
//! no thread per connection and a bound on how many may wait.
//!
//! An accepted connection is *unauthenticated* until its hello has arrived and carried the
//! cluster cookie (then `handshake::hello_in` decides). At most [`Gate::limit`] wait at once,
//! each for at most [`HANDSHAKE_DEADLINE`]; a newcomer beyond the limit sheds the oldest. When
//! the process runs out of descriptors (`EMFILE`), the gate sheds the oldest waiting connection,
//! or, with none waiting, accepts and closes the newcomer with a reserved descriptor, so the
//! listener's backlog drains instead of waking the poller for ever; the failure is logged once
//! per [`LOG_EVERY`] with a count.

use super::*;
use crate::wire::proto::HELLO_LEN;
use std::os::fd::AsRawFd;
use std::sync::MutexGuard;

/// How long an accepted connection may take to send its hello.
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// How often a repeated accept failure is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A connection whose hello has not fully arrived.
struct Incoming {
    fd: OwnedFd,
    hello: [u8; HELLO_LEN],
    got: usize,
    deadline: Instant,
}

/// Accepted connections waiting for their hello, by poller token.
pub(crate) struct Gate {
    waiting: Mutex<HashMap<u64, Incoming>>,
    /// A descriptor kept in reserve, given up to accept (and close) a connection when the
    /// process has no other descriptor left.
    spare: Mutex<Option<std::fs::File>>,
    /// Accept failures, and connections closed before their hello, since each last log line.
    failures: Mutex<Throttle>,
    dropped: Mutex<Throttle>,
    refused: Mutex<Throttle>,
    limit: usize,
}

fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

impl Gate {
    pub(crate) fn new() -> Gate {
        // A quarter of the descriptor limit, between 8 and 256: waiting connections never
        // crowd out the links of peers that have joined.
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(s, _)| s);
        Gate {
            waiting: Mutex::new(HashMap::new()),
            spare: Mutex::new(open_spare()),
            failures: Mutex::new(Throttle::default()),
            dropped: Mutex::new(Throttle::default()),
            refused: Mutex::new(Throttle::default()),
            limit: (soft / 4).clamp(8, 256) as usize,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Incoming>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many connections may wait for their hello at once.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn is_waiting(&self, token: u64) -> bool {
        self.lock().contains_key(&token)
    }

    /// Number of connections waiting for their hello.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// Closes the waiting connection with the earliest deadline; false if none waits.
    fn shed_oldest(&self, poller: &Poller) -> bool {
        let mut w = self.lock();
        let Some(&t) = w.iter().min_by_key(|(_, i)| i.deadline).map(|(t, _)| t) else {
            return false;
        };
        if let Some(i) = w.remove(&t) {
            poller.delete(&i.fd);
        }
        drop(w);
        self.dropped("shed to make room for a newer connection");
        true
    }

    /// Counts an accept failure; logs it with the count when the last log is old enough.
    fn failed(&self, e: &io::Error) {
        let due = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hit();
        if let Some(n) = due {
            crate::log!(error, error = %e, failures = n, "accept failed ({n} since the last report)");
        }
    }

    /// Counts a connection closed before its hello was in (`why`); logged as [`Gate::failed`].
    fn dropped(&self, why: &str) {
        let due = self.dropped.lock().unwrap_or_else(|e| e.into_inner()).hit();
        if let Some(n) = due {
            crate::log!(
                warn,
                error = %why,
                refused = n,
                "refused connections without a handshake ({n} since the last report)"
            );
        }
    }
}

impl Gate {
    /// Logs a refused hello (`why`), as [`Gate::failed`]: the first at once, then at most one
    /// line per interval with the count.
    pub(super) fn refused(&self, why: &str) {
        let due = self.refused.lock().unwrap_or_else(|e| e.into_inner()).hit();
        match due {
            Some(1) => crate::log!(warn, error = %why, "refused a connection"),
            Some(n) => crate::log!(
                warn,
                error = %why,
                refused = n,
                "refused a connection ({n} since the last report)"
            ),
            None => {}
        }
    }
}

/// A count of events logged at most once per [`LOG_EVERY`]: a flood of hostile connections
/// costs a line per interval, not a line per connection.
#[derive(Default)]
struct Throttle {
    count: u64,
    last: Option<Instant>,
}

impl Throttle {
    /// Counts one event; returns the count to report when a line is due.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return None;
        }
        let n = self.count;
        *self = Throttle {
            count: 0,
            last: Some(Instant::now()),
        };
        Some(n)
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

impl Runtime {
    /// Accepts every connection waiting on the listener (the poller's path).
    pub(super) fn accept_all(&'static self) {
        let guard = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        let Some(l) = guard.as_ref() else { return };
        loop {
            match l.accept() {
                Ok(fd) => self.admit(fd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if out_of_descriptors(&e) => {
                    self.gate.failed(&e);
                    if self.gate.shed_oldest(&self.poller) {
                        continue;
                    }
                    // Nothing to shed: take the newcomer with the reserve and close it, so
                    // the backlog drains (the peer sees its connection closed and may retry).
                    let mut spare = self.gate.spare.lock().unwrap_or_else(|e| e.into_inner());
                    if spare.take().is_none() {
                        return;
                    }
                    let drained = l.accept();
                    drop(drained);
                    *spare = open_spare();
                    if spare.is_none() {
                        return;
                    }
                }
                Err(e) => {
                    self.gate.failed(&e);
                    return;
                }
            }
        }
    }

    /// Starts waiting for the hello of an accepted connection.
    fn admit(&self, fd: OwnedFd) {
        if crate::links::link::set_nonblocking(&fd).is_err() {
            return;
        }
        if self.gate.waiting() >= self.gate.limit() {
            self.gate.shed_oldest(&self.poller);
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
        if self.poller.add(&fd, flags, token).is_err() {
            return;
        }
        self.gate.lock().insert(
            token,
            Incoming {
                fd,
                hello: [0; HELLO_LEN],
                got: 0,
                deadline: Instant::now() + HANDSHAKE_DEADLINE,
            },
        );
    }

    /// Reads what arrived of the hello on `token`; a whole hello goes on to `hello_in`.
    pub(super) fn advance_handshake(&'static self, token: u64) {
        let done = {
            let mut w = self.gate.lock();
            let Some(i) = w.get_mut(&token) else { return };
            let r = nix::unistd::read(i.fd.as_raw_fd(), &mut i.hello[i.got..]);
            match r {
                Ok(0) => true,
                Ok(n) => {
                    i.got += n;
                    i.got == HELLO_LEN
                }
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => false,
                Err(_) => true,
            }
        };
        if !done {
            return;
        }
        let Some(i) = self.gate.lock().remove(&token) else {
            return;
        };
        self.poller.delete(&i.fd);
        if i.got == HELLO_LEN {
            self.hello_in(i.fd, &i.hello);
        } else {
            self.gate.dropped("closed before its handshake");
        }
    }

    /// Closes the connections whose hello is overdue.
    pub(super) fn expire_handshakes(&self) {
        let now = Instant::now();
        let mut w = self.gate.lock();
        if w.is_empty() {
            return;
        }
        let late: Vec<u64> = w
            .iter()
            .filter(|(_, i)| i.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(i) = w.remove(&t) {
                self.poller.delete(&i.fd);
                self.gate.dropped("no handshake within the deadline");
            }
        }
    }
}
