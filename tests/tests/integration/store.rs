//! The Redis store against real redis-servers: the conformance suite (standalone and
//! Cluster), races between two connections as two server processes would have them,
//! the TTL on every expiring key, and an outage that must fail closed and heal.

use std::time::{Duration, Instant};

use otpgate_config::{RedisTarget, StoreConfig};
use otpgate_core::clock::Timestamp;
use otpgate_core::store::conformance::{self, T0};
use otpgate_core::store::redis::RedisStore;
use otpgate_core::store::{
    CodeSlot, HelpdeskRequest, Store, StoreBackend, StoreError, StoredCode, TrustedDevice,
};
use otpgate_core::user::UserName;
use otpgate_tests::{Redis, RedisCluster, Resp, free_tcp_port};

const TIMEOUT: Duration = Duration::from_millis(500);

async fn connect(redis: &Redis, prefix: &str) -> RedisStore {
    RedisStore::connect(&RedisTarget::Standalone(redis.url()), prefix, TIMEOUT)
        .await
        .unwrap()
}

fn texts(reply: Resp) -> Vec<String> {
    match reply {
        Resp::Array(Some(items)) => items.into_iter().filter_map(|i| i.as_text()).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_on_redis() {
    let redis = Redis::start().unwrap();
    let store = connect(&redis, "otpgate:").await;
    conformance::run_all(&store, "redis").await;
    assert!(
        conformance::login_steps(&store, "redis-audited").await,
        "a standalone Redis appends the accept's audit record in the step"
    );
    conformance::corrupt_trusted_records(&store, "redis").await;
    conformance::old_account_records(&store, "redis").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn races_between_two_connections() {
    let redis = Redis::start().unwrap();
    let a = connect(&redis, "otpgate:").await;
    let b = connect(&redis, "otpgate:").await;
    for round in 0..5 {
        conformance::run_races(&a, &b, &format!("race{round}")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_and_races_on_a_cluster() {
    let cluster = RedisCluster::start(3).unwrap();
    let target = RedisTarget::Cluster(cluster.urls());
    let a = RedisStore::connect(&target, "otpgate:", Duration::from_secs(2))
        .await
        .unwrap();
    let b = RedisStore::connect(&target, "otpgate:", Duration::from_secs(2))
        .await
        .unwrap();
    conformance::run_all(&a, "cluster").await;
    assert!(
        !conformance::login_steps(&a, "cluster-audited").await,
        "a Cluster keeps the audit log apart from the users' slots"
    );
    conformance::run_races(&a, &b, "cluster-race").await;
    // The users' keys were spread over the nodes, and the scripts still ran.
    let used = cluster
        .ports()
        .iter()
        .filter(|&&port| {
            !texts(otpgate_tests::redis::resp_command(port, &["KEYS", "*"]).unwrap()).is_empty()
        })
        .count();
    assert!(used >= 2, "keys landed on {used} node(s) only");
}

#[tokio::test(flavor = "multi_thread")]
async fn key_prefixes_keep_stores_apart() {
    let redis = Redis::start().unwrap();
    let a = connect(&redis, "a:").await;
    let b = connect(&redis, "b:").await;
    let u = UserName::parse("alice").unwrap();
    assert_eq!(
        a.accept_totp_step(&u, 10, T0).await.unwrap(),
        otpgate_core::store::StepOutcome::Accepted
    );
    assert_eq!(
        b.accept_totp_step(&u, 10, T0).await.unwrap(),
        otpgate_core::store::StepOutcome::Accepted,
        "another prefix is another store"
    );
    a.append_audit(T0, "{}", 60).await.unwrap();
    assert!(b.read_audit(T0, 10).await.unwrap().is_empty());
}

/// Every key that holds something that expires carries a TTL; only the account and the
/// last TOTP step (which guards against replays for as long as the account exists) do
/// not.
#[tokio::test(flavor = "multi_thread")]
async fn every_expiring_key_has_a_ttl() {
    let redis = Redis::start().unwrap();
    let store = connect(&redis, "otpgate:").await;
    let u = UserName::parse("alice").unwrap();
    let at = |s: u64| Timestamp(T0.0 + s);
    store
        .save_account(&u, 0, &Default::default())
        .await
        .unwrap();
    store.accept_totp_step(&u, 5, T0).await.unwrap();
    for _ in 0..3 {
        store.record_failure(&u, T0, 3, 900).await.unwrap();
    }
    let code = StoredCode {
        hash: "h".into(),
        expires_at: at(86_400),
        payload: None,
        issued_by: "email".into(),
    };
    store
        .put_code(&u, CodeSlot::Login, &code, T0)
        .await
        .unwrap();
    store
        .put_challenge(&u, "c", b"state", 60, T0)
        .await
        .unwrap();
    let device = TrustedDevice {
        id: "d".into(),
        key_hash: "k".into(),
        door: otpgate_core::audit::Door::Pam,
        label: "host".into(),
        created_at: T0,
        expires_at: at(7 * 86_400),
    };
    assert!(store.add_trusted(&u, &device, T0, 1).await.unwrap());
    store
        .enqueue_helpdesk(&HelpdeskRequest {
            user: u.clone(),
            kind: otpgate_core::store::HelpdeskKind::LoginCode,
            via: "portal".into(),
            requested_at: T0,
            expires_at: at(3600),
        })
        .await
        .unwrap();
    store.append_audit(T0, "{}", 90 * 86_400).await.unwrap();

    let keys = texts(redis.command(&["KEYS", "*"]).unwrap());
    assert_eq!(keys.len(), 10, "{keys:?}");
    for key in keys {
        let ttl = match redis.command(&["TTL", &key]).unwrap() {
            Resp::Integer(t) => t,
            other => panic!("TTL {key}: {other:?}"),
        };
        let limit = |max: i64| assert!(ttl > 0 && ttl <= max, "{key}: TTL {ttl}, max {max}");
        match key.rsplit(':').next().unwrap() {
            "account" | "totp-step" => assert_eq!(ttl, -1, "{key} must not expire"),
            "failures" => limit(30 * 86_400),
            "lock" => limit(900),
            "login" => limit(86_400),
            "c" => limit(60),
            "trusted" => limit(7 * 86_400),
            "queue" => limit(3600),
            "log" | "seq" => limit(90 * 86_400),
            other => panic!("unexpected key {key} ({other})"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_redis_is_an_error_at_start() {
    let port = free_tcp_port().unwrap();
    let config = StoreConfig::Redis(otpgate_config::RedisConfig::plain(
        RedisTarget::Standalone(format!("redis://127.0.0.1:{port}/0")),
        "otpgate:",
        TIMEOUT,
    ));
    let started = Instant::now();
    let result = Store::open(&config).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "connecting to nothing must fail"
    );
    assert!(
        started.elapsed() < TIMEOUT * 3,
        "connecting to nothing took {:?}",
        started.elapsed()
    );
}

/// Redis stopped: every operation fails as `Unavailable` within the timeout, never
/// succeeds. Started again: the same store works again without being rebuilt.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_fails_closed_and_heals() {
    let mut redis = Redis::start().unwrap();
    let store = connect(&redis, "otpgate:").await;
    let u = UserName::parse("alice").unwrap();
    assert_eq!(
        store.accept_totp_step(&u, 1, T0).await.unwrap(),
        otpgate_core::store::StepOutcome::Accepted
    );

    redis.stop();
    conformance::all_unavailable(&store, "down", TIMEOUT + Duration::from_millis(250)).await;
    // Twice: a reconnection attempt in progress must not turn into a success either.
    conformance::all_unavailable(&store, "down", TIMEOUT + Duration::from_millis(250)).await;

    redis.start_again().unwrap();
    let started = Instant::now();
    while store.ping().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the store did not reconnect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted server is empty (no persistence) and has no scripts loaded; every
    // operation works again.
    conformance::run_all(&store, "after").await;
}

/// Through a Sentinel: the conformance suite on the master it names, then a failover to
/// the replica, after which the store follows the new master and the replay state that
/// was replicated is still there — a replayed step stays refused, a later one is
/// accepted. While the store finds its way, an operation may fail (closed), never
/// accept a replay.
#[tokio::test(flavor = "multi_thread")]
async fn sentinel_conformance_and_a_failover() {
    use otpgate_core::store::StepOutcome;
    let redis = otpgate_tests::RedisSentinel::start().unwrap();
    let target = RedisTarget::Sentinel {
        master_name: otpgate_tests::RedisSentinel::MASTER_NAME.into(),
        urls: redis.sentinel_urls(),
        auth: otpgate_config::RedisAuth::default(),
    };
    let store = RedisStore::connect(&target, "otpgate:", Duration::from_secs(2))
        .await
        .unwrap();
    conformance::run_all(&store, "sentinel").await;

    let u = UserName::parse("failover-user").unwrap();
    assert_eq!(
        store.accept_totp_step(&u, 100, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    redis.wait_replicated().unwrap();
    redis.failover().unwrap();
    assert_eq!(redis.master_port().unwrap(), redis.server_ports()[1]);

    let deadline = Instant::now() + Duration::from_secs(20);
    let replay = loop {
        match store.accept_totp_step(&u, 100, T0).await {
            Ok(outcome) => break outcome,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => continue,
            Err(err) => panic!("the store did not follow the failover: {err}"),
        }
    };
    assert_ne!(replay, StepOutcome::Accepted, "a replay after the failover");
    assert_eq!(
        store.accept_totp_step(&u, 101, T0).await.unwrap(),
        StepOutcome::Accepted,
        "the new master takes writes"
    );
}
