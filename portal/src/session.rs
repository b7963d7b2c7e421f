//! Sessions, in this process's memory: a bounded map from a random id to a session
//! that a request locks for its whole duration (so two requests of one browser never
//! interleave), dropped after [`IDLE_TIMEOUT`] without use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otpgate_core::CoreError;
use otpgate_core::random::{Random, hex_id};
use otpgate_core::service::PendingLogin;
use otpgate_core::user::UserName;

/// A session unused this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Sessions held at once; past this, expired ones are purged, then new visitors wait.
pub const MAX_SESSIONS: usize = 20_000;

/// Where a visitor is in the login.
#[derive(Debug, Default)]
pub enum Stage {
    /// Not signed in.
    #[default]
    Anonymous,
    /// The password was verified; the second factor is awaited. The core's pending
    /// login is kept here and handed back to the flow with each answer.
    Password(PendingLogin),
    /// Signed in with the password alone, to set a factor up: the user had neither an
    /// app nor a notification address. Ends when a factor appears elsewhere; becomes
    /// [`Stage::Full`] when the user proves one here.
    Limited(Signed),
    /// Signed in with both factors (or a trusted browser).
    Full(Signed),
}

/// A signed-in user.
#[derive(Debug, Clone)]
pub struct Signed {
    pub user: UserName,
    /// In the configured operators' group.
    pub admin: bool,
}

/// One browser's session.
#[derive(Debug)]
pub struct Session {
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    pub stage: Stage,
    /// A message for the next page shown (already translated).
    pub notice: Option<String>,
}

struct Entry {
    session: Arc<tokio::sync::Mutex<Session>>,
    touched: Instant,
}

/// The sessions of this process.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

/// No room for another session.
#[derive(Debug)]
pub struct Full;

impl Sessions {
    /// The live session with this id, if any (touching it).
    pub fn get(&self, id: &str) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let expired = map
            .get(id)
            .is_some_and(|e| now.duration_since(e.touched) > IDLE_TIMEOUT);
        if expired {
            map.remove(id);
            return None;
        }
        map.get_mut(id).map(|e| {
            e.touched = now;
            e.session.clone()
        })
    }

    /// A new anonymous session with a fresh id and CSRF token.
    pub fn create(
        &self,
        random: &dyn Random,
    ) -> Result<(String, Arc<tokio::sync::Mutex<Session>>), CreateError> {
        let id = hex_id::<32>(random).map_err(CreateError::Random)?;
        let csrf = hex_id::<32>(random).map_err(CreateError::Random)?;
        let session = Arc::new(tokio::sync::Mutex::new(Session {
            csrf,
            stage: Stage::Anonymous,
            notice: None,
        }));
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            let now = Instant::now();
            map.retain(|_, e| now.duration_since(e.touched) <= IDLE_TIMEOUT);
            if map.len() >= MAX_SESSIONS {
                return Err(CreateError::Full(Full));
            }
        }
        map.insert(
            id.clone(),
            Entry {
                session: session.clone(),
                touched: Instant::now(),
            },
        );
        Ok((id, session))
    }

    /// Forgets a session.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// How many are held (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Why no session could be made.
#[derive(Debug)]
pub enum CreateError {
    Full(Full),
    Random(CoreError),
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::Full(Full) => write!(f, "{MAX_SESSIONS} sessions are held"),
            CreateError::Random(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpgate_core::random::OsRandom;

    #[test]
    fn sessions_are_found_by_id_and_forgotten() {
        let sessions = Sessions::default();
        let (id, _) = sessions.create(&OsRandom).unwrap();
        let (other, _) = sessions.create(&OsRandom).unwrap();
        assert_ne!(id, other);
        assert_eq!(id.len(), 64);
        assert!(sessions.get(&id).is_some());
        assert!(sessions.get("nope").is_none());
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
        assert_eq!(sessions.len(), 1);
    }
}
