//! The embedded store: one redb file, for a single host and the demo.
//!
//! Each decision is **one write transaction**; redb runs one write transaction at a time,
//! which is what makes the check-and-set operations atomic. Reads use read transactions
//! (a consistent snapshot).
//!
//! redb holds a lock on its file: only **one process** can open it. PAM direct mode
//! (the module inside sshd) and a second `otpgate serve` therefore need Redis; opening
//! a file another process holds fails with [`StoreError::Unavailable`].
//!
//! There is no background expiry. Every expiring record carries its `expires_at` and is
//! ignored once `now` reaches it; write transactions delete the expired records they
//! come across (a user's old challenges, expired devices, stale helpdesk requests, old
//! audit records).
//!
//! redb's calls block, so every operation runs under `tokio::task::spawn_blocking`.

use std::path::Path;
use std::sync::Arc;

use data_encoding::BASE64;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::keys;
use super::records::{FAILURES_TTL, from_json, is_live, to_json};
use super::{
    Account, ChallengeAnswer, Claim, CodeOutcome, CodeSlot, Counter, FailureOutcome,
    HelpdeskRequest, PoolEntry, StepCheck, StepDecision, StoreBackend, StoreError, StoredCode,
    StoredSession, Token, TrustedDevice, UserRecord, account_digest as account_digest_of,
};
use crate::clock::Timestamp;
use crate::user::UserName;

/// An embedded store. Cloning is cheap and shares the database.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    prefix: String,
    /// Table of key → JSON record, keys named as in Redis (`keys`).
    kv_table: String,
    /// Table of (time, sequence) → audit record.
    audit_table: String,
}

type Kv<'a> = TableDefinition<'a, &'static str, &'static [u8]>;

/// Whether a write transaction's changes are kept.
enum Done<T> {
    Commit(T),
    Abort(T),
}

/// The failure counter; it counts only while `now` is before `last_at + 30 days`.
#[derive(Serialize, Deserialize)]
struct FailureRecord {
    count: u32,
    last_at: Timestamp,
}

impl FailureRecord {
    fn current(&self, now: Timestamp) -> u32 {
        if is_live(Timestamp(self.last_at.0.saturating_add(FAILURES_TTL)), now) {
            self.count
        } else {
            0
        }
    }
}

#[derive(Serialize, Deserialize)]
struct LockRecord {
    until: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct StepRecord {
    step: u64,
}

/// The last accepted step of each of a user's other tokens.
type TokenSteps = std::collections::BTreeMap<String, u64>;

/// A pool entry as stored.
#[derive(Serialize, Deserialize)]
struct PoolRecord {
    token: Token,
    assigned_to: Option<UserName>,
}

impl From<PoolRecord> for PoolEntry {
    fn from(r: PoolRecord) -> Self {
        PoolEntry {
            token: r.token,
            assigned_to: r.assigned_to,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ChallengeRecord {
    /// Base64 of the challenge data.
    data: String,
    answers: u32,
    expires_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct SessionRecord {
    version: u64,
    /// Base64 of the sealed session.
    data: String,
    expires_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct CounterRecord {
    count: u64,
    ends_at: Timestamp,
}

#[derive(Serialize, Deserialize)]
struct SeqRecord {
    next: u64,
}

fn db_err(what: &str, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(m) => StoreError::Corrupt(format!("embedded store {what}: {m}")),
        redb::Error::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
            "embedded store {what}: the file is open in another process (PAM direct mode \
             and a second server need Redis)"
        )),
        other => StoreError::Unavailable(format!("embedded store {what}: {other}")),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file. Fails if another process has it open.
    pub fn open(path: &Path, key_prefix: &str) -> Result<Self, StoreError> {
        let db =
            Database::create(path).map_err(|e| db_err(&format!("open {}", path.display()), e))?;
        Self::with_db(db, key_prefix)
    }

    /// A store in memory, gone when dropped (tests, the demo).
    pub fn in_memory() -> Result<Self, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| db_err("create in memory", e))?;
        Self::with_db(db, "otpgate:")
    }

    fn with_db(db: Database, prefix: &str) -> Result<Self, StoreError> {
        let inner = Inner {
            db,
            prefix: prefix.to_string(),
            kv_table: format!("{prefix}kv"),
            audit_table: format!("{prefix}audit"),
        };
        // Create both tables so that read transactions always find them.
        let tx = inner.db.begin_write().map_err(|e| db_err("open", e))?;
        inner.kv(&tx)?;
        inner.audit(&tx)?;
        tx.commit().map_err(|e| db_err("open", e))?;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Runs `f` in one write transaction on a blocking thread; commits on
    /// `Done::Commit`, rolls back on `Done::Abort` or an error.
    async fn write<T, F>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &WriteTransaction) -> Result<Done<T>, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(what, move || {
            let tx = inner.db.begin_write().map_err(|e| db_err(what, e))?;
            match f(&inner, &tx)? {
                Done::Commit(v) => {
                    tx.commit().map_err(|e| db_err(what, e))?;
                    Ok(v)
                }
                Done::Abort(v) => {
                    tx.abort().map_err(|e| db_err(what, e))?;
                    Ok(v)
                }
            }
        })
        .await
    }

