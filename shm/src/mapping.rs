//! One mapping of one object (segment or file) per process, and this process's registry of
//! them, so that an object is mapped once per process and can be found again from a handle
//! after its creator has closed it to attachers.
//!
//! The registry lives here, beside [`Mapping`], because the two keep each other true: the
//! registry holds a `Weak` to every mapping, and a mapping removes its own entry when it drops.
//!
//! An entry holds a `Weak` to the mapping, and optionally a *pin* (a strong `Arc`):
//!
//! * the creator's mapping is not pinned: it lives as long as the creator's `SharedArray`s;
//! * [`attach`](crate::SharedArray::attach) pins, so a worker keeps the mapping after its attach
//!   call returns, until the creator's side says [`release`].
//!
//! When the last `Arc` goes, `Mapping`'s `Drop` unmaps and removes the entry.
//!
//! Lock discipline: `Mapping::drop` takes the registry lock, so no `Arc<Mapping>` may be dropped
//! while the lock is held; every function below moves strong references out before dropping.

use std::collections::BTreeMap;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use memmap2::{Advice, MmapRaw};
use nix::errno::Errno;

use crate::error::{Access, ShmError};
use crate::ids::{Backing, ElemInfo, SegmentId};
use crate::lease::LeaseTable;

/// Smallest page size we plan for; touching once per 4 KiB touches every page of any larger size.
const PAGE: usize = 4096;

/// One mapping of one segment or file in this process, shared by all its `SharedArray` values.
pub(crate) struct Mapping {
    raw: MmapRaw,
    /// Where element 0 is in `raw`: `DATA_OFFSET` after a header, 0 for a raw file mapping
    /// (whose `raw` starts at the array's offset in the file).
    data_offset: usize,
    pub(crate) id: SegmentId,
    pub(crate) key: Key,
    pub(crate) backing: Backing,
    pub(crate) dims: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) elem: ElemInfo,
    pub(crate) writable: bool,
    pub(crate) leases: Arc<LeaseTable>,
    /// The creator's descriptor of a segment, through which other pids open it, until
    /// [`unlink`](Self::unlink) closes it (`None` elsewhere and for files).
    door: Mutex<Option<OwnedFd>>,
    /// Runs once when this process's mapping goes away (its last `SharedArray` dropped), or
    /// earlier if taken by `finalize`. The creator's mapping holds "release every other pid".
    on_drop: Mutex<Option<DropHook>>,
}

/// What a mapping runs when it goes away (see [`Mapping::set_on_drop`]).
pub(crate) type DropHook = Box<dyn FnOnce() + Send>;

pub(crate) struct MappingParts {
    pub(crate) raw: MmapRaw,
    /// Where element 0 is in `raw`; it must be aligned for the element type.
    pub(crate) data_offset: usize,
    pub(crate) id: SegmentId,
    pub(crate) key: Key,
    pub(crate) backing: Backing,
    pub(crate) dims: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) elem: ElemInfo,
    pub(crate) writable: bool,
    pub(crate) leases: Option<Arc<LeaseTable>>,
    pub(crate) door: Option<OwnedFd>,
}

impl Mapping {
    /// Wrap a mapping whose header (if it has one) has been published or checked against these
    /// parts.
    pub(crate) fn new(p: MappingParts) -> Arc<Mapping> {
        assert!(p.raw.len() >= p.data_offset + p.len * p.elem.size);
        assert!((p.raw.as_ptr() as usize + p.data_offset).is_multiple_of(p.elem.align));
        let leases = p
            .leases
            .unwrap_or_else(|| Arc::new(LeaseTable::new(p.dims.clone())));
        Arc::new(Mapping {
            raw: p.raw,
            data_offset: p.data_offset,
            id: p.id,
            key: p.key,
            backing: p.backing,
            dims: p.dims,
            len: p.len,
            elem: p.elem,
            writable: p.writable,
            leases,
            door: Mutex::new(p.door),
            on_drop: Mutex::new(None),
        })
    }

    /// Add a hook to run when this mapping goes away, after any installed earlier (a file
    /// mapping that several arrays of the creator share releases the pids of each).
    pub(crate) fn add_on_drop(&self, hook: DropHook) {
        let mut slot = self.on_drop.lock().unwrap_or_else(PoisonError::into_inner);
        let hook = match slot.take() {
            Some(earlier) => Box::new(move || {
                earlier();
                hook();
            }),
            None => hook,
        };
        *slot = Some(hook);
    }

