//! Tests that compare what this process has in /dev/shm (names, descriptors) before and after:
//! 1,000 create/drop cycles, and a construction that fails for lack of space. They live in
//! their own test binary (= their own process) and take a lock, so no other test creates
//! segments meanwhile.

mod common;

use cohort_shm::ndarray::{Ix1, Ix2};
use std::sync::Mutex;

use cohort_shm::{mapped_segments, release, Backing, SharedArray, ShmError};

static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn thousand_create_drop_cycles_leave_dev_shm_unchanged() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = common::own_entries();
    for i in 0..1000usize {
        match i % 4 {
            // Single pid: closed to attachers at construction.
            0 => drop(
                SharedArray::<f64, Ix2>::create((8, 8), &[1], 1)
                    .unwrap()
                    .finish()
                    .unwrap(),
            ),
            // Several pids, all attached: finish closes.
            1 => {
                let pending = SharedArray::<u32, Ix1>::create(1000, &[1, 2, 3], 1).unwrap();
                let h = pending.handle().clone();
                h.attach(2).unwrap();
                let s = pending.finish().unwrap();
                s.local_chunk_mut(1).unwrap().fill(i as u32);
                release(h.id());
            }
            // An attach "failed": the pending array is dropped, which closes.
            2 => drop(SharedArray::<u8, Ix1>::create(4096 * 3, &[1, 2], 1).unwrap()),
            _ => {
                // A construction that fails before anything was created.
                let e = SharedArray::<u8, Ix2>::create((usize::MAX, 3), &[1, 2], 1).unwrap_err();
                assert!(matches!(e, ShmError::TooLarge { .. }), "{e}");
                // An empty array: a header-only segment, with the same lifecycle.
                let pending = SharedArray::<u8, Ix2>::create((0, 3), &[1, 2], 1).unwrap();
                pending.handle().attach(2).unwrap();
                let s = pending.finish().unwrap();
                assert!(release(s.id()));
            }
        }
    }
    assert_eq!(
        common::own_entries(),
        before,
        "a cycle left a /dev/shm entry"
    );
    assert!(mapped_segments().is_empty(), "a cycle left a mapping");
}

#[test]
fn no_space_is_an_error_at_construction() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let st = nix::sys::statvfs::statvfs("/dev/shm").unwrap();
    let total = st.blocks() as u64 * st.fragment_size() as u64;
    if total == 0 {
        eprintln!("/dev/shm has no size limit; skipping");
        return;
    }
    // More than the whole tmpfs: the kernel refuses it up front (no pages are allocated).
    let elems = (total / 8 + (1 << 27)) as usize;
    let before = common::own_entries();
    let e = SharedArray::<f64, Ix1>::create(elems, &[1, 2], 1).unwrap_err();
    match &e {
        ShmError::NoSpace {
            bytes,
            object: Backing::Shm { .. },
        } => assert!(*bytes > total),
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(e.to_string().contains("df -h /dev/shm"), "{e}");
    assert_eq!(
        common::own_entries().difference(&before).count(),
        0,
        "failed create leaves nothing"
    );
}
