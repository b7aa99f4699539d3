//! SharedArray in a real cluster: the master and workers 2, 3, 4 (separate processes) map the
//! same memory.
//!
//! The seeds' 3×4 `init` examples, visibility of writes across processes, partitions of
//! awkward sizes, errors, cleanup (1,000 create/drop cycles; `kill -9` of the master, idle or
//! at random moments of constructions and kernels, and of a worker leave `/dev/shm` as it
//! was), file-backed arrays across processes (with cohort's header, and raw at an offset as
//! Julia's), and the advection versions agreeing bit for bit.
//!
//! Some tests re-execute this binary as a separate master (`COHORT_SHM_TEST_ROLE` set): ones
//! that are killed with `kill -9` while their workers map arrays, one that reads a file-backed
//! array written by an earlier process.

mod common;

#[path = "../examples/advection/kernels.rs"]
mod kernels;
#[path = "../shm/tests/common/raw_sample.rs"]
mod raw_sample;
use raw_sample::{f64_bytes, write_sample, PREFIX, SUFFIX, VALUES};

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cohort::prelude::*;
use cohort::shm::ndarray::{arr2, Array3, Axis, Ix1, Ix2};
use cohort::shm::{index, FileMode, RawMode, SegmentId, SharedArray, NAME_PREFIX};
use common::eventually;

const ROLE: &str = "COHORT_SHM_TEST_ROLE";

// ---------- remote functions ----------

/// The seeds' `S -> S[localindices(S)] = repeat([myid()], length(localindices(S)))`.
#[cohort::remote]
fn fill_localindices(s: SharedArray<i64, Ix2>) -> cohort::Result<()> {
    s.local_chunk_mut(myid())?.fill(myid() as i64);
    Ok(())
}

/// The seeds' `S -> S[indexpids(S):length(procs(S)):length(S)] = myid()`.
///
/// With as many pids as rows, the linear indices `idx, idx + np, ...` of a column-major array
/// are exactly row `idx`, so the write goes through a lease on that row.
#[cohort::remote]
fn fill_strided(s: SharedArray<i64, Ix2>) -> cohort::Result<()> {
    let idx = indexpids(&s).ok_or_else(|| cohort::Error::Invalid("not a pid of S".into()))?;
    let (np, rows) = (s.pids().len(), s.shape()[0]);
    let strided: Vec<usize> = (idx..s.len()).step_by(np).collect();
    let row: Vec<usize> = (0..s.shape()[1]).map(|j| idx + rows * j).collect();
    assert_eq!(strided, row, "the strided split is a row split here");
    // SAFETY: each pid leases a different row, and nobody reads S until every init returned.
    let mut mine = unsafe { s.axis_chunk_mut(Axis(0), idx..idx + 1) }?;
    mine.view_mut().fill(myid() as i64);
    Ok(())
}

/// Writes `v` at linear index `k`.
#[cohort::remote]
fn set_elem(s: SharedArray<i64, Ix1>, k: usize, v: i64) -> cohort::Result<()> {
    // SAFETY: the test has no other process touch element k during this call.
    let mut e = unsafe { s.chunk_mut(k..k + 1) }?;
    e[0] = v;
    Ok(())
}

/// Reads linear index `k`.
#[cohort::remote]
fn get_elem(s: SharedArray<i64, Ix1>, k: usize) -> cohort::Result<i64> {
    Ok(s.try_as_slice()?[k])
}

/// This pid's `localindices` of a 1-D array.
#[cohort::remote]
fn my_localindices(s: SharedArray<u8, Ix1>) -> Range<usize> {
    localindices(&s)
}

/// This pid's `myrange` along axis 1 of a 2-D array.
#[cohort::remote]
fn my_axis1_range(s: SharedArray<u8, Ix2>) -> Range<usize> {
    myrange(&s, Axis(1))
}

/// The segments this process maps.
#[cohort::remote]
fn mapped() -> Vec<SegmentId> {
    cohort::shm::mapped_segments()
}

/// This process's OS pid.
#[cohort::remote]
fn ospid() -> u32 {
    std::process::id()
}

/// An `init` that fails on pid 3.
#[cohort::remote]
fn init_fails_on_3(s: SharedArray<i64, Ix1>) -> cohort::Result<()> {
    if myid() == 3 {
        return Err(cohort::Error::Invalid("init refused on pid 3".into()));
    }
    s.local_chunk_mut(myid())?.fill(1);
    Ok(())
}

/// `init` with an extra argument: fills this pid's share with `base + myid()`.
#[cohort::remote]
fn fill_plus(s: SharedArray<f64, Ix2>, base: f64) -> cohort::Result<()> {
    s.local_chunk_mut(myid())?.fill(base + myid() as f64);
    Ok(())
}

/// What a pid sees of an array without data bytes: `len`, `is_empty`, `indexpids`,
/// `localindices`, `myrange` along each axis, and `sdata` as a vector.
type EmptyReport = (
    usize,
    bool,
    Option<usize>,
    Range<usize>,
    Vec<Range<usize>>,
    Vec<f64>,
);

#[cohort::remote]
fn report_empty_1d(s: SharedArray<f64, Ix1>) -> EmptyReport {
    (
        s.len(),
        s.is_empty(),
        indexpids(&s),
        localindices(&s),
        vec![myrange(&s, Axis(0))],
        s.as_slice().to_vec(),
    )
}

#[cohort::remote]
fn report_empty_2d(s: SharedArray<f64, Ix2>) -> EmptyReport {
    (
        s.len(),
        s.is_empty(),
        indexpids(&s),
        localindices(&s),
        vec![myrange(&s, Axis(0)), myrange(&s, Axis(1))],
        s.view().view().iter().copied().collect(),
    )
}

/// Julia's `fill!` on this pid's share, by linear and by axis-1 chunk; the sum after.
#[cohort::remote]
fn fill_mine_2d(s: SharedArray<f64, Ix2>) -> cohort::Result<f64> {
    s.local_chunk_mut(myid())?.fill(1.0);
    s.local_axis_chunk_mut(Axis(1), myid())?
        .view_mut()
        .fill(2.0);
    Ok(s.view().view().sum())
}

#[cohort::remote]
fn fill_mine_1d(s: SharedArray<f64, Ix1>) -> cohort::Result<()> {
    s.local_chunk_mut(myid())?.fill(1.0);
    Ok(())
}

/// A kernel over this pid's share: `passes` rounds of `x = 0.5 x + 1`; the share's sum.
#[cohort::remote]
fn halve_and_add(s: SharedArray<f64, Ix1>, passes: usize) -> cohort::Result<f64> {
    let mut mine = s.local_chunk_mut(myid())?;
    for _ in 0..passes {
        mine.iter_mut().for_each(|x| *x = 0.5 * *x + 1.0);
    }
    Ok(mine.iter().sum())
}

/// A zero-sized element type deriving `Pod`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct Marker;

/// `len`, `localindices` and the length of this pid's share of a zero-sized-element array.
#[cohort::remote]
fn report_markers(s: SharedArray<Marker, Ix2>) -> cohort::Result<(usize, Range<usize>, usize)> {
    let mine = s.local_chunk_mut(myid())?.len();
    Ok((s.len(), localindices(&s), mine))
}

// ---------- helpers ----------

