//! The one error type of the harness.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// What went wrong while starting, probing or driving a test server.
///
/// Every variant is a test failure: the harness never skips a test because a server is
/// missing or broken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A server or client binary is not installed. Install the named packages (the
    /// message gives the command) or run `./scripts/install-test-deps`.
    #[error(
        "{name} not found: run `sudo apt-get install -y {packages}` (or ./scripts/install-test-deps)"
    )]
    MissingBinary {
        /// The binary (or Python module) that was looked for.
        name: String,
        /// The Debian packages that provide it, space separated.
        packages: String,
    },

    /// A file or socket operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A helper command (slapadd, ldapadd, redis-cli, …) exited with an error.
    #[error("`{command}` failed ({status}): {output}")]
    CommandFailed {
        /// The command line, for the reader.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its stderr and stdout, trimmed.
        output: String,
    },

    /// A server process exited before it answered its readiness probe (often: its port
    /// was taken; the harness retries those on another port).
    #[error("{server} exited before it was ready ({status}); log {log}:\n{log_tail}")]
    ServerExited {
        /// Which server.
        server: String,
        /// How it ended.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        log_tail: String,
    },

    /// A server process stayed alive but did not answer its probe before the deadline.
    #[error("{server} did not answer within {waited:?}; log {log}:\n{log_tail}")]
    NotReady {
        /// Which server.
        server: String,
        /// How long the harness waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of that log.
        log_tail: String,
    },

    /// A server answered something the harness did not expect.
    #[error("{0}")]
    Protocol(String),

    /// Something the harness waited for (e.g. a fault proxy holding data) did not happen
    /// before the deadline. The message says what.
    #[error("{0}")]
    Timeout(String),

    /// The harness was asked for something it cannot do (a method called in the wrong
    /// state, a bad argument). The message says what.
    #[error("{0}")]
    Usage(String),
}

impl HarnessError {
    /// Wraps an I/O error with what the harness was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// True when starting again on another port may help.
    pub(crate) fn is_retryable_start(&self) -> bool {
        matches!(self, Self::ServerExited { .. })
    }
}

/// The harness's result type.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
