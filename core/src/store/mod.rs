//! Second-factor state: Redis for real deployments, an embedded redb file for one host.
//!
//! # The contract
//!
//! Every operation that decides whether a code is accepted is **atomic in the store**
//! (a Lua script on Redis, one write transaction on redb), so two server processes that
//! share a store never accept one code twice. All of one user's keys share a Redis hash
//! tag (`{user}`), so those scripts also run on Redis Cluster. Every record that should
//! expire carries its expiry (`expires_at`), and Redis keys also carry a TTL.
//!
//! Time is passed in (`now`); backends never read the clock. A backend error is a
//! [`StoreError`], which the core turns into a fail-closed backend error.
//!
//! # Layout
//!
//! - this module: the records and [`StoreBackend`], the contract both backends keep;
//!   [`Store`], the enum the core holds.
//! - `keys`: key names (shared by both backends).
//! - `redis`: Redis standalone / Cluster / Sentinel, with Lua scripts.
//! - `embedded`: redb, one write transaction per operation.
//! - `conformance`: one test suite that every backend must pass.

use std::collections::BTreeMap;

use otpgate_config::TotpAlgorithm;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::user::UserName;

pub mod cache;
pub mod embedded;
pub mod keys;
mod records;
pub mod redis;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

/// A store failure: unreachable, timed out, or an answer that cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Could not reach the store, or it timed out. The caller fails closed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with data that cannot be decoded.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The store is reachable but configured so that otpgate's guarantees would not
    /// hold (Redis evicting keys, or without persistence when it is required). The
    /// operator must fix the server; until then every operation fails closed.
    #[error("store refused: {0}")]
    Unsuitable(String),
}

/// An encrypted TOTP secret as stored (AES-256-GCM; see `crate::secret`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// 12-byte nonce, base64/hex as the sealing code chooses.
    pub nonce: String,
    /// Ciphertext with its tag.
    pub ciphertext: String,
}

/// The per-user record. Written only through [`StoreBackend::save_account`], which
/// compares versions, so two concurrent writers cannot lose each other's change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Incremented by every successful save; 0 means "never saved".
    pub version: u64,
    /// The enrolled app secret.
    pub totp: Option<SealedSecret>,
    /// When the app was enrolled.
    pub enrolled_at: Option<Timestamp>,
    /// An issued app secret awaiting its first code.
    pub totp_pending: Option<SealedSecret>,
    /// The confirmed notification address.
    pub notification_address: Option<String>,
    /// When the record was first saved.
    pub created_at: Option<Timestamp>,
    /// The user's other tokens (imported, hardware), each with its own parameters. The
    /// enrolled app stays in `totp` (the token named `app`, with `[totp]`'s
    /// parameters), so records written before tokens existed read unchanged, and a
    /// record without other tokens is written exactly as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<Token>,
}

/// The name of the enrolled app token (the account's `totp` secret).
pub const APP_TOKEN: &str = "app";

/// How a token came to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenSource {
    /// `otpgate user enroll` or the portal.
    Enrolled,
    /// Imported from an `otpauth://` URI.
    Otpauth,
    /// Imported from a google-authenticator-libpam file.
    GoogleAuthenticator,
    /// Imported from a PSKC file (a hardware token).
    Pskc,
    /// Imported from a CSV file.
    Csv,
}

impl TokenSource {
    /// The name in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenSource::Enrolled => "enrolled",
            TokenSource::Otpauth => "otpauth",
            TokenSource::GoogleAuthenticator => "google-authenticator",
            TokenSource::Pskc => "pskc",
            TokenSource::Csv => "csv",
        }
    }
}

/// A TOTP token with its own parameters. Its secret is sealed for its user (or, in the
/// pool, for its serial: see `crate::secret::Keys::seal_for_pool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Unique among the user's tokens (a hardware token is named by its serial); also
    /// the name its last accepted step is kept under.
    pub name: String,
    /// A hardware token's serial number (unique in the whole store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub secret: SealedSecret,
    /// 6 to 8.
    pub digits: u32,
    /// Seconds per step.
    pub period: u64,
    pub algorithm: TotpAlgorithm,
    pub source: TokenSource,
    pub added_at: Timestamp,
}

/// A hardware token in the pool, and the user it is assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    /// The token, its secret sealed for the pool.
    pub token: Token,
    pub assigned_to: Option<UserName>,
}

