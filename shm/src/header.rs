//! The checked header at offset 0 of every segment and file, and the size arithmetic.
//!
//! Layout of an object: `[Header, zero padding][data at DATA_OFFSET]`. The data starts on a
//! page boundary (4096 bytes in), so it is aligned for any element type with alignment up to a
//! page and every pid's page-aligned share can be prefaulted on its own.
//!
//! The header is written once by the creator and never again. Its first field, `magic`, is
//! written last with a release store and read first with an acquire load, so a process that sees
//! the magic sees the whole header (and a half-written header reads as "no magic").

use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::{Pod, Zeroable};

use crate::error::ShmError;
use crate::ids::{Backing, ElemInfo, SegmentId};
use crate::index::checked_len;

/// `b"COHORTSA"` read as a native-endian `u64`; reads differently on a host of other byte order.
const MAGIC: u64 = u64::from_ne_bytes(*b"COHORTSA");
/// Version of this layout. Bump on any change to [`Header`] or [`DATA_OFFSET`].
const LAYOUT_VERSION: u32 = 1;
/// Byte offset of the first element.
pub(crate) const DATA_OFFSET: usize = 4096;
/// Most dimensions an array may have.
pub const MAX_DIMS: usize = 16;
/// Bytes of the element type's name kept in the header (for error messages; the check uses a
/// hash of the whole name).
const TYPE_NAME_CAP: usize = 256; // an array length bytemuck implements Pod for

/// The header at offset 0. All fields native-endian; no padding (it is `Pod`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Header {
    magic: u64,
    version: u32,
    ndims: u32,
    id: [u64; 2],
    elem_size: u64,
    elem_align: u64,
    data_offset: u64,
    len: u64,
    type_hash: u64,
    type_name_len: u64,
    dims: [u64; MAX_DIMS],
    type_name: [u8; TYPE_NAME_CAP],
}

const _: () = assert!(std::mem::size_of::<Header>() <= DATA_OFFSET);
const _: () = assert!(std::mem::align_of::<Header>() <= 4096);

/// FNV-1a, 64 bits: a stable hash of the type name (std's hasher is not stable across builds).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The element count and the total object size in bytes (header included), checked.
///
/// An array without data bytes (a zero dim, or a zero-sized element type) is a header-only
/// object: it is created, attached, closed and released like any other, and `mmap` is never
/// asked for zero bytes.
pub(crate) fn layout(elem: &ElemInfo, dims: &[usize]) -> Result<(usize, usize), ShmError> {
    let (len, bytes) = data_layout(elem, dims)?;
    let total = bytes
        .checked_add(DATA_OFFSET)
        .filter(|&t| isize::try_from(t).is_ok() && i64::try_from(t).is_ok())
        .ok_or_else(|| ShmError::TooLarge {
            dims: dims.to_vec(),
            elem_size: elem.size,
        })?;
    Ok((len, total))
}

/// The element count and the data's size in bytes, checked as in [`layout`] (for an object
/// without header: a raw file mapping).
pub(crate) fn data_layout(elem: &ElemInfo, dims: &[usize]) -> Result<(usize, usize), ShmError> {
    if dims.len() > MAX_DIMS {
        return Err(ShmError::TooManyDims {
            ndims: dims.len(),
            max: MAX_DIMS,
        });
    }
    let too_large = || ShmError::TooLarge {
        dims: dims.to_vec(),
        elem_size: elem.size,
    };
    // ndarray needs the product of the non-zero dims within isize::MAX even for an empty
    // array or a zero-sized element type, whose data takes no bytes.
    let len = checked_len(dims).ok_or_else(too_large)?;
    let nonzero: Vec<usize> = dims.iter().copied().filter(|&d| d != 0).collect();
    checked_len(&nonzero)
        .filter(|&n| isize::try_from(n).is_ok())
        .ok_or_else(too_large)?;
    if !elem.align.is_power_of_two() || elem.align > DATA_OFFSET {
        return Err(ShmError::Unsupported {
            reason: format!(
                "element type {} has alignment {}, above the {DATA_OFFSET}-byte data alignment",
                elem.type_name, elem.align
            ),
        });
    }
    let bytes = len
        .checked_mul(elem.size)
        .filter(|&t| isize::try_from(t).is_ok() && i64::try_from(t).is_ok())
        .ok_or_else(too_large)?;
    Ok((len, bytes))
}

fn describe(name: &str, size: u64, align: u64) -> String {
    format!("{name} (size {size}, align {align})")
}

impl Header {
    /// A header for a new object (magic still zero; [`Header::publish`] sets it).
    pub(crate) fn new(id: SegmentId, elem: &ElemInfo, dims: &[usize], len: usize) -> Header {
        let mut h = Header::zeroed();
        h.version = LAYOUT_VERSION;
        h.ndims = dims.len() as u32; // <= MAX_DIMS, checked by `layout`
        h.id = [id.0 as u64, (id.0 >> 64) as u64];
        h.elem_size = elem.size as u64;
        h.elem_align = elem.align as u64;
        h.data_offset = DATA_OFFSET as u64;
        h.len = len as u64;
        h.type_hash = fnv1a64(elem.type_name.as_bytes());
        let name = elem.type_name.as_bytes();
        let n = name.len().min(TYPE_NAME_CAP);
        h.type_name[..n].copy_from_slice(&name[..n]);
        h.type_name_len = n as u64;
        for (slot, &d) in h.dims.iter_mut().zip(dims) {
            *slot = d as u64;
        }
        h
    }

