//! Arrays without data bytes: a zero dim (Julia's `SharedArray{Float64}(0)`, `(3, 0)`), or a
//! zero-sized element type. Both are valid, with exact empty ranges; overflow stays an error.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use cohort_shm::ndarray::{Axis, Ix1, Ix2, Ix3, IxDyn};
use cohort_shm::{mapped_segments, release, SharedArray, ShmError};
use common::{attachable, own_entries};

/// A zero-sized element type deriving `Pod` (bytemuck accepts a field-less `repr(C)` struct).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
struct Marker;

/// The header page: an array without data bytes is exactly this long.
const HEADER_BYTES: u64 = 4096;

#[test]
fn one_dimensional_empty_array() {
    let before = own_entries();
    let s = SharedArray::<f64, Ix1>::create(0, &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(s.len(), 0);
    assert!(s.is_empty());
    assert_eq!(s.shape(), &[0]);
    assert_eq!(s.indexpids(1), Some(0));
    assert_eq!(s.localindices(1), 0..0);
    assert_eq!(s.myrange(Axis(0), 1), 0..0);
    assert_eq!(s.chunks(Axis(0), 2), vec![0..0, 0..0]);
    // Julia's fill!, copy, sum, sdata.
    let mut mine = s.local_chunk_mut(1).unwrap();
    assert_eq!(mine.range(), 0..0);
    mine.fill(1.0);
    drop(mine);
    assert_eq!(s.as_slice().to_vec(), Vec::<f64>::new());
    assert_eq!(s.as_slice().iter().sum::<f64>(), 0.0);
    assert_eq!(s.view().shape(), &[0]);
    assert_eq!(s.view().view().iter().count(), 0);
    assert_eq!(s.view().as_slice(), Some(&[][..]));
    assert_eq!(s.chunk(0..0).unwrap().len(), 0);
    let e = s.chunk(0..1).unwrap_err();
    assert!(matches!(e, ShmError::OutOfBounds { .. }), "{e}");
    // SAFETY: no other process maps this array.
    assert_eq!(unsafe { s.as_mut_slice() }.unwrap().len(), 0);
    // SAFETY: as above.
    assert_eq!(unsafe { s.view_mut() }.unwrap().shape(), &[0]);
    s.prefault(0..0).unwrap();
    s.prefault_local(1).unwrap();
    s.prefault_axis(Axis(0), 0..0).unwrap();
    let id = s.id();
    assert!(mapped_segments().contains(&id));
    drop(s);
    assert!(!mapped_segments().contains(&id));
    assert_eq!(own_entries(), before, "nothing left in /dev/shm");
}

#[test]
fn two_dimensional_empty_arrays_split_their_axes_exactly() {
    let pids = [1, 2, 3];
    // (3, 0): the rows split, the columns are empty.
    let pending = SharedArray::<i64, Ix2>::create((3, 0), &pids, 1).unwrap();
    assert!(
        attachable(pending.handle()),
        "several pids: open to attachers until finish"
    );
    let handle = pending.handle().clone();
    let s = pending.finish().unwrap();
    assert!(!attachable(&handle));
    assert_eq!((s.len(), s.is_empty()), (0, true));
    let local: Vec<_> = pids.iter().map(|&p| s.localindices(p)).collect();
    assert_eq!(local, vec![0..0, 0..0, 0..0]);
    let rows: Vec<_> = pids.iter().map(|&p| s.myrange(Axis(0), p)).collect();
    assert_eq!(rows, vec![0..1, 1..2, 2..3]);
    let cols: Vec<_> = pids.iter().map(|&p| s.myrange(Axis(1), p)).collect();
    assert_eq!(cols, vec![0..0, 0..0, 0..0]);
    assert_eq!(s.localindices(9), 0..0, "not a pid");
    assert_eq!(s.indexpids(9), None);
    let mut part = s.local_axis_chunk_mut(Axis(0), 2).unwrap();
    assert_eq!(part.shape(), &[1, 0]);
    part.view_mut().fill(5);
    drop(part);
    assert_eq!(s.view().shape(), &[3, 0]);
    assert_eq!(s.view().view().sum(), 0);
    // Empty leases never conflict, as for any empty region.
    let _w1 = s.local_chunk_mut(1).unwrap();
    let _w2 = s.local_axis_chunk_mut(Axis(0), 1).unwrap();
    let _r = s.view();

    // (0, 4): the columns split, the rows are empty.
    let s = SharedArray::<i64, Ix2>::create((0, 4), &pids, 1)
        .unwrap()
        .finish()
        .unwrap();
    let cols: Vec<_> = pids.iter().map(|&p| s.myrange(Axis(1), p)).collect();
    assert_eq!(cols, vec![0..2, 2..3, 3..4]);
    assert_eq!(s.myrange(Axis(0), 2), 0..0);
    let part = s.local_axis_chunk_mut(Axis(1), 1).unwrap();
    assert_eq!(part.shape(), &[0, 2]);
    drop(part);
    s.prefault_axis(Axis(1), 0..4).unwrap();
    assert_eq!(s.axis_chunk(Axis(1), 1..3).unwrap().shape(), &[0, 2]);
    let e = s.axis_chunk(Axis(1), 0..5).unwrap_err();
    assert!(matches!(e, ShmError::OutOfBounds { .. }), "{e}");
}

#[test]
fn empty_arrays_of_more_dims_and_dynamic_dims() {
    let s = SharedArray::<f32, Ix3>::create((2, 0, 5), &[1, 2], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!((s.len(), s.shape()), (0, &[2, 0, 5][..]));
    assert_eq!(s.myrange(Axis(2), 2), 3..5);
    assert_eq!(s.localindices(2), 0..0);
    let d = SharedArray::<u8, IxDyn>::create(IxDyn(&[4, 0]), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!((d.len(), d.view().shape()), (0, &[4, 0][..]));
}

#[test]
fn an_empty_array_attaches_and_travels_as_a_handle() {
    // Attach on the same process reuses the mapping; the handle round-trips through serde.
    let pending = SharedArray::<u16, Ix2>::create((0, 3), &[1, 2], 1).unwrap();
    let handle = pending.handle().clone();
    let attached = SharedArray::<u16, Ix2>::attach(&handle, 2).unwrap();
    assert_eq!(attached.id(), pending.array().id());
    let s = pending.finish().unwrap();
    let bytes = cohort_core::codec::encode_vec(&s).unwrap();
    let back: SharedArray<u16, Ix2> = cohort_core::codec::decode(&bytes).unwrap();
    assert_eq!((back.len(), back.shape()), (0, &[0, 3][..]));
    assert_eq!(back.localindices(2), 0..0);
    assert_eq!(back.myrange(Axis(1), 2), 2..3);
    let e = SharedArray::<u32, Ix2>::attach(&handle, 2).unwrap_err();
    assert!(matches!(e, ShmError::TypeMismatch { .. }), "{e}");
    assert!(release(s.id()), "attach pinned it");
}

#[test]
fn zero_sized_elements_count_but_take_no_bytes() {
    let s = SharedArray::<(), Ix2>::create((3, 4), &[1, 2], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!((s.len(), s.is_empty()), (12, false));
    assert_eq!(s.localindices(1), 0..6);
    assert_eq!(s.localindices(2), 6..12);
    assert_eq!(s.myrange(Axis(1), 2), 2..4);
    let mut mine = s.local_chunk_mut(2).unwrap();
    assert_eq!((mine.range(), mine.len()), (6..12, 6));
    mine.fill(());
    drop(mine);
    assert_eq!(s.as_slice().to_vec(), vec![(); 12]);
    assert_eq!(s.view().view().iter().count(), 12);
    assert_eq!(s.view()[[2, 3]], ());
    // Leases still cover elements: a write excludes an overlapping read.
    let _w = s.local_chunk_mut(1).unwrap();
    let e = s.try_view().unwrap_err();
    assert!(matches!(e, ShmError::Busy { .. }), "{e}");

    let m = SharedArray::<Marker, Ix1>::create(5, &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(m.len(), 5);
    assert_eq!(m.as_slice().to_vec(), vec![Marker; 5]);
    // Another zero-sized type is another type.
    let pending = SharedArray::<Marker, Ix1>::create(5, &[1, 2], 1).unwrap();
    let e = SharedArray::<[u64; 0], Ix1>::attach(pending.handle(), 2).unwrap_err();
    assert!(matches!(e, ShmError::TypeMismatch { .. }), "{e}");
}

#[test]
fn huge_zero_sized_arrays_are_cheap_and_overflow_stays_an_error() {
    let n = isize::MAX as usize;
    let s = SharedArray::<(), Ix1>::create(n, &[1, 2], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(s.len(), n);
    assert_eq!(s.localindices(2), n / 2 + 1..n);
    s.prefault_local(2).unwrap();
    // An axis range repeated 2^40 times: nothing to fault in, so it returns at once (a loop
    // over the repeats would not end within the bound).
    let wide = SharedArray::<(), Ix2>::create((1, 1 << 40), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(wide.prefault_axis(Axis(0), 0..1).is_ok()));
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));

    let too_large = |e: ShmError| matches!(e, ShmError::TooLarge { .. });
    let e = SharedArray::<(), Ix1>::create(n + 1, &[1], 1).unwrap_err();
    assert!(too_large(e));
    let e = SharedArray::<(), Ix2>::create((usize::MAX, 2), &[1], 1).unwrap_err();
    assert!(too_large(e));
    // A zero dim does not excuse the others: ndarray bounds their product too.
    let e = SharedArray::<f64, Ix3>::create((0, usize::MAX, 2), &[1], 1).unwrap_err();
    assert!(
        e.to_string()
            .contains("dims [0, 18446744073709551615, 2] of 8-byte elements is too large"),
        "{e}"
    );
    let e = SharedArray::<f64, Ix2>::create((usize::MAX, 0), &[1], 1).unwrap_err();
    assert!(too_large(e));
}

#[test]
fn file_backed_empty_array_is_a_header_only_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.bin");
    let s = SharedArray::<f64, Ix2>::create_file(&path, (0, 3), &[1]).unwrap();
    assert_eq!((s.len(), s.myrange(Axis(1), 1)), (0, 0..3));
    s.flush().unwrap();
    drop(s);
    assert_eq!(std::fs::metadata(&path).unwrap().size(), HEADER_BYTES);
    let r = SharedArray::<f64, Ix2>::open_file(&path, (0, 3), true, &[1]).unwrap();
    assert_eq!(r.as_slice().len(), 0);
    let e = r.local_chunk_mut(1).unwrap_err();
    assert!(matches!(e, ShmError::ReadOnly { .. }), "{e}");
    drop(r);
    // Same size on disk, other dims or type: the header tells them apart.
    let e = SharedArray::<f64, Ix2>::open_file(&path, (3, 0), false, &[1]).unwrap_err();
    assert!(
        matches!(e, ShmError::ShapeMismatch { ref found, .. } if found == &[0, 3]),
        "{e}"
    );
    let e = SharedArray::<f32, Ix2>::open_file(&path, (0, 3), false, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::TypeMismatch { .. }), "{e}");
    let z = SharedArray::<(), Ix1>::create_file(dir.path().join("unit.bin"), 7, &[1]).unwrap();
    assert_eq!(z.len(), 7);
    drop(z);
    let meta = std::fs::metadata(dir.path().join("unit.bin")).unwrap();
    assert_eq!(meta.size(), HEADER_BYTES);
}
