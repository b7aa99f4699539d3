//! A link to one peer: a framed byte stream shared by a writer lock and a reader lock.
//!
//! Reading follows a leader/follower scheme. The process's poller thread waits on every link
//! with `epoll` in one-shot mode. A thread that expects a frame soon (a caller waiting for its
//! reply, an executor that just finished a request) takes the reader lock itself, disarms the
//! link in `epoll` and polls the socket for a short window: the frame is handled on the thread
//! that needs it, with no thread wake-up on the path (~80 µs each on these machines). Whoever
//! holds the reader lock re-arms the link before letting go, so no readiness is lost.
//!
//! One exception saves the two `epoll_ctl` calls per request on a busy worker: an executor
//! whose spin ends because a request arrived leaves the link disarmed, as it will spin on it
//! again when the request is done. The link is then on the deferred list, and the poller arms
//! it once it has stayed so for [`DEFER`] (a long request), so frames that arrive meanwhile,
//! an interrupt among them, wait at most that long. A poller about to sleep for long makes
//! executors arm at once instead.

use crate::base::ids::Pid;
use crate::wire::codec::Body;
use crate::wire::frame::{FdSource, Frame, FrameReader, Header};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the reader of a link does with each frame and with the link's end.
pub(crate) trait FrameSink {
    fn on_frame(&self, link: &Link, frame: Frame);
    /// A frame that came from `from` by way of a message-passing world.
    fn on_world_frame(&self, from: Pid, frame: Frame);
    fn on_close(&self, link: &Link, why: io::Error);
    /// Wakes the poller thread (it sleeps without a deadline for deferred links).
    fn wake_poller(&self);
}

/// Bytes of frames this process has handed to its links (headers included); see
/// `pool::bytes_sent`.
pub(crate) static BYTES_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) struct Link {
    pub(crate) peer: Pid,
    pub(crate) token: u64,
    /// A byte stream, or `None` for a message link.
    fd: Option<OwnedFd>,
    /// A message link: the world and the peer's rank in it.
    world: Option<(
        std::sync::Arc<dyn crate::links::transport::MessageWorld>,
        usize,
    )>,
    writer: Mutex<Vec<u8>>,
    reader: Mutex<FrameReader>,
    dead: AtomicBool,
    /// Whether the link is armed in epoll (or fired and about to be serviced and re-armed).
    /// Changed only under the reader lock.
    armed: AtomicBool,
    /// When a spin left the link disarmed (nanoseconds since [`epoch`]; 0: it did not). Changed
    /// only under the reader lock.
    deferred_at: AtomicU64,
}

/// How long a link may stay disarmed after a spin before the poller arms it.
pub(crate) const DEFER: Duration = Duration::from_millis(1);

/// Tokens of links a spin left disarmed.
static DEFERRED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Set while the poller sleeps without a deadline for deferred links.
static POLLER_IDLE: AtomicBool = AtomicBool::new(false);

fn epoch() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    // Never 0, which means "not deferred".
    epoch().elapsed().as_nanos() as u64 | 1
}

/// Whether links wait on the deferred list (the poller then wakes within [`DEFER`]).
pub(crate) fn has_deferred() -> bool {
    !DEFERRED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty()
}

/// The poller's sleep: how long it may wait for events. Without deferred links it marks itself
/// idle first, so that a spin ending meanwhile arms its link itself.
pub(crate) fn poller_timeout() -> Option<Duration> {
    if has_deferred() {
        return Some(DEFER);
    }
    POLLER_IDLE.store(true, Ordering::SeqCst);
    if has_deferred() {
        POLLER_IDLE.store(false, Ordering::SeqCst);
        return Some(DEFER);
    }
    None
}

/// The poller is awake again.
pub(crate) fn poller_awake() {
    POLLER_IDLE.store(false, Ordering::SeqCst);
}

/// Arms the deferred links that have waited [`DEFER`] and that nobody is reading, after
/// handling the frames they hold (the poller's path). `lookup` finds a link by token.
pub(crate) fn arm_deferred(
    ep: &Epoll,
    sink: &dyn FrameSink,
    lookup: &dyn Fn(u64) -> Option<std::sync::Arc<Link>>,
) {
    let tokens = DEFERRED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let now = now_ns();
    let mut done = Vec::new();
    for t in tokens {
        let Some(link) = lookup(t).filter(|l| !l.is_dead()) else {
            done.push(t);
            continue;
        };
        // A spinner reads it: it arms or defers it again when it stops.
        let Ok(r) = link.reader.try_lock() else {
            continue;
        };
        let at = link.deferred_at.load(Ordering::Acquire);
        if at != 0 && now.saturating_sub(at) < DEFER.as_nanos() as u64 {
            continue;
        }
        done.push(t);
        if at != 0 {
            link.service_locked(r, ep, sink);
        }
    }
    if !done.is_empty() {
        DEFERRED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|t| !done.contains(t));
    }
}

