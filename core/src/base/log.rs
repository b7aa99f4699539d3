//! Library messages: [`tracing`] events, with a readable stderr line when nobody listens.
//!
//! Every message cohort prints (a refused connection, a failed `accept`, an `rmprocs` warning,
//! an ssh note, ...) is a `tracing` event from a `cohort_core` or `cohort_launcher` module, with
//! the fields `pid` (this process's pid, once it has one), `error` (what went wrong, where
//! something did) and `peer` (the other pid, where there is one). Levels: `warn` for what
//! another process did (a refused connection, a malformed frame), `error` for what failed
//! here, `info` for notes (ssh's own messages).
//!
//! - **With a subscriber** (say `tracing_subscriber::fmt::init()`), the events go to it and
//!   nothing else is printed; its filter decides what is kept. A subscriber is looked up where
//!   each event happens, so one installed at any time takes over from then on; most events
//!   happen on cohort's own threads, so it must be the global default
//!   (`tracing::subscriber::set_global_default`), not a thread's scoped one. Installing it
//!   before `cohort::init()` is the simple rule: it then sees everything, and in workers (the
//!   same `main`) too.
//! - **Without one**, each event at `COHORT_LOG`'s level or above (default `info`: all of
//!   cohort's messages) is written to stderr as one line, `cohort[pid 3]: refused a
//!   connection: wrong cluster cookie ...` (the message, then the `error` field). Worker
//!   processes write there too, and their manager forwards it to the master. `COHORT_LOG` is
//!   `off`, `error`, `warn`, `info`, `debug` or `trace`; a value `init` cannot parse is an
//!   [`Error::Invalid`](crate::base::error::Error::Invalid) naming the variable. `RUST_LOG` is left to the
//!   user's subscriber (`tracing_subscriber::EnvFilter` reads it).

use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::{Interest, NoSubscriber, Subscriber};
use tracing::{Dispatch, Event, Metadata};

/// Emits a `tracing` event with this process's `pid` as a field, writing the readable stderr
/// line instead when no subscriber is set (see [`crate::base::log`]). The one way cohort logs.
///
/// `log!(warn, error = %e, "refused a connection")`: the level (`error`, `warn`, `info`,
/// `debug`, `trace`), then `tracing`'s fields and message. The stderr line shows the message
/// and the `error` field only, so a reader's essentials belong in the message.
#[doc(hidden)]
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::__emit(|| $crate::log::__tracing::$level!(pid = $crate::log::__pid(), $($arg)+))
    };
}

#[doc(hidden)]
pub use tracing as __tracing;

/// The `pid` field: this process's pid, none before it has one.
#[doc(hidden)]
pub fn __pid() -> Option<crate::base::ids::Pid> {
    crate::base::ids::known_pid()
}

/// Runs `event` (a `tracing` macro) under the fallback subscriber when no other is current.
#[doc(hidden)]
pub fn __emit(event: impl FnOnce()) {
    // `Dispatch::none()` wraps a `NoSubscriber`: what a thread sees when nobody set one.
    if tracing::dispatcher::get_default(|d| d.is::<NoSubscriber>()) {
        tracing::dispatcher::with_default(fallback(), event)
    } else {
        event()
    }
}

/// `COHORT_LOG`, checked where the master starts so that a typo is an error, not silence.
pub(crate) fn check_env() -> crate::base::error::Result<()> {
    parse_level(crate::base::env::log().as_deref())
        .map(|_| ())
        .map_err(crate::base::error::Error::Invalid)
}

fn parse_level(v: Option<&str>) -> Result<LevelFilter, String> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(LevelFilter::INFO),
        Some(s) => s.parse().map_err(|_| {
            format!("COHORT_LOG={s:?} is not a log level (off, error, warn, info, debug, trace)")
        }),
    }
}