/// What [`StoreBackend::pool_claim`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The serial was unassigned; it is now the user's.
    Claimed(Token),
    /// The serial is assigned to this user already; nothing changed.
    AssignedTo(UserName),
    /// No such serial in the pool.
    Unknown,
}

/// Everything the login path needs, read in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserRecord {
    /// `None` when the user has never been saved.
    pub account: Option<Account>,
    /// Consecutive second-factor failures.
    pub failures: u32,
    /// Set while the user is locked (only when later than `now`).
    pub locked_until: Option<Timestamp>,
    /// The last TOTP step accepted for this user's app token.
    pub last_totp_step: Option<u64>,
    /// The last step accepted per other token (by token name).
    pub token_steps: BTreeMap<String, u64>,
    /// The stored account's digest ([`account_digest`] of its stored bytes), which a
    /// login step can require unchanged ([`StepCheck::account`]); `None` without one.
    pub account_digest: Option<String>,
}

/// One consuming step of a login: the first of `steps` later than the token's last
/// accepted step is taken, checked with the lock (and, if asked, the account's
/// digest) in the same atomic step. [`StoreBackend::accept_step`].
#[derive(Debug, Clone, Copy)]
pub struct StepCheck<'a> {
    /// The token: `None` for the enrolled app, else one of the user's other tokens
    /// (each keeps its own last step: tokens may have different periods).
    pub token: Option<&'a str>,
    /// The steps the code matches, earliest first.
    pub steps: &'a [u64],
    /// The account's digest the secret came from ([`UserRecord::account_digest`]): if
    /// the stored account is another, nothing changes ([`StepDecision::Changed`]).
    pub account: Option<&'a str>,
    /// The accept's audit record, written in the same step where the backend can
    /// (the embedded store; Redis standalone or Sentinel, not Cluster: the log is
    /// in another slot). [`StepDecision::Accepted`] says whether it was.
    pub audit: Option<AuditInStep<'a>>,
    pub now: Timestamp,
}

/// An audit record to append with an accepted step ([`StoreBackend::append_audits`]).
#[derive(Debug, Clone, Copy)]
pub struct AuditInStep<'a> {
    pub at: Timestamp,
    pub record: &'a str,
    /// Seconds the log keeps.
    pub keep: u64,
}

/// What [`StoreBackend::accept_step`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDecision {
    /// `step` is now the token's last, the failure count and any lock are cleared, and
    /// the audit record was appended if `audited`.
    Accepted { step: u64, audited: bool },
    /// No step later than the last accepted one: a replay. Nothing changed.
    Replay,
    /// The user is locked until then; nothing was changed.
    Locked(Timestamp),
    /// The stored account is not the one named: nothing was changed (read it again).
    Changed,
}

/// The digest of an account's stored bytes: SHA-1, hex (what Redis's `redis.sha1hex`
/// computes, so a script can compare it). It names a stored form, it guards no secret:
/// a version number alone could come back with another secret after a restore.
pub fn account_digest(stored: &[u8]) -> String {
    use sha1::Digest;
    data_encoding::HEXLOWER.encode(&sha1::Sha1::digest(stored))
}

/// What [`StoreBackend::accept_totp_step`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step was later than the last accepted one; it is now the last, and the
    /// failure count is reset.
    Accepted,
    /// The step was not later than the last accepted one: a replay.
    Replay,
    /// The user is locked until then; nothing was changed.
    Locked(Timestamp),
}

impl From<StepDecision> for StepOutcome {
    /// `Changed` cannot come from a check that names no account; it reads as a replay
    /// (nothing was consumed), never as an accept.
    fn from(decision: StepDecision) -> Self {
        match decision {
            StepDecision::Accepted { .. } => StepOutcome::Accepted,
            StepDecision::Replay | StepDecision::Changed => StepOutcome::Replay,
            StepDecision::Locked(until) => StepOutcome::Locked(until),
        }
    }
}

/// What [`StoreBackend::check_code`] decided, in one atomic step with the lock and the
/// failure count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeOutcome {
    /// The hash matched an unexpired code: it is deleted and returned, and the failure
    /// count and any lock are cleared.
    Consumed(StoredCode),
    /// No match (or nothing outstanding): a failure was counted, which may have locked
    /// the user.
    Wrong(FailureOutcome),
    /// The user is locked until then: nothing was compared and nothing changed.
    Locked(Timestamp),
}

