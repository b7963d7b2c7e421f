//! The server side: a request that has passed every check, and its reply.
//!
//! [`VerifiedRequest`] is a proof token in the rustls sense: its fields are
//! private and [`VerifiedRequest::verify`] is its only constructor, so holding
//! one proves the datagram decoded strictly, is a request, passed the
//! Message-Authenticator policy, and has a well-formed User-Name and
//! User-Password. [`encode_reply`] takes one, so a reply can only be built for
//! a request that was verified, and always carries the Message-Authenticator
//! first and the request's Proxy-State attributes last, in order.

use zeroize::Zeroizing;

use crate::attr::{
    Attribute, CALLING_STATION_ID, CHAP_PASSWORD, EAP_MESSAGE, MAX_VALUE_LEN,
    MESSAGE_AUTHENTICATOR, NAS_IDENTIFIER, PROXY_STATE, STATE, USER_NAME, USER_PASSWORD,
};
use crate::auth::{MaFault, Secret, check_message_authenticator, sign_reply};
use crate::codec::{Code, DecodeError, EncodeError, Packet, decode};
use crate::password::{PasswordError, unhide};

/// Attributes an Access-Request may carry at most once (RFC 2865 §5.44)
/// among those otpgate reads; a second copy makes the request ambiguous.
const SINGLE_ATTRIBUTES: [u8; 6] = [
    USER_NAME,
    USER_PASSWORD,
    STATE,
    CALLING_STATION_ID,
    NAS_IDENTIFIER,
    MESSAGE_AUTHENTICATOR,
];

/// Why a datagram was not accepted as a request. The server drops the
/// datagram, counts it under [`RequestError::kind`], and sends nothing.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The datagram is not a well-framed packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A reply code (or anything but Access-Request and Status-Server).
    #[error("{0:?} is not a request")]
    NotARequest(Code),
    /// An attribute that may appear once appears more than once (including
    /// Message-Authenticator).
    #[error("attribute {typ} appears more than once")]
    DuplicateAttribute {
        /// The attribute type.
        typ: u8,
    },
    /// Message-Authenticator is absent but required: by the client's
    /// `require_message_authenticator` setting (BlastRADIUS, CVE-2024-3596)
    /// or because the request is Status-Server (RFC 5997).
    #[error("Message-Authenticator is required but absent")]
    MessageAuthenticatorMissing,
    /// The request carries Proxy-State but no Message-Authenticator, and the
    /// client's policy limits Proxy-State (BlastRADIUS: an attacker's chosen
    /// Proxy-State is what makes the MD5 collision fit; FreeRADIUS's
    /// `limit_proxy_state`).
    #[error("Proxy-State without Message-Authenticator")]
    ProxyStateWithoutMessageAuthenticator,
    /// Message-Authenticator is not 16 bytes long.
    #[error("Message-Authenticator is not 16 bytes")]
    MessageAuthenticatorLength,
    /// Message-Authenticator does not match: a wrong shared secret or a forgery.
    #[error("Message-Authenticator does not match")]
    MessageAuthenticatorInvalid,
    /// User-Name is empty.
    #[error("User-Name is empty")]
    EmptyUserName,
    /// The hidden User-Password is malformed.
    #[error(transparent)]
    Password(#[from] PasswordError),
}

impl RequestError {
    /// A stable, low-cardinality name for metrics labels and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Decode(e) => e.kind(),
            Self::NotARequest(_) => "not_a_request",
            Self::DuplicateAttribute { .. } => "duplicate_attribute",
            Self::MessageAuthenticatorMissing => "message_authenticator_missing",
            Self::ProxyStateWithoutMessageAuthenticator => {
                "proxy_state_without_message_authenticator"
            }
            Self::MessageAuthenticatorLength => "message_authenticator_length",
            Self::MessageAuthenticatorInvalid => "message_authenticator_invalid",
            Self::EmptyUserName => "empty_user_name",
            Self::Password(e) => e.kind(),
        }
    }
}

/// A client's Message-Authenticator policy, for [`VerifiedRequest::verify_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Drop every request without Message-Authenticator (BlastRADIUS,
    /// CVE-2024-3596). Status-Server always needs one (RFC 5997).
    pub require_message_authenticator: bool,
    /// Drop a request that carries Proxy-State but no Message-Authenticator,
    /// even when Message-Authenticator is not required (FreeRADIUS's
    /// `limit_proxy_state`).
    pub limit_proxy_state: bool,
}

impl Default for Policy {
    /// The strict policy: both checks on.
    fn default() -> Self {
        Self {
            require_message_authenticator: true,
            limit_proxy_state: true,
        }
    }
}

