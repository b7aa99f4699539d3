//! Layer 2: what travels: the value codec, frames, protocol messages and the hello.

pub mod codec;
pub mod frame;
pub(crate) mod proto;
