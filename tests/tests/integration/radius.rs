//! `otpgate serve` as a RADIUS server (SPEC §5, §8) against real slapd, Redis and an
//! SMTP sink, driven by FreeRADIUS's `radclient` and by raw UDP.
//!
//! Codes are computed for a step relative to the step at the start of the test
//! (`base`), never for "the time of day": enrollment is confirmed with `base - 1`, and
//! each later login uses the next step. The test config accepts ±5 steps so a test
//! that crosses a step boundary still passes.
//!
//! A silent drop is observed, not waited for: the server counts every drop in its
//! metrics, so a test sends the packet, waits until the counter moves, and then finds
//! the client socket empty.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::otp::totp::{self, TotpParams};
use otpgate_core::secret::TotpSecret;
use otpgate_radius_proto::attr::{Attribute, USER_NAME};
use otpgate_radius_proto::{
    AccessRequestParams, Code, Reply, Secret, check_reply, encode_access_request,
    encode_status_server,
};
use otpgate_tests::{
    ConfigBuilder, OtpgateServe, Redis, Slapd, SmtpSink, TestConfig, otpgate_binary,
    radius_section, require_binary, toml_string, wait_until, write_radius_secret,
};
use serde_json::Value;
use zeroize::Zeroizing;

pub const SECRET: &str = "a-long-shared-secret-for-tests";
const WAIT: Duration = Duration::from_secs(10);

pub fn params() -> TotpParams {
    TotpParams {
        digits: 6,
        period: 30,
        skew_steps: 5,
        algorithm: otpgate_config::TotpAlgorithm::Sha1,
    }
}

pub fn current_step() -> u64 {
    totp::step_at(SystemClock.now(), 30)
}

pub fn code(secret: &TotpSecret, step: u64) -> String {
    totp::code_at_step(secret, step, &params())
}

/// The servers, a config and `otpgate serve`.
pub struct Env {
    /// Kept running for the test.
    pub _slapd: Slapd,
    pub redis: Redis,
    pub smtp: SmtpSink,
    pub config: TestConfig,
    pub server: OtpgateServe,
    pub base: u64,
}

/// Config for `mode` with the test's RADIUS client, groups and `extra` TOML.
pub fn write_config(
    slapd: &Slapd,
    redis: &Redis,
    smtp: &SmtpSink,
    mode: &str,
    extra: &str,
) -> TestConfig {
    let config = ConfigBuilder::new(slapd)
        .redis(redis)
        .smtp(smtp)
        .set("totp", "skew_steps", "5")
        .extra(&radius_section(mode, "100ms"))
        .extra(
            "[[radius.groups]]\ngroup = \"vpn-staff\"\nfilter_id = \"staff\"\nvlan = \"120\"\n\
             session_timeout = \"8h\"\n",
        )
        .extra(extra)
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    config
}

pub fn env(mode: &str, extra: &str) -> Env {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = write_config(&slapd, &redis, &smtp, mode, extra);
    let server = OtpgateServe::start(config.path()).unwrap();
    Env {
        _slapd: slapd,
        redis,
        smtp,
        config,
        server,
        base: current_step(),
    }
}

pub fn otpgate(config: &Path, args: &[&str]) -> Output {
    Command::new(otpgate_binary().unwrap())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("OTPGATE_CONFIG")
        .output()
        .unwrap()
}

pub fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Enrolls `user` with `otpgate user enroll/confirm --json`, confirming with the code
/// of `base - 1`; returns the secret.
pub fn enroll(config: &Path, user: &str, base: u64) -> TotpSecret {
    let enrolled = json(&otpgate(config, &["user", "enroll", user, "--json"]));
    let secret = TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(enrolled["secret"].as_str().unwrap().as_bytes())
            .unwrap(),
    );
    json(&otpgate(
        config,
        &["user", "confirm", user, &code(&secret, base - 1), "--json"],
    ));
    secret
}

