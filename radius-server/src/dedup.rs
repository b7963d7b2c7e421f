//! Duplicate detection (RFC 5080 §2.2.2).
//!
//! A NAS that hears nothing retransmits the same datagram: same source address and
//! port, same identifier, same Request Authenticator. Evaluating it again could
//! consume a second code, or answer "replay" to a login that succeeded. So:
//!
//! - the first copy is evaluated; while it is in progress, copies are dropped (the
//!   answer is on its way);
//! - once answered, copies within 30 s get the cached reply bytes, byte for byte,
//!   and are never evaluated again;
//! - a request that got no answer (a backend failed) is
//!   forgotten, so a retransmission after the backend is back is evaluated afresh;
//!   the store's atomic single-use checks make that safe.
//!
//! Entries are only made for datagrams that passed verification (the client's
//! secret), so only configured clients can fill the cache, and it is bounded. When it
//! is full, the oldest answered request makes room if its reply has been kept for
//! at least a third of the TTL (10 s by default: a NAS retransmits after 3–5 s, a few
//! times); a retransmission of such an evicted request is evaluated afresh, which the
//! store's single-use checks make safe (it is refused, never accepted twice). Only
//! when no answered reply is that old are new requests dropped (fail closed) and
//! counted. The default capacity so covers a sustained 26,000 requests per second.
//!
//! Time is passed in (`Instant`s), so the expiry is tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a reply is kept for retransmissions (RFC 5080 suggests the NAS's whole
/// retransmission window; 30 s covers common NAS settings).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Default bound on entries: far above 30 s of the load one server can take.
pub const DEFAULT_CAPACITY: usize = 1 << 18;

/// What makes two datagrams the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// The client's address and source port.
    pub source: SocketAddr,
    /// The RADIUS identifier.
    pub identifier: u8,
    /// The Request Authenticator (random per request from a sane NAS).
    pub authenticator: [u8; 16],
}

/// What [`DedupCache::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// A new request: evaluate it, then [`Pending::complete`] (or drop the guard to
    /// forget it).
    Fresh(Pending),
    /// The same request is being evaluated: drop this copy.
    InProgress,
    /// Answered already: send these bytes again.
    Cached(Arc<[u8]>),
    /// The cache is full: drop the request.
    Full,
}

#[derive(Debug)]
enum Slot {
    InProgress,
    Done(Arc<[u8]>),
}

#[derive(Debug)]
struct Entry {
    slot: Slot,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<DedupKey, Entry>,
    /// Expiry order. An entry whose expiry moved later (completed) has a second,
    /// later element here, and a forgotten entry leaves its element behind; such
    /// stale elements are skipped when they come up, and swept out whenever they
    /// outnumber the map (see [`Inner::push_order`]), so this holds at most about
    /// twice the capacity however often requests are forgotten.
    order: VecDeque<(Instant, DedupKey)>,
}

/// The cache, shared by every socket's loop and every request task.
#[derive(Debug)]
pub struct DedupCache {
    inner: Mutex<Inner>,
    ttl: Duration,
    /// How long a reply is kept before it may make room for a new request.
    keep_at_least: Duration,
    capacity: usize,
}

impl DedupCache {
    /// A cache keeping replies for `ttl`, holding at most `capacity` requests.
    pub fn new(ttl: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            ttl,
            keep_at_least: ttl / 3,
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in the critical sections can panic midway and leave the map
        // inconsistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks a request up at `now`, and marks it in progress if it is new.
    pub fn begin(self: &Arc<Self>, key: DedupKey, now: Instant) -> Begin {
        let mut inner = self.lock();
        inner.expire(now);
        match inner.map.get(&key) {
            Some(Entry {
                slot: Slot::Done(bytes),
                ..
            }) => return Begin::Cached(Arc::clone(bytes)),
            Some(Entry {
                slot: Slot::InProgress,
                ..
            }) => return Begin::InProgress,
            None => {}
        }
        let mut made_room = false;
        if inner.map.len() >= self.capacity {
            if !inner.evict_oldest_answered(now, self.ttl.saturating_sub(self.keep_at_least)) {
                return Begin::Full;
            }
            made_room = true;
        }
        let expires = now + self.ttl;
        inner.map.insert(
            key,
            Entry {
                slot: Slot::InProgress,
                expires,
            },
        );
        inner.push_order(expires, key, self.capacity);
        Begin::Fresh(Pending {
            cache: Arc::clone(self),
            key,
            open: true,
            made_room,
        })
    }

    fn complete(&self, key: DedupKey, bytes: Arc<[u8]>, now: Instant) {
        let mut inner = self.lock();
        let expires = now + self.ttl;
        inner.map.insert(
            key,
            Entry {
                slot: Slot::Done(bytes),
                expires,
            },
        );
        inner.push_order(expires, key, self.capacity);
    }

    fn forget(&self, key: &DedupKey) {
        let mut inner = self.lock();
        if matches!(
            inner.map.get(key),
            Some(Entry {
                slot: Slot::InProgress,
                ..
            })
        ) {
            inner.map.remove(key);
        }
    }

    /// How many requests are remembered (in progress or answered).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long the expiry list is (live and stale elements).
    #[cfg(test)]
    fn order_len(&self) -> usize {
        self.lock().order.len()
    }
}

impl Inner {
    /// Appends an expiry, first sweeping out stale elements when the list has grown
    /// to twice the capacity. A sweep leaves at most one element per live entry
    /// (at most `capacity`), so sweeps happen at most once per `capacity` pushes:
    /// amortised O(1).
    fn push_order(&mut self, expires: Instant, key: DedupKey, capacity: usize) {
        if self.order.len() >= capacity.saturating_mul(2) {
            let map = &self.map;
            self.order
                .retain(|(at, k)| map.get(k).is_some_and(|e| e.expires == *at));
        }
        self.order.push_back((expires, key));
    }

