//! Every transport measured against its own raw floor, in one run.
//!
//! `cargo run --release --features mpi --example bench_transports`
//!
//! For shared memory (the default), TCP and Unix sockets it starts itself as a master with one
//! worker per transport; for
//! MPI it starts itself under `mpirun -np 2` (two ranks: these machines have two cores, and
//! MPI ranks busy-poll). Each part measures, between the same two processes:
//! - `remotecall_fetch` of a no-op beside the transport's raw ping-pong of a same-size message
//!   (shared memory: two processes spinning on flags in one page; TCP/Unix: the faster of a
//!   blocking and a busy-polling receiver; MPI: rsmpi send/receive);
//! - the fetch of a 64 MiB `Vec<f64>` beside raw streaming of 64 MiB messages into fresh buffers
//!   (shared memory: one copy of 64 MiB into a fresh buffer, the least a received vector costs).
//!   `fetch_gbs` times a fetch from an idle worker; the table also shows a fetch that follows
//!   another at once, which waits for the worker to free the vector it sent before (see
//!   `shared/rates.rs`);
//! - `all_reduce` of 1 and of 1 Mi `f64` (under MPI this is MPI's own `MPI_Allreduce`).
//!
//! It prints a table per transport, one `transport ...` line each, and an `allreduce` line
//! comparing ours over TCP with MPI's.
use cohort::collective::{self, Op};
use cohort::prelude::*;
use cohort_baseline::{
    echo_serve, pingpong, stream_measure, stream_send_msgs, FlagPage, PollMode, RecvBuffer,
};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::time::Instant;

#[path = "shared/rates.rs"]
mod rates;
#[path = "shared/stash.rs"]
mod stash;

const FRAME: usize = 70;
const BIG: usize = 64 << 20;

fn io(e: std::io::Error) -> cohort::Error {
    cohort::Error::Invalid(e.to_string())
}

/// A connected raw socket of either kind, as a plain file: the baselines only read and write.
fn connect_raw(kind: &str, addr: &str) -> cohort::Result<File> {
    let fd = if kind == "tcp" {
        let a = addr
            .parse()
            .map_err(|e| cohort::Error::Invalid(format!("{e}")))?;
        OwnedFd::from(cohort_baseline::tcp_connect(a).map_err(io)?)
    } else {
        OwnedFd::from(std::os::unix::net::UnixStream::connect(addr).map_err(io)?)
    };
    Ok(File::from(fd))
}

/// A listener of either kind on this process; the Unix socket file goes with it.
enum RawListener {
    Tcp(std::net::TcpListener, String),
    Unix(
        std::os::unix::net::UnixListener,
        cohort_baseline::SocketFile,
    ),
}

impl RawListener {
    fn new(kind: &str) -> cohort::Result<Self> {
        Ok(if kind == "tcp" {
            let (l, a) = cohort_baseline::tcp_listener_loopback().map_err(io)?;
            RawListener::Tcp(l, a.to_string())
        } else {
            let (l, f) = cohort_baseline::unix_listener_tmp().map_err(io)?;
            RawListener::Unix(l, f)
        })
    }
    fn address(&self) -> String {
        match self {
            RawListener::Tcp(_, a) => a.clone(),
            RawListener::Unix(_, f) => f.path().display().to_string(),
        }
    }
    fn accept(&self) -> cohort::Result<File> {
        let fd = match self {
            RawListener::Tcp(l, _) => OwnedFd::from(cohort_baseline::tcp_accept(l).map_err(io)?),
            RawListener::Unix(l, _) => OwnedFd::from(l.accept().map_err(io)?.0),
        };
        Ok(File::from(fd))
    }
}

fn mode(busy: bool) -> PollMode {
    if busy {
        PollMode::BusyPoll
    } else {
        PollMode::Blocking
    }
}

#[cohort::remote]
fn raw_echo(kind: String, addr: String, busy: bool) -> cohort::Result<u64> {
    echo_serve(connect_raw(&kind, &addr)?, FRAME, mode(busy)).map_err(io)
}

#[cohort::remote]
fn raw_stream(kind: String, addr: String, msgs: usize) -> cohort::Result<()> {
    stream_send_msgs(&mut connect_raw(&kind, &addr)?, BIG, msgs).map_err(io)
}

