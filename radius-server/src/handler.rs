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
    /// Sent after the reject delay, with a generic Reply-Message only (and, for a
    /// client with `reject_reasons`, the `reason` in an otpgate vendor attribute).
    Reject {
        user: String,
        log: String,
        reason: Option<&'static str>,
    },
    Challenge {
        user: String,
        state: Vec<u8>,
        message: String,
        log: String,
    },
    /// No reply at all (a backend failed): the NAS will try another server.
    Drop {
        user: String,
        log: String,
        /// The backend that failed ("directory", "store", "mail"), for metrics; `None`
        /// for other errors (corrupt data, configuration, internal).
        backend: Option<&'static str>,
    },
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
            let (log, backend) = match &e {
                CoreError::Backend { backend, message } => (
                    format!("{} down: {message}", backend.as_str()),
                    Some(backend.as_str()),
                ),
                other => (other.to_string(), None),
            };
            core.audit(&ctx, &shown_user, "radius", "error", &log).await;
            Decision::Drop {
                user: shown_user,
                log,
                backend,
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
        let log = format!("{method} is not supported (PAP only)");
        core.audit(ctx, &shown, method, "reject", &log).await;
        return Ok(Decision::Reject {
            user: shown,
            log,
            reason: None,
        });
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
        reason: reject_reason(&refusal),
    }
}

/// What a client with `reject_reasons` is told about a refusal: the distinctions PAM
/// makes (PAM_USER_UNKNOWN, PAM_MAXTRIES, `nullok`); nothing for the rest.
pub fn reject_reason(refusal: &Refusal) -> Option<&'static str> {
    match refusal {
        Refusal::UnknownUser => Some("unknown-user"),
        Refusal::Locked(_) => Some("locked"),
        Refusal::NotEnrolled => Some("not-enrolled"),
        _ => None,
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

    /// After the password alone: the lock, a trusted device, the unenrolled policy,
    /// then a challenge (or, where the client cannot take one, a reject).
    ///
    /// The lock comes first: a trusted device skips the code, not the lockout.
    async fn after_password(
        &self,
        password: PasswordProof,
        may_challenge: bool,
    ) -> Result<Decision, CoreError> {
        let status = self.core.factor_status(self.user).await?;
        if let Some(until) = status.locked_until {
            return Ok(self.reject("password", Refusal::Locked(until)).await);
        }
        if let Some(device) = self.device() {
            if let Some(trusted) = self.core.check_trusted(self.user, &device).await? {
                return self.accept(password, FactorProof::Trusted(trusted)).await;
            }
        }
        // `password-only` lets in users with no second factor at all; a user with a
        // notification address has one (the mailed code) and is asked for it.
        if !status.has_address && self.config.unenrolled == Unenrolled::PasswordOnly {
            if let Some(not_enrolled) = status.not_enrolled() {
                return self
                    .accept(password, FactorProof::NotEnrolled(not_enrolled))
                    .await;
            }
        }
        if !status.has_totp && !status.has_address {
            return Ok(self.reject("password", Refusal::NotEnrolled).await);
        }
        if !may_challenge {
            return Ok(self.reject("password", Refusal::WrongCode).await);
        }
        self.challenge(&password, None).await
    }

    /// A first request (no State).
    async fn first(&self, value: &[u8]) -> Result<Decision, CoreError> {
        let mode = self.config.mode;
        if mode != RadiusMode::Challenge {
            match self.split(value).await? {
                Split::Found(password, Tail::Keyword) => return self.keyword(password).await,
                Split::Found(password, Tail::Code(code)) => {
                    return self.code(password, &code).await;
                }
                // Unknown or not activated: the whole value cannot do better.
                Split::Refused(r) => return Ok(self.reject("password", r).await),
                Split::NoMatch => {}
            }
        }
        // The whole value as the password: a challenge follows in `challenge` and
        // `auto` modes; in `append` mode only a trusted device or the unenrolled
        // policy can let it in (an append-mode NAS may not show a challenge).
        match self.core.verify_password(self.user, value).await? {
            PasswordCheck::Verified(p) => {
                self.after_password(PasswordProof::Verified(p), mode != RadiusMode::Append)
                    .await
            }
            PasswordCheck::Refused(r) => Ok(self.reject("password", r).await),
        }
    }

    /// Tries password+code splits (TOTP digits, then email digits) and
    /// password+keyword; returns the verified password and what followed it.
    async fn split(&self, value: &[u8]) -> Result<Split, CoreError> {
        let settings = self.core.settings();
        for (at, is_keyword) in split_points(
            value,
            &[
                settings.totp.digits as usize,
                settings.email_digits as usize,
            ],
            self.config.email_keyword.as_bytes(),
        ) {
            let (head, tail) = value.split_at(at);
            match self.core.verify_password(self.user, head).await? {
                PasswordCheck::Verified(p) => {
                    let tail = if is_keyword {
                        Tail::Keyword
                    } else {
                        Tail::Code(String::from_utf8_lossy(tail).into_owned())
                    };
                    return Ok(Split::Found(PasswordProof::Verified(p), tail));
                }
                PasswordCheck::Refused(Refusal::WrongPassword | Refusal::EmptyPassword) => continue,
                PasswordCheck::Refused(r) => return Ok(Split::Refused(r)),
            }
        }
        Ok(Split::NoMatch)
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
            // The code is consumed and the accept audited; a State left behind expires
            // in 120 s and takes at most three answers, each needing a fresh code. So a
            // failure to delete it must not turn this accept into silence.
            if let Err(e) = self.core.end_challenge(self.user, &id).await {
                tracing::warn!(user = %self.user, error = %e, "could not delete an answered challenge");
            }
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
        // The client vouches for the password, not for the directory entry: an unknown
        // or not activated user is refused here, before any policy (for example a PAM
        // host's `nullok`) could let them in as "not enrolled".
        match self.core.lookup(self.user).await? {
            None => {
                return Ok(self
                    .reject("password-by-client", Refusal::UnknownUser)
                    .await);
            }
            Some(entry) if !entry.activated => {
                return Ok(self
                    .reject("password-by-client", Refusal::NotActivated)
                    .await);
            }
            Some(_) => {}
        }
        let text = String::from_utf8_lossy(value);
        let text = text.trim();
        if text.eq_ignore_ascii_case(&self.config.email_keyword) {
            return self.keyword(proof()).await;
        }
        if text.is_empty() {
            return self.after_password(proof(), true).await;
        }
        self.code(proof(), text).await
    }
}