/// What radclient printed about the reply.
#[derive(Debug)]
pub struct RadReply {
    /// `Access-Accept`, … or `None` when no reply came.
    pub code: Option<String>,
    /// `(name, value)` of the reply's attributes, values as radclient prints them.
    pub attributes: Vec<(String, String)>,
    pub output: String,
}

impl RadReply {
    /// The value of attribute `name`. radclient prints the attributes of RFC 2868
    /// with their tag (`Tunnel-Type:0`); a tag is not part of the name here.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n.split(':').next() == Some(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `radclient -x ADDR auth SECRET` with `attributes` on stdin (one `Name = value` per
/// line); Message-Authenticator added when `with_ma`. One try of `timeout` seconds.
pub fn radclient(
    addr: SocketAddr,
    secret: &str,
    attributes: &str,
    with_ma: bool,
    timeout: u32,
) -> RadReply {
    radclient_tries(addr, secret, attributes, with_ma, 1, timeout)
}

/// As [`radclient`], sending the same packet up to `tries` times, `timeout` seconds
/// apart, as a NAS retransmits.
pub fn radclient_tries(
    addr: SocketAddr,
    secret: &str,
    attributes: &str,
    with_ma: bool,
    tries: u32,
    timeout: u32,
) -> RadReply {
    let radclient = require_binary("radclient", &["freeradius-utils"]).unwrap();
    let mut input = attributes.to_string();
    if with_ma {
        input.push_str("\nMessage-Authenticator = 0x00\n");
    }
    let mut child = Command::new(radclient)
        .args(["-x", "-r", &tries.to_string(), "-t", &timeout.to_string()])
        .arg(addr.to_string())
        .args(["auth", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut code = None;
    let mut attributes = Vec::new();
    let mut in_reply = false;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Received ") {
            code = rest.split_whitespace().next().map(str::to_string);
            in_reply = true;
            continue;
        }
        if in_reply {
            match line.strip_prefix('\t').and_then(|l| l.split_once(" = ")) {
                Some((n, v)) => attributes.push((n.trim().to_string(), v.trim().to_string())),
                None => in_reply = false,
            }
        }
    }
    RadReply {
        code,
        attributes,
        output,
    }
}

pub fn pap(addr: SocketAddr, user: &str, password: &str) -> RadReply {
    radclient(
        addr,
        SECRET,
        &format!("User-Name = \"{user}\"\nUser-Password = \"{password}\""),
        true,
        5,
    )
}

pub fn answer(addr: SocketAddr, user: &str, state: &str, value: &str) -> RadReply {
    radclient(
        addr,
        SECRET,
        &format!("User-Name = \"{user}\"\nUser-Password = \"{value}\"\nState = {state}"),
        true,
        5,
    )
}

pub fn assert_code(reply: &RadReply, code: &str) {
    assert_eq!(reply.code.as_deref(), Some(code), "{}", reply.output);
}

/// A reject says only the generic message.
pub fn assert_generic_reject(reply: &RadReply) {
    assert_code(reply, "Access-Reject");
    assert_eq!(
        reply.get("Reply-Message"),
        Some("\"Authentication failed.\""),
        "{}",
        reply.output
    );
}

/// Waits until the metric series reaches `at_least`.
pub fn wait_metric(server: &OtpgateServe, series: &str, at_least: f64) {
    assert!(
        wait_until(WAIT, || server.metric(series) >= at_least),
        "{series} never reached {at_least}:\n{}",
        server.metrics().unwrap_or_default()
    );
}

pub fn dropped(reason: &str) -> String {
    format!("otpgate_radius_dropped_total{{reason=\"{reason}\"}}")
}

/// A UDP socket on `ip`, for raw exchanges.
pub fn udp(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Nothing is waiting on `socket`.
pub fn assert_no_reply(socket: &UdpSocket) {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let got = socket.recv_from(&mut buf);
    socket.set_nonblocking(false).unwrap();
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "unexpected reply: {got:?}"
    );
}

pub fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).unwrap();
    buf[..n].to_vec()
}

