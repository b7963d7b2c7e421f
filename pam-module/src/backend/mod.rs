//! The two ways to reach the core (SPEC §6), behind one [`Backend`] trait so the login
//! logic is the same for both and can be tested with a fake:
//!
//! - [`server`]: a RADIUS client of `otpgate serve` (plain blocking UDP sockets with
//!   timeouts, closed before the call returns);
//! - `direct` (cargo feature `direct`, shipped as `pam_otpgate_direct.so`): the core
//!   itself, on a current-thread runtime created and dropped inside the call, with Redis
//!   as the store. Without the feature the module links no core, no tokio and no LDAP,
//!   Redis or SMTP client, and refuses `backend = "direct"` (PAM_AUTHINFO_UNAVAIL).
//!
//! [`open`] loads the module's configuration (root-owned; for direct mode also not
//! readable by others), never from the environment, and builds the backend.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use otpgate_config::{Config, LoadOptions, PamBackend};
use zeroize::Zeroizing;

use crate::args::Args;

#[cfg(feature = "direct")]
pub mod direct;
pub mod server;

/// One login as the backend sees it.
pub struct Login {
    /// The canonical user name.
    pub user: String,
    /// The password, in `mode=password+otp`; `None` when an earlier module checked it.
    pub password: Option<Zeroizing<Vec<u8>>>,
    /// The remote host, when `remember` is set and the application gave one.
    pub remember_host: Option<String>,
    /// `nullok`: a user with no second factor passes.
    pub nullok: bool,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("remember_host", &self.remember_host)
            .field("nullok", &self.nullok)
            .finish()
    }
}

/// What happens next in a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let the user in; `how` is for the log ("totp", "trusted-device", "exempt", …);
    /// `notice` is shown first (e.g. where to set up a second factor before a deadline).
    LetIn { how: String, notice: Option<String> },
    /// `nullok` and the user has no second factor: PAM_IGNORE in `mode=otp-only` (the
    /// module has no say, so the stack decides), PAM_SUCCESS in `mode=password+otp`
    /// (the module checked the password itself).
    NoSecondFactor,
    /// Ask for a code, showing `message` first if there is one (a mailed-code notice,
    /// or, for an enrollment at the first login, the QR code and the secret).
    NeedCode { message: Option<String> },
    /// The answer is no.
    Refused(Refused),
}

/// Why a login was refused, as far as PAM distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A wrong password or code, a replay, a not activated account: PAM_AUTH_ERR.
    Denied(String),
    /// No such user: PAM_USER_UNKNOWN.
    UnknownUser,
    /// Locked out: PAM_MAXTRIES.
    Locked,
    /// No second factor and no `nullok`: PAM_AUTH_ERR; `message` says where to set
    /// one up (the portal's URL), shown to the user.
    NotEnrolled { message: Option<String> },
}

/// A backend failure: PAM_AUTHINFO_UNAVAIL, never a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The configuration is unreadable, invalid or unsafe.
    #[error("configuration: {0}")]
    Config(String),
    /// A backend (RADIUS servers, LDAP, Redis, SMTP) did not answer or failed.
    #[error("{0}")]
    Unavailable(String),
}

/// A way to the core for one call.
pub trait Backend {
    /// Begins the login: checks the password (if any), the lock, a trusted host and
    /// enrollment; says whether a code is needed.
    fn begin(&mut self, login: &Login) -> Result<Outcome, BackendError>;
    /// The user's answer at the code prompt: a code, or the email keyword (which mails
    /// a code, or queues a helpdesk request, and asks again).
    fn answer(&mut self, login: &Login, answer: &[u8]) -> Result<Outcome, BackendError>;
}

/// Loads the configuration named by the arguments and builds its backend.
///
/// # Errors
///
/// [`BackendError::Config`] when the file is missing, invalid, not root-owned,
/// writable by others, has no `[pam]`, or (direct mode) readable by others.
pub fn open(args: &Args) -> Result<Box<dyn Backend>, BackendError> {
    let config = load(&args.config)?;
    match config.pam.as_ref().map(|p| p.backend) {
        Some(PamBackend::Server) => Ok(Box::new(server::ServerBackend::new(&config)?)),
        #[cfg(feature = "direct")]
        Some(PamBackend::Direct) => Ok(Box::new(direct::DirectBackend::open(&config)?)),
        #[cfg(not(feature = "direct"))]
        Some(PamBackend::Direct) => Err(BackendError::Config(format!(
            "{}: backend = \"direct\" needs pam_otpgate_direct.so; this module is the \
             server-mode one",
            args.config.display()
        ))),
        None => Err(BackendError::Config(format!(
            "{}: no [pam] section",
            args.config.display()
        ))),
    }
}

/// Reads the configuration after checking who may have changed or read it.
fn load(path: &Path) -> Result<Config, BackendError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| BackendError::Config(format!("{}: {e}", path.display())))?;
    check_owner(path, meta.uid(), meta.mode(), false)?;
    let options = LoadOptions {
        allow_env_secrets: false,
        check_permissions: true,
    };
    let config = otpgate_config::load_with(path, &options)
        .map_err(|e| BackendError::Config(e.to_string()))?;
    if config.pam.as_ref().map(|p| p.backend) == Some(PamBackend::Direct) {
        check_owner(path, meta.uid(), meta.mode(), true)?;
    }
    Ok(config)
}

/// The file must be owned by root and writable by no one else; with `private`, also
/// readable by no one else (direct mode: it leads to the store and the master key).
fn check_owner(path: &Path, uid: u32, mode: u32, private: bool) -> Result<(), BackendError> {
    if uid != 0 {
        return Err(BackendError::Config(format!(
            "{} is not owned by root",
            path.display()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(BackendError::Config(format!(
            "{} is writable by group or others",
            path.display()
        )));
    }
    if private && mode & 0o004 != 0 {
        return Err(BackendError::Config(format!(
            "{} is readable by others; direct mode needs mode 0600 or 0640",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_and_modes() {
        let p = Path::new("/etc/otpgate/otpgate.toml");
        assert!(check_owner(p, 0, 0o100644, false).is_ok());
        assert!(check_owner(p, 0, 0o100600, true).is_ok());
        assert!(check_owner(p, 0, 0o100640, true).is_ok());
        assert!(check_owner(p, 0, 0o100644, true).is_err());
        assert!(check_owner(p, 1000, 0o100600, false).is_err());
        assert!(check_owner(p, 0, 0o100664, false).is_err());
        assert!(check_owner(p, 0, 0o100602, false).is_err());
    }
}
