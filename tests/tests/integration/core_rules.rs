//! The core's rules against real slapd, Redis and an SMTP sink (SPEC §2). Time is a
//! `ManualClock` fixed far from any real time of day; codes are computed for the step
//! each test needs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use otpgate_core::Core;
use otpgate_core::audit::{Door, Method, RequestContext};
use otpgate_core::clock::{ManualClock, Timestamp};
use otpgate_core::directory::PasswordCheck;
use otpgate_core::error::{Backend, CoreError, Refusal};
use otpgate_core::otp::totp;
use otpgate_core::random::{OsRandom, Random};
use otpgate_core::secret::TotpSecret;
use otpgate_core::service::{
    Answer, CodeDelivery, CoreConfig, Credential, DeviceId, DoorPolicy, LoginRequest, LoginStep,
    OtpVerified, PolicyPlace,
};
use otpgate_core::user::UserName;
use otpgate_tests::{ALICE, BOB, CAROL, ConfigBuilder, Redis, Slapd, SmtpSink, TestConfig, WEIRD};
use zeroize::Zeroizing;

/// A fixed instant (2027-01-15T08:00:00Z), on a step boundary.
const T0: u64 = 1_800_000_000;

/// Real servers and a config for them.
pub struct Fixture {
    pub slapd: Slapd,
    pub redis: Option<Redis>,
    pub smtp: SmtpSink,
    pub config: TestConfig,
    pub clock: ManualClock,
}

impl Fixture {
    /// slapd, Redis and the SMTP sink, with `extra` TOML appended to the config.
    pub fn start(extra: &str) -> Fixture {
        Self::start_with(true, extra)
    }

    /// As [`Fixture::start`], with the embedded store instead of Redis when `redis` is false.
    pub fn start_with(redis: bool, extra: &str) -> Fixture {
        let slapd = Slapd::start().unwrap();
        let smtp = SmtpSink::start().unwrap();
        let redis = redis.then(|| Redis::start().unwrap());
        let mut builder = ConfigBuilder::new(&slapd).smtp(&smtp).extra(extra);
        if let Some(r) = &redis {
            builder = builder.redis(r);
        }
        let config = builder.write().unwrap();
        Fixture {
            slapd,
            redis,
            smtp,
            config,
            clock: ManualClock::new(Timestamp(T0)),
        }
    }

    /// A new core instance (its own connections), as another server process would have.
    pub async fn core(&self) -> Arc<Core> {
        self.core_with(Arc::new(OsRandom)).await
    }

    pub async fn core_with(&self, random: Arc<dyn Random>) -> Arc<Core> {
        let config = otpgate_config::load(self.config.path()).unwrap();
        let settings = CoreConfig::from_config(&config)
            .reset_links_at(Some("https://portal.example.org".into()));
        Arc::new(
            Core::open(&config, settings, Arc::new(self.clock.clone()), random)
                .await
                .unwrap(),
        )
    }
}

pub fn ctx() -> RequestContext {
    RequestContext::new(Door::Cli, "integration-test")
}

pub fn user(name: &str) -> UserName {
    UserName::parse(name).unwrap()
}

/// Enrolls `name` and confirms with the previous step's code; returns the secret.
pub async fn enroll(core: &Core, name: &str) -> TotpSecret {
    let u = user(name);
    let enrollment = core.enroll(&u, &ctx()).await.unwrap();
    let secret = TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(enrollment.secret.as_bytes())
            .unwrap(),
    );
    let params = core.settings().totp;
    let previous = totp::step_at(core.now(), params.period) - 1;
    core.confirm_enrollment(&u, &totp::code_at_step(&secret, previous, &params), &ctx())
        .await
        .unwrap();
    secret
}

/// The code for the step `offset` steps from now.
pub fn code(core: &Core, secret: &TotpSecret, offset: i64) -> String {
    let params = core.settings().totp;
    let step = totp::step_at(core.now(), params.period)
        .checked_add_signed(offset)
        .unwrap();
    totp::code_at_step(secret, step, &params)
}

fn verified(check: Result<OtpVerified, Refusal>) -> bool {
    check.is_ok()
}

fn refusal(check: Result<OtpVerified, Refusal>) -> Refusal {
    match check {
        Err(r) => r,
        Ok(_) => panic!("expected a refusal, got an accept"),
    }
}

