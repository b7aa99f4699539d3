//! The messages inside frames, and the connection handshake.

use crate::base::ids::Pid;
use crate::base::ids::Rrid;
use crate::base::topology::Topology;
use crate::wire::codec;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::OnceLock;

/// The prefix of the line a worker prints on its stdout to report its listener address:
/// `cohort_worker:ADDRESS` (Julia's workers print `julia_worker:PORT#HOST` the same way).
///
/// The tag keeps the address apart from anything the program prints before `cohort::init()`
/// (a banner, log lines), which travels on the same stream.
pub const WORKER_ADDRESS_TAG: &str = "cohort_worker:";

/// The name of a remote function in a message. The caller sends the registry's `&'static str`
/// as it is, and a name this process has registered arrives as the registry's own string:
/// nothing is allocated for it on the path of every call, on either side. A name this process
/// does not know arrives owned, for the error that names it. It travels as a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FuncName(Cow<'static, str>);

/// A registered function's name (what `RemoteFn::name` gives).
impl From<&'static str> for FuncName {
    fn from(name: &'static str) -> Self {
        FuncName(Cow::Borrowed(name))
    }
}

impl From<String> for FuncName {
    fn from(name: String) -> Self {
        FuncName(Cow::Owned(name))
    }
}

impl std::ops::Deref for FuncName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for FuncName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an arriving name finds the registry's string, by its bytes (a registered name is known to
/// be UTF-8): set once by the registry, which sits in a layer above this one, when it builds its
/// table (before that, names arrive owned).
static KNOWN: OnceLock<Resolve> = OnceLock::new();

/// The registered name some bytes spell, as the registry's own string.
pub(crate) type Resolve = fn(&[u8]) -> Option<&'static str>;

/// Lets arriving names resolve through `known` (the registry's lookup).
pub(crate) fn resolve_names_with(known: Resolve) {
    let _ = KNOWN.set(known);
}

impl Serialize for FuncName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FuncName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = FuncName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a function name")
            }
            // A string's bytes, as postcard writes both: a name found in the registry needs no
            // UTF-8 check; any other must pass it, as a `String` would.
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<FuncName, E> {
                if let Some(name) = KNOWN.get().and_then(|known| known(v)) {
                    return Ok(FuncName(Cow::Borrowed(name)));
                }
                std::str::from_utf8(v)
                    .map(|s| FuncName(Cow::Owned(s.to_owned())))
                    .map_err(|_| {
                        codec::de_error(format_args!(
                            "a function name that is not UTF-8: {:?}",
                            String::from_utf8_lossy(v)
                        ))
                    })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FuncName, E> {
                self.visit_bytes(v.as_bytes())
            }
        }
        d.deserialize_bytes(Name)
    }
}

/// What a `Call` does with the function's result.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Mode {
    /// Send it back (`remotecall_fetch`).
    Fetch,
    /// Keep it under a reference (`remotecall`); with `notify`, acknowledge once stored (`remotecall_wait`).
    Store { rrid: Rrid, notify: bool },
    /// Drop it (`remote_do`).
    Do,
    /// Send it back, as `Fetch`, for a core function that runs no user code (pool
    /// bookkeeping): it starts at once on a thread of its own, never behind the caller's
    /// calls on its serial queue.
    Service,
}

/// Channel operations.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum ChanOp {
    Put,
    Take,
    Fetch,
    IsReady,
    Wait,
    Close,
    /// Whether the channel is open; the reply is one byte, 1 for open.
    IsOpen,
    /// Whether no value is waiting (a user channel: by `isready` under the key); one byte.
    IsEmpty,
    /// `Take`, giving up after `nanos` (measured on the owner) with nothing taken.
    TakeWithin {
        nanos: u64,
    },
    /// `Put`, giving up after `nanos` with nothing inserted.
    PutWithin {
        nanos: u64,
    },
}

/// What a process knows about another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerInfo {
    pub pid: Pid,
    /// Listener address ("" for the master, which listens on nothing).
    pub addr: String,
    /// Host identity, for `procs(pid)`.
    pub host: String,
}

/// Queries for introspection and tests.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Query {
    LiveRefs,
}

