//! Secrets loaded from files or environment variables, never from the main file.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

/// Secret bytes: zeroed on drop, and `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps bytes that are secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret itself; keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text, for passwords.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

/// How strictly a secret file's permissions are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileMode {
    /// Refused when readable or writable by others (a group may read it: `root:otpgate 0640`).
    NotForOthers,
    /// Refused when the group or others have any access (the master key).
    OwnerOnly,
}

/// Reads a secret file, refusing permissions that expose it, and strips one trailing
/// newline (`\n` or `\r\n`), which is never part of the secret.
pub(crate) fn read_secret_file(
    path: &Path,
    mode: FileMode,
    check_permissions: bool,
    strip_newline: bool,
) -> Result<SecretBytes, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if check_permissions {
        use std::os::unix::fs::PermissionsExt;
        let bits = meta.permissions().mode() & 0o777;
        let forbidden = match mode {
            FileMode::NotForOthers => 0o007,
            FileMode::OwnerOnly => 0o077,
        };
        if bits & forbidden != 0 {
            let who = match mode {
                FileMode::NotForOthers => "others",
                FileMode::OwnerOnly => "group or others",
            };
            return Err(format!(
                "{} has mode {bits:o}, which lets {who} at it; run `chmod {} {}`",
                path.display(),
                if mode == FileMode::OwnerOnly {
                    "600"
                } else {
                    "640"
                },
                path.display()
            ));
        }
    }
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if strip_newline && bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let secret = SecretBytes::new(bytes.clone());
    bytes.zeroize();
    Ok(secret)
}

/// Where a secret comes from: exactly one of `*_file` and `*_env`.
pub(crate) struct SecretSource<'a> {
    pub file: Option<&'a PathBuf>,
    pub env: Option<&'a String>,
}

impl SecretSource<'_> {
    pub(crate) fn load(
        &self,
        mode: FileMode,
        opts: &crate::LoadOptions,
    ) -> Result<Option<SecretBytes>, String> {
        match (self.file, self.env) {
            (Some(_), Some(_)) => Err("give either the `_file` or the `_env` key, not both".into()),
            (Some(path), None) => {
                read_secret_file(path, mode, opts.check_permissions, true).map(Some)
            }
            (None, Some(var)) => {
                if !opts.allow_env_secrets {
                    return Err(format!(
                        "secrets from environment variables (`{var}`) are not allowed here; use a root-owned file"
                    ));
                }
                let value = std::env::var(var)
                    .map_err(|_| format!("environment variable `{var}` is not set"))?;
                Ok(Some(SecretBytes::new(value.into_bytes())))
            }
            (None, None) => Ok(None),
        }
    }
}
