//! The login flow: the one place where the order of a login lives. Every door drives
//! it — RADIUS, PAM direct mode and the portal — and none orders the checks itself.
//!
//! ```text
//!  LoginRequest ──► password side ─────────► state ───────────────► code ──► Accepted
//!                   · Password: one bind      · locked? refuse        (one atomic
//!                   · PasswordWithCode:       · trusted device?         store step,
//!                     split decided first       accept                  lock checked
//!                     (which tail is a valid  · policy: exempt? accept   in it)
//!                     unused code), then      · no factor? by policy:
//!                     one bind                  admit/notice/enroll/refuse
//!                                             · else ask for a code ─► NeedCode
//!                   · Vouched: a lookup                                 (PendingLogin)
//!                                                   ▲
//!  PendingLogin + Answer ─► lookup (before anything is consumed) ─┘  continue_login
//! ```
//!
//! - **One bind per request**, wrong or right: in `PasswordWithCode` the split between
//!   password and code is decided before binding, by checking — without consuming —
//!   which trailing code-length candidate (6, 7 or 8 digits: the lengths of the user's
//!   tokens, and the mailed code's) is a valid unused code of this user.
//! - **Nothing cut in half**: [`Core::login`] and [`Core::continue_login`] run on a task
//!   of their own, so a door that stops waiting (a deadline, a closed connection) never
//!   leaves a consumed code without its audit record or a stored code without its mail.
//! - **Every decision is audited** here, once: accepts, refusals and backend failures.
//! - **Sealed**: [`Accepted`] is made only here; [`PendingLogin`] only by the flow and
//!   by resuming a challenge record; a client's word that it checked the password
//!   ([`otpgate_config::PasswordVouch`]) only by the configuration that says so.

use std::sync::Arc;

use otpgate_config::{Date, PasswordVouch, PolicyDoor};
use zeroize::Zeroizing;

use super::Core;
use super::login::{
    Accepted, AuditAhead, CHALLENGE_MAX_ANSWERS, CHALLENGE_TTL, Challenge, ChallengeData,
    CodeAccepted, CodeDelivery, DeviceId, Factor, Lookup, OtpVerified, TotpMatch,
};
use crate::audit::{Method, Outcome, Prepared, RequestContext};
use crate::directory::{PasswordCheck, UserEntry};
use crate::error::{CoreError, Refusal};
use crate::policy::{Place, Requirement, WithoutFactor};
use crate::random;
use crate::store::{CodeSlot, StoreBackend, UserRecord};
use crate::user::UserName;

/// The texts doors show a user, in one place (the portal shows its own translations
/// of the same messages).
pub mod texts {
    use super::CodeDelivery;

    /// The prompt for a code (RADIUS Access-Challenge, PAM).
    pub const PROMPT: &str = "One-time password: ";
    /// The Reply-Message of every RADIUS reject: it reveals nothing.
    pub const REJECT_MESSAGE: &str = "Authentication failed.";

    /// What the user is told after asking for a code.
    pub fn delivery(delivery: &CodeDelivery) -> String {
        match delivery {
            CodeDelivery::Mailed { masked_address } => {
                format!("A one-time password was mailed to {masked_address}.")
            }
            CodeDelivery::QueuedForHelpdesk => {
                "No notification address is registered: your request was sent to the helpdesk."
                    .to_string()
            }
        }
    }

    /// Where a user with no second factor is sent (a refusal, RADIUS and PAM).
    pub fn enroll_at(portal_url: Option<&str>) -> String {
        match portal_url {
            Some(url) => format!("A second factor is required: set it up at {url}"),
            None => "A second factor is required: set it up in the self-service portal.".into(),
        }
    }

    /// The notice for a user let in before their enrollment deadline.
    pub fn enroll_before(portal_url: Option<&str>, by: otpgate_config::Date) -> String {
        match portal_url {
            Some(url) => format!("Set up your second factor at {url} before {by}."),
            None => format!("Set up your second factor in the self-service portal before {by}."),
        }
    }

    /// What a terminal shows for an enrollment at the first login: the QR code of the
    /// `otpauth://` URI, the secret, and the warning if recovery will need the helpdesk.
    pub fn enroll_now(qr: &str, secret: &str, warning: Option<&str>) -> String {
        let mut text = String::from(
            "A second factor is required. Scan this QR code with an authenticator app, \
             or enter the secret by hand, then type the code the app shows.\n",
        );
        text.push_str(qr.trim_end());
        text.push_str("\nSecret: ");
        text.push_str(secret);
        text.push('\n');
        if let Some(w) = warning {
            text.push_str("Note: ");
            text.push_str(w);
            text.push('\n');
        }
        text
    }