    /// Removes the entry that expires first if it is answered and expires within
    /// `within` of `now` (its reply is old enough); stale expiry elements in front of
    /// it are dropped on the way. Whether an entry was removed.
    fn evict_oldest_answered(&mut self, now: Instant, within: Duration) -> bool {
        while let Some(&(at, key)) = self.order.front() {
            let Some(entry) = self.map.get(&key) else {
                self.order.pop_front();
                continue;
            };
            if entry.expires != at {
                self.order.pop_front();
                continue;
            }
            if matches!(entry.slot, Slot::Done(_)) && at <= now + within {
                self.order.pop_front();
                self.map.remove(&key);
                return true;
            }
            return false;
        }
        false
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|e| e.expires <= now) {
                self.map.remove(&key);
            }
        }
    }
}

/// A request being evaluated. [`Pending::complete`] records its reply; dropping it
/// without completing (no reply, a timeout, a cancelled task) forgets the request.
#[derive(Debug)]
pub struct Pending {
    cache: Arc<DedupCache>,
    key: DedupKey,
    open: bool,
    made_room: bool,
}

impl Pending {
    /// The request's key.
    pub fn key(&self) -> &DedupKey {
        &self.key
    }

    /// Whether the cache was full and an old answered request was evicted for this one.
    pub fn made_room(&self) -> bool {
        self.made_room
    }

