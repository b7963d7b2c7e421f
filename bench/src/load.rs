//! The load generator: `in_flight` workers, each with its own UDP socket and one
//! request outstanding at a time, until the duration is up.
//!
//! A worker takes the next fresh login from the shared [`Logins`], builds a signed
//! Access-Request (Message-Authenticator, hidden User-Password) with the project's
//! codec, sends it, and waits for a datagram that passes [`check_reply`] (identifier,
//! Response Authenticator, Message-Authenticator). Datagrams that fail the checks are
//! counted and ignored; no authentic reply within the timeout counts as a timeout.
//! There are no retransmissions, so every request is evaluated exactly once.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use otpgate_core::clock::Timestamp;
use otpgate_core::otp::totp;
use otpgate_radius_proto::{
    AccessRequestParams, Reply, Secret, check_reply, encode_access_request,
};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::logins::Logins;
use crate::stats::{Outcome, Stats};

/// The server under load.
pub struct Target {
    /// Its RADIUS address.
    pub addr: SocketAddr,
    /// The shared secret of the client entry for `source`.
    pub secret: Secret,
    /// The loopback address requests come from: the server picks the client entry by
    /// it (127.0.0.1: password and code; 127.0.0.2: a client that checks the password
    /// itself and sends the code alone).
    pub source: Ipv4Addr,
}

/// How to load it.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Requests outstanding at any time (one per worker).
    pub in_flight: usize,
    /// How long workers keep starting requests.
    pub duration: Duration,
    /// How long a request waits for its reply before it counts as a timeout.
    pub timeout: Duration,
    /// The TOTP step length, to know which steps are current.
    pub period: u64,
    /// Send the code alone as User-Password (an OTP-only client), not password + code.
    pub code_only: bool,
}

/// The result of one run.
#[derive(Debug)]
pub struct RunResult {
    /// Outcomes and latencies.
    pub stats: Stats,
    /// From the first request to the last reply (or timeout).
    pub elapsed: Duration,
    /// Whether the run ended early because no fresh (user, step) was left; more users
    /// (or a longer step) give more.
    pub exhausted: bool,
}

/// Runs `options.in_flight` workers against `target` for `options.duration`.
///
/// # Errors
///
/// A socket that cannot be bound, connected or used, or a request that cannot be
/// encoded (a user name or password too long for RADIUS).
pub async fn run(
    target: Arc<Target>,
    logins: Arc<Mutex<Logins>>,
    options: RunOptions,
) -> io::Result<RunResult> {
    let start = Instant::now();
    let deadline = start + options.duration;
    let exhausted = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for _ in 0..options.in_flight.max(1) {
        let socket = UdpSocket::bind((target.source, 0)).await?;
        socket.connect(target.addr).await?;
        let worker = Worker {
            socket,
            target: Arc::clone(&target),
            logins: Arc::clone(&logins),
            exhausted: Arc::clone(&exhausted),
            options,
        };
        workers.spawn(worker.run(deadline));
    }
    let mut stats = Stats::default();
    while let Some(joined) = workers.join_next().await {
        stats.merge(joined.map_err(io::Error::other)??);
    }
    Ok(RunResult {
        stats,
        elapsed: start.elapsed(),
        exhausted: exhausted.load(Ordering::Relaxed),
    })
}

/// How far behind the precise clock a server may read the time. `rlm_totp` takes it
/// from `time(2)`, which glibc answers from the vDSO's copy of the time, updated at
/// each kernel tick (a few milliseconds apart): just after a step boundary it can still
/// read the step before.
const COARSE_CLOCK_LAG: Duration = Duration::from_millis(20);

/// Now, to the millisecond: the generator is an entry point, and a boundary must be
/// placed closer than `SystemClock`'s whole seconds.
#[allow(clippy::disallowed_methods)] // the bench's one reading of the wall clock
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// The TOTP step of `t` (whole seconds, as the core counts them).
fn step_at(t: SystemTime, period: u64) -> u64 {
    let seconds = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    totp::step_at(Timestamp(seconds), period)
}

