//! Values on the wire: serde with bincode's fixed-width little-endian format, with a fast path
//! that writes and reads vectors of machine numbers as raw bytes (docs/ARCHITECTURE.md, decision 4).
//!
//! The fast path produces exactly the bytes bincode would (a `u64` length, then the elements
//! little-endian), so either side may take either path: it only saves the per-element loop.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;

/// An encoded value: owned bytes, or a length prefix and borrowed raw bytes written as they are.
pub enum Body<'a> {
    /// Bytes produced by the encoder.
    Owned(Vec<u8>),
    /// Bytes encoded earlier.
    Borrowed(&'a [u8]),
    /// A vector of numbers: the `u64` element count and the elements' bytes, not copied.
    Raw {
        /// Element count, little-endian.
        prefix: [u8; 8],
        /// The elements.
        bytes: &'a [u8],
    },
}

impl Body<'_> {
    /// Total encoded length.
    pub fn len(&self) -> usize {
        match self {
            Body::Owned(v) => v.len(),
            Body::Borrowed(v) => v.len(),
            Body::Raw { bytes, .. } => 8 + bytes.len(),
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
                let mut v = Vec::with_capacity(8 + bytes.len());
                v.extend_from_slice(&prefix);
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

/// Encodes a value.
pub fn encode<T: Serialize + 'static>(value: &T) -> Result<Body<'_>, bincode::Error> {
    let any = value as &dyn Any;
    macro_rules! raw {
        ($t:ty) => {
            if cfg!(target_endian = "little") {
                if let Some(v) = any.downcast_ref::<Vec<$t>>() {
                    return Ok(Body::Raw {
                        prefix: (v.len() as u64).to_le_bytes(),
                        bytes: bytemuck::cast_slice(v.as_slice()),
                    });
                }
            }
        };
    }
    for_each_number!(raw);
    // One pass: `bincode::serialize` sizes the value with a first pass, which would run the
    // `Serialize` of a remote reference twice (and split its weight twice).
    let mut out = Vec::new();
    encode_into(&mut out, value)?;
    Ok(Body::Owned(out))
}

/// The one bincode configuration of cohort: fixed-width little-endian integers (the bytes of
/// `bincode::serialize`), no trailing bytes accepted.
pub(crate) fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// Appends the encoding of `value` to `out` in one pass (`bincode::serialize` sizes a value
/// with a first pass, which would run the `Serialize` of a remote reference twice and split
/// its weight twice). No raw fast path: for values borrowed from a larger structure.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), bincode::Error> {
    use bincode::Options;
    options().serialize_into(out, value)
}

/// Encodes a borrowed value (the same bytes as [`encode`]), with the error a caller sees:
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

/// Encodes a value into owned bytes.
pub fn encode_vec<T: Serialize + 'static>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    encode(value).map(Body::into_vec)
}

/// Decodes a value; the whole input must be consumed.
pub fn decode<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, bincode::Error> {
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
    use bincode::Options;
    options().deserialize(bytes)
}

/// Decodes the body of a frame, taking a raw vector of 8-byte numbers over without a copy.
pub fn decode_frame<T: DeserializeOwned + 'static>(
    frame: crate::wire::frame::Frame,
) -> Result<T, bincode::Error> {
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

fn decode_raw<T: bytemuck::Pod>(bytes: &[u8]) -> Result<Vec<T>, bincode::Error> {
    let bad = |why: String| Box::new(bincode::ErrorKind::Custom(why));
    if bytes.len() < 8 {
        return Err(bad(format!(
            "{} bytes is too short for a vector",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let data = &bytes[8..];
    let size = std::mem::size_of::<T>() as u64;
    if n.checked_mul(size) != Some(data.len() as u64) {
        return Err(bad(format!(
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

    #[test]
    fn raw_path_matches_bincode() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
        let fast = encode(&v).unwrap().into_vec();
        assert_eq!(fast, bincode::serialize(&v).unwrap());
        let back: Vec<f64> = decode(&fast).unwrap();
        assert_eq!(back, v);
        let w: Vec<i32> = vec![-1, 2, -3];
        assert_eq!(decode::<Vec<i32>>(&encode_vec(&w).unwrap()).unwrap(), w);
    }

    #[test]
    fn generic_values_roundtrip_and_reject_garbage() {
        let x = (String::from("hi"), 3u8, Some(vec![1.5f32]));
        let b = encode_vec(&x).unwrap();
        assert_eq!(decode::<(String, u8, Option<Vec<f32>>)>(&b).unwrap(), x);
        assert!(decode::<(String, u8)>(&b[..3]).is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(decode::<(String, u8, Option<Vec<f32>>)>(&long).is_err());
        let bad = [255u8, 255, 255, 255, 255, 255, 255, 255, 1];
        assert!(decode::<Vec<f64>>(&bad).is_err());
        assert!(decode::<Vec<String>>(&bad).is_err());
    }
}
