//! What both backends share: the JSON encoding of records and the expiry rule.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use crate::clock::Timestamp;

/// The failure counter expires this long after the last failure (30 days).
pub(crate) const FAILURES_TTL: u64 = 30 * 24 * 3600;

/// Whether a record that expires at `expires_at` is still valid at `now`. A record is
/// valid strictly before its expiry; at `expires_at` it is gone. Every expiring record
/// of both backends (codes, challenges, trusted devices, helpdesk requests, the lock)
/// follows this one rule.
pub(crate) fn is_live(expires_at: Timestamp, now: Timestamp) -> bool {
    now < expires_at
}

/// The oldest audit time kept after appending `records`: the latest of their times
/// minus `keep`; `None` for no records (nothing to do). Both backends trim by it.
pub(crate) fn audit_kept_from(records: &[(Timestamp, &str)], keep: u64) -> Option<u64> {
    let latest = records.iter().map(|(at, _)| at.0).max()?;
    Some(latest.saturating_sub(keep))
}

/// Encodes a record as JSON.
pub(crate) fn to_json<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode {what}: {e}")))
}

/// Decodes a JSON record.
pub(crate) fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}
