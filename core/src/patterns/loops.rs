//! Distributed loops: the Rust counterpart of `@distributed`.
//!
//! ```text
//! nheads = @distributed (+) for i = 1:200000000
//!     Int(rand(Bool))
//! end
//! ```
//!
//! Julia's macro splits the range into one contiguous part per worker, sends each worker a
//! closure that reduces its part with the reducer, and reduces the partial results on the
//! caller. In cohort the closure is a registered function of its [`Part`] and the captured
//! arguments; inside, [`Part::reduce`] runs the per-index body — an ordinary Rust closure of
//! the index, inlined into the loop — under the loop's reducer:
//!
//! ```ignore
//! use cohort::{distributed_reduce, Part, Reducer};
//!
//! /// The body of `@distributed (+) for i = 1:N; Int(rand(Bool)); end`, one part of it.
//! #[cohort::remote]
//! fn flips(part: Part, seed: u64) -> i64 {
//!     part.reduce(|i| (cohort::loops::mix(seed ^ i as u64) & 1) as i64)
//! }
//!
//! # fn main() -> cohort::Result<()> {
//! # let _c = cohort::init()?;
//! let nheads = distributed_reduce(1..=200_000_000, flips, 42, Reducer::sum())?;
//! # let _ = nheads;
//! # Ok(())
//! # }
//! ```
//!
//! Every iteration is a plain function call inside the worker's loop, never a message: one
//! remote call per worker carries the part and the arguments (copied to each worker, as Julia
//! copies the variables a loop uses). Without a reducer, [`distributed_for`] returns the
//! futures at once and [`sync`] waits for them (`@sync @distributed for`);
//! [`sync_distributed_for`] does both in one, with one message each way per worker.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::remote::fanout::fan_out;
use crate::remote::future::Future;
use crate::runtime::refs::refs_during;
use crate::runtime::registry::RemoteFn;
use crate::wire::codec::{encode_value, Body};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::Arc;

/// The reducer of a distributed loop, as the workers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// `(+)`.
    Sum,
    /// `(*)`.
    Product,
    /// `min`.
    Min,
    /// `max`.
    Max,
    /// An associative function of the caller's (the body applies it with [`Part::fold`]).
    Custom,
    /// No reducer (`distributed_for`).
    None,
}

/// Numbers the built-in reducers work on (every primitive number, and any type with the same
/// operations).
pub trait Num:
    Copy + PartialOrd + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + Send + 'static
{
}
impl<T> Num for T where
    T: Copy + PartialOrd + std::ops::Add<Output = T> + std::ops::Mul<Output = T> + Send + 'static
{
}

fn apply_op<R: Num>(op: Op, a: R, b: R) -> R {
    match op {
        Op::Sum => a + b,
        Op::Product => a * b,
        Op::Min => {
            if b < a {
                b
            } else {
                a
            }
        }
        Op::Max => {
            if b > a {
                b
            } else {
                a
            }
        }
        Op::Custom | Op::None => panic!(
            "Part::reduce: this loop's reducer is a custom function (use Part::fold with it) or none (use Part::for_each)"
        ),
    }
}

/// How a distributed loop combines results: a built-in ([`Reducer::sum`], `product`, `min`,
/// `max`) or any associative function ([`Reducer::new`]).
pub struct Reducer<R> {
    op: Op,
    f: Arc<dyn Fn(R, R) -> R + Send + Sync>,
}

impl<R> Clone for Reducer<R> {
    fn clone(&self) -> Self {
        Reducer {
            op: self.op,
            f: Arc::clone(&self.f),
        }
    }
}

impl<R> std::fmt::Debug for Reducer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reducer({:?})", self.op)
    }
}

