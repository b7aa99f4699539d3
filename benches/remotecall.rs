//! Criterion benches of the core runtime: remote-call round trip beside a raw TCP ping-pong
//! between the same two processes, fetch of a 64 MiB `Vec<f64>` beside raw streaming, and
//! `addprocs(2)`. `cargo bench --bench remotecall`; `examples/bench_remotecall.rs` prints the
//! same figures as ratios in one line.
use cohort::prelude::*;
use cohort_baseline::{echo_serve, stream_send_msgs, tcp_accept, tcp_connect, PollMode};
use criterion::{black_box, Criterion, Throughput};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[path = "../examples/shared/stash.rs"]
mod stash;
use stash::{noop, stash_vecs, take_vec};

#[cohort::remote]
fn raw_echo(addr: String, frame: usize) -> u64 {
    let s = tcp_connect(addr.parse().unwrap()).unwrap();
    echo_serve(s, frame, PollMode::BusyPoll).unwrap_or(0)
}

#[cohort::remote]
fn raw_stream(addr: String, msg: usize, msgs: usize) {
    let mut s = tcp_connect(addr.parse().unwrap()).unwrap();
    let _ = stream_send_msgs(&mut s, msg, msgs);
}

const FRAME: usize = 70;
const BIG: usize = 64 << 20;

fn rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip");
    g.bench_function("remotecall_fetch_noop", |b| {
        b.iter(|| remotecall_fetch(noop, 2, ()).unwrap())
    });
    let (l, addr) = cohort_baseline::tcp_listener_loopback().unwrap();
    let echo = remotecall(raw_echo, 2, (addr.to_string(), FRAME)).unwrap();
    let mut s = tcp_accept(&l).unwrap();
    let mut buf = [0u8; FRAME];
    g.bench_function("raw_tcp_pingpong_busy_poll", |b| {
        b.iter(|| {
            s.write_all(&buf).unwrap();
            s.read_exact(&mut buf).unwrap();
        })
    });
    drop(s);
    echo.fetch().unwrap();
    g.finish();
}

fn bandwidth(c: &mut Criterion) {
    let mut g = c.benchmark_group("fetch_64MiB");
    g.throughput(Throughput::Bytes(BIG as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    g.bench_function("remotecall_fetch_vec_f64", |b| {
        b.iter_custom(|iters| {
            remotecall_fetch(stash_vecs, 2, (BIG / 8, iters as usize)).unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                black_box(remotecall_fetch(take_vec, 2, ()).unwrap());
            }
            t.elapsed()
        })
    });
    g.bench_function("raw_tcp_stream_fresh_buffer", |b| {
        b.iter_custom(|iters| {
            let (l, addr) = cohort_baseline::tcp_listener_loopback().unwrap();
            let f = remotecall(raw_stream, 2, (addr.to_string(), BIG, iters as usize - 1)).unwrap();
            let mut s = tcp_accept(&l).unwrap();
            let t = Instant::now();
            for _ in 0..iters {
                let mut v = cohort::__private::zeroed_vec::<u8>(BIG);
                s.read_exact(&mut v).unwrap();
                black_box(v);
            }
            let dt = t.elapsed();
            f.wait().unwrap();
            dt
        })
    });
    g.finish();
}

fn start(c: &mut Criterion) {
    let mut g = c.benchmark_group("addprocs");
    g.sample_size(10);
    g.bench_function("addprocs_2", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let p = addprocs(2).unwrap();
                total += t.elapsed();
                rmprocs(&p, Duration::from_secs(10)).unwrap();
            }
            total
        })
    });
    g.finish();
}

fn main() {
    let _cluster = cohort::init().unwrap();
    addprocs(1).unwrap();
    let mut c = Criterion::default().configure_from_args();
    rtt(&mut c);
    bandwidth(&mut c);
    start(&mut c);
    c.final_summary();
}
