//! Frames: the unit the core speaks in (docs/ARCHITECTURE.md, decision 4).
//!
//! Every frame is a fixed 24-byte header followed by `len` payload bytes. The payload is a
//! small codec-encoded message (`meta_len` bytes) followed by a body: encoded arguments or a
//! value, which for plain numeric vectors are raw bytes. The header is validated before anything
//! is allocated; a bad magic, version or kind, or a length over the limit, is a fatal error for
//! that link only.
//!
//! ```text
//! offset 0  u16  magic 0x4863 ("ch")
//!        2  u8   protocol version
//!        3  u8   kind (1 = message)
//!        4  u32  meta_len
//!        8  u64  id (request id)
//!       16  u64  len (payload bytes)
//! ```

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Frame header magic.
pub const MAGIC: u16 = 0x4863;
/// The wire protocol version; it is also checked in the handshake. 2: per-holder reference
/// books (`AddClient`), the topology as an enum in `Config`. 3: service calls
/// (`Mode::Service`) and timed channel operations (`ChanOp::TakeWithin`, `PutWithin`). 4:
/// messages and values in postcard's format (varint integers) instead of bincode's fixed-width
/// one; the hello offers shared-memory rings, the welcome says whether they were taken. 5: a
/// ring's reader may wait in a futex on its head word, which its writer then wakes. 6: a ring's
/// reader flags share its head's cache line.
pub const PROTOCOL_VERSION: u8 = 6;
/// Frame kind of a message frame (the only kind so far).
pub const KIND_MESSAGE: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 24;
pub use crate::base::env::DEFAULT_MAX_FRAME;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request id the frame belongs to (0 when none).
    pub id: u64,
    /// Length of the message at the start of the payload.
    pub meta_len: u32,
    /// Payload length.
    pub len: u64,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        b[2] = PROTOCOL_VERSION;
        b[3] = KIND_MESSAGE;
        b[4..8].copy_from_slice(&self.meta_len.to_le_bytes());
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..24].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes and validates a header.
    pub fn decode(b: &[u8; HEADER_LEN], max_len: u64) -> Result<Header, FrameError> {
        let magic = u16::from_le_bytes([b[0], b[1]]);
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        if b[2] != PROTOCOL_VERSION {
            return Err(FrameError::BadVersion(b[2]));
        }
        if b[3] != KIND_MESSAGE {
            return Err(FrameError::BadKind(b[3]));
        }
        let meta_len = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
        let id = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
        if len > max_len {
            return Err(FrameError::TooLong { len, max: max_len });
        }
        if u64::from(meta_len) > len {
            return Err(FrameError::BadMetaLen { meta_len, len });
        }
        Ok(Header { id, meta_len, len })
    }
}

/// Why a byte stream stopped being a valid sequence of frames. Fatal for the link.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first two bytes are not the magic.
    #[error("bad frame magic {0:#06x}")]
    BadMagic(u16),
    /// The peer speaks another protocol version.
    #[error("protocol version {0} (this process speaks {PROTOCOL_VERSION})")]
    BadVersion(u8),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// The payload is over the limit.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLong {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The message part is longer than the payload.
    #[error("message length {meta_len} exceeds payload length {len}")]
    BadMetaLen {
        /// Announced message length.
        meta_len: u32,
        /// Announced payload length.
        len: u64,
    },
    /// The stream ended inside a frame.
    #[error("stream ended {0} bytes into a frame")]
    Truncated(usize),
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// A whole frame: header and payload.
///
/// A large payload (1 MiB or more) is kept in two parts: the message and the first 8 body bytes
/// (`head`), and the rest in its own 8-byte-aligned allocation (`tail`). A body that is a raw
/// vector of 8-byte numbers then becomes the caller's `Vec` without a copy
/// ([`wire::decode_frame`](crate::wire::codec::decode_frame)).
#[derive(Debug)]
pub struct Frame {
    /// The header.
    pub header: Header,
    head: Vec<u8>,
    tail: Option<Vec<u64>>,
}

