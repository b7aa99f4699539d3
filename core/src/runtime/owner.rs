//! The entries a runtime owns (the values of its Futures and its channels) with their books:
//! which process holds how much weight of each (`clients`), and when an entry is freed.
//!
//! Every change runs under the table's lock, so that a holder's death (`drop_holder`) is booked
//! either wholly before or wholly after it. Whether a pid is gone is the caller's knowledge
//! (the runtime's peer table), passed as `gone`.

use crate::base::ids::{Pid, Rrid};
use crate::runtime::clients::{self, Booked, Clients};
use crate::runtime::store::{Entry, Stored, ValueCell};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

type Gone<'a> = &'a dyn Fn(Pid) -> bool;

/// The owned entries, by reference id.
#[derive(Default)]
pub(super) struct Owned {
    entries: Mutex<HashMap<Rrid, Arc<Entry>>>,
}

/// Closes a freed channel, so that what waits on it is answered (the value itself may hold
/// handles whose drop comes back to this table: called unlocked).
fn freed(e: &Entry) {
    if let Stored::Channel(ch) = &e.stored {
        ch.close();
    }
}

impl Owned {
    fn lock(&self) -> MutexGuard<'_, HashMap<Rrid, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, rrid: Rrid) -> Option<Arc<Entry>> {
        self.lock().get(&rrid).cloned()
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// A new entry, all its weight held by the reference's creator; not kept if that process
    /// died meanwhile (nobody holds it).
    pub(super) fn insert(
        &self,
        rrid: Rrid,
        stored: Stored,
        creator: Pid,
        gone: Gone<'_>,
    ) -> Arc<Entry> {
        let e = Arc::new(Entry::new(stored, rrid.whence, creator));
        let mut s = self.lock();
        if !gone(rrid.whence) {
            s.insert(rrid, Arc::clone(&e));
        }
        e
    }

    /// The value entry under `rrid`, created empty on first mention.
    pub(super) fn value(&self, rrid: Rrid, creator: Pid, gone: Gone<'_>) -> Arc<Entry> {
        let mut s = self.lock();
        if let Some(e) = s.get(&rrid) {
            return Arc::clone(e);
        }
        let e = Arc::new(Entry::new(
            Stored::Value(ValueCell::default()),
            rrid.whence,
            creator,
        ));
        if !gone(rrid.whence) {
            s.insert(rrid, Arc::clone(&e));
        }
        e
    }

    /// Changes the books of `rrid` with `f` and frees the entry when nobody holds it. A missing
    /// entry is made (as a value) if `create`: a message about a reference can overtake the
    /// call that creates it.
    fn book(&self, rrid: Rrid, create: bool, gone: Gone<'_>, f: impl FnOnce(&mut Clients)) {
        let mut s = self.lock();
        let e = match s.get(&rrid) {
            Some(e) => Arc::clone(e),
            None if !create || gone(rrid.whence) => return,
            None => {
                let e = Arc::new(Entry::new(
                    Stored::Value(ValueCell::default()),
                    rrid.whence,
                    rrid.whence,
                ));
                s.insert(rrid, Arc::clone(&e));
                e
            }
        };
        let free = {
            let mut c = e.clients();
            f(&mut c);
            c.is_free()
        };
        if free {
            s.remove(&rrid);
        }
        drop(s);
        if free {
            freed(&e);
        }
    }

    /// `from` returns `weight`; a dead process's returns are ignored (its share went with it).
    pub(super) fn release(&self, rrid: Rrid, from: Pid, weight: u64, gone: Gone<'_>) {
        if weight == 0 {
            return;
        }
        self.book(rrid, true, gone, |c| {
            if !gone(from) {
                c.sub(from, weight)
            }
        });
    }

    /// `weight` of `rrid` that was `from`'s is now `to`'s (`Msg::AddClient`).
    pub(super) fn moved(&self, rrid: Rrid, from: Pid, to: Pid, weight: u64, gone: Gone<'_>) {
        let create = !gone(from);
        self.book(rrid, create, gone, |c| c.moved(from, to, weight, gone));
    }

    /// Books `weight` more to `to` (a holder whose weight ran low); false if the entry is gone,
    /// and nothing is booked to a dead holder.
    pub(super) fn add(&self, rrid: Rrid, to: Pid, weight: u64, gone: Gone<'_>) -> bool {
        let s = self.lock();
        match s.get(&rrid) {
            Some(e) if !gone(to) => {
                e.clients().add(to, weight);
                true
            }
            _ => false,
        }
    }

    /// Frees and returns the entry if `weight` is all that is left of it.
    pub(super) fn release_if_last(&self, rrid: Rrid, weight: u64) -> Option<Arc<Entry>> {
        let mut s = self.lock();
        let last = s.get(&rrid).is_some_and(|e| e.clients().total() == weight);
        if last {
            s.remove(&rrid)
        } else {
            None
        }
    }

    /// Drops a departed process's holds and frees what nobody else holds (Julia's
    /// `deregister_worker`).
    pub(super) fn drop_holder(&self, pid: Pid) {
        let gone = clients::drop_holder(&mut self.lock(), pid);
        for e in gone {
            freed(&e);
        }
    }
}
