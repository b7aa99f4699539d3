//! The round trip of two processes that spin on flags in one shared page: the floor of any
//! node-local message passing (no kernel, no copy beyond a cache line each way).

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// One page shared by two processes: the leader's word and the echoer's word, a cache line
/// apart.
pub struct FlagPage {
    base: NonNull<u8>,
}

const PAGE: usize = 4096;

impl FlagPage {
    /// Maps the first page of `file` (a file of at least 4096 bytes that both processes open,
    /// e.g. one in `/dev/shm`).
    pub fn map(file: &File) -> io::Result<FlagPage> {
        // SAFETY: a fresh shared mapping of one page of `file`; nothing in this process
        // aliases it, and it is reached only through the atomics below.
        let p = unsafe {
            mmap(
                None,
                NonZeroUsize::new(PAGE).expect("non-zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                file.as_fd(),
                0,
            )
        }?;
        Ok(FlagPage { base: p.cast() })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        // SAFETY: word `i` (0 or 1) lies at offset 64 * i inside the mapped page, 8-aligned;
        // the page lives as long as `self` and both processes access it atomically only.
        unsafe { &*(self.base.as_ptr().add(64 * i) as *const AtomicU64) }
    }

    /// The echoing side: answers each number the leader posts until it posts `u64::MAX`.
    pub fn echo(&self) -> u64 {
        let mut n = 0;
        let mut last = 0;
        loop {
            let v = self.word(0).load(Ordering::Acquire);
            if v == u64::MAX {
                return n;
            }
            if v != last {
                last = v;
                self.word(1).store(v, Ordering::Release);
                n += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// The leading side: `warmup + iters` round trips; returns the median of the last `iters`
    /// in microseconds, then tells the echoer to stop.
    pub fn pingpong(&self, iters: usize, warmup: usize) -> f64 {
        let mut us = Vec::with_capacity(iters);
        for i in 1..=(warmup + iters) as u64 {
            let t = Instant::now();
            self.word(0).store(i, Ordering::Release);
            while self.word(1).load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            if i as usize > warmup {
                us.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        self.word(0).store(u64::MAX, Ordering::Release);
        us.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        us[us.len() / 2]
    }
}

impl Drop for FlagPage {
    fn drop(&mut self) {
        // SAFETY: the page mapped in `map`, unmapped once, here.
        let _ = unsafe { munmap(self.base.cast(), PAGE) };
    }
}
