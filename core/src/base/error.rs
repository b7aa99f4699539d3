//! Errors: every failure a caller can see, as a value (docs/ARCHITECTURE.md, decision 6).

use crate::base::ids::Pid;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The result type of every fallible cohort operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error raised by a remote function (a panic or an `Err` it returned), as seen by the caller.
///
/// # Julia
/// `RemoteException(pid, CapturedException)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteException {
    /// The process on which the function failed.
    pub pid: Pid,
    /// The error message: the panic payload or the `Display` of the returned error.
    pub error: String,
    /// A backtrace captured where a panic happened (empty for returned errors).
    pub backtrace: String,
}

impl fmt::Display for RemoteException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "on worker {}: {}", self.pid, self.error)
    }
}

/// Everything that can go wrong in cohort.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A remote function panicked or returned an error.
    #[error("RemoteException {0}")]
    Remote(RemoteException),
    /// The process died or was removed while the operation was pending, or before it started.
    #[error("ProcessExited({0}): the process is gone")]
    ProcessExited(Pid),
    /// No process with this pid is, or ever was, part of the cluster as far as this process knows.
    #[error("no process with pid {0} in the cluster")]
    NoSuchProcess(Pid),
    /// The call named a function the target's binary does not register (Julia's
    /// `UndefVarError`): a call by name ([`remotecall_fetch_by_name`](crate::remote::calls::remotecall_fetch_by_name))
    /// of a name no `#[cohort::remote]` function has, or a worker running another binary. (Passing
    /// an unmarked function itself does not compile.)
    #[error("function `{name}` is not registered on worker {pid} (mark it #[cohort::remote])")]
    UnknownFunction {
        /// The registered name that was asked for.
        name: String,
        /// The process that did not know it.
        pid: Pid,
    },
    /// `interrupt` stopped the call on that process.
    #[error("InterruptException on worker {0}")]
    Interrupted(Pid),
    /// The arguments or the result could not be encoded or decoded.
    #[error("cannot {action} {what} (on pid {pid}): {reason}")]
    Codec {
        /// `encode` or `decode`.
        action: &'static str,
        /// What was being coded: "arguments of f", "result of f", a value type...
        what: String,
        /// Where it happened.
        pid: Pid,
        /// The codec's message.
        reason: String,
    },
    /// A `put` on a channel that is closed, or a `take` on one that is closed and drained.
    #[error("channel is closed")]
    ChannelClosed,
    /// A `put` on a `Future` that already holds a value (Futures are write-once).
    #[error("Future can be set only once")]
    AlreadySet,
    /// The operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The operation is not allowed here (wrong process role, wrong state, bad argument).
    #[error("{0}")]
    Invalid(String),
    /// Several processes failed; each pid with its error (for operations run on many pids).
    #[error("{} processes failed: {}", .0.len(), fmt_composite(.0))]
    Composite(Vec<(Pid, Error)>),
    /// A peer broke the protocol (bad cookie or version, malformed frame).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An operating-system error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What cohort was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn fmt_composite(v: &[(Pid, Error)]) -> String {
    v.iter()
        .map(|(p, e)| format!("[pid {p}] {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    /// What a failed send to `pid` means: a frame the transport refuses (`InvalidInput`, e.g.
    /// a message header too large for an MPI frame head) is the caller's error; anything else
    /// is a link that is gone.
    pub(crate) fn on_send(pid: Pid, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            Error::Invalid(format!("cannot send to pid {pid}: {e}"))
        } else {
            Error::ProcessExited(pid)
        }
    }
    /// The remote exception inside, if this is one.
    pub fn as_remote(&self) -> Option<&RemoteException> {
        match self {
            Error::Remote(r) => Some(r),
            _ => None,
        }
    }
}

/// The values of per-process results, in order, or one [`Error::Composite`] naming each failed
/// pid and its error.
pub(crate) fn all_or_composite<T>(
    results: impl IntoIterator<Item = (Pid, Result<T>)>,
) -> Result<Vec<T>> {
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for (pid, r) in results {
        match r {
            Ok(v) => values.push(v),
            Err(e) => errors.push((pid, e)),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(Error::Composite(errors))
    }
}

/// The serializable form in which an error crosses the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    Remote(RemoteException),
    ProcessExited(Pid),
    NoSuchProcess(Pid),
    UnknownFunction {
        name: String,
        pid: Pid,
    },
    Interrupted(Pid),
    Codec {
        action: String,
        what: String,
        pid: Pid,
        reason: String,
    },
    ChannelClosed,
    AlreadySet,
    Timeout(String),
    Invalid(String),
    Composite(Vec<(Pid, WireError)>),
    Other(String),
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::Remote(r) => WireError::Remote(r.clone()),
            Error::ProcessExited(p) => WireError::ProcessExited(*p),
            Error::NoSuchProcess(p) => WireError::NoSuchProcess(*p),
            Error::UnknownFunction { name, pid } => WireError::UnknownFunction {
                name: name.clone(),
                pid: *pid,
            },
            Error::Interrupted(p) => WireError::Interrupted(*p),
            Error::Codec {
                action,
                what,
                pid,
                reason,
            } => WireError::Codec {
                action: action.to_string(),
                what: what.clone(),
                pid: *pid,
                reason: reason.clone(),
            },
            Error::ChannelClosed => WireError::ChannelClosed,
            Error::AlreadySet => WireError::AlreadySet,
            Error::Timeout(s) => WireError::Timeout(s.clone()),
            Error::Invalid(s) => WireError::Invalid(s.clone()),
            Error::Composite(v) => {
                WireError::Composite(v.iter().map(|(p, e)| (*p, e.into())).collect())
            }
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Remote(r) => Error::Remote(r),
            WireError::ProcessExited(p) => Error::ProcessExited(p),
            WireError::NoSuchProcess(p) => Error::NoSuchProcess(p),
            WireError::UnknownFunction { name, pid } => Error::UnknownFunction { name, pid },
            WireError::Interrupted(p) => Error::Interrupted(p),
            WireError::Codec {
                action,
                what,
                pid,
                reason,
            } => Error::Codec {
                action: if action == "encode" {
                    "encode"
                } else {
                    "decode"
                },
                what,
                pid,
                reason,
            },
            WireError::ChannelClosed => Error::ChannelClosed,
            WireError::AlreadySet => Error::AlreadySet,
            WireError::Timeout(s) => Error::Timeout(s),
            WireError::Invalid(s) => Error::Invalid(s),
            WireError::Composite(v) => {
                Error::Composite(v.into_iter().map(|(p, e)| (p, e.into())).collect())
            }
            WireError::Other(s) => Error::Protocol(s),
        }
    }
}

impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Protocol(s) => Error::Protocol(s.clone()),
            other => WireError::from(other).into(),
        }
    }
}

/// Errors travel as their serializable form, so remote functions may return `cohort::Result`.
impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireError::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        WireError::deserialize(d).map(Error::from)
    }
}
