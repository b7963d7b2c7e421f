//! Time is passed in. Only [`SystemClock`] reads the wall clock; tests use
//! [`ManualClock`] and compute the codes for the step they need.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This instant plus a duration, saturating.
    pub fn plus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_secs()))
    }

    /// Seconds from `self` until `later`, zero when `later` is not later.
    pub fn seconds_until(self, later: Timestamp) -> u64 {
        later.0.saturating_sub(self.0)
    }

    /// RFC 3339 in UTC, for people and JSON output.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, in whole seconds since the epoch.
    fn now(&self) -> Timestamp;
}

/// The wall clock: the one place in the core that reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one marked place that reads the wall clock
    fn now(&self) -> Timestamp {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Timestamp(secs)
    }
}

/// A clock that tests set and advance.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: Timestamp) -> Self {
        Self(Arc::new(AtomicU64::new(t.0)))
    }

    /// Sets the time.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, d: std::time::Duration) {
        self.0.fetch_add(d.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_111_111_109).to_rfc3339(),
            "2005-03-18T01:58:29Z"
        );
        assert_eq!(
            Timestamp(20_000_000_000).to_rfc3339(),
            "2603-10-11T11:33:20Z"
        );
    }
}