pub fn secret() -> Secret {
    Secret::new(SECRET.as_bytes().to_vec()).unwrap()
}

pub fn access_request(user: &str, password: &str, id: u8, auth: [u8; 16]) -> Vec<u8> {
    let mut p = AccessRequestParams::new(user);
    p.password = Some(Zeroizing::new(password.as_bytes().to_vec()));
    encode_access_request(&p, id, auth, &secret()).unwrap()
}

/// Sends a Status-Server from `socket` and returns whether it was answered (within
/// `wait`).
pub fn status_answered(socket: &UdpSocket, to: SocketAddr, id: u8, wait: Duration) -> bool {
    let auth = [id; 16];
    socket
        .send_to(&encode_status_server(id, auth, &secret()).unwrap(), to)
        .unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Ok(p) = check_reply(&buf[..n], id, auth, &secret()) {
                    return p.code == Code::AccessAccept;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn append_and_challenge_logins_with_totp() {
    let e = env("auto", "");
    let c = e.config.path();
    let alice = enroll(c, "alice", e.base);
    let addr = e.server.radius_addr();

    // Append: password followed by the code; group attributes in the accept.
    let ok = pap(
        addr,
        "alice",
        &format!("alice-pw-1{}", code(&alice, e.base)),
    );
    assert_code(&ok, "Access-Accept");
    assert_eq!(ok.get("Filter-Id"), Some("\"staff\""), "{}", ok.output);
    assert_eq!(ok.get("Session-Timeout"), Some("28800"), "{}", ok.output);
    assert_eq!(
        ok.get("Tunnel-Private-Group-Id"),
        Some("\"120\""),
        "{}",
        ok.output
    );
    assert_eq!(ok.get("Tunnel-Type"), Some("VLAN"), "{}", ok.output);
    assert_eq!(
        ok.get("Tunnel-Medium-Type"),
        Some("IEEE-802"),
        "{}",
        ok.output
    );

    // The same code again is a replay.
    let replay = pap(
        addr,
        "alice",
        &format!("alice-pw-1{}", code(&alice, e.base)),
    );
    assert_generic_reject(&replay);
    // A wrong password with a fresh code reveals nothing more.
    let wrong = pap(addr, "alice", &format!("nope{}", code(&alice, e.base + 1)));
    assert_generic_reject(&wrong);

    // Challenge: the password alone, then the code with the State.
    let challenge = pap(addr, "alice", "alice-pw-1");
    assert_code(&challenge, "Access-Challenge");
    assert!(
        challenge
            .get("Reply-Message")
            .is_some_and(|m| m.contains("One-time password")),
        "{}",
        challenge.output
    );
    let state = challenge.get("State").unwrap().to_string();
    assert!(state.len() >= 2 + 32, "128 bits or more: {state}");
    let ok = answer(addr, "alice", &state, &code(&alice, e.base + 1));
    assert_code(&ok, "Access-Accept");
    // The State is single use.
    let again = answer(addr, "alice", &state, &code(&alice, e.base + 2));
    assert_generic_reject(&again);

    // Unknown users and not-activated users get the same generic reject.
    assert_generic_reject(&pap(addr, "nosuchuser", "whatever123456"));
    assert_generic_reject(&pap(addr, "carol", "carol-pw-3123456"));

    // One info line per request, naming user, client, mode and result; a log file
    // gets no terminal colour codes.
    let log = e.server.log();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in the log file: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("radius request")
            && l.contains("alice")
            && l.contains("localhost")
            && l.contains("auto")
            && l.contains("accept")),
        "{log}"
    );
    wait_metric(
        &e.server,
        "otpgate_requests_total{door=\"radius\",result=\"accept\"}",
        2.0,
    );
}

