//! Server mode: a RADIUS client of `otpgate serve` (the project's own codec and
//! blocking [`Client`]: failover in order, retransmits, timeouts, Message-Authenticator
//! on every request and required on every reply). The host holds only its shared
//! secret.
//!
//! - `mode=otp-only`: the first request carries an empty User-Password. The server's
//!   client entry must say `password_checked_by_client = true`; it then checks the lock,
//!   a trusted host and enrollment and answers Access-Challenge (ask for the code),
//!   Access-Accept (a trusted host) or Access-Reject.
//! - `mode=password+otp`: the first request carries the password; the server (mode
//!   `auto` or `challenge`) answers Access-Challenge once it binds.
//!
//! Each answer at the prompt (a code or the email keyword) goes back with the
//! challenge's State. `remember` sends PAM_RHOST as Calling-Station-Id; whether the
//! host is then trusted is the server's per-client policy (`trust_calling_station`).
//! A client entry with `reject_reasons = true` tells the module why it rejected
//! (unknown user, locked, not enrolled), so it can return PAM_USER_UNKNOWN and
//! PAM_MAXTRIES and honour `nullok`.

use otpgate_config::Config;
use otpgate_radius_proto::attr::{Attribute, OTPGATE_REJECT_REASON, REPLY_MESSAGE, VENDOR_OTPGATE};
use otpgate_radius_proto::{AccessRequestParams, Client, Reply, Secret};
use zeroize::Zeroizing;

use super::{Backend, BackendError, Login, Outcome, Refused};
use crate::logic::OTP_PROMPT;

/// The RADIUS client and the State of the challenge in progress.
pub struct ServerBackend {
    client: Client,
    nas_identifier: Option<String>,
    state: Option<Vec<u8>>,
}

impl ServerBackend {
    /// From `[pam]` (validated: servers and the secret are present in server mode).
    ///
    /// # Errors
    ///
    /// [`BackendError::Config`] without `[pam]`, servers or a usable secret.
    pub fn new(config: &Config) -> Result<Self, BackendError> {
        let pam = config
            .pam
            .as_ref()
            .ok_or_else(|| BackendError::Config("no [pam] section".into()))?;
        let secret = pam
            .secret
            .as_ref()
            .ok_or_else(|| BackendError::Config("[pam] secret_file is required".into()))?;
        let secret = Secret::new(secret.expose().to_vec())
            .map_err(|e| BackendError::Config(format!("[pam] secret_file: {e}")))?;
        Ok(Self {
            client: Client::new(pam.servers.clone(), secret, pam.timeout, pam.retries),
            nas_identifier: pam.nas_identifier.clone(),
            state: None,
        })
    }

    fn send(
        &mut self,
        login: &Login,
        value: Zeroizing<Vec<u8>>,
        state: Option<Vec<u8>>,
    ) -> Result<Outcome, BackendError> {
        let mut params = AccessRequestParams::new(login.user.as_bytes());
        params.password = Some(value);
        params.state = state;
        params.calling_station_id = login.remember_host.clone();
        params.nas_identifier = self.nas_identifier.clone();
        let reply = self
            .client
            .authenticate(&params)
            .map_err(|e| BackendError::Unavailable(format!("RADIUS: {e}")))?;
        Ok(match reply {
            Reply::Accept { attributes } => Outcome::LetIn {
                how: "accepted by the otpgate server".into(),
                notice: reply_message(&attributes),
            },
            Reply::Challenge {
                state,
                reply_message,
            } => {
                self.state = Some(state);
                Outcome::NeedCode {
                    message: reply_message.as_deref().and_then(message_before_prompt),
                }
            }
            Reply::Reject { attributes, .. } => match reject_reason(&attributes) {
                Some("unknown-user") => Outcome::Refused(Refused::UnknownUser),
                Some("locked") => Outcome::Refused(Refused::Locked),
                Some("not-enrolled") if login.nullok => Outcome::NoSecondFactor,
                Some("not-enrolled") => Outcome::Refused(Refused::NotEnrolled {
                    message: reply_message(&attributes),
                }),
                _ => Outcome::Refused(Refused::Denied("rejected by the otpgate server".into())),
            },
        })
    }
}

impl Backend for ServerBackend {
    fn begin(&mut self, login: &Login) -> Result<Outcome, BackendError> {
        let value = login
            .password
            .clone()
            .unwrap_or_else(|| Zeroizing::new(Vec::new()));
        self.send(login, value, None)
    }

    fn answer(&mut self, login: &Login, answer: &[u8]) -> Result<Outcome, BackendError> {
        let Some(state) = self.state.take() else {
            return Err(BackendError::Unavailable(
                "an answer without a challenge".into(),
            ));
        };
        self.send(login, Zeroizing::new(answer.to_vec()), Some(state))
    }
}

/// The Reply-Message attributes of a reply, joined (a notice on an accept).
fn reply_message(attributes: &[Attribute]) -> Option<String> {
    let bytes: Vec<u8> = attributes
        .iter()
        .filter(|a| a.typ == REPLY_MESSAGE)
        .flat_map(|a| a.value.iter().copied())
        .collect();
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// The otpgate reject reason in a reply's attributes, if any.
fn reject_reason(attributes: &[Attribute]) -> Option<&'static str> {
    attributes
        .iter()
        .find_map(|a| match a.vendor_sub_attributes() {
            Some((VENDOR_OTPGATE, subs)) => subs.iter().find_map(|(typ, data)| {
                if *typ != OTPGATE_REJECT_REASON {
                    return None;
                }
                ["unknown-user", "locked", "not-enrolled"]
                    .into_iter()
                    .find(|known| known.as_bytes() == *data)
            }),
            _ => None,
        })
}

/// The server's challenge text without its trailing "One-time password: " (which the
/// module prompts itself); `None` when nothing else is said.
fn message_before_prompt(text: &str) -> Option<String> {
    let rest = text.strip_suffix(OTP_PROMPT).unwrap_or(text);
    let rest = rest.trim_end_matches('\n').trim();
    (!rest.is_empty()).then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_taken_off_the_challenge_text() {
        assert_eq!(message_before_prompt("One-time password: "), None);
        assert_eq!(
            message_before_prompt("A code was mailed to a***@example.org.\nOne-time password: "),
            Some("A code was mailed to a***@example.org.".into())
        );
        assert_eq!(message_before_prompt("Other"), Some("Other".into()));
    }

    #[test]
    fn reject_reasons_are_read_from_the_otpgate_vendor_attribute_only() {
        let vsa = |vendor, typ, data: &[u8]| Attribute::vendor_specific(vendor, typ, data).unwrap();
        assert_eq!(
            reject_reason(&[vsa(VENDOR_OTPGATE, OTPGATE_REJECT_REASON, b"locked")]),
            Some("locked")
        );
        assert_eq!(
            reject_reason(&[vsa(311, OTPGATE_REJECT_REASON, b"locked")]),
            None
        );
        assert_eq!(
            reject_reason(&[vsa(VENDOR_OTPGATE, OTPGATE_REJECT_REASON, b"other")]),
            None
        );
        assert_eq!(reject_reason(&[]), None);
    }
}