    /// A prompt with a notice before it.
    pub fn prompt_after(notice: Option<&str>) -> String {
        match notice {
            Some(n) => format!("{n}\n{PROMPT}"),
            None => PROMPT.to_string(),
        }
    }
}

/// The password side of a login, as the door received it.
pub enum Credential {
    /// The password alone.
    Password(Zeroizing<Vec<u8>>),
    /// The password, perhaps followed by a code or the email keyword (RADIUS `append`
    /// and `auto`): the flow decides the split before its one bind.
    PasswordWithCode {
        value: Zeroizing<Vec<u8>>,
        keyword: String,
    },
    /// The client checked the password (a RADIUS client with
    /// `password_checked_by_client`, the PAM module in `mode=otp-only`).
    Vouched(PasswordVouch),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(..)"),
            Credential::PasswordWithCode { .. } => f.write_str("PasswordWithCode(..)"),
            Credential::Vouched(v) => write!(f, "Vouched({})", v.by()),
        }
    }
}

/// An answer at the code prompt.
pub enum Answer {
    /// A code (app, mailed or helpdesk).
    Code(Zeroizing<String>),
    /// The email keyword: mail me a code (or queue a helpdesk request).
    Keyword,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Code(_) => f.write_str("Code(..)"),
            Answer::Keyword => f.write_str("Keyword"),
        }
    }
}

impl Answer {
    /// What a user typed at the prompt: the keyword (without case), a code, or nothing.
    pub fn parse(text: &str, keyword: &str) -> Option<Answer> {
        let text = text.trim();
        if text.is_empty() {
            None
        } else if !keyword.is_empty() && text.eq_ignore_ascii_case(keyword) {
            Some(Answer::Keyword)
        } else {
            Some(Answer::Code(Zeroizing::new(text.to_string())))
        }
    }
}

/// Where a login comes from, for the `[[policy]]` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPlace {
    /// The door the rules are read for (a RADIUS client marked `pam_host` is "pam").
    pub door: PolicyDoor,
    /// The RADIUS client's name; `None` in PAM direct mode.
    pub client: Option<String>,
}

/// What the door's protocol and settings allow; the flow decides the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoorPolicy {
    /// Where the login comes from: `[[policy]]` decides who needs a second factor.
    /// `None` (the portal): an enrolled user is always asked; one with no factor is
    /// admitted (as [`Factor::NotEnrolled`]) to set one up.
    pub place: Option<PolicyPlace>,
    /// PAM `nullok`: a user with no second factor is admitted as
    /// [`Factor::NotEnrolled`] (and passed on by the module) whatever the rule says.
    pub nullok: bool,
    /// Whether the door can ask for a code after the password (a challenge, a prompt,
    /// a page). When it cannot (a RADIUS `append` NAS), a password alone is refused.
    pub can_ask: bool,
    /// Whether the door can show a new app secret and take its code (a terminal: the
    /// PAM module), for a rule with `enroll_at_login`.
    pub can_enroll: bool,
}

impl DoorPolicy {
    /// The portal's: no `[[policy]]`; a user with no factor goes to set-up.
    pub fn portal() -> Self {
        Self {
            place: None,
            nullok: false,
            can_ask: true,
            can_enroll: false,
        }
    }
}

/// One login request.
#[derive(Debug)]
pub struct LoginRequest {
    pub user: UserName,
    pub ctx: RequestContext,
    pub credential: Credential,
    /// A code or the keyword sent with the password side (a vouching client's).
    pub answer: Option<Answer>,
    /// This device, for the trusted-device check and to remember after a code.
    pub device: Option<DeviceId>,
    /// Remember `device` after a successful code.
    pub remember: bool,
    pub policy: DoorPolicy,
}

/// A later round of a login: the pending state and the user's answer.
#[derive(Debug)]
pub struct ContinueRequest {
    pub pending: PendingLogin,
    pub answer: Answer,
    pub ctx: RequestContext,
    pub device: Option<DeviceId>,
    pub remember: bool,
}

/// A login whose password side is proven, waiting for a code. Made only by the flow
/// (and by resuming a challenge record the flow stored). A door may keep it between
/// requests (serialised, inside a session the core seals); it comes back with only the
/// user: a client's vouch never survives the round, and the entry is looked up again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PendingLogin {
    user: UserName,
    /// The client that vouched for the password, if one did.
    #[serde(skip)]
    vouched_by: Option<String>,
    /// The entry, when this process looked it up in this login; `None` after a round
    /// through the store (then it is looked up again, before anything is consumed).
    #[serde(skip)]
    entry: Option<UserEntry>,
    /// A first-login enrollment: the answer confirms the pending app secret.
    #[serde(default)]
    enrolling: bool,
}

impl PendingLogin {
    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }
}

