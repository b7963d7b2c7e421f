//! The suite every store backend must pass.
//!
//! Each check takes a backend and a `tag`, and uses user names made from the tag, so
//! several checks (and several runs with different tags) can share one store. The
//! helpdesk and audit checks use the store's global keys: give each run its own store
//! or key prefix if runs may overlap in time.
//!
//! Times are made up (`T0` and offsets from it): a backend must decide on the `now` it
//! is given, never on its own clock. The race checks take two handles that share state
//! (two connections, as two server processes would have) and must be run on a
//! multi-thread runtime to mean anything.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use futures::future::join_all;

use super::{
    Account, AuditInStep, Claim, CodeOutcome, CodeSlot, Counter, FailureOutcome, HelpdeskKind,
    HelpdeskRequest, SealedSecret, StepCheck, StepDecision, StepOutcome, StoreBackend, StoreError,
    StoredCode, Token, TokenSource, TrustedDevice, is_trusted,
};
use crate::audit::Door;
use crate::clock::Timestamp;
use crate::user::UserName;

/// The made-up "now" the checks start from.
pub const T0: Timestamp = Timestamp(1_700_000_000);

fn at(offset: u64) -> Timestamp {
    Timestamp(T0.0 + offset)
}

/// A user name for one check of one run.
pub fn user(tag: &str, what: &str) -> UserName {
    UserName::parse(&format!("{tag}-{what}")).expect("a valid test user name")
}

fn account(n: u8) -> Account {
    Account {
        version: 0,
        totp: Some(SealedSecret {
            nonce: format!("nonce-{n}"),
            ciphertext: format!("ciphertext-{n}"),
        }),
        enrolled_at: Some(at(u64::from(n))),
        totp_pending: None,
        notification_address: Some(format!("user{n}@example.org")),
        created_at: Some(T0),
        tokens: Vec::new(),
    }
}

fn token(name: &str, serial: Option<&str>) -> Token {
    Token {
        name: name.to_string(),
        serial: serial.map(str::to_string),
        secret: SealedSecret {
            nonce: format!("nonce-{name}"),
            ciphertext: format!("ciphertext-{name}"),
        },
        digits: 8,
        period: 60,
        algorithm: otpgate_config::TotpAlgorithm::Sha256,
        source: TokenSource::Pskc,
        added_at: T0,
    }
}

fn code(hash: &str, expires_at: Timestamp) -> StoredCode {
    StoredCode {
        hash: hash.to_string(),
        expires_at,
        payload: Some(format!("payload of {hash}")),
        issued_by: "email".to_string(),
    }
}

fn device(id: &str, key_hash: &str, created: u64, expires: u64) -> TrustedDevice {
    TrustedDevice {
        id: id.to_string(),
        key_hash: key_hash.to_string(),
        door: Door::Portal,
        label: format!("browser {id}"),
        created_at: at(created),
        expires_at: at(expires),
    }
}

/// Every check that needs one handle, in turn.
pub async fn run_all<S: StoreBackend>(store: &S, tag: &str) {
    store.ping().await.expect("ping");
    account_cas(store, tag).await;
    load_sees_everything(store, tag).await;
    totp_steps(store, tag).await;
    failures_and_lock(store, tag).await;
    codes(store, tag).await;
    challenges(store, tag).await;
    trusted_devices(store, tag).await;
    checked_codes(store, tag).await;
    forgotten_steps(store, tag).await;
    token_steps(store, tag).await;
    accounts_with_tokens(store, tag).await;
    pool(store, tag).await;
    helpdesk(store, tag).await;
    audit(store, tag).await;
    login_steps(store, tag).await;
    sessions(store, tag).await;
    counters(store, tag).await;
}

/// Every race check: `a` and `b` must share state.
pub async fn run_races<A: StoreBackend, B: StoreBackend>(a: &A, b: &B, tag: &str) {
    race_totp_step(a, b, &user(tag, "race-step")).await;
    race_consume_code(a, b, &user(tag, "race-code")).await;
    race_save_account(a, b, &user(tag, "race-cas")).await;
    race_record_failure(a, b, &user(tag, "race-fail")).await;
    race_check_code(a, b, &user(tag, "race-check")).await;
    race_save_session(a, b, &user(tag, "race-session")).await;
}

/// Sessions: created once (version 0), saved by version, an idle timeout that slides
/// with each load, deleted.
pub async fn sessions<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "session");
    assert_eq!(store.load_session(&u, "s1", 60, T0).await.unwrap(), None);
    assert_eq!(
        store
            .save_session(&u, "s1", 0, b"one", 60, T0)
            .await
            .unwrap(),
        Some(1),
        "a new session is version 1"
    );
    assert_eq!(
        store
            .save_session(&u, "s1", 0, b"again", 60, T0)
            .await
            .unwrap(),
        None,
        "a live session is not created twice"
    );
    let s = store
        .load_session(&u, "s1", 60, at(50))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.version, s.data.as_slice()), (1, b"one".as_slice()));
    // The load at 50 moved the expiry to 110.
    let s = store.load_session(&u, "s1", 60, at(100)).await.unwrap();
    assert!(s.is_some(), "a load slides the idle timeout");
    assert_eq!(
        store
            .save_session(&u, "s1", 1, b"two", 60, at(100))
            .await
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        store
            .save_session(&u, "s1", 1, b"stale", 60, at(100))
            .await
            .unwrap(),
        None,
        "a save from an old version changes nothing"
    );
    let s = store
        .load_session(&u, "s1", 60, at(101))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s.version, s.data.as_slice()), (2, b"two".as_slice()));
    // Idle past the timeout: gone, and the id may be used afresh.
    assert_eq!(
        store.load_session(&u, "s1", 60, at(161)).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .save_session(&u, "s1", 0, b"new", 60, at(162))
            .await
            .unwrap(),
        Some(1)
    );
    // Another id, another session; delete removes one only.
    assert_eq!(
        store
            .save_session(&u, "s2", 0, b"other", 60, at(162))
            .await
            .unwrap(),
        Some(1)
    );
    store.delete_session(&u, "s1").await.unwrap();
    assert_eq!(
        store.load_session(&u, "s1", 60, at(163)).await.unwrap(),
        None
    );
    assert!(
        store
            .load_session(&u, "s2", 60, at(163))
            .await
            .unwrap()
            .is_some()
    );
    // Another user's session under the same id is another record.
    let other = user(tag, "session-other");
    assert_eq!(
        store.load_session(&other, "s2", 60, at(163)).await.unwrap(),
        None
    );
}

