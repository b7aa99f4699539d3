//! Parallel patterns against real worker processes: pmap (order, zipped collections, errors,
//! retries, batches, local runs, dying workers), distributed loops, everywhere, worker-local
//! state, worker pools and caching pools. Runs with `harness = false` (see tests/common).

mod common;

use cohort::prelude::*;
use cohort::{local, pmap_args, Error, ExponentialBackOff};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------- registered functions ----------

#[cohort::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[cohort::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cohort::remote]
fn whoami_item(_x: i64) -> usize {
    myid()
}

#[cohort::remote]
fn fail_even(x: i64) -> i64 {
    if x % 2 == 0 {
        panic!("foo {x}");
    }
    x
}

#[cohort::remote]
fn fail_even_res(x: i64) -> Result<i64, String> {
    if x % 2 == 0 {
        Err(format!("foo {x}"))
    } else {
        Ok(x)
    }
}

static COUNTS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// Counts calls under `key` in the process it runs on (the master, below).
#[cohort::remote]
fn bump(key: String) -> u64 {
    let mut c = COUNTS.lock().unwrap();
    let n = c.get_or_insert_with(HashMap::new).entry(key).or_insert(0);
    *n += 1;
    *n
}

/// Counts a call on the master, from wherever it runs.
fn count(key: String) -> u64 {
    remotecall_fetch(bump, 1, (key,)).expect("count on the master")
}

fn counted(key: &str) -> u64 {
    COUNTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|c| c.get(key).copied())
        .unwrap_or(0)
}

/// Fails (panics) the first `k` times it is called with `x` (counted cluster-wide).
#[cohort::remote]
fn flaky(tag: String, x: i64, k: u64) -> i64 {
    let n = count(format!("{tag}.{x}"));
    if n <= k {
        panic!("transient failure {n} of item {x}");
    }
    x * 10
}

/// Fails every time, with a message saying which kind of error it is.
#[cohort::remote]
fn fails_with(tag: String, x: i64, kind: String) -> i64 {
    count(format!("{tag}.{x}"));
    panic!("{kind} error on item {x}");
}

/// Kills the process that first reaches item `die_at` (counted cluster-wide).
#[cohort::remote]
fn die_once(tag: String, x: i64, die_at: i64) -> i64 {
    count(format!("{tag}.{x}"));
    if x == die_at && count(format!("{tag}.died")) == 1 {
        std::process::exit(7);
    }
    x * 10
}

/// Kills any worker that reaches an item from `from` on; runs on the master.
#[cohort::remote]
fn die_on_workers(x: i64, from: i64) -> i64 {
    if x >= from && myid() != 1 {
        std::process::exit(9);
    }
    x * 10
}

