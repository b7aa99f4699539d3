//! The seeds' first section: remote calls, futures, spawnat.
//!
//! ```text
//! r = remotecall(rand, 2, 2, 2)
//! s = @spawnat 2 1 .+ fetch(r)
//! fetch(s)
//! remotecall_fetch(r -> fetch(r)[1, 1], 2, r)
//! r = @spawnat :any rand(2,2); s = @spawnat :any 1 .+ fetch(r)
//! ```
use cohort::prelude::*;

/// A `rows × cols` matrix of uniform random numbers, column-major.
#[cohort::remote]
fn rand_matrix(rows: usize, cols: usize) -> Vec<f64> {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ (myid() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..rows * cols)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// `1 .+ fetch(r)`: the fetch happens where this runs; on the owner it reads in place.
#[cohort::remote]
fn add_one(r: Future<Vec<f64>>) -> cohort::Result<Vec<f64>> {
    println!("adding 1 on worker {}", myid());
    Ok(r.fetch()?.iter().map(|x| x + 1.0).collect())
}

/// `fetch(r)[1, 1]`.
#[cohort::remote]
fn first_element(r: Future<Vec<f64>>) -> cohort::Result<f64> {
    Ok(r.fetch()?[0])
}

fn show(m: &[f64]) -> String {
    format!("[{:.4} {:.4}; {:.4} {:.4}]", m[0], m[2], m[1], m[3])
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    if nworkers() < 2 || workers() == [1] {
        addprocs(2)?;
    }
    println!("procs() = {:?}", procs());

    let r = remotecall(rand_matrix, 2, (2, 2))?;
    let s = spawnat(2, add_one, (r.clone(),))?;
    let rv = r.fetch()?;
    let sv = s.fetch()?;
    println!("r = {}", show(&rv));
    println!("s = 1 .+ r = {}", show(&sv));
    assert!(rv.iter().zip(&sv).all(|(a, b)| (b - a - 1.0).abs() < 1e-12));

    let x = remotecall_fetch(first_element, 2, (r.clone(),))?;
    println!("remotecall_fetch(r -> fetch(r)[1,1], 2, r) = {x:.4}");
    assert_eq!(x, rv[0]);

    let r = spawnat(Target::Any, rand_matrix, (2, 2))?;
    let s = spawnat(Target::Any, add_one, (r.clone(),))?;
    println!(
        "@spawnat :any: r on {}, s on {}, fetch(s) = {}",
        r.owner(),
        s.owner(),
        show(&s.fetch()?)
    );
    Ok(())
}
