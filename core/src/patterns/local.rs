//! Worker-local state: the Rust counterpart of globals defined on workers.
//!
//! Every process has one typed store of named values. Remote functions use it to keep data
//! between calls: send a large array to each worker once (with [`everywhere`](fn@crate::everywhere)
//! and a registered function that calls [`set`]), then have later calls read it with [`get`].
//! [`clear`] removes names on a set of processes (Julia's `clear!`), so that their memory is
//! freed there.
//!
//! ```ignore
//! use cohort::local;
//!
//! #[cohort::remote]
//! fn keep(a: Vec<f64>) {
//!     local::set("A", a);
//! }
//!
//! #[cohort::remote]
//! fn sum_a() -> f64 {
//!     local::get::<Vec<f64>>("A").map_or(0.0, |a| a.iter().sum())
//! }
//!
//! # fn main() -> cohort::Result<()> {
//! # let _c = cohort::init()?;
//! cohort::everywhere(keep, (vec![1.0; 1000],))?; // ships the array once to each process
//! let s: f64 = cohort::remotecall_fetch(sum_a, 2, ())?; // 1000.0, nothing shipped
//! local::clear(&["A"], &cohort::workers())?; // clear!(:A, workers())
//! # let _ = s;
//! # Ok(())
//! # }
//! ```
//!
//! # Julia
//! Global bindings in `Main` on workers (`@everywhere A = ...`, `remotecall_fetch(() -> sum(A), 2)`)
//! and `clear!(syms, pids)`.

use crate::base::error::Result;
use crate::base::ids::Pid;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

type Value = Arc<dyn Any + Send + Sync>;

fn store() -> MutexGuard<'static, HashMap<String, Value>> {
    static STORE: OnceLock<Mutex<HashMap<String, Value>>> = OnceLock::new();
    STORE
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Stores `value` under `name` in this process, replacing what was there.
///
/// # Julia
/// `global name = value` (on a worker: `@everywhere name = value`).
pub fn set<T: Any + Send + Sync>(name: &str, value: T) {
    set_arc(name, Arc::new(value));
}

/// Stores a shared value under `name` without copying it.
pub fn set_arc<T: Any + Send + Sync>(name: &str, value: Arc<T>) {
    // The old value is dropped outside the lock: its drop may be long (a large array).
    let old = store().insert(name.to_string(), value);
    drop(old);
}

/// The value stored under `name`, if there is one of type `T`.
///
/// A handle to the stored value: nothing is copied.
pub fn get<T: Any + Send + Sync>(name: &str) -> Option<Arc<T>> {
    let v = store().get(name).cloned()?;
    v.downcast::<T>().ok()
}

/// A copy of the value stored under `name`, if there is one of type `T`.
pub fn get_cloned<T: Any + Send + Sync + Clone>(name: &str) -> Option<T> {
    get::<T>(name).map(|a| (*a).clone())
}

/// Runs `f` on the value under `name` (created with `init` when absent or of another type) and
/// returns what `f` returns. The value is updated in place when no other handle to it exists
/// (from [`get`]), otherwise copied first. The update is atomic: the store is locked while `f`
/// runs, so `f` must not use the store itself.
pub fn update<T, R>(name: &str, init: impl FnOnce() -> T, f: impl FnOnce(&mut T) -> R) -> R
where
    T: Any + Send + Sync + Clone,
{
    let mut s = store();
    let mut cur: Arc<T> = s
        .remove(name)
        .and_then(|v| v.downcast::<T>().ok())
        .unwrap_or_else(|| Arc::new(init()));
    let r = f(Arc::make_mut(&mut cur));
    s.insert(name.to_string(), cur);
    r
}

/// Removes `name` from this process's store; whether it was there.
pub fn remove(name: &str) -> bool {
    let old = store().remove(name);
    old.is_some()
}

/// Whether `name` is set in this process.
pub fn contains(name: &str) -> bool {
    store().contains_key(name)
}

/// The names set in this process, sorted.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = store().keys().cloned().collect();
    v.sort_unstable();
    v
}

/// Removes every name that starts with `prefix` here; how many were removed.
pub(crate) fn remove_prefix(prefix: &str) -> usize {
    let old: Vec<Value> = {
        let mut s = store();
        let keys: Vec<String> = s
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.iter().filter_map(|k| s.remove(k)).collect()
    };
    old.len()
}

/// Removes `names` here; how many were set.
#[cohort_macros::remote(crate = crate)]
fn clear_here(names: Vec<String>) -> usize {
    let old: Vec<Value> = {
        let mut s = store();
        names.iter().filter_map(|n| s.remove(n)).collect()
    };
    old.len()
}

/// Removes `names` on every process in `pids` (this one included when listed) and frees
/// their values there. Returns how many names were set on each pid, in the order of `pids`;
/// failures come back as one [`Error::Composite`](crate::base::error::Error::Composite) naming each pid.
///
/// # Julia
/// `clear!(syms, pids=workers())`.
pub fn clear(names: &[&str], pids: &[Pid]) -> Result<Vec<usize>> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    crate::patterns::everywhere::everywhere_on(pids, clear_here, (names,))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_update_remove() {
        set("local-test-a", vec![1u8, 2, 3]);
        assert_eq!(*get::<Vec<u8>>("local-test-a").unwrap(), vec![1, 2, 3]);
        assert!(get::<String>("local-test-a").is_none());
        let n = update(
            "local-test-n",
            || 0u64,
            |n| {
                *n += 5;
                *n
            },
        );
        assert_eq!(n, 5);
        assert_eq!(update("local-test-n", || 0u64, |n| *n), 5);
        assert!(names().contains(&"local-test-a".to_string()));
        assert!(remove("local-test-a"));
        assert!(!contains("local-test-a"));
        set("local-test-p.1", 1u8);
        set("local-test-p.2", 2u8);
        assert_eq!(remove_prefix("local-test-p."), 2);
    }
}
