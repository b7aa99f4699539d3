//! Shared-memory arrays for cohort: Julia's `SharedArrays` on POSIX shared memory.
//!
//! A [`SharedArray<T, D>`](SharedArray) is an N-dimensional array whose memory is mapped by
//! several processes (pids) of one node, so that each can read and write it without messages.
//! This crate is the node-local half: segments, mappings, views and index arithmetic. Running
//! the attach and `init` functions on other pids is cohort-core's remote-call layer.
//!
//! # For a Julia user
//!
//! | Julia | here |
//! |---|---|
//! | `SharedArray{Float64,2}((m, n); pids)` | [`SharedArray::<f64, Ix2>::create((m, n), &pids, myid)`](SharedArray::create) then attach on each pid |
//! | `isbitstype(T)` | `T: bytemuck::Pod` (checked at compile time) |
//! | `procs(S)` | [`S.pids()`](SharedArray::pids) |
//! | `indexpids(S)` | [`S.indexpids(myid)`](SharedArray::indexpids) → `Option<usize>`, 0-based |
//! | `localindices(S)` | [`S.localindices(myid)`](SharedArray::localindices) → `Range<usize>`, 0-based |
//! | `S[localindices(S)] .= x` | [`S.local_chunk_mut(myid)?.fill(x)`](SharedArray::local_chunk_mut) |
//! | the manual's `myrange(q)` (2nd dim) | [`S.myrange(Axis(1), myid)`](SharedArray::myrange), [`local_axis_chunk_mut`](SharedArray::local_axis_chunk_mut) |
//! | `sdata(S)` | [`S.as_slice()`](SharedArray::as_slice) / [`S.view()`](SharedArray::view) |
//! | `S[i, j]` | `S.view()[[i, j]]` (0-based) |
//! | `SharedArray{T}(filename, dims)` | [`SharedArray::create_file`] / [`SharedArray::open_file`] |
//!
//! **Column-major, like Julia.** The first index runs fastest: element `[i, j]` of an `m × n`
//! array is linear element `i + m * j`. Views are `ndarray` views with Fortran-order strides
//! (`.f()` shapes), so `ndarray` code works unchanged, and a range of the *last* axis is a
//! contiguous block. All indices and axes are 0-based.
//!
//! # Segment lifecycle: nothing is left in `/dev/shm`
//!
//! As in SharedArrays.jl:
//!
//! 1. **Create** (one process, usually the master): [`SharedArray::create`] makes a segment under
//!    an unguessable name `/cohort-<os pid>-<128 random bits in hex>` with
//!    `shm_open(O_CREAT | O_EXCL, 0600)`, reserves its whole size with `posix_fallocate` (a full
//!    `/dev/shm` is [`ShmError::NoSpace`] now, never a `SIGBUS` mid-computation), maps it and
//!    writes a checked header. It returns a [`PendingArray`], which holds the array and a
//!    serializable [`ShmHandle`].
//! 2. **Attach** (every other pid): [`SharedArray::attach`] (or the untyped
//!    [`ShmHandle::attach`]) maps the segment by name after checking host, pid membership,
//!    element type, dims, the header and the object's size. The mapping is *pinned* in that
//!    process's registry until [`release`].
//! 3. **Unlink** as soon as every pid has mapped it: [`PendingArray::finish`]. From then on the
//!    memory lives exactly as long as some process maps it, so a process killed at any later
//!    time leaks nothing. Dropping the `PendingArray` instead (an attach failed) unlinks too.
//!    With `pids == [myid]`, `create` unlinks at once.
//! 4. **Use**: a handle that arrives later (say, as an argument of a remote call) is turned back
//!    into the array with [`SharedArray::lookup`], which finds the existing mapping; the name is
//!    no longer needed. `SharedArray` serializes as its handle and deserializes by `lookup`.
//! 5. **Release**: when the owner drops the array, each pid calls [`release`]; the segment is
//!    unmapped in a process once its last `SharedArray` there is dropped, and freed by the
//!    kernel once unmapped everywhere.
//!
//! Only a process killed between steps 1 and 3 can leave a name behind; [`sweep_orphans`]
//! removes such names once their creator is dead.
//!
//! ```
//! use cohort_shm::{ndarray::Ix2, SharedArray};
//!
//! // One process, pids == [myid]: the name is unlinked at once.
//! let s = SharedArray::<f64, Ix2>::create((3, 4), &[1], 1)?.finish()?;
//! for (k, x) in s.local_chunk_mut(1)?.iter_mut().enumerate() {
//!     *x = k as f64;
//! }
//! assert_eq!(s.view()[[2, 1]], 5.0); // column-major: 2 + 3 * 1
//! # Ok::<(), cohort_shm::ShmError>(())
//! ```
//!
//! # Splitting the work
//!
//! [`localindices`](SharedArray::localindices) hands each pid a contiguous linear range; the
//! ranges are disjoint and cover the array, sizes differing by at most one.
//! [`myrange`](SharedArray::myrange) splits one chosen axis the same way, which keeps stencil
//! dependencies along the other axes inside one pid (the manual's advection example). The
//! arithmetic is in [`index`], on plain numbers.
//!
//! # Safety
//!
//! Within one process, views are borrow-checked at run time (leases over regions, like a
//! `RefCell`), so safe code never aliases a `&mut`. Across processes the rule is Julia's: each
//! pid writes only its own part, which the safe mutable accessors enforce by handing a pid only
//! its own part; wider mutable access is `unsafe`. The full story is on [`SharedArray`].
//!
//! Elements must be plain old data, so a `String` (a pointer into one process's heap) is refused
//! at compile time:
//!
//! ```compile_fail,E0277
//! let _ = cohort_shm::SharedArray::<String, cohort_shm::ndarray::Ix1>::create(3, &[1], 1);
//! ```
//!
//! # Platform
//!
//! Linux (`/dev/shm`, `posix_fallocate`, `MADV_POPULATE_*` with a fallback before 5.14).

#![deny(missing_docs)]

mod array;
mod cluster;
mod error;
mod file;
mod handle;
mod header;
pub mod index;
mod lease;
mod registry;
mod segment;

pub use array::{PendingArray, SharedArray};
pub use cluster::{indexpids, localindices, myrange, FileMode};
pub use error::{Access, ShmError};
pub use handle::{Backing, ElemInfo, HostId, SegmentId, ShmHandle};
pub use header::MAX_DIMS;
pub use lease::{SharedSlice, SharedSliceMut, SharedView, SharedViewMut};
pub use registry::{mapped_segments, release};
pub use segment::{sweep_orphans, NAME_PREFIX};

/// Re-export of the `ndarray` version this crate's views come from.
pub use ndarray;

/// A process id, as in Julia: the master is 1, workers 2, 3, ... (cohort-core's pid type).
pub use cohort_core::Pid;
