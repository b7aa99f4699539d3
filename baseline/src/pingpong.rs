//! Round trips of a fixed-size frame over a raw byte stream.

use std::fmt;
use std::hint::spin_loop;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::stats;

/// How the receiving side of a round trip waits for bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PollMode {
    /// Plain blocking `read`: the thread sleeps in the kernel and is woken by the peer's write.
    Blocking,
    /// `O_NONBLOCK` set and `read` retried in a loop (with [`std::hint::spin_loop`]) while it
    /// returns `WouldBlock`: the fastest user-space technique, at the price of a busy core.
    BusyPoll,
}

impl PollMode {
    /// Both modes, blocking first.
    pub const ALL: [PollMode; 2] = [PollMode::Blocking, PollMode::BusyPoll];

    /// A short lower-case name: `blocking` or `busy-poll`.
    pub fn name(self) -> &'static str {
        match self {
            PollMode::Blocking => "blocking",
            PollMode::BusyPoll => "busy-poll",
        }
    }
}

impl fmt::Display for PollMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Round-trip statistics of one [`pingpong`] run, in microseconds (warm-up excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct PingPong {
    /// Bytes per frame, each way.
    pub frame: usize,
    /// Timed round trips.
    pub iters: usize,
    /// Median round trip.
    pub median_us: f64,
    /// Fastest round trip.
    pub min_us: f64,
    /// Mean round trip.
    pub mean_us: f64,
    /// 99th percentile (nearest rank).
    pub p99_us: f64,
}

/// Echoes `frame`-byte frames back to the peer until it closes the stream; returns the number
/// of frames echoed.
///
/// Reads exactly `frame` bytes, writes them back, and repeats. `mode` decides how it waits; the
/// descriptor's `O_NONBLOCK` flag is restored before returning. A clean EOF between frames ends
/// the loop; EOF inside a frame is an [`ErrorKind::UnexpectedEof`] error.
pub fn echo_serve<S: Read + Write + AsRawFd>(
    mut stream: S,
    frame: usize,
    mode: PollMode,
) -> io::Result<u64> {
    if frame == 0 {
        return Err(invalid("echo_serve: frame must be at least 1 byte"));
    }
    let _flags = FlagsGuard::set(stream.as_raw_fd(), mode)?;
    let mut buf = vec![0u8; frame];
    let mut count = 0;
    while fill(&mut stream, &mut buf)? {
        write_all(&mut stream, &buf)?;
        count += 1;
    }
    Ok(count)
}

/// Sends `warmup + iters` frames of `frame` bytes, each after the previous one came back from
/// an [`echo_serve`] peer, and returns statistics of the last `iters` round trips.
///
/// Each round trip is timed with [`Instant`] from before the write to after the whole echo is
/// read. The first 8 bytes of each frame carry the iteration number and are checked on return,
/// so a desynchronised peer is an [`ErrorKind::InvalidData`] error. `mode` decides how this side
/// waits; the descriptor's `O_NONBLOCK` flag is restored before returning. The stream is left
/// open: drop it (or shut down its write half) to end the peer's loop.
///
/// Back-to-back round trips keep both cores awake; see [`pingpong_spaced`] for the cost of
/// waking an idle peer.
pub fn pingpong<S: Read + Write + AsRawFd>(
    stream: &mut S,
    frame: usize,
    iters: usize,
    warmup: usize,
    mode: PollMode,
) -> io::Result<PingPong> {
    pingpong_spaced(stream, frame, iters, warmup, mode, Duration::ZERO)
}

/// [`pingpong`] with a pause of `gap` before every round trip, so that a blocking peer has
/// been asleep that long when the frame arrives.
///
/// This side spins through the gap (it stays awake), so the figure isolates the peer's wake-up.
/// On a virtual machine an idle vCPU is descheduled by the hypervisor after a short while, and a
/// blocking round trip to a peer idle for a millisecond costs several times a back-to-back one:
/// that is what an isolated remote call pays.
pub fn pingpong_spaced<S: Read + Write + AsRawFd>(
    stream: &mut S,
    frame: usize,
    iters: usize,
    warmup: usize,
    mode: PollMode,
    gap: Duration,
) -> io::Result<PingPong> {
    if frame == 0 || iters == 0 {
        return Err(invalid("pingpong: frame and iters must be at least 1"));
    }
    let _flags = FlagsGuard::set(stream.as_raw_fd(), mode)?;
    let mut out: Vec<u8> = (0..frame).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; frame];
    let tag = frame.min(8);
    let mut us = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        out[..tag].copy_from_slice(&(i as u64).to_le_bytes()[..tag]);
        if !gap.is_zero() {
            let until = Instant::now() + gap;
            while Instant::now() < until {
                spin_loop();
            }
        }
        let t0 = Instant::now();
        write_all(stream, &out)?;
        if !fill(stream, &mut back)? {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "pingpong: peer closed",
            ));
        }
        let dt = t0.elapsed();
        if back[..tag] != out[..tag] {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "pingpong: echo out of step",
            ));
        }
        if i >= warmup {
            us.push(dt.as_secs_f64() * 1e6);
        }
    }
    let mean_us = us.iter().sum::<f64>() / iters as f64;
    stats::sort(&mut us);
    Ok(PingPong {
        frame,
        iters,
        median_us: stats::median(&us),
        min_us: us[0],
        mean_us,
        p99_us: stats::quantile(&us, 0.99),
    })
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, msg)
}

/// Reads until `buf` is full, spinning on `WouldBlock`. `Ok(false)` on EOF before any byte.
fn fill<S: Read + ?Sized>(s: &mut S, buf: &mut [u8]) -> io::Result<bool> {
    let mut off = 0;
    while off < buf.len() {
        match s.read(&mut buf[off..]) {
            Ok(0) if off == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "EOF inside a frame",
                ))
            }
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes all of `buf`, spinning on `WouldBlock` (a full send buffer in busy-poll mode).
fn write_all<S: Write + ?Sized>(s: &mut S, buf: &[u8]) -> io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        match s.write(&buf[off..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets or clears `O_NONBLOCK` for `mode` and restores the original flags on drop.
///
/// The flag belongs to the open file description, so clones of the stream (`try_clone`) see it
/// too while the guard lives.
struct FlagsGuard {
    fd: RawFd,
    saved: OFlag,
}

impl FlagsGuard {
    fn set(fd: RawFd, mode: PollMode) -> io::Result<Self> {
        let saved = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
        let mut flags = saved;
        flags.set(OFlag::O_NONBLOCK, mode == PollMode::BusyPoll);
        if flags != saved {
            fcntl(fd, FcntlArg::F_SETFL(flags))?;
        }
        Ok(FlagsGuard { fd, saved })
    }
}

impl Drop for FlagsGuard {
    fn drop(&mut self) {
        // Best effort: the descriptor may already be unusable if the peer vanished.
        let _ = fcntl(self.fd, FcntlArg::F_SETFL(self.saved));
    }
}
