//! The seeds' advection kernel `q[i,j,t+1] = q[i,j,t] + u[i,j,t]` and its versions.
//!
//! Shared by `examples/advection.rs`, `benches/advection.rs` and `tests/shm_cluster.rs` (each
//! includes this file as a module, so each binary registers its own remote functions).
//!
//! Arrays are `n1 × n2 × n3` f64, column-major (the first index fastest), so for one `t` the
//! columns `j` of a range are one contiguous block of `n1 * len` elements. Every version runs
//! [`advection_chunk`] on a range of columns, with one of three loops ([`Kernel`]); they differ
//! in who runs which columns, and how often they synchronise:
//!
//! | version | Julia (the seeds) | here | loop |
//! |---|---|---|---|
//! | [`advection_serial`] | `advection_chunk!(q, u, 1:n1, 1:n2, 1:n3-1)` | the master, all columns | fastest |
//! | [`advection_parallel`] | `for t ...; @sync @distributed for j ...` | per step, `sync_distributed_for` over the columns: one call per worker | naive |
//! | [`advection_shared`] | `remotecall_wait(advection_shared_chunk!, p, q, u)` on each pid | one call per worker, its `myrange` columns, all steps | fastest |
//! | [`advection_shared_naive`] | the same | the same, with the seeds' loop | naive |
//! | [`advection_threads`] | — | rayon in the master, one chunk of columns per thread, all steps | fastest |
//! | [`advection_threads_step`] | — | rayon, synchronised per step like `parallel` (information) | naive |
//!
//! "fastest" is [`Kernel::fastest`]: [`Kernel::Streaming`] where the CPU has AVX, else
//! [`Kernel::Blocked`]. The per-step versions run one step per call, where blocking over `t`
//! has nothing to block, and where streaming stores would send `q[:, :, t + 1]` to memory just
//! before the next step reads it back.
//!
//! Every loop computes each `q[i,j,t+1]` by the same one addition from the same operands, so
//! all versions give bit-identical results whatever the loop and the split.
#![allow(dead_code)]

use std::ops::Range;

use cohort::prelude::*;
use cohort::shm::index;
use cohort::shm::ndarray::{ArrayView3, ArrayViewMut3, Axis, Ix3, Slice};
use cohort::shm::SharedArray;

/// The arrays of the benchmark.
pub(crate) type Arr = SharedArray<f64, Ix3>;

/// Bytes of one array's slab (one `t`) per block of columns that the blocked loops keep in
/// cache while they run through all steps `t` (see [`Kernel`]), where the L2 cache's size is
/// not known.
pub(crate) const BLOCK_BYTES: usize = 1 << 20;

/// The block's bytes: the L2 cache of one core (as Linux reports it), else [`BLOCK_BYTES`];
/// `ADVECTION_BLOCK_KIB` overrides it, for tuning. (Measured at n = 500 on the 2-core
/// development VM, with its 1 MiB L2: blocks of 64 KiB to 256 KiB run 10–25 % slower than
/// 1 MiB; 2 MiB and more as fast, the buffer then partly in the L3.)
fn block_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("ADVECTION_BLOCK_KIB")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&k| k > 0)
            .map(|k| k * 1024)
            .or_else(l2_bytes)
            .unwrap_or(BLOCK_BYTES)
    })
}

/// The size of cpu0's L2 data (or unified) cache, from sysfs.
fn l2_bytes() -> Option<usize> {
    let read = |dir: &std::path::Path, f: &str| std::fs::read_to_string(dir.join(f)).ok();
    std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|d| {
            read(d, "level").is_some_and(|l| l.trim() == "2")
                && read(d, "type").is_some_and(|t| t.trim() != "Instruction")
        })
        .and_then(|d| read(&d, "size"))
        .and_then(|s| s.trim().strip_suffix('K')?.parse::<usize>().ok())
        .filter(|&k| k > 0)
        .map(|k| k * 1024)
}