    /// Runs `f` in one read transaction on a blocking thread.
    async fn read<T, F>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(what, move || {
            let tx = inner.db.begin_read().map_err(|e| db_err(what, e))?;
            f(&inner, &tx)
        })
        .await
    }
}

async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Unavailable(format!("embedded store {what}: {e}")))?
}

impl Inner {
    fn kv<'t>(
        &self,
        tx: &'t WriteTransaction,
    ) -> Result<Table<'t, &'static str, &'static [u8]>, StoreError> {
        tx.open_table(Kv::new(&self.kv_table))
            .map_err(|e| db_err("open table", e))
    }

    fn kv_read(
        &self,
        tx: &ReadTransaction,
    ) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        tx.open_table(Kv::new(&self.kv_table))
            .map_err(|e| db_err("open table", e))
    }

    fn audit<'t>(
        &self,
        tx: &'t WriteTransaction,
    ) -> Result<Table<'t, (u64, u64), &'static str>, StoreError> {
        tx.open_table(TableDefinition::<(u64, u64), &str>::new(&self.audit_table))
            .map_err(|e| db_err("open table", e))
    }

    fn audit_read(
        &self,
        tx: &ReadTransaction,
    ) -> Result<redb::ReadOnlyTable<(u64, u64), &'static str>, StoreError> {
        tx.open_table(TableDefinition::<(u64, u64), &str>::new(&self.audit_table))
            .map_err(|e| db_err("open table", e))
    }

    fn key(&self, user: &UserName, what: &str) -> String {
        keys::user_key(&self.prefix, user, what)
    }
}

fn get_json<T, R>(table: &R, key: &str, what: &str) -> Result<Option<T>, StoreError>
where
    T: DeserializeOwned,
    R: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key).map_err(|e| db_err(what, e))? {
        Some(guard) => from_json(what, guard.value()).map(Some),
        None => Ok(None),
    }
}

fn put_json<T: Serialize>(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    what: &str,
    value: &T,
) -> Result<(), StoreError> {
    let json = to_json(what, value)?;
    table
        .insert(key, json.as_bytes())
        .map_err(|e| db_err(what, e))?;
    Ok(())
}

/// Appends audit records (time, JSON) in order under the next sequence numbers, and
/// drops those older than the latest time minus `keep` seconds: the part of a write
/// transaction that [`StoreBackend::append_audits`] and an audited
/// [`StoreBackend::accept_step`] share.
fn append_audit_records(
    inner: &Inner,
    tx: &WriteTransaction,
    records: &[(u64, &str)],
    keep: u64,
) -> Result<(), StoreError> {
    let Some(latest) = records.iter().map(|(at, _)| *at).max() else {
        return Ok(());
    };
    let oldest = latest.saturating_sub(keep);
    let mut kv = inner.kv(tx)?;
    let seq_key = keys::audit_seq_key(&inner.prefix);
    let seq: Option<SeqRecord> = get_json(&kv, &seq_key, "audit sequence")?;
    let first = seq.map_or(0, |s| s.next);
    let count = u64::try_from(records.len()).unwrap_or(u64::MAX);
    put_json(
        &mut kv,
        &seq_key,
        "audit sequence",
        &SeqRecord {
            next: first.saturating_add(count),
        },
    )?;
    drop(kv);
    let mut audit = inner.audit(tx)?;
    for (n, (at, record)) in (first..).zip(records) {
        audit
            .insert((*at, n), *record)
            .map_err(|e| db_err("append audit", e))?;
    }
    audit
        .retain_in(..(oldest, 0u64), |_, _| false)
        .map_err(|e| db_err("trim audit", e))?;
    Ok(())
}

/// The first of `steps` (earliest first) later than `last`.
fn first_after(steps: &[u64], last: Option<u64>) -> Option<u64> {
    steps.iter().copied().find(|s| last.is_none_or(|l| *s > l))
}

fn remove(
    table: &mut Table<'_, &'static str, &'static [u8]>,
    key: &str,
    what: &str,
) -> Result<bool, StoreError> {
    Ok(table.remove(key).map_err(|e| db_err(what, e))?.is_some())
}

