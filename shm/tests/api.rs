//! Single-process tests of Julia's `SharedArrays` API beyond construction: `reshape`,
//! `similar`, `copy`, `Array(S)` (`unshare`), and `close` of one process's mapping.

mod common;

use cohort_shm::index::Region;
use cohort_shm::ndarray::{arr2, Array2, Axis, Ix1, Ix2, Ix3};
use cohort_shm::{mapped_segments, SharedArray, ShmError, MAX_DIMS};
use common::{attachable, tamper};

fn counting(dims: (usize, usize), pids: &[cohort_shm::Pid]) -> SharedArray<i64, Ix2> {
    let s = SharedArray::<i64, Ix2>::create(dims, pids, 1)
        .unwrap()
        .finish()
        .unwrap();
    // SAFETY: this test's process is the only one that maps the array.
    let mut all = unsafe { s.as_mut_slice() }.unwrap();
    all.iter_mut().enumerate().for_each(|(k, x)| *x = k as i64);
    drop(all);
    s
}

#[test]
fn reshape_is_the_same_memory_in_new_dims() {
    let s = counting((3, 4), &[1, 2]);
    let r = s.reshape((2, 6)).unwrap();
    assert_eq!(r.shape(), &[2, 6]);
    assert_eq!(r.id(), s.id(), "one object");
    assert_eq!(r.pids(), &[1, 2]);
    // Column-major: element k in memory order is k in both shapes.
    assert_eq!(r.view()[[1, 2]], 5);
    assert_eq!(s.view()[[2, 1]], 5);
    assert_eq!(r.localindices(2), s.localindices(2));
    // A write through one shape is seen through the other.
    r.local_chunk_mut(2).unwrap().fill(-1);
    assert_eq!(
        s.as_slice().to_vec(),
        [0, 1, 2, 3, 4, 5, -1, -1, -1, -1, -1, -1]
    );
    // To one and three dims, and back.
    let flat = s.reshape(12).unwrap();
    assert_eq!(flat.shape(), &[12]);
    assert_eq!(flat.as_slice()[5], 5);
    let cube = flat.reshape((2, 3, 2)).unwrap();
    assert_eq!(cube.view()[[1, 2, 0]], 5);
    assert_eq!(cube.view()[[0, 0, 1]], -1);
    // Empty arrays reshape among empty dims.
    let e = SharedArray::<f64, Ix2>::create((3, 0), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(e.reshape((0, 7)).unwrap().shape(), &[0, 7]);
    assert_eq!(e.reshape(0).unwrap().len(), 0);
}

#[test]
fn reshape_errors() {
    let s = counting((3, 4), &[1]);
    let err = s.reshape((5, 2)).unwrap_err();
    assert!(
        matches!(&err, ShmError::LengthMismatch { from, to } if from == &[3, 4] && to == &[5, 2]),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "cannot reshape an array of dims [3, 4] to [5, 2]: the element counts differ"
    );
    assert!(matches!(
        s.reshape((12, 0)),
        Err(ShmError::LengthMismatch { .. })
    ));
    assert!(matches!(
        s.reshape((usize::MAX, 2)),
        Err(ShmError::LengthMismatch { .. })
    ));
    let many = cohort_shm::ndarray::IxDyn(&[1; MAX_DIMS + 1]);
    let err = s.reshape(many).unwrap_err();
    assert!(
        matches!(err, ShmError::TooManyDims { ndims: 17, max: 16 }),
        "{err}"
    );
}

#[test]
fn leases_of_two_shapes_exclude_each_other() {
    let s = counting((4, 3), &[1]);
    let r = s.reshape((2, 6)).unwrap();
    // A read of all of `s` excludes a write of a column of `r`.
    let whole = s.view();
    // SAFETY: no other process maps this array (so for every unsafe block below).
    let err = unsafe { r.axis_chunk_mut(Axis(1), 2..3) }.unwrap_err();
    assert!(matches!(err, ShmError::Busy { .. }), "{err}");
    drop(whole);
    // Column 2 of the 2 × 6 shape is linear 4..6, which column 1 of the 4 × 3 holds.
    // SAFETY: as above.
    let col = unsafe { r.axis_chunk_mut(Axis(1), 2..3) }.unwrap();
    assert_eq!(col.shape(), &[2, 1]);
    let err = s.axis_chunk(Axis(1), 1..2).unwrap_err();
    assert!(
        matches!(&err, ShmError::Busy { held: Region::Linear(r), .. } if *r == (4..6)),
        "{err}"
    );
    assert!(
        s.axis_chunk(Axis(1), 2..3).is_ok(),
        "column 2 is linear 8..12"
    );
    // A row of the reshaped value is borrowed as the span from its first to its last element.
    drop(col);
    let row = r.axis_chunk(Axis(0), 1..2).unwrap();
    assert!(s.chunk(0..1).is_ok(), "reads overlap reads");
    // SAFETY: as above.
    let err = unsafe { s.chunk_mut(11..12) }.unwrap_err();
    assert!(
        matches!(&err, ShmError::Busy { held: Region::Linear(r), .. } if *r == (1..12)),
        "{err}"
    );
    // SAFETY: as above.
    let first = unsafe { s.chunk_mut(0..1) };
    assert!(first.is_ok(), "before the row's first element");
    drop(first);
    drop(row);
}

#[test]
fn a_reshaped_array_travels_in_its_shape() {
    let pending = SharedArray::<i64, Ix2>::create((3, 4), &[1, 2], 1).unwrap();
    let r = pending.array().reshape((6, 2)).unwrap();
    let h = r.handle();
    assert_eq!(h.dims(), &[3, 4], "the object's dims");
    assert_eq!(h.shape(), &[6, 2], "the value's dims");
    let worker = SharedArray::<i64, Ix2>::attach(&h, 2).unwrap();
    assert_eq!(worker.shape(), &[6, 2]);
    let s = pending.finish().unwrap();
    let bytes = cohort_core::codec::encode_vec(&r).unwrap();
    let back: SharedArray<i64, Ix2> = cohort_core::codec::decode(&bytes).unwrap();
    assert_eq!(back.shape(), &[6, 2]);
    // A shape of another length is refused on arrival.
    let bad = tamper(&h, |m| m.shape = vec![5, 2]);
    let err = SharedArray::<i64, Ix2>::lookup(&bad).unwrap_err();
    assert!(
        matches!(&err, ShmError::ShapeMismatch { expected, found, .. }
            if expected == &[5, 2] && found == &[3, 4]),
        "{err}"
    );
    let err = SharedArray::<i64, Ix3>::lookup(&h).unwrap_err();
    assert!(
        matches!(err, ShmError::DimensionalityMismatch { .. }),
        "{err}"
    );
    drop((s, r, back, worker));
    assert!(cohort_shm::release(h.id()));
}

#[test]
fn similar_and_unshare_are_private() {
    let s = counting((2, 3), &[1]);
    let z: Array2<i64> = s.similar();
    assert_eq!(z, Array2::<i64>::zeros((2, 3)));
    assert!(
        z.t().is_standard_layout(),
        "column-major, as the shared array"
    );
    let mut copy = s.unshare().unwrap();
    assert_eq!(copy, arr2(&[[0, 2, 4], [1, 3, 5]]));
    assert!(copy.t().is_standard_layout());
    copy[[0, 0]] = 99;
    assert_eq!(s.view()[[0, 0]], 0, "the copy is private");
    s.local_chunk_mut(1).unwrap().fill(7);
    assert_eq!(copy[[1, 2]], 5, "later writes do not reach it");
    // A write lease here makes the copy wait, as a view would.
    let w = s.local_chunk_mut(1).unwrap();
    assert!(matches!(s.unshare(), Err(ShmError::Busy { .. })));
    drop(w);
    let flat = s.reshape(6).unwrap().unshare().unwrap();
    assert_eq!(flat.to_vec(), [7; 6]);
}

#[test]
fn copy_into_new_is_a_deep_copy() {
    let s = counting((3, 4), &[1, 2]);
    let pending = s.copy_into_new(1).unwrap();
    assert!(attachable(pending.handle()), "two pids: open until finish");
    let c = pending.finish().unwrap();
    assert_ne!(c.id(), s.id(), "a new segment");
    assert_eq!(c.pids(), s.pids());
    assert_eq!(c.shape(), s.shape());
    assert_eq!(c.as_slice().to_vec(), (0..12).collect::<Vec<i64>>());
    c.local_chunk_mut(1).unwrap().fill(-5);
    assert_eq!(s.as_slice()[0], 0, "independent of the original");
    // A reshaped value copies in its shape.
    let r = s.reshape((4, 3)).unwrap();
    let rc = r.copy_into_new(1).unwrap().finish().unwrap();
    assert_eq!(rc.shape(), &[4, 3]);
    assert_eq!(rc.view()[[3, 2]], 11);
    let w = s.local_chunk_mut(1).unwrap();
    assert!(matches!(s.copy_into_new(1), Err(ShmError::Busy { .. })));
    drop(w);
}

#[test]
fn close_releases_this_process_mapping() {
    let pending = SharedArray::<u8, Ix1>::create(10, &[1, 2], 1).unwrap();
    let handle = pending.handle().clone();
    let worker = SharedArray::<u8, Ix1>::attach(&handle, 2).unwrap();
    let creator = pending.finish().unwrap();
    drop(creator);
    assert!(mapped_segments().contains(&handle.id()), "pinned by attach");
    let other = worker.clone();
    assert!(!worker.close(), "another handle still uses the mapping");
    assert!(mapped_segments().contains(&handle.id()));
    assert!(other.close(), "the last handle: unmapped");
    assert!(!mapped_segments().contains(&handle.id()));
    let err = SharedArray::<u8, Ix1>::lookup(&handle).unwrap_err();
    assert!(matches!(err, ShmError::NotMapped { .. }), "{err}");
    // On the creator nothing is pinned: close drops the handle.
    let s = SharedArray::<u8, Ix1>::create(3, &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    let id = s.id();
    assert!(s.close());
    assert!(!mapped_segments().contains(&id));
}
