//! Where users and passwords live: LDAP, or a users file for one host and the demo.
//!
//! # The contract
//!
//! - Look a user up with the service account, the name escaped per RFC 4515; exactly
//!   one entry or none (two entries are refused as unknown, and logged).
//! - Check a password by binding as the entry's DN. An **empty password is refused
//!   here, before any backend is asked** (an empty simple bind "succeeds" on many
//!   servers).
//! - A successful check yields [`PasswordVerified`], which only this module can make.
//!   The login code needs it to produce an accept, so skipping the check does not compile.
//! - Every backend failure (unreachable, timeout, unexpected answer) is a
//!   [`DirectoryError`]; the core fails closed on it.
//!
//! # Layout
//!
//! - `filter`: RFC 4515 escaping and filter templates.
//! - `ldap`: ldap3, with connection reuse, failover across URLs and a timeout on every
//!   operation.
//! - `cache`: activated users' search results, kept for `[directory] cache_for` (the
//!   bind is never cached).
//! - `file`: a TOML users file with argon2 password hashes.

use std::sync::Arc;

use crate::clock::Clock;
use crate::error::Refusal;
use crate::user::UserName;

pub mod cache;
pub mod file;
pub mod filter;
pub mod ldap;

/// A directory failure: the answer is unknown, so the caller fails closed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// No server could be reached, or an operation timed out.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// The server answered something unexpected (e.g. a search error other than "no such
    /// object"), or the users file cannot be read.
    #[error("directory error: {0}")]
    Protocol(String),
}

/// A user as the directory knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    /// The canonical name (as asked; the directory matched it).
    pub name: UserName,
    /// The entry's distinguished name (LDAP) or the name (users file).
    pub dn: String,
    /// Whether the entry matches `activated_filter`.
    pub activated: bool,
    /// The directory's mail address (not the notification address), if any.
    pub mail: Option<String>,
    /// Group DNs or names, from `groups_attribute`.
    pub groups: Vec<String>,
    /// A display name (`cn`/`displayName`), if any.
    pub display_name: Option<String>,
}

/// Proof that a user's password was checked by the directory just now. Only this
/// module can make one.
#[derive(Debug)]
pub struct PasswordVerified {
    entry: UserEntry,
}

impl PasswordVerified {
    /// The entry whose password was verified.
    pub fn entry(&self) -> &UserEntry {
        &self.entry
    }

    /// The user.
    pub fn user(&self) -> &UserName {
        &self.entry.name
    }
}

/// Makes the proof. Private to this module and its children (`ldap`, `file`).
#[allow(dead_code)] // called by the backends
fn verified(entry: UserEntry) -> PasswordVerified {
    PasswordVerified { entry }
}

/// The outcome of a password check.
#[derive(Debug)]
pub enum PasswordCheck {
    /// The password is right and the account is activated.
    Verified(PasswordVerified),
    /// Refused: `UnknownUser`, `NotActivated`, `EmptyPassword` or `WrongPassword`.
    Refused(Refusal),
}

/// The contract each directory keeps.
#[allow(async_fn_in_trait)]
pub trait DirectoryBackend {
    /// Whether the directory answers (readiness, RADIUS Status-Server).
    async fn ping(&self) -> Result<(), DirectoryError>;

    /// The user's entry, or `None` when no entry (or more than one) matches.
    async fn lookup(&self, user: &UserName) -> Result<Option<UserEntry>, DirectoryError>;

    /// Checks a non-empty password. Implementations may assume `password` is not empty
    /// ([`Directory::verify_password`] refuses that first). `NotActivated` is returned
    /// only for a user whose password is right or whose state need not be hidden; the
    /// doors show every refusal the same way.
    async fn check_password(
        &self,
        user: &UserName,
        password: &[u8],
    ) -> Result<PasswordCheck, DirectoryError>;
}

/// The directory the core holds.
#[allow(clippy::large_enum_variant)] // one per process; boxing buys nothing
pub enum Directory {
    /// LDAP.
    Ldap(ldap::LdapDirectory),
    /// A users file.
    File(file::FileDirectory),
}

impl Directory {
    /// Opens the configured directory (LDAP connects its service connection here).
    /// `clock` dates the LDAP entry cache's entries.
    pub async fn open(
        config: &otpgate_config::DirectoryConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Directory, DirectoryError> {
        Self::open_with(config, clock, crate::store::Connect::Now).await
    }

    /// Like [`Directory::open`]; with [`crate::store::Connect::Lazily`] an LDAP server
    /// that cannot be reached is not an error (the settings are still checked): the
    /// first use connects.
    pub async fn open_with(
        config: &otpgate_config::DirectoryConfig,
        clock: Arc<dyn Clock>,
        connect: crate::store::Connect,
    ) -> Result<Directory, DirectoryError> {
        match config {
            otpgate_config::DirectoryConfig::Ldap(c) => Ok(Directory::Ldap(
                ldap::LdapDirectory::connect_with(c, clock, connect).await?,
            )),
            otpgate_config::DirectoryConfig::File { path } => {
                Ok(Directory::File(file::FileDirectory::load(path)?))
            }
        }
    }

    /// Whether the directory answers.
    pub async fn ping(&self) -> Result<(), DirectoryError> {
        match self {
            Directory::Ldap(d) => d.ping().await,
            Directory::File(d) => d.ping().await,
        }
    }

    /// The user's entry, if exactly one matches.
    pub async fn lookup(&self, user: &UserName) -> Result<Option<UserEntry>, DirectoryError> {
        match self {
            Directory::Ldap(d) => d.lookup(user).await,
            Directory::File(d) => d.lookup(user).await,
        }
    }

    /// Checks a password; an empty one is refused before the backend is asked.
    pub async fn verify_password(
        &self,
        user: &UserName,
        password: &[u8],
    ) -> Result<PasswordCheck, DirectoryError> {
        if password.is_empty() {
            return Ok(PasswordCheck::Refused(Refusal::EmptyPassword));
        }
        match self {
            Directory::Ldap(d) => d.check_password(user, password).await,
            Directory::File(d) => d.check_password(user, password).await,
        }
    }
}
