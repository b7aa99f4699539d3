//! Layer 3: a link to one peer over a transport (with shared-memory rings when both ends share a
//! host), the poller state links are watched with, and the `Transport` traits.

pub(crate) mod link;
pub(crate) mod poller;
pub(crate) mod ring;
pub mod transport;