/// Fixed-window counters, per user and global.
pub async fn counters<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "counter");
    let name = format!("{tag}-mail");
    let mine = Counter::User {
        user: &u,
        name: "mail",
    };
    let global = Counter::Global { name: &name };
    for n in 1..=3 {
        assert_eq!(store.count_hit(&mine, 3600, at(n)).await.unwrap(), n);
    }
    assert_eq!(store.count_hit(&global, 3600, T0).await.unwrap(), 1);
    // The window began with the first hit (at 1): at 3601 a new one begins.
    assert_eq!(store.count_hit(&mine, 3600, at(3600)).await.unwrap(), 4);
    assert_eq!(store.count_hit(&mine, 3600, at(3601)).await.unwrap(), 1);
    assert_eq!(store.count_hit(&mine, 3600, at(3602)).await.unwrap(), 2);
    let other = user(tag, "counter-other");
    let theirs = Counter::User {
        user: &other,
        name: "mail",
    };
    assert_eq!(store.count_hit(&theirs, 3600, T0).await.unwrap(), 1);
}

/// 16 concurrent saves of one session version: exactly one wins.
pub async fn race_save_session<A: StoreBackend, B: StoreBackend>(a: &A, b: &B, user: &UserName) {
    assert_eq!(
        a.save_session(user, "race", 0, b"0", 60, T0).await.unwrap(),
        Some(1)
    );
    let results = join_all((0..16u8).map(|i| async move {
        if i % 2 == 0 {
            a.save_session(user, "race", 1, &[i], 60, T0).await
        } else {
            b.save_session(user, "race", 1, &[i], 60, T0).await
        }
    }))
    .await;
    let won = results
        .into_iter()
        .map(Result::unwrap)
        .filter(Option::is_some)
        .count();
    assert_eq!(
        won, 1,
        "exactly one of 16 concurrent saves of version 1 wins"
    );
    let s = a.load_session(user, "race", 60, T0).await.unwrap().unwrap();
    assert_eq!(s.version, 2);
}

/// `save_account` compares versions; a conflict changes nothing.
pub async fn account_cas<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "cas");
    let r = store.load(&u, T0).await.unwrap();
    assert_eq!(r.account, None, "a new user has no account");
    assert_eq!(r.failures, 0, "a new user has no failures");
    assert_eq!(r.locked_until, None, "a new user is not locked");
    assert_eq!(r.last_totp_step, None, "a new user has no TOTP step");

    // The version in the record passed in does not matter; `expected_version` does.
    let mut first = account(1);
    first.version = 99;
    assert!(
        store.save_account(&u, 0, &first).await.unwrap(),
        "the first save (expected 0) succeeds"
    );
    let saved = store.load(&u, T0).await.unwrap().account.unwrap();
    assert_eq!(saved.version, 1, "the first save stores version 1");
    assert_eq!(
        Account {
            version: 0,
            ..saved.clone()
        },
        account(1),
        "the account reads back as saved"
    );

    assert!(
        !store.save_account(&u, 0, &account(2)).await.unwrap(),
        "a second save expecting 0 is a conflict"
    );
    assert!(
        !store.save_account(&u, 7, &account(2)).await.unwrap(),
        "a save expecting a later version is a conflict"
    );
    assert_eq!(
        store.load(&u, T0).await.unwrap().account.unwrap(),
        saved,
        "a conflict changes nothing"
    );

    assert!(
        store.save_account(&u, 1, &account(2)).await.unwrap(),
        "a save expecting the stored version succeeds"
    );
    let second = store.load(&u, T0).await.unwrap().account.unwrap();
    assert_eq!(second.version, 2, "versions increase by one per save");
    assert_eq!(second.totp, account(2).totp, "the second save is stored");
    assert!(
        !store.save_account(&u, 1, &account(3)).await.unwrap(),
        "an old version is a conflict"
    );
}