/// `/dev/shm` names of the form `cohort-<pid>-...` for the OS process `pid` (cohort's
/// segments have none; an earlier version's leftovers would).
fn shm_names_of(pid: u32) -> BTreeSet<String> {
    let prefix = format!("{NAME_PREFIX}{pid}-");
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Names made by this process, and its descriptors of `/dev/shm` inodes (a segment's door
/// left open would show here).
fn own_names() -> BTreeSet<String> {
    let mut out = shm_names_of(std::process::id());
    for fd in std::fs::read_dir("/proc/self/fd").expect("/proc").flatten() {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            if link.starts_with("/dev/shm/") {
                out.insert(format!("fd {:?}: {}", fd.file_name(), link.display()));
            }
        }
    }
    out
}

/// Whether an OS process is alive (a zombie counts as dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn kill9(pid: u32) {
    use nix::sys::signal::{kill, Signal};
    let _ = kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// The segments mapped on each of `pids`.
fn mapped_on(pids: &[Pid]) -> Vec<Vec<SegmentId>> {
    pids.iter()
        .map(|&p| remotecall_fetch(mapped, p, ()).expect("mapped"))
        .collect()
}

/// A temporary file path, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(tag: &str) -> TempPath {
        TempPath(
            std::env::temp_dir().join(format!("cohort-shm-test-{}-{tag}.bin", std::process::id())),
        )
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs this binary again as a separate master in `role`.
fn child(role: &str, arg: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current_exe"));
    c.env(ROLE, role)
        .env("COHORT_SHM_TEST_ARG", arg)
        .env_remove("COHORT_PROCS")
        .stdin(Stdio::null());
    c
}

fn matrix(s: &SharedArray<i64, Ix2>) -> cohort::shm::ndarray::Array2<i64> {
    s.view().view().to_owned()
}

// ---------- tests ----------

fn seeds_localindices_init() {
    let s = SharedArray::<i64, Ix2>::with_init((3, 4), None, fill_localindices).unwrap();
    assert_eq!(s.pids(), [2, 3, 4]);
    assert_eq!(
        matrix(&s),
        arr2(&[[2, 2, 3, 4], [2, 3, 3, 4], [2, 3, 4, 4]])
    );
    // S[3,2] = 7 (Julia's 1-based indices).
    {
        // SAFETY: the workers are idle; only the master touches S now.
        let mut v = unsafe { s.view_mut() }.unwrap();
        v[[2, 1]] = 7;
    }
    assert_eq!(
        matrix(&s),
        arr2(&[[2, 2, 3, 4], [2, 3, 3, 4], [2, 7, 4, 4]])
    );
    // Each worker sees the master's write too.
    assert_eq!(
        remotecall_fetch(get_sum_2d, 3, (s.clone(),)).unwrap(),
        matrix(&s).sum()
    );
}

/// Sum of a 2-D array, read where it runs.
#[cohort::remote]
fn get_sum_2d(s: SharedArray<i64, Ix2>) -> i64 {
    s.view().view().iter().sum()
}

fn seeds_strided_init() {
    let s = SharedArray::<i64, Ix2>::with_init((3, 4), None, fill_strided).unwrap();
    assert_eq!(
        matrix(&s),
        arr2(&[[2, 2, 2, 2], [3, 3, 3, 3], [4, 4, 4, 4]])
    );
}

fn init_with_extra_argument() {
    let s = SharedArray::<f64, Ix2>::with_init_args((5, 2), None, fill_plus, 0.5).unwrap();
    let want: Vec<f64> = [2.5, 2.5, 2.5, 2.5, 3.5, 3.5, 3.5, 4.5, 4.5, 4.5].to_vec();
    assert_eq!(s.as_slice().to_vec(), want);
}

fn write_on_worker_visible_on_master_and_other_worker() {
    let s = SharedArray::<i64, Ix1>::new(10, None).unwrap();
    assert_eq!(s.as_slice().iter().sum::<i64>(), 0, "zero-filled");
    remotecall_fetch(set_elem, 2, (s.clone(), 7, 42)).unwrap();
    // The value was not sent anywhere: the master and worker 4 read the shared memory.
    assert_eq!(s.as_slice()[7], 42);
    assert_eq!(remotecall_fetch(get_elem, 4, (s.clone(), 7)).unwrap(), 42);
    // And the other way: the master writes, a worker reads.
    {
        // SAFETY: no worker runs anything on S meanwhile.
        let mut e = unsafe { s.chunk_mut(3..4) }.unwrap();
        e[0] = -5;
    }
    assert_eq!(remotecall_fetch(get_elem, 3, (s.clone(), 3)).unwrap(), -5);
}

fn pid_outside_pids_is_an_error() {
    let s = SharedArray::<i64, Ix1>::new(6, Some(&[2, 3])).unwrap();
    let e = remotecall_fetch(get_elem, 4, (s.clone(), 0)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("pid 4 is not among the pids [2, 3]"),
        "unclear error: {msg}"
    );
    assert!(matches!(e, cohort::Error::Codec { pid: 4, .. }), "{e:?}");
    // Nothing is broken: the members still work, worker 4 too.
    assert_eq!(remotecall_fetch(get_elem, 3, (s.clone(), 0)).unwrap(), 0);
    assert_eq!(
        remotecall_fetch(ospid, 4, ()).unwrap(),
        remotecall_fetch(ospid, 4, ()).unwrap()
    );
    // Pids that do not exist.
    let e = SharedArray::<i64, Ix1>::new(6, Some(&[2, 99])).unwrap_err();
    assert!(matches!(e, cohort::Error::NoSuchProcess(99)), "{e:?}");
}

fn partitions_of_awkward_sizes() {
    let pids = [2, 3, 4];
    for len in [1usize, 2, 3, 5, 13, 97, 1009] {
        let s = SharedArray::<u8, Ix1>::new(len, Some(&pids)).unwrap();
        let got = s.on_pids(my_localindices).unwrap();
        assert_eq!(got, index::split(len, 3), "len {len}");
        // Contiguous, in pid order, covering 0..len, sizes within one.
        assert_eq!(got[0].start, 0);
        assert_eq!(got[2].end, len);
        assert!(got.windows(2).all(|w| w[0].end == w[1].start));
        let sizes: Vec<usize> = got.iter().map(|r| r.len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        // The master is not a pid: nothing is its own.
        assert_eq!(localindices(&s), 0..0);
    }
    for cols in [1usize, 2, 7, 11] {
        let s = SharedArray::<u8, Ix2>::new((3, cols), Some(&pids)).unwrap();
        let got = s.on_pids(my_axis1_range).unwrap();
        assert_eq!(got, index::split(cols, 3), "cols {cols}");
        assert_eq!(got.iter().map(|r| r.len()).sum::<usize>(), cols);
    }
}

fn thousand_create_drop_cycles_leave_nothing() {
    let ws = workers();
    let before = own_names();
    let mapped_before = mapped_on(&ws);
    let mapped_here = cohort::shm::mapped_segments();
    for i in 0..1000usize {
        match i % 3 {
            0 => drop(SharedArray::<f64, Ix2>::new((16, 16), None).unwrap()),
            1 => drop(SharedArray::<i64, Ix1>::with_init(40, None, fill_localindices_1d).unwrap()),
            _ => SharedArray::<u8, Ix1>::new(4096 * 3, Some(&[3]))
                .unwrap()
                .finalize(),
        }
    }
    assert_eq!(own_names(), before, "/dev/shm changed");
    assert!(
        eventually(Duration::from_secs(10), || mapped_on(&ws) == mapped_before),
        "workers still map {:?} (before: {mapped_before:?})",
        mapped_on(&ws)
    );
    assert_eq!(cohort::shm::mapped_segments(), mapped_here);
}

#[cohort::remote]
fn fill_localindices_1d(s: SharedArray<i64, Ix1>) -> cohort::Result<()> {
    s.local_chunk_mut(myid())?.fill(myid() as i64);
    Ok(())
}

fn drop_and_finalize_release_every_pid() {
    let ws = workers();
    let s = SharedArray::<f64, Ix1>::new(1000, None).unwrap();
    let id = s.id();
    assert!(mapped_on(&ws).iter().all(|m| m.contains(&id)));
    let keep = s.clone();
    drop(s);
    // A clone on the creator keeps it alive everywhere.
    assert!(mapped_on(&ws).iter().all(|m| m.contains(&id)));
    keep.finalize();
    assert!(eventually(Duration::from_secs(5), || mapped_on(&ws)
        .iter()
        .all(|m| !m.contains(&id))));
    assert!(!cohort::shm::mapped_segments().contains(&id));
}

fn errors_are_clear() {
    let before = own_names();
    let msg = |e: cohort::Error| e.to_string();
    // Dims whose product overflows.
    let e = msg(SharedArray::<f64, Ix2>::new((usize::MAX / 2, 3), None).unwrap_err());
    assert!(e.contains("too large"), "{e}");
    let e = msg(SharedArray::<u8, Ix2>::new((1 << 62, 1 << 3), None).unwrap_err());
    assert!(e.contains("too large"), "{e}");
    // A zero dim does not excuse an overflowing product of the others.
    let e = msg(SharedArray::<f64, Ix2>::new((0, usize::MAX), None).unwrap_err());
    assert!(e.contains("too large"), "{e}");
    // Bad pid lists.
    let e = msg(SharedArray::<f64, Ix1>::new(3, Some(&[2, 2])).unwrap_err());
    assert!(e.contains("must be non-empty and distinct"), "{e}");
    let e = msg(SharedArray::<f64, Ix1>::new(3, Some(&[])).unwrap_err());
    assert!(e.contains("must be non-empty and distinct"), "{e}");
    // An init that fails on one pid fails the construction, and leaves nothing mapped.
    let ws = workers();
    let mapped_before = mapped_on(&ws);
    let e = SharedArray::<i64, Ix1>::with_init(9, None, init_fails_on_3).unwrap_err();
    assert!(e.to_string().contains("init refused on pid 3"), "{e}");
    assert!(
        matches!(&e, cohort::Error::Remote(r) if r.pid == 3),
        "{e:?}"
    );
    assert!(eventually(Duration::from_secs(5), || mapped_on(&ws) == mapped_before));
    // A file of the wrong size.
    let f = TempPath::new("wrong-size");
    drop(SharedArray::<f64, Ix2>::new_file(&f.0, (4, 4), FileMode::Create, None).unwrap());
    let e =
        msg(SharedArray::<f64, Ix2>::new_file(&f.0, (4, 5), FileMode::ReadOnly, None).unwrap_err());
    assert!(
        e.contains("bytes, expected") && e.contains(&f.0.display().to_string()),
        "{e}"
    );
    let len = std::fs::metadata(&f.0).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f.0)
        .unwrap()
        .set_len(len - 8)
        .unwrap();
    let e = msg(
        SharedArray::<f64, Ix2>::new_file(&f.0, (4, 4), FileMode::ReadWrite, None).unwrap_err(),
    );
    assert!(e.contains("bytes, expected"), "{e}");
    // A file that does not exist.
    let missing = TempPath::new("missing");
    let e = SharedArray::<f64, Ix1>::new_file(&missing.0, 4, FileMode::ReadOnly, None).unwrap_err();
    assert!(matches!(e, cohort::Error::Io { .. }), "{e:?}");
    assert_eq!(own_names(), before);
}

#[allow(clippy::single_range_in_vec_init)] // a 1-D array's list of per-axis ranges has one
fn empty_and_zero_sized_arrays_on_two_workers() {
    let pids = [2, 3];
    let ws = workers();
    let before = own_names();
    let mapped_before = mapped_on(&ws);
    let empty = || (Vec::<f64>::new(), 0..0);
    let report = |r: &EmptyReport| (r.5.clone(), r.3.clone());

    // Julia's SharedArray{Float64}(0; pids = [2, 3]), with an init.
    let s = SharedArray::<f64, Ix1>::with_init(0, Some(&pids), fill_mine_1d).unwrap();
    assert_eq!((s.len(), s.is_empty(), s.pids()), (0, true, &pids[..]));
    assert_eq!((localindices(&s), indexpids(&s)), (0..0, None));
    let got = s.on_pids(report_empty_1d).unwrap();
    assert_eq!(
        got,
        [
            (0, true, Some(0), 0..0, vec![0..0], vec![]),
            (0, true, Some(1), 0..0, vec![0..0], vec![]),
        ]
    );
    // A single remote call, by value, as in `remotecall_fetch(f, 3, S)`.
    let one = remotecall_fetch(report_empty_1d, 3, (s.clone(),)).unwrap();
    assert_eq!(report(&one), empty());
    assert_eq!(s.as_slice().to_vec(), Vec::<f64>::new());
    drop(s);

    // (3, 0): the rows split between the pids, there are no columns.
    let s = SharedArray::<f64, Ix2>::with_init((3, 0), Some(&pids), fill_mine_2d).unwrap();
    let got = s.on_pids(report_empty_2d).unwrap();
    assert_eq!(
        got,
        [
            (0, true, Some(0), 0..0, vec![0..2, 0..0], vec![]),
            (0, true, Some(1), 0..0, vec![2..3, 0..0], vec![]),
        ]
    );
    assert_eq!(s.on_pids(fill_mine_2d).unwrap(), [0.0, 0.0]);
    drop(s);

    // (0, 4): the columns split, there are no rows.
    let s = SharedArray::<f64, Ix2>::new((0, 4), Some(&pids)).unwrap();
    let got = s.on_pids(report_empty_2d).unwrap();
    assert_eq!(
        got,
        [
            (0, true, Some(0), 0..0, vec![0..0, 0..2], vec![]),
            (0, true, Some(1), 0..0, vec![0..0, 2..4], vec![]),
        ]
    );
    assert_eq!(s.view().shape(), &[0, 4]);
    drop(s);

    // Default pids: every worker, each with nothing.
    let s = SharedArray::<f64, Ix1>::new(0, None).unwrap();
    assert_eq!(s.pids(), ws);
    let got = s.on_pids(report_empty_1d).unwrap();
    assert!(got.iter().all(|r| report(r) == empty()), "{got:?}");

    // File-backed: a header-only file, reopened read-only on every pid.
    let f = TempPath::new("empty");
    drop(SharedArray::<f64, Ix2>::new_file(&f.0, (0, 3), FileMode::Create, Some(&pids)).unwrap());
    assert_eq!(std::fs::metadata(&f.0).unwrap().len(), 4096);
    let r =
        SharedArray::<f64, Ix2>::new_file(&f.0, (0, 3), FileMode::ReadOnly, Some(&pids)).unwrap();
    let got = r.on_pids(report_empty_2d).unwrap();
    assert_eq!(got[1], (0, true, Some(1), 0..0, vec![0..0, 2..3], vec![]));
    drop(r);

    // Zero-sized elements: twelve of them, no bytes, split as usual.
    let z = SharedArray::<Marker, Ix2>::new((3, 4), Some(&pids)).unwrap();
    assert_eq!((z.len(), z.is_empty()), (12, false));
    assert_eq!(
        z.on_pids(report_markers).unwrap(),
        [(12, 0..6, 6), (12, 6..12, 6)]
    );
    assert_eq!(z.as_slice().to_vec(), vec![Marker; 12]);

    drop((s, z));
    assert_eq!(own_names(), before, "/dev/shm changed");
    assert!(
        eventually(Duration::from_secs(5), || mapped_on(&ws) == mapped_before),
        "workers still map {:?} (before: {mapped_before:?})",
        mapped_on(&ws)
    );
    // The cluster keeps working with ordinary arrays.
    let s = SharedArray::<i64, Ix2>::with_init((3, 4), None, fill_localindices).unwrap();
    assert_eq!(
        matrix(&s),
        arr2(&[[2, 2, 3, 4], [2, 3, 3, 4], [2, 3, 4, 4]])
    );
}

fn file_backed_array_persists_across_processes() {
    let f = TempPath::new("persist");
    {
        let s = SharedArray::<f64, Ix2>::new_file(&f.0, (5, 2), FileMode::Create, None).unwrap();
        s.on_pids_with(fill_plus, 0.25).unwrap();
        s.flush().unwrap();
    }
    // Reopened here, by path, with its pids reading it.
    let s = SharedArray::<f64, Ix2>::new_file(&f.0, (5, 2), FileMode::ReadOnly, None).unwrap();
    assert!(s.is_read_only());
    let want = [2.25, 2.25, 2.25, 2.25, 3.25, 3.25, 3.25, 4.25, 4.25, 4.25];
    assert_eq!(s.as_slice().to_vec(), want);
    assert!(
        s.on_pids_with(fill_plus, 1.0).is_err(),
        "read-only on every pid"
    );
    drop(s);
    // And read by another program run.
    let out = child("read_file", f.0.to_str().unwrap())
        .output()
        .expect("run the reader");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reader failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("VALUES {want:?}")), "{stdout}");
}

