//! Byte rings in shared memory: the node-local path of a link between two processes of one
//! host.
//!
//! A link whose two ends share a host carries its frames through a pair of single-producer,
//! single-consumer byte rings (one each way) in one shared segment, instead of through the
//! kernel: a writer copies a frame's bytes into the ring and publishes the new head; a reader
//! that spins for a reply sees them with no system call on either side. The framing is the
//! stream's (`FrameReader` reads a ring as it reads a socket), so a frame larger than the ring
//! streams through it, the reader filling the frame's own buffer: one copy on each side, both
//! at once, as each side hands over every [`PIECE`] it copies.
//!
//! A reader that waits for a reply on crowded cores (more threads that want a core than cores)
//! sleeps in a futex on its ring's head word instead of polling, flag raised; the writer wakes
//! it after publishing ([`wait_any`]): the producer keeps its whole core, and the reply wakes
//! the waiting thread itself.
//!
//! The link's socket stays open beside the rings, for two things only: the *doorbell* and the
//! end. A reader that stops spinning (its link armed in the poller's `epoll`) raises its ring's
//! `sleeping` flag; a writer that then publishes bytes writes one byte on the socket, which
//! wakes the poller (so an idle process uses no CPU). Each side checks the other's word after
//! publishing its own (sequentially consistent), so no wake-up is lost. A peer that dies closes
//! its socket: the link ends as a socket link does, as fast.
//!
//! The segment never has a name (an `O_TMPFILE` inode of the `/dev/shm` tmpfs, mode 0600): the
//! connecting side creates it and offers it in its hello; the listening side, once the cookie is
//! checked, opens it through `/proc/<pid>/fd/<n>` (same user, same pid namespace), checks the
//! inode and a random token from the hello, and maps it. Nothing is left after any crash: the
//! kernel frees the inode with its last holder.

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes of each direction's ring: 4 MiB of shared memory per linked pair of processes (links
/// are made on first use, so a pair that never talks costs nothing). A 64 MiB fetch runs at
/// about 4 GB/s with 1 MiB rings and 4.5-5 GB/s with 4 MiB on the development VM.
pub(crate) const RING_BYTES: usize = 2 << 20;
/// The most either side copies before it publishes: a large frame then streams with both
/// sides copying at once (whole-ring turns would leave one side waiting while the other
/// copies, halving the rate), at one index hand-over per piece.
const PIECE: usize = 128 << 10;
const SEG_MAGIC: u64 = 0x676e_6972_7472_6863; // "chrtring"
const LINE: usize = 64;
/// The segment's header line, then per direction: the head line (with the reader's flags), the
/// tail line, and the data. The flags share the head's line because the writer reads them
/// right after each publish: with the line just taken for the head, that read costs nothing,
/// where a line of their own (which the reader writes) was a cache miss per message.
const HEADER: usize = LINE;
const CTL: usize = 2 * LINE;
const SHM_DIR: &str = "/dev/shm";

pub(crate) use crate::wire::proto::RingOffer as Offer;