/// What [`StoreBackend::record_failure`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    /// Consecutive failures including this one.
    pub failures: u32,
    /// Set when this failure (or an earlier one) locked the user.
    pub locked_until: Option<Timestamp>,
}

/// The single-use slots a user has; a new code in a slot replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeSlot {
    /// An email OTP or a helpdesk OTP (same rules, one slot: a new one replaces the old).
    Login,
    /// The code that confirms a new notification address (payload: the address).
    AddressConfirmation,
    /// The token of a mailed reset link.
    Reset,
}

impl CodeSlot {
    /// The name used in keys.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeSlot::Login => "login",
            CodeSlot::AddressConfirmation => "address",
            CodeSlot::Reset => "reset",
        }
    }
}

/// An outstanding code, stored only as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCode {
    /// HMAC-SHA256 of the code under a key derived from the master key (hex).
    pub hash: String,
    /// When it stops being valid.
    pub expires_at: Timestamp,
    /// Slot-specific data (the new address for `AddressConfirmation`).
    pub payload: Option<String>,
    /// Who issued it: "email", "helpdesk:<operator>", ...
    pub issued_by: String,
}

/// A remembered device (browser cookie, PAM remote host, RADIUS Calling-Station-Id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedDevice {
    /// Short random id shown to the user for revocation.
    pub id: String,
    /// Keyed hash of the device identifier (never the identifier itself).
    pub key_hash: String,
    /// The door that remembered it.
    pub door: crate::audit::Door,
    /// What the user sees: a browser description, the remote host, the station id.
    pub label: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What a user without a notification address asked the helpdesk for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HelpdeskKind {
    /// A one-time code to log in with (read out by the operator).
    LoginCode,
    /// A reset of the app and trusted devices.
    Reset,
}

impl HelpdeskKind {
    /// The name in listings and records.
    pub fn as_str(self) -> &'static str {
        match self {
            HelpdeskKind::LoginCode => "login-code",
            HelpdeskKind::Reset => "reset",
        }
    }
}

impl std::fmt::Display for HelpdeskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A request waiting for a helpdesk operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpdeskRequest {
    pub user: UserName,
    /// What the user asked for.
    pub kind: HelpdeskKind,
    /// Which door it came from and how ("radius vpn", "portal", ...).
    pub via: String,
    pub requested_at: Timestamp,
    /// Dropped from the queue after this.
    pub expires_at: Timestamp,
}

/// An answered challenge round's state (RADIUS Access-Challenge), kept between rounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeAnswer {
    /// The data stored with the challenge (the serialised login state).
    pub data: Vec<u8>,
    /// Answers made so far, including this one (1-based).
    pub answers: u32,
}

/// A door's session as stored: sealed bytes (the store never sees them in the clear)
/// and the version that guards each save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Incremented by every save; a save names the version it read.
    pub version: u64,
    /// The sealed session.
    pub data: Vec<u8>,
}

/// A fixed-window rate counter.
#[derive(Debug, Clone, Copy)]
pub enum Counter<'a> {
    /// One of a user's counters, under the user's hash tag.
    User { user: &'a UserName, name: &'a str },
    /// A counter of no user (`name` should be a keyed hash when it stands for personal
    /// data, such as an address).
    Global { name: &'a str },
}

/// The contract each store keeps. Every method is one round trip (one script, one
/// transaction). `now` is the caller's clock.
#[allow(async_fn_in_trait)]
pub trait StoreBackend {
    /// Whether the store answers (RADIUS Status-Server, readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// The account, failure count, lock and last TOTP step, in one read. A lock whose
    /// time has passed is reported as `None`.
    async fn load(&self, user: &UserName, now: Timestamp) -> Result<UserRecord, StoreError>;

    /// Saves `account` if the stored version is `expected_version` (0: none stored);
    /// the stored version becomes `expected_version + 1`. Returns `false` on a
    /// conflict, changing nothing.
    async fn save_account(
        &self,
        user: &UserName,
        expected_version: u64,
        account: &Account,
    ) -> Result<bool, StoreError>;

