//! POSIX shared-memory segments: create, attach, unlink, prefault, and the mapping they share.
//!
//! Lifecycle (as in SharedArrays.jl):
//!
//! 1. the creator `shm_open`s a fresh name with `O_CREAT | O_EXCL`, mode `0600`, reserves the
//!    whole size with `posix_fallocate` (so a full `/dev/shm` is [`ShmError::NoSpace`] now, never
//!    a `SIGBUS` later), maps it and publishes the header;
//! 2. every pid attaches by name (checked against the handle and the header);
//! 3. the creator unlinks the name as soon as every pid has mapped it. From then on the memory
//!    lives exactly as long as some process maps it: a killed process cannot leak it.
//!
//! A failure between 1 and 3 unlinks the name (drop guards). Only a process killed inside that
//! window leaves a name behind; [`sweep_orphans`] removes such names once their creator is dead.

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use memmap2::{Advice, MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

use crate::error::ShmError;
use crate::handle::{Backing, ElemInfo, HostId, SegmentId, ShmHandle};
use crate::header::{layout, Header, DATA_OFFSET};
use crate::index::page_span;
use crate::lease::LeaseTable;
use crate::registry::{self, Key};
use crate::Pid;

/// Prefix of every segment name cohort creates (`/cohort-<os pid>-<32 hex digits>`).
pub const NAME_PREFIX: &str = "cohort-";

/// Smallest page size we plan for; touching once per 4 KiB touches every page of any larger size.
const PAGE: usize = 4096;

/// One mapping of one segment or file in this process, shared by all its `SharedArray` values.
pub(crate) struct Mapping {
    raw: MmapRaw,
    pub(crate) id: SegmentId,
    pub(crate) key: Key,
    pub(crate) backing: Backing,
    pub(crate) dims: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) elem: ElemInfo,
    pub(crate) writable: bool,
    pub(crate) leases: Arc<LeaseTable>,
    unlinked: AtomicBool,
    /// Runs once when this process's mapping goes away (its last `SharedArray` dropped), or
    /// earlier if taken by `finalize`. The creator's mapping holds "release every other pid".
    on_drop: Mutex<Option<DropHook>>,
}

/// What a mapping runs when it goes away (see [`Mapping::set_on_drop`]).
pub(crate) type DropHook = Box<dyn FnOnce() + Send>;

pub(crate) struct MappingParts {
    pub(crate) raw: MmapRaw,
    pub(crate) id: SegmentId,
    pub(crate) key: Key,
    pub(crate) backing: Backing,
    pub(crate) dims: Vec<usize>,
    pub(crate) len: usize,
    pub(crate) elem: ElemInfo,
    pub(crate) writable: bool,
    pub(crate) leases: Option<Arc<LeaseTable>>,
}

impl Mapping {
    /// Wrap a mapping whose header has been published or checked against these parts.
    pub(crate) fn new(p: MappingParts) -> Arc<Mapping> {
        debug_assert!(p.raw.len() >= DATA_OFFSET + p.len * p.elem.size);
        let leases = p
            .leases
            .unwrap_or_else(|| Arc::new(LeaseTable::new(p.dims.clone())));
        Arc::new(Mapping {
            raw: p.raw,
            id: p.id,
            key: p.key,
            backing: p.backing,
            dims: p.dims,
            len: p.len,
            elem: p.elem,
            writable: p.writable,
            leases,
            unlinked: AtomicBool::new(false),
            on_drop: Mutex::new(None),
        })
    }