enum Tail {
    Keyword,
    Code(String),
}

/// What splitting an append-mode value found.
enum Split {
    /// The head is the password; the tail is a code or the keyword.
    Found(PasswordProof, Tail),
    /// The user is unknown or not activated: no split can do better.
    Refused(Refusal),
    /// No split bound.
    NoMatch,
}

/// Where `value` may split into password + code (`false`) or password + keyword
/// (`true`), in the order to try: each code length (the TOTP's first), then the
/// keyword. The head is never empty.
fn split_points(value: &[u8], code_lengths: &[usize], keyword: &[u8]) -> Vec<(usize, bool)> {
    let mut out: Vec<(usize, bool)> = Vec::new();
    for &digits in code_lengths {
        if digits > 0
            && value.len() > digits
            && value.iter().rev().take(digits).all(u8::is_ascii_digit)
            && !out.contains(&(value.len() - digits, false))
        {
            out.push((value.len() - digits, false));
        }
    }
    if !keyword.is_empty() && value.len() > keyword.len() && value.ends_with(keyword) {
        out.push((value.len() - keyword.len(), true));
    }
    out
}

/// Whether a directory group value (`memberOf`: a DN such as
/// `cn=vpn-staff,ou=groups,dc=example,dc=org`, or a plain name) is the configured
/// `group`, which may be written as the whole DN or as the name (the first RDN's
/// value). Compared without case, as LDAP compares these.
pub fn group_matches(member_of: &str, group: &str) -> bool {
    if member_of.trim().eq_ignore_ascii_case(group.trim()) {
        return true;
    }
    let first_rdn = member_of.split(',').next().unwrap_or_default();
    match first_rdn.split_once('=') {
        Some((_, name)) => name.trim().eq_ignore_ascii_case(group.trim()),
        None => false,
    }
}