/// `k` all_reduces of `n` f64, timed on this process; every process runs it.
#[cohort::remote]
fn allreduce_loop(n: usize, k: usize) -> cohort::Result<f64> {
    let data = vec![1.0f64; n];
    collective::barrier()?;
    let t = Instant::now();
    for _ in 0..k {
        let r = collective::all_reduce(&data, Op::sum())?;
        assert_eq!(r[n - 1], collective::size() as f64);
    }
    Ok(t.elapsed().as_secs_f64() / k as f64 * 1e6)
}

use rates::median;

struct Raw {
    rtt_us: f64,
    gbs: f64,
}

/// The echoing half of the flag ping-pong, on the page in the file at `path`.
#[cohort::remote]
fn flag_echo(path: String) -> cohort::Result<u64> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    Ok(FlagPage::map(&f).map_err(io)?.echo())
}

/// A file removed when dropped.
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The node-local floors: a flag ping-pong between this process and worker 2, and one copy of
/// 64 MiB into a fresh buffer.
fn raw_shared_memory() -> cohort::Result<Raw> {
    let path = Removed(format!("/dev/shm/bench-flags-{}", std::process::id()));
    let f = File::create_new(&path.0).map_err(io)?;
    f.set_len(4096).map_err(io)?;
    let page = FlagPage::map(&f).map_err(io)?;
    let echo = remotecall(flag_echo, 2, (path.0.clone(),))?;
    let rtt_us = page.pingpong(200_000, 20_000);
    echo.fetch()?;
    drop(path);
    let src = vec![1u8; BIG];
    let mut g = Vec::new();
    for _ in 0..9 {
        let t0 = Instant::now();
        let mut v = cohort::__private::zeroed_vec::<u8>(BIG);
        v.copy_from_slice(&src);
        std::hint::black_box(&v);
        g.push(BIG as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    Ok(Raw {
        rtt_us,
        gbs: median(g),
    })
}

fn raw_stream_socket(kind: &str) -> cohort::Result<Raw> {
    let mut rtts = Vec::new();
    for busy in [false, true] {
        let l = RawListener::new(kind)?;
        let f = remotecall(raw_echo, 2, (kind.to_string(), l.address(), busy))?;
        let mut s = l.accept()?;
        let r = pingpong(&mut s, FRAME, 20_000, 2_000, mode(busy)).map_err(io)?;
        drop(s);
        f.fetch()?;
        rtts.push(r.median_us);
    }
    let l = RawListener::new(kind)?;
    let f = remotecall(raw_stream, 2, (kind.to_string(), l.address(), 9))?;
    let mut s = l.accept()?;
    let fresh = RecvBuffer::FreshWith(cohort::__private::zeroed_vec::<u8>);
    let gbs = stream_measure(&mut s, BIG, 9, fresh)
        .map_err(io)?
        .median_gbs;
    f.fetch()?;
    Ok(Raw {
        rtt_us: rtts[0].min(rtts[1]),
        gbs,
    })
}

#[cfg(feature = "mpi")]
mod rawmpi {
    use cohort::mpi::point_to_point::{Destination, Source};
    use cohort::mpi::topology::{Communicator, SimpleCommunicator};

    const TAG: i32 = 99;

    /// Rank 1's half of the raw ping-pong and stream, on MPI_COMM_WORLD.
    #[cohort::remote]
    pub(super) fn mpi_peer(iters: usize, msgs: usize) {
        let w = SimpleCommunicator::world();
        let p = w.process_at_rank(0);
        let mut buf = [0u8; super::FRAME];
        for _ in 0..iters {
            p.receive_into_with_tag(&mut buf[..], TAG);
            p.send_with_tag(&buf[..], TAG);
        }
        let big = vec![7u8; super::BIG];
        for _ in 0..msgs {
            p.send_with_tag(&big[..], TAG);
        }
    }

    pub(super) fn measure(iters: usize, msgs: usize) -> cohort::Result<super::Raw> {
        let w = SimpleCommunicator::world();
        let p = w.process_at_rank(1);
        cohort::remote_do(mpi_peer, 2, (iters, msgs))?;
        let mut buf = [0u8; super::FRAME];
        let mut t = Vec::with_capacity(iters);
        for _ in 0..iters {
            let t0 = std::time::Instant::now();
            p.send_with_tag(&buf[..], TAG);
            p.receive_into_with_tag(&mut buf[..], TAG);
            t.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        let mut g = Vec::new();
        for _ in 0..msgs {
            let t0 = std::time::Instant::now();
            let mut v = cohort::__private::zeroed_vec::<u8>(super::BIG);
            p.receive_into_with_tag(&mut v[..], TAG);
            g.push(super::BIG as f64 / t0.elapsed().as_secs_f64() / 1e9);
        }
        Ok(super::Raw {
            rtt_us: super::median(t[iters / 10..].to_vec()),
            gbs: super::median(g[1..].to_vec()),
        })
    }
}

fn part(name: &str) -> cohort::Result<()> {
    if workers() == [1] {
        addprocs(1)?;
    }
    let iters = 20_000;
    let rtt = rates::noop_rtt_us(2, iters)?;
    let (fetch_gbs, fetch_next_gbs) = rates::fetch_rates(2, BIG / 8, 8)?;
    let raw = match name {
        #[cfg(feature = "mpi")]
        "mpi" => rawmpi::measure(iters, 10)?,
        "shm" => raw_shared_memory()?,
        other => raw_stream_socket(other)?,
    };
    let mut ar = Vec::new();
    for (n, k) in [(1usize, 2000usize), (1 << 20, 20)] {
        let f = remotecall(allreduce_loop, 2, (n, k))?;
        let mine = allreduce_loop(n, k)?;
        let theirs = f.fetch()?;
        ar.push(mine.max(theirs));
    }
    println!(
        "[{name}] {:<44} {:>10.2} us",
        "remotecall_fetch(noop), median", rtt
    );
    println!(
        "[{name}] {:<44} {:>10.2} us",
        "raw ping-pong, median", raw.rtt_us
    );
    println!(
        "[{name}] {:<44} {:>10.2} GB/s",
        "fetch of 64 MiB Vec<f64> (idle worker)", fetch_gbs
    );
    println!(
        "[{name}] {:<44} {:>10.2} GB/s",
        "fetch right after a fetch", fetch_next_gbs
    );
    println!(
        "[{name}] {:<44} {:>10.2} GB/s",
        "raw stream of 64 MiB into fresh buffers", raw.gbs
    );
    println!("[{name}] {:<44} {:>10.2} us", "all_reduce of 1 f64", ar[0]);
    println!(
        "[{name}] {:<44} {:>10.2} us",
        "all_reduce of 1 Mi f64", ar[1]
    );
    println!(
        "allreduce name={name} one_us={:.2} mi_us={:.2}",
        ar[0], ar[1]
    );
    println!(
        "transport name={name} rtt_us={rtt:.2} raw_rtt_us={:.2} rtt_ratio={:.2} fetch_gbs={fetch_gbs:.2} raw_gbs={:.2} bw_ratio={:.2}",
        raw.rtt_us,
        rtt / raw.rtt_us,
        raw.gbs,
        fetch_gbs / raw.gbs
    );
    Ok(())
}

fn field(out: &str, prefix: &str, key: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with(prefix))?;
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))?
        .parse()
        .ok()
}

