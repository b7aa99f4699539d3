//! What travels between processes: [`ShmHandle`], and the attach and lookup that turn one back
//! into this process's mapping of the object it names (a segment or a file).

use std::borrow::Cow;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use cohort_core::Pid;
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// A handle's wire form borrowed from an array: what [`ShmHandle`] serializes to, field for
/// field, without building one (an array passed to every call of a per-step loop is encoded
/// at every call, and building the handle was most of that).
#[derive(Serialize)]
pub(crate) struct HandleRef<'a> {
    pub(crate) backing: &'a Backing,
    pub(crate) id: SegmentId,
    pub(crate) dims: &'a [usize],
    pub(crate) shape: &'a [usize],
    pub(crate) elem: &'a ElemInfo,
    pub(crate) pids: &'a [Pid],
    pub(crate) host: &'a HostId,
    pub(crate) read_only: bool,
}

/// A handle as it arrives, its strings borrowed from the message where the decoder allows
/// and its short lists kept inline (the same fields as [`ShmHandle`], the same wire form): an
/// array passed to every call of a per-step loop is decoded at every call on the worker's
/// path to its kernel, and the six vectors of a call with two arrays were six allocations.
#[derive(Deserialize)]
pub(crate) struct HandleIn<'a> {
    backing: Backing,
    id: SegmentId,
    dims: SmallVec<[usize; 4]>,
    pub(crate) shape: SmallVec<[usize; 4]>,
    #[serde(borrow)]
    elem: ElemIn<'a>,
    pub(crate) pids: SmallVec<[Pid; 8]>,
    #[serde(borrow)]
    host: HostIn<'a>,
    pub(crate) read_only: bool,
}

#[derive(Deserialize)]
struct ElemIn<'a> {
    #[serde(borrow)]
    type_name: Cow<'a, str>,
    size: usize,
    align: usize,
}

#[derive(Deserialize)]
struct HostIn<'a> {
    #[serde(borrow)]
    hostname: Cow<'a, str>,
    #[serde(borrow)]
    boot_id: Cow<'a, str>,
}

impl HandleIn<'_> {
    /// This process's mapping of the segment the handle names when every check of [`lookup`]
    /// (and of a typed lookup for elements `elem`) passes, checked without building anything;
    /// `None` sends the caller to [`lookup`] on [`into_handle`](Self::into_handle), which says
    /// what failed.
    pub(crate) fn mapped(&self, elem: (&str, usize, usize)) -> Option<Arc<Mapping>> {
        let here = HostId::current();
        let is_elem = |name: &str, size, align| (name, size, align) == elem;
        let ok = self.host.hostname == here.hostname
            && self.host.boot_id == here.boot_id
            && is_elem(&self.elem.type_name, self.elem.size, self.elem.align)
            && distinct(&self.pids)
            && matches!(self.backing, Backing::Shm { .. });
        if !ok {
            return None;
        }
        let map = mapping::get(&Key::Shm(self.id))?;
        let same = map.id == self.id
            && is_elem(&map.elem.type_name, map.elem.size, map.elem.align)
            && map.dims[..] == self.dims[..]
            && index::checked_len(&self.shape) == Some(map.len);
        same.then_some(map)
    }

    /// The owned handle.
    pub(crate) fn into_handle(self) -> ShmHandle {
        ShmHandle {
            backing: self.backing,
            id: self.id,
            dims: self.dims.into_vec(),
            shape: self.shape.into_vec(),
            elem: ElemInfo {
                type_name: self.elem.type_name.into_owned(),
                size: self.elem.size,
                align: self.elem.align,
            },
            pids: self.pids.into_vec(),
            host: HostId {
                hostname: self.host.hostname.into_owned(),
                boot_id: self.host.boot_id.into_owned(),
            },
            read_only: self.read_only,
        }
    }
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

    /// A handle as a worker receives it, through the arrival form.
    struct Arrived(ShmHandle);

    impl<'de> Deserialize<'de> for Arrived {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            HandleIn::deserialize(d).map(|h| Arrived(h.into_handle()))
        }
    }

    /// The arrival form, its short lists kept inline, reads the handle's wire form whole:
    /// lists within their inline room and lists beyond it (more dims than 4, more pids than 8).
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
            let bytes = cohort_core::codec::encode_vec(&sent).unwrap();
            let got: Arrived = cohort_core::codec::decode(&bytes).unwrap();
            assert_eq!(got.0, sent);
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
