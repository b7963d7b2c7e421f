//! A server child process that is killed and reaped on drop, and readiness probing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary::describe;
use crate::error::{HarnessError, Result};

/// How long a server may take to answer its first probe.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between two probes. Readiness is decided by the probe answering, never by
/// this pause; it only keeps the poll from spinning on a 2-core machine.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// How much of a server's log goes into an error message.
const LOG_TAIL_BYTES: u64 = 4096;

/// A running server. Dropping it kills the process (SIGKILL) and reaps it, also while
/// a test panics.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    /// Which server, for messages.
    name: String,
    /// The child; killed and waited for on drop.
    child: Child,
    /// Where its stdout and stderr go (appended across restarts).
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command` with stdin closed and stdout/stderr appended to `log`.
    pub(crate) fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|err| HarnessError::io(format!("opening {}", log.display()), err))
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|err| HarnessError::io(format!("starting `{}`", describe(&command)), err))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        })
    }

    /// Probes until `probe` answers true, the process exits
    /// ([`HarnessError::ServerExited`]) or [`READY_TIMEOUT`] passes
    /// ([`HarnessError::NotReady`]).
    pub(crate) fn wait_ready(&mut self, mut probe: impl FnMut() -> bool) -> Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if probe() {
                // A probe may have reached another process that took the port first;
                // ours then dies of "address in use" at about the same time.
                return self.check_alive();
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::NotReady {
                    server: self.name.clone(),
                    waited: started.elapsed(),
                    log: self.log.clone(),
                    log_tail: log_tail(&self.log),
                });
            }
            pause(PROBE_INTERVAL);
        }
    }

    /// An error if the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(HarnessError::ServerExited {
                server: self.name.clone(),
                status,
                log: self.log.clone(),
                log_tail: log_tail(&self.log),
            }),
            Err(err) => Err(HarnessError::io(format!("checking {}", self.name), err)),
        }
    }

    /// The process id (for tests that want to signal it themselves).
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub(crate) fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Errors mean it is already gone; either way, reap it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` every [`PROBE_INTERVAL`] until it is true or `timeout` passes.
/// Returns whether it became true.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if condition() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        pause(PROBE_INTERVAL);
    }
}

/// The pause between polls: the only sleep in the harness.
#[allow(
    clippy::disallowed_methods,
    reason = "poll interval between readiness probes, not synchronisation"
)]
fn pause(interval: Duration) {
    std::thread::sleep(interval);
}

/// The last few KiB of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).trim().to_owned()
}