    /// Take the hook out, to run it now (`finalize`); it then does not run at drop.
    pub(crate) fn take_on_drop(&self) -> Option<DropHook> {
        self.on_drop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Address of element 0, aligned for the element type, followed by `len * elem.size`
    /// mapped bytes (with none, valid for zero-byte accesses only): page-aligned after a header;
    /// at the array's offset in the file (a multiple of the element alignment, mapped from the
    /// page boundary below it) for a raw file mapping.
    pub(crate) fn data(&self) -> *mut u8 {
        // In bounds and aligned: both checked by `Mapping::new`.
        self.raw.as_mut_ptr().wrapping_add(self.data_offset)
    }

    /// Close the door: from now on no other process can open the segment, and it is freed
    /// once unmapped everywhere. Idempotent; does nothing for files or where this process did
    /// not create the segment.
    pub(crate) fn unlink(&self) {
        let door = self
            .door
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(door);
    }

    /// Fault in the pages holding elements `elems` (see `SharedArray::prefault`).
    pub(crate) fn prefault(&self, elems: Range<usize>) -> Result<(), ShmError> {
        let size = self.elem.size;
        let (lo, hi) = (
            self.data_offset + elems.start * size,
            self.data_offset + elems.end * size,
        );
        if lo >= hi {
            return Ok(());
        }
        // Shared memory: populate writable (no data is read or written, so no race with anyone).
        // Files: populate readable only, so that prefaulting does not dirty clean pages.
        let writable_shm = self.writable && matches!(self.backing, Backing::Shm { .. });
        let advice = if writable_shm {
            Advice::PopulateWrite
        } else {
            Advice::PopulateRead
        };
        // memmap2 widens the range to the page boundary below `lo` (the kernel rounds the end up).
        match self.raw.advise_range(advice, lo, hi - lo) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::EINVAL as i32) => {
                // Kernels before 5.14 lack MADV_POPULATE_*: read one byte per page instead
                // (a read never races with the writers of those elements in a harmful way: it
                // is the same access `view()` makes).
                let base = self.raw.as_ptr();
                let mut at = lo;
                while at < hi {
                    // SAFETY: data_offset <= lo <= at < hi <= data_offset + len * size, which is
                    // inside the mapping; u8 has no alignment or validity requirement.
                    unsafe { std::ptr::read_volatile(base.add(at)) };
                    at = (at / PAGE + 1) * PAGE;
                }
                Ok(())
            }
            Err(e) => Err(ShmError::io("madvise(MADV_POPULATE_*)", &self.backing, e)),
        }
    }

    /// Hand `write` the bytes of elements `elems` under a write lease (an untyped fill, run
    /// by each pid on its share).
    ///
    /// # Safety
    /// No other process reads or writes these elements meanwhile.
    ///
    /// # Errors
    /// [`ReadOnly`](ShmError::ReadOnly), [`OutOfBounds`](ShmError::OutOfBounds),
    /// [`Busy`](ShmError::Busy).
    pub(crate) unsafe fn write_bytes(
        &self,
        elems: Range<usize>,
        write: impl FnOnce(&mut [u8]),
    ) -> Result<(), ShmError> {
        if !self.writable {
            return Err(ShmError::ReadOnly {
                object: self.backing.clone(),
            });
        }
        if !crate::index::range_in_bounds(&elems, self.len) {
            return Err(ShmError::OutOfBounds {
                region: crate::index::Region::Linear(elems),
                dims: self.dims.clone(),
            });
        }
        let _lease = self
            .leases
            .acquire(crate::index::Region::Linear(elems.clone()), Access::Write)?;
        let size = self.elem.size;
        // SAFETY: `elems` lies within 0..len (checked), so these bytes are inside the mapped
        // data, which is writable (checked); the write lease excludes every other reference to
        // them in this process while the slice lives; other processes are the caller's
        // contract. u8 has no alignment or validity requirement.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.data().add(elems.start * size), elems.len() * size)
        };
        write(bytes);
        Ok(())
    }

    /// `msync` the whole mapping (files: write to disk now; shared memory: no effect).
    pub(crate) fn flush(&self) -> Result<(), ShmError> {
        if !self.writable {
            return Ok(());
        }
        self.raw
            .flush()
            .map_err(|e| ShmError::io("msync", &self.backing, e))
    }

    /// Check that this mapping is the object of segment `id`, with these elements and dims.
    pub(crate) fn matches(
        &self,
        id: SegmentId,
        elem: &ElemInfo,
        dims: &[usize],
    ) -> Result<(), ShmError> {
        if self.id != id {
            return Err(ShmError::BadHeader {
                object: self.backing.clone(),
                reason: format!("segment id {}, expected {id}", self.id),
            });
        }
        self.matches_type(elem, dims)
    }

    pub(crate) fn matches_type(&self, elem: &ElemInfo, dims: &[usize]) -> Result<(), ShmError> {
        if self.elem != *elem {
            let show =
                |e: &ElemInfo| format!("{} (size {}, align {})", e.type_name, e.size, e.align);
            return Err(ShmError::TypeMismatch {
                object: self.backing.clone(),
                expected: show(elem),
                found: show(&self.elem),
            });
        }
        if self.dims != dims {
            return Err(ShmError::ShapeMismatch {
                object: self.backing.clone(),
                expected: dims.to_vec(),
                found: self.dims.clone(),
            });
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        forget(&self.key, self);
        // Outside the registry lock (forget released it): the hook may send messages.
        let hook = self
            .on_drop
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(hook) = hook {
            hook();
        }
        // `raw` is unmapped when the fields drop.
    }
}

