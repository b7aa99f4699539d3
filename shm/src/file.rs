//! File-backed arrays: the same header and layout as a segment, in a regular file.
//!
//! Unlike Julia's file-backed `SharedArray` (a raw mapping at an offset), the file starts with
//! cohort's header, so reopening checks element type, dims and size. Data is native-endian.
//! Nothing is ever unlinked; the file persists. Writes reach the page cache at once and the disk
//! when the kernel writes back or on [`SharedArray::flush`](crate::SharedArray::flush).
//!
//! As with any `mmap` of a file, truncating the file from elsewhere while it is mapped makes
//! accesses fault with `SIGBUS`; cohort cannot prevent that.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::MmapOptions;

use crate::error::ShmError;
use crate::header::{layout, Header, DATA_OFFSET};
use crate::ids::{Backing, ElemInfo, SegmentId};
use crate::mapping::{self, Key, Mapping, MappingParts};
use crate::segment::reserve;

fn key_of(file: &File, path: &Path) -> Result<(Key, u64), ShmError> {
    let meta = file
        .metadata()
        .map_err(|e| ShmError::io("fstat", path.display(), e))?;
    Ok((
        Key::File {
            dev: meta.dev(),
            ino: meta.ino(),
        },
        meta.len(),
    ))
}

/// Removes a half-created file unless disarmed.
struct RemoveOnDrop<'a>(Option<&'a Path>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Create (or truncate) `path`, reserve header + data, publish the header; registered unpinned.
pub(crate) fn create(
    path: &Path,
    elem: ElemInfo,
    dims: &[usize],
) -> Result<Arc<Mapping>, ShmError> {
    let (len, total) = layout(&elem, dims)?;
    let backing = Backing::File {
        path: path.to_path_buf(),
    };
    let _opening = mapping::open_lock();
    if let Ok(meta) = std::fs::metadata(path) {
        if mapping::get(&Key::File {
            dev: meta.dev(),
            ino: meta.ino(),
        })
        .is_some()
        {
            return Err(ShmError::Unsupported {
                reason: format!(
                    "{backing} is mapped in this process; creating it again would truncate live memory"
                ),
            });
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| ShmError::io("open(O_CREAT|O_TRUNC)", path.display(), e))?;
    let mut guard = RemoveOnDrop(Some(path));
    reserve(&file, total, &backing)?;
    let raw = MmapOptions::new()
        .len(total)
        .map_raw(&file)
        .map_err(|e| ShmError::io("mmap", path.display(), e))?;
    let id = SegmentId::random()?;
    // SAFETY: `raw` maps `total >= DATA_OFFSET` bytes of a file we just truncated and extended,
    // page-aligned; cohort in no process maps it yet (it was not in this process's registry, and
    // other processes learn of it only after this returns).
    unsafe { Header::new(id, &elem, dims, len).publish(raw.as_mut_ptr()) };
    raw.flush_range(0, DATA_OFFSET)
        .map_err(|e| ShmError::io("msync", path.display(), e))?;
    let (key, _) = key_of(&file, path)?;
    let mapping = Mapping::new(MappingParts {
        raw,
        id,
        key,
        backing,
        dims: dims.to_vec(),
        len,
        elem,
        writable: true,
        leases: None,
        door: None,
    });
    mapping::insert(key, &mapping, false);
    guard.0 = None;
    Ok(mapping)
}

/// Open an existing array file, checking size and header; reuses this process's mapping of the
/// same file (same device and inode) when its access mode suffices.
pub(crate) fn open(
    path: &Path,
    elem: &ElemInfo,
    dims: &[usize],
    read_only: bool,
    id: Option<SegmentId>,
) -> Result<Arc<Mapping>, ShmError> {
    let _opening = mapping::open_lock();
    open_locked(path, elem, dims, read_only, id)
}

/// [`open`] for a caller that holds `mapping::open_lock()`.
pub(crate) fn open_locked(
    path: &Path,
    elem: &ElemInfo,
    dims: &[usize],
    read_only: bool,
    id: Option<SegmentId>,
) -> Result<Arc<Mapping>, ShmError> {
    let backing = Backing::File {
        path: PathBuf::from(path),
    };
    let (len, total) = layout(elem, dims)?;
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|e| ShmError::io("open", path.display(), e))?;
    let (key, found) = key_of(&file, path)?;
    if found != total as u64 {
        return Err(ShmError::SizeMismatch {
            object: backing,
            expected: total as u64,
            found,
        });
    }
    let existing = mapping::get(&key);
    if let Some(m) = &existing {
        if m.writable || read_only {
            m.matches_type(elem, dims)?;
            if let Some(id) = id.filter(|&id| id != m.id) {
                return Err(ShmError::BadHeader {
                    object: backing,
                    reason: format!("segment id {}, expected {id}", m.id),
                });
            }
            return Ok(Arc::clone(m));
        }
    }
    let mut options = MmapOptions::new();
    options.len(total);
    let raw = if read_only {
        options.map_raw_read_only(&file)
    } else {
        options.map_raw(&file)
    }
    .map_err(|e| ShmError::io("mmap", path.display(), e))?;
    // SAFETY: `raw` maps `total >= DATA_OFFSET` bytes (fstat said the file is that large),
    // page-aligned and readable.
    let header = unsafe { Header::read(raw.as_ptr(), &backing) }?;
    header.check(&backing, id, elem, dims, found)?;
    let mapping = Mapping::new(MappingParts {
        raw,
        id: header.id(),
        key,
        backing,
        dims: dims.to_vec(),
        len,
        elem: elem.clone(),
        writable: !read_only,
        // A writable remap of a file mapped read-only here shares its borrow table.
        leases: existing.as_ref().map(|m| Arc::clone(&m.leases)),
        door: None,
    });
    mapping::insert(key, &mapping, false);
    drop(existing); // outside the registry lock (see mapping.rs)
    Ok(mapping)
}
