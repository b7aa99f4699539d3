//! Values on the wire: serde in postcard's format, with a raw path that writes and reads vectors
//! of machine numbers as their bytes (docs/ARCHITECTURE.md, decisions 4 and 11).
//!
//! Two layouts, chosen by the value's type on both sides, so they always agree:
//! - a `Vec` of a machine number (`f64`, `f32`, `u8` ... `i64`) as a whole value (a result, a
//!   stored or put value) is its element count as a little-endian `u64`, then the elements'
//!   bytes ([`Body::Raw`]): encoding borrows the vector, and a large one is received straight
//!   into the `Vec` the caller gets ([`decode_frame`]);
//! - everything else, arguments tuples included, is postcard (`encode_into`, [`decode`]):
//!   varint integers, length-prefixed sequences, no trailing bytes accepted.
//!
//! # Why postcard
//!
//! bincode 1, the codec before, is unmaintained (RUSTSEC-2025-0141). Measured beside it on
//! cohort's own messages (the figures and how they were taken: docs/ARCHITECTURE.md, decision
//! 11), postcard decodes as fast, encodes a small message 5 to 15 ns slower once it writes into
//! the vector directly (`encode_into`; some 0.2 µs per remote call either way), and its
//! messages are half the size. Its wire format is specified and stable since 1.0, it is
//! serde-native (cohort's values are any `Serialize` type), licensed MIT OR Apache-2.0, and
//! depends on serde and cobs only. Against hostile input it is the one that bounds what it
//! allocates by what it received: a sequence whose length prefix claims more elements than
//! bytes remain is read without preallocation, so 24 bytes claiming 2^32 elements fail after
//! allocating a few hundred bytes, where bincode 1 and bitcode allocate 1 MiB first. (Maps are
//! the exception in every serde format: serde preallocates up to 1 MiB of entries whatever the
//! input; bounded, not proportional.) The raw path checks its count against the bytes before
//! allocating. wincode and rkyv have their own traits instead of serde and could not carry
//! users' types; bitcode's serde path is ten to thirty times slower on small messages and its
//! format may change between versions.
//!
//! postcard's errors carry no message: cohort's own types report theirs with [`de_error`] and
//! [`ser_error`], which the codec's error then shows; another type's custom error (or serde's
//! own, an unknown variant) reads "the value did not decode as its type".

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;

/// Why a value could not be encoded or decoded: the codec's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

impl CodecError {
    /// An error with this message.
    pub fn new(why: impl Into<String>) -> CodecError {
        CodecError(why.into())
    }
}

impl From<postcard::Error> for CodecError {
    fn from(e: postcard::Error) -> CodecError {
        let kept = match e {
            postcard::Error::SerdeDeCustom | postcard::Error::SerdeSerCustom => {
                CUSTOM.with(|c| c.take())
            }
            _ => None,
        };
        CodecError(kept.unwrap_or_else(|| {
            match e {
                // serde's own errors (an unknown variant, an invalid value) are custom ones too.
                postcard::Error::SerdeDeCustom => {
                    "the value did not decode as its type (the codec keeps no message: an invalid \
                 value or enum variant, or the type's own check)"
                        .into()
                }
                e => e.to_string(),
            }
        }))
    }
}

