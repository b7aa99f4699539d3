//! The core suite in MPI mode: under `mpirun -np 4` (which this test starts itself when built
//! with `--features mpi`), rank 0 is the master and ranks 1..3 are workers 2..4.
//!
//! Without the `mpi` feature it only checks that `mpirun` with a non-MPI build is refused
//! clearly.

mod common;

#[cfg(feature = "mpi")]
mod suite {
    use super::common;
    use cohort::collective::{self, Op};
    use cohort::prelude::*;
    use cohort::Error;
    use std::sync::Mutex;
    use std::time::Duration;

    #[cohort::remote]
    fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    #[cohort::remote]
    fn whoami() -> (usize, usize) {
        (myid(), collective::rank().unwrap())
    }

    #[cohort::remote]
    fn boom() -> i64 {
        panic!("mpi boom")
    }

    static LOG: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    #[cohort::remote]
    fn record(i: u64) {
        LOG.lock().unwrap().push(i);
    }

    #[cohort::remote]
    fn take_log() -> Vec<u64> {
        std::mem::take(&mut *LOG.lock().unwrap())
    }

    #[cohort::remote]
    fn call_other(pid: usize) -> cohort::Result<(usize, usize)> {
        Ok((myid(), remotecall_fetch(whoami, pid, ())?.0))
    }

    #[cohort::remote]
    fn big(n: usize) -> Vec<f64> {
        (0..n).map(|i| i as f64).collect()
    }

    #[cohort::remote]
    fn sum_of_big_from(pid: usize, n: usize) -> cohort::Result<f64> {
        Ok(remotecall_fetch(big, pid, (n,))?.iter().sum())
    }

    #[cohort::remote]
    fn chan_take(c: RemoteChannel<i64>) -> cohort::Result<i64> {
        c.take()
    }

    #[cohort::remote]
    fn allsum(n: usize) -> cohort::Result<Vec<f64>> {
        let r = collective::rank()? as f64;
        collective::all_reduce(&vec![r; n], Op::sum())
    }

    fn world() {
        assert_eq!(workers(), vec![2, 3, 4]);
        assert_eq!(procs(), vec![1, 2, 3, 4]);
        for p in 2..=4 {
            assert_eq!(remotecall_fetch(whoami, p, ()).unwrap(), (p, p - 1));
            assert_eq!(
                remotecall_fetch(add, p, (p as i64, 1)).unwrap(),
                p as i64 + 1
            );
        }
        assert!(
            cohort::__private::peer_address(2).is_none(),
            "MPI mode opens no listener"
        );
        assert!(matches!(addprocs(1), Err(Error::Invalid(m)) if m.contains("MPI mode")));
        assert!(
            matches!(rmprocs(&[2], Duration::from_secs(1)), Err(Error::Invalid(m)) if m.contains("MPI mode"))
        );
    }

    fn calls_futures_channels() {
        let f = remotecall(add, 3, (20, 22)).unwrap();
        assert_eq!(f.fetch().unwrap(), 42);
        let e = remotecall_fetch(boom, 4, ()).unwrap_err();
        assert_eq!(
            e.as_remote().map(|r| (r.pid, r.error.clone())),
            Some((4, "panic: mpi boom".into()))
        );
        let v = remotecall_fetch(big, 2, (3 << 20,)).unwrap();
        assert_eq!(
            (v.len(), v[(3 << 20) - 1]),
            (3 << 20, ((3 << 20) - 1) as f64)
        );
        let c: RemoteChannel<i64> = RemoteChannel::new(0, 2).unwrap();
        let t = remotecall(chan_take, 3, (c.clone(),)).unwrap();
        c.put(9).unwrap();
        assert_eq!(t.fetch().unwrap(), 9);
    }