/// One `load` returns the account, failures, lock and last step together.
pub async fn load_sees_everything<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "load");
    assert!(store.save_account(&u, 0, &account(1)).await.unwrap());
    assert_eq!(
        store.accept_totp_step(&u, 100, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    for _ in 0..3 {
        store.record_failure(&u, T0, 3, 900).await.unwrap();
    }
    let r = store.load(&u, at(1)).await.unwrap();
    assert_eq!(
        r.account.map(|a| a.version),
        Some(1),
        "load sees the account"
    );
    assert_eq!(r.failures, 3, "load sees the failure count");
    assert_eq!(r.locked_until, Some(at(900)), "load sees the lock");
    assert_eq!(r.last_totp_step, Some(100), "load sees the last step");

    let later = store.load(&u, at(900)).await.unwrap();
    assert_eq!(
        later.locked_until, None,
        "a lock whose time has come is not reported"
    );
    assert_eq!(later.failures, 3, "the count stays after the lock ends");
}

/// Each step is accepted once; earlier steps are replays.
pub async fn totp_steps<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "steps");
    let step = 56_666_666;
    assert_eq!(
        store.accept_totp_step(&u, step, T0).await.unwrap(),
        StepOutcome::Accepted,
        "the first step is accepted"
    );
    assert_eq!(
        store.accept_totp_step(&u, step, T0).await.unwrap(),
        StepOutcome::Replay,
        "the same step again is a replay"
    );
    assert_eq!(
        store.accept_totp_step(&u, step - 1, T0).await.unwrap(),
        StepOutcome::Replay,
        "an earlier step is a replay"
    );
    assert_eq!(
        store.accept_totp_step(&u, step + 1, T0).await.unwrap(),
        StepOutcome::Accepted,
        "a later step is accepted"
    );
    assert_eq!(
        store.load(&u, T0).await.unwrap().last_totp_step,
        Some(step + 1)
    );

    // A step far above the last one (larger than a double holds exactly) still compares.
    let big = u64::MAX - 1;
    assert_eq!(
        store.accept_totp_step(&u, big, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    assert_eq!(
        store.accept_totp_step(&u, big - 1, T0).await.unwrap(),
        StepOutcome::Replay,
        "steps compare exactly, not as doubles"
    );
    assert_eq!(
        store.accept_totp_step(&u, u64::MAX, T0).await.unwrap(),
        StepOutcome::Accepted
    );

    // An accepted step resets the failure count.
    let v = user(tag, "steps-reset");
    store.record_failure(&v, T0, 10, 900).await.unwrap();
    store.record_failure(&v, T0, 10, 900).await.unwrap();
    assert_eq!(store.load(&v, T0).await.unwrap().failures, 2);
    assert_eq!(
        store.accept_totp_step(&v, 7, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    assert_eq!(
        store.load(&v, T0).await.unwrap().failures,
        0,
        "an accepted step resets the failures"
    );
}

/// Failures count up and lock at the maximum; the lock ends at its time or when cleared.
pub async fn failures_and_lock<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "lock");
    let one = store.record_failure(&u, T0, 3, 900).await.unwrap();
    assert_eq!((one.failures, one.locked_until), (1, None));
    let two = store.record_failure(&u, T0, 3, 900).await.unwrap();
    assert_eq!((two.failures, two.locked_until), (2, None));
    let three = store.record_failure(&u, T0, 3, 900).await.unwrap();
    assert_eq!(
        (three.failures, three.locked_until),
        (3, Some(at(900))),
        "the failure that reaches the maximum locks until now + lock_for"
    );
    let four = store.record_failure(&u, at(10), 3, 900).await.unwrap();
    assert_eq!(
        (four.failures, four.locked_until),
        (3, Some(at(900))),
        "a failure while locked is not counted; the lock is reported, not extended"
    );

    assert_eq!(
        store.accept_totp_step(&u, 500, at(899)).await.unwrap(),
        StepOutcome::Locked(at(900)),
        "no step is accepted while locked"
    );
    assert_eq!(
        store.load(&u, at(899)).await.unwrap().last_totp_step,
        None,
        "a locked attempt records no step"
    );
    assert_eq!(
        store.load(&u, at(899)).await.unwrap().locked_until,
        Some(at(900))
    );
    assert_eq!(store.load(&u, at(900)).await.unwrap().locked_until, None);
    assert_eq!(
        store.accept_totp_step(&u, 500, at(901)).await.unwrap(),
        StepOutcome::Accepted,
        "the lock ends when now passes it"
    );
    let r = store.load(&u, at(901)).await.unwrap();
    assert_eq!((r.failures, r.locked_until), (0, None));

    // A failure after a lock ended, with the count still at the maximum, locks again.
    let v = user(tag, "relock");
    for _ in 0..2 {
        store.record_failure(&v, T0, 2, 60).await.unwrap();
    }
    let again = store.record_failure(&v, at(60), 2, 60).await.unwrap();
    assert_eq!((again.failures, again.locked_until), (3, Some(at(120))));
    let _ = FailureOutcome {
        failures: 0,
        locked_until: None,
    };

    // clear_failures unlocks.
    let w = user(tag, "unlock");
    for _ in 0..3 {
        store.record_failure(&w, T0, 3, 900).await.unwrap();
    }
    assert!(store.load(&w, T0).await.unwrap().locked_until.is_some());
    store.clear_failures(&w).await.unwrap();
    let r = store.load(&w, T0).await.unwrap();
    assert_eq!(
        (r.failures, r.locked_until),
        (0, None),
        "clear_failures resets the count and the lock"
    );
    assert_eq!(
        store.accept_totp_step(&w, 1, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    store.clear_failures(&w).await.unwrap();
}

/// Codes are single use, replaced by a new one, and expire.
pub async fn codes<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "codes");
    let c = code("hash-1", at(100));
    store.put_code(&u, CodeSlot::Login, &c, T0).await.unwrap();
    assert_eq!(
        store.peek_code(&u, CodeSlot::Login, T0).await.unwrap(),
        Some(c.clone())
    );
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Login, "hash-2", T0)
            .await
            .unwrap(),
        None,
        "a wrong hash consumes nothing"
    );
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Login, "hash-1", T0)
            .await
            .unwrap(),
        Some(c.clone()),
        "the right hash is consumed after a wrong one"
    );
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Login, "hash-1", T0)
            .await
            .unwrap(),
        None,
        "a code is used once"
    );
    assert_eq!(
        store.peek_code(&u, CodeSlot::Login, T0).await.unwrap(),
        None
    );

    // Expiry: valid before expires_at, gone at it.
    store.put_code(&u, CodeSlot::Login, &c, T0).await.unwrap();
    assert!(
        store
            .peek_code(&u, CodeSlot::Login, at(99))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.peek_code(&u, CodeSlot::Login, at(100)).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Login, "hash-1", at(100))
            .await
            .unwrap(),
        None,
        "an expired code is refused"
    );

    // A code that is already expired when put leaves the slot empty.
    store
        .put_code(&u, CodeSlot::Login, &code("hash-old", T0), at(1))
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Login, "hash-old", at(1))
            .await
            .unwrap(),
        None
    );

    // A new code replaces the old one.
    store
        .put_code(&u, CodeSlot::Login, &code("hash-a", at(100)), T0)
        .await
        .unwrap();
    store
        .put_code(&u, CodeSlot::Login, &code("hash-b", at(200)), T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Login, "hash-a", T0)
            .await
            .unwrap(),
        None,
        "the replaced code is gone"
    );
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Login, "hash-b", T0)
            .await
            .unwrap(),
        Some(code("hash-b", at(200)))
    );

    // delete_code empties the slot.
    store.put_code(&u, CodeSlot::Login, &c, T0).await.unwrap();
    store.delete_code(&u, CodeSlot::Login).await.unwrap();
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Login, "hash-1", T0)
            .await
            .unwrap(),
        None,
        "a deleted code is gone"
    );

    // Slots are separate.
    let reset = code("same-hash", at(100));
    store
        .put_code(&u, CodeSlot::Reset, &reset, T0)
        .await
        .unwrap();
    store
        .put_code(&u, CodeSlot::AddressConfirmation, &reset, T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .consume_code(&u, CodeSlot::Reset, "same-hash", T0)
            .await
            .unwrap(),
        Some(reset.clone())
    );
    assert_eq!(
        store
            .peek_code(&u, CodeSlot::AddressConfirmation, T0)
            .await
            .unwrap(),
        Some(reset),
        "consuming one slot leaves the others"
    );
    assert_eq!(
        store.peek_code(&u, CodeSlot::Login, T0).await.unwrap(),
        None
    );

    // Another user's code is not this user's.
    let v = user(tag, "codes-other");
    assert_eq!(
        store
            .consume_code(&v, CodeSlot::AddressConfirmation, "same-hash", T0)
            .await
            .unwrap(),
        None
    );
}

