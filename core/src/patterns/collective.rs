//! MPI-style collective operations over the cluster's links: `barrier`, `broadcast`, `reduce`,
//! `all_reduce`, `gather`, `scatter`.
//!
//! # Collective
//! Every process of the group (all of `procs()`, ranked in pid order: rank = position) must
//! call the same collectives in the same order, as in MPI; typically each runs the same
//! function, started with `everywhere` or one `remotecall` per worker plus the master's own
//! part. Over byte-stream transports the data moves along binomial trees (`log2(n)` rounds;
//! no process talks to all others); large numeric payloads travel as raw bytes.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::remote::coll::{self, native, next_seq};
use crate::runtime::exec;
use crate::wire::codec::{self, Body};
use bytemuck::Pod;

/// An associative reduction of `T`, applied element by element.
pub struct Op<T> {
    f: fn(&T, &T) -> T,
    kind: OpKind,
}

impl<T> Clone for Op<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Op<T> {}

pub use crate::links::transport::OpKind;

/// Numbers the built-in operations apply to.
pub trait Number:
    Pod + PartialOrd + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + Send + Sync
{
}
impl<T: Pod + PartialOrd + std::ops::Add<Output = T> + std::ops::Mul<Output = T> + Send + Sync>
    Number for T
{
}

impl<T: Number> Op<T> {
    /// `+`.
    pub fn sum() -> Self {
        Op {
            f: |a, b| *a + *b,
            kind: OpKind::Sum,
        }
    }
    /// `*`.
    pub fn prod() -> Self {
        Op {
            f: |a, b| *a * *b,
            kind: OpKind::Prod,
        }
    }
    /// `min` (the first of equals).
    pub fn min() -> Self {
        Op {
            f: |a, b| if *b < *a { *b } else { *a },
            kind: OpKind::Min,
        }
    }
    /// `max` (the first of equals).
    pub fn max() -> Self {
        Op {
            f: |a, b| if *b > *a { *b } else { *a },
            kind: OpKind::Max,
        }
    }
}

impl<T> Op<T> {
    /// A user operation; it must be associative (`f(f(a, b), c) == f(a, f(b, c))`).
    pub fn custom(f: fn(&T, &T) -> T) -> Self {
        Op {
            f,
            kind: OpKind::Custom,
        }
    }
    /// Which operation this is.
    pub fn kind(&self) -> OpKind {
        self.kind
    }
    fn apply(&self, acc: &mut [T], other: &[T]) {
        for (a, b) in acc.iter_mut().zip(other) {
            *a = (self.f)(a, b);
        }
    }
}

fn dtype_of<T: 'static>() -> Option<crate::links::transport::DType> {
    use crate::links::transport::DType;
    use std::any::TypeId;
    let t = TypeId::of::<T>();
    [
        (TypeId::of::<f64>(), DType::F64),
        (TypeId::of::<f32>(), DType::F32),
        (TypeId::of::<i64>(), DType::I64),
        (TypeId::of::<i32>(), DType::I32),
        (TypeId::of::<u64>(), DType::U64),
        (TypeId::of::<u32>(), DType::U32),
        (TypeId::of::<u8>(), DType::U8),
    ]
    .into_iter()
    .find(|(id, _)| *id == t)
    .map(|(_, d)| d)
}

fn mpi_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("MPI {what}"), e)
}

/// The group a collective runs over: every process, by pid.
fn group() -> Result<(Vec<Pid>, usize)> {
    let me = crate::base::ids::myid();
    let g = crate::runtime::cluster::procs();
    let r = g
        .iter()
        .position(|&p| p == me)
        .ok_or_else(|| Error::invalid(format!("pid {me} is not in the group {g:?}")))?;
    Ok((g, r))
}

/// This process's rank in the group of all processes (0 for the master).
///
/// # MPI
/// `MPI_Comm_rank`.
pub fn rank() -> Result<usize> {
    group().map(|(_, r)| r)
}

/// The number of processes.
///
/// # MPI
/// `MPI_Comm_size`.
pub fn size() -> usize {
    crate::runtime::cluster::procs().len()
}

fn send<T: Pod>(to: Pid, seq: u64, data: &[T]) -> Result<()> {
    let body = Body::Raw {
        prefix: codec::Prefix::count(data.len()),
        bytes: bytemuck::cast_slice(data),
    };
    coll::send(to, seq, &body)
}

fn send_bytes(to: Pid, seq: u64, b: Vec<u8>) -> Result<()> {
    coll::send(to, seq, &Body::Owned(b))
}

