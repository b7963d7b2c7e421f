//! Enrollment and recovery: what a user (portal) or an operator (CLI) does to an
//! account. Every write is a compare-and-set on the account's version, retried a few
//! times, so concurrent changes are never lost.

use std::time::Duration;

use serde::Serialize;

use super::Core;
use super::login::{Factor, OtpVerified, mask_address};
use crate::audit::{Method, RequestContext};
use crate::clock::Timestamp;
use crate::error::{CoreError, Refusal};
use crate::mail::texts;
use crate::otp::totp;
use crate::policy::PlaceRequirement;
use crate::random;
use crate::secret::TotpSecret;
use crate::store::{
    Account, CodeOutcome, CodeSlot, Counter, StepOutcome, StoreBackend, TrustedDevice,
};
use crate::user::{UserName, UserState};

/// Attempts at a compare-and-set before giving up.
const CAS_ATTEMPTS: usize = 5;
/// How long a mailed address-confirmation code is valid.
const ADDRESS_CODE_VALID: u64 = 24 * 3600;
/// The length of an address-confirmation code.
const ADDRESS_CODE_DIGITS: u32 = 8;
/// Confirmation mails a user may cause in [`ADDRESS_MAIL_WINDOW`] (to any addresses).
pub const ADDRESS_MAILS_PER_USER: u64 = 5;
/// Confirmation mails one address may receive in [`ADDRESS_MAIL_WINDOW`] (from any users).
pub const ADDRESS_MAILS_PER_ADDRESS: u64 = 3;
/// The window of the two limits above, in seconds.
pub const ADDRESS_MAIL_WINDOW: u64 = 3600;

/// An issued (pending) or re-shown app secret.
#[derive(Debug, Clone, Serialize)]
pub struct Enrollment {
    pub user: String,
    pub secret: String,
    pub otpauth_uri: String,
    /// Set when recovery will need the helpdesk (no notification address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl Drop for Enrollment {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
        self.otpauth_uri.zeroize();
    }
}

/// A user's state, for `otpgate user status` and the portal.
#[derive(Debug, Clone, Serialize)]
pub struct UserStatus {
    pub user: String,
    pub state: &'static str,
    pub locked: bool,
    pub locked_until: Option<String>,
    pub failures: u32,
    pub notification_address: Option<String>,
    /// An address change awaiting its code.
    pub pending_address: Option<String>,
    pub enrolled_at: Option<String>,
    pub trusted_devices: usize,
    /// Every token: the app (`app`) and imported or hardware ones, never a secret.
    pub tokens: Vec<super::TokenInfo>,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    /// What `[[policy]]` asks of this user at each door (and at each RADIUS client
    /// where a rule narrows by client), with any enrollment deadline.
    pub policy: Vec<PlaceRequirement>,
}

/// The state machine of SPEC §2, from what the directory and the store say.
pub fn derive_state(activated: bool, account: Option<&Account>) -> UserState {
    match account {
        _ if !activated => UserState::NotActivated,
        Some(a) if super::tokens::has_token(a) => UserState::AppEnrolled,
        Some(a) if a.totp_pending.is_some() => UserState::AppPending,
        Some(a) if a.notification_address.is_some() => UserState::EmailRegistered,
        _ => UserState::New,
    }
}

impl Core {
    /// Reads, changes and saves an account with compare-and-set. `change` returns
    /// `Ok(None)` to leave the account unchanged.
    pub(super) async fn update_account<T>(
        &self,
        user: &UserName,
        mut change: impl FnMut(&mut Account) -> Result<Option<T>, CoreError>,
    ) -> Result<Option<T>, CoreError> {
        for _ in 0..CAS_ATTEMPTS {
            let record = self.store.load(user, self.now()).await?;
            let mut account = record.account.unwrap_or_default();
            let expected = account.version;
            let Some(result) = change(&mut account)? else {
                return Ok(None);
            };
            if account.created_at.is_none() {
                account.created_at = Some(self.now());
            }
            if self.store.save_account(user, expected, &account).await? {
                // Not needed for safety (a login's step checks the account it read),
                // but this instance's next login need not find out the hard way.
                self.records.forget(user);
                return Ok(Some(result));
            }
        }
        Err(CoreError::backend(
            crate::Backend::Store,
            "the account kept changing under concurrent writes; try again",
        ))
    }

