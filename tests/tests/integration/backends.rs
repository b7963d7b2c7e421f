//! `otpgate serve` without its backends at start, `check-config --connect`, and Redis
//! secured with TLS and an ACL user (SPEC §8): start anyway, fail closed, show each
//! backend's health in the metrics, serve as soon as they are back; refuse a Redis
//! that evicts.

use std::time::Duration;

use otpgate_tests::{
    ConfigBuilder, OtpgateServe, Redis, RedisOptions, Slapd, SmtpSink, TestConfig, radius_section,
    wait_until, write_radius_secret,
};

use crate::radius::{
    SECRET, assert_code, code, current_step, enroll, otpgate, pap, status_answered, udp,
    write_config,
};

const WAIT: Duration = Duration::from_secs(30);

fn up(server: &OtpgateServe, backend: &str) -> f64 {
    server.metric(&format!("otpgate_backend_up{{backend=\"{backend}\"}}"))
}

/// The gauge line is present (a value of 0 is "absent" for `metric`).
fn gauge_present(server: &OtpgateServe, backend: &str) -> bool {
    server
        .metrics()
        .unwrap_or_default()
        .contains(&format!("otpgate_backend_up{{backend=\"{backend}\"}}"))
}

#[test]
fn serve_starts_without_ldap_and_redis_fails_closed_and_serves_once_they_are_back() {
    let mut slapd = Slapd::start().unwrap();
    let mut redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = write_config(&slapd, &redis, &smtp, "append", "");
    let base = current_step();
    let alice = enroll(config.path(), "alice", base);

    // A power cut: LDAP and Redis are down when otpgate starts.
    slapd.stop();
    redis.stop_keeping_data().unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    let addr = server.radius_addr();
    assert!(
        wait_until(WAIT, || gauge_present(&server, "ldap")
            && gauge_present(&server, "store")),
        "no health gauges:\n{}",
        server.metrics().unwrap_or_default()
    );
    assert_eq!(up(&server, "ldap"), 0.0);
    assert_eq!(up(&server, "store"), 0.0);
    assert_eq!(up(&server, "smtp"), 1.0, "{}", server.metrics().unwrap());
    let log = server.log();
    assert!(log.contains("ldap is down at start"), "{log}");
    assert!(log.contains("store is down at start"), "{log}");

    // Fail closed: no reply to a login, Status-Server unanswered.
    let r = crate::radius::radclient(
        addr,
        SECRET,
        &format!(
            "User-Name = \"alice\"\nUser-Password = \"alice-pw-1{}\"",
            code(&alice, base)
        ),
        true,
        2,
    );
    assert_eq!(r.code, None, "{}", r.output);
    let socket = udp("127.0.0.1");
    assert!(!status_answered(&socket, addr, 1, Duration::from_secs(2)));

    // The backends come back; the same process serves.
    slapd.start_again().unwrap();
    redis.start_again().unwrap();
    assert!(
        wait_until(WAIT, || up(&server, "ldap") == 1.0
            && up(&server, "store") == 1.0),
        "health never came back:\n{}",
        server.metrics().unwrap_or_default()
    );
    assert!(status_answered(&socket, addr, 2, Duration::from_secs(5)));
    let ok = pap(addr, "alice", &format!("alice-pw-1{}", code(&alice, base)));
    assert_code(&ok, "Access-Accept");
    assert!(server.log().contains("is back"), "{}", server.log());
}

fn lines(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_config_stays_offline_and_connect_probes_each_backend() {
    let mut slapd = Slapd::start().unwrap();
    let mut redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = write_config(&slapd, &redis, &smtp, "append", "");

    let out = otpgate(config.path(), &["check-config", "--connect"]);
    let text = lines(&out);
    assert!(out.status.success(), "{text}");
    for line in ["ldap: ok", "store: ok", "smtp: ok"] {
        assert!(text.contains(line), "{line}: {text}");
    }

    slapd.stop();
    redis.stop();
    let out = otpgate(config.path(), &["check-config"]);
    assert!(out.status.success(), "offline: {}", lines(&out));
    let out = otpgate(config.path(), &["check-config", "--connect"]);
    let text = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("ldap: FAILED"), "{text}");
    assert!(text.contains("store: FAILED"), "{text}");
    assert!(text.contains("smtp: ok"), "{text}");
}

/// The ACL the README documents for otpgate's Redis user, with `PASSWORD`.
pub fn documented_acl(password: &str) -> String {
    format!(
        "on >{password} ~otpgate:* resetchannels -@all +ping +role +info +config|get \
         +evalsha +eval +script|load +get +set +del +expire +ttl +incr +incrby \
         +hget +hset +hdel +hmget +hgetall +hlen +hincrby +hvals +zadd +zrangebyscore \
         +zremrangebyscore"
    )
}

/// A config for a TLS Redis with the ACL user `otp`, whose password is `password`
/// (in `redis.secret` beside the config).
fn tls_acl_config(slapd: &Slapd, redis: &Redis, smtp: &SmtpSink, password: &str) -> TestConfig {
    let config = ConfigBuilder::new(slapd)
        .redis(redis)
        .smtp(smtp)
        .set("store", "username", "\"otp\"")
        .set("store", "password_file", "\"redis.secret\"")
        .set("totp", "skew_steps", "5")
        .extra(&radius_section("append", "100ms"))
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    otpgate_tests::files::write_private(
        &config.dir().join("redis.secret"),
        format!("{password}\n").as_bytes(),
    )
    .unwrap();
    config
}

