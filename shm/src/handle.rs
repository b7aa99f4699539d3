//! What travels between processes: [`ShmHandle`], and the attach and lookup that turn one back
//! into this process's mapping of the object it names (a segment or a file).

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use cohort_core::Pid;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::error::ShmError;
use crate::file::{self, RawMode};
use crate::ids::{Backing, ElemInfo, HostId, SegmentId};
use crate::mapping::{self, Key, Mapping};
use crate::{index, segment};

/// Everything another process of this node needs to map an array: send it, then
/// [`attach`](crate::SharedArray::attach) on the other side.
///
/// It is plain data (serde), small, and checked on arrival: host, pid membership, element type,
/// dims, segment id and the object's size are all compared before anything is mapped.
///
/// On the wire it is one byte string: the codec's encoding of its fields, in the order below.
/// A [`SharedArray`](crate::SharedArray) sends the same bytes, encoded once per array value,
/// and a process that receives bytes it has checked before finds the array they name without
/// decoding them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmHandle {
    pub(crate) backing: Backing,
    pub(crate) id: SegmentId,
    pub(crate) dims: Vec<usize>,
    /// The dims of the array value the handle was made from: `dims` unless it was reshaped.
    pub(crate) shape: Vec<usize>,
    pub(crate) elem: ElemInfo,
    pub(crate) pids: Vec<Pid>,
    pub(crate) host: HostId,
    pub(crate) read_only: bool,
}

impl ShmHandle {
    /// Where the memory lives: the segment (its creator's descriptor and inode) or the file.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The segment's id.
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// The object's dims (column-major, as given at creation).
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The dims of the array value this handle was made from: [`dims`](Self::dims), unless
    /// that value is a [`reshape`](crate::SharedArray::reshape) of the object.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type.
    pub fn elem(&self) -> &ElemInfo {
        &self.elem
    }

    /// The pids that map the array (Julia's `procs(S)`), in partition order.
    pub fn pids(&self) -> &[Pid] {
        &self.pids
    }

    /// The host the handle was made on.
    pub fn host(&self) -> &HostId {
        &self.host
    }

    /// Whether the array is mapped read-only (file-backed arrays opened read-only, raw files
    /// in mode `"r"`); an attacher of a raw file opens it `"r"` when this is set, else `"r+"`.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Map the segment in this process without naming its element type, and pin the mapping in
    /// this process's registry until [`release`](crate::release).
    ///
    /// This is what a worker runs when the creator asks every pid to attach: the typed array is
    /// obtained later with [`SharedArray::lookup`](crate::SharedArray::lookup), which works even
    /// after the creator has closed the segment to attachers. Checks are those of
    /// [`SharedArray::attach`](crate::SharedArray::attach), minus the element type and the
    /// number of dimensions.
    pub fn attach(&self, myid: Pid) -> Result<(), ShmError> {
        attach_pinned(self, myid).map(drop)
    }

    /// Fault in pid `myid`'s `localindices` share of this process's mapping (see
    /// [`SharedArray::prefault`](crate::SharedArray::prefault)): what a pid runs right after
    /// [`attach`](Self::attach), so the first touch of its share is paid at construction.
    ///
    /// # Errors
    /// [`NotMapped`](ShmError::NotMapped) if this process has not attached; `madvise` errors.
    pub fn prefault_local(&self, myid: Pid) -> Result<(), ShmError> {
        let mapping = lookup(self)?;
        let share = match index::index_of(&self.pids, &myid) {
            Some(i) => index::split_part(mapping.len, self.pids.len(), i),
            None => 0..0,
        };
        mapping.prefault(share)
    }
}

/// A handle's fields in their wire order: what the byte string of a sent handle holds.
#[derive(Serialize, Deserialize)]
struct Fields {
    backing: Backing,
    id: SegmentId,
    dims: Vec<usize>,
    shape: Vec<usize>,
    elem: ElemInfo,
    pids: Vec<Pid>,
    host: HostId,
    read_only: bool,
}

