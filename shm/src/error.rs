//! The one error type of this crate.

use std::fmt;

use cohort_core::Pid;

use crate::ids::{Backing, SegmentId};
use crate::index::Region;

/// How a region is borrowed within one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Shared, read-only borrow (any number may overlap).
    Read,
    /// Exclusive, mutable borrow (overlaps nothing else).
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "for reading",
            Access::Write => "for writing",
        })
    }
}

/// Everything that can go wrong creating, attaching or accessing a shared array.
///
/// Each variant says which object (segment or file path) it is about where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// The element count, the size in bytes, or the product of the non-zero dims (which
    /// `ndarray` bounds even for an empty array) overflows or exceeds `isize::MAX`.
    #[error(
        "shared array with dims {dims:?} of {elem_size}-byte elements is too large: \
         its element count or size in bytes overflows or exceeds isize::MAX"
    )]
    TooLarge {
        /// The requested dims.
        dims: Vec<usize>,
        /// `size_of` the element type.
        elem_size: usize,
    },
    /// New dims that hold another number of elements than the array (Julia's
    /// `DimensionMismatch` from `reshape`).
    #[error("cannot reshape an array of dims {from:?} to {to:?}: the element counts differ")]
    LengthMismatch {
        /// The array's dims.
        from: Vec<usize>,
        /// The requested dims.
        to: Vec<usize>,
    },
    /// More dimensions than the header can record.
    #[error("shared arrays have at most {max} dimensions, got {ndims}")]
    TooManyDims {
        /// The requested number of dimensions.
        ndims: usize,
        /// [`MAX_DIMS`](crate::MAX_DIMS).
        max: usize,
    },
    /// The pid list is empty or has a pid twice.
    #[error("pids {pids:?} are invalid: they must be non-empty and distinct")]
    InvalidPids {
        /// The pids given.
        pids: Vec<Pid>,
    },
    /// `posix_fallocate` found no room (`ENOSPC`): `/dev/shm` (or the file system) is full.
    #[error(
        "no space to reserve {bytes} bytes for {object} (for shared memory, see `df -h /dev/shm`)"
    )]
    NoSpace {
        /// The segment or file.
        object: Backing,
        /// The bytes asked for (header included, for an object with one).
        bytes: u64,
    },
    /// The object's size is not the one its dims and element type imply.
    #[error("{object} has {found} bytes, expected {expected} (header and data)")]
    SizeMismatch {
        /// The segment or file.
        object: Backing,
        /// Bytes implied by dims and element type.
        expected: u64,
        /// Bytes found (`fstat`).
        found: u64,
    },
    /// The header is missing, of another layout version, or of another segment.
    #[error("{object} does not hold the expected cohort shared-array header: {reason}")]
    BadHeader {
        /// The segment or file.
        object: Backing,
        /// What did not match.
        reason: String,
    },
    /// The element type differs from the one the array was created with.
    #[error("{object} holds elements of type {found}, not {expected}")]
    TypeMismatch {
        /// The segment or file.
        object: Backing,
        /// The requested type (name, size, align).
        expected: String,
        /// The recorded type (name, size, align).
        found: String,
    },
    /// The dims differ from the ones the array was created with.
    #[error("{object} has dims {found:?}, not {expected:?}")]
    ShapeMismatch {
        /// The segment or file.
        object: Backing,
        /// The requested dims.
        expected: Vec<usize>,
        /// The recorded dims.
        found: Vec<usize>,
    },
    /// The requested `ndarray` dimension type cannot hold the recorded number of dims.
    #[error("{object} has {} dimensions {found:?}, not {expected}", found.len())]
    DimensionalityMismatch {
        /// The segment or file.
        object: Backing,
        /// The dimensionality of the requested type.
        expected: usize,
        /// The recorded dims.
        found: Vec<usize>,
    },
    /// The attaching pid is not among the array's pids.
    #[error("pid {pid} is not among the pids {pids:?} of this shared array")]
    NotInPids {
        /// The pid that tried to attach.
        pid: Pid,
        /// The array's pids.
        pids: Vec<Pid>,
    },
    /// The handle was made on another host (or before a reboot).
    #[error(
        "shared array handle was made on host {handle_host} but this is {this_host}: \
         shared arrays are shared only between processes of one node"
    )]
    WrongHost {
        /// Where the handle was made.
        handle_host: String,
        /// This host.
        this_host: String,
    },
    /// [`lookup`](crate::SharedArray::lookup) found no live mapping of the segment here.
    #[error(
        "segment {id} ({object}) is not mapped in this process: attach it (while its creator \
         constructs the array) before use"
    )]
    NotMapped {
        /// The segment id.
        id: SegmentId,
        /// The segment or file.
        object: Backing,
    },
    /// Mutable access to an array mapped read-only.
    #[error("{object} is mapped read-only")]
    ReadOnly {
        /// The file.
        object: Backing,
    },
    /// A range or axis outside the array.
    #[error("{region} is out of bounds for an array with dims {dims:?}")]
    OutOfBounds {
        /// The requested region (for a bad axis, `range` is `0..0`).
        region: Region,
        /// The array's dims.
        dims: Vec<usize>,
    },
    /// The region is already borrowed in this process in a conflicting way (like a `RefCell`).
    #[error("cannot borrow {requested} {access}: {held} is already borrowed {held_access} in this process")]
    Busy {
        /// The requested region.
        requested: Region,
        /// The requested access.
        access: Access,
        /// The conflicting region.
        held: Region,
        /// How it is held.
        held_access: Access,
    },
    /// An argument that can never work: a relative path for a raw file mapping, an offset
    /// that is not a multiple of the element alignment, a mode that cannot do what is asked
    /// (Julia's `ArgumentError`).
    #[error("invalid argument: {reason}")]
    Argument {
        /// What is wrong, and what to do instead.
        reason: String,
    },
    /// A file too short for a read-only raw mapping, which cannot grow it.
    #[error(
        "{object} has {found} bytes, fewer than the {needed} that its offset and elements need; \
         a read-only mapping cannot grow it"
    )]
    FileTooShort {
        /// The file.
        object: Backing,
        /// The offset plus the elements' bytes.
        needed: u64,
        /// Bytes found (`fstat`).
        found: u64,
    },
    /// Bytes of a file that this process already maps in another way (another byte range
    /// that overlaps, or the whole file as an array with cohort's header): two mappings of the
    /// same bytes would alias memory behind separate borrow tracking.
    #[error(
        "{object} overlaps {mapped} of the same file, which this process maps already; map \
         exactly the same range with the same element type and dims to share that mapping, or a \
         range that does not overlap it"
    )]
    Overlapping {
        /// The mapping asked for.
        object: Backing,
        /// What this process maps already (a byte range, or the whole file).
        mapped: String,
    },
    /// The request cannot be served (alignment, a file mapped here that would be truncated...).
    #[error("unsupported: {reason}")]
    Unsupported {
        /// Why.
        reason: String,
    },
    /// A system call failed.
    #[error("{op} failed for {target}: {source}")]
    Io {
        /// The call (`open`, `mmap`, ...).
        op: &'static str,
        /// The segment, path or thing it was about.
        target: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ShmError {
    /// An [`ShmError::Io`] from a nix errno.
    pub(crate) fn errno(op: &'static str, target: impl fmt::Display, e: nix::Error) -> ShmError {
        ShmError::Io {
            op,
            target: target.to_string(),
            source: std::io::Error::from(e),
        }
    }

    /// An [`ShmError::Io`] from an `io::Error`.
    pub(crate) fn io(op: &'static str, target: impl fmt::Display, e: std::io::Error) -> ShmError {
        ShmError::Io {
            op,
            target: target.to_string(),
            source: e,
        }
    }
}
