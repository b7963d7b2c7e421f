//! FreeRADIUS as the Wi-Fi front of otpgate: it terminates EAP-TTLS and proxies the
//! inner PAP to an `otpgate serve`, configured with the fragments the product ships
//! in `packaging/freeradius/`.
//!
//! [`FreeRadiusFront::start`] copies the packaged `/etc/freeradius/3.0` into a
//! temporary directory, applies the fragments as an operator would (the outer site
//! `otpgate-wifi` and the inner `otpgate-inner-tunnel` as the only enabled sites, the
//! eap module `eap-otpgate` as `mods-enabled/eap`, `proxy-otpgate.conf` included from
//! `proxy.conf`), rewrites only addresses, ports, secrets and the directories of the
//! run (and runs as the calling user rather than `freerad`), puts a fresh test
//! certificate in `certs/otpgate-wifi/`, and runs `freeradius -X -d DIR`. It is ready
//! when it logs `Ready to process requests`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::binary::{self, require_binary};
use crate::error::{HarnessError, Result};
use crate::files::{write_private, write_public};
use crate::ports::{START_ATTEMPTS, free_udp_port};
use crate::process::{ServerProcess, log_tail};
use crate::tls::TestCa;

/// The packaged configuration that is copied.
const PACKAGED: &str = "/etc/freeradius/3.0";
/// What `freeradius -X` logs once every listener is open.
pub(crate) const READY_LINE: &str = "Ready to process requests";

/// A running FreeRADIUS front, killed on drop.
#[derive(Debug)]
pub struct FreeRadiusFront {
    /// Declared first: killed before `dir` is removed.
    process: ServerProcess,
    /// The outer server's authentication address (the one a NAS uses).
    auth: SocketAddr,
    /// The server certificate's CA, for the supplicant.
    ca_cert: PathBuf,
    /// The configuration copy, certificates and logs.
    dir: TempDir,
}

/// What the front needs to know.
#[derive(Debug, Clone)]
pub struct FrontOptions<'a> {
    /// `packaging/freeradius` of the product.
    pub fragments: &'a Path,
    /// The `otpgate serve` RADIUS address (the home server).
    pub otpgate: SocketAddr,
    /// The secret of otpgate's client entry for 127.0.0.1.
    pub otpgate_secret: &'a str,
    /// The secret the NAS (here `eapol_test`) shares with FreeRADIUS.
    pub nas_secret: &'a str,
}

impl FreeRadiusFront {
    /// Configures and starts the front, retrying on another port if the one picked
    /// was taken.
    pub fn start(options: &FrontOptions<'_>) -> Result<Self> {
        let freeradius = require_binary("freeradius", &["freeradius"])?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_udp_port()?;
            match Self::start_on(&freeradius, options, port) {
                Ok(front) => return Ok(front),
                Err(err) if err.is_retryable_start() => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Usage("no start attempt was made".into())))
    }

    fn start_on(freeradius: &Path, options: &FrontOptions<'_>, port: u16) -> Result<Self> {
        let (dir, conf) = packaged_copy("otpgate-freeradius-")?;
        let ca = configure(&conf, options, port)?;
        let process = spawn_ready(freeradius, &["-X"], &conf, dir.path())?;
        Ok(Self {
            process,
            auth: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            ca_cert: ca.ca_cert,
            dir,
        })
    }

    /// Where a NAS sends its Access-Requests.
    pub fn auth_addr(&self) -> SocketAddr {
        self.auth
    }

    /// The CA of the server certificate, for the supplicant's `ca_cert`.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// A scratch directory that lives as long as the front.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last part of the debug log.
    pub fn log_tail(&self) -> String {
        log_tail(self.process.log())
    }
}

/// Replaces the one occurrence of `from` in `text` by `to`; an error naming `file`
/// when it is not there exactly once (the packaged files changed).
pub(crate) fn replace_once(text: &str, from: &str, to: &str, file: &str) -> Result<String> {
    if text.matches(from).count() != 1 {
        return Err(HarnessError::Usage(format!(
            "{file}: expected `{from}` exactly once"
        )));
    }
    Ok(text.replacen(from, to, 1))
}

/// Rewrites the line of `text` whose trimmed start is `key =` to `key = value`.
pub(crate) fn set_line(text: &str, key: &str, value: &str, file: &str) -> Result<String> {
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let is_key = trimmed
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            if is_key && !found {
                found = true;
                format!("{key} = {value}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    if !found {
        return Err(HarnessError::Usage(format!("{file}: no `{key} =` line")));
    }
    Ok(lines.join("\n") + "\n")
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| HarnessError::io(format!("reading {}", path.display()), e))
}

pub(crate) fn remove_entries(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| HarnessError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| HarnessError::io(format!("listing {}", dir.display()), e))?
            .path();
        std::fs::remove_file(&path)
            .map_err(|e| HarnessError::io(format!("removing {}", path.display()), e))?;
    }
    Ok(())
}