#[test]
fn append_mode_refuses_a_password_alone_and_challenge_mode_a_code_appended() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let base = current_step();
    let append_cfg = write_config(&slapd, &redis, &smtp, "append", "");
    let append = OtpgateServe::start(append_cfg.path()).unwrap();
    let alice = enroll(append_cfg.path(), "alice", base);
    assert_generic_reject(&pap(append.radius_addr(), "alice", "alice-pw-1"));
    assert_code(
        &pap(
            append.radius_addr(),
            "alice",
            &format!("alice-pw-1{}", code(&alice, base)),
        ),
        "Access-Accept",
    );

    let challenge_cfg = write_config(&slapd, &redis, &smtp, "challenge", "");
    std::fs::copy(append_cfg.key_file(), challenge_cfg.key_file()).unwrap();
    let challenge = OtpgateServe::start(challenge_cfg.path()).unwrap();
    assert_generic_reject(&pap(
        challenge.radius_addr(),
        "alice",
        &format!("alice-pw-1{}", code(&alice, base + 1)),
    ));
}

#[test]
fn email_otp_through_the_keyword() {
    let e = env("challenge", "");
    let c = e.config.path();
    let addr = e.server.radius_addr();
    // A notification address, confirmed with the code mailed to it; no app.
    json(&otpgate(
        c,
        &[
            "user",
            "email",
            "set",
            "alice",
            "alice.private@example.org",
            "--json",
        ],
    ));
    let mails = e.smtp.mails_to("alice.private@example.org").unwrap();
    let confirm = mails.last().unwrap().code(8).unwrap();
    json(&otpgate(
        c,
        &["user", "email", "confirm", "alice", &confirm, "--json"],
    ));

    let first = pap(addr, "alice", "alice-pw-1");
    assert_code(&first, "Access-Challenge");
    let state = first.get("State").unwrap().to_string();
    let mailed = answer(addr, "alice", &state, "email");
    assert_code(&mailed, "Access-Challenge");
    assert!(
        mailed
            .get("Reply-Message")
            .is_some_and(|m| m.contains("a***@example.org")),
        "{}",
        mailed.output
    );
    let mut otp = None;
    assert!(wait_until(WAIT, || {
        otp = e
            .smtp
            .mails_to("alice.private@example.org")
            .unwrap()
            .iter()
            .filter_map(|m| m.code(8))
            .find(|c| *c != confirm);
        otp.is_some()
    }));
    let otp = otp.unwrap();
    let state = mailed.get("State").unwrap().to_string();
    assert_code(&answer(addr, "alice", &state, &otp), "Access-Accept");
    // Usable once.
    let again = pap(addr, "alice", "alice-pw-1");
    let state = again.get("State").unwrap().to_string();
    assert_generic_reject(&answer(addr, "alice", &state, &otp));
}

#[test]
fn helpdesk_otp_for_a_user_without_an_address() {
    let e = env("auto", "");
    let c = e.config.path();
    let addr = e.server.radius_addr();
    enroll(c, "bob", e.base);
    // Lost phone: password + keyword (append style) queues a helpdesk request.
    let queued = pap(addr, "bob", "bob-pw-2email");
    assert_code(&queued, "Access-Challenge");
    assert!(
        queued
            .get("Reply-Message")
            .is_some_and(|m| m.contains("helpdesk")),
        "{}",
        queued.output
    );
    let list = json(&otpgate(c, &["helpdesk", "list", "--json"]));
    assert!(list.to_string().contains("bob"), "{list}");
    let issued = json(&otpgate(c, &["helpdesk", "issue", "bob", "--json"]));
    let otp = issued["otp"].as_str().unwrap();
    let state = queued.get("State").unwrap().to_string();
    assert_code(&answer(addr, "bob", &state, otp), "Access-Accept");
    // Append style works for an issued code too, once.
    assert_generic_reject(&pap(addr, "bob", &format!("bob-pw-2{otp}")));
}

