//! User names (checked and made canonical once; defined in `otpgate-config` so the PAM
//! module in server mode can use them without the core) and the user state.

use serde::{Deserialize, Serialize};

pub use otpgate_config::user_name::{MAX_USER_NAME, UserName, UserNameError};

/// The life of a user's second factor (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserState {
    /// The directory entry does not match `activated_filter`.
    NotActivated,
    /// Nothing registered yet.
    New,
    /// A confirmed notification address, no app.
    EmailRegistered,
    /// An app secret was issued and awaits its first code.
    AppPending,
    /// An app is enrolled.
    AppEnrolled,
}

impl UserState {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::NotActivated => "not-activated",
            UserState::New => "new",
            UserState::EmailRegistered => "email-registered",
            UserState::AppPending => "app-pending",
            UserState::AppEnrolled => "app-enrolled",
        }
    }
}