    /// The user's state and settings.
    pub async fn status(&self, user: &UserName) -> Result<UserStatus, CoreError> {
        let entry = self.lookup(user).await?.ok_or(Refusal::UnknownUser)?;
        let now = self.now();
        let record = self.store.load(user, now).await?;
        let trusted = self.store.list_trusted(user, now).await?;
        let pending = self
            .store
            .peek_code(user, CodeSlot::AddressConfirmation, now)
            .await?
            .and_then(|c| c.payload);
        let account = record.account.as_ref();
        Ok(UserStatus {
            user: user.to_string(),
            state: derive_state(entry.activated, account).as_str(),
            locked: record.locked_until.is_some(),
            locked_until: record.locked_until.map(Timestamp::to_rfc3339),
            failures: record.failures,
            notification_address: account.and_then(|a| a.notification_address.clone()),
            pending_address: pending,
            enrolled_at: account
                .and_then(|a| a.enrolled_at)
                .map(Timestamp::to_rfc3339),
            trusted_devices: trusted.len(),
            tokens: account
                .map(|a| self.token_infos(a, user))
                .unwrap_or_default(),
            policy: self.settings.policy.describe(&entry.groups),
            display_name: entry.display_name,
            groups: entry.groups,
        })
    }

    fn enrollment(&self, user: &UserName, secret: &TotpSecret, has_address: bool) -> Enrollment {
        let b32 = secret.to_base32();
        Enrollment {
            user: user.to_string(),
            secret: b32.to_string(),
            otpauth_uri: totp::otpauth_uri(&self.settings.issuer, user.as_str(), &b32, &self.settings.totp),
            warning: (!has_address).then(|| {
                "no notification address is registered: if this device is lost, recovery needs the helpdesk".to_string()
            }),
        }
    }