/// An Access-Request or Status-Server that passed every check of
/// [`VerifiedRequest::verify`]. Only `verify` can make one.
pub struct VerifiedRequest {
    /// The decoded packet, User-Password still hidden.
    packet: Packet,
    /// The unhidden User-Password, if the request had one; wiped on drop.
    password: Option<Zeroizing<Vec<u8>>>,
    /// Whether a (correct) Message-Authenticator was present.
    had_message_authenticator: bool,
}

impl VerifiedRequest {
    /// [`VerifiedRequest::verify_with`] with `limit_proxy_state` on.
    ///
    /// # Errors
    ///
    /// The first check that failed, as a [`RequestError`].
    pub fn verify(
        datagram: &[u8],
        secret: &Secret,
        require_message_authenticator: bool,
    ) -> Result<Self, RequestError> {
        Self::verify_with(
            datagram,
            secret,
            Policy {
                require_message_authenticator,
                limit_proxy_state: true,
            },
        )
    }

    /// Decodes and checks one datagram from a known client.
    ///
    /// In order: strict decoding; the code is Access-Request or Status-Server;
    /// no duplicate User-Name, User-Password, State, Calling-Station-Id,
    /// NAS-Identifier or Message-Authenticator; the Message-Authenticator, if
    /// present, is 16 bytes and correct, and if absent the request is refused
    /// when `require_message_authenticator` is set or the code is
    /// Status-Server, or when it carries Proxy-State and `limit_proxy_state`
    /// is set; User-Name, if present, is not empty (at most 253 bytes
    /// by framing); User-Password, if present, is well formed and is unhidden.
    ///
    /// # Errors
    ///
    /// The first check that failed, as a [`RequestError`].
    pub fn verify_with(
        datagram: &[u8],
        secret: &Secret,
        policy: Policy,
    ) -> Result<Self, RequestError> {
        let packet = decode(datagram)?;
        if !packet.code.is_request() {
            return Err(RequestError::NotARequest(packet.code));
        }
        if let Some(&typ) = SINGLE_ATTRIBUTES.iter().find(|&&t| packet.count(t) > 1) {
            return Err(RequestError::DuplicateAttribute { typ });
        }
        let had_message_authenticator =
            match check_message_authenticator(&packet, packet.authenticator, secret) {
                Ok(present) => present,
                Err(MaFault::Duplicate) => {
                    return Err(RequestError::DuplicateAttribute {
                        typ: MESSAGE_AUTHENTICATOR,
                    });
                }
                Err(MaFault::WrongLength) => return Err(RequestError::MessageAuthenticatorLength),
                Err(MaFault::Mismatch) => return Err(RequestError::MessageAuthenticatorInvalid),
            };
        let required = policy.require_message_authenticator || packet.code == Code::StatusServer;
        if required && !had_message_authenticator {
            return Err(RequestError::MessageAuthenticatorMissing);
        }
        if policy.limit_proxy_state && !had_message_authenticator && packet.count(PROXY_STATE) > 0 {
            return Err(RequestError::ProxyStateWithoutMessageAuthenticator);
        }
        if packet.first(USER_NAME).is_some_and(<[u8]>::is_empty) {
            return Err(RequestError::EmptyUserName);
        }
        let password = packet
            .first(USER_PASSWORD)
            .map(|hidden| unhide(hidden, secret, &packet.authenticator))
            .transpose()?;
        Ok(Self {
            packet,
            password,
            had_message_authenticator,
        })
    }

    /// Access-Request or Status-Server.
    #[must_use]
    pub fn code(&self) -> Code {
        self.packet.code
    }

    /// The identifier; with the client address, port and authenticator, the
    /// key for duplicate detection (RFC 5080).
    #[must_use]
    pub fn identifier(&self) -> u8 {
        self.packet.identifier
    }

    /// The Request Authenticator.
    #[must_use]
    pub fn authenticator(&self) -> &[u8; 16] {
        &self.packet.authenticator
    }

    /// Whether the request carried a (verified) Message-Authenticator.
    #[must_use]
    pub fn had_message_authenticator(&self) -> bool {
        self.had_message_authenticator
    }

    /// User-Name, 1..=253 bytes, if present (at most one).
    #[must_use]
    pub fn user_name(&self) -> Option<&[u8]> {
        self.packet.first(USER_NAME)
    }

    /// The unhidden User-Password without its NUL padding, if present.
    ///
    /// It was unhidden and checked by [`VerifiedRequest::verify`] (a malformed
    /// one refuses the whole request), so this cannot fail. The bytes are
    /// wiped when the request is dropped.
    #[must_use]
    pub fn user_password(&self) -> Option<&[u8]> {
        self.password.as_deref().map(Vec::as_slice)
    }

    /// State, if present (at most one): the reply to an Access-Challenge.
    #[must_use]
    pub fn state(&self) -> Option<&[u8]> {
        self.packet.first(STATE)
    }

    /// Calling-Station-Id, if present (at most one).
    #[must_use]
    pub fn calling_station_id(&self) -> Option<&[u8]> {
        self.packet.first(CALLING_STATION_ID)
    }