    /// Install the hook run when this mapping goes away (replacing any earlier one).
    pub(crate) fn set_on_drop(&self, hook: DropHook) {
        *self.on_drop.lock().unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// Take the hook out, to run it now (`finalize`); it then does not run at drop.
    pub(crate) fn take_on_drop(&self) -> Option<DropHook> {
        self.on_drop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Address of element 0: page-aligned, followed by `len * elem.size` mapped bytes (the end
    /// of a header-only mapping when there are none: valid for zero-byte accesses only).
    pub(crate) fn data(&self) -> *mut u8 {
        // In bounds: the mapping is DATA_OFFSET + len * size bytes long (checked at construction).
        self.raw.as_mut_ptr().wrapping_add(DATA_OFFSET)
    }

    /// Remove the segment's name (idempotent; a name already gone counts as success).
    /// Does nothing for files.
    pub(crate) fn unlink(&self) -> Result<(), ShmError> {
        let Backing::Shm { name } = &self.backing else {
            return Ok(());
        };
        if self.unlinked.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        match shm_unlink(name.as_str()) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => {
                self.unlinked.store(false, Ordering::Release);
                Err(ShmError::errno("shm_unlink", name, e))
            }
        }
    }

    /// Fault in the pages holding elements `elems` (see `SharedArray::prefault`).
    pub(crate) fn prefault(&self, elems: Range<usize>) -> Result<(), ShmError> {
        let size = self.elem.size;
        let (lo, hi) = (
            DATA_OFFSET + elems.start * size,
            DATA_OFFSET + elems.end * size,
        );
        let span = page_span(lo, hi, PAGE);
        if span.is_empty() {
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
        match self.raw.advise_range(advice, span.start, span.len()) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::EINVAL as i32) => {
                // Kernels before 5.14 lack MADV_POPULATE_*: read one byte per page instead
                // (a read never races with the writers of those elements in a harmful way: it
                // is the same access `view()` makes).
                let base = self.raw.as_ptr();
                let mut at = lo;
                while at < hi {
                    // SAFETY: DATA_OFFSET <= lo <= at < hi <= DATA_OFFSET + len * size, which is
                    // inside the mapping; u8 has no alignment or validity requirement.
                    unsafe { std::ptr::read_volatile(base.add(at)) };
                    at = (at / PAGE + 1) * PAGE;
                }
                Ok(())
            }
            Err(e) => Err(ShmError::io("madvise(MADV_POPULATE_*)", &self.backing, e)),
        }
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

    /// Check that this mapping is the one `handle` describes.
    pub(crate) fn matches(&self, handle: &ShmHandle) -> Result<(), ShmError> {
        if self.id != handle.id {
            return Err(ShmError::BadHeader {
                object: self.backing.clone(),
                reason: format!("segment id {}, expected {}", self.id, handle.id),
            });
        }
        self.matches_type(&handle.elem, &handle.dims)
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
        registry::forget(&self.key, self);
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

/// Reserve `total` bytes of `file` with `posix_fallocate` (retrying on `EINTR`).
pub(crate) fn reserve(file: &File, total: usize, object: &Backing) -> Result<(), ShmError> {
    let len = i64::try_from(total).expect("layout() keeps sizes below i64::MAX");
    loop {
        match nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, len) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOSPC) => {
                return Err(ShmError::NoSpace {
                    object: object.clone(),
                    bytes: total as u64,
                })
            }
            Err(e) => return Err(ShmError::errno("posix_fallocate", object, e)),
        }
    }
}

/// Unlinks a fresh name unless disarmed: construction that fails part-way leaves nothing.
struct UnlinkOnDrop<'a>(Option<&'a str>);

impl Drop for UnlinkOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.0 {
            let _ = shm_unlink(name);
        }
    }
}

/// Create, reserve, map and publish a new segment; it is registered (unpinned) in this process.
pub(crate) fn create(elem: ElemInfo, dims: &[usize]) -> Result<Arc<Mapping>, ShmError> {
    let (len, total) = layout(&elem, dims)?;
    let id = SegmentId::random()?;
    let name = format!("/{NAME_PREFIX}{}-{id}", std::process::id());
    let backing = Backing::Shm { name: name.clone() };
    let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR;
    let fd = shm_open(name.as_str(), flags, Mode::S_IRUSR | Mode::S_IWUSR)
        .map_err(|e| ShmError::errno("shm_open(O_CREAT|O_EXCL)", &name, e))?;
    let mut guard = UnlinkOnDrop(Some(&name));
    let file = File::from(fd);
    reserve(&file, total, &backing)?;
    let raw = MmapOptions::new()
        .len(total)
        .map_raw(&file)
        .map_err(|e| ShmError::io("mmap", &name, e))?;
    // SAFETY: `raw` is a fresh private-to-us mapping of `total >= DATA_OFFSET` bytes, page-aligned
    // (so 8-aligned); nobody else knows the name's random part yet, so nobody reads it.
    unsafe { Header::new(id, &elem, dims, len).publish(raw.as_mut_ptr()) };
    drop(file); // the mapping stays valid without the descriptor
    let mapping = Mapping::new(MappingParts {
        raw,
        id,
        key: Key::Shm(id),
        backing,
        dims: dims.to_vec(),
        len,
        elem,
        writable: true,
        leases: None,
    });
    registry::insert(Key::Shm(id), &mapping, false);
    guard.0 = None; // from here on the caller's PendingArray unlinks
    Ok(mapping)
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
    let mut sorted = pids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if pids.is_empty() || sorted.len() != pids.len() {
        return Err(ShmError::InvalidPids {
            pids: pids.to_vec(),
        });
    }
    Ok(())
}