/// The child that reads the file written by the test above.
fn role_read_file(path: &Path) {
    let s = SharedArray::<f64, Ix2>::new_file(path, (5, 2), FileMode::ReadOnly, None).unwrap();
    assert_eq!(s.pids(), [1]);
    println!("VALUES {:?}", s.as_slice().to_vec());
}

fn kill_master_leaves_nothing() {
    // The child master's workers become our children when it dies, so we can reap them.
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let mut c = child("doomed_master", "")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the child master");
    let child_pid = c.id();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    let ready = loop {
        let line = lines
            .next()
            .expect("child master exited early")
            .expect("read");
        if let Some(rest) = line.strip_prefix("READY ") {
            break rest.to_owned();
        }
    };
    let worker_pids: Vec<u32> = ready
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(worker_pids.len(), 2);
    assert!(worker_pids.iter().all(|&p| alive(p)));
    // The array is mapped by three live processes, and already has no name.
    assert!(shm_names_of(child_pid).is_empty());
    kill9(child_pid);
    c.wait().unwrap();
    drop(lines);
    assert!(
        eventually(Duration::from_secs(10), || worker_pids
            .iter()
            .all(|&p| !alive(p))),
        "the dead master's workers still run: {worker_pids:?}"
    );
    for &p in &worker_pids {
        // Reap the orphans (ECHILD if init was quicker).
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p as i32), None);
    }
    nix::sys::prctl::set_child_subreaper(false).expect("PR_SET_CHILD_SUBREAPER");
    assert!(shm_names_of(child_pid).is_empty());
}

