//! Raw file mappings (Julia's file-backed `SharedArray`): elements at a byte offset of a plain
//! file, no header, in the modes "r", "r+", "w+", "a+".

mod common;
#[path = "common/raw_sample.rs"]
mod raw_sample;

use std::path::{Path, PathBuf};

use cohort_shm::ndarray::{arr2, Ix1, Ix2};
use cohort_shm::{mapped_segments, Backing, RawMode, SharedArray, ShmError};
use common::tamper;
use raw_sample::{f64_bytes, write_sample, PREFIX, SUFFIX, VALUES};

fn dir_and(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

fn invalid_argument(e: &ShmError, words: &[&str]) {
    assert!(matches!(e, ShmError::Argument { .. }), "{e:?}");
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "{text:?} lacks {w:?}");
    }
}

#[test]
fn reads_a_file_written_by_std_fs_and_writes_through_to_it() {
    let (_dir, path) = dir_and("sample.bin");
    write_sample(&path);
    {
        let s = SharedArray::<f64, Ix2>::open_raw_file(
            &path,
            (3, 2),
            16,
            Some(RawMode::ReadWrite),
            &[1],
        )
        .unwrap();
        assert_eq!(s.as_slice().to_vec(), VALUES);
        // Column-major, as Julia: element [i, j] is linear i + 3 j.
        assert_eq!(s.view()[[2, 0]], 3.25);
        assert_eq!(s.view()[[0, 1]], 4.0);
        assert!(!s.is_read_only());
        match s.backing() {
            Backing::RawFile {
                path: p, offset, ..
            } => assert_eq!((p.as_path(), *offset), (path.as_path(), 16)),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.handle().backing(), s.backing());
        assert!(s.backing().to_string().contains("sample.bin"));
        s.local_chunk_mut(1)
            .unwrap()
            .iter_mut()
            .enumerate()
            .for_each(|(k, x)| *x = k as f64 - 1.0);
        s.flush().unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 16 + 48 + 8, "not grown");
    assert_eq!(bytes[..16], PREFIX);
    assert_eq!(bytes[16..64], f64_bytes(&[-1.0, 0.0, 1.0, 2.0, 3.0, 4.0]));
    assert_eq!(bytes[64..], SUFFIX);
}

#[test]
fn an_offset_past_a_page_boundary() {
    let (_dir, path) = dir_and("far.bin");
    let mut bytes = vec![7u8; 5000];
    bytes.extend(f64_bytes(&VALUES));
    bytes.extend([9u8; 3000]);
    std::fs::write(&path, &bytes).unwrap();
    let s = SharedArray::<f64, Ix1>::open_raw_file(&path, 6, 5000, None, &[1, 2]).unwrap();
    assert_eq!(s.as_slice().to_vec(), VALUES);
    s.prefault(0..6).unwrap();
    s.prefault_local(2).unwrap();
    s.local_chunk_mut(2).unwrap().fill(0.5);
    drop(s);
    let after = std::fs::read(&path).unwrap();
    assert_eq!(after.len(), bytes.len());
    assert_eq!(after[..5000], bytes[..5000]);
    assert_eq!(
        after[5000..5048],
        f64_bytes(&[1.5, -2.0, 3.25, 0.5, 0.5, 0.5])
    );
    assert_eq!(after[5048..], bytes[5048..]);
}

#[test]
fn create_truncates_and_zero_fills() {
    let (_dir, path) = dir_and("w.bin");
    std::fs::write(&path, [0xffu8; 100]).unwrap();
    let s =
        SharedArray::<f64, Ix1>::open_raw_file(&path, 4, 16, Some(RawMode::Create), &[1]).unwrap();
    assert_eq!(s.as_slice().to_vec(), [0.0; 4]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 + 4 * 8);
    s.local_chunk_mut(1)
        .unwrap()
        .copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
    drop(s);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[..16], [0u8; 16], "the prefix is zero after w+");
    assert_eq!(bytes[16..], f64_bytes(&[1.0, 2.0, 3.0, 4.0]));
    // A missing file is created.
    let (_dir2, fresh) = dir_and("fresh.bin");
    let s = SharedArray::<u32, Ix2>::open_raw_file(&fresh, (2, 3), 8, Some(RawMode::Create), &[1])
        .unwrap();
    assert_eq!(s.as_slice().to_vec(), [0; 6]);
    assert_eq!(std::fs::read(&fresh).unwrap(), [0u8; 8 + 24]);
}