fn main() -> cohort::Result<()> {
    let _cluster = cohort::init()?;
    let me = cohort::__private::transport_name().unwrap_or("shm");
    if me == "mpi" || std::env::var_os("BENCH_PART").is_some() {
        return part(me);
    }
    let exe = std::env::current_exe().map_err(io)?;
    let mut outs = Vec::new();
    for t in ["shm", "tcp", "unix"] {
        let o = std::process::Command::new(&exe)
            .env("COHORT_TRANSPORT", t)
            .env("BENCH_PART", "1")
            .output()
            .map_err(io)?;
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            return Err(cohort::Error::Invalid(format!(
                "the {t} part failed: {s}{}",
                String::from_utf8_lossy(&o.stderr)
            )));
        }
        outs.push(s);
    }
    if cfg!(feature = "mpi") {
        let o = cohort::managers::mpirun_command(2, &exe)?
            .output()
            .map_err(io)?;
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            return Err(cohort::Error::Invalid(format!(
                "the MPI part failed: {s}{}",
                String::from_utf8_lossy(&o.stderr)
            )));
        }
        outs.push(s);
    }
    for o in &outs {
        for l in o.lines().filter(|l| l.starts_with('[')) {
            println!("{l}");
        }
    }
    let all = outs.concat();
    if let (Some(tcp), Some(mpi)) = (
        field(&all, "allreduce name=tcp", "mi_us"),
        field(&all, "allreduce name=mpi", "mi_us"),
    ) {
        println!(
            "allreduce n=1048576 tcp_us={tcp:.1} mpi_us={mpi:.1} ratio={:.2}",
            tcp / mpi
        );
    } else {
        println!("(MPI part not run: build with --features mpi)");
    }
    for l in all.lines().filter(|l| l.starts_with("transport ")) {
        println!("{l}");
    }
    Ok(())
}
