//! The directory entry cache: a user's search result, reused for `[directory]
//! cache_for`.
//!
//! # What is kept, and what is never kept
//!
//! Kept: the [`UserEntry`] a search found — the DN, whether it matched
//! `activated_filter`, the groups, the mail address and the display name — keyed by the
//! canonical user name, until `cache_for` after the search. Never kept: a password or
//! the outcome of a bind (every password check binds), an unknown name (a user created
//! in the directory can log in at once), and an entry the directory refused a bind for
//! (it is dropped, so a renamed entry is searched for again).
//!
//! So for at most `cache_for` after the search a login may see an **old activation**
//! (a deactivated user still logs in, an activated one is still refused by `lookup`
//! callers), **old groups** (RADIUS reply attributes, the portal's admin role) and an
//! **old mail address**. A changed password, a password-policy lock and a deleted entry
//! take effect at once, because the bind is never cached.
//!
//! # Bounds
//!
//! Memory is bounded by weight (the bytes of the strings an entry holds, plus a fixed
//! overhead): past [`MAX_WEIGHT`] the least recently used entries go first. Expired
//! entries are dropped when met, and count toward the bound until then.
//!
//! Time is passed in (whole seconds, like the rest of the core), so an entry lives
//! between `cache_for - 1` and `cache_for` seconds.

use std::sync::Mutex;

use lru::LruCache;

use super::UserEntry;
use crate::clock::Timestamp;
use crate::user::UserName;

/// At most this many bytes of entries (about 40 000 entries of a DN, a mail address,
/// a display name and a few groups).
pub const MAX_WEIGHT: usize = 16 * 1024 * 1024;

/// Bytes counted for an entry besides its strings (the map's node, the name key, the
/// vectors' headers).
const OVERHEAD: usize = 256;

/// Entries by user name, least recently used first out.
pub struct EntryCache {
    /// Seconds an entry is reused for; never zero (no cache is `None` in the owner).
    ttl: u64,
    /// The most weight kept.
    max_weight: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<UserName, Cached>,
    /// The sum of the weights of `entries`.
    weight: usize,
}

struct Cached {
    entry: UserEntry,
    /// Reused while `now` is before this.
    until: Timestamp,
    weight: usize,
}

/// What an entry costs to keep.
fn weight_of(entry: &UserEntry) -> usize {
    OVERHEAD
        + entry.name.as_str().len() * 2
        + entry.dn.len()
        + entry.mail.as_ref().map_or(0, String::len)
        + entry.display_name.as_ref().map_or(0, String::len)
        + entry
            .groups
            .iter()
            .map(|g| g.len() + std::mem::size_of::<String>())
            .sum::<usize>()
}

impl EntryCache {
    /// A cache reusing entries for `ttl`, or `None` when `ttl` is under a second (off).
    pub fn new(ttl: std::time::Duration) -> Option<EntryCache> {
        Self::with_max_weight(ttl, MAX_WEIGHT)
    }

