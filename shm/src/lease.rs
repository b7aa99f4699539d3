//! In-process borrow tracking and the guard types that hand out views.
//!
//! Every view of a [`SharedArray`](crate::SharedArray) is a *lease* on a [`Region`] of it,
//! registered in a table shared by every `SharedArray` value of that mapping in this process.
//! Leases work like `RefCell` borrows over regions: reads may overlap reads, a write overlaps
//! nothing. So safe code in one process can never hold a `&mut` that aliases another view.
//! (What *other processes* do is not visible here; see the crate docs' safety section.)
//!
//! The guards give out views borrowed from themselves (`view()`, `Deref` to a slice), never the
//! inner `'a` view, so no view outlives its lease.

use std::fmt;
use std::ops::{Deref, DerefMut, Index, IndexMut, Range};
use std::sync::{Mutex, PoisonError};

use ndarray::{ArrayView, ArrayViewMut, Dimension, NdIndex};

use crate::error::{Access, ShmError};
use crate::index::{overlaps, Region};

struct Held {
    token: u64,
    region: Region,
    access: Access,
}

/// The leases currently held in this process on one array (one shm segment or one file).
pub(crate) struct LeaseTable {
    dims: Vec<usize>,
    held: Mutex<(u64, Vec<Held>)>,
}

impl LeaseTable {
    pub(crate) fn new(dims: Vec<usize>) -> LeaseTable {
        LeaseTable {
            dims,
            held: Mutex::new((0, Vec::new())),
        }
    }

    /// Register a lease, or say which held lease conflicts with it.
    pub(crate) fn acquire(&self, region: Region, access: Access) -> Result<Ticket<'_>, ShmError> {
        // A panic while the lock is held cannot leave the vector half-updated (push/retain),
        // so a poisoned table is still consistent.
        let mut guard = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, held) = &mut *guard;
        let conflict = held.iter().find(|h| {
            (access == Access::Write || h.access == Access::Write)
                && overlaps(&self.dims, &h.region, &region)
        });
        if let Some(h) = conflict {
            return Err(ShmError::Busy {
                requested: region,
                access,
                held: h.region.clone(),
                held_access: h.access,
            });
        }
        let token = *next;
        *next += 1;
        held.push(Held {
            token,
            region,
            access,
        });
        Ok(Ticket { table: self, token })
    }

    fn release(&self, token: u64) {
        let mut guard = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.retain(|h| h.token != token);
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .len()
    }
}

/// Proof of a registered lease; releases it on drop.
pub(crate) struct Ticket<'a> {
    table: &'a LeaseTable,
    token: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.table.release(self.token);
    }
}

/// A read lease on a shared array (or a region of it), viewed as an `ndarray` view.
///
/// Get the view with [`view`](SharedView::view), or index the guard directly: `v[[i, j]]`.
/// While it lives, no overlapping region can be borrowed for writing in this process.
pub struct SharedView<'a, T, D: Dimension> {
    view: ArrayView<'a, T, D>,
    _ticket: Ticket<'a>,
}

impl<'a, T, D: Dimension> SharedView<'a, T, D> {
    pub(crate) fn new(view: ArrayView<'a, T, D>, ticket: Ticket<'a>) -> Self {
        SharedView {
            view,
            _ticket: ticket,
        }
    }

    /// The `ndarray` view (column-major strides), borrowed from this lease.
    pub fn view(&self) -> ArrayView<'_, T, D> {
        self.view.view()
    }

    /// The elements in memory (column-major) order, if they are contiguous.
    ///
    /// Always `Some` for a whole array and for a range of the last axis.
    pub fn as_slice(&self) -> Option<&[T]> {
        self.view.as_slice_memory_order()
    }

    /// The view's shape.
    pub fn shape(&self) -> &[usize] {
        self.view.shape()
    }
}

impl<T, D: Dimension, I: NdIndex<D>> Index<I> for SharedView<'_, T, D> {
    type Output = T;
    fn index(&self, index: I) -> &T {
        &self.view[index]
    }
}

impl<T: fmt::Debug, D: Dimension> fmt::Debug for SharedView<'_, T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedView").field(&self.view).finish()
    }
}

/// A write lease on a region of a shared array, viewed as a mutable `ndarray` view.
///
/// While it lives, no overlapping region can be borrowed at all in this process.
pub struct SharedViewMut<'a, T, D: Dimension> {
    view: ArrayViewMut<'a, T, D>,
    _ticket: Ticket<'a>,
}

impl<'a, T, D: Dimension> SharedViewMut<'a, T, D> {
    pub(crate) fn new(view: ArrayViewMut<'a, T, D>, ticket: Ticket<'a>) -> Self {
        SharedViewMut {
            view,
            _ticket: ticket,
        }
    }