#[test]
fn lockout_after_consecutive_failures() {
    let e = env("auto", "[lockout]\nmax_failures = 3\nlock_for = \"15m\"\n");
    let c = e.config.path();
    let addr = e.server.radius_addr();
    let alice = enroll(c, "alice", e.base);
    let right = code(&alice, e.base);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        assert_generic_reject(&pap(addr, "alice", &format!("alice-pw-1{wrong}")));
    }
    assert_generic_reject(&pap(addr, "alice", &format!("alice-pw-1{right}")));
    let status = json(&otpgate(c, &["user", "status", "alice", "--json"]));
    assert_eq!(status["locked"], true, "{status}");
    // A locked user gets no challenge either.
    assert_generic_reject(&pap(addr, "alice", "alice-pw-1"));
    json(&otpgate(c, &["user", "unlock", "alice", "--json"]));
    assert_code(
        &pap(addr, "alice", &format!("alice-pw-1{right}")),
        "Access-Accept",
    );
}

#[test]
fn chap_is_rejected_and_named_in_the_log() {
    let e = env("auto", "");
    let reply = radclient(
        e.server.radius_addr(),
        SECRET,
        "User-Name = \"alice\"\nCHAP-Password = \"alice-pw-1\"",
        true,
        5,
    );
    assert_generic_reject(&reply);
    assert!(
        e.server.log().contains("CHAP is not supported"),
        "{}",
        e.server.log()
    );
}

#[test]
fn unknown_clients_wrong_secrets_and_missing_message_authenticators_are_silent() {
    let e = env("auto", "");
    let addr = e.server.radius_addr();

    // Wrong secret: radclient hears nothing.
    let r = radclient(
        addr,
        "not-the-secret",
        "User-Name = \"alice\"\nUser-Password = \"alice-pw-1\"",
        true,
        1,
    );
    assert_eq!(r.code, None, "{}", r.output);
    wait_metric(&e.server, &dropped("message_authenticator_invalid"), 1.0);

    // No Message-Authenticator (BlastRADIUS): dropped.
    let r = radclient(
        addr,
        SECRET,
        "User-Name = \"alice\"\nUser-Password = \"alice-pw-1\"",
        false,
        1,
    );
    assert_eq!(r.code, None, "{}", r.output);
    wait_metric(&e.server, &dropped("message_authenticator_missing"), 1.0);

    // An address that matches no client: dropped, counted, logged once in a while.
    let stranger = udp("127.0.0.2");
    for i in 0..3 {
        stranger
            .send_to(&access_request("alice", "alice-pw-1", i, [i; 16]), addr)
            .unwrap();
    }
    wait_metric(&e.server, &dropped("unknown_client"), 3.0);
    assert_no_reply(&stranger);
    let log = e.server.log();
    assert_eq!(
        log.matches("matches no client").count(),
        1,
        "rate-limited: {log}"
    );

    // The server still answers.
    let ok = udp("127.0.0.1");
    assert!(status_answered(&ok, addr, 9, WAIT));
}

/// Datagrams that strict decoding or verification refuses: `(name, bytes, reason)`.
fn malformed() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let header = |code: u8, len: u16| {
        let mut v = vec![code, 1];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(&[7; 16]);
        v
    };
    let with = |code: u8, attrs: &[u8]| {
        let mut v = header(code, (20 + attrs.len()) as u16);
        v.extend_from_slice(attrs);
        v
    };
    let signed = access_request("alice", "alice-pw-1", 3, [3; 16]);
    let mut tampered = signed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut dup = AccessRequestParams::new("alice");
    dup.extra = vec![Attribute::new(USER_NAME, b"bob".to_vec()).unwrap()];
    let duplicate = encode_access_request(&dup, 4, [4; 16], &secret()).unwrap();
    let many: Vec<u8> = std::iter::repeat_n([30u8, 2], 101).flatten().collect();
    vec![
        ("too short", vec![1, 2, 0, 20, 0, 0], "too_short"),
        ("unknown code", header(99, 20), "unknown_code"),
        ("length below 20", header(1, 19), "length_out_of_range"),
        ("length above 4096", header(1, 5000), "length_out_of_range"),
        (
            "length beyond the datagram",
            header(1, 40),
            "length_exceeds_datagram",
        ),
        (
            "attribute length 1",
            with(1, &[1, 1]),
            "attribute_too_short",
        ),
        (
            "attribute overrun",
            with(1, &[1, 9, b'a']),
            "attribute_overrun",
        ),
        ("too many attributes", with(1, &many), "too_many_attributes"),
        ("a reply sent as a request", with(2, &[]), "not_a_request"),
        (
            "no Message-Authenticator",
            with(1, &[1, 7, b'a', b'l', b'i', b'c', b'e']),
            "message_authenticator_missing",
        ),
        (
            "Message-Authenticator of 4 bytes",
            with(1, &[80, 6, 0, 0, 0, 0]),
            "message_authenticator_length",
        ),
        ("tampered packet", tampered, "message_authenticator_invalid"),
        ("User-Name twice", duplicate, "duplicate_attribute"),
    ]
}

