//! Correctness of the measurements, with both halves on two threads of this process.
//!
//! Real benches run the halves in two processes (see `examples/raw_baselines.rs`). No test here
//! asserts a speed: only that the figures are sane and the bytes are right.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread;

use cohort_baseline::*;

fn sane(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// Runs ping-pong over fresh pairs from `pair` for every combination of modes and a few frame
/// sizes (one larger than the socket buffers, so busy-poll writes meet `WouldBlock`).
fn check_pingpong<S, F>(pair: F)
where
    S: Read + Write + AsRawFd + Send + 'static,
    F: Fn() -> io::Result<(S, S)>,
{
    for client_mode in PollMode::ALL {
        for server_mode in PollMode::ALL {
            for (frame, iters, warmup) in [(8, 200, 20), (1, 30, 0), (1 << 20, 5, 1)] {
                let (mut client, server) = pair().unwrap();
                let echo = thread::spawn(move || echo_serve(server, frame, server_mode));
                let rt = pingpong(&mut client, frame, iters, warmup, client_mode).unwrap();
                drop(client);
                let echoed = echo.join().unwrap().unwrap();
                assert_eq!(echoed, (iters + warmup) as u64);
                assert_eq!((rt.frame, rt.iters), (frame, iters));
                for x in [rt.median_us, rt.min_us, rt.mean_us, rt.p99_us] {
                    assert!(sane(x), "{client_mode}/{server_mode} frame {frame}: {rt:?}");
                }
                assert!(
                    rt.min_us <= rt.median_us && rt.median_us <= rt.p99_us,
                    "{rt:?}"
                );
            }
        }
    }
}

#[test]
fn pingpong_tcp() {
    check_pingpong(tcp_pair);
}

#[test]
fn pingpong_unix_pair() {
    check_pingpong(UnixStream::pair);
}

#[test]
fn pingpong_unix_listener_and_cleanup() {
    let (listener, file) = unix_listener_tmp().unwrap();
    let path = file.path().to_owned();
    assert!(path.exists());
    let connect = thread::spawn({
        let path = path.clone();
        move || UnixStream::connect(path)
    });
    let (server, _) = listener.accept().unwrap();
    let mut client = connect.join().unwrap().unwrap();
    let echo = thread::spawn(move || echo_serve(server, 64, PollMode::BusyPoll));
    let rt = pingpong(&mut client, 64, 100, 10, PollMode::BusyPoll).unwrap();
    drop(client);
    assert_eq!(echo.join().unwrap().unwrap(), 110);
    assert!(sane(rt.median_us));
    drop((listener, file));
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn pingpong_spaced_counts_and_sanity() {
    for mode in PollMode::ALL {
        let (mut client, server) = tcp_pair().unwrap();
        let echo = thread::spawn(move || echo_serve(server, 8, mode));
        let gap = std::time::Duration::from_micros(200);
        let rt = pingpong_spaced(&mut client, 8, 20, 2, mode, gap).unwrap();
        drop(client);
        assert_eq!(echo.join().unwrap().unwrap(), 22);
        assert!(sane(rt.median_us) && sane(rt.min_us), "{rt:?}");
    }
}

#[test]
fn pingpong_restores_blocking_flag() {
    let (mut client, server) = UnixStream::pair().unwrap();
    let echo = thread::spawn(move || echo_serve(server, 8, PollMode::Blocking));
    pingpong(&mut client, 8, 10, 0, PollMode::BusyPoll).unwrap();
    // Blocking again: a read with a timeout times out instead of failing with WouldBlock at once.
    client
        .set_read_timeout(Some(std::time::Duration::from_millis(20)))
        .unwrap();
    let t0 = std::time::Instant::now();
    assert!(client.read(&mut [0u8; 1]).is_err());
    assert!(t0.elapsed() >= std::time::Duration::from_millis(10));
    drop(client);
    assert_eq!(echo.join().unwrap().unwrap(), 10);
}

#[test]
fn pingpong_rejects_empty_frames_and_reports_a_vanished_peer() {
    let (mut client, server) = UnixStream::pair().unwrap();
    assert!(pingpong(&mut client, 0, 1, 0, PollMode::Blocking).is_err());
    drop(server);
    let err = pingpong(&mut client, 8, 1, 0, PollMode::Blocking).unwrap_err();
    assert!(matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe
    ));
}

/// Sends `bytes` in `chunk`s on one thread, receives it in one `stream_recv` on this one.
fn check_stream<S>(mut tx: S, mut rx: S, bytes: usize, chunk: usize)
where
    S: Read + Write + Send + 'static,
{
    let send = thread::spawn(move || stream_send(&mut tx, bytes, chunk));
    let mut buf = vec![0u8; bytes];
    let dt = stream_recv(&mut rx, &mut buf).unwrap();
    send.join().unwrap().unwrap();
    assert!(dt.as_secs_f64().is_finite());
    if let Some(i) = (0..bytes).find(|&i| buf[i] != pattern(i)) {
        panic!(
            "byte {i} of {bytes} (chunk {chunk}) is {}, want {}",
            buf[i],
            pattern(i)
        );
    }
    // Nothing more was sent.
    assert_eq!(rx.read(&mut [0u8; 1]).unwrap(), 0);
}

#[test]
fn stream_bytes_arrive_intact() {
    for (bytes, chunk) in [
        (0, 16),
        (1, 1),
        (1000, 7),
        (3 << 20, 1 << 16),
        (5 << 20, 5 << 20),
        (999_983, 0),
    ] {
        let (a, b) = tcp_pair().unwrap();
        check_stream(a, b, bytes, chunk);
        let (a, b) = UnixStream::pair().unwrap();
        check_stream(a, b, bytes, chunk);
    }
}

#[test]
fn stream_recv_owned_reads_exactly_one_message() {
    let (mut tx, mut rx) = UnixStream::pair().unwrap();
    let send = thread::spawn(move || stream_send_msgs(&mut tx, 300_000, 2));
    for k in 0..3 {
        let (v, dt) = stream_recv_owned(&mut rx, 300_000).unwrap();
        assert_eq!(v.len(), 300_000);
        assert!(dt.as_secs_f64().is_finite());
        assert!(v
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern(k * 300_000 + i)));
    }
    send.join().unwrap().unwrap();
    assert!(stream_recv_owned(&mut rx, 1).is_err());
}

