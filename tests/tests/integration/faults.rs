//! Faults on real servers (loopback only, bounded loops, no sleeps): Redis killed and
//! restarted with and without AOF, a retransmission storm, and an instance whose clock
//! is off.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use otpgate_tests::{FaultProxy, OtpgateServe, Redis, RedisOptions, Slapd, SmtpSink, wait_until};
use serde_json::Value;

use crate::radius::{
    access_request, assert_code, code, current_step, enroll, otpgate, pap, secret, status_answered,
    udp, write_config,
};

const WAIT: Duration = Duration::from_secs(30);

/// Enrolls alice, snapshots Redis (`SAVE`: what an RDB-only Redis reloads after a
/// crash), logs in once, kills Redis and starts it again; the same code once more.
/// Returns the code of the reply to that replay (`None`: no reply).
fn replay_after_a_redis_crash(aof: bool) -> Option<String> {
    let slapd = Slapd::start().unwrap();
    let mut redis = Redis::start_with(RedisOptions {
        aof,
        ..RedisOptions::default()
    })
    .unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = write_config(&slapd, &redis, &smtp, "append", "");
    otpgate_tests::otpgate_binary().unwrap(); // built before the step is taken
    let base = current_step();
    let alice = enroll(config.path(), "alice", base);
    assert_eq!(redis.cli(&["SAVE"]).unwrap().trim(), "OK");

    let server = OtpgateServe::start(config.path()).unwrap();
    let addr = server.radius_addr();
    let login = format!("alice-pw-1{}", code(&alice, base));
    assert_code(&pap(addr, "alice", &login), "Access-Accept");

    redis.stop();
    redis.start_again().unwrap();
    let socket = udp("127.0.0.1");
    let mut id = 0u8;
    assert!(
        wait_until(WAIT, || {
            id = id.wrapping_add(1);
            status_answered(&socket, addr, id, Duration::from_secs(1))
        }),
        "the store never came back: {}",
        server.log()
    );
    pap(addr, "alice", &login).code
}

#[test]
fn a_used_step_survives_a_redis_crash_with_aof() {
    assert_eq!(
        replay_after_a_redis_crash(true).as_deref(),
        Some("Access-Reject")
    );
}

/// What the README warns about: without AOF, a Redis restart goes back to its last
/// snapshot, and a step used after it can be used again.
#[test]
fn without_aof_a_redis_crash_reopens_a_replay() {
    assert_eq!(
        replay_after_a_redis_crash(false).as_deref(),
        Some("Access-Accept")
    );
}

/// Collects replies on `socket` (keyed by identifier) until each request has at least
/// `at_least[identifier]` of them, resending (as a NAS does) the request of any identifier
/// still short after a second of quiet: the kernel may drop datagrams of a burst. A
/// resend is one more copy of the same request, so it must be answered from the
/// duplicate cache too.
fn collect_replies(
    socket: &UdpSocket,
    to: SocketAddr,
    requests: &[(String, Vec<u8>)],
    replies: &mut HashMap<u8, Vec<Vec<u8>>>,
    at_least: &HashMap<u8, usize>,
) {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let short = |replies: &HashMap<u8, Vec<Vec<u8>>>| -> Vec<usize> {
        (0..requests.len())
            .filter(|&i| replies.get(&id_of(i)).map_or(0, Vec::len) < at_least[&id_of(i)])
            .collect()
    };
    let done = wait_until(WAIT, || {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => replies.entry(buf[1]).or_default().push(buf[..n].to_vec()),
            Err(_) => {
                for i in short(replies) {
                    socket.send_to(&requests[i].1, to).unwrap();
                }
            }
        }
        short(replies).is_empty()
    });
    assert!(done, "no reply within {WAIT:?} to {:?}", short(replies));
}

/// The RADIUS identifier of request `i` of the storm.
fn id_of(i: usize) -> u8 {
    u8::try_from(i).unwrap()
}

