//! Layer 3: a link to one peer over a transport, the poller state links are watched with, and
//! the `Transport` traits.

pub(crate) mod link;
pub(crate) mod poller;
pub mod transport;
