//! Library messages as `tracing` events: what a user's subscriber receives (level, message,
//! fields, in the master and in workers), and the readable stderr line cohort writes itself
//! when no subscriber is set (`COHORT_LOG` sets its level). Runs with `harness = false` (see
//! tests/common).
//!
//! The binary runs in two modes, chosen by `LOGGING_TEST_MODE` and inherited by its workers:
//! `capture` (the default) installs a capturing global subscriber before `cohort::init()`, as a
//! user would; `plain` installs none.

mod common;

use cohort::prelude::*;
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const COOKIE: &str = "logging-test-cookie";
const MODE: &str = "LOGGING_TEST_MODE";

/// One captured event: its level, and its fields by name (`message` among them).
type Captured = (String, BTreeMap<String, String>);

static EVENTS: Mutex<Vec<Captured>> = Mutex::new(Vec::new());

/// A user's subscriber, reduced to remembering every event.
struct Capture;

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let level = event.metadata().level().to_string();
        EVENTS.lock().unwrap().push((level, fields));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The events captured in this process whose message starts with `prefix`.
#[cohort::remote]
fn captured(prefix: String) -> Vec<Captured> {
    EVENTS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, f)| f.get("message").is_some_and(|m| m.starts_with(&prefix)))
        .cloned()
        .collect()
}

#[cohort::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A connection with the wrong cookie, to a listener that must refuse it.
fn wrong_cookie(addr: &str) {
    let e = cohort::__private::raw_handshake(
        addr,
        "not-the-cookie",
        cohort::__private::PROTOCOL_VERSION,
    )
    .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
}

const REFUSED_WHY: &str = "wrong cluster cookie from a process claiming pid 1";

fn refused_connection_is_a_warn_event() {
    wrong_cookie(&cohort::__private::peer_address(2).expect("worker 2's address"));
    // The worker logs before it closes the socket, so the event is there once the refusal is.
    assert_eq!(
        remotecall_fetch(captured, 2, ("refused".to_string(),)).unwrap(),
        vec![(
            "WARN".to_string(),
            fields(&[
                ("message", "refused a connection"),
                ("pid", "2"),
                ("error", REFUSED_WHY),
            ])
        )]
    );
    assert!(
        captured("refused".into()).is_empty(),
        "the master refused nothing"
    );
    // The cluster works on, worker to worker too.
    assert_eq!(remotecall_fetch(add, 2, (2, 3)).unwrap(), 5);
    assert_eq!(remotecall_fetch(add, 3, (4, 5)).unwrap(), 9);
}

fn rmprocs_of_the_master_is_a_warn_event() {
    let r = rmprocs(&[1], Duration::from_secs(5)).unwrap();
    assert!(r.pids().is_empty(), "{:?}", r.pids());
    assert_eq!(
        captured("rmprocs".into()),
        vec![(
            "WARN".to_string(),
            fields(&[("message", "rmprocs: process 1 not removed"), ("pid", "1")])
        )]
    );
    assert_eq!(workers(), vec![2, 3]);
}

/// A worker started by hand (it serves no master) with `envs`: the wrong cookie is refused,
/// then the worker is killed; returns its stderr.
fn raw_worker_refusal(envs: &[(&str, &str)]) -> String {
    use std::io::{BufRead, Write};
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env_remove("COHORT_LOG")
        .env("COHORT_WORKER", "1")
        .env("COHORT_WORKER_TIMEOUT", "20")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{COOKIE}").unwrap();
    let mut addr = String::new();
    let read = std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut addr);
    if read.is_ok() && !addr.trim().is_empty() {
        wrong_cookie(addr.trim().trim_start_matches(cohort::WORKER_ADDRESS_TAG));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !addr.trim().is_empty(),
        "the worker printed no address: {err}"
    );
    err
}

fn a_subscriber_replaces_the_stderr_line() {
    let err = raw_worker_refusal(&[(MODE, "capture")]);
    assert_eq!(err, "", "with a subscriber, cohort prints nothing itself");
}

