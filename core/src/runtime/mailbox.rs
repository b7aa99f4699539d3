//! Pieces of collective operations that arrived before they were asked for.

use crate::base::error::{Error, Result};
use crate::base::ids::Pid;
use crate::runtime::exec;
use crate::wire::frame::Frame;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Pieces of collectives that arrived, by (sequence number, sender).
#[derive(Default)]
pub(crate) struct Mailbox {
    m: Mutex<HashMap<(u64, Pid), Frame>>,
    cv: Condvar,
    /// Collectives started so far, per group: members number them alike.
    pub(crate) seqs: Mutex<HashMap<Vec<Pid>, u64>>,
}

impl Mailbox {
    pub(crate) fn deposit(&self, seq: u64, from: Pid, f: Frame) {
        self.m
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((seq, from), f);
        self.cv.notify_all();
    }
    pub(crate) fn wake(&self) {
        self.cv.notify_all();
    }
    /// Waits for the piece `seq` from `from`; `gone` says whether `from` has left.
    pub(crate) fn take(&self, seq: u64, from: Pid, gone: impl Fn(Pid) -> bool) -> Result<Frame> {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        let _b = exec::blocking();
        loop {
            if let Some(f) = m.remove(&(seq, from)) {
                return Ok(f);
            }
            if gone(from) {
                return Err(Error::ProcessExited(from));
            }
            exec::check_interrupt()?;
            m = self
                .cv
                .wait_timeout(m, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