    /// Write the header at `base`, magic last with release ordering.
    ///
    /// # Safety
    /// `base` must be valid for writes of [`DATA_OFFSET`] bytes, aligned to 8, and no other
    /// thread or process may access those bytes until the magic is visible.
    pub(crate) unsafe fn publish(mut self, base: *mut u8) {
        self.magic = 0;
        // SAFETY: the caller guarantees `base` is writable for DATA_OFFSET >= size_of::<Header>()
        // bytes and 8-aligned (Header's alignment), and that nobody reads them yet.
        unsafe { base.cast::<Header>().write(self) };
        // SAFETY: `magic` is the first field, at `base`, 8-aligned and inside the mapping; from
        // here on it is only accessed atomically by cohort (readers use `Header::read`).
        let magic = unsafe { AtomicU64::from_ptr(base.cast::<u64>()) };
        magic.store(MAGIC, Ordering::Release);
    }

    /// Read the header at `base`: the magic with acquire ordering, then the rest.
    ///
    /// # Safety
    /// `base` must be valid for reads of [`DATA_OFFSET`] bytes and aligned to 8.
    pub(crate) unsafe fn read(base: *const u8, object: &Backing) -> Result<Header, ShmError> {
        // SAFETY: `base` is 8-aligned and readable (caller); the magic is only written atomically.
        let magic = unsafe { AtomicU64::from_ptr(base.cast::<u64>().cast_mut()) };
        let seen = magic.load(Ordering::Acquire);
        if seen != MAGIC {
            return Err(ShmError::BadHeader {
                object: object.clone(),
                reason: format!(
                    "magic {seen:#018x}, expected {MAGIC:#018x} (not a cohort array, still being \
                     created, or written on a host of other byte order)"
                ),
            });
        }
        // SAFETY: readable and aligned (caller); after the magic's acquire load the creator's
        // writes of the other fields are visible, and nobody writes the header afterwards.
        let h = unsafe { base.cast::<Header>().read() };
        if h.version != LAYOUT_VERSION {
            return Err(ShmError::BadHeader {
                object: object.clone(),
                reason: format!("layout version {}, expected {LAYOUT_VERSION}", h.version),
            });
        }
        if h.ndims as usize > MAX_DIMS || h.data_offset != DATA_OFFSET as u64 {
            return Err(ShmError::BadHeader {
                object: object.clone(),
                reason: format!("corrupt: {} dims, data offset {}", h.ndims, h.data_offset),
            });
        }
        Ok(h)
    }

    pub(crate) fn id(&self) -> SegmentId {
        SegmentId(u128::from(self.id[0]) | (u128::from(self.id[1]) << 64))
    }

    pub(crate) fn dims(&self) -> Vec<usize> {
        // Values came from usize on this host (same host: checked by the handle).
        self.dims[..self.ndims as usize]
            .iter()
            .map(|&d| d as usize)
            .collect()
    }

    /// The recorded element type (name as stored, possibly truncated).
    pub(crate) fn elem(&self) -> ElemInfo {
        let n = (self.type_name_len as usize).min(TYPE_NAME_CAP);
        ElemInfo {
            type_name: String::from_utf8_lossy(&self.type_name[..n]).into_owned(),
            size: self.elem_size as usize,
            align: self.elem_align as usize,
        }
    }

