//! What to answer: one Access-Request in, one [`Decision`] out. No sockets, no packet
//! bytes: the server loop decodes and verifies the packet, builds a [`Request`], calls
//! [`handle`], and encodes the decision. Every core error becomes [`Decision::Drop`]
//! (fail closed: no reply, so the NAS fails over), never an accept.
//!
//! Modes (SPEC §5):
//! - `append`: User-Password = password + code (6-digit app code or 8-digit mailed
//!   code), or password + the email keyword.
//! - `challenge`: User-Password = password; the answer is an Access-Challenge whose State
//!   the next request carries with the code.
//! - `auto`: append when the password with a code split off verifies, else challenge
//!   when the whole value verifies.

use otpgate_config::{RadiusClient, RadiusConfig, RadiusGroup, RadiusMode, Unenrolled};
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::directory::PasswordCheck;
use otpgate_core::service::{
    Accepted, ClientVouched, CodeCheck, CodeDelivery, DeviceId, FactorProof, PasswordProof,
};
use otpgate_core::user::UserName;
use otpgate_core::{Core, CoreError, Refusal};
use zeroize::Zeroizing;

/// The parts of an Access-Request that decide the answer.
#[derive(Debug, Default)]
pub struct Request {
    pub user_name: Vec<u8>,
    /// The unhidden User-Password, if present.
    pub password: Option<Zeroizing<Vec<u8>>>,
    pub state: Option<Vec<u8>>,
    pub calling_station_id: Option<String>,
    /// Set when the request carries CHAP, MS-CHAP or EAP: named in the log, rejected.
    pub other_method: Option<&'static str>,
}

/// A reply attribute chosen by group membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyAttribute {
    FilterId(String),
    Class(String),
    /// Tunnel-Type = VLAN, Tunnel-Medium-Type = IEEE-802, Tunnel-Private-Group-Id.
    Vlan(String),
    SessionTimeout(u32),
}

/// The answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Accept {
        user: String,
        attributes: Vec<ReplyAttribute>,
        log: String,
    },
    /// Sent after the reject delay, with a generic Reply-Message only.
    Reject { user: String, log: String },
    Challenge {
        user: String,
        state: Vec<u8>,
        message: String,
        log: String,
    },
    /// No reply at all (a backend failed): the NAS will try another server.
    Drop { user: String, log: String },
}

/// The prompt in an Access-Challenge.
pub const PROMPT: &str = "One-time password: ";
/// The Reply-Message of every reject: it reveals nothing.
pub const REJECT_MESSAGE: &str = "Authentication failed.";

/// Decides the answer to one request from `client`.
pub async fn handle(
    core: &Core,
    config: &RadiusConfig,
    client: &RadiusClient,
    request: Request,
) -> Decision {
    let shown_user = String::from_utf8_lossy(&request.user_name)
        .chars()
        .take(64)
        .collect::<String>();
    let ctx = RequestContext::new(Door::Radius, client.name.clone());
    match decide(core, config, client, &ctx, request).await {
        Ok(decision) => decision,
        Err(e) => {
            let log = match &e {
                CoreError::Backend { backend, message } => {
                    format!("{} down: {message}", backend.as_str())
                }
                other => other.to_string(),
            };
            core.audit(&ctx, &shown_user, "radius", "error", &log).await;
            Decision::Drop {
                user: shown_user,
                log,
            }
        }
    }
}

async fn decide(
    core: &Core,
    config: &RadiusConfig,
    client: &RadiusClient,
    ctx: &RequestContext,
    request: Request,
) -> Result<Decision, CoreError> {
    let shown = String::from_utf8_lossy(&request.user_name)
        .chars()
        .take(64)
        .collect::<String>();
    if let Some(method) = request.other_method {
        return Ok(reject(
            core,
            ctx,
            &shown,
            method,
            Refusal::WrongPassword,
            format!("{method} is not supported (PAP only)"),
        )
        .await);
    }
    let user = match UserName::from_bytes(&request.user_name) {
        Ok(u) => u,
        Err(e) => {
            return Ok(reject(
                core,
                ctx,
                &shown,
                "pap",
                e.into(),
                "malformed User-Name".into(),
            )
            .await);
        }
    };
    let Some(password) = request.password else {
        return Ok(reject(
            core,
            ctx,
            &shown,
            "pap",
            Refusal::WrongPassword,
            "no User-Password".into(),
        )
        .await);
    };
    let round = Round {
        core,
        config,
        client,
        ctx,
        user: &user,
        calling_station: request.calling_station_id.as_deref(),
    };
    if let Some(state) = request.state {
        return round.answer(&state, &password).await;
    }
    if client.password_checked_by_client {
        return round.vouched(&password).await;
    }
    round.first(&password).await
}