/// The message at the start of every frame's payload; the frame body follows it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    Call {
        func: FuncName,
        mode: Mode,
    },
    Reply {
        ok: bool,
    },
    Fetch {
        rrid: Rrid,
        release: u64,
    },
    Wait {
        rrid: Rrid,
    },
    IsReady {
        rrid: Rrid,
    },
    Put {
        rrid: Rrid,
    },
    NewChan {
        rrid: Rrid,
        cap: u64,
    },
    NewChanFrom {
        rrid: Rrid,
        func: FuncName,
    },
    Chan {
        rrid: Rrid,
        op: ChanOp,
        key: Vec<u8>,
    },
    AddWeight {
        rrid: Rrid,
        weight: u64,
    },
    DelRef {
        rrid: Rrid,
        weight: u64,
    },
    Interrupt,
    Exit,
    Config {
        pid: Pid,
        peers: Vec<PeerInfo>,
        topology: Topology,
        /// Custom topology: the workers this one may talk to.
        allowed: Option<Vec<Pid>>,
    },
    /// Custom topology: these workers may now be talked to.
    Allow(Vec<Pid>),
    PeerAdded(PeerInfo),
    PeerRemoved(Pid),
    Query(Query),
    /// A piece of a collective operation: the `seq`-th collective of the sender.
    Coll {
        seq: u64,
    },
    /// To a reference's owner: `weight` of it that was `from`'s is now `to`'s.
    AddClient {
        rrid: Rrid,
        from: Pid,
        to: Pid,
        weight: u64,
    },
}

/// Encodes a message with the codec.
pub(crate) fn encode_msg(msg: &Msg) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    codec::encode_into(&mut out, msg).expect("messages always encode");
    out
}

/// Runs `f` on the encoding of `msg`, in a buffer this thread reuses: a request's message is
/// encoded on the path of every call, and an allocation there costs as much as the encoding.
pub(crate) fn with_encoded<R>(msg: &Msg, f: impl FnOnce(&[u8]) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            codec::encode_into(&mut buf, msg).expect("messages always encode");
            f(&buf)
        }
        // Entered again from within `f` (a send that runs a request): a buffer of its own.
        Err(_) => f(&encode_msg(msg)),
    })
}

/// The encoding of `Reply { ok }`, made once: every answer starts with it.
pub(crate) fn reply_meta(ok: bool) -> &'static [u8] {
    static META: std::sync::OnceLock<[Vec<u8>; 2]> = std::sync::OnceLock::new();
    &META.get_or_init(|| {
        [
            encode_msg(&Msg::Reply { ok: false }),
            encode_msg(&Msg::Reply { ok: true }),
        ]
    })[usize::from(ok)]
}

/// Decodes a frame's message ([`Frame::meta`](crate::wire::frame::Frame::meta) is exactly the
/// message's bytes, so trailing bytes are an error).
pub(crate) fn decode_msg(meta: &[u8]) -> Result<Msg, codec::CodecError> {
    codec::decode_serde(meta)
}

/// Protocol messages for the codec bench, behind an opaque wrapper so that the messages
/// themselves stay private to the crate.
#[doc(hidden)]
pub(crate) mod bench {
    use super::*;

    /// A message, serialized exactly as the message itself.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct SampleMsg(Msg);

    impl SampleMsg {
        /// Encodes in the codec's configuration (what every frame carries).
        pub fn encode(&self) -> Vec<u8> {
            encode_msg(&self.0)
        }
        /// Decodes what [`SampleMsg::encode`] produced.
        pub fn decode(meta: &[u8]) -> Option<SampleMsg> {
            decode_msg(meta).ok().map(SampleMsg)
        }
    }

    /// The messages of a call's round trip and of reference and channel traffic, named, and
    /// one configuration message of a 16-worker cluster.
    pub fn sample_messages() -> Vec<(&'static str, SampleMsg)> {
        let rrid = Rrid {
            whence: 1,
            id: 123_456,
        };
        let peers = (1..=16)
            .map(|pid| PeerInfo {
                pid,
                addr: format!("10.1.0.{pid}:{}", 40_000 + pid),
                host: format!("node{pid:03}.cluster.example"),
            })
            .collect();
        vec![
            (
                "call",
                Msg::Call {
                    func: "my_app::kernels::step".into(),
                    mode: Mode::Store { rrid, notify: true },
                },
            ),
            ("reply", Msg::Reply { ok: true }),
            (
                "fetch",
                Msg::Fetch {
                    rrid,
                    release: 1 << 61,
                },
            ),
            (
                "chan_put",
                Msg::Chan {
                    rrid,
                    op: ChanOp::Put,
                    key: Vec::new(),
                },
            ),
            (
                "add_client",
                Msg::AddClient {
                    rrid,
                    from: 2,
                    to: 3,
                    weight: 1 << 40,
                },
            ),
            (
                "config16",
                Msg::Config {
                    pid: 5,
                    peers,
                    topology: Topology::AllToAll,
                    allowed: None,
                },
            ),
        ]
        .into_iter()
        .map(|(n, m)| (n, SampleMsg(m)))
        .collect()
    }
}

