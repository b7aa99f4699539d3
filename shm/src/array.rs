//! [`SharedArray`], the typed array over a mapping, and [`PendingArray`], its creation guard.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytemuck::Pod;
use ndarray::{
    Array, ArrayView, ArrayViewMut, Axis, Dimension, IntoDimension, IxDyn, ShapeBuilder, Slice,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use cohort_core::Pid;

use crate::error::{Access, ShmError};
use crate::file::{self, check_raw_args, RawMode};
use crate::handle::{check_pids, Arrival, ShmHandle, WithBytes};
use crate::ids::{Backing, ElemInfo, HostId, SegmentId};
use crate::index::{self, Region};
use crate::lease::{SharedSlice, SharedSliceMut, SharedView, SharedViewMut};
use crate::mapping::Mapping;
use crate::segment;

/// An N-dimensional, column-major array of plain-old-data elements in memory shared by the
/// processes (pids) of one node: Julia's `SharedArray{T,N}`.
///
/// A `SharedArray` is a cheap handle (`Clone` is an `Arc` clone) to this process's mapping of one
/// segment (or file). Every pid in [`pids`](Self::pids) maps the same memory, so a write by one
/// pid is seen by all. See the [crate docs](crate) for the segment lifecycle.
///
/// # Safety: what is checked and what is yours
///
/// Memory shared between *processes* is outside what the Rust compiler can check: a `&[T]` in
/// one process says nothing to another process, which may write those bytes at any time. This is
/// the same situation as `memmap2::Mmap` over a file that another program may modify. So:
///
/// * **Within one process, everything is checked.** Every view is a *lease* registered with
///   this process's mapping: read leases may overlap, a write lease overlaps nothing (like a
///   `RefCell` over regions). Conflicts are [`ShmError::Busy`] (or a panic from
///   [`view`](Self::view) / [`as_slice`](Self::as_slice), like `RefCell::borrow`). So safe code
///   never holds a `&mut T` aliasing another reference in this process.
/// * **Across processes, the rule is Julia's: each pid writes only its own part, and nobody
///   reads a part while its owner writes it.** The safe mutable accessors give a pid exactly its
///   own part ([`local_chunk_mut`](Self::local_chunk_mut): its [`localindices`](Self::localindices);
///   [`local_axis_chunk_mut`](Self::local_axis_chunk_mut): its [`myrange`](Self::myrange)), and
///   those parts are disjoint between pids by construction, so pids that pass their real
///   `myid` never write the same element. Reading another pid's part (with [`view`](Self::view))
///   while its owner writes it is a data race that you must order yourself, as in Julia: wait for
///   the owner's remote call to finish, or use a barrier.
/// * **Wider mutable access is `unsafe`**: [`view_mut`](Self::view_mut),
///   [`as_mut_slice`](Self::as_mut_slice), [`chunk_mut`](Self::chunk_mut) and
///   [`axis_chunk_mut`](Self::axis_chunk_mut) can reach other pids' parts; their contract is
///   that no other process reads or writes the region while the view lives.
///
/// Elements are `bytemuck::Pod` (Julia's `isbits`): every bit pattern is a valid value and there
/// are no pointers or interior mutability, so whatever another process writes, a read yields
/// *some* valid `T` (a torn or stale one under a race, never an invalid one).
///
/// `SharedArray<T, D>` is `Send` and `Sync` when `T` is (it holds an `Arc` of the mapping, and
/// `memmap2::MmapRaw` is `Send + Sync`); no `unsafe impl` is involved.
///
/// ```compile_fail,E0277
/// // Elements must be plain old data: a String holds a pointer, meaningless in another process.
/// let _ = cohort_shm::SharedArray::<String, cohort_shm::ndarray::Ix1>::create(4, &[1], 1);
/// ```
pub struct SharedArray<T: Pod, D: Dimension> {
    map: Arc<Mapping>,
    dim: D,
    pids: Arc<[Pid]>,
    read_only: bool,
    /// The handle's bytes, encoded at the first send of this value or of a clone (they share
    /// it), or as they arrived: an array sent at every step of a loop is encoded once.
    wire: Arc<OnceLock<Box<[u8]>>>,
    _elem: PhantomData<T>,
}

impl<T: Pod, D: Dimension> SharedArray<T, D> {
    /// The array value whose handle bytes arrived before (see `handle::arrive`).
    fn from_arrival(a: Arrival, dim: D) -> Self {
        SharedArray::with_wire(a.map, dim, a.pids, a.read_only, Some(a.wire))
    }

    fn from_parts(map: Arc<Mapping>, dim: D, pids: Arc<[Pid]>, read_only: bool) -> Self {
        SharedArray::with_wire(map, dim, pids, read_only, None)
    }

    /// The array value, sending `wire` as its handle's bytes when they describe it (they say
    /// `read_only` as given, which a read-only mapping here overrides).
    fn with_wire(
        map: Arc<Mapping>,
        dim: D,
        pids: Arc<[Pid]>,
        read_only: bool,
        wire: Option<Arc<OnceLock<Box<[u8]>>>>,
    ) -> Self {
        debug_assert_eq!(map.elem.size, std::mem::size_of::<T>());
        debug_assert_eq!(crate::index::checked_len(dim.slice()), Some(map.len));
        let forced = !read_only && !map.writable;
        let wire = wire
            .filter(|_| !forced)
            .unwrap_or_else(|| Arc::new(OnceLock::new()));
        SharedArray {
            read_only: read_only || forced,
            map,
            dim,
            pids,
            wire,
            _elem: PhantomData,
        }
    }

    /// The dimension of type `D` for `dims`, checking element type and dimensionality.
    fn typed_dim(object: &Backing, elem: &ElemInfo, dims: &[usize]) -> Result<D, ShmError> {
        let want = ElemInfo::of::<T>();
        if *elem != want {
            let show =
                |e: &ElemInfo| format!("{} (size {}, align {})", e.type_name, e.size, e.align);
            return Err(ShmError::TypeMismatch {
                object: object.clone(),
                expected: show(&want),
                found: show(elem),
            });
        }
        D::from_dimension(&IxDyn(dims)).ok_or_else(|| ShmError::DimensionalityMismatch {
            object: object.clone(),
            expected: D::NDIM.unwrap_or(dims.len()),
            found: dims.to_vec(),
        })
    }

    /// Create a new zero-filled shared-memory segment of `dims` for `pids`, mapped in this
    /// process (the creator, `myid`; it need not be among `pids`).
    ///
    /// The segment never has a name in `/dev/shm` (see the crate docs' lifecycle): other pids
    /// open it through this process's descriptor of it. Returns a [`PendingArray`]: send its
    /// [`handle`](PendingArray::handle) to every other pid, have each [`attach`](Self::attach),
    /// then call [`PendingArray::finish`], which closes that descriptor ([`unlink`](Self::unlink)).
    /// Dropping the `PendingArray` instead (an attach failed) closes it too. When
    /// `pids == [myid]` it is closed right here, since nobody else will attach.
    ///
    /// Any dim may be zero, and `T` may be zero-sized (`()`, `[u8; 0]`): as in Julia, such an
    /// array is valid and its data takes no bytes (the segment holds only the header).
    ///
    /// # Errors
    /// [`TooLarge`](ShmError::TooLarge),
    /// [`TooManyDims`](ShmError::TooManyDims), [`InvalidPids`](ShmError::InvalidPids),
    /// [`NoSpace`](ShmError::NoSpace) when `/dev/shm` cannot hold it, [`Io`](ShmError::Io).
    pub fn create<Sh>(dims: Sh, pids: &[Pid], myid: Pid) -> Result<PendingArray<T, D>, ShmError>
    where
        Sh: IntoDimension<Dim = D>,
    {
        let dim = dims.into_dimension();
        check_pids(pids)?;
        let map = segment::create(ElemInfo::of::<T>(), dim.slice())?;
        let array = SharedArray::from_parts(map, dim, pids.into(), false);
        let handle = array.handle();
        let pending = PendingArray {
            array: Some(array),
            handle,
        };
        if pids == [myid] {
            pending.array().unlink()?;
        }
        Ok(pending)
    }

    /// Map the array of `handle` in this process (pid `myid`), or reuse this process's mapping
    /// of it, and pin the mapping until [`release`](crate::release).
    ///
    /// # Errors
    /// [`WrongHost`](ShmError::WrongHost), [`NotInPids`](ShmError::NotInPids),
    /// [`TypeMismatch`](ShmError::TypeMismatch) (`T` is not the creator's type),
    /// [`DimensionalityMismatch`](ShmError::DimensionalityMismatch),
    /// [`SizeMismatch`](ShmError::SizeMismatch) / [`BadHeader`](ShmError::BadHeader) (the object
    /// is not what the handle says), [`Io`](ShmError::Io) (e.g. the creator has already
    /// closed the segment to attachers, or is gone).
    pub fn attach(handle: &ShmHandle, myid: Pid) -> Result<Self, ShmError> {
        let dim = Self::typed_dim(&handle.backing, &handle.elem, &handle.shape)?;
        let map = crate::handle::attach_pinned(handle, myid)?;
        Ok(SharedArray::from_parts(
            map,
            dim,
            handle.pids.as_slice().into(),
            handle.read_only,
        ))
    }

    /// This process's existing mapping of the array of `handle`, without mapping anything: the
    /// way to get the array from a handle after its creator has closed it to attachers.
    ///
    /// # Errors
    /// [`NotMapped`](ShmError::NotMapped) if this process has no live mapping of it (never
    /// attached, or released and dropped); the type and host errors of [`attach`](Self::attach).
    pub fn lookup(handle: &ShmHandle) -> Result<Self, ShmError> {
        let dim = Self::typed_dim(&handle.backing, &handle.elem, &handle.shape)?;
        let map = crate::handle::lookup(handle)?;
        Ok(SharedArray::from_parts(
            map,
            dim,
            handle.pids.as_slice().into(),
            handle.read_only,
        ))
    }

    /// Create (or truncate) the file at `path` as a zero-filled array of `dims`, with cohort's
    /// header, and map it read-write. The file persists after the array is dropped.
    ///
    /// # Errors
    /// As [`create`](Self::create); [`NoSpace`](ShmError::NoSpace) if the file system is full;
    /// [`Unsupported`](ShmError::Unsupported) if this process still maps that file.
    pub fn create_file<P, Sh>(path: P, dims: Sh, pids: &[Pid]) -> Result<Self, ShmError>
    where
        P: AsRef<Path>,
        Sh: IntoDimension<Dim = D>,
    {
        let dim = dims.into_dimension();
        check_pids(pids)?;
        let map = file::create(path.as_ref(), ElemInfo::of::<T>(), dim.slice())?;
        Ok(SharedArray::from_parts(map, dim, pids.into(), false))
    }

    /// Map an array file made by [`create_file`](Self::create_file), checking its size, header,
    /// element type and dims.
    ///
    /// With `read_only`, the file is opened and mapped read-only and every mutable accessor
    /// returns [`ShmError::ReadOnly`] (a run-time check: the array's type is the same).
    ///
    /// # Errors
    /// [`SizeMismatch`](ShmError::SizeMismatch) naming the path if the file's size is not that of
    /// `dims` of `T`; [`BadHeader`](ShmError::BadHeader), [`TypeMismatch`](ShmError::TypeMismatch),
    /// [`ShapeMismatch`](ShmError::ShapeMismatch); [`Io`](ShmError::Io).
    pub fn open_file<P, Sh>(
        path: P,
        dims: Sh,
        read_only: bool,
        pids: &[Pid],
    ) -> Result<Self, ShmError>
    where
        P: AsRef<Path>,
        Sh: IntoDimension<Dim = D>,
    {
        let dim = dims.into_dimension();
        check_pids(pids)?;
        let map = file::open(
            path.as_ref(),
            &ElemInfo::of::<T>(),
            dim.slice(),
            read_only,
            None,
        )?;
        Ok(SharedArray::from_parts(map, dim, pids.into(), read_only))
    }

    /// Map bytes `offset..offset + len * size_of::<T>()` of the existing or new file at `path`
    /// as an array of `dims` (column-major, native-endian, no header), opened in `mode`
    /// (`None`: Julia's default, [`RawMode::default_for`]): the node-local half of Julia's
    /// `SharedArray{T,N}(filename, dims, offset; mode)`. Changes to the array change the file,
    /// which persists.
    ///
    /// A writable mode grows a file shorter than the range (the new bytes read as zero); bytes
    /// before `offset` and after the array are never touched (but `"w+"` truncates the file
    /// first). An array without bytes maps nothing of the file and never grows it. This process
    /// maps a byte of a file at most once: the same range with the same element type and dims
    /// shares one mapping (a write through one array is seen through the other); another range
    /// that overlaps it, or the whole of a file mapped with [`open_file`](Self::open_file), is
    /// refused. The [`handle`](Self::handle) carries path, offset, device and inode: an attacher
    /// opens that same file, `"r"` if this array is read-only, else `"r+"`, and never creates or
    /// truncates it.
    ///
    /// Rust differences: `offset` must be a multiple of `align_of::<T>()` (Julia's `mmap`
    /// accepts a misaligned pointer; a misaligned `&T` is undefined behaviour in Rust). `mmap`
    /// needs a page-aligned file offset: the mapping starts at the page boundary below `offset`,
    /// and the data at `offset` within it.
    ///
    /// # Errors
    /// [`Argument`](ShmError::Argument) for a relative path (every pid must open the same
    /// file), a misaligned offset, a file that is not a regular file, or `"r"` of a missing
    /// file; [`FileTooShort`](ShmError::FileTooShort) for `"r"` of a file shorter than
    /// `offset` plus the array's bytes; [`Overlapping`](ShmError::Overlapping);
    /// [`TypeMismatch`](ShmError::TypeMismatch) / [`ShapeMismatch`](ShmError::ShapeMismatch)
    /// when the range is mapped here with another element type or dims;
    /// [`Unsupported`](ShmError::Unsupported) for `"w+"` of a file this process maps;
    /// [`NoSpace`](ShmError::NoSpace) when growing it; [`Io`](ShmError::Io) (`"r+"` of a
    /// missing file); and the errors of [`create`](Self::create) about dims and pids.
    ///
    /// # Julia
    /// `SharedArray{T,N}(filename, dims, offset=0; mode=nothing)` (one process).
    pub fn open_raw_file<P, Sh>(
        path: P,
        dims: Sh,
        offset: u64,
        mode: Option<RawMode>,
        pids: &[Pid],
    ) -> Result<Self, ShmError>
    where
        P: AsRef<Path>,
        Sh: IntoDimension<Dim = D>,
    {
        let path = path.as_ref();
        let dim = dims.into_dimension();
        check_pids(pids)?;
        check_raw_args(path, offset, &ElemInfo::of::<T>())?;
        let mode = mode.unwrap_or_else(|| RawMode::default_for(path));
        let map = file::open_raw(path, offset, &ElemInfo::of::<T>(), dim.slice(), mode)?;
        Ok(SharedArray::from_parts(
            map,
            dim,
            pids.into(),
            !mode.is_writable(),
        ))
    }

    /// A handle to send to other pids of this node, who [`attach`](Self::attach) it.
    pub fn handle(&self) -> ShmHandle {
        ShmHandle {
            backing: self.map.backing.clone(),
            id: self.map.id,
            dims: self.map.dims.clone(),
            shape: self.shape().to_vec(),
            elem: self.map.elem.clone(),
            pids: self.pids.to_vec(),
            host: HostId::current().clone(),
            read_only: self.read_only,
        }
    }

    /// The segment's (or file's) id.
    pub fn id(&self) -> SegmentId {
        self.map.id
    }

    /// Where the memory lives: the segment (its creator's descriptor and inode) or the file.
    pub fn backing(&self) -> &Backing {
        &self.map.backing
    }

    /// Close the segment to attachers: the creator closes its descriptor of the segment, the
    /// only way other processes open it (the segment has no name: this plays the part of unlinking
    /// one), so that it is freed once every process that maps it has unmapped it.
    /// Idempotent; no effect for files, or on a process other than the creator.
    ///
    /// After this, no new process can attach; processes that already mapped it are unaffected.
    ///
    /// # Errors
    /// None today (closing a descriptor cannot fail in a way that matters here); the `Result`
    /// is kept for backings whose removal can fail.
    pub fn unlink(&self) -> Result<(), ShmError> {
        self.map.unlink();
        Ok(())
    }

    /// The same memory with new dims of the same length, column-major (Julia's
    /// `reshape(S, dims)`): element `k` in memory order is element `k` of both.
    ///
    /// The result shares this array's mapping, pids and lifetime (it is one more handle of
    /// the mapping), so `localindices` are unchanged; sent to another pid it arrives in its
    /// new shape over that pid's mapping. Borrows of the two shapes are checked against each
    /// other (an axis range of a reshaped value is borrowed as the linear span holding it).
    ///
    /// # Errors
    /// [`LengthMismatch`](ShmError::LengthMismatch) when the new dims hold another number of
    /// elements (Julia's `DimensionMismatch`); [`TooManyDims`](ShmError::TooManyDims).
    pub fn reshape<Sh>(&self, dims: Sh) -> Result<SharedArray<T, Sh::Dim>, ShmError>
    where
        Sh: IntoDimension,
    {
        let dim = dims.into_dimension();
        let mismatch = || ShmError::LengthMismatch {
            from: self.shape().to_vec(),
            to: dim.slice().to_vec(),
        };
        // `layout` bounds what ndarray needs of the new dims (at most MAX_DIMS, the product of
        // the non-zero ones within isize::MAX).
        let (len, _) = crate::header::layout(&self.map.elem, dim.slice()).map_err(|e| match e {
            ShmError::TooLarge { .. } => mismatch(),
            e => e,
        })?;
        if len != self.len() {
            return Err(mismatch());
        }
        Ok(SharedArray::from_parts(
            Arc::clone(&self.map),
            dim,
            Arc::clone(&self.pids),
            self.read_only,
        ))
    }

    /// A zero-filled private `ndarray` of this array's element type and dims, column-major:
    /// Julia's `similar(S)`, which is an `Array`, not a `SharedArray` (for a new shared one,
    /// see `similar_shared` on a cluster). Zero-filled where Julia's is uninitialised.
    pub fn similar(&self) -> Array<T, D> {
        Array::from_elem(self.dim.clone().f(), <T as bytemuck::Zeroable>::zeroed())
    }

    /// A private copy of the elements, in this process's heap, column-major: Julia's
    /// `Array(S)` (or `copy(sdata(S))`). Later writes to the shared array do not reach it.
    ///
    /// Reads the whole array, so the cross-process rule of [`view`](Self::view) applies.
    ///
    /// # Errors
    /// [`Busy`](ShmError::Busy) if part of it is borrowed for writing in this process.
    #[doc(alias = "Array")]
    pub fn unshare(&self) -> Result<Array<T, D>, ShmError> {
        let data = self.try_as_slice()?.to_vec();
        Ok(Array::from_shape_vec(self.dim.clone().f(), data)
            .expect("len elements in a shape of len elements"))
    }

    /// A new segment of the same dims, element type and pids, holding a copy of the
    /// elements, created by this process (`myid`) as [`create`](Self::create) does: the
    /// node-local half of Julia's `copy(S)`. Send the new handle to the other pids, then
    /// [`finish`](PendingArray::finish).
    ///
    /// Reads the whole array, so the cross-process rule of [`view`](Self::view) applies.
    ///
    /// # Errors
    /// As [`create`](Self::create); [`Busy`](ShmError::Busy) if part of this array is
    /// borrowed for writing in this process.
    pub fn copy_into_new(&self, myid: Pid) -> Result<PendingArray<T, D>, ShmError> {
        let pending = SharedArray::<T, D>::create(self.dim.clone(), &self.pids, myid)?;
        {
            let src = self.try_as_slice()?;
            // SAFETY: the new segment is known to this process only (its handle has not been
            // sent), so no other process reads or writes it.
            let mut dst = unsafe { pending.array().as_mut_slice() }?;
            dst.copy_from_slice(&src);
        }
        Ok(pending)
    }

    /// Let this process's mapping go: drop its pin (set by [`attach`](Self::attach)) and this
    /// handle. The mapping is unmapped here as soon as no other handle of it in this process
    /// is alive; returns whether it is gone now. Other processes are unaffected (on the
    /// creator, its last handle releases every pid, as when it is dropped).
    ///
    /// Afterwards this process cannot [`lookup`](Self::lookup) the array, and an array sent to
    /// it fails to arrive ([`NotMapped`](ShmError::NotMapped)).
    pub fn close(self) -> bool {
        let mapping = Arc::downgrade(&self.map);
        crate::mapping::release(self.map.id);
        drop(self);
        mapping.strong_count() == 0
    }

    /// The dims as an `ndarray` dimension.
    pub fn dims(&self) -> D {
        self.dim.clone()
    }

    /// The dims as a slice (Julia's `size(S)`).
    pub fn shape(&self) -> &[usize] {
        self.dim.slice()
    }

    /// Number of elements (Julia's `length(S)`): the product of the dims, zero when any dim is
    /// zero; for a zero-sized `T` it counts elements that take no bytes.
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Whether the array has no elements (some dim is zero), as Julia's `isempty(S)`.
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }

    /// Whether mutable access is refused (a file opened read-only, or raw in mode `"r"`).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The pids that map this array, in partition order (Julia's `procs(S)`).
    #[doc(alias = "procs")]
    pub fn pids(&self) -> &[Pid] {
        &self.pids
    }

    /// 0-based position of `myid` in [`pids`](Self::pids) (Julia's `indexpids(S)` minus one;
    /// `None` where Julia returns 0).
    pub fn indexpids(&self, myid: Pid) -> Option<usize> {
        index::index_of(&self.pids, &myid)
    }

    /// The linear (column-major) indices that pid `myid` is in charge of: Julia's
    /// `localindices(S)`, 0-based.
    ///
    /// The ranges of all pids are contiguous, disjoint, in pid order, and cover every element.
    /// Each pid gets `len / npids` elements and the first `len % npids` pids one more (Julia's
    /// `range_1dim` gives the whole remainder to the last pid instead; the two agree whenever
    /// `npids` divides `len`). A pid not in `pids`, or beyond the element count, gets an empty
    /// range.
    pub fn localindices(&self, myid: Pid) -> Range<usize> {
        match self.indexpids(myid) {
            Some(i) => index::split_part(self.len(), self.pids.len(), i),
            None => 0..0,
        }
    }

    /// `shape[axis]` split into `nparts` contiguous ranges, sizes differing by at most one, the
    /// first ones larger (see [`index::split`]).
    ///
    /// # Panics
    /// If `axis` is not an axis of the array (as `ndarray` does).
    pub fn chunks(&self, axis: Axis, nparts: usize) -> Vec<Range<usize>> {
        index::split(self.shape()[axis.index()], nparts)
    }

    /// Pid `myid`'s range of indices along `axis`, splitting that axis into one range per pid
    /// (the manual's `myrange`, generalised to any axis).
    ///
    /// Axes are **0-based**: the Julia manual's advection example splits its *second*
    /// dimension, which is `Axis(1)` here. In column-major order a range of the *last* axis is a
    /// contiguous block of memory; a range of another axis is strided. A pid not in `pids`, and
    /// the last pids when the axis is shorter than the number of pids, get an empty range.
    /// (The manual rounds `range(0, n, npids+1)`; this split is balanced the same way up to which
    /// pids get the extra index.)
    ///
    /// # Panics
    /// If `axis` is not an axis of the array.
    pub fn myrange(&self, axis: Axis, myid: Pid) -> Range<usize> {
        let n = self.shape()[axis.index()];
        match self.indexpids(myid) {
            Some(i) => index::split_part(n, self.pids.len(), i),
            None => 0..0,
        }
    }

    /// This process's mapping (for the cluster layer's release hook).
    pub(crate) fn mapping(&self) -> &Arc<Mapping> {
        &self.map
    }

    fn data(&self) -> *mut T {
        self.map.data().cast::<T>()
    }

    fn check_linear(&self, range: &Range<usize>) -> Result<(), ShmError> {
        if index::range_in_bounds(range, self.len()) {
            Ok(())
        } else {
            Err(ShmError::OutOfBounds {
                region: Region::Linear(range.clone()),
                dims: self.shape().to_vec(),
            })
        }
    }

    fn check_axis(&self, axis: Axis, range: &Range<usize>) -> Result<(), ShmError> {
        let ok = self
            .shape()
            .get(axis.index())
            .is_some_and(|&n| index::range_in_bounds(range, n));
        if ok {
            Ok(())
        } else {
            Err(ShmError::OutOfBounds {
                region: Region::Axis {
                    axis: axis.index(),
                    range: range.clone(),
                },
                dims: self.shape().to_vec(),
            })
        }
    }

    /// The lease region of indices `range` along `axis` (checked by the caller).
    ///
    /// Leases are kept in the object's own dims, shared by every shape of it in this process;
    /// for a [`reshape`](Self::reshape)d value an axis slab becomes the linear span from its
    /// first to its last element, which covers it (conservative: two disjoint slabs of a
    /// reshaped value may be reported [`Busy`](ShmError::Busy); an overlap is never missed).
    fn axis_region(&self, axis: Axis, range: &Range<usize>) -> Region {
        let shape = self.shape();
        if shape == self.map.dims.as_slice() {
            return Region::Axis {
                axis: axis.index(),
                range: range.clone(),
            };
        }
        if range.is_empty() || self.is_empty() {
            return Region::Linear(0..0);
        }
        let k = axis.index();
        // Column-major: index i along `axis` is a run of `inner` elements, repeated `outer`
        // times `span` apart; the slab ends with the last run of index `range.end - 1`.
        let inner: usize = shape[..k].iter().product();
        let outer: usize = shape[k + 1..].iter().product();
        let span = inner * shape[k];
        Region::Linear(range.start * inner..(outer - 1) * span + range.end * inner)
    }

    fn check_writable(&self) -> Result<(), ShmError> {
        if self.read_only {
            Err(ShmError::ReadOnly {
                object: self.map.backing.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// A read lease on the whole array as an `ndarray` view with column-major (`.f()`) strides:
    /// element `[i, j]` of an `m × n` array is linear element `i + m * j`.
    ///
    /// # Panics
    /// If part of the array is leased for writing in this process (like `RefCell::borrow`);
    /// [`try_view`](Self::try_view) returns the error instead.
    pub fn view(&self) -> SharedView<'_, T, D> {
        self.try_view().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`view`](Self::view), with a conflicting write lease as [`ShmError::Busy`].
    pub fn try_view(&self) -> Result<SharedView<'_, T, D>, ShmError> {
        let ticket = self
            .map
            .leases
            .acquire(Region::Linear(0..self.len()), Access::Read)?;
        // SAFETY: `data()` is aligned for T (`Mapping::new` checks it) and followed by
        // `len * size_of::<T>()` mapped bytes (size checked against the object at
        // construction), which `layout`/`data_layout` kept below isize::MAX, as they did the
        // product of the non-zero dims; the `.f()` shape has product `len` and non-negative
        // strides, all zero for an empty shape, and a zero-sized T moves no byte, so no offset
        // leaves the data even where it has no bytes; T: Pod makes every byte pattern a valid T;
        // the read lease excludes any `&mut` to these elements in this process for the view's
        // life, which is bounded by `&self` (which keeps the mapping alive). Concurrent writes by
        // other processes are the documented cross-process contract.
        let view = unsafe { ArrayView::from_shape_ptr(self.dim.clone().f(), self.data()) };
        Ok(SharedView::new(view, ticket))
    }

    /// A read lease on all elements in memory (column-major) order: Julia's `sdata(S)`, flat.
    ///
    /// # Panics
    /// As [`view`](Self::view); [`try_as_slice`](Self::try_as_slice) returns the error instead.
    #[doc(alias = "sdata")]
    pub fn as_slice(&self) -> SharedSlice<'_, T> {
        self.try_as_slice().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`as_slice`](Self::as_slice), with a conflicting write lease as [`ShmError::Busy`].
    pub fn try_as_slice(&self) -> Result<SharedSlice<'_, T>, ShmError> {
        self.chunk(0..self.len())
    }

    /// A read lease on the linear (column-major) elements `range`.
    ///
    /// # Errors
    /// [`OutOfBounds`](ShmError::OutOfBounds), [`Busy`](ShmError::Busy).
    pub fn chunk(&self, range: Range<usize>) -> Result<SharedSlice<'_, T>, ShmError> {
        self.check_linear(&range)?;
        let ticket = self
            .map
            .leases
            .acquire(Region::Linear(range.clone()), Access::Read)?;
        // SAFETY: `range` lies within 0..len (checked), so `data() + start .. + len` is inside
        // the mapped data, aligned for T, and holds valid T (Pod); the read lease excludes
        // `&mut` aliases in this process; the slice borrows `self`, which keeps the mapping.
        let slice =
            unsafe { std::slice::from_raw_parts(self.data().add(range.start), range.len()) };
        Ok(SharedSlice::new(slice, range.start, ticket))
    }

    /// A read lease on indices `range` along `axis` (all indices of the other axes).
    ///
    /// # Errors
    /// [`OutOfBounds`](ShmError::OutOfBounds) (bad axis or range), [`Busy`](ShmError::Busy).
    pub fn axis_chunk(
        &self,
        axis: Axis,
        range: Range<usize>,
    ) -> Result<SharedView<'_, T, D>, ShmError> {
        self.check_axis(axis, &range)?;
        let region = self.axis_region(axis, &range);
        let ticket = self.map.leases.acquire(region, Access::Read)?;
        // SAFETY: as in `try_view` for the whole array; the view is then narrowed to `range`
        // along `axis`, and the read lease covers exactly those elements.
        let mut view = unsafe { ArrayView::from_shape_ptr(self.dim.clone().f(), self.data()) };
        view.slice_axis_inplace(axis, Slice::from(range));
        Ok(SharedView::new(view, ticket))
    }

    /// A write lease on the linear elements `range`.
    ///
    /// # Safety
    /// The caller guarantees the cross-process half (see [`chunk_mut`](Self::chunk_mut)).
    unsafe fn lease_slice_mut(
        &self,
        range: Range<usize>,
    ) -> Result<SharedSliceMut<'_, T>, ShmError> {
        self.check_writable()?;
        self.check_linear(&range)?;
        let ticket = self
            .map
            .leases
            .acquire(Region::Linear(range.clone()), Access::Write)?;
        // SAFETY: `range` lies within the mapped data (checked), aligned, valid for T (Pod) and
        // writable (not read-only, checked); the write lease guarantees no other reference to
        // these elements exists in this process while the slice lives; other processes are the
        // caller's contract. The slice borrows `self`, which keeps the mapping alive.
        let slice =
            unsafe { std::slice::from_raw_parts_mut(self.data().add(range.start), range.len()) };
        Ok(SharedSliceMut::new(slice, range.start, ticket))
    }

    /// A write lease on indices `range` along `axis`.
    ///
    /// # Safety
    /// The caller guarantees the cross-process half (see [`axis_chunk_mut`](Self::axis_chunk_mut)).
    unsafe fn lease_axis_mut(
        &self,
        axis: Axis,
        range: Range<usize>,
    ) -> Result<SharedViewMut<'_, T, D>, ShmError> {
        self.check_writable()?;
        self.check_axis(axis, &range)?;
        let region = self.axis_region(axis, &range);
        let ticket = self.map.leases.acquire(region, Access::Write)?;
        // SAFETY: as in `try_view`, plus: the mapping is writable (checked) and the write lease
        // on exactly the elements of `range` along `axis` (the view is narrowed to them below)
        // excludes every other reference to them in this process; other processes are the
        // caller's contract.
        let mut view = unsafe { ArrayViewMut::from_shape_ptr(self.dim.clone().f(), self.data()) };
        view.slice_axis_inplace(axis, Slice::from(range));
        Ok(SharedViewMut::new(view, ticket))
    }

    /// A write lease on pid `myid`'s [`localindices`](Self::localindices): the safe way to
    /// write a shared array, as `S[localindices(S)] .= ...` in Julia.
    ///
    /// Empty if `myid` is not among the pids. Safe because the pids' ranges are disjoint;
    /// it relies on each process passing its own pid (the cross-process rule in the type docs).
    ///
    /// # Errors
    /// [`ReadOnly`](ShmError::ReadOnly), [`Busy`](ShmError::Busy).
    pub fn local_chunk_mut(&self, myid: Pid) -> Result<SharedSliceMut<'_, T>, ShmError> {
        let range = self.localindices(myid);
        // SAFETY: `localindices(myid)` is disjoint from every other pid's localindices
        // (index::split_part), and by the crate's cross-process rule only pid `myid` writes or
        // reads-while-writing its own share.
        unsafe { self.lease_slice_mut(range) }
    }

    /// A write lease on pid `myid`'s [`myrange`](Self::myrange) along `axis` (all indices of
    /// the other axes): the chunking of the manual's `advection_shared!`, for `Axis(1)`.
    ///
    /// # Errors
    /// [`OutOfBounds`](ShmError::OutOfBounds) for a bad axis, [`ReadOnly`](ShmError::ReadOnly),
    /// [`Busy`](ShmError::Busy).
    pub fn local_axis_chunk_mut(
        &self,
        axis: Axis,
        myid: Pid,
    ) -> Result<SharedViewMut<'_, T, D>, ShmError> {
        self.check_axis(axis, &(0..0))?;
        let range = self.myrange(axis, myid);
        // SAFETY: the pids' `myrange`s along one axis are disjoint (index::split_part), so the
        // element sets are disjoint; by the crate's cross-process rule only pid `myid` accesses
        // its own set while writing it.
        unsafe { self.lease_axis_mut(axis, range) }
    }

    /// A write lease on any linear range.
    ///
    /// # Safety
    /// No other process may read or write these elements while the lease lives (within this
    /// process, conflicts are checked and returned as [`ShmError::Busy`]).
    ///
    /// # Errors
    /// [`OutOfBounds`](ShmError::OutOfBounds), [`ReadOnly`](ShmError::ReadOnly),
    /// [`Busy`](ShmError::Busy).
    pub unsafe fn chunk_mut(&self, range: Range<usize>) -> Result<SharedSliceMut<'_, T>, ShmError> {
        // SAFETY: forwarded: the caller upholds the cross-process contract.
        unsafe { self.lease_slice_mut(range) }
    }

    /// A write lease on any range of indices along `axis`.
    ///
    /// # Safety
    /// As [`chunk_mut`](Self::chunk_mut): no other process accesses these elements meanwhile.
    ///
    /// # Errors
    /// As [`chunk_mut`](Self::chunk_mut).
    pub unsafe fn axis_chunk_mut(
        &self,
        axis: Axis,
        range: Range<usize>,
    ) -> Result<SharedViewMut<'_, T, D>, ShmError> {
        // SAFETY: forwarded: the caller upholds the cross-process contract.
        unsafe { self.lease_axis_mut(axis, range) }
    }

    /// A write lease on the whole array as a mutable `ndarray` view (column-major strides).
    ///
    /// # Safety
    /// No other process may read or write the array while the view lives: it spans every
    /// pid's part. (Within this process conflicts are checked.)
    ///
    /// # Errors
    /// [`ReadOnly`](ShmError::ReadOnly), [`Busy`](ShmError::Busy).
    pub unsafe fn view_mut(&self) -> Result<SharedViewMut<'_, T, D>, ShmError> {
        let axis = Axis(0);
        if self.dim.ndim() == 0 {
            // No axis to lease along: lease the single element linearly.
            self.check_writable()?;
            let ticket = self
                .map
                .leases
                .acquire(Region::Linear(0..1), Access::Write)?;
            // SAFETY: as in `lease_axis_mut`, over the whole (one-element) array.
            let view = unsafe { ArrayViewMut::from_shape_ptr(self.dim.clone().f(), self.data()) };
            return Ok(SharedViewMut::new(view, ticket));
        }
        // SAFETY: forwarded: the caller upholds the cross-process contract for every element,
        // and all of axis 0 is every element.
        unsafe { self.lease_axis_mut(axis, 0..self.shape()[0]) }
    }

    /// A write lease on all elements in memory (column-major) order.
    ///
    /// # Safety
    /// As [`view_mut`](Self::view_mut).
    ///
    /// # Errors
    /// [`ReadOnly`](ShmError::ReadOnly), [`Busy`](ShmError::Busy).
    pub unsafe fn as_mut_slice(&self) -> Result<SharedSliceMut<'_, T>, ShmError> {
        // SAFETY: forwarded: the caller upholds the cross-process contract.
        unsafe { self.lease_slice_mut(0..self.len()) }
    }

    /// Fault in the pages of linear elements `range` in this process, so that a kernel's first
    /// pass does not pay one page fault per 4 KiB.
    ///
    /// Uses `madvise(MADV_POPULATE_WRITE)` on shared memory (`MADV_POPULATE_READ` on files and
    /// read-only mappings): it touches no data, so it never races with writers and is safe on
    /// any range. On kernels before 5.14 it reads one byte per page instead.
    ///
    /// Why this method (`examples/prefault.rs`, 2-vCPU development VM, 1 GiB of freshly
    /// `posix_fallocate`d shared memory, medians of 7 rounds): faulting in pages nobody has
    /// touched yet costs ≈ 245 ms with `MADV_POPULATE_WRITE`, ≈ 370 ms with `MAP_POPULATE`,
    /// ≈ 515 ms writing one byte per page, and ≈ 410 ms of extra time in the first kernel pass
    /// without prefaulting (≈ 520 ms against a steady ≈ 110 ms). Pages already allocated by
    /// another pid cost only ≈ 35–100 ms per GiB to map, whichever way. So each pid prefaults
    /// *its own share* at attach ([`prefault_local`](Self::prefault_local)): the expensive
    /// first touch is paid once, in parallel, by the pid that will use those pages.
    ///
    /// # Errors
    /// [`OutOfBounds`](ShmError::OutOfBounds), [`Io`](ShmError::Io) from `madvise`.
    pub fn prefault(&self, range: Range<usize>) -> Result<(), ShmError> {
        self.check_linear(&range)?;
        self.map.prefault(range)
    }

    /// [`prefault`](Self::prefault) pid `myid`'s [`localindices`](Self::localindices).
    pub fn prefault_local(&self, myid: Pid) -> Result<(), ShmError> {
        self.map.prefault(self.localindices(myid))
    }

    /// [`prefault`](Self::prefault) the elements with indices `range` along `axis` (all
    /// indices of the other axes): what a pid that works on its [`myrange`](Self::myrange)
    /// rather than its `localindices` runs once, so that its first pass does not take the page
    /// faults. Construction prefaults each pid's `localindices` only, since it cannot know the
    /// split a kernel will use.
    ///
    /// # Errors
    /// [`OutOfBounds`](ShmError::OutOfBounds) for a bad axis or range; [`Io`](ShmError::Io).
    pub fn prefault_axis(&self, axis: Axis, range: Range<usize>) -> Result<(), ShmError> {
        self.check_axis(axis, &range)?;
        let shape = self.shape();
        let k = axis.index();
        // Column-major: an index along `axis` is a run of `inner` elements, repeated `outer`
        // times `span` apart.
        let inner: usize = shape[..k].iter().product();
        let outer: usize = shape[k + 1..].iter().product();
        let span = inner * shape[k];
        if range.is_empty() || self.len() * std::mem::size_of::<T>() == 0 {
            // No bytes to fault in (and for a zero-sized T, `outer` may be huge).
            return Ok(());
        }
        for o in 0..outer {
            let start = o * span + range.start * inner;
            self.map.prefault(start..start + range.len() * inner)?;
        }
        Ok(())
    }

    /// Write a file-backed array's changes to disk now (`msync`); no effect on shared memory.
    pub fn flush(&self) -> Result<(), ShmError> {
        self.map.flush()
    }
}