thread_local! {
    /// The message of the last [`de_error`] or [`ser_error`] on this thread: postcard's errors
    /// carry none, so the codec keeps it here for the error it reports.
    static CUSTOM: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A deserialization error whose message reaches the caller (`D::Error::custom(msg)` alone
/// would lose it in postcard). For the `Deserialize` impls of cohort's own types.
pub fn de_error<E: serde::de::Error>(msg: impl std::fmt::Display) -> E {
    let msg = msg.to_string();
    let e = E::custom(&msg);
    CUSTOM.with(|c| *c.borrow_mut() = Some(msg));
    e
}

/// A serialization error whose message reaches the caller (as [`de_error`]).
pub fn ser_error<E: serde::ser::Error>(msg: impl std::fmt::Display) -> E {
    let msg = msg.to_string();
    let e = E::custom(&msg);
    CUSTOM.with(|c| *c.borrow_mut() = Some(msg));
    e
}

/// The header written before a [`Body::Raw`]'s bytes (at most 10 bytes).
#[derive(Debug, Clone, Copy)]
pub struct Prefix {
    buf: [u8; 10],
    len: u8,
}

impl Prefix {
    /// A raw vector's element count: 8 bytes, little-endian.
    pub fn count(n: usize) -> Prefix {
        let mut buf = [0u8; 10];
        buf[..8].copy_from_slice(&(n as u64).to_le_bytes());
        Prefix { buf, len: 8 }
    }
    /// The codec's header of a byte string of `n` bytes (what a `serialize_bytes` of them
    /// writes before the bytes).
    pub fn byte_string(n: usize) -> Prefix {
        let mut buf = [0u8; 10];
        let len = postcard::to_slice(&(n as u64), &mut buf)
            .expect("a varint fits in 10 bytes")
            .len() as u8;
        Prefix { buf, len }
    }
    /// The header's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// An encoded value: owned bytes, or a header and borrowed bytes written as they are.
pub enum Body<'a> {
    /// Bytes produced by the encoder.
    Owned(Vec<u8>),
    /// Bytes encoded earlier.
    Borrowed(&'a [u8]),
    /// A header and bytes not copied: a vector of numbers, or a byte string.
    Raw {
        /// Written first.
        prefix: Prefix,
        /// Written after it.
        bytes: &'a [u8],
    },
}

impl Body<'_> {
    /// Total encoded length.
    pub fn len(&self) -> usize {
        match self {
            Body::Owned(v) => v.len(),
            Body::Borrowed(v) => v.len(),
            Body::Raw { prefix, bytes } => prefix.as_slice().len() + bytes.len(),
        }
    }
    /// True for an empty encoding (a unit value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The parts to write, in order.
    pub fn parts(&self) -> [&[u8]; 2] {
        match self {
            Body::Owned(v) => [v.as_slice(), &[]],
            Body::Borrowed(v) => [v, &[]],
            Body::Raw { prefix, bytes } => [prefix.as_slice(), bytes],
        }
    }
    /// Copies into one vector.
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Body::Owned(v) => v,
            Body::Borrowed(v) => v.to_vec(),
            Body::Raw { prefix, bytes } => {
                let mut v = Vec::with_capacity(prefix.as_slice().len() + bytes.len());
                v.extend_from_slice(prefix.as_slice());
                v.extend_from_slice(bytes);
                v
            }
        }
    }
}

macro_rules! for_each_number {
    ($m:ident) => {
        $m!(f64);
        $m!(f32);
        $m!(u8);
        $m!(i8);
        $m!(u16);
        $m!(i16);
        $m!(u32);
        $m!(i32);
        $m!(u64);
        $m!(i64);
    };
}

/// Encodes a whole value: a vector of numbers on the raw path, anything else with the codec.
pub fn encode<T: Serialize + 'static>(value: &T) -> Result<Body<'_>, CodecError> {
    let any = value as &dyn Any;
    macro_rules! raw {
        ($t:ty) => {
            if cfg!(target_endian = "little") {
                if let Some(v) = any.downcast_ref::<Vec<$t>>() {
                    return Ok(Body::Raw {
                        prefix: Prefix::count(v.len()),
                        bytes: bytemuck::cast_slice(v.as_slice()),
                    });
                }
            }
        };
    }
    for_each_number!(raw);
    let mut out = Vec::new();
    encode_into(&mut out, value)?;
    Ok(Body::Owned(out))
}

/// Appends postcard's writes to a vector as they come (its `to_extend` pushes each slice
/// byte by byte, five times slower on a message).
struct Append<'a>(&'a mut Vec<u8>);

impl Append<'_> {
    /// Room for a typical argument tuple at the first byte (an empty one allocates nothing):
    /// growing from nothing took five reallocations for two arrays' handles.
    #[inline]
    fn first_room(&mut self) {
        if self.0.capacity() == 0 {
            self.0.reserve(256);
        }
    }
}

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();
    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.first_room();
        self.0.extend_from_slice(data);
        Ok(())
    }
    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.first_room();
        self.0.push(data);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the codec's encoding of `value` to `out`, in one pass (the `Serialize` of a remote
/// reference splits its weight, so it must run once). No raw path: for arguments and for values
/// borrowed from a larger structure. On an error `out` is as it was.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), CodecError> {
    let at = out.len();
    CUSTOM.with(|c| c.take());
    postcard::serialize_with_flavor(value, Append(out)).map_err(|e| {
        out.truncate(at);
        CodecError::from(e)
    })
}

