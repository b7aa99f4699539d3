//! The raw file the raw-mapping tests map: bytes written with `std::fs`, no cohort header
//! (shared by this crate's tests and the cluster suite).

use std::path::Path;

/// Bytes before the elements (the mapping's offset is their length).
pub(crate) const PREFIX: [u8; 16] = [0xa5; 16];
/// Bytes after the elements, which no mapping may touch.
pub(crate) const SUFFIX: [u8; 8] = [0x5a; 8];
/// The elements.
pub(crate) const VALUES: [f64; 6] = [1.5, -2.0, 3.25, 4.0, 5.5, 6.0];

/// `values` native-endian, as a mapping holds them.
pub(crate) fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// `PREFIX`, `VALUES` native-endian, `SUFFIX`: 16 + 48 + 8 bytes.
pub(crate) fn write_sample(path: &Path) {
    let mut bytes = PREFIX.to_vec();
    bytes.extend(f64_bytes(&VALUES));
    bytes.extend(SUFFIX);
    std::fs::write(path, bytes).unwrap();
}