/// The child master killed by the test above: two workers map an array it created.
fn role_doomed_master() {
    let ws = addprocs(2).unwrap();
    let s = SharedArray::<i64, Ix2>::with_init((64, 64), None, fill_localindices).unwrap();
    assert_eq!(s.pids(), ws);
    let pids: Vec<String> = ws
        .iter()
        .map(|&p| remotecall_fetch(ospid, p, ()).unwrap().to_string())
        .collect();
    println!("READY {}", pids.join(" "));
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Elements of the arrays the busy master builds: 32 MiB of f64 (construction takes tens of
/// ms here: reserve, attach and prefault on two workers, `init`).
const BUSY_ELEMS: usize = 4 << 20;

/// 50 child masters, each building `BUSY_ELEMS` arrays on two workers and running kernels on
/// them in a loop, killed with `kill -9` at a random moment: half inside a construction, half
/// inside a kernel. After each, the workers exit on their own, and `/dev/shm` holds nothing
/// of the master's or the workers'.
fn kill_master_during_construction_and_kernels_leaves_nothing() {
    const TRIALS: usize = 50;
    // The child masters' workers become our children when their master dies, so we can reap
    // them (and kill them, by pid, should one outlive it).
    struct Subreaper;
    impl Drop for Subreaper {
        fn drop(&mut self) {
            let _ = nix::sys::prctl::set_child_subreaper(false);
        }
    }
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let _subreaper = Subreaper;
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    // Phase 0: construction, 1: kernel. Durations (µs) the children report, to aim the kills.
    let tags = [("CONSTRUCT", "CONSTRUCTED"), ("KERNEL", "KERNELLED")];
    let mut took: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut inside = [0usize; 2];
    let mut left: Vec<String> = Vec::new();
    let mut stuck: Vec<u32> = Vec::new();
    let t0 = std::time::Instant::now();
    for trial in 0..TRIALS {
        let phase = trial % 2;
        let mut c = child("busy_master", "")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child master");
        let master = c.id();
        let out = c.stdout.take().unwrap();
        let mut guard = Trial {
            master: Some(c),
            workers: Vec::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Lines up to the next one starting with `want`, keeping the durations on the way.
        let next = |want: &str, took: &mut [Vec<u64>; 2]| -> String {
            loop {
                let line = rx
                    .recv_timeout(Duration::from_secs(20))
                    .unwrap_or_else(|e| panic!("child master {master}: no {want} line ({e})"));
                for (k, (_, end)) in tags.iter().enumerate() {
                    if let Some(us) = line.strip_prefix(end) {
                        took[k].push(us.trim().parse().unwrap());
                    }
                }
                if line.starts_with(want) {
                    return line;
                }
            }
        };
        let workers: Vec<u32> = next("READY ", &mut took)
            .split_whitespace()
            .skip(1)
            .map(|p| p.parse().unwrap())
            .collect();
        guard.workers.clone_from(&workers);
        assert_eq!(workers.len(), 2);
        // Wait for the first phase start, then kill a random fraction of a typical duration in.
        let typical = {
            let mut d = took[phase].clone();
            d.sort_unstable();
            d.get(d.len() / 2).copied().unwrap_or(20_000)
        };
        next(tags[phase].0, &mut took);
        let delay = rand::Rng::gen_range(&mut rng, 0..typical.max(1));
        std::thread::sleep(Duration::from_micros(delay));
        kill9(master);
        guard.master.take().unwrap().wait().unwrap();
        // What the child printed before it died (the reader ends with the pipe).
        let mut finished = false;
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
            for (k, (_, end)) in tags.iter().enumerate() {
                if let Some(us) = line.strip_prefix(end) {
                    took[k].push(us.trim().parse().unwrap());
                    finished |= k == phase;
                }
            }
        }
        if !finished {
            inside[phase] += 1;
        }
        // The workers notice their master is gone and exit; they are our children now.
        let gone = eventually(Duration::from_secs(10), || {
            workers.iter().all(|&p| !alive(p))
        });
        for &p in &workers {
            if alive(p) {
                stuck.push(p);
                kill9(p);
            }
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p as i32), None);
        }
        guard.workers.clear(); // reaped: their pids may be reused from now on
        assert!(gone || !stuck.is_empty());
        for p in std::iter::once(master).chain(workers) {
            for name in shm_names_of(p) {
                let _ = nix::sys::mman::shm_unlink(format!("/{name}").as_str());
                left.push(name);
            }
        }
    }
    // A phase's median in ms, from the runs that were not killed ("?" when every one was).
    let median = |d: &mut Vec<u64>| {
        d.sort_unstable();
        d.get(d.len() / 2)
            .map_or("?".to_owned(), |us| format!("{}", us / 1000))
    };
    println!(
        "  {TRIALS} kills in {:.1} s: {} inside a construction (median {} ms), {} inside a \
         kernel (median {} ms); {} /dev/shm entries left, {} workers outlived their master",
        t0.elapsed().as_secs_f64(),
        inside[0],
        median(&mut took[0]),
        inside[1],
        median(&mut took[1]),
        left.len(),
        stuck.len()
    );
    assert!(left.is_empty(), "left in /dev/shm (removed now): {left:?}");
    assert!(
        stuck.is_empty(),
        "workers outlived their master (killed now): {stuck:?}"
    );
    assert!(
        inside[0] > 0 && inside[1] > 0,
        "no kill landed inside a phase: {inside:?}"
    );
}