    /// A read-only `ndarray` view, borrowed from this lease.
    pub fn view(&self) -> ArrayView<'_, T, D> {
        self.view.view()
    }

    /// The mutable `ndarray` view (column-major strides), borrowed from this lease.
    pub fn view_mut(&mut self) -> ArrayViewMut<'_, T, D> {
        self.view.view_mut()
    }

    /// The elements in memory (column-major) order, if they are contiguous.
    pub fn as_slice(&self) -> Option<&[T]> {
        self.view.as_slice_memory_order()
    }

    /// The elements in memory (column-major) order, mutably, if they are contiguous.
    pub fn as_mut_slice(&mut self) -> Option<&mut [T]> {
        self.view.as_slice_memory_order_mut()
    }

    /// The view's shape.
    pub fn shape(&self) -> &[usize] {
        self.view.shape()
    }
}

impl<T, D: Dimension, I: NdIndex<D>> Index<I> for SharedViewMut<'_, T, D> {
    type Output = T;
    fn index(&self, index: I) -> &T {
        &self.view[index]
    }
}

impl<T, D: Dimension, I: NdIndex<D>> IndexMut<I> for SharedViewMut<'_, T, D> {
    fn index_mut(&mut self, index: I) -> &mut T {
        &mut self.view[index]
    }
}

impl<T: fmt::Debug, D: Dimension> fmt::Debug for SharedViewMut<'_, T, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedViewMut").field(&self.view).finish()
    }
}

/// A read lease on a linear (column-major) range of elements; dereferences to `[T]`.
pub struct SharedSlice<'a, T> {
    slice: &'a [T],
    start: usize,
    _ticket: Ticket<'a>,
}

impl<'a, T> SharedSlice<'a, T> {
    pub(crate) fn new(slice: &'a [T], start: usize, ticket: Ticket<'a>) -> Self {
        SharedSlice {
            slice,
            start,
            _ticket: ticket,
        }
    }

    /// The linear indices of the array that this slice covers.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.slice.len()
    }
}

impl<T> Deref for SharedSlice<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

impl<T: fmt::Debug> fmt::Debug for SharedSlice<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSlice")
            .field("range", &self.range())
            .field("data", &self.slice)
            .finish()
    }
}

/// A write lease on a linear (column-major) range of elements; dereferences to `[T]` mutably.
///
/// This is what [`local_chunk_mut`](crate::SharedArray::local_chunk_mut) returns: the calling
/// pid's `localindices` share.
pub struct SharedSliceMut<'a, T> {
    slice: &'a mut [T],
    start: usize,
    _ticket: Ticket<'a>,
}

impl<'a, T> SharedSliceMut<'a, T> {
    pub(crate) fn new(slice: &'a mut [T], start: usize, ticket: Ticket<'a>) -> Self {
        SharedSliceMut {
            slice,
            start,
            _ticket: ticket,
        }
    }

    /// The linear indices of the array that this slice covers.
    pub fn range(&self) -> Range<usize> {
        self.start..self.start + self.slice.len()
    }
}

impl<T> Deref for SharedSliceMut<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.slice
    }
}

impl<T> DerefMut for SharedSliceMut<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.slice
    }
}

impl<T: fmt::Debug> fmt::Debug for SharedSliceMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSliceMut")
            .field("range", &self.range())
            .field("data", &self.slice)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_behave_like_refcell_over_regions() {
        let t = LeaseTable::new(vec![3, 4]);
        let r1 = t.acquire(Region::Linear(0..6), Access::Read).unwrap();
        let _r2 = t.acquire(Region::Linear(3..12), Access::Read).unwrap();
        let e = t
            .acquire(Region::Linear(5..7), Access::Write)
            .err()
            .unwrap();
        assert!(matches!(e, ShmError::Busy { .. }), "{e}");
        let w0 = t.acquire(
            Region::Axis {
                axis: 1,
                range: 2..4,
            },
            Access::Write,
        );
        assert!(w0.is_err(), "overlaps the read of 3..12");
        drop(_r2);
        let w = t
            .acquire(
                Region::Axis {
                    axis: 1,
                    range: 2..4,
                },
                Access::Write,
            )
            .unwrap();
        // Columns 0..2 are linear 0..6, still readable; column 2 is not writable twice.
        let _r3 = t
            .acquire(
                Region::Axis {
                    axis: 1,
                    range: 0..2,
                },
                Access::Read,
            )
            .unwrap();
        assert!(t.acquire(Region::Linear(6..7), Access::Read).is_err());
        assert!(
            t.acquire(Region::Linear(0..0), Access::Write).is_ok(),
            "empty never conflicts"
        );
        drop((r1, w, _r3));
        assert_eq!(t.count(), 0);
        assert!(t.acquire(Region::Linear(0..12), Access::Write).is_ok());
    }
}
