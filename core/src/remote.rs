//! Layer 5: remote references and calls: the remotecall family, `Future`, `RemoteChannel`.

pub mod calls;
pub mod channel;
pub mod future;