/// What identifies the mapped object in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    /// A shared-memory segment, by its id.
    Shm(SegmentId),
    /// A file with cohort's header, whole, by device and inode (two paths to one file are one
    /// object).
    File { dev: u64, ino: u64 },
    /// Bytes `offset..offset + bytes` of a file mapped raw.
    Raw {
        dev: u64,
        ino: u64,
        offset: u64,
        bytes: u64,
    },
}

impl Key {
    /// The file's device and inode, for a file key.
    pub(crate) fn file(&self) -> Option<(u64, u64)> {
        match *self {
            Key::Shm(_) => None,
            Key::File { dev, ino } | Key::Raw { dev, ino, .. } => Some((dev, ino)),
        }
    }

    /// Whether the two keys map some byte twice: two mappings of one file where one is a
    /// whole header file, or whose raw ranges overlap (an empty range overlaps nothing).
    pub(crate) fn overlaps(&self, other: &Key) -> bool {
        if self.file().is_none() || self.file() != other.file() {
            return false;
        }
        let span = |k: &Key| match *k {
            Key::Raw { offset, bytes, .. } => (offset, offset + bytes),
            _ => (0, u64::MAX),
        };
        let ((a, b), (c, d)) = (span(self), span(other));
        a < b && c < d && a < d && c < b
    }

    /// The bytes of the file this key maps, for messages.
    pub(crate) fn describe(&self) -> String {
        match *self {
            Key::Shm(id) => format!("segment {id}"),
            Key::File { .. } => "the whole file (an array with cohort's header)".to_owned(),
            Key::Raw { offset, bytes, .. } => {
                format!("bytes {offset}..{} (a raw mapping)", offset + bytes)
            }
        }
    }
}

struct Entry {
    id: SegmentId,
    weak: Weak<Mapping>,
    pin: Option<Arc<Mapping>>,
}

static REGISTRY: Mutex<BTreeMap<Key, Entry>> = Mutex::new(BTreeMap::new());

/// Serialises "look up, else map and register" sequences, so two threads attaching or opening
/// the same object at once end up with one mapping (and one lease table), not two. Held only
/// while opening; never taken by `Mapping::drop`, so dropping under it is fine.
static OPEN: Mutex<()> = Mutex::new(());

pub(crate) fn open_lock() -> MutexGuard<'static, ()> {
    OPEN.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock() -> MutexGuard<'static, BTreeMap<Key, Entry>> {
    // Entries are replaced whole, so a panic under the lock leaves the map consistent.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The live mapping of `key`, if any.
pub(crate) fn get(key: &Key) -> Option<Arc<Mapping>> {
    let map = lock();
    map.get(key).and_then(|e| e.weak.upgrade())
    // An upgraded Arc leaves the lock held by the caller's value, never dropped here.
}

/// The keys of this process's live mappings of the file `dev`/`ino` (whole or raw ranges).
pub(crate) fn file_keys(dev: u64, ino: u64) -> Vec<Key> {
    let map = lock();
    map.iter()
        .filter(|(k, e)| k.file() == Some((dev, ino)) && e.weak.strong_count() > 0)
        .map(|(k, _)| *k)
        .collect()
}

/// Record `mapping` under `key`, pinned if `pin` or if the entry it replaces was pinned (a file
/// remapped writable keeps the read-only mapping's pin).
pub(crate) fn insert(key: Key, mapping: &Arc<Mapping>, pin: bool) {
    let old = {
        let mut map = lock();
        let pin = pin || map.get(&key).is_some_and(|e| e.pin.is_some());
        let entry = Entry {
            id: mapping.id,
            weak: Arc::downgrade(mapping),
            pin: pin.then(|| Arc::clone(mapping)),
        };
        map.insert(key, entry)
    };
    drop(old); // may drop the last Arc of a replaced mapping: outside the lock
}

