//! Remote references and their distributed reference counting.
//!
//! Counting uses weights, so that passing a handle between processes needs no message to the
//! owner and no ordering between links: the owner starts an entry with a total weight of 2^62,
//! the first handle holds all of it, a handle serialized to another process gives half of its
//! weight to the copy, and a handle dropped (or a Future fetched, or `finalize`d) sends its
//! weight back. The owner frees the entry when all weight has returned. A handle down to weight
//! 1 asks the owner for more before splitting (after 62 hops; in practice never).

use crate::base::error::{Error, Result};
use crate::base::ids::{Pid, Rrid};
use crate::runtime::store::Item;
use crate::runtime::{rt, try_rt};
use crate::wire::codec::Body;
use crate::wire::proto::Msg;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The total weight of a new reference.
pub(crate) const INITIAL_WEIGHT: u64 = 1 << 62;

/// One process's hold on a remote reference, shared by all its local copies.
pub(crate) struct RefInner {
    pub(crate) rrid: Rrid,
    pub(crate) owner: Pid,
    weight: AtomicU64,
    pub(crate) cache: Mutex<Option<Result<Item>>>,
}

/// A reference as it travels.
#[derive(Serialize, Deserialize)]
pub(crate) struct RefWire {
    rrid: Rrid,
    owner: Pid,
    weight: u64,
    cached: Option<Vec<u8>>,
}

impl RefInner {
    /// A new reference owned by `owner`, holding the whole weight.
    pub(crate) fn new(rrid: Rrid, owner: Pid) -> Arc<RefInner> {
        let r = Arc::new(RefInner {
            rrid,
            owner,
            weight: AtomicU64::new(INITIAL_WEIGHT),
            cache: Mutex::new(None),
        });
        if let Some(rt) = try_rt() {
            rt.handles
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(rrid, Arc::downgrade(&r));
        }
        r
    }

    /// Takes all the weight this process holds (to send it back).
    pub(crate) fn take_weight(&self) -> u64 {
        self.weight.swap(0, Ordering::AcqRel)
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight.load(Ordering::Acquire)
    }

    /// Gives the owner back this process's weight now (Julia's `finalize`).
    pub(crate) fn finalize(&self) {
        let w = self.take_weight();
        if w > 0 {
            if let Ok(rt) = rt() {
                rt.del_ref(self.owner, self.rrid, w);
            }
        }
    }

    /// The form sent to another process, carrying half of this process's weight.
    pub(crate) fn export(&self) -> Result<RefWire> {
        let cached = match &*self.cache.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(item)) => Some(item.encode()?.into_vec()),
            _ => None,
        };
        let give = loop {
            let w = self.weight.load(Ordering::Acquire);
            if w == 0 {
                break 0;
            }
            if w == 1 {
                let rt = rt()?;
                let msg = Msg::AddWeight {
                    rrid: self.rrid,
                    weight: INITIAL_WEIGHT,
                };
                if self.owner == rt.myid() {
                    rt.entry(self.rrid)
                        .ok_or_else(|| Error::invalid("reference was already freed"))
                        .map(|e| {
                            *e.weight.lock().unwrap_or_else(|e| e.into_inner()) += INITIAL_WEIGHT
                        })?;
                } else {
                    rt.request(self.owner, &msg, &Body::Owned(Vec::new()))?;
                }
                self.weight.fetch_add(INITIAL_WEIGHT, Ordering::AcqRel);
                continue;
            }
            let half = w / 2;
            if self
                .weight
                .compare_exchange(w, w - half, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break half;
            }
        };
        Ok(RefWire {
            rrid: self.rrid,
            owner: self.owner,
            weight: give,
            cached,
        })
    }

    /// The local hold for a reference that arrived from another process.
    pub(crate) fn import(w: RefWire) -> Arc<RefInner> {
        let cached = w.cached.map(|b| Ok(Item::Bytes(b)));
        let Some(rt) = try_rt() else {
            return Arc::new(RefInner {
                rrid: w.rrid,
                owner: w.owner,
                weight: AtomicU64::new(w.weight),
                cache: Mutex::new(cached),
            });
        };
        let mut h = rt.handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = h.get(&w.rrid).and_then(|x| x.upgrade()) {
            existing.weight.fetch_add(w.weight, Ordering::AcqRel);
            let mut c = existing.cache.lock().unwrap_or_else(|e| e.into_inner());
            if c.is_none() {
                *c = cached;
            }
            drop(c);
            return existing;
        }
        let r = Arc::new(RefInner {
            rrid: w.rrid,
            owner: w.owner,
            weight: AtomicU64::new(w.weight),
            cache: Mutex::new(cached),
        });
        h.insert(w.rrid, Arc::downgrade(&r));
        r
    }
}

impl Drop for RefInner {
    fn drop(&mut self) {
        let Some(rt) = try_rt() else { return };
        {
            let mut h = rt.handles.lock().unwrap_or_else(|e| e.into_inner());
            if h.get(&self.rrid).is_some_and(|w| w.strong_count() == 0) {
                h.remove(&self.rrid);
            }
        }
        let w = self.take_weight();
        if w > 0 {
            rt.del_ref(self.owner, self.rrid, w);
        }
    }
}
