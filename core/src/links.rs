//! Layer 3: a link to one peer over a transport, and the `Transport` traits.

pub(crate) mod link;
pub mod transport;
