//! The remote call family.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::remote::fanout::{self, call_here, decode_frame, Pending};
use crate::remote::future::Future;
use crate::runtime::exec;
use crate::runtime::refs::RefInner;
use crate::runtime::registry::{self, RemoteFn};
use crate::runtime::store::{Item, Stored};
use crate::runtime::{rt, run_guarded};
use crate::wire::codec as wire;
use crate::wire::proto::{FuncName, Mode, Msg};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};

fn entry_for(name: &str) -> Result<&'static registry::RemoteEntry> {
    registry::lookup(name).ok_or_else(|| Error::UnknownFunction {
        name: name.to_string(),
        pid: crate::base::ids::myid(),
    })
}

/// Arguments always travel in the codec's format, never on the raw path: the callee decodes
/// them as its parameter tuple (a call by name may pass a bare vector for a one-element tuple).
fn encode_args<'a, A: Serialize + 'static>(args: &'a A, name: &str) -> Result<wire::Body<'a>> {
    wire::encode_value(args, name).map(wire::Body::Owned)
}

/// Calls `f(args...)` on `pid` and returns a [`Future`] for its result at once.
///
/// The result stays on `pid` until fetched. With `pid == myid()` the call runs on a thread of
/// this process and nothing is serialized.
///
/// # Julia
/// `remotecall(f, pid, args...)`.
pub fn remotecall<F, A>(f: F, pid: Pid, args: A) -> Result<Future<F::Output>>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: Serialize,
{
    let rt = rt()?;
    let rrid = rt.next_rrid();
    let name = f.name();
    if pid == rt.myid() {
        let entry = entry_for(name)?;
        let e = rt.value_entry(rrid, pid);
        let fut = Future::from_inner(RefInner::new(rrid, pid));
        exec::spawn(Box::new(move || {
            let r = run_guarded(name, || (entry.call_local)(Box::new(args)));
            let item = r.map(|v| match (entry.encoder)() {
                Some(encode) => Item::Local { value: v, encode },
                None => Item::local(()),
            });
            if let Stored::Value(c) = &e.stored {
                let _ = c.set(item);
            }
        }));
        return Ok(fut);
    }
    let body = encode_args(&args, name)?;
    let fut = Future::from_inner(RefInner::new(rrid, pid));
    rt.send(
        pid,
        &Msg::Call {
            func: name.into(),
            mode: Mode::Store {
                rrid,
                notify: false,
            },
        },
        &body,
    )?;
    Ok(fut)
}

/// [`remotecall`] that also returns, for a call on another process, the pending reply that
/// process sends once the call has finished (stored value or error). A worker pool waits on
/// it to return its worker: waiting on the Future instead could outlive the value, which a
/// fetch frees on the owner.
pub(crate) fn remotecall_notified<F, A>(
    f: F,
    pid: Pid,
    args: A,
) -> Result<(Future<F::Output>, Option<Pending>)>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: Serialize,
{
    let rt = rt()?;
    if pid == rt.myid() {
        return remotecall(f, pid, args).map(|fut| (fut, None));
    }
    let rrid = rt.next_rrid();
    let name = f.name();
    let body = encode_args(&args, name)?;
    let fut = Future::from_inner(RefInner::new(rrid, pid));
    let pending = fanout::start_stored_call(pid, name, rrid, &body)?;
    Ok((fut, Some(pending)))
}

/// Calls `f(args...)` on `pid` and waits for its result.
///
/// Faster than `fetch(remotecall(...))`: one message each way, nothing stored on `pid`.
///
/// # Julia
/// `remotecall_fetch(f, pid, args...)`.
pub fn remotecall_fetch<F, A>(f: F, pid: Pid, args: A) -> Result<F::Output>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
    if pid == rt()?.myid() {
        return call_here(f, args);
    }
    fetch_by_name(f.name().into(), pid, args)
}

/// [`remotecall_fetch`] of a core function that runs no user code (pool bookkeeping): `pid`
/// starts it at once on a thread of its own, never behind this process's calls queued there
/// (Julia answers such requests whatever user code runs). Not for user functions: those keep
/// the order of their caller's calls.
pub(crate) fn service_fetch<F, A>(f: F, pid: Pid, args: A) -> Result<F::Output>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
    if pid == rt()?.myid() {
        return call_here(f, args);
    }
    let name = f.name();
    let body = encode_args(&args, name)?;
    let frame = fanout::start_service(pid, name, &body)?.finish()?;
    decode_frame(frame, format_args!("result of {name}"))
}

