//! Machine specs and machine files: where SSH workers run.
//!
//! A machine spec is Julia's `[user@]host[:port] [bind_addr[:port]]`, optionally prefixed by a
//! worker count as in a machine file line: `[count*][user@]host[:port] [bind_addr[:port]]`.
//!
//! - `user` defaults to the current user (ssh's own default), `port` to ssh's port (22 or what
//!   the ssh configuration says).
//! - `count` is a number of workers (at least 1, default 1) or `auto`: as many workers as the
//!   host has CPU threads (asked with `nproc` over ssh before the workers start).
//! - `bind_addr[:port]` is the address the workers on that host listen on, and so the address
//!   the master and the other workers connect to. With a port and several workers, worker `i`
//!   (from 0) of the host listens on `port + i`. Without it a worker listens on the interface
//!   its ssh connection came in on (see [`SshManager`](crate::SshManager)).
//! - An IPv6 address is written in brackets: `user@[fe80::1]:22 [fe80::1]:9000`.
//!
//! A machine file holds one spec per line. Blank lines and everything after a `#` are ignored.
//! A malformed line is an error that names the file, the line number and the line.

use cohort_core::{Count, Error};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// One entry of a machine list: where to start workers over ssh, and how many.
///
/// # Julia
/// An element of `addprocs(machines)`: `"user@host:port"`, `("user@host", 4)`,
/// `("host", :auto)`, or a `--machine-file` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Login name; `None` for ssh's default (the current user or the ssh configuration's).
    pub user: Option<String>,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// ssh port; `None` for ssh's default.
    pub port: Option<u16>,
    /// Address the workers on this host listen on (IPv6 without brackets).
    pub bind_addr: Option<String>,
    /// First port the workers on this host listen on; worker `i` uses `bind_port + i`.
    pub bind_port: Option<u16>,
    /// Workers to start there.
    pub count: Count,
}

/// A malformed machine spec or machine-file line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The machine file, when the spec came from one.
    pub file: Option<String>,
    /// Its line number (from 1), when the spec came from a file.
    pub line: Option<usize>,
    /// The text of the spec or line.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(
                f,
                "machine file {file}, line {line}: {} (line: {:?})",
                self.reason, self.text
            ),
            (None, Some(line)) => write!(
                f,
                "machine list, line {line}: {} (line: {:?})",
                self.reason, self.text
            ),
            _ => write!(f, "machine spec {:?}: {}", self.text, self.reason),
        }
    }
}

impl std::error::Error for SpecError {}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl Machine {
    /// Parses `[count*][user@]host[:port] [bind_addr[:port]]`.
    ///
    /// ```
    /// use cohort_launcher::Machine;
    /// use cohort_core::Count;
    /// let m = Machine::parse("4*alice@node7:2222 10.0.0.7").unwrap();
    /// assert_eq!(m.user.as_deref(), Some("alice"));
    /// assert_eq!((m.host.as_str(), m.port, m.count), ("node7", Some(2222), Count::N(4)));
    /// assert_eq!(m.bind_addr.as_deref(), Some("10.0.0.7"));
    /// ```
    pub fn parse(spec: &str) -> Result<Machine, SpecError> {
        parse_spec(spec).map_err(|reason| SpecError {
            file: None,
            line: None,
            text: spec.to_string(),
            reason,
        })
    }

    /// A machine with `count` workers (Julia's `(spec, count)`), parsing `spec` without a
    /// `count*` prefix.
    pub fn with_count(spec: &str, count: Count) -> Result<Machine, SpecError> {
        let m = Machine::parse(spec)?;
        if spec.contains('*') {
            return Err(SpecError {
                file: None,
                line: None,
                text: spec.to_string(),
                reason: "a count is given twice (in the spec and beside it)".into(),
            });
        }
        if count == Count::N(0) {
            return Err(SpecError {
                file: None,
                line: None,
                text: spec.to_string(),
                reason: "the count must be at least 1".into(),
            });
        }
        Ok(Machine { count, ..m })
    }

    /// A machine with one worker on `host`.
    pub fn host(host: &str) -> Machine {
        Machine {
            user: None,
            host: host.to_string(),
            port: None,
            bind_addr: None,
            bind_port: None,
            count: Count::N(1),
        }
    }