/// Handshake: the connecting side sends `HELLO_LEN` bytes, the listening side answers
/// `WELCOME_LEN` bytes or closes (a wrong cookie gets no answer).
pub(crate) const HELLO_MAGIC: &[u8; 8] = b"COHORTHS";
pub(crate) const WELCOME_MAGIC: &[u8; 8] = b"COHORTOK";
pub(crate) const COOKIE_LEN: usize = 16;
pub(crate) const HOST_LEN: usize = 64;
/// The ring offer after the host: present flag, pid, fd, device, inode, token (padded).
const OFFER_LEN: usize = 48;
pub(crate) const HELLO_LEN: usize = 8 + 8 + COOKIE_LEN + 8 + 8 + HOST_LEN + OFFER_LEN;
pub(crate) const WELCOME_LEN: usize = 8 + 8 + 8 + HOST_LEN;

pub(crate) struct Hello {
    pub version: u8,
    pub cookie: [u8; COOKIE_LEN],
    pub from: Pid,
    /// Non-zero: the master assigns this pid to the listener (first contact).
    pub assign: Pid,
    pub host: String,
    /// Shared-memory rings the connecting side offers for the link (same host only).
    pub ring: Option<crate::wire::proto::RingOffer>,
}

/// Where the connecting side's ring segment is, and the token that proves it (see
/// `links::ring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RingOffer {
    pub pid: u32,
    pub fd: i32,
    pub dev: u64,
    pub ino: u64,
    pub token: [u8; 16],
}

fn put_host(b: &mut [u8], host: &str) {
    let h = host.as_bytes();
    let n = h.len().min(HOST_LEN);
    b[..n].copy_from_slice(&h[..n]);
}

fn get_host(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Hello {
    pub(crate) fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..8].copy_from_slice(HELLO_MAGIC);
        b[8] = self.version;
        b[16..32].copy_from_slice(&self.cookie);
        b[32..40].copy_from_slice(&(self.from as u64).to_le_bytes());
        b[40..48].copy_from_slice(&(self.assign as u64).to_le_bytes());
        put_host(&mut b[48..48 + HOST_LEN], &self.host);
        if let Some(o) = &self.ring {
            let r = &mut b[48 + HOST_LEN..];
            r[0] = 1;
            r[4..8].copy_from_slice(&o.pid.to_le_bytes());
            r[8..12].copy_from_slice(&o.fd.to_le_bytes());
            r[16..24].copy_from_slice(&o.dev.to_le_bytes());
            r[24..32].copy_from_slice(&o.ino.to_le_bytes());
            r[32..48].copy_from_slice(&o.token);
        }
        b
    }
    pub(crate) fn decode(b: &[u8; HELLO_LEN]) -> Option<Hello> {
        if &b[..8] != HELLO_MAGIC {
            return None;
        }
        Some(Hello {
            version: b[8],
            cookie: b[16..32].try_into().ok()?,
            from: u64::from_le_bytes(b[32..40].try_into().ok()?) as Pid,
            assign: u64::from_le_bytes(b[40..48].try_into().ok()?) as Pid,
            host: get_host(&b[48..48 + HOST_LEN]),
            ring: {
                let r = &b[48 + HOST_LEN..];
                (r[0] == 1).then_some(()).and_then(|_| {
                    Some(RingOffer {
                        pid: u32::from_le_bytes(r[4..8].try_into().ok()?),
                        fd: i32::from_le_bytes(r[8..12].try_into().ok()?),
                        dev: u64::from_le_bytes(r[16..24].try_into().ok()?),
                        ino: u64::from_le_bytes(r[24..32].try_into().ok()?),
                        token: r[32..48].try_into().ok()?,
                    })
                })
            },
        })
    }
}

pub(crate) struct Welcome {
    pub version: u8,
    /// 0 = accepted; 1 = protocol version mismatch.
    pub status: u8,
    /// Whether the listening side took the offered rings.
    pub ring: bool,
    pub pid: Pid,
    pub host: String,
}