/// A mapped segment and the descriptor that keeps it open until the peer has it.
struct Segment {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, reached only through atomics (the indices and
// flags) and through byte copies into ranges the ring protocol gives one side at a time.
unsafe impl Send for Segment {}
// SAFETY: as above; every shared access is an atomic or a copy into a range owned by one side.
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` is this segment's own mapping, unmapped once, here.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

fn seg_len() -> usize {
    HEADER + 2 * (CTL + RING_BYTES)
}

fn map(file: &File) -> io::Result<Segment> {
    let len = seg_len();
    // SAFETY: a fresh shared mapping of a file of at least `len` bytes (checked or reserved by
    // the callers); nothing else in this process aliases it.
    let p = unsafe {
        mmap(
            None,
            NonZeroUsize::new(len).expect("non-empty"),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            file.as_fd(),
            0,
        )
    }?;
    Ok(Segment {
        base: p.cast(),
        len,
    })
}

impl Segment {
    fn at(&self, off: usize) -> *mut u8 {
        debug_assert!(off < self.len);
        // SAFETY: `off` is inside the mapping (all offsets come from the fixed layout).
        unsafe { self.base.as_ptr().add(off) }
    }
    fn u64_at(&self, off: usize) -> &AtomicU64 {
        // SAFETY: `off` is a multiple of 8 inside the page-aligned mapping, which lives as long
        // as `self`; the word is only ever accessed atomically by both processes.
        unsafe { &*(self.at(off) as *const AtomicU64) }
    }
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as for `u64_at`, with 4-byte alignment.
        unsafe { &*(self.at(off) as *const AtomicU32) }
    }
    fn token(&self) -> [u8; 16] {
        let mut t = [0u8; 16];
        for (i, b) in t.iter_mut().enumerate() {
            *b = (self.u64_at(16 + (i / 8) * 8).load(Ordering::Acquire) >> ((i % 8) * 8)) as u8;
        }
        t
    }
}

/// The two rings of a link, from one side: where it writes and where it reads.
pub(crate) struct Rings {
    seg: Segment,
    tx: usize,
    rx: usize,
    /// The creator's descriptor, kept until the peer has opened the segment.
    door: std::sync::Mutex<Option<File>>,
    /// The reader's tail of the outgoing ring as last read (this process's copy, changed by
    /// the one writer): at most the real tail, so the room it shows is there. Reading the
    /// shared tail at every write costs a cache miss on the path of each message, as the
    /// reader has just moved it.
    tail_seen: AtomicU64,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings").finish_non_exhaustive()
    }
}

/// The layout of one direction: offsets of its head, tail, flags and data.
struct Half {
    head: usize,
    tail: usize,
    sleeping: usize,
    /// Nonzero while the reader waits in a futex on the head's low word (see
    /// [`wait_any`]): the writer then wakes it after publishing.
    waiting: usize,
    data: usize,
}

fn half(start: usize) -> Half {
    Half {
        head: start,
        tail: start + LINE,
        sleeping: start + 8,
        waiting: start + 12,
        data: start + CTL,
    }
}

const FIRST: usize = HEADER;
const SECOND: usize = HEADER + CTL + RING_BYTES;

impl Rings {
    /// Creates a segment for a link this process opens; returns it with the offer to send.
    pub(crate) fn create() -> io::Result<(Rings, Offer)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(SHM_DIR)?;
        // Reserved now: a full /dev/shm is an error here (and the link uses its socket), never
        // a SIGBUS later.
        nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, seg_len() as i64)?;
        let seg = map(&file)?;
        let mut token = [0u8; 16];
        getrandom::getrandom(&mut token).map_err(io::Error::other)?;
        seg.u64_at(0).store(SEG_MAGIC, Ordering::Relaxed);
        seg.u64_at(8).store(RING_BYTES as u64, Ordering::Relaxed);
        for i in 0..2 {
            let w = u64::from_le_bytes(token[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            seg.u64_at(16 + i * 8).store(w, Ordering::Release);
        }
        // Both readers start asleep: bytes written before a side's link exists ring its bell,
        // and the bell waits in its socket until the poller watches it.
        for h in [half(FIRST), half(SECOND)] {
            seg.u32_at(h.sleeping).store(1, Ordering::SeqCst);
        }
        let meta = file.metadata()?;
        let offer = Offer {
            pid: std::process::id(),
            fd: file.as_raw_fd(),
            dev: meta.dev(),
            ino: meta.ino(),
            token,
        };
        Ok((
            Rings {
                seg,
                tx: FIRST,
                rx: SECOND,
                door: std::sync::Mutex::new(Some(file)),
                tail_seen: AtomicU64::new(0),
            },
            offer,
        ))
    }

    /// Opens the segment `offer` names (the listening side), checking that it is that inode
    /// and carries the offer's token.
    pub(crate) fn attach(offer: &Offer) -> io::Result<Rings> {
        let path = format!("/proc/{}/fd/{}", offer.pid, offer.fd);
        let is_it = |m: &std::fs::Metadata| m.dev() == offer.dev && m.ino() == offer.ino;
        if !is_it(&std::fs::metadata(&path)?) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not the offered segment",
            ));
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let meta = file.metadata()?;
        if !is_it(&meta) || meta.len() < seg_len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not the offered segment",
            ));
        }
        let seg = map(&file)?;
        if seg.u64_at(0).load(Ordering::Acquire) != SEG_MAGIC
            || seg.u64_at(8).load(Ordering::Acquire) != RING_BYTES as u64
            || seg.token() != offer.token
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not the offered segment",
            ));
        }
        Ok(Rings {
            seg,
            tx: SECOND,
            rx: FIRST,
            door: std::sync::Mutex::new(None),
            tail_seen: AtomicU64::new(0),
        })
    }

    /// The peer has the segment (or will never open it): the creator's descriptor goes.
    pub(crate) fn close_door(&self) {
        self.door.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn tx(&self) -> Half {
        half(self.tx)
    }
    fn rx(&self) -> Half {
        half(self.rx)
    }

    /// Whether bytes wait in this side's incoming ring.
    pub(crate) fn readable(&self) -> bool {
        let h = self.rx();
        self.seg.u64_at(h.head).load(Ordering::Acquire)
            != self.seg.u64_at(h.tail).load(Ordering::Relaxed)
    }

    /// Marks this side's reader as asleep (`true`: writers ring the doorbell) or awake. After
    /// marking asleep the caller must check [`Rings::readable`]: bytes published before the
    /// mark rang no bell.
    pub(crate) fn set_sleeping(&self, on: bool) {
        // Only the raising is ordered before the check that follows it: a writer that still
        // sees a lowered flag raised rings a doorbell nobody needed, which is harmless.
        let order = if on {
            Ordering::SeqCst
        } else {
            Ordering::Release
        };
        self.seg
            .u32_at(self.rx().sleeping)
            .store(u32::from(on), order);
    }

    /// Copies up to `buf.len()` waiting bytes out of the incoming ring; `WouldBlock` if none.
    #[cfg(test)]
    pub(crate) fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is `buf.len()` writable bytes we borrow exclusively.
        unsafe { self.read_into(buf.as_mut_ptr(), buf.len()) }
    }

    /// Copies up to `len` waiting bytes out of the incoming ring to `dst`; `WouldBlock` if
    /// none. Returns how many it wrote there.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes (which need not be initialized) and not
    /// overlap the ring.
    pub(crate) unsafe fn read_into(&self, dst: *mut u8, len: usize) -> io::Result<usize> {
        let h = self.rx();
        let tail = self.seg.u64_at(h.tail).load(Ordering::Relaxed);
        let head = self.seg.u64_at(h.head).load(Ordering::Acquire);
        let avail = (head - tail) as usize;
        if avail == 0 || len == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = avail.min(len).min(PIECE);
        let at = (tail % RING_BYTES as u64) as usize;
        let first = n.min(RING_BYTES - at);
        // SAFETY: bytes [tail, tail+n) of the ring were published by the writer (head is at
        // least tail+n, read with Acquire) and are not written again until this side moves the
        // tail past them; the two ranges lie inside the ring's data, and the caller gives
        // `n <= len` writable bytes at `dst`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.seg.at(h.data + at), dst, first);
            std::ptr::copy_nonoverlapping(self.seg.at(h.data), dst.add(first), n - first);
        }
        self.seg
            .u64_at(h.tail)
            .store(tail + n as u64, Ordering::Release);
        Ok(n)
    }

    /// Writes all of `parts` into the outgoing ring, in order, publishing as it goes (a frame
    /// larger than the ring streams through it). When the ring is full it rings the doorbell
    /// if the reader sleeps, then waits for room; it fails if `dead()` says the peer is gone.
    /// Returns whether the reader was asleep at the end (the caller then rings the doorbell).
    pub(crate) fn write_all(
        &self,
        parts: &[&[u8]],
        ring: &dyn Fn(),
        dead: &dyn Fn() -> bool,
    ) -> io::Result<bool> {
        let h = self.tx();
        let head_w = self.seg.u64_at(h.head);
        let tail_w = self.seg.u64_at(h.tail);
        let mut head = head_w.load(Ordering::Relaxed);
        let mut tail = self.tail_seen.load(Ordering::Relaxed);
        for part in parts {
            let mut off = 0;
            while off < part.len() {
                let want = (part.len() - off).min(PIECE);
                let mut free = RING_BYTES - (head - tail) as usize;
                if free < want {
                    tail = tail_w.load(Ordering::Acquire);
                    free = RING_BYTES - (head - tail) as usize;
                    if free == 0 {
                        free = self.wait_room(&h, head, ring, dead)?;
                        tail = head + free as u64 - RING_BYTES as u64;
                    }
                }
                let n = free.min(want);
                let at = (head % RING_BYTES as u64) as usize;
                let first = n.min(RING_BYTES - at);
                // SAFETY: bytes [head, head+n) of the ring are free (the reader's tail, read
                // with Acquire now or at an earlier write, is at most RING_BYTES behind) and
                // only this side writes them; both ranges lie inside the ring's data, and
                // `part[off..off+n]` is in bounds.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        part.as_ptr().add(off),
                        self.seg.at(h.data + at),
                        first,
                    );
                    std::ptr::copy_nonoverlapping(
                        part.as_ptr().add(off + first),
                        self.seg.at(h.data),
                        n - first,
                    );
                }
                head += n as u64;
                off += n;
                // Published per piece, so that a reader streams a large frame meanwhile.
                head_w.store(head, Ordering::Release);
                self.wake_waiter(&h);
            }
        }
        self.tail_seen.store(tail, Ordering::Relaxed);
        // The fence in `wake_waiter` after the last publish also orders it before this load
        // (nothing to announce when nothing was written).
        Ok(self.seg.u32_at(h.sleeping).load(Ordering::SeqCst) != 0)
    }

    /// Wakes the reader if it waits in a futex for bytes (called after each publish; the
    /// fence pairs with the one in [`wait_any`], so a reader that saw no bytes has raised its
    /// flag where this sees it).
    fn wake_waiter(&self, h: &Half) {
        fence(Ordering::SeqCst);
        if self.seg.u32_at(h.waiting).load(Ordering::Relaxed) != 0 {
            let word = self.seg.at(h.head).cast::<u32>();
            // SAFETY: FUTEX_WAKE only reads the address's key (a word of this shared mapping,
            // 4-aligned, mapped as long as `self`); no memory is written.
            unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, i32::MAX, 0, 0, 0) };
        }
    }

    /// Waits for room in the outgoing ring: spins briefly, then sleeps in short naps (ringing
    /// the doorbell first if the reader sleeps, or it would never come).
    fn wait_room(
        &self,
        h: &Half,
        head: u64,
        ring: &dyn Fn(),
        dead: &dyn Fn() -> bool,
    ) -> io::Result<usize> {
        let tail_w = self.seg.u64_at(h.tail);
        let start = Instant::now();
        let mut rang = false;
        loop {
            let free = RING_BYTES - (head - tail_w.load(Ordering::Acquire)) as usize;
            if free > 0 {
                return Ok(free);
            }
            fence(Ordering::SeqCst);
            if !rang && self.seg.u32_at(h.sleeping).load(Ordering::SeqCst) != 0 {
                ring();
                rang = true;
            }
            if dead() {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "link is closed"));
            }
            let waited = start.elapsed();
            if waited < Duration::from_micros(20) {
                std::hint::spin_loop();
            } else if waited < Duration::from_millis(2) {
                // The reader is copying out: give it the core (two cores run both sides).
                std::thread::yield_now();
            } else {
                rang = false;
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// `struct futex_waitv` of the kernel's futex2 interface (not in the libc crate).
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// Set once the kernel answered that it has no `futex_waitv`.
static NO_WAITV: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A 32-bit futex, shared between processes (no `FUTEX2_PRIVATE`).
const FUTEX2_SIZE_U32: u32 = 0x02;
/// The kernel's limit on the futexes of one wait.
const FUTEX_WAITV_MAX: usize = 128;

/// Sleeps until bytes arrive in any of `rings`' incoming rings, or until `until`: a reader
/// waiting for a reply this way leaves its core to the threads that produce it, and is woken
/// by the writer's publish directly (one system call there, no thread in between). Returns
/// `false` without sleeping where the kernel has no `futex_waitv` (before Linux 5.16) or
/// there are too many rings; the caller then polls as before.
pub(crate) fn wait_any(rings: &[&Rings], until: Instant) -> bool {
    if rings.is_empty() || rings.len() > FUTEX_WAITV_MAX || NO_WAITV.load(Ordering::Relaxed) {
        return false;
    }
    let mut waiters = Vec::with_capacity(rings.len());
    for r in rings {
        let h = r.rx();
        r.seg.u32_at(h.waiting).store(1, Ordering::SeqCst);
    }
    // Pairs with the writers' fence in `wake_waiter`: a head published before a flag was seen
    // is seen here.
    fence(Ordering::SeqCst);
    let mut ready = false;
    for r in rings {
        let h = r.rx();
        let head = r.seg.u64_at(h.head).load(Ordering::Acquire);
        if head != r.seg.u64_at(h.tail).load(Ordering::Relaxed) {
            ready = true;
        }
        waiters.push(FutexWaitv {
            val: u64::from(head as u32),
            uaddr: r.seg.at(h.head) as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        });
    }
    let mut slept = true;
    if !ready {
        let left = until.saturating_duration_since(Instant::now());
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec to write the monotonic clock into.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let ns = now.tv_nsec as u64 + left.subsec_nanos() as u64;
        let at = libc::timespec {
            tv_sec: now.tv_sec
                + left.as_secs() as libc::time_t
                + (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `waiters` holds `len` initialized entries naming 4-aligned words of shared
        // mappings that outlive the call (the rings are borrowed); the kernel only reads them
        // and the absolute timeout. A head that moved since it was read answers EAGAIN.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                waiters.as_ptr(),
                waiters.len() as libc::c_uint,
                0 as libc::c_uint,
                &at as *const libc::timespec,
                libc::CLOCK_MONOTONIC,
            )
        };
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            NO_WAITV.store(true, Ordering::Relaxed);
            slept = false;
        }
    }
    for r in rings {
        r.seg.u32_at(r.rx().waiting).store(0, Ordering::Relaxed);
    }
    #[cfg(test)]
    if slept && Instant::now() < until && rings.iter().any(|r| r.readable()) {
        WOKEN.fetch_add(1, Ordering::Relaxed);
    }
    slept
}

/// Waits of [`wait_any`] that ended before their deadline with bytes to read: woken by a
/// writer (for tests of the runtime's use).
#[cfg(test)]
pub(crate) static WOKEN: AtomicU64 = AtomicU64::new(0);

/// Reads the rings as a byte source (`FrameReader`).
pub(crate) struct RingSource<'a>(pub(crate) &'a Rings);

// SAFETY: `read_uninit` returns the count `Rings::read_into` copied into `buf`, at most its
// length.
unsafe impl crate::wire::frame::ByteSource for RingSource<'_> {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is `buf.len()` writable bytes we borrow exclusively.
        unsafe { self.0.read_into(buf.as_mut_ptr(), buf.len()) }
    }

    fn read_uninit(&mut self, buf: &mut [std::mem::MaybeUninit<u8>]) -> io::Result<usize> {
        // SAFETY: as above; the copy writes the bytes it counts and never reads `buf`.
        unsafe { self.0.read_into(buf.as_mut_ptr().cast(), buf.len()) }
    }
}

/// Drains doorbell bytes from a link's socket; `Err(UnexpectedEof)` once the peer closed it.
pub(crate) fn drain_doorbell(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut scratch = [0u8; 256];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut scratch) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the link",
                ))
            }
            Ok(_) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Rings, Rings) {
        let (a, offer) = Rings::create().unwrap();
        let b = Rings::attach(&offer).unwrap();
        a.close_door();
        (a, b)
    }

    #[test]
    fn bytes_cross_both_ways_in_order_and_wrap_around() {
        let (a, b) = pair();
        let never = || false;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 7777];
        let msg: Vec<u8> = (0..3 * RING_BYTES as u32 + 12345)
            .map(|i| (i % 251) as u8)
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                a.write_all(&[&msg[..10], &msg[10..]], &|| {}, &never)
                    .unwrap()
            });
            while got.len() < msg.len() {
                match b.read_some(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
        });
        assert_eq!(got, msg);
        assert!(!b.readable());
        b.write_all(&[b"back"], &|| {}, &never).unwrap();
        let n = a.read_some(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
    }

    #[test]
    fn a_sleeping_reader_is_told_and_a_dead_one_fails_the_writer() {
        let (a, b) = pair();
        b.set_sleeping(true);
        let asleep = a.write_all(&[b"x"], &|| {}, &|| false).unwrap();
        assert!(asleep, "the writer sees the reader asleep");
        b.set_sleeping(false);
        assert!(!a.write_all(&[b"y"], &|| {}, &|| false).unwrap());
        // A full ring whose reader never comes: the writer rings, then fails once told dead.
        b.set_sleeping(true);
        let rung = std::sync::atomic::AtomicU32::new(0);
        let t0 = Instant::now();
        let big = vec![0u8; 2 * RING_BYTES];
        let r = a.write_all(
            &[&big],
            &|| {
                rung.fetch_add(1, Ordering::Relaxed);
            },
            &|| t0.elapsed() > Duration::from_millis(50),
        );
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert!(rung.load(Ordering::Relaxed) >= 1);
    }

    /// A reader asleep in the futex is woken by the writer's publish, whichever of its rings
    /// the bytes come to; with bytes already there it does not sleep; with none coming it
    /// sleeps until its deadline. Thousands of wait/publish races lose no wake-up (a lost one
    /// would sleep the 20 s deadline).
    #[test]
    fn a_futex_waiter_is_woken_by_each_publish_and_loses_no_wake_up() {
        let (a1, b1) = pair();
        let (a2, b2) = pair();
        let far = || Instant::now() + Duration::from_secs(20);
        // Nothing comes: back at the deadline, nothing readable.
        let t0 = Instant::now();
        assert!(wait_any(&[&b1, &b2], t0 + Duration::from_millis(30)));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert!(!b1.readable() && !b2.readable());
        // Bytes already waiting: no sleep at all.
        a2.write_all(&[b"z"], &|| {}, &|| false).unwrap();
        let t0 = Instant::now();
        assert!(wait_any(&[&b1, &b2], far()));
        assert!(t0.elapsed() < Duration::from_secs(5));
        let mut buf = [0u8; 8];
        assert_eq!(b2.read_some(&mut buf).unwrap(), 1);
        // A writer on another thread, racing the waiter: every byte arrives, none waits out
        // the deadline.
        let rounds = 3000u32;
        let t0 = Instant::now();
        std::thread::scope(|sc| {
            sc.spawn(|| {
                for i in 0..rounds {
                    let w = if i % 2 == 0 { &a1 } else { &a2 };
                    w.write_all(&[&i.to_le_bytes()], &|| {}, &|| false).unwrap();
                    if i % 64 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            });
            let mut got = Vec::new();
            while got.len() < rounds as usize {
                for r in [&b1, &b2] {
                    let mut w = [0u8; 4];
                    let mut have = 0;
                    while have > 0 || r.readable() {
                        match r.read_some(&mut w[have..]) {
                            Ok(n) => have += n,
                            Err(_) => continue,
                        }
                        if have == 4 {
                            got.push(u32::from_le_bytes(w));
                            have = 0;
                        }
                    }
                }
                if got.len() < rounds as usize {
                    assert!(wait_any(&[&b1, &b2], far()));
                }
            }
            got.sort_unstable();
            assert_eq!(got, (0..rounds).collect::<Vec<_>>());
        });
        assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
        // The waiting flags are down again: a writer makes no wake-up call.
        assert_eq!(b1.seg.u32_at(b1.rx().waiting).load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_full_ring_waits_for_a_slow_reader_and_loses_nothing() {
        let (a, b) = pair();
        let msg: Vec<u8> = (0..2 * RING_BYTES as u32 + 777)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut got = Vec::new();
        std::thread::scope(|s| {
            let w = s.spawn(|| a.write_all(&[&msg], &|| {}, &|| false));
            let mut buf = vec![0u8; 64 << 10];
            while got.len() < msg.len() {
                // A reader slower than the writer: the ring fills and the writer waits.
                std::thread::sleep(Duration::from_millis(2));
                if let Ok(n) = b.read_some(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
            }
            assert!(w.join().unwrap().is_ok());
        });
        assert_eq!(got, msg);
    }

    #[test]
    fn an_offer_must_name_the_segment_and_carry_its_token() {
        let (a, offer) = Rings::create().unwrap();
        let mut wrong = offer;
        wrong.token[0] ^= 1;
        assert_eq!(
            Rings::attach(&wrong).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut wrong = offer;
        wrong.ino += 1;
        assert_eq!(
            Rings::attach(&wrong).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        // Once the creator closed its descriptor, nobody can open the segment.
        a.close_door();
        assert!(Rings::attach(&offer).is_err());
    }
}