    /// Check the header against what the opener expects and against the object's size.
    pub(crate) fn check(
        &self,
        object: &Backing,
        id: Option<SegmentId>,
        elem: &ElemInfo,
        dims: &[usize],
        size: u64,
    ) -> Result<(), ShmError> {
        if let Some(id) = id {
            if self.id() != id {
                return Err(ShmError::BadHeader {
                    object: object.clone(),
                    reason: format!("segment id {}, expected {id}", self.id()),
                });
            }
        }
        let same_type = self.type_hash == fnv1a64(elem.type_name.as_bytes())
            && self.elem_size == elem.size as u64
            && self.elem_align == elem.align as u64;
        if !same_type {
            let found = self.elem();
            return Err(ShmError::TypeMismatch {
                object: object.clone(),
                expected: describe(&elem.type_name, elem.size as u64, elem.align as u64),
                found: describe(&found.type_name, self.elem_size, self.elem_align),
            });
        }
        let found = self.dims();
        if found != dims {
            return Err(ShmError::ShapeMismatch {
                object: object.clone(),
                expected: dims.to_vec(),
                found,
            });
        }
        let data = self
            .len
            .checked_mul(self.elem_size)
            .and_then(|b| b.checked_add(self.data_offset));
        if checked_len(&found).map(|n| n as u64) != Some(self.len) || data != Some(size) {
            return Err(ShmError::BadHeader {
                object: object.clone(),
                reason: format!(
                    "corrupt: {} elements of {} bytes for dims {found:?} in {size} bytes",
                    self.len, self.elem_size
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_checks() {
        let f64s = ElemInfo::of::<f64>();
        assert_eq!(layout(&f64s, &[3, 4]).unwrap(), (12, DATA_OFFSET + 96));
        assert_eq!(data_layout(&f64s, &[3, 4]).unwrap(), (12, 96));
        assert_eq!(data_layout(&f64s, &[3, 0]).unwrap(), (0, 0));
        assert_eq!(layout(&f64s, &[]).unwrap(), (1, DATA_OFFSET + 8));
        // No data bytes: a header-only object.
        assert_eq!(layout(&f64s, &[0]).unwrap(), (0, DATA_OFFSET));
        assert_eq!(layout(&f64s, &[3, 0]).unwrap(), (0, DATA_OFFSET));
        assert_eq!(layout(&f64s, &[0, 4, 5]).unwrap(), (0, DATA_OFFSET));
        let unit = ElemInfo::of::<()>();
        assert_eq!(layout(&unit, &[3]).unwrap(), (3, DATA_OFFSET));
        assert_eq!(layout(&unit, &[]).unwrap(), (1, DATA_OFFSET));
        assert_eq!(
            layout(&unit, &[isize::MAX as usize]).unwrap(),
            (isize::MAX as usize, DATA_OFFSET)
        );
        // Counts beyond isize::MAX stay an error, with no bytes or with a zero dim too.
        assert!(matches!(
            layout(&unit, &[isize::MAX as usize + 1]),
            Err(ShmError::TooLarge { elem_size: 0, .. })
        ));
        assert!(matches!(
            layout(&unit, &[usize::MAX, 2]),
            Err(ShmError::TooLarge { .. })
        ));
        assert!(matches!(
            layout(&f64s, &[0, usize::MAX, 2]),
            Err(ShmError::TooLarge { .. })
        ));
        assert!(matches!(
            layout(&f64s, &[usize::MAX, 0]),
            Err(ShmError::TooLarge { .. })
        ));
        assert!(matches!(
            layout(&f64s, &[usize::MAX, 2]),
            Err(ShmError::TooLarge { .. })
        ));
        assert!(matches!(
            layout(&f64s, &[usize::MAX / 4]),
            Err(ShmError::TooLarge { .. })
        ));
        assert!(matches!(
            layout(&f64s, &[1; 17]),
            Err(ShmError::TooManyDims { ndims: 17, .. })
        ));
    }

    #[test]
    fn header_roundtrip_and_checks() {
        #[repr(C, align(8))]
        struct Page([u8; DATA_OFFSET]);
        let mut page = Box::new(Page([0; DATA_OFFSET]));
        let base = page.0.as_mut_ptr();
        let elem = ElemInfo::of::<u32>();
        let id = SegmentId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let obj = Backing::Shm {
            creator: 1,
            fd: 3,
            dev: 0,
            ino: 4,
        };
        // SAFETY: `base` is a private, 8-aligned DATA_OFFSET-byte buffer.
        let err = unsafe { Header::read(base, &obj) }.err().unwrap();
        assert!(matches!(err, ShmError::BadHeader { .. }), "{err}");
        // SAFETY: as above.
        unsafe { Header::new(id, &elem, &[3, 4], 12).publish(base) };
        // SAFETY: as above.
        let h = unsafe { Header::read(base, &obj) }.unwrap();
        assert_eq!(h.id(), id);
        assert_eq!(h.dims(), vec![3, 4]);
        assert_eq!(h.elem(), elem);
        let size = (DATA_OFFSET + 48) as u64;
        h.check(&obj, Some(id), &elem, &[3, 4], size).unwrap();
        let e = h
            .check(&obj, Some(SegmentId(1)), &elem, &[3, 4], size)
            .unwrap_err();
        assert!(matches!(e, ShmError::BadHeader { .. }));
        let e = h
            .check(&obj, None, &ElemInfo::of::<f32>(), &[3, 4], size)
            .unwrap_err();
        assert!(e.to_string().contains("u32"), "{e}");
        let e = h.check(&obj, None, &elem, &[4, 3], size).unwrap_err();
        assert!(matches!(e, ShmError::ShapeMismatch { .. }));
        let e = h.check(&obj, None, &elem, &[3, 4], size + 1).unwrap_err();
        assert!(matches!(e, ShmError::BadHeader { .. }));
    }

    #[test]
    fn long_type_names_are_truncated_but_fully_checked() {
        let mut long = ElemInfo::of::<u8>();
        long.type_name = "x".repeat(500);
        let h = Header::new(SegmentId(7), &long, &[2], 2);
        assert_eq!(h.elem().type_name.len(), TYPE_NAME_CAP);
        let obj = Backing::Shm {
            creator: 1,
            fd: 3,
            dev: 0,
            ino: 4,
        };
        let size = (DATA_OFFSET + 2) as u64;
        h.check(&obj, None, &long, &[2], size).unwrap();
        let mut other = long.clone();
        other.type_name.push('y');
        assert!(h.check(&obj, None, &other, &[2], size).is_err());
    }
}