/// The loop [`advection_chunk`] runs.
///
/// Bytes that memory moves per update `q[i,j,t+1] = q[i,j,t] + u[i,j,t]` (`u` and `q` being
/// far larger than the caches):
///
/// * [`Naive`](Kernel::Naive), the seeds' order, `t` outermost over all the chunk's columns:
///   8 to read `u[i,j,t]`, 8 to write `q[i,j,t+1]`, and 8 more for the write-allocate read
///   that fetches the line of `q[i,j,t+1]` before the store overwrites it; `q[i,j,t]` comes
///   from the cache only while the slab `q[:, jrange, t]` that the previous step wrote still
///   fits there (1 MB per worker at n = 500: the L2 and L3 here), else it is 8 more. 24 bytes
///   at best.
/// * [`Blocked`](Kernel::Blocked): the columns cut into blocks of about one L2 per slab (see
///   [`block_bytes`]), `t` running inside each block, so `q[:, block, t]` is still in the L2
///   when step `t + 1` reads it, whatever the slab's size. Still 24: the write-allocate read
///   remains.
/// * [`Streaming`](Kernel::Streaming): blocked the same way, but the running values
///   `q[:, block, t]` live in a private buffer of one block, which stays in the cache, and
///   each step adds `u[:, block, t]` to the buffer and writes the sums to `q[:, block, t + 1]`
///   with non-temporal (streaming) stores, which send whole lines to memory without reading
///   them first and without taking cache space. `q` is never read back (only its first slab,
///   once per block), so memory sees `u` read and `q` written: 16 bytes per update, 2/3 of
///   the others' traffic. (Streaming stores without the buffer would not do: they take
///   `q[:, block, t + 1]` out of the cache just before the next step reads it.)
///
/// All three perform the same additions on the same operands, per element in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// The seeds' loop order: for each `t`, all the columns.
    Naive,
    /// Blocked over `t`, ordinary stores: the portable fallback of `Streaming`.
    Blocked,
    /// Blocked over `t`, running values in a buffer, results written with streaming stores
    /// (`std::arch` AVX intrinsics on x86-64 where the CPU has AVX, checked at run time; else
    /// it runs as [`Kernel::Blocked`]).
    Streaming,
}

impl Kernel {
    /// The fastest loop on this CPU: [`Kernel::Streaming`] where it runs, else
    /// [`Kernel::Blocked`]. `ADVECTION_KERNEL=naive|blocked|streaming` chooses another, for
    /// measuring.
    pub(crate) fn fastest() -> Kernel {
        static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| match std::env::var("ADVECTION_KERNEL").as_deref() {
            Ok("naive") => Kernel::Naive,
            Ok("blocked") => Kernel::Blocked,
            _ if streaming::available() => Kernel::Streaming,
            _ => Kernel::Blocked,
        })
    }
}

/// `q[i,j,t+1] = q[i,j,t] + u[i,j,t]` for every `i`, `j` of the views and `t` in `trange`
/// (`trange.end < n3`), by the loop `kernel`. `q` and `u` are the same columns of the two
/// arrays.
pub(crate) fn advection_chunk(
    kernel: Kernel,
    mut q: ArrayViewMut3<'_, f64>,
    u: ArrayView3<'_, f64>,
    trange: Range<usize>,
) {
    let (n1, ncols, n3) = q.dim();
    assert_eq!(u.dim(), (n1, ncols, n3), "q and u views differ");
    assert!(
        trange.end < n3 || trange.is_empty(),
        "t range {trange:?} beyond {n3} steps"
    );
    if n1 == 0 || ncols == 0 || trange.is_empty() {
        return;
    }
    // One contiguous slice per step trange.start..=trange.end (column-major views of whole
    // columns are contiguous): qs[k] is q[:, :, trange.start + k], us[k] likewise.
    let steps = Slice::from(trange.start..trange.end + 1);
    q.slice_axis_inplace(Axis(2), steps);
    let mut qs: Vec<&mut [f64]> = q
        .axis_iter_mut(Axis(2))
        .map(|s| {
            s.into_slice_memory_order()
                .expect("q's columns are contiguous")
        })
        .collect();
    let u = u.slice_axis(Axis(2), Slice::from(trange));
    let us: Vec<&[f64]> = u
        .axis_iter(Axis(2))
        .map(|s| {
            s.to_slice_memory_order()
                .expect("u's columns are contiguous")
        })
        .collect();
    let block = n1 * (block_bytes() / (8 * n1)).clamp(1, ncols);
    match kernel {
        Kernel::Naive => blocked(&mut qs, &us, n1 * ncols),
        Kernel::Streaming if streaming::available() => {
            // SAFETY: the CPU has AVX (checked just above), the only requirement of `run`.
            unsafe { streaming::run(&mut qs, &us, block) }
        }
        Kernel::Blocked | Kernel::Streaming => blocked(&mut qs, &us, block),
    }
}

/// `qs[t + 1] = qs[t] + us[t]` for every `t < us.len()`, in blocks of `block` elements, `t`
/// inside each block (one block: the seeds' order).
fn blocked(qs: &mut [&mut [f64]], us: &[&[f64]], block: usize) {
    let len = qs[0].len();
    for b0 in (0..len).step_by(block) {
        let r = b0..(b0 + block).min(len);
        for (t, ut) in us.iter().enumerate() {
            let (done, next) = qs.split_at_mut(t + 1);
            let (prev, next, ut) = (&done[t][r.clone()], &mut next[0][r.clone()], &ut[r.clone()]);
            for ((qn, &qp), &ui) in next.iter_mut().zip(prev).zip(ut) {
                *qn = qp + ui;
            }
        }
    }
}

