//! The login path, as proof-carrying steps:
//!
//! ```text
//!  password ──► PasswordProof ─┐
//!  (directory, or a client     ├──► Core::accept ──► Accepted
//!   that vouches, or a resumed │
//!   challenge)                 │
//!  code / trusted device ──► FactorProof
//!  (or NotEnrolled, where policy allows it)
//! ```
//!
//! Each proof has private fields and is made only by the check it proves, so a door
//! cannot produce an [`Accepted`] without running both checks for the same user.
//! What is kept between RADIUS rounds is a challenge record in the store, bound to the
//! user and the client, at most three answers, 120 s.

use serde::{Deserialize, Serialize};

use super::{Core, store_error};
use crate::audit::RequestContext;
use crate::clock::Timestamp;
use crate::directory::{PasswordCheck, PasswordVerified, UserEntry};
use crate::error::{Backend, CoreError, Refusal};
use crate::mail::texts;
use crate::otp::totp;
use crate::random;
use crate::store::{
    CodeSlot, HelpdeskRequest, StepOutcome, StoreBackend, StoredCode, TrustedDevice,
};
use crate::user::UserName;

/// How long a challenge waits for its answer.
pub const CHALLENGE_TTL: u64 = 120;
/// How many answers a challenge takes.
pub const CHALLENGE_MAX_ANSWERS: u32 = 3;

/// How the password side of a login was established.
#[derive(Debug)]
pub enum PasswordProof {
    /// The directory verified it now.
    Verified(PasswordVerified),
    /// A client configured with `password_checked_by_client` (a PAM host whose earlier
    /// module checked it) vouches for it.
    CheckedByClient(ClientVouched),
    /// An earlier round of this login verified it (a resumed challenge).
    Resumed(ResumedPassword),
}

impl PasswordProof {
    /// The user the proof is about.
    pub fn user(&self) -> &UserName {
        match self {
            PasswordProof::Verified(p) => p.user(),
            PasswordProof::CheckedByClient(v) => &v.user,
            PasswordProof::Resumed(r) => &r.user,
        }
    }

    fn method(&self) -> &'static str {
        match self {
            PasswordProof::Verified(_) => "password",
            PasswordProof::CheckedByClient(_) => "password-by-client",
            PasswordProof::Resumed(_) => "password-earlier-round",
        }
    }
}

/// A client's word that it checked the password. Made explicitly, by name, only where
/// the configuration says the client may vouch.
#[derive(Debug)]
pub struct ClientVouched {
    user: UserName,
    client: String,
}

impl ClientVouched {
    /// The door calls this only for a client with `password_checked_by_client = true`.
    pub fn new(user: UserName, client: impl Into<String>) -> Self {
        Self {
            user,
            client: client.into(),
        }
    }
}

/// A password verified in an earlier round of the same login (see [`Core::resume_challenge`]).
#[derive(Debug)]
pub struct ResumedPassword {
    user: UserName,
    by_client: bool,
}

/// Proof that a one-time code was accepted (and consumed) just now.
#[derive(Debug)]
pub struct OtpVerified {
    user: UserName,
    method: OtpMethod,
}

impl OtpVerified {
    /// Made by the core's own checks (here and in `account`) only.
    pub(crate) fn made(user: UserName, method: OtpMethod) -> Self {
        Self { user, method }
    }
}

impl OtpVerified {
    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// Which kind of code.
    pub fn method(&self) -> OtpMethod {
        self.method
    }
}

/// Which kind of code was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpMethod {
    /// An app code.
    Totp,
    /// A mailed or helpdesk-issued 8-digit code.
    OneTimeCode,
    /// A mailed reset link, followed with the password (the portal's reset).
    ResetLink,
}

impl OtpMethod {
    fn as_str(self) -> &'static str {
        match self {
            OtpMethod::Totp => "totp",
            OtpMethod::OneTimeCode => "one-time-code",
            OtpMethod::ResetLink => "reset-link",
        }
    }
}

/// Proof that the device is trusted for this user now.
#[derive(Debug)]
pub struct TrustedDeviceVerified {
    user: UserName,
}

/// Proof that the user has no app enrolled (for `unenrolled = "password-only"` and PAM
/// `nullok`). Made only by [`FactorStatus::not_enrolled`].
#[derive(Debug)]
pub struct NotEnrolled {
    user: UserName,
}

