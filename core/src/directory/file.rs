//! Users file directory. Placeholder: implemented in its own change.

use std::path::Path;

use super::{DirectoryBackend, DirectoryError, PasswordCheck, UserEntry};
use crate::user::UserName;

/// A TOML users file with argon2 hashes.
pub struct FileDirectory {}

impl FileDirectory {
    /// Reads the file.
    pub fn load(_path: &Path) -> Result<Self, DirectoryError> {
        Ok(Self {})
    }
}

impl DirectoryBackend for FileDirectory {
    async fn ping(&self) -> Result<(), DirectoryError> {
        Ok(())
    }
    async fn lookup(&self, _user: &UserName) -> Result<Option<UserEntry>, DirectoryError> {
        Err(DirectoryError::Unavailable(
            "users file is not implemented yet".into(),
        ))
    }
    async fn check_password(
        &self,
        _user: &UserName,
        _password: &[u8],
    ) -> Result<PasswordCheck, DirectoryError> {
        Err(DirectoryError::Unavailable(
            "users file is not implemented yet".into(),
        ))
    }
}
