//! Arbitrary bytes, in arbitrary pieces, into the frame reader of a link: it returns frames
//! or an error, never panics, never allocates beyond what the bytes allow.
#![no_main]

use cohort_core::frame::{ByteSource, FrameReader};
use libfuzzer_sys::fuzz_target;
use std::io;

/// Hands out the input in pieces whose sizes come from the input's first bytes, answering
/// "would block" between them, as a non-blocking socket does.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    next: usize,
    blocked: bool,
}

// SAFETY: the default `read_uninit` initializes the whole buffer.
unsafe impl ByteSource for Pieces<'_> {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.blocked {
            self.blocked = false;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if self.data.is_empty() {
            return Ok(0);
        }
        let size = self
            .sizes
            .get(self.next % self.sizes.len().max(1))
            .map_or(usize::MAX, |&s| 1 + s as usize * 97);
        self.next += 1;
        self.blocked = true;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    let split = input
        .first()
        .map_or(0, |&b| b as usize % 16)
        .min(input.len());
    let (sizes, data) = input.split_at(split);
    let mut src = Pieces {
        data,
        sizes,
        next: 0,
        blocked: false,
    };
    let mut r = FrameReader::new(1 << 24);
    loop {
        match r.poll(&mut src) {
            Ok(Some(f)) => {
                assert_eq!(f.meta().len(), f.header.meta_len as usize);
                let _ = cohort_core::__private::decode_message(f.meta());
            }
            Ok(None) => continue,
            Err(_) => break,
        }
    }
});