#[test]
fn malformed_packets_get_no_reply_and_the_server_keeps_answering() {
    let e = env("auto", "");
    let addr = e.server.radius_addr();
    let socket = udp("127.0.0.1");
    for (name, bytes, reason) in malformed() {
        let before = e.server.metric(&dropped(reason));
        socket.send_to(&bytes, addr).unwrap();
        assert!(
            wait_until(WAIT, || e.server.metric(&dropped(reason)) > before),
            "{name}: not counted as {reason}:\n{}",
            e.server.metrics().unwrap()
        );
        assert_no_reply(&socket);
    }
    assert!(status_answered(&socket, addr, 200, WAIT));
}

#[test]
fn a_retransmission_gets_the_same_bytes_and_is_evaluated_once() {
    let e = env("auto", "");
    let c = e.config.path();
    let addr = e.server.radius_addr();
    let alice = enroll(c, "alice", e.base);
    let socket = udp("127.0.0.1");
    let request = access_request(
        "alice",
        &format!("alice-pw-1{}", code(&alice, e.base)),
        42,
        [0x42; 16],
    );
    socket.send_to(&request, addr).unwrap();
    let first = recv(&socket);
    socket.send_to(&request, addr).unwrap();
    let second = recv(&socket);
    assert_eq!(first, second, "byte-identical replies");
    let reply =
        Reply::from_packet(check_reply(&first, 42, [0x42; 16], &secret()).unwrap()).unwrap();
    assert!(matches!(reply, Reply::Accept { .. }), "{reply:?}");
    wait_metric(
        &e.server,
        "otpgate_radius_duplicates_total{outcome=\"resent\"}",
        1.0,
    );

    // One evaluation: one accept in the audit, and the code was not burnt twice.
    let audit = otpgate(c, &["audit", "--user", "alice", "--json"]);
    let accepts = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["result"] == "accept")
        .count();
    assert_eq!(accepts, 1);
    assert_eq!(
        e.server
            .metric("otpgate_requests_total{door=\"radius\",result=\"accept\"}"),
        1.0
    );

    // A reject is cached too, after its delay, and a copy during the delay is dropped.
    let bad = access_request("alice", "alice-pw-1000000", 43, [0x43; 16]);
    let sent = Instant::now();
    socket.send_to(&bad, addr).unwrap();
    socket.send_to(&bad, addr).unwrap();
    let first = recv(&socket);
    assert!(sent.elapsed() >= Duration::from_millis(100), "reject_delay");
    socket.send_to(&bad, addr).unwrap();
    let second = recv(&socket);
    assert_eq!(first, second);
    assert_eq!(
        e.server
            .metric("otpgate_requests_total{door=\"radius\",result=\"reject\"}"),
        1.0
    );
}

