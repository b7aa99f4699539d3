//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::path::Path;

use cohort_shm::{Backing, ElemInfo, HostId, Pid, SegmentId, ShmHandle};
use serde::{Deserialize, Serialize};

/// Names in /dev/shm that this test process created (`cohort-<our pid>-...`).
pub fn own_entries() -> BTreeSet<String> {
    let prefix = format!("{}{}-", cohort_shm::NAME_PREFIX, std::process::id());
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Whether the segment of `handle` still has a name in /dev/shm.
pub fn name_exists(handle: &ShmHandle) -> bool {
    match handle.backing() {
        Backing::Shm { name } => Path::new("/dev/shm")
            .join(name.trim_start_matches('/'))
            .exists(),
        Backing::File { path } => path.exists(),
        other => panic!("a backing these tests do not know: {other:?}"),
    }
}

/// Same serde shape as `ShmHandle` (the codec is positional), with public fields to tamper with.
#[derive(Serialize, Deserialize)]
pub struct Mirror {
    pub backing: Backing,
    pub id: SegmentId,
    pub dims: Vec<usize>,
    pub elem: ElemInfo,
    pub pids: Vec<Pid>,
    pub host: HostId,
    pub read_only: bool,
}

pub fn tamper(handle: &ShmHandle, f: impl FnOnce(&mut Mirror)) -> ShmHandle {
    let mut m: Mirror =
        cohort_core::codec::decode(&cohort_core::codec::encode_vec(handle).unwrap()).unwrap();
    f(&mut m);
    cohort_core::codec::decode(&cohort_core::codec::encode_vec(&m).unwrap()).unwrap()
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