/// Many users at once, each request sent 10 times (same identifier, authenticator and
/// source port): 5 copies while the first is still being evaluated (the directory
/// answers slowly, through the fault proxy), 5 after its answer. Each request is
/// evaluated once (one audit record, one count in `otpgate_requests_total`), alice's
/// code is consumed once, and every copy that is answered gets the same bytes.
#[test]
fn a_retransmission_storm_is_evaluated_once_per_request() {
    const USERS: usize = 40;
    const COPIES: usize = 5; // per wave; two waves
    let slapd = Slapd::start_with_bulk_users(USERS).unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let ldap = FaultProxy::start(([127, 0, 0, 1], slapd.port()).into()).unwrap();
    let config = write_config(&slapd, &redis, &smtp, "append", "");
    let text = std::fs::read_to_string(config.path()).unwrap().replace(
        &format!("urls = [\"ldap://127.0.0.1:{}\"]", slapd.port()),
        &format!("urls = [\"{}\"]", ldap.ldap_url()),
    );
    assert!(text.contains(&ldap.ldap_url()), "{text}");
    std::fs::write(config.path(), text).unwrap();
    otpgate_tests::otpgate_binary().unwrap(); // built before the step is taken
    let base = current_step();
    let alice = enroll(config.path(), "alice", base);
    let server = OtpgateServe::start(config.path()).unwrap();
    let addr = server.radius_addr();
    let socket = udp("127.0.0.1");

    // alice with her code; the bulk users with a wrong code.
    let mut requests: Vec<(String, Vec<u8>)> = vec![(
        "alice".into(),
        access_request(
            "alice",
            &format!("alice-pw-1{}", code(&alice, base)),
            0,
            [0xA0; 16],
        ),
    )];
    for i in 0..USERS {
        let user = otpgate_tests::users::bulk_uid(i);
        let password = format!("{}000000", otpgate_tests::users::bulk_password(i));
        let id = id_of(i + 1);
        requests.push((user.clone(), access_request(&user, &password, id, [id; 16])));
    }

    // Wave 1, while every evaluation waits on the slow directory: copies in progress
    // are dropped, the first copy's answer comes once.
    ldap.set_delay(Duration::from_millis(100));
    for _ in 0..COPIES {
        for (_, request) in &requests {
            socket.send_to(request, addr).unwrap();
        }
    }
    let mut replies: HashMap<u8, Vec<Vec<u8>>> = HashMap::new();
    let one: HashMap<u8, usize> = (0..requests.len()).map(|i| (id_of(i), 1)).collect();
    collect_replies(&socket, addr, &requests, &mut replies, &one);
    let in_progress = server.metric("otpgate_radius_duplicates_total{outcome=\"in_progress\"}");
    // Wave 2, after the answers: every copy gets the cached bytes.
    ldap.set_delay(Duration::ZERO);
    let before: usize = replies.values().map(Vec::len).sum();
    for _ in 0..COPIES {
        for (_, request) in &requests {
            socket.send_to(request, addr).unwrap();
        }
    }
    let firsts: HashMap<u8, usize> = replies.iter().map(|(id, c)| (*id, c.len())).collect();
    let one_more: HashMap<u8, usize> = firsts.iter().map(|(id, n)| (*id, n + 1)).collect();
    collect_replies(&socket, addr, &requests, &mut replies, &one_more);
    for (id, copies) in &replies {
        assert!(copies.iter().all(|c| c == &copies[0]), "request {id}");
        assert!(copies.len() > firsts[id], "request {id}: no cached answer");
    }
    let after: usize = replies.values().map(Vec::len).sum();
    let accept =
        otpgate_radius_proto::check_reply(&replies[&0][0], 0, [0xA0; 16], &secret()).unwrap();
    assert_eq!(accept.code, otpgate_radius_proto::Code::AccessAccept);
    for i in 1..requests.len() {
        let id = id_of(i);
        let reply =
            otpgate_radius_proto::check_reply(&replies[&id][0], id, [id; 16], &secret()).unwrap();
        assert_eq!(reply.code, otpgate_radius_proto::Code::AccessReject, "{id}");
    }

    // One evaluation each: one audit record per user, one count per request.
    let audit = otpgate(config.path(), &["audit", "--since", "1h", "--json"]);
    let mut per_user: HashMap<String, usize> = HashMap::new();
    for line in String::from_utf8_lossy(&audit.stdout).lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        if record["door"] == "radius" {
            *per_user
                .entry(record["user"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    for (user, _) in &requests {
        assert_eq!(per_user.get(user), Some(&1), "{user}: {per_user:?}");
    }
    assert_eq!(per_user.len(), requests.len(), "{per_user:?}");
    let evaluated: f64 = server
        .metrics()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("otpgate_requests_total{door=\"radius\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        evaluated,
        requests.len() as f64,
        "{}",
        server.metrics().unwrap()
    );
    // The copies were seen as such: dropped while in progress, answered from the cache.
    assert!(
        in_progress >= 1.0,
        "no copy arrived while its request was evaluated"
    );
    assert!(
        server.metric("otpgate_radius_duplicates_total{outcome=\"resent\"}")
            >= (after - before) as f64,
        "{}",
        server.metrics().unwrap_or_default()
    );
    // alice's code was consumed once: a fresh request with it is a replay.
    let again = pap(addr, "alice", &format!("alice-pw-1{}", code(&alice, base)));
    assert_code(&again, "Access-Reject");
}

/// libfaketime, from Debian's `faketime`.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Two `otpgate serve` on one Redis, the second with its clock off by `offset`
/// (libfaketime): every code from 11 steps before now to 11 after, in order, to the
/// first instance and then to the second. Returns, per step, the instances that
/// accepted it (0: on time, 1: off).
fn accepts_with_a_clock_off(user: &str, offset: &str) -> Vec<(i64, Vec<usize>)> {
    otpgate_tests::require_binary("faketime", &["faketime"]).unwrap();
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime"
    );
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let config = otpgate_tests::ConfigBuilder::new(&slapd)
        .redis(&redis)
        .extra(&otpgate_tests::radius_section("append", "10ms"))
        .extra("[lockout]\nmax_failures = 1000\nlock_for = \"15m\"\n")
        .write()
        .unwrap();
    otpgate_tests::write_radius_secret(config.dir(), crate::radius::SECRET).unwrap();
    otpgate_tests::otpgate_binary().unwrap(); // built before the step is taken
    let base = current_step();
    let secret = enroll(config.path(), user, base);
    let on_time = OtpgateServe::start(config.path()).unwrap();
    let off = OtpgateServe::start_with_env(
        config.path(),
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .unwrap();
    let password = otpgate_tests::USERS
        .iter()
        .find(|u| u.uid == user)
        .unwrap()
        .password;
    let mut out = Vec::new();
    for delta in -11i64..=11 {
        let step = base.checked_add_signed(delta).unwrap();
        let value = format!("{password}{}", code(&secret, step));
        let accepted: Vec<usize> = [&on_time, &off]
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                pap(s.radius_addr(), user, &value).code.as_deref() == Some("Access-Accept")
            })
            .map(|(i, _)| i)
            .collect();
        out.push((delta, accepted));
    }
    out
}

/// No code is accepted twice, whatever the second instance's clock; what each accepts
/// is what the README describes.
#[test]
fn an_instance_with_its_clock_off_never_double_accepts() {
    for offset in ["+30s", "-30s", "+5m", "-5m"] {
        let accepts = accepts_with_a_clock_off("alice", offset);
        for (delta, by) in &accepts {
            assert!(by.len() <= 1, "{offset}: step {delta:+} accepted by {by:?}");
        }
        let accepted: Vec<(i64, usize)> = accepts
            .iter()
            .filter_map(|(d, by)| by.first().map(|i| (*d, *i)))
            .collect();
        eprintln!("clock {offset}: accepted (step, instance) {accepted:?}");
        // Accepted steps only ever increase.
        assert!(
            accepted.windows(2).all(|w| w[0].0 < w[1].0),
            "{offset}: {accepted:?}"
        );
        // The instance on time accepts its window unless the one off has accepted a
        // later step first.
        match offset {
            "+5m" => assert!(
                accepted.iter().any(|&(d, i)| i == 1 && d >= 9),
                "{offset}: the instance 5 min ahead accepts its own window: {accepted:?}"
            ),
            "-5m" => assert!(
                accepted
                    .iter()
                    .any(|&(d, i)| i == 0 && (-1..=1).contains(&d)),
                "{offset}: {accepted:?}"
            ),
            _ => assert!(!accepted.is_empty(), "{offset}: {accepted:?}"),
        }
    }
}
