//! What tests and diagnostics ask of the runtime (re-exported as `cohort::__private`).

use crate::base::ids::Pid;
use crate::runtime::try_rt;

/// The name of the transport this process runs over.
pub fn transport_name() -> Option<&'static str> {
    Some(try_rt()?.transport.name())
}

/// The listener address this process knows for `pid` (tests, diagnostics).
pub fn peer_address(pid: Pid) -> Option<String> {
    try_rt()?
        .peers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&pid)
        .map(|i| i.addr.clone())
        .filter(|a| !a.is_empty())
}

/// Runs the connecting side of a handshake with `cookie` and protocol `version` against a
/// listener, as a foreign process would (tests of refusal). Returns the open socket when
/// the listener accepted.
pub fn raw_handshake(addr: &str, cookie: &str, version: u8) -> std::io::Result<std::fs::File> {
    crate::runtime::raw_handshake(addr, cookie, version)
}

/// The message bytes of a reply (`ok`: a value follows; else an error), for tests of forged
/// replies.
pub fn reply_message(ok: bool) -> Vec<u8> {
    crate::wire::proto::encode_msg(&crate::wire::proto::Msg::Reply { ok })
}

/// Decodes `bytes` as a protocol message (the fuzz targets): `Err` with the reason if they are
/// not one; never panics.
pub fn decode_message(bytes: &[u8]) -> Result<(), String> {
    crate::wire::proto::decode_msg(bytes)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Decodes the first bytes of `bytes` as a hello (the fuzz targets): whether they are one.
pub fn decode_hello(bytes: &[u8]) -> bool {
    let Some(b) = bytes.get(..crate::wire::proto::HELLO_LEN) else {
        return false;
    };
    let b: &[u8; crate::wire::proto::HELLO_LEN] = b.try_into().expect("sliced to length");
    crate::wire::proto::Hello::decode(b).is_some()
}

/// Whether this process's link to `pid` carries its frames in shared-memory rings (`None`: no
/// live link).
pub fn link_uses_rings(pid: Pid) -> Option<bool> {
    try_rt()?.link_of(pid).map(|l| l.has_rings())
}
