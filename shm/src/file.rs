//! File-backed arrays, in two forms:
//!
//! * **with cohort's header**: the same header and layout as a segment, in a regular file, so
//!   reopening checks element type, dims and size ([`create`], [`open`]);
//! * **raw**, as Julia's file-backed `SharedArray`: the file holds the elements only, from a
//!   byte offset on, with no header ([`open_raw`], opened in a [`RawMode`]). Nothing is checked
//!   but the file's size; the bytes before the offset and after the array are never touched.
//!
//! Data is native-endian and column-major. Nothing is ever unlinked; the file persists. Writes
//! reach the page cache at once and the disk when the kernel writes back or on
//! [`SharedArray::flush`](crate::SharedArray::flush).
//!
//! One process maps any byte of a file at most once, so that borrows of it are tracked in one
//! place: a raw range mapped again with the same element type and dims shares the first
//! mapping; a range that overlaps a mapped one otherwise, or the whole of a file mapped with its
//! header, is refused ([`ShmError::Overlapping`]). Ranges that do not overlap map side by side.
//!
//! As with any `mmap` of a file, truncating the file from elsewhere while it is mapped makes
//! accesses fault with `SIGBUS`; cohort cannot prevent that (it only refuses to truncate a file
//! that this process maps).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use memmap2::MmapOptions;

use crate::error::ShmError;
use crate::header::{data_layout, layout, Header, DATA_OFFSET};
use crate::ids::{Backing, ElemInfo, SegmentId};
use crate::mapping::{self, Key, Mapping, MappingParts};
use crate::segment::{reserve, reserve_range};

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
    refuse_if_mapped(path, "creating it again")?;
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
        data_offset: DATA_OFFSET,
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
    refuse_raw_mappings(key, &backing)?;
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
        data_offset: DATA_OFFSET,
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

/// Refuse to truncate `path` (`doing` it) while this process maps any of it.
fn refuse_if_mapped(path: &Path, doing: &str) -> Result<(), ShmError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    if mapping::file_keys(meta.dev(), meta.ino()).is_empty() {
        return Ok(());
    }
    Err(ShmError::Unsupported {
        reason: format!(
            "file {} is mapped in this process; {doing} would truncate live memory",
            path.display()
        ),
    })
}

/// Refuse to map a whole header file (`key`) while this process maps a raw range of it.
fn refuse_raw_mappings(key: Key, backing: &Backing) -> Result<(), ShmError> {
    let Some((dev, ino)) = key.file() else {
        return Ok(());
    };
    match mapping::file_keys(dev, ino)
        .into_iter()
        .find(|k| *k != key && k.overlaps(&key))
    {
        Some(k) => Err(ShmError::Overlapping {
            object: backing.clone(),
            mapped: k.describe(),
        }),
        None => Ok(()),
    }
}

/// How a raw file mapping opens its file: Julia's `mode` strings, one per variant (and
/// [`FromStr`] for the strings themselves). Julia's default, `mode = nothing`, is `None` where a
/// mode is an `Option` ([`RawMode::default_for`]).
///
/// Every writable mode grows a file shorter than the offset plus the array's bytes: the bytes
/// added read as zero (they are reserved with `posix_fallocate`, so a full file system is
/// [`ShmError::NoSpace`] then, never a `SIGBUS` later).
///
/// # Julia
/// `mode = "r" | "r+" | "w+" | "a+"` of `SharedArray{T,N}(filename, dims, offset; mode)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RawMode {
    /// `"r"`: read-only. The file must exist and be long enough; mutable access is refused.
    ReadOnly,
    /// `"r+"`: read-write. The file must exist; a short one is grown.
    ReadWrite,
    /// `"w+"`: read-write. The file is created, or truncated to zero bytes, then grown to the
    /// offset plus the array's bytes, so all of it reads zero (the bytes before the offset too).
    Create,
    /// `"a+"`: read-write. The file is created if missing, never truncated; a short one is
    /// grown.
    Append,
}

impl RawMode {
    /// Julia's string for this mode (`"r"`, `"r+"`, `"w+"`, `"a+"`).
    pub fn as_julia(self) -> &'static str {
        match self {
            RawMode::ReadOnly => "r",
            RawMode::ReadWrite => "r+",
            RawMode::Create => "w+",
            RawMode::Append => "a+",
        }
    }

    /// Julia's default mode (`mode = nothing`) for `path`: [`ReadWrite`](Self::ReadWrite)
    /// (`"r+"`) if it is a regular file, else [`Create`](Self::Create) (`"w+"`).
    pub fn default_for(path: &Path) -> RawMode {
        if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            RawMode::ReadWrite
        } else {
            RawMode::Create
        }
    }

    /// Whether the mapping is writable (every mode but `"r"`).
    pub fn is_writable(self) -> bool {
        self != RawMode::ReadOnly
    }
}

impl fmt::Display for RawMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_julia())
    }
}

/// Julia's mode strings; any other is [`ShmError::Argument`].
impl FromStr for RawMode {
    type Err = ShmError;

    fn from_str(s: &str) -> Result<RawMode, ShmError> {
        match s {
            "r" => Ok(RawMode::ReadOnly),
            "r+" => Ok(RawMode::ReadWrite),
            "w+" => Ok(RawMode::Create),
            "a+" => Ok(RawMode::Append),
            other => Err(ShmError::Argument {
                reason: format!(
                    "mode must be one of \"r\", \"r+\", \"w+\", \"a+\", but {other:?} is not"
                ),
            }),
        }
    }
}