/// Encodes a borrowed value with the codec (as [`encode_into`]), with the error a caller sees:
/// what could not be encoded, for which function.
pub(crate) fn encode_value<T: Serialize + ?Sized>(
    v: &T,
    name: &str,
) -> crate::base::error::Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_into(&mut out, v).map_err(|e| crate::base::error::Error::Codec {
        action: "encode",
        what: format!("arguments of {name}"),
        pid: crate::base::ids::myid(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Encodes a whole value into owned bytes.
pub fn encode_vec<T: Serialize + 'static>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode(value).map(Body::into_vec)
}

/// Decodes what [`encode`] produced; the whole input must be consumed.
pub fn decode<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, CodecError> {
    macro_rules! raw {
        ($t:ty) => {
            if cfg!(target_endian = "little")
                && std::any::TypeId::of::<T>() == std::any::TypeId::of::<Vec<$t>>()
            {
                let v: Vec<$t> = decode_raw(bytes)?;
                let boxed: Box<dyn Any> = Box::new(v);
                return Ok(*boxed.downcast::<T>().expect("TypeId matched"));
            }
        };
    }
    for_each_number!(raw);
    decode_serde(bytes)
}

/// Decodes what [`encode_into`] produced; the whole input must be consumed.
pub(crate) fn decode_serde<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    CUSTOM.with(|c| c.take());
    match postcard::take_from_bytes(bytes)? {
        (v, []) => Ok(v),
        (_, rest) => Err(CodecError(format!(
            "{} trailing bytes after the value",
            rest.len()
        ))),
    }
}

/// The bytes of a byte string encoded whole (a [`Prefix::byte_string`] and its bytes), borrowed.
pub(crate) fn decode_byte_string(bytes: &[u8]) -> Result<&[u8], CodecError> {
    match postcard::take_from_bytes::<&[u8]>(bytes)? {
        (v, []) => Ok(v),
        (_, rest) => Err(CodecError(format!(
            "{} trailing bytes after a byte string",
            rest.len()
        ))),
    }
}

/// Decodes the body of a frame, taking a raw vector of 8-byte numbers over without a copy.
pub fn decode_frame<T: DeserializeOwned + 'static>(
    frame: crate::wire::frame::Frame,
) -> Result<T, CodecError> {
    macro_rules! zero_copy {
        ($t:ty) => {
            if cfg!(target_endian = "little")
                && std::any::TypeId::of::<T>() == std::any::TypeId::of::<Vec<$t>>()
            {
                let frame = match frame.into_raw8::<$t>() {
                    Ok(v) => {
                        let boxed: Box<dyn Any> = Box::new(v);
                        return Ok(*boxed.downcast::<T>().expect("TypeId matched"));
                    }
                    Err(f) => f,
                };
                return decode(&frame.body());
            }
        };
    }
    zero_copy!(f64);
    zero_copy!(u64);
    zero_copy!(i64);
    decode(&frame.body())
}