#[cohort::remote]
fn sleep_ms(ms: u64) -> u64 {
    let _b = cohort::blocking();
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[cohort::remote]
fn exit_now() {
    std::process::exit(3);
}

#[cohort::remote]
fn mark_then_fail_on(tag: String, bad: usize) -> cohort::Result<usize> {
    local::set(&tag, myid());
    if myid() == bad {
        return Err(Error::Invalid("refused on purpose".into()));
    }
    Ok(myid())
}

#[cohort::remote]
fn read_mark(tag: String) -> Option<usize> {
    local::get::<usize>(&tag).map(|v| *v)
}

#[cohort::remote]
fn keep(name: String, v: Vec<f64>) {
    local::set(&name, v);
}

#[cohort::remote]
fn sum_of(name: String) -> Option<f64> {
    local::get::<Vec<f64>>(&name).map(|v| v.iter().sum())
}

#[cohort::remote]
fn bump_local(name: String) -> u64 {
    local::update(
        &name,
        || 0u64,
        |n| {
            *n += 1;
            *n
        },
    )
}

#[cohort::remote]
fn names_with(prefix: String) -> usize {
    local::names()
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .count()
}

#[cohort::remote]
fn offset_sum(part: Part, offset: i64) -> i64 {
    part.reduce(|i| i + offset)
}

#[cohort::remote]
fn sq_dist(part: Part, c: i64) -> i64 {
    part.reduce(|i| (i - c) * (i - c))
}

#[cohort::remote]
fn concat(part: Part, _: ()) -> String {
    part.fold(|i| format!("{i},"), |a, b| a + &b)
}

#[cohort::remote]
fn part_info(part: Part, _: ()) -> (usize, i64, i64, usize, usize) {
    (myid(), part.start, part.end, part.index, part.parts)
}

#[cohort::remote]
fn store_part_sum(part: Part, tag: String) {
    local::set(&tag, part.range().sum::<i64>());
}

#[cohort::remote]
fn read_i64(tag: String) -> i64 {
    local::get::<i64>(&tag).map_or(0, |v| *v)
}

#[cohort::remote]
fn flips(part: Part, seed: u64) -> i64 {
    part.reduce(|i| (cohort::loops::mix(seed ^ i as u64) & 1) as i64)
}

#[cohort::remote]
fn cached_sum(a: Cached<Vec<f64>>, i: i64) -> f64 {
    a.iter().sum::<f64>() + i as f64
}

#[cohort::remote]
fn plain_sum(a: Vec<f64>, i: i64) -> f64 {
    a.iter().sum::<f64>() + i as f64
}

fn two_workers() -> Vec<Pid> {
    let n = workers().into_iter().filter(|&p| p != 1).count();
    if n < 2 {
        addprocs(2 - n).unwrap();
    }
    let ws = workers();
    assert!(ws.len() >= 2 && !ws.contains(&1), "{ws:?}");
    ws
}

/// Replaces dead workers so that the next test has two.
fn restore_workers() {
    let n = workers().into_iter().filter(|&p| p != 1).count();
    if n < 2 {
        addprocs(2 - n).unwrap();
    }
    assert!(common::eventually(Duration::from_secs(5), || {
        default_worker_pool().len() == 2
    }));
}

// ---------- pmap ----------

fn pmap_order() {
    two_workers();
    let v = pmap(square, 0..200).unwrap();
    assert_eq!(v, (0..200).map(|x| x * x).collect::<Vec<_>>());
    let who = pmap(whoami_item, 0..50).unwrap();
    assert!(who.iter().all(|p| workers().contains(p)), "{who:?}");
    // Explicit and automatic batches keep the order too.
    for b in [BatchSize::Fixed(7), BatchSize::Auto] {
        let opts = PmapOptions::new().batch_size(b);
        assert_eq!(
            pmap_with(square, 0..1000, &opts).unwrap(),
            (0..1000).map(|x| x * x).collect::<Vec<_>>()
        );
    }
}

fn pmap_zipped() {
    let a: Vec<i64> = (0..100).collect();
    let b: Vec<i64> = (0..100).map(|x| 1000 * x).collect();
    assert_eq!(
        cohort::pmap_zip(add, a.clone(), b.clone()).unwrap(),
        (0..100).map(|x| 1001 * x).collect::<Vec<_>>()
    );
    // As long as the shorter collection, batched too.
    let opts = PmapOptions::new().batch_size(10);
    assert_eq!(
        cohort::pmap_zip_with(add, a, b[..50].to_vec(), &opts).unwrap(),
        (0..50).map(|x| 1001 * x).collect::<Vec<_>>()
    );
    let v = cohort::pmap_args(add, (0..10).map(|i| (i, -i)), &PmapOptions::new()).unwrap();
    assert_eq!(v, vec![0; 10]);
}

fn pmap_empty() {
    assert!(pmap(square, Vec::<i64>::new()).unwrap().is_empty());
    let opts = PmapOptions::new().distributed(false);
    assert!(pmap_with(square, 0..0, &opts).unwrap().is_empty());
}

fn pmap_on_error() {
    // Errors stop pmap by default.
    let e = pmap(fail_even, 1..=4).unwrap_err();
    assert!(e.to_string().contains("foo"), "{e}");
    // A value placed inline (Julia: on_error = ex -> 0).
    for b in [1, 3] {
        let opts = PmapOptions::new().batch_size(b).on_error(|_| Ok(0));
        assert_eq!(
            pmap_with(fail_even, 1..=4, &opts).unwrap(),
            vec![1, 0, 3, 0]
        );
    }
    // A function returning `Result`: its `Err` reaches on_error as the RemoteException.
    let opts = PmapOptions::new().on_error(|e| match e {
        Error::Remote(r) if r.error == "foo 2" => Ok(-2),
        Error::Remote(r) if r.error == "foo 4" => Ok(-4),
        other => Err(other),
    });
    let v = pmap_with(fail_even_res, 1..=4, &opts).unwrap();
    assert_eq!(v, [1, -2, 3, -4]);
    // Re-raising stops the map with that error.
    let opts = PmapOptions::new().on_error(Err);
    let e = pmap_with(fail_even, 1..=4, &opts).unwrap_err();
    assert!(
        matches!(&e, Error::Remote(r) if r.error.contains("foo")),
        "{e}"
    );
    // Selective: a value for one kind, re-raise the others.
    let opts = PmapOptions::new().on_error(|e| {
        if e.to_string().contains("foo 2") {
            Ok(-2)
        } else {
            Err(e)
        }
    });
    assert_eq!(
        pmap_with(fail_even, [1, 2, 3], &opts).unwrap(),
        vec![1, -2, 3]
    );
    assert!(pmap_with(fail_even, [1, 2, 4], &opts).is_err());
}

fn pmap_retries() {
    // Each item fails twice, then succeeds: two retries suffice.
    let tag = "retry2";
    let opts = PmapOptions::new().retry_delays([Duration::ZERO; 2]);
    let v = pmap_args(flaky, (0..20).map(|x| (tag.to_string(), x, 2)), &opts).unwrap();
    assert_eq!(v, (0..20).map(|x| x * 10).collect::<Vec<_>>());
    for x in 0..20 {
        assert_eq!(counted(&format!("{tag}.{x}")), 3, "item {x}");
    }
    // One retry is not enough: the error comes back.
    let tag = "retry1";
    let opts = PmapOptions::new().retry_delays([Duration::ZERO]);
    let e = pmap_args(flaky, (0..4).map(|x| (tag.to_string(), x, 2)), &opts).unwrap_err();
    assert!(e.to_string().contains("transient failure 2"), "{e}");
    // Exponential back-off: 3 delays starting at 1 ms.
    let tag = "backoff";
    let backoff = ExponentialBackOff {
        n: 3,
        first_delay: Duration::from_millis(1),
        ..ExponentialBackOff::default()
    };
    assert_eq!(backoff.delays().len(), 3);
    let opts = PmapOptions::new().retry_delays(backoff);
    let v = pmap_args(flaky, (0..5).map(|x| (tag.to_string(), x, 3)), &opts).unwrap();
    assert_eq!(v, vec![0, 10, 20, 30, 40]);
    // on_error comes first: an error it turns into a value is not retried.
    let tag = "onerr-first";
    let opts = PmapOptions::new()
        .retry_delays([Duration::ZERO; 3])
        .on_error(|_| Ok(-1));
    let v = pmap_args(flaky, (0..3).map(|x| (tag.to_string(), x, 1)), &opts).unwrap();
    assert_eq!(v, vec![-1, -1, -1]);
    for x in 0..3 {
        assert_eq!(counted(&format!("{tag}.{x}")), 1);
    }
    // Within a batch, only the failing items are retried.
    let tag = "batch-items";
    let opts = PmapOptions::new()
        .batch_size(4)
        .retry_delays([Duration::ZERO]);
    let args = (0..8).map(|x| (tag.to_string(), x, u64::from(x % 4 == 1)));
    assert_eq!(
        pmap_args(flaky, args, &opts).unwrap(),
        (0..8).map(|x| x * 10).collect::<Vec<_>>()
    );
    for x in 0..8 {
        let want = if x % 4 == 1 { 2 } else { 1 };
        assert_eq!(counted(&format!("{tag}.{x}")), want, "item {x}");
    }
}

fn pmap_retry_check() {
    let check = |e: &Error| !e.to_string().contains("permanent");
    // A refused kind of error is not retried: one call per item, and pmap fails.
    let tag = "check-perm";
    let opts = PmapOptions::new()
        .retry_delays([Duration::ZERO; 3])
        .retry_check(check);
    let e = pmap_args(
        fails_with,
        [(tag.to_string(), 0, "permanent".to_string())],
        &opts,
    )
    .unwrap_err();
    assert!(e.to_string().contains("permanent error on item 0"), "{e}");
    assert_eq!(counted(&format!("{tag}.0")), 1);
    // An accepted kind is retried until the delays are used up: 1 + 3 calls.
    let tag = "check-transient";
    let e = pmap_args(
        fails_with,
        [(tag.to_string(), 0, "transient".to_string())],
        &opts,
    )
    .unwrap_err();
    assert!(e.to_string().contains("transient error"), "{e}");
    assert_eq!(counted(&format!("{tag}.0")), 4);
}

fn pmap_not_distributed() {
    let opts = PmapOptions::new().distributed(false);
    assert_eq!(
        pmap_with(whoami_item, 0..16, &opts).unwrap(),
        vec![1; 16],
        "runs in the calling process"
    );
    let opts = PmapOptions::new().distributed(false).ntasks(3);
    assert_eq!(
        pmap_with(square, 0..100, &opts).unwrap(),
        (0..100).map(|x| x * x).collect::<Vec<_>>()
    );
    let opts = opts.on_error(|_| Ok(0));
    assert_eq!(
        pmap_with(fail_even, 1..=4, &opts).unwrap(),
        vec![1, 0, 3, 0]
    );
    let tag = "local-retry";
    let opts = PmapOptions::new()
        .distributed(false)
        .retry_delays([Duration::ZERO]);
    let v = pmap_args(flaky, (0..4).map(|x| (tag.to_string(), x, 1)), &opts).unwrap();
    assert_eq!(v, vec![0, 10, 20, 30]);
}

fn pmap_progress() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let opts = PmapOptions::new()
        .batch_size(10)
        .on_progress(move |done, total| s.lock().unwrap().push((done, total)));
    pmap_with(square, 0..100, &opts).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.last(), Some(&(100, 100)));
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    assert_eq!(seen.len(), 10);
}