/// A trial's processes, killed (by pid) and reaped if the trial fails half-way.
struct Trial {
    master: Option<std::process::Child>,
    workers: Vec<u32>,
}

impl Drop for Trial {
    fn drop(&mut self) {
        if let Some(c) = &mut self.master {
            let _ = c.kill();
            let _ = c.wait();
        }
        for &p in &self.workers {
            kill9(p);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p as i32), None);
        }
    }
}

/// The child master killed by the test above: it builds arrays on two workers and runs
/// kernels on them, forever, saying when each phase starts and how long it took.
fn role_busy_master() {
    let ws = addprocs(2).unwrap();
    let pids: Vec<String> = ws
        .iter()
        .map(|&p| remotecall_fetch(ospid, p, ()).unwrap().to_string())
        .collect();
    // One round before READY, so that the test knows how long the phases take.
    for round in 0.. {
        if round == 1 {
            println!("READY {}", pids.join(" "));
        }
        println!("CONSTRUCT");
        let t = std::time::Instant::now();
        let s = SharedArray::<f64, Ix1>::with_init(BUSY_ELEMS, None, fill_mine_1d).unwrap();
        println!("CONSTRUCTED {}", t.elapsed().as_micros());
        println!("KERNEL");
        let t = std::time::Instant::now();
        let sums = s.on_pids_with(halve_and_add, 2).unwrap();
        println!("KERNELLED {}", t.elapsed().as_micros());
        assert_eq!(sums.iter().sum::<f64>(), BUSY_ELEMS as f64 * 1.75);
        drop(s);
    }
}

fn kill_worker_leaves_nothing() {
    let before = own_names();
    let new = addprocs(1).unwrap();
    let p = new[0];
    let os = remotecall_fetch(ospid, p, ()).unwrap();
    let s = SharedArray::<i64, Ix1>::with_init(1000, Some(&[2, p]), fill_localindices_1d).unwrap();
    assert_eq!(s.as_slice()[999], p as i64);
    kill9(os);
    assert!(eventually(Duration::from_secs(5), || !workers().contains(&p)));
    // The survivors keep the memory; the dead worker's writes are still there.
    assert_eq!(s.as_slice()[0], 2);
    assert_eq!(s.as_slice()[999], p as i64);
    assert_eq!(own_names(), before);
    drop(s); // releasing on a dead pid is harmless
    assert_eq!(own_names(), before);
    // A new array without the dead pid works; with it, it is refused.
    assert!(SharedArray::<i64, Ix1>::new(10, Some(&[p])).is_err());
    drop(SharedArray::<i64, Ix1>::new(10, None).unwrap());
}

fn advection_versions_agree_bit_for_bit() {
    use kernels::*;
    // 25: columns of 200 bytes and slabs of 5000, so blocks start off the 64-byte lines that
    // the streaming stores write whole.
    for n in [24, 25] {
        let (q, u) = make_arrays(n).unwrap();
        assert_eq!(q.pids(), workers());
        // The seeds' loop, indexed, on private copies.
        let mut qr = Array3::from_shape_vec((n, n, n).f(), q.as_slice().to_vec()).unwrap();
        let ur = Array3::from_shape_vec((n, n, n).f(), u.as_slice().to_vec()).unwrap();
        advection_reference(&mut qr, &ur);
        let want: Vec<u64> = qr
            .as_slice_memory_order()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert!(want.iter().all(|b| !f64::from_bits(*b).is_nan()));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let versions: [(&str, &dyn Fn() -> cohort::Result<()>); 6] = [
            ("serial", &|| advection_serial(&q, &u)),
            ("parallel", &|| advection_parallel(&q, &u)),
            ("shared", &|| advection_shared(&q, &u)),
            ("shared_naive", &|| advection_shared_naive(&q, &u)),
            ("threads", &|| advection_threads(&q, &u, &pool)),
            ("threads_step", &|| advection_threads_step(&q, &u, &pool)),
        ];
        for (name, run) in versions {
            poison(&q).unwrap();
            run().unwrap();
            let got: Vec<u64> = q.as_slice().iter().map(|x| x.to_bits()).collect();
            assert!(
                got == want,
                "{name} differs from the seeds' loop at n = {n}"
            );
        }
    }
}

/// Each loop of the kernel, called directly on private arrays, against the seeds' loop: odd
/// sizes, column chunks that start anywhere, the steps in two calls.
fn advection_kernels_agree_with_the_seeds_loop() {
    use cohort::shm::ndarray::Slice;
    use kernels::*;
    assert!(Kernel::fastest() != Kernel::Naive);
    let (n1, n2, n3) = (13, 23, 9);
    let init = |k: usize| if k < n1 * n2 { q0(k) } else { 0.0 };
    let q =
        Array3::from_shape_vec((n1, n2, n3).f(), (0..n1 * n2 * n3).map(init).collect()).unwrap();
    let u = Array3::from_shape_vec((n1, n2, n3).f(), (0..n1 * n2 * n3).map(u0).collect()).unwrap();
    let mut want = q.clone();
    advection_reference(&mut want, &u);
    for kernel in [Kernel::Naive, Kernel::Blocked, Kernel::Streaming] {
        // The chunks' first columns.
        for starts in [vec![0], vec![0, 3, 4], vec![0, 11]] {
            let ends = starts.iter().skip(1).copied().chain([n2]);
            let parts: Vec<Range<usize>> = starts.iter().zip(ends).map(|(&a, b)| a..b).collect();
            let mut got = q.clone();
            got.slice_axis_mut(Axis(2), Slice::from(1..)).fill(f64::NAN);
            for jr in &parts {
                for tr in [0..4, 4..n3 - 1] {
                    let qc = got.slice_axis_mut(Axis(1), Slice::from(jr.clone()));
                    let uc = u.slice_axis(Axis(1), Slice::from(jr.clone()));
                    advection_chunk(kernel, qc, uc, tr);
                }
            }
            let bits = |a: &Array3<f64>| a.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&got) == bits(&want),
                "{kernel:?} on {parts:?} differs from the seeds' loop"
            );
        }
    }
}

