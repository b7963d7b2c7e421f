//! Where the log goes, and in which form.
//!
//! - **journald, natively**, when systemd started the process with stderr connected to
//!   the journal: systemd then sets `JOURNAL_STREAM` to the device and inode of that
//!   stream (`DEV:INO`, decimal), and when they match stderr's, each event goes to the
//!   journal's native socket with a priority for its level (`journalctl -p err` finds
//!   the errors) and its fields as journal fields, prefixed `OTPGATE_` (an audit
//!   record's `audit_user` becomes `OTPGATE_AUDIT_USER`).
//! - **plain text** (no escape codes) on any other stderr that is not a terminal: a
//!   pipe, a file, a stream systemd redirected elsewhere.
//! - **colour** only on a terminal.
//!
//! Fields named `audit_*` exist for the journal: the text forms leave them out, as the
//! audit record's message already holds all of them as one JSON line.

use std::fmt;
use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The prefix of journal fields made from event fields.
const JOURNAL_FIELD_PREFIX: &str = "OTPGATE";
/// Event fields with this prefix are left out of the text forms.
const JOURNAL_ONLY_PREFIX: &str = "audit_";

/// The form of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The journal's native protocol.
    Journald,
    /// Text without escape codes.
    Plain,
    /// Text with colours, for a terminal.
    Colour,
}

/// Chooses the sink from `JOURNAL_STREAM` (if set), stderr's device and inode (if it
/// could be read) and whether stderr is a terminal.
pub fn choose(journal_stream: Option<&str>, stderr: Option<(u64, u64)>, terminal: bool) -> Sink {
    let on_journal = match (journal_stream.and_then(parse_journal_stream), stderr) {
        (Some(expected), Some(actual)) => expected == actual,
        _ => false,
    };
    if on_journal {
        Sink::Journald
    } else if terminal {
        Sink::Colour
    } else {
        Sink::Plain
    }
}

/// Parses `DEV:INO` as systemd writes it (two decimal numbers).
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The device and inode of the process's stderr.
fn stderr_identity() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Installs the global subscriber: `filter` decides what is logged, the environment
/// and stderr decide where (see the module documentation).
pub fn init(filter: EnvFilter) {
    let sink = choose(
        std::env::var("JOURNAL_STREAM").ok().as_deref(),
        stderr_identity(),
        std::io::stderr().is_terminal(),
    );
    let layer = match sink {
        Sink::Journald => match tracing_journald::layer() {
            Ok(journal) => journal
                .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.to_owned()))
                .with_syslog_identifier("otpgate".to_owned())
                .boxed(),
            // The journal's socket is not there (e.g. a stream handed on to a
            // container): text is still read by journald from stderr.
            Err(_) => text(false),
        },
        Sink::Plain => text(false),
        Sink::Colour => text(true),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .init();
}

fn text<S>(colour: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .fmt_fields(TextFields)
        .boxed()
}

/// The default field format, without the journal-only fields.
struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = WithoutJournalOnly(DefaultVisitor::new(writer, true));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

/// Passes every field but the journal-only ones on to the default visitor.
struct WithoutJournalOnly<'a>(DefaultVisitor<'a>);

fn journal_only(field: &Field) -> bool {
    field.name().starts_with(JOURNAL_ONLY_PREFIX)
}

impl Visit for WithoutJournalOnly<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if !journal_only(field) {
            self.0.record_i64(field, value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if !journal_only(field) {
            self.0.record_u64(field, value);
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if !journal_only(field) {
            self.0.record_bool(field, value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if !journal_only(field) {
            self.0.record_str(field, value);
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !journal_only(field) {
            self.0.record_error(field, value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !journal_only(field) {
            self.0.record_debug(field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_only_when_journal_stream_names_stderr() {
        let stderr = Some((64769, 123_456));
        assert_eq!(choose(Some("64769:123456"), stderr, false), Sink::Journald);
        assert_eq!(choose(Some("64769:123456\n"), stderr, true), Sink::Journald);
        // systemd set it for a stream that is no longer stderr (redirected, inherited
        // by a child whose stderr is a pipe): text.
        assert_eq!(choose(Some("64769:999"), stderr, false), Sink::Plain);
        assert_eq!(choose(Some("1:123456"), stderr, true), Sink::Colour);
    }

    #[test]
    fn a_malformed_or_missing_journal_stream_is_text() {
        let stderr = Some((1, 2));
        for bad in ["", "1", "1:", ":2", "1:2:3", "a:b", "-1:2", "1 :2"] {
            assert_eq!(choose(Some(bad), stderr, false), Sink::Plain, "{bad:?}");
        }
        assert_eq!(choose(None, stderr, false), Sink::Plain);
        assert_eq!(choose(Some("1:2"), None, false), Sink::Plain);
    }

    #[test]
    fn colour_only_on_a_terminal() {
        assert_eq!(choose(None, None, true), Sink::Colour);
        assert_eq!(choose(None, None, false), Sink::Plain);
    }
}