fn check_measure<S>(pair: impl Fn() -> io::Result<(S, S)>)
where
    S: Read + Write + Send + 'static,
{
    for recv in RecvBuffer::ALL {
        let (mut tx, mut rx) = pair().unwrap();
        let send = thread::spawn(move || stream_send_msgs(&mut tx, 1 << 20, 8));
        let st = stream_measure(&mut rx, 1 << 20, 8, recv).unwrap();
        send.join().unwrap().unwrap();
        assert_eq!((st.msg_bytes, st.msgs), (1 << 20, 8));
        for x in [st.median_gbs, st.best_gbs, st.aggregate_gbs] {
            assert!(sane(x), "{recv:?}: {st:?}");
        }
        assert_eq!(rx.read(&mut [0u8; 1]).unwrap(), 0, "all messages consumed");
    }
}

#[test]
fn stream_measure_tcp() {
    check_measure(tcp_pair);
}

#[test]
fn stream_measure_unix() {
    check_measure(UnixStream::pair);
}

#[test]
fn triad_small_is_sane() {
    for threads in [1, 2, 3] {
        let t = triad(100_000, threads, 3);
        assert_eq!((t.n_elems, t.threads, t.times.len()), (100_000, threads, 3));
        assert!(sane(t.best_gbs) && sane(t.median_gbs));
        assert!(t.best_gbs >= t.median_gbs);
    }
    assert!(sane(triad_gbs(10_000, 2, 2)));
}

#[test]
fn triad_kernel_computes_b_plus_s_c() {
    let b = [1.0, 2.0, 3.0, 4.0, 5.0];
    let c = [0.5, 0.25, 0.0, -1.0, 2.0];
    let mut a = [0.0; 5];
    triad_kernel(&mut a, &b, &c, 3.0);
    assert_eq!(a, [2.5, 2.75, 3.0, 1.0, 11.0]);
}
