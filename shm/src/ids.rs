//! The plain ids an array is known by: its [`SegmentId`], the [`HostId`] it was made on, its
//! [`ElemInfo`] and its [`Backing`]. Plain data, at the bottom: every other file may name them.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// A 128-bit identity of one segment (or one file-backed array), fixed at creation.
///
/// For a segment or a file with cohort's header it is random, stored in the header, and checked
/// on every attach; for a raw file mapping (no header) it is derived from the file's device and
/// inode and the mapped byte range, so every process computes the same one. It names the object
/// in this process's registry of mappings and in [`release`](crate::release). Displayed as 32
/// lowercase hex digits. A new random one comes from [`SegmentId::random`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub u128);

impl SegmentId {
    /// The id of bytes `offset..offset + bytes` of the file `dev`/`ino` mapped raw: FNV-1a
    /// (128 bits) of those four numbers, the same in every process of the host.
    pub(crate) fn of_raw(dev: u64, ino: u64, offset: u64, bytes: u64) -> SegmentId {
        const BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let words = [dev, ino, offset, bytes];
        let hash = b"raw"
            .iter()
            .copied()
            .chain(words.iter().flat_map(|w| w.to_le_bytes()))
            .fold(BASIS, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME));
        SegmentId(hash)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Which host (and which boot of it) a handle was made on.
///
/// Shared memory only works between processes of one node, so
/// [`attach`](crate::SharedArray::attach) refuses a handle from another host with
/// [`ShmError::WrongHost`](crate::ShmError::WrongHost) instead of failing later with a confusing
/// "no such file". The boot id (`/proc/sys/kernel/random/boot_id`) tells a rebooted host apart;
/// a field that cannot be read is left empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostId {
    /// The host name (`gethostname`).
    pub hostname: String,
    /// The kernel's boot id, or empty where `/proc` is not readable.
    pub boot_id: String,
}

impl HostId {
    /// This host, read once per process.
    pub fn current() -> &'static HostId {
        static HOST: OnceLock<HostId> = OnceLock::new();
        HOST.get_or_init(|| HostId {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        })
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (boot id {})", self.hostname, self.boot_id)
    }
}

/// The element type of an array, as far as a process can check it: its name and layout.
///
/// The name is [`std::any::type_name`], which is reliable between processes of one binary
/// (docs/ARCHITECTURE.md, decision 1); size and alignment are checked as well.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ElemInfo {
    /// `std::any::type_name::<T>()`.
    pub type_name: String,
    /// `size_of::<T>()`.
    pub size: usize,
    /// `align_of::<T>()`.
    pub align: usize,
}

impl ElemInfo {
    /// The description of `T`.
    pub fn of<T>() -> ElemInfo {
        ElemInfo {
            type_name: std::any::type_name::<T>().to_owned(),
            size: std::mem::size_of::<T>(),
            align: std::mem::align_of::<T>(),
        }
    }
}

/// Where an array's memory lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Backing {
    /// A shared-memory segment: an inode of the `/dev/shm` tmpfs that has no name, reached
    /// through its creator's descriptor while the array is constructed.
    Shm {
        /// The creator's OS process id.
        creator: u32,
        /// The creator's descriptor of the segment (`/proc/<creator>/fd/<fd>`).
        fd: i32,
        /// The segment's device number, checked before it is opened.
        dev: u64,
        /// The segment's inode number, checked before it is opened.
        ino: u64,
    },
    /// A regular file that starts with cohort's header.
    File {
        /// The file's path as given when it was created or opened.
        path: PathBuf,
    },
    /// A byte range of a regular file holding the elements raw, without header (Julia's
    /// file-backed `SharedArray`).
    RawFile {
        /// The file's absolute path.
        path: PathBuf,
        /// Where element 0 starts, in bytes from the start of the file.
        offset: u64,
        /// The file's device number, checked by every process that opens it.
        dev: u64,
        /// The file's inode number, checked by every process that opens it.
        ino: u64,
    },
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Shm {
                creator, fd, ino, ..
            } => write!(
                f,
                "shared-memory segment /dev/shm/#{ino} (descriptor {fd} of process {creator})"
            ),
            Backing::File { path } => write!(f, "file {}", path.display()),
            Backing::RawFile { path, offset, .. } => {
                write!(f, "file {} (raw, from byte {offset})", path.display())
            }
        }
    }
}