/// The 3×4 seeds' array reshaped to 2×6 on the worker, read there.
#[cohort::remote]
fn reshaped_view(s: SharedArray<i64, Ix2>) -> cohort::Result<(Vec<usize>, i64)> {
    Ok((s.shape().to_vec(), s.try_view()?[[1, 5]]))
}

fn reshape_copy_similar_across_pids() {
    let s = SharedArray::<i64, Ix2>::with_init((3, 4), None, fill_localindices).unwrap();
    let r = s.reshape((2, 6)).unwrap();
    // The worker receives the new shape over its own mapping: element 11 in memory order.
    assert_eq!(
        remotecall_fetch(reshaped_view, 3, (r.clone(),)).unwrap(),
        (vec![2, 6], 4)
    );
    let c = s.deep_copy().unwrap();
    assert_ne!(c.id(), s.id());
    assert_eq!(c.pids(), [2, 3, 4]);
    assert_eq!(matrix(&c), matrix(&s));
    remotecall_fetch(set_elem, 2, (c.reshape(12).unwrap(), 0, 100)).unwrap();
    assert_eq!(c.view()[[0, 0]], 100, "the copy is shared by its pids");
    assert_eq!(s.view()[[0, 0]], 2, "and independent of the original");
    for p in [2, 3, 4] {
        assert!(
            mapped_on(&[p])[0].contains(&c.id()),
            "pid {p} maps the copy"
        );
    }
    let z = s.similar_shared().unwrap();
    assert_eq!(
        (z.pids(), z.shape()),
        ([2, 3, 4].as_slice(), [3, 4].as_slice())
    );
    assert_eq!(matrix(&z).sum(), 0);
    // Julia's similar(S) and Array(S) are private arrays.
    assert_eq!(s.similar().sum(), 0);
    assert_eq!(s.unshare().unwrap(), matrix(&s));
    let (cid, zid) = (c.id(), z.id());
    drop((c, z));
    assert!(eventually(Duration::from_secs(5), || {
        mapped_on(&[2, 3, 4])
            .iter()
            .all(|m| !m.contains(&cid) && !m.contains(&zid))
    }));
}

fn close_on_one_pid_only() {
    let s = SharedArray::<i64, Ix1>::new(10, None).unwrap();
    let id = s.id();
    assert!(s.close_on(3).unwrap(), "pid 3 had it pinned");
    assert!(!s.close_on(3).unwrap(), "and now has not");
    let on = mapped_on(&[2, 3, 4]);
    assert!(on[0].contains(&id) && !on[1].contains(&id) && on[2].contains(&id));
    // Pid 3 can no longer receive it; the others still work on it.
    let e = remotecall_fetch(get_elem, 3, (s.clone(), 0)).unwrap_err();
    assert!(matches!(e, cohort::Error::Codec { pid: 3, .. }), "{e:?}");
    assert!(
        e.to_string().contains("is not mapped in this process"),
        "{e}"
    );
    remotecall_fetch(set_elem, 4, (s.clone(), 9, 7)).unwrap();
    assert_eq!(remotecall_fetch(get_elem, 2, (s.clone(), 9)).unwrap(), 7);
    assert!(matches!(
        s.close_on(99),
        Err(cohort::Error::NoSuchProcess(99))
    ));
    drop(s);
    assert!(eventually(Duration::from_secs(5), || {
        mapped_on(&[2, 4]).iter().all(|m| !m.contains(&id))
    }));
}

fn fill_helpers_fill_every_share() {
    let s = SharedArray::<f64, Ix2>::filled(2.5, (5, 3), None).unwrap();
    assert_eq!(s.pids(), [2, 3, 4]);
    assert_eq!(s.as_slice().to_vec(), vec![2.5; 15]);
    s.fill_all(-1.0).unwrap();
    assert_eq!(s.as_slice().to_vec(), vec![-1.0; 15]);
    // The master alone as the only pid fills it too.
    let one = SharedArray::<u16, Ix1>::filled(7, 4, Some(&[1])).unwrap();
    assert_eq!(one.as_slice().to_vec(), [7, 7, 7, 7]);
    // A pid's share borrowed there for writing fails that pid, by name.
    let w = one.local_chunk_mut(1).unwrap();
    let e = one.fill_all(0).unwrap_err();
    assert!(
        e.to_string().contains("cannot borrow linear elements 0..4"),
        "{e}"
    );
    drop(w);

    // Same seed, same array, whatever the pids; another seed, another array.
    let a = SharedArray::<f64, Ix1>::rand_seeded(10_000, None, 42).unwrap();
    let b = SharedArray::<f64, Ix1>::rand_seeded(10_000, Some(&[2, 3]), 42).unwrap();
    let c = SharedArray::<f64, Ix1>::rand_seeded(10_000, None, 43).unwrap();
    let (a, b, c) = (
        a.unshare().unwrap(),
        b.unshare().unwrap(),
        c.unshare().unwrap(),
    );
    assert_eq!(a, b);
    assert!(a.iter().zip(c.iter()).all(|(x, y)| x != y));
    assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
    let mean = a.sum() / 10_000.0;
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    let f = SharedArray::<f32, Ix1>::rand_seeded(1000, None, 1).unwrap();
    assert!(f.as_slice().iter().all(|x| (0.0..1.0).contains(x)));
    let i = SharedArray::<i64, Ix1>::rand(1000, None).unwrap();
    assert!(i.as_slice().iter().any(|&x| x < 0) && i.as_slice().iter().any(|&x| x > 0));
    let bytes = SharedArray::<u8, Ix1>::rand_seeded(1000, None, 9).unwrap();
    let distinct: BTreeSet<u8> = bytes.as_slice().iter().copied().collect();
    assert!(distinct.len() > 200, "{} distinct bytes", distinct.len());
}

fn fill_of_a_read_only_file_is_refused() {
    let path = TempPath::new("fill-ro");
    drop(SharedArray::<i32, Ix1>::new_file(&path.0, 6, FileMode::Create, None).unwrap());
    let ro = SharedArray::<i32, Ix1>::new_file(&path.0, 6, FileMode::ReadOnly, None).unwrap();
    let e = ro.fill_all(1).unwrap_err();
    assert!(e.to_string().contains("is mapped read-only"), "{e}");
    assert!(
        matches!(e, cohort::Error::Composite(ref v) if v.len() == 3),
        "{e:?}"
    );
    assert_eq!(ro.as_slice().to_vec(), [0; 6]);
}

// ---------- raw file arrays (Julia's `SharedArray{T,N}(filename, dims, offset; mode)`) ----------

/// This pid's view of a 1-D f64 array, as a vector.
#[cohort::remote]
fn values_f64(s: SharedArray<f64, Ix1>) -> cohort::Result<Vec<f64>> {
    Ok(s.try_as_slice()?.to_vec())
}

/// Writes `v` at linear index `k` of a 1-D f64 array.
#[cohort::remote]
fn set_f64(s: SharedArray<f64, Ix1>, k: usize, v: f64) -> cohort::Result<()> {
    // SAFETY: the test has no other process touch element k during this call.
    let mut e = unsafe { s.chunk_mut(k..k + 1) }?;
    e[0] = v;
    Ok(())
}

/// Fills this pid's share with `myid()`.
#[cohort::remote]
fn fill_mine_f64(s: SharedArray<f64, Ix1>) -> cohort::Result<()> {
    s.local_chunk_mut(myid())?.fill(myid() as f64);
    Ok(())
}

/// Raw arrays a worker maps by itself (node-local), kept alive until `drop_held`.
static HELD: std::sync::Mutex<Vec<SharedArray<f64, Ix1>>> = std::sync::Mutex::new(Vec::new());