/// `progress(true)` without the `progress` feature: an `Error::Invalid` naming the feature,
/// before anything runs (even for no items); the next pmap runs as usual.
#[cfg(not(feature = "progress"))]
fn pmap_progress_bar() {
    let opts = PmapOptions::new().progress(true);
    for items in [0..0, 0..10] {
        match pmap_with(square, items, &opts) {
            Err(Error::Invalid(m)) => {
                assert!(m.contains("`progress` feature"), "{m}");
                assert!(m.contains("progress(true)"), "{m}");
            }
            other => panic!("expected Error::Invalid, got {other:?}"),
        }
    }
    assert_eq!(pmap(square, 0..4).unwrap(), [0, 1, 4, 9]);
}

/// `progress(true)` with the `progress` feature: the bar (hidden when stderr is not a
/// terminal) changes nothing in the results or the counts.
#[cfg(feature = "progress")]
fn pmap_progress_bar() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let opts = PmapOptions::new()
        .progress(true)
        .batch_size(5)
        .on_progress(move |done, total| s.lock().unwrap().push((done, total)));
    let v = pmap_with(square, 0..20, &opts).unwrap();
    assert_eq!(v, (0..20).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(seen.lock().unwrap().last(), Some(&(20, 20)));
}

fn pmap_batch_failure_retries_whole_batch() {
    two_workers();
    // The worker that reaches item 5 dies in the middle of the batch [4, 8): the whole batch,
    // item 4 included (it had succeeded there), runs again on the other worker.
    let tag = "batch-death";
    let opts = PmapOptions::new()
        .batch_size(4)
        .retry_delays([Duration::ZERO]);
    let t0 = Instant::now();
    let v = pmap_args(die_once, (0..16).map(|x| (tag.to_string(), x, 5)), &opts).unwrap();
    assert_eq!(v, (0..16).map(|x| x * 10).collect::<Vec<_>>());
    // Asked once by the worker that died, once by the one that finished the item.
    assert_eq!(counted(&format!("{tag}.died")), 2);
    assert_eq!(counted(&format!("{tag}.4")), 2, "item 4 was redone");
    assert_eq!(counted(&format!("{tag}.5")), 2);
    for x in 0..16 {
        assert!(counted(&format!("{tag}.{x}")) >= 1);
    }
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(workers().len(), 1, "{:?}", workers());
    restore_workers();
}