fn fallback() -> &'static Dispatch {
    static D: OnceLock<Dispatch> = OnceLock::new();
    D.get_or_init(|| {
        // A worker's bad value was already refused by its master's `init`: the default then.
        let max = parse_level(crate::base::env::log().as_deref()).unwrap_or(LevelFilter::INFO);
        Dispatch::new(Fallback {
            max,
            out: Arc::new(|line: &str| {
                use std::io::Write;
                // One write: stderr is unbuffered, and `writeln!` would write the line and its
                // end apart, letting what another thread prints (on stdout too, when both go
                // to one pipe) land in between.
                let mut l = String::with_capacity(line.len() + 1);
                l.push_str(line);
                l.push('\n');
                let _ = std::io::stderr().lock().write_all(l.as_bytes());
            }),
        })
    })
}

/// The subscriber behind the stderr line: filters by level and formats, keeps no spans.
struct Fallback {
    max: LevelFilter,
    out: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Subscriber for Fallback {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && *meta.level() <= self.max
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut l = Line::default();
        event.record(&mut l);
        (self.out)(&l.render());
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[derive(Default)]
struct Line {
    pid: Option<u64>,
    message: String,
    error: Option<String>,
}

impl Line {
    fn render(&self) -> String {
        let mut s = String::from("cohort");
        if let Some(p) = self.pid {
            let _ = write!(s, "[pid {p}]");
        }
        let _ = write!(s, ": {}", self.message);
        if let Some(e) = &self.error {
            let _ = write!(s, ": {e}");
        }
        s
    }
}

impl Visit for Line {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "pid" {
            self.pid = Some(value);
        } else {
            self.record_debug(field, &value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "error" => self.error = Some(value.to_string()),
            _ => {}
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Runs `f` under a fallback at `max` that collects its lines.
    fn lines(max: LevelFilter, f: impl FnOnce()) -> Vec<String> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let d = Dispatch::new(Fallback {
            max,
            out: Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string())),
        });
        tracing::dispatcher::with_default(&d, f);
        let v = got.lock().unwrap().clone();
        v
    }

    #[test]
    fn the_line_is_the_message_then_the_error() {
        let e = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe gone");
        let got = lines(LevelFilter::INFO, || {
            crate::log!(warn, peer = 3usize, error = %e, "closing the link to pid {}", 3);
            crate::log!(
                error,
                error = &e as &(dyn std::error::Error + 'static),
                "a failure"
            );
            crate::log!(info, "a note without an error");
        });
        // No runtime in unit tests: no pid.
        assert_eq!(
            got,
            [
                "cohort: closing the link to pid 3: pipe gone",
                "cohort: a failure: pipe gone",
                "cohort: a note without an error",
            ]
        );
    }

    #[test]
    fn the_level_filters_and_off_silences() {
        let emit = || {
            crate::log!(error, "e");
            crate::log!(warn, "w");
            crate::log!(info, "i");
            crate::log!(debug, "d");
        };
        assert_eq!(lines(LevelFilter::WARN, emit), ["cohort: e", "cohort: w"]);
        assert_eq!(
            lines(LevelFilter::DEBUG, emit),
            ["cohort: e", "cohort: w", "cohort: i", "cohort: d"]
        );
        assert!(lines(LevelFilter::OFF, emit).is_empty());
    }

    #[test]
    fn cohort_log_values() {
        assert_eq!(parse_level(None), Ok(LevelFilter::INFO));
        assert_eq!(parse_level(Some("  ")), Ok(LevelFilter::INFO));
        assert_eq!(parse_level(Some("debug")), Ok(LevelFilter::DEBUG));
        assert_eq!(parse_level(Some("WARN")), Ok(LevelFilter::WARN));
        assert_eq!(parse_level(Some("off")), Ok(LevelFilter::OFF));
        assert_eq!(
            parse_level(Some("loud")),
            Err(
                "COHORT_LOG=\"loud\" is not a log level (off, error, warn, info, debug, trace)"
                    .into()
            )
        );
    }
}
