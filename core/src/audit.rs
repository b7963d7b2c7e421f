//! The audit trail: every decision, as a JSON object, written to the log (target
//! `otpgate::audit`), to an optional JSON-lines file, and to the store (for
//! `otpgate audit`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::store::{Store, StoreBackend};

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    Radius,
    Pam,
    Portal,
    Cli,
}

impl Door {
    /// The name in records and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Radius => "radius",
            Door::Pam => "pam",
            Door::Portal => "portal",
            Door::Cli => "cli",
        }
    }
}

/// Who is asking and from where; carried into every audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub door: Door,
    /// RADIUS client name, PAM host / remote host, portal remote address, CLI operator.
    pub client: String,
}

impl RequestContext {
    /// A context for a door and client.
    pub fn new(door: Door, client: impl Into<String>) -> Self {
        Self {
            door,
            client: client.into(),
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC.
    pub time: String,
    pub ts: Timestamp,
    pub user: String,
    pub door: Door,
    pub client: String,
    /// "password", "totp", "email-otp", "trusted-device", "enroll", "reset", ...
    pub method: String,
    /// "accept", "reject", "error", "ok".
    pub result: String,
    /// Why: the refusal or error, or what was done.
    pub reason: String,
}

/// Writes audit records.
pub struct AuditLog {
    file: Option<(PathBuf, Mutex<()>)>,
    keep_secs: u64,
}

impl AuditLog {
    /// An audit log keeping `keep` in the store and appending to `file` if given.
    pub fn new(config: &otpgate_config::AuditConfig) -> Self {
        Self {
            file: config.file.clone().map(|p| (p, Mutex::new(()))),
            keep_secs: config.keep.as_secs(),
        }
    }

    /// Records a decision. Audit failures are logged, never turned into an accept or a
    /// refusal of their own: the decision has been made by then.
    pub async fn record(&self, store: &Store, record: AuditRecord) {
        let line = match serde_json::to_string(&record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!("audit record not serialisable: {e}");
                return;
            }
        };
        // The fields are for structured sinks (journald: OTPGATE_AUDIT_USER, …); text
        // logs show the JSON line alone.
        tracing::info!(
            target: "otpgate::audit",
            audit_user = %record.user,
            audit_door = record.door.as_str(),
            audit_client = %record.client,
            audit_method = %record.method,
            audit_result = %record.result,
            audit_reason = %record.reason,
            "{line}"
        );
        if let Some((path, lock)) = &self.file {
            let _guard = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                tracing::error!("cannot append to the audit file {}: {e}", path.display());
            }
        }
        if let Err(e) = store.append_audit(record.ts, &line, self.keep_secs).await {
            tracing::error!("cannot write the audit record to the store: {e}");
        }
    }
}
