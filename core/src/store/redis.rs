//! Redis store. Placeholder: implemented in its own change.

use super::*;

/// Redis store.
pub struct RedisStore {}

impl RedisStore {
    /// Connects.
    pub async fn connect(
        _target: &otpgate_config::RedisTarget,
        _prefix: &str,
        _timeout: std::time::Duration,
    ) -> Result<Self, StoreError> {
        Ok(Self {})
    }
}

impl StoreBackend for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn load(&self, _user: &UserName, _now: Timestamp) -> Result<UserRecord, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn save_account(
        &self,
        _user: &UserName,
        _expected_version: u64,
        _account: &Account,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn accept_totp_step(
        &self,
        _user: &UserName,
        _step: u64,
        _now: Timestamp,
    ) -> Result<StepOutcome, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn record_failure(
        &self,
        _user: &UserName,
        _now: Timestamp,
        _max_failures: u32,
        _lock_for: u64,
    ) -> Result<FailureOutcome, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn clear_failures(&self, _user: &UserName) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn put_code(
        &self,
        _user: &UserName,
        _slot: CodeSlot,
        _code: &StoredCode,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn consume_code(
        &self,
        _user: &UserName,
        _slot: CodeSlot,
        _hash: &str,
        _now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn delete_code(&self, _user: &UserName, _slot: CodeSlot) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn peek_code(
        &self,
        _user: &UserName,
        _slot: CodeSlot,
        _now: Timestamp,
    ) -> Result<Option<StoredCode>, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn put_challenge(
        &self,
        _user: &UserName,
        _id: &str,
        _data: &[u8],
        _ttl: u64,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn answer_challenge(
        &self,
        _user: &UserName,
        _id: &str,
        _max_answers: u32,
        _now: Timestamp,
    ) -> Result<Option<ChallengeAnswer>, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn delete_challenge(&self, _user: &UserName, _id: &str) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn add_trusted(
        &self,
        _user: &UserName,
        _device: &TrustedDevice,
        _now: Timestamp,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn list_trusted(
        &self,
        _user: &UserName,
        _now: Timestamp,
    ) -> Result<Vec<TrustedDevice>, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn is_trusted(
        &self,
        _user: &UserName,
        _key_hash: &str,
        _now: Timestamp,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn revoke_trusted(
        &self,
        _user: &UserName,
        _id: Option<&str>,
    ) -> Result<usize, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn enqueue_helpdesk(&self, _request: &HelpdeskRequest) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn list_helpdesk(&self, _now: Timestamp) -> Result<Vec<HelpdeskRequest>, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn remove_helpdesk(&self, _user: &UserName) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn append_audit(
        &self,
        _at: Timestamp,
        _record: &str,
        _keep: u64,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
    async fn read_audit(
        &self,
        _since: Timestamp,
        _limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        Err(StoreError::Unavailable("not implemented yet".into()))
    }
}