/// A raw vector; the count is checked against the bytes before anything is allocated.
fn decode_raw<T: bytemuck::Pod>(bytes: &[u8]) -> Result<Vec<T>, CodecError> {
    if bytes.len() < 8 {
        return Err(CodecError(format!(
            "{} bytes is too short for a vector",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let data = &bytes[8..];
    let size = std::mem::size_of::<T>() as u64;
    if n.checked_mul(size) != Some(data.len() as u64) {
        return Err(CodecError(format!(
            "vector of {n} elements of {size} bytes does not match {} bytes",
            data.len()
        )));
    }
    let mut v = zeroed_vec::<T>(n as usize);
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(data);
    Ok(v)
}

pub use crate::base::mem::{advise_huge, zeroed_vec};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{header_for, tail_buffer, Frame, LARGE};

    #[test]
    fn raw_path_is_count_then_elements_and_borrows_the_vector() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
        let body = encode(&v).unwrap();
        match &body {
            Body::Raw { prefix, bytes } => {
                assert_eq!(prefix.as_slice(), 1000u64.to_le_bytes());
                assert_eq!(bytes.as_ptr(), v.as_ptr().cast::<u8>());
                assert_eq!(bytes.len(), 8000);
            }
            _ => panic!("a Vec<f64> takes the raw path"),
        }
        let fast = body.into_vec();
        assert_eq!(&fast[16..24], 0.5f64.to_le_bytes());
        let back: Vec<f64> = decode(&fast).unwrap();
        assert_eq!(back, v);
        let w: Vec<i32> = vec![-1, 2, -3];
        assert_eq!(
            encode_vec(&w).unwrap(),
            [3, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 2, 0, 0, 0, 253, 255, 255, 255]
        );
        assert_eq!(decode::<Vec<i32>>(&encode_vec(&w).unwrap()).unwrap(), w);
    }

    /// A large frame whose body is a raw vector becomes the caller's `Vec` without a copy:
    /// the result is the frame's own tail allocation.
    #[test]
    fn large_raw_vector_is_received_without_a_copy() {
        let n = LARGE / 8 + 3;
        let meta = [7u8, 7];
        let mut head = meta.to_vec();
        head.extend_from_slice(&(n as u64).to_le_bytes());
        let mut tail = tail_buffer(n * 8);
        for (i, w) in tail.iter_mut().enumerate() {
            *w = (i as f64 * 1.5).to_bits();
        }
        let at = tail.as_ptr();
        let frame = Frame::from_parts(header_for(9, meta.len(), 8 + n * 8), head, Some(tail));
        let v: Vec<f64> = decode_frame(frame).unwrap();
        assert_eq!(v.as_ptr().cast::<u64>(), at);
        assert_eq!(v.len(), n);
        assert_eq!(v[n - 1], (n - 1) as f64 * 1.5);
    }

    #[test]
    fn generic_values_roundtrip_and_reject_garbage() {
        let x = (String::from("hi"), 3u8, Some(vec![1.5f32]));
        let b = encode_vec(&x).unwrap();
        // postcard: length-prefixed string, the byte, `Some`, a one-element sequence, the float.
        assert_eq!(b, [2, b'h', b'i', 3, 1, 1, 0, 0, 0xc0, 0x3f]);
        assert_eq!(decode::<(String, u8, Option<Vec<f32>>)>(&b).unwrap(), x);
        assert!(decode::<(String, u8)>(&b[..3]).is_err());
        let mut long = b.clone();
        long.push(0);
        assert_eq!(
            decode::<(String, u8, Option<Vec<f32>>)>(&long).unwrap_err(),
            CodecError::new("1 trailing bytes after the value")
        );
        let bad = [255u8, 255, 255, 255, 255, 255, 255, 255, 1];
        assert_eq!(
            decode::<Vec<f64>>(&bad).unwrap_err(),
            CodecError::new(
                "vector of 18446744073709551615 elements of 8 bytes does not match 1 bytes"
            )
        );
        assert!(decode::<Vec<String>>(&bad).is_err());
    }

    /// A type whose decoding checks its value, as cohort's references and arrays do.
    #[derive(Debug)]
    struct Even(u32);
    impl<'de> serde::Deserialize<'de> for Even {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Even, D::Error> {
            let n = u32::deserialize(d)?;
            match n % 2 {
                0 => Ok(Even(n)),
                _ => Err(de_error(format!("{n} is odd"))),
            }
        }
    }
    struct Refused;
    impl Serialize for Refused {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser_error("refused to travel"))
        }
    }

    #[test]
    fn custom_errors_keep_their_message() {
        assert_eq!(decode::<(Even,)>(&[4]).unwrap().0 .0, 4);
        assert_eq!(
            decode::<(Even,)>(&[3]).unwrap_err(),
            CodecError::new("3 is odd")
        );
        // A plain `custom` (serde's own, here an unknown variant) has no message to keep, and
        // the one before it is not reported again.
        assert_eq!(
            decode::<Option<u8>>(&[7]).unwrap_err(),
            CodecError::new("Found an Option discriminant that wasn't 0 or 1")
        );
        #[derive(Debug, serde::Deserialize)]
        enum Two {
            _A,
            _B,
        }
        let _ = decode::<(Even,)>(&[5]);
        assert!(decode::<Two>(&[9])
            .unwrap_err()
            .to_string()
            .starts_with("the value did not decode as its type"));
        let mut out = vec![1, 2];
        assert_eq!(
            encode_into(&mut out, &(5u8, Refused)).unwrap_err(),
            CodecError::new("refused to travel")
        );
        assert_eq!(out, [1, 2], "nothing is left of a failed encoding");
    }

    #[test]
    fn byte_string_prefix_is_the_codecs_header() {
        for n in [0usize, 5, 127, 128, 300, 1 << 20] {
            let bytes: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let p = Prefix::byte_string(n);
            let mut whole = p.as_slice().to_vec();
            whole.extend_from_slice(&bytes);
            let mut serde_bytes = Vec::new();
            encode_into(&mut serde_bytes, &(bytes.as_slice(),)).unwrap();
            assert_eq!(whole, serde_bytes, "{n}");
            assert_eq!(decode_byte_string(&whole).unwrap(), bytes.as_slice());
        }
        assert_eq!(Prefix::byte_string(300).as_slice(), [0xac, 0x02]);
        assert!(decode_byte_string(&[5, 1, 2]).is_err());
        assert!(decode_byte_string(&[1, 1, 2]).is_err());
    }
}