/// A password login through the flow, with a code or none, remembering `device`.
pub fn password_login(
    name: &str,
    password: &str,
    code: Option<&str>,
    device: Option<DeviceId>,
) -> LoginRequest {
    LoginRequest {
        user: user(name),
        ctx: ctx(),
        credential: Credential::Password(Zeroizing::new(password.as_bytes().to_vec())),
        answer: code.map(|c| Answer::Code(Zeroizing::new(c.to_string()))),
        remember: device.is_some(),
        device,
        policy: DoorPolicy {
            place: Some(PolicyPlace {
                door: otpgate_config::PolicyDoor::Radius,
                client: None,
            }),
            nullok: false,
            can_ask: true,
            can_enroll: false,
        },
    }
}

/// Alice's password and `code` in one login request, through `core`'s flow.
async fn alice_login(core: &Arc<Core>, code: String) -> LoginStep {
    core.login(password_login("alice", ALICE.password, Some(&code), None))
        .await
        .unwrap()
}

/// Two cores on `f`'s store, alice enrolled through the second and logged in once
/// through the first, which keeps her record: the cores and her app's secret.
async fn two_cores_with_alice_kept_by_the_first(f: &Fixture) -> (Arc<Core>, Arc<Core>, TotpSecret) {
    let a = f.core().await;
    let b = f.core().await;
    let first = enroll(&b, "alice").await;
    assert!(matches!(
        alice_login(&a, code(&a, &first, 0)).await,
        LoginStep::Accepted(_)
    ));
    (a, b, first)
}

