//! Warnings an operator must see, at most once a period per key, each carrying how
//! many occurrences since the last were not logged. Every occurrence is still counted
//! in the metrics by the caller.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How often, at most, the warning about a client whose requests lack a
/// Message-Authenticator is logged for one client.
pub const MISSING_MESSAGE_AUTHENTICATOR_EVERY: Duration = Duration::from_secs(60);

/// A per-key rate limit for one warning. Keys are few (client names from the
/// configuration), so the map stays small.
#[derive(Debug)]
pub struct RateLimited<K> {
    every: Duration,
    /// Per key: when the next warning may be logged, and occurrences since the last.
    state: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq + Clone> RateLimited<K> {
    /// At most one warning per key every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: HashMap::new(),
        }
    }

    /// Notes one occurrence for `key` at `now`. `Some(suppressed)` when a warning is
    /// due, with the number of occurrences not logged since the previous warning;
    /// `None` when this one is to be suppressed.
    pub fn note(&mut self, key: &K, now: Instant) -> Option<u64> {
        match self.state.get_mut(key) {
            Some((next, suppressed)) if now < *next => {
                *suppressed += 1;
                None
            }
            Some((next, suppressed)) => {
                let count = *suppressed;
                *next = now + self.every;
                *suppressed = 0;
                Some(count)
            }
            None => {
                self.state.insert(key.clone(), (now + self.every, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_per_period_with_the_count_of_the_rest() {
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        let mut limit = RateLimited::new(minute);
        let vpn = "vpn".to_string();
        let pam = "pam-hosts".to_string();
        assert_eq!(limit.note(&vpn, start), Some(0));
        for i in 1..=5 {
            assert_eq!(limit.note(&vpn, start + Duration::from_secs(i)), None);
        }
        // Another client is not held back by the first.
        assert_eq!(limit.note(&pam, start + Duration::from_secs(2)), Some(0));
        assert_eq!(
            limit.note(&vpn, start + minute - Duration::from_millis(1)),
            None
        );
        assert_eq!(limit.note(&vpn, start + minute), Some(6));
        assert_eq!(
            limit.note(&vpn, start + minute + Duration::from_secs(1)),
            None
        );
        assert_eq!(limit.note(&pam, start + minute), None);
        assert_eq!(limit.note(&pam, start + 2 * minute), Some(1));
        assert_eq!(limit.note(&vpn, start + 3 * minute), Some(1));
    }
}