/// [`Kernel::Streaming`] on x86-64.
#[cfg(target_arch = "x86_64")]
mod streaming {
    use std::arch::x86_64::{
        _mm256_add_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_stream_pd, _mm_sfence,
    };

    /// Whether [`run`] can run on this CPU.
    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx")
    }

    /// [`super::blocked`]'s result, with the running values of each block in a buffer and
    /// streaming stores to `qs[1..]` (see [`super::Kernel`]).
    #[target_feature(enable = "avx")]
    pub(super) fn run(qs: &mut [&mut [f64]], us: &[&[f64]], block: usize) {
        let len = qs[0].len();
        let mut buf = vec![0.0; block.min(len)];
        for b0 in (0..len).step_by(block) {
            let r = b0..(b0 + block).min(len);
            let acc = &mut buf[..r.len()];
            acc.copy_from_slice(&qs[0][r.clone()]);
            for (t, ut) in us.iter().enumerate() {
                step(acc, &ut[r.clone()], &mut qs[t + 1][r.clone()]);
            }
        }
        // Streaming stores are weakly ordered: drain them before this thread says it is done
        // (the reply, or the end of a rayon task), so whoever reads q then sees them.
        _mm_sfence();
    }

    /// `acc += u; out = acc`, element by element, `out` written with streaming stores.
    #[target_feature(enable = "avx")]
    fn step(acc: &mut [f64], u: &[f64], out: &mut [f64]) {
        let n = acc.len();
        assert!(u.len() == n && out.len() == n, "step: lengths differ");
        // Elements before `out`'s next 64-byte boundary (an f64 address is a multiple of 8):
        // from there on, each iteration streams one whole cache line.
        let head = ((64 - out.as_ptr() as usize % 64) % 64 / 8).min(n);
        let body_end = head + (n - head) / 8 * 8;
        scalar(&mut acc[..head], &u[..head], &mut out[..head]);
        let (a, x, o) = (acc.as_mut_ptr(), u.as_ptr(), out.as_mut_ptr());
        for k in (head..body_end).step_by(8) {
            // SAFETY: k + 8 <= body_end <= n, the length of all three slices, which do not
            // overlap (`acc` and `out` are distinct `&mut`); `o.add(k)` is 64-byte aligned
            // (`head`, then steps of 8 f64), more than the 32 that `_mm256_stream_pd` needs.
            unsafe {
                let s0 = _mm256_add_pd(_mm256_loadu_pd(a.add(k)), _mm256_loadu_pd(x.add(k)));
                let s1 =
                    _mm256_add_pd(_mm256_loadu_pd(a.add(k + 4)), _mm256_loadu_pd(x.add(k + 4)));
                _mm256_storeu_pd(a.add(k), s0);
                _mm256_storeu_pd(a.add(k + 4), s1);
                _mm256_stream_pd(o.add(k), s0);
                _mm256_stream_pd(o.add(k + 4), s1);
            }
        }
        scalar(&mut acc[body_end..], &u[body_end..], &mut out[body_end..]);
    }

    /// [`step`] with ordinary stores, for the ends of a step that do not fill a cache line.
    fn scalar(acc: &mut [f64], u: &[f64], out: &mut [f64]) {
        for ((a, &x), o) in acc.iter_mut().zip(u).zip(out) {
            *a += x;
            *o = *a;
        }
    }
}

/// [`Kernel::Streaming`] elsewhere: never available, so it runs as [`Kernel::Blocked`].
#[cfg(not(target_arch = "x86_64"))]
mod streaming {
    pub(super) fn available() -> bool {
        false
    }

    /// Unreachable: [`available`] is false.
    pub(super) unsafe fn run(qs: &mut [&mut [f64]], us: &[&[f64]], block: usize) {
        super::blocked(qs, us, block)
    }
}

/// A worker's part of [`advection_shared`]: its `myrange` columns, all steps. The seeds'
/// `advection_shared_chunk!`.
#[cohort::remote]
pub(crate) fn advection_shared_chunk(q: Arr, u: Arr) -> cohort::Result<()> {
    shared_chunk(Kernel::fastest(), &q, &u)
}

/// A worker's part of [`advection_shared_naive`]: the same with the seeds' loop.
#[cohort::remote]
pub(crate) fn advection_shared_naive_chunk(q: Arr, u: Arr) -> cohort::Result<()> {
    shared_chunk(Kernel::Naive, &q, &u)
}