/// Checks of a raw mapping's arguments that need no file: an absolute path (every pid must open
/// the same file), an offset aligned for the element type.
pub(crate) fn check_raw_args(path: &Path, offset: u64, elem: &ElemInfo) -> Result<(), ShmError> {
    if !path.is_absolute() {
        return Err(ShmError::Argument {
            reason: format!(
                "{} is not an absolute path; try std::path::absolute(path)?",
                path.display()
            ),
        });
    }
    if !offset.is_multiple_of(elem.align as u64) {
        return Err(ShmError::Argument {
            reason: format!(
                "offset {offset} is not a multiple of {}, the alignment of {}: a reference to a \
                 misaligned element is undefined behaviour",
                elem.align, elem.type_name
            ),
        });
    }
    Ok(())
}

/// Map bytes `offset..offset + len * size` of `path` raw, opened in `mode` (see [`RawMode`]);
/// reuses this process's mapping of exactly that range when its access suffices, refuses a
/// range that overlaps another mapping of the file here. Registered unpinned.
pub(crate) fn open_raw(
    path: &Path,
    offset: u64,
    elem: &ElemInfo,
    dims: &[usize],
    mode: RawMode,
) -> Result<Arc<Mapping>, ShmError> {
    let _opening = mapping::open_lock();
    open_raw_locked(path, offset, elem, dims, mode, None)
}

/// [`open_raw`] for a caller that holds `mapping::open_lock()`; with `expect`, the file opened
/// must have that device and inode (an attacher maps the creator's file, not one put at its
/// path since).
pub(crate) fn open_raw_locked(
    path: &Path,
    offset: u64,
    elem: &ElemInfo,
    dims: &[usize],
    mode: RawMode,
    expect: Option<(u64, u64)>,
) -> Result<Arc<Mapping>, ShmError> {
    check_raw_args(path, offset, elem)?;
    let (len, bytes) = data_layout(elem, dims)?;
    let end = offset
        .checked_add(bytes as u64)
        .filter(|&e| i64::try_from(e).is_ok())
        .ok_or_else(|| ShmError::TooLarge {
            dims: dims.to_vec(),
            elem_size: elem.size,
        })?;
    if mode == RawMode::Create {
        refuse_if_mapped(path, "mode \"w+\"")?;
    }
    let writable = mode.is_writable();
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .create(matches!(mode, RawMode::Create | RawMode::Append))
        .truncate(mode == RawMode::Create)
        .open(path)
        .map_err(|e| match (mode, e.kind()) {
            (RawMode::ReadOnly, ErrorKind::NotFound) => ShmError::Argument {
                reason: format!(
                    "file {} does not exist, but mode \"r\" cannot create it",
                    path.display()
                ),
            },
            _ => ShmError::io("open", path.display(), e),
        })?;
    let meta = file
        .metadata()
        .map_err(|e| ShmError::io("fstat", path.display(), e))?;
    if !meta.is_file() {
        return Err(ShmError::Argument {
            reason: format!("{} is not a regular file", path.display()),
        });
    }
    let (dev, ino, found) = (meta.dev(), meta.ino(), meta.len());
    if expect.is_some_and(|want| want != (dev, ino)) {
        return Err(ShmError::io(
            "open (the path now names another file than the creator's)",
            path.display(),
            ErrorKind::NotFound.into(),
        ));
    }
    let backing = Backing::RawFile {
        path: path.to_path_buf(),
        offset,
        dev,
        ino,
    };
    let key = Key::Raw {
        dev,
        ino,
        offset,
        bytes: bytes as u64,
    };
    let mut existing = None;
    for k in mapping::file_keys(dev, ino) {
        if k == key {
            existing = mapping::get(&k);
        } else if k.overlaps(&key) {
            return Err(ShmError::Overlapping {
                object: backing,
                mapped: k.describe(),
            });
        }
    }
    if let Some(m) = &existing {
        if m.writable || !writable {
            m.matches_type(elem, dims)?;
            return Ok(Arc::clone(m));
        }
    }
    // As Julia's mmap: an array without bytes maps nothing of the file and never grows it.
    if bytes > 0 && found < end {
        if !writable {
            return Err(ShmError::FileTooShort {
                object: backing,
                needed: end,
                found,
            });
        }
        reserve_range(&file, found.max(offset), end, &backing)?;
    }
    // memmap2 maps from the page boundary below `offset` and points `raw` at `offset` (with no
    // bytes, it maps one byte there, never accessed).
    let mut options = MmapOptions::new();
    options.offset(offset).len(bytes);
    let raw = if writable {
        options.map_raw(&file)
    } else {
        options.map_raw_read_only(&file)
    }
    .map_err(|e| ShmError::io("mmap", &backing, e))?;
    let mapping = Mapping::new(MappingParts {
        raw,
        data_offset: 0,
        id: SegmentId::of_raw(dev, ino, offset, bytes as u64),
        key,
        backing,
        dims: dims.to_vec(),
        len,
        elem: elem.clone(),
        writable,
        // A writable remap of a range mapped read-only here shares its borrow table.
        leases: existing.as_ref().map(|m| Arc::clone(&m.leases)),
        door: None,
    });
    mapping::insert(key, &mapping, false);
    drop(existing); // outside the registry lock (see mapping.rs)
    Ok(mapping)
}
