//! Writes the fuzzing seed corpus (`fuzz/corpus/{decode,verify}`).
//!
//! Run by hand after a format change:
//! `cargo test -p otpgate-radius-proto -- --ignored write_fuzz_seed_corpus`.

use std::path::Path;

use zeroize::Zeroizing;

use crate::attr::{self, Attribute};
use crate::exchange::{AccessRequestParams, encode_access_request, encode_status_server};
use crate::request::{VerifiedRequest, encode_reply};
use crate::testdata::{RFC2865_ACCESS_ACCEPT, RFC2865_ACCESS_REQUEST};
use crate::{Code, Secret};

/// Must match `SECRET` in `fuzz/fuzz_targets/verify.rs`.
const FUZZ_SECRET: &[u8] = b"otpgate-fuzz-secret";

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let secret = Secret::new(FUZZ_SECRET).unwrap();
    let mut full = AccessRequestParams::new("alice");
    full.password = Some(Zeroizing::new(b"correct horse 123456".to_vec()));
    full.calling_station_id = Some("192.0.2.10".into());
    full.nas_identifier = Some("ssh-gw-1".into());
    full.extra = vec![
        Attribute::integer(attr::NAS_PORT, 22),
        Attribute::new(attr::PROXY_STATE, b"proxy-1".to_vec()).unwrap(),
        Attribute::new(attr::PROXY_STATE, b"proxy-2".to_vec()).unwrap(),
    ];
    let access_request = encode_access_request(&full, 1, [0x11; 16], &secret).unwrap();

    let mut answer = AccessRequestParams::new("alice");
    answer.password = Some(Zeroizing::new(b"654321".to_vec()));
    answer.state = Some(vec![0xAB; 16]);
    let challenge_answer = encode_access_request(&answer, 2, [0x22; 16], &secret).unwrap();

    let mut chap = AccessRequestParams::new("bob");
    chap.extra = vec![
        Attribute::new(attr::CHAP_PASSWORD, vec![1; 17]).unwrap(),
        Attribute::new(attr::EAP_MESSAGE, vec![2, 1, 0, 5, 1]).unwrap(),
        Attribute::vendor_specific(attr::VENDOR_MICROSOFT, 11, &[3; 16]).unwrap(),
    ];
    let other_methods = encode_access_request(&chap, 3, [0x33; 16], &secret).unwrap();

    let status = encode_status_server(4, [0x44; 16], &secret).unwrap();

    let request = VerifiedRequest::verify(&access_request, &secret, true).unwrap();
    let mut vlan = vec![
        Attribute::tunnel_type(0, attr::TUNNEL_TYPE_VLAN).unwrap(),
        Attribute::tunnel_medium_type(0, attr::TUNNEL_MEDIUM_IEEE_802).unwrap(),
        Attribute::tunnel_private_group_id(None, "120").unwrap(),
        Attribute::integer(attr::SESSION_TIMEOUT, 3600),
    ];
    vlan.push(Attribute::string(attr::FILTER_ID, "staff").unwrap());
    let accept = encode_reply(&request, Code::AccessAccept, &vlan, &secret).unwrap();
    let mut prompt = vec![Attribute::new(attr::STATE, vec![0xAB; 16]).unwrap()];
    prompt.extend(Attribute::reply_messages("One-time password: "));
    let challenge = encode_reply(&request, Code::AccessChallenge, &prompt, &secret).unwrap();

    vec![
        ("rfc2865-access-request", RFC2865_ACCESS_REQUEST.to_vec()),
        ("rfc2865-access-accept", RFC2865_ACCESS_ACCEPT.to_vec()),
        ("access-request", access_request),
        ("access-request-state", challenge_answer),
        ("access-request-chap-eap-mschap", other_methods),
        ("status-server", status),
        ("access-accept-vlan", accept),
        ("access-challenge", challenge),
    ]
}

#[test]
#[ignore = "writes files; run by hand to refresh the fuzz seed corpus"]
fn write_fuzz_seed_corpus() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for target in ["decode", "verify"] {
        let dir = fuzz.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}

#[test]
fn seeds_decode_and_requests_verify() {
    let secret = Secret::new(FUZZ_SECRET).unwrap();
    for (name, bytes) in seeds() {
        let packet = crate::decode(&bytes).unwrap();
        if packet.code.is_request() && !name.starts_with("rfc2865") {
            VerifiedRequest::verify(&bytes, &secret, true).unwrap();
        }
    }
}