    /// Atomically: if the user is locked, `Locked`; else if `check.account` names
    /// another account than the stored one, `Changed`; else takes the first of
    /// `check.steps` later than the token's last accepted step (or any, if none):
    /// records it, clears the failure count and the lock, appends the audit record
    /// where the backend can, `Accepted`; else `Replay`. The last step never expires on
    /// its own (it guards against replays for as long as the account exists).
    async fn accept_step(
        &self,
        user: &UserName,
        check: &StepCheck<'_>,
    ) -> Result<StepDecision, StoreError>;

    /// [`StoreBackend::accept_step`] for one step of the app, no account check.
    async fn accept_totp_step(
        &self,
        user: &UserName,
        step: u64,
        now: Timestamp,
    ) -> Result<StepOutcome, StoreError> {
        let check = StepCheck {
            token: None,
            steps: &[step],
            account: None,
            audit: None,
            now,
        };
        self.accept_step(user, &check).await.map(StepOutcome::from)
    }

    /// [`StoreBackend::accept_step`] for one step of another token, no account check.
    async fn accept_token_step(
        &self,
        user: &UserName,
        token: &str,
        step: u64,
        now: Timestamp,
    ) -> Result<StepOutcome, StoreError> {
        let check = StepCheck {
            token: Some(token),
            steps: &[step],
            account: None,
            audit: None,
            now,
        };
        self.accept_step(user, &check).await.map(StepOutcome::from)
    }

    /// Atomically adds a hardware token to the pool under its serial, assigned to
    /// `assigned_to` or not. Returns `false`, changing nothing, when the serial is
    /// already there.
    async fn pool_add(
        &self,
        token: &Token,
        serial: &str,
        assigned_to: Option<&UserName>,
    ) -> Result<bool, StoreError>;

    /// The pool's entry for a serial.
    async fn pool_get(&self, serial: &str) -> Result<Option<PoolEntry>, StoreError>;

    /// Every pool entry, by serial.
    async fn pool_list(&self) -> Result<Vec<PoolEntry>, StoreError>;

    /// Atomically assigns an unassigned serial to `user` and returns its token; a
    /// serial assigned already (to anyone) is not changed.
    async fn pool_claim(&self, serial: &str, user: &UserName) -> Result<Claim, StoreError>;

    /// Atomically unassigns a serial if it is assigned to `user`. Returns whether it was.
    async fn pool_release(&self, serial: &str, user: &UserName) -> Result<bool, StoreError>;

    /// Deletes a serial from the pool (and its assignment). Returns whether it was there.
    async fn pool_remove(&self, serial: &str) -> Result<bool, StoreError>;

    /// Atomically counts a failure; when the count reaches `max_failures` the user is
    /// locked until `now + lock_for` (seconds). While a lock is in force nothing is
    /// counted and the lock is reported, not extended. Counts survive restarts; the
    /// counter key expires 30 days after the last failure.
    async fn record_failure(
        &self,
        user: &UserName,
        now: Timestamp,
        max_failures: u32,
        lock_for: u64,
    ) -> Result<FailureOutcome, StoreError>;

    /// Clears the failure count and any lock (a success, or an admin's unlock).
    async fn clear_failures(&self, user: &UserName) -> Result<(), StoreError>;

    /// Puts a code in a slot, replacing what was there. Expires at `code.expires_at`.
    async fn put_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        code: &StoredCode,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Atomically: if the slot holds an unexpired code whose hash equals `hash`
    /// (compared in constant time), deletes it and returns it; else returns `None`
    /// and leaves the slot as it was.
    async fn consume_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError>;

