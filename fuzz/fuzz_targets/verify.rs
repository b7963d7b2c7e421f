//! VerifiedRequest::verify with a fixed secret, with and without a required
//! Message-Authenticator; every accepted request gets a reply that the
//! client-side check accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpgate_radius_proto::{Code, EncodeError, Secret, VerifiedRequest, check_reply, encode_reply};

/// The secret the seed corpus in `corpus/verify` was signed with.
const SECRET: &[u8] = b"otpgate-fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new(SECRET).expect("non-empty secret");
    for required in [true, false] {
        let Ok(request) = VerifiedRequest::verify(data, &secret, required) else {
            continue;
        };
        assert!(request.code().is_request());
        assert!(
            request
                .user_name()
                .is_none_or(|n| (1..=253).contains(&n.len()))
        );
        assert!(request.user_password().is_none_or(|p| p.len() <= 128));
        assert!(!required || request.had_message_authenticator());
        // `verify` limits Proxy-State: none without a Message-Authenticator.
        assert!(request.had_message_authenticator() || request.proxy_states().count() == 0);
        let _ = (request.has_chap(), request.has_eap(), request.has_mschap());
        let _ = request.proxy_states().count();

        let code = match request.code() {
            Code::StatusServer => Code::AccessAccept,
            _ => Code::AccessReject,
        };
        match encode_reply(&request, code, &[], &secret) {
            Ok(reply) => {
                let packet = check_reply(
                    &reply,
                    request.identifier(),
                    *request.authenticator(),
                    &secret,
                )
                .expect("our own reply checks");
                assert_eq!(packet.code, code);
                let proxy: Vec<&[u8]> = packet.values(33).collect();
                assert_eq!(proxy, request.proxy_states().collect::<Vec<_>>());
            }
            // A request near the size or count limits may leave no room for
            // the reply's Message-Authenticator.
            Err(EncodeError::PacketTooLong { .. } | EncodeError::TooManyAttributes) => {}
            Err(e) => panic!("reply refused: {e}"),
        }
    }
});
