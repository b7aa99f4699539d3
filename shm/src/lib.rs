//! Shared-memory arrays for cohort: Julia's `SharedArrays` on POSIX shared memory.
//!
//! A [`SharedArray<T, D>`](SharedArray) is an N-dimensional array whose memory is mapped by
//! several processes (pids) of one node, so that each can read and write it without messages.
//! Users reach this crate as `cohort::shm` (and `SharedArray`, `localindices`, `indexpids`,
//! `myrange` are in `cohort::prelude`).
//!
//! # The model, for Julia users
//!
//! (Through the `cohort` facade, which this crate cannot depend on, so the example is not
//! compiled here; `tests/shm_cluster.rs` runs the same code.)
//!
//! ```ignore
//! use cohort::prelude::*;
//! use cohort::shm::ndarray::Ix2;
//!
//! /// Julia: `S -> S[localindices(S)] = repeat([myid()], length(localindices(S)))`.
//! #[cohort::remote]
//! fn fill_mine(s: SharedArray<i64, Ix2>) -> cohort::Result<()> {
//!     s.local_chunk_mut(myid())?.fill(myid() as i64);
//!     Ok(())
//! }
//!
//! /// Runs on a worker: the array arrives as a handle to the worker's own mapping.
//! #[cohort::remote]
//! fn total(s: SharedArray<i64, Ix2>) -> i64 {
//!     s.as_slice().iter().sum()
//! }
//!
//! fn main() -> cohort::Result<()> {
//!     let _c = cohort::init()?;
//!     addprocs(3)?; // pids 2, 3, 4
//!     let s = SharedArray::<i64, Ix2>::with_init((3, 4), None, fill_mine)?;
//!     assert_eq!(s.pids(), [2, 3, 4]); // the master is not a pid when there are workers
//!     assert_eq!(s.view()[[0, 1]], 2); // [2 2 3 4; 2 3 3 4; 2 3 4 4]
//!     assert_eq!(remotecall_fetch(total, 3, (s.clone(),))?, 36); // no data is sent
//!     Ok(())
//! } // dropping the master's last handle releases the array on every pid
//! ```
//!
//! * **Construction is collective, from one process** (the *creator*, usually the master):
//!   [`SharedArray::new`] (Julia's `SharedArray{T,N}(dims; pids)`), [`SharedArray::with_init`]
//!   (the `init` keyword: a `#[cohort::remote]` function run on every pid at once, waited for),
//!   [`SharedArray::new_file`] (a file-backed array with cohort's header),
//!   [`SharedArray::new_raw_file`] (Julia's: elements raw at an offset of any file, in the
//!   modes `"r"`, `"r+"`, `"w+"`, `"a+"` of [`RawMode`]). Default pids: Julia's — every process of
//!   this host but the master, or the master alone when it has no workers. The creator always
//!   maps the array, pid or not.
//! * **Empty arrays are arrays**, as in Julia: any dim may be zero (`SharedArray{Float64}(0)`,
//!   `(3, 0)`), and the element type may be zero-sized (`()`, a field-less `Pod` struct). Their
//!   data takes no bytes (the segment is only its header); with a zero dim every pid's
//!   `localindices` is `0..0`. They travel, attach and release like any other array.
//! * **Passing it around:** a `SharedArray` argument of a remote call, or a value in a channel,
//!   travels as its [`ShmHandle`] (a few hundred bytes); the receiver gets its own mapping of the
//!   same memory. A process outside the array's pids (or on another host) cannot receive it: the
//!   call fails with an error naming that pid ([`ShmError::NotInPids`],
//!   [`ShmError::WrongHost`]). Explicit pids on another host are refused at construction.
//! * **Lifetime, as Julia's finalizer:** the creator's handles own the array. When the last one
//!   is dropped there, or at [`SharedArray::finalize`], every other pid is told to release its
//!   mapping, which it unmaps once its own handles are gone; the memory is then freed. Keep the
//!   creator's handle alive while other processes use the array.
//! * **Nothing outlives the processes:** a segment never has a name in `/dev/shm`; its memory
//!   is owned by the processes that hold it, so `kill -9` of the master or of a worker, at any
//!   moment (during construction too), leaves nothing behind.
//! * **Pages are faulted in at construction**, each pid its own `localindices` share, in
//!   parallel, so a first kernel pass runs as fast as later ones.
//! * **Errors** are `cohort::Error`s: [`ShmError`] converts (a failed system call stays
//!   `Error::Io`, the rest is `Error::Invalid` with the same message).
//!
//! | Julia | here |
//! |---|---|
//! | `SharedArray{Float64,2}((m, n); pids)` | [`SharedArray::<f64, Ix2>::new((m, n), Some(&pids))`](SharedArray::new) (`None`: default pids) |
//! | `SharedArray{T,N}(dims; init = f)` | [`SharedArray::with_init(dims, None, f)`](SharedArray::with_init), [`with_init_args`](SharedArray::with_init_args) |
//! | `@sync for p in procs(S) @async remotecall_wait(f, p, S) end` | [`S.on_pids(f)`](SharedArray::on_pids) |
//! | `finalize(S)` | [`S.finalize()`](SharedArray::finalize) |
//! | `isbitstype(T)` | `T: bytemuck::Pod` (checked at compile time) |
//! | `procs(S)` | [`S.pids()`](SharedArray::pids) |
//! | `indexpids(S)` | [`indexpids(&S)`](indexpids) → `Option<usize>`, 0-based ([`S.indexpids(pid)`](SharedArray::indexpids) for another pid) |
//! | `localindices(S)` | [`localindices(&S)`](localindices) → `Range<usize>`, 0-based |
//! | `S[localindices(S)] .= x` | [`S.local_chunk_mut(myid())?.fill(x)`](SharedArray::local_chunk_mut) |
//! | the manual's `myrange(q)` (2nd dim) | [`myrange(&q, Axis(1))`](myrange), [`q.local_axis_chunk_mut(Axis(1), myid())`](SharedArray::local_axis_chunk_mut) |
//! | `sdata(S)` | [`S.as_slice()`](SharedArray::as_slice) / [`S.view()`](SharedArray::view) |
//! | `S[i, j]` | `S.view()[[i, j]]` (0-based) |
//! | `shmem_fill(v, dims; pids)` | [`SharedArray::filled(v, dims, pids)`](SharedArray::filled); `fill!(S, v)`: [`S.fill_all(v)`](SharedArray::fill_all) |
//! | `shmem_rand(dims; pids)` | [`SharedArray::rand(dims, pids)`](SharedArray::rand), [`rand_seeded`](SharedArray::rand_seeded) |
//! | `reshape(S, dims)` | [`S.reshape(dims)`](SharedArray::reshape) (the same memory) |
//! | `copy(S)` | [`S.deep_copy()`](SharedArray::deep_copy) (a new segment, same pids; `clone` is another handle) |
//! | `similar(S)` | [`S.similar()`](SharedArray::similar) (a private array); [`S.similar_shared()`](SharedArray::similar_shared) |
//! | `Array(S)`, `copy(sdata(S))` | [`S.unshare()`](SharedArray::unshare) (a private copy) |
//! | this process lets its mapping go | [`S.close()`](SharedArray::close), on another pid [`S.close_on(pid)`](SharedArray::close_on) |
//! | `SharedArray{T}(filename, dims; mode)` (cohort's header) | [`SharedArray::new_file(path, dims, FileMode::…, pids)`](SharedArray::new_file) |
//! | `SharedArray{T,N}(filename, dims, offset; mode, init, pids)` (raw) | [`SharedArray::new_raw_file(path, dims, offset, Some(RawMode::…), pids)`](SharedArray::new_raw_file), [`new_raw_file_with_init`](SharedArray::new_raw_file_with_init) |
//!
//! Underneath, the node-local layer works without a cluster and takes pids explicitly:
//! [`SharedArray::create`] / [`attach`](SharedArray::attach) / [`PendingArray::finish`] /
//! [`release`], [`create_file`](SharedArray::create_file) / [`open_file`](SharedArray::open_file),
//! [`open_raw_file`](SharedArray::open_raw_file).
//!
//! **Column-major, like Julia.** The first index runs fastest: element `[i, j]` of an `m × n`
//! array is linear element `i + m * j`. Views are `ndarray` views with Fortran-order strides
//! (`.f()` shapes), so `ndarray` code works unchanged, and a range of the *last* axis is a
//! contiguous block. All indices and axes are 0-based.
//!
//! # Segment lifecycle: nothing is left in `/dev/shm`
//!
//! The steps are SharedArrays.jl's, but a segment has no name, so that no moment exists when
//! a killed process would leave one behind:
//!
//! 1. **Create** (one process, usually the master): [`SharedArray::create`] makes an unnamed
//!    inode of the `/dev/shm` tmpfs (`open("/dev/shm", O_TMPFILE, 0600)`), reserves its whole
//!    size with `posix_fallocate` (a full `/dev/shm` is [`ShmError::NoSpace`] now, never a
//!    `SIGBUS` mid-computation), maps it and writes a checked header. It keeps the descriptor,
//!    and returns a [`PendingArray`], which holds the array and a serializable [`ShmHandle`]
//!    (the creator's OS pid, that descriptor's number, the inode).
//! 2. **Attach** (every other pid): [`SharedArray::attach`] (or the untyped
//!    [`ShmHandle::attach`]) checks host, pid membership, element type and dims, then opens the
//!    segment through `/proc/<creator>/fd/<n>` once that is the handle's inode, and checks the
//!    object's size and header. The mapping is *pinned* in that process's registry until
//!    [`release`].
//! 3. **Close** as soon as every pid has mapped it: [`PendingArray::finish`] closes the
//!    creator's descriptor ([`SharedArray::unlink`]). Dropping the `PendingArray` instead (an
//!    attach failed) closes it too. With `pids == [myid]`, `create` closes it at once.
//! 4. **Use**: a handle that arrives later (say, as an argument of a remote call) is turned back
//!    into the array with [`SharedArray::lookup`], which finds the existing mapping.
//!    `SharedArray` serializes as its handle and deserializes by `lookup`. The handle travels
//!    as one byte string, encoded once per array value (its clones share it); bytes that
//!    arrived before and passed every check are not decoded again while the process maps the
//!    segment, so an array passed at every step of a loop costs little more than its bytes.
//! 5. **Release**: when the owner drops the array, each pid calls [`release`]; the segment is
//!    unmapped in a process once its last `SharedArray` there is dropped, and freed by the
//!    kernel once unmapped everywhere.
//!
//! The kernel frees the segment when its last descriptor and mapping go, however the processes
//! holding them end: a creator killed during construction takes its descriptor with it, a pid
//! that had not attached yet gets an error, and the memory goes with the last pid that had.
//! (Its size counts in `df /dev/shm` meanwhile.)
//!
//! Opening through `/proc` asks what reading another process's descriptors asks: the same
//! user, a dumpable creator (not a set-uid or file-capability binary, no `PR_SET_DUMPABLE` 0),
//! and one pid namespace for the creator and its pids, which processes of one host started by
//! a cohort manager or by `mpirun` share. Another user's process cannot attach.
//!
//! Earlier versions of cohort named segments `/dev/shm/cohort-<os pid>-<hex>` during
//! construction, and left the name when killed then; [`sweep_orphans`] removes such names
//! whose creator is gone, and every process runs it at its first construction.
//!
//! ```
//! use cohort_shm::{ndarray::Ix2, SharedArray};
//!
//! // One process, pids == [myid]: closed to attachers at once.
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
//! # Layers
//!
//! The files stand in layers, bottom first; a file names (`crate::…`) only files of its own
//! layer or lower ones, which `tests/layers.rs` checks:
//!
//! 1. [`index`] (the splitting arithmetic, on plain numbers) and `ids` ([`SegmentId`],
//!    [`HostId`], [`ElemInfo`], [`Backing`]);
//! 2. `error`: [`ShmError`];
//! 3. `header` (the checked header, the size arithmetic) and `lease` (in-process borrows);
//! 4. `mapping`: one mapping per object and process, and this process's registry of them
//!    ([`release`], [`mapped_segments`]);
//! 5. `segment`: shared-memory segments: create, open through the creator's descriptor,
//!    [`sweep_orphans`];
//! 6. `file`: file-backed objects, with cohort's header or raw at an offset ([`RawMode`]),
//!    reserved as segments are;
//! 7. `handle`: [`ShmHandle`], and the attach and lookup of the object it names;
//! 8. `array`: [`SharedArray`] and [`PendingArray`], node-local, pids given explicitly;
//! 9. `cluster`: the constructors and the release that run on every pid through cohort-core;
//! 10. this file, which only re-exports (so lower files take [`Pid`] from cohort-core).
//!
//! # Platform
//!
//! Linux (a tmpfs `/dev/shm` with `O_TMPFILE`, since 3.11; `/proc`; `posix_fallocate`;
//! `MADV_POPULATE_*` with a fallback before 5.14).
//!
//! Dependencies: `memmap2` (the mappings), `bytemuck` (the `Pod` bound and byte views),
//! `ndarray` (column-major views), `nix` (`posix_fallocate`, `madvise` errors, host names,
//! `shm_unlink` and liveness checks for the sweep), `getrandom` (segment ids), `serde`
//! (handles), `smallvec` (an arriving array's shape kept inline: an array passed to every
//! call of a per-step loop arrives on the worker's path to its kernel, where an allocation
//! per array showed; servo's crate), `rustc-hash` (the table of handle bytes already checked
//! is looked up at every arrival, and its keys are this host's own handles: a fast hash, the
//! one cohort-core uses),
//! `thiserror` (`ShmError`), and
//! cohort-core/cohort-macros for the remote calls that attach and release on every pid.

#![deny(missing_docs)]

mod array;
mod cluster;
mod error;
mod file;
mod handle;
mod header;
mod ids;
pub mod index;
mod lease;
mod mapping;
mod segment;

pub use array::{PendingArray, SharedArray};
pub use cluster::{indexpids, localindices, myrange, FileMode, RandElem};
pub use error::{Access, ShmError};
pub use file::RawMode;
pub use handle::ShmHandle;
pub use header::MAX_DIMS;
pub use ids::{Backing, ElemInfo, HostId, SegmentId};
pub use lease::{SharedSlice, SharedSliceMut, SharedView, SharedViewMut};
pub use mapping::{mapped_segments, release};
pub use segment::{sweep_orphans, NAME_PREFIX};

/// Re-export of the `ndarray` version this crate's views come from.
pub use ndarray;

/// A process id, as in Julia: the master is 1, workers 2, 3, ... (cohort-core's pid type).
pub use cohort_core::Pid;