/// Starts `freeradius` with `args` on the configuration in `conf`, its log in
/// `run`, and waits until it says it is ready to process requests.
pub(crate) fn spawn_ready(
    freeradius: &Path,
    args: &[&str],
    conf: &Path,
    run: &Path,
) -> Result<ServerProcess> {
    let log = run.join("freeradius.log");
    let mut command = Command::new(freeradius);
    command.args(args).arg("-d").arg(conf);
    let mut process = ServerProcess::spawn("freeradius", command, &log)?;
    process
        .wait_ready(|| std::fs::read_to_string(&log).is_ok_and(|text| text.contains(READY_LINE)))?;
    Ok(process)
}

/// A temporary directory (named with `prefix`) holding `raddb/`, a copy of the
/// packaged configuration that runs from there: [`own_copy`] has been applied.
pub(crate) fn packaged_copy(prefix: &str) -> Result<(TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
    let conf = dir.path().join("raddb");
    binary::run(Command::new("cp").arg("-a").arg(PACKAGED).arg(&conf), None)?;
    own_copy(&conf, dir.path())?;
    Ok((dir, conf))
}

/// Points the copy's `radiusd.conf` at itself and this run's log and run directories
/// (under `run`), and makes it run as the calling user rather than `freerad`.
fn own_copy(conf: &Path, run: &Path) -> Result<()> {
    let radiusd = conf.join("radiusd.conf");
    let mut text = read(&radiusd)?;
    for (key, value) in [
        ("raddbdir", conf.display().to_string()),
        ("logdir", run.join("log").display().to_string()),
        ("run_dir", run.join("run").display().to_string()),
    ] {
        text = set_line(&text, key, &value, "radiusd.conf")?;
    }
    text = replace_once(&text, "user = freerad", "# user = freerad", "radiusd.conf")?;
    text = replace_once(
        &text,
        "group = freerad",
        "# group = freerad",
        "radiusd.conf",
    )?;
    write_public(&radiusd, text.as_bytes())?;
    for sub in ["log", "run"] {
        let path = run.join(sub);
        std::fs::create_dir_all(&path)
            .map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
    }

    Ok(())
}

/// Applies the fragments to the copy in `conf`; returns the test certificates.
fn configure(conf: &Path, options: &FrontOptions<'_>, port: u16) -> Result<TestCa> {
    let fragments = options.fragments;

    // The sites: only the otpgate ones, the outer one on this run's port.
    remove_entries(&conf.join("sites-enabled"))?;
    let outer = read(&fragments.join("sites-available/otpgate-wifi"))?;
    let outer = replace_once(&outer, "ipaddr = *", "ipaddr = 127.0.0.1", "otpgate-wifi")?;
    let outer = replace_once(
        &outer,
        "port = 1812",
        &format!("port = {port}"),
        "otpgate-wifi",
    )?;
    let inner = read(&fragments.join("sites-available/otpgate-inner-tunnel"))?;
    for (name, text) in [("otpgate-wifi", &outer), ("otpgate-inner-tunnel", &inner)] {
        write_public(&conf.join("sites-available").join(name), text.as_bytes())?;
        write_public(&conf.join("sites-enabled").join(name), text.as_bytes())?;
    }

    // The eap module, and its certificate.
    let eap = read(&fragments.join("mods-available/eap-otpgate"))?;
    let enabled = conf.join("mods-enabled/eap");
    std::fs::remove_file(&enabled)
        .map_err(|e| HarnessError::io(format!("removing {}", enabled.display()), e))?;
    write_public(&conf.join("mods-available/eap-otpgate"), eap.as_bytes())?;
    write_public(&enabled, eap.as_bytes())?;
    let certs = conf.join("certs/otpgate-wifi");
    std::fs::create_dir_all(&certs)
        .map_err(|e| HarnessError::io(format!("creating {}", certs.display()), e))?;
    let ca = TestCa::create(&certs)?;

    // The home server: this otpgate.
    let proxy = read(&fragments.join("proxy-otpgate.conf"))?;
    let proxy = replace_once(
        &proxy,
        "ipaddr = 192.0.2.10",
        &format!("ipaddr = {}", options.otpgate.ip()),
        "proxy-otpgate.conf",
    )?;
    let proxy = replace_once(
        &proxy,
        "port = 1812",
        &format!("port = {}", options.otpgate.port()),
        "proxy-otpgate.conf",
    )?;
    let proxy = replace_once(
        &proxy,
        "\"change-me-the-secret-of-otpgate-client-entry\"",
        &format!("\"{}\"", options.otpgate_secret),
        "proxy-otpgate.conf",
    )?;
    write_private(&conf.join("proxy-otpgate.conf"), proxy.as_bytes())?;
    let main_proxy = conf.join("proxy.conf");
    let text = read(&main_proxy)? + "\n$INCLUDE ${confdir}/proxy-otpgate.conf\n";
    write_public(&main_proxy, text.as_bytes())?;

    // The NAS: eapol_test on loopback.
    let clients = format!(
        "client eapol-test {{\n\tipaddr = 127.0.0.1\n\tsecret = \"{}\"\n\
         \trequire_message_authenticator = yes\n}}\n",
        options.nas_secret
    );
    write_private(&conf.join("clients.conf"), clients.as_bytes())?;
    Ok(ca)
}