fn shared_chunk(kernel: Kernel, q: &Arr, u: &Arr) -> cohort::Result<()> {
    let jr = myrange(q, Axis(1));
    let mut qv = q.local_axis_chunk_mut(Axis(1), myid())?;
    let uv = u.axis_chunk(Axis(1), jr)?;
    advection_chunk(kernel, qv.view_mut(), uv.view(), 0..q.shape()[2] - 1);
    Ok(())
}

/// A worker's part of one step of [`advection_parallel`]: the columns of its `part`, step `t`
/// (the body of the seeds' `@distributed for j = 1:n2`).
#[cohort::remote]
pub(crate) fn advection_step(part: Part, arrays: (Arr, Arr, usize)) -> cohort::Result<()> {
    let (q, u, t) = arrays;
    let jr = part.start as usize..part.end as usize;
    // SAFETY: a step's parts are disjoint ranges of columns, and the master waits for all of
    // them before the next step or anything else touches q.
    let mut qv = unsafe { q.axis_chunk_mut(Axis(1), jr.clone()) }?;
    let uv = u.axis_chunk(Axis(1), jr)?;
    advection_chunk(Kernel::Naive, qv.view_mut(), uv.view(), t..t + 1);
    Ok(())
}

/// One process, all columns, all steps, with the fastest loop.
pub(crate) fn advection_serial(q: &Arr, u: &Arr) -> cohort::Result<()> {
    // SAFETY: the caller runs this while no other process uses q (the workers are idle).
    let mut qv = unsafe { q.view_mut() }?;
    let uv = u.try_view()?;
    advection_chunk(
        Kernel::fastest(),
        qv.view_mut(),
        uv.view(),
        0..q.shape()[2] - 1,
    );
    Ok(())
}

/// One distributed loop per time step: for each `t`, the columns split into one part per
/// worker, and all parts waited for before step `t + 1` (`@sync @distributed for j = 1:n2`).
pub(crate) fn advection_parallel(q: &Arr, u: &Arr) -> cohort::Result<()> {
    if q.pids() != workers() {
        return Err(cohort::Error::Invalid(
            "advection_parallel splits the columns over all workers: the arrays must be on each"
                .into(),
        ));
    }
    for t in 0..q.shape()[2] - 1 {
        sync_distributed_for(0..q.shape()[1], advection_step, (q.clone(), u.clone(), t))?;
    }
    Ok(())
}

/// One call per worker, each on its `myrange` columns for all steps (the seeds'
/// `advection_shared!`), with the fastest loop.
pub(crate) fn advection_shared(q: &Arr, u: &Arr) -> cohort::Result<()> {
    let calls = q
        .pids()
        .iter()
        .map(|&p| remotecall(advection_shared_chunk, p, (q.clone(), u.clone())))
        .collect::<cohort::Result<Vec<_>>>()?;
    for c in calls {
        c.fetch()?;
    }
    Ok(())
}

/// [`advection_shared`] with the seeds' loop ([`Kernel::Naive`]).
pub(crate) fn advection_shared_naive(q: &Arr, u: &Arr) -> cohort::Result<()> {
    let calls = q
        .pids()
        .iter()
        .map(|&p| remotecall(advection_shared_naive_chunk, p, (q.clone(), u.clone())))
        .collect::<cohort::Result<Vec<_>>>()?;
    for c in calls {
        c.fetch()?;
    }
    Ok(())
}

/// `q`'s and `u`'s views (the master's mappings) cut into `parts` column chunks, and run
/// `body` on them; the borrows stay inside.
fn with_column_chunks<R>(
    q: &Arr,
    u: &Arr,
    parts: &[Range<usize>],
    body: impl FnOnce(Vec<(ArrayViewMut3<'_, f64>, ArrayView3<'_, f64>)>) -> R,
) -> cohort::Result<R> {
    // SAFETY: the callers run while no other process uses q (the workers are idle), and the
    // chunks handed out below are disjoint.
    let mut qg = unsafe { q.view_mut() }?;
    let ug = u.try_view()?;
    let uv = ug.view();
    let mut chunks = Vec::with_capacity(parts.len());
    let mut rest = qg.view_mut();
    for jr in parts {
        let (head, tail) = rest.split_at(Axis(1), jr.len());
        chunks.push((head, uv.slice_axis(Axis(1), jr.clone().into())));
        rest = tail;
    }
    Ok(body(chunks))
}

