//! PAM without touching `/etc/pam.d`: service files in a temporary directory that load
//! the freshly built `pam_otpgate.so`, run through `pamtester` (or `sshd`) with
//! `libpam_wrapper.so` preloaded.
//!
//! ```no_run
//! # use otpgate_tests::*;
//! let stack = PamStack::new()?;
//! stack.service("otp", "config=/etc/otpgate/otpgate.toml nullok")?;
//! let run = pamtester(&stack, "otp", "alice", Some("192.0.2.7"), &["123456"])?;
//! assert_eq!(run.result, PamResult::Success);
//! # Ok::<(), HarnessError>(())
//! ```

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::artifacts::{pam_direct_module, pam_module};
use crate::binary::require_binary;
use crate::error::{HarnessError, Result};

/// Where Debian keeps pam_wrapper.
const PAM_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so";
/// Debian's module directory (for pam_permit in account and session).
const SECURITY_DIR: &str = "/usr/lib/x86_64-linux-gnu/security";

/// Which module a stack's services load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamModule {
    /// `pam_otpgate.so`: server mode only.
    Server,
    /// `pam_otpgate_direct.so`: the same module with the core, for direct mode.
    Direct,
}

/// A directory of PAM service files.
#[derive(Debug)]
pub struct PamStack {
    dir: tempfile::TempDir,
    module: PamModule,
}

impl PamStack {
    /// An empty service directory whose services load the server-mode module.
    pub fn new() -> Result<Self> {
        Self::with_module(PamModule::Server)
    }

