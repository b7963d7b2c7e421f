//! The directory entry cache (`[directory] cache_for`) against a real slapd, with the
//! fault proxy counting the searches and binds the directory sends: a cached entry
//! saves the search, never the bind, so a changed password takes effect at once; a
//! deactivation waits at most `cache_for`; `"0s"` caches nothing.

use std::sync::Arc;
use std::time::Duration;

use otpgate_config::{DirectoryConfig, LdapConfig};
use otpgate_core::Refusal;
use otpgate_core::clock::{Clock, ManualClock, Timestamp};
use otpgate_core::directory::{Directory, PasswordCheck};
use otpgate_core::user::UserName;
use otpgate_tests::{ALICE, DAVE, FaultProxy, Slapd};

/// slapd, the proxy in front of it, and a directory through the proxy on a made-up clock.
struct Cached {
    slapd: Slapd,
    proxy: FaultProxy,
    clock: ManualClock,
    dir: Directory,
}

async fn cached(cache_for: Duration) -> Cached {
    let slapd = Slapd::start().unwrap();
    let proxy = FaultProxy::start(([127, 0, 0, 1], slapd.port()).into()).unwrap();
    let config = LdapConfig {
        urls: vec![proxy.ldap_url()],
        timeout: Duration::from_secs(5),
        cache_for,
        ..crate::directory::ldap_config(&slapd)
    };
    let clock = ManualClock::new(Timestamp(1_700_000_000));
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let dir = Directory::open(&DirectoryConfig::Ldap(Box::new(config)), shared)
        .await
        .unwrap();
    proxy.clear_counts();
    Cached {
        slapd,
        proxy,
        clock,
        dir,
    }
}

fn name(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

impl Cached {
    async fn check(&self, user: &str, password: &str) -> Result<(), Refusal> {
        match self
            .dir
            .verify_password(&name(user), password.as_bytes())
            .await
            .unwrap()
        {
            PasswordCheck::Verified(p) => {
                assert_eq!(p.user().as_str(), user);
                Ok(())
            }
            PasswordCheck::Refused(r) => Err(r),
        }
    }

    /// (searches, binds as `dn`) since the last call, then clears the counts.
    fn counts(&self, dn: &str) -> (usize, usize) {
        let binds = self.proxy.ldap_binds().iter().filter(|d| *d == dn).count();
        let counts = (self.proxy.ldap_searches(), binds);
        self.proxy.clear_counts();
        counts
    }

    fn modify(&self, dn: &str, attribute: &str, value: &str) {
        self.slapd
            .modify(&format!(
                "dn: {dn}\nchangetype: modify\nreplace: {attribute}\n{attribute}: {value}\n"
            ))
            .unwrap();
    }
}

#[tokio::test]
async fn a_cached_entry_saves_the_search_never_the_bind() {
    let c = cached(Duration::from_secs(60)).await;
    let dn = ALICE.dn();

    c.check(ALICE.uid, ALICE.password).await.unwrap();
    assert_eq!(c.counts(&dn), (1, 1), "the first login searches and binds");
    c.check(ALICE.uid, ALICE.password).await.unwrap();
    assert_eq!(c.counts(&dn), (0, 1), "the second binds only");
    let entry = c.dir.lookup(&name(ALICE.uid)).await.unwrap().unwrap();
    assert_eq!(entry.dn, dn);
    assert_eq!(
        c.counts(&dn),
        (0, 0),
        "a lookup of a cached user asks nothing"
    );

    // A changed password takes effect at once: the old one is refused, the new one
    // verifies, each with its bind.
    c.modify(&dn, "userPassword", "alice-new-pw");
    assert_eq!(
        c.check(ALICE.uid, ALICE.password).await,
        Err(Refusal::WrongPassword)
    );
    assert_eq!(c.counts(&dn), (0, 1));
    c.check(ALICE.uid, "alice-new-pw").await.unwrap();
    assert_eq!(c.counts(&dn), (1, 1), "a refused bind forgot the entry");

    // The entry lives `cache_for`, then is searched for again.
    c.clock.advance(Duration::from_secs(59));
    c.check(ALICE.uid, "alice-new-pw").await.unwrap();
    assert_eq!(c.counts(&dn), (0, 1));
    c.clock.advance(Duration::from_secs(1));
    c.check(ALICE.uid, "alice-new-pw").await.unwrap();
    assert_eq!(c.counts(&dn), (1, 1), "expired after cache_for");
}

#[tokio::test]
async fn a_deactivation_waits_at_most_cache_for_and_a_deleted_entry_none() {
    let c = cached(Duration::from_secs(60)).await;
    let dn = DAVE.dn();
    c.check(DAVE.uid, DAVE.password).await.unwrap();
    c.modify(&dn, "employeeType", "disabled");
    // What README calls stale: for the rest of `cache_for` the old activation holds.
    c.clock.advance(Duration::from_secs(30));
    c.check(DAVE.uid, DAVE.password).await.unwrap();
    assert!(
        c.dir
            .lookup(&name(DAVE.uid))
            .await
            .unwrap()
            .unwrap()
            .activated
    );
    c.clock.advance(Duration::from_secs(30));
    assert_eq!(
        c.check(DAVE.uid, DAVE.password).await,
        Err(Refusal::NotActivated)
    );
    assert!(
        !c.dir
            .lookup(&name(DAVE.uid))
            .await
            .unwrap()
            .unwrap()
            .activated
    );
    // A not-activated entry is never served from the cache: an activation is seen at
    // once.
    c.counts(&dn);
    c.modify(&dn, "employeeType", "staff");
    c.check(DAVE.uid, DAVE.password).await.unwrap();
    assert_eq!(c.counts(&dn), (1, 1));

    // A deleted entry: the bind fails at once, though the entry was cached.
    c.check(ALICE.uid, ALICE.password).await.unwrap();
    c.slapd
        .modify(&format!("dn: {}\nchangetype: delete\n", ALICE.dn()))
        .unwrap();
    assert_eq!(
        c.check(ALICE.uid, ALICE.password).await,
        Err(Refusal::WrongPassword)
    );
    assert_eq!(
        c.check(ALICE.uid, ALICE.password).await,
        Err(Refusal::UnknownUser)
    );
}

#[tokio::test]
async fn zero_caches_nothing() {
    let c = cached(Duration::ZERO).await;
    let dn = ALICE.dn();
    for _ in 0..3 {
        c.check(ALICE.uid, ALICE.password).await.unwrap();
        assert_eq!(c.counts(&dn), (1, 1), "every login searches");
    }
    for _ in 0..2 {
        assert!(c.dir.lookup(&name(ALICE.uid)).await.unwrap().is_some());
        assert_eq!(c.counts(&dn).0, 1, "every lookup searches");
    }
}
