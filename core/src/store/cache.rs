//! The records logins read, kept so that a login that brings its code reads nothing.
//!
//! A login with a code needs the user's tokens (their sealed secrets and parameters)
//! before the store's step; the step itself checks the lock, the replay and the failure
//! count. So the flow keeps each enrolled user's record as it last read it, with the
//! stored account's digest ([`UserRecord::account_digest`]), and the step names that
//! digest ([`StepCheck::account`](super::StepCheck::account)): if the stored account is
//! another — a reset, a token removed or added, on this instance or another, or a store
//! restored from a backup — the step changes nothing and the flow reads again. So
//! nothing the cache holds can let a code in that the store would not.
//!
//! # What may be old, and what is never used old
//!
//! - The lock and the failure count are not kept: a login without a code (asked for
//!   one, a trusted device, a user without a factor) reads the record first.
//! - The last accepted steps are kept as this instance last saw them (updated by its
//!   own accepts). They only order the append-mode split, which needs no store: a code
//!   another instance accepted may be taken as unused there, and is then refused as a
//!   replay by the step, as it must be.
//!
//! # Bounds
//!
//! Memory is bounded by weight (the bytes of the record's strings plus a fixed
//! overhead): past [`MAX_WEIGHT`] the least recently used records go first.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use super::{SealedSecret, UserRecord};
use crate::user::UserName;

/// At most this many bytes of records (about 30 000 users with an app, a few tokens
/// and an address).
pub const MAX_WEIGHT: usize = 16 * 1024 * 1024;

/// Bytes counted for a record besides its strings (the map's node, the name key, the
/// record's fixed fields).
const OVERHEAD: usize = 320;

/// Records by user name, least recently used first out.
pub struct RecordCache {
    max_weight: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    records: LruCache<UserName, Kept>,
    /// The sum of the weights of `records`.
    weight: usize,
}

struct Kept {
    record: Arc<UserRecord>,
    weight: usize,
}

/// What a record costs to keep.
fn weight_of(user: &UserName, record: &UserRecord) -> usize {
    let account = record.account.as_ref().map_or(0, |a| {
        let sealed = |s: &SealedSecret| s.nonce.len() + s.ciphertext.len();
        a.totp.as_ref().map_or(0, sealed)
            + a.totp_pending.as_ref().map_or(0, sealed)
            + a.notification_address.as_ref().map_or(0, String::len)
            + a.tokens
                .iter()
                .map(|t| {
                    sealed(&t.secret)
                        + t.name.len()
                        + t.serial.as_ref().map_or(0, String::len)
                        + std::mem::size_of::<crate::store::Token>()
                })
                .sum::<usize>()
    });
    OVERHEAD
        + user.as_str().len()
        + account
        + record.account_digest.as_ref().map_or(0, String::len)
        + record
            .token_steps
            .keys()
            .map(|k| k.len() + 32)
            .sum::<usize>()
}

impl Default for RecordCache {
    fn default() -> Self {
        Self::with_max_weight(MAX_WEIGHT)
    }
}