    /// Issues a new app secret, pending until confirmed with a code. Refused for an
    /// unknown or not-activated user and for one who has an app already.
    pub async fn enroll(
        &self,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<Enrollment, CoreError> {
        let outcome = self.enroll_inner(user).await;
        self.audit_outcome(
            ctx,
            user,
            Method::Enroll,
            "app secret issued, pending",
            &outcome,
        )
        .await;
        outcome
    }

    async fn enroll_inner(&self, user: &UserName) -> Result<Enrollment, CoreError> {
        self.activated_entry(user).await?;
        let secret = TotpSecret::generate(self.random.as_ref())?;
        let sealed = self.keys.seal(user, &secret, self.random.as_ref())?;
        let has_address = self
            .update_account(user, |account| {
                if account.totp.is_some() {
                    return Err(Refusal::AlreadyEnrolled.into());
                }
                account.totp_pending = Some(sealed.clone());
                Ok(Some(account.notification_address.is_some()))
            })
            .await?
            .unwrap_or(false);
        Ok(self.enrollment(user, &secret, has_address))
    }

    /// Activates the pending app secret with a code from it. The code's step counts as
    /// used, like any login.
    ///
    /// The code proves the new app: the proof lets a set-up session become a full one.
    pub async fn confirm_enrollment(
        &self,
        user: &UserName,
        code: &str,
        ctx: &RequestContext,
    ) -> Result<OtpVerified, CoreError> {
        let outcome = self.confirm_inner(user, code).await;
        self.audit_outcome(ctx, user, Method::EnrollConfirm, "app enrolled", &outcome)
            .await;
        outcome.map(|()| OtpVerified::made(user.clone(), Factor::Totp))
    }

    async fn confirm_inner(&self, user: &UserName, code: &str) -> Result<(), CoreError> {
        self.activated_entry(user).await?;
        let now = self.now();
        let record = self.store.load(user, now).await?;
        if let Some(until) = record.locked_until {
            return Err(Refusal::Locked(until).into());
        }
        let pending = record
            .account
            .as_ref()
            .and_then(|a| a.totp_pending.clone())
            .ok_or(Refusal::NoPendingEnrollment)?;
        let secret = self.keys.open(user, &pending)?;
        let Some(step) = totp::matching_step(&secret, code.trim(), now, &self.settings.totp) else {
            self.fail(user).await?;
            return Err(Refusal::WrongCode.into());
        };
        match self.store.accept_totp_step(user, step, now).await? {
            StepOutcome::Accepted => {}
            StepOutcome::Replay => {
                self.fail(user).await?;
                return Err(Refusal::Replay.into());
            }
            StepOutcome::Locked(until) => return Err(Refusal::Locked(until).into()),
        }
        self.update_account(user, |account| {
            // Only the secret the code was checked against is activated.
            if account.totp_pending.as_ref() != Some(&pending) {
                return Err(Refusal::NoPendingEnrollment.into());
            }
            account.totp = account.totp_pending.take();
            account.enrolled_at = Some(now);
            Ok(Some(()))
        })
        .await?;
        Ok(())
    }

    /// Counts a failure; returns the lock refusal when it locked the user.
    async fn fail(&self, user: &UserName) -> Result<(), CoreError> {
        let outcome = self
            .store
            .record_failure(
                user,
                self.now(),
                self.settings.max_failures,
                self.settings.lock_for,
            )
            .await?;
        match outcome.locked_until {
            Some(until) => Err(Refusal::Locked(until).into()),
            None => Ok(()),
        }
    }

    /// Shows the enrolled secret again, to add the app to another device. Needs a code
    /// verified just now for the same user.
    pub async fn show_secret(
        &self,
        proof: &OtpVerified,
        ctx: &RequestContext,
    ) -> Result<Enrollment, CoreError> {
        let user = proof.user().clone();
        let record = self.store.load(&user, self.now()).await?;
        let account = record.account.unwrap_or_default();
        let outcome = match &account.totp {
            Some(sealed) => self.keys.open(&user, sealed).map(|secret| {
                self.enrollment(&user, &secret, account.notification_address.is_some())
            }),
            None => Err(Refusal::NotEnrolled.into()),
        };
        self.audit_outcome(
            ctx,
            &user,
            Method::AddDevice,
            "enrolled secret shown again",
            &outcome,
        )
        .await;
        outcome
    }

    /// Removes the app (enrolled and pending), every other token (hardware ones go back
    /// to the pool, unassigned) and every trusted device.
    pub async fn reset(&self, user: &UserName, ctx: &RequestContext) -> Result<(), CoreError> {
        let outcome = self.reset_inner(user).await;
        self.audit_outcome(
            ctx,
            user,
            Method::Reset,
            "app, tokens and trusted devices removed",
            &outcome,
        )
        .await;
        outcome
    }

    async fn reset_inner(&self, user: &UserName) -> Result<(), CoreError> {
        self.lookup(user).await?.ok_or(Refusal::UnknownUser)?;
        let removed = self
            .update_account(user, |account| {
                account.totp = None;
                account.totp_pending = None;
                account.enrolled_at = None;
                Ok(Some(std::mem::take(&mut account.tokens)))
            })
            .await?
            .unwrap_or_default();
        // Hardware tokens go back to the pool, unassigned.
        self.release_hardware(user, &removed).await?;
        // The account's new version (saved above) already keeps a login in flight from
        // remembering a device (`add_trusted` compares it); then every device goes.
        self.store.revoke_trusted(user, None).await?;
        self.store.delete_code(user, CodeSlot::Reset).await?;
        // The next app's first code may fall in the step the old app used last.
        self.store.forget_totp_step(user).await?;
        Ok(())
    }

    /// Checks an address's syntax and the denied domains.
    pub fn check_address(&self, address: &str) -> Result<String, Refusal> {
        let address = address.trim();
        let parsed: lettre::Address = address
            .parse()
            .map_err(|_| Refusal::InvalidAddress(address.to_string()))?;
        let domain = parsed.domain().to_ascii_lowercase();
        if !domain.contains('.') {
            return Err(Refusal::InvalidAddress(address.to_string()));
        }
        if self
            .settings
            .notification
            .denied_domains
            .iter()
            .any(|rule| rule.matches(&domain))
        {
            return Err(Refusal::DeniedDomain(domain));
        }
        Ok(format!("{}@{domain}", parsed.user()))
    }

    /// Counts a confirmation mail against the user's and the address's hourly limits
    /// ([`ADDRESS_MAILS_PER_USER`], [`ADDRESS_MAILS_PER_ADDRESS`]); refuses past either,
    /// before anything is mailed. The address is counted under a keyed hash of it.
    async fn allow_address_mail(&self, user: &UserName, address: &str) -> Result<(), CoreError> {
        let mine = Counter::User {
            user,
            name: "address-mail",
        };
        if self.count_hit(&mine, ADDRESS_MAIL_WINDOW).await? > ADDRESS_MAILS_PER_USER {
            return Err(Refusal::TooManyMails.into());
        }
        let hashed = self.door_mac("address-mail", address.to_ascii_lowercase().as_bytes());
        let theirs = Counter::Global {
            name: &format!("address-mail:{hashed}"),
        };
        if self.count_hit(&theirs, ADDRESS_MAIL_WINDOW).await? > ADDRESS_MAILS_PER_ADDRESS {
            return Err(Refusal::TooManyMails.into());
        }
        Ok(())
    }

    /// Starts an address change: mails a code to the new address. The address takes
    /// effect only when that code is entered.
    pub async fn set_address(
        &self,
        user: &UserName,
        address: &str,
        ctx: &RequestContext,
    ) -> Result<String, CoreError> {
        let outcome = self.set_address_inner(user, address).await;
        self.audit_outcome(
            ctx,
            user,
            Method::AddressSet,
            &format!("confirmation code mailed to {address}"),
            &outcome,
        )
        .await;
        outcome
    }

    async fn set_address_inner(&self, user: &UserName, address: &str) -> Result<String, CoreError> {
        self.activated_entry(user).await?;
        let address = self.check_address(address)?;
        self.allow_address_mail(user, &address).await?;
        let code = random::decimal_code(self.random.as_ref(), ADDRESS_CODE_DIGITS)?;
        // The code works only once the SMTP server accepted the message.
        self.mailer
            .send(&texts::address_confirmation(&address, user.as_str(), &code))
            .await?;
        self.issue_code(
            user,
            CodeSlot::AddressConfirmation,
            &code,
            ADDRESS_CODE_VALID,
            Some(address.clone()),
            "address",
        )
        .await?;
        Ok(mask_address(&address))
    }

    /// Confirms an address change with the mailed code; tells the old address. Returns
    /// the new address and the proof of the code (a set-up session becomes a full one).
    pub async fn confirm_address(
        &self,
        user: &UserName,
        code: &str,
        ctx: &RequestContext,
    ) -> Result<(String, OtpVerified), CoreError> {
        let outcome = self.confirm_address_inner(user, code).await;
        self.audit_outcome(
            ctx,
            user,
            Method::AddressConfirm,
            "notification address changed",
            &outcome,
        )
        .await;
        outcome.map(|address| {
            (
                address,
                OtpVerified::made(user.clone(), Factor::OneTimeCode),
            )
        })
    }

    async fn confirm_address_inner(
        &self,
        user: &UserName,
        code: &str,
    ) -> Result<String, CoreError> {
        self.activated_entry(user).await?;
        let now = self.now();
        let record = self.store.load(user, now).await?;
        if let Some(until) = record.locked_until {
            return Err(Refusal::Locked(until).into());
        }
        let hash = self
            .keys
            .code_hash(user, CodeSlot::AddressConfirmation.as_str(), code.trim());
        // The lock, the comparison and the failure count in one atomic step: parallel
        // guesses stop at the lock.
        let stored = match self
            .store
            .check_code(
                user,
                CodeSlot::AddressConfirmation,
                &hash,
                now,
                self.settings.max_failures,
                self.settings.lock_for,
            )
            .await?
        {
            CodeOutcome::Consumed(stored) => stored,
            CodeOutcome::Locked(until) => return Err(Refusal::Locked(until).into()),
            CodeOutcome::Wrong(f) => {
                return Err(f
                    .locked_until
                    .map_or(Refusal::WrongCode, Refusal::Locked)
                    .into());
            }
        };
        let new = stored
            .payload
            .ok_or_else(|| CoreError::Corrupt("address code without an address".into()))?;
        let old = self
            .update_account(user, |account| {
                let old = account.notification_address.replace(new.clone());
                Ok(Some(old))
            })
            .await?
            .flatten();
        if let Some(old) = old.filter(|o| o != &new) {
            tracing::info!(user = %user, "notification address changed; telling the old address");
            if let Err(e) = self
                .mailer
                .send(&texts::address_changed(&old, user.as_str(), &new))
                .await
            {
                tracing::warn!(user = %user, "could not tell the old address of the change: {e}");
            }
        }
        Ok(new)
    }

    /// Asks for a reset: mails a link valid 24 h to the notification address, or queues
    /// a helpdesk request when there is none. Returns where it went.
    pub async fn request_reset(
        &self,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<super::CodeDelivery, CoreError> {
        let outcome = self.request_reset_inner(user, ctx).await;
        self.audit_outcome(ctx, user, Method::ResetRequest, "", &outcome)
            .await;
        outcome
    }

    async fn request_reset_inner(
        &self,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<super::CodeDelivery, CoreError> {
        self.activated_entry(user).await?;
        let now = self.now();
        let record = self.store.load(user, now).await?;
        let Some(address) = record.account.and_then(|a| a.notification_address) else {
            self.store
                .enqueue_helpdesk(&crate::store::HelpdeskRequest {
                    user: user.clone(),
                    kind: crate::store::HelpdeskKind::Reset,
                    via: format!("{} {}", ctx.door.as_str(), ctx.client),
                    requested_at: now,
                    expires_at: now.plus(Duration::from_secs(self.settings.helpdesk_keep)),
                })
                .await?;
            return Ok(super::CodeDelivery::QueuedForHelpdesk);
        };
        let Some(base) = self.settings.reset_link_base.clone() else {
            return Err(CoreError::Config(
                "reset links need the portal's public_url; none was given to the core".into(),
            ));
        };
        let token = random::hex_id::<32>(self.random.as_ref())?;
        let valid = self.settings.notification.reset_valid_for.as_secs();
        let link = format!(
            "{base}/reset/confirm?user={}&token={token}",
            url_encode(user.as_str())
        );
        // The link works only once the SMTP server accepted the message.
        self.mailer
            .send(&texts::reset_link(
                &address,
                user.as_str(),
                &link,
                valid / 3600,
            ))
            .await?;
        self.issue_code(user, CodeSlot::Reset, &token, valid, None, "reset-link")
            .await?;
        Ok(super::CodeDelivery::Mailed {
            masked_address: mask_address(&address),
        })
    }

    /// Follows a reset link (for the flow's [`Core::login_with_reset_link`], after the
    /// password was verified): consumes the mailed token, then removes the app and
    /// trusted devices.
    pub(super) async fn complete_reset(
        &self,
        user: &UserName,
        token: &str,
        ctx: &RequestContext,
    ) -> Result<(), CoreError> {
        let token = token.trim();
        let well_formed = token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit());
        let hash = self.keys.code_hash(user, CodeSlot::Reset.as_str(), token);
        let consumed = if well_formed {
            self.store
                .consume_code(user, CodeSlot::Reset, &hash, self.now())
                .await?
        } else {
            None
        };
        if consumed.is_none() {
            let e: Result<(), CoreError> = Err(Refusal::NothingOutstanding.into());
            self.audit_outcome(ctx, user, Method::Reset, "", &e).await;
            return e;
        }
        self.reset(user, ctx).await
    }

    /// Clears failures and the lock.
    pub async fn unlock(&self, user: &UserName, ctx: &RequestContext) -> Result<(), CoreError> {
        let outcome = self
            .store
            .clear_failures(user)
            .await
            .map_err(CoreError::from);
        self.audit_outcome(ctx, user, Method::Unlock, "failures cleared", &outcome)
            .await;
        outcome
    }

    /// The user's trusted devices.
    pub async fn trusted_devices(&self, user: &UserName) -> Result<Vec<TrustedDevice>, CoreError> {
        self.store
            .list_trusted(user, self.now())
            .await
            .map_err(CoreError::from)
    }

    /// Revokes one trusted device, or all. Returns how many.
    pub async fn revoke_trusted(
        &self,
        user: &UserName,
        id: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<usize, CoreError> {
        let outcome = match self
            .store
            .revoke_trusted(user, id)
            .await
            .map_err(CoreError::from)
        {
            Ok(0) if id.is_some() => Err(Refusal::NoSuchDevice.into()),
            other => other,
        };
        self.audit_outcome(
            ctx,
            user,
            Method::TrustedRevoke,
            id.unwrap_or("all"),
            &outcome,
        )
        .await;
        outcome
    }
}

/// Percent-encodes a query value.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