/// What happens next.
#[derive(Debug)]
pub enum LoginStep {
    /// Let the user in.
    Accepted(Accepted),
    /// Ask for a code, showing `notice` first if there is one.
    NeedCode {
        pending: PendingLogin,
        notice: Option<CodeDelivery>,
    },
    /// The answer is no (audited).
    Refused(Refusal),
    /// Enrollment at the first login: show `shown` (the QR code and the secret of a
    /// new, pending app) and ask for a code from it; the answer confirms the app and
    /// logs the user in (through [`Core::continue_login`]).
    Enroll {
        pending: PendingLogin,
        shown: String,
    },
}

/// The user's record as a login holds it.
struct Known {
    record: Arc<UserRecord>,
    /// Read in this request (else kept from an earlier login: no lock, no failures).
    read_now: bool,
    /// The code's TOTP match, if the split computed it.
    lookup: Lookup,
}

/// Where an append-mode value splits ([`Core::split`]).
struct Split {
    password: Zeroizing<Vec<u8>>,
    /// The code or the keyword at the end, if any.
    answer: Option<Answer>,
    /// The code's TOTP match, if computed.
    lookup: Lookup,
    /// Whether the end is a valid unused code of the user, as the record tells (else
    /// the keyword, a code-shaped guess, or nothing).
    certain: bool,
}

/// A code length the append-mode split tries ([`Core::split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// One of the user's tokens has it.
    Token,
    /// `[totp] digits`, which none of the user's tokens has.
    App,
    /// The mailed code's (`[email_otp] digits`).
    Mailed,
}

/// The audit reason of an accept.
fn accept_reason(pending: &PendingLogin, factor: Factor) -> String {
    match &pending.vouched_by {
        Some(client) => format!("password-by-client ({client}) + {}", factor.method()),
        None => format!("password + {}", factor.method()),
    }
}

impl Core {
    /// Runs a login request through the flow, on a task of its own: if the caller stops
    /// waiting, the flow still runs to its end (state changes and audit included).
    ///
    /// # Errors
    ///
    /// A backend failure (audited): the door fails closed.
    pub async fn login(self: &Arc<Self>, request: LoginRequest) -> Result<LoginStep, CoreError> {
        let core = Arc::clone(self);
        run_to_completion(async move { core.login_now(request).await }).await
    }

    /// Runs a later round (an answer to the code prompt) through the flow, on a task of
    /// its own like [`Core::login`].
    ///
    /// # Errors
    ///
    /// A backend failure (audited): the door fails closed.
    pub async fn continue_login(
        self: &Arc<Self>,
        request: ContinueRequest,
    ) -> Result<LoginStep, CoreError> {
        let core = Arc::clone(self);
        run_to_completion(async move { core.continue_now(request).await }).await
    }

    async fn login_now(&self, request: LoginRequest) -> Result<LoginStep, CoreError> {
        let user = request.user.clone();
        let ctx = request.ctx.clone();
        let outcome = self.login_inner(request).await;
        self.audit_failure(&ctx, &user, &outcome).await;
        outcome
    }

    async fn continue_now(&self, request: ContinueRequest) -> Result<LoginStep, CoreError> {
        let user = request.pending.user.clone();
        let ctx = request.ctx.clone();
        let outcome = self.continue_inner(request).await;
        self.audit_failure(&ctx, &user, &outcome).await;
        outcome
    }

    /// A backend failure is audited once, here.
    async fn audit_failure(
        &self,
        ctx: &RequestContext,
        user: &UserName,
        outcome: &Result<LoginStep, CoreError>,
    ) {
        if let Err(e) = outcome {
            self.audit(
                ctx,
                user.as_str(),
                Method::Login,
                Outcome::Error,
                &e.to_string(),
            )
            .await;
        }
    }

