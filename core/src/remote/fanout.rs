//! The fan-out engine: a call by registered name on one pid, or on several with every request
//! in flight at once, the replies awaited on this thread in one spin loop, the values gathered
//! in pid order. pmap, the distributed loops, `everywhere`, the remotecall family and
//! `fetch_all` reach the network through it; `patterns/` builds no protocol message itself.
//!
//! Each function works on the process's runtime; the `_on` forms take the runtime to use (a
//! test builds several in one process).
//!
//! The wait is the runtime's spin over the links of the requests in flight (then a park): one
//! loop for one link and for a fan-out, so that a call on one worker costs what
//! `remotecall_fetch` costs, and a call on every worker costs the slowest reply, not the sum.

use crate::base::error::{all_or_composite, Error, Result};
use crate::base::ids::{Pid, Rrid};
use crate::runtime::registry::{self, RemoteFn};
use crate::runtime::{rt, run_guarded_as, PendingReq, Runtime};
use crate::wire::codec::{self as wire, Body};
use crate::wire::frame::Frame;
use crate::wire::proto::{FuncName, Mode, Msg};
use serde::de::DeserializeOwned;

/// A request sent whose reply has not been taken yet.
pub(crate) struct Pending {
    req: PendingReq,
    rt: &'static Runtime,
}

impl Pending {
    /// Waits for the reply: its body, or the error the other side sent.
    pub(crate) fn finish(self) -> Result<Frame> {
        self.rt.request_finish(self.req)
    }
}

/// Starts `name(args)` on `pid`; the reply carries the value (nothing is stored there).
pub(crate) fn start_call(pid: Pid, name: impl Into<FuncName>, args: &Body<'_>) -> Result<Pending> {
    start_call_on(rt()?, pid, name, args)
}

/// [`start_call`] on the runtime `rt`.
pub(crate) fn start_call_on(
    rt: &'static Runtime,
    pid: Pid,
    name: impl Into<FuncName>,
    args: &Body<'_>,
) -> Result<Pending> {
    let msg = Msg::Call {
        func: name.into(),
        mode: Mode::Fetch,
    };
    start_on(rt, pid, &msg, args)
}

/// Starts `name(args)` on `pid` as a service call: a core function that runs no user code,
/// which `pid` starts at once rather than behind this process's calls queued there.
pub(crate) fn start_service(pid: Pid, name: &'static str, args: &Body<'_>) -> Result<Pending> {
    let msg = Msg::Call {
        func: name.into(),
        mode: Mode::Service,
    };
    start(pid, &msg, args)
}

/// Starts `name(args)` on `pid`, its result stored there under `rrid`; the reply comes once the
/// call has finished (empty, or the call's error).
pub(crate) fn start_stored_call(
    pid: Pid,
    name: &'static str,
    rrid: Rrid,
    args: &Body<'_>,
) -> Result<Pending> {
    let msg = Msg::Call {
        func: name.into(),
        mode: Mode::Store { rrid, notify: true },
    };
    start(pid, &msg, args)
}

/// Starts any request (the reference operations of `future.rs`).
pub(crate) fn start(pid: Pid, msg: &Msg, body: &Body<'_>) -> Result<Pending> {
    start_on(rt()?, pid, msg, body)
}

fn start_on(rt: &'static Runtime, pid: Pid, msg: &Msg, body: &Body<'_>) -> Result<Pending> {
    rt.request_start(pid, msg, body)
        .map(|req| Pending { req, rt })
}

/// Waits on this thread until every request of `pending` has its reply, in one spin loop over
/// their links; their [`Pending::finish`] then finds the replies there. The requests are of
/// one runtime (the first one's).
pub(crate) fn wait_all<'a>(pending: impl IntoIterator<Item = &'a Pending>) {
    let pending: Vec<&Pending> = pending.into_iter().collect();
    if let Some(first) = pending.first() {
        first.rt.await_all(pending.iter().map(|p| &p.req));
    }
}

