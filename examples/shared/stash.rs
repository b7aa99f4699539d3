//! Remote functions the remote-call benches share: a no-op, and 64 MiB vectors prepared on a
//! worker ahead of the timed fetches (so a fetch measures moving data, not making it).

use std::sync::Mutex;

static STASH: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());

/// Does nothing: the round-trip probe.
#[cohort::remote]
pub(crate) fn noop() {}

/// Prepares `k` vectors of `n` elements on this worker.
#[cohort::remote]
pub(crate) fn stash_vecs(n: usize, k: usize) {
    let mut s = STASH.lock().unwrap();
    s.clear();
    s.extend((0..k).map(|_| vec![1.5; n]));
}

/// Hands one prepared vector over: the fetch moves it, nothing is computed or copied here.
#[cohort::remote]
pub(crate) fn take_vec() -> Vec<f64> {
    STASH.lock().unwrap().pop().unwrap_or_default()
}
