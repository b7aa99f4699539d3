//! Shared arrays in a cohort cluster: construction on every pid (attach, prefault, close),
//! `init` functions run on every pid, and release of every pid's mapping when the creator lets
//! the array go. See the [crate docs](crate) for the model.

use std::ops::Range;
use std::path::Path;

use bytemuck::Pod;
use cohort_core::{Error, Future, Pid, RemoteFn};
use ndarray::{Axis, Dimension, IntoDimension};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::array::{PendingArray, SharedArray};
use crate::error::ShmError;
use crate::file::{check_raw_args, RawMode};
use crate::handle::ShmHandle;
use crate::ids::{ElemInfo, SegmentId};

/// `ShmError` as a cohort error: a failed system call stays an [`Error::Io`] (its OS error
/// kept as the source), everything else becomes [`Error::Invalid`] with the same message.
impl From<ShmError> for Error {
    fn from(e: ShmError) -> Error {
        match e {
            ShmError::Io { op, target, source } => Error::Io {
                context: format!("{op} failed for {target}"),
                source,
            },
            other => Error::Invalid(other.to_string()),
        }
    }
}

/// Run on every pid of a new array but its creator: map it and fault in this pid's share.
#[cohort_macros::remote(crate = cohort_core)]
fn shm_attach(handle: ShmHandle) -> cohort_core::Result<()> {
    let me = cohort_core::myid();
    handle.attach(me)?;
    handle.prefault_local(me)?;
    Ok(())
}

/// Run on every pid of an array but its creator when the creator lets it go.
#[cohort_macros::remote(crate = cohort_core)]
fn shm_release(id: SegmentId) -> bool {
    crate::mapping::release(id)
}

/// Run on every pid of an array: write `pattern` (one element's bytes) over this pid's
/// `localindices` share.
#[cohort_macros::remote(crate = cohort_core)]
fn shm_fill(handle: ShmHandle, pattern: Vec<u8>) -> cohort_core::Result<()> {
    let (map, share) = own_share(&handle)?;
    if pattern.len() != map.elem.size {
        return Err(Error::Invalid(format!(
            "a fill pattern of {} bytes for elements of {} bytes",
            pattern.len(),
            map.elem.size
        )));
    }
    // SAFETY: this pid writes only its own `localindices` share (disjoint from every other
    // pid's), and the caller waits for every pid before anyone reads (the crate's rule).
    unsafe {
        map.write_bytes(share, |bytes| {
            for elem in bytes.chunks_exact_mut(pattern.len().max(1)) {
                elem.copy_from_slice(&pattern);
            }
        })
    }?;
    Ok(())
}