/// Registers and confirms `address` as `name`'s notification address, reading the code
/// from the sink.
pub async fn register_address(f: &Fixture, core: &Core, name: &str, address: &str) {
    let before = f.smtp.mails_to(address).unwrap().len();
    core.set_address(&user(name), address, &ctx())
        .await
        .unwrap();
    let mails = f.smtp.mails_to(address).unwrap();
    assert_eq!(mails.len(), before + 1, "one confirmation mail");
    let code = mails
        .last()
        .unwrap()
        .code(8)
        .expect("an 8-digit confirmation code");
    core.confirm_address(&user(name), &code, &ctx())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn totp_step_is_accepted_once_and_earlier_steps_are_replays() {
    let f = Fixture::start("");
    let core = f.core().await;
    let secret = enroll(&core, "alice").await;
    let alice = user("alice");
    assert!(verified(
        core.verify_code(&alice, &code(&core, &secret, 0), &ctx(), Method::Code)
            .await
            .unwrap()
    ));
    assert_eq!(
        refusal(
            core.verify_code(&alice, &code(&core, &secret, 0), &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::Replay
    );
    // The confirmation used step -1: it stays used.
    assert_eq!(
        refusal(
            core.verify_code(&alice, &code(&core, &secret, -1), &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::Replay
    );
    // A clock a step ahead is inside the window, and then the current step is "earlier".
    assert!(verified(
        core.verify_code(&alice, &code(&core, &secret, 1), &ctx(), Method::Code)
            .await
            .unwrap()
    ));
    f.clock.advance(Duration::from_secs(30));
    assert_eq!(
        refusal(
            core.verify_code(&alice, &code(&core, &secret, 0), &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::Replay
    );
    f.clock.advance(Duration::from_secs(30));
    assert!(verified(
        core.verify_code(&alice, &code(&core, &secret, 0), &ctx(), Method::Code)
            .await
            .unwrap()
    ));
    // Two steps away is outside the default window of one.
    assert_eq!(
        refusal(
            core.verify_code(&alice, &code(&core, &secret, 2), &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::WrongCode
    );
}

/// 16 submissions of one code through two core instances sharing one Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_cores_on_one_redis_accept_one_code_once() {
    let f = Fixture::start("");
    let a = Arc::new(f.core().await);
    let b = Arc::new(f.core().await);
    let secret = enroll(&a, "alice").await;
    let c = code(&a, &secret, 0);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let core = if i % 2 == 0 { a.clone() } else { b.clone() };
            let c = c.clone();
            tokio::spawn(async move {
                core.verify_code(&user("alice"), &c, &ctx(), Method::Code)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut accepts = 0;
    for t in tasks {
        if verified(t.await.unwrap()) {
            accepts += 1;
        }
    }
    assert_eq!(
        accepts, 1,
        "exactly one of 16 racing submissions is accepted"
    );
}

/// A core keeps the record a login read, so that the next login that brings its code
/// reads nothing before its one store step. What another instance changes in between
/// still decides: after a reset and a new app there, this instance refuses the old
/// app's code and takes the new one's; a lock set there refuses a right code here
/// without consuming it; and each accept is audited once, in the store.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_kept_by_one_instance_yields_to_changes_made_through_another() {
    use otpgate_core::audit::Outcome;
    let f = Fixture::start("");
    let (a, b, first) = two_cores_with_alice_kept_by_the_first(&f).await;
    let alice = user("alice");

    // Through b: a reset, and a new app.
    b.reset(&alice, &ctx()).await.unwrap();
    let second = enroll(&b, "alice").await;
    assert!(
        matches!(
            alice_login(&a, code(&a, &first, 1)).await,
            LoginStep::Refused(Refusal::WrongCode)
        ),
        "the old app's code, after a reset through another instance"
    );
    assert!(
        matches!(
            alice_login(&a, code(&a, &second, 1)).await,
            LoginStep::Accepted(_)
        ),
        "the new app's code"
    );

    // Through b: wrong codes until the lock (a code of a step far outside the window).
    f.clock.advance(Duration::from_secs(30));
    let wrong = code(&b, &second, 40);
    let mut locked = false;
    for _ in 0..20 {
        if matches!(
            alice_login(&b, wrong.clone()).await,
            LoginStep::Refused(Refusal::Locked(_))
        ) {
            locked = true;
            break;
        }
    }
    assert!(locked, "b's wrong codes lock alice");
    let right = code(&a, &second, 1);
    assert!(
        matches!(
            alice_login(&a, right.clone()).await,
            LoginStep::Refused(Refusal::Locked(_))
        ),
        "a lock set through another instance refuses a right code here"
    );
    b.unlock(&alice, &ctx()).await.unwrap();
    assert!(
        matches!(alice_login(&a, right).await, LoginStep::Accepted(_)),
        "the locked attempt consumed nothing"
    );

    let accepts = a
        .audit_records(Timestamp(0), Some(&alice), 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.result == Outcome::Accept)
        .count();
    assert_eq!(accepts, 3, "each accept audited once");
}

/// An append-mode login (the password and the code in one value) of a user this
/// instance has seen makes one store round trip — the code's step — also when the
/// password ends in digits, so that the end of the value could be a mailed code: the
/// outstanding mailed code is looked for only when no token's code is at the end.
/// Counted with Redis's own command statistics.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_mode_login_makes_one_store_round_trip_whatever_the_password_ends_in() {
    use otpgate_tests::TestUserSpec;
    let f = Fixture::start("");
    let redis = f.redis.as_ref().unwrap();
    let digits = TestUserSpec {
        uid: "digits",
        password: "digits-pw-4242",
        mail: None,
        groups: &[],
        activated: true,
    };
    f.slapd.add_user(&digits).unwrap();
    let core = f.core().await;
    let login = |name: &'static str, password: &'static str, code: String| {
        let core = core.clone();
        async move {
            let mut request = password_login(name, password, None, None);
            request.credential = Credential::PasswordWithCode {
                value: Zeroizing::new(format!("{password}{code}").into_bytes()),
                keyword: "email".into(),
            };
            core.login(request).await.unwrap()
        }
    };
    let stats = || -> std::collections::BTreeMap<String, u64> {
        let info = redis.cli(&["INFO", "commandstats"]).unwrap();
        info.lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.strip_prefix("calls=")?.split(',').next()?;
                Some((name.to_string(), calls.parse().ok()?))
            })
            .filter(|(name, _)| !matches!(name.as_str(), "info" | "config|resetstat"))
            .collect()
    };
    let mut seen = Vec::new();
    for (name, password) in [("alice", ALICE.password), ("digits", digits.password)] {
        let secret = enroll(&core, name).await;
        // The first login reads the user's record; the instance keeps it.
        assert!(matches!(
            login(name, password, code(&core, &secret, 0)).await,
            LoginStep::Accepted(_)
        ));
        redis.cli(&["CONFIG", "RESETSTAT"]).unwrap();
        assert!(matches!(
            login(name, password, code(&core, &secret, 1)).await,
            LoginStep::Accepted(_)
        ));
        let counted = stats();
        assert_eq!(counted.get("evalsha"), Some(&1), "{name}: {counted:?}");
        seen.push(counted);
    }
    assert_eq!(
        seen[0], seen[1],
        "a password ending in digits costs the store nothing more"
    );
}

/// On a Redis Cluster the audit log is in a slot of its own, so the login's step
/// cannot append the accept's record: it goes the usual way. Each accept is audited
/// once there too, a replay is refused and audited as one, and a record kept by one
/// instance still yields to a reset made through another.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_redis_cluster_every_accept_is_audited_once() {
    use otpgate_core::audit::Outcome;
    let cluster = otpgate_tests::RedisCluster::start(3).unwrap();
    let slapd = Slapd::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = ConfigBuilder::new(&slapd)
        .smtp(&smtp)
        .redis_cluster(&cluster)
        .write()
        .unwrap();
    let f = Fixture {
        slapd,
        redis: None,
        smtp,
        config,
        clock: ManualClock::new(Timestamp(T0)),
    };
    let (a, b, first) = two_cores_with_alice_kept_by_the_first(&f).await;
    let alice = user("alice");
    assert!(matches!(
        alice_login(&a, code(&a, &first, 1)).await,
        LoginStep::Accepted(_)
    ));
    assert!(matches!(
        alice_login(&b, code(&b, &first, 1)).await,
        LoginStep::Refused(Refusal::Replay)
    ));
    b.reset(&alice, &ctx()).await.unwrap();
    let second = enroll(&b, "alice").await;
    f.clock.advance(Duration::from_secs(30));
    assert!(matches!(
        alice_login(&a, code(&a, &first, 1)).await,
        LoginStep::Refused(Refusal::WrongCode)
    ));
    assert!(matches!(
        alice_login(&a, code(&a, &second, 1)).await,
        LoginStep::Accepted(_)
    ));
    let records = a
        .audit_records(Timestamp(0), Some(&alice), 1000)
        .await
        .unwrap();
    let count = |method: Method, result: Outcome| {
        records
            .iter()
            .filter(|r| r.method == method && r.result == result)
            .count()
    };
    assert_eq!(count(Method::Totp, Outcome::Accept), 3, "{records:#?}");
    assert_eq!(count(Method::Code, Outcome::Reject), 2, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_accepts_one_code_once_under_a_race() {
    let f = Fixture::start_with(false, "");
    let core = Arc::new(f.core().await);
    let secret = enroll(&core, "alice").await;
    let c = code(&core, &secret, 0);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let core = core.clone();
            let c = c.clone();
            tokio::spawn(async move {
                core.verify_code(&user("alice"), &c, &ctx(), Method::Code)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut accepts = 0;
    for t in tasks {
        accepts += usize::from(verified(t.await.unwrap()));
    }
    assert_eq!(accepts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn email_otp_is_single_use_replaced_and_expires() {
    let f = Fixture::start("");
    let core = f.core().await;
    let alice = user("alice");
    register_address(&f, &core, "alice", "alice@example.org").await;

    let delivery = core.request_login_code(&alice, &ctx()).await.unwrap();
    assert_eq!(
        delivery,
        CodeDelivery::Mailed {
            masked_address: "a***@example.org".into()
        }
    );
    let first = f
        .smtp
        .mails_to("alice@example.org")
        .unwrap()
        .last()
        .unwrap()
        .code(8)
        .unwrap();
    assert!(verified(
        core.verify_code(&alice, &first, &ctx(), Method::Code)
            .await
            .unwrap()
    ));
    assert_eq!(
        refusal(
            core.verify_code(&alice, &first, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::WrongCode,
        "used once"
    );

    // A new request replaces the outstanding code.
    core.request_login_code(&alice, &ctx()).await.unwrap();
    let old = f
        .smtp
        .mails_to("alice@example.org")
        .unwrap()
        .last()
        .unwrap()
        .code(8)
        .unwrap();
    core.request_login_code(&alice, &ctx()).await.unwrap();
    let new = f
        .smtp
        .mails_to("alice@example.org")
        .unwrap()
        .last()
        .unwrap()
        .code(8)
        .unwrap();
    if old != new {
        assert!(
            !verified(
                core.verify_code(&alice, &old, &ctx(), Method::Code)
                    .await
                    .unwrap()
            ),
            "the replaced code is dead"
        );
    }
    // Valid for 24 h, not a second more.
    f.clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert!(
        !verified(
            core.verify_code(&alice, &new, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        "expired after 24 h"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_after_max_failures_survives_a_restart_and_unlocks() {
    let f = Fixture::start("[lockout]\nmax_failures = 3\nlock_for = \"15m\"\n");
    let core = f.core().await;
    let secret = enroll(&core, "alice").await;
    let alice = user("alice");
    let good = code(&core, &secret, 0);
    let wrong = if good == "000000" { "111111" } else { "000000" };
    assert_eq!(
        refusal(
            core.verify_code(&alice, wrong, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::WrongCode
    );
    assert_eq!(
        refusal(
            core.verify_code(&alice, wrong, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::WrongCode
    );
    let until = Timestamp(T0 + 15 * 60);
    assert_eq!(
        refusal(
            core.verify_code(&alice, wrong, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::Locked(until)
    );
    assert_eq!(
        refusal(
            core.verify_code(&alice, &good, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::Locked(until),
        "even the right code"
    );

    // Another instance (a restart) sees the lock: it lives in the store.
    let restarted = f.core().await;
    assert!(restarted.status(&alice).await.unwrap().locked);
    restarted.unlock(&alice, &ctx()).await.unwrap();
    assert!(verified(
        core.verify_code(&alice, &good, &ctx(), Method::Code)
            .await
            .unwrap()
    ));

    // A success reset the count: two more failures do not lock.
    assert!(!verified(
        core.verify_code(&alice, wrong, &ctx(), Method::Code)
            .await
            .unwrap()
    ));
    assert!(!verified(
        core.verify_code(&alice, wrong, &ctx(), Method::Code)
            .await
            .unwrap()
    ));
    assert!(!core.status(&alice).await.unwrap().locked);
    // And a lock ends by itself after lock_for.
    assert!(matches!(
        refusal(
            core.verify_code(&alice, wrong, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        Refusal::Locked(_)
    ));
    f.clock.advance(Duration::from_secs(15 * 60 + 1));
    assert!(verified(
        core.verify_code(&alice, &code(&core, &secret, 0), &ctx(), Method::Code)
            .await
            .unwrap()
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn notification_addresses_refuse_denied_domains_and_bad_syntax() {
    let f = Fixture::start("");
    let core = f.core().await;
    let alice = user("alice");
    for (address, expected) in [
        (
            "x@example.ac.jp",
            Refusal::DeniedDomain("example.ac.jp".into()),
        ),
        (
            "x@Mail.Example.AC.JP",
            Refusal::DeniedDomain("mail.example.ac.jp".into()),
        ),
        (
            "not-an-address",
            Refusal::InvalidAddress("not-an-address".into()),
        ),
        ("two@@at.org", Refusal::InvalidAddress("two@@at.org".into())),
    ] {
        match core.set_address(&alice, address, &ctx()).await {
            Err(CoreError::Refused(r)) => assert_eq!(r, expected, "{address}"),
            other => panic!("{address}: expected a refusal, got {other:?}"),
        }
    }
    assert!(
        f.smtp.messages().unwrap().is_empty(),
        "no mail for refused addresses"
    );
    // A look-alike domain is not a subdomain.
    core.set_address(&alice, "x@notexample.ac.jp", &ctx())
        .await
        .unwrap();
    assert_eq!(f.smtp.mails_to("x@notexample.ac.jp").unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_takes_effect_only_with_its_code_and_the_old_one_is_told() {
    let f = Fixture::start("");
    let core = f.core().await;
    let alice = user("alice");
    register_address(&f, &core, "alice", "first@example.org").await;
    core.set_address(&alice, "second@example.org", &ctx())
        .await
        .unwrap();
    let status = core.status(&alice).await.unwrap();
    assert_eq!(
        status.notification_address.as_deref(),
        Some("first@example.org")
    );
    assert_eq!(
        status.pending_address.as_deref(),
        Some("second@example.org")
    );
    let wrong = core.confirm_address(&alice, "00000000", &ctx()).await;
    assert!(
        matches!(wrong, Err(CoreError::Refused(Refusal::WrongCode))),
        "{wrong:?}"
    );
    let code = f.smtp.mails_to("second@example.org").unwrap()[0]
        .code(8)
        .unwrap();
    core.confirm_address(&alice, &code, &ctx()).await.unwrap();
    assert_eq!(
        core.status(&alice)
            .await
            .unwrap()
            .notification_address
            .as_deref(),
        Some("second@example.org")
    );
    let told = f.smtp.mails_to("first@example.org").unwrap();
    assert!(
        told.iter().any(|m| m.body.contains("second@example.org")),
        "the old address is told"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_account_can_neither_enroll_nor_log_in() {
    let f = Fixture::start("");
    let core = f.core().await;
    let carol = user(CAROL.uid);
    assert!(matches!(
        core.enroll(&carol, &ctx()).await,
        Err(CoreError::Refused(Refusal::NotActivated))
    ));
    assert!(matches!(
        core.request_login_code(&carol, &ctx()).await,
        Err(CoreError::Refused(Refusal::NotActivated))
    ));
    match core
        .verify_password(&carol, CAROL.password.as_bytes())
        .await
        .unwrap()
    {
        PasswordCheck::Refused(r) => assert_eq!(r, Refusal::NotActivated),
        PasswordCheck::Verified(_) => panic!("a disabled account logged in"),
    }
    assert_eq!(core.status(&carol).await.unwrap().state, "not-activated");
}

#[tokio::test(flavor = "multi_thread")]
async fn injection_shaped_names_match_no_one() {
    let f = Fixture::start("");
    let core = f.core().await;
    for name in ["alice*", "*", "alice)(uid=*", "*)(|(uid=*", "al*ce"] {
        assert!(
            core.lookup(&user(name)).await.unwrap().is_none(),
            "{name} matched someone"
        );
        match core
            .verify_password(&user(name), ALICE.password.as_bytes())
            .await
            .unwrap()
        {
            PasswordCheck::Refused(Refusal::UnknownUser) => {}
            other => panic!("{name}: {other:?}"),
        }
    }
    // The user whose name has every metacharacter is found exactly.
    let weird = user(WEIRD.uid);
    assert!(core.lookup(&weird).await.unwrap().is_some());
    assert!(matches!(
        core.verify_password(&weird, WEIRD.password.as_bytes())
            .await
            .unwrap(),
        PasswordCheck::Verified(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_password_is_refused_before_ldap_is_asked() {
    let mut f = Fixture::start("");
    let core = f.core().await;
    let alice = user("alice");
    assert!(matches!(
        core.verify_password(&alice, b"").await.unwrap(),
        PasswordCheck::Refused(Refusal::EmptyPassword)
    ));
    assert!(matches!(
        core.verify_password(&alice, b"wrong").await.unwrap(),
        PasswordCheck::Refused(Refusal::WrongPassword)
    ));
    f.slapd.stop();
    assert!(matches!(
        core.verify_password(&alice, b"").await.unwrap(),
        PasswordCheck::Refused(Refusal::EmptyPassword)
    ));
    // With LDAP down, a real password is an error (fail closed), never a verification.
    assert!(matches!(
        core.verify_password(&alice, ALICE.password.as_bytes())
            .await,
        Err(CoreError::Backend {
            backend: Backend::Directory,
            ..
        })
    ));
}

/// Records every random draw, so a test can recompute a code it never saw.
#[derive(Default)]
struct RecordingRandom(Mutex<Vec<Vec<u8>>>);

impl Random for RecordingRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CoreError> {
        OsRandom.fill(buf)?;
        self.0.lock().unwrap().push(buf.to_vec());
        Ok(())
    }
}

impl RecordingRandom {
    /// The 8-digit code `random::decimal_code` made from the last 8-byte draw.
    fn last_code(&self) -> String {
        let draws = self.0.lock().unwrap();
        let draw = draws.iter().rev().find(|d| d.len() == 8).unwrap();
        let value = u64::from_le_bytes(draw.as_slice().try_into().unwrap());
        format!("{:08}", value % 100_000_000)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn when_smtp_is_down_the_error_is_clear_and_no_code_is_left() {
    let mut f = Fixture::start("");
    let random = Arc::new(RecordingRandom::default());
    let core = f.core_with(random.clone()).await;
    let alice = user("alice");
    register_address(&f, &core, "alice", "alice@example.org").await;

    // The recorded draw is the mailed code (checks the recomputation).
    core.request_login_code(&alice, &ctx()).await.unwrap();
    let mailed = f
        .smtp
        .mails_to("alice@example.org")
        .unwrap()
        .last()
        .unwrap()
        .code(8)
        .unwrap();
    assert_eq!(random.last_code(), mailed);

    f.smtp.stop();
    match core.request_login_code(&alice, &ctx()).await {
        Err(CoreError::Backend {
            backend: Backend::Mail,
            message,
        }) => assert!(message.contains("SMTP"), "{message}"),
        other => panic!("expected a mail error, got {other:?}"),
    }
    let unsent = random.last_code();
    assert!(
        !verified(
            core.verify_code(&alice, &unsent, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        "the unsent code is not usable"
    );
    assert!(
        !verified(
            core.verify_code(&alice, &mailed, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        "nor is the one it replaced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_address_a_code_request_goes_to_the_helpdesk() {
    let f = Fixture::start("");
    let core = f.core().await;
    let bob = user(BOB.uid);
    assert_eq!(
        core.request_login_code(&bob, &ctx()).await.unwrap(),
        CodeDelivery::QueuedForHelpdesk
    );
    let queue = core.helpdesk_queue().await.unwrap();
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].user, bob);
    let issued = core.helpdesk_issue(&bob, &ctx()).await.unwrap();
    assert_eq!(issued.otp.len(), 8);
    assert!(
        core.helpdesk_queue().await.unwrap().is_empty(),
        "issuing clears the request"
    );
    assert!(verified(
        core.verify_code(&bob, &issued.otp, &ctx(), Method::Code)
            .await
            .unwrap()
    ));
    assert!(
        !verified(
            core.verify_code(&bob, &issued.otp, &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        "single use"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn enrollment_is_pending_until_confirmed_and_reset_removes_app_and_trust() {
    let f = Fixture::start("");
    let core = f.core().await;
    let alice = user("alice");
    assert_eq!(core.status(&alice).await.unwrap().state, "new");
    let enrollment = core.enroll(&alice, &ctx()).await.unwrap();
    assert!(
        enrollment
            .otpauth_uri
            .starts_with("otpauth://totp/Example%20University:alice?secret=")
    );
    assert!(
        enrollment.warning.is_some(),
        "no address yet: recovery needs the helpdesk"
    );
    assert_eq!(core.status(&alice).await.unwrap().state, "app-pending");
    let wrong = core.confirm_enrollment(&alice, "000000", &ctx()).await;
    assert!(
        matches!(wrong, Err(CoreError::Refused(Refusal::WrongCode))) || {
            // one in a million: 000000 was right
            wrong.is_ok()
        }
    );
    let secret = TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(enrollment.secret.as_bytes())
            .unwrap(),
    );
    core.confirm_enrollment(&alice, &code(&core, &secret, 0), &ctx())
        .await
        .unwrap();
    assert_eq!(core.status(&alice).await.unwrap().state, "app-enrolled");
    assert!(matches!(
        core.enroll(&alice, &ctx()).await,
        Err(CoreError::Refused(Refusal::AlreadyEnrolled))
    ));

    // Log in remembering a device, then reset.
    let device = DeviceId {
        door: Door::Pam,
        identifier: "192.0.2.7".into(),
        label: "192.0.2.7".into(),
    };
    let LoginStep::Accepted(accepted) = core
        .login(password_login(
            "alice",
            ALICE.password,
            Some(&code(&core, &secret, 1)),
            Some(device.clone()),
        ))
        .await
        .unwrap()
    else {
        panic!("alice's password and code")
    };
    assert!(accepted.remembered().is_some());
    assert!(
        accepted
            .entry()
            .groups
            .iter()
            .any(|g| g.contains("vpn-staff"))
    );
    let trusted = |device: DeviceId| {
        let core = core.clone();
        async move {
            matches!(
                core.login(password_login("alice", ALICE.password, None, Some(device)))
                    .await
                    .unwrap(),
                LoginStep::Accepted(_)
            )
        }
    };
    assert!(
        trusted(device.clone()).await,
        "the remembered device is trusted"
    );
    let other = DeviceId {
        identifier: "192.0.2.8".into(),
        ..device.clone()
    };
    assert!(!trusted(other).await, "another device is asked for a code");

    core.reset(&alice, &ctx()).await.unwrap();
    let status = core.status(&alice).await.unwrap();
    assert_eq!(status.state, "new");
    assert_eq!(status.trusted_devices, 0);
    assert!(!trusted(device.clone()).await, "the reset ended the trust");
    f.clock.advance(Duration::from_secs(90));
    assert!(
        !verified(
            core.verify_code(&alice, &code(&core, &secret, 0), &ctx(), Method::Code)
                .await
                .unwrap()
        ),
        "the old app is gone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mailed_reset_link_resets_once_with_the_password() {
    let f = Fixture::start("");
    let core = f.core().await;
    let alice = user("alice");
    register_address(&f, &core, "alice", "alice@example.org").await;
    enroll(&core, "alice").await;
    assert!(matches!(
        core.request_reset(&alice, &ctx()).await.unwrap(),
        CodeDelivery::Mailed { .. }
    ));
    let mail = f.smtp.mails_to("alice@example.org").unwrap().pop().unwrap();
    let token = mail
        .body
        .split("token=")
        .nth(1)
        .map(|t| {
            t.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        })
        .expect("a reset link with a token");
    let with_link = |token: &str| {
        core.login_with_reset_link(
            alice.clone(),
            Zeroizing::new(ALICE.password.as_bytes().to_vec()),
            Zeroizing::new(token.to_string()),
            ctx(),
        )
    };
    assert!(
        matches!(
            with_link("0000").await.unwrap(),
            LoginStep::Refused(Refusal::NothingOutstanding)
        ),
        "a wrong token does nothing"
    );
    assert_eq!(core.status(&alice).await.unwrap().state, "app-enrolled");
    assert!(matches!(
        core.login_with_reset_link(
            alice.clone(),
            Zeroizing::new(b"wrong".to_vec()),
            Zeroizing::new(token.clone()),
            ctx()
        )
        .await
        .unwrap(),
        LoginStep::Refused(Refusal::WrongPassword)
    ));
    assert_eq!(
        core.status(&alice).await.unwrap().state,
        "app-enrolled",
        "a wrong password does not spend the link"
    );
    let LoginStep::Accepted(accepted) = with_link(&token).await.unwrap() else {
        panic!("the link with the password signs in")
    };
    assert_eq!(accepted.factor(), otpgate_core::service::Factor::ResetLink);
    assert_eq!(core.status(&alice).await.unwrap().state, "email-registered");
    assert!(
        matches!(with_link(&token).await.unwrap(), LoginStep::Refused(_)),
        "the link works once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_challenge_is_bound_to_user_and_client_and_takes_three_answers() {
    let f = Fixture::start("");
    let first = f.core().await;
    let second = f.core().await;
    let alice = user("alice");
    enroll(&first, "alice").await;
    let pending = || async {
        match first
            .login(password_login("alice", ALICE.password, None, None))
            .await
            .unwrap()
        {
            LoginStep::NeedCode { pending, .. } => pending,
            other => panic!("a code is needed: {other:?}"),
        }
    };
    let challenge = first.park(&pending().await, "vpn").await.unwrap();
    assert_eq!(challenge.id.len(), 32, "128 random bits, hex");
    // Another instance can take the second round; another client or user cannot.
    assert!(
        second
            .resume(&user("dave"), &challenge.id, "vpn")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        second
            .resume(&alice, &challenge.id, "wifi")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        second
            .resume(&alice, &challenge.id, "vpn")
            .await
            .unwrap()
            .is_some()
    );
    // The wrong-client attempt counted as an answer too: one answer is left.
    assert!(
        second
            .resume(&alice, &challenge.id, "vpn")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        second
            .resume(&alice, &challenge.id, "vpn")
            .await
            .unwrap()
            .is_none(),
        "three answers in all"
    );
    // Expiry after 120 s.
    let later = first.park(&pending().await, "vpn").await.unwrap();
    f.clock.advance(Duration::from_secs(121));
    assert!(
        second
            .resume(&alice, &later.id, "vpn")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn totp_secrets_are_stored_only_encrypted() {
    let f = Fixture::start("");
    let core = f.core().await;
    let secret = enroll(&core, "alice").await;
    let redis = f.redis.as_ref().unwrap();
    redis
        .command(&["CONFIG", "SET", "rdbcompression", "no"])
        .unwrap();
    redis.command(&["SAVE"]).unwrap();
    let dump = std::fs::read(redis.dir().join("dump.rdb")).unwrap();
    let b32 = secret.to_base32();
    let contains = |needle: &[u8]| dump.windows(needle.len()).any(|w| w == needle);
    assert!(dump.len() > 100, "the dump holds the account");
    assert!(!contains(b32.as_bytes()), "base32 secret in the store");
    assert!(!contains(secret.expose()), "raw secret in the store");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_no_code_is_accepted() {
    let mut f = Fixture::start("");
    let core = f.core().await;
    let secret = enroll(&core, "alice").await;
    let c = code(&core, &secret, 0);
    f.redis.as_mut().unwrap().stop();
    match core
        .verify_code(&user("alice"), &c, &ctx(), Method::Code)
        .await
    {
        Err(CoreError::Backend {
            backend: Backend::Store,
            ..
        }) => {}
        other => panic!("expected a store error, got {other:?}"),
    }
    assert!(core.health().await.is_err());
}
