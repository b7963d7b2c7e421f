//! Three `otpgate serve` instances on one Sentinel-managed Redis, with an ACL user on
//! the master and its replica and a password on the Sentinel (SPEC §8): 10,000 replays
//! of used codes spread over the instances while the Sentinel fails over accept none;
//! afterwards every instance logs in with a fresh code.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use otpgate_radius_proto::check_reply;
use otpgate_tests::users::{bulk_password, bulk_uid};
use otpgate_tests::{
    ConfigBuilder, OtpgateServe, RedisSentinel, SentinelOptions, Slapd, TestConfig, radius_section,
    toml_string, toml_string_array, wait_until, write_radius_secret,
};

use crate::backends::documented_acl;
use crate::radius::{SECRET, access_request, code, current_step, enroll, pap, secret};

/// Users enrolled; each logs in once, then its used code is replayed.
const USERS: usize = 12;
/// Replays of used codes, over the three instances (the figure).
const SUBMISSIONS: usize = 10_000;
/// Client sockets per instance, each with one request in flight.
const WORKERS_PER_INSTANCE: usize = 8;
/// How many replays are answered (or dropped) before the failover is asked for.
const FAILOVER_AFTER: usize = 1_500;
const REDIS_PASSWORD: &str = "otp-redis-password";
const SENTINEL_PASSWORD: &str = "sentinel-password";
const WAIT: Duration = Duration::from_secs(60);

/// `[store]` through the Sentinel: `otp` on the master (`username`, `password_file`),
/// the Sentinel's own password (`sentinel.password_file`).
fn sentinel_config(slapd: &Slapd, redis: &RedisSentinel) -> TestConfig {
    let sentinel = format!(
        "{{ master_name = {}, urls = {}, password_file = \"sentinel.secret\" }}",
        toml_string(RedisSentinel::MASTER_NAME),
        toml_string_array(&redis.sentinel_urls()),
    );
    let config = ConfigBuilder::new(slapd)
        .remove("store", "path")
        .set("store", "kind", &toml_string("redis"))
        .set("store", "sentinel", &sentinel)
        .set("store", "key_prefix", &toml_string("otpgate:"))
        .set("store", "username", &toml_string("otp"))
        .set("store", "password_file", &toml_string("redis.secret"))
        .set("totp", "skew_steps", "5")
        // 10,000 wrong codes must not lock the users out of the logins that follow.
        .extra("[lockout]\nmax_failures = 1000000\nlock_for = \"15m\"\n")
        .extra(&radius_section("append", "10ms"))
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    for (file, password) in [
        ("redis.secret", REDIS_PASSWORD),
        ("sentinel.secret", SENTINEL_PASSWORD),
    ] {
        otpgate_tests::files::write_private(
            &config.dir().join(file),
            format!("{password}\n").as_bytes(),
        )
        .unwrap();
    }
    config
}

/// What the replays got back, counted by the clients.
#[derive(Default)]
struct Tally {
    /// Requests answered or given up on.
    done: AtomicUsize,
    accepts: AtomicUsize,
    rejects: AtomicUsize,
    /// No reply within the client's timeout (fail closed while the store moves).
    drops: AtomicUsize,
}

