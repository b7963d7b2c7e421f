//! The steps a login is made of, each with the proof it leaves. The order they run in
//! lives in `flow`, not here.
//!
//! Each proof has private fields and is made only by the check it proves:
//!
//! - [`OtpVerified`]: the store atomically accepted a TOTP step (later than the last
//!   one, with the lock checked in the same step) or consumed a one-time code (likewise);
//!   account operations make it from a mailed reset link.
//! - [`Accepted`]: made only by the flow, from the password side and a factor for the
//!   same user. No door can build one.
//!
//! What is kept between RADIUS rounds is a challenge record in the store (the
//! [`PendingLogin`](super::PendingLogin), bound to the user and the client, at most
//! three answers, 120 s).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Core;
use super::tokens::{StepKey, candidates};
use crate::audit::{Door, Method, Outcome, Prepared, RequestContext};
use crate::clock::Timestamp;
use crate::directory::UserEntry;
use crate::error::{CoreError, Refusal};
use crate::mail::texts;
use crate::otp::totp;
use crate::random;
use crate::store::{
    AuditInStep, CodeOutcome, CodeSlot, HelpdeskKind, HelpdeskRequest, StepCheck, StepDecision,
    StoreBackend, StoredCode, TrustedDevice, UserRecord,
};
use crate::user::UserName;

/// How long a challenge waits for its answer.
pub const CHALLENGE_TTL: u64 = 120;
/// How many answers a challenge takes.
pub const CHALLENGE_MAX_ANSWERS: u32 = 3;

/// Proof that a one-time code was accepted (and consumed) just now.
#[derive(Debug)]
pub struct OtpVerified {
    user: UserName,
    factor: Factor,
}

impl OtpVerified {
    /// Made by the core's own checks (here and in `account`) only.
    pub(crate) fn made(user: UserName, factor: Factor) -> Self {
        Self { user, factor }
    }

    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// Which kind of code.
    pub fn factor(&self) -> Factor {
        self.factor
    }
}

/// What let a login in, besides the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// An app code.
    Totp,
    /// A mailed or helpdesk-issued code.
    OneTimeCode,
    /// A mailed reset link, followed with the password (the portal's reset).
    ResetLink,
    /// A device the user trusted after an earlier login with a code.
    TrustedDevice,
    /// Nothing: the user has no second factor and the door's policy lets such users in
    /// (an `optional` policy, PAM `nullok`, the portal's set-up session).
    NotEnrolled,
    /// Nothing, by policy: the user's `[[policy]]` rule is `exempt` (password alone,
    /// even with a factor).
    Exempt,
    /// Nothing yet: the rule is `required` with an `enroll_by` date still ahead; the
    /// accept carries a notice that says where to enroll and by when.
    BeforeDeadline,
}

impl Factor {
    /// The audit method.
    pub fn method(self) -> Method {
        match self {
            Factor::Totp => Method::Totp,
            Factor::OneTimeCode => Method::OneTimeCode,
            Factor::ResetLink => Method::ResetLink,
            Factor::TrustedDevice => Method::TrustedDevice,
            Factor::NotEnrolled => Method::NotEnrolled,
            Factor::Exempt => Method::Exempt,
            Factor::BeforeDeadline => Method::BeforeDeadline,
        }
    }

    /// Whether a code was proven just now (only then is a device remembered).
    pub fn is_code(self) -> bool {
        matches!(self, Factor::Totp | Factor::OneTimeCode | Factor::ResetLink)
    }
}

/// Where a requested code went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeDelivery {
    /// Mailed to the notification address (shown masked).
    Mailed { masked_address: String },
    /// No address: a helpdesk request was queued.
    QueuedForHelpdesk,
}

/// A device a user may ask to be remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    /// The door it logs in through.
    pub door: Door,
    /// The identifier (browser token, remote host, Calling-Station-Id); stored only hashed.
    pub identifier: String,
    /// What the user sees in the list.
    pub label: String,
}

/// A successful login. Only the flow makes one.
#[derive(Debug, Clone)]
pub struct Accepted {
    user: UserName,
    entry: UserEntry,
    factor: Factor,
    remembered: Option<String>,
    notice: Option<String>,
}

impl Accepted {
    pub(super) fn made(
        user: UserName,
        entry: UserEntry,
        factor: Factor,
        remembered: Option<String>,
    ) -> Self {
        Self {
            user,
            entry,
            factor,
            remembered,
            notice: None,
        }
    }