/// Payloads from this size on are read in two parts, and their tails recycled when unused.
pub const LARGE: usize = 1 << 20;

fn recycled() -> &'static std::sync::Mutex<Vec<Vec<u64>>> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<Vec<Vec<u64>>>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| std::sync::Mutex::new(Vec::new()))
}

/// A buffer for the tail of a large frame: recycled, or fresh with huge-page advice.
pub fn tail_buffer(bytes: usize) -> Vec<u64> {
    recycled_tail(bytes.div_ceil(8))
        .unwrap_or_else(|| crate::base::mem::zeroed_vec::<u64>(bytes.div_ceil(8)))
}

fn recycled_tail(words: usize) -> Option<Vec<u64>> {
    let mut pool = recycled().lock().unwrap_or_else(|e| e.into_inner());
    let i = pool.iter().position(|b| b.len() == words)?;
    Some(pool.swap_remove(i))
}

/// What a stream reader reserves for a large tail before its bytes arrive (untouched address
/// space, no memory until bytes land in it); it grows the buffer with the bytes actually
/// received (doubling), so a header announcing gigabytes costs this. Large enough that the
/// allocator maps it on its own (above glibc's largest mmap threshold, 32 MiB), so growing it
/// moves pages (`mremap`) instead of copying them.
const FIRST_TAIL: usize = 64 << 20;

/// The tail buffer of a frame being read from a stream: a recycled one of the exact size, or
/// an empty one with room for [`FIRST_TAIL`] bytes, grown by [`room`]. Its length counts the
/// whole words received; the bytes of a partly received word lie just past it.
fn stream_tail(bytes: usize) -> Vec<u64> {
    let words = bytes.div_ceil(8);
    match recycled_tail(words) {
        Some(mut t) => {
            // Its pages are in place; the bytes are overwritten as they arrive.
            t.clear();
            t
        }
        None => {
            let mut v = Vec::new();
            crate::base::mem::reserve_huge(&mut v, words.min(FIRST_TAIL / 8));
            v
        }
    }
}

/// Room for bytes `from..to` of a tail holding `from` received bytes (of `words` in all),
/// growing the buffer by doubling. The room is not zeroed first: each byte is written once,
/// by the read that fills it (zeroing it before costs about a third of a large receive).
fn room(t: &mut Vec<u64>, from: usize, to: usize, words: usize) -> &mut [MaybeUninit<u8>] {
    debug_assert!(t.len() == from / 8 && from <= to && to <= words * 8);
    let need = to.div_ceil(8);
    if need > t.capacity() {
        let grown = need.max(t.capacity() * 2).min(words);
        crate::base::mem::reserve_huge(t, grown - t.len());
    }
    let spare = t.spare_capacity_mut();
    let skip = from % 8;
    // SAFETY: the spare capacity is `spare.len() * 8` writable bytes, of which we take
    // `skip..skip + (to - from)` (in bounds: `to.div_ceil(8) <= capacity`); `MaybeUninit<u8>`
    // has no validity requirement and alignment 1, and the borrow of `t` keeps it exclusive.
    unsafe {
        std::slice::from_raw_parts_mut(
            spare.as_mut_ptr().cast::<MaybeUninit<u8>>(),
            spare.len() * 8,
        )
        .get_unchecked_mut(skip..skip + (to - from))
    }
}

/// Counts `n` more received bytes into a tail that had `from`: its length becomes the whole
/// words now received.
fn received(t: &mut Vec<u64>, from: usize, n: usize) {
    let words = (from + n) / 8;
    debug_assert!(words <= t.capacity());
    // SAFETY: bytes `0..from + n` of the buffer were written (the earlier words by earlier
    // reads, the rest by the read just counted, into the room `room` gave), so every word
    // below `words` is initialized; `words` is within the capacity.
    unsafe { t.set_len(words) }
}