/// The second-factor side of a login.
#[derive(Debug)]
pub enum FactorProof {
    Otp(OtpVerified),
    Trusted(TrustedDeviceVerified),
    /// Allowed only where the door's policy lets unenrolled users in.
    NotEnrolled(NotEnrolled),
}

impl FactorProof {
    fn user(&self) -> &UserName {
        match self {
            FactorProof::Otp(p) => &p.user,
            FactorProof::Trusted(p) => &p.user,
            FactorProof::NotEnrolled(p) => &p.user,
        }
    }

    fn method(&self) -> &'static str {
        match self {
            FactorProof::Otp(p) => p.method.as_str(),
            FactorProof::Trusted(_) => "trusted-device",
            FactorProof::NotEnrolled(_) => "not-enrolled",
        }
    }
}

/// What a user has, for deciding how to ask for the second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactorStatus {
    pub user: UserName,
    /// An app is enrolled.
    pub has_totp: bool,
    /// A notification address is registered.
    pub has_address: bool,
    /// Locked until then.
    pub locked_until: Option<Timestamp>,
}

impl FactorStatus {
    /// The proof that no app is enrolled, when that is so.
    pub fn not_enrolled(&self) -> Option<NotEnrolled> {
        (!self.has_totp).then(|| NotEnrolled {
            user: self.user.clone(),
        })
    }

    /// The proof that the user has no second factor at all: no app and no notification
    /// address (a registered address counts, since a mailed code can be asked for). The
    /// portal lets such a user in with the password alone, to set one up.
    pub fn no_second_factor(&self) -> Option<NotEnrolled> {
        if self.has_address {
            return None;
        }
        self.not_enrolled()
    }
}

/// The outcome of a code check.
#[derive(Debug)]
pub enum CodeCheck {
    Verified(OtpVerified),
    Refused(Refusal),
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
    /// "portal", "pam", "radius".
    pub door: String,
    /// The identifier (browser token, remote host, Calling-Station-Id); stored only hashed.
    pub identifier: String,
    /// What the user sees in the list.
    pub label: String,
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub user: UserName,
    /// The directory entry (for reply attributes by group).
    pub entry: UserEntry,
    /// The second factor used.
    pub method: &'static str,
    /// The id of a device remembered by this login.
    pub remembered: Option<String>,
}

/// A challenge round begun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// 128 random bits, hex; carries nothing secret.
    pub id: String,
}

/// What a challenge record holds between rounds.
#[derive(Debug, Serialize, Deserialize)]
struct ChallengeData {
    user: UserName,
    client: String,
    by_client: bool,
    created: Timestamp,
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

impl Core {
    /// Checks a password against the directory.
    pub async fn verify_password(
        &self,
        user: &UserName,
        password: &[u8],
    ) -> Result<PasswordCheck, CoreError> {
        self.directory
            .verify_password(user, password)
            .await
            .map_err(|e| CoreError::backend(Backend::Directory, e.to_string()))
    }

    /// What second factors the user has, and whether they are locked.
    pub async fn factor_status(&self, user: &UserName) -> Result<FactorStatus, CoreError> {
        let record = self
            .store
            .load(user, self.now())
            .await
            .map_err(store_error)?;
        let account = record.account.unwrap_or_default();
        Ok(FactorStatus {
            user: user.clone(),
            has_totp: account.totp.is_some(),
            has_address: account.notification_address.is_some(),
            locked_until: record.locked_until,
        })
    }