impl ShmHandle {
    /// The byte string this handle travels as (the codec's encoding of its fields).
    pub(crate) fn wire_bytes(&self) -> Result<Box<[u8]>, cohort_core::codec::CodecError> {
        self.clone().into_wire_bytes()
    }

    /// [`wire_bytes`](Self::wire_bytes) of a handle built only to be sent.
    pub(crate) fn into_wire_bytes(self) -> Result<Box<[u8]>, cohort_core::codec::CodecError> {
        let h = self;
        let fields = Fields {
            backing: h.backing,
            id: h.id,
            dims: h.dims,
            shape: h.shape,
            elem: h.elem,
            pids: h.pids,
            host: h.host,
            read_only: h.read_only,
        };
        cohort_core::codec::encode_vec(&fields).map(Vec::into_boxed_slice)
    }

    /// The handle that a byte string of [`wire_bytes`](Self::wire_bytes) holds.
    pub(crate) fn from_wire(bytes: &[u8]) -> Result<ShmHandle, cohort_core::codec::CodecError> {
        let f: Fields = cohort_core::codec::decode(bytes)?;
        Ok(ShmHandle {
            backing: f.backing,
            id: f.id,
            dims: f.dims,
            shape: f.shape,
            elem: f.elem,
            pids: f.pids,
            host: f.host,
            read_only: f.read_only,
        })
    }
}

impl Serialize for ShmHandle {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.wire_bytes().map_err(serde::ser::Error::custom)?;
        serializer.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for ShmHandle {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(WithBytes(ShmHandle::from_wire))
    }
}

/// A serde visitor that hands the byte string it is given to its function.
pub(crate) struct WithBytes<F>(pub(crate) F);

impl<'de, T, F, E> serde::de::Visitor<'de> for WithBytes<F>
where
    F: FnOnce(&[u8]) -> Result<T, E>,
    E: std::fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a shared array's handle (a byte string)")
    }

    // The error's message is the codec's to report (`de_error`), not the format's wording.
    fn visit_bytes<Er: serde::de::Error>(self, v: &[u8]) -> Result<T, Er> {
        (self.0)(v).map_err(cohort_core::codec::de_error)
    }

    // A format that writes bytes as a sequence (a self-describing one) reads them back so.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        (self.0)(&v).map_err(cohort_core::codec::de_error)
    }
}

