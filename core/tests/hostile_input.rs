//! What a decoder allocates on hostile input: a 24-byte frame body whose length prefix claims
//! 2^32 elements (at least 4 GiB) must fail without allocating more than the bytes received
//! could make. The largest single allocation during each decode is recorded by a counting
//! global allocator (this test binary's own).
use cohort_core::__private::SampleMsg;
use cohort_core::codec::{decode, decode_frame, CodecError};
use cohort_core::frame::{header_for, Frame};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Peak;

thread_local! {
    /// The largest allocation on this thread while counting (`None`: not counting). Per
    /// thread, so that the test harness's other threads do not show up.
    static PEAK: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown find the slot gone.
    let _ = PEAK.try_with(|p| {
        if let Some(m) = p.get() {
            p.set(Some(m.max(size)));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; it only records sizes.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note(n);
        // SAFETY: `p` came from `System.alloc` with layout `l`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOC: Peak = Peak;

/// The result of `f` and the largest allocation it made.
fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
    PEAK.with(|p| p.set(Some(0)));
    let r = f();
    let m = PEAK.with(|p| p.replace(None)).expect("counting");
    (r, m)
}

/// 24 bytes: `prefix`, then filler bytes of 1.
fn frame_body(prefix: &[u8]) -> Vec<u8> {
    let mut b = prefix.to_vec();
    b.resize(24, 1);
    b
}

/// postcard's varint for 2^32: seven bits a byte, low first.
const VARINT_2_32: [u8; 5] = [0x80, 0x80, 0x80, 0x80, 0x10];

/// No allocation above what 24 bytes can hold once decoded: at most 24 elements, each at most
/// 16 bytes on the heap side, a power-of-two capacity.
const BOUND: usize = 512;

/// Where nothing is decoded: only the error's message is allocated.
const MESSAGE: usize = 128;

#[test]
fn serde_values_claiming_4_gib_fail_without_allocating_it() {
    let b = frame_body(&VARINT_2_32);
    // A whole `Vec<u64>` takes the raw path; inside a tuple (as arguments travel) it does not.
    let (r, m) = peak(|| decode::<(Vec<u64>,)>(&b).map(drop));
    assert_eq!(
        r,
        Err(CodecError::new("Hit the end of buffer, expected more data"))
    );
    assert!(m <= BOUND, "(Vec<u64>,): {m} bytes");
    let (r, m) = peak(|| decode::<String>(&b).map(drop));
    assert_eq!(
        r,
        Err(CodecError::new("Hit the end of buffer, expected more data"))
    );
    assert!(m <= MESSAGE, "String: {m} bytes");
    let (r, m) = peak(|| decode::<(Vec<u8>,)>(&b).map(drop));
    assert!(r.is_err());
    assert!(m <= BOUND, "(Vec<u8>,): {m} bytes");
    let (r, m) = peak(|| decode::<Vec<String>>(&b).map(drop));
    assert!(r.is_err());
    assert!(m <= BOUND, "Vec<String>: {m} bytes");
    let (r, m) = peak(|| decode::<Vec<Vec<f64>>>(&b).map(drop));
    assert!(r.is_err());
    assert!(m <= BOUND, "Vec<Vec<f64>>: {m} bytes");
}

#[test]
fn raw_vectors_claiming_4_gib_fail_before_allocating() {
    // The raw layout: a little-endian u64 count, then the elements.
    let b = frame_body(&(1u64 << 32).to_le_bytes());
    let (r, m) = peak(|| decode::<Vec<f64>>(&b).map(drop));
    assert_eq!(
        r,
        Err(CodecError::new(
            "vector of 4294967296 elements of 8 bytes does not match 16 bytes"
        ))
    );
    assert!(m <= MESSAGE, "Vec<f64>: {m} bytes");
    let (r, m) = peak(|| decode::<Vec<u8>>(&b).map(drop));
    assert_eq!(
        r,
        Err(CodecError::new(
            "vector of 4294967296 elements of 1 bytes does not match 16 bytes"
        ))
    );
    assert!(m <= MESSAGE, "Vec<u8>: {m} bytes");
    // The same body as a received frame (what a result's decoding is given).
    let frame = Frame::new(header_for(1, 0, b.len()), b.clone());
    let (r, m) = peak(|| decode_frame::<Vec<f64>>(frame).map(drop));
    assert_eq!(
        r,
        Err(CodecError::new(
            "vector of 4294967296 elements of 8 bytes does not match 16 bytes"
        ))
    );
    assert!(m <= MESSAGE, "frame of Vec<f64>: {m} bytes");
}

#[test]
fn a_message_claiming_a_4_gib_key_fails_without_allocating_it() {
    // `Msg::Chan` (variant 8): rrid 1/2, op `Put`, then a key whose length claims 2^32 bytes.
    let mut prefix = vec![8, 1, 2, 0];
    prefix.extend_from_slice(&VARINT_2_32);
    let b = frame_body(&prefix);
    let (r, m) = peak(|| SampleMsg::decode(&b).map(drop));
    assert_eq!(r, None);
    assert!(m <= BOUND, "Msg::Chan: {m} bytes");
    // The same message with a 3-byte key decodes: the bytes above are the message's layout.
    let mut ok = vec![8, 1, 2, 0, 3, 9, 8, 7];
    assert!(SampleMsg::decode(&ok).is_some());
    ok.push(0);
    assert!(SampleMsg::decode(&ok).is_none());
}
