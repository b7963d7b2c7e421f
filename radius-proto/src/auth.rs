//! The shared secret and the packet authenticators.
//!
//! - Response Authenticator (RFC 2865 §3): `MD5(Code | Identifier | Length |
//!   Request Authenticator | Attributes | Secret)`.
//! - Message-Authenticator (RFC 3579 §3.2): `HMAC-MD5(Secret, packet)` computed
//!   with the attribute's own value zeroed and, in the Authenticator field, the
//!   Request Authenticator (for a request, its own; for a reply, the request's).
//!
//! Every comparison of an authenticator goes through `ct_eq` (`subtle`),
//! never `==`. These functions are crate-private: callers reach them through
//! [`crate::VerifiedRequest`], [`crate::encode_reply`] and the client, which
//! apply them in the right order.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::attr::{Attribute, MESSAGE_AUTHENTICATOR};
use crate::codec::{EncodeError, Packet, encode};

/// A RADIUS shared secret.
///
/// Zeroed on drop; its `Debug` prints `Secret(..)` and never the bytes; there
/// is no way to read it back out of the crate.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

/// A shared secret was refused by [`Secret::new`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret is empty, which RFC 2865 §3 forbids; configure a long random one.
    #[error("the RADIUS shared secret is empty")]
    Empty,
}

impl Secret {
    /// Wraps a shared secret. The bytes are moved in, not copied.
    ///
    /// # Errors
    ///
    /// [`SecretError::Empty`] for an empty secret.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(bytes))
    }

    /// The secret's bytes, for the MD5 and HMAC computations of this crate.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Constant-time equality of two byte strings (the lengths are not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// MD5 over the concatenation of `parts`.
pub(crate) fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

/// HMAC-MD5 keyed with the secret; `None` only if the HMAC implementation
/// refused the key, which it does for no length.
fn hmac_md5(secret: &Secret, data: &[u8]) -> Option<[u8; 16]> {
    let mut mac = <Hmac<Md5> as Mac>::new_from_slice(secret.expose()).ok()?;
    mac.update(data);
    Some(mac.finalize().into_bytes().into())
}

/// The Response Authenticator of an encoded reply whose Authenticator field
/// currently holds the Request Authenticator.
pub(crate) fn response_authenticator(encoded: &[u8], secret: &Secret) -> [u8; 16] {
    md5(&[encoded, secret.expose()])
}

/// The Message-Authenticator of `packet` with `auth_field` in its
/// Authenticator field and every Message-Authenticator value zeroed.
fn compute_message_authenticator(
    packet: &Packet,
    auth_field: [u8; 16],
    secret: &Secret,
) -> Result<[u8; 16], EncodeError> {
    let mut zeroed = packet.clone();
    zeroed.authenticator = auth_field;
    for a in &mut zeroed.attributes {
        if a.typ == MESSAGE_AUTHENTICATOR {
            a.value = vec![0; 16];
        }
    }
    hmac_md5(secret, &encode(&zeroed)?).ok_or(EncodeError::InvalidSecret)
}

/// What is wrong with a packet's Message-Authenticator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MaFault {
    /// More than one Message-Authenticator attribute.
    Duplicate,
    /// A Message-Authenticator whose value is not 16 bytes.
    WrongLength,
    /// The HMAC does not match.
    Mismatch,
}

/// Checks the Message-Authenticator of a decoded packet, if it has one.
///
/// `auth_field` is the Request Authenticator: `packet.authenticator` for a
/// request, the request's for a reply. `Ok(true)`: present and correct;
/// `Ok(false)`: absent.
pub(crate) fn check_message_authenticator(
    packet: &Packet,
    auth_field: [u8; 16],
    secret: &Secret,
) -> Result<bool, MaFault> {
    let mut values = packet.values(MESSAGE_AUTHENTICATOR);
    let Some(given) = values.next() else {
        return Ok(false);
    };
    if values.next().is_some() {
        return Err(MaFault::Duplicate);
    }
    if given.len() != 16 {
        return Err(MaFault::WrongLength);
    }
    let expected =
        compute_message_authenticator(packet, auth_field, secret).map_err(|_| MaFault::Mismatch)?;
    if ct_eq(given, &expected) {
        Ok(true)
    } else {
        Err(MaFault::Mismatch)
    }
}

/// Checks the Response Authenticator of a decoded reply to a request whose
/// Request Authenticator was `request_auth`.
pub(crate) fn check_response_authenticator(
    reply: &Packet,
    request_auth: [u8; 16],
    secret: &Secret,
) -> bool {
    let mut with_request_auth = reply.clone();
    with_request_auth.authenticator = request_auth;
    match encode(&with_request_auth) {
        Ok(bytes) => ct_eq(
            &reply.authenticator,
            &response_authenticator(&bytes, secret),
        ),
        Err(_) => false,
    }
}

