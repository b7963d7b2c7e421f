//! The client side, sans-IO: building signed requests and checking replies.
//!
//! [`crate::Client`] wraps these in blocking UDP with failover; they are public
//! so other transports and tests (for example the server's, which need
//! correctly signed requests) can use the same code.

use zeroize::Zeroizing;

use crate::attr::{
    Attribute, AttributeError, CALLING_STATION_ID, NAS_IDENTIFIER, REPLY_MESSAGE, STATE, USER_NAME,
    USER_PASSWORD,
};
use crate::auth::{
    MaFault, Secret, check_message_authenticator, check_response_authenticator, sign_request,
};
use crate::codec::{Code, DecodeError, EncodeError, Packet, decode};
use crate::password::{PasswordError, hide};

/// What an Access-Request carries. Build with [`AccessRequestParams::new`]
/// and set the optional fields.
#[derive(Clone, Default)]
pub struct AccessRequestParams {
    /// User-Name, 1..=253 bytes.
    pub user_name: Vec<u8>,
    /// The cleartext for User-Password (≤ 128 bytes), hidden on the wire;
    /// `None` sends no User-Password.
    pub password: Option<Zeroizing<Vec<u8>>>,
    /// The State of a previous Access-Challenge, echoed back.
    pub state: Option<Vec<u8>>,
    /// Calling-Station-Id, e.g. the SSH client's address.
    pub calling_station_id: Option<String>,
    /// NAS-Identifier, e.g. the host name.
    pub nas_identifier: Option<String>,
    /// Further attributes, appended in order.
    pub extra: Vec<Attribute>,
}

