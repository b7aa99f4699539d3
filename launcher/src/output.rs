//! What the managers do with a worker's output while it starts.

use std::io::Read;
use std::os::fd::AsRawFd;

/// The lines left in a failed worker's pipe, without waiting for more: a process it started
/// (or an ssh control master) may still hold the pipe open.
pub(crate) fn drain_lines(r: std::io::PipeReader) -> Vec<String> {
    let mut out = Vec::new();
    let nonblocking = nix::fcntl::fcntl(
        r.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    if nonblocking.is_ok() {
        let mut r = r;
        let mut buf = [0u8; 4096];
        while out.len() < 64 * 1024 {
            match r.read(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    }
    String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The last five non-empty lines, joined, for an error message.
pub(crate) fn tail(lines: &[String]) -> String {
    let text: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if text.is_empty() {
        "no output".into()
    } else {
        let start = text.len().saturating_sub(5);
        text[start..].join(" | ")
    }
}
