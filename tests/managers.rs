//! The ClusterManager interface and topologies: a manager that records the `manage` calls it
//! receives, a manager whose workers cannot be reached, and each topology (the others run in
//! child processes, since a topology is fixed before workers join).

mod common;

use cohort::prelude::*;
use cohort::{AddProcsParams, ClusterManager, Error, ManageOp, Topology, WorkerConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cohort::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[cohort::remote]
fn call_worker(pid: usize) -> cohort::Result<i64> {
    remotecall_fetch(add, pid, (1, 1))
}

#[cohort::remote]
fn links() -> usize {
    cohort::link_count()
}

/// Wraps the local manager and records what the core tells it.
struct Recording {
    inner: cohort::managers::LocalManager,
    log: Mutex<Vec<(usize, ManageOp)>>,
    idents: Mutex<Vec<(Option<String>, Vec<String>)>>,
}

impl ClusterManager for Recording {
    fn launch(
        &self,
        params: &AddProcsParams,
        launched: &mut dyn FnMut(WorkerConfig),
    ) -> cohort::Result<()> {
        let mut idents = self.idents.lock().unwrap();
        self.inner.launch(params, &mut |mut c| {
            if !idents.is_empty() {
                let (ident, connect) = idents.remove(0);
                c.ident = ident;
                c.connect_idents = connect;
            }
            launched(c)
        })
    }
    fn manage(&self, pid: usize, config: &WorkerConfig, op: ManageOp) {
        self.log.lock().unwrap().push((pid, op));
        self.inner.manage(pid, config, op)
    }
    fn kill(&self, pid: usize, config: &WorkerConfig) {
        self.inner.kill(pid, config)
    }
}

fn recording() -> Arc<Recording> {
    Arc::new(Recording {
        inner: cohort::managers::LocalManager::new(),
        log: Mutex::new(Vec::new()),
        idents: Mutex::new(Vec::new()),
    })
}

fn manage_calls_in_order() {
    let m = recording();
    let pids = cohort::addprocs_with(
        m.clone(),
        AddProcsParams {
            count: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(remotecall_fetch(add, pids[1], (2, 3)).unwrap(), 5);
    cohort::interrupt(&[pids[0]]).unwrap();
    rmprocs(&pids, Duration::from_secs(10)).unwrap();
    assert!(common::eventually(Duration::from_secs(5), || m
        .log
        .lock()
        .unwrap()
        .len()
        == 7));
    let (a, b) = (pids[0], pids[1]);
    let log = m.log.lock().unwrap().clone();
    assert_eq!(
        log[..3],
        [
            (a, ManageOp::Register),
            (b, ManageOp::Register),
            (a, ManageOp::Interrupt)
        ]
    );
    // Then each worker is deregistered before it is finalized (the two may interleave).
    for p in [a, b] {
        let ops: Vec<ManageOp> = log[3..]
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, op)| *op)
            .collect();
        assert_eq!(
            ops,
            vec![ManageOp::Deregister, ManageOp::Finalize],
            "{log:?}"
        );
    }
}

/// A manager whose worker reports an address nobody listens on.
struct Unreachable;

impl ClusterManager for Unreachable {
    fn launch(
        &self,
        _: &AddProcsParams,
        launched: &mut dyn FnMut(WorkerConfig),
    ) -> cohort::Result<()> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        launched(WorkerConfig {
            address: Some(format!("127.0.0.1:{port}")),
            ..Default::default()
        });
        Ok(())
    }
}