impl AccessRequestParams {
    /// Parameters for `user_name` with nothing else set.
    #[must_use]
    pub fn new(user_name: impl Into<Vec<u8>>) -> Self {
        Self {
            user_name: user_name.into(),
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for AccessRequestParams {
    /// Never shows the password or the State.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessRequestParams")
            .field("user_name", &String::from_utf8_lossy(&self.user_name))
            .field("password", &self.password.as_ref().map(|_| ".."))
            .field("state", &self.state.as_ref().map(|_| ".."))
            .field("calling_station_id", &self.calling_station_id)
            .field("nas_identifier", &self.nas_identifier)
            .field(
                "extra_types",
                &self.extra.iter().map(|a| a.typ).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A server's authenticated answer to an Access-Request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Access-Accept.
    Accept {
        /// Every attribute of the reply, in order.
        attributes: Vec<Attribute>,
    },
    /// Access-Reject.
    Reject {
        /// The Reply-Message attributes joined (lossy UTF-8), if any. Text
        /// from the server: filter control characters before showing it.
        reply_message: Option<String>,
        /// Every attribute of the reply, in order.
        attributes: Vec<Attribute>,
    },
    /// Access-Challenge: answer with a new request carrying `state`.
    Challenge {
        /// The State to echo in the next request.
        state: Vec<u8>,
        /// The prompt: the Reply-Message attributes joined (lossy UTF-8).
        reply_message: Option<String>,
    },
}

/// Why the client could not complete an exchange.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The client has no server configured.
    #[error("no RADIUS server configured")]
    NoServers,
    /// No server gave a valid reply within its timeouts and retransmissions:
    /// the backend is unavailable (PAM_AUTHINFO_UNAVAIL), never a success.
    #[error("no RADIUS server answered")]
    NoServerAnswered,
    /// The system random generator failed.
    #[error("random number generator failed: {0}")]
    Random(getrandom::Error),
    /// User-Name is empty.
    #[error("User-Name is empty")]
    EmptyUserName,
    /// A parameter does not fit its attribute (for example over 253 bytes).
    #[error(transparent)]
    Attribute(#[from] AttributeError),
    /// The password cannot be hidden (over 128 bytes).
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The request cannot be encoded (too many or too large attributes).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// A server sent an authentic reply that cannot be used (for example an
    /// Access-Challenge without State); treat as the backend failing.
    #[error("unusable reply: {0}")]
    UnusableReply(ReplyError),
}

/// Why a datagram is not the awaited reply. The client ignores such a
/// datagram and keeps waiting.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not a well-framed packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The identifier is not the request's.
    #[error("identifier does not match the request")]
    WrongIdentifier,
    /// A code that does not answer the request.
    #[error("{0:?} does not answer the request")]
    UnexpectedCode(Code),
    /// The Response Authenticator is wrong: a forgery or a wrong secret.
    #[error("Response Authenticator does not match")]
    ResponseAuthenticator,
    /// No Message-Authenticator; otpgate requires one in every reply.
    #[error("Message-Authenticator missing")]
    MessageAuthenticatorMissing,
    /// Message-Authenticator duplicated, of the wrong length, or wrong.
    #[error("Message-Authenticator invalid")]
    MessageAuthenticatorInvalid,
    /// An Access-Challenge without State, which cannot be answered.
    #[error("Access-Challenge without State")]
    ChallengeWithoutState,
}

impl ReplyError {
    /// A stable, low-cardinality name for logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.kind(),
            Self::WrongIdentifier => "wrong_identifier",
            Self::UnexpectedCode(_) => "unexpected_code",
            Self::ResponseAuthenticator => "response_authenticator",
            Self::MessageAuthenticatorMissing => "message_authenticator_missing",
            Self::MessageAuthenticatorInvalid => "message_authenticator_invalid",
            Self::ChallengeWithoutState => "challenge_without_state",
        }
    }
}

/// Builds and signs an Access-Request: Message-Authenticator first, then
/// User-Name, the hidden User-Password, State, Calling-Station-Id,
/// NAS-Identifier and `extra`, in that order.
///
/// `authenticator` must be fresh random bytes (the client uses `getrandom`).
///
/// # Errors
///
/// [`ClientError::EmptyUserName`], [`ClientError::Attribute`],
/// [`ClientError::Password`] or [`ClientError::Encode`].
pub fn encode_access_request(
    params: &AccessRequestParams,
    identifier: u8,
    authenticator: [u8; 16],
    secret: &Secret,
) -> Result<Vec<u8>, ClientError> {
    if params.user_name.is_empty() {
        return Err(ClientError::EmptyUserName);
    }
    let mut attributes = vec![Attribute::new(USER_NAME, params.user_name.clone())?];
    if let Some(password) = &params.password {
        attributes.push(Attribute::new(
            USER_PASSWORD,
            hide(password, secret, &authenticator)?,
        )?);
    }
    if let Some(state) = &params.state {
        attributes.push(Attribute::new(STATE, state.clone())?);
    }
    if let Some(id) = &params.calling_station_id {
        attributes.push(Attribute::string(CALLING_STATION_ID, id)?);
    }
    if let Some(id) = &params.nas_identifier {
        attributes.push(Attribute::string(NAS_IDENTIFIER, id)?);
    }
    attributes.extend_from_slice(&params.extra);
    let packet = Packet {
        code: Code::AccessRequest,
        identifier,
        authenticator,
        attributes,
    };
    Ok(sign_request(packet, secret)?)
}

/// Builds and signs a Status-Server request (RFC 5997) carrying only a
/// Message-Authenticator.
///
/// # Errors
///
/// [`ClientError::Encode`], which a valid secret never causes.
pub fn encode_status_server(
    identifier: u8,
    authenticator: [u8; 16],
    secret: &Secret,
) -> Result<Vec<u8>, ClientError> {
    let packet = Packet {
        code: Code::StatusServer,
        identifier,
        authenticator,
        attributes: Vec::new(),
    };
    Ok(sign_request(packet, secret)?)
}

/// Checks that `datagram` is an authentic reply to the request with
/// `identifier` and `request_authenticator`: strict decoding, identifier, a
/// reply code, the Response Authenticator, and a correct Message-Authenticator
/// (required).
///
/// # Errors
///
/// The first check that failed, as a [`ReplyError`].
pub fn check_reply(
    datagram: &[u8],
    identifier: u8,
    request_authenticator: [u8; 16],
    secret: &Secret,
) -> Result<Packet, ReplyError> {
    let packet = decode(datagram)?;
    if packet.identifier != identifier {
        return Err(ReplyError::WrongIdentifier);
    }
    if packet.code.is_request() {
        return Err(ReplyError::UnexpectedCode(packet.code));
    }
    if !check_response_authenticator(&packet, request_authenticator, secret) {
        return Err(ReplyError::ResponseAuthenticator);
    }
    match check_message_authenticator(&packet, request_authenticator, secret) {
        Ok(true) => Ok(packet),
        Ok(false) => Err(ReplyError::MessageAuthenticatorMissing),
        Err(MaFault::Duplicate | MaFault::WrongLength | MaFault::Mismatch) => {
            Err(ReplyError::MessageAuthenticatorInvalid)
        }
    }
}

/// Joins the Reply-Message attributes of a packet, if any.
fn reply_message(packet: &Packet) -> Option<String> {
    let mut joined = Vec::new();
    let mut any = false;
    for value in packet.values(REPLY_MESSAGE) {
        any = true;
        joined.extend_from_slice(value);
    }
    any.then(|| String::from_utf8_lossy(&joined).into_owned())
}

impl Reply {
    /// Interprets a reply that [`check_reply`] accepted.
    ///
    /// # Errors
    ///
    /// [`ReplyError::ChallengeWithoutState`] for a challenge that cannot be
    /// answered; [`ReplyError::UnexpectedCode`] for a request code.
    pub fn from_packet(packet: Packet) -> Result<Self, ReplyError> {
        match packet.code {
            Code::AccessChallenge => {
                let state = packet
                    .first(STATE)
                    .ok_or(ReplyError::ChallengeWithoutState)?
                    .to_vec();
                Ok(Self::Challenge {
                    state,
                    reply_message: reply_message(&packet),
                })
            }
            Code::AccessReject => Ok(Self::Reject {
                reply_message: reply_message(&packet),
                attributes: packet.attributes,
            }),
            Code::AccessAccept => Ok(Self::Accept {
                attributes: packet.attributes,
            }),
            Code::AccessRequest | Code::StatusServer => {
                Err(ReplyError::UnexpectedCode(packet.code))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::response_authenticator;
    use crate::codec::encode;
    use crate::request::{VerifiedRequest, encode_reply};

    const RA: [u8; 16] = [0xA5; 16];

    fn secret() -> Secret {
        Secret::new(b"exchange-test-secret".to_vec()).unwrap()
    }

    fn verified(params: &AccessRequestParams) -> VerifiedRequest {
        let bytes = encode_access_request(params, 17, RA, &secret()).unwrap();
        VerifiedRequest::verify(&bytes, &secret(), true).unwrap()
    }

    fn alice() -> AccessRequestParams {
        let mut p = AccessRequestParams::new("alice");
        p.password = Some(Zeroizing::new(b"123456".to_vec()));
        p
    }

    #[test]
    fn challenge_round_trip() {
        let request = verified(&alice());
        let mut attrs = vec![Attribute::new(STATE, b"state-1".to_vec()).unwrap()];
        attrs.extend(Attribute::reply_messages("One-time password: "));
        let bytes = encode_reply(&request, Code::AccessChallenge, &attrs, &secret()).unwrap();
        let packet = check_reply(&bytes, 17, RA, &secret()).unwrap();
        assert_eq!(
            Reply::from_packet(packet).unwrap(),
            Reply::Challenge {
                state: b"state-1".to_vec(),
                reply_message: Some("One-time password: ".into())
            }
        );
    }

    #[test]
    fn accept_and_reject_round_trip() {
        let request = verified(&alice());
        let class = Attribute::string(crate::attr::CLASS, "staff").unwrap();
        let bytes = encode_reply(
            &request,
            Code::AccessAccept,
            std::slice::from_ref(&class),
            &secret(),
        )
        .unwrap();
        let Reply::Accept { attributes } =
            Reply::from_packet(check_reply(&bytes, 17, RA, &secret()).unwrap()).unwrap()
        else {
            panic!("not an accept");
        };
        assert!(attributes.contains(&class));

        let bytes = encode_reply(&request, Code::AccessReject, &[], &secret()).unwrap();
        let reply = Reply::from_packet(check_reply(&bytes, 17, RA, &secret()).unwrap()).unwrap();
        assert!(matches!(
            reply,
            Reply::Reject {
                reply_message: None,
                ..
            }
        ));
    }

    #[test]
    fn forged_or_mismatched_replies_are_refused() {
        let request = verified(&alice());
        let bytes = encode_reply(&request, Code::AccessAccept, &[], &secret()).unwrap();
        assert_eq!(
            check_reply(&bytes, 18, RA, &secret()),
            Err(ReplyError::WrongIdentifier)
        );
        assert_eq!(
            check_reply(&bytes, 17, [0; 16], &secret()),
            Err(ReplyError::ResponseAuthenticator)
        );
        let other = Secret::new(b"other".to_vec()).unwrap();
        assert_eq!(
            check_reply(&bytes, 17, RA, &other),
            Err(ReplyError::ResponseAuthenticator)
        );
        let mut flipped = bytes.clone();
        flipped[0] = 3; // Accept turned into Reject
        assert_eq!(
            check_reply(&flipped, 17, RA, &secret()),
            Err(ReplyError::ResponseAuthenticator)
        );
        assert_eq!(
            check_reply(&bytes[..10], 17, RA, &secret()),
            Err(ReplyError::Decode(DecodeError::TooShort { len: 10 }))
        );
        let own_request = encode_access_request(&alice(), 17, RA, &secret()).unwrap();
        assert_eq!(
            check_reply(&own_request, 17, RA, &secret()),
            Err(ReplyError::UnexpectedCode(Code::AccessRequest))
        );
    }

    /// An Access-Accept with a valid Response Authenticator but the given
    /// Message-Authenticator values (not recomputed).
    fn accept_with_ma(values: &[&[u8]]) -> Vec<u8> {
        let packet = Packet {
            code: Code::AccessAccept,
            identifier: 17,
            authenticator: RA,
            attributes: values
                .iter()
                .map(|v| Attribute {
                    typ: crate::attr::MESSAGE_AUTHENTICATOR,
                    value: v.to_vec(),
                })
                .collect(),
        };
        let mut bytes = encode(&packet).unwrap();
        let auth = response_authenticator(&bytes, &secret());
        bytes[4..20].copy_from_slice(&auth);
        bytes
    }

    #[test]
    fn replies_need_a_valid_message_authenticator() {
        assert_eq!(
            check_reply(&accept_with_ma(&[]), 17, RA, &secret()),
            Err(ReplyError::MessageAuthenticatorMissing)
        );
        for bad in [
            &[&[0u8; 16][..]][..],
            &[&[0u8; 15][..]],
            &[&[0u8; 16][..], &[0u8; 16][..]],
        ] {
            assert_eq!(
                check_reply(&accept_with_ma(bad), 17, RA, &secret()),
                Err(ReplyError::MessageAuthenticatorInvalid)
            );
        }
    }

    #[test]
    fn challenge_without_state_is_unusable() {
        let request = verified(&alice());
        let bytes = encode_reply(&request, Code::AccessChallenge, &[], &secret()).unwrap();
        let packet = check_reply(&bytes, 17, RA, &secret()).unwrap();
        assert_eq!(
            Reply::from_packet(packet),
            Err(ReplyError::ChallengeWithoutState)
        );
    }

    #[test]
    fn request_parameters_are_checked() {
        let empty = AccessRequestParams::new("");
        assert!(matches!(
            encode_access_request(&empty, 1, RA, &secret()),
            Err(ClientError::EmptyUserName)
        ));
        let mut long = alice();
        long.password = Some(Zeroizing::new(vec![b'p'; 129]));
        assert!(matches!(
            encode_access_request(&long, 1, RA, &secret()),
            Err(ClientError::Password(PasswordError::TooLong { len: 129 }))
        ));
        let long_name = AccessRequestParams::new(vec![b'u'; 254]);
        assert!(matches!(
            encode_access_request(&long_name, 1, RA, &secret()),
            Err(ClientError::Attribute(AttributeError::TooLong { .. }))
        ));
        let debug = format!("{:?}", alice());
        assert!(debug.contains("alice") && !debug.contains("123456"));
    }

    #[test]
    fn status_server_request_verifies() {
        let bytes = encode_status_server(3, RA, &secret()).unwrap();
        let r = VerifiedRequest::verify(&bytes, &secret(), false).unwrap();
        assert_eq!((r.code(), r.identifier()), (Code::StatusServer, 3));
        assert!(r.had_message_authenticator());
    }
}
