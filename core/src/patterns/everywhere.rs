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

/// [`everywhere`] on the processes `pids` only (in that order; repeated pids run once).
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
    let mut order: Vec<Pid> = Vec::with_capacity(pids.len());
    for &p in pids {
        if !order.contains(&p) {
            order.push(p);
        }
    }
    let name = f.name();
    let remote: Vec<Pid> = order.iter().copied().filter(|&p| p != me).collect();
    let mut sent = Vec::with_capacity(remote.len());
    if !remote.is_empty() {
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
        for &p in &remote {
            sent.push((p, rt.request_start(p, &msg, &body)));
        }
    }
    let mut results: Vec<(Pid, Result<F::Output>)> = Vec::with_capacity(order.len());
    if order.contains(&me) {
        results.push((me, call_local(f, args)));
    }
    rt.await_all(sent.iter().filter_map(|(_, s)| s.as_ref().ok()));
    for (p, s) in sent {
        let r = s
            .and_then(|pending| rt.request_finish(pending))
            .and_then(|frame| decode_frame::<F::Output>(frame, &format!("result of {name}")));
        results.push((p, r));
    }
    let in_order: Vec<_> = order
        .into_iter()
        .map(|p| {
            let i = results
                .iter()
                .position(|(q, _)| *q == p)
                .expect("one result per pid");
            results.swap_remove(i)
        })
        .collect();
    crate::base::error::all_or_composite(in_order)
}