    /// The same accept, with a notice for the user.
    pub(super) fn with_notice(mut self, notice: String) -> Self {
        self.notice = Some(notice);
        self
    }

    /// What the door shows the user on the way in (e.g. "set up your second factor at
    /// … before …"), if anything.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// The user let in.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The directory entry (for reply attributes and roles by group).
    pub fn entry(&self) -> &UserEntry {
        &self.entry
    }

    /// What let the user in besides the password.
    pub fn factor(&self) -> Factor {
        self.factor
    }

    /// The id of a device remembered by this login.
    pub fn remembered(&self) -> Option<&str> {
        self.remembered.as_deref()
    }
}

/// A challenge round begun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// 128 random bits, hex; carries nothing secret.
    pub id: String,
}

/// `a***@example.org`.
pub(crate) fn mask_address(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// The token whose window holds a code, and the steps it holds it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TotpMatch {
    /// `None`: the app; else the other token's name.
    token: Option<String>,
    /// Earliest first.
    steps: Vec<u64>,
}

impl TotpMatch {
    /// Whether a step of the match is later than its token's last step in `record`.
    fn unused_in(&self, record: &UserRecord) -> bool {
        let last = match &self.token {
            None => record.last_totp_step,
            Some(name) => record.token_steps.get(name).copied(),
        };
        self.steps.iter().any(|s| last.is_none_or(|l| *s > l))
    }
}

/// What a login knows of its code's TOTP match before the check: the append-mode split
/// found it already (each secret opened and each window computed once per login).
#[derive(Debug, Clone)]
pub(super) enum Lookup {
    NotYet,
    Done(Option<TotpMatch>),
}

/// The accept's audit record, for the store to append in the code's step: made only
/// when nothing after the step can fail (no device to remember).
pub(super) struct AuditAhead<'a> {
    pub(super) ctx: &'a RequestContext,
    pub(super) reason: String,
}

/// A code accepted at login.
#[derive(Debug)]
pub(super) struct CodeAccepted {
    pub(super) factor: Factor,
    /// The version of the account the code was checked against.
    pub(super) version: u64,
    /// The accept's audit record, when the store appended it in the step already.
    pub(super) audited: Option<Prepared>,
}

/// How often a code is checked again when the account changed under the login.
const CHANGED_ATTEMPTS: usize = 3;

impl Core {
    /// The first of the user's tokens (the app first) whose window holds `code`, and
    /// the steps it holds it at; `None` for a code of no token.
    pub(super) fn totp_match(
        &self,
        user: &UserName,
        code: &str,
        record: &UserRecord,
    ) -> Result<Option<TotpMatch>, CoreError> {
        let Some(account) = record.account.as_ref() else {
            return Ok(None);
        };
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let now = self.now();
        for c in candidates(account, &self.settings.totp)
            .filter(|c| code.len() == c.params.digits as usize)
        {
            let secret = self.keys.open(user, c.sealed)?;
            let steps = totp::matching_steps(&secret, code, now, &c.params);
            if !steps.is_empty() {
                let token = match c.key {
                    StepKey::App => None,
                    StepKey::Token(name) => Some(name.to_string()),
                };
                return Ok(Some(TotpMatch { token, steps }));
            }
        }
        Ok(None)
    }