    /// A frame of up to 64 KiB is one MPI message, a larger one a head and a tail: sizes on
    /// both sides of the limit, in flight from every worker at once and between workers,
    /// arrive whole.
    fn frames_around_the_message_limit() {
        let sizes = [8180usize, 8187, 8188, 8189, 8192, 8200, 1 << 16, 1 << 18];
        let fs: Vec<_> = sizes
            .iter()
            .flat_map(|&n| (2..=4).map(move |p| (n, remotecall(big, p, (n,)).unwrap())))
            .collect();
        let across: Vec<_> = (2..=4)
            .map(|p| remotecall(sum_of_big_from, p, (p % 3 + 2, 9000)).unwrap())
            .collect();
        for (n, f) in fs {
            assert_eq!(
                f.fetch().unwrap(),
                (0..n).map(|i| i as f64).collect::<Vec<_>>()
            );
        }
        for f in across {
            assert_eq!(f.fetch().unwrap(), (8999.0 * 9000.0) / 2.0);
        }
    }

    /// A frame whose message header does not fit an MPI frame head is refused on the sender
    /// with a clear error, and the worker goes on serving.
    fn frame_head_too_large() {
        let name = "f".repeat(70_000);
        let r = cohort::remotecall_fetch_by_name::<(), i64>(&name, 2, ());
        match r {
            Err(Error::Invalid(m)) => {
                assert!(m.contains("cannot send to pid 2"), "{m}");
                assert!(m.contains("MPI frame head"), "{m}");
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
        assert_eq!(remotecall_fetch(add, 2, (2, 3)).unwrap(), 5);
    }

    fn ordering_and_worker_to_worker() {
        for i in 0..1000 {
            remote_do(record, 2, (i,)).unwrap();
        }
        assert_eq!(
            remotecall_fetch(take_log, 2, ()).unwrap(),
            (0..1000).collect::<Vec<u64>>()
        );
        assert_eq!(remotecall_fetch(call_other, 2, (4,)).unwrap(), (2, 4));
        assert_eq!(remotecall_fetch(call_other, 3, (1,)).unwrap(), (3, 1));
    }

    fn collectives_use_mpi() {
        for n in [1, 1 << 20] {
            let fs: Vec<_> = (2..=4)
                .map(|p| remotecall(allsum, p, (n,)).unwrap())
                .collect();
            let mine = allsum(n).unwrap();
            assert_eq!(mine, vec![6.0; n]);
            for f in fs {
                assert_eq!(f.fetch().unwrap(), vec![6.0; n]);
            }
        }
    }

    pub(super) fn main() {
        let cluster = cohort::init().unwrap();
        if cohort::__private::transport_name() != Some("mpi") {
            // Not under mpirun: run this same binary under it, and report its result.
            drop(cluster);
            let st = cohort::managers::mpirun_command(4, std::env::current_exe().unwrap())
                .unwrap_or_else(|e| panic!("{e}"))
                .args(std::env::args().skip(1))
                .status();
            match st {
                Ok(s) if s.success() => return,
                Ok(s) => panic!("the MPI suite failed under mpirun: {s}"),
                Err(e) => panic!("cannot run mpirun (install OpenMPI: openmpi-bin): {e}"),
            }
        }
        common::run(
            cluster,
            &[
                ("world", world),
                ("calls_futures_channels", calls_futures_channels),
                (
                    "frames_around_the_message_limit",
                    frames_around_the_message_limit,
                ),
                ("frame_head_too_large", frame_head_too_large),
                (
                    "ordering_and_worker_to_worker",
                    ordering_and_worker_to_worker,
                ),
                ("collectives_use_mpi", collectives_use_mpi),
            ],
            Duration::from_secs(60),
            Vec::new(),
        );
    }
}

#[cfg(feature = "mpi")]
fn main() {
    suite::main();
}

#[cfg(not(feature = "mpi"))]
fn main() {
    // A build without MPI, started as rank 1 of 4 by mpirun, refuses clearly.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("OMPI_COMM_WORLD_SIZE", "4")
        .env("OMPI_COMM_WORLD_RANK", "1")
        .env("COHORT_MPI_PROBE", "1")
        .output()
        .unwrap();
    if std::env::var_os("COHORT_MPI_PROBE").is_some() {
        match cohort::init() {
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(3)
            }
            Ok(_) => std::process::exit(0),
        }
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("built without MPI: rebuild with `--features mpi`"),
        "{err}"
    );
    let _ = common::child_pids;
    println!(
        "test result: ok. (MPI suite needs --features mpi; non-MPI build refuses mpirun clearly)"
    );
}