    /// Checks a one-time code: an app code (TOTP digits) or a mailed/helpdesk code
    /// (email digits). Counts failures and locks; a success resets the count. A TOTP
    /// step is accepted at most once per user, atomically in the store.
    pub async fn verify_code(&self, user: &UserName, code: &str) -> Result<CodeCheck, CoreError> {
        let now = self.now();
        let record = self.store.load(user, now).await.map_err(store_error)?;
        if let Some(until) = record.locked_until {
            return Ok(CodeCheck::Refused(Refusal::Locked(until)));
        }
        let code = code.trim();
        let digits_only = !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit());
        let mut reason = Refusal::WrongCode;
        if digits_only && code.len() == self.settings.totp.digits as usize {
            if let Some(sealed) = record.account.as_ref().and_then(|a| a.totp.as_ref()) {
                let secret = self.keys.open(user, sealed)?;
                // Earliest first; a step already used is a replay only if no later
                // step of the window has the same code.
                for step in totp::matching_steps(&secret, code, now, &self.settings.totp) {
                    match self
                        .store
                        .accept_totp_step(user, step, now)
                        .await
                        .map_err(store_error)?
                    {
                        StepOutcome::Accepted => {
                            return Ok(CodeCheck::Verified(OtpVerified {
                                user: user.clone(),
                                method: OtpMethod::Totp,
                            }));
                        }
                        StepOutcome::Replay => reason = Refusal::Replay,
                        StepOutcome::Locked(until) => {
                            return Ok(CodeCheck::Refused(Refusal::Locked(until)));
                        }
                    }
                }
            }
        }
        if reason == Refusal::WrongCode
            && digits_only
            && code.len() == self.settings.email_digits as usize
        {
            let hash = self.keys.code_hash(user, CodeSlot::Login.as_str(), code);
            if self
                .store
                .consume_code(user, CodeSlot::Login, &hash, now)
                .await
                .map_err(store_error)?
                .is_some()
            {
                self.store.clear_failures(user).await.map_err(store_error)?;
                return Ok(CodeCheck::Verified(OtpVerified {
                    user: user.clone(),
                    method: OtpMethod::OneTimeCode,
                }));
            }
        }
        let outcome = self
            .store
            .record_failure(
                user,
                now,
                self.settings.max_failures,
                self.settings.lock_for,
            )
            .await
            .map_err(store_error)?;
        Ok(CodeCheck::Refused(match outcome.locked_until {
            Some(until) => Refusal::Locked(until),
            None => reason,
        }))
    }

    /// Whether `device` is trusted for `user` now.
    pub async fn check_trusted(
        &self,
        user: &UserName,
        device: &DeviceId,
    ) -> Result<Option<TrustedDeviceVerified>, CoreError> {
        let hash = self
            .keys
            .device_hash(user, &device.door, &device.identifier);
        let trusted = self
            .store
            .is_trusted(user, &hash, self.now())
            .await
            .map_err(store_error)?;
        Ok(trusted.then(|| TrustedDeviceVerified { user: user.clone() }))
    }

    /// Turns both proofs into an accept: checks they are about the same user and that the
    /// account is activated, remembers the device if asked (only after a code), audits.
    pub async fn accept(
        &self,
        password: PasswordProof,
        factor: FactorProof,
        ctx: &RequestContext,
        remember: Option<&DeviceId>,
    ) -> Result<Accepted, CoreError> {
        let user = password.user().clone();
        if factor.user() != &user {
            self.audit(
                ctx,
                user.as_str(),
                factor.method(),
                "error",
                "proofs for different users",
            )
            .await;
            return Err(CoreError::Internal(
                "the password and second-factor proofs are for different users".into(),
            ));
        }
        let entry = match &password {
            PasswordProof::Verified(p) => p.entry().clone(),
            PasswordProof::CheckedByClient(_) | PasswordProof::Resumed(_) => match self
                .activated_entry(&user)
                .await
            {
                Ok(entry) => entry,
                Err(e) => {
                    self.audit_outcome(ctx, &user, factor.method(), "", &Err::<(), _>(e.clone()))
                        .await;
                    return Err(e);
                }
            },
        };
        let method = factor.method();
        let mut remembered = None;
        if let (Some(device), FactorProof::Otp(_)) = (remember, &factor) {
            remembered = Some(self.remember_device(&user, device).await?);
        }
        let reason = match &password {
            PasswordProof::CheckedByClient(v) => {
                format!("{} ({}) + {method}", password.method(), v.client)
            }
            _ => format!("{} + {method}", password.method()),
        };
        self.audit(ctx, user.as_str(), method, "accept", &reason)
            .await;
        Ok(Accepted {
            user,
            entry,
            method,
            remembered,
        })
    }

    /// Audits a refused login; doors call this with the refusal they acted on.
    pub async fn reject(&self, user: &str, ctx: &RequestContext, method: &str, refusal: &Refusal) {
        self.audit(ctx, user, method, "reject", &refusal.to_string())
            .await;
    }

