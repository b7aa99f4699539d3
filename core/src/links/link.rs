//! A link to one peer, in one of two flavours: a framed byte stream (a socket) shared by a
//! writer lock and a reader lock, or a rank of a message-passing world (MPI), whose frames a
//! progress thread or a spinner polls from the world.
//!
//! Reading a stream follows a leader/follower scheme. The runtime's poller thread waits on every link
//! with `epoll` in one-shot mode. A thread that expects a frame soon (a caller waiting for its
//! reply, an executor that just finished a request) takes the reader lock itself, disarms the
//! link in `epoll` and polls the socket for a short window: the frame is handled on the thread
//! that needs it, with no thread wake-up on the path (~80 µs each on these machines). Whoever
//! holds the reader lock re-arms the link before letting go, so no readiness is lost.
//!
//! Two exceptions leave a link disarmed ("deferred", see [`Leave`]) when a spin ends:
//!
//! * An executor whose spin ends because a request arrived, as it will spin on the link again
//!   when the request is done (this saves the two `epoll_ctl` calls per request of a socket
//!   link). The poller arms the link once it has stayed so for [`DEFER`] (a long request), so
//!   frames that arrive meanwhile, an interrupt among them, wait at most about that long.
//!   While every deferred link is deferred again within `DEFER` (a loop of short requests),
//!   the poller looks less often, up to every
//!   [`DEFER_LONGEST`](crate::links::poller::DEFER_LONGEST): a request that then runs long has
//!   its frames read within that.
//! * A caller whose reply came (or whose fan-out got all its replies), as it is likely to
//!   call again: its next reply then rings no doorbell even if it comes before the caller
//!   spins for it. The poller keeps looking every
//!   `DEFER` while such a link is listed, so a request the peer sends meanwhile, with no
//!   thread here reading the link, waits at most about that long.
//!
//! A poller about to sleep for long makes executors arm at once instead.
//!
//! A thread about to spin that finds the reader lock held (mostly by the poller, woken by a
//! doorbell) waits up to [`READER_WAIT`] for it rather than leaving the frame to that reader,
//! and a reader that sees such a thread waiting leaves the link awake and deferred for it
//! rather than arming it. Either way round, leaving it to the poller repeated itself: the
//! frame that answered came through the poller too (a doorbell, since the waiting thread could
//! not mark itself awake), at ~20 µs a round trip instead of ~1, for tens of milliseconds.

use crate::base::ids::Pid;
use crate::links::poller::{Poller, DEFER};
use crate::links::ring::{self, drain_doorbell, RingSource, Rings};
use crate::links::transport::MessageWorld;
use crate::wire::codec::Body;
use crate::wire::frame::{FdSource, Frame, FrameReader, Header};
use nix::sys::epoll::EpollFlags;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What the reader of a link does with each frame and with the link's end.
pub(crate) trait FrameSink {
    fn on_frame(&self, link: &Link, frame: Frame);
    /// A frame that came from `from` by way of a message-passing world.
    fn on_world_frame(&self, from: Pid, frame: Frame);
    fn on_close(&self, link: &Link, why: io::Error);
}

/// Bytes of frames this process has handed to its links (headers included); see
/// `pool::bytes_sent`.
pub(crate) static BYTES_SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) struct Link {
    pub(crate) peer: Pid,
    pub(crate) token: u64,
    dead: AtomicBool,
    flavour: Flavour,
}

/// How a link carries frames.
enum Flavour {
    /// A byte stream (a socket, with rings on one host), read by whoever holds its reader
    /// lock. Boxed: a link is built once and lives long, and the message flavour is small.
    Stream(Box<Stream>),
    /// A rank of a message-passing world, whose progress thread (or a spinner) delivers frames.
    Message {
        world: Arc<dyn MessageWorld>,
        rank: usize,
    },
}

struct Stream {
    fd: OwnedFd,
    /// Shared-memory rings carrying the frames when both ends share a host (see `ring`); the
    /// socket then carries doorbells and the end of the link only.
    rings: Option<Rings>,
    writer: Mutex<Vec<u8>>,
    reader: Mutex<FrameReader>,
    /// Whether the link is armed in epoll (or fired and about to be serviced and re-armed).
    /// Changed only under the reader lock.
    armed: AtomicBool,
    /// When a spin left the link disarmed (nanoseconds since [`epoch`]; 0: it did not). Changed
    /// only under the reader lock.
    deferred_at: AtomicU64,
    /// Whether that was for a caller ([`Leave::ForCaller`]): the poller then keeps looking
    /// every [`DEFER`]. Changed only under the reader lock.
    for_caller: AtomicBool,
    /// Threads waiting for the reader lock to spin on the link (see `take_reader_soon`).
    wanted: AtomicU32,
}

