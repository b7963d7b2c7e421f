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
//! - `auto`: the core's flow decides the split before its one bind: a trailing code
//!   that is valid and unused for this user (or the keyword) is split off; otherwise
//!   the whole value is the password and a challenge follows.

use std::sync::Arc;

use otpgate_config::{PolicyDoor, RadiusClient, RadiusConfig, RadiusGroup, RadiusMode};
use otpgate_core::audit::{Door, Method, Outcome, RequestContext};
use otpgate_core::directory::UserEntry;
use otpgate_core::service::{
    Answer, ContinueRequest, Credential, DeviceId, DoorPolicy, LoginRequest, LoginStep,
    PendingLogin, PolicyPlace, texts,
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
    pub other_method: Option<Method>,
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
        /// A notice for the user (Reply-Message): where to enroll, before a deadline.
        message: Option<String>,
    },
    /// Sent after the reject delay, with a generic Reply-Message (and, for a client
    /// with `reject_reasons`, the `reason` in an otpgate vendor attribute).
    Reject {
        user: String,
        log: String,
        reason: Option<&'static str>,
        /// In place of the generic Reply-Message: only for a user whose password was
        /// right and who has no second factor, told where to enroll (SPEC §5).
        message: Option<String>,
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
pub const PROMPT: &str = texts::PROMPT;
/// The Reply-Message of every reject: it reveals nothing.
pub const REJECT_MESSAGE: &str = texts::REJECT_MESSAGE;

/// Decides the answer to one request from `client`. The order of the login is the
/// core's flow; this maps the packet to a [`LoginRequest`] (or a resumed challenge)
/// and the flow's step back to a RADIUS decision. Every core error becomes
/// [`Decision::Drop`] (audited by the flow), never an accept.
pub async fn handle(
    core: &Arc<Core>,
    config: &RadiusConfig,
    client: &RadiusClient,
    request: Request,
) -> Decision {
    let shown_user = String::from_utf8_lossy(&request.user_name)
        .chars()
        .take(64)
        .collect::<String>();
    let ctx = RequestContext::new(Door::Radius, client.name.clone());
    match decide(core, config, client, &ctx, &shown_user, request).await {
        Ok(decision) => decision,
        Err(e) => {
            let (log, backend) = match &e {
                CoreError::Backend { backend, message } => (
                    format!("{} down: {message}", backend.as_str()),
                    Some(backend.as_str()),
                ),
                other => (other.to_string(), None),
            };
            Decision::Drop {
                user: shown_user,
                log,
                backend,
            }
        }
    }
}

async fn decide(
    core: &Arc<Core>,
    config: &RadiusConfig,
    client: &RadiusClient,
    ctx: &RequestContext,
    shown: &str,
    request: Request,
) -> Result<Decision, CoreError> {
    if let Some(method) = request.other_method {
        let log = format!(
            "{} is not supported (PAP only)",
            method.as_str().to_uppercase()
        );
        core.audit(ctx, shown, method, Outcome::Reject, &log).await;
        return Ok(Decision::Reject {
            user: shown.to_string(),
            log,
            reason: None,
            message: None,
        });
    }
    let user = match UserName::from_bytes(&request.user_name) {
        Ok(u) => u,
        Err(e) => {
            let refusal: Refusal = e.into();
            core.reject(shown, ctx, Method::Password, &refusal).await;
            return Ok(reject(shown, "malformed User-Name".into(), &refusal));
        }
    };
    let Some(password) = request.password else {
        core.reject(shown, ctx, Method::Password, &Refusal::WrongPassword)
            .await;
        return Ok(reject(
            shown,
            "no User-Password".into(),
            &Refusal::WrongPassword,
        ));
    };
    let device = device(client, request.calling_station_id.as_deref());
    let remember = device.is_some();
    if let Some(state) = request.state {
        return answer(core, config, client, ctx, &user, &state, &password, device).await;
    }
    let keyword = config.email_keyword.clone();
    let (credential, answer) = match client.password_vouch() {
        // A client that checked the password itself sends the code alone (or the
        // keyword, or nothing to ask whether the device is trusted).
        Some(vouch) => (
            Credential::Vouched(vouch),
            Answer::parse(&String::from_utf8_lossy(&password), &keyword),
        ),
        None if config.mode == RadiusMode::Challenge => (Credential::Password(password), None),
        None => (
            Credential::PasswordWithCode {
                value: password,
                keyword,
            },
            None,
        ),
    };
    let step = core
        .login(LoginRequest {
            user: user.clone(),
            ctx: ctx.clone(),
            credential,
            answer,
            device,
            remember,
            policy: DoorPolicy {
                // `[[policy]]` by client; a pam_otpgate host's requests are the door "pam".
                place: Some(PolicyPlace {
                    door: if client.pam_host {
                        PolicyDoor::Pam
                    } else {
                        PolicyDoor::Radius
                    },
                    client: Some(client.name.clone()),
                }),
                nullok: false,
                // An append-mode NAS may not show a challenge; a vouching PAM host does.
                can_ask: config.mode != RadiusMode::Append || client.password_checked_by_client,
                // Only a pam_otpgate host shows a QR code in a terminal; a NAS's user is
                // told the portal's URL.
                can_enroll: client.pam_host,
            },
        })
        .await?;
    step_to_decision(core, config, client, &user, step).await
}

/// A request that answers a challenge: the parked login and the answer go back into
/// the flow.
#[allow(clippy::too_many_arguments)]
async fn answer(
    core: &Arc<Core>,
    config: &RadiusConfig,
    client: &RadiusClient,
    ctx: &RequestContext,
    user: &UserName,
    state: &[u8],
    value: &[u8],
    device: Option<DeviceId>,
) -> Result<Decision, CoreError> {
    let id = String::from_utf8_lossy(state).into_owned();
    let Some(pending) = core.resume(user, &id, &client.name).await? else {
        let refusal = Refusal::NothingOutstanding;
        core.reject(user.as_str(), ctx, Method::Challenge, &refusal)
            .await;
        return Ok(reject(user.as_str(), refusal.to_string(), &refusal));
    };
    let text = Zeroizing::new(String::from_utf8_lossy(value).into_owned());
    let answer = Answer::parse(&text, &config.email_keyword)
        .unwrap_or_else(|| Answer::Code(Zeroizing::new(String::new())));
    let remember = device.is_some();
    let step = core
        .continue_login(ContinueRequest {
            pending,
            answer,
            ctx: ctx.clone(),
            device,
            remember,
        })
        .await?;
    // The answer is spent either way: a keyword parks a new challenge, an accept or a
    // reject ends this one. A State left behind expires in 120 s and takes at most
    // three answers, each needing a fresh code, so a failure to delete it must not
    // turn the decision into silence.
    if let Err(e) = core.end_challenge(user, &id).await {
        tracing::warn!(user = %user, error = %e, "could not delete an answered challenge");
    }
    step_to_decision(core, config, client, user, step).await
}

/// The flow's step as a RADIUS decision.
async fn step_to_decision(
    core: &Core,
    config: &RadiusConfig,
    client: &RadiusClient,
    user: &UserName,
    step: LoginStep,
) -> Result<Decision, CoreError> {
    Ok(match step {
        LoginStep::Accepted(accepted) => Decision::Accept {
            user: user.to_string(),
            attributes: reply_attributes(&config.groups, accepted.entry()),
            log: accepted.factor().method().to_string(),
            message: accepted.notice().map(str::to_string),
        },
        LoginStep::NeedCode { pending, notice } => {
            challenge(core, client, &pending, notice.as_ref().map(texts::delivery)).await?
        }
        // Enrollment at the first login on a pam_otpgate host: the QR code, the secret
        // and the prompt in one Access-Challenge; the answer confirms the new app.
        LoginStep::Enroll { pending, shown }
            if client.pam_host && shown.len() <= MAX_ENROLLMENT_TEXT =>
        {
            challenge(core, client, &pending, Some(shown)).await?
        }
        LoginStep::Enroll { shown, .. } => {
            tracing::warn!(
                user = %user,
                client = %client.name,
                bytes = shown.len(),
                "radius: an enrollment at the login does not fit one Access-Challenge; told where to enroll instead"
            );
            not_enrolled(core, config, client, user.as_str()).await?
        }
        LoginStep::Refused(Refusal::NotEnrolled) => {
            not_enrolled(core, config, client, user.as_str()).await?
        }
        LoginStep::Refused(r) => reject(user.as_str(), r.to_string(), &r),
    })
}

/// The longest enrollment text (QR code, secret, warning) an Access-Challenge carries:
/// 4096 bytes less the header (20), Message-Authenticator (18), State (34), the prompt
/// and two bytes per Reply-Message attribute of 253, with room for Proxy-State.
const MAX_ENROLLMENT_TEXT: usize = 3_700;

/// A user whose password was right, with no second factor that their policy requires:
/// told where to enroll (SPEC §5) — in a reject, or, in `challenge` mode for a NAS, in
/// an Access-Challenge whose answer ends in a reject (its State is never parked). A
/// pam_otpgate host with `reject_reasons` gets the plain reject with its reason
/// (`nullok` decides there).
async fn not_enrolled(
    core: &Core,
    config: &RadiusConfig,
    client: &RadiusClient,
    user: &str,
) -> Result<Decision, CoreError> {
    let message = texts::enroll_at(core.settings().portal_url.as_deref());
    if config.mode == RadiusMode::Challenge && !client.password_checked_by_client {
        return Ok(Decision::Challenge {
            user: user.to_string(),
            state: core.random_id()?.into_bytes(),
            message,
            log: "no second factor: told where to enroll".into(),
        });
    }
    let refusal = Refusal::NotEnrolled;
    Ok(Decision::Reject {
        user: user.to_string(),
        log: refusal.to_string(),
        reason: reject_reason(&refusal),
        // Also to a pam_otpgate host (its reason attribute decides `nullok`): the
        // module shows the user where to enroll.
        message: Some(message),
    })
}

/// Parks the pending login and asks for the code: "One-time password: ", or a notice
/// before it.
async fn challenge(
    core: &Core,
    client: &RadiusClient,
    pending: &PendingLogin,
    notice: Option<String>,
) -> Result<Decision, CoreError> {
    let challenge = core.park(pending, &client.name).await?;
    Ok(Decision::Challenge {
        user: pending.user().to_string(),
        state: challenge.id.into_bytes(),
        message: texts::prompt_after(notice.as_deref()),
        log: "challenge".into(),
    })
}

fn reject(user: &str, log: String, refusal: &Refusal) -> Decision {
    Decision::Reject {
        user: user.to_string(),
        log,
        reason: reject_reason(refusal),
        message: None,
    }
}

/// The device a client's request comes from, for clients that trust stations.
fn device(client: &RadiusClient, calling_station: Option<&str>) -> Option<DeviceId> {
    let station = calling_station.filter(|_| client.trust_calling_station)?;
    Some(DeviceId {
        door: Door::Radius,
        identifier: format!("{}|{station}", client.name),
        label: format!("{station} via {}", client.name),
    })
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

pub use otpgate_core::policy::group_matches;

/// The reply attributes for the groups the user is in, in configuration order.
pub fn reply_attributes(groups: &[RadiusGroup], entry: &UserEntry) -> Vec<ReplyAttribute> {
    let mut out = Vec::new();
    for g in groups {
        if !entry.groups.iter().any(|m| group_matches(m, &g.group)) {
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

    fn accepted(groups: &[&str]) -> UserEntry {
        UserEntry {
            name: UserName::parse("alice").unwrap(),
            dn: "uid=alice,ou=people,dc=example,dc=org".into(),
            activated: true,
            mail: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            display_name: None,
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