    /// Atomically, the login's check of a one-time code: if the user is locked,
    /// `Locked` and nothing else; else if the slot holds an unexpired code whose hash
    /// equals `hash`, deletes it, clears the failure count and the lock, `Consumed`;
    /// else counts a failure exactly as [`StoreBackend::record_failure`] does, `Wrong`.
    /// So parallel guesses stop at the lock: at most `max_failures` are ever compared.
    async fn check_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        hash: &str,
        now: Timestamp,
        max_failures: u32,
        lock_for: u64,
    ) -> Result<CodeOutcome, StoreError>;

    /// Forgets the last accepted TOTP step of the app and of every other token (a
    /// reset: the next app's first code may fall in the step the old app used last).
    async fn forget_totp_step(&self, user: &UserName) -> Result<(), StoreError>;

    /// Empties a slot (a failed mail must leave no usable code).
    async fn delete_code(&self, user: &UserName, slot: CodeSlot) -> Result<(), StoreError>;

    /// The unexpired code in a slot, if any (to show a pending address, not to check).
    async fn peek_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError>;

    /// Stores a challenge under `id` for `ttl` seconds, with no answers yet.
    async fn put_challenge(
        &self,
        user: &UserName,
        id: &str,
        data: &[u8],
        ttl: u64,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Atomically counts an answer to the challenge `id`. Returns it while the count is
    /// at most `max_answers` and it has not expired; past that, deletes it and returns
    /// `None`.
    async fn answer_challenge(
        &self,
        user: &UserName,
        id: &str,
        max_answers: u32,
        now: Timestamp,
    ) -> Result<Option<ChallengeAnswer>, StoreError>;

    /// Deletes a challenge (answered correctly, or replaced).
    async fn delete_challenge(&self, user: &UserName, id: &str) -> Result<(), StoreError>;

    /// A door's session (`id` is already a keyed hash of the browser's token). When it
    /// exists and has not expired, its expiry moves to `now + idle` (an idle timeout)
    /// and it is returned; an expired one is deleted.
    async fn load_session(
        &self,
        user: &UserName,
        id: &str,
        idle: u64,
        now: Timestamp,
    ) -> Result<Option<StoredSession>, StoreError>;

    /// Atomically: if the stored version of the session is `expected_version` (0: no
    /// live session under `id`), stores `data` as version `expected_version + 1`,
    /// expiring at `now + idle`, and returns that version; else changes nothing and
    /// returns `None` (another request saved first).
    async fn save_session(
        &self,
        user: &UserName,
        id: &str,
        expected_version: u64,
        data: &[u8],
        idle: u64,
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError>;

    /// Deletes a session (sign-out, or a session that ended).
    async fn delete_session(&self, user: &UserName, id: &str) -> Result<(), StoreError>;

    /// Atomically counts a hit on a fixed-window counter and returns the count in the
    /// window, this hit included. The window starts with its first hit and lasts
    /// `window` seconds; then the count starts again at 1.
    async fn count_hit(
        &self,
        counter: &Counter<'_>,
        window: u64,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Atomically: if the account's stored version is `account_version` (0: none
    /// stored), adds (or replaces, by `id`) a trusted device and returns `true`; else
    /// changes nothing and returns `false`. A reset saves the account (a new version)
    /// before it revokes the devices, so a login that verified its code before the reset
    /// cannot remember a device after it.
    async fn add_trusted(
        &self,
        user: &UserName,
        device: &TrustedDevice,
        now: Timestamp,
        account_version: u64,
    ) -> Result<bool, StoreError>;

    /// The user's unexpired trusted devices, oldest first. A record that cannot be
    /// decoded is skipped and logged, never an error: it can only make a device
    /// untrusted, never trusted (both backends alike; the conformance suite pins it).
    async fn list_trusted(
        &self,
        user: &UserName,
        now: Timestamp,
    ) -> Result<Vec<TrustedDevice>, StoreError>;

    /// Revokes one device by id, or all with `None`. Returns how many were removed.
    async fn revoke_trusted(&self, user: &UserName, id: Option<&str>) -> Result<usize, StoreError>;

    /// Queues (or replaces, per user) a helpdesk request.
    async fn enqueue_helpdesk(&self, request: &HelpdeskRequest) -> Result<(), StoreError>;

    /// Unexpired helpdesk requests, oldest first.
    async fn list_helpdesk(&self, now: Timestamp) -> Result<Vec<HelpdeskRequest>, StoreError>;

    /// Removes a user's helpdesk request. Returns whether there was one.
    async fn remove_helpdesk(&self, user: &UserName) -> Result<bool, StoreError>;

    /// Appends audit records (JSON objects), each at its time, in the order given, in
    /// one round trip; records older than the latest time minus `keep` seconds may be
    /// dropped. Fewer than [`MAX_AUDIT_BATCH`] records at once.
    async fn append_audits(
        &self,
        records: &[(Timestamp, &str)],
        keep: u64,
    ) -> Result<(), StoreError>;

    /// Appends one audit record at time `at` ([`StoreBackend::append_audits`]).
    async fn append_audit(&self, at: Timestamp, record: &str, keep: u64) -> Result<(), StoreError> {
        self.append_audits(&[(at, record)], keep).await
    }

    /// Audit records at or after `since`, oldest first, at most `limit`.
    async fn read_audit(&self, since: Timestamp, limit: usize) -> Result<Vec<String>, StoreError>;
}

/// The most audit records [`StoreBackend::append_audits`] takes at once (a Lua
/// script's arguments are bounded).
pub const MAX_AUDIT_BATCH: usize = 128;

/// The store the core holds: one of the backends.
#[allow(clippy::large_enum_variant)] // one per process; boxing buys nothing
pub enum Store {
    /// Redis (standalone, Cluster or Sentinel).
    Redis(redis::RedisStore),
    /// redb, single process.
    Embedded(embedded::EmbeddedStore),
}

/// Forwards each contract method to the backend.
macro_rules! dispatch {
    ($self:ident, $method:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Redis(s) => s.$method($($arg),*).await,
            Store::Embedded(s) => s.$method($($arg),*).await,
        }
    };
}

impl StoreBackend for Store {
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, ping())
    }
    async fn load(&self, user: &UserName, now: Timestamp) -> Result<UserRecord, StoreError> {
        dispatch!(self, load(user, now))
    }
    async fn save_account(
        &self,
        user: &UserName,
        expected_version: u64,
        account: &Account,
    ) -> Result<bool, StoreError> {
        dispatch!(self, save_account(user, expected_version, account))
    }
    async fn accept_step(
        &self,
        user: &UserName,
        check: &StepCheck<'_>,
    ) -> Result<StepDecision, StoreError> {
        dispatch!(self, accept_step(user, check))
    }
    async fn pool_add(
        &self,
        token: &Token,
        serial: &str,
        assigned_to: Option<&UserName>,
    ) -> Result<bool, StoreError> {
        dispatch!(self, pool_add(token, serial, assigned_to))
    }
    async fn pool_get(&self, serial: &str) -> Result<Option<PoolEntry>, StoreError> {
        dispatch!(self, pool_get(serial))
    }
    async fn pool_list(&self) -> Result<Vec<PoolEntry>, StoreError> {
        dispatch!(self, pool_list())
    }
    async fn pool_claim(&self, serial: &str, user: &UserName) -> Result<Claim, StoreError> {
        dispatch!(self, pool_claim(serial, user))
    }
    async fn pool_release(&self, serial: &str, user: &UserName) -> Result<bool, StoreError> {
        dispatch!(self, pool_release(serial, user))
    }
    async fn pool_remove(&self, serial: &str) -> Result<bool, StoreError> {
        dispatch!(self, pool_remove(serial))
    }
    async fn record_failure(
        &self,
        user: &UserName,
        now: Timestamp,
        max_failures: u32,
        lock_for: u64,
    ) -> Result<FailureOutcome, StoreError> {
        dispatch!(self, record_failure(user, now, max_failures, lock_for))
    }
    async fn clear_failures(&self, user: &UserName) -> Result<(), StoreError> {
        dispatch!(self, clear_failures(user))
    }
    async fn put_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        code: &StoredCode,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self, put_code(user, slot, code, now))
    }
    async fn consume_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError> {
        dispatch!(self, consume_code(user, slot, hash, now))
    }
    async fn check_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        hash: &str,
        now: Timestamp,
        max_failures: u32,
        lock_for: u64,
    ) -> Result<CodeOutcome, StoreError> {
        dispatch!(
            self,
            check_code(user, slot, hash, now, max_failures, lock_for)
        )
    }
    async fn forget_totp_step(&self, user: &UserName) -> Result<(), StoreError> {
        dispatch!(self, forget_totp_step(user))
    }
    async fn delete_code(&self, user: &UserName, slot: CodeSlot) -> Result<(), StoreError> {
        dispatch!(self, delete_code(user, slot))
    }
    async fn peek_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError> {
        dispatch!(self, peek_code(user, slot, now))
    }
    async fn put_challenge(
        &self,
        user: &UserName,
        id: &str,
        data: &[u8],
        ttl: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        dispatch!(self, put_challenge(user, id, data, ttl, now))
    }
    async fn answer_challenge(
        &self,
        user: &UserName,
        id: &str,
        max_answers: u32,
        now: Timestamp,
    ) -> Result<Option<ChallengeAnswer>, StoreError> {
        dispatch!(self, answer_challenge(user, id, max_answers, now))
    }
    async fn delete_challenge(&self, user: &UserName, id: &str) -> Result<(), StoreError> {
        dispatch!(self, delete_challenge(user, id))
    }
    async fn load_session(
        &self,
        user: &UserName,
        id: &str,
        idle: u64,
        now: Timestamp,
    ) -> Result<Option<StoredSession>, StoreError> {
        dispatch!(self, load_session(user, id, idle, now))
    }
    async fn save_session(
        &self,
        user: &UserName,
        id: &str,
        expected_version: u64,
        data: &[u8],
        idle: u64,
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        dispatch!(
            self,
            save_session(user, id, expected_version, data, idle, now)
        )
    }
    async fn delete_session(&self, user: &UserName, id: &str) -> Result<(), StoreError> {
        dispatch!(self, delete_session(user, id))
    }
    async fn count_hit(
        &self,
        counter: &Counter<'_>,
        window: u64,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        dispatch!(self, count_hit(counter, window, now))
    }
    async fn add_trusted(
        &self,
        user: &UserName,
        device: &TrustedDevice,
        now: Timestamp,
        account_version: u64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, add_trusted(user, device, now, account_version))
    }
    async fn list_trusted(
        &self,
        user: &UserName,
        now: Timestamp,
    ) -> Result<Vec<TrustedDevice>, StoreError> {
        dispatch!(self, list_trusted(user, now))
    }
    async fn revoke_trusted(&self, user: &UserName, id: Option<&str>) -> Result<usize, StoreError> {
        dispatch!(self, revoke_trusted(user, id))
    }
    async fn enqueue_helpdesk(&self, request: &HelpdeskRequest) -> Result<(), StoreError> {
        dispatch!(self, enqueue_helpdesk(request))
    }
    async fn list_helpdesk(&self, now: Timestamp) -> Result<Vec<HelpdeskRequest>, StoreError> {
        dispatch!(self, list_helpdesk(now))
    }
    async fn remove_helpdesk(&self, user: &UserName) -> Result<bool, StoreError> {
        dispatch!(self, remove_helpdesk(user))
    }
    async fn append_audits(
        &self,
        records: &[(Timestamp, &str)],
        keep: u64,
    ) -> Result<(), StoreError> {
        dispatch!(self, append_audits(records, keep))
    }
    async fn read_audit(&self, since: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        dispatch!(self, read_audit(since, limit))
    }
}