    /// Checks a code at login against what `record` holds: a code of the first of the
    /// user's tokens whose window holds it (the app first), then a mailed/helpdesk code
    /// (email digits): an 8-digit code may be either. Every consuming step is one
    /// atomic store operation that checks the lock in the same step and counts a
    /// failure; a success clears the count. `record` may be the one kept from an
    /// earlier login (`store::cache`, `read_now` false): the step names its account,
    /// and if the stored one is another — or the kept one has no token the code is
    /// of — the record is read again and the code checked anew.
    pub(super) async fn check_login_code(
        &self,
        user: &UserName,
        code: &str,
        record: Arc<UserRecord>,
        read_now: bool,
        lookup: Lookup,
        audit: Option<AuditAhead<'_>>,
    ) -> Result<Result<CodeAccepted, Refusal>, CoreError> {
        let now = self.now();
        let code = code.trim();
        let digits_only = !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit());
        let mut record = record;
        let mut found = match lookup {
            Lookup::Done(found) => found,
            Lookup::NotYet => self.totp_match(user, code, &record)?,
        };
        if found.is_none() && !read_now {
            // A kept record may be old (a token added since, elsewhere): a code of no
            // token it knows is checked against the record as stored.
            record = self.keep_record(user, self.store.load(user, now).await?);
            found = self.totp_match(user, code, &record)?;
        }
        let mut reason = Refusal::WrongCode;
        let mut changes = 0;
        while let Some(m) = found.take() {
            let prepared = audit.as_ref().and_then(|a| {
                self.audit.prepare(self.audit_record(
                    a.ctx,
                    user.as_str(),
                    Method::Totp,
                    Outcome::Accept,
                    &a.reason,
                ))
            });
            let check = StepCheck {
                token: m.token.as_deref(),
                steps: &m.steps,
                account: record.account_digest.as_deref(),
                audit: prepared.as_ref().map(|p| AuditInStep {
                    at: p.at(),
                    record: p.line(),
                    keep: self.audit.keep_secs(),
                }),
                now,
            };
            match self.store.accept_step(user, &check).await? {
                StepDecision::Accepted { step, audited } => {
                    let version = record.account.as_ref().map_or(0, |a| a.version);
                    let digest = record.account_digest.clone();
                    // This login's handle on the kept record goes first, so the cache
                    // notes the step in place instead of copying the account.
                    drop(record);
                    if let Some(digest) = digest {
                        self.records
                            .accepted(user, &digest, m.token.as_deref(), step);
                    }
                    return Ok(Ok(CodeAccepted {
                        factor: Factor::Totp,
                        version,
                        audited: prepared.filter(|_| audited),
                    }));
                }
                // The code is this token's, already used: it is not tried on the
                // user's other tokens (two tokens with one secret must not let a code
                // in twice).
                StepDecision::Replay => reason = Refusal::Replay,
                StepDecision::Locked(until) => return Ok(Err(Refusal::Locked(until))),
                StepDecision::Changed => {
                    changes += 1;
                    if changes == CHANGED_ATTEMPTS {
                        return Err(CoreError::backend(
                            crate::Backend::Store,
                            "the account kept changing during the login; try again",
                        ));
                    }
                    record = self.keep_record(user, self.store.load(user, self.now()).await?);
                    found = self.totp_match(user, code, &record)?;
                }
            }
        }
        if reason == Refusal::WrongCode
            && digits_only
            && code.len() == self.settings.email_digits as usize
        {
            let hash = self.keys.code_hash(user, CodeSlot::Login.as_str(), code);
            // The comparison and the failure count in one step (the lock too).
            return Ok(
                match self
                    .store
                    .check_code(
                        user,
                        CodeSlot::Login,
                        &hash,
                        now,
                        self.settings.max_failures,
                        self.settings.lock_for,
                    )
                    .await?
                {
                    CodeOutcome::Consumed(_) => Ok(CodeAccepted {
                        factor: Factor::OneTimeCode,
                        version: record.account.as_ref().map_or(0, |a| a.version),
                        audited: None,
                    }),
                    CodeOutcome::Locked(until) => Err(Refusal::Locked(until)),
                    CodeOutcome::Wrong(f) => {
                        Err(f.locked_until.map_or(Refusal::WrongCode, Refusal::Locked))
                    }
                },
            );
        }
        let outcome = self
            .store
            .record_failure(
                user,
                now,
                self.settings.max_failures,
                self.settings.lock_for,
            )
            .await?;
        Ok(Err(match outcome.locked_until {
            Some(until) => Refusal::Locked(until),
            None => reason,
        }))
    }

    /// Whether `code` would be accepted now, as far as `record` tells, without
    /// consuming anything or counting a failure: `found` (its TOTP match) at a step
    /// later than its token's last accepted one, or the outstanding mailed code. Used
    /// to decide where an append-mode value splits before the one bind.
    pub(super) fn is_unused_code(
        &self,
        user: &UserName,
        code: &str,
        record: &UserRecord,
        found: Option<&TotpMatch>,
        mailed: Option<&StoredCode>,
    ) -> bool {
        if found.is_some_and(|m| m.unused_in(record)) {
            return true;
        }
        if code.len() == self.settings.email_digits as usize {
            if let Some(stored) = mailed {
                let hash = self.keys.code_hash(user, CodeSlot::Login.as_str(), code);
                return crate::secret::ct_eq(stored.hash.as_bytes(), hash.as_bytes());
            }
        }
        false
    }

    /// Whether `device` is trusted for `user` now.
    pub(super) async fn is_trusted_device(
        &self,
        user: &UserName,
        device: &DeviceId,
    ) -> Result<bool, CoreError> {
        let hash = self
            .keys
            .device_hash(user, device.door.as_str(), &device.identifier);
        Ok(crate::store::is_trusted(&self.store, user, &hash, self.now()).await?)
    }

    /// Remembers a device for the configured time, if the account is still the version
    /// the login saw (a reset in between leaves nothing behind). Returns its id.
    pub(crate) async fn remember_device(
        &self,
        user: &UserName,
        device: &DeviceId,
        account_version: u64,
    ) -> Result<Option<String>, CoreError> {
        let now = self.now();
        let id = random::hex_id::<6>(self.random.as_ref())?;
        let record = TrustedDevice {
            id: id.clone(),
            key_hash: self
                .keys
                .device_hash(user, device.door.as_str(), &device.identifier),
            door: device.door,
            label: device.label.chars().take(120).collect(),
            created_at: now,
            expires_at: now.plus(std::time::Duration::from_secs(self.settings.remember_for)),
        };
        let added = self
            .store
            .add_trusted(user, &record, now, account_version)
            .await?;
        if !added {
            tracing::info!(%user, "the account changed during the login; the device is not remembered");
        }
        Ok(added.then_some(id))
    }

    /// "Mail me a code": an email OTP to the notification address, or, with none, a
    /// helpdesk request. The code becomes usable only once the SMTP server accepted the
    /// message (a new code then replaces the outstanding one); if the mail cannot be
    /// sent, no new code is left and the error says so. Audited.
    pub async fn request_login_code(
        &self,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<CodeDelivery, CoreError> {
        let outcome = self.request_login_code_inner(user, ctx).await;
        self.audit_outcome(ctx, user, Method::EmailOtpRequest, "", &outcome)
            .await;
        outcome
    }

    async fn request_login_code_inner(
        &self,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<CodeDelivery, CoreError> {
        self.activated_entry(user).await?;
        let now = self.now();
        let record = self.store.load(user, now).await?;
        let Some(address) = record.account.and_then(|a| a.notification_address) else {
            self.store
                .enqueue_helpdesk(&HelpdeskRequest {
                    user: user.clone(),
                    kind: HelpdeskKind::LoginCode,
                    via: format!("{} {}", ctx.door.as_str(), ctx.client),
                    requested_at: now,
                    expires_at: now
                        .plus(std::time::Duration::from_secs(self.settings.helpdesk_keep)),
                })
                .await?;
            return Ok(CodeDelivery::QueuedForHelpdesk);
        };
        let code = random::decimal_code(self.random.as_ref(), self.settings.email_digits)?;
        let mail = texts::login_code(
            &address,
            user.as_str(),
            &code,
            self.settings.email_valid_for / 3600,
        );
        if let Err(e) = self.mailer.send(&mail).await {
            // Asking for a new code replaces the outstanding one, mailed or not: if this
            // one cannot be mailed, none is left.
            self.store.delete_code(user, CodeSlot::Login).await?;
            return Err(e);
        }
        self.issue_code(
            user,
            CodeSlot::Login,
            &code,
            self.settings.email_valid_for,
            None,
            "email",
        )
        .await?;
        Ok(CodeDelivery::Mailed {
            masked_address: mask_address(&address),
        })
    }

    /// Stores a code's keyed hash in a slot, replacing what was there.
    pub(crate) async fn issue_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        code: &str,
        valid_for: u64,
        payload: Option<String>,
        issued_by: &str,
    ) -> Result<Timestamp, CoreError> {
        let now = self.now();
        let expires_at = now.plus(std::time::Duration::from_secs(valid_for));
        let stored = StoredCode {
            hash: self.keys.code_hash(user, slot.as_str(), code),
            expires_at,
            payload,
            issued_by: issued_by.to_string(),
        };
        self.store.put_code(user, slot, &stored, now).await?;
        Ok(expires_at)
    }
}

/// What a challenge record holds between rounds.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ChallengeData {
    pub(super) user: UserName,
    pub(super) client: String,
    pub(super) by_client: bool,
    pub(super) created: Timestamp,
    /// The login is a first-login enrollment: the answer confirms the pending app.
    #[serde(default)]
    pub(super) enrolling: bool,
}