/// Whether a refused code of `step`, picked at `picked_at` and answered at
/// `replied_at`, may have met a server that was not in `step`: the step had turned over
/// when the reply came, or had begun so shortly before the code was picked that a
/// server reading a coarse clock ([`COARSE_CLOCK_LAG`]) could still be in the one
/// before.
fn is_stale(step: u64, picked_at: SystemTime, replied_at: SystemTime, period: u64) -> bool {
    let lagging = picked_at
        .checked_sub(COARSE_CLOCK_LAG)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    step_at(lagging, period) != step || step_at(replied_at, period) != step
}

/// One request in flight at a time.
struct Worker {
    socket: UdpSocket,
    target: Arc<Target>,
    logins: Arc<Mutex<Logins>>,
    exhausted: Arc<AtomicBool>,
    options: RunOptions,
}

impl Worker {
    async fn run(self, deadline: Instant) -> io::Result<Stats> {
        let mut stats = Stats::default();
        let mut identifier: u8 = 0;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline && !self.exhausted.load(Ordering::Relaxed) {
            let picked_at = wall_clock();
            let now_step = step_at(picked_at, self.options.period);
            let next = {
                let mut logins = self.logins.lock().unwrap_or_else(PoisonError::into_inner);
                let current_step_only = logins.is_current_step();
                logins.next(now_step).and_then(|login| {
                    let name = logins.users().get(login.user)?.name.clone();
                    let password = if self.options.code_only {
                        login.code
                    } else {
                        login.user_password
                    };
                    Some((name, password, login.step, current_step_only))
                })
            };
            let Some((name, user_password, step, current_step_only)) = next else {
                self.exhausted.store(true, Ordering::Relaxed);
                break;
            };
            identifier = identifier.wrapping_add(1);
            let mut authenticator = [0u8; 16];
            getrandom::fill(&mut authenticator).map_err(io::Error::other)?;
            let mut params = AccessRequestParams::new(name.into_bytes());
            params.password = Some(Zeroizing::new(user_password.into_bytes()));
            params.nas_identifier = Some("otpgate-bench".to_owned());
            let request =
                encode_access_request(&params, identifier, authenticator, &self.target.secret)
                    .map_err(io::Error::other)?;

            let sent = Instant::now();
            self.socket.send(&request).await?;
            let mut outcome = self
                .await_reply(&mut buf, identifier, authenticator, sent, &mut stats)
                .await?;
            let latency = sent.elapsed();
            if outcome == Outcome::Reject
                && current_step_only
                && is_stale(step, picked_at, wall_clock(), self.options.period)
            {
                outcome = Outcome::StaleReject;
            }
            stats.record(outcome, latency);
        }
        Ok(stats)
    }

    /// Waits for the authentic reply to the request, ignoring (and counting) others.
    async fn await_reply(
        &self,
        buf: &mut [u8],
        identifier: u8,
        authenticator: [u8; 16],
        sent: Instant,
        stats: &mut Stats,
    ) -> io::Result<Outcome> {
        let until = sent + self.options.timeout;
        loop {
            let Ok(received) = tokio::time::timeout_at(until, self.socket.recv(buf)).await else {
                return Ok(Outcome::Timeout);
            };
            let datagram = buf.get(..received?).unwrap_or_default();
            match check_reply(datagram, identifier, authenticator, &self.target.secret)
                .and_then(Reply::from_packet)
            {
                Ok(Reply::Accept { .. }) => return Ok(Outcome::Accept),
                Ok(Reply::Reject { .. }) => return Ok(Outcome::Reject),
                Ok(Reply::Challenge { .. }) => return Ok(Outcome::Challenge),
                Err(_) => stats.bad_replies += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis)
    }

    #[test]
    fn a_reject_inside_one_step_is_not_stale() {
        // Step 100 runs from 3000 s to 3030 s.
        assert!(!is_stale(100, at(3010, 0), at(3010, 5), 30));
        assert!(!is_stale(100, at(3000, 25), at(3029, 999), 30));
    }

    #[test]
    fn a_reject_across_a_boundary_or_just_after_one_is_stale() {
        // The step turned over in flight.
        assert!(is_stale(100, at(3029, 999), at(3030, 1), 30));
        // Picked 5 ms into the step: a server on a coarse clock may still be in 99.
        assert!(is_stale(100, at(3000, 5), at(3000, 7), 30));
    }
}
