//! Tests of [`VerifiedRequest::verify`] and [`encode_reply`].

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};

use super::*;
use crate::attr::{CHAP_PASSWORD, CLASS, NAS_PORT, REPLY_MESSAGE, VENDOR_MICROSOFT};
use crate::auth::sign_request;
use crate::codec::{decode, encode};
use crate::exchange::{AccessRequestParams, encode_access_request};
use crate::testdata::{RFC2865_ACCESS_REQUEST, RFC2865_SECRET};

const SECRET: &[u8] = b"testing123-otpgate";

fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

fn attr(typ: u8, value: &[u8]) -> Attribute {
    Attribute {
        typ,
        value: value.to_vec(),
    }
}

fn request(code: Code, attributes: Vec<Attribute>) -> Packet {
    Packet {
        code,
        identifier: 77,
        authenticator: [0x3C; 16],
        attributes,
    }
}

/// A request signed with a correct Message-Authenticator (inserted first).
fn signed(attributes: Vec<Attribute>) -> Vec<u8> {
    sign_request(request(Code::AccessRequest, attributes), &secret()).unwrap()
}

/// A request without Message-Authenticator, or with whatever the caller put in.
fn unsigned(code: Code, attributes: Vec<Attribute>) -> Vec<u8> {
    encode(&request(code, attributes)).unwrap()
}

fn verify(datagram: &[u8]) -> Result<VerifiedRequest, RequestError> {
    VerifiedRequest::verify(datagram, &secret(), true)
}

#[test]
fn verifies_a_request_from_the_client_builder() {
    let mut params = AccessRequestParams::new("alice");
    params.password = Some(Zeroizing::new(b"hunter2-123456".to_vec()));
    params.state = Some(b"st".to_vec());
    params.calling_station_id = Some("192.0.2.7".into());
    params.nas_identifier = Some("ssh-01".into());
    params.extra = vec![Attribute::integer(NAS_PORT, 22)];
    let datagram = encode_access_request(&params, 5, [9; 16], &secret()).unwrap();

    let r = verify(&datagram).unwrap();
    assert_eq!(r.code(), Code::AccessRequest);
    assert_eq!(r.identifier(), 5);
    assert_eq!(r.authenticator(), &[9; 16]);
    assert!(r.had_message_authenticator());
    assert_eq!(r.user_name(), Some(&b"alice"[..]));
    assert_eq!(r.user_password(), Some(&b"hunter2-123456"[..]));
    assert_eq!(r.state(), Some(&b"st"[..]));
    assert_eq!(r.calling_station_id(), Some(&b"192.0.2.7"[..]));
    assert_eq!(r.nas_identifier(), Some(&b"ssh-01"[..]));
    assert_eq!(r.attribute(NAS_PORT), Some(&[0, 0, 0, 22][..]));
    assert_eq!(r.attributes()[0].typ, MESSAGE_AUTHENTICATOR);
    assert!(!r.has_chap() && !r.has_eap() && !r.has_mschap());
    let debug = format!("{r:?}");
    assert!(debug.contains("alice") && !debug.contains("hunter2"));
}

#[test]
fn rfc_2865_example_verifies_only_when_ma_is_not_required() {
    let s = Secret::new(RFC2865_SECRET).unwrap();
    let r = VerifiedRequest::verify(&RFC2865_ACCESS_REQUEST, &s, false).unwrap();
    assert_eq!(r.user_password(), Some(&b"arctangent"[..]));
    assert!(!r.had_message_authenticator());
    assert_eq!(
        VerifiedRequest::verify(&RFC2865_ACCESS_REQUEST, &s, true).unwrap_err(),
        RequestError::MessageAuthenticatorMissing
    );
}

#[test]
fn decoding_errors_are_passed_through() {
    let e = verify(&[1, 0, 0, 19]).unwrap_err();
    assert_eq!(e.kind(), "too_short");
    let mut short_len = signed(vec![]);
    short_len[3] = 19;
    assert_eq!(
        verify(&short_len).unwrap_err(),
        RequestError::Decode(DecodeError::LengthOutOfRange(19))
    );
    let mut unknown = signed(vec![]);
    unknown[0] = 4;
    assert_eq!(verify(&unknown).unwrap_err().kind(), "unknown_code");
}

