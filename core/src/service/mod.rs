//! The one API the doors call. It holds the directory, the store, the keys, the mailer
//! and the audit log, and enforces every rule of the second factor.
//!
//! # Layout
//!
//! - `flow`: **the login flow** — the one place where the order of a login lives
//!   (password → lock → trusted device → policy for a user with no factor → code →
//!   accept), driven by every door.
//! - `login`: the steps the flow is made of, with their proof tokens (the code check,
//!   trusted devices, mailed codes, RADIUS challenge records).
//! - `account`: enrollment, confirmation, reset, notification address, trusted-device
//!   management, status.
//! - `helpdesk`: the queue and operator-issued codes; the audit reader.
//! - `session`: door sessions in the store, sealed; rate counters.
//! - `tokens`: a user's tokens (the app and imported or hardware ones, each with its
//!   own parameters and last step), the import, the hardware-token pool.

use std::sync::Arc;

use otpgate_config::{Config, NotificationConfig};

use crate::audit::{AuditLog, AuditRecord, Method, Outcome, RequestContext};
use crate::clock::{Clock, Timestamp};
use crate::directory::{Directory, UserEntry};
use crate::error::{Backend, CoreError, Refusal};
use crate::mail::Mailer;
use crate::otp::totp::TotpParams;
use crate::policy::Policy;
use crate::random::Random;
use crate::secret::Keys;
use crate::store::cache::RecordCache;
use crate::store::{Connect, Store, StoreError, UserRecord};
use crate::user::UserName;

mod account;
mod flow;
mod helpdesk;
mod login;
mod session;
mod tokens;

pub use account::{
    ADDRESS_MAIL_WINDOW, ADDRESS_MAILS_PER_ADDRESS, ADDRESS_MAILS_PER_USER, Enrollment, UserStatus,
};
pub use flow::{
    Answer, ContinueRequest, Credential, DoorPolicy, LoginRequest, LoginStep, PendingLogin,
    PolicyPlace, texts,
};
pub use helpdesk::IssuedOtp;
pub use login::{
    Accepted, CHALLENGE_MAX_ANSWERS, CHALLENGE_TTL, Challenge, CodeDelivery, DeviceId, Factor,
    OtpVerified,
};
pub use session::LoadedSession;
pub use tokens::{ImportLine, ImportReport, ImportRequest, LineOutcome, TokenInfo};

/// What the core needs of the configuration: the rules of the second factor, and where
/// mailed links point. Made from the core's own sections ([`CoreConfig::from_config`]);
/// it reads no door's settings. The reset-link base is handed in by whoever runs the
/// portal ([`CoreConfig::reset_links_at`]); without one, no reset link is mailed.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub issuer: String,
    pub totp: TotpParams,
    pub email_digits: u32,
    pub email_valid_for: u64,
    pub max_failures: u32,
    pub lock_for: u64,
    pub remember_for: u64,
    pub notification: NotificationConfig,
    /// Base URL of the page that takes mailed reset links (the portal's `public_url`);
    /// `None`: reset links are refused, never mailed with a made-up host.
    pub reset_link_base: Option<String>,
    /// How long a helpdesk request waits in the queue.
    pub helpdesk_keep: u64,
    /// `[[policy]]`: who needs a second factor, where.
    pub policy: Policy,
    /// Where users enroll (the portal's `public_url`), named in the texts that send
    /// them there.
    pub portal_url: Option<String>,
}

impl CoreConfig {
    /// From a validated configuration's core sections (`[totp]`, `[email_otp]`,
    /// `[lockout]`, `[trust]`, `[notification]`, `[[policy]]` with `radius.unenrolled`
    /// as its default, and the portal's URL for texts); no reset-link base.
    pub fn from_config(c: &Config) -> Self {
        Self {
            issuer: c.totp.issuer.clone(),
            totp: TotpParams::from(&c.totp),
            email_digits: c.email_otp.digits,
            email_valid_for: c.email_otp.valid_for.as_secs(),
            max_failures: c.lockout.max_failures,
            lock_for: c.lockout.lock_for.as_secs(),
            remember_for: c.trust.remember_for.as_secs(),
            notification: c.notification.clone(),
            reset_link_base: None,
            helpdesk_keep: 7 * 86_400,
            policy: Policy::from_config(c),
            portal_url: c.portal.as_ref().map(|p| p.public_url.clone()),
        }
    }