impl RecordCache {
    fn with_max_weight(max_weight: usize) -> Self {
        Self {
            max_weight,
            inner: Mutex::new(Inner {
                records: LruCache::unbounded(),
                weight: 0,
            }),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // The map is consistent after every statement; a panic elsewhere cannot leave
        // it half-changed.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The record last read for `user`: its account and digest, and the last steps
    /// as this instance knows them; no lock and no failure count.
    pub fn get(&self, user: &UserName) -> Option<Arc<UserRecord>> {
        self.inner()
            .records
            .get(user)
            .map(|k| Arc::clone(&k.record))
    }

    /// Keeps what was just read for `user`, if it has an account with a digest (an
    /// unenrolled user is read each time: there is no step to check it by).
    pub fn put(&self, user: &UserName, record: &UserRecord) {
        if record.account.is_none() || record.account_digest.is_none() {
            self.forget(user);
            return;
        }
        let kept = UserRecord {
            failures: 0,
            locked_until: None,
            ..record.clone()
        };
        self.keep(user, kept);
    }

    fn keep(&self, user: &UserName, record: UserRecord) {
        let weight = weight_of(user, &record);
        let mut inner = self.inner();
        if weight > self.max_weight {
            inner.remove(user);
            return;
        }
        let kept = Kept {
            record: Arc::new(record),
            weight,
        };
        if let Some(old) = inner.records.put(user.clone(), kept) {
            inner.weight -= old.weight;
        }
        inner.weight += weight;
        while inner.weight > self.max_weight {
            match inner.records.pop_lru() {
                Some((_, old)) => inner.weight -= old.weight,
                None => break,
            }
        }
    }

    /// Notes a step this instance just accepted for `token` (`None`: the app) of the
    /// account with `digest`; a record of another account is left alone.
    pub fn accepted(&self, user: &UserName, digest: &str, token: Option<&str>, step: u64) {
        let mut inner = self.inner();
        let Some(kept) = inner.records.get_mut(user) else {
            return;
        };
        if kept.record.account_digest.as_deref() != Some(digest) {
            return;
        }
        let record = Arc::make_mut(&mut kept.record);
        match token {
            None => record.last_totp_step = Some(step),
            Some(name) => {
                if let Some(last) = record.token_steps.get_mut(name) {
                    *last = step;
                } else {
                    drop(inner);
                    // A token's first step: its name adds weight.
                    if let Some(mut record) = self.get(user).map(|r| (*r).clone()) {
                        record.token_steps.insert(name.to_string(), step);
                        self.keep(user, record);
                    }
                }
            }
        }
    }

    /// Forgets `user`.
    pub fn forget(&self, user: &UserName) {
        self.inner().remove(user);
    }

    /// How many records are kept.
    pub fn len(&self) -> usize {
        self.inner().records.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn remove(&mut self, user: &UserName) {
        if let Some(old) = self.records.pop(user) {
            self.weight -= old.weight;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::store::Account;

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    fn record(digest: &str) -> UserRecord {
        UserRecord {
            account: Some(Account {
                version: 1,
                totp: Some(SealedSecret {
                    nonce: "n".repeat(16),
                    ciphertext: "c".repeat(60),
                }),
                ..Account::default()
            }),
            failures: 3,
            locked_until: Some(Timestamp(99)),
            last_totp_step: Some(10),
            token_steps: Default::default(),
            account_digest: Some(digest.to_string()),
        }
    }

    #[test]
    fn a_record_is_kept_without_its_lock_and_failures() {
        let cache = RecordCache::default();
        let alice = user("alice");
        cache.put(&alice, &record("d1"));
        let kept = cache.get(&alice).unwrap();
        assert_eq!(kept.failures, 0);
        assert_eq!(kept.locked_until, None);
        assert_eq!(kept.last_totp_step, Some(10));
        assert_eq!(kept.account_digest.as_deref(), Some("d1"));
    }

    #[test]
    fn an_unenrolled_or_undigested_record_is_not_kept_and_drops_the_old_one() {
        let cache = RecordCache::default();
        let alice = user("alice");
        cache.put(&alice, &record("d1"));
        cache.put(&alice, &UserRecord::default());
        assert!(cache.get(&alice).is_none());
        cache.put(&alice, &record("d1"));
        let mut no_digest = record("d1");
        no_digest.account_digest = None;
        cache.put(&alice, &no_digest);
        assert!(cache.get(&alice).is_none());
    }

    #[test]
    fn accepted_steps_update_only_the_same_account() {
        let cache = RecordCache::default();
        let alice = user("alice");
        cache.put(&alice, &record("d1"));
        let before = cache.get(&alice).unwrap();
        cache.accepted(&alice, "d1", None, 11);
        cache.accepted(&alice, "d1", Some("hw"), 5);
        cache.accepted(&alice, "d2", None, 50);
        let after = cache.get(&alice).unwrap();
        assert_eq!(after.last_totp_step, Some(11));
        assert_eq!(after.token_steps.get("hw"), Some(&5));
        // A reader holding the old record keeps it whole.
        assert_eq!(before.last_totp_step, Some(10));
        cache.accepted(&alice, "d1", Some("hw"), 6);
        assert_eq!(cache.get(&alice).unwrap().token_steps.get("hw"), Some(&6));
    }

    #[test]
    fn the_weight_is_bounded_least_recently_used_first_out() {
        let one = weight_of(&user("u000"), &record("d"));
        let cache = RecordCache::with_max_weight(one * 10);
        for i in 0..10 {
            cache.put(&user(&format!("u{i:03}")), &record("d"));
        }
        assert_eq!(cache.len(), 10);
        assert!(cache.get(&user("u000")).is_some());
        cache.put(&user("u010"), &record("d"));
        assert_eq!(cache.len(), 10);
        assert!(cache.get(&user("u001")).is_none());
        assert!(cache.get(&user("u000")).is_some());
        assert!(cache.inner().weight <= one * 10);
        cache.forget(&user("u000"));
        assert!(cache.get(&user("u000")).is_none());
        assert_eq!(cache.len(), 9);
    }
}
