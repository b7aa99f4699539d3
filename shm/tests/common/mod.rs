//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use cohort_shm::{Backing, ElemInfo, HostId, Pid, SegmentId, ShmHandle};
use serde::{Deserialize, Serialize};

/// What this test process has in /dev/shm: names of the form cohort gave segments in earlier
/// versions (`cohort-<our pid>-...`), and this process's descriptors of /dev/shm inodes (a
/// creator's open door shows up as `fd N: /dev/shm/#ino (deleted)`).
pub fn own_entries() -> BTreeSet<String> {
    let prefix = format!("{}{}-", cohort_shm::NAME_PREFIX, std::process::id());
    let mut out: BTreeSet<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            if link.starts_with("/dev/shm/") {
                let n = fd.file_name().to_string_lossy().into_owned();
                out.insert(format!("fd {n}: {}", link.display()));
            }
        }
    }
    out
}

/// Whether another process could still attach the object of `handle`: a segment's creator
/// still holds its descriptor (the inode of the handle), a file still exists.
pub fn attachable(handle: &ShmHandle) -> bool {
    match handle.backing() {
        Backing::Shm {
            creator,
            fd,
            dev,
            ino,
        } => std::fs::metadata(format!("/proc/{creator}/fd/{fd}"))
            .is_ok_and(|m| m.dev() == *dev && m.ino() == *ino),
        Backing::File { path } => path.exists(),
        Backing::RawFile { path, dev, ino, .. } => {
            std::fs::metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino)
        }
        other => panic!("a backing these tests do not know: {other:?}"),
    }
}

/// Same serde shape as the fields inside a `ShmHandle`'s byte string (the codec is
/// positional), with public fields to tamper with.
#[derive(Serialize, Deserialize)]
pub struct Mirror {
    pub backing: Backing,
    pub id: SegmentId,
    pub dims: Vec<usize>,
    pub shape: Vec<usize>,
    pub elem: ElemInfo,
    pub pids: Vec<Pid>,
    pub host: HostId,
    pub read_only: bool,
}

/// A byte string as a handle travels (serde bytes, not a sequence).
struct WireBytes(Vec<u8>);

impl Serialize for WireBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for WireBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = WireBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<WireBytes, E> {
                Ok(WireBytes(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// `handle` with its fields changed by `f`, as another process could forge it.
pub fn tamper(handle: &ShmHandle, f: impl FnOnce(&mut Mirror)) -> ShmHandle {
    use cohort_core::codec::{decode, encode_vec};
    let WireBytes(inner) = decode(&encode_vec(handle).unwrap()).unwrap();
    let mut m: Mirror = decode(&inner).unwrap();
    f(&mut m);
    decode(&encode_vec(&WireBytes(encode_vec(&m).unwrap())).unwrap()).unwrap()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn encode_handle(h: &ShmHandle) -> String {
    to_hex(&cohort_core::codec::encode_vec(h).unwrap())
}

pub fn decode_handle(s: &str) -> ShmHandle {
    cohort_core::codec::decode(&from_hex(s.trim())).unwrap()
}
