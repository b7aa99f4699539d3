//! Layer 5: remote references and calls: the remotecall family, `Future`, `RemoteChannel`;
//! the fan-out engine every call by name goes through (`fanout`), and the point-to-point
//! messages of the collectives (`coll`). Layer 6 (`patterns/`) reaches the network only
//! through this layer.

pub mod calls;
pub mod channel;
pub(crate) mod coll;
pub(crate) mod fanout;
pub mod future;
