//! `everywhere`: run a registered function on every process and wait.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::remote::fanout::{fan_out_all, reborrow};
use crate::runtime::registry::RemoteFn;
use crate::wire::codec as wire;
use serde::de::DeserializeOwned;
use serde::Serialize;

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
    let me = crate::base::ids::myid();
    let name = f.name();
    // Encoded once, for every other process; none when this is the only one.
    let body = match pids.iter().any(|&p| p != me) {
        true => Some(wire::encode(&args).map_err(|e| Error::Codec {
            action: "encode",
            what: format!("arguments of {name}"),
            pid: me,
            reason: e.to_string(),
        })?),
        false => None,
    };
    fan_out_all(
        f,
        pids,
        |_| {
            Ok(reborrow(
                body.as_ref().expect("encoded for another process"),
            ))
        },
        |_| args.clone(),
    )
}