/// Whether an unexpired device with this `key_hash` is among the user's trusted
/// devices: the one check over [`StoreBackend::list_trusted`], for every backend,
/// compared in constant time.
pub async fn is_trusted<S: StoreBackend>(
    store: &S,
    user: &UserName,
    key_hash: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    use subtle::ConstantTimeEq;
    let devices = store.list_trusted(user, now).await?;
    let mut found = subtle::Choice::from(0);
    for d in &devices {
        found |= d.key_hash.as_bytes().ct_eq(key_hash.as_bytes());
    }
    Ok(bool::from(found))
}

impl Store {
    /// Opens the configured store. Redis connects here, with the configured timeout,
    /// and checks the server's settings: a Redis that is down is an error.
    pub async fn open(config: &otpgate_config::StoreConfig) -> Result<Store, StoreError> {
        Self::open_with(config, Connect::Now).await
    }

    /// Opens the configured store; with [`Connect::Lazily`] a Redis that is down is not
    /// an error: its first use connects (and every use fails closed until it can).
    pub async fn open_with(
        config: &otpgate_config::StoreConfig,
        connect: Connect,
    ) -> Result<Store, StoreError> {
        match config {
            otpgate_config::StoreConfig::Redis(redis) => Ok(Store::Redis(
                redis::RedisStore::open(redis.clone(), connect).await?,
            )),
            otpgate_config::StoreConfig::Embedded { path, key_prefix } => Ok(Store::Embedded(
                embedded::EmbeddedStore::open(path, key_prefix)?,
            )),
        }
    }
}

/// When a networked backend connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// At open: an unreachable backend is an error (the CLI, PAM direct mode).
    Now,
    /// At first use: `otpgate serve` starts while a backend is down and fails closed
    /// until it is back.
    Lazily,
}
