//! Backend health: the `otpgate_backend_up` gauge and its log lines while `otpgate
//! serve` runs, and the one-line-per-backend report of `check-config --connect`.
//!
//! `otpgate serve` starts while LDAP, Redis or SMTP are down (SPEC §8): the core
//! connects on first use and every request fails closed until the backend answers.
//! This module probes each backend at start (a warning for each one that is down) and
//! then every [`PROBE_EVERY`] (SMTP every [`MAIL_EVERY`] probes), sets the gauge to
//! 1 or 0, and logs each change. The probe also reconnects a store that was down, so
//! the first login after it is back does not pay for the connection.

use std::sync::Arc;
use std::time::Duration;

use otpgate_core::store::StoreError;
use otpgate_core::{Core, Probe};
use tokio_util::sync::CancellationToken;

/// Gauge: 1 when the backend answered the last probe, 0 when not; label `backend` is
/// `ldap`, `store` or `smtp`.
pub const BACKEND_UP: &str = "otpgate_backend_up";
/// How often LDAP and the store are probed.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// SMTP is probed every this many probes (a connection and EHLO each time).
const MAIL_EVERY: u32 = 12;

/// One line per probed backend: `(name, Ok or the reason)`.
pub fn lines(probe: &Probe) -> Vec<(&'static str, Result<(), String>)> {
    let mut out = Vec::new();
    if let Some(r) = &probe.directory {
        out.push(("ldap", r.clone().map_err(|e| e.to_string())));
    }
    if let Some(r) = &probe.store {
        out.push(("store", r.clone().map_err(|e| e.to_string())));
    }
    if let Some(r) = &probe.mail {
        out.push(("smtp", r.clone()));
    }
    out
}

/// Whether the store is reachable but unfit (evicting, or without required
/// persistence): `serve` refuses to start on that rather than wait.
pub fn unsuitable_store(probe: &Probe) -> Option<String> {
    match &probe.store {
        Some(Err(e @ StoreError::Unsuitable(_))) => Some(e.to_string()),
        _ => None,
    }
}

/// Records `probe` in the gauge; logs what changed since `before` (at start, every
/// backend that is down).
fn record(probe: &Probe, before: Option<&Probe>) {
    let previous = before.map(lines).unwrap_or_default();
    for (name, result) in lines(probe) {
        metrics::gauge!(BACKEND_UP, "backend" => name).set(if result.is_ok() { 1.0 } else { 0.0 });
        let was_up = previous
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| r.is_ok());
        match (&result, was_up) {
            (Err(e), None) => tracing::warn!(
                backend = name,
                error = %e,
                "{name} is down at start; serving anyway and failing closed (no RADIUS replies, \
                 Status-Server unanswered, portal 503) until it is back"
            ),
            (Err(e), Some(true)) => {
                tracing::warn!(backend = name, error = %e, "{name} is down; failing closed");
            }
            (Ok(()), Some(false)) => tracing::info!(backend = name, "{name} is back"),
            _ => {}
        }
    }
}

/// Probes once (LDAP, store and SMTP) and records the result; the start of `serve`.
pub async fn at_start(core: &Core) -> Probe {
    let probe = core.probe(false, true).await;
    record(&probe, None);
    probe
}

/// Probes every [`PROBE_EVERY`] until `shutdown`, starting from `first`.
pub fn spawn(core: Arc<Core>, first: Probe, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut last = first;
        let mut ticks = tokio::time::interval(PROBE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut n: u32 = 0;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            n = n.wrapping_add(1);
            let mut probe = core.probe(false, n % MAIL_EVERY == 0).await;
            if probe.mail.is_none() {
                // Not probed this time: keep the last answer.
                probe.mail = last.mail.clone();
            }
            record(&probe, Some(&last));
            last = probe;
        }
    });
}
