//! A throwaway SMTP sink: aiosmtpd with its Mailbox handler, storing every message it
//! accepts in a maildir that [`SmtpSink::messages`] reads.
//!
//! aiosmtpd writes the message into `maildir/new/` before it answers 250 to DATA, so a
//! test can read the mail as soon as the product's send has returned; no waiting.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::binary::require_python_modules;
use crate::error::{HarnessError, Result};
use crate::mail::Mail;
use crate::ports::start_on_free_port;
use crate::process::ServerProcess;
use crate::tls::TestCa;

/// The Debian package that provides aiosmtpd for `/usr/bin/python3`.
const PACKAGES: &[&str] = &["python3-aiosmtpd"];

/// How the sink protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    /// Plain SMTP.
    None,
    /// STARTTLS offered and required before mail is accepted (aiosmtpd `--tlscert`).
    StartTls,
    /// TLS from the first byte (aiosmtpd `--smtpscert`).
    Smtps,
}

/// A running aiosmtpd, killed and reaped on drop.
#[derive(Debug)]
pub struct SmtpSink {
    /// The server; `None` while stopped. Declared first: killed before `dir` goes.
    process: Option<ServerProcess>,
    /// The loopback port, kept across restarts.
    port: u16,
    /// Its TLS mode, and the CA whose server certificate it presents.
    tls: SinkTls,
    /// The test CA, for [`SinkTls::StartTls`] and [`SinkTls::Smtps`].
    ca: Option<TestCa>,
    /// `/usr/bin/python3`.
    python: PathBuf,
    /// Holds `maildir/` and `smtp.log`.
    dir: TempDir,
}

impl SmtpSink {
    /// Starts `/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:P -c
    /// aiosmtpd.handlers.Mailbox DIR/maildir` and waits for its 220 greeting.
    pub fn start() -> Result<Self> {
        Self::start_with(SinkTls::None)
    }

    /// Starts a sink that speaks `tls`, with a certificate for `127.0.0.1` from a fresh
    /// test CA ([`SmtpSink::ca`]).
    pub fn start_with(tls: SinkTls) -> Result<Self> {
        let python = require_python_modules(&["aiosmtpd"], PACKAGES)?;
        let dir = tempfile::Builder::new()
            .prefix("otpgate-smtp-")
            .tempdir()
            .map_err(|err| HarnessError::io("creating a temporary directory", err))?;
        let ca = match tls {
            SinkTls::None => None,
            SinkTls::StartTls | SinkTls::Smtps => Some(TestCa::create(dir.path())?),
        };
        let (port, process) = start_on_free_port(|port| {
            Ok((port, spawn(&python, dir.path(), port, tls, ca.as_ref())?))
        })?;
        Ok(Self {
            process: Some(process),
            port,
            tls,
            ca,
            python,
            dir,
        })
    }

    /// The URL otpgate's `[smtp] url` takes: `smtp://127.0.0.1:PORT`, with
    /// `?tls=required` for STARTTLS, or `smtps://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match self.tls {
            SinkTls::None => format!("smtp://127.0.0.1:{}", self.port),
            SinkTls::StartTls => format!("smtp://127.0.0.1:{}?tls=required", self.port),
            SinkTls::Smtps => format!("smtps://127.0.0.1:{}", self.port),
        }
    }

    /// The test CA that signed the sink's certificate (`None` for plain SMTP).
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// The port (the same after [`SmtpSink::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The maildir the messages are stored in.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Every message received so far (also across restarts), oldest first, read from
    /// `maildir/new/` and `maildir/cur/` at each call.
    pub fn messages(&self) -> Result<Vec<Mail>> {
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let dir = self.maildir().join(sub);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(HarnessError::io(format!("reading {}", dir.display()), err));
                }
            };
            for entry in entries {
                let entry = entry
                    .map_err(|err| HarnessError::io(format!("reading {}", dir.display()), err))?;
                let modified = entry.metadata().and_then(|meta| meta.modified()).ok();
                files.push((modified, entry.file_name(), entry.path()));
            }
        }
        // Maildir names start with the delivery time, so name order breaks mtime ties.
        files.sort();
        files
            .into_iter()
            .map(|(_, _, path)| {
                let raw = std::fs::read(&path)
                    .map_err(|err| HarnessError::io(format!("reading {}", path.display()), err))?;
                Ok(Mail::parse(&raw))
            })
            .collect()
    }

    /// The messages whose envelope recipients include `address` (case-insensitive).
    pub fn mails_to(&self, address: &str) -> Result<Vec<Mail>> {
        Ok(self
            .messages()?
            .into_iter()
            .filter(|mail| mail.to.iter().any(|to| to.eq_ignore_ascii_case(address)))
            .collect())
    }

    /// Kills the sink (an outage). Stored messages stay.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the sink again on the same port, after [`SmtpSink::stop`].
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Err(HarnessError::Usage(
                "the SMTP sink is already running".into(),
            ));
        }
        self.process = Some(spawn(
            &self.python,
            self.dir.path(),
            self.port,
            self.tls,
            self.ca.as_ref(),
        )?);
        Ok(())
    }

    /// The temporary directory (holds `smtp.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Starts aiosmtpd on `port` and waits until it is ready: its greeting, or for SMTPS
/// (whose greeting comes after the TLS handshake) an accepted connection.
fn spawn(
    python: &Path,
    dir: &Path,
    port: u16,
    tls: SinkTls,
    ca: Option<&TestCa>,
) -> Result<ServerProcess> {
    let mut command = Command::new(python);
    command.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
    let flags = match tls {
        SinkTls::None => None,
        SinkTls::StartTls => Some(["--tlscert", "--tlskey"]),
        SinkTls::Smtps => Some(["--smtpscert", "--smtpskey"]),
    };
    if let Some([cert_flag, key_flag]) = flags {
        let ca = ca.ok_or_else(|| HarnessError::Usage("a TLS sink needs its CA".into()))?;
        command
            .arg(cert_flag)
            .arg(&ca.server_cert)
            .arg(key_flag)
            .arg(&ca.server_key);
    }
    command
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir.join("maildir"));
    let mut process = ServerProcess::spawn("aiosmtpd", command, &dir.join("smtp.log"))?;
    match tls {
        SinkTls::Smtps => process.wait_ready(|| TcpStream::connect(("127.0.0.1", port)).is_ok())?,
        SinkTls::None | SinkTls::StartTls => process.wait_ready(|| greets(port))?,
    }
    Ok(process)
}

/// Whether an SMTP server on `port` sends a 220 greeting (then says QUIT).
fn greets(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let greeted = BufReader::new(&stream).read_line(&mut line).is_ok() && line.starts_with("220");
    let _ = std::io::Write::write_all(&mut &stream, b"QUIT\r\n");
    greeted
}