/// How a spin that ends because its wait is over leaves the link.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Leave {
    /// Armed: nobody here expects a frame on it soon.
    Armed,
    /// Deferred for the executor that spins on it again once the request it just read is
    /// done; while that repeats (a loop of short requests), the poller looks less often, up to
    /// every [`DEFER_LONGEST`](crate::links::poller::DEFER_LONGEST).
    ForExecutor,
    /// Deferred for a caller that just had its reply (or all the replies of a fan-out) and is
    /// likely to call again: its next reply then rings no doorbell (on crowded cores, a reply
    /// that came while the caller was between calls woke the poller, a fourth thread on two
    /// cores, and `pmap` ran at half its rate; in a per-step loop of short steps the woken
    /// poller then held the link when the next step's spin came, which left the reply to it,
    /// 20-40 µs a step instead of 5-7). The poller keeps looking every [`DEFER`] meanwhile, so
    /// a frame the peer sends unasked (a request to this process) waits no longer than that.
    ForCaller,
}

impl Stream {
    fn wanted(&self) -> u32 {
        self.wanted.load(Ordering::Acquire)
    }
}

fn epoch() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    // Never 0, which means "not deferred".
    epoch().elapsed().as_nanos() as u64 | 1
}

/// Arms the deferred links that have waited [`DEFER`] and that nobody is reading, after
/// handling the frames they hold (the poller's path). `lookup` finds a link by token.
pub(crate) fn arm_deferred(
    poller: &Poller,
    sink: &dyn FrameSink,
    lookup: &dyn Fn(u64) -> Option<Arc<Link>>,
) {
    let now = now_ns();
    // Taken off the list with their links (none: gone), unless deferred again meanwhile.
    let mut done: Vec<(u64, Option<Arc<Link>>)> = Vec::new();
    let listed = poller.deferred();
    let any = !listed.is_empty();
    let mut for_caller = false;
    for t in listed {
        let Some(link) = lookup(t).filter(|l| !l.is_dead()) else {
            done.push((t, None));
            continue;
        };
        let Some(s) = link.stream() else {
            done.push((t, None));
            continue;
        };
        // A spinner reads it: it arms or defers it again when it stops.
        let Ok(r) = s.reader.try_lock() else {
            continue;
        };
        let at = s.deferred_at.load(Ordering::Acquire);
        if at != 0 && now.saturating_sub(at) < DEFER.as_nanos() as u64 {
            for_caller |= s.for_caller.load(Ordering::Acquire);
            continue;
        }
        if at != 0 {
            link.service_locked(s, r, poller, sink);
        }
        done.push((t, Some(Arc::clone(&link))));
    }
    if any {
        poller.deferred_pass(done.is_empty() && !for_caller);
    }
    // A link deferred since (by the service above, for a thread waiting to spin on it, or by a
    // spinner that took it after) stays listed: a deferred link off the list would be read by
    // nobody, its frames ringing no doorbell. Checked under the list's lock, which a defer
    // takes to list a link, so no defer falls between the check and the removal.
    poller.undefer(&|t| {
        done.iter().any(|(d, link)| {
            *d == t
                && link
                    .as_ref()
                    .and_then(|l| l.stream())
                    .is_none_or(|s| s.deferred_at.load(Ordering::Acquire) == 0)
        })
    });
}

/// How much of a large frame the poller reads from one link before it serves the others: a
/// peer sending hundreds of megabytes does not hold up every other link meanwhile (the link is
/// re-armed, so the poller comes back to it at once).
const SERVICE_BUDGET: usize = 4 << 20;

const ARMED: EpollFlags = EpollFlags::EPOLLIN
    .union(EpollFlags::EPOLLRDHUP)
    .union(EpollFlags::EPOLLONESHOT);

impl Link {
    pub(crate) fn new(
        peer: Pid,
        token: u64,
        fd: OwnedFd,
        max_frame: u64,
        rings: Option<Rings>,
    ) -> io::Result<Link> {
        set_nonblocking(&fd)?;
        // A new link starts armed: its reader is the poller, asleep until rung.
        if let Some(r) = &rings {
            r.set_sleeping(true);
        }
        Ok(Link {
            peer,
            token,
            dead: AtomicBool::new(false),
            flavour: Flavour::Stream(Box::new(Stream {
                fd,
                rings,
                writer: Mutex::new(Vec::with_capacity(16 * 1024)),
                reader: Mutex::new(FrameReader::new(max_frame)),
                armed: AtomicBool::new(true),
                deferred_at: AtomicU64::new(0),
                for_caller: AtomicBool::new(false),
                wanted: AtomicU32::new(0),
            })),
        })
    }

    /// A link to `rank` of a message-passing world (no descriptor; the world's progress thread
    /// delivers its frames).
    pub(crate) fn new_message(
        peer: Pid,
        token: u64,
        world: Arc<dyn MessageWorld>,
        rank: usize,
    ) -> Link {
        Link {
            peer,
            token,
            dead: AtomicBool::new(false),
            flavour: Flavour::Message { world, rank },
        }
    }

    /// Whether the link carries its frames through shared-memory rings.
    pub(crate) fn has_rings(&self) -> bool {
        self.stream().is_some_and(|s| s.rings.is_some())
    }

    fn stream(&self) -> Option<&Stream> {
        match &self.flavour {
            Flavour::Stream(s) => Some(s),
            Flavour::Message { .. } => None,
        }
    }

