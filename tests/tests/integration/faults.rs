//! Faults on real servers (loopback only, bounded loops, no sleeps): Redis killed and
//! restarted with and without AOF, and an instance whose clock is off.

use std::time::Duration;

use otpgate_tests::{OtpgateServe, Redis, RedisOptions, Slapd, SmtpSink, wait_until};

use crate::radius::{
    assert_code, code, current_step, enroll, pap, status_answered, udp, write_config,
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

/// Each request of many users sent 10 times back to back: one audit record per user,
/// every copy that gets an answer gets the same bytes.
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
