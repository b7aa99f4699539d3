//! Remote-call latency and bandwidth beside raw sockets, measured in the same run.
//!
//! `cargo run --release --example bench_remotecall`
//!
//! - round trip of `remotecall_fetch` of a no-op on worker 2, beside a raw TCP ping-pong of a
//!   frame of the same size between the same two processes, receiver blocking in `read` and
//!   busy-polling (the baseline is the faster of the two);
//! - `remotecall_fetch` of a 64 MiB `Vec<f64>` that worker 2 holds (moved out, not computed;
//!   `fetch_gbs` from an idle worker, see `shared/rates.rs`), beside raw TCP streaming of 64 MiB
//!   messages into a fresh buffer each (what a fetch must produce; same huge-page advice) and,
//!   for information, into one reused buffer;
//! - wall time of `addprocs(2)`, and an idle worker's resident memory.
//!
//! The calls go over the default transport (`COHORT_TRANSPORT`, `shm`: shared-memory rings
//! between these processes of one host), named at the end of the last line; the raw baselines
//! are TCP's, as a socket transport's floor (`bench_transports` sets each transport beside its
//! own floor).
use cohort::prelude::*;
use cohort_baseline::{
    echo_serve, pingpong, stream_measure, stream_send_msgs, tcp_accept, tcp_connect, PollMode,
    RecvBuffer,
};
use std::time::{Duration, Instant};

#[path = "shared/stash.rs"]
mod stash;
use stash::noop;
#[path = "shared/rates.rs"]
mod rates;

#[cohort::remote]
fn ospid() -> u32 {
    std::process::id()
}

#[cohort::remote]
fn raw_echo(addr: String, frame: usize, busy: bool) -> cohort::Result<u64> {
    let s = tcp_connect(
        addr.parse()
            .map_err(|e| cohort::Error::Invalid(format!("{e}")))?,
    )
    .map_err(|e| cohort::Error::Invalid(e.to_string()))?;
    let mode = if busy {
        PollMode::BusyPoll
    } else {
        PollMode::Blocking
    };
    echo_serve(s, frame, mode).map_err(|e| cohort::Error::Invalid(e.to_string()))
}

#[cohort::remote]
fn raw_stream(addr: String, msg: usize, msgs: usize) -> cohort::Result<()> {
    let mut s = tcp_connect(
        addr.parse()
            .map_err(|e| cohort::Error::Invalid(format!("{e}")))?,
    )
    .map_err(|e| cohort::Error::Invalid(e.to_string()))?;
    stream_send_msgs(&mut s, msg, msgs).map_err(|e| cohort::Error::Invalid(e.to_string()))
}

fn raw_rtt(frame: usize, iters: usize, busy: bool) -> cohort::Result<f64> {
    let (l, addr) = cohort_baseline::tcp_listener_loopback()
        .map_err(|e| cohort::Error::Invalid(e.to_string()))?;
    let f = remotecall(raw_echo, 2, (addr.to_string(), frame, busy))?;
    let mut s = tcp_accept(&l).map_err(|e| cohort::Error::Invalid(e.to_string()))?;
    let mode = if busy {
        PollMode::BusyPoll
    } else {
        PollMode::Blocking
    };
    let r = pingpong(&mut s, frame, iters, iters / 10, mode)
        .map_err(|e| cohort::Error::Invalid(e.to_string()))?;
    drop(s);
    f.fetch()?;
    Ok(r.median_us)
}

fn raw_stream_gbs(msg: usize, msgs: usize, recv: RecvBuffer) -> cohort::Result<f64> {
    let (l, addr) = cohort_baseline::tcp_listener_loopback()
        .map_err(|e| cohort::Error::Invalid(e.to_string()))?;
    let f = remotecall(raw_stream, 2, (addr.to_string(), msg, msgs))?;
    let mut s = tcp_accept(&l).map_err(|e| cohort::Error::Invalid(e.to_string()))?;
    let r = stream_measure(&mut s, msg, msgs, recv)
        .map_err(|e| cohort::Error::Invalid(e.to_string()))?;
    f.fetch()?;
    Ok(r.median_gbs)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);

    let t = Instant::now();
    let pids = addprocs(2)?;
    let addprocs_ms = t.elapsed().as_secs_f64() * 1e3;
    assert_eq!(pids, vec![2, 3]);

    // Round trip of a no-op call. The request frame of this call is about this many bytes.
    let frame = 24 + 8 + 4 + 8 + std::any::type_name_of_val(&noop).len() + 4;
    let rtt = rates::noop_rtt_us(2, iters)?;
    let raw_block = raw_rtt(frame, iters, false)?;
    let raw_busy = raw_rtt(frame, iters, true)?;
    let raw = raw_block.min(raw_busy);

    // Bandwidth: fetch of a 64 MiB Vec<f64> that worker 2 holds.
    let n = 64 << 17; // 8 Mi f64 = 64 MiB
    let (fetch_gbs, fetch_next_gbs) = rates::fetch_rates(2, n, 8)?;
    let raw_fresh = raw_stream_gbs(
        n * 8,
        9,
        RecvBuffer::FreshWith(cohort::__private::zeroed_vec::<u8>),
    )?;
    let raw_reused = raw_stream_gbs(n * 8, 9, RecvBuffer::Reused)?;

    // An idle worker's memory.
    std::thread::sleep(Duration::from_millis(200));
    let idle_pid = remotecall_fetch(ospid, 3, ())?;
    let rss = rss_kib(idle_pid);

    println!("{:<58} {:>12}", "measure", "value");
    println!(
        "{:<58} {:>9.2} us",
        "remotecall_fetch(noop) round trip, median", rtt
    );
    println!(
        "{:<58} {:>9.2} us",
        format!("raw TCP ping-pong {frame} B, blocking read, median"),
        raw_block
    );
    println!(
        "{:<58} {:>9.2} us",
        format!("raw TCP ping-pong {frame} B, busy-poll, median"),
        raw_busy
    );
    println!(
        "{:<58} {:>9.2} GB/s",
        "fetch of 64 MiB Vec<f64> from an idle worker, median", fetch_gbs
    );
    println!(
        "{:<58} {:>9.2} GB/s",
        "fetch right after a fetch, median", fetch_next_gbs
    );
    println!(
        "{:<58} {:>9.2} GB/s",
        "raw TCP stream 64 MiB into a fresh Vec (huge pages), median", raw_fresh
    );
    println!(
        "{:<58} {:>9.2} GB/s",
        "raw TCP stream 64 MiB into a reused buffer, median", raw_reused
    );
    println!("{:<58} {:>9.1} ms", "addprocs(2)", addprocs_ms);
    println!("{:<58} {:>9} KiB", "idle worker resident memory", rss);
    // A fetch hands the caller a new Vec, so its raw counterpart receives into a fresh one.
    let raw_gbs = raw_fresh;
    println!(
        "remotecall rtt_us={rtt:.2} raw_rtt_us={raw:.2} rtt_ratio={:.2} fetch_gbs={fetch_gbs:.2} raw_gbs={raw_gbs:.2} bw_ratio={:.2} addprocs2_ms={addprocs_ms:.1} worker_rss_kib={rss} transport={}",
        rtt / raw,
        fetch_gbs / raw_gbs,
        cohort_core::env::transport()
    );
    Ok(())
}
