//! LDAP directory (ldap3). Placeholder: implemented in its own change.

use super::{DirectoryBackend, DirectoryError, PasswordCheck, UserEntry};
use crate::user::UserName;

/// LDAP with connection reuse and failover.
pub struct LdapDirectory {
    _config: otpgate_config::LdapConfig,
}

impl LdapDirectory {
    /// Connects the service account.
    pub async fn connect(config: &otpgate_config::LdapConfig) -> Result<Self, DirectoryError> {
        Ok(Self {
            _config: config.clone(),
        })
    }
}

impl DirectoryBackend for LdapDirectory {
    async fn ping(&self) -> Result<(), DirectoryError> {
        Err(DirectoryError::Unavailable(
            "LDAP is not implemented yet".into(),
        ))
    }
    async fn lookup(&self, _user: &UserName) -> Result<Option<UserEntry>, DirectoryError> {
        Err(DirectoryError::Unavailable(
            "LDAP is not implemented yet".into(),
        ))
    }
    async fn check_password(
        &self,
        _user: &UserName,
        _password: &[u8],
    ) -> Result<PasswordCheck, DirectoryError> {
        Err(DirectoryError::Unavailable(
            "LDAP is not implemented yet".into(),
        ))
    }
}