    async fn login_inner(&self, request: LoginRequest) -> Result<LoginStep, CoreError> {
        let LoginRequest {
            user,
            ctx,
            credential,
            answer,
            device,
            remember,
            policy,
        } = request;
        // The user's record: the one an earlier login read, if this instance keeps it
        // (a login that brings its code then reads nothing before its step, which checks
        // the account is still that one), else read now, in one round trip.
        let (mut record, mut read_now) = match self.kept_record(&user) {
            Some(kept) => (kept, false),
            None => (
                self.keep_record(&user, self.store.load(&user, self.now()).await?),
                true,
            ),
        };
        let mut lookup = Lookup::NotYet;
        let (entry, vouched_by, answer) = match credential {
            Credential::Password(password) => match self.directory_check(&user, &password).await? {
                Ok(entry) => (entry, None, answer),
                Err(r) => return Ok(self.refuse(&ctx, &user, Method::Password, r).await),
            },
            Credential::PasswordWithCode { value, keyword } => {
                let mut split = self.split(&user, &value, &keyword, &record).await?;
                if !split.certain && !read_now {
                    // The kept record named no valid unused code at the end: it may be
                    // old (a token added elsewhere, of another length). Split again on
                    // the record as stored, still before the one bind.
                    record = self.keep_record(&user, self.store.load(&user, self.now()).await?);
                    read_now = true;
                    split = self.split(&user, &value, &keyword, &record).await?;
                }
                let Split {
                    password,
                    answer: tail,
                    lookup: found,
                    ..
                } = split;
                lookup = found;
                match self.directory_check(&user, &password).await? {
                    Ok(entry) => (entry, None, tail),
                    Err(r) => return Ok(self.refuse(&ctx, &user, Method::Password, r).await),
                }
            }
            Credential::Vouched(vouch) => {
                // The client vouches for the password, not for the directory entry: an
                // unknown or not activated user is refused before any policy (a PAM
                // host's `nullok`) could let them in as "not enrolled".
                match self.lookup(&user).await? {
                    None => {
                        return Ok(self
                            .refuse(&ctx, &user, Method::PasswordByClient, Refusal::UnknownUser)
                            .await);
                    }
                    Some(e) if !e.activated => {
                        return Ok(self
                            .refuse(&ctx, &user, Method::PasswordByClient, Refusal::NotActivated)
                            .await);
                    }
                    Some(e) => (e, Some(vouch.by().to_string()), answer),
                }
            }
        };
        let pending = PendingLogin {
            user,
            vouched_by,
            entry: Some(entry.clone()),
            enrolling: false,
        };
        let known = Known {
            record,
            read_now,
            lookup,
        };
        self.after_password(
            pending,
            entry,
            known,
            answer,
            &ctx,
            device.as_ref(),
            remember,
            policy,
        )
        .await
    }

    async fn continue_inner(&self, request: ContinueRequest) -> Result<LoginStep, CoreError> {
        let ContinueRequest {
            pending,
            answer,
            ctx,
            device,
            remember,
        } = request;
        // The entry first: a directory that is slow or down here costs nothing, since
        // nothing has been consumed yet.
        let entry = match pending.entry.clone() {
            Some(entry) => entry,
            None => match self.lookup(&pending.user).await? {
                Some(e) if e.activated => e,
                Some(_) => {
                    return Ok(self
                        .refuse(
                            &ctx,
                            &pending.user,
                            Method::Challenge,
                            Refusal::NotActivated,
                        )
                        .await);
                }
                None => {
                    return Ok(self
                        .refuse(&ctx, &pending.user, Method::Challenge, Refusal::UnknownUser)
                        .await);
                }
            },
        };
        if pending.enrolling {
            return self
                .finish_enrollment(pending, entry, answer, &ctx, device.as_ref(), remember)
                .await;
        }
        let known = match self.kept_record(&pending.user) {
            Some(record) => Known {
                record,
                read_now: false,
                lookup: Lookup::NotYet,
            },
            None => Known {
                record: self.keep_record(
                    &pending.user,
                    self.store.load(&pending.user, self.now()).await?,
                ),
                read_now: true,
                lookup: Lookup::NotYet,
            },
        };
        // A later round asks for a code: the policy was applied in the first round.
        let policy = DoorPolicy {
            place: None,
            nullok: false,
            can_ask: true,
            can_enroll: false,
        };
        self.after_password(
            pending,
            entry,
            known,
            Some(answer),
            &ctx,
            device.as_ref(),
            remember,
            policy,
        )
        .await
    }