#[test]
fn append_creates_a_missing_file_and_grows_a_short_one() {
    let (_dir, path) = dir_and("a.bin");
    let s =
        SharedArray::<u16, Ix1>::open_raw_file(&path, 5, 6, Some(RawMode::Append), &[1]).unwrap();
    assert_eq!(s.as_slice().to_vec(), [0; 5]);
    assert_eq!(std::fs::read(&path).unwrap(), [0u8; 16]);
    drop(s);

    let (_dir2, short) = dir_and("short.bin");
    let old: Vec<u8> = (1..=20).collect();
    std::fs::write(&short, &old).unwrap();
    let s =
        SharedArray::<u32, Ix1>::open_raw_file(&short, 8, 8, Some(RawMode::Append), &[1]).unwrap();
    let word = |k: usize| u32::from_ne_bytes(old[k..k + 4].try_into().unwrap());
    assert_eq!(
        s.as_slice().to_vec(),
        [word(8), word(12), word(16), 0, 0, 0, 0, 0]
    );
    drop(s);
    let bytes = std::fs::read(&short).unwrap();
    assert_eq!(bytes.len(), 8 + 32);
    assert_eq!(bytes[..20], old[..], "old bytes kept");
    assert_eq!(bytes[20..], [0u8; 20], "grown bytes are zero");
}

#[test]
fn read_write_grows_a_short_file_and_default_mode_picks_r_plus_or_w_plus() {
    let (_dir, path) = dir_and("rw.bin");
    std::fs::write(&path, [3u8, 1, 4, 1]).unwrap();
    let s = SharedArray::<u64, Ix1>::open_raw_file(&path, 2, 16, Some(RawMode::ReadWrite), &[1])
        .unwrap();
    assert_eq!(s.as_slice().to_vec(), [0, 0]);
    drop(s);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(bytes[..4], [3, 1, 4, 1]);
    assert_eq!(bytes[4..], [0u8; 28]);

    // Default: "r+" for an existing file (nothing truncated) ...
    assert_eq!(RawMode::default_for(&path), RawMode::ReadWrite);
    std::fs::write(&path, f64_bytes(&VALUES)).unwrap();
    let s = SharedArray::<f64, Ix1>::open_raw_file(&path, 3, 24, None, &[1]).unwrap();
    assert!(!s.is_read_only());
    assert_eq!(s.as_slice().to_vec(), VALUES[3..]);
    drop(s);
    assert_eq!(std::fs::read(&path).unwrap(), f64_bytes(&VALUES));
    // ... "w+" for a missing one (created) or a directory.
    let missing = path.with_file_name("missing.bin");
    assert_eq!(RawMode::default_for(&missing), RawMode::Create);
    assert_eq!(
        RawMode::default_for(path.parent().unwrap()),
        RawMode::Create
    );
    let s = SharedArray::<f64, Ix1>::open_raw_file(&missing, 3, 8, None, &[1]).unwrap();
    assert_eq!(s.as_slice().to_vec(), [0.0; 3]);
    assert_eq!(std::fs::metadata(&missing).unwrap().len(), 32);
}