/// Completes a tail of `bytes` received bytes: zero pads its last word.
fn finish(t: &mut Vec<u64>, bytes: usize) {
    let words = bytes.div_ceil(8);
    if words > t.len() {
        let pad = words * 8 - bytes;
        let last = room(t, bytes, words * 8, words);
        last[..pad].fill(MaybeUninit::new(0));
        received(t, bytes, pad);
    }
}

/// Copies `src` into uninitialized room of the same length.
fn copy_into(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(dst.len(), src.len());
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, both slices have `src.len()`
    // elements, and a shared and an exclusive borrow cannot overlap.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len()) }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Some(t) = self.tail.take() {
            let mut pool = recycled().lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < 2 {
                pool.push(t);
            }
        }
    }
}

impl Frame {
    /// A frame over a contiguous payload of `header.len` bytes.
    pub fn new(header: Header, payload: Vec<u8>) -> Frame {
        debug_assert_eq!(payload.len() as u64, header.len);
        Frame {
            header,
            head: payload,
            tail: None,
        }
    }
    /// A frame of a head (message and the first body bytes) and an 8-byte-aligned tail of
    /// `header.len - head.len()` bytes, as a message-passing transport receives a large frame.
    pub fn from_parts(header: Header, head: Vec<u8>, tail: Option<Vec<u64>>) -> Frame {
        debug_assert!(tail.is_some() || head.len() as u64 == header.len);
        Frame { header, head, tail }
    }
    fn tail_len(&self) -> usize {
        self.header.len as usize - self.head.len()
    }
    /// The encoded message at the start of the payload.
    pub fn meta(&self) -> &[u8] {
        &self.head[..self.header.meta_len as usize]
    }
    /// The body after the message (copied into one piece only for a large two-part frame).
    pub fn body(&self) -> std::borrow::Cow<'_, [u8]> {
        let m = self.header.meta_len as usize;
        match &self.tail {
            None => std::borrow::Cow::Borrowed(&self.head[m..]),
            Some(t) => {
                let mut v = Vec::with_capacity(self.header.len as usize - m);
                v.extend_from_slice(&self.head[m..]);
                v.extend_from_slice(&bytemuck::cast_slice::<u64, u8>(t)[..self.tail_len()]);
                std::borrow::Cow::Owned(v)
            }
        }
    }
    /// The body as a vector of 8-byte numbers without copying, when it is one in a two-part
    /// frame (a `u64` count, then exactly that many elements); otherwise the frame back.
    pub fn into_raw8<T: bytemuck::Pod>(mut self) -> Result<Vec<T>, Frame> {
        let m = self.header.meta_len as usize;
        let fits = std::mem::size_of::<T>() == 8 && std::mem::align_of::<T>() == 8;
        let count = self
            .head
            .get(m..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes);
        match (&self.tail, count) {
            (Some(t), Some(n))
                if fits
                    && n.checked_mul(8) == Some(self.tail_len() as u64)
                    && t.len() as u64 == n =>
            {
                let t = self.tail.take().expect("checked");
                bytemuck::allocation::try_cast_vec::<u64, T>(t).map_err(|(_, t)| {
                    self.tail = Some(t);
                    self
                })
            }
            _ => Err(self),
        }
    }
}

/// A source of bytes that may answer "would block".
///
/// # Safety
/// An implementation that overrides [`read_uninit`](ByteSource::read_uninit) must have
/// written the first `n` bytes of `buf` when it returns `Ok(n)`, and `n <= buf.len()`: the
/// reader then treats them as initialized.
pub unsafe trait ByteSource {
    /// Like `Read::read`; `ErrorKind::WouldBlock` means no bytes now; `Ok(0)` means end of stream.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// [`read_some`](ByteSource::read_some) into memory not yet initialized; `Ok(n)` means the
    /// first `n` bytes of `buf` are now written. The default zeroes `buf` first; a source
    /// that copies (a ring) or reads (a socket) writes it directly.
    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        buf.fill(MaybeUninit::new(0));
        // SAFETY: every byte of `buf` was just initialized, and `MaybeUninit<u8>` has the
        // layout of `u8`.
        let init = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
        self.read_some(init)
    }
}

