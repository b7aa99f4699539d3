//! How to fault in a fresh shared segment fastest: measures, per GiB of freshly
//! `posix_fallocate`d shared memory, the cost of
//!
//! * `none`: no prefault, the first kernel pass takes the page faults;
//! * `touch`: write one byte per 4 KiB page (read it and write it back);
//! * `map_populate`: `mmap(MAP_POPULATE)`;
//! * `populate_write`: `madvise(MADV_POPULATE_WRITE)`, what `SharedArray::prefault` uses;
//!
//! each followed by one `x += 1` pass over the f64s, then the same for a second mapping of the
//! same (now allocated) memory, as another pid would see it.
//!
//! Run: `cargo run --release -p cohort-shm --example prefault [MiB] [rounds]`.
//!
//! On the 2-vCPU development VM (1 GiB, medians of 7 rounds), in ms,
//! "prefault + first pass | second mapping's prefault + pass":
//!
//! | how | fresh pages | already allocated |
//! |---|---|---|
//! | none | 0 + 520 | 0 + 150 |
//! | touch | 515 + 116 | 45 + 118 |
//! | map_populate | 370 + 116 | 37 + 125 |
//! | populate_write | 245 + 114 | 97 + 115 |
//!
//! Fresh pages dominate, and MADV_POPULATE_WRITE is fastest for them (it also touches no data,
//! so it cannot race with writers): `SharedArray::prefault` uses it, and each pid prefaults only
//! its own share.

use std::time::Instant;

use cohort_shm::ndarray::Ix1;
use cohort_shm::{Backing, SharedArray};
use memmap2::{Advice, MmapOptions, MmapRaw};

/// One `x += 1` pass over `n` f64s at `ptr`; ms.
fn pass(ptr: *mut f64, n: usize) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        // SAFETY: `ptr` points to `n` mapped f64s that only this thread accesses meanwhile.
        unsafe { *ptr.add(i) += 1.0 };
    }
    t.elapsed().as_secs_f64() * 1e3
}

/// Map the segment at `path` with strategy `how`; returns the map and the ms spent prefaulting.
fn map(path: &str, len: usize, how: &str) -> (MmapRaw, f64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the segment");
    let t = Instant::now();
    let mut opts = MmapOptions::new();
    opts.len(len);
    if how == "map_populate" {
        opts.populate();
    }
    let m = opts.map_raw(&file).expect("mmap");
    match how {
        "touch" => {
            let p = m.as_mut_ptr();
            for off in (0..len).step_by(4096) {
                // SAFETY: `off < len`, inside the mapping; u8 needs no alignment.
                unsafe { p.add(off).write_volatile(p.add(off).read_volatile()) };
            }
        }
        "populate_write" => m.advise(Advice::PopulateWrite).expect("madvise"),
        _ => {}
    }
    (m, t.elapsed().as_secs_f64() * 1e3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(1024, |a| a.parse().expect("MiB"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("rounds"));
    let n = mib * (1 << 20) / 8;
    let len = 4096 + n * 8; // header page + data
    println!(
        "{mib} MiB, {rounds} rounds; ms: prefault + first pass | 2nd mapping: prefault + pass"
    );
    for round in 0..rounds {
        for how in ["none", "touch", "map_populate", "populate_write"] {
            // Two pids, so the segment stays open to attachers until `finish` and the "second
            // pid" can map it (through the creator's descriptor, as another process would).
            let pending = SharedArray::<f64, Ix1>::create(n, &[1, 2], 1).expect("create");
            let Backing::Shm { fd, .. } = pending.handle().backing().clone() else {
                unreachable!()
            };
            let name = format!("/proc/self/fd/{fd}");
            let (t1, p1) = if how == "populate_write" || how == "none" {
                // The crate's own path: `prefault` is MADV_POPULATE_WRITE.
                let s = pending.array();
                let t = Instant::now();
                if how == "populate_write" {
                    s.prefault(0..n).expect("prefault");
                }
                let t1 = t.elapsed().as_secs_f64() * 1e3;
                // SAFETY: no other process maps this segment in this example.
                let mut all = unsafe { s.as_mut_slice() }.expect("lease");
                (t1, pass(all.as_mut_ptr(), n))
            } else {
                let (m, t1) = map(&name, len, how);
                (t1, pass(m.as_mut_ptr().wrapping_add(4096).cast(), n))
            };
            let (m2, t2) = map(&name, len, how);
            let p2 = pass(m2.as_mut_ptr().wrapping_add(4096).cast(), n);
            drop(m2);
            pending.finish().expect("unlink");
            println!("r{round} {how:15} {t1:6.0} + {p1:5.0} | {t2:5.0} + {p2:5.0}");
        }
    }
}
