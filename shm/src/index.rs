//! Index arithmetic on plain numbers: element counts, partitions, regions.
//!
//! Nothing here touches memory, so every function can be unit-tested (and run under miri)
//! without a mapping. [`SharedArray`](crate::SharedArray) calls these with its own shape and pids.
//!
//! All indices are **0-based** and linear indices are **column-major** (first index fastest),
//! as in Julia: element `(i, j)` of an `m × n` array has linear index `i + m * j`.

use std::fmt;
use std::ops::Range;

/// Number of elements of an array with these dims, or `None` if the product overflows `usize`.
///
/// The empty product is 1 (a 0-dimensional array holds one element).
pub fn checked_len(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Part `part` (0-based) of `n` items split into `nparts` contiguous parts.
///
/// Every part gets `n / nparts` items, and the first `n % nparts` parts get one more, so part
/// sizes differ by at most one and the parts, in order, cover `0..n` exactly. This is the split of
/// Distributed.jl's `splitrange`. When `n < nparts` the last `nparts - n` parts are empty.
///
/// A `part >= nparts` (including any part when `nparts == 0`) gets the empty range `0..0`.
pub fn split_part(n: usize, nparts: usize, part: usize) -> Range<usize> {
    if part >= nparts {
        return 0..0;
    }
    let base = n / nparts;
    let extra = n % nparts;
    // No overflow: part < nparts, so part * base <= n - base and part.min(extra) <= extra.
    let start = part * base + part.min(extra);
    let len = base + usize::from(part < extra);
    start..start + len
}

/// All `nparts` parts of `n` items, as given by [`split_part`]. Empty if `nparts == 0`.
pub fn split(n: usize, nparts: usize) -> Vec<Range<usize>> {
    (0..nparts).map(|p| split_part(n, nparts, p)).collect()
}

/// Position (0-based) of `pid` in `pids`, Julia's `indexpids` minus one.
pub fn index_of<P: PartialEq>(pids: &[P], pid: &P) -> Option<usize> {
    pids.iter().position(|p| p == pid)
}

/// Whether `range` lies within `0..len` (an empty range must still start within `0..=len`).
pub fn range_in_bounds(range: &Range<usize>, len: usize) -> bool {
    range.start <= range.end && range.end <= len
}

/// Bytes `start..end` widened to whole pages of `page` bytes (`page` a power of two).
///
/// Returns the empty range `s..s` when `start >= end`.
pub fn page_span(start: usize, end: usize, page: usize) -> Range<usize> {
    debug_assert!(page.is_power_of_two());
    if start >= end {
        let s = start & !(page - 1);
        return s..s;
    }
    let lo = start & !(page - 1);
    // `end <= isize::MAX` for any mapped range, so rounding up cannot overflow.
    let hi = end.div_ceil(page) * page;
    lo..hi
}

/// A set of elements of an array, used to track in-process borrows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Region {
    /// The elements with linear (column-major) indices in the range.
    Linear(Range<usize>),
    /// The elements whose index along `axis` lies in `range` (all indices on the other axes).
    Axis {
        /// The axis (0-based).
        axis: usize,
        /// Indices along that axis.
        range: Range<usize>,
    },
}

impl Region {
    /// Whether the region holds no element of an array with these dims.
    pub fn is_empty(&self, dims: &[usize]) -> bool {
        let range = match self {
            Region::Linear(r) | Region::Axis { range: r, .. } => r,
        };
        range.start >= range.end || checked_len(dims) == Some(0)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Region::Linear(r) => write!(f, "linear elements {}..{}", r.start, r.end),
            Region::Axis { axis, range } => {
                write!(f, "indices {}..{} of axis {axis}", range.start, range.end)
            }
        }
    }
}

/// Whether two regions of an array with these dims share an element.
///
/// Preconditions (checked by the callers): axes are `< dims.len()`, axis ranges lie within
/// `0..dims[axis]`, linear ranges within `0..checked_len(dims)`.
pub fn overlaps(dims: &[usize], a: &Region, b: &Region) -> bool {
    if a.is_empty(dims) || b.is_empty(dims) {
        return false;
    }
    match (a, b) {
        (Region::Linear(x), Region::Linear(y)) => x.start < y.end && y.start < x.end,
        (Region::Axis { axis: ax, range: x }, Region::Axis { axis: ay, range: y }) => {
            // Two axis slabs on different axes always cross (pick the coordinates independently).
            ax != ay || (x.start < y.end && y.start < x.end)
        }
        (Region::Linear(l), Region::Axis { axis, range })
        | (Region::Axis { axis, range }, Region::Linear(l)) => {
            linear_meets_axis(dims, l, *axis, range)
        }
    }
}

