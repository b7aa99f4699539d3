//! `everywhere`: run a registered function on every process and wait.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::remote::future::decode_frame;
use crate::runtime::registry::{self, RemoteFn};
use crate::runtime::{rt, run_guarded};
use crate::wire::codec as wire;
use crate::wire::proto::{Mode, Msg};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Runs `f(args...)` here, on moved arguments, through the registry (so that an unregistered
/// function fails here as it would on a worker, and panics come back as errors).
pub(crate) fn call_local<F, A>(f: F, args: A) -> Result<F::Output>
where
    F: RemoteFn<A>,
    A: Send + 'static,
{
    let name = f.name();
    let entry = registry::lookup(name).ok_or_else(|| Error::UnknownFunction {
        name: name.to_string(),
        pid: crate::base::ids::myid(),
    })?;
    let out = run_guarded(name, || (entry.call_local)(Box::new(args)))?;
    out.downcast::<F::Output>()
        .map(|b| *b)
        .map_err(|_| Error::invalid(format!("{name} returned an unexpected type")))
}

/// Runs `f(args...)` on every process — the master and all workers, this process included —
/// and waits for all of them. Returns the results in the order of [`procs`](crate::runtime::cluster::procs).
///
/// The arguments are encoded once and sent to every other process; this process runs the call
/// itself on a copy. Errors: one [`Error::Composite`] listing each process that failed with
/// its error; the others have run.
///
/// # Julia
/// `@everywhere expr` (with `$`-interpolated values as the arguments).
pub fn everywhere<F, A>(f: F, args: A) -> Result<Vec<F::Output>>
where
    F: RemoteFn<A>,
    A: Serialize + Clone + Send + 'static,
    F::Output: DeserializeOwned,
{
    everywhere_on(&crate::runtime::cluster::procs(), f, args)
}

/// [`everywhere`] on the processes `pids` only, once per occurrence: a pid listed twice runs
/// the call twice (one after the other there). Results in the order of `pids`.
///
/// The calls to other processes go out first; this process runs its own occurrences last, so
/// that running here does not hold up sending to the others.
///
/// # Julia
/// `@everywhere pids expr`.
pub fn everywhere_on<F, A>(pids: &[Pid], f: F, args: A) -> Result<Vec<F::Output>>
where
    F: RemoteFn<A>,
    A: Serialize + Clone + Send + 'static,
    F::Output: DeserializeOwned,
{
    let rt = rt()?;
    let me = rt.myid();
    let name = f.name();
    let mut sent = Vec::with_capacity(pids.len());
    if pids.iter().any(|&p| p != me) {
        let body = wire::encode(&args).map_err(|e| Error::Codec {
            action: "encode",
            what: format!("arguments of {name}"),
            pid: me,
            reason: e.to_string(),
        })?;
        let msg = Msg::Call {
            func: name.to_string(),
            mode: Mode::Fetch,
        };
        for &p in pids.iter().filter(|&&p| p != me) {
            sent.push(rt.request_start(p, &msg, &body));
        }
    }
    let mut here: Vec<Result<F::Output>> = (0..pids.iter().filter(|&&p| p == me).count())
        .map(|_| call_local(f, args.clone()))
        .collect();
    rt.await_all(sent.iter().filter_map(|s| s.as_ref().ok()));
    let mut there: Vec<Result<F::Output>> = sent
        .into_iter()
        .map(|s| {
            s.and_then(|pending| rt.request_finish(pending))
                .and_then(|frame| decode_frame::<F::Output>(frame, &format!("result of {name}")))
        })
        .collect();
    // Both lists are in the order of `pids`; pop from the back to interleave them.
    let mut in_order: Vec<(Pid, Result<F::Output>)> = pids
        .iter()
        .rev()
        .map(|&p| {
            let r = if p == me { here.pop() } else { there.pop() };
            (p, r.expect("one result per occurrence"))
        })
        .collect();
    in_order.reverse();
    crate::base::error::all_or_composite(in_order)
}