fn pmap_worker_killed() {
    // With retries, the dead worker's items run on the remaining one.
    let ws = two_workers();
    let tag = "kill-retry";
    let opts = PmapOptions::new().retry_delays([Duration::ZERO]);
    let v = pmap_args(die_once, (0..40).map(|x| (tag.to_string(), x, 13)), &opts).unwrap();
    assert_eq!(v, (0..40).map(|x| x * 10).collect::<Vec<_>>());
    assert_eq!(counted(&format!("{tag}.13")), 2);
    let left = workers();
    assert_eq!(left.len(), 1);
    assert!(ws.contains(&left[0]));
    restore_workers();
    // Without retries, pmap returns ProcessExited (even with on_error, which does not see the
    // loss of a worker) and does not hang.
    let ws = workers();
    let tag = "kill-noretry";
    let opts = PmapOptions::new().on_error(|_| Ok(-1));
    let t0 = Instant::now();
    let e = pmap_args(die_once, (0..40).map(|x| (tag.to_string(), x, 13)), &opts).unwrap_err();
    assert!(
        matches!(e, Error::ProcessExited(p) if ws.contains(&p)),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Batched, without retries.
    restore_workers();
    let tag = "kill-batch-noretry";
    let opts = PmapOptions::new().batch_size(BatchSize::Auto);
    let e = pmap_args(die_once, (0..40).map(|x| (tag.to_string(), x, 13)), &opts).unwrap_err();
    assert!(matches!(e, Error::ProcessExited(_)), "{e}");
    restore_workers();
    // The whole pool dies: with retries and no worker left, the error comes back.
    let p = workers()[0];
    let pool = WorkerPool::new([p]);
    let tag = "kill-all";
    let opts = PmapOptions::new()
        .pool(&pool)
        .retry_delays([Duration::ZERO; 3]);
    let e = pmap_args(die_once, (0..10).map(|x| (tag.to_string(), x, 3)), &opts).unwrap_err();
    assert!(matches!(e, Error::ProcessExited(q) if q == p), "{e}");
    restore_workers();
}

fn pmap_all_workers_die() {
    two_workers();
    // Every worker dies; the default pool falls back to the master, which finishes the map.
    let opts = PmapOptions::new().retry_delays([Duration::ZERO; 3]);
    let v = pmap_args(die_on_workers, (0..30).map(|x| (x, 10)), &opts).unwrap();
    assert_eq!(v, (0..30).map(|x| x * 10).collect::<Vec<_>>());
    assert_eq!(workers(), vec![1]);
    assert_eq!(default_worker_pool().workers(), vec![1]);
    restore_workers();
    assert!(!default_worker_pool().workers().contains(&1));
}

// ---------- distributed loops ----------

fn loops_with_reducers() {
    two_workers();
    assert_eq!(
        distributed_reduce(1..=1000, offset_sum, 0, Reducer::sum()).unwrap(),
        500_500
    );
    assert_eq!(
        distributed_reduce(1..=1000, offset_sum, 1, Reducer::sum()).unwrap(),
        501_500
    );
    assert_eq!(
        distributed_reduce(1..=10, offset_sum, 0, Reducer::product()).unwrap(),
        3_628_800
    );
    assert_eq!(
        distributed_reduce(1..=100, sq_dist, 37, Reducer::min()).unwrap(),
        0
    );
    assert_eq!(
        distributed_reduce(1..=100, sq_dist, 37, Reducer::max()).unwrap(),
        63 * 63
    );
    // A custom associative (not commutative) reducer: the parts are combined in order.
    let s = distributed_reduce(1..=12, concat, (), Reducer::new(|a: String, b| a + &b)).unwrap();
    assert_eq!(s, "1,2,3,4,5,6,7,8,9,10,11,12,");
    // Shorter than the number of workers: one part.
    assert_eq!(
        distributed_reduce(5..=5, offset_sum, 0, Reducer::sum()).unwrap(),
        5
    );
    // Empty: an error, as in Julia.
    assert!(distributed_reduce(1..1, offset_sum, 0, Reducer::sum()).is_err());
    // The seeds' coin flips (2e6 here): near half, and equal to the serial loop.
    let n = 2_000_000;
    let heads = distributed_reduce(1..=n, flips, 7, Reducer::sum()).unwrap();
    let serial = flips(Part::whole(1..=n, cohort::loops::Op::Sum), 7);
    assert_eq!(heads, serial);
    assert!((heads - n / 2).abs() < 5 * 708, "{heads}");
}

fn loops_without_reducer() {
    let ws = two_workers();
    let futs = distributed_for(1..=10, part_info, ()).unwrap();
    assert_eq!(futs.len(), ws.len());
    let mut next = 1;
    for (k, f) in futs.iter().enumerate() {
        let (pid, start, end, index, parts) = f.fetch().unwrap();
        assert_eq!((pid, index, parts), (ws[k], k, ws.len()));
        assert_eq!(start, next);
        assert!(end > start, "non-empty");
        next = end;
    }
    assert_eq!(next, 11);
    let futs = distributed_for(1..=100, store_part_sum, "loop-sum".to_string()).unwrap();
    cohort::sync(&futs).unwrap();
    let sums = cohort::everywhere_on(&ws, read_i64, ("loop-sum".to_string(),)).unwrap();
    assert_eq!(sums.iter().sum::<i64>(), 5050);
    assert!(distributed_for(1..1, part_info, ()).unwrap().is_empty());
    // sync reports the failures of the parts: Part::reduce panics in a loop without reducer.
    let futs = distributed_for(1..=4, offset_sum, 0).unwrap();
    match cohort::sync(&futs).unwrap_err() {
        Error::Composite(v) => assert_eq!(v.iter().map(|(p, _)| *p).collect::<Vec<_>>(), ws),
        e => panic!("expected a composite error, got {e}"),
    }
    // `@sync @distributed for` in one call: the same parts, the values in part order.
    let infos = sync_distributed_for(1..=10, part_info, ()).unwrap();
    let futs = distributed_for(1..=10, part_info, ()).unwrap();
    let via_futures: Vec<_> = futs.iter().map(|f| f.fetch().unwrap()).collect();
    assert_eq!(infos, via_futures);
    assert_eq!(infos.len(), ws.len());
    sync_distributed_for(1..=100, store_part_sum, "loop-sum-2".to_string()).unwrap();
    let sums = cohort::everywhere_on(&ws, read_i64, ("loop-sum-2".to_string(),)).unwrap();
    assert_eq!(sums.iter().sum::<i64>(), 5050);
    assert!(sync_distributed_for(1..1, part_info, ())
        .unwrap()
        .is_empty());
    match sync_distributed_for(1..=4, offset_sum, 0).unwrap_err() {
        Error::Composite(v) => {
            assert_eq!(v.iter().map(|(p, _)| *p).collect::<Vec<_>>(), ws);
            assert!(v[0].1.to_string().contains("Part::reduce"), "{}", v[0].1);
        }
        e => panic!("expected a composite error, got {e}"),
    }
    // The workers go on serving.
    assert_eq!(sync_distributed_for(1..=2, part_info, ()).unwrap().len(), 2);
}

// ---------- everywhere and worker-local state ----------

fn everywhere_composite_error() {
    let ws = two_workers();
    let bad = ws[1];
    let tag = "mark".to_string();
    let e = everywhere(mark_then_fail_on, (tag.clone(), bad)).unwrap_err();
    match &e {
        Error::Composite(v) => {
            assert_eq!(v.len(), 1, "{e}");
            assert_eq!(v[0].0, bad);
            assert!(v[0].1.to_string().contains("refused on purpose"), "{e}");
        }
        other => panic!("expected a composite error, got {other}"),
    }
    assert!(e.to_string().contains(&format!("pid {bad}")), "{e}");
    // Every process ran it, the caller included.
    let marks = everywhere(read_mark, (tag,)).unwrap();
    let all = procs();
    assert_eq!(all[0], 1);
    assert_eq!(marks, all.iter().map(|&p| Some(p)).collect::<Vec<_>>());
    // A subset.
    let who = cohort::everywhere_on(&[ws[0], 1], whoami_item, (0,)).unwrap();
    assert_eq!(who, vec![ws[0], 1]);
}

fn worker_local_state() {
    let ws = two_workers();
    let n = everywhere(keep, ("A".to_string(), vec![0.5; 1000])).unwrap();
    assert_eq!(n.len(), procs().len());
    for &w in &ws {
        assert_eq!(
            remotecall_fetch(sum_of, w, ("A".to_string(),)).unwrap(),
            Some(500.0)
        );
    }
    for k in 1..=3 {
        assert_eq!(
            remotecall_fetch(bump_local, ws[0], ("calls".to_string(),)).unwrap(),
            k
        );
    }
    assert_eq!(
        remotecall_fetch(bump_local, ws[1], ("calls".to_string(),)).unwrap(),
        1
    );
    assert_eq!(
        local::clear(&["A", "nothing-here"], &ws).unwrap(),
        vec![1, 1]
    );
    for &w in &ws {
        assert_eq!(
            remotecall_fetch(sum_of, w, ("A".to_string(),)).unwrap(),
            None
        );
    }
    // Only the listed pids were cleared.
    assert_eq!(local::get::<Vec<f64>>("A").map(|a| a.len()), Some(1000));
    assert_eq!(local::clear(&["A"], &[1]).unwrap(), vec![1]);
    assert!(!local::contains("A"));
}

// ---------- pools ----------

fn pool_take_put() {
    let ws = two_workers();
    let pool = WorkerPool::new(ws.clone());
    assert_eq!(pool.len(), 2);
    assert_eq!(pool.workers(), ws);
    assert!(pool.isready());
    let a = pool.take().unwrap();
    let b = pool.take().unwrap();
    assert_ne!(a, b);
    assert!(!pool.isready());
    assert_eq!(pool.len(), 2, "busy workers stay in the pool");
    assert_eq!(pool.try_take(), None);
    pool.put(a);
    assert!(pool.isready());
    assert_eq!(pool.take().unwrap(), a);
    pool.put(a);
    pool.put(b);
    pool.put(b); // already idle: no duplicate
    assert_eq!(pool.idle_count(), 2);
    pool.push(b);
    assert_eq!(pool.len(), 2);
    let r = WorkerPool::new(ws[0]..=ws[1]);
    assert_eq!(r.workers(), ws);
    assert!(
        WorkerPool::new([]).take().is_err(),
        "an empty pool does not wait"
    );
    // The default pool holds every worker.
    assert_eq!(default_worker_pool().workers(), workers());
}

fn pool_calls_when_busy() {
    let ws = two_workers();
    let pool = WorkerPool::new(ws.clone());
    let f1 = pool.remotecall(sleep_ms, (400,)).unwrap();
    let f2 = pool.remotecall(sleep_ms, (400,)).unwrap();
    assert_ne!(f1.owner(), f2.owner());
    assert!(
        !pool.isready(),
        "remotecall keeps its worker until the call finishes"
    );
    let t0 = Instant::now();
    let who = pool.remotecall_fetch(whoami_item, (0,)).unwrap();
    let waited = t0.elapsed();
    assert!(ws.contains(&who));
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert_eq!(f1.fetch().unwrap(), 400);
    assert_eq!(f2.fetch().unwrap(), 400);
    assert!(common::eventually(Duration::from_secs(2), || pool
        .idle_count()
        == 2));
    let f = pool.remotecall_wait(square, (9,)).unwrap();
    assert_eq!(f.fetch().unwrap(), 81);
    pool.remote_do(sleep_ms, (1,)).unwrap();
    assert_eq!(pool.idle_count(), 2);
    // pmap on a pool of one worker uses only that worker.
    let one = WorkerPool::new([ws[1]]);
    let v = pmap_with(whoami_item, 0..20, &PmapOptions::new().pool(&one)).unwrap();
    assert_eq!(v, vec![ws[1]; 20]);
}

fn caching_pool_ships_once() {
    let ws = two_workers();
    let n = 500_000; // 4 MB
    let mb4 = (n * 8) as u64;
    let payload = Cached::new(vec![1.0f64; n]);
    let cp = CachingPool::new(ws.clone());
    let b0 = cohort::bytes_sent();
    for i in 0..10 {
        let r = cp
            .remotecall_fetch(cached_sum, (payload.clone(), i))
            .unwrap();
        assert_eq!(r, n as f64 + i as f64);
    }
    let cached = cohort::bytes_sent() - b0;
    let copies: usize = ws.iter().map(|&w| cp.cached_on(w)).sum();
    assert!((1..=2).contains(&copies), "{copies}");
    assert!(cached >= mb4 * copies as u64, "{cached}");
    assert!(cached < mb4 * copies as u64 + 100_000, "{cached}");
    // pmap through the caching pool ships nothing more.
    let b1 = cohort::bytes_sent();
    let opts = PmapOptions::new().pool(&cp);
    let v = pmap_args(cached_sum, (0..20).map(|i| (payload.clone(), i)), &opts).unwrap();
    assert_eq!(v, (0..20).map(|i| n as f64 + i as f64).collect::<Vec<_>>());
    let more = cohort::bytes_sent() - b1;
    let copies2: usize = ws.iter().map(|&w| cp.cached_on(w)).sum();
    assert!(more < mb4 * (copies2 - copies) as u64 + 100_000, "{more}");
    // A plain pool ships the payload with every call.
    let wp = WorkerPool::new(ws.clone());
    let b2 = cohort::bytes_sent();
    for i in 0..10 {
        assert_eq!(
            wp.remotecall_fetch(cached_sum, (payload.clone(), i))
                .unwrap(),
            n as f64 + i as f64
        );
    }
    assert!(cohort::bytes_sent() - b2 >= 10 * mb4);
    // clear removes the payloads from the workers; the next call ships again.
    let prefix = "cohort.cache.".to_string();
    let held: usize = ws
        .iter()
        .map(|&w| remotecall_fetch(names_with, w, (prefix.clone(),)).unwrap())
        .sum();
    assert_eq!(held, copies2);
    cp.clear().unwrap();
    assert_eq!(ws.iter().map(|&w| cp.cached_on(w)).sum::<usize>(), 0);
    for &w in &ws {
        assert_eq!(
            remotecall_fetch(names_with, w, (prefix.clone(),)).unwrap(),
            0
        );
    }
    let b3 = cohort::bytes_sent();
    assert_eq!(
        cp.remotecall_fetch(cached_sum, (payload.clone(), 1))
            .unwrap(),
        n as f64 + 1.0
    );
    assert!(cohort::bytes_sent() - b3 >= mb4);
    // Dropping the last handle clears too.
    drop(opts);
    drop(cp);
    assert!(common::eventually(Duration::from_secs(2), || {
        ws.iter()
            .map(|&w| remotecall_fetch(names_with, w, (prefix.clone(),)).unwrap())
            .sum::<usize>()
            == 0
    }));
    // Without a caching pool, Cached travels in full and nothing is kept.
    assert_eq!(
        remotecall_fetch(cached_sum, ws[0], (payload.clone(), 2)).unwrap(),
        n as f64 + 2.0
    );
    assert_eq!(
        remotecall_fetch(names_with, ws[0], (prefix.clone(),)).unwrap(),
        0
    );
    let _ = plain_sum;
}

fn pool_after_worker_dies() {
    two_workers();
    let p = addprocs(1).unwrap()[0];
    let kept = workers()[0];
    let both = WorkerPool::new([kept, p]);
    let only = WorkerPool::new([p]);
    assert_eq!(only.take().unwrap(), p);
    // A caller waits in take (the only worker is checked out) ...
    let waiting = only.clone();
    let waiter = std::thread::spawn(move || waiting.take());
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiter.is_finished());
    // ... and the worker dies: the caller is woken with an error, not left waiting.
    remote_do(exit_now, p, ()).unwrap();
    let t0 = Instant::now();
    let r = waiter.join().unwrap();
    assert!(r.is_err(), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(only.len(), 0);
    only.put(p); // ignored
    assert_eq!(only.len(), 0);
    assert!(common::eventually(Duration::from_secs(2), || both.len() == 1));
    assert_eq!(both.workers(), vec![kept]);
    for _ in 0..4 {
        assert_eq!(both.remotecall_fetch(whoami_item, (0,)).unwrap(), kept);
    }
    assert!(!default_worker_pool().workers().contains(&p));
    assert_eq!(pmap(square, 0..10).unwrap()[3], 9);
    restore_workers();
    // The default pool follows the cluster: the new worker is in it.
    assert_eq!(default_worker_pool().workers(), workers());
}

// ---------- pools: returning workers, remote handles, pgenerate ----------

/// The pool is full again: every worker idle.
fn settles(pool: &WorkerPool, n: usize) -> bool {
    common::eventually(Duration::from_secs(2), || {
        pool.len() == n && pool.idle_count() == n
    })
}

fn pool_returns_workers_every_form() {
    let ws = two_workers();
    for pool in [WorkerPool::new(ws.clone()), default_worker_pool()] {
        assert!(settles(&pool, 2));
        // A fast call fetched at once: the worker still goes back (many times, to meet the
        // race between the fetch and the call's end).
        for i in 0..30 {
            let f = pool.remotecall(square, (i,)).unwrap();
            assert_eq!(f.fetch().unwrap(), i * i);
        }
        assert!(settles(&pool, 2), "{pool:?}");
        let f = pool.remotecall(fail_even, (2,)).unwrap();
        match f.fetch() {
            Err(Error::Remote(r)) => assert!(r.to_string().contains("foo 2"), "{r}"),
            other => panic!("expected a remote exception, got {other:?}"),
        }
        assert!(settles(&pool, 2), "after a failed remotecall: {pool:?}");
        // The other forms, each succeeding and failing.
        assert_eq!(pool.remotecall_fetch(square, (5,)).unwrap(), 25);
        assert!(matches!(
            pool.remotecall_fetch(fail_even, (4,)),
            Err(Error::Remote(r)) if r.to_string().contains("foo 4")
        ));
        assert!(settles(&pool, 2), "after remotecall_fetch: {pool:?}");
        assert_eq!(
            pool.remotecall_wait(square, (6,)).unwrap().fetch().unwrap(),
            36
        );
        // Julia: remotecall_wait raises the remote exception.
        assert!(matches!(
            pool.remotecall_wait(fail_even, (6,)),
            Err(Error::Remote(r)) if r.to_string().contains("foo 6")
        ));
        assert!(settles(&pool, 2), "after remotecall_wait: {pool:?}");
        pool.remote_do(square, (7,)).unwrap();
        pool.remote_do(fail_even, (8,)).unwrap();
        assert!(settles(&pool, 2), "after remote_do: {pool:?}");
        // Nothing hangs afterwards, and both workers serve.
        let who: std::collections::BTreeSet<Pid> = (0..2)
            .map(|_| pool.remotecall(sleep_ms, (150,)).unwrap())
            .collect::<Vec<_>>()
            .into_iter()
            .map(|f| {
                f.fetch().unwrap();
                f.owner()
            })
            .collect();
        assert_eq!(who.into_iter().collect::<Vec<_>>(), ws);
        assert!(settles(&pool, 2));
    }
}

#[cohort::remote]
fn slow_whoami(_x: i64) -> usize {
    let _b = cohort::blocking();
    std::thread::sleep(Duration::from_millis(150));
    myid()
}

/// A pmap run on a worker: who ran each item, and whether this is a worker.
#[cohort::remote]
fn pmap_from_worker(n: i64) -> cohort::Result<(bool, Vec<usize>)> {
    Ok((myrole() == Role::Worker, pmap(slow_whoami, 0..n)?))
}

fn pmap_on_worker_uses_all_workers() {
    two_workers();
    let added = addprocs(2).unwrap();
    let all = workers();
    assert_eq!(all.len(), 4, "{all:?}");
    let used = |who: &[usize]| -> Vec<usize> {
        let set: std::collections::BTreeSet<usize> = who.iter().copied().collect();
        set.into_iter().collect()
    };
    let (is_worker, who) = remotecall_fetch(pmap_from_worker, all[0], (16,)).unwrap();
    assert!(is_worker);
    assert_eq!(who.len(), 16);
    assert_eq!(used(&who), all, "{who:?}");
    // It is the master's pool: a worker checked out of it here is not used there.
    let pool = default_worker_pool();
    let busy = pool.take().unwrap();
    let caller = *all.iter().find(|&&p| p != busy).unwrap();
    let (_, who) = remotecall_fetch(pmap_from_worker, caller, (12,)).unwrap();
    let rest: Vec<usize> = all.iter().copied().filter(|&p| p != busy).collect();
    assert_eq!(used(&who), rest, "busy {busy}: {who:?}");
    pool.put(busy);
    // The workers went back to the master's default pool.
    assert!(settles(&default_worker_pool(), 4));
    rmprocs(&added, Duration::from_secs(5)).unwrap();
    restore_workers();
}

/// Uses a pool passed from the master: a take, the queries, a call through it.
#[cohort::remote]
fn through_pool(pool: WorkerPool) -> cohort::Result<(Pid, usize, usize, usize, Pid)> {
    let p = pool.take()?;
    let idle = pool.idle_count();
    pool.put(p);
    pool.wait()?;
    let who = pool.remotecall_fetch(whoami_item, (0,))?;
    Ok((p, idle, pool.len(), who, pool.owner()))
}

#[cohort::remote]
fn take_through(pool: WorkerPool) -> cohort::Result<Pid> {
    pool.take()
}

#[cohort::remote]
fn keep_pool(pool: WorkerPool) {
    local::set("kept-pool", pool);
}

/// The error a kept pool gives: its kind and message.
#[cohort::remote]
fn take_kept() -> String {
    match local::get::<WorkerPool>("kept-pool").map(|p| p.take()) {
        Some(Err(Error::Invalid(m))) => format!("invalid: {m}"),
        other => format!("{other:?}"),
    }
}

fn pool_as_argument() {
    let ws = two_workers();
    let pool = WorkerPool::new(ws.clone());
    let (p, idle, len, who, owner) =
        remotecall_fetch(through_pool, ws[0], (pool.clone(),)).unwrap();
    assert!(ws.contains(&p) && ws.contains(&who), "{p} {who}");
    assert_eq!((idle, len, owner), (1, 2, 1));
    assert!(settles(&pool, 2));
    // A take on a worker checks the worker out of this very pool.
    let taken = remotecall_fetch(take_through, ws[1], (pool.clone(),)).unwrap();
    assert_eq!(pool.idle_count(), 1);
    assert!(ws.contains(&taken));
    pool.put(taken);
    assert_eq!(pool.idle_count(), 2);
    // The default pool travels too.
    let (_, _, len, _, owner) =
        remotecall_fetch(through_pool, ws[0], (default_worker_pool(),)).unwrap();
    assert_eq!((len, owner), (2, 1));
    // Once the owner dropped its last handle, a handle elsewhere fails with a reason.
    let gone = WorkerPool::new(ws.clone());
    remotecall_fetch(keep_pool, ws[1], (gone.clone(),)).unwrap();
    drop(gone);
    let e = remotecall_fetch(take_kept, ws[1], ()).unwrap();
    assert!(
        e.starts_with("invalid: the worker pool") && e.contains("gone"),
        "{e}"
    );
    local::clear(&["kept-pool"], &[ws[1]]).unwrap();
    assert_eq!(pool.remotecall_fetch(square, (3,)).unwrap(), 9);
}

fn pool_wait() {
    let ws = two_workers();
    let pool = WorkerPool::new(ws.clone());
    pool.wait().unwrap();
    assert_eq!(pool.idle_count(), 2, "wait checks nothing out");
    let a = pool.take().unwrap();
    let b = pool.take().unwrap();
    let waiting = pool.clone();
    let t0 = Instant::now();
    let waiter = std::thread::spawn(move || waiting.wait());
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        !waiter.is_finished(),
        "wait blocks while every worker is busy"
    );
    pool.put(b);
    waiter.join().unwrap().unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(140));
    assert_eq!(pool.idle_count(), 1);
    pool.put(a);
    assert!(matches!(WorkerPool::new([]).wait(), Err(Error::Invalid(_))));
}