/// rayon in this process: the columns split into one chunk per thread of `pool`, each thread
/// its chunk for all steps with the fastest loop (the threads counterpart of
/// [`advection_shared`]).
pub(crate) fn advection_threads(q: &Arr, u: &Arr, pool: &rayon::ThreadPool) -> cohort::Result<()> {
    let parts = index::split(q.shape()[1], pool.current_num_threads());
    let nt = q.shape()[2] - 1;
    let kernel = Kernel::fastest();
    with_column_chunks(q, u, &parts, |chunks| {
        pool.scope(|s| {
            for (qc, uc) in chunks {
                s.spawn(move |_| advection_chunk(kernel, qc, uc, 0..nt));
            }
        })
    })
}

/// rayon, synchronised per step: for each `t`, every thread does step `t` on its chunk (the
/// threads counterpart of [`advection_parallel`]; shown for information).
pub(crate) fn advection_threads_step(
    q: &Arr,
    u: &Arr,
    pool: &rayon::ThreadPool,
) -> cohort::Result<()> {
    let parts = index::split(q.shape()[1], pool.current_num_threads());
    let nt = q.shape()[2] - 1;
    with_column_chunks(q, u, &parts, |mut chunks| {
        for t in 0..nt {
            pool.scope(|s| {
                for (qc, uc) in chunks.iter_mut() {
                    let (qc, uc) = (qc.view_mut(), uc.view());
                    s.spawn(move |_| advection_chunk(Kernel::Naive, qc, uc, t..t + 1));
                }
            });
        }
    })
}

/// Initial `u`: a hash of the linear index, in `[0, 1)` with all 52 mantissa bits used (so a
/// reordered sum would change the last bits of `q`).
pub(crate) fn u0(k: usize) -> f64 {
    let mut x = (k as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 12) as f64 / (1u64 << 52) as f64
}

/// Initial `q[:, :, 0]` (linear index `k < n1 * n2`): another hash, in `[0, 1000)`.
pub(crate) fn q0(k: usize) -> f64 {
    u0(k ^ 0x5555_5555) * 1000.0
}

/// `init` of `u`: each pid fills its `localindices`, then maps the pages of its `myrange`
/// columns (construction mapped its `localindices` share; the kernels use the columns).
#[cohort::remote]
pub(crate) fn init_u(u: Arr) -> cohort::Result<()> {
    {
        let mut part = u.local_chunk_mut(myid())?;
        let start = part.range().start;
        for (k, x) in (start..).zip(part.iter_mut()) {
            *x = u0(k);
        }
    }
    u.prefault_axis(Axis(1), myrange(&u, Axis(1)))?;
    Ok(())
}

/// `init` of `q`: each pid fills its `localindices`, `q0` in the first slab and 0 elsewhere,
/// then maps the pages of its `myrange` columns.
#[cohort::remote]
pub(crate) fn init_q(q: Arr) -> cohort::Result<()> {
    let slab = q.shape()[0] * q.shape()[1];
    {
        let mut part = q.local_chunk_mut(myid())?;
        let start = part.range().start;
        for (k, x) in (start..).zip(part.iter_mut()) {
            *x = if k < slab { q0(k) } else { 0.0 };
        }
    }
    q.prefault_axis(Axis(1), myrange(&q, Axis(1)))?;
    Ok(())
}

/// `q` and `u` of `n × n × n` on the workers, initialised there. The master, which runs the
/// serial and threads versions on its own mapping, maps all their pages too.
pub(crate) fn make_arrays(n: usize) -> cohort::Result<(Arr, Arr)> {
    let q = Arr::with_init((n, n, n), None, init_q)?;
    let u = Arr::with_init((n, n, n), None, init_u)?;
    q.prefault(0..q.len())?;
    u.prefault(0..u.len())?;
    Ok((q, u))
}

/// Overwrite every step but the first of `q` with NaN, so a version that skips an element
/// cannot pass the check on an earlier version's result.
pub(crate) fn poison(q: &Arr) -> cohort::Result<()> {
    let slab = q.shape()[0] * q.shape()[1];
    // SAFETY: called by the master while no other process uses q.
    let mut all = unsafe { q.as_mut_slice() }?;
    all[slab..].fill(f64::NAN);
    Ok(())
}

/// The seeds' kernel as written, `for t, j, i` with indexing: the reference for small sizes.
pub(crate) fn advection_reference(
    q: &mut cohort::shm::ndarray::Array3<f64>,
    u: &cohort::shm::ndarray::Array3<f64>,
) {
    let (n1, n2, n3) = q.dim();
    for t in 0..n3 - 1 {
        for j in 0..n2 {
            for i in 0..n1 {
                q[[i, j, t + 1]] = q[[i, j, t]] + u[[i, j, t]];
            }
        }
    }
}
