//! Streaming bandwidth of N-byte messages over a raw byte stream.

use std::hint::black_box;
use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use crate::stats;

/// The byte at offset `offset` of everything [`stream_send`] sends: `offset % 251`.
///
/// The period is prime, so it never lines up with chunk or page sizes and a lost, repeated or
/// reordered chunk shows.
pub fn pattern(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// Sends `bytes` bytes of [`pattern`] in `write_all` calls of `chunk` bytes (the last may be
/// shorter), all taken from one pre-built buffer, then flushes.
///
/// `chunk` is clamped to `1..=bytes`. Use the message size as `chunk` to send messages the way
/// a runtime writes frames: one `write_all` each.
pub fn stream_send<S: Write + ?Sized>(s: &mut S, bytes: usize, chunk: usize) -> io::Result<()> {
    let chunk = chunk.clamp(1, bytes.max(1));
    // One period of slack lets every chunk start at the right phase of the pattern.
    let src: Vec<u8> = (0..chunk + 251).map(pattern).collect();
    let mut off = 0;
    while off < bytes {
        let len = chunk.min(bytes - off);
        let phase = off % 251;
        s.write_all(&src[phase..phase + len])?;
        off += len;
    }
    s.flush()
}

/// The most bytes one `read` call asks for in [`stream_recv`] and [`stream_recv_owned`]:
/// 256 KiB.
///
/// On loopback TCP, reads capped at 64–256 KiB stream ~20% faster than one `read` for the whole
/// message (measured here: 1 MiB messages ~8 vs ~6.6 GB/s, 64 MiB ~4.8 vs ~4.0 GB/s): while a
/// large read copies under the socket lock, the sender's segments wait in the backlog, and the
/// copy runs out of cache. Unix sockets do not care either way.
pub const RECV_CHUNK: usize = 256 << 10;

/// Reads exactly `buf.len()` bytes into `buf` and returns how long that took.
///
/// The fastest receiver: `read_exact` into a buffer the caller allocated (and touched) once, in
/// pieces of at most [`RECV_CHUNK`] bytes.
pub fn stream_recv<S: Read + ?Sized>(s: &mut S, buf: &mut [u8]) -> io::Result<Duration> {
    let t0 = Instant::now();
    for piece in buf.chunks_mut(RECV_CHUNK) {
        s.read_exact(piece)?;
    }
    Ok(t0.elapsed())
}

/// Reads exactly `len` bytes into a freshly allocated `Vec<u8>` and returns it with the time
/// taken, allocation included.
///
/// This is what a runtime that hands out an owned buffer per message pays: a new zeroed
/// allocation (for large messages fresh pages from the kernel, which fault in as the reads fill
/// them, and which are unmapped again when the vector is dropped), then the same reads as
/// [`stream_recv`].
pub fn stream_recv_owned<S: Read + ?Sized>(
    s: &mut S,
    len: usize,
) -> io::Result<(Vec<u8>, Duration)> {
    let t0 = Instant::now();
    let mut v = vec![0u8; len];
    for piece in v.chunks_mut(RECV_CHUNK) {
        s.read_exact(piece)?;
    }
    Ok((v, t0.elapsed()))
}

/// Where [`stream_measure`] puts each message.
#[derive(Debug, Clone, Copy)]
pub enum RecvBuffer {
    /// One buffer allocated up front and reused ([`stream_recv`]).
    Reused,
    /// A fresh `Vec<u8>` per message, dropped before the next ([`stream_recv_owned`]).
    Fresh,
    /// A fresh buffer per message from the given allocator (e.g. one that asks for huge pages),
    /// dropped before the next.
    FreshWith(fn(usize) -> Vec<u8>),
}

impl RecvBuffer {
    /// Both variants, reused first.
    pub const ALL: [RecvBuffer; 2] = [RecvBuffer::Reused, RecvBuffer::Fresh];

    /// A short lower-case name: `reused` or `fresh`.
    pub fn name(self) -> &'static str {
        match self {
            RecvBuffer::Reused => "reused",
            RecvBuffer::Fresh => "fresh",
            RecvBuffer::FreshWith(_) => "fresh-custom",
        }
    }
}

/// Streaming figures of one [`stream_measure`] run (warm-up message excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct Streaming {
    /// Bytes per message.
    pub msg_bytes: usize,
    /// Timed messages.
    pub msgs: usize,
    /// Median per-message bandwidth in GB/s (10⁹ bytes/s).
    pub median_gbs: f64,
    /// Best per-message bandwidth in GB/s.
    pub best_gbs: f64,
    /// All timed bytes over the time from the end of the warm-up message to the end of the last.
    pub aggregate_gbs: f64,
}

/// The sending half of [`stream_measure`]: sends `1 + msgs` messages of `msg` bytes, one
/// `write_all` each.
pub fn stream_send_msgs<S: Write + ?Sized>(s: &mut S, msg: usize, msgs: usize) -> io::Result<()> {
    stream_send(s, (msgs + 1) * msg, msg)
}

/// The receiving half: reads `1 + msgs` messages of `msg` bytes sent by [`stream_send_msgs`]
/// and reports the bandwidth of the last `msgs`.
///
/// The sender streams without waiting, so this measures steady-state throughput: a message's
/// time runs from the completion of the previous message to its own completion, and for
/// [`RecvBuffer::Fresh`] includes allocating and freeing the vector. The first message also
/// absorbs the sender's start-up and is not timed.
pub fn stream_measure<S: Read + ?Sized>(
    s: &mut S,
    msg: usize,
    msgs: usize,
    recv: RecvBuffer,
) -> io::Result<Streaming> {
    if msg == 0 || msgs == 0 {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            "stream_measure: msg and msgs must be at least 1",
        ));
    }
    let mut buf = match recv {
        RecvBuffer::Reused => vec![0u8; msg],
        RecvBuffer::Fresh | RecvBuffer::FreshWith(_) => Vec::new(),
    };
    let mut receive = |s: &mut S| -> io::Result<()> {
        match recv {
            RecvBuffer::Reused => stream_recv(s, &mut buf).map(drop),
            RecvBuffer::Fresh => stream_recv_owned(s, msg).map(|(v, _)| drop(black_box(v))),
            RecvBuffer::FreshWith(alloc) => {
                let mut v = alloc(msg);
                stream_recv(s, &mut v).map(|_| drop(black_box(v)))
            }
        }
    };
    receive(s)?;
    let start = Instant::now();
    let mut prev = start;
    let mut gbs = Vec::with_capacity(msgs);
    for _ in 0..msgs {
        receive(s)?;
        let now = Instant::now();
        gbs.push(msg as f64 / (now - prev).as_secs_f64() / 1e9);
        prev = now;
    }
    stats::sort(&mut gbs);
    Ok(Streaming {
        msg_bytes: msg,
        msgs,
        median_gbs: stats::median(&gbs),
        best_gbs: gbs[msgs - 1],
        aggregate_gbs: (msg * msgs) as f64 / (prev - start).as_secs_f64() / 1e9,
    })
}