    /// NAS-Identifier, if present (at most one).
    #[must_use]
    pub fn nas_identifier(&self) -> Option<&[u8]> {
        self.packet.first(NAS_IDENTIFIER)
    }

    /// The Proxy-State values, in order; [`encode_reply`] copies them.
    pub fn proxy_states(&self) -> impl Iterator<Item = &[u8]> {
        self.packet.values(PROXY_STATE)
    }

    /// Whether the request attempts CHAP (CHAP-Password), which otpgate rejects.
    #[must_use]
    pub fn has_chap(&self) -> bool {
        self.packet.count(CHAP_PASSWORD) > 0
    }

    /// Whether the request attempts EAP (EAP-Message), which otpgate rejects.
    #[must_use]
    pub fn has_eap(&self) -> bool {
        self.packet.count(EAP_MESSAGE) > 0
    }

    /// Whether the request attempts MS-CHAP or MS-CHAPv2 (Microsoft
    /// Vendor-Specific, RFC 2548), which otpgate rejects.
    #[must_use]
    pub fn has_mschap(&self) -> bool {
        self.packet.attributes.iter().any(Attribute::is_mschap)
    }

    /// The value of the first attribute of type `typ`.
    #[must_use]
    pub fn attribute(&self, typ: u8) -> Option<&[u8]> {
        self.packet.first(typ)
    }

    /// All attributes in wire order, as received (User-Password still hidden).
    #[must_use]
    pub fn attributes(&self) -> &[Attribute] {
        &self.packet.attributes
    }
}

impl std::fmt::Debug for VerifiedRequest {
    /// Shows the code, identifier, user name and attribute types; never the
    /// password or any other value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types: Vec<u8> = self.packet.attributes.iter().map(|a| a.typ).collect();
        f.debug_struct("VerifiedRequest")
            .field("code", &self.packet.code)
            .field("identifier", &self.packet.identifier)
            .field("user_name", &self.user_name().map(String::from_utf8_lossy))
            .field("attribute_types", &types)
            .finish_non_exhaustive()
    }
}

/// Encodes the reply to a verified request.
///
/// The reply has the request's identifier, a Message-Authenticator as its
/// first attribute, then `attributes` in order, then the request's
/// Proxy-State attributes in their order (RFC 2865 §5.33). The
/// Message-Authenticator is computed over the packet with the request's
/// authenticator (RFC 3579 §3.2), then the Response Authenticator over the
/// whole (RFC 2865 §3).
///
/// Reply codes: Access-Accept, Access-Reject or Access-Challenge to an
/// Access-Request; Access-Accept to Status-Server (RFC 5997 §3).
///
/// Attribute values over 253 bytes are refused, not split: build a long
/// Reply-Message with [`Attribute::reply_messages`], which splits it into
/// several attributes on character boundaries.
///
/// # Errors
///
/// [`EncodeError::InvalidReplyCode`], [`EncodeError::ReservedAttribute`] if
/// `attributes` holds a Message-Authenticator or Proxy-State,
/// [`EncodeError::AttributeTooLong`], [`EncodeError::TooManyAttributes`] or
/// [`EncodeError::PacketTooLong`].
pub fn encode_reply(
    request: &VerifiedRequest,
    code: Code,
    attributes: &[Attribute],
    secret: &Secret,
) -> Result<Vec<u8>, EncodeError> {
    let allowed = match request.code() {
        Code::StatusServer => code == Code::AccessAccept,
        _ => matches!(
            code,
            Code::AccessAccept | Code::AccessReject | Code::AccessChallenge
        ),
    };
    if !allowed {
        return Err(EncodeError::InvalidReplyCode {
            request: request.code(),
            reply: code,
        });
    }
    if let Some(a) = attributes
        .iter()
        .find(|a| a.typ == MESSAGE_AUTHENTICATOR || a.typ == PROXY_STATE)
    {
        return Err(EncodeError::ReservedAttribute { typ: a.typ });
    }
    if let Some(a) = attributes.iter().find(|a| a.value.len() > MAX_VALUE_LEN) {
        return Err(EncodeError::AttributeTooLong {
            typ: a.typ,
            len: a.value.len(),
        });
    }
    let mut all = Vec::with_capacity(attributes.len().saturating_add(4));
    all.push(Attribute {
        typ: MESSAGE_AUTHENTICATOR,
        value: vec![0; 16],
    });
    all.extend_from_slice(attributes);
    all.extend(
        request
            .packet
            .attributes
            .iter()
            .filter(|a| a.typ == PROXY_STATE)
            .cloned(),
    );
    let reply = Packet {
        code,
        identifier: request.identifier(),
        authenticator: *request.authenticator(),
        attributes: all,
    };
    sign_reply(reply, secret)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