/// Run on every pid of an array: write random elements of `kind` over this pid's share, the
/// element at linear index `k` drawn from `seed` and `k` alone (so the array does not depend
/// on the number of pids).
#[cohort_macros::remote(crate = cohort_core)]
fn shm_rand(handle: ShmHandle, kind: u8, seed: u64) -> cohort_core::Result<()> {
    let (map, share) = own_share(&handle)?;
    let size = map.elem.size;
    let first = share.start as u64;
    // SAFETY: as in `shm_fill`: this pid's own share only.
    unsafe {
        map.write_bytes(share, |bytes| {
            for (k, elem) in bytes.chunks_exact_mut(size.max(1)).enumerate() {
                let x = splitmix64(seed.wrapping_add((first + k as u64).wrapping_mul(GOLDEN)));
                match kind {
                    RAND_F64 => elem.copy_from_slice(&((x >> 11) as f64 * F64_UNIT).to_ne_bytes()),
                    RAND_F32 => elem.copy_from_slice(&((x >> 40) as f32 * F32_UNIT).to_ne_bytes()),
                    _ => elem.copy_from_slice(&x.to_ne_bytes()[..size]),
                }
            }
        })
    }?;
    Ok(())
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const F64_UNIT: f64 = 1.0 / (1u64 << 53) as f64;
const F32_UNIT: f32 = 1.0 / (1u32 << 24) as f32;
const RAND_BITS: u8 = 0;
const RAND_F32: u8 = 1;
const RAND_F64: u8 = 2;

/// SplitMix64's output function (Steele, Lea, Flood 2014): a counter in, 64 mixed bits out.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// This process's mapping of the array of `handle` and its `localindices` share.
fn own_share(
    handle: &ShmHandle,
) -> cohort_core::Result<(std::sync::Arc<crate::mapping::Mapping>, Range<usize>)> {
    let map = crate::handle::lookup(handle)?;
    if handle.read_only {
        return Err(ShmError::ReadOnly {
            object: handle.backing.clone(),
        }
        .into());
    }
    let me = cohort_core::myid();
    let share = match crate::index::index_of(&handle.pids, &me) {
        Some(i) => crate::index::split_part(map.len, handle.pids.len(), i),
        None => 0..0,
    };
    Ok((map, share))
}

/// Element types [`SharedArray::rand`] can draw: floats uniform in `[0, 1)` (Julia's
/// `rand(Float64)`), integers uniform over all their values (Julia's `rand(Int)`).
pub trait RandElem: Pod {
    /// How the element is drawn (one of the crate's private kinds).
    #[doc(hidden)]
    const KIND: u8;
}

macro_rules! rand_elem {
    ($kind:expr => $($t:ty),*) => { $(impl RandElem for $t { const KIND: u8 = $kind; })* };
}
rand_elem!(RAND_F64 => f64);
rand_elem!(RAND_F32 => f32);
rand_elem!(RAND_BITS => u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// This process's pid, or a clear error before `cohort::init()`.
fn me() -> cohort_core::Result<Pid> {
    match cohort_core::myid() {
        0 => Err(Error::Invalid(
            "a cluster SharedArray needs cohort::init() first (or use SharedArray::create for \
             a single process)"
                .into(),
        )),
        p => Ok(p),
    }
}

/// The pids of a new array: Julia's default (the processes on this host but the master, or
/// the master alone), or the given ones after checking that each exists and is on this host.
fn resolve_pids(pids: Option<&[Pid]>) -> cohort_core::Result<Vec<Pid>> {
    let me = me()?;
    let local = cohort_core::procs_on(me)?;
    let Some(pids) = pids else {
        return Ok(if local.len() > 1 {
            local.into_iter().filter(|&p| p != 1).collect()
        } else {
            local
        });
    };
    let all = cohort_core::procs();
    for &p in pids {
        if !all.contains(&p) {
            return Err(Error::NoSuchProcess(p));
        }
        if !local.contains(&p) {
            return Err(Error::Invalid(format!(
                "pid {p} is on another host than pid {me}: a SharedArray is shared only by \
                 processes of one host (here: {local:?})"
            )));
        }
    }
    Ok(pids.to_vec())
}

/// One error for the failures of several pids.
fn combine(mut errors: Vec<(Pid, Error)>) -> Error {
    if errors.len() == 1 {
        errors.pop().expect("one error").1
    } else {
        Error::Composite(errors)
    }
}

/// Start `f(args(p))` on each of `pids` at once, then wait for all; results in `pids` order,
/// or every pid's error.
fn call_each<F, A>(
    pids: &[Pid],
    f: F,
    mut args: impl FnMut(Pid) -> A,
) -> cohort_core::Result<Vec<F::Output>>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: Serialize + DeserializeOwned + Clone,
{
    let started: Vec<(Pid, cohort_core::Result<Future<F::Output>>)> = pids
        .iter()
        .map(|&p| (p, cohort_core::remotecall(f, p, args(p))))
        .collect();
    let mut out = Vec::with_capacity(pids.len());
    let mut errors = Vec::new();
    for (p, fut) in started {
        match fut.and_then(|fut| fut.fetch()) {
            Ok(v) => out.push(v),
            Err(e) => errors.push((p, e)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(combine(errors))
    }
}

/// Make the array known on every pid of `pending`: attach and prefault on the others (in
/// parallel), prefault here if this pid is one of them, then close the segment to attachers.
///
/// The creator's mapping gets the hook that releases every other pid's mapping when it goes
/// away; it is installed first, so a failed attach releases the pids that did attach.
fn distribute<T: Pod, D: Dimension>(
    pending: PendingArray<T, D>,
    me: Pid,
) -> cohort_core::Result<SharedArray<T, D>> {
    let handle = pending.handle().clone();
    let others: Vec<Pid> = handle.pids().iter().copied().filter(|&p| p != me).collect();
    if !others.is_empty() {
        let (id, to) = (handle.id(), others.clone());
        pending.array().mapping().add_on_drop(Box::new(move || {
            for p in to {
                // A pid that is gone has nothing left to release.
                let _ = cohort_core::remote_do(shm_release, p, (id,));
            }
        }));
    }
    let started: Vec<(Pid, cohort_core::Result<Future<()>>)> = others
        .iter()
        .map(|&p| (p, cohort_core::remotecall(shm_attach, p, (handle.clone(),))))
        .collect();
    let mut errors = Vec::new();
    if handle.pids().contains(&me) {
        if let Err(e) = pending.array().prefault_local(me) {
            errors.push((me, e.into()));
        }
    }
    for (p, fut) in started {
        if let Err(e) = fut.and_then(|f| f.fetch()) {
            errors.push((p, e));
        }
    }
    if !errors.is_empty() {
        // Dropping `pending` closes the segment to attachers and (last reference) releases the
        // attached pids.
        drop(pending);
        return Err(combine(errors));
    }
    Ok(pending.finish()?)
}

/// How [`SharedArray::new_file`] opens its file (Julia's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileMode {
    /// Create the file, or truncate an existing one, zero-filled (Julia's `"w+"`).
    Create,
    /// Open an existing array file for reading and writing (Julia's `"r+"`).
    ReadWrite,
    /// Open an existing array file read-only (Julia's `"r"`): mutable access is refused.
    ReadOnly,
}

impl<T: Pod + Send + Sync, D: Dimension + 'static> SharedArray<T, D> {
    /// A zero-filled shared array of `dims` mapped by `pids` (default: every process of this
    /// host but the master, or the master alone when it has no workers): Julia's
    /// `SharedArray{T,N}(dims; pids)`.
    ///
    /// This process (the creator) makes the segment and maps it whether or not it is among the
    /// pids; every other pid maps it through a remote call, all at once, and faults in its own
    /// [`localindices`](SharedArray::localindices) share (the creator too if it is a pid); then
    /// the creator closes the descriptor they open it through. The segment never has a name in
    /// `/dev/shm`, and the memory belongs to the processes that hold it: killing any of them,
    /// at any moment of construction or later, leaks nothing. Dropping the creator's last
    /// handle (or [`finalize`](SharedArray::finalize)) releases every pid's mapping.
    ///
    /// As in Julia, dims may be zero (`SharedArray{Float64}(0)`, `(3, 0)`): the array is empty,
    /// every pid's `localindices` is `0..0`, and it travels to remote calls like any other.
    ///
    /// # Collective
    /// Runs a call on every pid; call it on one process (usually the master).
    ///
    /// # Errors
    /// [`Error::NoSuchProcess`] for an unknown pid; [`Error::Invalid`] for a pid on another
    /// host, an empty or repeated pid list, overflowing dims, or before
    /// `cohort::init()`; [`Error::Io`] when the segment cannot be made (a full `/dev/shm` says
    /// so); a pid's failure to attach as its `RemoteException` (several as `Composite`).
    ///
    /// # Julia
    /// `SharedArray{T,N}(dims; pids=Int[])`.
    pub fn new<Sh>(dims: Sh, pids: Option<&[Pid]>) -> cohort_core::Result<Self>
    where
        Sh: IntoDimension<Dim = D>,
    {
        let pids = resolve_pids(pids)?;
        let me = me()?;
        let pending = SharedArray::create(dims, &pids, me)?;
        distribute(pending, me)
    }

    /// [`new`](Self::new), then `init(S)` on every pid of the array at once, waiting for all:
    /// Julia's `init` keyword. `init` is a `#[cohort::remote]` function taking the array;
    /// typically each pid fills its own share (through the `cohort` facade; not compiled here):
    ///
    /// ```ignore
    /// use cohort::prelude::*;
    /// use cohort::shm::{ndarray::Ix2, SharedArray};
    ///
    /// #[cohort::remote]
    /// fn fill_mine(s: SharedArray<i64, Ix2>) -> cohort::Result<()> {
    ///     s.local_chunk_mut(myid())?.fill(myid() as i64);
    ///     Ok(())
    /// }
    ///
    /// let _c = cohort::init()?;
    /// addprocs(3)?;
    /// let s = SharedArray::<i64, Ix2>::with_init((3, 4), None, fill_mine)?;
    /// assert_eq!(s.view()[[2, 3]], 4);
    /// # Ok::<(), cohort::Error>(())
    /// ```
    ///
    /// An `init` that fails on some pid fails the construction (the array is released).
    ///
    /// # Julia
    /// `SharedArray{T,N}(dims; init = S -> ..., pids)`.
    pub fn with_init<Sh, F>(dims: Sh, pids: Option<&[Pid]>, init: F) -> cohort_core::Result<Self>
    where
        Sh: IntoDimension<Dim = D>,
        F: RemoteFn<(SharedArray<T, D>,)>,
        F::Output: Serialize + DeserializeOwned + Clone,
    {
        let s = Self::new(dims, pids)?;
        s.on_pids(init)?;
        Ok(s)
    }

    /// [`with_init`](Self::with_init) with an `init` that takes one more argument, `extra`
    /// (a tuple for several), sent to every pid.
    pub fn with_init_args<Sh, F, X>(
        dims: Sh,
        pids: Option<&[Pid]>,
        init: F,
        extra: X,
    ) -> cohort_core::Result<Self>
    where
        Sh: IntoDimension<Dim = D>,
        F: RemoteFn<(SharedArray<T, D>, X)>,
        F::Output: Serialize + DeserializeOwned + Clone,
        X: Serialize + Clone + Send + 'static,
    {
        let s = Self::new(dims, pids)?;
        s.on_pids_with(init, extra)?;
        Ok(s)
    }

    /// A file-backed array mapped by `pids` (default as in [`new`](Self::new)): Julia's
    /// `SharedArray{T,N}(filename, dims; mode, pids)`.
    ///
    /// The creator creates or opens the file (made absolute, so that every pid opens the same
    /// one), checking on open that its size, header, element type and dims are those asked for;
    /// every other pid maps it through a remote call. The file persists after the array is
    /// released. `ReadOnly` arrays refuse mutable access on every pid.
    ///
    /// The file starts with cohort's header, unlike Julia's, which holds the elements only:
    /// [`new_raw_file`](Self::new_raw_file) maps such a file (at an offset, in Julia's modes).
    ///
    /// # Errors
    /// As [`new`](Self::new); a file of the wrong size, or of another element type or dims, is
    /// [`Error::Invalid`] naming the file; a missing file is [`Error::Io`].
    ///
    /// # Julia
    /// `SharedArray{T,N}(filename, dims; mode="w+" | "r+" | "r", pids)`.
    pub fn new_file<P, Sh>(
        path: P,
        dims: Sh,
        mode: FileMode,
        pids: Option<&[Pid]>,
    ) -> cohort_core::Result<Self>
    where
        P: AsRef<Path>,
        Sh: IntoDimension<Dim = D>,
    {
        let pids = resolve_pids(pids)?;
        let me = me()?;
        let path = std::path::absolute(path.as_ref()).map_err(|e| Error::Io {
            context: format!("making {} absolute", path.as_ref().display()),
            source: e,
        })?;
        let array = match mode {
            FileMode::Create => SharedArray::create_file(&path, dims, &pids)?,
            FileMode::ReadWrite => SharedArray::open_file(&path, dims, false, &pids)?,
            FileMode::ReadOnly => SharedArray::open_file(&path, dims, true, &pids)?,
        };
        distribute(PendingArray::from_array(array), me)
    }

    /// An array of `dims` whose elements are bytes `offset..offset + len * size_of::<T>()` of
    /// the file at `path`, raw (no header, native-endian, column-major), mapped by `pids`
    /// (default as in [`new`](Self::new)): Julia's file-backed
    /// `SharedArray{T,N}(filename, dims, offset; mode, pids)`. Changes to the array change the
    /// file, which persists after the array is released.
    ///
    /// `mode` is one of Julia's (see [`RawMode`]); `None` is Julia's default: `"r+"` if the
    /// file exists, else `"w+"`. The creator opens the file in `mode`, growing it if it is
    /// writable and shorter than the range (the new bytes read as zero; bytes before `offset`
    /// and after the array are never touched, though `"w+"` first truncates the file to zero);
    /// every other pid then maps the same range through a remote call, opening the same file
    /// (checked by device and inode) `"r+"` (`"r"` for a read-only array): attachers never
    /// create or truncate. (Julia's workers reopen the path in `"a+"` where the creator used
    /// `"a+"`, which could create another file; cohort's map the creator's file or fail.) A
    /// read-only array refuses mutable access on every pid.
    ///
    /// In one process a byte of a file is mapped at most once: the same range with the same
    /// element type and dims shares one mapping; another range that overlaps it, or the whole
    /// of a file mapped with [`new_file`](Self::new_file), is refused. See
    /// [`open_raw_file`](SharedArray::open_raw_file) for the node-local form.
    ///
    /// Rust differences: `offset` must be a multiple of `align_of::<T>()` (Julia's `mmap`
    /// accepts a misaligned pointer; a misaligned `&T` is undefined behaviour in Rust); `mmap`
    /// needs a page-aligned file offset, so each pid maps from the page boundary below `offset`
    /// and points the data at `offset` within it.
    ///
    /// # Collective
    /// Runs a call on every pid; call it on one process (usually the master).
    ///
    /// # Errors
    /// As [`new`](Self::new); [`Error::Invalid`] for a relative `path` (Julia's "is not an
    /// absolute path"), a misaligned `offset`, mode `"r"` of a missing file (Julia's "does not
    /// exist, but mode r cannot create it") or of a file shorter than `offset` plus the array's
    /// bytes (naming the file and both sizes), a range that overlaps another mapping of the
    /// file in a process of the array, or `"w+"` of a file the creator maps; [`Error::Io`] for
    /// `"r+"` of a missing file and other failed system calls.
    ///
    /// # Julia
    /// `SharedArray{T,N}(filename, dims, offset=0; mode=nothing, pids=Int[])`.
    pub fn new_raw_file<P, Sh>(
        path: P,
        dims: Sh,
        offset: u64,
        mode: Option<RawMode>,
        pids: Option<&[Pid]>,
    ) -> cohort_core::Result<Self>
    where
        P: AsRef<Path>,
        Sh: IntoDimension<Dim = D>,
    {
        let pids = resolve_pids(pids)?;
        let me = me()?;
        let array = SharedArray::open_raw_file(path, dims, offset, mode, &pids)?;
        distribute(PendingArray::from_array(array), me)
    }

    /// [`new_raw_file`](Self::new_raw_file), then `init(S)` on every pid at once, waiting for
    /// all, as [`with_init`](Self::with_init) does: Julia's `init` keyword for a file-backed
    /// array. Mode `"r"` is refused before anything is opened (Julia's "cannot initialize
    /// unwritable array").
    ///
    /// # Errors
    /// As [`new_raw_file`](Self::new_raw_file); [`Error::Invalid`] for mode `"r"`; an `init`
    /// that fails on some pid fails the construction (the array is released; what `init`
    /// wrote stays in the file).
    ///
    /// # Julia
    /// `SharedArray{T,N}(filename, dims, offset; mode, init = S -> ..., pids)`.
    pub fn new_raw_file_with_init<P, Sh, F>(
        path: P,
        dims: Sh,
        offset: u64,
        mode: Option<RawMode>,
        pids: Option<&[Pid]>,
        init: F,
    ) -> cohort_core::Result<Self>
    where
        P: AsRef<Path>,
        Sh: IntoDimension<Dim = D>,
        F: RemoteFn<(SharedArray<T, D>,)>,
        F::Output: Serialize + DeserializeOwned + Clone,
    {
        let path = path.as_ref();
        check_raw_args(path, offset, &ElemInfo::of::<T>())?;
        let mode = mode.unwrap_or_else(|| RawMode::default_for(path));
        if !mode.is_writable() {
            return Err(ShmError::Argument {
                reason: format!("cannot initialize an unwritable array (mode = \"{mode}\")"),
            }
            .into());
        }
        let s = Self::new_raw_file(path, dims, offset, Some(mode), pids)?;
        s.on_pids(init)?;
        Ok(s)
    }

    /// A new shared array of the same dims, element type and pids, holding a copy of the
    /// elements: Julia's `copy(S)` (a deep copy; `clone` is another handle of the same
    /// memory). This process creates it, copies the data, then every other pid attaches it as
    /// in [`new`](Self::new).
    ///
    /// # Errors
    /// As [`new`](Self::new) (a pid of the array that has since gone is
    /// [`Error::NoSuchProcess`]); a part of this array borrowed for writing here is
    /// [`Error::Invalid`] (`Busy`).
    ///
    /// # Julia
    /// `copy(S)`.
    #[doc(alias = "copy")]
    pub fn deep_copy(&self) -> cohort_core::Result<Self> {
        resolve_pids(Some(self.pids()))?;
        let me = me()?;
        distribute(self.copy_into_new(me)?, me)
    }

    /// A new zero-filled shared array of the same dims, element type and pids (Julia's
    /// `similar(S)` is a private `Array`: that is [`similar`](SharedArray::similar)).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn similar_shared(&self) -> cohort_core::Result<Self> {
        Self::new(self.dims(), Some(self.pids()))
    }

    /// Release pid `pid`'s mapping of the array: [`close`](SharedArray::close) run there.
    /// Returns whether `pid` had it pinned. That pid can no longer receive the array.
    ///
    /// # Errors
    /// The call's errors ([`Error::NoSuchProcess`] for an unknown pid).
    pub fn close_on(&self, pid: Pid) -> cohort_core::Result<bool> {
        cohort_core::remotecall_fetch(shm_release, pid, (self.id(),))
    }

    /// A shared array of `dims` with every element `v`, each pid filling its own
    /// [`localindices`](SharedArray::localindices) share in parallel: Julia's
    /// `shmem_fill(v, dims; pids)`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Julia
    /// `shmem_fill(v, dims; pids)`.
    #[doc(alias = "shmem_fill")]
    pub fn filled<Sh>(v: T, dims: Sh, pids: Option<&[Pid]>) -> cohort_core::Result<Self>
    where
        Sh: IntoDimension<Dim = D>,
    {
        let s = Self::new(dims, pids)?;
        s.fill_all(v)?;
        Ok(s)
    }

    /// Set every element to `v`, each pid writing its own share, and wait for all (Julia's
    /// `fill!(S, v)`, run where the data is).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a read-only array (`ReadOnly`), or a share borrowed for writing
    /// on its pid (`Busy`); each failing pid's error (several as [`Error::Composite`]).
    pub fn fill_all(&self, v: T) -> cohort_core::Result<()> {
        let pattern = bytemuck::bytes_of(&v).to_vec();
        let handle = self.handle();
        call_each(self.pids(), shm_fill, |_| (handle.clone(), pattern.clone()))?;
        Ok(())
    }

    /// Run `f(S)` on every pid of the array at once and wait for all; the results in
    /// [`pids`](SharedArray::pids) order.
    ///
    /// # Errors
    /// Each failing pid's error (several as [`Error::Composite`]).
    ///
    /// # Julia
    /// `@sync for p in procs(S); @async remotecall_wait(f, p, S); end`.
    pub fn on_pids<F>(&self, f: F) -> cohort_core::Result<Vec<F::Output>>
    where
        F: RemoteFn<(SharedArray<T, D>,)>,
        F::Output: Serialize + DeserializeOwned + Clone,
    {
        call_each(self.pids(), f, |_| (self.clone(),))
    }

    /// [`on_pids`](Self::on_pids) for an `f(S, extra)`.
    pub fn on_pids_with<F, X>(&self, f: F, extra: X) -> cohort_core::Result<Vec<F::Output>>
    where
        F: RemoteFn<(SharedArray<T, D>, X)>,
        F::Output: Serialize + DeserializeOwned + Clone,
        X: Serialize + Clone + Send + 'static,
    {
        call_each(self.pids(), f, |_| (self.clone(), extra.clone()))
    }
}

impl<T: RandElem + Send + Sync, D: Dimension + 'static> SharedArray<T, D> {
    /// A shared array of `dims` of random elements (floats uniform in `[0, 1)`, integers
    /// uniform over all values), each pid drawing its own share in parallel: Julia's
    /// `shmem_rand(dims; pids)` (`shmem_rand(T, dims)` for another element type).
    ///
    /// # Errors
    /// As [`new`](Self::new); [`Error::Io`] if the system's random source fails.
    ///
    /// # Julia
    /// `shmem_rand(dims; pids)`.
    #[doc(alias = "shmem_rand")]
    pub fn rand<Sh>(dims: Sh, pids: Option<&[Pid]>) -> cohort_core::Result<Self>
    where
        Sh: IntoDimension<Dim = D>,
    {
        let seed = SegmentId::random()?.0 as u64;
        Self::rand_seeded(dims, pids, seed)
    }

    /// [`rand`](Self::rand) from `seed`: the element at linear index `k` depends on `seed` and
    /// `k` only, so the same seed gives the same array whatever the pids.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn rand_seeded<Sh>(dims: Sh, pids: Option<&[Pid]>, seed: u64) -> cohort_core::Result<Self>
    where
        Sh: IntoDimension<Dim = D>,
    {
        let s = Self::new(dims, pids)?;
        s.fill_rand(seed)?;
        Ok(s)
    }

    /// Overwrite every element with [`rand_seeded`](Self::rand_seeded)'s draws from `seed`,
    /// each pid its own share.
    ///
    /// # Errors
    /// As [`fill_all`](Self::fill_all).
    pub fn fill_rand(&self, seed: u64) -> cohort_core::Result<()> {
        let handle = self.handle();
        call_each(self.pids(), shm_rand, |_| (handle.clone(), T::KIND, seed))?;
        Ok(())
    }
}