/// One client socket sending its share of `values` (user index → User-Password) to
/// `to`, one request in flight, counting every datagram that comes back.
fn replay_worker(
    worker: usize,
    workers: usize,
    to: SocketAddr,
    values: &[(String, String)],
    tally: &Tally,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Longer than a store operation may take (its timeout is 2 s), so a reply that
    // comes late is still seen.
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let count = |datagram: &[u8]| match datagram.first() {
        // Counted on the code byte alone, whichever request it answers.
        Some(2) => tally.accepts.fetch_add(1, Ordering::SeqCst),
        Some(3) => tally.rejects.fetch_add(1, Ordering::SeqCst),
        _ => 0,
    };
    for (n, k) in (worker..SUBMISSIONS).step_by(workers).enumerate() {
        let (user, value) = &values[k % values.len()];
        let id = u8::try_from(n % 256).unwrap();
        let mut authenticator = [0xC3; 16];
        authenticator[..8].copy_from_slice(&u64::try_from(k).unwrap().to_be_bytes());
        socket
            .send_to(&access_request(user, value, id, authenticator), to)
            .unwrap();
        loop {
            match socket.recv_from(&mut buf) {
                Ok((len, _)) => {
                    count(&buf[..len]);
                    if buf[1] == id {
                        let reply = check_reply(&buf[..len], id, authenticator, &secret());
                        assert!(reply.is_ok(), "a reply that does not verify: {reply:?}");
                        break;
                    }
                }
                Err(_) => {
                    tally.drops.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
        tally.done.fetch_add(1, Ordering::SeqCst);
    }
    // Whatever is still on its way.
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    while let Ok((len, _)) = socket.recv_from(&mut buf) {
        count(&buf[..len]);
    }
}

/// `otpgate_requests_total{door="radius",result=…}` summed over the instances.
fn evaluated(servers: &[OtpgateServe], result: &str) -> f64 {
    servers
        .iter()
        .map(|s| {
            s.metric(&format!(
                "otpgate_requests_total{{door=\"radius\",result=\"{result}\"}}"
            ))
        })
        .sum()
}

#[test]
fn a_sentinel_failover_under_a_replay_load_accepts_no_used_code() {
    let redis = RedisSentinel::start_with(SentinelOptions {
        users: vec![("otp".into(), documented_acl(REDIS_PASSWORD))],
        sentinel_password: Some(SENTINEL_PASSWORD.into()),
    })
    .unwrap();
    let slapd = Slapd::start_with_bulk_users(USERS).unwrap();
    let config = sentinel_config(&slapd, &redis);
    otpgate_tests::otpgate_binary().unwrap(); // built before the step is taken
    let base = current_step();
    let secrets: Vec<_> = (0..USERS)
        .map(|i| enroll(config.path(), &bulk_uid(i), base))
        .collect();
    let servers: Vec<OtpgateServe> = (0..3)
        .map(|_| OtpgateServe::start(config.path()).unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(OtpgateServe::radius_addr).collect();

    // Each user logs in once, through one of the instances: its step is used.
    let values: Vec<(String, String)> = (0..USERS)
        .map(|i| {
            let value = format!("{}{}", bulk_password(i), code(&secrets[i], base));
            (bulk_uid(i), value)
        })
        .collect();
    for (i, (user, value)) in values.iter().enumerate() {
        let reply = pap(addrs[i % 3], user, value);
        assert_eq!(
            reply.code.as_deref(),
            Some("Access-Accept"),
            "{}",
            reply.output
        );
    }
    // Replicated before the failover: Redis replicates asynchronously, and a used step
    // the replica never got is forgotten by the new master (see README, "Redis").
    redis.wait_replicated().unwrap();
    assert_eq!(evaluated(&servers, "accept"), USERS as f64);

    let tally = Tally::default();
    let workers = 3 * WORKERS_PER_INSTANCE;
    let (started_at, finished_at) = std::thread::scope(|scope| {
        let failover = scope.spawn(|| {
            assert!(
                wait_until(WAIT, || tally.done.load(Ordering::SeqCst) >= FAILOVER_AFTER),
                "the load did not reach {FAILOVER_AFTER} requests"
            );
            let started_at = tally.done.load(Ordering::SeqCst);
            redis.failover().unwrap();
            (started_at, tally.done.load(Ordering::SeqCst))
        });
        for worker in 0..workers {
            let (to, values, tally) = (addrs[worker % 3], &values, &tally);
            scope.spawn(move || replay_worker(worker, workers, to, values, tally));
        }
        failover.join().unwrap()
    });
    let (accepts, rejects, drops) = (
        tally.accepts.load(Ordering::SeqCst),
        tally.rejects.load(Ordering::SeqCst),
        tally.drops.load(Ordering::SeqCst),
    );
    eprintln!(
        "{SUBMISSIONS} replays: {rejects} rejected, {drops} dropped, {accepts} accepted; \
         failover from replay {started_at} to {finished_at}"
    );
    assert_eq!(tally.done.load(Ordering::SeqCst), SUBMISSIONS);
    assert_eq!(accepts, 0, "a used code was accepted");
    assert_eq!(
        evaluated(&servers, "accept"),
        USERS as f64,
        "the instances counted an accept"
    );
    assert!(rejects > SUBMISSIONS / 2, "{rejects} rejects only");
    assert!(
        finished_at < SUBMISSIONS,
        "the failover ended after the load ({finished_at})"
    );
    assert_eq!(redis.master_port().unwrap(), redis.server_ports()[1]);

    // After the failover every instance serves again, from the new master: a fresh code
    // (the next step) is accepted, once. Until the instance has found the new master a
    // login may be dropped (never accepted twice): try again, as a NAS would.
    for (i, addr) in addrs.iter().enumerate() {
        let (user, password) = (bulk_uid(i), bulk_password(i));
        let value = format!("{password}{}", code(&secrets[i], base + 1));
        let mut last = None;
        let accepted = wait_until(WAIT, || {
            let reply = pap(*addr, &user, &value);
            let code = reply.code.clone();
            assert_ne!(code.as_deref(), Some("Access-Reject"), "{}", reply.output);
            last = Some(reply);
            code.as_deref() == Some("Access-Accept")
        });
        assert!(accepted, "instance {i}: {last:?}\n{}", servers[i].log());
        let replay = pap(*addr, &user, &value);
        assert_eq!(
            replay.code.as_deref(),
            Some("Access-Reject"),
            "{}",
            replay.output
        );
    }
}
