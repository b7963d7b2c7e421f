//! Door sessions in the store, sealed, so that any instance serves any request and the
//! store never holds a usable proof.
//!
//! A browser holds a random token (256 bits). The store knows the session only under
//! a keyed hash of that token (`Keys::door_mac`), inside the user's hash tag; the value
//! is encrypted with AES-256-GCM under a key derived from the master key, with the user
//! and the hashed id as associated data, so a record copied to another key does not
//! open. Someone who reads the store learns which users have sessions, not how to use
//! them. Each save names the version it read (compare-and-set), so two requests of one
//! browser never interleave their changes: the later save is refused.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Core;
use crate::error::CoreError;
use crate::store::{Counter, StoreBackend};
use crate::user::UserName;

/// The purpose label of a session id's keyed hash.
const SESSION_ID: &str = "session-id";

/// A session read back from the store: its version (to name when saving) and value.
#[derive(Debug)]
pub struct LoadedSession<T> {
    pub version: u64,
    pub value: T,
}

impl Core {
    /// A keyed hash (hex) for a door, one per `purpose` (see [`crate::secret::Keys::door_mac`]).
    pub fn door_mac(&self, purpose: &str, data: &[u8]) -> String {
        self.keys.door_mac(purpose, data)
    }

    fn session_aad(user: &UserName, id_hash: &str) -> Vec<u8> {
        format!("otpgate:session:{}:{id_hash}", user.as_str()).into_bytes()
    }

    /// The session of `user` under the browser's `token`, moving its idle expiry on.
    /// `None` when there is none, it expired, or it does not open (logged: a changed
    /// master key, or a record that was tampered with).
    ///
    /// # Errors
    ///
    /// A store failure: the door fails closed.
    pub async fn load_session<T: DeserializeOwned>(
        &self,
        user: &UserName,
        token: &str,
        idle: Duration,
    ) -> Result<Option<LoadedSession<T>>, CoreError> {
        let id = self.keys.door_mac(SESSION_ID, token.as_bytes());
        let Some(stored) = self
            .store
            .load_session(user, &id, idle.as_secs(), self.now())
            .await?
        else {
            return Ok(None);
        };
        let aad = Self::session_aad(user, &id);
        let Some(plain) = self.keys.open_session(&aad, &stored.data) else {
            tracing::warn!(%user, "a stored session does not open; it is dropped");
            self.store.delete_session(user, &id).await?;
            return Ok(None);
        };
        match serde_json::from_slice(&plain) {
            Ok(value) => Ok(Some(LoadedSession {
                version: stored.version,
                value,
            })),
            Err(e) => {
                tracing::warn!(%user, "a stored session cannot be read ({e}); it is dropped");
                self.store.delete_session(user, &id).await?;
                Ok(None)
            }
        }
    }

    /// Saves the session of `user` under `token` if the stored version is `version` (0:
    /// a new session). Returns the new version, or `None` when another request saved
    /// first (nothing changed).
    ///
    /// # Errors
    ///
    /// A store failure: the door fails closed.
    pub async fn save_session<T: Serialize>(
        &self,
        user: &UserName,
        token: &str,
        version: u64,
        value: &T,
        idle: Duration,
    ) -> Result<Option<u64>, CoreError> {
        let id = self.keys.door_mac(SESSION_ID, token.as_bytes());
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(value).map_err(|e| CoreError::Internal(e.to_string()))?,
        );
        let sealed =
            self.keys
                .seal_session(&Self::session_aad(user, &id), &plain, self.random.as_ref())?;
        Ok(self
            .store
            .save_session(user, &id, version, &sealed, idle.as_secs(), self.now())
            .await?)
    }

    /// Ends the session of `user` under `token`.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn delete_session(&self, user: &UserName, token: &str) -> Result<(), CoreError> {
        let id = self.keys.door_mac(SESSION_ID, token.as_bytes());
        Ok(self.store.delete_session(user, &id).await?)
    }

    /// Counts a hit on a fixed-window counter in the store; returns the count in the
    /// window, this hit included.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn count_hit(&self, counter: &Counter<'_>, window: u64) -> Result<u64, CoreError> {
        Ok(self.store.count_hit(counter, window, self.now()).await?)
    }
}