    fn with_max_weight(ttl: std::time::Duration, max_weight: usize) -> Option<EntryCache> {
        let ttl = ttl.as_secs();
        (ttl > 0).then(|| EntryCache {
            ttl,
            max_weight,
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                weight: 0,
            }),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map is consistent after every statement; a panic elsewhere cannot leave
        // it half-changed.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The entry found for `user` less than `cache_for` ago.
    pub fn get(&self, user: &UserName, now: Timestamp) -> Option<UserEntry> {
        let mut inner = self.inner();
        match inner.entries.get(user) {
            Some(c) if now < c.until => return Some(c.entry.clone()),
            Some(_) => {}
            None => return None,
        }
        inner.remove(user);
        None
    }

    /// Keeps what a search found for `user` just now.
    pub fn put(&self, user: &UserName, entry: &UserEntry, now: Timestamp) {
        let weight = weight_of(entry);
        if weight > self.max_weight {
            return;
        }
        let cached = Cached {
            entry: entry.clone(),
            until: Timestamp(now.0.saturating_add(self.ttl)),
            weight,
        };
        let mut inner = self.inner();
        if let Some(old) = inner.entries.put(user.clone(), cached) {
            inner.weight -= old.weight;
        }
        inner.weight += weight;
        while inner.weight > self.max_weight {
            match inner.entries.pop_lru() {
                Some((_, old)) => inner.weight -= old.weight,
                None => break,
            }
        }
    }

    /// Forgets `user` (a bind was refused: the entry may have moved).
    pub fn forget(&self, user: &UserName) {
        self.inner().remove(user);
    }

    /// How many entries are kept (expired ones included until met).
    pub fn len(&self) -> usize {
        self.inner().entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn remove(&mut self, user: &UserName) {
        if let Some(old) = self.entries.pop(user) {
            self.weight -= old.weight;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::time::Duration;

    fn entry(name: &str, groups: usize) -> UserEntry {
        UserEntry {
            name: UserName::parse(name).unwrap(),
            dn: format!("uid={name},ou=people,dc=example,dc=org"),
            activated: true,
            mail: Some(format!("{name}@example.org")),
            groups: (0..groups).map(|i| format!("cn=g{i},dc=example")).collect(),
            display_name: None,
        }
    }

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    #[test]
    fn zero_is_off() {
        assert!(EntryCache::new(Duration::ZERO).is_none());
        assert!(EntryCache::new(Duration::from_millis(900)).is_none());
        assert!(EntryCache::new(Duration::from_secs(1)).is_some());
    }

    #[test]
    fn an_entry_is_reused_for_cache_for_and_not_a_second_longer() {
        let clock = ManualClock::new(Timestamp(1_000));
        let cache = EntryCache::new(Duration::from_secs(60)).unwrap();
        let alice = entry("alice", 2);
        assert_eq!(cache.get(&alice.name, clock.now()), None);
        cache.put(&alice.name, &alice, clock.now());
        assert_eq!(cache.get(&alice.name, clock.now()), Some(alice.clone()));
        clock.advance(Duration::from_secs(59));
        assert_eq!(cache.get(&alice.name, clock.now()), Some(alice.clone()));
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get(&alice.name, clock.now()), None);
        // Met expired, it is gone.
        assert!(cache.is_empty());
    }

    #[test]
    fn a_new_search_result_replaces_the_old_and_restarts_its_time() {
        let clock = ManualClock::new(Timestamp(1_000));
        let cache = EntryCache::new(Duration::from_secs(60)).unwrap();
        let mut alice = entry("alice", 1);
        cache.put(&alice.name, &alice, clock.now());
        clock.advance(Duration::from_secs(50));
        alice.activated = false;
        cache.put(&alice.name, &alice, clock.now());
        clock.advance(Duration::from_secs(50));
        assert_eq!(cache.get(&alice.name, clock.now()), Some(alice.clone()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn forget_drops_one_user() {
        let now = Timestamp(5);
        let cache = EntryCache::new(Duration::from_secs(60)).unwrap();
        let (a, b) = (entry("alice", 0), entry("bob", 0));
        cache.put(&a.name, &a, now);
        cache.put(&b.name, &b, now);
        cache.forget(&user("alice"));
        assert_eq!(cache.get(&user("alice"), now), None);
        assert_eq!(cache.get(&user("bob"), now), Some(b));
    }

    #[test]
    fn the_weight_is_bounded_least_recently_used_first_out() {
        let now = Timestamp(5);
        let one = weight_of(&entry("u000", 3));
        let cache = EntryCache::with_max_weight(Duration::from_secs(60), one * 10).unwrap();
        for i in 0..10 {
            let e = entry(&format!("u{i:03}"), 3);
            cache.put(&e.name, &e, now);
        }
        assert_eq!(cache.len(), 10);
        // u000 used: u001 is now the least recently used.
        assert!(cache.get(&user("u000"), now).is_some());
        let e = entry("u010", 3);
        cache.put(&e.name, &e, now);
        assert_eq!(cache.len(), 10);
        assert!(cache.get(&user("u001"), now).is_none());
        assert!(cache.get(&user("u000"), now).is_some());
        // A heavy entry pushes out as many as it needs to.
        let heavy = entry("heavy", 3 * 12);
        cache.put(&heavy.name, &heavy, now);
        assert!(cache.inner().weight <= one * 10);
        assert!(cache.get(&user("heavy"), now).is_some());
        // One heavier than the whole cache is not kept at all, and pushes nothing out.
        let before = cache.len();
        let huge = entry("huge", 3 * 200);
        cache.put(&huge.name, &huge, now);
        assert!(cache.get(&user("huge"), now).is_none());
        assert_eq!(cache.len(), before);
    }
}
