//! Raw reference measurements that cohort's benches print beside their own figures.
//!
//! cohort's benches do not report bare timings: the machines they run on (small virtual
//! machines, shared CI runners) drift by tens of percent from one run to the next. Instead each
//! bench measures, *in the same run*, what the hardware and kernel can do with no runtime in the
//! way, and reports cohort's figure as a ratio to it:
//!
//! * [`triad`] — a STREAM-style triad `a[i] = b[i] + s*c[i]`, the memory-bandwidth floor for
//!   memory-bound kernels such as the advection benchmark (24 bytes per update);
//! * [`pingpong`] / [`echo_serve`] — the round trip of a fixed-size frame over a raw byte stream
//!   (TCP or Unix socket), with the receiver either blocking in `read` or busy-polling a
//!   non-blocking socket ([`PollMode`]), the floor for a remote call's latency;
//!   [`pingpong_spaced`] lets the peer go idle before each frame, as between isolated calls;
//! * [`stream_measure`] / [`stream_send_msgs`] — streaming bandwidth of N-byte messages over the
//!   same sockets, received into a reused buffer or into a fresh `Vec` per message
//!   ([`RecvBuffer`]), the floor for moving a large payload in a message;
//! * [`FlagPage`] — two processes spinning on flags in one shared page, the floor of node-local
//!   message passing (the shared-memory transport's round trip is measured against it).
//!
//! Everything here is std plus `nix` (for `fcntl` and `mmap`); `unsafe` only maps and reads
//! the shared page of [`FlagPage`].
//!
//! # Conventions
//!
//! * GB/s means 10⁹ bytes per second, as STREAM reports it.
//! * Times are taken with [`std::time::Instant`] around each repetition; one or more warm-up
//!   repetitions are always discarded first.
//! * [`triad_gbs`] returns the **best** repetition, like STREAM; [`Triad`] also carries the
//!   median. Round trips report median and minimum; streaming reports median, best and aggregate.
//! * Real benches run the two halves of a socket measurement in **two processes** (the lead
//!   runs [`echo_serve`] or [`stream_send_msgs`] in a worker through a remote call and the
//!   measuring half on the master), so that the figure includes the same cross-process wake-ups
//!   that cohort pays. The crate's own tests use two threads, which is enough to check
//!   correctness; `examples/raw_baselines.rs` shows the two-process set-up by re-executing itself.
//! * Busy-polling needs a core per spinning process: on a 2-vCPU machine, two spinning peers
//!   fill the machine, and anything else runnable distorts the figures.
//!
//! # Figures on the 2-vCPU development VM
//!
//! From `cargo run --release -p cohort-baseline --example raw_baselines` (two processes; ranges
//! over runs, which vary by tens of percent — hence the same-run ratios):
//!
//! | what | figure |
//! |---|---|
//! | triad, 1 / 2 threads (best) | 11.6–15 / 14–29 GB/s |
//! | 8-byte round trip, TCP: blocking / busy-poll (median) | 13–17 / 4.3–8 µs |
//! | 8-byte round trip, Unix: blocking / busy-poll (median) | 8–11 / 1.9–4 µs |
//! | same, blocking, peer idle 1 ms before each frame (median; p99) | 23–56 µs; 200–550 µs |
//! | TCP stream 1 MiB / 64 MiB, reused buffer (median) | 6.4–7.4 / 3.8–4.4 GB/s |
//! | TCP stream 1 MiB / 64 MiB, fresh `Vec` per message (median) | 6.6–10 / 1.3–1.7 GB/s |
//! | Unix stream 1 MiB / 64 MiB, reused / fresh (median) | 5–7 / 3.4–5.8; 5.7–7 / 1.4–1.8 GB/s |
//!
//! # Example
//!
//! ```
//! use cohort_baseline::{echo_serve, pingpong, tcp_pair, PollMode};
//!
//! let (mut client, server) = tcp_pair().unwrap();
//! let echo = std::thread::spawn(move || echo_serve(server, 8, PollMode::Blocking));
//! let rt = pingpong(&mut client, 8, 100, 10, PollMode::Blocking).unwrap();
//! drop(client); // EOF ends the echo loop
//! assert_eq!(echo.join().unwrap().unwrap(), 110);
//! assert!(rt.median_us > 0.0);
//! ```

mod flags;
mod pingpong;
mod sockets;
mod stats;
mod stream;
mod triad;

pub use flags::FlagPage;
pub use pingpong::{echo_serve, pingpong, pingpong_spaced, PingPong, PollMode};
pub use sockets::{
    tcp_accept, tcp_connect, tcp_listener_loopback, tcp_pair, unix_listener_tmp, SocketFile,
};
pub use stream::{
    pattern, stream_measure, stream_recv, stream_recv_owned, stream_send, stream_send_msgs,
    RecvBuffer, Streaming, RECV_CHUNK,
};
pub use triad::{
    triad, triad_gbs, triad_gbs_default, triad_kernel, Triad, TRIAD_BYTES_PER_ELEM,
    TRIAD_DEFAULT_ELEMS, TRIAD_SCALAR,
};
