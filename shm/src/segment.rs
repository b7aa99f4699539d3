//! Shared-memory segments: create one, open one, and sweep the `/dev/shm` names that earlier
//! versions of cohort left behind. Once mapped, a segment is a `Mapping` like any other.
//!
//! A segment never has a name, so no crash at any moment can leave one:
//!
//! 1. the creator makes an unnamed inode of the `/dev/shm` tmpfs (`open(O_TMPFILE)`, mode
//!    `0600`), reserves the whole size with `posix_fallocate` (so a full `/dev/shm` is
//!    [`ShmError::NoSpace`] now, never a `SIGBUS` later), maps it and publishes the header. It
//!    keeps the descriptor (the *door*), whose number travels in the handle;
//! 2. every other pid opens the inode through `/proc/<creator>/fd/<n>`, after checking that
//!    this is the inode of the handle (device and inode numbers), then checks size and header;
//! 3. the creator closes the door once every pid has mapped the segment.
//!
//! The kernel frees the memory when the last descriptor and mapping of it go, so it lives
//! exactly as long as some process holds it; a killed creator takes its door with it (an
//! attach then fails, and the memory goes with the last pid that had mapped it). Opening
//! through `/proc` needs what reading another process's descriptors needs: the same user, a
//! creator that is dumpable (no set-uid binary, no `PR_SET_DUMPABLE` 0), and one pid namespace
//! for the creator and its pids (processes of one host started by a cohort manager or by
//! `mpirun` share it).
//!
//! Earlier versions of cohort named segments `/cohort-<os pid>-<32 hex digits>` during
//! construction; [`sweep_orphans`] removes such names whose creator is gone, and runs once in
//! every process at its first construction.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::{Arc, Once};

use memmap2::MmapOptions;
use nix::errno::Errno;
use nix::sys::mman::shm_unlink;

use crate::error::ShmError;
use crate::header::{layout, Header, DATA_OFFSET};
use crate::ids::{Backing, ElemInfo, SegmentId};
use crate::mapping::{self, Key, Mapping, MappingParts};

/// Prefix of the `/dev/shm` names earlier versions of cohort gave segments during construction
/// (`cohort-<os pid>-<32 hex digits>`), which [`sweep_orphans`] looks for.
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
    let total = u64::try_from(total).expect("usize fits in u64");
    reserve_range(file, 0, total, object)
}

/// Reserve bytes `start..end` of `file` (growing it to `end` if shorter; the contents of bytes
/// already there are kept), as [`reserve`] does.
pub(crate) fn reserve_range(
    file: &File,
    start: u64,
    end: u64,
    object: &Backing,
) -> Result<(), ShmError> {
    let as_off = |x: u64| i64::try_from(x).expect("layouts keep file offsets below i64::MAX");
    let (at, len) = (as_off(start), as_off(end - start));
    loop {
        match nix::fcntl::posix_fallocate(file.as_raw_fd(), at, len) {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOSPC) => {
                return Err(ShmError::NoSpace {
                    object: object.clone(),
                    bytes: end - start,
                })
            }
            Err(e) => return Err(ShmError::errno("posix_fallocate", object, e)),
        }
    }
}

/// Where the segments live: their tmpfs. Its size limit is the limit on shared memory.
const SHM_DIR: &str = "/dev/shm";