fn without_a_subscriber_the_line_is_on_stderr() {
    // Not yet part of a cluster: no pid in the line.
    let err = raw_worker_refusal(&[(MODE, "plain")]);
    assert_eq!(
        err,
        format!("cohort: refused a connection: {REFUSED_WHY}\n")
    );
    let err = raw_worker_refusal(&[(MODE, "plain"), ("COHORT_LOG", "warn")]);
    assert_eq!(
        err,
        format!("cohort: refused a connection: {REFUSED_WHY}\n")
    );
    let err = raw_worker_refusal(&[(MODE, "plain"), ("COHORT_LOG", "error")]);
    assert_eq!(err, "", "a refusal is a warning: COHORT_LOG=error hides it");
    let err = raw_worker_refusal(&[(MODE, "plain"), ("COHORT_LOG", "off")]);
    assert_eq!(err, "");
}

/// In `plain` mode, this binary's only test: a master and its workers with no subscriber.
fn plain_cluster() {
    wrong_cookie(&cohort::__private::peer_address(2).expect("worker 2's address"));
    assert!(rmprocs(&[1], Duration::from_secs(5))
        .unwrap()
        .pids()
        .is_empty());
    assert_eq!(remotecall_fetch(add, 2, (2, 3)).unwrap(), 5);
}

fn without_a_subscriber_master_and_workers_print_lines() {
    let (code, out, err) = common::run_self(
        &[(MODE, "plain")],
        &["plain_cluster"],
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(
        err.lines()
            .any(|l| l == "cohort[pid 1]: rmprocs: process 1 not removed"),
        "the master's line on its stderr: {err}"
    );
    // A worker's stderr reaches the master's stderr through its manager, marked as the
    // worker's; the line itself is unchanged.
    let line = format!("      From worker 2:\tcohort[pid 2]: refused a connection: {REFUSED_WHY}");
    assert!(
        err.lines().any(|l| l == line),
        "the worker's line, forwarded to stderr: {err}"
    );
    assert!(
        !out.contains("refused a connection"),
        "not on stdout: {out}"
    );
}

fn an_unparsable_cohort_log_fails_init() {
    let (code, out, err) = common::run_self(
        &[(MODE, "plain"), ("COHORT_LOG", "loud")],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(2), "stdout: {out}\nstderr: {err}");
    assert_eq!(
        err,
        "init failed: Invalid(\"COHORT_LOG=\\\"loud\\\" is not a log level (off, error, warn, info, debug, trace)\")\n"
    );
}

fn main() {
    let plain = std::env::var(MODE).is_ok_and(|m| m == "plain");
    if !plain {
        tracing::subscriber::set_global_default(Capture).unwrap();
    }
    let cluster = match cohort::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("init failed: {e:?}");
            std::process::exit(2)
        }
    };
    cohort::set_cluster_cookie(COOKIE).unwrap();
    assert_eq!(addprocs(2).unwrap(), vec![2, 3]);
    let tests: &[common::Test] = if plain {
        &[("plain_cluster", plain_cluster)]
    } else {
        &[
            (
                "refused_connection_is_a_warn_event",
                refused_connection_is_a_warn_event,
            ),
            (
                "rmprocs_of_the_master_is_a_warn_event",
                rmprocs_of_the_master_is_a_warn_event,
            ),
            (
                "a_subscriber_replaces_the_stderr_line",
                a_subscriber_replaces_the_stderr_line,
            ),
            (
                "without_a_subscriber_the_line_is_on_stderr",
                without_a_subscriber_the_line_is_on_stderr,
            ),
            (
                "without_a_subscriber_master_and_workers_print_lines",
                without_a_subscriber_master_and_workers_print_lines,
            ),
            (
                "an_unparsable_cohort_log_fails_init",
                an_unparsable_cohort_log_fails_init,
            ),
        ]
    };
    common::run(cluster, tests, Duration::from_secs(90), Vec::new());
}