#[cohort::remote]
fn hold_raw(path: PathBuf, len: usize, offset: u64) -> cohort::Result<SegmentId> {
    let s = SharedArray::<f64, Ix1>::open_raw_file(&path, len, offset, None, &[myid()])?;
    let id = s.id();
    HELD.lock().unwrap().push(s);
    Ok(id)
}

#[cohort::remote]
fn drop_held() -> usize {
    std::mem::take(&mut *HELD.lock().unwrap()).len()
}

/// Every worker still answers a call.
fn cluster_answers() {
    for p in workers() {
        let a = remotecall_fetch(ospid, p, ()).expect("the worker answers");
        assert_eq!(a, remotecall_fetch(ospid, p, ()).unwrap());
    }
}

/// Waits until the workers map what they mapped before (releases are asynchronous).
fn workers_map(before: &[Vec<SegmentId>]) {
    let ws = workers();
    assert!(
        eventually(Duration::from_secs(5), || mapped_on(&ws) == before),
        "workers still map {:?} (before: {before:?})",
        mapped_on(&ws)
    );
}

fn raw_file_read_and_written_on_every_pid() {
    let ws = workers();
    let before = mapped_on(&ws);
    let f = TempPath::new("raw-sample");
    write_sample(&f.0);
    // The default mode for an existing file is "r+": nothing truncated.
    let s = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 6, 16, None, None).unwrap();
    assert_eq!(s.pids(), ws);
    assert!(!s.is_read_only());
    assert_eq!(s.as_slice().to_vec(), VALUES);
    assert_eq!(s.on_pids(values_f64).unwrap(), vec![VALUES.to_vec(); 3]);
    assert!(mapped_on(&ws).iter().all(|m| m.contains(&s.id())));
    // A write from worker 3 reaches the master, worker 2 and the file.
    remotecall_fetch(set_f64, 3, (s.clone(), 4, 99.5)).unwrap();
    assert_eq!(s.as_slice()[4], 99.5);
    assert_eq!(
        remotecall_fetch(values_f64, 2, (s.clone(),)).unwrap()[4],
        99.5
    );
    drop(s);
    let bytes = std::fs::read(&f.0).unwrap();
    assert_eq!(bytes.len(), 16 + 48 + 8);
    assert_eq!(bytes[..16], PREFIX);
    assert_eq!(bytes[16..64], f64_bytes(&[1.5, -2.0, 3.25, 4.0, 99.5, 6.0]));
    assert_eq!(bytes[64..], SUFFIX);
    workers_map(&before);
}

fn raw_file_modes_across_pids() {
    let before = mapped_on(&workers());
    // "w+" truncates an existing file and zero-fills it; an init fills each share.
    let f = TempPath::new("raw-w");
    std::fs::write(&f.0, [0xffu8; 200]).unwrap();
    let s = SharedArray::<f64, Ix1>::new_raw_file_with_init(
        &f.0,
        6,
        16,
        Some(RawMode::Create),
        None,
        fill_mine_f64,
    )
    .unwrap();
    let want = [2.0, 2.0, 3.0, 3.0, 4.0, 4.0];
    assert_eq!(s.as_slice().to_vec(), want);
    drop(s);
    let bytes = std::fs::read(&f.0).unwrap();
    assert_eq!(bytes.len(), 16 + 6 * 8);
    assert_eq!(bytes[..16], [0u8; 16], "the prefix is zero after w+");
    assert_eq!(bytes[16..], f64_bytes(&want));
    workers_map(&before);

    // "a+" creates a missing file.
    let a = TempPath::new("raw-a");
    let s = SharedArray::<f64, Ix1>::new_raw_file(&a.0, 3, 8, Some(RawMode::Append), Some(&[2, 4]))
        .unwrap();
    assert_eq!(std::fs::read(&a.0).unwrap(), [0u8; 8 + 24]);
    assert_eq!(s.on_pids(values_f64).unwrap(), vec![vec![0.0; 3]; 2]);
    drop(s);
    workers_map(&before);
    // "a+" grows an existing shorter file, keeping its bytes; every pid sees them.
    std::fs::write(&a.0, f64_bytes(&[7.0, 8.0])).unwrap();
    let s = SharedArray::<f64, Ix1>::new_raw_file(&a.0, 4, 8, Some(RawMode::Append), None).unwrap();
    assert_eq!(
        s.on_pids(values_f64).unwrap(),
        vec![vec![8.0, 0.0, 0.0, 0.0]; 3]
    );
    drop(s);
    assert_eq!(
        std::fs::read(&a.0).unwrap(),
        f64_bytes(&[7.0, 8.0, 0.0, 0.0, 0.0])
    );
    workers_map(&before);
    // "r+" grows a short file.
    std::fs::write(&a.0, [1u8, 2, 3]).unwrap();
    let s =
        SharedArray::<u8, Ix1>::new_raw_file(&a.0, 4, 2, Some(RawMode::ReadWrite), None).unwrap();
    assert_eq!(s.as_slice().to_vec(), [3, 0, 0, 0]);
    drop(s);
    assert_eq!(std::fs::read(&a.0).unwrap(), [1, 2, 3, 0, 0, 0]);
    workers_map(&before);
    // The default mode for a missing file is "w+": created, zero-filled.
    let missing = TempPath::new("raw-default");
    let s = SharedArray::<f64, Ix1>::new_raw_file(&missing.0, 2, 0, None, None).unwrap();
    assert_eq!(s.on_pids(values_f64).unwrap(), vec![vec![0.0; 2]; 3]);
    drop(s);
    assert_eq!(std::fs::read(&missing.0).unwrap(), [0u8; 16]);
    workers_map(&before);
}

