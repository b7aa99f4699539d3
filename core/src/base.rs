//! Layer 1: ids, errors, the environment, logging. Imports nothing of the crate above it.

pub mod env;
pub mod error;
pub(crate) mod ids;
pub mod log;
pub(crate) mod mem;
pub(crate) mod topology;
