//! The audit trail: every decision, as a JSON object, written to the log (target
//! `otpgate::audit`), to an optional JSON-lines file, and to the store (for
//! `otpgate audit`).

mod batch;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use self::batch::GroupCommit;
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

/// What an audit record is about: the step of a login, or the account operation.
/// Written in records as kebab-case names (`"one-time-code"`, `"email-otp-request"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Method {
    /// The password (a refusal at the password step).
    Password,
    /// A client's word that it checked the password (a refusal at that step).
    PasswordByClient,
    /// A code (a refusal at the code step).
    Code,
    /// An app code accepted.
    Totp,
    /// A mailed or helpdesk code accepted.
    OneTimeCode,
    /// A mailed reset link followed with the password.
    ResetLink,
    /// A trusted device.
    TrustedDevice,
    /// A user with no second factor let in by policy.
    NotEnrolled,
    /// A user let in with the password alone: their policy is `exempt`.
    Exempt,
    /// A user with no second factor let in with a notice: `required`, before `enroll_by`.
    BeforeDeadline,
    /// The answer to a RADIUS challenge (its State).
    Challenge,
    /// A login as a whole (a backend failure, before any step could be named).
    Login,
    /// CHAP, refused (PAP only).
    Chap,
    /// MS-CHAP, refused.
    MsChap,
    /// EAP, refused (Wi-Fi goes through a FreeRADIUS front).
    Eap,
    /// "Mail me a code" (or a helpdesk request).
    EmailOtpRequest,
    Enroll,
    EnrollConfirm,
    AddDevice,
    Reset,
    ResetRequest,
    AddressSet,
    AddressConfirm,
    Unlock,
    TrustedRevoke,
    HelpdeskIssue,
    /// A token imported (`otpgate user import`).
    TokenImport,
    /// A hardware token assigned to a user.
    TokenAssign,
    /// A token removed (a hardware token goes back to the pool).
    TokenRemove,
    /// A name written by another version.
    #[serde(other)]
    Other,
}

impl Method {
    /// The name in records and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::PasswordByClient => "password-by-client",
            Method::Code => "code",
            Method::Totp => "totp",
            Method::OneTimeCode => "one-time-code",
            Method::ResetLink => "reset-link",
            Method::TrustedDevice => "trusted-device",
            Method::NotEnrolled => "not-enrolled",
            Method::Exempt => "exempt",
            Method::BeforeDeadline => "before-deadline",
            Method::Challenge => "challenge",
            Method::Login => "login",
            Method::Chap => "chap",
            Method::MsChap => "ms-chap",
            Method::Eap => "eap",
            Method::EmailOtpRequest => "email-otp-request",
            Method::Enroll => "enroll",
            Method::EnrollConfirm => "enroll-confirm",
            Method::AddDevice => "add-device",
            Method::Reset => "reset",
            Method::ResetRequest => "reset-request",
            Method::AddressSet => "address-set",
            Method::AddressConfirm => "address-confirm",
            Method::Unlock => "unlock",
            Method::TrustedRevoke => "trusted-revoke",
            Method::HelpdeskIssue => "helpdesk-issue",
            Method::TokenImport => "token-import",
            Method::TokenAssign => "token-assign",
            Method::TokenRemove => "token-remove",
            Method::Other => "other",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// What was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Outcome {
    /// A login let in.
    Accept,
    /// A login refused.
    Reject,
    /// An account operation done.
    Ok,
    /// An account operation refused.
    Refused,
    /// No decision: a backend failed (fail closed).
    Error,
    /// A name written by another version.
    #[serde(other)]
    Other,
}

impl Outcome {
    /// The name in records and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accept => "accept",
            Outcome::Reject => "reject",
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Other => "other",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Display for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
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
    /// The login step or account operation.
    pub method: Method,
    /// What was decided.
    pub result: Outcome,
    /// Why: the refusal or error, or what was done.
    pub reason: String,
}

/// Writes audit records.
pub struct AuditLog {
    file: Option<(PathBuf, Mutex<()>)>,
    keep_secs: u64,
    /// Records of concurrent requests go to the store in one write (`batch`).
    store_queue: GroupCommit,
}

impl AuditLog {
    /// An audit log keeping `keep` in the store and appending to `file` if given.
    pub fn new(config: &otpgate_config::AuditConfig) -> Self {
        Self {
            file: config.file.clone().map(|p| (p, Mutex::new(()))),
            keep_secs: config.keep.as_secs(),
            store_queue: GroupCommit::default(),
        }
    }

    /// Seconds the store keeps records for.
    pub fn keep_secs(&self) -> u64 {
        self.keep_secs
    }

    /// The record as the JSON line every sink writes; `None` (logged) if it cannot be
    /// serialised.
    pub fn prepare(&self, record: AuditRecord) -> Option<Prepared> {
        match serde_json::to_string(&record) {
            Ok(line) => Some(Prepared { record, line }),
            Err(e) => {
                tracing::error!("audit record not serialisable: {e}");
                None
            }
        }
    }

    /// Records a decision. Audit failures are logged, never turned into an accept or a
    /// refusal of their own: the decision has been made by then.
    pub async fn record(&self, store: &Store, record: AuditRecord) {
        let Some(prepared) = self.prepare(record) else {
            return;
        };
        let (at, line) = self.log(prepared);
        let keep = self.keep_secs;
        let written = self
            .store_queue
            .append(at, line, |records| async move {
                let records: Vec<(Timestamp, &str)> =
                    records.iter().map(|(at, l)| (*at, l.as_str())).collect();
                store.append_audits(&records, keep).await
            })
            .await;
        if let Err(e) = written {
            tracing::error!("cannot write the audit record to the store: {e}");
        }
    }

    /// Writes a record the store has already (the code's step appended it, in the
    /// same round trip) to the log and the file.
    pub fn record_stored(&self, prepared: Prepared) {
        self.log(prepared);
    }

    /// Writes a record to the log and the file; returns its time and line.
    fn log(&self, prepared: Prepared) -> (Timestamp, String) {
        let Prepared { record, line } = prepared;
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
        (record.ts, line)
    }
}

/// An audit record and its JSON line, ready for the sinks ([`AuditLog::prepare`]).
#[derive(Debug)]
pub struct Prepared {
    record: AuditRecord,
    line: String,
}

impl Prepared {
    /// The record's time.
    pub fn at(&self) -> Timestamp {
        self.record.ts
    }

    /// The JSON line.
    pub fn line(&self) -> &str {
        &self.line
    }
}