/// Create, reserve, map and publish a new segment; it is registered (unpinned) in this process,
/// and its mapping holds the descriptor other pids open it through (see the module docs).
pub(crate) fn create(elem: ElemInfo, dims: &[usize]) -> Result<Arc<Mapping>, ShmError> {
    sweep_once();
    let (len, total) = layout(&elem, dims)?;
    let id = SegmentId::random()?;
    // O_TMPFILE: an inode of the tmpfs that never has a name, freed by the kernel when the
    // last descriptor and mapping of it go, whoever holds them and however they end.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_TMPFILE)
        .open(SHM_DIR)
        .map_err(|e| ShmError::io("open(O_TMPFILE)", SHM_DIR, e))?;
    let meta = file
        .metadata()
        .map_err(|e| ShmError::io("fstat", SHM_DIR, e))?;
    let backing = Backing::Shm {
        creator: std::process::id(),
        fd: file.as_raw_fd(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    reserve(&file, total, &backing)?;
    let raw = MmapOptions::new()
        .len(total)
        .map_raw(&file)
        .map_err(|e| ShmError::io("mmap", &backing, e))?;
    // SAFETY: `raw` is a fresh mapping of `total >= DATA_OFFSET` bytes, page-aligned (so
    // 8-aligned); no other process can reach the inode before the handle is sent.
    unsafe { Header::new(id, &elem, dims, len).publish(raw.as_mut_ptr()) };
    let mapping = Mapping::new(MappingParts {
        raw,
        data_offset: DATA_OFFSET,
        id,
        key: Key::Shm(id),
        backing,
        dims: dims.to_vec(),
        len,
        elem,
        writable: true,
        leases: None,
        door: Some(file.into()),
    });
    mapping::insert(Key::Shm(id), &mapping, false);
    Ok(mapping)
}

/// Open and map the existing segment of `backing` through its creator's descriptor, checking
/// that it is that inode and that its size and header are those of segment `id` of `dims` of
/// `elem`; it is registered pinned in this process.
pub(crate) fn open(
    backing: &Backing,
    id: SegmentId,
    elem: &ElemInfo,
    dims: &[usize],
) -> Result<Arc<Mapping>, ShmError> {
    let Backing::Shm {
        creator,
        fd,
        dev,
        ino,
    } = *backing
    else {
        unreachable!("segment::open is called for segments only");
    };
    let (len, total) = layout(elem, dims)?;
    let path = format!("/proc/{creator}/fd/{fd}");
    let gone = |e: std::io::Error| {
        let op = match e.kind() {
            ErrorKind::NotFound => {
                "open (the creator's descriptor is gone: attach must happen while the creator \
                 constructs the array)"
            }
            ErrorKind::PermissionDenied => {
                "open (another user's segment, or a creator that is not dumpable)"
            }
            _ => "open",
        };
        ShmError::io(op, backing, e)
    };
    // Check the inode before opening: after the creator closed its descriptor the number may
    // name another file of that process (or of a process that reused the pid).
    let is_it = |m: &std::fs::Metadata| m.is_file() && m.dev() == dev && m.ino() == ino;
    let before = std::fs::metadata(&path).map_err(gone)?;
    if !is_it(&before) {
        return Err(gone(ErrorKind::NotFound.into()));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(gone)?;
    let meta = file
        .metadata()
        .map_err(|e| ShmError::io("fstat", backing, e))?;
    if !is_it(&meta) {
        return Err(gone(ErrorKind::NotFound.into()));
    }
    let found = meta.len();
    if found != total as u64 {
        return Err(ShmError::SizeMismatch {
            object: backing.clone(),
            expected: total as u64,
            found,
        });
    }
    let raw = MmapOptions::new()
        .len(total)
        .map_raw(&file)
        .map_err(|e| ShmError::io("mmap", backing, e))?;
    // SAFETY: `raw` maps `total >= DATA_OFFSET` bytes (fstat said the object is that large),
    // page-aligned; the creator published the header before the handle was sent.
    let header = unsafe { Header::read(raw.as_ptr(), backing) }?;
    header.check(backing, Some(id), elem, dims, found)?;
    let mapping = Mapping::new(MappingParts {
        raw,
        data_offset: DATA_OFFSET,
        id,
        key: Key::Shm(id),
        backing: backing.clone(),
        dims: dims.to_vec(),
        len,
        elem: elem.clone(),
        writable: true,
        leases: None,
        door: None,
    });
    mapping::insert(Key::Shm(id), &mapping, true);
    Ok(mapping)
}

/// [`sweep_orphans`] once per process, at its first construction of a segment.
fn sweep_once() {
    static SWEPT: Once = Once::new();
    SWEPT.call_once(|| match sweep_orphans() {
        Ok(removed) if !removed.is_empty() => {
            cohort_core::log!(
                info,
                "removed {} orphaned /dev/shm names: {removed:?}",
                removed.len()
            )
        }
        Ok(_) => {}
        Err(e) => cohort_core::log!(debug, "sweeping orphaned /dev/shm names: {e}"),
    });
}

/// Remove the `/dev/shm` names that cohort processes left when they died during a
/// construction, and return them.
///
/// cohort's segments have no name; earlier versions named them `cohort-<os pid>-<32 hex
/// digits>` until every pid had attached, so a process killed meanwhile left its name (and the
/// memory) behind. A name is removed when it belongs to this user and its creator is gone: no
/// process has that pid, or the process that has it now holds no descriptor or mapping of the
/// object (the pid was reused; a live creator holds one or the other from the moment the name
/// exists). Names of other users, of other forms, and of this process are left alone. Every
/// process runs this once, at its first construction of a segment.
///
/// Caveat: the pid in a name is the creator's pid in *its* pid namespace, so a creator of an
/// earlier version running in another pid namespace that shares this `/dev/shm` looks gone
/// from here; removing its name fails its construction (with an error on the pids that had
/// not attached yet). Removing a name never affects processes that already mapped the object.
pub fn sweep_orphans() -> Result<Vec<String>, ShmError> {
    let dir = std::fs::read_dir(SHM_DIR).map_err(|e| ShmError::io("read_dir", SHM_DIR, e))?;
    let me = std::process::id();
    let uid = nix::unistd::geteuid().as_raw();
    let mut removed = Vec::new();
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some(pid) = creator_pid(name) else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.uid() == uid);
        if pid == me || !ours || !creator_gone(pid, name) {
            continue;
        }
        if shm_unlink(format!("/{name}").as_str()).is_ok() {
            removed.push(name.to_owned());
        }
    }
    Ok(removed)
}

/// Whether the creator of `/dev/shm/<name>`, OS pid `pid`, is gone: no such process, or one
/// that holds neither a descriptor nor a mapping of the name. When unsure (`/proc` unreadable),
/// it is not gone.
fn creator_gone(pid: u32, name: &str) -> bool {
    let Ok(raw_pid) = i32::try_from(pid) else {
        return false;
    };
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw_pid), None) == Err(Errno::ESRCH) {
        return true;
    }
    let target = format!("{SHM_DIR}/{name}");
    // Descriptors first, then mappings: an earlier creator maps the object before closing its
    // descriptor, so one of the two readings sees it whenever it runs.
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let holds_fd = fds
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()));
    if holds_fd {
        return false;
    }
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return false;
    };
    !maps_hold(&maps, &target)
}