#[test]
fn replies_are_not_requests() {
    let accept = unsigned(Code::AccessAccept, vec![]);
    assert_eq!(
        verify(&accept).unwrap_err(),
        RequestError::NotARequest(Code::AccessAccept)
    );
}

#[test]
fn missing_ma_is_refused_when_required() {
    let plain = unsigned(Code::AccessRequest, vec![attr(USER_NAME, b"bob")]);
    assert_eq!(
        verify(&plain).unwrap_err(),
        RequestError::MessageAuthenticatorMissing
    );
    assert!(VerifiedRequest::verify(&plain, &secret(), false).is_ok());
}

#[test]
fn status_server_always_requires_ma() {
    let plain = unsigned(Code::StatusServer, vec![]);
    assert_eq!(
        VerifiedRequest::verify(&plain, &secret(), false).unwrap_err(),
        RequestError::MessageAuthenticatorMissing
    );
    let good = sign_request(request(Code::StatusServer, vec![]), &secret()).unwrap();
    let r = VerifiedRequest::verify(&good, &secret(), false).unwrap();
    assert_eq!(r.code(), Code::StatusServer);
}

#[test]
fn duplicated_ma_is_refused() {
    let one = decode(&signed(vec![attr(USER_NAME, b"bob")])).unwrap();
    let mut two = one.clone();
    two.attributes.push(one.attributes[0].clone());
    assert_eq!(
        verify(&encode(&two).unwrap()).unwrap_err(),
        RequestError::DuplicateAttribute {
            typ: MESSAGE_AUTHENTICATOR
        }
    );
}

#[test]
fn wrong_length_ma_is_refused() {
    for len in [0usize, 15, 17] {
        let bytes = unsigned(
            Code::AccessRequest,
            vec![attr(MESSAGE_AUTHENTICATOR, &vec![0; len])],
        );
        assert_eq!(
            verify(&bytes).unwrap_err(),
            RequestError::MessageAuthenticatorLength,
            "len {len}"
        );
    }
}

#[test]
fn bad_ma_is_refused_even_when_not_required() {
    let mut bytes = signed(vec![attr(USER_NAME, b"bob")]);
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // tamper with the user name
    for required in [true, false] {
        assert_eq!(
            VerifiedRequest::verify(&bytes, &secret(), required).unwrap_err(),
            RequestError::MessageAuthenticatorInvalid
        );
    }
    let good = signed(vec![attr(USER_NAME, b"bob")]);
    let wrong_secret = Secret::new(b"another secret".to_vec()).unwrap();
    assert_eq!(
        VerifiedRequest::verify(&good, &wrong_secret, true).unwrap_err(),
        RequestError::MessageAuthenticatorInvalid
    );
}

#[test]
fn duplicated_single_attributes_are_refused() {
    for typ in [
        USER_NAME,
        USER_PASSWORD,
        STATE,
        CALLING_STATION_ID,
        NAS_IDENTIFIER,
    ] {
        let bytes = signed(vec![attr(typ, &[b'a'; 16]), attr(typ, &[b'b'; 16])]);
        assert_eq!(
            verify(&bytes).unwrap_err(),
            RequestError::DuplicateAttribute { typ }
        );
    }
}

#[test]
fn empty_user_name_is_refused() {
    let bytes = signed(vec![attr(USER_NAME, b"")]);
    assert_eq!(verify(&bytes).unwrap_err(), RequestError::EmptyUserName);
}

#[test]
fn malformed_user_password_is_refused() {
    for len in [0usize, 1, 15, 17, 100, 144, 253] {
        let bytes = signed(vec![
            attr(USER_NAME, b"bob"),
            attr(USER_PASSWORD, &vec![7; len]),
        ]);
        assert_eq!(
            verify(&bytes).unwrap_err(),
            RequestError::Password(PasswordError::BadHiddenLength { len }),
            "len {len}"
        );
    }
}