/// Sets the value of the packet's Message-Authenticator, inserting one as the
/// first attribute if it has none. The packet's Authenticator field must
/// already hold the Request Authenticator.
fn fill_message_authenticator(packet: &mut Packet, secret: &Secret) -> Result<(), EncodeError> {
    if !packet
        .attributes
        .iter()
        .any(|a| a.typ == MESSAGE_AUTHENTICATOR)
    {
        packet.attributes.insert(
            0,
            Attribute {
                typ: MESSAGE_AUTHENTICATOR,
                value: vec![0; 16],
            },
        );
    }
    let ma = compute_message_authenticator(packet, packet.authenticator, secret)?;
    for a in &mut packet.attributes {
        if a.typ == MESSAGE_AUTHENTICATOR {
            a.value = ma.to_vec();
        }
    }
    Ok(())
}

/// Encodes a request (Access-Request, Status-Server) whose Authenticator
/// field holds its random Request Authenticator, with a Message-Authenticator
/// (inserted first if absent).
pub(crate) fn sign_request(mut packet: Packet, secret: &Secret) -> Result<Vec<u8>, EncodeError> {
    fill_message_authenticator(&mut packet, secret)?;
    encode(&packet)
}

/// Encodes a reply whose Authenticator field holds the *request's*
/// authenticator: fills in the Message-Authenticator (inserted first if
/// absent), then replaces the Authenticator field by the Response
/// Authenticator, which covers the Message-Authenticator.
pub(crate) fn sign_reply(mut packet: Packet, secret: &Secret) -> Result<Vec<u8>, EncodeError> {
    fill_message_authenticator(&mut packet, secret)?;
    let mut bytes = encode(&packet)?;
    let response_auth = response_authenticator(&bytes, secret);
    if let Some(field) = bytes.get_mut(4..20) {
        field.copy_from_slice(&response_auth);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Code, decode};
    use crate::testdata::{RFC2865_ACCESS_ACCEPT, RFC2865_ACCESS_REQUEST, RFC2865_SECRET};

    fn secret() -> Secret {
        Secret::new(RFC2865_SECRET).unwrap()
    }

    #[test]
    fn secret_is_never_printed_and_never_empty() {
        assert_eq!(format!("{:?}", secret()), "Secret(..)");
        assert_eq!(Secret::new(Vec::new()).err(), Some(SecretError::Empty));
    }

    #[test]
    fn response_authenticator_matches_rfc_2865_example() {
        let request = decode(&RFC2865_ACCESS_REQUEST).unwrap();
        let accept = decode(&RFC2865_ACCESS_ACCEPT).unwrap();
        assert!(check_response_authenticator(
            &accept,
            request.authenticator,
            &secret()
        ));

        let mut wrong_request = request.authenticator;
        wrong_request[0] ^= 1;
        assert!(!check_response_authenticator(
            &accept,
            wrong_request,
            &secret()
        ));
        let other = Secret::new(b"xyzzy5462".to_vec()).unwrap();
        assert!(!check_response_authenticator(
            &accept,
            request.authenticator,
            &other
        ));
    }

    #[test]
    fn response_authenticator_of_an_encoded_reply_matches_rfc_2865() {
        // Without a Message-Authenticator the Response Authenticator alone is
        // the RFC's known answer: check the MD5 half of sign_reply against it.
        let request = decode(&RFC2865_ACCESS_REQUEST).unwrap();
        let mut accept = decode(&RFC2865_ACCESS_ACCEPT).unwrap();
        accept.authenticator = request.authenticator;
        let bytes = encode(&accept).unwrap();
        assert_eq!(
            response_authenticator(&bytes, &secret()),
            RFC2865_ACCESS_ACCEPT[4..20]
        );
    }

    fn request_packet() -> Packet {
        Packet {
            code: Code::AccessRequest,
            identifier: 9,
            authenticator: [0x11; 16],
            attributes: vec![Attribute {
                typ: 1,
                value: b"alice".to_vec(),
            }],
        }
    }

    #[test]
    fn signed_request_carries_a_valid_ma_first() {
        let bytes = sign_request(request_packet(), &secret()).unwrap();
        let p = decode(&bytes).unwrap();
        assert_eq!(p.attributes[0].typ, MESSAGE_AUTHENTICATOR);
        assert_eq!(
            check_message_authenticator(&p, p.authenticator, &secret()),
            Ok(true)
        );
        let other = Secret::new(b"other".to_vec()).unwrap();
        assert_eq!(
            check_message_authenticator(&p, p.authenticator, &other),
            Err(MaFault::Mismatch)
        );
    }

    #[test]
    fn ma_faults_are_detected() {
        let mut p = decode(&sign_request(request_packet(), &secret()).unwrap()).unwrap();
        assert_eq!(
            check_message_authenticator(&request_packet(), [0; 16], &secret()),
            Ok(false)
        );

        let mut dup = p.clone();
        dup.attributes.push(dup.attributes[0].clone());
        assert_eq!(
            check_message_authenticator(&dup, dup.authenticator, &secret()),
            Err(MaFault::Duplicate)
        );
        let mut short = p.clone();
        short.attributes[0].value.pop();
        assert_eq!(
            check_message_authenticator(&short, short.authenticator, &secret()),
            Err(MaFault::WrongLength)
        );
        p.attributes[1].value[0] ^= 0x20;
        assert_eq!(
            check_message_authenticator(&p, p.authenticator, &secret()),
            Err(MaFault::Mismatch)
        );
    }

    #[test]
    fn ct_eq_compares_contents_and_lengths() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