/// Pin the mapping registered under `key` (it must be `mapping`).
pub(crate) fn pin(key: &Key, mapping: &Arc<Mapping>) {
    let old = {
        let mut map = lock();
        match map.get_mut(key) {
            Some(e) if std::ptr::eq(e.weak.as_ptr(), Arc::as_ptr(mapping)) => {
                e.pin.replace(Arc::clone(mapping))
            }
            _ => {
                let entry = Entry {
                    id: mapping.id,
                    weak: Arc::downgrade(mapping),
                    pin: Some(Arc::clone(mapping)),
                };
                map.insert(*key, entry).and_then(|e| e.pin)
            }
        }
    };
    drop(old);
}

/// Called by `Mapping::drop`: remove the entry that points at the dying mapping, if still there.
pub(crate) fn forget(key: &Key, dying: *const Mapping) {
    let mut map = lock();
    if map
        .get(key)
        .is_some_and(|e| std::ptr::eq(e.weak.as_ptr(), dying))
    {
        // The entry's pin is None (the mapping is dying, so no strong ref is left): removing it
        // drops only a Weak, which never re-enters here.
        map.remove(key);
    }
}

/// Drop this process's pin on segment `id` (set by [`attach`](crate::SharedArray::attach) or
/// [`ShmHandle::attach`](crate::ShmHandle::attach)).
///
/// The mapping is unmapped as soon as no `SharedArray` value in this process still uses it;
/// until then [`lookup`](crate::SharedArray::lookup) still finds it. Returns whether a pin was
/// dropped. This is what a pid runs when the array's owner lets it go (Julia's finalizer of a
/// `SharedArray` releasing its refs on every pid).
pub fn release(id: SegmentId) -> bool {
    let pins: Vec<Arc<Mapping>> = {
        let mut map = lock();
        map.values_mut()
            .filter(|e| e.id == id)
            .filter_map(|e| e.pin.take())
            .collect()
    };
    let any = !pins.is_empty();
    drop(pins); // may unmap: outside the lock
    any
}

/// Ids of the segments and files this process has mapped now (live entries only).
pub fn mapped_segments() -> Vec<SegmentId> {
    let map = lock();
    let mut ids: Vec<SegmentId> = map
        .values()
        .filter(|e| e.weak.strong_count() > 0)
        .map(|e| e.id)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(offset: u64, bytes: u64) -> Key {
        Key::Raw {
            dev: 1,
            ino: 2,
            offset,
            bytes,
        }
    }

    #[test]
    fn keys_overlap_on_shared_bytes_of_one_file() {
        assert!(raw(0, 32).overlaps(&raw(16, 32)));
        assert!(raw(16, 32).overlaps(&raw(0, 32)));
        assert!(raw(0, 32).overlaps(&raw(0, 32)));
        assert!(raw(8, 8).overlaps(&raw(0, 32)));
        assert!(!raw(0, 32).overlaps(&raw(32, 8)), "adjacent ranges");
        assert!(!raw(32, 8).overlaps(&raw(0, 32)));
        assert!(!raw(8, 0).overlaps(&raw(0, 32)), "an empty range");
        let whole = Key::File { dev: 1, ino: 2 };
        assert!(whole.overlaps(&raw(1 << 40, 1)) && raw(0, 1).overlaps(&whole));
        let elsewhere = Key::Raw {
            dev: 1,
            ino: 3,
            offset: 0,
            bytes: 32,
        };
        assert!(!elsewhere.overlaps(&raw(0, 32)), "another file");
        assert!(!Key::Shm(SegmentId(7)).overlaps(&Key::Shm(SegmentId(7))));
        assert_eq!(raw(16, 32).file(), Some((1, 2)));
        assert_eq!(raw(16, 32).describe(), "bytes 16..48 (a raw mapping)");
    }

    #[test]
    fn raw_ids_name_the_range() {
        let id = SegmentId::of_raw(1, 2, 16, 32);
        assert_eq!(id, SegmentId::of_raw(1, 2, 16, 32));
        for other in [
            (1, 2, 16, 40),
            (1, 2, 24, 32),
            (1, 3, 16, 32),
            (5, 2, 16, 32),
        ] {
            assert_ne!(id, SegmentId::of_raw(other.0, other.1, other.2, other.3));
        }
    }
}