fn recv<T: Pod>(from: Pid, seq: u64) -> Result<Vec<T>> {
    let f = coll::recv(from, seq)?;
    if std::mem::size_of::<T>() == 8 && std::mem::align_of::<T>() == 8 {
        match f.into_raw8::<T>() {
            Ok(v) => return Ok(v),
            Err(f) => return decode_pod(&f.body()),
        }
    }
    decode_pod(&f.body())
}

fn decode_pod<T: Pod>(b: &[u8]) -> Result<Vec<T>> {
    let bad = || Error::Protocol("malformed collective message".into());
    let n = u64::from_le_bytes(b.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let data = &b[8..];
    if n.checked_mul(std::mem::size_of::<T>()) != Some(data.len()) {
        return Err(bad());
    }
    Ok(bytemuck::pod_collect_to_vec(data))
}

fn recv_bytes(from: Pid, seq: u64) -> Result<Vec<u8>> {
    Ok(coll::recv(from, seq)?.body().into_owned())
}

/// Blocks until every process has called `barrier`.
///
/// # MPI
/// `MPI_Barrier`.
pub fn barrier() -> Result<()> {
    if let Some(n) = native() {
        let _b = exec::blocking();
        return n.barrier().map_err(mpi_err("barrier"));
    }
    all_reduce(&[0u8], Op::custom(|a, _| *a)).map(drop)
}

/// Sends `data` from `root` to every process; returns it everywhere. Only the root's `data`
/// is used.
///
/// # MPI
/// `MPI_Bcast`.
pub fn broadcast<T: Pod>(root: usize, data: &[T]) -> Result<Vec<T>> {
    let (g, r) = group()?;
    let n = g.len();
    check_root(root, n)?;
    if let Some(nc) = native() {
        let _b = exec::blocking();
        let b = nc
            .broadcast(root, bytemuck::cast_slice(data))
            .map_err(mpi_err("broadcast"))?;
        if b.len() % std::mem::size_of::<T>().max(1) != 0 {
            return Err(Error::Protocol(
                "broadcast: length is not a whole number of elements".into(),
            ));
        }
        return Ok(bytemuck::pod_collect_to_vec(&b));
    }
    let seq = next_seq(&g)?;
    let v = (r + n - root) % n;
    let abs = |rel: usize| g[(rel + root) % n];
    let mut buf: Option<Vec<T>> = if v == 0 { Some(data.to_vec()) } else { None };
    let mut mask = 1;
    while mask < n {
        if v & mask != 0 {
            buf = Some(recv(abs(v - mask), seq)?);
            break;
        }
        mask <<= 1;
    }
    let buf = buf.expect("root has data, others received it");
    mask >>= 1;
    while mask > 0 {
        if v + mask < n {
            send(abs(v + mask), seq, &buf)?;
        }
        mask >>= 1;
    }
    Ok(buf)
}

/// Combines every process's `data` element by element with `op`; the root gets
/// `Some(result)`, the others `None`. Every process passes the same length.
///
/// # MPI
/// `MPI_Reduce`.
pub fn reduce<T: Pod + 'static>(root: usize, data: &[T], op: Op<T>) -> Result<Option<Vec<T>>> {
    let (g, r) = group()?;
    let n = g.len();
    check_root(root, n)?;
    if let (Some(nc), Some(dt), true) = (native(), dtype_of::<T>(), op.kind != OpKind::Custom) {
        let _b = exec::blocking();
        let mut out = (r == root).then(|| data.to_vec());
        nc.reduce(
            root,
            dt,
            op.kind,
            bytemuck::cast_slice(data),
            out.as_deref_mut().map(bytemuck::cast_slice_mut),
        )
        .map_err(mpi_err("reduce"))?;
        return Ok(out);
    }
    let seq = next_seq(&g)?;
    let v = (r + n - root) % n;
    let abs = |rel: usize| g[(rel + root) % n];
    let mut acc = data.to_vec();
    let mut mask = 1;
    while mask < n {
        if v & mask == 0 {
            let src = v | mask;
            if src < n {
                let other: Vec<T> = recv(abs(src), seq)?;
                if other.len() != acc.len() {
                    return Err(Error::invalid(format!(
                        "reduce: rank {} passed {} elements, rank {r} passed {}",
                        (src + root) % n,
                        other.len(),
                        acc.len()
                    )));
                }
                op.apply(&mut acc, &other);
            }
        } else {
            send(abs(v & !mask), seq, &acc)?;
            return Ok(None);
        }
        mask <<= 1;
    }
    Ok(Some(acc))
}