/// Every (key, value) whose key starts with `start`.
fn scan_prefix<R>(table: &R, start: &str, what: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>
where
    R: ReadableTable<&'static str, &'static [u8]>,
{
    let mut out = Vec::new();
    for entry in table.range(start..).map_err(|e| db_err(what, e))? {
        let (k, v) = entry.map_err(|e| db_err(what, e))?;
        if !k.value().starts_with(start) {
            break;
        }
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// The lock in force at `now`, if any.
fn live_lock(
    kv: &Table<'_, &'static str, &'static [u8]>,
    lock_key: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let lock: Option<LockRecord> = get_json(kv, lock_key, "lock")?;
    Ok(lock.filter(|l| is_live(l.until, now)).map(|l| l.until))
}

/// Counts a failure inside a write transaction, as `record_failure` and `check_code`
/// both do: nothing while a lock is in force; the failure that reaches the maximum locks.
fn count_failure(
    inner: &Inner,
    kv: &mut Table<'_, &'static str, &'static [u8]>,
    user: &UserName,
    now: Timestamp,
    max_failures: u32,
    lock_for: u64,
) -> Result<Done<FailureOutcome>, StoreError> {
    let failures_key = inner.key(user, keys::FAILURES);
    let lock_key = inner.key(user, keys::LOCK);
    let old: Option<FailureRecord> = get_json(kv, &failures_key, "failures")?;
    let current = old.map_or(0, |f| f.current(now));
    if let Some(until) = live_lock(kv, &lock_key, now)? {
        return Ok(Done::Abort(FailureOutcome {
            failures: current,
            locked_until: Some(until),
        }));
    }
    let count = current.saturating_add(1);
    put_json(
        kv,
        &failures_key,
        "failures",
        &FailureRecord {
            count,
            last_at: now,
        },
    )?;
    let locked_until = if count >= max_failures {
        let until = Timestamp(now.0.saturating_add(lock_for.max(1)));
        put_json(kv, &lock_key, "lock", &LockRecord { until })?;
        Some(until)
    } else {
        None
    };
    Ok(Done::Commit(FailureOutcome {
        failures: count,
        locked_until,
    }))
}

/// Trusted devices as stored: a JSON array, each element decoded on its own so that
/// one undecodable record is skipped (and logged), as the Redis store skips one field.
fn read_devices(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    user: &UserName,
) -> Result<Vec<TrustedDevice>, StoreError> {
    let Some(raw) = kv.get(key).map_err(|e| db_err("read trusted devices", e))? else {
        return Ok(Vec::new());
    };
    let values: Vec<serde_json::Value> = match serde_json::from_slice(raw.value()) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(%user, error = %e, "skipping undecodable trusted device records");
            return Ok(Vec::new());
        }
    };
    let mut devices = Vec::with_capacity(values.len());
    for v in values {
        match serde_json::from_value::<TrustedDevice>(v) {
            Ok(d) => devices.push(d),
            Err(e) => tracing::warn!(%user, error = %e, "skipping a trusted device record"),
        }
    }
    Ok(devices)
}

fn live_devices(devices: Vec<TrustedDevice>, now: Timestamp) -> Vec<TrustedDevice> {
    let mut live: Vec<_> = devices
        .into_iter()
        .filter(|d| is_live(d.expires_at, now))
        .collect();
    live.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    live
}

impl StoreBackend for EmbeddedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read("ping", |inner, tx| inner.kv_read(tx).map(|_| ()))
            .await
    }

    async fn load(&self, user: &UserName, now: Timestamp) -> Result<UserRecord, StoreError> {
        let user = user.clone();
        self.read("load", move |inner, tx| {
            let kv = inner.kv_read(tx)?;
            let (account, account_digest) = match kv
                .get(inner.key(&user, keys::ACCOUNT).as_str())
                .map_err(|e| db_err("account", e))?
            {
                Some(guard) => (
                    Some(from_json::<Account>("account", guard.value())?),
                    Some(account_digest_of(guard.value())),
                ),
                None => (None, None),
            };
            let failures: Option<FailureRecord> =
                get_json(&kv, &inner.key(&user, keys::FAILURES), "failures")?;
            let lock: Option<LockRecord> = get_json(&kv, &inner.key(&user, keys::LOCK), "lock")?;
            let step: Option<StepRecord> =
                get_json(&kv, &inner.key(&user, keys::TOTP_STEP), "TOTP step")?;
            let token_steps: Option<TokenSteps> =
                get_json(&kv, &inner.key(&user, keys::TOKEN_STEPS), "token steps")?;
            Ok(UserRecord {
                account,
                failures: failures.map_or(0, |f| f.current(now)),
                locked_until: lock.map(|l| l.until).filter(|t| is_live(*t, now)),
                last_totp_step: step.map(|s| s.step),
                token_steps: token_steps.unwrap_or_default(),
                account_digest,
            })
        })
        .await
    }

    async fn save_account(
        &self,
        user: &UserName,
        expected_version: u64,
        account: &Account,
    ) -> Result<bool, StoreError> {
        let user = user.clone();
        let mut record = account.clone();
        record.version = expected_version
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("account version overflow".into()))?;
        self.write("save account", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let key = inner.key(&user, keys::ACCOUNT);
            let stored: Option<Account> = get_json(&kv, &key, "account")?;
            if stored.map_or(0, |a| a.version) != expected_version {
                return Ok(Done::Abort(false));
            }
            put_json(&mut kv, &key, "account", &record)?;
            Ok(Done::Commit(true))
        })
        .await
    }

    async fn accept_step(
        &self,
        user: &UserName,
        check: &StepCheck<'_>,
    ) -> Result<StepDecision, StoreError> {
        let user = user.clone();
        let token = check.token.map(str::to_string);
        let steps = check.steps.to_vec();
        let account = check.account.map(str::to_string);
        let audit = check.audit.map(|a| (a.at, a.record.to_string(), a.keep));
        let now = check.now;
        self.write("accept step", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let lock_key = inner.key(&user, keys::LOCK);
            if let Some(until) = live_lock(&kv, &lock_key, now)? {
                return Ok(Done::Abort(StepDecision::Locked(until)));
            }
            if let Some(expected) = &account {
                let stored = kv
                    .get(inner.key(&user, keys::ACCOUNT).as_str())
                    .map_err(|e| db_err("account", e))?
                    .map(|guard| account_digest_of(guard.value()));
                if stored.as_ref() != Some(expected) {
                    return Ok(Done::Abort(StepDecision::Changed));
                }
            }
            let taken = match &token {
                None => {
                    let key = inner.key(&user, keys::TOTP_STEP);
                    let last: Option<StepRecord> = get_json(&kv, &key, "TOTP step")?;
                    let Some(step) = first_after(&steps, last.map(|l| l.step)) else {
                        return Ok(Done::Abort(StepDecision::Replay));
                    };
                    put_json(&mut kv, &key, "TOTP step", &StepRecord { step })?;
                    step
                }
                Some(token) => {
                    let key = inner.key(&user, keys::TOKEN_STEPS);
                    let mut all: TokenSteps =
                        get_json(&kv, &key, "token steps")?.unwrap_or_default();
                    let Some(step) = first_after(&steps, all.get(token).copied()) else {
                        return Ok(Done::Abort(StepDecision::Replay));
                    };
                    all.insert(token.clone(), step);
                    put_json(&mut kv, &key, "token steps", &all)?;
                    step
                }
            };
            remove(&mut kv, &inner.key(&user, keys::FAILURES), "failures")?;
            remove(&mut kv, &lock_key, "lock")?;
            let audited = match &audit {
                Some((at, record, keep)) => {
                    drop(kv);
                    append_audit_records(inner, tx, &[(at.0, record.as_str())], *keep)?;
                    true
                }
                None => false,
            };
            Ok(Done::Commit(StepDecision::Accepted {
                step: taken,
                audited,
            }))
        })
        .await
    }

    async fn pool_add(
        &self,
        token: &Token,
        serial: &str,
        assigned_to: Option<&UserName>,
    ) -> Result<bool, StoreError> {
        let record = PoolRecord {
            token: token.clone(),
            assigned_to: assigned_to.cloned(),
        };
        let key = keys::pool_entry_key(&self.inner.prefix, serial);
        self.write("pool add", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            if get_json::<PoolRecord, _>(&kv, &key, "pool token")?.is_some() {
                return Ok(Done::Abort(false));
            }
            put_json(&mut kv, &key, "pool token", &record)?;
            Ok(Done::Commit(true))
        })
        .await
    }

    async fn pool_get(&self, serial: &str) -> Result<Option<PoolEntry>, StoreError> {
        let key = keys::pool_entry_key(&self.inner.prefix, serial);
        self.read("pool get", move |inner, tx| {
            let record: Option<PoolRecord> = get_json(&inner.kv_read(tx)?, &key, "pool token")?;
            Ok(record.map(PoolEntry::from))
        })
        .await
    }

    async fn pool_list(&self) -> Result<Vec<PoolEntry>, StoreError> {
        self.read("pool list", move |inner, tx| {
            let start = format!("{}:", keys::pool_key(&inner.prefix));
            let mut out = Vec::new();
            for (_, v) in scan_prefix(&inner.kv_read(tx)?, &start, "pool list")? {
                out.push(PoolEntry::from(from_json::<PoolRecord>("pool token", &v)?));
            }
            out.sort_by(|a, b| a.token.serial.cmp(&b.token.serial));
            Ok(out)
        })
        .await
    }

    async fn pool_claim(&self, serial: &str, user: &UserName) -> Result<Claim, StoreError> {
        let key = keys::pool_entry_key(&self.inner.prefix, serial);
        let user = user.clone();
        self.write("pool claim", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let Some(mut record) = get_json::<PoolRecord, _>(&kv, &key, "pool token")? else {
                return Ok(Done::Abort(Claim::Unknown));
            };
            if let Some(owner) = record.assigned_to {
                return Ok(Done::Abort(Claim::AssignedTo(owner)));
            }
            record.assigned_to = Some(user);
            put_json(&mut kv, &key, "pool token", &record)?;
            Ok(Done::Commit(Claim::Claimed(record.token)))
        })
        .await
    }

    async fn pool_release(&self, serial: &str, user: &UserName) -> Result<bool, StoreError> {
        let key = keys::pool_entry_key(&self.inner.prefix, serial);
        let user = user.clone();
        self.write("pool release", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let Some(mut record) = get_json::<PoolRecord, _>(&kv, &key, "pool token")? else {
                return Ok(Done::Abort(false));
            };
            if record.assigned_to.as_ref() != Some(&user) {
                return Ok(Done::Abort(false));
            }
            record.assigned_to = None;
            put_json(&mut kv, &key, "pool token", &record)?;
            Ok(Done::Commit(true))
        })
        .await
    }

    async fn pool_remove(&self, serial: &str) -> Result<bool, StoreError> {
        let key = keys::pool_entry_key(&self.inner.prefix, serial);
        self.write("pool remove", move |inner, tx| {
            let removed = remove(&mut inner.kv(tx)?, &key, "pool token")?;
            Ok(if removed {
                Done::Commit(true)
            } else {
                Done::Abort(false)
            })
        })
        .await
    }

    async fn record_failure(
        &self,
        user: &UserName,
        now: Timestamp,
        max_failures: u32,
        lock_for: u64,
    ) -> Result<FailureOutcome, StoreError> {
        let user = user.clone();
        self.write("record failure", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            count_failure(inner, &mut kv, &user, now, max_failures, lock_for)
        })
        .await
    }

    async fn clear_failures(&self, user: &UserName) -> Result<(), StoreError> {
        let user = user.clone();
        self.write("clear failures", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            remove(&mut kv, &inner.key(&user, keys::FAILURES), "failures")?;
            remove(&mut kv, &inner.key(&user, keys::LOCK), "lock")?;
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn put_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        code: &StoredCode,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let key = keys::code_key(&self.inner.prefix, user, slot);
        let code = code.clone();
        self.write("put code", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            if is_live(code.expires_at, now) {
                put_json(&mut kv, &key, "code", &code)?;
            } else {
                // Already expired: the slot ends up empty, as it would a moment later.
                remove(&mut kv, &key, "code")?;
            }
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn consume_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        hash: &str,
        now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError> {
        let key = keys::code_key(&self.inner.prefix, user, slot);
        let hash = hash.to_string();
        self.write("consume code", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let Some(code) = get_json::<StoredCode, _>(&kv, &key, "code")? else {
                return Ok(Done::Abort(None));
            };
            if !is_live(code.expires_at, now) {
                remove(&mut kv, &key, "code")?;
                return Ok(Done::Commit(None));
            }
            if bool::from(code.hash.as_bytes().ct_eq(hash.as_bytes())) {
                remove(&mut kv, &key, "code")?;
                Ok(Done::Commit(Some(code)))
            } else {
                Ok(Done::Abort(None))
            }
        })
        .await
    }

    async fn check_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        hash: &str,
        now: Timestamp,
        max_failures: u32,
        lock_for: u64,
    ) -> Result<CodeOutcome, StoreError> {
        let user = user.clone();
        let key = keys::code_key(&self.inner.prefix, &user, slot);
        let hash = hash.to_string();
        self.write("check code", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let lock_key = inner.key(&user, keys::LOCK);
            if let Some(until) = live_lock(&kv, &lock_key, now)? {
                return Ok(Done::Abort(CodeOutcome::Locked(until)));
            }
            if let Some(code) = get_json::<StoredCode, _>(&kv, &key, "code")? {
                if !is_live(code.expires_at, now) {
                    remove(&mut kv, &key, "code")?;
                } else if bool::from(code.hash.as_bytes().ct_eq(hash.as_bytes())) {
                    remove(&mut kv, &key, "code")?;
                    remove(&mut kv, &inner.key(&user, keys::FAILURES), "failures")?;
                    remove(&mut kv, &lock_key, "lock")?;
                    return Ok(Done::Commit(CodeOutcome::Consumed(code)));
                }
            }
            let counted = count_failure(inner, &mut kv, &user, now, max_failures, lock_for)?;
            // The expired code above is removed whether or not a failure was counted.
            Ok(Done::Commit(match counted {
                Done::Commit(f) | Done::Abort(f) => CodeOutcome::Wrong(f),
            }))
        })
        .await
    }

    async fn forget_totp_step(&self, user: &UserName) -> Result<(), StoreError> {
        let user = user.clone();
        self.write("forget TOTP step", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            remove(&mut kv, &inner.key(&user, keys::TOTP_STEP), "TOTP step")?;
            remove(&mut kv, &inner.key(&user, keys::TOKEN_STEPS), "token steps")?;
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn delete_code(&self, user: &UserName, slot: CodeSlot) -> Result<(), StoreError> {
        let key = keys::code_key(&self.inner.prefix, user, slot);
        self.write("delete code", move |inner, tx| {
            remove(&mut inner.kv(tx)?, &key, "code")?;
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn peek_code(
        &self,
        user: &UserName,
        slot: CodeSlot,
        now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError> {
        let key = keys::code_key(&self.inner.prefix, user, slot);
        self.read("peek code", move |inner, tx| {
            let code: Option<StoredCode> = get_json(&inner.kv_read(tx)?, &key, "code")?;
            Ok(code.filter(|c| is_live(c.expires_at, now)))
        })
        .await
    }

    async fn put_challenge(
        &self,
        user: &UserName,
        id: &str,
        data: &[u8],
        ttl: u64,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let key = keys::challenge_key(&self.inner.prefix, user, id);
        let start = keys::challenge_key_prefix(&self.inner.prefix, user);
        let record = ChallengeRecord {
            data: BASE64.encode(data),
            answers: 0,
            expires_at: Timestamp(now.0.saturating_add(ttl)),
        };
        self.write("put challenge", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            // Drop this user's challenges that expired unanswered.
            for (k, v) in scan_prefix(&kv, &start, "put challenge")? {
                let expired = from_json::<ChallengeRecord>("challenge", &v)
                    .map_or(true, |c| !is_live(c.expires_at, now));
                if expired {
                    remove(&mut kv, &k, "challenge")?;
                }
            }
            if is_live(record.expires_at, now) {
                put_json(&mut kv, &key, "challenge", &record)?;
            } else {
                remove(&mut kv, &key, "challenge")?;
            }
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn answer_challenge(
        &self,
        user: &UserName,
        id: &str,
        max_answers: u32,
        now: Timestamp,
    ) -> Result<Option<ChallengeAnswer>, StoreError> {
        let key = keys::challenge_key(&self.inner.prefix, user, id);
        self.write("answer challenge", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let Some(mut c) = get_json::<ChallengeRecord, _>(&kv, &key, "challenge")? else {
                return Ok(Done::Abort(None));
            };
            c.answers = c.answers.saturating_add(1);
            if !is_live(c.expires_at, now) || c.answers > max_answers {
                remove(&mut kv, &key, "challenge")?;
                return Ok(Done::Commit(None));
            }
            let data = BASE64
                .decode(c.data.as_bytes())
                .map_err(|e| StoreError::Corrupt(format!("challenge data: {e}")))?;
            put_json(&mut kv, &key, "challenge", &c)?;
            Ok(Done::Commit(Some(ChallengeAnswer {
                data,
                answers: c.answers,
            })))
        })
        .await
    }

    async fn delete_challenge(&self, user: &UserName, id: &str) -> Result<(), StoreError> {
        let key = keys::challenge_key(&self.inner.prefix, user, id);
        self.write("delete challenge", move |inner, tx| {
            remove(&mut inner.kv(tx)?, &key, "challenge")?;
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn load_session(
        &self,
        user: &UserName,
        id: &str,
        idle: u64,
        now: Timestamp,
    ) -> Result<Option<StoredSession>, StoreError> {
        let key = keys::session_key(&self.inner.prefix, user, id);
        self.write("load session", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let Some(mut s) = get_json::<SessionRecord, _>(&kv, &key, "session")? else {
                return Ok(Done::Abort(None));
            };
            if !is_live(s.expires_at, now) || idle == 0 {
                remove(&mut kv, &key, "session")?;
                return Ok(Done::Commit(None));
            }
            let data = BASE64
                .decode(s.data.as_bytes())
                .map_err(|e| StoreError::Corrupt(format!("session data: {e}")))?;
            s.expires_at = Timestamp(now.0.saturating_add(idle));
            put_json(&mut kv, &key, "session", &s)?;
            Ok(Done::Commit(Some(StoredSession {
                version: s.version,
                data,
            })))
        })
        .await
    }

    async fn save_session(
        &self,
        user: &UserName,
        id: &str,
        expected_version: u64,
        data: &[u8],
        idle: u64,
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        let key = keys::session_key(&self.inner.prefix, user, id);
        let start = keys::session_key_prefix(&self.inner.prefix, user);
        let data = BASE64.encode(data);
        self.write("save session", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let current = get_json::<SessionRecord, _>(&kv, &key, "session")?
                .filter(|s| is_live(s.expires_at, now))
                .map_or(0, |s| s.version);
            if current != expected_version || idle == 0 {
                return Ok(Done::Abort(None));
            }
            if current == 0 {
                // A new session: drop this user's sessions that expired.
                for (k, v) in scan_prefix(&kv, &start, "save session")? {
                    let expired = from_json::<SessionRecord>("session", &v)
                        .map_or(true, |s| !is_live(s.expires_at, now));
                    if expired {
                        remove(&mut kv, &k, "session")?;
                    }
                }
            }
            let version = current.saturating_add(1);
            let record = SessionRecord {
                version,
                data,
                expires_at: Timestamp(now.0.saturating_add(idle)),
            };
            put_json(&mut kv, &key, "session", &record)?;
            Ok(Done::Commit(Some(version)))
        })
        .await
    }

    async fn delete_session(&self, user: &UserName, id: &str) -> Result<(), StoreError> {
        let key = keys::session_key(&self.inner.prefix, user, id);
        self.write("delete session", move |inner, tx| {
            remove(&mut inner.kv(tx)?, &key, "session")?;
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn count_hit(
        &self,
        counter: &Counter<'_>,
        window: u64,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let key = keys::counter_key(&self.inner.prefix, counter);
        self.write("count hit", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let mut c = get_json::<CounterRecord, _>(&kv, &key, "counter")?
                .filter(|c| is_live(c.ends_at, now))
                .unwrap_or(CounterRecord {
                    count: 0,
                    ends_at: Timestamp(now.0.saturating_add(window.max(1))),
                });
            c.count = c.count.saturating_add(1);
            put_json(&mut kv, &key, "counter", &c)?;
            Ok(Done::Commit(c.count))
        })
        .await
    }

    async fn add_trusted(
        &self,
        user: &UserName,
        device: &TrustedDevice,
        now: Timestamp,
        account_version: u64,
    ) -> Result<bool, StoreError> {
        let user = user.clone();
        let device = device.clone();
        self.write("add trusted device", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let account: Option<Account> =
                get_json(&kv, &inner.key(&user, keys::ACCOUNT), "account")?;
            if account.map_or(0, |a| a.version) != account_version {
                return Ok(Done::Abort(false));
            }
            let key = inner.key(&user, keys::TRUSTED);
            let mut devices = read_devices(&kv, &key, &user)?;
            devices.retain(|d| d.id != device.id);
            devices.push(device);
            let devices = live_devices(devices, now);
            if devices.is_empty() {
                remove(&mut kv, &key, "trusted devices")?;
            } else {
                put_json(&mut kv, &key, "trusted devices", &devices)?;
            }
            Ok(Done::Commit(true))
        })
        .await
    }

    async fn list_trusted(
        &self,
        user: &UserName,
        now: Timestamp,
    ) -> Result<Vec<TrustedDevice>, StoreError> {
        let key = self.inner.key(user, keys::TRUSTED);
        let user = user.clone();
        self.read("list trusted devices", move |inner, tx| {
            let devices = read_devices(&inner.kv_read(tx)?, &key, &user)?;
            Ok(live_devices(devices, now))
        })
        .await
    }

    async fn revoke_trusted(&self, user: &UserName, id: Option<&str>) -> Result<usize, StoreError> {
        let key = self.inner.key(user, keys::TRUSTED);
        let id = id.map(str::to_string);
        let user = user.clone();
        self.write("revoke trusted devices", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            if id.is_none() {
                // All: the key goes, undecodable records with it (and counted, as the
                // Redis store counts its hash's fields).
                let stored = match kv.get(key.as_str()).map_err(|e| db_err("revoke", e))? {
                    Some(raw) => serde_json::from_slice::<Vec<serde_json::Value>>(raw.value())
                        .map_or(1, |v| v.len()),
                    None => 0,
                };
                remove(&mut kv, &key, "trusted devices")?;
                return Ok(Done::Commit(stored));
            }
            let mut devices = read_devices(&kv, &key, &user)?;
            let before = devices.len();
            match &id {
                Some(id) => devices.retain(|d| &d.id != id),
                None => devices.clear(),
            }
            let removed = before.saturating_sub(devices.len());
            if removed == 0 {
                return Ok(Done::Abort(0));
            }
            if devices.is_empty() {
                remove(&mut kv, &key, "trusted devices")?;
            } else {
                put_json(&mut kv, &key, "trusted devices", &devices)?;
            }
            Ok(Done::Commit(removed))
        })
        .await
    }

    async fn enqueue_helpdesk(&self, request: &HelpdeskRequest) -> Result<(), StoreError> {
        let request = request.clone();
        self.write("enqueue helpdesk", move |inner, tx| {
            let mut kv = inner.kv(tx)?;
            let start = format!("{}:", keys::helpdesk_key(&inner.prefix));
            // Drop requests that expired, taking the new request's time as now.
            for (k, v) in scan_prefix(&kv, &start, "enqueue helpdesk")? {
                let r: HelpdeskRequest = from_json("helpdesk request", &v)?;
                if !is_live(r.expires_at, request.requested_at) {
                    remove(&mut kv, &k, "helpdesk request")?;
                }
            }
            let key = keys::helpdesk_entry_key(&inner.prefix, &request.user);
            put_json(&mut kv, &key, "helpdesk request", &request)?;
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn list_helpdesk(&self, now: Timestamp) -> Result<Vec<HelpdeskRequest>, StoreError> {
        self.read("list helpdesk", move |inner, tx| {
            let kv = inner.kv_read(tx)?;
            let start = format!("{}:", keys::helpdesk_key(&inner.prefix));
            let mut out = Vec::new();
            for (_, v) in scan_prefix(&kv, &start, "list helpdesk")? {
                let r: HelpdeskRequest = from_json("helpdesk request", &v)?;
                if is_live(r.expires_at, now) {
                    out.push(r);
                }
            }
            out.sort_by(|a, b| (a.requested_at, &a.user).cmp(&(b.requested_at, &b.user)));
            Ok(out)
        })
        .await
    }

    async fn remove_helpdesk(&self, user: &UserName) -> Result<bool, StoreError> {
        let key = keys::helpdesk_entry_key(&self.inner.prefix, user);
        self.write("remove helpdesk", move |inner, tx| {
            let removed = remove(&mut inner.kv(tx)?, &key, "helpdesk request")?;
            Ok(if removed {
                Done::Commit(true)
            } else {
                Done::Abort(false)
            })
        })
        .await
    }

    async fn append_audits(
        &self,
        records: &[(Timestamp, &str)],
        keep: u64,
    ) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let records: Vec<(u64, String)> = records
            .iter()
            .map(|(at, record)| (at.0, (*record).to_owned()))
            .collect();
        self.write("append audit", move |inner, tx| {
            let records: Vec<(u64, &str)> =
                records.iter().map(|(at, r)| (*at, r.as_str())).collect();
            append_audit_records(inner, tx, &records, keep)?;
            Ok(Done::Commit(()))
        })
        .await
    }

    async fn read_audit(&self, since: Timestamp, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read("read audit", move |inner, tx| {
            let audit = inner.audit_read(tx)?;
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            for entry in audit
                .range((since.0, 0u64)..)
                .map_err(|e| db_err("read audit", e))?
            {
                let (_, v) = entry.map_err(|e| db_err("read audit", e))?;
                out.push(v.value().to_string());
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(any(test, feature = "conformance"))]
impl crate::store::conformance::CorruptTrusted for EmbeddedStore {
    async fn corrupt_trusted(&self, user: &UserName) {
        let key = self.inner.key(user, keys::TRUSTED);
        let written = self
            .write("corrupt trusted devices", move |inner, tx| {
                let mut kv = inner.kv(tx)?;
                let mut values: Vec<serde_json::Value> =
                    match kv.get(key.as_str()).map_err(|e| db_err("read", e))? {
                        Some(raw) => serde_json::from_slice(raw.value()).unwrap_or_default(),
                        None => Vec::new(),
                    };
                values.push(serde_json::json!({ "id": 5, "key_hash": null }));
                put_json(&mut kv, &key, "trusted devices", &values)?;
                Ok(Done::Commit(()))
            })
            .await;
        assert!(written.is_ok(), "writing the corrupt record: {written:?}");
    }
}

#[cfg(any(test, feature = "conformance"))]
impl crate::store::conformance::WriteRawAccount for EmbeddedStore {
    async fn write_raw_account(&self, user: &UserName, _version: u64, json: &str) {
        let key = self.inner.key(user, keys::ACCOUNT);
        let json = json.to_string();
        let written = self
            .write("raw account", move |inner, tx| {
                let mut kv = inner.kv(tx)?;
                kv.insert(key.as_str(), json.as_bytes())
                    .map_err(|e| db_err("write", e))?;
                Ok(Done::Commit(()))
            })
            .await;
        assert!(written.is_ok(), "writing the raw account: {written:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, T0};

    #[tokio::test]
    async fn conformance_in_memory() {
        let store = EmbeddedStore::in_memory().unwrap();
        conformance::run_all(&store, "mem").await;
        assert!(
            conformance::login_steps(&store, "mem-audited").await,
            "the embedded store appends the accept's audit record in the step"
        );
        conformance::corrupt_trusted_records(&store, "mem").await;
        conformance::old_account_records(&store, "mem").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn races_between_two_handles() {
        let a = EmbeddedStore::in_memory().unwrap();
        let b = a.clone();
        for round in 0..5 {
            conformance::run_races(&a, &b, &format!("race{round}")).await;
        }
    }

    #[tokio::test]
    async fn a_file_keeps_its_state_and_is_single_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let u = UserName::parse("alice").unwrap();
        {
            let store = EmbeddedStore::open(&path, "otpgate:").unwrap();
            assert!(
                store
                    .save_account(&u, 0, &Account::default())
                    .await
                    .unwrap()
            );
            store.accept_totp_step(&u, 42, T0).await.unwrap();
            let again = EmbeddedStore::open(&path, "otpgate:").err();
            assert!(
                matches!(again, Some(StoreError::Unavailable(ref m)) if m.contains("need Redis")),
                "a second open fails clearly: {again:?}"
            );
        }
        let store = EmbeddedStore::open(&path, "otpgate:").unwrap();
        let r = store.load(&u, T0).await.unwrap();
        assert_eq!(r.account.map(|a| a.version), Some(1));
        assert_eq!(r.last_totp_step, Some(42));
        // Another prefix in the same file is another store.
        drop(store);
        let other = EmbeddedStore::open(&path, "other:").unwrap();
        assert_eq!(other.load(&u, T0).await.unwrap().account, None);
    }

    #[tokio::test]
    async fn failure_counts_expire_thirty_days_after_the_last() {
        let store = EmbeddedStore::in_memory().unwrap();
        let u = UserName::parse("bob").unwrap();
        store.record_failure(&u, T0, 10, 900).await.unwrap();
        let later = Timestamp(T0.0 + FAILURES_TTL - 1);
        assert_eq!(store.load(&u, later).await.unwrap().failures, 1);
        let two = store.record_failure(&u, later, 10, 900).await.unwrap();
        assert_eq!(two.failures, 2, "a failure restarts the 30 days");
        let gone = Timestamp(later.0 + FAILURES_TTL);
        assert_eq!(store.load(&u, gone).await.unwrap().failures, 0);
        let fresh = store.record_failure(&u, gone, 10, 900).await.unwrap();
        assert_eq!(fresh.failures, 1, "counting starts again after 30 days");
    }

    #[tokio::test]
    async fn expired_challenges_are_swept_when_a_new_one_is_put() {
        let store = EmbeddedStore::in_memory().unwrap();
        let u = UserName::parse("carol").unwrap();
        for i in 0..5 {
            store
                .put_challenge(&u, &format!("old{i}"), b"x", 10, T0)
                .await
                .unwrap();
        }
        store
            .put_challenge(&u, "new", b"y", 10, Timestamp(T0.0 + 10))
            .await
            .unwrap();
        let start = keys::challenge_key_prefix("otpgate:", &u);
        let left = store
            .read("test", move |inner, tx| {
                scan_prefix(&inner.kv_read(tx)?, &start, "test")
            })
            .await
            .unwrap();
        assert_eq!(left.len(), 1, "only the new challenge is left");
    }
}