/// Runs the registered function `f` here on moved arguments: through the registry, so that an
/// unregistered function fails here as it would on a worker and a panic comes back as an error.
pub(crate) fn call_here<F, A>(f: F, args: A) -> Result<F::Output>
where
    F: RemoteFn<A>,
    A: Send + 'static,
{
    call_as(crate::base::ids::myid(), f, args)
}

/// [`call_here`] for the runtime with pid `me`, which errors name.
fn call_as<F, A>(me: Pid, f: F, args: A) -> Result<F::Output>
where
    F: RemoteFn<A>,
    A: Send + 'static,
{
    let name = f.name();
    let entry = registry::lookup(name).ok_or_else(|| Error::UnknownFunction {
        name: name.to_string(),
        pid: me,
    })?;
    let out = run_guarded_as(me, name, || (entry.call_local)(Box::new(args)))?;
    out.downcast::<F::Output>()
        .map(|b| *b)
        .map_err(|_| Error::invalid(format!("{name} returned an unexpected type")))
}

/// Decodes a reply's body as the result of `what`.
pub(crate) fn decode_frame<T: DeserializeOwned + 'static>(
    f: Frame,
    what: std::fmt::Arguments<'_>,
) -> Result<T> {
    decode_frame_as(crate::base::ids::myid(), f, what)
}

/// `what` names the value in the error only: formatted then, not on every call.
fn decode_frame_as<T: DeserializeOwned + 'static>(
    me: Pid,
    f: Frame,
    what: std::fmt::Arguments<'_>,
) -> Result<T> {
    wire::decode_frame(f).map_err(|e| Error::Codec {
        action: "decode",
        what: format!("{what} as {}", std::any::type_name::<T>()),
        pid: me,
        reason: e.to_string(),
    })
}

/// Calls `f` on each of `pids` (a pid listed twice is called twice) and returns each call's
/// result, in the order of `pids`.
///
/// Every call on another process goes out first, its arguments the bytes `encoded(i)` gives for
/// position `i`; then this process runs its own positions in order, on the moved arguments
/// `here(i)` (nothing encoded), while the others work; then the replies are awaited together.
/// An error of `encoded` (arguments that do not encode) is returned at once.
pub(crate) fn fan_out<'b, F, A>(
    f: F,
    pids: &[Pid],
    encoded: impl FnMut(usize) -> Result<Body<'b>>,
    here: impl FnMut(usize) -> A,
) -> Result<Vec<Result<F::Output>>>
where
    F: RemoteFn<A>,
    A: Send + 'static,
    F::Output: DeserializeOwned,
{
    fan_out_on(rt()?, f, pids, encoded, here)
}

/// [`fan_out`] on the runtime `rt`.
pub(crate) fn fan_out_on<'b, F, A>(
    rt: &'static Runtime,
    f: F,
    pids: &[Pid],
    mut encoded: impl FnMut(usize) -> Result<Body<'b>>,
    mut here: impl FnMut(usize) -> A,
) -> Result<Vec<Result<F::Output>>>
where
    F: RemoteFn<A>,
    A: Send + 'static,
    F::Output: DeserializeOwned,
{
    let me = rt.myid();
    let name = f.name();
    let mut sent: Vec<Option<Result<Pending>>> = Vec::with_capacity(pids.len());
    for (i, &pid) in pids.iter().enumerate() {
        sent.push(if pid == me {
            None
        } else {
            Some(start_call_on(rt, pid, name, &encoded(i)?))
        });
    }
    let mut out: Vec<Option<Result<F::Output>>> = sent
        .iter()
        .enumerate()
        .map(|(i, s)| s.is_none().then(|| call_as(me, f, here(i))))
        .collect();
    wait_all(sent.iter().filter_map(|s| s.as_ref()?.as_ref().ok()));
    for (slot, s) in out.iter_mut().zip(sent) {
        if let Some(s) = s {
            *slot = Some(
                s.and_then(Pending::finish)
                    .and_then(|fr| decode_frame_as(me, fr, format_args!("result of {name}"))),
            );
        }
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("one result per position"))
        .collect())
}

