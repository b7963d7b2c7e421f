//! Strict RADIUS decoding against the real `otpgate serve`, with `radclient` (SPEC §5):
//! attribute type 0 is dropped and counted, and Proxy-State without
//! Message-Authenticator is dropped unless the client's `limit_proxy_state = false`.

use otpgate_tests::{
    ConfigBuilder, OtpgateServe, Redis, Slapd, SmtpSink, radius_section, write_radius_secret,
};

use crate::radius::{SECRET, assert_no_reply, dropped, radclient, recv, udp, wait_metric};

/// `otpgate serve` whose one client has the extra `client_keys` (TOML lines).
fn serve(
    client_keys: &str,
) -> (
    Slapd,
    Redis,
    SmtpSink,
    otpgate_tests::TestConfig,
    OtpgateServe,
) {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let section = radius_section("auto", "100ms").replace(
        "secret_file = \"radius.secret\"\n",
        &format!("secret_file = \"radius.secret\"\n{client_keys}"),
    );
    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .smtp(&smtp)
        .extra(&section)
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    (slapd, redis, smtp, config, server)
}

const WRONG_PASSWORD: &str = "User-Name = \"alice\"\nUser-Password = \"alice-pw-1\"";

/// An Access-Request with User-Name `alice`, a correct Message-Authenticator and the
/// raw attributes `extra` (radclient cannot send attribute type 0: it has no name in
/// its dictionary, and it does not encode `Raw-Attribute`).
fn signed_with(id: u8, extra: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut p = vec![1, id, 0, 0];
    p.extend_from_slice(&[0x5A; 16]);
    p.extend_from_slice(&[1, 7, b'a', b'l', b'i', b'c', b'e']);
    let ma_at = p.len() + 2;
    p.extend_from_slice(&[80, 18]);
    p.extend_from_slice(&[0; 16]);
    p.extend_from_slice(extra);
    let len = u16::try_from(p.len()).unwrap().to_be_bytes();
    p[2..4].copy_from_slice(&len);
    let mut mac = Hmac::<md5::Md5>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&p);
    p[ma_at..ma_at + 16].copy_from_slice(&mac.finalize().into_bytes());
    p
}

#[test]
fn attribute_type_0_gets_no_reply_and_is_counted() {
    let (_s, _r, _m, _c, server) = serve("");
    let addr = server.radius_addr();
    let socket = udp("127.0.0.1");
    // The request is answered without the attribute...
    socket.send_to(&signed_with(1, &[]), addr).unwrap();
    assert!(!recv(&socket).is_empty());
    // ...and dropped with it (type 0, length 3), although correctly signed.
    socket
        .send_to(&signed_with(2, &[0, 3, 0x41]), addr)
        .unwrap();
    wait_metric(&server, &dropped("attribute_type_zero"), 1.0);
    assert_no_reply(&socket);
    assert!(server.log().contains("listening"), "still running");
    let r = radclient(addr, SECRET, WRONG_PASSWORD, true, 5);
    assert_eq!(r.code.as_deref(), Some("Access-Reject"), "{}", r.output);
}

/// A wrong-password request with Proxy-State, with or without Message-Authenticator;
/// `answered`: a reject with the Proxy-State copied back, else no reply.
fn proxy_state_request(server: &OtpgateServe, with_ma: bool, answered: bool) {
    let input = format!("{WRONG_PASSWORD}\nProxy-State = 0x0102");
    let r = radclient(
        server.radius_addr(),
        SECRET,
        &input,
        with_ma,
        if answered { 5 } else { 1 },
    );
    if answered {
        assert_eq!(r.code.as_deref(), Some("Access-Reject"), "{}", r.output);
        assert_eq!(r.get("Proxy-State"), Some("0x0102"), "{}", r.output);
    } else {
        assert_eq!(r.code, None, "{}", r.output);
    }
}

#[test]
fn proxy_state_without_message_authenticator_is_dropped_by_default() {
    let (_s, _r, _m, _c, server) = serve("require_message_authenticator = false\n");
    // Without Proxy-State the client may leave Message-Authenticator out...
    let r = radclient(server.radius_addr(), SECRET, WRONG_PASSWORD, false, 5);
    assert_eq!(r.code.as_deref(), Some("Access-Reject"), "{}", r.output);
    // ...with it, not.
    proxy_state_request(&server, false, false);
    wait_metric(
        &server,
        &dropped("proxy_state_without_message_authenticator"),
        1.0,
    );
    // With Message-Authenticator it is answered, Proxy-State copied back.
    proxy_state_request(&server, true, true);
}

#[test]
fn proxy_state_without_message_authenticator_is_answered_with_the_limit_off() {
    let (_s, _r, _m, _c, server) =
        serve("require_message_authenticator = false\nlimit_proxy_state = false\n");
    proxy_state_request(&server, false, true);
    assert_eq!(
        server.metric(&dropped("proxy_state_without_message_authenticator")),
        0.0
    );
}