    /// The order after the password: lock → (a code or the keyword, if given) →
    /// trusted device → policy for a user with no factor → ask for a code.
    #[allow(clippy::too_many_arguments)]
    async fn after_password(
        &self,
        pending: PendingLogin,
        entry: UserEntry,
        known: Known,
        answer: Option<Answer>,
        ctx: &RequestContext,
        device: Option<&DeviceId>,
        remember: bool,
        policy: DoorPolicy,
    ) -> Result<LoginStep, CoreError> {
        let user = pending.user.clone();
        let Known {
            record,
            read_now,
            lookup,
        } = known;
        if let Some(Answer::Code(code)) = answer {
            // The lock first, as read; a kept record has none, and the code's step
            // checks it in any case.
            if let Some(until) = record.locked_until {
                return Ok(self
                    .refuse(ctx, &user, Method::Password, Refusal::Locked(until))
                    .await);
            }
            let remember = device.filter(|_| remember);
            // The accept's record goes with the step when nothing after it can fail.
            let ahead = remember.is_none().then(|| AuditAhead {
                ctx,
                reason: accept_reason(&pending, Factor::Totp),
            });
            return match self
                .check_login_code(&user, &code, record, read_now, lookup, ahead)
                .await?
            {
                Ok(accepted) => {
                    let CodeAccepted {
                        factor,
                        version,
                        audited,
                    } = accepted;
                    self.accept_audited(&pending, entry, factor, ctx, remember, version, audited)
                        .await
                }
                Err(r) => Ok(self.refuse(ctx, &user, Method::Code, r).await),
            };
        }
        // Without a code the lock, the factors and the devices decide: read now.
        let record = if read_now {
            record
        } else {
            self.keep_record(&user, self.store.load(&user, self.now()).await?)
        };
        // The lock first: a trusted device skips the code, not the lockout.
        if let Some(until) = record.locked_until {
            return Ok(self
                .refuse(ctx, &user, Method::Password, Refusal::Locked(until))
                .await);
        }
        let version = record.account.as_ref().map_or(0, |a| a.version);
        match answer {
            Some(Answer::Keyword) => match self.request_login_code(&user, ctx).await {
                Ok(delivery) => Ok(LoginStep::NeedCode {
                    pending,
                    notice: Some(delivery),
                }),
                Err(CoreError::Refused(r)) => Ok(LoginStep::Refused(r)),
                Err(e) => Err(e),
            },
            // (A code was checked above.)
            Some(Answer::Code(_)) | None => {
                if let Some(device) = device {
                    if self.is_trusted_device(&user, device).await? {
                        return self
                            .accept(&pending, entry, Factor::TrustedDevice, ctx, None, version)
                            .await;
                    }
                }
                let requirement = match &policy.place {
                    Some(place) => self.settings.policy.evaluate(
                        Place {
                            door: place.door,
                            client: place.client.as_deref(),
                        },
                        &entry.groups,
                    ),
                    None => Requirement::Optional,
                };
                if requirement == Requirement::Exempt {
                    return self
                        .accept(&pending, entry, Factor::Exempt, ctx, None, version)
                        .await;
                }
                let account = record.account.as_ref();
                let has_app = account.is_some_and(super::tokens::has_token);
                let has_address = account.is_some_and(|a| a.notification_address.is_some());
                if !has_app && !has_address {
                    return self
                        .without_factor(pending, entry, requirement, ctx, &policy, version)
                        .await;
                }
                if !policy.can_ask {
                    return Ok(self
                        .refuse(ctx, &user, Method::Code, Refusal::WrongCode)
                        .await);
                }
                Ok(LoginStep::NeedCode {
                    pending,
                    notice: None,
                })
            }
        }
    }

    /// A user with no second factor (no app, no notification address): `nullok`, then
    /// the rule — let in, let in with a notice until the deadline, enrolled at the
    /// login where the door can show it, or refused.
    async fn without_factor(
        &self,
        mut pending: PendingLogin,
        entry: UserEntry,
        requirement: Requirement,
        ctx: &RequestContext,
        policy: &DoorPolicy,
        version: u64,
    ) -> Result<LoginStep, CoreError> {
        let user = pending.user.clone();
        // `nullok` lets the user in whatever the rule says.
        let decided = if policy.nullok {
            WithoutFactor::Admit
        } else {
            requirement.without_factor(Date::from_unix(self.now().0))
        };
        match decided {
            WithoutFactor::Admit => {
                self.accept(&pending, entry, Factor::NotEnrolled, ctx, None, version)
                    .await
            }
            WithoutFactor::AdmitUntil(by) => {
                let step = self
                    .accept(&pending, entry, Factor::BeforeDeadline, ctx, None, version)
                    .await?;
                let notice = texts::enroll_before(self.settings.portal_url.as_deref(), by);
                Ok(match step {
                    LoginStep::Accepted(a) => LoginStep::Accepted(a.with_notice(notice)),
                    other => other,
                })
            }
            WithoutFactor::EnrollAtLogin if policy.can_enroll => {
                // The portal's rules: an activated account (checked by `enroll`), a
                // pending secret that only a code from it activates, audited, and the
                // warning when recovery will need the helpdesk.
                let enrollment = match self.enroll(&user, ctx).await {
                    Ok(e) => e,
                    Err(CoreError::Refused(r)) => return Ok(LoginStep::Refused(r)),
                    Err(e) => return Err(e),
                };
                // The compact form: through a RADIUS server it travels in one
                // Access-Challenge (4096 bytes).
                let qr = crate::qr::terminal_compact(&enrollment.otpauth_uri)?;
                let shown =
                    texts::enroll_now(&qr, &enrollment.secret, enrollment.warning.as_deref());
                pending.enrolling = true;
                Ok(LoginStep::Enroll { pending, shown })
            }
            WithoutFactor::EnrollAtLogin | WithoutFactor::Refuse => Ok(self
                .refuse(ctx, &user, Method::Password, Refusal::NotEnrolled)
                .await),
        }
    }