fn pgenerate_lazy_in_order() {
    two_workers();
    let pool = default_worker_pool();
    assert!(settles(&pool, 2));
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = Arc::clone(&read);
    let items = (0..10i64).inspect(move |_| {
        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    let mut g = cohort::pgenerate(square, items);
    assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 0, "lazy");
    assert_eq!(g.next().unwrap().unwrap(), 0);
    assert_eq!(
        read.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one item per worker ahead"
    );
    let rest: Vec<i64> = g.by_ref().map(Result::unwrap).collect();
    assert_eq!(rest, (1..10).map(|x| x * x).collect::<Vec<_>>());
    assert!(g.next().is_none());
    // Errors in place; the iteration goes on.
    let v: Vec<cohort::Result<i64>> = cohort::pgenerate(fail_even, 1..=4).collect();
    assert_eq!(v.len(), 4);
    assert_eq!((v[0].as_ref().unwrap(), v[2].as_ref().unwrap()), (&1, &3));
    for (k, e) in [(1, "foo 2"), (3, "foo 4")] {
        assert!(
            matches!(&v[k], Err(Error::Remote(r)) if r.to_string().contains(e)),
            "{v:?}"
        );
    }
    // The calls ahead run at once, on different workers.
    let t0 = Instant::now();
    let who: Vec<usize> = cohort::pgenerate(slow_whoami, 0..4)
        .map(Result::unwrap)
        .collect();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(550), "{took:?}");
    let mut used = who.clone();
    used.sort_unstable();
    used.dedup();
    assert_eq!(used.len(), 2, "{who:?}");
    // On a pool of one worker.
    let one = WorkerPool::new([workers()[1]]);
    let v: Vec<usize> = cohort::pgenerate_on(&one, whoami_item, 0..3)
        .map(Result::unwrap)
        .collect();
    assert_eq!(v, vec![workers()[1]; 3]);
    assert!(settles(&pool, 2));
}