impl<R: Num> Reducer<R> {
    fn builtin(op: Op) -> Self {
        Reducer {
            op,
            f: Arc::new(move |a, b| apply_op(op, a, b)),
        }
    }
    /// `(+)`.
    pub fn sum() -> Self {
        Self::builtin(Op::Sum)
    }
    /// `(*)`.
    pub fn product() -> Self {
        Self::builtin(Op::Product)
    }
    /// `min`.
    pub fn min() -> Self {
        Self::builtin(Op::Min)
    }
    /// `max`.
    pub fn max() -> Self {
        Self::builtin(Op::Max)
    }
}

impl<R> Reducer<R> {
    /// Any associative function. The loop body applies the same function to its part with
    /// [`Part::fold`]; the caller combines the partial results with this one.
    pub fn new(f: impl Fn(R, R) -> R + Send + Sync + 'static) -> Self {
        Reducer {
            op: Op::Custom,
            f: Arc::new(f),
        }
    }
    /// The reducer as the workers see it.
    pub fn op(&self) -> Op {
        self.op
    }
    /// Combines two values.
    pub fn apply(&self, a: R, b: R) -> R {
        (self.f)(a, b)
    }
}

/// One worker's share of a distributed loop: a contiguous, non-empty range of indices, with
/// the loop's reducer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// First index.
    pub start: i64,
    /// One past the last index.
    pub end: i64,
    /// The loop's reducer.
    pub op: Op,
    /// Which part this is (0-based).
    pub index: usize,
    /// How many parts the loop has.
    pub parts: usize,
}

impl Part {
    /// The whole of `range` as one part (to run a loop body serially, or in tests).
    pub fn whole(range: impl IntoLoopRange, op: Op) -> Part {
        let r = range.into_loop_range();
        Part {
            start: r.start,
            end: r.end,
            op,
            index: 0,
            parts: 1,
        }
    }
    /// The indices.
    pub fn range(&self) -> Range<i64> {
        self.start..self.end
    }
    /// The number of indices.
    pub fn len(&self) -> usize {
        (self.end - self.start).max(0) as usize
    }
    /// True when the part has no index.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    /// Applies `body` to every index and reduces the values with the loop's reducer (a
    /// built-in one; with a custom reducer use [`Part::fold`]). Panics on an empty part (the
    /// parts a loop makes never are).
    #[inline]
    pub fn reduce<R: Num>(&self, mut body: impl FnMut(i64) -> R) -> R {
        assert!(!self.is_empty(), "Part::reduce on an empty part");
        let mut acc = body(self.start);
        let rest = self.start + 1..self.end;
        match self.op {
            Op::Sum => {
                for i in rest {
                    acc = acc + body(i);
                }
            }
            Op::Product => {
                for i in rest {
                    acc = acc * body(i);
                }
            }
            op => {
                for i in rest {
                    acc = apply_op(op, acc, body(i));
                }
            }
        }
        acc
    }
    /// Applies `body` to every index and reduces the values with `op` (an associative
    /// function: the same as the caller's [`Reducer::new`]). Panics on an empty part.
    #[inline]
    pub fn fold<R>(&self, mut body: impl FnMut(i64) -> R, mut op: impl FnMut(R, R) -> R) -> R {
        assert!(!self.is_empty(), "Part::fold on an empty part");
        let mut acc = body(self.start);
        for i in self.start + 1..self.end {
            acc = op(acc, body(i));
        }
        acc
    }
    /// Applies `body` to every index (a loop without a reducer).
    #[inline]
    pub fn for_each(&self, body: impl FnMut(i64)) {
        self.range().for_each(body)
    }
}

/// Ranges a distributed loop runs over (half-open or inclusive, of integers).
pub trait IntoLoopRange {
    /// The range as `start..end` over `i64`.
    fn into_loop_range(self) -> Range<i64>;
}

