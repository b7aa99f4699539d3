//! File-backed arrays.

use std::io::Write;

use cohort_shm::ndarray::{Axis, Ix1, Ix2, Ix3};
use cohort_shm::{Backing, SharedArray, ShmError};

#[test]
fn persists_across_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.bin");
    {
        let s = SharedArray::<f64, Ix2>::create_file(&path, (3, 4), &[1]).unwrap();
        assert!(matches!(s.backing(), Backing::File { .. }));
        s.local_chunk_mut(1)
            .unwrap()
            .iter_mut()
            .enumerate()
            .for_each(|(k, x)| *x = k as f64);
        s.unlink().unwrap(); // no effect on files
        s.flush().unwrap();
    }
    assert!(path.exists());
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096 + 12 * 8);
    let r = SharedArray::<f64, Ix2>::open_file(&path, (3, 4), false, &[1, 2]).unwrap();
    assert_eq!(r.view()[[2, 3]], 11.0);
    assert_eq!(r.pids(), &[1, 2]);
    r.local_chunk_mut(2).unwrap().fill(-1.0);
    drop(r);
    let again = SharedArray::<f64, Ix2>::open_file(&path, (3, 4), true, &[1]).unwrap();
    assert_eq!(again.as_slice()[6..], [-1.0; 6]);
    assert_eq!(again.as_slice()[..6], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn read_only_refuses_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.bin");
    drop(SharedArray::<u32, Ix1>::create_file(&path, 10, &[1]).unwrap());
    let r = SharedArray::<u32, Ix1>::open_file(&path, 10, true, &[1]).unwrap();
    assert!(r.is_read_only());
    assert!(r.handle().read_only());
    let e = r.local_chunk_mut(1).unwrap_err();
    assert!(matches!(e, ShmError::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("ro.bin"), "{e}");
    assert!(matches!(
        r.local_axis_chunk_mut(Axis(0), 1),
        Err(ShmError::ReadOnly { .. })
    ));
    // SAFETY: nobody else maps this file.
    let whole = unsafe { r.view_mut() };
    assert!(matches!(whole, Err(ShmError::ReadOnly { .. })));
    // SAFETY: as above.
    let flat = unsafe { r.as_mut_slice() };
    assert!(matches!(flat, Err(ShmError::ReadOnly { .. })));
    drop((whole, flat));
    r.prefault(0..10).unwrap();
    r.flush().unwrap();
    assert_eq!(r.view().view().sum(), 0);

    // A file without write permission opens read-only (unless we are root, who may write).
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&path, perms).unwrap();
    drop(r);
    let r = SharedArray::<u32, Ix1>::open_file(&path, 10, true, &[1]).unwrap();
    assert_eq!(r.len(), 10);
}

#[test]
fn read_only_then_writable_in_one_process_share_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed.bin");
    drop(SharedArray::<u8, Ix1>::create_file(&path, 64, &[1]).unwrap());
    let ro = SharedArray::<u8, Ix1>::open_file(&path, 64, true, &[1]).unwrap();
    let rw = SharedArray::<u8, Ix1>::open_file(&path, 64, false, &[1]).unwrap();
    let reading = ro.view();
    assert!(
        matches!(rw.local_chunk_mut(1), Err(ShmError::Busy { .. })),
        "one lease table"
    );
    drop(reading);
    rw.local_chunk_mut(1).unwrap().fill(7);
    assert_eq!(ro.as_slice()[63], 7, "both mappings see the same file");
    // A second read-only open reuses the writable mapping but stays read-only itself.
    let ro2 = SharedArray::<u8, Ix1>::open_file(&path, 64, true, &[1]).unwrap();
    assert!(ro2.is_read_only());
    assert!(ro2.local_chunk_mut(1).is_err());
}

#[test]
fn wrong_size_type_shape_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.bin");
    drop(SharedArray::<f32, Ix2>::create_file(&path, (4, 6), &[1]).unwrap());

    let e = SharedArray::<f32, Ix2>::open_file(&path, (4, 7), false, &[1]).unwrap_err();
    match &e {
        ShmError::SizeMismatch {
            object: Backing::File { path: p },
            expected,
            found,
        } => {
            assert_eq!(p, &path);
            assert_eq!((*expected, *found), (4096 + 4 * 7 * 4, 4096 + 4 * 6 * 4));
        }
        other => panic!("expected SizeMismatch, got {other}"),
    }
    assert!(e.to_string().contains("a.bin"), "{e}");
    let e = SharedArray::<f32, Ix2>::open_file(&path, (6, 4), false, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::ShapeMismatch { .. }), "{e}");
    let e = SharedArray::<u32, Ix2>::open_file(&path, (4, 6), false, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::TypeMismatch { .. }), "{e}");
    let e = SharedArray::<f32, Ix3>::open_file(&path, (4, 6, 1), false, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::ShapeMismatch { .. }), "{e}");

    // The right size but no header.
    let raw = dir.path().join("raw.bin");
    std::fs::File::create(&raw)
        .unwrap()
        .write_all(&vec![0u8; 4096 + 4 * 6 * 4])
        .unwrap();
    let e = SharedArray::<f32, Ix2>::open_file(&raw, (4, 6), true, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::BadHeader { .. }), "{e}");
    assert!(e.to_string().contains("magic"), "{e}");

    let missing = dir.path().join("missing.bin");
    let e = SharedArray::<f32, Ix2>::open_file(&missing, (4, 6), true, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::Io { op: "open", .. }), "{e}");
}

#[test]
fn recreating_a_mapped_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.bin");
    let s = SharedArray::<u8, Ix1>::create_file(&path, 8, &[1]).unwrap();
    let e = SharedArray::<u8, Ix1>::create_file(&path, 8, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::Unsupported { .. }), "{e}");
    drop(s);
    SharedArray::<u8, Ix1>::create_file(&path, 8, &[1]).unwrap();
}

#[test]
fn file_handles_attach_and_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.bin");
    let s = SharedArray::<i32, Ix1>::create_file(&path, 6, &[1, 2]).unwrap();
    let h = s.handle();
    let w = SharedArray::<i32, Ix1>::attach(&h, 2).unwrap();
    w.local_chunk_mut(2).unwrap().fill(9);
    assert_eq!(s.as_slice().to_vec(), [0, 0, 0, 9, 9, 9]);
    assert_eq!(SharedArray::<i32, Ix1>::lookup(&h).unwrap().id(), s.id());
    cohort_shm::release(h.id());
    drop((s, w));
    assert!(matches!(
        SharedArray::<i32, Ix1>::lookup(&h),
        Err(ShmError::NotMapped { .. })
    ));
    // Reattaching maps the file again (files have no name to unlink).
    let again = SharedArray::<i32, Ix1>::attach(&h, 1).unwrap();
    assert_eq!(again.as_slice()[5], 9);
    cohort_shm::release(h.id());
}

#[test]
fn concurrent_opens_share_one_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("race.bin");
    drop(SharedArray::<u64, Ix1>::create_file(&path, 512, &[1]).unwrap());
    let barrier = std::sync::Barrier::new(8);
    let arrays: Vec<SharedArray<u64, Ix1>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    SharedArray::<u64, Ix1>::open_file(&path, 512, false, &[1]).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One lease table for all: a write lease through one excludes every other.
    let w = arrays[0].local_chunk_mut(1).unwrap();
    assert!(arrays[1..].iter().all(|a| a.try_view().is_err()));
    drop(w);
}