    /// Mailed reset links point at `base` (the portal's public URL).
    #[must_use]
    pub fn reset_links_at(mut self, base: Option<String>) -> Self {
        self.reset_link_base = base;
        self
    }
}

/// The core.
pub struct Core {
    settings: CoreConfig,
    directory: Directory,
    store: Store,
    keys: Keys,
    mailer: Mailer,
    audit: AuditLog,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    /// The records logins read, so a login that brings its code reads nothing first.
    records: RecordCache,
}

/// What [`Core::probe`] found, per backend: `None` when there is nothing to probe,
/// else `Ok` or the reason.
#[derive(Debug, Clone)]
pub struct Probe {
    /// LDAP's service bind (`None` for a users file).
    pub directory: Option<Result<(), crate::directory::DirectoryError>>,
    /// The store.
    pub store: Option<Result<(), StoreError>>,
    /// SMTP (`None` without `[smtp]`).
    pub mail: Option<Result<(), String>>,
}

/// Everything [`Core::from_parts`] needs.
pub struct Parts {
    pub settings: CoreConfig,
    pub directory: Directory,
    pub store: Store,
    pub keys: Keys,
    pub mailer: Mailer,
    pub audit: AuditLog,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
}

impl Core {
    /// Opens the configured directory, store and mailer, to apply `settings`.
    pub async fn open(
        config: &Config,
        settings: CoreConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Core, CoreError> {
        Self::open_with(config, settings, clock, random, Connect::Now).await
    }

    /// Like [`Core::open`]; with [`Connect::Lazily`] LDAP and Redis connect on first use,
    /// so the core opens while they are down and every request fails closed until they
    /// are back (`otpgate serve`). Settings are still checked here.
    pub async fn open_with(
        config: &Config,
        settings: CoreConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        connect: Connect,
    ) -> Result<Core, CoreError> {
        let core = config
            .require_core()
            .map_err(|e| CoreError::Config(e.to_string()))?;
        let directory = Directory::open_with(core.directory, Arc::clone(&clock), connect)
            .await
            .map_err(|e| CoreError::backend(Backend::Directory, e.to_string()))?;
        let store = Store::open_with(core.store, connect).await?;
        Ok(Core::from_parts(Parts {
            settings,
            directory,
            store,
            keys: Keys::derive(core.master_key.expose())?,
            mailer: Mailer::from_config(config.smtp.as_ref())?,
            audit: AuditLog::new(&config.audit),
            clock,
            random,
        }))
    }

    /// Assembles a core from opened parts (the demo, tests).
    pub fn from_parts(p: Parts) -> Core {
        Core {
            settings: p.settings,
            directory: p.directory,
            store: p.store,
            keys: p.keys,
            mailer: p.mailer,
            audit: p.audit,
            clock: p.clock,
            random: p.random,
            records: RecordCache::default(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &CoreConfig {
        &self.settings
    }

    /// Now, by the core's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Whether every backend answers (directory and store). RADIUS stops answering
    /// Status-Server while this fails.
    pub async fn health(&self) -> Result<(), CoreError> {
        use crate::store::StoreBackend;
        self.store.ping().await?;
        self.directory
            .ping()
            .await
            .map_err(|e| CoreError::backend(Backend::Directory, e.to_string()))
    }

    /// Probes each backend once: the directory's service connection, the store (its
    /// connection and server checks) and SMTP (connect, EHLO, STARTTLS where
    /// configured). `deep` also loads every store script (`check-config --connect`);
    /// the periodic health probe of `otpgate serve` leaves it out, and SMTP too
    /// unless `mail` is set.
    pub async fn probe(&self, deep: bool, mail: bool) -> Probe {
        use crate::store::StoreBackend;
        let directory = match &self.directory {
            Directory::Ldap(_) => Some(self.directory.ping().await),
            Directory::File(_) => None,
        };
        let store = Some(match &self.store {
            Store::Redis(r) if deep => r.probe().await,
            other => other.ping().await,
        });
        let mail = if mail {
            self.mailer.probe().await
        } else {
            None
        };
        Probe {
            directory,
            store,
            mail,
        }
    }

    /// The directory entry of an activated user, or the refusal.
    pub(crate) async fn activated_entry(&self, user: &UserName) -> Result<UserEntry, CoreError> {
        let entry = self.lookup(user).await?.ok_or(Refusal::UnknownUser)?;
        if !entry.activated {
            return Err(Refusal::NotActivated.into());
        }
        Ok(entry)
    }

    /// The directory entry, if any.
    pub async fn lookup(&self, user: &UserName) -> Result<Option<UserEntry>, CoreError> {
        self.directory
            .lookup(user)
            .await
            .map_err(|e| CoreError::backend(Backend::Directory, e.to_string()))
    }

    /// Writes an audit record.
    pub async fn audit(
        &self,
        ctx: &RequestContext,
        user: &str,
        method: Method,
        result: Outcome,
        reason: &str,
    ) {
        let record = self.audit_record(ctx, user, method, result, reason);
        self.audit.record(&self.store, record).await;
    }

    /// Keeps a record just read for the next login of `user` that brings its code
    /// (`store::cache`). (Not an `async fn` that reads: the login future is deep
    /// enough.)
    pub(super) fn keep_record(&self, user: &UserName, record: UserRecord) -> Arc<UserRecord> {
        self.records.put(user, &record);
        Arc::new(record)
    }

    /// The record the last login of `user` read, if this instance keeps it (no lock,
    /// no failure count: see `store::cache`).
    pub(super) fn kept_record(&self, user: &UserName) -> Option<Arc<UserRecord>> {
        self.records.get(user)
    }

    /// An audit record made now.
    pub(crate) fn audit_record(
        &self,
        ctx: &RequestContext,
        user: &str,
        method: Method,
        result: Outcome,
        reason: &str,
    ) -> AuditRecord {
        let now = self.clock.now();
        AuditRecord {
            time: now.to_rfc3339(),
            ts: now,
            user: user.to_string(),
            door: ctx.door,
            client: ctx.client.clone(),
            method,
            result,
            reason: reason.to_string(),
        }
    }

    /// Audits the outcome of an operation: "ok" with `what`, or the refusal/error.
    pub(crate) async fn audit_outcome<T>(
        &self,
        ctx: &RequestContext,
        user: &UserName,
        method: Method,
        what: &str,
        outcome: &Result<T, CoreError>,
    ) {
        match outcome {
            Ok(_) => {
                self.audit(ctx, user.as_str(), method, Outcome::Ok, what)
                    .await
            }
            Err(CoreError::Refused(r)) => {
                self.audit(ctx, user.as_str(), method, Outcome::Refused, &r.to_string())
                    .await
            }
            Err(e) => {
                self.audit(ctx, user.as_str(), method, Outcome::Error, &e.to_string())
                    .await
            }
        }
    }

    /// Audits a refusal a door decided before the flow could run (a malformed user
    /// name, an unsupported method, no password at all).
    pub async fn reject(
        &self,
        user: &str,
        ctx: &RequestContext,
        method: Method,
        refusal: &Refusal,
    ) {
        self.audit(ctx, user, method, Outcome::Reject, &refusal.to_string())
            .await;
    }
}

/// A store failure is a backend failure: fail closed.
impl From<StoreError> for CoreError {
    fn from(e: StoreError) -> Self {
        CoreError::backend(Backend::Store, e.to_string())
    }
}
