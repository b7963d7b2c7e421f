//! The login flow under faults (SPEC §2 "One login flow"), against real slapd, Redis
//! and an SMTP sink, with the harness's fault proxy between `otpgate serve` and the
//! directory or the mail server. Each test is one measured defect of the doors that
//! ordered the checks themselves:
//!
//! 1. one LDAP bind per request, wrong or right (binds counted by the proxy);
//! 2. a directory slow on the second round burns no code and counts no failure;
//! 3. parallel guesses of a mailed code stop at the lock;
//! 4. an SMTP server that hangs after DATA leaves no usable code, and the attempt is
//!    audited;
//! 5. a reset that lands while a login waits on the directory leaves no trusted device.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use otpgate_radius_proto::{AccessRequestParams, Code, check_reply, encode_access_request};
use otpgate_tests::{
    ALICE, ConfigBuilder, FaultProxy, LdapOp, OtpgateServe, Redis, Slapd, SmtpSink, TestConfig,
    toml_string, toml_string_array, wait_until, write_radius_secret,
};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::radius::{
    RadReply, SECRET, assert_code, code, current_step, enroll, json, otpgate, pap, radclient_tries,
    secret,
};

const WAIT: Duration = Duration::from_secs(15);

/// The servers, the proxies, a config through them and `otpgate serve`.
struct Faulty {
    slapd: Slapd,
    redis: Redis,
    smtp: SmtpSink,
    ldap: FaultProxy,
    mail: FaultProxy,
    config: TestConfig,
    /// The same configuration, but straight to slapd (for the administrator's CLI while
    /// the proxy holds the server's directory traffic).
    direct: PathBuf,
    server: OtpgateServe,
    base: u64,
}

/// `[radius]` with `mode`, `request_timeout`, a client that trusts stations, and
/// `extra` TOML; the directory and SMTP reached through fault proxies.
fn faulty(mode: &str, request_timeout: &str, extra: &str) -> Faulty {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let ldap = FaultProxy::start(([127, 0, 0, 1], slapd.port()).into()).unwrap();
    let mail = FaultProxy::start(sink_addr(&smtp)).unwrap();
    let radius = format!(
        "[radius]\nlisten = [\"127.0.0.1:0\"]\nmode = \"{mode}\"\nreject_delay = \"100ms\"\n\
         request_timeout = \"{request_timeout}\"\n\n\
         [[radius.clients]]\nname = \"localhost\"\naddress = \"127.0.0.1/32\"\n\
         secret_file = \"radius.secret\"\ntrust_calling_station = true\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n"
    );
    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .smtp(&smtp)
        .set("directory", "urls", &toml_string_array(&[ldap.ldap_url()]))
        .set(
            "smtp",
            "url",
            &toml_string(&format!("smtp://{}", mail.addr())),
        )
        // The mail gives up after 4 s: later than a 2 s request deadline.
        .set("smtp", "timeout", &toml_string("4s"))
        .set("totp", "skew_steps", "5")
        // Every round searches the directory, so the proxy can slow or hold the search
        // of the second.
        .set("directory", "cache_for", &toml_string("0s"))
        .extra(&radius)
        .extra(extra)
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    let direct = config.dir().join("direct.toml");
    let text = config
        .contents()
        .unwrap()
        .replace(&ldap.ldap_url(), &slapd.url());
    std::fs::write(&direct, text).unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    Faulty {
        slapd,
        redis,
        smtp,
        ldap,
        mail,
        config,
        direct,
        server,
        base: current_step(),
    }
}

/// The SMTP sink's address, from its URL.
fn sink_addr(smtp: &SmtpSink) -> SocketAddr {
    let url = smtp.url();
    let hostport = url.trim_start_matches("smtp://");
    hostport.parse().unwrap()
}

fn alice_dn(slapd: &Slapd) -> String {
    format!("uid=alice,{}", slapd.base_dn())
}

fn status(config: &Path, user: &str) -> Value {
    json(&otpgate(config, &["user", "status", user, "--json"]))
}

/// `radclient` with retransmissions: `tries` sends of the same packet, `timeout`
/// seconds apart, as a NAS does.
fn radclient_retrying(addr: SocketAddr, attributes: &str, tries: u32, timeout: u32) -> RadReply {
    radclient_tries(addr, SECRET, attributes, true, tries, timeout)
}

/// Registers and confirms `address` as `user`'s notification address.
fn register_address(config: &Path, smtp: &SmtpSink, user: &str, address: &str) {
    json(&otpgate(
        config,
        &["user", "email", "set", user, address, "--json"],
    ));
    let mails = smtp.mails_to(address).unwrap();
    let confirm = mails.last().unwrap().code(8).unwrap();
    json(&otpgate(
        config,
        &["user", "email", "confirm", user, &confirm, "--json"],
    ));
}

/// The State of an Access-Challenge, as radclient prints it (`0x…`).
fn state_of(reply: &RadReply) -> String {
    reply
        .get("State")
        .unwrap_or_else(|| panic!("no State: {}", reply.output))
        .to_string()
}