#[test]
fn redis_over_tls_with_an_acl_user_serves_logins_and_a_wrong_password_fails_closed() {
    const PASSWORD: &str = "a-redis-acl-password";
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start_with(RedisOptions {
        tls: true,
        users: vec![("otp".into(), documented_acl(PASSWORD))],
        ..RedisOptions::default()
    })
    .unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = tls_acl_config(&slapd, &redis, &smtp, PASSWORD);
    assert!(config.contents().unwrap().contains("rediss://"));

    otpgate_tests::otpgate_binary().unwrap(); // built before the step is taken
    let base = current_step();
    let alice = enroll(config.path(), "alice", base);
    let out = otpgate(config.path(), &["check-config", "--connect"]);
    assert!(out.status.success(), "{}", lines(&out));

    let server = OtpgateServe::start(config.path()).unwrap();
    let ok = pap(
        server.radius_addr(),
        "alice",
        &format!("alice-pw-1{}", code(&alice, base)),
    );
    assert_code(&ok, "Access-Accept");
    let replay = pap(
        server.radius_addr(),
        "alice",
        &format!("alice-pw-1{}", code(&alice, base)),
    );
    assert_code(&replay, "Access-Reject");
    // The used step is in the TLS Redis, under the prefix the ACL allows.
    let keys = redis.cli(&["--scan", "--pattern", "otpgate:*"]).unwrap();
    assert!(keys.contains("otpgate:{alice}"), "{keys}");
    // Both decisions reached the store's audit log (its script runs with the ACL too).
    let audit = otpgate(
        config.path(),
        &["audit", "--user", "alice", "--since", "1h", "--json"],
    );
    let results: Vec<String> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|record| record["door"] == "radius")
        .map(|record| record["result"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(results, ["accept", "reject"], "{}", lines(&audit));
    assert!(
        !server.log().contains("cannot write the audit record"),
        "{}",
        server.log()
    );
    // The harness Redis has no AOF: a loud warning, not a refusal.
    assert!(
        server.log().contains("without AOF persistence"),
        "{}",
        server.log()
    );
    drop(server);

    // A wrong password: serve starts, fails closed, and says why.
    let wrong = tls_acl_config(&slapd, &redis, &smtp, "not-the-password");
    let server = OtpgateServe::start(wrong.path()).unwrap();
    let r = crate::radius::radclient(
        server.radius_addr(),
        SECRET,
        &format!(
            "User-Name = \"alice\"\nUser-Password = \"alice-pw-1{}\"",
            code(&alice, base + 1)
        ),
        true,
        2,
    );
    assert_eq!(r.code, None, "{}", r.output);
    let log = server.log();
    assert!(
        log.contains("store is down at start")
            && log.contains("authentication refused (WRONGPASS) for user `otp`"),
        "{log}"
    );
    let out = otpgate(wrong.path(), &["check-config", "--connect"]);
    let text = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("store: FAILED")
            && l.contains("authentication refused (WRONGPASS) for user `otp`")),
        "{text}"
    );
    assert!(text.contains("ldap: ok"), "{text}");
}

/// Runs `otpgate serve` until it exits (killed after [`WAIT`]); its exit code and
/// output.
fn serve_until_exit(config: &TestConfig) -> (Option<i32>, String) {
    let log = config.dir().join("serve.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(otpgate_tests::otpgate_binary().unwrap())
        .arg("--config")
        .arg(config.path())
        .arg("serve")
        .env_remove("OTPGATE_CONFIG")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let mut status = None;
    wait_until(WAIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (
        status.and_then(|s| s.code()),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// A config on `redis` with `[store] require_persistence = true`.
fn requiring_persistence(slapd: &Slapd, redis: &Redis) -> TestConfig {
    let config = ConfigBuilder::new(slapd)
        .redis(redis)
        .set("store", "require_persistence", "true")
        .extra(&radius_section("append", "100ms"))
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    config
}

#[test]
fn an_evicting_redis_is_refused_at_start_and_required_persistence_is_enforced() {
    let slapd = Slapd::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let evicting = Redis::start_with(RedisOptions {
        extra: vec!["--maxmemory-policy".into(), "allkeys-lru".into()],
        ..RedisOptions::default()
    })
    .unwrap();
    let config = write_config(&slapd, &evicting, &smtp, "append", "");
    let (status, log) = serve_until_exit(&config);
    assert_eq!(status, Some(2), "{log}");
    assert!(log.contains("maxmemory-policy is `allkeys-lru`"), "{log}");

    // No AOF, and the configuration requires it.
    let plain = Redis::start().unwrap();
    let config = requiring_persistence(&slapd, &plain);
    let (status, log) = serve_until_exit(&config);
    assert_eq!(status, Some(2), "{log}");
    assert!(log.contains("appendonly yes"), "{log}");

    // With AOF it serves.
    let aof = Redis::start_with(RedisOptions {
        aof: true,
        ..RedisOptions::default()
    })
    .unwrap();
    let config = requiring_persistence(&slapd, &aof);
    let server = OtpgateServe::start(config.path()).unwrap();
    let socket = udp("127.0.0.1");
    assert!(status_answered(
        &socket,
        server.radius_addr(),
        3,
        Duration::from_secs(5)
    ));
}
