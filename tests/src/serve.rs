//! `otpgate serve` as a child process: started on the ports it picks (the config says
//! port 0), ready when it prints `listening on radius udp ADDR`, killed on drop.
//!
//! ```no_run
//! # use otpgate_tests::*;
//! let slapd = Slapd::start()?;
//! let redis = Redis::start()?;
//! let config = ConfigBuilder::new(&slapd)
//!     .redis(&redis)
//!     .extra(&radius_section("auto", "1s"))
//!     .write()?;
//! write_radius_secret(config.dir(), "testing123")?;
//! let server = OtpgateServe::start(config.path())?;
//! println!("RADIUS at {}", server.radius_addr());
//! # Ok::<(), HarnessError>(())
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::artifacts::otpgate_binary;
use crate::error::{HarnessError, Result};
use crate::files::write_private;
use crate::process::{ServerProcess, log_tail, wait_until};

/// The line prefix `otpgate serve` prints for each RADIUS socket.
const RADIUS_LINE: &str = "listening on radius udp ";
/// The line prefix for the metrics listener.
const METRICS_LINE: &str = "listening on metrics http ";
/// The line prefix for the portal, followed by `https ADDR` (with a certificate) or
/// `http ADDR`.
const PORTAL_LINE: &str = "listening on portal ";

/// A `[radius]` section on `127.0.0.1:0` with one client, `localhost`
/// (`127.0.0.1/32`, Message-Authenticator required), whose secret is read from
/// `radius.secret` beside the config, and `[metrics]` on `127.0.0.1:0`. Write the
/// secret with [`write_radius_secret`].
pub fn radius_section(mode: &str, reject_delay: &str) -> String {
    format!(
        "[radius]\nlisten = [\"127.0.0.1:0\"]\nmode = \"{mode}\"\nreject_delay = \"{reject_delay}\"\n\
         request_timeout = \"5s\"\n\n\
         [[radius.clients]]\nname = \"localhost\"\naddress = \"127.0.0.1/32\"\nsecret_file = \"radius.secret\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// Writes `secret` (and a newline) to `dir/radius.secret`, mode 0600.
pub fn write_radius_secret(dir: &Path, secret: &str) -> Result<PathBuf> {
    let path = dir.join("radius.secret");
    write_private(&path, format!("{secret}\n").as_bytes())?;
    Ok(path)
}

/// A running `otpgate serve`.
#[derive(Debug)]
pub struct OtpgateServe {
    process: ServerProcess,
    radius: Vec<SocketAddr>,
    metrics: Option<SocketAddr>,
    /// The portal's scheme and address.
    portal: Option<(String, SocketAddr)>,
    /// Holds the log file.
    _dir: tempfile::TempDir,
}

impl OtpgateServe {
    /// Starts `otpgate --config CONFIG serve` and waits until it has printed every
    /// `listening on` line (its RADIUS sockets, then metrics when configured).
    pub fn start(config: &Path) -> Result<Self> {
        Self::start_with_env(config, &[])
    }

    /// Like [`OtpgateServe::start`], with extra environment (e.g. `OTPGATE_LOG`).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let binary = otpgate_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("otpgate-serve-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        let log = dir.path().join("otpgate.log");
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .arg("serve")
            .env_remove("OTPGATE_CONFIG");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut process = ServerProcess::spawn("otpgate serve", command, &log)?;
        let config_text = std::fs::read_to_string(config).unwrap_or_default();
        let wants_metrics = config_text.contains("[metrics]");
        let wants_portal = config_text.contains("[portal]");
        process.wait_ready(|| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains(RADIUS_LINE)
                && (!wants_metrics || text.contains(METRICS_LINE))
                && (!wants_portal || text.contains(PORTAL_LINE))
        })?;
        let text = std::fs::read_to_string(&log)
            .map_err(|e| HarnessError::io(format!("reading {}", log.display()), e))?;
        let addrs = |prefix: &str| -> Vec<SocketAddr> {
            text.lines()
                .filter_map(|l| l.split_once(prefix))
                .filter_map(|(_, a)| a.trim().parse().ok())
                .collect()
        };
        let radius = addrs(RADIUS_LINE);
        if radius.is_empty() {
            return Err(HarnessError::Usage(format!(
                "otpgate serve printed no address: {}",
                log_tail(&log)
            )));
        }
        Ok(Self {
            process,
            radius,
            metrics: addrs(METRICS_LINE).first().copied(),
            portal: text
                .lines()
                .filter_map(|l| l.split_once(PORTAL_LINE))
                .filter_map(|(_, rest)| rest.trim().split_once(' '))
                .find_map(|(scheme, a)| Some((scheme.to_owned(), a.trim().parse().ok()?))),
            _dir: dir,
        })
    }

    /// The first RADIUS address.
    pub fn radius_addr(&self) -> SocketAddr {
        self.radius[0]
    }

    /// Every RADIUS address.
    pub fn radius_addrs(&self) -> &[SocketAddr] {
        &self.radius
    }

    /// The metrics address, when `[metrics]` is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The portal's base URL: `https://127.0.0.1:PORT` when `[portal]` has TLS files,
    /// else `http://…`.
    pub fn portal_url(&self) -> Option<String> {
        self.portal
            .as_ref()
            .map(|(scheme, a)| format!("{scheme}://{a}"))
    }

    /// What it has logged so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log()).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, …) with kill(1).
    pub fn signal(&self, name: &str) -> Result<()> {
        crate::binary::run(
            Command::new("kill")
                .arg("-s")
                .arg(name)
                .arg(self.pid().to_string()),
            None,
        )
        .map(|_| ())
    }

    /// Waits up to `timeout` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.process.try_wait();
            status.is_some()
        });
        status
    }

    /// The Prometheus text from `GET /metrics`.
    pub fn metrics(&self) -> Result<String> {
        use std::io::{Read, Write};
        let addr = self
            .metrics
            .ok_or_else(|| HarnessError::Usage("no [metrics] configured".into()))?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| HarnessError::io("connecting to metrics", e))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| HarnessError::io("metrics", e))?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .map_err(|e| HarnessError::io("writing to metrics", e))?;
        let mut body = String::new();
        stream
            .read_to_string(&mut body)
            .map_err(|e| HarnessError::io("reading metrics", e))?;
        Ok(body)
    }

    /// The value of one metric series, e.g.
    /// `otpgate_radius_dropped_total{reason="unknown_client"}`; 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(series))
            .filter_map(|rest| rest.trim().parse::<f64>().ok())
            .next()
            .unwrap_or(0.0)
    }
}