fn transport_that_cannot_connect() {
    let before = workers();
    let e = cohort::addprocs_with(Arc::new(Unreachable), AddProcsParams::default()).unwrap_err();
    match &e {
        Error::Io { context, source } => {
            assert!(
                context.starts_with("connecting to worker at 127.0.0.1:"),
                "{context}"
            );
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert_eq!(workers(), before, "nothing half-added");
    for p in workers() {
        assert_eq!(remotecall_fetch(add, p, (1, 2)).unwrap(), 3);
    }
}

fn default_all_to_all_is_lazy() {
    assert_eq!(cohort::current_topology(), Topology::AllToAll);
    let p = addprocs(3).unwrap();
    assert_eq!(
        remotecall_fetch(links, p[0], ()).unwrap(),
        1,
        "only the master link until used"
    );
    assert_eq!(remotecall_fetch(call_worker, p[0], (p[2],)).unwrap(), 2);
    assert_eq!(
        remotecall_fetch(links, p[0], ()).unwrap(),
        2,
        "a link opened on first use"
    );
    rmprocs(&p, Duration::from_secs(10)).unwrap();
}

fn topology_child(t: &str) {
    let p = addprocs(3).unwrap();
    let (a, b, c) = (p[0], p[1], p[2]);
    match t {
        "master_worker" => {
            let e = remotecall_fetch(call_worker, a, (b,)).unwrap_err();
            let r = e
                .as_remote()
                .expect("the worker's error comes back as a RemoteException");
            assert_eq!(r.pid, a);
            assert!(
                r.error.contains("the cluster topology is master_worker"),
                "{e}"
            );
            assert_eq!(remotecall_fetch(add, b, (1, 1)).unwrap(), 2);
            assert_eq!(
                remotecall_fetch(call_worker, c, (1,)).unwrap(),
                2,
                "a worker calls the master"
            );
        }
        "all_to_all_eager" => {
            // The last worker connected to the two before it as it joined.
            assert!(common::eventually(
                Duration::from_secs(5),
                || remotecall_fetch(links, c, ()).unwrap() == 3
            ));
            assert_eq!(remotecall_fetch(call_worker, a, (c,)).unwrap(), 2);
        }
        other => panic!("no scenario for {other}"),
    }
    rmprocs(&p, Duration::from_secs(10)).unwrap();
}

fn custom_topology() {
    // Workers x, y, z: y names x; z names nobody and nobody names z.
    let m = recording();
    *m.idents.lock().unwrap() = vec![
        (Some("x".into()), vec![]),
        (Some("y".into()), vec!["x".into()]),
        (Some("z".into()), vec![]),
    ];
    let p = cohort::addprocs_with(
        m,
        AddProcsParams {
            count: 3,
            ..Default::default()
        },
    )
    .unwrap();
    let (x, y, z) = (p[0], p[1], p[2]);
    assert_eq!(remotecall_fetch(call_worker, y, (x,)).unwrap(), 2);
    assert_eq!(
        remotecall_fetch(call_worker, x, (y,)).unwrap(),
        2,
        "x may answer y's way back"
    );
    let e = remotecall_fetch(call_worker, z, (x,)).unwrap_err();
    assert!(
        e.as_remote().is_some_and(|r| r
            .error
            .contains("custom cluster topology does not connect them")),
        "{e}"
    );
    rmprocs(&p, Duration::from_secs(10)).unwrap();
}

fn main() {
    let cluster = cohort::init().unwrap();
    let topo = std::env::var("COHORT_TOPOLOGY").ok();
    match topo.as_deref() {
        None => {
            let children = ["master_worker", "all_to_all_eager", "custom"]
                .iter()
                .map(|t| {
                    std::process::Command::new(std::env::current_exe().unwrap())
                        .args(std::env::args().skip(1))
                        .env("COHORT_TOPOLOGY", t)
                        .spawn()
                        .unwrap()
                })
                .collect();
            common::run(
                cluster,
                &[
                    ("manage_calls_in_order", manage_calls_in_order),
                    (
                        "transport_that_cannot_connect",
                        transport_that_cannot_connect,
                    ),
                    ("default_all_to_all_is_lazy", default_all_to_all_is_lazy),
                ],
                Duration::from_secs(60),
                children,
            );
        }
        Some("master_worker") => common::run(
            cluster,
            &[("master_worker", || topology_child("master_worker"))],
            Duration::from_secs(60),
            Vec::new(),
        ),
        Some("all_to_all_eager") => common::run(
            cluster,
            &[("all_to_all_eager", || topology_child("all_to_all_eager"))],
            Duration::from_secs(60),
            Vec::new(),
        ),
        Some("custom") => common::run(
            cluster,
            &[("custom", custom_topology)],
            Duration::from_secs(60),
            Vec::new(),
        ),
        Some(other) => panic!("unexpected COHORT_TOPOLOGY={other}"),
    }
}