/// Calls `f(args...)` on `pid`, waits until it has finished, and returns a [`Future`] for the
/// result still stored there; a call that failed is its error (`Error::Remote`...), as Julia's
/// `remotecall_wait` throws the `RemoteException`.
///
/// # Julia
/// `remotecall_wait(f, pid, args...)`.
pub fn remotecall_wait<F, A>(f: F, pid: Pid, args: A) -> Result<Future<F::Output>>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: Serialize + DeserializeOwned,
{
    let rt = rt()?;
    if pid == rt.myid() {
        let fut = remotecall(f, pid, args)?;
        fut.wait()?;
        return Ok(fut);
    }
    let rrid = rt.next_rrid();
    let name = f.name();
    let body = encode_args(&args, name)?;
    let fut = Future::from_inner(RefInner::new(rrid, pid));
    fanout::start_stored_call(pid, name, rrid, &body)?.finish()?;
    Ok(fut)
}

/// Runs `f(args...)` on `pid` and returns at once; there is no result. An error is printed on
/// that process's stderr (which the master shows as `From worker N: ...`).
///
/// # Julia
/// `remote_do(f, pid, args...)`.
pub fn remote_do<F, A>(f: F, pid: Pid, args: A) -> Result<()>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
{
    let rt = rt()?;
    let name = f.name();
    if pid == rt.myid() {
        let entry = entry_for(name)?;
        exec::spawn(Box::new(move || {
            if let Err(e) = run_guarded(name, || (entry.call_local)(Box::new(args))) {
                crate::log!(
                    error,
                    function = name,
                    error = %e,
                    "error in remote_do of {name}"
                );
            }
        }));
        return Ok(());
    }
    let body = encode_args(&args, name)?;
    rt.send(
        pid,
        &Msg::Call {
            func: name.into(),
            mode: Mode::Do,
        },
        &body,
    )
}

/// Where [`spawnat`] runs a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This pid.
    Pid(Pid),
    /// The next worker in round-robin order (Julia's `:any`).
    Any,
}

impl From<Pid> for Target {
    fn from(p: Pid) -> Self {
        Target::Pid(p)
    }
}

static NEXT_ANY: AtomicUsize = AtomicUsize::new(0);

/// The next worker in round-robin order (the master alone when there are none).
pub fn next_pid() -> Pid {
    let ws = crate::runtime::cluster::workers();
    ws[NEXT_ANY.fetch_add(1, Ordering::Relaxed) % ws.len()]
}

/// Like [`remotecall`], on a pid or on any worker.
///
/// # Julia
/// `@spawnat p expr`, `@spawnat :any expr`.
pub fn spawnat<F, A>(target: impl Into<Target>, f: F, args: A) -> Result<Future<F::Output>>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: Serialize,
{
    let pid = match target.into() {
        Target::Pid(p) => p,
        Target::Any => next_pid(),
    };
    remotecall(f, pid, args)
}

/// Runs `f(args...)` on the next worker and returns its result.
///
/// # Julia
/// `@fetch expr`.
pub fn fetch_any<F, A>(f: F, args: A) -> Result<F::Output>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
    remotecall_fetch(f, next_pid(), args)
}

/// Runs `f(args...)` on `pid` and returns its result.
///
/// # Julia
/// `@fetchfrom pid expr`.
pub fn fetchfrom<F, A>(pid: Pid, f: F, args: A) -> Result<F::Output>
where
    F: RemoteFn<A>,
    A: Serialize + Send + 'static,
    F::Output: DeserializeOwned,
{
    remotecall_fetch(f, pid, args)
}

/// Calls the function registered under `name` on `pid` and waits for its result. The types are
/// checked only on arrival: arguments that do not decode come back as `Error::Codec`.
pub fn remotecall_fetch_by_name<A, R>(name: &str, pid: Pid, args: A) -> Result<R>
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned + 'static,
{
    fetch_by_name(name.to_string().into(), pid, args)
}

/// [`remotecall_fetch_by_name`] with the name as it goes in the message (a registered
/// function's `&'static str` travels without a copy).
fn fetch_by_name<A, R>(func: FuncName, pid: Pid, args: A) -> Result<R>
where
    A: Serialize + Send + 'static,
    R: DeserializeOwned + 'static,
{
    let name: &str = &func;
    let rt = rt()?;
    let body = encode_args(&args, name)?;
    if pid == rt.myid() {
        // Here too the arguments are checked against the registered types, as on arrival.
        let entry = entry_for(name)?;
        let out = run_guarded(name, || (entry.call)(&body.into_vec()))?;
        return out.downcast::<R>().map(|b| *b).map_err(|_| Error::Codec {
            action: "decode",
            what: format!("result of {name} as {}", std::any::type_name::<R>()),
            pid,
            reason: "the function returns another type".into(),
        });
    }
    // A clone of a registered name is the same `&'static str`.
    let frame = fanout::start_call(pid, func.clone(), &body)?.finish()?;
    decode_frame(frame, format_args!("result of {func}"))
}
