//! What travels between processes: [`ShmHandle`] and the small types it is made of.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::ShmError;
use crate::Pid;

/// A 128-bit random identity of one segment (or one file-backed array), fixed at creation.
///
/// It is stored in the segment's header, checked on every attach, and keys this process's
/// registry of mappings. Displayed as 32 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SegmentId(pub u128);

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

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Which host (and which boot of it) a handle was made on.
///
/// Shared memory only works between processes of one node, so [`attach`](crate::SharedArray::attach)
/// refuses a handle from another host with [`ShmError::WrongHost`] instead of failing later with
/// a confusing "no such file". The boot id (`/proc/sys/kernel/random/boot_id`) tells a rebooted
/// host apart; a field that cannot be read is left empty.
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
/// (DESIGN decision 1); size and alignment are checked as well.
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
    /// A POSIX shared-memory object (`/dev/shm` on Linux), by its `shm_open` name.
    Shm {
        /// The name given to `shm_open`, with its leading `/`.
        name: String,
    },
    /// A regular file.
    File {
        /// The file's path as given when it was created or opened.
        path: PathBuf,
    },
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backing::Shm { name } => write!(f, "shared-memory segment {name}"),
            Backing::File { path } => write!(f, "file {}", path.display()),
        }
    }
}

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
    pub(crate) elem: ElemInfo,
    pub(crate) pids: Vec<Pid>,
    pub(crate) host: HostId,
    pub(crate) read_only: bool,
}

impl ShmHandle {
    /// The segment name or file path.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// The segment's id.
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// The array's dims (column-major, as given at creation).
    pub fn dims(&self) -> &[usize] {
        &self.dims
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

    /// Whether the array is mapped read-only (file-backed arrays opened read-only).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Map the segment in this process without naming its element type, and pin the mapping in
    /// this process's registry until [`release`](crate::release).
    ///
    /// This is what a worker runs when the creator asks every pid to attach: the typed array is
    /// obtained later with [`SharedArray::lookup`](crate::SharedArray::lookup), which works even
    /// after the creator has unlinked the segment's name. Checks are those of
    /// [`SharedArray::attach`](crate::SharedArray::attach), minus the element type and the
    /// number of dimensions.
    pub fn attach(&self, myid: Pid) -> Result<(), ShmError> {
        crate::segment::attach_pinned(self, myid).map(drop)
    }

    /// Fault in pid `myid`'s `localindices` share of this process's mapping (see
    /// [`SharedArray::prefault`](crate::SharedArray::prefault)): what a pid runs right after
    /// [`attach`](Self::attach), so the first touch of its share is paid at construction.
    ///
    /// # Errors
    /// [`NotMapped`](ShmError::NotMapped) if this process has not attached; `madvise` errors.
    pub fn prefault_local(&self, myid: Pid) -> Result<(), ShmError> {
        let mapping = crate::segment::lookup(self)?;
        let share = match crate::index::index_of(&self.pids, &myid) {
            Some(i) => crate::index::split_part(mapping.len, self.pids.len(), i),
            None => 0..0,
        };
        mapping.prefault(share)
    }
}