    /// Records the reply that is being sent, for retransmissions until `now + ttl`.
    pub fn complete(mut self, bytes: Arc<[u8]>, now: Instant) {
        self.open = false;
        self.cache.complete(self.key, bytes, now);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.open {
            self.cache.forget(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16, id: u8, auth: u8) -> DedupKey {
        DedupKey {
            source: SocketAddr::from(([127, 0, 0, 1], port)),
            identifier: id,
            authenticator: [auth; 16],
        }
    }

    fn fresh(b: Begin) -> Pending {
        match b {
            Begin::Fresh(p) => p,
            other => panic!("expected a fresh request, got {other:?}"),
        }
    }

    #[test]
    fn retransmission_in_progress_is_dropped_then_gets_the_cached_bytes() {
        let cache = DedupCache::new(DEFAULT_TTL, 16);
        let t0 = Instant::now();
        let p = fresh(cache.begin(key(1000, 7, 1), t0));
        assert!(matches!(
            cache.begin(key(1000, 7, 1), t0),
            Begin::InProgress
        ));
        p.complete(Arc::from(&b"reply"[..]), t0);
        match cache.begin(key(1000, 7, 1), t0 + Duration::from_secs(29)) {
            Begin::Cached(bytes) => assert_eq!(&*bytes, b"reply"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_part_of_the_key_counts() {
        let cache = DedupCache::new(DEFAULT_TTL, 16);
        let t0 = Instant::now();
        let _a = fresh(cache.begin(key(1000, 7, 1), t0));
        let _b = fresh(cache.begin(key(1001, 7, 1), t0));
        let _c = fresh(cache.begin(key(1000, 8, 1), t0));
        let _d = fresh(cache.begin(key(1000, 7, 2), t0));
        let mut other_host = key(1000, 7, 1);
        other_host.source = SocketAddr::from(([127, 0, 0, 2], 1000));
        let _e = fresh(cache.begin(other_host, t0));
        assert_eq!(cache.len(), 5);
    }

    #[test]
    fn replies_expire_after_the_ttl() {
        let cache = DedupCache::new(Duration::from_secs(30), 16);
        let t0 = Instant::now();
        fresh(cache.begin(key(1, 1, 1), t0)).complete(Arc::from(&b"r"[..]), t0);
        assert!(matches!(
            cache.begin(key(1, 1, 1), t0 + Duration::from_secs(29)),
            Begin::Cached(_)
        ));
        let later = t0 + Duration::from_secs(30);
        let _p = fresh(cache.begin(key(1, 1, 1), later));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn the_ttl_counts_from_the_reply_not_the_request() {
        let cache = DedupCache::new(Duration::from_secs(30), 16);
        let t0 = Instant::now();
        let p = fresh(cache.begin(key(1, 1, 1), t0));
        let answered = t0 + Duration::from_secs(20);
        p.complete(Arc::from(&b"r"[..]), answered);
        assert!(matches!(
            cache.begin(key(1, 1, 1), t0 + Duration::from_secs(45)),
            Begin::Cached(_)
        ));
    }

    #[test]
    fn an_unanswered_request_is_forgotten() {
        let cache = DedupCache::new(DEFAULT_TTL, 16);
        let t0 = Instant::now();
        drop(fresh(cache.begin(key(1, 1, 1), t0)));
        assert!(cache.is_empty());
        let _again = fresh(cache.begin(key(1, 1, 1), t0));
    }

    #[test]
    fn forgotten_requests_do_not_grow_the_expiry_list() {
        // A backend is down: every request is forgotten unanswered, within one TTL.
        let capacity = 64;
        let cache = DedupCache::new(DEFAULT_TTL, capacity);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let [a, b, c, d] = i.to_be_bytes();
            let mut k = key(u16::from_be_bytes([a, b]), c, d);
            k.authenticator[0] = 0xFF;
            drop(fresh(cache.begin(k, t0)));
            assert!(cache.order_len() <= 2 * capacity);
        }
        assert!(cache.is_empty());
    }

    #[test]
    fn the_expiry_list_stays_bounded_with_answers_and_forgets_mixed() {
        let capacity = 32;
        let cache = DedupCache::new(DEFAULT_TTL, capacity);
        let t0 = Instant::now();
        let mut kept = Vec::new();
        for i in 0..10_000u16 {
            let p = fresh(cache.begin(key(i, 1, 1), t0));
            if kept.len() < capacity / 2 {
                // Answered: two elements (request and reply) for one entry.
                kept.push(i);
                p.complete(Arc::from(&b"r"[..]), t0);
            }
            assert!(cache.order_len() <= 2 * capacity);
        }
        // The answered ones are still answered from the cache, and expire in time.
        for &i in &kept {
            assert!(matches!(cache.begin(key(i, 1, 1), t0), Begin::Cached(_)));
        }
        let later = t0 + DEFAULT_TTL;
        let _p = fresh(cache.begin(key(kept[0], 1, 1), later));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_refuses_new_requests_while_every_reply_is_young() {
        let cache = DedupCache::new(Duration::from_secs(30), 2);
        let t0 = Instant::now();
        fresh(cache.begin(key(1, 1, 1), t0)).complete(Arc::from(&b"r"[..]), t0);
        let _p = fresh(cache.begin(key(2, 1, 1), t0));
        assert!(matches!(cache.begin(key(3, 1, 1), t0), Begin::Full));
        let young = t0 + Duration::from_secs(9);
        assert!(matches!(cache.begin(key(3, 1, 1), young), Begin::Full));
        // Known requests are still answered from the cache.
        assert!(matches!(cache.begin(key(1, 1, 1), young), Begin::Cached(_)));
        let later = t0 + Duration::from_secs(31);
        let q = fresh(cache.begin(key(3, 1, 1), later));
        assert!(!q.made_room());
    }

    #[test]
    fn a_full_cache_evicts_the_oldest_reply_kept_a_third_of_the_ttl() {
        let cache = DedupCache::new(Duration::from_secs(30), 2);
        let t0 = Instant::now();
        fresh(cache.begin(key(1, 1, 1), t0)).complete(Arc::from(&b"r1"[..]), t0);
        let t1 = t0 + Duration::from_secs(5);
        fresh(cache.begin(key(2, 1, 1), t1)).complete(Arc::from(&b"r2"[..]), t1);
        let t2 = t0 + Duration::from_secs(10);
        let p = fresh(cache.begin(key(3, 1, 1), t2));
        assert!(p.made_room());
        assert_eq!(cache.len(), 2);
        // The evicted request would be evaluated afresh; the younger reply is kept.
        assert!(matches!(cache.begin(key(2, 1, 1), t2), Begin::Cached(_)));
        // A reply younger than 10 s is not evicted.
        let t3 = t0 + Duration::from_secs(14);
        assert!(matches!(cache.begin(key(1, 1, 1), t3), Begin::Full));
        drop(p);
        assert!(cache.order_len() <= 4);
    }

    #[test]
    fn a_request_in_progress_is_never_evicted() {
        let cache = DedupCache::new(Duration::from_secs(30), 1);
        let t0 = Instant::now();
        let _p = fresh(cache.begin(key(1, 1, 1), t0));
        let t1 = t0 + Duration::from_secs(20);
        assert!(matches!(cache.begin(key(2, 1, 1), t1), Begin::Full));
        assert!(matches!(cache.begin(key(1, 1, 1), t1), Begin::InProgress));
    }
}
