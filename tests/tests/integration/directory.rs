//! The LDAP directory against a real slapd: password checks and their refusals, RFC 4515
//! escaping, failover, outages and reconnection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use otpgate_config::{DirectoryConfig, LdapConfig, SecretBytes};
use otpgate_core::Refusal;
use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::directory::{Directory, DirectoryError, PasswordCheck, UserEntry};
use otpgate_core::user::UserName;
use otpgate_tests::tls::TestCa;
use otpgate_tests::{ALICE, ALICEX, BOB, CAROL, DAVE, Slapd, WEIRD, free_tcp_port};

const TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn ldap_config(slapd: &Slapd) -> LdapConfig {
    LdapConfig {
        urls: vec![slapd.url()],
        base_dn: slapd.base_dn().into(),
        user_filter: "(uid={user})".into(),
        bind_dn: slapd.bind_dn().into(),
        bind_password: SecretBytes::new(slapd.bind_password().as_bytes().to_vec()),
        activated_filter: Some(slapd.activated_filter().into()),
        groups_attribute: "memberOf".into(),
        mail_attribute: "mail".into(),
        starttls: false,
        tls_ca_file: None,
        timeout: TIMEOUT,
        pool_size: 2,
        cache_for: Duration::ZERO,
    }
}

async fn open(config: LdapConfig) -> Directory {
    Directory::open(&DirectoryConfig::Ldap(Box::new(config)), clock())
        .await
        .unwrap()
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn name(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

async fn check(dir: &Directory, user: &str, password: &str) -> PasswordCheck {
    dir.verify_password(&name(user), password.as_bytes())
        .await
        .unwrap()
}

async fn refusal(dir: &Directory, user: &str, password: &str) -> Refusal {
    match check(dir, user, password).await {
        PasswordCheck::Refused(r) => r,
        PasswordCheck::Verified(p) => panic!("{user} verified: {:?}", p.entry()),
    }
}

async fn verified(dir: &Directory, user: &str, password: &str) -> UserEntry {
    match check(dir, user, password).await {
        PasswordCheck::Verified(p) => {
            assert_eq!(p.user().as_str(), user.to_lowercase());
            p.entry().clone()
        }
        PasswordCheck::Refused(r) => panic!("{user} refused: {r}"),
    }
}

/// A loopback URL with nothing listening.
fn dead_url() -> String {
    format!("ldap://127.0.0.1:{}", free_tcp_port().unwrap())
}

#[tokio::test]
async fn right_password_verifies_with_the_entry() {
    let slapd = Slapd::start().unwrap();
    let dir = open(ldap_config(&slapd)).await;
    dir.ping().await.unwrap();

    let alice = verified(&dir, ALICE.uid, ALICE.password).await;
    assert_eq!(alice.dn, ALICE.dn());
    assert_eq!(alice.mail.as_deref(), ALICE.mail);
    let mut groups = alice.groups.clone();
    groups.sort();
    let mut expected = ALICE.group_dns();
    expected.sort();
    assert_eq!(groups, expected);
    assert!(alice.activated);
    assert!(alice.display_name.is_some());

    // The same entry through lookup, and a name in capitals is the same user.
    assert_eq!(dir.lookup(&name(ALICE.uid)).await.unwrap(), Some(alice));
    verified(&dir, "ALICE", ALICE.password).await;

    let bob = verified(&dir, BOB.uid, BOB.password).await;
    assert_eq!(bob.mail, None);
    assert_eq!(bob.groups, BOB.group_dns());
    verified(&dir, DAVE.uid, DAVE.password).await;
}

#[tokio::test]
async fn refusals() {
    let slapd = Slapd::start().unwrap();
    let dir = open(ldap_config(&slapd)).await;

    assert_eq!(
        refusal(&dir, ALICE.uid, "not-alices-password").await,
        Refusal::WrongPassword
    );
    // Another user's password is wrong too.
    assert_eq!(
        refusal(&dir, ALICE.uid, BOB.password).await,
        Refusal::WrongPassword
    );
    assert_eq!(refusal(&dir, ALICE.uid, "").await, Refusal::EmptyPassword);
    assert_eq!(
        refusal(&dir, "nobody", ALICE.password).await,
        Refusal::UnknownUser
    );
    assert_eq!(dir.lookup(&name("nobody")).await.unwrap(), None);

    // Not activated: said only with the right password; the entry shows it.
    assert_eq!(
        refusal(&dir, CAROL.uid, CAROL.password).await,
        Refusal::NotActivated
    );
    assert_eq!(
        refusal(&dir, CAROL.uid, "not-carols-password").await,
        Refusal::WrongPassword
    );
    let carol = dir.lookup(&name(CAROL.uid)).await.unwrap().unwrap();
    assert!(!carol.activated);
    assert_eq!(carol.dn, CAROL.dn());
    assert_eq!(carol.mail.as_deref(), CAROL.mail);

    // A password that is not UTF-8 is refused, never sent in an altered form.
    let bytes = [b'a', 0xff, b'b'];
    assert!(matches!(
        dir.verify_password(&name(ALICE.uid), &bytes).await.unwrap(),
        PasswordCheck::Refused(Refusal::WrongPassword)
    ));
}

#[tokio::test]
async fn without_activated_filter_everyone_is_activated() {
    let slapd = Slapd::start().unwrap();
    let mut config = ldap_config(&slapd);
    config.activated_filter = None;
    let dir = open(config).await;
    assert!(
        dir.lookup(&name(CAROL.uid))
            .await
            .unwrap()
            .unwrap()
            .activated
    );
    verified(&dir, CAROL.uid, CAROL.password).await;
    assert_eq!(refusal(&dir, "nobody", "pw").await, Refusal::UnknownUser);
}

#[tokio::test]
async fn names_are_data_not_filter_syntax() {
    let slapd = Slapd::start().unwrap();
    let dir = open(ldap_config(&slapd)).await;

    // The server spells the DN its own way (`\5C` for `\\`); binding with it works.
    let weird = verified(&dir, WEIRD.uid, WEIRD.password).await;
    assert!(weird.dn.starts_with("uid=weird*(user)"), "{}", weird.dn);
    assert!(weird.dn.ends_with(slapd.base_dn()), "{}", weird.dn);
    assert_eq!(
        dir.lookup(&name(WEIRD.uid)).await.unwrap().unwrap().dn,
        weird.dn
    );

    // Unescaped, each of these would match alice, alicex or everyone.
    for injected in ["alice*", "*", "alice)(uid=*", "*)(uid=alice", "al*ce"] {
        assert_eq!(
            dir.lookup(&name(injected)).await.unwrap(),
            None,
            "{injected}"
        );
        for password in [ALICE.password, ALICEX.password] {
            assert_eq!(
                refusal(&dir, injected, password).await,
                Refusal::UnknownUser,
                "{injected}"
            );
        }
    }
    // alicex is its own user, not a second match for alice.
    assert_eq!(
        verified(&dir, ALICEX.uid, ALICEX.password).await.dn,
        ALICEX.dn()
    );
    verified(&dir, ALICE.uid, ALICE.password).await;
}

#[tokio::test]
async fn ambiguous_names_are_unknown() {
    let slapd = Slapd::start().unwrap();
    let mut config = ldap_config(&slapd);
    // A filter that matches both alice and alicex for the name "alice".
    config.user_filter = "(|(uid={user})(mail={user}x@example.org))".into();
    let dir = open(config).await;
    assert_eq!(dir.lookup(&name(ALICE.uid)).await.unwrap(), None);
    assert_eq!(
        refusal(&dir, ALICE.uid, ALICE.password).await,
        Refusal::UnknownUser
    );
    verified(&dir, BOB.uid, BOB.password).await;
}

#[tokio::test]
async fn fails_over_to_the_next_url() {
    let slapd = Slapd::start().unwrap();
    let mut config = ldap_config(&slapd);
    config.urls = vec![dead_url(), slapd.url()];
    let dir = open(config).await;
    verified(&dir, ALICE.uid, ALICE.password).await;
    assert_eq!(
        refusal(&dir, ALICE.uid, "wrong").await,
        Refusal::WrongPassword
    );
    dir.ping().await.unwrap();
}

#[tokio::test]
async fn a_wrong_service_password_is_unavailable_naming_the_urls() {
    let slapd = Slapd::start().unwrap();
    let dead = dead_url();
    let mut config = ldap_config(&slapd);
    config.urls = vec![dead.clone(), slapd.url()];
    config.bind_password = SecretBytes::new(b"not-the-service-password".to_vec());
    let err = match Directory::open(&DirectoryConfig::Ldap(Box::new(config)), clock()).await {
        Ok(_) => panic!("opened with a wrong service password"),
        Err(e) => e,
    };
    let DirectoryError::Unavailable(message) = err else {
        panic!("{err}");
    };
    assert!(
        message.contains(&dead) && message.contains(&slapd.url()),
        "{message}"
    );
}

#[tokio::test]
async fn an_outage_fails_closed_and_recovers() {
    let mut slapd = Slapd::start().unwrap();
    let dir = open(ldap_config(&slapd)).await;
    verified(&dir, ALICE.uid, ALICE.password).await;

    slapd.stop();
    // The empty password is refused before LDAP is asked: the same answer while down.
    assert_eq!(refusal(&dir, ALICE.uid, "").await, Refusal::EmptyPassword);
    for password in [ALICE.password, "wrong"] {
        let started = Instant::now();
        let result = dir
            .verify_password(&name(ALICE.uid), password.as_bytes())
            .await;
        assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
        match result {
            Err(DirectoryError::Unavailable(_)) => {}
            Err(e) => panic!("expected Unavailable, got {e}"),
            Ok(PasswordCheck::Verified(_)) => panic!("verified while the directory is down"),
            Ok(PasswordCheck::Refused(r)) => panic!("refused ({r}) while the directory is down"),
        }
    }
    assert!(matches!(
        dir.lookup(&name(ALICE.uid)).await,
        Err(DirectoryError::Unavailable(_))
    ));
    assert!(dir.ping().await.is_err());

    // The same directory value reconnects once slapd is back.
    slapd.start_again().unwrap();
    verified(&dir, ALICE.uid, ALICE.password).await;
    assert_eq!(
        refusal(&dir, BOB.uid, "wrong").await,
        Refusal::WrongPassword
    );
    assert!(dir.lookup(&name(CAROL.uid)).await.unwrap().is_some());
    dir.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_share_the_connections() {
    let slapd = Slapd::start().unwrap();
    let dir = Arc::new(open(ldap_config(&slapd)).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200usize {
        let dir = Arc::clone(&dir);
        tasks.spawn(async move {
            let (user, password, right) = match i % 4 {
                0 => (ALICE.uid, ALICE.password, true),
                1 => (BOB.uid, BOB.password, true),
                2 => (ALICE.uid, BOB.password, false),
                _ => (DAVE.uid, "wrong", false),
            };
            let outcome = dir
                .verify_password(&name(user), password.as_bytes())
                .await
                .unwrap();
            match (outcome, right) {
                (PasswordCheck::Verified(p), true) => assert_eq!(p.user().as_str(), user),
                (PasswordCheck::Refused(Refusal::WrongPassword), false) => {}
                (other, _) => panic!("{user}: {other:?}"),
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

#[tokio::test]
async fn tls_trusts_only_the_configured_ca() {
    let slapd = Slapd::start_with_tls().unwrap();
    let ca = slapd.ca_cert().unwrap().to_owned();
    let ldaps = slapd.ldaps_url().unwrap();

    // LDAPS, and StartTLS on the plain port, with the test CA trusted.
    let mut config = ldap_config(&slapd);
    config.urls = vec![ldaps.clone()];
    config.tls_ca_file = Some(ca.clone());
    let dir = open(config.clone()).await;
    verified(&dir, ALICE.uid, ALICE.password).await;
    assert_eq!(
        refusal(&dir, ALICE.uid, "wrong").await,
        Refusal::WrongPassword
    );
    let mut starttls = ldap_config(&slapd);
    starttls.starttls = true;
    starttls.tls_ca_file = Some(ca);
    let dir = open(starttls.clone()).await;
    verified(&dir, BOB.uid, BOB.password).await;

    // A certificate from another CA, or none trusted at all: no connection, no login.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = TestCa::create(elsewhere.path()).unwrap();
    for mut c in [config.clone(), starttls] {
        c.tls_ca_file = Some(other.ca_cert.clone());
        assert!(matches!(
            Directory::open(&DirectoryConfig::Ldap(Box::new(c)), clock()).await,
            Err(DirectoryError::Unavailable(_))
        ));
    }
    config.tls_ca_file = None;
    assert!(matches!(
        Directory::open(&DirectoryConfig::Ldap(Box::new(config)), clock()).await,
        Err(DirectoryError::Unavailable(_))
    ));
}
