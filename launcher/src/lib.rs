//! cohort-launcher: cluster managers that start workers.
//!
//! - [`LocalManager`] — workers on this host, by re-executing the current program in worker
//!   mode (Julia's `addprocs(n)`).

mod local;

pub use local::LocalManager;
