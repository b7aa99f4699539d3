//! POSIX shared-memory segments (`/dev/shm` objects): create one, open one by name, and sweep
//! the names dead processes left. Once mapped, a segment is a `Mapping`
//! like any other.
//!
//! Lifecycle (as in SharedArrays.jl):
//!
//! 1. the creator `shm_open`s a fresh name with `O_CREAT | O_EXCL`, mode `0600`, reserves the
//!    whole size with `posix_fallocate` (so a full `/dev/shm` is [`ShmError::NoSpace`] now, never
//!    a `SIGBUS` later), maps it and publishes the header;
//! 2. every pid opens it by name (checked against the handle and the header);
//! 3. the creator unlinks the name as soon as every pid has mapped it. From then on the memory
//!    lives exactly as long as some process maps it: a killed process cannot leak it.
//!
//! A failure between 1 and 3 unlinks the name (drop guards). Only a process killed inside that
//! window leaves a name behind; [`sweep_orphans`] removes such names once their creator is dead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use memmap2::MmapOptions;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::Mode;

use crate::error::ShmError;
use crate::header::{layout, Header};
use crate::ids::{Backing, ElemInfo, SegmentId};
use crate::mapping::{self, Key, Mapping, MappingParts};

/// Prefix of every segment name cohort creates (`/cohort-<os pid>-<32 hex digits>`).
pub const NAME_PREFIX: &str = "cohort-";

// Beside the segment rather than the type: minting fails with a `ShmError`, which names the
// ids, so the ids' own file cannot. File-backed arrays mint theirs here too.
impl SegmentId {
    /// A fresh id from the operating system's random source (`getrandom`).
    pub fn random() -> Result<SegmentId, ShmError> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(|e| ShmError::Io {
            op: "getrandom",
            target: "a segment id".to_owned(),
            source: e
                .raw_os_error()
                .map(std::io::Error::from_raw_os_error)
                .unwrap_or_else(|| std::io::Error::other(e.to_string())),
        })?;
        Ok(SegmentId(u128::from_le_bytes(bytes)))
    }
}

/// Reserve `total` bytes of `file` with `posix_fallocate` (retrying on `EINTR`); files use it too.
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
    mapping::insert(Key::Shm(id), &mapping, false);
    guard.0 = None; // from here on the caller's PendingArray unlinks
    Ok(mapping)
}

/// Open and map the existing segment `name`, checking its size and header against segment
/// `id` of `dims` of `elem`; it is registered pinned in this process.
pub(crate) fn open(
    name: &str,
    id: SegmentId,
    elem: &ElemInfo,
    dims: &[usize],
) -> Result<Arc<Mapping>, ShmError> {
    let backing = Backing::Shm {
        name: name.to_owned(),
    };
    let (len, total) = layout(elem, dims)?;
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
            object: backing,
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
    let header = unsafe { Header::read(raw.as_ptr(), &backing) }?;
    header.check(&backing, Some(id), elem, dims, found)?;
    let mapping = Mapping::new(MappingParts {
        raw,
        id,
        key: Key::Shm(id),
        backing,
        dims: dims.to_vec(),
        len,
        elem: elem.clone(),
        writable: true,
        leases: None,
    });
    mapping::insert(Key::Shm(id), &mapping, true);
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
}
