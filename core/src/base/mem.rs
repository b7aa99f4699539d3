//! Memory for large receive buffers.

/// A zeroed vector; a large one is backed by transparent huge pages where the kernel offers
/// them, so that filling it takes one page fault per 2 MiB instead of one per 4 KiB (on these
/// virtual machines a 4 KiB fault costs ~1.7 µs: 28 ms per 64 MiB).
pub fn zeroed_vec<T: bytemuck::Pod>(n: usize) -> Vec<T> {
    let mut v = vec![T::zeroed(); n];
    advise_huge(bytemuck::cast_slice_mut(&mut v));
    v
}

/// Asks for transparent huge pages over the 2 MiB-aligned interior of a large buffer that has
/// not been touched yet.
pub fn advise_huge(buf: &mut [u8]) {
    advise_huge_raw(buf.as_mut_ptr() as usize, buf.len());
}

/// Reserves room for `additional` more elements in `v`, asking for transparent huge pages over
/// the new room (untouched yet, so the advice decides how it is first backed).
pub(crate) fn reserve_huge<T: bytemuck::Pod>(v: &mut Vec<T>, additional: usize) {
    v.reserve_exact(additional);
    let spare = v.spare_capacity_mut();
    let bytes = std::mem::size_of_val(spare);
    advise_huge_raw(spare.as_mut_ptr() as usize, bytes);
}

fn advise_huge_raw(start: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 2 * HUGE {
        return;
    }
    let first = start.next_multiple_of(HUGE);
    let end = (start + len) / HUGE * HUGE;
    if end <= first {
        return;
    }
    // SAFETY: [first, end) lies inside an allocation the caller borrows mutably, and
    // MADV_HUGEPAGE only changes how the kernel backs the pages, never their contents (it
    // neither reads nor writes them, so uninitialized room is fine).
    let r = unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    // Advice the kernel does not take (THP disabled) changes nothing.
    let _ = r;
}
