//! A rate limit on password and code attempts per client address: at most
//! [`MAX_ATTEMPTS`] in a [`WINDOW`]. The core's lockout (consecutive second-factor
//! failures, in the store) applies on top, as at the other doors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts allowed per address and window.
pub const MAX_ATTEMPTS: u32 = 30;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(300);
/// Addresses tracked at once (older windows are purged first).
const MAX_TRACKED: usize = 50_000;

/// Attempts by address.
#[derive(Default)]
pub struct RateLimiter {
    map: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    /// Counts an attempt from `ip`; false when it is over the limit.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() >= MAX_TRACKED {
                return false;
            }
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= MAX_ATTEMPTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_limit_is_refused_per_address() {
        let l = RateLimiter::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_ATTEMPTS {
            assert!(l.allow(a));
        }
        assert!(!l.allow(a));
        assert!(l.allow(b));
    }
}