    /// An empty service directory whose services load `module`.
    pub fn with_module(module: PamModule) -> Result<Self> {
        if !Path::new(PAM_WRAPPER).exists() {
            return Err(HarnessError::Usage(format!(
                "{PAM_WRAPPER} is missing: apt-get install libpam-wrapper"
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("otpgate-pam.d-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        Ok(Self { dir, module })
    }

    /// The directory (`PAM_WRAPPER_SERVICE_DIR`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes service `name`: `auth required pam_otpgate.so ARGS`, then pam_permit for
    /// account and session (sshd runs those too).
    pub fn service(&self, name: &str, module_args: &str) -> Result<()> {
        self.service_with_control(name, "required", module_args, "")
    }

    /// Writes service `name`: `auth CONTROL pam_otpgate.so ARGS`, then the auth lines
    /// `after` (full lines, `SECURITY_DIR` spelled out by the caller through
    /// [`security_module`]), then pam_permit for account and session.
    pub fn service_with_control(
        &self,
        name: &str,
        control: &str,
        module_args: &str,
        after: &str,
    ) -> Result<()> {
        let module = match self.module {
            PamModule::Server => pam_module()?,
            PamModule::Direct => pam_direct_module()?,
        };
        let text = format!(
            "auth {control} {} {module_args}\n{after}account required {SECURITY_DIR}/pam_permit.so\n\
             session required {SECURITY_DIR}/pam_permit.so\n",
            module.display()
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    /// Writes service `name` with the given `auth` lines as they are, then pam_permit
    /// for account and session.
    pub fn service_with_auth(&self, name: &str, auth: &str) -> Result<()> {
        let text = format!(
            "{}\naccount required {SECURITY_DIR}/pam_permit.so\n\
             session required {SECURITY_DIR}/pam_permit.so\n",
            auth.trim_end()
        );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    /// The environment that makes libpam read this directory.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", PAM_WRAPPER.to_string()),
            ("PAM_WRAPPER", "1".to_string()),
            (
                "PAM_WRAPPER_SERVICE_DIR",
                self.dir.path().to_string_lossy().into_owned(),
            ),
        ]
    }
}

/// Debian's `pam_radius_auth.so` (package libpam-radius-auth), wherever the package
/// put it.
pub fn pam_radius_auth_module() -> Result<std::path::PathBuf> {
    ["/lib", "/usr/lib"]
        .iter()
        .flat_map(|root| {
            [
                format!("{root}/x86_64-linux-gnu/security/pam_radius_auth.so"),
                format!("{root}/aarch64-linux-gnu/security/pam_radius_auth.so"),
                format!("{root}/security/pam_radius_auth.so"),
            ]
        })
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| HarnessError::MissingBinary {
            name: "pam_radius_auth.so".into(),
            packages: "libpam-radius-auth".into(),
        })
}

/// pam_wrapper (1.1) gives each process that starts PAM a runtime directory
/// `/tmp/pam.X`: it looks for a letter whose directory does not exist yet, then
/// creates it, carrying on if it already exists. Two processes starting PAM at once
/// can take the same directory, and the first to exit removes it under the other,
/// whose next `pam_start` then reads the system's `/etc/pam.d` instead of the test's
/// stack. So this process runs one PAM conversation at a time (pamtester here, the ssh
/// logins in `sshd`); each holds its turn until it ends.
static PAM_WRAPPER_TURN: Mutex<()> = Mutex::new(());

/// Waits for this process's turn to run a program under pam_wrapper.
pub(crate) fn pam_wrapper_turn() -> MutexGuard<'static, ()> {
    // A test that panicked while holding the turn has ended its program: go on.
    PAM_WRAPPER_TURN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The path of one of the system's modules (`pam_permit.so`, `pam_deny.so`).
pub fn security_module(name: &str) -> String {
    format!("{SECURITY_DIR}/{name}")
}

/// What `pamtester` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamResult {
    Success,
    AuthErr,
    UserUnknown,
    MaxTries,
    AuthInfoUnavail,
    ServiceErr,
    /// Some other message (see the output).
    Other,
}

/// One `pamtester` run.
#[derive(Debug)]
pub struct PamRun {
    pub result: PamResult,
    /// Everything it printed (prompts, information lines, the result).
    pub output: String,
}

impl PamRun {
    /// How many times the prompt `prompt` was shown.
    pub fn prompts(&self, prompt: &str) -> usize {
        self.output.matches(prompt).count()
    }
}

/// The result named in pamtester's last line (`pam_strerror` text).
fn result_of(output: &str) -> PamResult {
    const KNOWN: [(&str, PamResult); 6] = [
        ("successfully authenticated", PamResult::Success),
        ("Authentication failure", PamResult::AuthErr),
        ("User not known", PamResult::UserUnknown),
        ("maximum number of retries", PamResult::MaxTries),
        (
            "cannot retrieve authentication info",
            PamResult::AuthInfoUnavail,
        ),
        ("Error in service module", PamResult::ServiceErr),
    ];
    let last = output
        .lines()
        .rev()
        .find(|l| l.contains("pamtester:"))
        .unwrap_or_default()
        .to_lowercase();
    KNOWN
        .iter()
        .find(|(text, _)| last.contains(&text.to_lowercase()))
        .map_or(PamResult::Other, |(_, r)| *r)
}

/// Starts `pamtester [-I rhost=HOST] SERVICE USER authenticate` under pam_wrapper with
/// piped stdin; answer its prompts with [`PamSession::answer`].
pub fn spawn_pamtester(
    stack: &PamStack,
    service: &str,
    user: &str,
    rhost: Option<&str>,
) -> Result<PamSession> {
    let pamtester = require_binary("pamtester", &["pamtester"])?;
    let turn = pam_wrapper_turn();
    let mut command = Command::new(pamtester);
    if let Some(host) = rhost {
        command.arg("-I").arg(format!("rhost={host}"));
    }
    command
        .args([service, user, "authenticate"])
        .envs(stack.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command
        .spawn()
        .map_err(|e| HarnessError::io("starting pamtester", e))?;
    Ok(PamSession { child, _turn: turn })
}

/// A running pamtester.
#[derive(Debug)]
pub struct PamSession {
    child: Child,
    /// Held until pamtester has exited (see [`pam_wrapper_turn`]).
    _turn: MutexGuard<'static, ()>,
}

impl PamSession {
    /// Writes one line to its stdin (read at the next prompt).
    pub fn answer(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| HarnessError::Usage("pamtester stdin closed".into()))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| HarnessError::io("writing to pamtester", e))
    }

    /// Closes stdin and waits for the result.
    pub fn finish(mut self) -> Result<PamRun> {
        drop(self.child.stdin.take());
        let out = self
            .child
            .wait_with_output()
            .map_err(|e| HarnessError::io("waiting for pamtester", e))?;
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let result = result_of(&output);
        if (result == PamResult::Success) != out.status.success() {
            return Err(HarnessError::Usage(format!(
                "pamtester exit {:?} disagrees with its output:\n{output}",
                out.status
            )));
        }
        Ok(PamRun { result, output })
    }
}

/// Runs pamtester with `answers` written one line each, and waits for it.
pub fn pamtester(
    stack: &PamStack,
    service: &str,
    user: &str,
    rhost: Option<&str>,
    answers: &[&str],
) -> Result<PamRun> {
    let mut session = spawn_pamtester(stack, service, user, rhost)?;
    for a in answers {
        // A closed pipe means pamtester finished without reading this answer.
        if session.answer(a).is_err() {
            break;
        }
    }
    session.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_read_from_the_last_line() {
        assert_eq!(
            result_of("One-time password: pamtester: successfully authenticated"),
            PamResult::Success
        );
        assert_eq!(
            result_of("pamtester: Have exhausted maximum number of retries for service."),
            PamResult::MaxTries
        );
        assert_eq!(
            result_of("pamtester: Authentication service cannot retrieve authentication info"),
            PamResult::AuthInfoUnavail
        );
        assert_eq!(
            result_of("pamtester: User not known to the underlying authentication module"),
            PamResult::UserUnknown
        );
        assert_eq!(result_of("pamtester: whatever"), PamResult::Other);
    }
}

/// The shared secret between the PAM host and `otpgate serve` in [`PamBackends`].
pub const PAM_RADIUS_SECRET: &str = "a-long-shared-secret-for-pam-hosts";

/// Everything the module talks to, for tests and benchmarks outside the integration
/// binary: slapd, Redis, an SMTP sink, `otpgate serve` whose client entry for
/// 127.0.0.1 vouches for passwords (`password_checked_by_client`), tells reasons and
/// trusts hosts by Calling-Station-Id; a server-mode `[pam]` config for it and a
/// direct-mode config (mode 0600) on the same Redis and master key.
#[derive(Debug)]
pub struct PamBackends {
    pub slapd: crate::Slapd,
    pub redis: crate::Redis,
    pub smtp: crate::SmtpSink,
    /// The server's config (also for the CLI).
    pub config: crate::TestConfig,
    pub server: crate::OtpgateServe,
    /// `[pam] backend = "server"` pointing at `server`.
    pub server_mode_config: std::path::PathBuf,
    /// The server's config plus `[pam] backend = "direct"`, mode 0600.
    pub direct_mode_config: std::path::PathBuf,
}

impl PamBackends {
    /// Starts the servers; `extra` is appended to the server's (and direct mode's)
    /// config, e.g. a `[lockout]` section.
    pub fn start(extra: &str) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let slapd = crate::Slapd::start()?;
        let redis = crate::Redis::start()?;
        let smtp = crate::SmtpSink::start()?;
        let config = crate::ConfigBuilder::new(&slapd)
            .redis(&redis)
            .smtp(&smtp)
            .set("totp", "skew_steps", "5")
            .extra(extra)
            .extra(
                "[radius]\nlisten = [\"127.0.0.1:0\"]\nreject_delay = \"10ms\"\n\n\
                 [[radius.clients]]\nname = \"pam-host\"\naddress = \"127.0.0.1/32\"\n\
                 secret_file = \"radius.secret\"\npassword_checked_by_client = true\n\
                 reject_reasons = true\ntrust_calling_station = true\n",
            )
            .write()?;
        crate::write_radius_secret(config.dir(), PAM_RADIUS_SECRET)?;
        let server = crate::OtpgateServe::start(config.path())?;
        let write = |path: &Path, text: &str, mode: u32| -> Result<()> {
            std::fs::write(path, text)
                .and_then(|()| {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                })
                .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
        };
        let server_mode_config = config.dir().join("pam-server.toml");
        write(
            &server_mode_config,
            &format!(
                "[pam]\nbackend = \"server\"\nservers = [\"{}\"]\nsecret_file = \"radius.secret\"\n\
                 timeout = \"2s\"\nretries = 1\n",
                server.radius_addr()
            ),
            0o644,
        )?;
        let direct_mode_config = config.dir().join("pam-direct.toml");
        write(
            &direct_mode_config,
            &format!("{}\n[pam]\nbackend = \"direct\"\n", config.contents()?),
            0o600,
        )?;
        Ok(Self {
            slapd,
            redis,
            smtp,
            config,
            server,
            server_mode_config,
            direct_mode_config,
        })
    }

    /// `otpgate --config CONFIG ARGS…`, which must succeed; its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = crate::binary::run(
            Command::new(crate::otpgate_binary()?)
                .arg("--config")
                .arg(self.config.path())
                .args(args)
                .env_remove("OTPGATE_CONFIG"),
            None,
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Enrolls `user` (`otpgate user enroll --json`) and confirms it with
    /// `code_for(secret_base32)`; returns the base32 secret.
    pub fn enroll(&self, user: &str, code_for: impl Fn(&str) -> String) -> Result<String> {
        let json = self.cli(&["user", "enroll", user, "--json"])?;
        let secret = json
            .split_once("\"secret\":\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(s, _)| s.to_string())
            .ok_or_else(|| HarnessError::Usage(format!("no secret in {json}")))?;
        self.cli(&["user", "confirm", user, &code_for(&secret)])?;
        Ok(secret)
    }
}
