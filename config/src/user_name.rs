//! User names as they enter from any door, checked and made canonical once. They live
//! here, in the crate every door already reads its settings with, so that the PAM
//! module in server mode can check a name without linking the core.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest accepted user name, in bytes.
pub const MAX_USER_NAME: usize = 128;

/// A user name: 1..=128 bytes of UTF-8 with no whitespace and no control characters,
/// lower-cased. LDAP matches `uid` case-insensitively and ignores surrounding spaces, so
/// without this `Alice` and `alice ` would be one account with two replay counters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

/// Why a user name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserNameError {
    /// Empty.
    #[error("the user name is empty")]
    Empty,
    /// Longer than [`MAX_USER_NAME`] bytes.
    #[error("the user name is longer than {MAX_USER_NAME} bytes")]
    TooLong,
    /// Not UTF-8.
    #[error("the user name is not UTF-8")]
    NotUtf8,
    /// Contains whitespace, NUL or another control character.
    #[error("the user name contains whitespace or a control character")]
    BadCharacter,
}

impl UserName {
    /// Checks and canonicalises a name.
    pub fn parse(name: &str) -> Result<Self, UserNameError> {
        if name.is_empty() {
            return Err(UserNameError::Empty);
        }
        if name.len() > MAX_USER_NAME {
            return Err(UserNameError::TooLong);
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UserNameError::BadCharacter);
        }
        Ok(Self(name.to_lowercase()))
    }

    /// Checks bytes from the wire (RADIUS User-Name, PAM).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, UserNameError> {
        if bytes.len() > MAX_USER_NAME {
            return Err(UserNameError::TooLong);
        }
        Self::parse(std::str::from_utf8(bytes).map_err(|_| UserNameError::NotUtf8)?)
    }

    /// The canonical name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = UserNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<UserName> for String {
    fn from(u: UserName) -> String {
        u.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_and_bounded() {
        assert_eq!(UserName::parse("Alice").unwrap().as_str(), "alice");
        assert_eq!(
            UserName::parse("weird*(user)\\").unwrap().as_str(),
            "weird*(user)\\"
        );
        assert_eq!(UserName::parse(""), Err(UserNameError::Empty));
        assert_eq!(UserName::parse("alice "), Err(UserNameError::BadCharacter));
        assert_eq!(UserName::parse("al\0ice"), Err(UserNameError::BadCharacter));
        assert_eq!(UserName::parse("al\nice"), Err(UserNameError::BadCharacter));
        assert_eq!(
            UserName::parse(&"a".repeat(129)),
            Err(UserNameError::TooLong)
        );
        assert_eq!(
            UserName::from_bytes(&[0xff, 0xfe]),
            Err(UserNameError::NotUtf8)
        );
    }
}