#[test]
fn detects_the_authentication_methods_otpgate_rejects() {
    let chap = verify(&signed(vec![attr(CHAP_PASSWORD, &[1; 17])])).unwrap();
    assert!(chap.has_chap() && !chap.has_eap() && !chap.has_mschap());
    let eap = verify(&signed(vec![attr(EAP_MESSAGE, &[2, 0, 0, 5, 1])])).unwrap();
    assert!(eap.has_eap() && !eap.has_chap());
    let vsa = Attribute::vendor_specific(VENDOR_MICROSOFT, 11, &[0; 16]).unwrap();
    let mschap = verify(&signed(vec![vsa])).unwrap();
    assert!(mschap.has_mschap() && !mschap.has_chap());
}

fn verified_with_proxy_states() -> VerifiedRequest {
    verify(&signed(vec![
        attr(PROXY_STATE, b"first"),
        attr(USER_NAME, b"carol"),
        attr(PROXY_STATE, b"second"),
        attr(PROXY_STATE, b"third"),
    ]))
    .unwrap()
}

#[test]
fn proxy_state_without_message_authenticator_is_refused_unless_the_client_allows_it() {
    let datagram = unsigned(
        Code::AccessRequest,
        vec![attr(USER_NAME, b"carol"), attr(PROXY_STATE, b"p")],
    );
    let lax = Policy {
        require_message_authenticator: false,
        limit_proxy_state: false,
    };
    let limited = Policy {
        limit_proxy_state: true,
        ..lax
    };
    let e = VerifiedRequest::verify_with(&datagram, &secret(), limited).unwrap_err();
    assert_eq!(e, RequestError::ProxyStateWithoutMessageAuthenticator);
    assert_eq!(e.kind(), "proxy_state_without_message_authenticator");
    // `verify` limits Proxy-State whatever Message-Authenticator policy it is given.
    assert_eq!(
        VerifiedRequest::verify(&datagram, &secret(), false).unwrap_err(),
        RequestError::ProxyStateWithoutMessageAuthenticator
    );
    let r = VerifiedRequest::verify_with(&datagram, &secret(), lax).unwrap();
    assert_eq!(r.proxy_states().collect::<Vec<_>>(), vec![&b"p"[..]]);
    // Without Proxy-State, or with a Message-Authenticator, the limit does not bite.
    let plain = unsigned(Code::AccessRequest, vec![attr(USER_NAME, b"carol")]);
    assert!(VerifiedRequest::verify_with(&plain, &secret(), limited).is_ok());
    let with_ma = signed(vec![attr(USER_NAME, b"carol"), attr(PROXY_STATE, b"p")]);
    assert!(VerifiedRequest::verify_with(&with_ma, &secret(), limited).is_ok());
}

#[test]
fn attribute_type_0_is_refused_before_anything_else() {
    let mut datagram = signed(vec![attr(USER_NAME, b"carol")]);
    datagram.extend_from_slice(&[0, 3, 0]);
    let len = u16::try_from(datagram.len()).unwrap().to_be_bytes();
    datagram[2..4].copy_from_slice(&len);
    assert_eq!(verify(&datagram).unwrap_err().kind(), "attribute_type_zero");
}

#[test]
fn proxy_states_keep_their_order() {
    let r = verified_with_proxy_states();
    let states: Vec<&[u8]> = r.proxy_states().collect();
    assert_eq!(states, vec![&b"first"[..], b"second", b"third"]);
}

#[test]
fn reply_has_ma_first_then_attributes_then_proxy_states() {
    let r = verified_with_proxy_states();
    let given = vec![attr(CLASS, b"staff"), Attribute::integer(27, 3600)];
    let bytes = encode_reply(&r, Code::AccessAccept, &given, &secret()).unwrap();
    let p = decode(&bytes).unwrap();
    assert_eq!(p.code, Code::AccessAccept);
    assert_eq!(p.identifier, r.identifier());
    let types: Vec<u8> = p.attributes.iter().map(|a| a.typ).collect();
    assert_eq!(
        types,
        vec![
            MESSAGE_AUTHENTICATOR,
            CLASS,
            27,
            PROXY_STATE,
            PROXY_STATE,
            PROXY_STATE
        ]
    );
    let states: Vec<&[u8]> = p.values(PROXY_STATE).collect();
    assert_eq!(states, vec![&b"first"[..], b"second", b"third"]);
}