fn audit(config: &Path, user: &str) -> Vec<Value> {
    let out = otpgate(
        config,
        &["audit", "--user", user, "--since", "1h", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_request_costs_one_ldap_bind_wrong_or_right() {
    let f = faulty("auto", "5s", "");
    let secret = enroll(f.config.path(), "alice", f.base);
    let addr = f.server.radius_addr();
    let dn = alice_dn(&f.slapd);
    let binds = |f: &Faulty| f.ldap.ldap_binds().iter().filter(|d| **d == dn).count();
    let mut step = f.base;
    let mut next_code = || {
        step += 1;
        code(&secret, step)
    };

    // A wrong password followed by a valid code.
    f.ldap.clear_counts();
    let valid = next_code();
    let reply = pap(addr, "alice", &format!("not-the-password{valid}"));
    assert_code(&reply, "Access-Reject");
    assert_eq!(binds(&f), 1, "a wrong password + a valid code: one bind");

    // A wrong password that itself ends in digits, followed by a valid code.
    f.ldap.clear_counts();
    let reply = pap(addr, "alice", &format!("wrong12345678{valid}"));
    assert_code(&reply, "Access-Reject");
    assert_eq!(binds(&f), 1, "a wrong password ending in digits: one bind");

    // A wrong password and a wrong code; the whole value a wrong password.
    for value in ["not-the-password000000", "not-the-password"] {
        f.ldap.clear_counts();
        assert_code(&pap(addr, "alice", value), "Access-Reject");
        assert_eq!(binds(&f), 1, "{value}: one bind");
    }

    // The code was never consumed by those: it still logs in, with one bind.
    f.ldap.clear_counts();
    let reply = pap(addr, "alice", &format!("{}{valid}", ALICE.password));
    assert_code(&reply, "Access-Accept");
    assert_eq!(binds(&f), 1, "password + code: one bind");

    // The password alone (auto: a challenge), and the answer (no bind at all).
    f.ldap.clear_counts();
    let reply = pap(addr, "alice", ALICE.password);
    assert_code(&reply, "Access-Challenge");
    assert_eq!(binds(&f), 1, "the password alone: one bind");
    let reply = crate::radius::answer(addr, "alice", &state_of(&reply), &next_code());
    assert_code(&reply, "Access-Accept");
    assert_eq!(binds(&f), 1, "the answer to a challenge binds nothing");
}

#[test]
fn a_directory_slow_on_the_second_round_burns_no_code() {
    // The request deadline (2 s) is shorter than the directory's timeout (3 s), as in
    // the shipped defaults' ratio.
    let f = faulty("challenge", "2s", "");
    let secret = enroll(f.config.path(), "alice", f.base);
    let addr = f.server.radius_addr();
    let first = pap(addr, "alice", ALICE.password);
    assert_code(&first, "Access-Challenge");
    // The second round's directory lookup takes 2.5 s; the NAS retransmits after 2 s.
    f.ldap
        .delay_next_ldap(LdapOp::Search, Duration::from_millis(2500));
    let reply = radclient_retrying(
        addr,
        &format!(
            "User-Name = \"alice\"\nUser-Password = \"{}\"\nState = {}",
            code(&secret, f.base + 1),
            state_of(&first)
        ),
        3,
        2,
    );
    assert_code(&reply, "Access-Accept");
    let st = status(f.config.path(), "alice");
    assert_eq!(st["failures"], 0, "no failure counted: {st}");
    let accepts = audit(f.config.path(), "alice")
        .into_iter()
        .filter(|r| r["result"] == "accept")
        .count();
    assert_eq!(accepts, 1, "evaluated once");
}

#[test]
fn parallel_guesses_of_a_mailed_code_stop_at_the_lock() {
    let f = faulty(
        "append",
        "5s",
        "[lockout]\nmax_failures = 5\nlock_for = \"15m\"\n",
    );
    // Bob has no app: the helpdesk issues him a mailed-rules code.
    let issued = json(&otpgate(
        f.config.path(),
        &["helpdesk", "issue", "bob", "--json"],
    ));
    let right = issued["otp"].as_str().unwrap().to_string();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let addr = f.server.radius_addr();
    let guesses: u8 = 64;
    let mut sent = Vec::new();
    for id in 0..guesses {
        let mut wrong = format!("{:08}", 10_000_000 + u32::from(id) * 7919);
        if wrong == right {
            wrong = format!("{:08}", 99_999_999 - u32::from(id));
        }
        let mut p = AccessRequestParams::new("bob");
        p.password = Some(Zeroizing::new(
            format!("{}{wrong}", otpgate_tests::BOB.password).into_bytes(),
        ));
        let auth = [id.wrapping_add(1); 16];
        let packet = encode_access_request(&p, id, auth, &secret()).unwrap();
        socket.send_to(&packet, addr).unwrap();
        sent.push((id, auth));
    }
    let mut buf = [0u8; 4096];
    let mut rejects = 0;
    for _ in 0..guesses {
        let (n, _) = socket.recv_from(&mut buf).expect("every guess is answered");
        let id = buf[1];
        let (_, auth) = sent[usize::from(id)];
        let reply = check_reply(&buf[..n], id, auth, &secret()).unwrap();
        assert_eq!(reply.code, Code::AccessReject);
        rejects += 1;
    }
    assert_eq!(rejects, guesses);
    let st = status(f.config.path(), "bob");
    assert_eq!(
        st["failures"], 5,
        "at most max_failures guesses compared: {st}"
    );
    assert_eq!(st["locked"], true);
    let refused = audit(f.config.path(), "bob")
        .into_iter()
        .filter(|r| r["result"] == "reject")
        .count();
    assert_eq!(
        refused,
        usize::from(guesses),
        "each guess refused and audited once"
    );
    // The right code is refused while locked, and stays outstanding.
    let reply = pap(
        addr,
        "bob",
        &format!("{}{right}", otpgate_tests::BOB.password),
    );
    assert_code(&reply, "Access-Reject");
    assert_eq!(status(f.config.path(), "bob")["locked"], true);
}

#[test]
fn an_smtp_server_hanging_after_data_leaves_no_usable_code() {
    // The mail times out after 4 s, later than the request deadline (2 s).
    let f = faulty("challenge", "2s", "");
    let addr = f.server.radius_addr();
    register_address(&f.direct, &f.smtp, "alice", "alice@example.org");
    enroll(&f.direct, "alice", f.base);

    let first = pap(addr, "alice", ALICE.password);
    assert_code(&first, "Access-Challenge");
    f.mail.hold_replies_after(b"\r\n.\r\n");
    let reply = crate::radius::answer(addr, "alice", &state_of(&first), "email");
    assert_eq!(
        reply.code, None,
        "no reply while the mail hangs: {}",
        reply.output
    );
    // The attempt is audited once the mail gives up; the code was never stored.
    assert!(
        wait_until(WAIT, || audit(&f.direct, "alice").iter().any(|r| {
            r["method"] == "email-otp-request" && r["result"] == "error"
        })),
        "the failed mail is audited: {:?}",
        audit(&f.direct, "alice")
    );
    let key = "otpgate:{alice}:code:login";
    assert_eq!(
        f.redis.command(&["EXISTS", key]).unwrap(),
        otpgate_tests::Resp::Integer(0),
        "no code key left"
    );
    // The message did reach the server before it hung: its code does not log in.
    f.mail.release();
    let mails = f.smtp.mails_to("alice@example.org").unwrap();
    let mailed = mails
        .iter()
        .rev()
        .find_map(|m| m.code(8))
        .expect("the login code's mail reached the sink");
    let reply = pap(addr, "alice", ALICE.password);
    assert_code(&reply, "Access-Challenge");
    let reply = crate::radius::answer(addr, "alice", &state_of(&reply), &mailed);
    assert_code(&reply, "Access-Reject");
}

#[test]
fn a_reset_during_a_login_leaves_no_trusted_device() {
    let f = faulty("challenge", "5s", "");
    let secret = enroll(f.config.path(), "alice", f.base);
    let addr = f.server.radius_addr();
    let station = "Calling-Station-Id = \"02-00-00-00-00-01\"";
    let first = radclient_retrying(
        addr,
        &format!(
            "User-Name = \"alice\"\nUser-Password = \"{}\"\n{station}",
            ALICE.password
        ),
        1,
        5,
    );
    assert_code(&first, "Access-Challenge");
    let state = state_of(&first);
    // The answer's directory lookup is held; the user's reset lands meanwhile.
    f.ldap.hold_next_ldap(LdapOp::Search);
    let answer = {
        let attributes = format!(
            "User-Name = \"alice\"\nUser-Password = \"{}\"\nState = {state}\n{station}",
            code(&secret, f.base + 1)
        );
        std::thread::spawn(move || radclient_retrying(addr, &attributes, 1, 10))
    };
    f.ldap.wait_holding(WAIT).unwrap();
    json(&otpgate(&f.direct, &["user", "reset", "alice", "--json"]));
    f.ldap.release();
    let answered = answer.join().unwrap();
    assert_ne!(
        answered.code.as_deref(),
        Some("Access-Accept"),
        "the old app's code after the reset: {}",
        answered.output
    );
    let trusted = json(&otpgate(
        &f.direct,
        &["user", "trusted", "list", "alice", "--json"],
    ));
    assert_eq!(
        trusted["devices"].as_array().map(Vec::len),
        Some(0),
        "no trusted device: {trusted}"
    );
    // The password alone from that station is not let in.
    let again = radclient_retrying(
        addr,
        &format!(
            "User-Name = \"alice\"\nUser-Password = \"{}\"\n{station}",
            ALICE.password
        ),
        1,
        5,
    );
    assert_ne!(
        again.code.as_deref(),
        Some("Access-Accept"),
        "{}",
        again.output
    );
}
