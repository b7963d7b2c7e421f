//! What one run measured: every reply's latency and every request's outcome.

use std::fmt;
use std::time::Duration;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An authentic Access-Accept.
    Accept,
    /// An authentic Access-Reject.
    Reject,
    /// An authentic Access-Reject of a code whose step ended while the request was in
    /// flight, or had begun only milliseconds before it was sent, from a server that
    /// accepts only the current step (the FreeRADIUS baseline, which reads a coarse
    /// clock); expected around each step boundary, not a failure.
    StaleReject,
    /// An authentic Access-Challenge (append mode should never challenge).
    Challenge,
    /// No authentic reply within the timeout.
    Timeout,
}

/// The outcomes and latencies of one run (or one worker's share of it).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Latency of every request that got an authentic reply, in microseconds.
    latencies_us: Vec<u32>,
    /// Access-Accepts.
    pub accepts: u64,
    /// Access-Rejects (not counting the stale ones).
    pub rejects: u64,
    /// Access-Rejects of codes at a step boundary ([`Outcome::StaleReject`]).
    pub stale_rejects: u64,
    /// Access-Challenges.
    pub challenges: u64,
    /// Requests with no authentic reply in time.
    pub timeouts: u64,
    /// Datagrams that arrived but failed the reply checks (ignored while waiting).
    pub bad_replies: u64,
}

impl Stats {
    /// Records one request.
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Accept => self.accepts += 1,
            Outcome::Reject => self.rejects += 1,
            Outcome::StaleReject => self.stale_rejects += 1,
            Outcome::Challenge => self.challenges += 1,
            Outcome::Timeout => {
                self.timeouts += 1;
                return;
            }
        }
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(micros);
    }

    /// Adds another worker's share.
    pub fn merge(&mut self, other: Stats) {
        self.latencies_us.extend(other.latencies_us);
        self.accepts += other.accepts;
        self.rejects += other.rejects;
        self.stale_rejects += other.stale_rejects;
        self.challenges += other.challenges;
        self.timeouts += other.timeouts;
        self.bad_replies += other.bad_replies;
    }

    /// Every request sent.
    pub fn requests(&self) -> u64 {
        self.accepts + self.rejects + self.stale_rejects + self.challenges + self.timeouts
    }

    /// Whether every request was accepted, but for stale rejects.
    pub fn all_accepted(&self) -> bool {
        self.requests() > 0 && self.accepts + self.stale_rejects == self.requests()
    }

    /// The summary over `elapsed`.
    pub fn summary(&mut self, elapsed: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        let at = |q: f64| -> Duration {
            if self.latencies_us.is_empty() {
                return Duration::ZERO;
            }
            // nearest rank
            let rank = (q * self.latencies_us.len() as f64).ceil() as usize;
            let index = rank.clamp(1, self.latencies_us.len()) - 1;
            Duration::from_micros(self.latencies_us.get(index).copied().map_or(0, u64::from))
        };
        let seconds = elapsed.as_secs_f64();
        Summary {
            requests: self.requests(),
            per_second: if seconds > 0.0 {
                self.requests() as f64 / seconds
            } else {
                0.0
            },
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
            accepts: self.accepts,
            rejects: self.rejects,
            stale_rejects: self.stale_rejects,
            challenges: self.challenges,
            timeouts: self.timeouts,
            bad_replies: self.bad_replies,
        }
    }
}

/// A run in numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub accepts: u64,
    pub rejects: u64,
    pub stale_rejects: u64,
    pub challenges: u64,
    pub timeouts: u64,
    pub bad_replies: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>8} req {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  \
             accept {} reject {} challenge {} timeout {} bad-reply {}",
            self.requests,
            self.per_second,
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.accepts,
            self.rejects,
            self.challenges,
            self.timeouts,
            self.bad_replies,
        )?;
        if self.stale_rejects > 0 {
            write!(f, " stale-reject {}", self.stale_rejects)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut stats = Stats::default();
        for ms in 1..=100 {
            stats.record(Outcome::Accept, Duration::from_millis(ms));
        }
        stats.record(Outcome::Timeout, Duration::from_secs(5));
        let s = stats.summary(Duration::from_secs(2));
        assert_eq!(s.requests, 101);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert!((s.per_second - 50.5).abs() < 1e-9);
        assert!(!stats.all_accepted());
    }

    #[test]
    fn stale_rejects_are_counted_apart_and_not_failures() {
        let mut stats = Stats::default();
        stats.record(Outcome::Accept, Duration::from_millis(1));
        stats.record(Outcome::StaleReject, Duration::from_millis(1));
        assert_eq!((stats.rejects, stats.stale_rejects), (0, 1));
        assert!(stats.all_accepted());
        stats.record(Outcome::Reject, Duration::from_millis(1));
        assert!(!stats.all_accepted());
        assert!(
            stats
                .summary(Duration::from_secs(1))
                .to_string()
                .ends_with("stale-reject 1")
        );
    }

    #[test]
    fn merge_adds_up() {
        let mut a = Stats::default();
        a.record(Outcome::Accept, Duration::from_millis(1));
        let mut b = Stats::default();
        b.record(Outcome::Reject, Duration::from_millis(2));
        b.record(Outcome::Challenge, Duration::from_millis(3));
        a.merge(b);
        assert_eq!((a.accepts, a.rejects, a.challenges), (1, 1, 1));
        assert_eq!(
            a.summary(Duration::from_secs(1)).max,
            Duration::from_millis(3)
        );
    }
}