    /// Remembers a device for the configured time. Returns its id.
    pub(crate) async fn remember_device(
        &self,
        user: &UserName,
        device: &DeviceId,
    ) -> Result<String, CoreError> {
        let now = self.now();
        let id = random::hex_id::<6>(self.random.as_ref())?;
        let record = TrustedDevice {
            id: id.clone(),
            key_hash: self
                .keys
                .device_hash(user, &device.door, &device.identifier),
            door: device.door.clone(),
            label: device.label.chars().take(120).collect(),
            created_at: now,
            expires_at: now.plus(std::time::Duration::from_secs(self.settings.remember_for)),
        };
        self.store
            .add_trusted(user, &record, now)
            .await
            .map_err(store_error)?;
        Ok(id)
    }

    /// "Mail me a code": an email OTP to the notification address, or, with none, a
    /// helpdesk request. A new code replaces the outstanding one; if the mail cannot be
    /// sent, no usable code is left and the error says so.
    pub async fn request_login_code(
        &self,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<CodeDelivery, CoreError> {
        let outcome = self.request_login_code_inner(user, ctx).await;
        self.audit_outcome(ctx, user, "email-otp-request", "", &outcome)
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
        let record = self.store.load(user, now).await.map_err(store_error)?;
        let Some(address) = record.account.and_then(|a| a.notification_address) else {
            self.store
                .enqueue_helpdesk(&HelpdeskRequest {
                    user: user.clone(),
                    kind: "login-code".into(),
                    via: format!("{} {}", ctx.door.as_str(), ctx.client),
                    requested_at: now,
                    expires_at: now
                        .plus(std::time::Duration::from_secs(self.settings.helpdesk_keep)),
                })
                .await
                .map_err(store_error)?;
            return Ok(CodeDelivery::QueuedForHelpdesk);
        };
        let code = random::decimal_code(self.random.as_ref(), self.settings.email_digits)?;
        self.issue_code(
            user,
            CodeSlot::Login,
            &code,
            self.settings.email_valid_for,
            None,
            "email",
        )
        .await?;
        let mail = texts::login_code(
            &address,
            user.as_str(),
            &code,
            self.settings.email_valid_for / 3600,
        );
        if let Err(e) = self.mailer.send(&mail).await {
            self.store
                .delete_code(user, CodeSlot::Login)
                .await
                .map_err(store_error)?;
            return Err(e);
        }
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
        self.store
            .put_code(user, slot, &stored, now)
            .await
            .map_err(store_error)?;
        Ok(expires_at)
    }

    /// Begins a challenge round after the password side is proven: a random State,
    /// kept in the store for 120 s, bound to the user and the client.
    pub async fn begin_challenge(
        &self,
        password: &PasswordProof,
        client: &str,
    ) -> Result<Challenge, CoreError> {
        let now = self.now();
        let id = random::hex_id::<16>(self.random.as_ref())?;
        let data = ChallengeData {
            user: password.user().clone(),
            client: client.to_string(),
            by_client: matches!(password, PasswordProof::CheckedByClient(_))
                || matches!(password, PasswordProof::Resumed(r) if r.by_client),
            created: now,
        };
        let bytes = serde_json::to_vec(&data).map_err(|e| CoreError::Internal(e.to_string()))?;
        self.store
            .put_challenge(&data.user, &id, &bytes, CHALLENGE_TTL, now)
            .await
            .map_err(store_error)?;
        Ok(Challenge { id })
    }

    /// Resumes a challenge: counts the answer (at most three), and checks that it is
    /// the same user through the same client. Any instance sharing the store can do this.
    pub async fn resume_challenge(
        &self,
        user: &UserName,
        id: &str,
        client: &str,
    ) -> Result<Option<PasswordProof>, CoreError> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let answer = self
            .store
            .answer_challenge(user, id, CHALLENGE_MAX_ANSWERS, self.now())
            .await
            .map_err(store_error)?;
        let Some(answer) = answer else {
            return Ok(None);
        };
        let data: ChallengeData = serde_json::from_slice(&answer.data)
            .map_err(|e| CoreError::Corrupt(format!("challenge record: {e}")))?;
        if &data.user != user || data.client != client {
            return Ok(None);
        }
        Ok(Some(PasswordProof::Resumed(ResumedPassword {
            user: data.user,
            by_client: data.by_client,
        })))
    }

    /// Ends a challenge (answered, or abandoned).
    pub async fn end_challenge(&self, user: &UserName, id: &str) -> Result<(), CoreError> {
        self.store
            .delete_challenge(user, id)
            .await
            .map_err(store_error)
    }
}