#[test]
fn mode_strings_are_julias() {
    for (text, mode) in [
        ("r", RawMode::ReadOnly),
        ("r+", RawMode::ReadWrite),
        ("w+", RawMode::Create),
        ("a+", RawMode::Append),
    ] {
        assert_eq!(text.parse::<RawMode>().unwrap(), mode);
        assert_eq!((mode.as_julia(), mode.to_string()), (text, text.to_owned()));
        assert_eq!(mode.is_writable(), text != "r");
    }
    for bad in ["w", "a", "rw", ""] {
        let e = bad.parse::<RawMode>().unwrap_err();
        invalid_argument(&e, &["mode must be one of", &format!("{bad:?} is not")]);
    }
}

#[test]
fn argument_errors() {
    let (dir, path) = dir_and("e.bin");
    write_sample(&path);
    // A relative path.
    let e = SharedArray::<f64, Ix1>::open_raw_file("rel.bin", 2, 0, Some(RawMode::Create), &[1])
        .unwrap_err();
    invalid_argument(&e, &["rel.bin is not an absolute path"]);
    assert!(!Path::new("rel.bin").exists());
    // "r" of a missing file.
    let missing = dir.path().join("none.bin");
    let e = SharedArray::<f64, Ix1>::open_raw_file(&missing, 2, 0, Some(RawMode::ReadOnly), &[1])
        .unwrap_err();
    invalid_argument(
        &e,
        &["none.bin does not exist", "mode \"r\" cannot create it"],
    );
    // "r+" of a missing file: the system's error, as Julia's SystemError.
    let e = SharedArray::<f64, Ix1>::open_raw_file(&missing, 2, 0, Some(RawMode::ReadWrite), &[1])
        .unwrap_err();
    assert!(
        matches!(&e, ShmError::Io { op: "open", source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(!missing.exists(), "neither mode created it");
    // A misaligned offset.
    let e = SharedArray::<f64, Ix1>::open_raw_file(&path, 2, 12, None, &[1]).unwrap_err();
    invalid_argument(&e, &["offset 12 is not a multiple of 8", "f64"]);
    // Not a regular file.
    let e = SharedArray::<u8, Ix1>::open_raw_file(dir.path(), 2, 0, Some(RawMode::ReadOnly), &[1])
        .unwrap_err();
    invalid_argument(&e, &["is not a regular file"]);
    // "r" of a file too short: the file, the size needed and the size found.
    let e = SharedArray::<f64, Ix1>::open_raw_file(&path, 8, 16, Some(RawMode::ReadOnly), &[1])
        .unwrap_err();
    match &e {
        ShmError::FileTooShort {
            object: Backing::RawFile { path: p, .. },
            needed,
            found,
        } => assert_eq!((p, *needed, *found), (&path, 16 + 64, 72)),
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("e.bin") && text.contains("72 bytes") && text.contains("80"),
        "{text}"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 72, "not grown");
    // Bad pids, as for every array.
    let e = SharedArray::<f64, Ix1>::open_raw_file(&path, 2, 16, None, &[]).unwrap_err();
    assert!(matches!(e, ShmError::InvalidPids { .. }), "{e:?}");
}

#[test]
fn read_only_refuses_mutable_access() {
    let (_dir, path) = dir_and("ro.bin");
    write_sample(&path);
    let r = SharedArray::<f64, Ix1>::open_raw_file(&path, 6, 16, Some(RawMode::ReadOnly), &[1])
        .unwrap();
    assert!(r.is_read_only() && r.handle().read_only());
    assert_eq!(r.as_slice().to_vec(), VALUES);
    let e = r.local_chunk_mut(1).unwrap_err();
    assert!(matches!(e, ShmError::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("ro.bin"), "{e}");
    // SAFETY: nobody else maps this file.
    let all = unsafe { r.as_mut_slice() };
    assert!(matches!(all, Err(ShmError::ReadOnly { .. })));
    drop(all);
    r.flush().unwrap();
    // A writable open of the same range shares the borrows and the memory; the read-only
    // array stays read-only.
    let w = SharedArray::<f64, Ix1>::open_raw_file(&path, 6, 16, Some(RawMode::ReadWrite), &[1])
        .unwrap();
    let reading = r.view();
    assert!(matches!(w.local_chunk_mut(1), Err(ShmError::Busy { .. })));
    drop(reading);
    w.local_chunk_mut(1).unwrap().fill(8.0);
    assert_eq!(r.as_slice().to_vec(), [8.0; 6]);
    assert!(r.local_chunk_mut(1).is_err());
}

#[test]
fn one_mapping_per_range_and_no_overlaps() {
    let (_dir, path) = dir_and("ranges.bin");
    std::fs::write(&path, vec![0u8; 128]).unwrap();
    let open = |offset: u64, len: usize| {
        SharedArray::<f64, Ix1>::open_raw_file(&path, len, offset, None, &[1])
    };
    let a = open(0, 4).unwrap(); // bytes 0..32
    let b = open(32, 4).unwrap(); // bytes 32..64: beside it
    let c = open(96, 4).unwrap(); // bytes 96..128
    assert_ne!(a.id(), b.id());
    a.local_chunk_mut(1).unwrap().fill(1.0);
    b.local_chunk_mut(1).unwrap().fill(2.0);
    c.local_chunk_mut(1).unwrap().fill(3.0);
    assert_eq!(a.as_slice().to_vec(), [1.0; 4]);
    assert_eq!(b.as_slice().to_vec(), [2.0; 4]);

    // The same range again: the same mapping (one id, shared memory and borrows).
    let a2 = open(0, 4).unwrap();
    assert_eq!(a2.id(), a.id());
    assert!(mapped_segments().contains(&a.id()));
    a2.local_chunk_mut(1).unwrap()[3] = 7.5;
    assert_eq!(
        a.as_slice()[3],
        7.5,
        "a write through one is seen through the other"
    );
    let held = a.view();
    assert!(matches!(a2.local_chunk_mut(1), Err(ShmError::Busy { .. })));
    drop(held);

    // Overlapping ranges are refused, naming both.
    for (offset, len) in [(16, 4), (8, 1), (24, 2), (0, 5), (0, 16)] {
        let e = open(offset, len).unwrap_err();
        assert!(
            matches!(e, ShmError::Overlapping { .. }),
            "{offset} {len}: {e:?}"
        );
        let text = e.to_string();
        assert!(text.contains("ranges.bin"), "{text}");
        assert!(
            text.contains("bytes 0..32") || text.contains("bytes 32..64"),
            "{text}"
        );
    }
    // The same range as another element type or dims.
    let e = SharedArray::<u64, Ix1>::open_raw_file(&path, 4, 0, None, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::TypeMismatch { .. }), "{e:?}");
    let e = SharedArray::<f64, Ix2>::open_raw_file(&path, (2, 2), 0, None, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::ShapeMismatch { .. }), "{e:?}");
    // An empty range overlaps nothing.
    let empty = open(16, 0).unwrap();
    assert!(empty.is_empty());
    // "w+" would truncate mapped memory.
    let e = SharedArray::<f64, Ix1>::open_raw_file(&path, 1, 64, Some(RawMode::Create), &[1])
        .unwrap_err();
    assert!(matches!(e, ShmError::Unsupported { .. }), "{e:?}");
    assert!(e.to_string().contains("w+"), "{e}");
    // The whole file with cohort's header neither.
    let e = SharedArray::<u8, Ix1>::open_file(&path, 16, false, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::Overlapping { .. }), "{e:?}");
    let e = SharedArray::<u8, Ix1>::create_file(&path, 16, &[1]).unwrap_err();
    assert!(matches!(e, ShmError::Unsupported { .. }), "{e:?}");

    // Once the ranges are gone, an overlapping one maps.
    drop((a, a2, b, empty));
    let d = open(16, 4).unwrap();
    assert_eq!(d.as_slice().to_vec(), [1.0, 7.5, 2.0, 2.0]);
    drop((c, d));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes[64..96], [0u8; 32], "unmapped bytes untouched");
}