    pub(crate) fn register(&self, poller: &Poller) -> io::Result<()> {
        match self.stream() {
            Some(s) => poller.add(&s.fd, ARMED, self.token),
            None => Ok(()),
        }
    }

    /// Arms or disarms the stream in epoll; called with its reader lock held. A ring link's
    /// reader is marked asleep while armed (writers then ring its doorbell).
    fn arm(&self, s: &Stream, poller: &Poller, on: bool) {
        if let Some(r) = &s.rings {
            // A ring link's socket carries only doorbells (rung while its reader sleeps) and
            // the link's end, so it stays armed in epoll while a thread reads the rings: taking
            // and leaving the link costs no system call. It is re-armed only after its one-shot
            // event fired (`service` clears `armed`).
            r.set_sleeping(on);
            if on {
                self.arm_doorbell(s, poller);
            }
            return;
        }
        s.armed.store(on, Ordering::Release);
        if on {
            s.deferred_at.store(0, Ordering::Release);
        }
        let flags = if on { ARMED } else { EpollFlags::EPOLLONESHOT };
        poller.modify(&s.fd, flags, self.token);
    }

    /// Watches a ring link's socket in epoll again if its one-shot event fired, and clears its
    /// deferral; called with its reader lock held, under which both only change (so plain
    /// loads tell, and the common case writes nothing).
    fn arm_doorbell(&self, s: &Stream, poller: &Poller) {
        if s.deferred_at.load(Ordering::Acquire) != 0 {
            s.deferred_at.store(0, Ordering::Release);
        }
        if !s.armed.load(Ordering::Acquire) {
            s.armed.store(true, Ordering::Release);
            poller.modify(&s.fd, ARMED, self.token);
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Leaves the stream disarmed for a spin that comes soon; called with its reader lock held.
    fn defer(&self, s: &Stream, poller: &Poller) {
        self.defer_as(s, poller, false);
    }

    /// [`Link::defer`], for a caller ([`Leave::ForCaller`]) or not.
    fn defer_as(&self, s: &Stream, poller: &Poller, for_caller: bool) {
        if s.for_caller.load(Ordering::Relaxed) != for_caller {
            s.for_caller.store(for_caller, Ordering::Release);
        }
        let first = s.deferred_at.load(Ordering::Acquire) == 0;
        s.deferred_at.store(now_ns(), Ordering::Release);
        poller.defer(self.token, first);
    }

    /// Marks the link dead and shuts the socket so that both directions fail fast.
    pub(crate) fn kill(&self, poller: &Poller) {
        if !self.dead.swap(true, Ordering::AcqRel) {
            if let Some(s) = self.stream() {
                poller.delete(&s.fd);
                let _ =
                    nix::sys::socket::shutdown(s.fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
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
        self.write_frame(&[&header, meta, b0, b1], total)?;
        // Counted once the frame is out: off the path to the peer.
        BYTES_SENT.fetch_add((header.len() + total) as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Writes one frame's parts (header, message, body) on the link's carrier.
    fn write_frame(&self, parts: &[&[u8]; 4], total: usize) -> io::Result<()> {
        let s = match &self.flavour {
            Flavour::Stream(s) => s,
            Flavour::Message { world, rank } => return world.send(*rank, parts),
        };
        let mut buf = s.writer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &s.rings {
            let ring = || doorbell(&s.fd);
            let dead = || self.is_dead() || hung_up(&s.fd);
            if r.write_all(parts, &ring, &dead)? {
                ring();
            }
            return Ok(());
        }
        if total <= 64 * 1024 {
            buf.clear();
            for p in parts {
                buf.extend_from_slice(p);
            }
            write_all(&s.fd, &[&buf])
        } else {
            write_all(&s.fd, parts)
        }
    }

    /// Hands on the whole frames that wait unread on a link whose peer is known to be gone:
    /// what it sent before it went counts, as a socket's bytes before its end do. Returns at
    /// once when another thread reads the link (that thread reads them).
    pub(crate) fn read_left(&self, sink: &dyn FrameSink) {
        let Some(s) = self.stream() else { return };
        if let Ok(mut r) = s.reader.try_lock() {
            self.hand_on_whole_frames(s, &mut r, sink);
        }
    }

    /// Hands on every whole frame waiting on the stream (the reader lock is held).
    fn hand_on_whole_frames(&self, s: &Stream, r: &mut FrameReader, sink: &dyn FrameSink) {
        while let Ok(Some(f)) = s.poll(r, usize::MAX) {
            sink.on_frame(self, f);
        }
    }

    /// A bodiless frame published on a ring link without ringing its doorbell: it waits in the
    /// ring unread until someone polls (tests of frames their reader has not seen yet).
    #[cfg(test)]
    pub(crate) fn publish_unrung(&self, meta: &[u8]) -> io::Result<()> {
        let rings = self.stream().and_then(|s| s.rings.as_ref());
        let r = rings.expect("a ring link");
        let header = Header {
            id: 0,
            meta_len: meta.len() as u32,
            len: meta.len() as u64,
        }
        .encode();
        r.write_all(&[&header, meta], &|| {}, &|| false).map(drop)
    }

    /// Reads and handles every complete frame now available (the poller's path).
    pub(crate) fn service(&self, poller: &Poller, sink: &dyn FrameSink) {
        let Some(s) = self.stream() else { return };
        let r = s.reader.lock().unwrap_or_else(|e| e.into_inner());
        // Its one-shot event fired: epoll no longer watches it until it is armed again.
        s.armed.store(false, Ordering::Release);
        self.service_locked(s, r, poller, sink);
    }

    fn service_locked(
        &self,
        s: &Stream,
        mut r: MutexGuard<'_, FrameReader>,
        poller: &Poller,
        sink: &dyn FrameSink,
    ) {
        if s.rings.is_some() {
            // The socket carries doorbells and the link's end.
            if let Err(e) = drain_doorbell(s.fd.as_fd()) {
                // What the peer published before it went is read first, as a socket's bytes
                // before its end are (a weight it moved, told in its last message, would be
                // lost with them); a frame it was still writing stays unread.
                self.hand_on_whole_frames(s, &mut r, sink);
                drop(r);
                sink.on_close(self, e);
                return;
            }
        }
        loop {
            // A ring is read whole: it moves at memory speed, a socket in turns.
            match s.poll(&mut r, SERVICE_BUDGET) {
                Ok(Some(f)) => sink.on_frame(self, f),
                Ok(None) => {
                    if let Some(rings) = s.rings.as_ref().filter(|_| s.wanted() > 0) {
                        // A thread waits to spin on the link: left awake to it (no doorbell
                        // for its frame, which would wake this reader again and keep it in
                        // that thread's way), deferred in case it gives up meanwhile.
                        rings.set_sleeping(false);
                        self.defer(s, poller);
                        return;
                    }
                    if !self.arm_checked(s, poller) {
                        return;
                    }
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
    /// Returns when another thread is reading the link and has not let go within
    /// [`READER_WAIT`] (see `take_reader_soon`). With `may_wait`, a spin on crowded cores
    /// sleeps in the rings' futex once it has waited a while (a caller awaiting a reply; an
    /// executor awaiting its next request does not: see `spin_held`). A spin that ends because
    /// `done()` leaves the link as `leave` says (see the module docs).
    pub(crate) fn spin(
        &self,
        poller: &Poller,
        sink: &dyn FrameSink,
        window: Duration,
        done: &dyn Fn() -> bool,
        may_wait: bool,
        leave: Leave,
    ) {
        if window.is_zero() || self.is_dead() {
            return;
        }
        let s: &Stream = match &self.flavour {
            Flavour::Stream(s) => s,
            Flavour::Message { world, .. } => {
                return spin_world(world.as_ref(), sink, window, done)
            }
        };
        let Some(r) = self.take_reader_soon(s, poller, done, READER_WAIT) else {
            return;
        };
        let mut held = vec![(self, s, r)];
        let finished = spin_held(&mut held, sink, window, done, may_wait);
        let Some((_, _, r)) = held.pop() else {
            return; // closed
        };
        self.leave(s, r, poller, sink, finished, leave);
    }

    /// The end of a spin whose reader lock `r` this thread holds: deferred as `leave` says if
    /// the spin ended because its wait was over (`finished`), else armed.
    fn leave(
        &self,
        s: &Stream,
        r: MutexGuard<'_, FrameReader>,
        poller: &Poller,
        sink: &dyn FrameSink,
        finished: bool,
        leave: Leave,
    ) {
        if finished && leave != Leave::Armed {
            self.defer_as(s, poller, leave == Leave::ForCaller);
        } else {
            self.settle(s, r, poller, sink);
        }
    }

    /// Arms the stream (the reader lock is held); a ring stream with bytes published before its
    /// reader was marked asleep stays disarmed instead and says so (true): no doorbell rang for
    /// them, so the caller reads them now.
    fn arm_checked(&self, s: &Stream, poller: &Poller) -> bool {
        if let Some(r) = &s.rings {
            r.set_sleeping(true);
            if r.readable() {
                r.set_sleeping(false);
                return true;
            }
            self.arm_doorbell(s, poller);
            return false;
        }
        self.arm(s, poller, true);
        false
    }

    /// The end of a spin that leaves the stream to the poller: armed, after reading what a
    /// ring received meanwhile.
    fn settle(
        &self,
        s: &Stream,
        r: MutexGuard<'_, FrameReader>,
        poller: &Poller,
        sink: &dyn FrameSink,
    ) {
        if self.arm_checked(s, poller) {
            self.service_locked(s, r, poller, sink);
        }
    }

    /// [`Link::take_reader`] for a spin: waits a little for a reader that holds the link now,
    /// unless `done()`. That reader is mostly the poller, woken by a doorbell, handing over a
    /// request or a reply: a thread that gave up at once (an executor about to await its next
    /// request, a caller about to await its reply) let the next frame come through the poller
    /// too, and the one after, at ~20 µs each instead of ~1, until a spinner happened to win.
    fn take_reader_soon<'a>(
        &self,
        s: &'a Stream,
        poller: &Poller,
        done: &dyn Fn() -> bool,
        longest: Duration,
    ) -> Option<MutexGuard<'a, FrameReader>> {
        if let Some(r) = self.take_reader(s, poller) {
            return Some(r);
        }
        s.wanted.fetch_add(1, Ordering::AcqRel);
        let start = Instant::now();
        let r = loop {
            if let Some(r) = self.take_reader(s, poller) {
                break Some(r);
            }
            if done() || self.is_dead() || start.elapsed() > longest {
                break None;
            }
            std::thread::yield_now();
        };
        s.wanted.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// The reader lock, unless another thread holds it, with the stream disarmed in epoll: what
    /// a spinner starts with.
    fn take_reader<'a>(
        &self,
        s: &'a Stream,
        poller: &Poller,
    ) -> Option<MutexGuard<'a, FrameReader>> {
        let r = s.reader.try_lock().ok()?;
        if s.armed.load(Ordering::Acquire) {
            self.arm(s, poller, false);
        }
        Some(r)
    }
}

/// A message link's spin: polls the world on this thread (whoever holds the poll token reads;
/// the progress thread is the fallback), as a stream spinner reads its socket.
fn spin_world(
    w: &dyn MessageWorld,
    sink: &dyn FrameSink,
    window: Duration,
    done: &dyn Fn() -> bool,
) {
    WORLD_SPINNERS.fetch_add(1, Ordering::AcqRel);
    let mut last = Instant::now();
    let mut progressed = false;
    let mut n = 0u32;
    while !done() {
        if poll_world(w, &mut |rank, f| sink.on_world_frame(rank + 1, f)) {
            progressed = true;
            continue;
        }
        // Poll hot (as MPI itself does), now and then leaving the core to others and reading
        // the clock (at every poll it would cost a tenth of the loop).
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
}

/// How long a thread about to spin waits for the thread that reads its link now.
const READER_WAIT: Duration = Duration::from_micros(100);

/// How long a spin polls without yielding its core often: a few round trips over shared
/// memory (a yield costs about as much as a round trip, so yielding at every few polls made
/// one half again as long).
const HOT_SPIN: Duration = Duration::from_micros(20);

/// A yield that took longer than this gave the core to another thread that wanted it (one
/// that finds the core free takes 0.5-1 µs on these virtual machines).
const CROWDED_YIELD: Duration = Duration::from_micros(3);

/// How crowded this process finds its cores: raised by yields that gave the core away,
/// lowered by those that came straight back; the spinners yield at every few polls while
/// it is high. More spinning and working threads than cores (a master and two workers on
/// two cores) make most yields give the core away, and a hot spin would hold the core that
/// the awaited frame's producer needs; a stray long yield (an interrupt, the host) hardly
/// moves it.
static CROWD: AtomicU32 = AtomicU32::new(0);
const CROWD_LONG: u32 = 4;
const CROWD_MAX: u32 = 64;
const CROWDED_AT: u32 = 16;

/// Yields the core, and notes whether another thread took it meanwhile.
fn yield_noting_crowd() {
    let t0 = Instant::now();
    std::thread::yield_now();
    let long = t0.elapsed() > CROWDED_YIELD;
    let _ = CROWD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        Some(if long {
            (c + CROWD_LONG).min(CROWD_MAX)
        } else {
            c.saturating_sub(1)
        })
    });
}

/// Whether this process's host runs more of the cluster's processes than this process has
/// CPUs (the master counts them as it places its workers, and tells them). The cores are then
/// crowded whatever the yields say: a yield can come straight back while another process
/// waits for the core, when the scheduler finds that one has had more than its share lately,
/// and a spinner that took that for free cores held a worker's core for the whole of its call.
static OVERSUBSCRIBED: AtomicBool = AtomicBool::new(false);

/// Sets what [`OVERSUBSCRIBED`] says.
pub(crate) fn set_oversubscribed(on: bool) {
    OVERSUBSCRIBED.store(on, Ordering::Relaxed);
}

fn crowded() -> bool {
    #[cfg(test)]
    if FORCE_CROWDED.load(Ordering::Relaxed) {
        return true;
    }
    OVERSUBSCRIBED.load(Ordering::Relaxed) || CROWD.load(Ordering::Relaxed) >= CROWDED_AT
}

/// Makes every spin of this process see crowded cores (tests of the waits that brings).
#[cfg(test)]
pub(crate) static FORCE_CROWDED: AtomicBool = AtomicBool::new(false);

/// A stream link whose reader this thread holds.
type Held<'a> = (&'a Link, &'a Stream, MutexGuard<'a, FrameReader>);

/// The spin over the stream links whose readers this thread holds: reads and hands on every
/// frame, and stops when `done()` (true) or when `window` passes with no byte read (false). A
/// link that fails is closed and leaves `held`. `done()` is asked only when no held reader has
/// a complete frame buffered, so stopping loses nothing (a buffered frame would never wake
/// the poller).
fn spin_held(
    held: &mut Vec<Held<'_>>,
    sink: &dyn FrameSink,
    window: Duration,
    done: &dyn Fn() -> bool,
    may_wait: bool,
) -> bool {
    let bytes = |held: &Vec<Held<'_>>| -> u64 { held.iter().map(|(_, _, r)| r.bytes_read()).sum() };
    let mut last = Instant::now();
    let mut seen = bytes(held);
    let mut n = 0u32;
    let mut hot = !crowded();
    let mut waits = false;
    while !held.is_empty() {
        let mut i = 0;
        while i < held.len() {
            let (l, s, r) = &mut held[i];
            match s.poll(r, usize::MAX) {
                // The clock is read at the next check of progress, which sees these bytes:
                // not on the path from a frame to the caller it completes.
                Ok(Some(f)) => {
                    sink.on_frame(l, f);
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let (l, _, r) = held.swap_remove(i);
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
                hot = !crowded();
                waits = false;
            } else {
                let idle = last.elapsed();
                if idle > window {
                    return false;
                }
                let crowd = crowded();
                hot = idle < HOT_SPIN && !crowd;
                waits = may_wait && crowd && idle >= HOT_SPIN;
            }
        }
        // On crowded cores, a spin that has waited a while sleeps until a writer publishes:
        // even a yielding spinner takes about its fair share of a core from the threads that
        // produce what it awaits (a worker's step), and a timed nap notices the frame late.
        if waits {
            let rings: Vec<&Rings> = held
                .iter()
                .filter_map(|(_, s, _)| s.rings.as_ref())
                .collect();
            if rings.len() == held.len() && ring::wait_any(&rings, last + window) {
                continue;
            }
            waits = false;
        }
        // A polite spin gives the core to a runnable thread every few polls (on two cores a
        // pure spin can starve the very thread that would produce the awaited frame); a hot
        // one, in its first microseconds on uncrowded cores, only now and then, to find out
        // whether another thread wants the core.
        if n.is_multiple_of(if hot { 512 } else { 4 }) {
            yield_noting_crowd();
        } else {
            std::hint::spin_loop();
        }
    }
    false
}

/// Polls several links on this thread until `done()` or until `window` passes without
/// progress: one thread waits for the replies of a fan-out, and none of them wakes the poller
/// (on a machine whose cores also run the workers, that wake-up costs a core some
/// microseconds per reply). Links another thread is reading are left to it; message links
/// are polled through the world, all ranks at once. A wait that ends because `done()` leaves
/// the links it read as `leave` says, as [`Link::spin`] does.
pub(crate) fn spin_many(
    links: &[&Link],
    poller: &Poller,
    sink: &dyn FrameSink,
    window: Duration,
    done: &dyn Fn() -> bool,
    leave: Leave,
) {
    if window.is_zero() {
        return;
    }
    if let Some(l) = links.iter().find(|l| l.stream().is_none()) {
        l.spin(poller, sink, window, done, true, leave);
        return;
    }
    let mut held: Vec<Held<'_>> = Vec::with_capacity(links.len());
    for &l in links {
        if l.is_dead() || held.iter().any(|(h, _, _)| std::ptr::eq(*h, l)) {
            continue;
        }
        let Some(s) = l.stream() else { continue };
        if let Some(r) = l.take_reader(s, poller) {
            held.push((l, s, r));
        }
    }
    let finished = spin_held(&mut held, sink, window, done, true);
    for (l, s, r) in held {
        l.leave(s, r, poller, sink, finished, leave);
    }
}

impl Stream {
    /// The next frame from the rings or the socket, reading at most about `budget` bytes of a
    /// large socket frame (a ring is read whole).
    fn poll(&self, r: &mut FrameReader, budget: usize) -> io::Result<Option<Frame>> {
        match &self.rings {
            Some(rings) => r.poll(&mut RingSource(rings)),
            None => r.poll_within(&mut FdSource(self.fd.as_fd()), budget),
        }
    }
}

/// Rings a ring link's doorbell: one byte on its socket (a full socket already rings).
fn doorbell(fd: &OwnedFd) {
    let _ = nix::unistd::write(fd, &[1u8]);
}

/// Whether the peer of a socket has hung up (checked by a writer waiting for ring room).
fn hung_up(fd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // POLLRDHUP (the peer closed its end) is Linux's; nix has no name for it.
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut pfd = [PollFd::new(fd.as_fd(), rdhup)];
    matches!(poll(&mut pfd, PollTimeout::ZERO), Ok(n) if n > 0)
        && pfd[0]
            .revents()
            .is_some_and(|r| r.intersects(rdhup | PollFlags::POLLHUP | PollFlags::POLLERR))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[derive(Default)]
    struct Record {
        ids: Mutex<Vec<u64>>,
        closed: AtomicBool,
    }

    impl FrameSink for Record {
        fn on_frame(&self, _: &Link, frame: Frame) {
            assert!(!self.closed.load(Ordering::SeqCst), "a frame after the end");
            self.ids.lock().unwrap().push(frame.header.id);
        }
        fn on_world_frame(&self, _: Pid, _: Frame) {
            unreachable!("a stream link");
        }
        fn on_close(&self, _: &Link, _: io::Error) {
            self.closed.store(true, Ordering::SeqCst);
        }
    }

    /// A ring link to pid 2 (token 100) registered with its own poller, with the peer's end
    /// of the rings and of the socket.
    fn ring_link() -> (Link, Rings, UnixStream, Poller) {
        let (mine, theirs) = UnixStream::pair().unwrap();
        let (rings, offer) = Rings::create().unwrap();
        let peer = Rings::attach(&offer).unwrap();
        rings.close_door();
        let link = Link::new(2, 100, OwnedFd::from(mine), 1 << 20, Some(rings)).unwrap();
        let poller = Poller::new().unwrap();
        link.register(&poller).unwrap();
        (link, peer, theirs, poller)
    }

    fn frame(id: u64, body: &[u8]) -> Vec<u8> {
        let mut v = Header {
            id,
            meta_len: 0,
            len: body.len() as u64,
        }
        .encode()
        .to_vec();
        v.extend_from_slice(body);
        v
    }

    /// The poller, woken by a doorbell while a thread waits to spin on the link, hands the
    /// frame on and leaves the link awake for that thread (the next frame rings no doorbell)
    /// and deferred (armed within `DEFER` if that thread gives up); with nobody waiting it
    /// arms the link (the next frame rings).
    #[test]
    fn a_reader_leaves_the_link_awake_for_a_thread_waiting_to_spin() {
        for waiting in [true, false] {
            let (link, peer, theirs, poller) = ring_link();
            let s = link.stream().unwrap();
            if waiting {
                s.wanted.fetch_add(1, Ordering::AcqRel);
            }
            let asleep = peer
                .write_all(&[&frame(1, b"x")], &|| {}, &|| false)
                .unwrap();
            assert!(asleep, "a new link's reader sleeps: the writer rings");
            std::io::Write::write_all(&mut &theirs, &[1]).unwrap();
            let sink = Record::default();
            link.service(&poller, &sink);
            assert_eq!(*sink.ids.lock().unwrap(), [1]);
            let asleep = peer
                .write_all(&[&frame(2, b"y")], &|| {}, &|| false)
                .unwrap();
            assert_eq!(asleep, !waiting);
            assert_eq!(poller.deferred().contains(&100), waiting);
        }
    }

    /// A thread about to spin on a link whose reader lock another holds waits for it (counted
    /// as waiting meanwhile), and gives up once `done()` or after the longest wait.
    #[test]
    fn a_spinner_waits_for_the_reader_that_holds_its_link() {
        let (mine, _theirs) = UnixStream::pair().unwrap();
        let link = Link::new(2, 100, OwnedFd::from(mine), 1 << 20, None).unwrap();
        let poller = Poller::new().unwrap();
        let s = link.stream().unwrap();
        let held = s.reader.lock().unwrap();
        let long = Duration::from_secs(30);
        std::thread::scope(|sc| {
            let waiter = sc.spawn(|| link.take_reader_soon(s, &poller, &|| false, long).is_some());
            let t0 = Instant::now();
            while s.wanted() == 0 {
                assert!(t0.elapsed() < Duration::from_secs(10), "the waiter left");
                std::thread::yield_now();
            }
            drop(held);
            assert!(waiter.join().unwrap(), "it took the reader once free");
        });
        assert_eq!(s.wanted(), 0);
        let _held = s.reader.lock().unwrap();
        let t0 = Instant::now();
        assert!(link.take_reader_soon(s, &poller, &|| true, long).is_none());
        let short = Duration::from_millis(20);
        assert!(link
            .take_reader_soon(s, &poller, &|| false, short)
            .is_none());
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!(s.wanted(), 0);
    }

    /// The poller's pass over deferred links keeps listed a link it deferred again (for a
    /// thread waiting to spin on it): off the list, a deferred link is read by nobody, since
    /// its frames ring no doorbell (an interrupt sent to a busy worker never arrived).
    #[test]
    fn a_link_deferred_again_by_the_pollers_pass_stays_listed() {
        let (link, _peer, _theirs, poller) = ring_link();
        let link = Arc::new(link);
        let s = link.stream().unwrap();
        // A spin left it deferred long ago; a thread now waits to spin on it.
        {
            let _r = s.reader.lock().unwrap();
            link.defer(s, &poller);
        }
        std::thread::sleep(2 * DEFER);
        s.deferred_at.store(1, Ordering::Release);
        s.wanted.fetch_add(1, Ordering::AcqRel);
        pass(&link, &poller);
        assert!(s.deferred_at.load(Ordering::Acquire) > 1, "deferred again");
        assert_eq!(poller.deferred(), [100]);
        // Nobody waits any more: the next pass arms it and takes it off the list.
        s.wanted.fetch_sub(1, Ordering::AcqRel);
        s.deferred_at.store(1, Ordering::Release);
        pass(&link, &poller);
        assert_eq!(s.deferred_at.load(Ordering::Acquire), 0);
        assert!(poller.deferred().is_empty());
    }

    /// One pass of the poller over its deferred links, `link` the only one it knows.
    fn pass(link: &Arc<Link>, poller: &Poller) {
        let sink = Record::default();
        arm_deferred(poller, &sink, &|t: u64| {
            (t == 100).then(|| Arc::clone(link))
        });
    }

    /// What a spin that ends leaves: the link deferred, for a caller or for an executor.
    fn left_deferred(link: &Link, poller: &Poller, for_caller: bool) {
        let s = link.stream().unwrap();
        let _r = s.reader.lock().unwrap();
        link.defer_as(s, poller, for_caller);
    }

    /// The poller's passes over a link deferred again and again (a loop of short requests)
    /// let it sleep longer; the pass that finds it deferred for `DEFER` (a long request) arms
    /// it and brings the sleep back.
    #[test]
    fn passes_over_a_link_in_use_back_the_poller_off_and_a_long_request_brings_it_back() {
        let (link, _peer, _theirs, poller) = ring_link();
        let link = Arc::new(link);
        let s = link.stream().unwrap();
        left_deferred(&link, &poller, false);
        assert_eq!(poller.sleep_while_deferred(), DEFER);
        for want in [2, 4, 8, 16, 16] {
            // Deferred again just now by the executor's next spin.
            left_deferred(&link, &poller, false);
            pass(&link, &poller);
            assert_eq!(poller.deferred(), [100]);
            assert_eq!(poller.sleep_while_deferred(), Duration::from_millis(want));
        }
        // Read by a spinner during the pass: in use too.
        {
            let _r = s.reader.lock().unwrap();
            pass(&link, &poller);
        }
        assert_eq!(poller.deferred(), [100]);
        // Deferred for longer than `DEFER`: armed, off the list, the sleep back to `DEFER`.
        std::thread::sleep(2 * DEFER);
        s.deferred_at.store(1, Ordering::Release);
        pass(&link, &poller);
        assert_eq!(s.deferred_at.load(Ordering::Acquire), 0);
        assert!(poller.deferred().is_empty());
        assert_eq!(poller.sleep_while_deferred(), DEFER);
    }

    /// A link left for a caller (between its calls) keeps the poller looking every `DEFER`
    /// however often it is deferred again, and is armed once it has stayed so for `DEFER`: a
    /// request the peer sends meanwhile waits no longer than that.
    #[test]
    fn a_link_left_for_a_caller_keeps_the_poller_looking_every_defer() {
        let (link, _peer, _theirs, poller) = ring_link();
        let link = Arc::new(link);
        let s = link.stream().unwrap();
        for _ in 0..5 {
            left_deferred(&link, &poller, true);
            pass(&link, &poller);
            assert_eq!(poller.deferred(), [100]);
            assert_eq!(poller.sleep_while_deferred(), DEFER);
        }
        // Left for an executor instead: the passes back off again.
        left_deferred(&link, &poller, false);
        pass(&link, &poller);
        assert_eq!(poller.sleep_while_deferred(), 2 * DEFER);
        left_deferred(&link, &poller, true);
        std::thread::sleep(2 * DEFER);
        pass(&link, &poller);
        assert_eq!(s.deferred_at.load(Ordering::Acquire), 0, "armed");
        assert!(poller.deferred().is_empty());
    }

    /// A fan-out's wait that got its replies leaves the link awake and deferred for the
    /// caller, as a single call's does: the reply to the next call rings no doorbell. A wait
    /// that gave up (no reply within its window) arms the link: the next frame rings.
    #[test]
    fn a_fan_out_that_got_its_replies_leaves_the_link_awake_for_the_caller() {
        for replied in [true, false] {
            let (link, peer, _theirs, poller) = ring_link();
            let sink = Record::default();
            if replied {
                peer.write_all(&[&frame(1, b"r")], &|| {}, &|| false)
                    .unwrap();
            }
            let done = || !sink.ids.lock().unwrap().is_empty();
            let window = Duration::from_millis(5);
            spin_many(&[&link], &poller, &sink, window, &done, Leave::ForCaller);
            let want: &[u64] = if replied { &[1] } else { &[] };
            assert_eq!(*sink.ids.lock().unwrap(), want);
            let asleep = peer
                .write_all(&[&frame(2, b"s")], &|| {}, &|| false)
                .unwrap();
            assert_eq!(asleep, !replied, "replied: {replied}");
            assert_eq!(poller.deferred().contains(&100), replied);
            let s = link.stream().unwrap();
            assert_eq!(s.for_caller.load(Ordering::Acquire), replied);
        }
    }

    /// A peer that publishes frames on the rings, rings the doorbell and dies before the reader
    /// comes: its whole frames are handed on before the end, its unfinished one is not.
    #[test]
    fn frames_a_dead_peer_published_are_read_before_its_end() {
        let (link, peer, theirs, poller) = ring_link();
        let mut cut = frame(9, &[3; 100]);
        cut.truncate(60);
        for bytes in [frame(7, b"first"), frame(8, &[1; 5000]), cut] {
            peer.write_all(&[&bytes], &|| {}, &|| false).unwrap();
        }
        std::io::Write::write_all(&mut &theirs, &[1]).unwrap();
        drop(theirs);
        let sink = Record::default();
        link.service(&poller, &sink);
        assert_eq!(*sink.ids.lock().unwrap(), [7, 8]);
        assert!(sink.closed.load(Ordering::SeqCst));
    }
}
