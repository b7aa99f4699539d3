//! The messages of the collectives: numbered point-to-point pieces between two processes,
//! on which `patterns/collective.rs` builds its binomial trees, and the transport's own
//! collectives in MPI mode. A collective is no call by name (every process of the group runs
//! it at once and each piece goes to one process, which takes it from its mailbox), so it
//! does not go through the fan-out engine; this is its whole access to the network.

use crate::base::error::Result;
use crate::base::ids::Pid;
use crate::links::transport::NativeCollectives;
use crate::runtime::rt;
use crate::wire::codec::Body;
use crate::wire::frame::Frame;
use crate::wire::proto::Msg;

/// The transport's own collectives (MPI mode), if it has them.
pub(crate) fn native() -> Option<&'static dyn NativeCollectives> {
    rt().ok()?.world.get()?.native()
}

/// Sends the piece `seq` to `to`.
pub(crate) fn send(to: Pid, seq: u64, body: &Body<'_>) -> Result<()> {
    rt()?.send(to, &Msg::Coll { seq }, body)
}

/// Waits for the piece `seq` from `from` (an error once `from` has left).
pub(crate) fn recv(from: Pid, seq: u64) -> Result<Frame> {
    let rt = rt()?;
    rt.coll.take(seq, from, |p| rt.is_removed(p))
}

/// The number of the next collective of group `g` here, with the group hashed into the top
/// bits so that collectives of different groups never collide.
pub(crate) fn next_seq(g: &[Pid]) -> Result<u64> {
    let rt = rt()?;
    let mut seqs = rt.coll.seqs.lock().unwrap_or_else(|e| e.into_inner());
    let c = seqs.entry(g.to_vec()).or_insert(0);
    let n = *c;
    *c += 1;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(g, &mut h);
    Ok((std::hash::Hasher::finish(&h) << 40) ^ n)
}