/// Like [`reduce`], with the result on every process.
///
/// # MPI
/// `MPI_Allreduce`.
pub fn all_reduce<T: Pod + 'static>(data: &[T], op: Op<T>) -> Result<Vec<T>> {
    if let (Some(nc), Some(dt), true) = (native(), dtype_of::<T>(), op.kind != OpKind::Custom) {
        let _b = exec::blocking();
        let mut out = data.to_vec();
        nc.all_reduce(
            dt,
            op.kind,
            bytemuck::cast_slice(data),
            bytemuck::cast_slice_mut(&mut out),
        )
        .map_err(mpi_err("all_reduce"))?;
        return Ok(out);
    }
    let r = reduce(0, data, op)?;
    broadcast(0, r.as_deref().unwrap_or(&[]))
}

/// Collects every process's `data` on the root, in rank order: `Some(parts)` on the root.
///
/// # MPI
/// `MPI_Gatherv`.
pub fn gather<T: Pod>(root: usize, data: &[T]) -> Result<Option<Vec<Vec<T>>>> {
    let (g, r) = group()?;
    let n = g.len();
    check_root(root, n)?;
    let seq = next_seq(&g)?;
    let v = (r + n - root) % n;
    let abs = |rel: usize| g[(rel + root) % n];
    // Each node holds the parts of its subtree, keyed by relative rank.
    let mut parts: Vec<(u64, Vec<u8>)> = vec![(v as u64, bytemuck::cast_slice(data).to_vec())];
    let mut mask = 1;
    while mask < n {
        if v & mask == 0 {
            let src = v | mask;
            if src < n {
                let b = recv_bytes(abs(src), seq)?;
                let sub: Vec<(u64, Vec<u8>)> =
                    codec::decode(&b).map_err(|e| Error::Protocol(format!("gather: {e}")))?;
                parts.extend(sub);
            }
        } else {
            let b = codec::encode_vec(&parts).map_err(|e| Error::Protocol(e.to_string()))?;
            send_bytes(abs(v & !mask), seq, b)?;
            return Ok(None);
        }
        mask <<= 1;
    }
    parts.sort_by_key(|(rel, _)| (*rel as usize + root) % n);
    Ok(Some(
        parts
            .into_iter()
            .map(|(_, b)| bytemuck::pod_collect_to_vec(&b))
            .collect(),
    ))
}

/// Sends part `i` of the root's `parts` to rank `i`; returns this process's part. Only the
/// root's `parts` is used (one per process).
///
/// # MPI
/// `MPI_Scatterv`.
pub fn scatter<T: Pod>(root: usize, parts: Option<&[Vec<T>]>) -> Result<Vec<T>> {
    let (g, r) = group()?;
    let n = g.len();
    check_root(root, n)?;
    let seq = next_seq(&g)?;
    let v = (r + n - root) % n;
    let abs = |rel: usize| g[(rel + root) % n];
    // Parts of this node's subtree, by relative rank.
    let mut mine: Vec<(u64, Vec<u8>)> = if v == 0 {
        let p = parts.ok_or_else(|| Error::invalid("scatter: the root must pass the parts"))?;
        if p.len() != n {
            return Err(Error::invalid(format!(
                "scatter: {} parts for {n} processes",
                p.len()
            )));
        }
        (0..n)
            .map(|rel| {
                (
                    rel as u64,
                    bytemuck::cast_slice(&p[(rel + root) % n]).to_vec(),
                )
            })
            .collect()
    } else {
        let mut mask = 1;
        loop {
            if v & mask != 0 {
                let b = recv_bytes(abs(v - mask), seq)?;
                break codec::decode(&b).map_err(|e| Error::Protocol(format!("scatter: {e}")))?;
            }
            mask <<= 1;
        }
    };
    // Hand each child the parts of its subtree: child v+m covers [v+m, v+2m).
    let mut mask = 1;
    while mask < n && v & mask == 0 {
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        let child = v + mask;
        if child < n {
            let (theirs, keep): (Vec<_>, Vec<_>) = mine
                .into_iter()
                .partition(|(rel, _)| (*rel as usize) >= child && (*rel as usize) < child + mask);
            mine = keep;
            let b = codec::encode_vec(&theirs).map_err(|e| Error::Protocol(e.to_string()))?;
            send_bytes(abs(child), seq, b)?;
        }
        mask >>= 1;
    }
    let own = mine
        .into_iter()
        .find(|(rel, _)| *rel as usize == v)
        .map(|(_, b)| b)
        .unwrap_or_default();
    Ok(bytemuck::pod_collect_to_vec(&own))
}

fn check_root(root: usize, n: usize) -> Result<()> {
    if root >= n {
        return Err(Error::invalid(format!(
            "root rank {root} is not below the group size {n}"
        )));
    }
    Ok(())
}