/// The same bytes again, borrowed: one encoding sent to several pids.
pub(crate) fn reborrow<'a>(b: &'a Body<'_>) -> Body<'a> {
    match b {
        Body::Owned(v) => Body::Borrowed(v),
        Body::Borrowed(v) => Body::Borrowed(v),
        Body::Raw { prefix, bytes } => Body::Raw {
            prefix: *prefix,
            bytes,
        },
    }
}

/// [`fan_out`], gathered: the values in the order of `pids`, or one [`Error::Composite`]
/// naming each pid whose call failed, with its error (the others have run).
pub(crate) fn fan_out_all<'b, F, A>(
    f: F,
    pids: &[Pid],
    encoded: impl FnMut(usize) -> Result<Body<'b>>,
    here: impl FnMut(usize) -> A,
) -> Result<Vec<F::Output>>
where
    F: RemoteFn<A>,
    A: Send + 'static,
    F::Output: DeserializeOwned,
{
    let results = fan_out(f, pids, encoded, here)?;
    all_or_composite(pids.iter().copied().zip(results))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testing::{args, Local};

    #[cohort_macros::remote(crate = crate)]
    fn scaled(i: u64, by: u64) -> u64 {
        i * by
    }

    #[cohort_macros::remote(crate = crate)]
    fn odd_only(i: u64) -> std::result::Result<u64, String> {
        if i % 2 == 1 {
            Ok(i)
        } else {
            Err(format!("{i} is even"))
        }
    }

    #[test]
    fn results_come_in_the_order_of_the_pids_repeats_included() {
        let c = Local::new(3);
        let pids = [2, 3, 2, 1, 3];
        let out = fan_out_on(
            c.rt(1),
            scaled,
            &pids,
            |i| Ok(args(&(i as u64, 10u64))),
            |i| (i as u64, 10u64),
        )
        .unwrap();
        let out: Vec<u64> = out.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(out, [0, 10, 20, 30, 40]);
    }

    #[test]
    fn failures_are_named_by_pid_and_the_rest_have_run() {
        let c = Local::new(3);
        let pids = [2, 3, 1];
        let results = fan_out_on(
            c.rt(1),
            odd_only,
            &pids,
            |i| Ok(args(&(i as u64,))),
            |i| (i as u64,),
        )
        .unwrap();
        match all_or_composite(pids.iter().copied().zip(results)) {
            Err(Error::Composite(errs)) => {
                let named: Vec<(Pid, String)> = errs
                    .into_iter()
                    .map(|(p, e)| match e {
                        Error::Remote(r) => (p, format!("{}@{}", r.error, r.pid)),
                        other => panic!("expected a RemoteException, got {other:?}"),
                    })
                    .collect();
                assert_eq!(
                    named,
                    [
                        (2, "0 is even@2".to_string()),
                        (1, "2 is even@1".to_string())
                    ]
                );
            }
            other => panic!("expected a composite error, got {other:?}"),
        }
    }

    #[test]
    fn an_argument_that_does_not_encode_is_returned_at_once() {
        let c = Local::new(2);
        let r = fan_out_on(
            c.rt(1),
            scaled,
            &[2, 2],
            |i| {
                if i == 1 {
                    Err(Error::invalid("unencodable"))
                } else {
                    Ok(args(&(1u64, 1u64)))
                }
            },
            |_| (1u64, 1u64),
        );
        match r {
            Err(Error::Invalid(m)) => assert_eq!(m, "unencodable"),
            other => panic!(
                "expected the encoding error, got {:?}",
                other.map(|v| v.len())
            ),
        }
    }

    #[test]
    fn a_dead_pid_fails_its_positions_only() {
        let c = Local::new(3);
        c.kill(3);
        crate::runtime::testing::eventually("pid 3 gone", || c.rt(1).is_removed(3));
        let results = fan_out_on(
            c.rt(1),
            scaled,
            &[2, 3],
            |i| Ok(args(&(i as u64 + 1, 2u64))),
            |i| (i as u64 + 1, 2u64),
        )
        .unwrap();
        assert_eq!(results[0].as_ref().ok(), Some(&2));
        assert!(matches!(results[1], Err(Error::ProcessExited(3))));
    }
}