/// What a handle's bytes were found to name when they first arrived here, all checks passed: a
/// segment of this host that this process maps, with the array value's shape, pids and mode.
/// Only a later arrival of the very same bytes uses it, and only while this process still maps
/// that segment (each arrival asks the registry again), so it answers as a full decode would.
struct Known {
    id: SegmentId,
    elem: (&'static str, usize, usize),
    shape: SmallVec<[usize; 4]>,
    pids: Arc<[Pid]>,
    read_only: bool,
    /// The bytes themselves, for the arrays built from them to send on unchanged.
    wire: Arc<std::sync::OnceLock<Box<[u8]>>>,
}

/// The handles this process has received and checked, by their bytes (a per-step loop sends
/// the same arrays at every step). At most [`KNOWN_MAX`] entries: it is emptied when full.
static KNOWN: std::sync::Mutex<Option<FxHashMap<Box<[u8]>, Known>>> = std::sync::Mutex::new(None);
const KNOWN_MAX: usize = 64;

/// An array value as it arrives: its mapping, shape, pids, mode and bytes.
pub(crate) struct Arrival {
    pub(crate) map: Arc<Mapping>,
    pub(crate) shape: SmallVec<[usize; 4]>,
    pub(crate) pids: Arc<[Pid]>,
    pub(crate) read_only: bool,
    pub(crate) wire: Arc<std::sync::OnceLock<Box<[u8]>>>,
}

/// The array value that handle bytes `wire` name in this process, for elements `elem`
/// (`type_name`, size, align): found at once when the same bytes arrived before and this
/// process still maps their segment, else `None` (the caller decodes the handle, and
/// [`known`] records it once it has passed every check).
pub(crate) fn arrive(wire: &[u8], elem: (&'static str, usize, usize)) -> Option<Arrival> {
    let (id, shape, pids, read_only, bytes) = {
        let g = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        let k = g.as_ref()?.get(wire)?;
        if k.elem != elem {
            return None;
        }
        (
            k.id,
            k.shape.clone(),
            Arc::clone(&k.pids),
            k.read_only,
            Arc::clone(&k.wire),
        )
    };
    let map = mapping::get(&Key::Shm(id))?;
    Some(Arrival {
        map,
        shape,
        pids,
        read_only,
        wire: bytes,
    })
}

/// Records that handle bytes `wire`, decoded to `handle`, passed every check of an arrival for
/// elements `elem` (segments only: a file's handle is looked up by its path each time, as the
/// file may have been replaced). Returns the shared copy of the bytes for the array built.
pub(crate) fn known(
    wire: &[u8],
    handle: &ShmHandle,
    elem: (&'static str, usize, usize),
) -> Arc<std::sync::OnceLock<Box<[u8]>>> {
    let bytes = Arc::new(std::sync::OnceLock::from(Box::<[u8]>::from(wire)));
    if matches!(handle.backing, Backing::Shm { .. }) {
        let mut g = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        let table = g.get_or_insert_with(FxHashMap::default);
        if table.len() >= KNOWN_MAX {
            table.clear();
        }
        table.insert(
            wire.into(),
            Known {
                id: handle.id,
                elem,
                shape: handle.shape.iter().copied().collect(),
                pids: handle.pids.as_slice().into(),
                read_only: handle.read_only,
                wire: Arc::clone(&bytes),
            },
        );
    }
    bytes
}

/// Whether `pids` is non-empty and without repeats (checked on every arriving handle, so
/// without allocating: pairwise, for the few pids of a node).
fn distinct(pids: &[Pid]) -> bool {
    !pids.is_empty() && pids.iter().enumerate().all(|(i, p)| !pids[..i].contains(p))
}

/// Check the parts of a handle that do not depend on mapping anything.
pub(crate) fn check_handle(handle: &ShmHandle, myid: Option<Pid>) -> Result<(), ShmError> {
    let here = HostId::current();
    if handle.host != *here {
        return Err(ShmError::WrongHost {
            handle_host: handle.host.to_string(),
            this_host: here.to_string(),
        });
    }
    check_pids(&handle.pids)?;
    if let Some(pid) = myid {
        if !handle.pids.contains(&pid) {
            return Err(ShmError::NotInPids {
                pid,
                pids: handle.pids.clone(),
            });
        }
    }
    Ok(())
}

/// Pids must be non-empty and distinct.
pub(crate) fn check_pids(pids: &[Pid]) -> Result<(), ShmError> {
    if !distinct(pids) {
        return Err(ShmError::InvalidPids {
            pids: pids.to_vec(),
        });
    }
    Ok(())
}

/// Map the object of `handle` (or reuse this process's mapping of it) and pin it.
pub(crate) fn attach_pinned(handle: &ShmHandle, myid: Pid) -> Result<Arc<Mapping>, ShmError> {
    check_handle(handle, Some(myid))?;
    let _opening = mapping::open_lock();
    let map = match &handle.backing {
        Backing::Shm { .. } => match mapping::get(&Key::Shm(handle.id)) {
            Some(m) => m,
            None => segment::open(&handle.backing, handle.id, &handle.elem, &handle.dims)?,
        },
        Backing::File { path } => file::open_locked(
            path,
            &handle.elem,
            &handle.dims,
            handle.read_only,
            Some(handle.id),
        )?,
        // Attachers never create or truncate (Julia's workers open "r+" where the creator
        // used "w+"), and they map the creator's file: the same device and inode.
        Backing::RawFile {
            path,
            offset,
            dev,
            ino,
        } => file::open_raw_locked(
            path,
            *offset,
            &handle.elem,
            &handle.dims,
            if handle.read_only {
                RawMode::ReadOnly
            } else {
                RawMode::ReadWrite
            },
            Some((*dev, *ino)),
        )?,
    };
    map.matches(handle.id, &handle.elem, &handle.dims)?;
    check_shape(handle, &map)?;
    mapping::pin(&map.key, &map);
    Ok(map)
}

/// This process's live mapping of the object of `handle`, without mapping anything.
pub(crate) fn lookup(handle: &ShmHandle) -> Result<Arc<Mapping>, ShmError> {
    check_handle(handle, None)?;
    let key = match &handle.backing {
        Backing::Shm { .. } => Some(Key::Shm(handle.id)),
        Backing::File { path } => std::fs::metadata(path).ok().map(|m| Key::File {
            dev: m.dev(),
            ino: m.ino(),
        }),
        Backing::RawFile {
            offset, dev, ino, ..
        } => index::checked_len(&handle.dims)
            .and_then(|len| len.checked_mul(handle.elem.size))
            .map(|bytes| Key::Raw {
                dev: *dev,
                ino: *ino,
                offset: *offset,
                bytes: bytes as u64,
            }),
    };
    let map = key
        .and_then(|k| mapping::get(&k))
        .ok_or_else(|| ShmError::NotMapped {
            id: handle.id,
            object: handle.backing.clone(),
        })?;
    map.matches(handle.id, &handle.elem, &handle.dims)?;
    check_shape(handle, &map)?;
    Ok(map)
}

/// A reshaped handle's dims must hold exactly the object's elements.
fn check_shape(handle: &ShmHandle, map: &Mapping) -> Result<(), ShmError> {
    if index::checked_len(&handle.shape) == Some(map.len) {
        Ok(())
    } else {
        Err(ShmError::ShapeMismatch {
            object: handle.backing.clone(),
            expected: handle.shape.clone(),
            found: map.dims.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle travels whole as its byte string: lists short and long (more dims than 4,
    /// more pids than 8), and nothing after it is taken for it.
    #[test]
    fn a_handle_arrives_whole_with_short_and_long_lists() {
        for (dims, pids) in [
            (vec![500, 500, 500], vec![2, 3]),
            (vec![2, 3, 4, 5, 6, 7], (2..14).collect::<Vec<Pid>>()),
        ] {
            let sent = ShmHandle {
                backing: Backing::Shm {
                    creator: 41,
                    fd: 7,
                    dev: 9,
                    ino: 1234,
                },
                id: SegmentId(0x1234_5678_9abc_def0_0fed_cba9_8765_4321),
                shape: dims.iter().rev().copied().collect(),
                dims,
                elem: ElemInfo {
                    type_name: "f64".into(),
                    size: 8,
                    align: 8,
                },
                pids,
                host: HostId::current().clone(),
                read_only: false,
            };
            let bytes = cohort_core::codec::encode_vec(&(sent.clone(), 77u8)).unwrap();
            let wire = sent.wire_bytes().unwrap();
            assert!(bytes.windows(wire.len()).any(|w| w == &wire[..]));
            let got: (ShmHandle, u8) = cohort_core::codec::decode(&bytes).unwrap();
            assert_eq!(got, (sent, 77));
        }
    }

    #[test]
    fn pids_must_be_distinct_and_present() {
        assert!(check_pids(&[1, 2, 3]).is_ok());
        assert!(matches!(check_pids(&[]), Err(ShmError::InvalidPids { .. })));
        assert!(matches!(
            check_pids(&[2, 3, 2]),
            Err(ShmError::InvalidPids { .. })
        ));
    }
}