impl<T: Pod, D: Dimension> Clone for SharedArray<T, D> {
    fn clone(&self) -> Self {
        SharedArray {
            map: Arc::clone(&self.map),
            dim: self.dim.clone(),
            pids: Arc::clone(&self.pids),
            read_only: self.read_only,
            wire: Arc::clone(&self.wire),
            _elem: PhantomData,
        }
    }
}

impl<T: Pod, D: Dimension> fmt::Debug for SharedArray<T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedArray")
            .field("backing", &self.map.backing)
            .field("id", &self.map.id)
            .field("elem", &self.map.elem.type_name)
            .field("dims", &self.shape())
            .field("pids", &self.pids)
            .field("read_only", &self.read_only)
            .finish()
    }
}

/// Serializes as its [`ShmHandle`] (the same bytes, encoded once per array value).
impl<T: Pod, D: Dimension> Serialize for SharedArray<T, D> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = match self.wire.get() {
            Some(b) => b,
            None => {
                let b = self
                    .handle()
                    .into_wire_bytes()
                    .map_err(serde::ser::Error::custom)?;
                self.wire.get_or_init(|| b)
            }
        };
        serializer.serialize_bytes(bytes)
    }
}

/// Deserializes a [`ShmHandle`] and [`lookup`](SharedArray::lookup)s this process's mapping:
/// it fails unless this process attached the array before (as Julia's deserialization of a
/// `SharedArray` on a worker finds the worker's existing mapping).
///
/// So an array sent to a process outside its pids fails to arrive, with
/// [`ShmError::NotInPids`] naming that pid (with [`ShmError::WrongHost`] from another host); in
/// a remote call, the caller gets that message back as the call's error. Bytes that arrived
/// before and passed these checks are not decoded again while this process maps the segment.
impl<'de, T: Pod, D: Dimension> Deserialize<'de> for SharedArray<T, D> {
    fn deserialize<De: Deserializer<'de>>(deserializer: De) -> Result<Self, De::Error> {
        deserializer.deserialize_bytes(WithBytes(|wire: &[u8]| -> Result<Self, String> {
            let elem = (
                std::any::type_name::<T>(),
                std::mem::size_of::<T>(),
                std::mem::align_of::<T>(),
            );
            if let Some(a) = crate::handle::arrive(wire, elem) {
                if let Some(dim) = D::from_dimension(&IxDyn(a.shape.as_slice())) {
                    return Ok(SharedArray::from_arrival(a, dim));
                }
            }
            let handle = ShmHandle::from_wire(wire).map_err(|e| e.to_string())?;
            let mut array = SharedArray::lookup(&handle).map_err(|e| match e {
                // Not mapped here: say why when the reason is that this pid is not a member
                // (`myid()` is 0 outside a cohort cluster, where no pid is known).
                ShmError::NotMapped { .. } => {
                    let me = cohort_core::myid();
                    if me != 0 && !handle.pids.contains(&me) {
                        ShmError::NotInPids {
                            pid: me,
                            pids: handle.pids.clone(),
                        }
                        .to_string()
                    } else {
                        e.to_string()
                    }
                }
                e => e.to_string(),
            })?;
            if array.read_only == handle.read_only {
                array.wire = crate::handle::known(wire, &handle, elem);
            }
            Ok(array)
        }))
    }
}