/// The reply attributes for the groups the user is in, in configuration order.
pub fn reply_attributes(groups: &[RadiusGroup], accepted: &Accepted) -> Vec<ReplyAttribute> {
    let mut out = Vec::new();
    for g in groups {
        if !accepted
            .entry
            .groups
            .iter()
            .any(|m| group_matches(m, &g.group))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_points_try_the_totp_length_then_the_mailed_length_then_the_keyword() {
        assert_eq!(
            split_points(b"secret12345678", &[6, 8], b"email"),
            vec![(8, false), (6, false)]
        );
        assert_eq!(
            split_points(b"secret123456", &[6, 8], b"email"),
            vec![(6, false)]
        );
        assert_eq!(
            split_points(b"secretemail", &[6, 8], b"email"),
            vec![(6, true)]
        );
        // Equal lengths are tried once.
        assert_eq!(
            split_points(b"pw123456", &[6, 6], b"email"),
            vec![(2, false)]
        );
    }

    #[test]
    fn split_points_never_leave_an_empty_password() {
        assert!(split_points(b"123456", &[6, 8], b"email").is_empty());
        assert!(split_points(b"email", &[6, 8], b"email").is_empty());
        assert!(split_points(b"", &[6, 8], b"email").is_empty());
        assert_eq!(
            split_points(b"1123456", &[6, 8], b"email"),
            vec![(1, false)]
        );
    }

    #[test]
    fn split_points_need_digits() {
        assert!(split_points(b"secret12345a", &[6, 8], b"email").is_empty());
        assert!(split_points(b"secret", &[6, 8], b"email").is_empty());
        assert!(split_points(b"secretEMAIL", &[6, 8], b"email").is_empty());
    }

    #[test]
    fn groups_match_by_dn_or_name_without_case() {
        let dn = "cn=vpn-staff,ou=groups,dc=example,dc=org";
        assert!(group_matches(dn, "vpn-staff"));
        assert!(group_matches(dn, "VPN-Staff"));
        assert!(group_matches(
            dn,
            "CN=vpn-staff,ou=groups,dc=example,dc=org"
        ));
        assert!(group_matches("vpn-staff", "vpn-staff"));
        assert!(!group_matches(dn, "vpn"));
        assert!(!group_matches(dn, "groups"));
        assert!(!group_matches("cn=vpn-staff-x,ou=groups", "vpn-staff"));
    }

    fn accepted(groups: &[&str]) -> Accepted {
        let user = UserName::parse("alice").unwrap();
        Accepted {
            entry: otpgate_core::directory::UserEntry {
                name: user.clone(),
                dn: "uid=alice,ou=people,dc=example,dc=org".into(),
                activated: true,
                mail: None,
                groups: groups.iter().map(|g| g.to_string()).collect(),
                display_name: None,
            },
            user,
            method: "totp",
            remembered: None,
        }
    }

    #[test]
    fn reply_attributes_follow_group_membership_in_configuration_order() {
        let groups = vec![
            RadiusGroup {
                group: "vpn-staff".into(),
                filter_id: Some("staff".into()),
                class: None,
                vlan: Some("120".into()),
                session_timeout: Some(28_800),
            },
            RadiusGroup {
                group: "students".into(),
                filter_id: Some("students".into()),
                class: Some("student".into()),
                vlan: None,
                session_timeout: None,
            },
            RadiusGroup {
                group: "otp-admins".into(),
                filter_id: None,
                class: Some("admin".into()),
                vlan: None,
                session_timeout: None,
            },
        ];
        let alice = accepted(&[
            "cn=vpn-staff,ou=groups,dc=example,dc=org",
            "cn=otp-admins,ou=groups,dc=example,dc=org",
        ]);
        assert_eq!(
            reply_attributes(&groups, &alice),
            vec![
                ReplyAttribute::FilterId("staff".into()),
                ReplyAttribute::Vlan("120".into()),
                ReplyAttribute::SessionTimeout(28_800),
                ReplyAttribute::Class("admin".into()),
            ]
        );
        assert!(reply_attributes(&groups, &accepted(&[])).is_empty());
    }
}
