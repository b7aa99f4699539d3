//! This process's registry of mappings, so that each segment (or file) is mapped once per
//! process and can be found again from a handle after its name is gone.
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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::handle::SegmentId;
use crate::segment::Mapping;

/// What identifies the mapped object in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Key {
    /// A shared-memory segment, by its id.
    Shm(SegmentId),
    /// A file, by device and inode (two paths to one file are one object).
    File { dev: u64, ino: u64 },
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