/// Whether a `/proc/<pid>/maps` text maps the file `target` (its path is a line's last field).
fn maps_hold(maps: &str, target: &str) -> bool {
    maps.lines()
        .any(|l| l.find('/').is_some_and(|at| &l[at..] == target))
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
    fn maps_hold_matches_whole_paths_only() {
        let maps = "7f00-7f01 rw-s 00000000 00:1a 39098   /dev/shm/cohort-42-ab\n\
                    7f02-7f03 r--p 00000000 08:01 12      /usr/lib/libc.so.6\n\
                    7f04-7f05 rw-p 00000000 00:00 0 \n";
        assert!(maps_hold(maps, "/dev/shm/cohort-42-ab"));
        assert!(!maps_hold(maps, "/dev/shm/cohort-42-a"));
        assert!(!maps_hold(maps, "/dev/shm/cohort-42-abc"));
        assert!(!maps_hold("", "/dev/shm/cohort-42-ab"));
    }

    #[test]
    fn this_process_holding_nothing_counts_as_gone() {
        // A live pid that holds no such name: what a reused pid looks like.
        let me = std::process::id();
        assert!(creator_gone(
            me,
            "cohort-1-00000000000000000000000000000000"
        ));
        assert!(
            !creator_gone(u32::MAX, "x"),
            "an impossible pid: unsure, so not gone"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(creator_gone(dead, "x"), "no such process");
    }
}
