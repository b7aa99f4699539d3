//! Prints this machine's raw baselines, with the two halves of each socket measurement in two
//! processes, as cohort's benches run them.
//!
//! ```text
//! cargo run --release -p cohort-baseline --example raw_baselines
//! ```
//!
//! The program is its own peer: for each socket measurement it listens on loopback TCP or a
//! temporary Unix socket and starts itself again with `COHORT_BASELINE_PEER` naming the job
//! (`echo <frame> <mode>` or `send <msg> <msgs>`) and `COHORT_BASELINE_CONNECT` the endpoint.

use std::env;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::Duration;

use cohort_baseline::*;

const PEER_ENV: &str = "COHORT_BASELINE_PEER";
const CONNECT_ENV: &str = "COHORT_BASELINE_CONNECT";

const FRAME: usize = 8;
const ITERS: usize = 10_000;
const WARMUP: usize = 1_000;
/// Idle time of the peer before each frame in the spaced round trips.
const GAP: Duration = Duration::from_millis(1);

fn main() -> io::Result<()> {
    if let Ok(job) = env::var(PEER_ENV) {
        return peer(&job, &env::var(CONNECT_ENV).expect("peer without endpoint"));
    }

    for threads in [1, 2] {
        let t = triad(TRIAD_DEFAULT_ELEMS, threads, 10);
        println!(
            "triad {threads} thread(s), 3 x {} MiB      best {:6.2} GB/s   median {:6.2} GB/s",
            (TRIAD_DEFAULT_ELEMS * 8) >> 20,
            t.best_gbs,
            t.median_gbs
        );
    }

    for transport in [Transport::Tcp, Transport::Unix] {
        for mode in PollMode::ALL {
            let rt = with_peer(transport, &format!("echo {FRAME} {mode}"), |mut conn| {
                pingpong(&mut conn, FRAME, ITERS, WARMUP, mode)
            })?;
            println!(
                "{:4} round trip {FRAME} B, {:9}   median {:7.2} µs  min {:7.2} µs  p99 {:7.2} µs",
                transport.name(),
                mode.name(),
                rt.median_us,
                rt.min_us,
                rt.p99_us
            );
        }
    }

    for transport in [Transport::Tcp, Transport::Unix] {
        let mode = PollMode::Blocking;
        let rt = with_peer(transport, &format!("echo {FRAME} {mode}"), |mut conn| {
            pingpong_spaced(&mut conn, FRAME, 1_000, 100, mode, GAP)
        })?;
        println!(
            "{:4} round trip {FRAME} B, {}, peer idle {} ms before each: median {:7.2} µs  min {:7.2} µs  p99 {:7.2} µs",
            transport.name(),
            mode.name(),
            GAP.as_millis(),
            rt.median_us,
            rt.min_us,
            rt.p99_us
        );
    }

    for transport in [Transport::Tcp, Transport::Unix] {
        for (msg, msgs) in [(1 << 20, 256), (64 << 20, 16)] {
            for recv in RecvBuffer::ALL {
                let st = with_peer(transport, &format!("send {msg} {msgs}"), |mut conn| {
                    stream_measure(&mut conn, msg, msgs, recv)
                })?;
                println!(
                    "{:4} stream {:2} MiB x {msgs:3}, {:6}   median {:6.2} GB/s  aggregate {:6.2} GB/s",
                    transport.name(),
                    msg >> 20,
                    recv.name(),
                    st.median_gbs,
                    st.aggregate_gbs
                );
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Transport {
    Tcp,
    Unix,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
        }
    }
}

/// Starts a peer process running `job`, accepts its connection, runs `f` on it, then closes
/// the connection and waits for the peer.
fn with_peer<T>(
    transport: Transport,
    job: &str,
    f: impl FnOnce(Conn) -> io::Result<T>,
) -> io::Result<T> {
    let spawn = |endpoint: String| -> io::Result<Child> {
        Command::new(env::current_exe()?)
            .env(PEER_ENV, job)
            .env(CONNECT_ENV, endpoint)
            .spawn()
    };
    let (conn, mut child) = match transport {
        Transport::Tcp => {
            let (listener, addr) = tcp_listener_loopback()?;
            let child = spawn(format!("tcp:{addr}"))?;
            (Conn::Tcp(tcp_accept(&listener)?), child)
        }
        Transport::Unix => {
            let (listener, file) = unix_listener_tmp()?;
            let child = spawn(format!("unix:{}", file.path().display()))?;
            (Conn::Unix(listener.accept()?.0), child)
        }
    };
    let out = f(conn);
    let status = child.wait()?;
    if !status.success() {
        return Err(io::Error::other(format!("peer `{job}` failed: {status}")));
    }
    out
}

/// The peer process: connects back and runs its half.
fn peer(job: &str, endpoint: &str) -> io::Result<()> {
    let conn = if let Some(addr) = endpoint.strip_prefix("tcp:") {
        Conn::Tcp(tcp_connect(addr.parse().expect("bad tcp address"))?)
    } else {
        let path = endpoint.strip_prefix("unix:").expect("bad endpoint");
        Conn::Unix(UnixStream::connect(path)?)
    };
    let words: Vec<&str> = job.split_whitespace().collect();
    let num = |i: usize| -> usize { words[i].parse().expect("bad number in job") };
    match words[0] {
        "echo" => {
            let mode = if words[2] == PollMode::BusyPoll.name() {
                PollMode::BusyPoll
            } else {
                PollMode::Blocking
            };
            echo_serve(conn, num(1), mode)?;
        }
        "send" => {
            let mut conn = conn;
            stream_send_msgs(&mut conn, num(1), num(2))?;
        }
        other => panic!("unknown peer job {other}"),
    }
    Ok(())
}

/// Either kind of connected stream.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
    }
}