/// Challenge answers are counted; past the maximum, or expired, the challenge is gone.
pub async fn challenges<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "challenge");
    let data = vec![0u8, 255, 10, b'{', b'}', 0x80];
    store.put_challenge(&u, "c1", &data, 60, T0).await.unwrap();
    for n in 1..=3u32 {
        let a = store
            .answer_challenge(&u, "c1", 3, at(1))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("answer {n} of 3 is allowed"));
        assert_eq!(a.data, data, "the challenge data comes back intact");
        assert_eq!(a.answers, n, "answers are counted");
    }
    assert_eq!(
        store.answer_challenge(&u, "c1", 3, at(1)).await.unwrap(),
        None,
        "the 4th answer with a maximum of 3 is refused"
    );
    assert_eq!(
        store.answer_challenge(&u, "c1", 10, at(1)).await.unwrap(),
        None,
        "a challenge answered too often is gone"
    );

    // Expiry.
    store.put_challenge(&u, "c2", b"two", 60, T0).await.unwrap();
    assert!(
        store
            .answer_challenge(&u, "c2", 3, at(59))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.answer_challenge(&u, "c2", 3, at(60)).await.unwrap(),
        None,
        "an expired challenge is refused"
    );

    // delete_challenge; ids are separate; put replaces and resets the count.
    store
        .put_challenge(&u, "c3", b"three", 60, T0)
        .await
        .unwrap();
    store
        .put_challenge(&u, "c4:odd}id", b"four", 60, T0)
        .await
        .unwrap();
    store.delete_challenge(&u, "c3").await.unwrap();
    assert_eq!(
        store.answer_challenge(&u, "c3", 3, T0).await.unwrap(),
        None,
        "a deleted challenge is gone"
    );
    let four = store
        .answer_challenge(&u, "c4:odd}id", 3, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((four.data.as_slice(), four.answers), (&b"four"[..], 1));
    store
        .put_challenge(&u, "c4:odd}id", b"four again", 60, T0)
        .await
        .unwrap();
    let again = store
        .answer_challenge(&u, "c4:odd}id", 3, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.data.as_slice(), again.answers),
        (&b"four again"[..], 1),
        "putting a challenge again replaces it"
    );
    // Empty data is data too.
    store.put_challenge(&u, "c5", b"", 60, T0).await.unwrap();
    let empty = store
        .answer_challenge(&u, "c5", 1, T0)
        .await
        .unwrap()
        .unwrap();
    assert!(empty.data.is_empty());
}

/// Trusted devices: add, list, check, expire, revoke.
pub async fn trusted_devices<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "trusted");
    let week = 7 * 24 * 3600;
    let d1 = device("d1", "key-1", 0, week);
    let d2 = device("d2", "key-2", 10, 20);
    assert!(store.add_trusted(&u, &d2, at(10), 0).await.unwrap());
    assert!(store.add_trusted(&u, &d1, at(10), 0).await.unwrap());
    assert_eq!(
        store.list_trusted(&u, at(15)).await.unwrap(),
        vec![d1.clone(), d2.clone()],
        "devices are listed oldest first"
    );
    assert!(is_trusted(store, &u, "key-1", at(15)).await.unwrap());
    assert!(is_trusted(store, &u, "key-2", at(15)).await.unwrap());
    assert!(
        !is_trusted(store, &u, "key-3", at(15)).await.unwrap(),
        "an unknown device is not trusted"
    );
    assert!(
        !is_trusted(store, &user(tag, "trusted-other"), "key-1", at(15))
            .await
            .unwrap(),
        "another user's device is not trusted"
    );
    assert_eq!(
        store.list_trusted(&u, at(20)).await.unwrap(),
        vec![d1.clone()],
        "an expired device is not listed"
    );
    assert!(
        !is_trusted(store, &u, "key-2", at(20)).await.unwrap(),
        "an expired device is not trusted"
    );

    // Adding by the same id replaces.
    let d1b = TrustedDevice {
        label: "renamed".to_string(),
        ..d1.clone()
    };
    assert!(store.add_trusted(&u, &d1b, at(30), 0).await.unwrap());
    assert_eq!(store.list_trusted(&u, at(30)).await.unwrap(), vec![d1b]);

    assert_eq!(store.revoke_trusted(&u, Some("nope")).await.unwrap(), 0);
    assert_eq!(
        store.revoke_trusted(&u, Some("d1")).await.unwrap(),
        1,
        "revoking one device by id"
    );
    assert!(!is_trusted(store, &u, "key-1", at(30)).await.unwrap());

    store
        .add_trusted(&u, &device("d3", "key-3", 30, week), at(30), 0)
        .await
        .unwrap();
    store
        .add_trusted(&u, &device("d4", "key-4", 31, week), at(31), 0)
        .await
        .unwrap();
    assert_eq!(store.list_trusted(&u, at(32)).await.unwrap().len(), 2);
    assert_eq!(
        store.revoke_trusted(&u, None).await.unwrap(),
        2,
        "revoking all counts them"
    );
    assert!(store.list_trusted(&u, at(32)).await.unwrap().is_empty());
    assert!(!is_trusted(store, &u, "key-3", at(32)).await.unwrap());
    assert_eq!(store.revoke_trusted(&u, None).await.unwrap(), 0);

    // A device is remembered only while the account is the one the login saw.
    let v = user(tag, "trusted-cas");
    assert!(store.save_account(&v, 0, &account(1)).await.unwrap());
    assert!(
        !store
            .add_trusted(&v, &device("d5", "key-5", 40, week), at(40), 0)
            .await
            .unwrap(),
        "a device is not remembered against an older account version"
    );
    assert!(list_is_empty(store, &v, at(40)).await);
    assert!(
        store
            .add_trusted(&v, &device("d5", "key-5", 40, week), at(40), 1)
            .await
            .unwrap()
    );
    assert!(is_trusted(store, &v, "key-5", at(41)).await.unwrap());
}

async fn list_is_empty<S: StoreBackend>(store: &S, u: &UserName, now: Timestamp) -> bool {
    store.list_trusted(u, now).await.unwrap().is_empty()
}

/// The login's code check: the lock, the comparison and the failure count in one step.
pub async fn checked_codes<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "check");
    store
        .put_code(&u, CodeSlot::Login, &code("right", at(600)), T0)
        .await
        .unwrap();
    assert_eq!(
        store
            .check_code(&u, CodeSlot::Login, "wrong", T0, 3, 900)
            .await
            .unwrap(),
        CodeOutcome::Wrong(FailureOutcome {
            failures: 1,
            locked_until: None
        }),
        "a wrong code counts a failure"
    );
    match store
        .check_code(&u, CodeSlot::Login, "right", T0, 3, 900)
        .await
        .unwrap()
    {
        CodeOutcome::Consumed(c) => assert_eq!(c.hash, "right"),
        other => panic!("the right code is consumed: {other:?}"),
    }
    let r = store.load(&u, T0).await.unwrap();
    assert_eq!(r.failures, 0, "a success clears the failure count");
    assert!(matches!(
        store
            .check_code(&u, CodeSlot::Login, "right", T0, 3, 900)
            .await
            .unwrap(),
        CodeOutcome::Wrong(_)
    ));

    // Locked: nothing is compared, the right code stays, nothing is counted.
    let v = user(tag, "check-locked");
    store
        .put_code(
            &v,
            CodeSlot::AddressConfirmation,
            &code("right", at(3600)),
            T0,
        )
        .await
        .unwrap();
    for _ in 0..3 {
        store.record_failure(&v, T0, 3, 900).await.unwrap();
    }
    assert_eq!(
        store
            .check_code(&v, CodeSlot::AddressConfirmation, "right", at(1), 3, 900)
            .await
            .unwrap(),
        CodeOutcome::Locked(at(900)),
        "the right code is refused while locked"
    );
    let r = store.load(&v, at(1)).await.unwrap();
    assert_eq!((r.failures, r.locked_until), (3, Some(at(900))));
    assert!(
        store
            .peek_code(&v, CodeSlot::AddressConfirmation, at(1))
            .await
            .unwrap()
            .is_some(),
        "a locked check leaves the code in place"
    );
    assert!(matches!(
        store
            .check_code(&v, CodeSlot::AddressConfirmation, "right", at(901), 3, 900)
            .await
            .unwrap(),
        CodeOutcome::Consumed(_)
    ));

    // An expired code is never consumed; the attempt counts as a failure.
    let w = user(tag, "check-expired");
    store
        .put_code(&w, CodeSlot::Login, &code("right", at(10)), T0)
        .await
        .unwrap();
    assert!(matches!(
        store
            .check_code(&w, CodeSlot::Login, "right", at(10), 3, 900)
            .await
            .unwrap(),
        CodeOutcome::Wrong(FailureOutcome { failures: 1, .. })
    ));
}