    /// The ssh destination: `user@host` or `host`.
    pub fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    /// `[user@]host[:port]`, for messages (IPv6 hosts in brackets).
    pub fn login(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&bracket(&self.host));
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.count {
            Count::N(1) => {}
            Count::N(n) => write!(f, "{n}*")?,
            Count::Auto => write!(f, "auto*")?,
        }
        write!(f, "{}", self.login())?;
        if let Some(b) = &self.bind_addr {
            write!(f, " {}", bracket(b))?;
            if let Some(p) = self.bind_port {
                write!(f, ":{p}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Machine {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Machine::parse(s)
    }
}

impl TryFrom<&str> for Machine {
    type Error = SpecError;
    fn try_from(s: &str) -> Result<Self, SpecError> {
        Machine::parse(s)
    }
}

impl TryFrom<(&str, usize)> for Machine {
    type Error = SpecError;
    fn try_from((s, n): (&str, usize)) -> Result<Self, SpecError> {
        Machine::with_count(s, Count::N(n))
    }
}

impl TryFrom<(&str, Count)> for Machine {
    type Error = SpecError;
    fn try_from((s, c): (&str, Count)) -> Result<Self, SpecError> {
        Machine::with_count(s, c)
    }
}

/// Parses a list of machine specs.
pub fn parse_machines<I, S>(specs: I) -> Result<Vec<Machine>, SpecError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    specs
        .into_iter()
        .map(|s| Machine::parse(s.as_ref()))
        .collect()
}

/// Parses the text of a machine file (`name` is used in errors): one spec per line, blank
/// lines and `#` comments ignored.
pub fn parse_machine_file(text: &str, name: &str) -> Result<Vec<Machine>, SpecError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let m = parse_spec(line).map_err(|reason| SpecError {
            file: Some(name.to_string()),
            line: Some(i + 1),
            text: raw.to_string(),
            reason,
        })?;
        out.push(m);
    }
    Ok(out)
}

/// Reads and parses a machine file.
///
/// # Julia
/// `julia --machine-file FILE`.
pub fn read_machine_file(path: &Path) -> cohort_core::Result<Vec<Machine>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        context: format!("reading machine file {}", path.display()),
        source: e,
    })?;
    let ms = parse_machine_file(&text, &path.display().to_string())?;
    if ms.is_empty() {
        return Err(Error::Invalid(format!(
            "machine file {} names no host",
            path.display()
        )));
    }
    Ok(ms)
}

fn parse_spec(spec: &str) -> Result<Machine, String> {
    let mut fields = spec.split_whitespace();
    let Some(login) = fields.next() else {
        return Err("empty machine spec".into());
    };
    let bind = fields.next();
    if let Some(extra) = fields.next() {
        return Err(format!(
            "unexpected {extra:?}: a spec is `[count*][user@]host[:port] [bind_addr[:port]]`"
        ));
    }
    let (count, login) = match login.split_once('*') {
        None => (Count::N(1), login),
        Some((c, rest)) => {
            if rest.contains('*') {
                return Err("more than one `*`".into());
            }
            let count = if c == "auto" {
                Count::Auto
            } else {
                match c.parse::<usize>() {
                    Ok(0) => return Err("the count must be at least 1".into()),
                    Ok(n) if c.bytes().all(|b| b.is_ascii_digit()) => Count::N(n),
                    _ => {
                        return Err(format!(
                            "invalid count {c:?} (a number of workers or `auto`)"
                        ))
                    }
                }
            };
            (count, rest)
        }
    };
    let (user, hostport) = match login.rsplit_once('@') {
        Some((u, h)) => {
            if u.is_empty() {
                return Err("empty user name before `@`".into());
            }
            if u.contains('@') || u.starts_with('-') {
                return Err(format!("invalid user name {u:?}"));
            }
            (Some(u.to_string()), h)
        }
        None => (None, login),
    };
    let (host, port) = split_host_port(hostport, "host")?;
    if host.starts_with('-') {
        return Err(format!("invalid host {host:?}"));
    }
    let (bind_addr, bind_port) = match bind {
        None => (None, None),
        Some(b) => {
            if b.contains('@') || b.contains('*') {
                return Err(format!(
                    "invalid bind address {b:?} (the second field is `bind_addr[:port]`)"
                ));
            }
            let (a, p) = split_host_port(b, "bind address")?;
            (Some(a), p)
        }
    };
    Ok(Machine {
        user,
        host,
        port,
        bind_addr,
        bind_port,
        count,
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; a bare IPv6 address (several `:`) is taken whole.
fn split_host_port(s: &str, what: &str) -> Result<(String, Option<u16>), String> {
    if s.is_empty() {
        return Err(format!("empty {what}"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(format!("unclosed `[` in {what} {s:?}"));
        };
        if after.is_empty() {
            (h, None)
        } else if let Some(p) = after.strip_prefix(':') {
            (h, Some(p))
        } else {
            return Err(format!("unexpected {after:?} after `]` in {what} {s:?}"));
        }
    } else if s.matches(':').count() > 1 {
        (s, None)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("empty {what} in {s:?}"));
    }
    let v6 = host.split('%').next().unwrap_or("");
    if host.contains(':') && v6.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "invalid {what} {s:?} (`name:port`, or an IPv6 address in brackets: `[addr]:port`)"
        ));
    }
    if s.starts_with('[') && !host.contains(':') {
        return Err(format!(
            "only an IPv6 address goes in brackets, not {host:?}"
        ));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:%".contains(&b))
    {
        return Err(format!("invalid {what} {host:?}"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("invalid port {p:?} in {what} {s:?} (1 to 65535)")),
        },
    };
    Ok((host.to_string(), port))
}
