//! The seeds' advection kernel `q[i,j,t+1] = q[i,j,t] + u[i,j,t]` and its four versions.
//!
//! Shared by `examples/advection.rs`, `benches/advection.rs` and `tests/shm_cluster.rs` (each
//! includes this file as a module, so each binary registers its own remote functions).
//!
//! Arrays are `n1 × n2 × n3` f64, column-major (the first index fastest), so for one `t` the
//! columns `j` of a range are one contiguous block of `n1 * len` elements. Every version runs
//! the same [`advection_chunk`] on a range of columns; they differ in who runs which columns,
//! and how often they synchronise:
//!
//! | version | Julia (the seeds) | here |
//! |---|---|---|
//! | [`advection_serial`] | `advection_chunk!(q, u, 1:n1, 1:n2, 1:n3-1)` | the master, all columns |
//! | [`advection_parallel`] | `for t ...; @sync @distributed for j ...` | per step, `sync_distributed_for` over the columns: one call per worker |
//! | [`advection_shared`] | `remotecall_wait(advection_shared_chunk!, p, q, u)` on each pid | one call per worker, its `myrange` columns, all steps |
//! | [`advection_threads`] | — | rayon in the master, one chunk of columns per thread, all steps |
//! | [`advection_threads_step`] | — | rayon, synchronised per step like `parallel` (information) |
//!
//! Every version computes each `q[i,j,t+1]` by the same one addition from the same operands,
//! so all give bit-identical results whatever the split.
#![allow(dead_code)]

use std::ops::Range;

use cohort::prelude::*;
use cohort::shm::index;
use cohort::shm::ndarray::{ArrayView3, ArrayViewMut3, Axis, Ix3, Slice};
use cohort::shm::SharedArray;

/// The arrays of the benchmark.
pub(crate) type Arr = SharedArray<f64, Ix3>;

/// Bytes of one array's columns that [`advection_chunk`] keeps in cache while it runs through
/// all steps `t` (see there). Overridable with `ADVECTION_BLOCK_KIB` for tuning.
pub(crate) const BLOCK_BYTES: usize = 32 * 1024;

fn block_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("ADVECTION_BLOCK_KIB")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&k| k > 0)
            .map_or(BLOCK_BYTES, |k| k * 1024)
    })
}

/// The kernel: `q[i,j,t+1] = q[i,j,t] + u[i,j,t]` for every `i`, `j` of the views and `t` in
/// `trange` (`trange.end < n3`). `q` and `u` are the same columns of the two arrays.
///
/// Loop order: the columns are cut into blocks of about [`BLOCK_BYTES`] per slab, and for each
/// block `t` runs inside. The block of `q` written at step `t` is then still in the L1 cache
/// when step `t + 1` reads it, so memory sees only the read of `u` and the write of `q` (the
/// seeds' order, `t` outermost over all columns, must bring `q[:, :, t]` back from memory or
/// L3 when the slab is large). Within a block each step is one contiguous run of `n1 * cols`
/// elements, which the compiler vectorises. (Measured at n = 500 on the 2-core development VM:
/// blocks from 8 KiB to 1 MiB perform alike, within run-to-run noise.)
pub(crate) fn advection_chunk(
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
    // One contiguous slice per step t0..=t1 (column-major views of whole columns are
    // contiguous); index t of the steps is t - t0 below.
    let t0 = trange.start;
    let steps = Slice::from(t0..trange.end + 1);
    q.slice_axis_inplace(Axis(2), steps);
    let u = u.slice_axis(Axis(2), steps);
    let mut qs: Vec<&mut [f64]> = q
        .axis_iter_mut(Axis(2))
        .map(|s| {
            s.into_slice_memory_order()
                .expect("q's columns are contiguous")
        })
        .collect();
    let us: Vec<&[f64]> = u
        .axis_iter(Axis(2))
        .map(|s| {
            s.to_slice_memory_order()
                .expect("u's columns are contiguous")
        })
        .collect();
    let cols = (block_bytes() / (8 * n1)).clamp(1, ncols);
    for c0 in (0..ncols).step_by(cols) {
        let r = c0 * n1..(c0 + cols).min(ncols) * n1;
        for t in trange.start - t0..trange.end - t0 {
            let (done, next) = qs.split_at_mut(t + 1);
            let (prev, next, ut) = (
                &done[t][r.clone()],
                &mut next[0][r.clone()],
                &us[t][r.clone()],
            );
            for ((qn, &qp), &ui) in next.iter_mut().zip(prev).zip(ut) {
                *qn = qp + ui;
            }
        }
    }
}

/// A worker's part of [`advection_shared`]: its `myrange` columns, all steps. The seeds'
/// `advection_shared_chunk!`.
#[cohort::remote]
pub(crate) fn advection_shared_chunk(q: Arr, u: Arr) -> cohort::Result<()> {
    let jr = myrange(&q, Axis(1));
    let mut qv = q.local_axis_chunk_mut(Axis(1), myid())?;
    let uv = u.axis_chunk(Axis(1), jr)?;
    advection_chunk(qv.view_mut(), uv.view(), 0..q.shape()[2] - 1);
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
    advection_chunk(qv.view_mut(), uv.view(), t..t + 1);
    Ok(())
}

/// One process, all columns, all steps.
pub(crate) fn advection_serial(q: &Arr, u: &Arr) -> cohort::Result<()> {
    // SAFETY: the caller runs this while no other process uses q (the workers are idle).
    let mut qv = unsafe { q.view_mut() }?;
    let uv = u.try_view()?;
    advection_chunk(qv.view_mut(), uv.view(), 0..q.shape()[2] - 1);
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
/// `advection_shared!`).
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
/// its chunk for all steps (the threads counterpart of [`advection_shared`]).
pub(crate) fn advection_threads(q: &Arr, u: &Arr, pool: &rayon::ThreadPool) -> cohort::Result<()> {
    let parts = index::split(q.shape()[1], pool.current_num_threads());
    let nt = q.shape()[2] - 1;
    with_column_chunks(q, u, &parts, |chunks| {
        pool.scope(|s| {
            for (qc, uc) in chunks {
                s.spawn(move |_| advection_chunk(qc, uc, 0..nt));
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
                    s.spawn(move |_| advection_chunk(qc, uc, t..t + 1));
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
