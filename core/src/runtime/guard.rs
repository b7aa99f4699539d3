//! Running user code: a registered function's panic or returned error becomes an error value
//! (`Error::Remote` with the panic's backtrace), never an unwinding through the runtime.

use crate::base::error::{Error, RemoteException, Result};
use crate::base::ids::Pid;
use crate::runtime::registry::{self, CallError};
use std::cell::RefCell;

thread_local! {
    static IN_REMOTE: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn install_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let inside = IN_REMOTE.with(|c| c.borrow().is_some());
        if inside {
            let bt = std::backtrace::Backtrace::force_capture().to_string();
            IN_REMOTE.with(|c| *c.borrow_mut() = Some(bt));
        } else {
            prev(info);
        }
    }));
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic with a non-string payload".into()
    }
}

/// Runs a registered function on this process, turning panics and returned errors into
/// errors.
pub(crate) fn run_guarded(
    func: &str,
    f: impl FnOnce() -> std::result::Result<registry::AnyBox, CallError>,
) -> Result<registry::AnyBox> {
    run_guarded_as(crate::base::ids::myid(), func, f)
}

/// [`run_guarded`] for the runtime with pid `me`, which the errors name.
pub(crate) fn run_guarded_as(
    me: Pid,
    func: &str,
    f: impl FnOnce() -> std::result::Result<registry::AnyBox, CallError>,
) -> Result<registry::AnyBox> {
    // Nested calls (a remote function calling one on this process) restore the outer mark.
    let outer = IN_REMOTE.with(|c| c.replace(Some(String::new())));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let bt = IN_REMOTE.with(|c| c.replace(outer)).unwrap_or_default();
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(CallError::Args(reason))) => Err(Error::Codec {
            action: "decode",
            what: format!("arguments of {func}"),
            pid: me,
            reason,
        }),
        Ok(Err(CallError::Returned(m))) => Err(Error::Remote(RemoteException {
            pid: me,
            error: m,
            backtrace: String::new(),
        })),
        Err(p) => Err(Error::Remote(RemoteException {
            pid: me,
            error: panic_message(p.as_ref()),
            backtrace: bt,
        })),
    }
}