    /// The answer to a first-login enrollment: a code from the new app confirms it
    /// (the portal's `confirm_enrollment`, audited there) and lets the user in.
    async fn finish_enrollment(
        &self,
        pending: PendingLogin,
        entry: UserEntry,
        answer: Answer,
        ctx: &RequestContext,
        device: Option<&DeviceId>,
        remember: bool,
    ) -> Result<LoginStep, CoreError> {
        let user = pending.user.clone();
        let Answer::Code(code) = answer else {
            // No mailed code for a user with no address: the keyword is a wrong answer.
            return Ok(self
                .refuse(ctx, &user, Method::EnrollConfirm, Refusal::WrongCode)
                .await);
        };
        match self.confirm_enrollment(&user, &code, ctx).await {
            Ok(verified) => {
                let version = self
                    .store
                    .load(&user, self.now())
                    .await?
                    .account
                    .map_or(0, |a| a.version);
                let remember = device.filter(|_| remember);
                self.accept(&pending, entry, verified.factor(), ctx, remember, version)
                    .await
            }
            Err(CoreError::Refused(r)) => Ok(LoginStep::Refused(r)),
            Err(e) => Err(e),
        }
    }

    /// The accept: remembers the device (after a code, if the account is still the one
    /// the login saw), audits, and makes the [`Accepted`]. (A plain function returning
    /// [`Core::accept_audited`]'s future: no async layer more in the login's future.)
    fn accept<'a>(
        &'a self,
        pending: &'a PendingLogin,
        entry: UserEntry,
        factor: Factor,
        ctx: &'a RequestContext,
        remember: Option<&'a DeviceId>,
        account_version: u64,
    ) -> impl std::future::Future<Output = Result<LoginStep, CoreError>> + Send + 'a {
        self.accept_audited(pending, entry, factor, ctx, remember, account_version, None)
    }

    /// [`Core::accept`], where the code's step may have stored the accept's audit record
    /// already (`audited`): it is then only logged.
    #[allow(clippy::too_many_arguments)]
    async fn accept_audited(
        &self,
        pending: &PendingLogin,
        entry: UserEntry,
        factor: Factor,
        ctx: &RequestContext,
        remember: Option<&DeviceId>,
        account_version: u64,
        audited: Option<Prepared>,
    ) -> Result<LoginStep, CoreError> {
        let user = pending.user.clone();
        let mut remembered = None;
        if let (Some(device), true) = (remember, factor.is_code()) {
            remembered = self.remember_device(&user, device, account_version).await?;
        }
        match audited {
            Some(prepared) => self.audit.record_stored(prepared),
            None => {
                let reason = accept_reason(pending, factor);
                self.audit(
                    ctx,
                    user.as_str(),
                    factor.method(),
                    Outcome::Accept,
                    &reason,
                )
                .await;
            }
        }
        Ok(LoginStep::Accepted(Accepted::made(
            user, entry, factor, remembered,
        )))
    }

    async fn refuse(
        &self,
        ctx: &RequestContext,
        user: &UserName,
        method: Method,
        refusal: Refusal,
    ) -> LoginStep {
        self.reject(user.as_str(), ctx, method, &refusal).await;
        LoginStep::Refused(refusal)
    }

    /// The one bind: the entry, or the refusal.
    async fn directory_check(
        &self,
        user: &UserName,
        password: &[u8],
    ) -> Result<Result<UserEntry, Refusal>, CoreError> {
        Ok(match self.verify_password(user, password).await? {
            PasswordCheck::Verified(p) => Ok(p.entry().clone()),
            PasswordCheck::Refused(r) => Err(r),
        })
    }

    /// Checks a password against the directory (one bind).
    pub async fn verify_password(
        &self,
        user: &UserName,
        password: &[u8],
    ) -> Result<PasswordCheck, CoreError> {
        self.directory
            .verify_password(user, password)
            .await
            .map_err(|e| CoreError::backend(crate::Backend::Directory, e.to_string()))
    }

    /// Where an append-mode value splits, decided before the one bind:
    ///
    /// 1. a trailing code-length candidate (each length the user's tokens have, 6 to
    ///    8, then the mailed code's) that is a valid, unused code of this user (checked
    ///    without consuming anything: an 8-digit tail may be an 8-digit token's code or
    ///    the mailed one);
    /// 2. else the email keyword at the end;
    /// 3. else a trailing code-shaped candidate all the same (a wrong code is counted as
    ///    one, never taken as part of the password: guesses meet the lockout), the
    ///    length the user can have first;
    /// 4. else the whole value is the password.
    ///
    /// So a password that itself ends in 6 or 8 digits, or in the keyword, must be
    /// followed by a code in `auto` mode (README, "RADIUS"). The outstanding mailed
    /// code is read from the store only when no token's code is at the end, so a
    /// password ending in digits costs no round trip more.
    async fn split(
        &self,
        user: &UserName,
        value: &[u8],
        keyword: &str,
        record: &UserRecord,
    ) -> Result<Split, CoreError> {
        let email_len = self.settings.email_digits as usize;
        let tail = |n: usize| -> Option<&[u8]> {
            (n > 0 && value.len() > n)
                .then(|| value.split_at(value.len() - n).1)
                .filter(|t| t.iter().all(u8::is_ascii_digit))
        };
        // The code lengths the user's tokens have (6, 7, 8), then the mailed code's.
        let token_lengths: std::collections::BTreeSet<usize> = record
            .account
            .as_ref()
            .into_iter()
            .flat_map(|a| super::tokens::candidates(a, &self.settings.totp))
            .map(|c| c.params.digits as usize)
            .collect();
        let lengths: Vec<(usize, Length)> = token_lengths
            .iter()
            .map(|&n| (n, Length::Token))
            .chain(
                (!token_lengths.contains(&(self.settings.totp.digits as usize)))
                    .then_some((self.settings.totp.digits as usize, Length::App)),
            )
            .chain([(email_len, Length::Mailed)])
            .collect();
        let mut mailed = None;
        let cut = |n: usize, found: Option<TotpMatch>, certain: bool| {
            let (head, tail) = value.split_at(value.len() - n);
            Split {
                password: Zeroizing::new(head.to_vec()),
                answer: Some(Answer::Code(Zeroizing::new(
                    String::from_utf8_lossy(tail).into_owned(),
                ))),
                lookup: Lookup::Done(found),
                certain,
            }
        };
        // Each tail's TOTP match, computed once: the check after the bind reuses it.
        let mut matches: Vec<(usize, Option<TotpMatch>)> = Vec::with_capacity(lengths.len());
        for &(n, length) in &lengths {
            if let Some(t) = tail(n) {
                let code = String::from_utf8_lossy(t);
                let found = match matches.iter().find(|(m, _)| *m == n) {
                    Some((_, found)) => found.clone(),
                    None => self.totp_match(user, &code, record)?,
                };
                if length == Length::Mailed {
                    // Asked for only now: a code of the user's tokens at the end costs
                    // the store nothing before the login's one step.
                    mailed = self
                        .store
                        .peek_code(user, CodeSlot::Login, self.now())
                        .await?;
                }
                if self.is_unused_code(user, &code, record, found.as_ref(), mailed.as_ref()) {
                    return Ok(cut(n, found, true));
                }
                matches.push((n, found));
            }
        }
        let kw = keyword.as_bytes();
        if !kw.is_empty() && value.len() > kw.len() && value.ends_with(kw) {
            return Ok(Split {
                password: Zeroizing::new(value.split_at(value.len() - kw.len()).0.to_vec()),
                answer: Some(Answer::Keyword),
                lookup: Lookup::NotYet,
                certain: false,
            });
        }
        let has = |length: Length| match length {
            Length::Token => true,
            Length::App => false,
            Length::Mailed => mailed.is_some(),
        };
        let shaped = lengths
            .iter()
            .find(|(n, length)| has(*length) && tail(*n).is_some())
            .or_else(|| lengths.iter().find(|(n, _)| tail(*n).is_some()));
        if let Some((n, _)) = shaped {
            let found = matches
                .into_iter()
                .find(|(m, _)| m == n)
                .and_then(|(_, found)| found);
            return Ok(cut(*n, found, false));
        }
        Ok(Split {
            password: Zeroizing::new(value.to_vec()),
            answer: None,
            lookup: Lookup::NotYet,
            certain: false,
        })
    }

    /// A login with a mailed reset link (the portal's reset): one bind, then the link is
    /// consumed and the app and trusted devices removed, then the accept
    /// ([`Factor::ResetLink`]), which leads to app set-up. On its own task, like
    /// [`Core::login`].
    ///
    /// # Errors
    ///
    /// A backend failure (audited).
    pub async fn login_with_reset_link(
        self: &Arc<Self>,
        user: UserName,
        password: Zeroizing<Vec<u8>>,
        token: Zeroizing<String>,
        ctx: RequestContext,
    ) -> Result<LoginStep, CoreError> {
        let core = Arc::clone(self);
        run_to_completion(async move {
            let outcome = core.reset_link_inner(&user, &password, &token, &ctx).await;
            core.audit_failure(&ctx, &user, &outcome).await;
            outcome
        })
        .await
    }

    async fn reset_link_inner(
        &self,
        user: &UserName,
        password: &[u8],
        token: &str,
        ctx: &RequestContext,
    ) -> Result<LoginStep, CoreError> {
        let entry = match self.directory_check(user, password).await? {
            Ok(entry) => entry,
            Err(r) => return Ok(self.refuse(ctx, user, Method::Password, r).await),
        };
        match self.complete_reset(user, token, ctx).await {
            Ok(()) => {}
            Err(CoreError::Refused(r)) => return Ok(LoginStep::Refused(r)),
            Err(e) => return Err(e),
        }
        let pending = PendingLogin {
            user: user.clone(),
            vouched_by: None,
            entry: None,
            enrolling: false,
        };
        self.accept(&pending, entry, Factor::ResetLink, ctx, None, 0)
            .await
    }

    /// A fresh code for a signed-in user (the portal's "add the app to another device"):
    /// the same atomic check as at login. A refusal is audited as `method`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub async fn verify_code(
        &self,
        user: &UserName,
        code: &str,
        ctx: &RequestContext,
        method: Method,
    ) -> Result<Result<OtpVerified, Refusal>, CoreError> {
        let record = self.keep_record(user, self.store.load(user, self.now()).await?);
        if let Some(until) = record.locked_until {
            self.reject(user.as_str(), ctx, method, &Refusal::Locked(until))
                .await;
            return Ok(Err(Refusal::Locked(until)));
        }
        match self
            .check_login_code(user, code, record, true, Lookup::NotYet, None)
            .await?
        {
            Ok(accepted) => Ok(Ok(OtpVerified::made(user.clone(), accepted.factor))),
            Err(r) => {
                self.reject(user.as_str(), ctx, method, &r).await;
                Ok(Err(r))
            }
        }
    }

    /// Whether the user has a second factor (an app or a notification address): the
    /// portal's set-up session ends when one appears elsewhere.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub async fn has_second_factor(&self, user: &UserName) -> Result<bool, CoreError> {
        let record = self.store.load(user, self.now()).await?;
        Ok(record
            .account
            .is_some_and(|a| super::tokens::has_token(&a) || a.notification_address.is_some()))
    }

    /// Keeps a pending login in the store under a fresh random id, bound to the client,
    /// for [`CHALLENGE_TTL`] seconds and [`CHALLENGE_MAX_ANSWERS`] answers, so any
    /// instance can take the next round.
    pub async fn park(&self, pending: &PendingLogin, client: &str) -> Result<Challenge, CoreError> {
        let now = self.now();
        let id = random::hex_id::<16>(self.random.as_ref())?;
        let data = ChallengeData {
            user: pending.user.clone(),
            client: client.to_string(),
            by_client: pending.vouched_by.is_some(),
            created: now,
            enrolling: pending.enrolling,
        };
        let bytes = serde_json::to_vec(&data).map_err(|e| CoreError::Internal(e.to_string()))?;
        self.store
            .put_challenge(&data.user, &id, &bytes, CHALLENGE_TTL, now)
            .await?;
        Ok(Challenge { id })
    }

    /// Takes a parked login back: counts the answer (at most three), and checks that it
    /// is the same user through the same client. `None`: no such challenge (expired,
    /// answered too often, another user's or client's).
    pub async fn resume(
        &self,
        user: &UserName,
        id: &str,
        client: &str,
    ) -> Result<Option<PendingLogin>, CoreError> {
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(answer) = self
            .store
            .answer_challenge(user, id, CHALLENGE_MAX_ANSWERS, self.now())
            .await?
        else {
            return Ok(None);
        };
        let data: ChallengeData = serde_json::from_slice(&answer.data)
            .map_err(|e| CoreError::Corrupt(format!("challenge record: {e}")))?;
        if &data.user != user || data.client != client {
            return Ok(None);
        }
        Ok(Some(PendingLogin {
            user: data.user,
            vouched_by: data.by_client.then_some(data.client),
            entry: None,
            enrolling: data.enrolling,
        }))
    }

    /// A fresh random id (128 bits, hex) that is stored nowhere: the State of a
    /// challenge whose answer can only end in a reject.
    pub fn random_id(&self) -> Result<String, CoreError> {
        random::hex_id::<16>(self.random.as_ref())
    }

    /// Ends a challenge (answered, or replaced).
    pub async fn end_challenge(&self, user: &UserName, id: &str) -> Result<(), CoreError> {
        Ok(self.store.delete_challenge(user, id).await?)
    }
}

/// Runs `work` on a task of its own and waits for it. Dropping the returned future
/// stops the waiting, not the work.
async fn run_to_completion<F>(work: F) -> Result<LoginStep, CoreError>
where
    F: std::future::Future<Output = Result<LoginStep, CoreError>> + Send + 'static,
{
    // Boxed: the task then holds a pointer, not the flow's large future, which tokio
    // would otherwise copy several times per task (`perf` showed those copies as a
    // tenth of the server's CPU).
    tokio::spawn(Box::pin(work))
        .await
        .map_err(|e| CoreError::Internal(format!("the login task failed: {e}")))?
}