/// After a reset the last step is forgotten: the next app's first code may use it.
pub async fn forgotten_steps<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "forget-step");
    assert_eq!(
        store.accept_totp_step(&u, 100, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    store.forget_totp_step(&u).await.unwrap();
    assert_eq!(store.load(&u, T0).await.unwrap().last_totp_step, None);
    assert_eq!(
        store.accept_totp_step(&u, 100, T0).await.unwrap(),
        StepOutcome::Accepted
    );
}

/// Each token keeps its own last step, apart from the app's: a step used by one token
/// is not a replay for another, a replay of one token is refused, the lock is checked
/// in the same step, a success clears the failures, and a reset forgets them all.
pub async fn token_steps<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "token-steps");
    assert_eq!(
        store.accept_totp_step(&u, 100, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    assert_eq!(
        store.accept_token_step(&u, "hw", 100, T0).await.unwrap(),
        StepOutcome::Accepted,
        "the app's step is not the token's"
    );
    assert_eq!(
        store.accept_token_step(&u, "hw", 100, T0).await.unwrap(),
        StepOutcome::Replay
    );
    assert_eq!(
        store.accept_token_step(&u, "hw", 99, T0).await.unwrap(),
        StepOutcome::Replay
    );
    assert_eq!(
        store.accept_token_step(&u, "other", 50, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    let r = store.load(&u, T0).await.unwrap();
    assert_eq!(r.last_totp_step, Some(100));
    assert_eq!(
        r.token_steps.into_iter().collect::<Vec<_>>(),
        vec![("hw".to_string(), 100), ("other".to_string(), 50)]
    );
    store.record_failure(&u, T0, 2, 60).await.unwrap();
    assert_eq!(
        store.accept_token_step(&u, "hw", 101, T0).await.unwrap(),
        StepOutcome::Accepted
    );
    assert_eq!(
        store.load(&u, T0).await.unwrap().failures,
        0,
        "a success clears"
    );
    store.record_failure(&u, T0, 2, 60).await.unwrap();
    let locked = store.record_failure(&u, T0, 2, 60).await.unwrap();
    assert_eq!(locked.locked_until, Some(at(60)));
    assert_eq!(
        store.accept_token_step(&u, "hw", 200, at(1)).await.unwrap(),
        StepOutcome::Locked(at(60))
    );
    assert_eq!(
        store.load(&u, at(1)).await.unwrap().token_steps.get("hw"),
        Some(&101),
        "a locked user's step is not recorded"
    );
    store.forget_totp_step(&u).await.unwrap();
    let r = store.load(&u, at(61)).await.unwrap();
    assert_eq!(r.last_totp_step, None);
    assert!(
        r.token_steps.is_empty(),
        "a reset forgets every token's step"
    );
}

/// A login's step ([`StoreBackend::accept_step`]): the first of its steps later than
/// the token's last is taken (and named), a replay changes nothing, the named account
/// must be the stored one (another: `Changed`, nothing consumed, the failures kept),
/// the lock comes first, and the accept's audit record is appended in the same step
/// where the backend can — present if the answer says so, absent if not, never with a
/// refusal. Returns whether the backend appended it (its callers say which they expect).
pub async fn login_steps<S: StoreBackend>(store: &S, tag: &str) -> bool {
    let u = user(tag, "login-step");
    assert_eq!(
        store
            .load(&user(tag, "login-step-none"), T0)
            .await
            .unwrap()
            .account_digest,
        None,
        "no account, no digest"
    );
    assert!(store.save_account(&u, 0, &account(1)).await.unwrap());
    let first = store.load(&u, T0).await.unwrap().account_digest.unwrap();
    assert_eq!(first.len(), 40);
    let step = |token, steps, account| take_step(store, &u, token, steps, account, None);
    let accepted = |step| StepDecision::Accepted {
        step,
        audited: false,
    };
    assert_eq!(
        step(None, &[10, 12], &first).await,
        accepted(10),
        "the earliest"
    );
    assert_eq!(
        step(None, &[10, 12], &first).await,
        accepted(12),
        "10 is used"
    );
    assert_eq!(step(None, &[11, 12], &first).await, StepDecision::Replay);
    store.record_failure(&u, T0, 5, 60).await.unwrap();
    let other = "0".repeat(40);
    assert_eq!(step(None, &[13], &other).await, StepDecision::Changed);
    let r = store.load(&u, T0).await.unwrap();
    assert_eq!(
        r.last_totp_step,
        Some(12),
        "a changed account consumes nothing"
    );
    assert_eq!(r.failures, 1, "and clears nothing");
    // Saved again (another secret): the digest read before names another account.
    assert!(store.save_account(&u, 1, &account(2)).await.unwrap());
    let second = store.load(&u, T0).await.unwrap().account_digest.unwrap();
    assert_ne!(second, first);
    assert_eq!(step(None, &[13], &first).await, StepDecision::Changed);
    assert_eq!(step(None, &[13], &second).await, accepted(13));
    assert_eq!(store.load(&u, T0).await.unwrap().failures, 0);
    assert_eq!(step(Some("hw"), &[5], &second).await, accepted(5));
    assert_eq!(step(Some("hw"), &[5], &second).await, StepDecision::Replay);
    let r = store.load(&u, T0).await.unwrap();
    assert_eq!(
        (r.last_totp_step, r.token_steps.get("hw")),
        (Some(13), Some(&5))
    );
    // The lock first, whatever the account.
    store.record_failure(&u, T0, 2, 60).await.unwrap();
    store.record_failure(&u, T0, 2, 60).await.unwrap();
    assert_eq!(
        step(None, &[14], &other).await,
        StepDecision::Locked(at(60))
    );
    assert_eq!(
        step(None, &[14], &second).await,
        StepDecision::Locked(at(60))
    );
    store.clear_failures(&u).await.unwrap();

    // The audit record, with an accept and never with a refusal. Its time is before
    // the `audit` check's, so runs on one store do not see each other's records.
    let when = at(500_000);
    let line = |n: &str| format!(r#"{{"tag":"{tag}","step":"{n}"}}"#);
    let (replayed, fifteen) = (line("replayed"), line("15"));
    let audit = |record| AuditInStep {
        at: when,
        record,
        keep: 1000,
    };
    assert_eq!(
        take_step(store, &u, None, &[13], &second, Some(audit(&replayed))).await,
        StepDecision::Replay
    );
    let StepDecision::Accepted { step: 15, audited } =
        take_step(store, &u, None, &[15], &second, Some(audit(&fifteen))).await
    else {
        panic!("step 15 was not accepted");
    };
    let read = store.read_audit(when, 100).await.unwrap();
    let times = |record: &String| read.iter().filter(|r| *r == record).count();
    assert_eq!(
        times(&fifteen),
        usize::from(audited),
        "appended once if the answer says so, else not at all"
    );
    assert_eq!(times(&replayed), 0, "a refused step appends nothing");
    audited
}

async fn take_step<S: StoreBackend>(
    store: &S,
    u: &UserName,
    token: Option<&str>,
    steps: &[u64],
    account: &str,
    audit: Option<AuditInStep<'_>>,
) -> StepDecision {
    let check = StepCheck {
        token,
        steps,
        account: Some(account),
        audit,
        now: T0,
    };
    store.accept_step(u, &check).await.unwrap()
}

/// An account with tokens reads back as saved.
pub async fn accounts_with_tokens<S: StoreBackend>(store: &S, tag: &str) {
    let u = user(tag, "tokens");
    let mut a = account(1);
    a.tokens = vec![token("phone", None), token("hw-1", Some("hw-1"))];
    assert!(store.save_account(&u, 0, &a).await.unwrap());
    let saved = store.load(&u, T0).await.unwrap().account.unwrap();
    assert_eq!(
        Account {
            version: 0,
            ..saved
        },
        a
    );
}

/// The hardware-token pool: added once per serial, claimed by one user only, released
/// only by its user, removed.
pub async fn pool<S: StoreBackend>(store: &S, tag: &str) {
    let alice = user(tag, "pool-alice");
    let bob = user(tag, "pool-bob");
    let s1 = format!("{tag}-serial-1");
    let s2 = format!("{tag}-serial-2");
    let t1 = token(&s1, Some(&s1));
    let t2 = token(&s2, Some(&s2));
    assert!(store.pool_add(&t1, &s1, None).await.unwrap());
    assert!(
        !store.pool_add(&t2, &s1, Some(&bob)).await.unwrap(),
        "a serial is added once"
    );
    assert!(store.pool_add(&t2, &s2, Some(&bob)).await.unwrap());
    let e1 = store.pool_get(&s1).await.unwrap().unwrap();
    assert_eq!((e1.token, e1.assigned_to), (t1.clone(), None));
    let e2 = store.pool_get(&s2).await.unwrap().unwrap();
    assert_eq!(e2.assigned_to, Some(bob.clone()));
    assert_eq!(store.pool_get("no-such-serial").await.unwrap(), None);
    let ours: Vec<_> = store
        .pool_list()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.token.name.starts_with(&format!("{tag}-serial-")))
        .map(|e| (e.token.name, e.assigned_to))
        .collect();
    assert_eq!(
        ours,
        vec![(s1.clone(), None), (s2.clone(), Some(bob.clone()))]
    );

    assert_eq!(
        store.pool_claim(&s1, &alice).await.unwrap(),
        Claim::Claimed(t1.clone())
    );
    assert_eq!(
        store.pool_claim(&s1, &bob).await.unwrap(),
        Claim::AssignedTo(alice.clone()),
        "a serial assigned is not claimed again"
    );
    assert_eq!(
        store.pool_claim("no-such-serial", &bob).await.unwrap(),
        Claim::Unknown
    );
    assert!(
        !store.pool_release(&s1, &bob).await.unwrap(),
        "only its user releases it"
    );
    assert!(store.pool_release(&s1, &alice).await.unwrap());
    assert_eq!(
        store.pool_get(&s1).await.unwrap().unwrap().assigned_to,
        None
    );
    assert_eq!(
        store.pool_claim(&s1, &bob).await.unwrap(),
        Claim::Claimed(t1),
        "released, it can be assigned again"
    );
    assert!(store.pool_remove(&s1).await.unwrap());
    assert!(store.pool_remove(&s2).await.unwrap());
    assert!(!store.pool_remove(&s2).await.unwrap());
    assert_eq!(store.pool_get(&s1).await.unwrap(), None);
}

/// Writes an account record as a backend stores it, byte for byte (test hook; see
/// [`old_account_records`]).
#[allow(async_fn_in_trait)]
pub trait WriteRawAccount {
    /// Stores `json` as the user's account at `version`.
    async fn write_raw_account(&self, user: &UserName, version: u64, json: &str);
}

/// An account written before tokens existed (no `tokens` field) reads as the enrolled
/// app alone, and saving it again keeps every field.
pub async fn old_account_records<S: StoreBackend + WriteRawAccount>(store: &S, tag: &str) {
    let u = user(tag, "old-account");
    let old = r#"{"version":3,"totp":{"nonce":"bm9uY2U=","ciphertext":"c2VhbGVk"},"enrolled_at":1700000000,"totp_pending":null,"notification_address":"old@example.org","created_at":1690000000}"#;
    store.write_raw_account(&u, 3, old).await;
    let read = store.load(&u, T0).await.unwrap().account.unwrap();
    assert_eq!(read.version, 3);
    assert_eq!(read.totp.as_ref().unwrap().ciphertext, "c2VhbGVk");
    assert_eq!(
        read.notification_address.as_deref(),
        Some("old@example.org")
    );
    assert!(read.tokens.is_empty());
    assert!(store.save_account(&u, 3, &read).await.unwrap());
    let again = store.load(&u, T0).await.unwrap().account.unwrap();
    assert_eq!(
        Account {
            version: 3,
            ..again
        },
        read
    );
}

/// Writes an undecodable trusted-device record for a user, the way each backend
/// stores them (test hook; see [`corrupt_trusted_records`]).
#[allow(async_fn_in_trait)]
pub trait CorruptTrusted {
    /// Adds a record that cannot be decoded beside the user's devices.
    async fn corrupt_trusted(&self, user: &UserName);
}

/// Both backends treat an undecodable trusted-device record alike: skipped, never an
/// error and never trusted; the other devices stay trusted; revoking all removes it.
pub async fn corrupt_trusted_records<S: StoreBackend + CorruptTrusted>(store: &S, tag: &str) {
    let u = user(tag, "trusted-corrupt");
    let good = device("good", "key-good", 0, 7 * 86_400);
    assert!(store.add_trusted(&u, &good, T0, 0).await.unwrap());
    store.corrupt_trusted(&u).await;
    assert_eq!(
        store.list_trusted(&u, at(1)).await.unwrap(),
        vec![good.clone()],
        "the undecodable record is skipped"
    );
    assert!(is_trusted(store, &u, "key-good", at(1)).await.unwrap());
    let second = device("second", "key-second", 2, 7 * 86_400);
    assert!(store.add_trusted(&u, &second, at(2), 0).await.unwrap());
    assert_eq!(store.list_trusted(&u, at(3)).await.unwrap().len(), 2);
    store.revoke_trusted(&u, None).await.unwrap();
    assert!(store.list_trusted(&u, at(3)).await.unwrap().is_empty());
    store.corrupt_trusted(&u).await;
    assert!(store.list_trusted(&u, at(3)).await.unwrap().is_empty());
    assert_eq!(
        store.revoke_trusted(&u, None).await.unwrap(),
        1,
        "revoking all removes (and counts) an undecodable record too"
    );
    assert_eq!(store.revoke_trusted(&u, None).await.unwrap(), 0);
}

fn ours(tag: &str, list: Vec<HelpdeskRequest>) -> Vec<HelpdeskRequest> {
    let start = format!("{tag}-hd-");
    list.into_iter()
        .filter(|r| r.user.as_str().starts_with(&start))
        .collect()
}

/// The helpdesk queue: one request per user, oldest first, expiring.
pub async fn helpdesk<S: StoreBackend>(store: &S, tag: &str) {
    let a = user(tag, "hd-a");
    let b = user(tag, "hd-b");
    let request =
        |u: &UserName, kind: HelpdeskKind, requested: u64, expires: u64| HelpdeskRequest {
            user: u.clone(),
            kind,
            via: "radius vpn".to_string(),
            requested_at: at(requested),
            expires_at: at(expires),
        };
    store
        .enqueue_helpdesk(&request(&a, HelpdeskKind::LoginCode, 0, 100))
        .await
        .unwrap();
    store
        .enqueue_helpdesk(&request(&b, HelpdeskKind::LoginCode, 5, 50))
        .await
        .unwrap();
    let a2 = request(&a, HelpdeskKind::Reset, 10, 200);
    store.enqueue_helpdesk(&a2).await.unwrap();
    assert_eq!(
        ours(tag, store.list_helpdesk(at(20)).await.unwrap()),
        vec![request(&b, HelpdeskKind::LoginCode, 5, 50), a2.clone()],
        "one request per user (the latest), oldest first"
    );
    assert_eq!(
        ours(tag, store.list_helpdesk(at(50)).await.unwrap()),
        vec![a2.clone()],
        "expired requests are not listed"
    );
    assert!(
        store.remove_helpdesk(&a).await.unwrap(),
        "removing a request"
    );
    assert!(
        !store.remove_helpdesk(&a).await.unwrap(),
        "removing it again finds none"
    );
    assert!(ours(tag, store.list_helpdesk(at(50)).await.unwrap()).is_empty());
}

/// The audit log: appended, read from a time, limited, trimmed.
pub async fn audit<S: StoreBackend>(store: &S, tag: &str) {
    let base = at(1_000_000);
    let rec = |n: &str| format!(r#"{{"tag":"{tag}","n":"{n}"}}"#);
    let plus = |s: u64| Timestamp(base.0 + s);
    store.append_audit(base, &rec("m"), 1000).await.unwrap();
    store.append_audit(plus(1), &rec("z"), 1000).await.unwrap();
    // Same second, appended later, sorts before "z" as text: order must be kept.
    store.append_audit(plus(1), &rec("a"), 1000).await.unwrap();
    store.append_audit(plus(2), &rec("b"), 1000).await.unwrap();

    assert_eq!(
        store.read_audit(base, 10).await.unwrap(),
        vec![rec("m"), rec("z"), rec("a"), rec("b")],
        "records come back oldest first, in the order they came"
    );
    assert_eq!(
        store.read_audit(plus(1), 10).await.unwrap(),
        vec![rec("z"), rec("a"), rec("b")],
        "records at or after `since`"
    );
    assert_eq!(
        store.read_audit(base, 2).await.unwrap(),
        vec![rec("m"), rec("z")],
        "at most `limit`, the oldest"
    );
    assert!(store.read_audit(base, 0).await.unwrap().is_empty());
    assert!(store.read_audit(plus(3), 10).await.unwrap().is_empty());

    store
        .append_audit(plus(1001), &rec("late"), 1000)
        .await
        .unwrap();
    assert_eq!(
        store.read_audit(base, 10).await.unwrap(),
        vec![rec("z"), rec("a"), rec("b"), rec("late")],
        "records older than at - keep are dropped"
    );

    // A batch: in one round trip, in the order given, after what came before; the
    // trim follows the batch's latest time.
    store.append_audits(&[], 1000).await.unwrap();
    let (x, y, w) = (rec("x"), rec("y"), rec("w"));
    store
        .append_audits(
            &[(plus(1002), &x), (plus(1002), &y), (plus(1003), &w)],
            1000,
        )
        .await
        .unwrap();
    assert_eq!(
        store.read_audit(base, 10).await.unwrap(),
        vec![rec("late"), x.clone(), y.clone(), w.clone()],
        "a batch keeps its order, after earlier records, and trims before at - keep"
    );
    store
        .append_audit(plus(1003), &rec("after"), 1000)
        .await
        .unwrap();
    assert_eq!(
        store.read_audit(plus(1003), 10).await.unwrap(),
        vec![w, rec("after")],
        "the sequence goes on after a batch"
    );
}

/// 16 concurrent `accept_totp_step` of one step, 8 through each handle: exactly one is
/// accepted.
pub async fn race_totp_step<A: StoreBackend, B: StoreBackend>(a: &A, b: &B, user: &UserName) {
    let step = 56_700_000;
    let results = join_all((0..16).map(|i| async move {
        if i % 2 == 0 {
            a.accept_totp_step(user, step, T0).await
        } else {
            b.accept_totp_step(user, step, T0).await
        }
    }))
    .await;
    let outcomes: Vec<StepOutcome> = results.into_iter().map(Result::unwrap).collect();
    let accepted = outcomes
        .iter()
        .filter(|o| **o == StepOutcome::Accepted)
        .count();
    assert_eq!(
        accepted, 1,
        "exactly one of 16 concurrent uses of a step is accepted: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, StepOutcome::Accepted | StepOutcome::Replay)),
        "the others are replays: {outcomes:?}"
    );
}

/// 16 concurrent consumes of one code, 8 through each handle: exactly one gets it.
pub async fn race_consume_code<A: StoreBackend, B: StoreBackend>(a: &A, b: &B, user: &UserName) {
    let c = code("race-hash", at(600));
    a.put_code(user, CodeSlot::Login, &c, T0).await.unwrap();
    let results = join_all((0..16).map(|i| async move {
        if i % 2 == 0 {
            a.consume_code(user, CodeSlot::Login, "race-hash", T0).await
        } else {
            b.consume_code(user, CodeSlot::Login, "race-hash", T0).await
        }
    }))
    .await;
    let got: Vec<Option<StoredCode>> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        got.iter().filter(|g| g.is_some()).count(),
        1,
        "exactly one of 16 concurrent consumes of a code succeeds"
    );
}

/// 16 concurrent first saves of an account: exactly one wins.
pub async fn race_save_account<A: StoreBackend, B: StoreBackend>(a: &A, b: &B, user: &UserName) {
    let results = join_all((0..16u8).map(|i| async move {
        if i % 2 == 0 {
            a.save_account(user, 0, &account(i)).await
        } else {
            b.save_account(user, 0, &account(i)).await
        }
    }))
    .await;
    let saved: Vec<bool> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        saved.iter().filter(|s| **s).count(),
        1,
        "exactly one of 16 concurrent saves of version 0 wins"
    );
    let stored = a.load(user, T0).await.unwrap().account.unwrap();
    assert_eq!(stored.version, 1);
}

/// 16 concurrent failures are counted up to the maximum, which locks; the rest meet the
/// lock and are not counted.
pub async fn race_record_failure<A: StoreBackend, B: StoreBackend>(a: &A, b: &B, user: &UserName) {
    let results = join_all((0..16).map(|i| async move {
        if i % 2 == 0 {
            a.record_failure(user, T0, 10, 900).await
        } else {
            b.record_failure(user, T0, 10, 900).await
        }
    }))
    .await;
    let mut counts: Vec<u32> = results
        .into_iter()
        .map(|r| {
            let o = r.unwrap();
            assert_eq!(
                o.locked_until.is_some(),
                o.failures >= 10,
                "locked exactly from the 10th failure on: {o:?}"
            );
            o.failures
        })
        .collect();
    counts.sort_unstable();
    let mut expected: Vec<u32> = (1..=10).collect();
    expected.extend([10; 6]);
    assert_eq!(
        counts, expected,
        "no failure is lost, and none is counted once the lock is set"
    );
    assert_eq!(a.load(user, T0).await.unwrap().failures, 10);
}

/// 64 concurrent wrong guesses of a mailed code, half through each handle: at most
/// `max_failures` are compared; the rest meet the lock, and the right code is refused.
pub async fn race_check_code<A: StoreBackend, B: StoreBackend>(a: &A, b: &B, user: &UserName) {
    a.put_code(user, CodeSlot::Login, &code("right", at(600)), T0)
        .await
        .unwrap();
    let results = join_all((0..64).map(|i| async move {
        if i % 2 == 0 {
            a.check_code(user, CodeSlot::Login, &format!("wrong-{i}"), T0, 5, 900)
                .await
        } else {
            b.check_code(user, CodeSlot::Login, &format!("wrong-{i}"), T0, 5, 900)
                .await
        }
    }))
    .await;
    let outcomes: Vec<CodeOutcome> = results.into_iter().map(Result::unwrap).collect();
    let compared = outcomes
        .iter()
        .filter(|o| matches!(o, CodeOutcome::Wrong(_)))
        .count();
    assert_eq!(compared, 5, "exactly max_failures guesses are compared");
    assert_eq!(a.load(user, T0).await.unwrap().failures, 5);
    assert!(matches!(
        b.check_code(user, CodeSlot::Login, "right", T0, 5, 900)
            .await
            .unwrap(),
        CodeOutcome::Locked(_)
    ));
}

/// With the store down, every operation ends within `bound` in
/// [`StoreError::Unavailable`]: never a success, never a hang.
pub async fn all_unavailable<S: StoreBackend>(store: &S, tag: &str, bound: Duration) {
    let u = user(tag, "down");
    macro_rules! down {
        ($name:literal, $call:expr) => {
            match tokio::time::timeout(bound, $call).await {
                Ok(Err(StoreError::Unavailable(_))) => {}
                Ok(Err(e)) => panic!("{}: expected Unavailable, got {e:?}", $name),
                Ok(Ok(v)) => panic!("{}: succeeded while the store is down: {v:?}", $name),
                Err(_) => panic!("{}: no answer within {bound:?}", $name),
            }
        };
    }
    down!("ping", store.ping());
    down!("load", store.load(&u, T0));
    down!("save_account", store.save_account(&u, 0, &account(1)));
    down!("accept_totp_step", store.accept_totp_step(&u, 1, T0));
    down!("record_failure", store.record_failure(&u, T0, 3, 60));
    down!("clear_failures", store.clear_failures(&u));
    let c = code("h", at(60));
    down!("put_code", store.put_code(&u, CodeSlot::Login, &c, T0));
    down!(
        "consume_code",
        store.consume_code(&u, CodeSlot::Login, "h", T0)
    );
    down!("delete_code", store.delete_code(&u, CodeSlot::Login));
    down!("peek_code", store.peek_code(&u, CodeSlot::Login, T0));
    down!("put_challenge", store.put_challenge(&u, "c", b"x", 60, T0));
    down!("answer_challenge", store.answer_challenge(&u, "c", 3, T0));
    down!("delete_challenge", store.delete_challenge(&u, "c"));
    let d = device("d", "k", 0, 60);
    down!("add_trusted", store.add_trusted(&u, &d, T0, 0));
    down!("list_trusted", store.list_trusted(&u, T0));
    down!(
        "check_code",
        store.check_code(&u, CodeSlot::Login, "h", T0, 3, 60)
    );
    down!("forget_totp_step", store.forget_totp_step(&u));
    down!("revoke_trusted", store.revoke_trusted(&u, None));
    let r = HelpdeskRequest {
        user: u.clone(),
        kind: HelpdeskKind::LoginCode,
        via: "portal".to_string(),
        requested_at: T0,
        expires_at: at(60),
    };
    down!("enqueue_helpdesk", store.enqueue_helpdesk(&r));
    down!("list_helpdesk", store.list_helpdesk(T0));
    down!("remove_helpdesk", store.remove_helpdesk(&u));
    down!("append_audit", store.append_audit(T0, "{}", 60));
    down!("read_audit", store.read_audit(T0, 10));
    down!("load_session", store.load_session(&u, "s", 60, T0));
    down!("save_session", store.save_session(&u, "s", 0, b"x", 60, T0));
    down!("delete_session", store.delete_session(&u, "s"));
    let c = Counter::User {
        user: &u,
        name: "mail",
    };
    down!("count_hit", store.count_hit(&c, 60, T0));
}
