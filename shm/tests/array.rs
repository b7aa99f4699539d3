//! Single-process tests of SharedArray: layout, views, partitions, attach, errors, leases.

mod common;

use cohort_shm::ndarray::{Axis, Ix0, Ix1, Ix2, Ix3, IxDyn};
use cohort_shm::{mapped_segments, release, Backing, SharedArray, ShmError, MAX_DIMS};
use common::{attachable, tamper};

#[test]
fn roundtrip_single_pid() {
    let s = SharedArray::<f64, Ix2>::create((5, 7), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(s.len(), 35);
    assert_eq!(s.shape(), &[5, 7]);
    assert_eq!(s.pids(), &[1]);
    assert!(!s.is_empty());
    assert!(
        s.view().view().iter().all(|&x| x == 0.0),
        "fresh shared memory is zero"
    );
    s.local_chunk_mut(1)
        .unwrap()
        .iter_mut()
        .enumerate()
        .for_each(|(k, x)| *x = k as f64 * 0.5);
    let got: Vec<f64> = s.as_slice().to_vec();
    assert_eq!(got, (0..35).map(|k| k as f64 * 0.5).collect::<Vec<_>>());
    assert_eq!(
        s.view().view().sum(),
        (0..35).map(|k| k as f64 * 0.5).sum::<f64>()
    );
    // A clone is the same memory.
    let c = s.clone();
    assert_eq!(c.view()[[4, 6]], 34.0 * 0.5);
}

#[test]
fn single_pid_closes_at_construction() {
    let pending = SharedArray::<u32, Ix1>::create(10, &[1], 1).unwrap();
    assert!(
        !attachable(pending.handle()),
        "pids == [myid]: closed to attachers right away"
    );
    let s = pending.finish().unwrap();
    s.unlink().unwrap(); // idempotent
    s.unlink().unwrap();
}

#[test]
fn column_major_layout() {
    let s = SharedArray::<i64, Ix2>::create((3, 4), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    {
        let mut w = s.local_chunk_mut(1).unwrap();
        assert_eq!(w.range(), 0..12);
        for (k, x) in w.iter_mut().enumerate() {
            *x = k as i64;
        }
    }
    let v = s.view();
    for i in 0..3 {
        for j in 0..4 {
            assert_eq!(
                v[[i, j]],
                (i + 3 * j) as i64,
                "element ({i},{j}) is linear i + 3j"
            );
        }
    }
    assert_eq!(v.view().strides(), &[1, 3]);
    assert_eq!(v.as_slice().unwrap().len(), 12);
    drop(v);
    // And the other way: write by (i, j), read linearly.
    // SAFETY: no other process knows this segment (single pid, already closed to attachers).
    let mut w = unsafe { s.view_mut() }.unwrap();
    w.view_mut()
        .indexed_iter_mut()
        .for_each(|((i, j), x)| *x = (10 * i + j) as i64);
    w[[2, 3]] = -1;
    drop(w);
    assert_eq!(&s.as_slice()[..4], &[0, 10, 20, 1]);
    assert_eq!(s.as_slice()[11], -1);
}

#[test]
fn three_dims_and_zero_dims() {
    let s = SharedArray::<u16, Ix3>::create((2, 3, 4), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    // SAFETY: single pid, closed to attachers: nobody else maps it.
    let mut all = unsafe { s.as_mut_slice() }.unwrap();
    all.iter_mut().enumerate().for_each(|(k, x)| *x = k as u16);
    drop(all);
    assert_eq!(s.view()[[1, 2, 3]], (1 + 2 * 2 + 3 * 6) as u16);

    let z = SharedArray::<f32, Ix0>::create((), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(z.len(), 1);
    // SAFETY: as above.
    unsafe { z.view_mut() }.unwrap()[[]] = 2.5;
    assert_eq!(z.view()[[]], 2.5);

    let d = SharedArray::<u8, IxDyn>::create(IxDyn(&[2, 2, 2, 2]), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(d.len(), 16);
}

#[test]
fn attach_in_same_process_as_another_pid() {
    let pending = SharedArray::<f64, Ix2>::create((3, 4), &[1, 2], 1).unwrap();
    let handle = pending.handle().clone();
    assert!(
        attachable(&handle),
        "two pids: open to attachers until finish"
    );
    let worker = SharedArray::<f64, Ix2>::attach(&handle, 2).unwrap();
    assert_eq!(worker.id(), pending.array().id());
    assert_eq!(worker.localindices(2), 6..12);
    worker.local_chunk_mut(2).unwrap().fill(2.0);
    pending.array().local_chunk_mut(1).unwrap().fill(1.0);
    let creator = pending.finish().unwrap();
    assert!(!attachable(&handle), "finish closes it to attachers");
    assert_eq!(creator.as_slice().to_vec(), [[1.0; 6], [2.0; 6]].concat());
    // After unlink, a handle still finds this process's mapping.
    let again = SharedArray::<f64, Ix2>::lookup(&handle).unwrap();
    assert_eq!(again.view()[[0, 3]], 2.0);
    // The untyped attach also reuses the mapping.
    handle.attach(2).unwrap();
    handle.prefault_local(2).unwrap();
    drop((creator, again, worker));
    // Still pinned by attach: the mapping outlives the arrays.
    assert!(mapped_segments().contains(&handle.id()));
    assert!(SharedArray::<f64, Ix2>::lookup(&handle).is_ok());
    assert!(release(handle.id()));
    assert!(!release(handle.id()), "release is idempotent");
    assert!(
        !mapped_segments().contains(&handle.id()),
        "unmapped once unpinned and unused"
    );
    let err = SharedArray::<f64, Ix2>::lookup(&handle).unwrap_err();
    assert!(matches!(err, ShmError::NotMapped { .. }), "{err}");
}

#[test]
fn dropping_the_last_array_unmaps() {
    let s = SharedArray::<u8, Ix1>::create(100, &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    let (id, handle) = (s.id(), s.handle());
    assert!(mapped_segments().contains(&id));
    assert!(SharedArray::<u8, Ix1>::lookup(&handle).is_ok());
    drop(s);
    assert!(!mapped_segments().contains(&id));
    assert!(matches!(
        SharedArray::<u8, Ix1>::lookup(&handle),
        Err(ShmError::NotMapped { .. })
    ));
}

#[test]
fn dropped_pending_closes() {
    let pending = SharedArray::<u64, Ix1>::create(1000, &[1, 2, 3], 1).unwrap();
    let handle = pending.handle().clone();
    assert!(attachable(&handle));
    drop(pending);
    assert!(!attachable(&handle));
    assert!(!mapped_segments().contains(&handle.id()));
}

#[test]
fn creator_outside_pids() {
    let pending = SharedArray::<i32, Ix1>::create(9, &[2, 3], 1).unwrap();
    assert_eq!(pending.array().indexpids(1), None);
    assert_eq!(pending.array().localindices(1), 0..0);
    assert!(pending.array().local_chunk_mut(1).unwrap().is_empty());
    let s = pending.finish().unwrap();
    assert_eq!(s.localindices(2), 0..5);
    assert_eq!(s.localindices(3), 5..9);
}

#[test]
fn localindices_partition_like_the_manual() {
    // The manual: SharedArray{Int,2}((3,4), init = S -> S[localindices(S)] = myid()) on pids 2:4.
    let pending = SharedArray::<i64, Ix2>::create((3, 4), &[2, 3, 4], 1).unwrap();
    let handle = pending.handle().clone();
    for pid in [2, 3, 4] {
        let s = SharedArray::<i64, Ix2>::attach(&handle, pid).unwrap();
        s.local_chunk_mut(pid).unwrap().fill(pid as i64);
    }
    let s = pending.finish().unwrap();
    let expected = [[2, 2, 3, 4], [2, 3, 3, 4], [2, 3, 4, 4]];
    let v = s.view();
    for (i, row) in expected.iter().enumerate() {
        for (j, &x) in row.iter().enumerate() {
            assert_eq!(v[[i, j]], x);
        }
    }
    assert_eq!(s.indexpids(3), Some(1));
    assert_eq!(s.indexpids(1), None);
    release(handle.id());
}

#[test]
fn localindices_and_myrange_cover_disjointly() {
    for (dims, npids) in [
        ((7, 3), 3),
        ((2, 1), 4),
        ((13, 5), 4),
        ((1, 1), 3),
        ((4, 10), 4),
    ] {
        let pids: Vec<usize> = (2..2 + npids).collect();
        let s = SharedArray::<u8, Ix2>::create(dims, &pids, 1)
            .unwrap()
            .finish()
            .unwrap();
        for (what, n, ranges) in [
            (
                "localindices",
                s.len(),
                pids.iter().map(|&p| s.localindices(p)).collect::<Vec<_>>(),
            ),
            (
                "myrange axis 0",
                dims.0,
                pids.iter().map(|&p| s.myrange(Axis(0), p)).collect(),
            ),
            (
                "myrange axis 1",
                dims.1,
                pids.iter().map(|&p| s.myrange(Axis(1), p)).collect(),
            ),
        ] {
            let mut seen = vec![0u8; n];
            for r in &ranges {
                for k in r.clone() {
                    seen[k] += 1;
                }
            }
            assert!(
                seen.iter().all(|&c| c == 1),
                "{what} {dims:?} on {npids}: {ranges:?}"
            );
            let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
            assert!(
                lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1,
                "{lens:?}"
            );
        }
        assert_eq!(s.chunks(Axis(1), 2).len(), 2);
        assert_eq!(s.myrange(Axis(1), 99), 0..0);
    }
}

#[test]
fn axis_chunks_per_pid_in_3d() {
    // The advection chunking: split the second dimension (Axis(1)) among the pids.
    let pids = [1, 2, 3];
    let s = SharedArray::<f64, Ix3>::create((4, 5, 3), &pids, 1)
        .unwrap()
        .finish()
        .unwrap();
    // All pids' chunks at once in one process: disjoint, so no lease conflict.
    let mut chunks: Vec<_> = pids
        .iter()
        .map(|&p| s.local_axis_chunk_mut(Axis(1), p).unwrap())
        .collect();
    for (chunk, &p) in chunks.iter_mut().zip(&pids) {
        assert_eq!(chunk.shape()[0], 4);
        assert_eq!(chunk.shape()[2], 3);
        chunk.view_mut().fill(p as f64);
    }
    assert!(
        s.try_view().is_err(),
        "the whole array is leased for writing"
    );
    drop(chunks);
    let v = s.view();
    for j in 0..5 {
        let owner = pids
            .iter()
            .find(|&&p| s.myrange(Axis(1), p).contains(&j))
            .unwrap();
        assert!(v
            .view()
            .index_axis(Axis(1), j)
            .iter()
            .all(|&x| x == *owner as f64));
    }
    // A chunk of the last axis is contiguous in memory.
    drop(v);
    let last = s.local_axis_chunk_mut(Axis(2), 1).unwrap();
    assert_eq!(last.as_slice().map(|sl| sl.len()), Some(20));
    assert!(
        s.axis_chunk(Axis(1), 0..2).is_err(),
        "different axes always cross"
    );
    drop(last);
    let mid = s.axis_chunk(Axis(1), 0..2).unwrap();
    assert_eq!(mid.as_slice(), None, "axis 1 chunks are strided");
}

#[test]
fn leases_conflict_within_a_process() {
    let s = SharedArray::<u32, Ix2>::create((4, 4), &[1, 2], 1)
        .unwrap()
        .finish()
        .unwrap();
    let w = s.local_chunk_mut(1).unwrap(); // linear 0..8
    let err = s.local_chunk_mut(1).unwrap_err();
    assert!(matches!(err, ShmError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("for writing"), "{err}");
    assert!(s.try_view().is_err());
    assert!(s.try_as_slice().is_err());
    assert!(s.chunk(8..16).is_ok(), "the other half is free");
    assert!(
        s.axis_chunk(Axis(1), 2..4).is_ok(),
        "columns 2..4 are linear 8..16"
    );
    assert!(
        s.axis_chunk(Axis(0), 0..1).is_err(),
        "row 0 crosses linear 0..8"
    );
    let other = s.local_chunk_mut(2).unwrap();
    drop((w, other));
    let r1 = s.view();
    let r2 = s.as_slice();
    assert!(s.local_chunk_mut(2).is_err(), "readers exclude writers");
    drop((r1, r2));
    assert!(s.local_chunk_mut(2).is_ok());
    // Another SharedArray value of the same mapping shares the lease table.
    let clone = s.clone();
    let _w = s.local_chunk_mut(2).unwrap();
    assert!(clone.local_chunk_mut(2).is_err());
}

#[test]
#[should_panic(expected = "already borrowed for writing")]
fn view_panics_on_conflict_like_refcell() {
    let s = SharedArray::<u8, Ix1>::create(4, &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    let _w = s.local_chunk_mut(1).unwrap();
    let _ = s.view();
}

#[test]
fn construction_errors() {
    let e = SharedArray::<f64, Ix2>::create((usize::MAX / 2, 3), &[1], 1).unwrap_err();
    assert!(matches!(e, ShmError::TooLarge { .. }), "{e}");
    let e = SharedArray::<f64, Ix1>::create(usize::MAX / 8, &[1], 1).unwrap_err();
    assert!(
        matches!(e, ShmError::TooLarge { .. }),
        "bytes overflow: {e}"
    );
    let e = SharedArray::<u8, IxDyn>::create(IxDyn(&[1; MAX_DIMS + 1]), &[1], 1).unwrap_err();
    assert!(matches!(e, ShmError::TooManyDims { .. }), "{e}");
    let e = SharedArray::<u8, Ix1>::create(3, &[], 1).unwrap_err();
    assert!(matches!(e, ShmError::InvalidPids { .. }), "{e}");
    let e = SharedArray::<u8, Ix1>::create(3, &[1, 2, 1], 1).unwrap_err();
    assert!(matches!(e, ShmError::InvalidPids { .. }), "{e}");
    assert!(
        common::own_entries().iter().all(|n| !n.is_empty()),
        "listing works"
    );
}

#[test]
fn attach_errors() {
    let pending = SharedArray::<f64, Ix2>::create((3, 4), &[1, 2], 1).unwrap();
    let h = pending.handle().clone();

    let e = SharedArray::<f64, Ix2>::attach(&h, 7).unwrap_err();
    assert!(
        matches!(e, ShmError::NotInPids { pid: 7, ref pids } if pids == &[1, 2]),
        "{e}"
    );
    let e = SharedArray::<f32, Ix2>::attach(&h, 2).unwrap_err();
    assert!(matches!(e, ShmError::TypeMismatch { .. }), "{e}");
    assert!(e.to_string().contains("f64"), "{e}");
    let e = SharedArray::<u64, Ix2>::attach(&h, 2).unwrap_err();
    assert!(
        matches!(e, ShmError::TypeMismatch { .. }),
        "same size, other type: {e}"
    );
    let e = SharedArray::<f64, Ix3>::attach(&h, 2).unwrap_err();
    assert!(
        matches!(e, ShmError::DimensionalityMismatch { expected: 3, .. }),
        "{e}"
    );

    let elsewhere = tamper(&h, |m| m.host.hostname.push_str("-elsewhere"));
    let e = SharedArray::<f64, Ix2>::attach(&elsewhere, 2).unwrap_err();
    assert!(matches!(e, ShmError::WrongHost { .. }), "{e}");
    let rebooted = tamper(&h, |m| m.host.boot_id = "another-boot".into());
    assert!(matches!(
        SharedArray::<f64, Ix2>::attach(&rebooted, 2),
        Err(ShmError::WrongHost { .. })
    ));

    let reshaped = tamper(&h, |m| m.dims = vec![4, 3]);
    let e = SharedArray::<f64, Ix2>::attach(&reshaped, 2).unwrap_err();
    assert!(matches!(e, ShmError::ShapeMismatch { .. }), "{e}");

    let missing = tamper(&h, |m| {
        m.id.0 ^= 1;
        m.backing = Backing::Shm {
            creator: std::process::id(),
            fd: i32::MAX,
            dev: 0,
            ino: 0,
        };
    });
    let e = SharedArray::<f64, Ix2>::attach(&missing, 2).unwrap_err();
    assert!(
        matches!(&e, ShmError::Io { op, source, .. }
            if op.contains("descriptor is gone") && source.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
    // The right inode, opened through the creator's descriptor, but another segment id: the
    // header says no.
    let other_id = tamper(&h, |m| m.id.0 ^= 1);
    let e = SharedArray::<f64, Ix2>::attach(&other_id, 2).unwrap_err();
    assert!(matches!(e, ShmError::BadHeader { .. }), "{e}");
    // The creator's descriptor, but another inode than the handle's: refused before opening.
    let other_inode = tamper(&h, |m| {
        m.id.0 ^= 1;
        if let Backing::Shm { ino, .. } = &mut m.backing {
            *ino ^= 1;
        }
    });
    let e = SharedArray::<f64, Ix2>::attach(&other_inode, 2).unwrap_err();
    assert!(
        matches!(&e, ShmError::Io { op, .. } if op.contains("descriptor is gone")),
        "{e}"
    );
    let e = SharedArray::<f64, Ix2>::lookup(&missing).unwrap_err();
    assert!(matches!(e, ShmError::NotMapped { .. }), "{e}");

    // None of the failures pinned anything.
    drop(pending);
    assert!(!mapped_segments().contains(&h.id()));
}

#[test]
fn access_errors() {
    let s = SharedArray::<u8, Ix2>::create((2, 3), &[1], 1)
        .unwrap()
        .finish()
        .unwrap();
    assert!(matches!(s.chunk(4..7), Err(ShmError::OutOfBounds { .. })));
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 3..2;
    assert!(matches!(
        s.chunk(backwards),
        Err(ShmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        s.axis_chunk(Axis(2), 0..1),
        Err(ShmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        s.axis_chunk(Axis(1), 0..4),
        Err(ShmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        s.local_axis_chunk_mut(Axis(5), 1),
        Err(ShmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        s.prefault(0..7),
        Err(ShmError::OutOfBounds { .. })
    ));
    // SAFETY: single pid, closed to attachers.
    let past_end = unsafe { s.chunk_mut(5..9) };
    assert!(matches!(past_end, Err(ShmError::OutOfBounds { .. })));
    assert!(s.chunk(6..6).unwrap().is_empty());
}

#[test]
fn prefault_runs() {
    let s = SharedArray::<f64, Ix1>::create(1 << 20, &[1, 2], 1)
        .unwrap()
        .finish()
        .unwrap();
    s.prefault_local(1).unwrap();
    s.prefault_local(2).unwrap();
    s.prefault_local(9).unwrap(); // not a pid: nothing
    s.prefault(0..s.len()).unwrap();
    s.prefault(5..5).unwrap();
    assert!(
        s.view().view().iter().all(|&x| x == 0.0),
        "prefaulting does not change data"
    );
}

#[test]
fn prefault_axis_runs_and_checks_its_region() {
    let s = SharedArray::<f64, Ix3>::create((70, 50, 9), &[1, 2], 1)
        .unwrap()
        .finish()
        .unwrap();
    s.local_chunk_mut(1).unwrap().fill(1.5);
    for axis in 0..3 {
        let n = s.shape()[axis];
        s.prefault_axis(Axis(axis), 0..n).unwrap();
        s.prefault_axis(Axis(axis), n / 3..n / 2).unwrap();
        s.prefault_axis(Axis(axis), n..n).unwrap();
        s.prefault_axis(Axis(axis), s.myrange(Axis(axis), 2))
            .unwrap();
    }
    assert!(matches!(
        s.prefault_axis(Axis(3), 0..1),
        Err(ShmError::OutOfBounds { .. })
    ));
    assert!(matches!(
        s.prefault_axis(Axis(1), 10..51),
        Err(ShmError::OutOfBounds { .. })
    ));
    let half = s.localindices(1).end;
    let data = s.as_slice();
    assert!(data[..half].iter().all(|&x| x == 1.5) && data[half..].iter().all(|&x| x == 0.0));
}

#[test]
fn handles_and_arrays_serialize() {
    let pending = SharedArray::<i16, Ix2>::create((2, 2), &[1, 2], 1).unwrap();
    let h = pending.handle();
    let bytes = cohort_core::codec::encode_vec(h).unwrap();
    let back: cohort_shm::ShmHandle = cohort_core::codec::decode(&bytes).unwrap();
    assert_eq!(&back, h);
    assert_eq!(back.dims(), &[2, 2]);
    assert_eq!(back.pids(), &[1, 2]);
    assert_eq!(back.elem().type_name, "i16");
    assert!(!back.read_only());
    let s = pending.finish().unwrap();
    s.local_chunk_mut(1).unwrap().fill(-3);
    // A SharedArray travels as its handle and comes back as this process's mapping.
    let bytes = cohort_core::codec::encode_vec(&s).unwrap();
    let t: SharedArray<i16, Ix2> = cohort_core::codec::decode(&bytes).unwrap();
    assert_eq!(t.view()[[1, 0]], -3);
    assert!(format!("{t:?}").contains("i16"));
    let u: SharedArray<i16, Ix2> = cohort_core::codec::decode(&bytes).unwrap();
    assert_eq!(u.view()[[1, 0]], -3);
    // Bytes cut short are a decoding error, not a panic, and the array still arrives whole.
    let cut = cohort_core::codec::decode::<SharedArray<i16, Ix2>>(&bytes[..bytes.len() - 1]);
    assert!(cut.is_err());
    assert_eq!(
        cohort_core::codec::decode::<SharedArray<i16, Ix2>>(&bytes)
            .unwrap()
            .view()[[1, 0]],
        -3
    );
    drop((s, t, u));
    // Bytes that arrived before name nothing once this process no longer maps the segment.
    let e = cohort_core::codec::decode::<SharedArray<i16, Ix2>>(&bytes).unwrap_err();
    assert!(e.to_string().contains("not mapped"), "{e}");
}

/// An array is encoded exactly as its handle (without building one), and on arrival the array
/// a process maps comes back equal in everything; any field that fails a check of `lookup`
/// gives `lookup`'s error, whatever path the decoding took.
#[test]
fn an_array_travels_as_its_handle_and_is_checked_as_lookup_checks() {
    use cohort_core::codec::{decode, encode_vec};
    let s = SharedArray::<f32, Ix2>::create((4, 3), &[1, 2, 5], 1)
        .unwrap()
        .finish()
        .unwrap();
    let r = s.reshape((2, 6)).unwrap();
    for (bytes, h) in [
        (encode_vec(&s).unwrap(), s.handle()),
        (encode_vec(&r).unwrap(), r.handle()),
    ] {
        assert_eq!(bytes, encode_vec(&h).unwrap());
    }
    let back: SharedArray<f32, Ix2> = decode(&encode_vec(&r).unwrap()).unwrap();
    assert_eq!(back.handle(), r.handle());
    assert_eq!((back.shape(), back.pids()), (&[2, 6][..], &[1, 2, 5][..]));
    // The same bytes again (found without decoding them), and an arrived array sent on: the
    // same array, the same bytes.
    let again: SharedArray<f32, Ix2> = decode(&encode_vec(&r).unwrap()).unwrap();
    assert_eq!(again.handle(), r.handle());
    assert_eq!(encode_vec(&again).unwrap(), encode_vec(&r).unwrap());
    assert_eq!(encode_vec(&back.clone()).unwrap(), encode_vec(&r).unwrap());
    drop(again);
    let h = s.handle();
    let bad = [
        tamper(&h, |m| m.pids = vec![1, 2, 1]),
        tamper(&h, |m| m.pids = vec![]),
        tamper(&h, |m| m.host.boot_id.push('x')),
        tamper(&h, |m| m.elem.type_name = "i32".into()),
        tamper(&h, |m| m.elem.align = 8),
        tamper(&h, |m| m.dims = vec![3, 4]),
        tamper(&h, |m| m.shape = vec![5, 2]),
        tamper(&h, |m| m.id.0 ^= 1),
    ];
    for b in &bad {
        let looked = SharedArray::<f32, Ix2>::lookup(b).unwrap_err().to_string();
        let arrived = decode::<SharedArray<f32, Ix2>>(&encode_vec(b).unwrap())
            .unwrap_err()
            .to_string();
        assert!(arrived.contains(&looked), "{arrived} / {looked}");
    }
    // Another element type or number of dimensions than the receiver's.
    let bytes = encode_vec(&s).unwrap();
    let e = decode::<SharedArray<f64, Ix2>>(&bytes)
        .unwrap_err()
        .to_string();
    assert!(e.contains("f32") && e.contains("f64"), "{e}");
    let e = decode::<SharedArray<f32, Ix3>>(&bytes)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&SharedArray::<f32, Ix3>::lookup(&h).unwrap_err().to_string()),
        "{e}"
    );
    drop((s, r, back));
    assert!(!mapped_segments().contains(&h.id()));
}

#[test]
fn send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SharedArray<f64, Ix2>>();
    assert_send_sync::<cohort_shm::PendingArray<u8, IxDyn>>();
    assert_send_sync::<cohort_shm::ShmHandle>();
    assert_send_sync::<cohort_shm::SharedView<'static, f64, Ix2>>();
    assert_send_sync::<cohort_shm::SharedSliceMut<'static, f64>>();
    assert_send_sync::<ShmError>();

    // And it really works from threads: each thread writes a disjoint chunk.
    let s = SharedArray::<u64, Ix1>::create(1000, &[1, 2, 3, 4], 1)
        .unwrap()
        .finish()
        .unwrap();
    std::thread::scope(|scope| {
        for p in 1..=4 {
            let s = &s;
            scope.spawn(move || s.local_chunk_mut(p).unwrap().fill(p as u64));
        }
    });
    let v = s.as_slice();
    assert!((1..=4).all(|p| s.localindices(p).all(|k| v[k] == p as u64)));
}