/// Whether some linear index in `l` has its coordinate on `axis` within `r` (both non-empty).
fn linear_meets_axis(dims: &[usize], l: &Range<usize>, axis: usize, r: &Range<usize>) -> bool {
    // Column-major: coordinate `axis` of linear index x is (x / inner) % d.
    let inner: usize = dims[..axis].iter().product();
    let d = dims[axis];
    let q0 = l.start / inner;
    let q1 = (l.end - 1) / inner;
    if q1 - q0 + 1 >= d {
        return true; // the blocks in `l` run through every value of the coordinate
    }
    let (c0, c1) = (q0 % d, q1 % d);
    if c0 <= c1 {
        r.start <= c1 && c0 < r.end
    } else {
        // The coordinate wraps: it takes values c0..d, then 0..=c1.
        r.end > c0 || r.start <= c1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_partition(n: usize, k: usize) {
        let parts = split(n, k);
        assert_eq!(parts.len(), k);
        let mut next = 0;
        for (p, r) in parts.iter().enumerate() {
            if r.is_empty() {
                // Empty parts come last, after every element has been handed out.
                assert!(next == n, "n={n} k={k}: empty part {p} before the end");
                continue;
            }
            assert_eq!(r.start, next, "n={n} k={k}: gap or overlap at part {p}");
            next = r.end;
        }
        assert_eq!(next, n, "n={n} k={k}: parts do not cover everything");
        let sizes: Vec<usize> = parts.iter().map(|r| r.len()).collect();
        let (min, max) = (sizes.iter().min(), sizes.iter().max());
        if let (Some(min), Some(max)) = (min, max) {
            assert!(max - min <= 1, "n={n} k={k}: unbalanced {sizes:?}");
        }
        // Earlier parts get the extra element.
        assert!(
            sizes.windows(2).all(|w| w[0] >= w[1]),
            "n={n} k={k}: {sizes:?}"
        );
    }

    #[test]
    fn split_partitions_many_sizes() {
        for n in 0..60 {
            for k in 1..12 {
                check_partition(n, k);
            }
        }
        check_partition(1_000_003, 7); // prime length
        check_partition(usize::MAX, 3);
    }

    #[test]
    fn split_examples() {
        // 12 elements on 3 pids: the SharedArrays.jl manual's 3×4 example.
        assert_eq!(split(12, 3), vec![0..4, 4..8, 8..12]);
        // Prime length: the extra elements go to the first parts.
        assert_eq!(split(13, 4), vec![0..4, 4..7, 7..10, 10..13]);
        assert_eq!(split(7, 3), vec![0..3, 3..5, 5..7]);
        // Fewer elements than parts: one each, then empty.
        assert_eq!(split(2, 4), vec![0..1, 1..2, 2..2, 2..2]);
        // Zero elements: all empty.
        assert_eq!(split(0, 3), vec![0..0, 0..0, 0..0]);
        assert!(split(5, 0).is_empty());
        assert_eq!(split_part(5, 2, 2), 0..0);
        assert_eq!(split_part(5, 0, 0), 0..0);
    }

    #[test]
    fn checked_len_overflow_and_empty() {
        assert_eq!(checked_len(&[]), Some(1));
        assert_eq!(checked_len(&[3, 4, 5]), Some(60));
        assert_eq!(checked_len(&[3, 0, 5]), Some(0));
        assert_eq!(checked_len(&[usize::MAX, 2]), None);
        assert_eq!(checked_len(&[1 << 32, 1 << 32]), None);
    }

    #[test]
    fn index_of_pids() {
        assert_eq!(index_of(&[2, 3, 4], &3), Some(1));
        assert_eq!(index_of(&[2, 3, 4], &1), None);
    }

    #[test]
    fn bounds() {
        assert!(range_in_bounds(&(0..0), 0));
        assert!(range_in_bounds(&(3..5), 5));
        assert!(!range_in_bounds(&(3..6), 5));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 4..2;
        assert!(!range_in_bounds(&backwards, 5));
    }

    #[test]
    fn page_spans() {
        assert_eq!(page_span(0, 1, 4096), 0..4096);
        assert_eq!(page_span(4095, 4097, 4096), 0..8192);
        assert_eq!(page_span(4096, 8192, 4096), 4096..8192);
        assert_eq!(page_span(5000, 5000, 4096), 4096..4096);
    }

    /// Column-major coordinates of linear index `x`.
    fn coords(dims: &[usize], mut x: usize) -> Vec<usize> {
        dims.iter()
            .map(|&d| {
                let c = x % d;
                x /= d;
                c
            })
            .collect()
    }

    fn contains(dims: &[usize], r: &Region, x: usize) -> bool {
        match r {
            Region::Linear(l) => l.contains(&x),
            Region::Axis { axis, range } => range.contains(&coords(dims, x)[*axis]),
        }
    }

    fn all_regions(dims: &[usize]) -> Vec<Region> {
        let n = checked_len(dims).unwrap();
        let mut out = Vec::new();
        for s in 0..=n {
            for e in s..=n {
                out.push(Region::Linear(s..e));
            }
        }
        for (axis, &d) in dims.iter().enumerate() {
            for s in 0..=d {
                for e in s..=d {
                    out.push(Region::Axis { axis, range: s..e });
                }
            }
        }
        out
    }

    #[test]
    fn overlaps_matches_brute_force() {
        for dims in [
            vec![3, 4],
            vec![2, 3, 2],
            vec![5],
            vec![1, 4, 1],
            vec![2, 2, 2, 2],
        ] {
            let n = checked_len(&dims).unwrap();
            let regions = all_regions(&dims);
            for a in &regions {
                for b in &regions {
                    let brute = (0..n).any(|x| contains(&dims, a, x) && contains(&dims, b, x));
                    assert_eq!(overlaps(&dims, a, b), brute, "dims {dims:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn region_display() {
        assert_eq!(Region::Linear(2..5).to_string(), "linear elements 2..5");
        let r = Region::Axis {
            axis: 1,
            range: 0..2,
        };
        assert_eq!(r.to_string(), "indices 0..2 of axis 1");
    }
}