/// Map the object of `handle` (or reuse this process's mapping of it) and pin it.
pub(crate) fn attach_pinned(handle: &ShmHandle, myid: Pid) -> Result<Arc<Mapping>, ShmError> {
    check_handle(handle, Some(myid))?;
    let _opening = registry::open_lock();
    let mapping = match &handle.backing {
        Backing::Shm { name } => match registry::get(&Key::Shm(handle.id)) {
            Some(m) => m,
            None => open_shm(handle, name)?,
        },
        Backing::File { path } => crate::file::open_locked(
            path,
            &handle.elem,
            &handle.dims,
            handle.read_only,
            Some(handle.id),
        )?,
    };
    mapping.matches(handle)?;
    registry::pin(&mapping.key, &mapping);
    Ok(mapping)
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
    };
    let mapping = key
        .and_then(|k| registry::get(&k))
        .ok_or_else(|| ShmError::NotMapped {
            id: handle.id,
            object: handle.backing.clone(),
        })?;
    mapping.matches(handle)?;
    Ok(mapping)
}

fn open_shm(handle: &ShmHandle, name: &str) -> Result<Arc<Mapping>, ShmError> {
    let (len, total) = layout(&handle.elem, &handle.dims)?;
    let fd = shm_open(name, OFlag::O_RDWR, Mode::empty()).map_err(|e| {
        let op = if e == Errno::ENOENT {
            "shm_open (the name is gone: attach must happen before the creator unlinks)"
        } else {
            "shm_open"
        };
        ShmError::errno(op, name, e)
    })?;
    let file = File::from(fd);
    let found = file
        .metadata()
        .map_err(|e| ShmError::io("fstat", name, e))?
        .len();
    if found != total as u64 {
        return Err(ShmError::SizeMismatch {
            object: handle.backing.clone(),
            expected: total as u64,
            found,
        });
    }
    let raw = MmapOptions::new()
        .len(total)
        .map_raw(&file)
        .map_err(|e| ShmError::io("mmap", name, e))?;
    // SAFETY: `raw` maps `total >= DATA_OFFSET` bytes (fstat said the object is that large),
    // page-aligned; the creator published the header before the handle was sent.
    let header = unsafe { Header::read(raw.as_ptr(), &handle.backing) }?;
    header.check(
        &handle.backing,
        Some(handle.id),
        &handle.elem,
        &handle.dims,
        found,
    )?;
    let mapping = Mapping::new(MappingParts {
        raw,
        id: handle.id,
        key: Key::Shm(handle.id),
        backing: handle.backing.clone(),
        dims: handle.dims.clone(),
        len,
        elem: handle.elem.clone(),
        writable: true,
        leases: None,
    });
    registry::insert(Key::Shm(handle.id), &mapping, true);
    Ok(mapping)
}

/// Remove `/dev/shm` names left by cohort processes that died before unlinking them.
///
/// Names have the form `cohort-<os pid>-<32 hex digits>`; a name is removed when `kill(pid, 0)`
/// says no such process exists. Returns the names removed. Names of live processes, of other
/// users (the sticky `/dev/shm` refuses), and of this process are left alone.
///
/// Caveat: the pid in a name is the creator's pid in *its* pid namespace. Do not run this where
/// processes of several pid namespaces share one `/dev/shm` (containers with a shared IPC
/// namespace): a live creator in another namespace looks dead from here, and its segment's name
/// would be removed before its workers attached. Removing a name never affects processes that
/// already mapped the segment.
pub fn sweep_orphans() -> Result<Vec<String>, ShmError> {
    let dir = std::fs::read_dir("/dev/shm").map_err(|e| ShmError::io("read_dir", "/dev/shm", e))?;
    let me = std::process::id();
    let mut removed = Vec::new();
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some(pid) = creator_pid(name) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw_pid) = i32::try_from(pid) else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw_pid), None);
        if alive == Err(Errno::ESRCH) && shm_unlink(format!("/{name}").as_str()).is_ok() {
            removed.push(name.to_owned());
        }
    }
    Ok(removed)
}

/// The creator's OS pid in a name `cohort-<pid>-<32 hex>`, or `None` if it has another form.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, id) = rest.split_once('-')?;
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if hex && digits {
        pid.parse().ok().filter(|&p| p > 0)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_pid_parses_only_our_names() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(creator_pid(&format!("cohort-42-{id}")), Some(42));
        assert_eq!(creator_pid(&format!("cohort-0-{id}")), None);
        assert_eq!(creator_pid(&format!("cohort--{id}")), None);
        assert_eq!(creator_pid(&format!("cohort-42-{id}0")), None);
        assert_eq!(creator_pid("cohort-42-xyz"), None);
        assert_eq!(creator_pid(&format!("jl42-{id}")), None);
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