#[test]
fn two_servers_on_one_redis_share_the_challenge() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let base = current_step();
    let config = write_config(&slapd, &redis, &smtp, "challenge", "");
    let a = OtpgateServe::start(config.path()).unwrap();
    let b = OtpgateServe::start(config.path()).unwrap();
    assert_ne!(a.radius_addr(), b.radius_addr());
    let alice = enroll(config.path(), "alice", base);
    let challenge = pap(a.radius_addr(), "alice", "alice-pw-1");
    assert_code(&challenge, "Access-Challenge");
    let state = challenge.get("State").unwrap().to_string();
    assert_code(
        &answer(b.radius_addr(), "alice", &state, &code(&alice, base)),
        "Access-Accept",
    );
    // The same code on the first server is a replay, across instances.
    let again = pap(
        a.radius_addr(),
        "alice",
        &format!("alice-pw-1{}", code(&alice, base)),
    );
    assert_generic_reject(&again);
}

#[test]
fn a_store_outage_fails_closed_and_recovers() {
    let mut e = env("auto", "");
    let c = e.config.path().to_path_buf();
    let addr = e.server.radius_addr();
    let alice = enroll(&c, "alice", e.base);
    let socket = udp("127.0.0.1");
    assert!(status_answered(&socket, addr, 1, WAIT));

    e.redis.stop_keeping_data().unwrap();
    let login = access_request(
        "alice",
        &format!("alice-pw-1{}", code(&alice, e.base)),
        50,
        [0x50; 16],
    );
    socket.send_to(&login, addr).unwrap();
    wait_metric(&e.server, &dropped("backend"), 1.0);
    wait_metric(
        &e.server,
        "otpgate_backend_errors_total{door=\"radius\",backend=\"store\"}",
        1.0,
    );
    assert_no_reply(&socket);
    let before = e.server.metric(&dropped("unhealthy"));
    socket
        .send_to(&encode_status_server(2, [2; 16], &secret()).unwrap(), addr)
        .unwrap();
    wait_metric(&e.server, &dropped("unhealthy"), before + 1.0);
    assert_no_reply(&socket);
    assert!(
        e.server.log().contains("store"),
        "the log names the backend"
    );

    e.redis.start_again().unwrap();
    let mut id = 10u8;
    assert!(
        wait_until(Duration::from_secs(20), || {
            id = id.wrapping_add(1);
            status_answered(&socket, addr, id, Duration::from_secs(3))
        }),
        "Status-Server answered again once Redis is back"
    );
    // The same login, retransmitted after the outage, is evaluated afresh.
    socket.send_to(&login, addr).unwrap();
    let reply = recv(&socket);
    let reply =
        Reply::from_packet(check_reply(&reply, 50, [0x50; 16], &secret()).unwrap()).unwrap();
    assert!(matches!(reply, Reply::Accept { .. }), "{reply:?}");
}

#[test]
fn sighup_reloads_clients_and_sigterm_stops_gracefully() {
    let mut e = env("auto", "");
    let addr = e.server.radius_addr();
    let other = udp("127.0.0.2");
    other
        .send_to(&encode_status_server(1, [1; 16], &secret()).unwrap(), addr)
        .unwrap();
    wait_metric(&e.server, &dropped("unknown_client"), 1.0);
    assert_no_reply(&other);

    // A broken file keeps the old clients.
    let good = e.config.contents().unwrap();
    std::fs::write(e.config.path(), format!("{good}\n[radius]\nbogus = 1\n")).unwrap();
    e.server.signal("HUP").unwrap();
    assert!(wait_until(WAIT, || e
        .server
        .log()
        .contains("reload failed")));
    assert!(status_answered(&udp("127.0.0.1"), addr, 2, WAIT));

    // A new client is taken without a restart.
    let second = format!(
        "{good}\n[[radius.clients]]\nname = \"second\"\naddress = \"127.0.0.2/32\"\nsecret_file = {}\n",
        toml_string(&e.config.dir().join("radius.secret").to_string_lossy())
    );
    std::fs::write(e.config.path(), second).unwrap();
    e.server.signal("HUP").unwrap();
    assert!(wait_until(WAIT, || e
        .server
        .log()
        .contains("reloaded radius clients: 2")));
    assert!(status_answered(&other, addr, 3, WAIT));

    e.server.signal("TERM").unwrap();
    let status = e.server.wait_exit(WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", e.server.log());
}