fn everywhere_on_repeats() {
    let ws = two_workers();
    let key = "repeats".to_string();
    let order = [ws[0], ws[0], 1, ws[1], 1, ws[0]];
    let v = cohort::everywhere_on(&order, bump_local, (key.clone(),)).unwrap();
    assert_eq!(v, vec![1, 2, 1, 1, 2, 3]);
    let after = everywhere(read_count, (key.clone(),)).unwrap();
    assert_eq!(after, vec![2, 3, 1]);
    local::clear(&["repeats"], &procs()).unwrap();
}

#[cohort::remote]
fn read_count(name: String) -> u64 {
    local::get::<u64>(&name).map_or(0, |v| *v)
}

fn main() {
    let cluster = cohort::init().unwrap();
    addprocs(2).unwrap();
    common::run(
        cluster,
        &[
            ("pmap_order", pmap_order),
            ("pmap_zipped", pmap_zipped),
            ("pmap_empty", pmap_empty),
            ("pmap_on_error", pmap_on_error),
            ("pmap_retries", pmap_retries),
            ("pmap_retry_check", pmap_retry_check),
            ("pmap_not_distributed", pmap_not_distributed),
            ("pmap_progress", pmap_progress),
            ("pmap_progress_bar", pmap_progress_bar),
            ("loops_with_reducers", loops_with_reducers),
            ("loops_without_reducer", loops_without_reducer),
            ("everywhere_composite_error", everywhere_composite_error),
            ("worker_local_state", worker_local_state),
            ("pool_take_put", pool_take_put),
            ("pool_calls_when_busy", pool_calls_when_busy),
            ("caching_pool_ships_once", caching_pool_ships_once),
            (
                "pmap_batch_failure_retries_whole_batch",
                pmap_batch_failure_retries_whole_batch,
            ),
            ("pmap_worker_killed", pmap_worker_killed),
            ("pool_after_worker_dies", pool_after_worker_dies),
            (
                "pool_returns_workers_every_form",
                pool_returns_workers_every_form,
            ),
            (
                "pmap_on_worker_uses_all_workers",
                pmap_on_worker_uses_all_workers,
            ),
            ("pool_as_argument", pool_as_argument),
            ("pool_wait", pool_wait),
            ("pgenerate_lazy_in_order", pgenerate_lazy_in_order),
            ("everywhere_on_repeats", everywhere_on_repeats),
            ("pmap_all_workers_die", pmap_all_workers_die),
        ],
        Duration::from_secs(60),
        Vec::new(),
    );
}