macro_rules! loop_ranges {
    ($($t:ty),*) => {$(
        impl IntoLoopRange for Range<$t> {
            fn into_loop_range(self) -> Range<i64> {
                self.start as i64..self.end as i64
            }
        }
        impl IntoLoopRange for std::ops::RangeInclusive<$t> {
            fn into_loop_range(self) -> Range<i64> {
                if self.is_empty() {
                    0..0
                } else {
                    *self.start() as i64..*self.end() as i64 + 1
                }
            }
        }
    )*};
}
loop_ranges!(i64, i32, u32, u64, usize);

/// Splits `range` into at most `n` contiguous, non-empty parts whose lengths differ by at most
/// one, the longer first (Julia's `splitrange`). Fewer parts when the range is shorter.
pub fn split_range(range: Range<i64>, n: usize) -> Vec<Range<i64>> {
    let len = (range.end as i128 - range.start as i128).max(0) as u128;
    if len == 0 || n == 0 {
        return Vec::new();
    }
    let k = (n as u128).min(len);
    let each = len / k;
    let extra = len % k;
    let mut out = Vec::with_capacity(k as usize);
    let mut lo = range.start as i128;
    for i in 0..k {
        let l = each + u128::from(i < extra);
        let hi = lo + l as i128;
        out.push(lo as i64..hi as i64);
        lo = hi;
    }
    out
}

fn plan(range: Range<i64>, op: Op) -> Vec<(Pid, Part)> {
    let ws = crate::runtime::cluster::workers();
    let chunks = split_range(range, ws.len());
    let parts = chunks.len();
    chunks
        .into_iter()
        .zip(ws)
        .enumerate()
        .map(|(index, (r, pid))| {
            (
                pid,
                Part {
                    start: r.start,
                    end: r.end,
                    op,
                    index,
                    parts,
                },
            )
        })
        .collect()
}

/// Runs a reducing loop over `range` on the workers and returns the reduced value.
///
/// The range is split once, statically, into one contiguous non-empty part per worker (fewer
/// when it is shorter than the number of workers; the master alone when there are no
/// workers). Each worker runs `body(part, args)`, which reduces its part (see
/// [`Part::reduce`]); the caller combines the partial results in part order with `reducer`.
/// An empty range is an error, as a reduction over nothing is in Julia.
///
/// Errors: the first failing part's error, in part order.
///
/// # Julia
/// `@distributed (reducer) for i = range body end`.
pub fn distributed_reduce<F, A, R>(
    range: impl IntoLoopRange,
    body: F,
    args: A,
    reducer: Reducer<R>,
) -> Result<R>
where
    F: RemoteFn<(Part, A), Output = R>,
    A: Serialize + Clone + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    let parts = plan(range.into_loop_range(), reducer.op());
    if parts.is_empty() {
        return Err(Error::invalid(
            "distributed_reduce over an empty range has no value",
        ));
    }
    let partials = run_parts(&parts, body, &args)?;
    let mut acc: Option<R> = None;
    for p in partials {
        let v = p?;
        acc = Some(match acc {
            None => v,
            Some(a) => reducer.apply(a, v),
        });
    }
    Ok(acc.expect("at least one part"))
}

/// Runs `body(part, args)` for every part and returns each part's result, in part order: one
/// call per worker whose reply carries the value (one message each way), all in flight at
/// once; a part planned on the caller (no workers) runs here meanwhile.
fn run_parts<F, A, R>(parts: &[(Pid, Part)], body: F, args: &A) -> Result<Vec<Result<R>>>
where
    F: RemoteFn<(Part, A), Output = R>,
    A: Serialize + Clone + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    let pids: Vec<Pid> = parts.iter().map(|(pid, _)| *pid).collect();
    let name = body.name();
    // A call's arguments `(part, args)` encode as the part's bytes then the args' (a tuple
    // is its elements in order), so the args are encoded once for every part, unless they
    // hold a remote reference: its encoding splits the reference's weight, once per message.
    let mut shared: Option<Vec<u8>> = None;
    fan_out(
        body,
        &pids,
        |i| {
            let mut out = encode_value(&parts[i].1, name)?;
            match &shared {
                Some(tail) => out.extend_from_slice(tail),
                None => {
                    let (tail, met) = refs_during(|| encode_value(args, name));
                    let tail = tail?;
                    out.extend_from_slice(&tail);
                    if !met {
                        shared = Some(tail);
                    }
                }
            }
            Ok(Body::Owned(out))
        },
        |i| (parts[i].1, args.clone()),
    )
}