impl<T: Pod, D: Dimension> SharedArray<T, D> {
    /// Release the array on every other pid now instead of when the creator's last handle
    /// drops (Julia's `finalize(S)`), and drop this handle.
    ///
    /// Other pids drop their mapping as soon as none of their own handles uses it; this
    /// process keeps its mapping while other clones of this handle live here (unmapping memory
    /// that a live view points into would be unsound). Called on a process other than the
    /// creator, it only drops the handle.
    ///
    /// # Julia
    /// `finalize(S)`.
    pub fn finalize(self) {
        if let Some(hook) = self.mapping().take_on_drop() {
            hook();
        }
    }
}

/// This process's [`localindices`](SharedArray::localindices) of `s`: Julia's
/// `localindices(S)` (0-based; empty when this process is not one of its pids).
pub fn localindices<T: Pod, D: Dimension>(s: &SharedArray<T, D>) -> Range<usize> {
    s.localindices(cohort_core::myid())
}

/// This process's 0-based position in `s`'s pids: Julia's `indexpids(S)` minus one (`None`
/// where Julia returns 0).
pub fn indexpids<T: Pod, D: Dimension>(s: &SharedArray<T, D>) -> Option<usize> {
    s.indexpids(cohort_core::myid())
}

/// This process's range of indices along `axis` of `s` (the manual's `myrange(q)` is
/// `myrange(&q, Axis(1))`).
pub fn myrange<T: Pod, D: Dimension>(s: &SharedArray<T, D>, axis: Axis) -> Range<usize> {
    s.myrange(axis, cohort_core::myid())
}
