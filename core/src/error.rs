//! Core errors. Two families the doors must tell apart: a [`Refusal`] (the answer is
//! "no") and a backend failure (there is no answer: fail closed, never accept).

use crate::clock::Timestamp;

/// Which backend failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// LDAP or the users file.
    Directory,
    /// Redis or the embedded store.
    Store,
    /// SMTP.
    Mail,
}

impl Backend {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Directory => "directory",
            Backend::Store => "store",
            Backend::Mail => "mail",
        }
    }
}

/// Why a request was refused. Doors show users only a generic message; the reason goes
/// to the audit log and, for operators, to the CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The user name is malformed.
    #[error("malformed user name: {0}")]
    BadUserName(#[from] crate::user::UserNameError),
    /// No directory entry (or more than one) for the name.
    #[error("unknown user")]
    UnknownUser,
    /// The entry does not match `activated_filter`.
    #[error("the account is not activated")]
    NotActivated,
    /// An empty password, refused before LDAP is asked.
    #[error("empty password")]
    EmptyPassword,
    /// The directory refused the password.
    #[error("wrong password")]
    WrongPassword,
    /// The code matched nothing.
    #[error("wrong code")]
    WrongCode,
    /// The TOTP step was already used (or an earlier one was).
    #[error("code already used (replay)")]
    Replay,
    /// Too many consecutive failures.
    #[error("locked until {}", .0.to_rfc3339())]
    Locked(Timestamp),
    /// The user has no second factor at all.
    #[error("no second factor is enrolled")]
    NotEnrolled,
    /// Enrollment asked for a user who has an app already.
    #[error("an app is already enrolled; reset first or add a device")]
    AlreadyEnrolled,
    /// Confirmation asked for a user with no pending enrollment.
    #[error("no pending app enrollment")]
    NoPendingEnrollment,
    /// No notification address is registered.
    #[error("no notification address is registered")]
    NoAddress,
    /// The address is not a valid mail address.
    #[error("not a valid mail address: {0}")]
    InvalidAddress(String),
    /// The address's domain is listed in `notification.denied_domains`.
    #[error("addresses in the domain {0} cannot be used for notification")]
    DeniedDomain(String),
    /// No outstanding code or link of that kind (never issued, used, or expired).
    #[error("no valid code or link is outstanding")]
    NothingOutstanding,
    /// A trusted device id that the user does not have.
    #[error("no such trusted device")]
    NoSuchDevice,
    /// Too many confirmation mails in the last hour, for this user or to this address:
    /// nothing was mailed. Try again later.
    #[error("too many confirmation mails; try again later")]
    TooManyMails,
    /// The user has no token of that name or serial (`otpgate token list USER`).
    #[error("no token named {0:?} (or with that serial)")]
    NoSuchToken(String),
    /// A hardware token's serial is assigned to a user already: unassign it first.
    #[error("serial {serial} is already assigned to {user}")]
    SerialAssigned { serial: String, user: String },
    /// No hardware token with that serial in the pool: import its PSKC file first.
    #[error("no hardware token with serial {0} (import its PSKC file first)")]
    UnknownSerial(String),
    /// The user has a token of that name already, with another secret: remove it first.
    #[error("a token named {0:?} exists with another secret or parameters; remove it first")]
    TokenExists(String),
}

/// A core error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The answer is no. Map to a reject (RADIUS), PAM_AUTH_ERR-family codes, exit 1.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// A backend could not be reached or answered wrongly. Fail closed: RADIUS sends
    /// no reply, PAM returns PAM_AUTHINFO_UNAVAIL, the CLI exits 1 naming the backend.
    #[error("{} unavailable: {message}", backend.as_str())]
    Backend {
        /// Which one.
        backend: Backend,
        /// What went wrong, for the log (never for a client).
        message: String,
    },
    /// A setting the core cannot work with (e.g. mail needed but no `[smtp]`).
    #[error("configuration: {0}")]
    Config(String),
    /// Stored data that cannot be read (e.g. a secret that fails to decrypt).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A bug or a failed system call.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    /// A backend failure.
    pub fn backend(backend: Backend, message: impl Into<String>) -> Self {
        CoreError::Backend {
            backend,
            message: message.into(),
        }
    }

    /// The refusal, if this is one.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            CoreError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

impl From<crate::user::UserNameError> for CoreError {
    fn from(e: crate::user::UserNameError) -> Self {
        CoreError::Refused(Refusal::BadUserName(e))
    }
}