#[test]
fn header_files_and_raw_mappings_do_not_alias() {
    let (_dir, path) = dir_and("header.bin");
    let h = SharedArray::<f64, Ix1>::create_file(&path, 4, &[1]).unwrap();
    // The data of a header file starts at 4096; even that exact range is refused.
    for offset in [0, 4096] {
        let e = SharedArray::<f64, Ix1>::open_raw_file(&path, 4, offset, None, &[1]).unwrap_err();
        assert!(matches!(e, ShmError::Overlapping { .. }), "{e:?}");
        assert!(e.to_string().contains("the whole file"), "{e}");
    }
    h.local_chunk_mut(1).unwrap().fill(2.5);
    drop(h);
    // Unmapped, its data reads raw at 4096.
    let r = SharedArray::<f64, Ix1>::open_raw_file(&path, 4, 4096, Some(RawMode::ReadOnly), &[1])
        .unwrap();
    assert_eq!(r.as_slice().to_vec(), [2.5; 4]);
}

#[test]
fn handles_attach_the_same_range() {
    let (_dir, path) = dir_and("h.bin");
    write_sample(&path);
    let s = SharedArray::<f64, Ix2>::open_raw_file(&path, (3, 2), 16, None, &[1, 2]).unwrap();
    let h = s.handle();
    // Another pid of this process attaches: the same mapping.
    let w = SharedArray::<f64, Ix2>::attach(&h, 2).unwrap();
    assert_eq!(w.id(), s.id());
    w.local_chunk_mut(2).unwrap().fill(0.0);
    assert_eq!(s.as_slice().to_vec(), [1.5, -2.0, 3.25, 0.0, 0.0, 0.0]);
    assert_eq!(
        SharedArray::<f64, Ix2>::lookup(&h)
            .unwrap()
            .view()
            .view()
            .to_owned(),
        arr2(&[[1.5, 0.0], [-2.0, 0.0], [3.25, 0.0]])
    );
    // A handle naming another inode is refused: the path is not the creator's file.
    let other = tamper(&h, |m| {
        if let Backing::RawFile { ino, .. } = &mut m.backing {
            *ino ^= 1;
        }
    });
    let e = SharedArray::<f64, Ix2>::attach(&other, 2).unwrap_err();
    assert!(
        matches!(&e, ShmError::Io { op, .. } if op.contains("another file than the creator's")),
        "{e:?}"
    );
    cohort_shm::release(h.id());
    drop((s, w));
    assert!(matches!(
        SharedArray::<f64, Ix2>::lookup(&h),
        Err(ShmError::NotMapped { .. })
    ));
    // Reattaching maps it again.
    let again = SharedArray::<f64, Ix2>::attach(&h, 1).unwrap();
    assert_eq!(again.view()[[2, 0]], 3.25);
    assert!(common::attachable(&h));
    cohort_shm::release(h.id());
}

#[test]
fn arrays_without_bytes_touch_nothing() {
    let (_dir, path) = dir_and("empty.bin");
    // "a+" creates the file but, as Julia's mmap, grows nothing for an empty array.
    let s =
        SharedArray::<f64, Ix2>::open_raw_file(&path, (3, 0), 64, Some(RawMode::Append), &[1, 2])
            .unwrap();
    assert_eq!((s.len(), s.localindices(2)), (0, 0..0));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    drop(s);
    // "r" of an empty file, for an empty array: no size is needed.
    let r =
        SharedArray::<f64, Ix1>::open_raw_file(&path, 0, 8, Some(RawMode::ReadOnly), &[1]).unwrap();
    assert_eq!(r.as_slice().to_vec(), Vec::<f64>::new());
    let z =
        SharedArray::<(), Ix1>::open_raw_file(&path, 5, 0, Some(RawMode::ReadOnly), &[1]).unwrap();
    assert_eq!(z.len(), 5);
}