fn raw_file_errors_leave_the_cluster_working() {
    let ws = workers();
    let before = mapped_on(&ws);
    let f = TempPath::new("raw-errors");
    write_sample(&f.0);
    let invalid = |e: cohort::Error, words: &[&str]| {
        let text = e.to_string();
        assert!(matches!(e, cohort::Error::Invalid(_)), "{e:?}");
        for w in words {
            assert!(text.contains(w), "{text:?} lacks {w:?}");
        }
        cluster_answers();
    };
    // A relative path, in both constructors.
    let e = SharedArray::<f64, Ix1>::new_raw_file("rel.bin", 2, 0, None, None).unwrap_err();
    invalid(e, &["rel.bin is not an absolute path"]);
    let e =
        SharedArray::<f64, Ix1>::new_raw_file_with_init("rel.bin", 2, 0, None, None, fill_mine_f64)
            .unwrap_err();
    invalid(e, &["rel.bin is not an absolute path"]);
    assert!(!Path::new("rel.bin").exists());
    // "r" of a missing file.
    let missing = TempPath::new("raw-missing");
    let e = SharedArray::<f64, Ix1>::new_raw_file(&missing.0, 2, 0, Some(RawMode::ReadOnly), None)
        .unwrap_err();
    invalid(e, &["does not exist", "mode \"r\" cannot create it"]);
    // "r" of a file too short, naming the file and both sizes.
    let e = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 8, 16, Some(RawMode::ReadOnly), None)
        .unwrap_err();
    let name = f.0.display().to_string();
    invalid(e, &[name.as_str(), "has 72 bytes", "fewer than the 80"]);
    // A misaligned offset.
    let e = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 2, 4, None, None).unwrap_err();
    invalid(e, &["offset 4 is not a multiple of 8"]);
    // An init cannot write a read-only array.
    let e = SharedArray::<f64, Ix1>::new_raw_file_with_init(
        &f.0,
        6,
        16,
        Some(RawMode::ReadOnly),
        None,
        fill_mine_f64,
    )
    .unwrap_err();
    invalid(e, &["cannot initialize an unwritable array (mode = \"r\")"]);
    // A range that overlaps one the creator maps.
    let a = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 4, 16, None, Some(&[2, 3])).unwrap();
    let e = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 4, 32, None, None).unwrap_err();
    invalid(e, &["overlaps bytes 16..48"]);
    drop(a);
    workers_map(&before);
    // A range that overlaps one worker 2 maps by itself: that pid fails, the others that
    // attached are released.
    let held = remotecall_fetch(hold_raw, 2, (f.0.clone(), 2, 16)).unwrap();
    let with_held = mapped_on(&ws);
    assert!(with_held[0].contains(&held));
    let e = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 4, 24, None, None).unwrap_err();
    assert!(
        matches!(&e, cohort::Error::Remote(r) if r.pid == 2),
        "{e:?}"
    );
    assert!(e.to_string().contains("overlaps bytes 16..32"), "{e}");
    cluster_answers();
    assert!(eventually(Duration::from_secs(5), || mapped_on(&ws) == with_held));
    assert_eq!(remotecall_fetch(drop_held, 2, ()).unwrap(), 1);
    workers_map(&before);
    // A read-only array refuses mutable access on every pid; the file is unchanged.
    let r =
        SharedArray::<f64, Ix1>::new_raw_file(&f.0, 6, 16, Some(RawMode::ReadOnly), None).unwrap();
    assert!(r.is_read_only());
    assert_eq!(r.on_pids(values_f64).unwrap(), vec![VALUES.to_vec(); 3]);
    let e = r.on_pids(fill_mine_f64).unwrap_err();
    assert!(
        matches!(&e, cohort::Error::Composite(v) if v.len() == 3),
        "{e:?}"
    );
    assert!(e.to_string().contains("is mapped read-only"), "{e}");
    assert!(r.local_chunk_mut(1).is_err());
    assert!(r.fill_all(0.0).is_err());
    cluster_answers();
    drop(r);
    let bytes = std::fs::read(&f.0).unwrap();
    assert_eq!(bytes[16..64], f64_bytes(&VALUES));
    workers_map(&before);
}

fn raw_file_ranges_of_one_file() {
    let ws = workers();
    let before = mapped_on(&ws);
    let f = TempPath::new("raw-ranges");
    // Two ranges side by side, at once, on every pid.
    let a = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 4, 0, Some(RawMode::Create), None).unwrap();
    let b = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 4, 32, None, None).unwrap();
    assert_ne!(a.id(), b.id());
    a.fill_all(1.0).unwrap();
    b.fill_all(2.0).unwrap();
    assert_eq!(b.on_pids(values_f64).unwrap(), vec![vec![2.0; 4]; 3]);
    assert_eq!(a.on_pids(values_f64).unwrap(), vec![vec![1.0; 4]; 3]);
    // The same range again is the same memory, on the master and on the workers.
    let a2 = SharedArray::<f64, Ix1>::new_raw_file(&f.0, 4, 0, None, None).unwrap();
    assert_eq!(a2.id(), a.id());
    remotecall_fetch(set_f64, 3, (a2.clone(), 1, 5.0)).unwrap();
    assert_eq!(a.as_slice().to_vec(), [1.0, 5.0, 1.0, 1.0]);
    assert_eq!(
        remotecall_fetch(values_f64, 4, (a.clone(),)).unwrap()[1],
        5.0
    );
    drop((a, b));
    // Still mapped through the second array.
    assert!(mapped_on(&ws).iter().all(|m| m.contains(&a2.id())));
    assert_eq!(a2.on_pids(values_f64).unwrap()[0], [1.0, 5.0, 1.0, 1.0]);
    drop(a2);
    let want: Vec<f64> = [1.0, 5.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0].to_vec();
    assert_eq!(std::fs::read(&f.0).unwrap(), f64_bytes(&want));
    workers_map(&before);
}

use cohort::shm::ndarray::ShapeBuilder;

fn main() {
    // Small cache blocks, so that the advection check at n = 24 runs several blocks per
    // worker, the last one partial. (Set before anything starts a thread; workers inherit it.)
    std::env::set_var("ADVECTION_BLOCK_KIB", "1");
    let cluster = cohort::init().unwrap();
    if let Ok(role) = std::env::var(ROLE) {
        let arg = std::env::var("COHORT_SHM_TEST_ARG").unwrap_or_default();
        match role.as_str() {
            "read_file" => role_read_file(Path::new(&arg)),
            "doomed_master" => role_doomed_master(),
            "busy_master" => role_busy_master(),
            other => panic!("unknown role {other}"),
        }
        drop(cluster);
        return;
    }
    assert_eq!(addprocs(3).unwrap(), [2, 3, 4]);
    common::run(
        cluster,
        &[
            ("seeds_localindices_init", seeds_localindices_init),
            ("seeds_strided_init", seeds_strided_init),
            ("init_with_extra_argument", init_with_extra_argument),
            (
                "write_on_worker_visible_on_master_and_other_worker",
                write_on_worker_visible_on_master_and_other_worker,
            ),
            ("pid_outside_pids_is_an_error", pid_outside_pids_is_an_error),
            ("partitions_of_awkward_sizes", partitions_of_awkward_sizes),
            (
                "drop_and_finalize_release_every_pid",
                drop_and_finalize_release_every_pid,
            ),
            (
                "thousand_create_drop_cycles_leave_nothing",
                thousand_create_drop_cycles_leave_nothing,
            ),
            ("errors_are_clear", errors_are_clear),
            (
                "reshape_copy_similar_across_pids",
                reshape_copy_similar_across_pids,
            ),
            ("close_on_one_pid_only", close_on_one_pid_only),
            (
                "fill_helpers_fill_every_share",
                fill_helpers_fill_every_share,
            ),
            (
                "fill_of_a_read_only_file_is_refused",
                fill_of_a_read_only_file_is_refused,
            ),
            (
                "empty_and_zero_sized_arrays_on_two_workers",
                empty_and_zero_sized_arrays_on_two_workers,
            ),
            (
                "file_backed_array_persists_across_processes",
                file_backed_array_persists_across_processes,
            ),
            (
                "raw_file_read_and_written_on_every_pid",
                raw_file_read_and_written_on_every_pid,
            ),
            ("raw_file_modes_across_pids", raw_file_modes_across_pids),
            (
                "raw_file_errors_leave_the_cluster_working",
                raw_file_errors_leave_the_cluster_working,
            ),
            ("raw_file_ranges_of_one_file", raw_file_ranges_of_one_file),
            (
                "advection_versions_agree_bit_for_bit",
                advection_versions_agree_bit_for_bit,
            ),
            (
                "advection_kernels_agree_with_the_seeds_loop",
                advection_kernels_agree_with_the_seeds_loop,
            ),
            ("kill_master_leaves_nothing", kill_master_leaves_nothing),
            (
                "kill_master_during_construction_and_kernels_leaves_nothing",
                kill_master_during_construction_and_kernels_leaves_nothing,
            ),
            // Last: it removes a worker (by killing it) from this cluster.
            ("kill_worker_leaves_nothing", kill_worker_leaves_nothing),
        ],
        Duration::from_secs(60),
        Vec::new(),
    );
}
