//! The seeds' parallel map: the singular values of 10 random matrices, on the workers.
//!
//! ```text
//! M = Matrix{Float64}[rand(1000,1000) for i = 1:10];
//! pmap(svdvals, M);
//! ```
//!
//! Here 300×300 matrices (by default) (linfa-linalg's SVD), each sent as its column-major elements; each call is
//! a lot of work, which is what `pmap` with one item per call is for. Prints the largest
//! singular value of each matrix and the time against a serial map.
//!
//! `cargo run --release --example pmap_svd [-- --size 300]`
use cohort::prelude::*;
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// The singular values of an n×n matrix given by its column-major elements, largest first.
#[cohort::remote]
fn svdvals(m: Vec<f64>) -> Vec<f64> {
    let n = (m.len() as f64).sqrt() as usize;
    assert_eq!(n * n, m.len(), "a square matrix");
    use linfa_linalg::svd::SVDInto;
    // Column-major elements are the row-major elements of the transpose, whose singular
    // values are the same.
    let a = cohort::shm::ndarray::Array2::from_shape_vec((n, n), m).expect("n×n elements");
    let (_, sigma, _) = a.svd_into(false, false).expect("an SVD of a finite matrix");
    let mut s = sigma.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    if workers() == [1] {
        addprocs(2)?;
    }
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--size")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    let m: Vec<Vec<f64>> = (0..10)
        .map(|_| (0..n * n).map(|_| rng.gen::<f64>()).collect())
        .collect();

    let t = Instant::now();
    let par = pmap(svdvals, m.clone())?;
    let tp = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // `*f` is the plain function of a `#[cohort::remote]` name, for iterator adapters.
    let ser: Vec<Vec<f64>> = m.into_iter().map(*svdvals).collect();
    let ts = t.elapsed().as_secs_f64();

    for (i, s) in par.iter().enumerate() {
        println!("matrix {i}: largest singular value {:.6}", s[0]);
    }
    assert_eq!(par, ser, "the same values as the serial map");
    println!(
        "pmap on {} workers: {tp:.3} s; serial map: {ts:.3} s; speed-up {:.2}",
        nworkers(),
        ts / tp
    );
    Ok(())
}