/// Known answer: the reply's authenticators recomputed here from the bytes
/// alone with the `md-5` and `hmac` crates, following RFC 2865 §3 and
/// RFC 3579 §3.2 literally.
#[test]
fn reply_authenticators_match_an_independent_computation() {
    let r = verified_with_proxy_states();
    let bytes = encode_reply(&r, Code::AccessChallenge, &[attr(STATE, b"s1")], &secret()).unwrap();
    assert_eq!(
        bytes.len(),
        usize::from(u16::from_be_bytes([bytes[2], bytes[3]]))
    );
    assert_eq!(&bytes[20..22], &[80, 18]);

    // Response Authenticator: MD5(Code+ID+Length+RequestAuth+Attributes+Secret).
    let mut md5 = Md5::new();
    md5.update(&bytes[..4]);
    md5.update(r.authenticator());
    md5.update(&bytes[20..]);
    md5.update(SECRET);
    assert_eq!(&bytes[4..20], md5.finalize().as_slice());

    // Message-Authenticator: HMAC-MD5 with the request authenticator in place
    // and the MA value zeroed.
    let mut zeroed = bytes.clone();
    zeroed[4..20].copy_from_slice(r.authenticator());
    zeroed[22..38].fill(0);
    let mut mac = Hmac::<Md5>::new_from_slice(SECRET).unwrap();
    mac.update(&zeroed);
    assert_eq!(&bytes[22..38], mac.finalize().into_bytes().as_slice());
}

#[test]
fn status_server_is_answered_only_with_accept() {
    let r = verify(&sign_request(request(Code::StatusServer, vec![]), &secret()).unwrap()).unwrap();
    assert!(encode_reply(&r, Code::AccessAccept, &[], &secret()).is_ok());
    assert_eq!(
        encode_reply(&r, Code::AccessChallenge, &[], &secret()),
        Err(EncodeError::InvalidReplyCode {
            request: Code::StatusServer,
            reply: Code::AccessChallenge
        })
    );
}

#[test]
fn request_codes_are_not_replies() {
    let r = verified_with_proxy_states();
    for code in [Code::AccessRequest, Code::StatusServer] {
        assert!(matches!(
            encode_reply(&r, code, &[], &secret()),
            Err(EncodeError::InvalidReplyCode { .. })
        ));
    }
}

#[test]
fn reserved_and_oversized_attributes_are_refused() {
    let r = verified_with_proxy_states();
    for typ in [MESSAGE_AUTHENTICATOR, PROXY_STATE] {
        assert_eq!(
            encode_reply(&r, Code::AccessReject, &[attr(typ, &[0; 16])], &secret()),
            Err(EncodeError::ReservedAttribute { typ })
        );
    }
    let long = attr(REPLY_MESSAGE, &[b'x'; 254]);
    assert_eq!(
        encode_reply(&r, Code::AccessReject, &[long], &secret()),
        Err(EncodeError::AttributeTooLong {
            typ: REPLY_MESSAGE,
            len: 254
        })
    );
    let split = Attribute::reply_messages(&"x".repeat(600));
    assert_eq!(split.len(), 3);
    assert!(encode_reply(&r, Code::AccessReject, &split, &secret()).is_ok());
}

#[test]
fn error_kinds_are_stable_labels() {
    assert_eq!(
        RequestError::MessageAuthenticatorMissing.kind(),
        "message_authenticator_missing"
    );
    assert_eq!(
        RequestError::DuplicateAttribute { typ: 1 }.kind(),
        "duplicate_attribute"
    );
    assert_eq!(
        RequestError::Password(PasswordError::BadHiddenLength { len: 3 }).kind(),
        "bad_hidden_password_length"
    );
}