const ARMED: EpollFlags = EpollFlags::EPOLLIN
    .union(EpollFlags::EPOLLRDHUP)
    .union(EpollFlags::EPOLLONESHOT);

impl Link {
    pub(crate) fn new(peer: Pid, token: u64, fd: OwnedFd, max_frame: u64) -> io::Result<Link> {
        set_nonblocking(&fd)?;
        Ok(Link {
            peer,
            token,
            fd: Some(fd),
            world: None,
            writer: Mutex::new(Vec::with_capacity(16 * 1024)),
            reader: Mutex::new(FrameReader::new(max_frame)),
            dead: AtomicBool::new(false),
            armed: AtomicBool::new(true),
            deferred_at: AtomicU64::new(0),
        })
    }

    /// A link to `rank` of a message-passing world (no descriptor; the world's progress thread
    /// delivers its frames).
    pub(crate) fn new_message(
        peer: Pid,
        token: u64,
        world: std::sync::Arc<dyn crate::links::transport::MessageWorld>,
        rank: usize,
    ) -> Link {
        Link {
            peer,
            token,
            fd: None,
            world: Some((world, rank)),
            writer: Mutex::new(Vec::new()),
            reader: Mutex::new(FrameReader::new(0)),
            dead: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            deferred_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn register(&self, ep: &Epoll) -> io::Result<()> {
        match &self.fd {
            Some(fd) => ep
                .add(fd, EpollEvent::new(ARMED, self.token))
                .map_err(io::Error::from),
            None => Ok(()),
        }
    }

    /// Arms or disarms the link in epoll; called with the reader lock held.
    fn arm(&self, ep: &Epoll, on: bool) {
        let Some(fd) = &self.fd else { return };
        self.armed.store(on, Ordering::Release);
        if on {
            self.deferred_at.store(0, Ordering::Release);
        }
        let flags = if on { ARMED } else { EpollFlags::EPOLLONESHOT };
        let mut ev = EpollEvent::new(flags, self.token);
        // A failure means the descriptor is already closed and deregistered: nothing to arm.
        let _ = ep.modify(fd, &mut ev);
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Leaves the link disarmed for a spin that comes soon; called with the reader lock held.
    fn defer(&self, sink: &dyn FrameSink) {
        if self.deferred_at.swap(now_ns(), Ordering::AcqRel) == 0 {
            DEFERRED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.token);
        }
        // The poller sleeps without a deadline: it would not come back for this link. The first
        // spin to see it wakes it (then it keeps short sleeps while links wait).
        if POLLER_IDLE
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            sink.wake_poller();
        }
    }

    /// Marks the link dead and shuts the socket so that both directions fail fast.
    pub(crate) fn kill(&self, ep: &Epoll) {
        if !self.dead.swap(true, Ordering::AcqRel) {
            if let Some(fd) = &self.fd {
                let _ = ep.delete(fd);
                let _ =
                    nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            }
        }
    }

    /// Sends one frame: header, message and body, without copying a large body.
    pub(crate) fn send(&self, id: u64, meta: &[u8], body: &Body<'_>) -> io::Result<()> {
        if self.is_dead() {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "link is closed"));
        }
        let [b0, b1] = body.parts();
        let total = meta.len() + body.len();
        let header = Header {
            id,
            meta_len: meta.len() as u32,
            len: total as u64,
        }
        .encode();
        BYTES_SENT.fetch_add((header.len() + total) as u64, Ordering::Relaxed);
        let mut buf = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(fd) = &self.fd else {
            let (w, rank) = self.world.as_ref().expect("a link has a stream or a world");
            return w.send(*rank, &[&header, meta, b0, b1]);
        };
        if total <= 64 * 1024 {
            buf.clear();
            buf.extend_from_slice(&header);
            buf.extend_from_slice(meta);
            buf.extend_from_slice(b0);
            buf.extend_from_slice(b1);
            write_all(fd, &[&buf])
        } else {
            write_all(fd, &[&header, meta, b0, b1])
        }
    }

    /// Reads and handles every complete frame now available (the poller's path).
    pub(crate) fn service(&self, ep: &Epoll, sink: &dyn FrameSink) {
        if self.fd.is_none() {
            return;
        }
        let r = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        self.service_locked(r, ep, sink);
    }

    fn service_locked(&self, mut r: MutexGuard<'_, FrameReader>, ep: &Epoll, sink: &dyn FrameSink) {
        let Some(fd) = &self.fd else { return };
        loop {
            match r.poll(&mut FdSource(fd.as_fd())) {
                Ok(Some(f)) => sink.on_frame(self, f),
                Ok(None) => {
                    self.arm(ep, true);
                    return;
                }
                Err(e) => {
                    drop(r);
                    sink.on_close(self, e);
                    return;
                }
            }
        }
    }

    /// Polls the link on this thread until `done()` or until `window` passes without progress.
    /// Returns at once when another thread is reading the link. With `defer`, a spin that ends
    /// because `done()` leaves the link disarmed (see the module docs): for a caller that spins
    /// on it again soon.
    pub(crate) fn spin(
        &self,
        ep: &Epoll,
        sink: &dyn FrameSink,
        window: Duration,
        done: &dyn Fn() -> bool,
        defer: bool,
    ) {
        if window.is_zero() || self.is_dead() {
            return;
        }
        if self.fd.is_none() {
            // A message link: poll the world on this thread (whoever holds the poll token
            // reads; the progress thread is the fallback), as a stream spinner reads its socket.
            let (w, _) = self.world.as_ref().expect("a link has a stream or a world");
            WORLD_SPINNERS.fetch_add(1, Ordering::AcqRel);
            let mut last = Instant::now();
            let mut progressed = false;
            let mut n = 0u32;
            while !done() {
                if poll_world(w.as_ref(), &mut |rank, f| sink.on_world_frame(rank + 1, f)) {
                    progressed = true;
                    continue;
                }
                // Poll hot (as MPI itself does), now and then leaving the core to others and
                // reading the clock (at every poll it would cost a tenth of the loop).
                n = n.wrapping_add(1);
                if n.is_multiple_of(64) {
                    if progressed {
                        progressed = false;
                        last = Instant::now();
                    } else if last.elapsed() >= window {
                        break;
                    }
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            WORLD_SPINNERS.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let Some(r) = self.take_reader(ep) else {
            return;
        };
        let mut held = vec![(self, r)];
        let finished = spin_held(&mut held, sink, window, done);
        if held.is_empty() {
            return; // closed
        }
        if finished && defer {
            self.defer(sink);
        } else {
            self.arm(ep, true);
        }
    }

    /// The reader lock, unless another thread holds it, with the link disarmed in epoll: what
    /// a spinner starts with.
    fn take_reader(&self, ep: &Epoll) -> Option<MutexGuard<'_, FrameReader>> {
        let r = self.reader.try_lock().ok()?;
        if self.armed.load(Ordering::Acquire) {
            self.arm(ep, false);
        }
        Some(r)
    }
}

/// The spin over the stream links whose readers this thread holds: reads and hands on every
/// frame, and stops when `done()` (true) or when `window` passes with no byte read (false). A
/// link that fails is closed and leaves `held`. `done()` is asked only when no held reader has
/// a complete frame buffered, so stopping loses nothing (a buffered frame would never wake
/// the poller).
fn spin_held(
    held: &mut Vec<(&Link, MutexGuard<'_, FrameReader>)>,
    sink: &dyn FrameSink,
    window: Duration,
    done: &dyn Fn() -> bool,
) -> bool {
    let bytes = |held: &Vec<(&Link, MutexGuard<'_, FrameReader>)>| -> u64 {
        held.iter().map(|(_, r)| r.bytes_read()).sum()
    };
    let mut last = Instant::now();
    let mut seen = bytes(held);
    let mut n = 0u32;
    while !held.is_empty() {
        let mut i = 0;
        while i < held.len() {
            let (l, r) = &mut held[i];
            let fd = l.fd.as_ref().expect("a stream link");
            match r.poll(&mut FdSource(fd.as_fd())) {
                Ok(Some(f)) => {
                    sink.on_frame(l, f);
                    last = Instant::now();
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let (l, r) = held.swap_remove(i);
                    drop(r);
                    sink.on_close(l, e);
                }
            }
        }
        if done() {
            return true;
        }
        n = n.wrapping_add(1);
        if n.is_multiple_of(32) {
            let b = bytes(held);
            if b != seen {
                seen = b;
                last = Instant::now();
            } else if last.elapsed() > window {
                return false;
            }
        }
        // Give the core to a runnable thread now and then (on two cores a pure spin can
        // starve the very thread that would produce the awaited frame).
        if n.is_multiple_of(4) {
            std::thread::yield_now();
        }
    }
    false
}

/// Polls several links on this thread until `done()` or until `window` passes without
/// progress: one thread waits for the replies of a fan-out, and none of them wakes the poller
/// (on a machine whose cores also run the workers, that wake-up costs a core some
/// microseconds per reply). Links another thread is reading are left to it; message links
/// are polled through the world, all ranks at once.
pub(crate) fn spin_many(
    links: &[&Link],
    ep: &Epoll,
    sink: &dyn FrameSink,
    window: Duration,
    done: &dyn Fn() -> bool,
) {
    if window.is_zero() {
        return;
    }
    if let Some(l) = links.iter().find(|l| l.fd.is_none()) {
        l.spin(ep, sink, window, done, false);
        return;
    }
    let mut held: Vec<(&Link, MutexGuard<'_, FrameReader>)> = Vec::with_capacity(links.len());
    for &l in links {
        if l.is_dead() || held.iter().any(|(h, _)| std::ptr::eq(*h, l)) {
            continue;
        }
        if let Some(r) = l.take_reader(ep) {
            held.push((l, r));
        }
    }
    spin_held(&mut held, sink, window, done);
    for (l, _) in &held {
        l.arm(ep, true);
    }
}

/// Threads polling the world for a frame they wait for; while there are any, the progress
/// thread stands back (on two cores its polling would take the core they need).
pub(crate) static WORLD_SPINNERS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Who may poll the message-passing world now: one thread at a time, so that the two messages
/// of a large frame are received together.
static WORLD_POLL: Mutex<()> = Mutex::new(());

/// Polls the world once if no other thread is polling it, and hands a frame that arrived to
/// `deliver` before letting go: frames from one rank are then dispatched in the order they
/// arrived, whichever thread reads them.
pub(crate) fn poll_world(
    w: &dyn crate::links::transport::MessageWorld,
    deliver: &mut dyn FnMut(usize, Frame),
) -> bool {
    let Ok(_g) = WORLD_POLL.try_lock() else {
        return false;
    };
    match w.poll() {
        Ok(Some((rank, f))) => {
            deliver(rank, f);
            true
        }
        Ok(None) => false,
        Err(e) => {
            crate::log!(error, error = %e, "{} failed", w.name());
            false
        }
    }
}

pub(crate) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Writes every part to a non-blocking descriptor, waiting for room when the socket is full.
pub(crate) fn write_all(fd: &OwnedFd, parts: &[&[u8]]) -> io::Result<()> {
    let mut idx = 0;
    let mut off = 0;
    while idx < parts.len() {
        if off == parts[idx].len() {
            idx += 1;
            off = 0;
            continue;
        }
        let iov: Vec<io::IoSlice<'_>> = std::iter::once(io::IoSlice::new(&parts[idx][off..]))
            .chain(parts[idx + 1..].iter().map(|p| io::IoSlice::new(p)))
            .collect();
        match nix::sys::uio::writev(fd, &iov) {
            Ok(mut n) => {
                while n > 0 {
                    let rest = parts[idx].len() - off;
                    if n >= rest {
                        n -= rest;
                        idx += 1;
                        off = 0;
                    } else {
                        off += n;
                        n = 0;
                    }
                }
            }
            Err(nix::errno::Errno::EAGAIN) => wait_writable(fd)?,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn wait_writable(fd: &OwnedFd) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut pfd, PollTimeout::from(1000u16)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Blocks until `n` bytes are read from a (possibly non-blocking) descriptor, or the deadline.
pub(crate) fn read_exact_until(fd: &OwnedFd, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the handshake",
                ))
            }
            Ok(n) => got += n,
            Err(nix::errno::Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "handshake timed out",
                    ));
                }
                let ms = left.as_millis().min(u16::MAX as u128 - 1) as u16;
                let mut pfd = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut pfd, PollTimeout::from(ms.max(1)));
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