/// A newly created segment that other pids can still attach, until every pid has attached.
///
/// Call [`finish`](Self::finish) once all pids have attached: it closes the segment to
/// attachers ([`SharedArray::unlink`]) and returns the array. Dropping a `PendingArray` (an
/// attach failed, a `?` returned early, a panic) also closes it. Either way nothing is ever
/// left in `/dev/shm`: the segment has no name, and a killed creator's descriptor closes with
/// it.
pub struct PendingArray<T: Pod, D: Dimension> {
    array: Option<SharedArray<T, D>>,
    handle: ShmHandle,
}

impl<T: Pod, D: Dimension> PendingArray<T, D> {
    /// A pending array over an existing mapping (file-backed: finish and drop unlink nothing).
    pub(crate) fn from_array(array: SharedArray<T, D>) -> Self {
        let handle = array.handle();
        PendingArray {
            array: Some(array),
            handle,
        }
    }

    /// The handle to send to every pid.
    pub fn handle(&self) -> &ShmHandle {
        &self.handle
    }

    /// The creator's array, e.g. to run its part of an `init` before the others attach.
    pub fn array(&self) -> &SharedArray<T, D> {
        self.array.as_ref().expect("present until finish or drop")
    }

    /// Every pid has attached: close the segment to attachers and return the array.
    ///
    /// # Errors
    /// As [`SharedArray::unlink`] (none today).
    pub fn finish(mut self) -> Result<SharedArray<T, D>, ShmError> {
        let array = self.array.take().expect("present until finish or drop");
        array.unlink()?;
        Ok(array)
    }
}

impl<T: Pod, D: Dimension> Drop for PendingArray<T, D> {
    fn drop(&mut self) {
        if let Some(array) = &self.array {
            let _ = array.unlink();
        }
    }
}

impl<T: Pod, D: Dimension> fmt::Debug for PendingArray<T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingArray")
            .field("array", &self.array)
            .finish()
    }
}