/// Reads from a non-blocking file descriptor.
pub struct FdSource<'a>(pub BorrowedFd<'a>);

// SAFETY: `read_uninit` returns what `read(2)` wrote into `buf`, at most its length.
unsafe impl ByteSource for FdSource<'_> {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and `read_uninit` writes only
        // bytes read from the descriptor, so `buf` stays initialized.
        let buf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.read_uninit(buf)
    }

    fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        loop {
            // SAFETY: `read(2)` writes at most `buf.len()` bytes into `buf`, which we borrow
            // exclusively; it never reads them, so they may be uninitialized.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

// SAFETY: the default `read_uninit` initializes the whole buffer.
unsafe impl<T: io::Read> ByteSource for T {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }
}

const BUF_CAP: usize = 64 * 1024;

enum State {
    Head,
    Body {
        header: Header,
        head: Vec<u8>,
        tail: Option<Vec<u64>>,
        filled: usize,
    },
}

/// Incremental frame decoder (tokio-util's `Head`/`Data` state machine).
///
/// `poll` returns `Ok(None)` when it needs more bytes and keeps what it has; small frames are
/// parsed out of a 64 KiB buffer so that many arrive per system call, large payloads are read
/// straight into their own allocation.
pub struct FrameReader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    state: State,
    max_len: u64,
    total: u64,
}

impl FrameReader {
    /// A reader that refuses payloads over `max_len` bytes.
    pub fn new(max_len: u64) -> Self {
        FrameReader {
            buf: vec![0u8; BUF_CAP].into_boxed_slice(),
            start: 0,
            end: 0,
            state: State::Head,
            max_len,
            total: 0,
        }
    }

    /// Bytes read from the source so far (a progress counter).
    pub fn bytes_read(&self) -> u64 {
        self.total
    }