impl Welcome {
    pub(crate) fn encode(&self) -> [u8; WELCOME_LEN] {
        let mut b = [0u8; WELCOME_LEN];
        b[..8].copy_from_slice(WELCOME_MAGIC);
        b[8] = self.version;
        b[9] = self.status;
        b[10] = u8::from(self.ring);
        b[16..24].copy_from_slice(&(self.pid as u64).to_le_bytes());
        put_host(&mut b[24..], &self.host);
        b
    }
    pub(crate) fn decode(b: &[u8; WELCOME_LEN]) -> Option<Welcome> {
        if &b[..8] != WELCOME_MAGIC {
            return None;
        }
        Some(Welcome {
            version: b[8],
            status: b[9],
            ring: b[10] == 1,
            pid: u64::from_le_bytes(b[16..24].try_into().ok()?) as Pid,
            host: get_host(&b[24..]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes on the wire are postcard's (its specified 1.0 format): varint integers and
    /// variant indices, length-prefixed strings and sequences.
    #[test]
    fn messages_encode_in_postcard_format() {
        let msgs = [
            Msg::Reply { ok: true },
            Msg::Reply { ok: false },
            Msg::Call {
                func: "mod::f".into(),
                mode: Mode::Store {
                    rrid: Rrid { whence: 3, id: 77 },
                    notify: true,
                },
            },
            Msg::Chan {
                rrid: Rrid { whence: 1, id: 2 },
                op: ChanOp::Take,
                key: vec![9, 8, 7],
            },
            Msg::Call {
                func: "pool_op".into(),
                mode: Mode::Service,
            },
            Msg::Chan {
                rrid: Rrid { whence: 2, id: 5 },
                op: ChanOp::PutWithin { nanos: u64::MAX },
                key: Vec::new(),
            },
            Msg::Config {
                pid: 4,
                peers: vec![PeerInfo {
                    pid: 2,
                    addr: "127.0.0.1:9000".into(),
                    host: "h".into(),
                }],
                topology: Topology::AllToAllEager,
                allowed: Some(vec![2, 3]),
            },
            Msg::Coll { seq: u64::MAX },
        ];
        for m in &msgs {
            let ours = encode_msg(m);
            assert_eq!(ours, postcard::to_allocvec(m).unwrap(), "{m:?}");
            let back = decode_msg(&ours).unwrap();
            assert_eq!(format!("{back:?}"), format!("{m:?}"));
        }
        // `Reply { ok: true }`: variant index 1, then the bool.
        assert_eq!(encode_msg(&Msg::Reply { ok: true }), [1, 1]);
        // `Call`: variant 0, the name's length and bytes, `Store` (1), rrid 3/77, notify.
        assert_eq!(
            encode_msg(&msgs[2]),
            [0, 6, b'm', b'o', b'd', b':', b':', b'f', 1, 3, 77, 1]
        );
        // `Coll { seq: u64::MAX }`: variant 18, then a ten-byte varint.
        assert_eq!(
            encode_msg(&Msg::Coll { seq: u64::MAX }),
            [18, 255, 255, 255, 255, 255, 255, 255, 255, 255, 1]
        );
    }

    /// A function name arrives as the string it was, known here or not; bytes that are not
    /// UTF-8 do not decode, as a `String` would not.
    #[test]
    fn a_function_name_arrives_whole_and_one_not_utf8_is_a_decoding_error() {
        let call = |func: FuncName| Msg::Call {
            func,
            mode: Mode::Fetch,
        };
        for name in ["mod::f", "no::such::function", ""] {
            match decode_msg(&encode_msg(&call(name.into()))).unwrap() {
                Msg::Call { func, .. } => assert_eq!(&*func, name),
                other => panic!("expected a call, got {other:?}"),
            }
        }
        let mut bytes = encode_msg(&call("ab".into()));
        assert_eq!(&bytes[1..4], [2, b'a', b'b']);
        bytes[2..4].copy_from_slice(&[0xff, 0xfe]);
        assert_eq!(
            decode_msg(&bytes).unwrap_err().to_string(),
            "a function name that is not UTF-8: \"\u{fffd}\u{fffd}\""
        );
    }

    #[test]
    fn decode_rejects_trailing_and_short_bytes() {
        let mut b = encode_msg(&Msg::Coll { seq: 5 });
        assert!(decode_msg(&b[..b.len() - 1]).is_err());
        b.push(0);
        assert!(decode_msg(&b).is_err());
        assert!(decode_msg(&[200, 0, 0, 0]).is_err());
        assert!(decode_msg(&[]).is_err());
    }
}