/// Runs a loop over `range` on the workers without a reducer and waits until every part is
/// done; returns each part's value, in part order (empty for an empty range).
///
/// The same split as [`distributed_for`] followed by [`sync`], at the cost of one message each
/// way per worker instead of two (the value comes back with the reply to the call), which
/// matters when the loop itself runs in a loop, as the time steps of a simulation do.
///
/// Errors: an [`Error::Composite`] naming each part's pid and error when any part failed.
///
/// # Julia
/// `@sync @distributed for i = range body end`.
pub fn sync_distributed_for<F, A>(
    range: impl IntoLoopRange,
    body: F,
    args: A,
) -> Result<Vec<F::Output>>
where
    F: RemoteFn<(Part, A)>,
    A: Serialize + Clone + Send + 'static,
    F::Output: DeserializeOwned,
{
    let parts = plan(range.into_loop_range(), Op::None);
    let results = run_parts(&parts, body, &args)?;
    crate::base::error::all_or_composite(parts.iter().map(|(pid, _)| *pid).zip(results))
}

/// Starts a loop over `range` on the workers without a reducer and returns at once with one
/// [`Future`] per part (empty for an empty range). [`sync`] waits for them all.
///
/// # Julia
/// `@distributed for i = range body end` (and `@sync @distributed for ...` with [`sync`]).
pub fn distributed_for<F, A>(
    range: impl IntoLoopRange,
    body: F,
    args: A,
) -> Result<Vec<Future<F::Output>>>
where
    F: RemoteFn<(Part, A)>,
    A: Serialize + Clone + Send + 'static,
    F::Output: Serialize,
{
    plan(range.into_loop_range(), Op::None)
        .into_iter()
        .map(|(pid, part)| crate::remote::calls::remotecall(body, pid, (part, args.clone())))
        .collect()
}

/// Waits until every future is done and returns the errors of those that failed, as one
/// [`Error::Composite`] naming each owner.
///
/// # Julia
/// `@sync` around `@distributed for` (or `foreach(wait, futures)`).
pub fn sync<T>(futures: &[Future<T>]) -> Result<()>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
{
    let results = crate::remote::future::fetch_all(futures)
        .into_iter()
        .map(|r| r.map(drop));
    crate::base::error::all_or_composite(futures.iter().map(|f| f.owner()).zip(results)).map(drop)
}

/// A fast 64-bit mixing function (SplitMix64's finaliser): `mix(seed ^ i)` gives each index
/// of a loop an independent-looking random word, the same on every process, so a loop's
/// result does not depend on how it was split.
#[inline]
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_julia_like() {
        assert_eq!(split_range(1..11, 3), vec![1..5, 5..8, 8..11]);
        assert_eq!(split_range(0..2, 4), vec![0..1, 1..2]);
        assert!(split_range(5..5, 3).is_empty());
        assert_eq!(split_range(0..4, 1), vec![0..4]);
        assert_eq!((1..=10).into_loop_range(), 1..11);
    }

    #[test]
    fn part_reductions() {
        let p = |op| Part::whole(1..=5, op);
        assert_eq!(p(Op::Sum).reduce(|i| i), 15);
        assert_eq!(p(Op::Product).reduce(|i| i), 120);
        assert_eq!(p(Op::Min).reduce(|i| (i - 3).abs()), 0);
        assert_eq!(p(Op::Max).reduce(|i| i * 2), 10);
        assert_eq!(
            p(Op::Custom).fold(|i| i.to_string(), |a, b| a + &b),
            "12345"
        );
    }
}