    /// True when no partial frame is buffered.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.start == self.end
    }

    /// Decodes the next frame. `Ok(None)`: the source would block. `Err(UnexpectedEof)`: the
    /// stream ended cleanly between frames. Any other error is fatal for the stream.
    pub fn poll<S: ByteSource + ?Sized>(&mut self, src: &mut S) -> io::Result<Option<Frame>> {
        self.poll_within(src, usize::MAX)
    }

    /// [`FrameReader::poll`], reading at most about `budget` bytes of a large frame's body
    /// before answering `Ok(None)` with the frame unfinished: a reader serving many streams
    /// takes turns instead of staying on one huge frame.
    pub fn poll_within<S: ByteSource + ?Sized>(
        &mut self,
        src: &mut S,
        budget: usize,
    ) -> io::Result<Option<Frame>> {
        let budget = (budget != usize::MAX).then(|| self.total.saturating_add(budget as u64));
        loop {
            match &mut self.state {
                State::Head => {
                    if self.end - self.start >= HEADER_LEN {
                        let hb: [u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN]
                            .try_into()
                            .expect("header slice");
                        let header = Header::decode(&hb, self.max_len)?;
                        self.start += HEADER_LEN;
                        let len = header.len as usize;
                        let avail = self.end - self.start;
                        if avail >= len {
                            let payload = self.buf[self.start..self.start + len].to_vec();
                            self.start += len;
                            self.compact();
                            return Ok(Some(Frame::new(header, payload)));
                        }
                        let head_len = if len >= LARGE {
                            len.min(header.meta_len as usize + 8)
                        } else {
                            len
                        };
                        let mut head = vec![0u8; head_len];
                        let mut tail = (len > head_len).then(|| stream_tail(len - head_len));
                        let h = avail.min(head_len);
                        head[..h].copy_from_slice(&self.buf[self.start..self.start + h]);
                        if let Some(t) = tail.as_mut() {
                            let rest = &self.buf[self.start + h..self.end];
                            let words = (len - head_len).div_ceil(8);
                            copy_into(room(t, 0, rest.len(), words), rest);
                            received(t, 0, rest.len());
                        }
                        self.start = 0;
                        self.end = 0;
                        self.state = State::Body {
                            header,
                            head,
                            tail,
                            filled: avail,
                        };
                        continue;
                    }
                    self.compact();
                    match src.read_some(&mut self.buf[self.end..]) {
                        Ok(0) => {
                            let have = self.end - self.start;
                            return Err(if have == 0 {
                                io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the link")
                            } else {
                                FrameError::Truncated(have).into()
                            });
                        }
                        Ok(n) => {
                            self.end += n;
                            self.total += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                State::Body {
                    header,
                    head,
                    tail,
                    filled,
                } => {
                    let len = header.len as usize;
                    let hl = head.len();
                    if *filled == len {
                        let header = *header;
                        let head = std::mem::take(head);
                        let mut tail = tail.take();
                        if let Some(t) = tail.as_mut() {
                            finish(t, len - hl);
                        }
                        self.state = State::Head;
                        return Ok(Some(Frame { header, head, tail }));
                    }
                    if budget.is_some_and(|b| self.total >= b) {
                        // Leave the rest for the next turn: other links wait meanwhile.
                        return Ok(None);
                    }
                    // Loopback TCP is ~20% faster read in 256 KiB pieces than in one huge read.
                    let read = if *filled < hl {
                        src.read_some(&mut head[*filled..])
                    } else {
                        let t = tail.as_mut().expect("tail of a two-part frame");
                        let from = *filled - hl;
                        let to = (len - hl).min(from + (256 << 10));
                        let r = src.read_uninit(room(t, from, to, (len - hl).div_ceil(8)));
                        if let Ok(n) = r {
                            received(t, from, n.min(to - from));
                        }
                        r
                    };
                    match read {
                        Ok(0) => return Err(FrameError::Truncated(HEADER_LEN + *filled).into()),
                        Ok(n) => {
                            *filled += n;
                            self.total += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Bytes reserved for the body of the frame being read (for tests of what a header alone
    /// can make a reader allocate).
    #[cfg(test)]
    fn reserved(&self) -> usize {
        match &self.state {
            State::Head => 0,
            State::Body { head, tail, .. } => {
                head.capacity() + tail.as_ref().map_or(0, |t| t.capacity() * 8)
            }
        }
    }

    fn compact(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > BUF_CAP / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// Builds the bytes of a frame whose body is given in parts (the parts are not copied when large).
pub fn header_for(id: u64, meta_len: usize, body_len: usize) -> Header {
    Header {
        id,
        meta_len: meta_len as u32,
        len: (meta_len + body_len) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out its bytes in given chunk sizes, answering WouldBlock between them.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        chunks: Vec<usize>,
        next: usize,
        pending: bool,
    }

    impl Chunked {
        fn new(data: Vec<u8>, chunks: Vec<usize>) -> Chunked {
            Chunked {
                data,
                pos: 0,
                chunks,
                next: 0,
                pending: false,
            }
        }
    }

    // SAFETY: the default `read_uninit` initializes the whole buffer.
    unsafe impl ByteSource for Chunked {
        fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pending {
                self.pending = false;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if self.pos == self.data.len() {
                return Ok(0);
            }
            let want = self.chunks.get(self.next).copied().unwrap_or(usize::MAX);
            self.next += 1;
            self.pending = true;
            let n = want.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// A source that writes straight into unfilled memory, as the rings and sockets do.
    struct Direct(Chunked);

    // SAFETY: `read_uninit` writes each byte it counts, at most `buf.len()`.
    unsafe impl ByteSource for Direct {
        fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read_some(buf)
        }

        fn read_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
            let mut scratch = vec![0u8; buf.len()];
            let n = self.0.read_some(&mut scratch)?;
            for (d, s) in buf.iter_mut().zip(&scratch[..n]) {
                d.write(*s);
            }
            Ok(n)
        }
    }

    fn frame_bytes(id: u64, meta: &[u8], body: &[u8]) -> Vec<u8> {
        let h = header_for(id, meta.len(), body.len());
        let mut v = h.encode().to_vec();
        v.extend_from_slice(meta);
        v.extend_from_slice(body);
        v
    }

    fn drain(r: &mut FrameReader, src: &mut Chunked) -> io::Result<Vec<Frame>> {
        let mut out = Vec::new();
        loop {
            match r.poll(src) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    #[test]
    fn split_header_and_payload() {
        let mut data = frame_bytes(7, b"meta", b"body-bytes");
        data.extend(frame_bytes(8, b"", &[9u8; 200_000]));
        for chunks in [vec![1; 400_000], vec![3, 5, 23, 1000], vec![24, 4, 10]] {
            let mut src = Chunked::new(data.clone(), chunks);
            let mut r = FrameReader::new(1 << 20);
            let frames = drain(&mut r, &mut src).unwrap();
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[0].header.id, 7);
            assert_eq!(frames[0].meta(), b"meta");
            assert_eq!(&*frames[0].body(), b"body-bytes");
            assert_eq!(frames[1].header.id, 8);
            assert_eq!(frames[1].body().len(), 200_000);
            assert!(frames[1].body().iter().all(|&b| b == 9));
            assert!(r.is_idle());
        }
    }

    #[test]
    fn oversize_is_refused_before_allocating() {
        let mut h = header_for(1, 0, 0);
        h.len = u64::MAX;
        let mut src = Chunked::new(h.encode().to_vec(), vec![]);
        let err = drain(&mut FrameReader::new(1 << 20), &mut src).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn a_header_alone_reserves_little_and_the_buffer_grows_with_the_bytes() {
        // A header announcing 1 GiB under a 4 GiB limit, then 100 bytes, then nothing more.
        let mut h = header_for(1, 0, 0);
        h.len = 1 << 30;
        let mut data = h.encode().to_vec();
        data.extend_from_slice(&[7u8; 100]);
        let mut src = Chunked::new(data, vec![usize::MAX]);
        let mut r = FrameReader::new(4 << 30);
        // The source ends after its bytes: poll until it says so.
        let err = loop {
            match r.poll(&mut src) {
                Ok(None) => continue,
                Ok(Some(_)) => panic!("no whole frame was sent"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(r.reserved() <= FIRST_TAIL + 64, "reserved {}", r.reserved());

        // A 20 MB frame arriving in 1 MB pieces is read whole, its buffer grown on the way.
        let body: Vec<u8> = (0..20_000_000u32).map(|i| i as u8).collect();
        let mut src = Chunked::new(frame_bytes(2, b"m", &body), vec![1 << 20; 64]);
        let mut r = FrameReader::new(4 << 30);
        let frames = drain(&mut r, &mut src).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0].body()[..], &body[..]);
    }

    #[test]
    fn a_budget_makes_a_large_frame_take_turns() {
        let body = vec![3u8; 8 << 20];
        let mut src = Chunked::new(frame_bytes(5, b"m", &body), vec![]);
        let mut r = FrameReader::new(1 << 30);
        let mut turns = 0;
        let f = loop {
            let before = r.bytes_read();
            match r.poll_within(&mut src, 1 << 20).unwrap() {
                Some(f) => break f,
                None => {
                    turns += 1;
                    // One turn reads about the budget (plus at most one 256 KiB piece).
                    assert!(r.bytes_read() - before <= (1 << 20) + (256 << 10) + BUF_CAP as u64);
                }
            }
        };
        assert!(turns >= 6, "{turns} turns");
        assert_eq!(f.body().len(), 8 << 20);
        assert!(f.body().iter().all(|&b| b == 3));
    }

    /// A large body received straight into its unfilled buffer in pieces of odd sizes (words
    /// split across reads, a last word short) arrives byte for byte, and a raw vector body
    /// becomes a `Vec` of exactly its elements.
    #[test]
    fn a_large_body_received_in_odd_pieces_into_unfilled_memory_is_exact() {
        let body: Vec<u8> = (0..LARGE * 3 + 13).map(|i| (i * 7 % 251) as u8).collect();
        let chunks: Vec<usize> = (0..4000)
            .map(|i| [5, 3, 13, 8, 1, 7, 4093][i % 7])
            .collect();
        let mut src = Direct(Chunked::new(frame_bytes(9, b"meta", &body), chunks));
        let mut r = FrameReader::new(1 << 30);
        let f = loop {
            if let Some(f) = r.poll(&mut src).unwrap() {
                break f;
            }
        };
        assert_eq!(f.meta(), b"meta");
        assert_eq!(&*f.body(), &body[..]);

        let n = LARGE / 8 + 3;
        let values: Vec<u64> = (0..n as u64).map(|i| i * 0x9e37_79b9).collect();
        let mut raw = (n as u64).to_le_bytes().to_vec();
        raw.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let chunks: Vec<usize> = (0..3000).map(|i| [3, 11, 6, 9, 8191][i % 5]).collect();
        let mut src = Direct(Chunked::new(frame_bytes(10, b"m", &raw), chunks));
        let f = loop {
            if let Some(f) = r.poll(&mut src).unwrap() {
                break f;
            }
        };
        assert_eq!(f.into_raw8::<u64>().ok(), Some(values));
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let mut data = frame_bytes(1, b"m", b"0123456789");
        data.truncate(HEADER_LEN + 5);
        let mut src = Chunked::new(data, vec![2]);
        let err = drain(&mut FrameReader::new(1 << 20), &mut src).unwrap_err();
        assert_eq!(
            err.to_string(),
            FrameError::Truncated(HEADER_LEN + 5).to_string()
        );
        let mut src = Chunked::new(vec![0x63, 0x48, 1], vec![]);
        let err = drain(&mut FrameReader::new(1 << 20), &mut src).unwrap_err();
        assert_eq!(err.to_string(), FrameError::Truncated(3).to_string());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..2000 {
            let len = (round % 97) + 1;
            let mut data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if round % 3 == 0 && data.len() >= 4 {
                // A valid magic and version, so the rest of the header is exercised.
                data[..4].copy_from_slice(&[0x63, 0x48, PROTOCOL_VERSION, KIND_MESSAGE]);
            }
            let mut src = Chunked::new(data, vec![1, 2, 3, 5, 8]);
            let _ = drain(&mut FrameReader::new(1 << 16), &mut src);
        }
    }

    #[test]
    fn garbage_and_wrong_version() {
        let mut src = Chunked::new(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), vec![]);
        let err = drain(&mut FrameReader::new(1 << 20), &mut src).unwrap_err();
        assert!(err.to_string().contains("bad frame magic"), "{err}");
        let mut b = frame_bytes(1, b"", b"");
        b[2] = 99;
        let mut src = Chunked::new(b, vec![]);
        let err = drain(&mut FrameReader::new(1 << 20), &mut src).unwrap_err();
        assert!(err.to_string().contains("protocol version 99"), "{err}");
        let mut h = header_for(1, 10, 0);
        h.len = 5;
        let mut src = Chunked::new(h.encode().to_vec(), vec![]);
        let err = drain(&mut FrameReader::new(1 << 20), &mut src).unwrap_err();
        assert!(err.to_string().contains("exceeds payload"), "{err}");
    }
}