/// Audits and builds a reject.
async fn reject(
    core: &Core,
    ctx: &RequestContext,
    user: &str,
    method: &str,
    refusal: Refusal,
    log: String,
) -> Decision {
    core.reject(user, ctx, method, &refusal).await;
    Decision::Reject {
        user: user.to_string(),
        log,
    }
}

/// One request's context.
struct Round<'a> {
    core: &'a Core,
    config: &'a RadiusConfig,
    client: &'a RadiusClient,
    ctx: &'a RequestContext,
    user: &'a UserName,
    calling_station: Option<&'a str>,
}

impl Round<'_> {
    fn device(&self) -> Option<DeviceId> {
        let station = self
            .calling_station
            .filter(|_| self.client.trust_calling_station)?;
        Some(DeviceId {
            door: "radius".into(),
            identifier: format!("{}|{station}", self.client.name),
            label: format!("{station} via {}", self.client.name),
        })
    }

    async fn reject(&self, method: &str, refusal: Refusal) -> Decision {
        let log = refusal.to_string();
        reject(
            self.core,
            self.ctx,
            self.user.as_str(),
            method,
            refusal,
            log,
        )
        .await
    }

    async fn accept(
        &self,
        password: PasswordProof,
        factor: FactorProof,
    ) -> Result<Decision, CoreError> {
        let device = self.device();
        let remember = match &factor {
            FactorProof::Otp(_) => device.as_ref(),
            _ => None,
        };
        let accepted = match self.core.accept(password, factor, self.ctx, remember).await {
            Ok(a) => a,
            Err(CoreError::Refused(r)) => return Ok(self.reject("accept", r).await),
            Err(e) => return Err(e),
        };
        Ok(Decision::Accept {
            user: self.user.to_string(),
            attributes: reply_attributes(&self.config.groups, &accepted),
            log: accepted.method.to_string(),
        })
    }

    /// Begins a challenge round: "One-time password: ", or `message` before it.
    async fn challenge(
        &self,
        password: &PasswordProof,
        message: Option<String>,
    ) -> Result<Decision, CoreError> {
        let challenge = self
            .core
            .begin_challenge(password, &self.client.name)
            .await?;
        Ok(Decision::Challenge {
            user: self.user.to_string(),
            state: challenge.id.into_bytes(),
            message: match message {
                Some(m) => format!("{m}\n{PROMPT}"),
                None => PROMPT.to_string(),
            },
            log: "challenge".into(),
        })
    }

    /// The email keyword: mail a code (or queue a helpdesk request) and challenge again.
    async fn keyword(&self, password: PasswordProof) -> Result<Decision, CoreError> {
        let message = match self.core.request_login_code(self.user, self.ctx).await {
            Ok(CodeDelivery::Mailed { masked_address }) => {
                format!("A one-time password was mailed to {masked_address}.")
            }
            Ok(CodeDelivery::QueuedForHelpdesk) => {
                "No notification address is registered: your request was sent to the helpdesk."
                    .to_string()
            }
            Err(CoreError::Refused(r)) => return Ok(self.reject("email-otp", r).await),
            Err(e) => return Err(e),
        };
        self.challenge(&password, Some(message)).await
    }

    /// Checks a code and accepts, or rejects.
    async fn code(&self, password: PasswordProof, code: &str) -> Result<Decision, CoreError> {
        match self.core.verify_code(self.user, code).await? {
            CodeCheck::Verified(otp) => self.accept(password, FactorProof::Otp(otp)).await,
            CodeCheck::Refused(r) => Ok(self.reject("code", r).await),
        }
    }

    /// After the password: a trusted device, the unenrolled policy, or a challenge.
    async fn after_password(&self, password: PasswordProof) -> Result<Decision, CoreError> {
        if let Some(device) = self.device() {
            if let Some(trusted) = self.core.check_trusted(self.user, &device).await? {
                return self.accept(password, FactorProof::Trusted(trusted)).await;
            }
        }
        let status = self.core.factor_status(self.user).await?;
        if let Some(until) = status.locked_until {
            return Ok(self.reject("password", Refusal::Locked(until)).await);
        }
        if let Some(not_enrolled) = status.not_enrolled() {
            if self.config.unenrolled == Unenrolled::PasswordOnly {
                return self
                    .accept(password, FactorProof::NotEnrolled(not_enrolled))
                    .await;
            }
            if !status.has_address {
                return Ok(self.reject("password", Refusal::NotEnrolled).await);
            }
        }
        self.challenge(&password, None).await
    }

    /// A first request (no State).
    async fn first(&self, value: &[u8]) -> Result<Decision, CoreError> {
        let mode = self.config.mode;
        if mode != RadiusMode::Challenge {
            if let Some((password, tail)) = self.split(value).await? {
                return match tail {
                    Tail::Keyword => self.keyword(password).await,
                    Tail::Code(code) => self.code(password, &code).await,
                };
            }
            if mode == RadiusMode::Append {
                return Ok(self.reject("password", Refusal::WrongPassword).await);
            }
        }
        match self.core.verify_password(self.user, value).await? {
            PasswordCheck::Verified(p) => self.after_password(PasswordProof::Verified(p)).await,
            PasswordCheck::Refused(r) => Ok(self.reject("password", r).await),
        }
    }

    /// Tries password+code splits (6, then 8 digits) and password+keyword; returns the
    /// verified password and what followed it.
    async fn split(&self, value: &[u8]) -> Result<Option<(PasswordProof, Tail)>, CoreError> {
        let settings = self.core.settings();
        let keyword = self.config.email_keyword.as_bytes();
        let mut candidates: Vec<(usize, bool)> = Vec::new();
        for digits in [
            settings.totp.digits as usize,
            settings.email_digits as usize,
        ] {
            if value.len() > digits && value.iter().rev().take(digits).all(u8::is_ascii_digit) {
                candidates.push((value.len() - digits, false));
            }
        }
        if value.len() > keyword.len() && value.ends_with(keyword) {
            candidates.push((value.len() - keyword.len(), true));
        }
        candidates.dedup();
        for (at, is_keyword) in candidates {
            let (head, tail) = value.split_at(at);
            match self.core.verify_password(self.user, head).await? {
                PasswordCheck::Verified(p) => {
                    let tail = if is_keyword {
                        Tail::Keyword
                    } else {
                        Tail::Code(String::from_utf8_lossy(tail).into_owned())
                    };
                    return Ok(Some((PasswordProof::Verified(p), tail)));
                }
                PasswordCheck::Refused(Refusal::WrongPassword | Refusal::EmptyPassword) => continue,
                // Unknown or not activated: no other split can do better.
                PasswordCheck::Refused(_) => break,
            }
        }
        Ok(None)
    }

    /// A request that answers a challenge.
    async fn answer(&self, state: &[u8], value: &[u8]) -> Result<Decision, CoreError> {
        let id = String::from_utf8_lossy(state);
        let Some(password) = self
            .core
            .resume_challenge(self.user, &id, &self.client.name)
            .await?
        else {
            return Ok(self.reject("challenge", Refusal::NothingOutstanding).await);
        };
        let answer = String::from_utf8_lossy(value);
        if answer
            .trim()
            .eq_ignore_ascii_case(&self.config.email_keyword)
        {
            self.core.end_challenge(self.user, &id).await?;
            return self.keyword(password).await;
        }
        let decision = self.code(password, answer.trim()).await?;
        if matches!(decision, Decision::Accept { .. }) {
            self.core.end_challenge(self.user, &id).await?;
        }
        Ok(decision)
    }

    /// A client that checked the password itself sends the code alone (or the keyword,
    /// or an empty value to ask whether the device is trusted).
    async fn vouched(&self, value: &[u8]) -> Result<Decision, CoreError> {
        let proof = || {
            PasswordProof::CheckedByClient(ClientVouched::new(
                self.user.clone(),
                self.client.name.clone(),
            ))
        };
        let text = String::from_utf8_lossy(value);
        let text = text.trim();
        if text.eq_ignore_ascii_case(&self.config.email_keyword) {
            return self.keyword(proof()).await;
        }
        if text.is_empty() {
            return self.after_password(proof()).await;
        }
        self.code(proof(), text).await
    }
}

enum Tail {
    Keyword,
    Code(String),
}

/// The reply attributes for the groups the user is in (group names compared without case).
pub fn reply_attributes(groups: &[RadiusGroup], accepted: &Accepted) -> Vec<ReplyAttribute> {
    let mut out = Vec::new();
    for g in groups {
        if !accepted
            .entry
            .groups
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&g.group))
        {
            continue;
        }
        if let Some(v) = &g.filter_id {
            out.push(ReplyAttribute::FilterId(v.clone()));
        }
        if let Some(v) = &g.class {
            out.push(ReplyAttribute::Class(v.clone()));
        }
        if let Some(v) = &g.vlan {
            out.push(ReplyAttribute::Vlan(v.clone()));
        }
        if let Some(v) = g.session_timeout {
            out.push(ReplyAttribute::SessionTimeout(v));
        }
    }
    out
}
