//! A users file: TOML with argon2 password hashes, for `otpgate demo` and single hosts.
//!
//! ```toml
//! [[users]]
//! name = "alice"                       # canonicalised like every user name
//! password_hash = "$argon2id$v=19$..." # PHC string (see `hash_password`)
//! mail = "alice@example.org"           # optional
//! groups = ["vpn-staff"]               # optional
//! activated = true                     # optional, default true
//! display_name = "Alice Example"       # optional
//! ```
//!
//! Unknown keys, malformed hashes and duplicate names are refused when the file is
//! loaded, naming the file and the user. Verification runs argon2 on the blocking pool;
//! an unknown user costs one verification too, so timing does not tell who exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::{DirectoryBackend, DirectoryError, PasswordCheck, UserEntry, verified};
use crate::error::Refusal;
use crate::user::UserName;

/// The file as written. Not `Debug`: it holds password hashes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    users: Vec<RawUser>,
}

/// One `[[users]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password_hash: String,
    mail: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default = "default_activated")]
    activated: bool,
    display_name: Option<String>,
}

fn default_activated() -> bool {
    true
}

/// One user: the entry the directory shows, and the hash that checks the password.
struct FileUser {
    entry: UserEntry,
    /// A PHC string, checked to parse as argon2 when the file was loaded.
    password_hash: String,
}

/// A TOML users file with argon2 hashes, read once.
pub struct FileDirectory {
    /// Where the file was read from, for error messages.
    path: PathBuf,
    /// By canonical name.
    users: HashMap<UserName, FileUser>,
    /// Verified for unknown users so that they cost what a known user costs. Made with
    /// the parameters of the file's first user, so the cost matches the typical entry.
    dummy_hash: String,
}

impl FileDirectory {
    /// Reads and validates the file. A malformed file, a malformed or non-argon2 hash, or
    /// a duplicate name is a [`DirectoryError::Protocol`] naming the file and the user.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            DirectoryError::Protocol(format!("cannot read users file {}: {e}", path.display()))
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a users file; `path` only names it in errors.
    fn parse(path: &Path, text: &str) -> Result<Self, DirectoryError> {
        let bad = |what: String| {
            DirectoryError::Protocol(format!("users file {}: {what}", path.display()))
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut users = HashMap::with_capacity(raw.users.len());
        let mut dummy_params = None;
        for u in raw.users {
            let name =
                UserName::parse(&u.name).map_err(|e| bad(format!("user `{}`: {e}", u.name)))?;
            let (algorithm, params) = argon2_of(&u.password_hash)
                .map_err(|e| bad(format!("user `{name}`: password_hash: {e}")))?;
            dummy_params.get_or_insert((algorithm, params));
            let entry = UserEntry {
                name: name.clone(),
                dn: name.as_str().to_owned(),
                activated: u.activated,
                mail: u.mail,
                groups: u.groups,
                display_name: u.display_name,
            };
            let user = FileUser {
                entry,
                password_hash: u.password_hash,
            };
            if users.insert(name.clone(), user).is_some() {
                return Err(bad(format!("user `{name}` is listed twice")));
            }
        }
        let (algorithm, params) = dummy_params.unwrap_or((Algorithm::Argon2id, Params::default()));
        let dummy_hash = hash_with(
            &Argon2::new(algorithm, Version::V0x13, params),
            b"no such user: a password nobody has",
        )?;
        Ok(Self {
            path: path.to_owned(),
            users,
            dummy_hash,
        })
    }

    /// How many users the file holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file holds no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// The argon2 variant and parameters of a PHC string, or why it is not a usable argon2
/// hash.
fn argon2_of(phc: &str) -> Result<(Algorithm, Params), String> {
    let hash = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    let algorithm = Algorithm::try_from(hash.algorithm)
        .map_err(|_| format!("`{}` is not an argon2 algorithm", hash.algorithm))?;
    let params = Params::try_from(&hash).map_err(|e| e.to_string())?;
    if hash.hash.is_none() || hash.salt.is_none() {
        return Err("the hash has no salt or no output".into());
    }
    Ok((algorithm, params))
}

fn hash_with(argon2: &Argon2<'_>, password: &[u8]) -> Result<String, DirectoryError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| DirectoryError::Protocol(format!("cannot hash a password: {e}")))
}

/// Hashes a password for a users file: argon2id with the crate's default parameters and
/// a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, DirectoryError> {
    hash_with(&Argon2::default(), password.as_bytes())
}

/// Verifies `password` against a PHC string. `Ok(false)` is a wrong password; an error
/// is a hash that cannot be used (the caller fails closed).
fn verify(phc: &str, password: &[u8]) -> Result<bool, String> {
    let hash = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    match Argon2::default().verify_password(password, &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

impl DirectoryBackend for FileDirectory {
    async fn ping(&self) -> Result<(), DirectoryError> {
        Ok(())
    }

    async fn lookup(&self, user: &UserName) -> Result<Option<UserEntry>, DirectoryError> {
        Ok(self.users.get(user).map(|u| u.entry.clone()))
    }

    async fn check_password(
        &self,
        user: &UserName,
        password: &[u8],
    ) -> Result<PasswordCheck, DirectoryError> {
        if password.is_empty() {
            return Ok(PasswordCheck::Refused(Refusal::EmptyPassword));
        }
        let known = self.users.get(user);
        let phc = known.map_or(&self.dummy_hash, |u| &u.password_hash).clone();
        let password = Zeroizing::new(password.to_vec());
        let outcome = tokio::task::spawn_blocking(move || verify(&phc, &password))
            .await
            .map_err(|e| DirectoryError::Protocol(format!("password verification failed: {e}")))?
            .map_err(|e| {
                DirectoryError::Protocol(format!(
                    "users file {}: user `{user}`: password_hash: {e}",
                    self.path.display()
                ))
            })?;
        let Some(known) = known else {
            return Ok(PasswordCheck::Refused(Refusal::UnknownUser));
        };
        if !outcome {
            return Ok(PasswordCheck::Refused(Refusal::WrongPassword));
        }
        if !known.entry.activated {
            return Ok(PasswordCheck::Refused(Refusal::NotActivated));
        }
        Ok(PasswordCheck::Verified(verified(known.entry.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Cheap parameters so the tests run quickly; verification reads them from the hash.
    fn quick_hash(password: &str) -> String {
        let params = Params::new(1024, 1, 1, None).unwrap();
        hash_with(
            &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            password.as_bytes(),
        )
        .unwrap()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn sample() -> String {
        format!(
            r#"
[[users]]
name = "Alice"
password_hash = "{}"
mail = "alice@example.org"
groups = ["vpn-staff", "otp-admins"]
display_name = "Alice Example"

[[users]]
name = "carol"
password_hash = "{}"
activated = false
"#,
            quick_hash("alice-pw"),
            quick_hash("carol-pw")
        )
    }

    fn name(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn verifies_refuses_and_looks_up() {
        let f = write(&sample());
        let dir = FileDirectory::load(f.path()).unwrap();
        assert_eq!(dir.len(), 2);

        let PasswordCheck::Verified(proof) = dir
            .check_password(&name("alice"), b"alice-pw")
            .await
            .unwrap()
        else {
            panic!("alice's password is right");
        };
        assert_eq!(proof.user().as_str(), "alice");
        assert_eq!(proof.entry().mail.as_deref(), Some("alice@example.org"));
        assert_eq!(proof.entry().groups, ["vpn-staff", "otp-admins"]);
        assert!(proof.entry().activated);

        let refused = |c: PasswordCheck| match c {
            PasswordCheck::Refused(r) => r,
            PasswordCheck::Verified(_) => panic!("verified"),
        };
        let check = |u: &'static str, p: &'static [u8]| dir.check_password_owned(u, p);
        assert_eq!(
            refused(check("alice", b"wrong").await),
            Refusal::WrongPassword
        );
        assert_eq!(refused(check("alice", b"").await), Refusal::EmptyPassword);
        assert_eq!(
            refused(check("mallory", b"alice-pw").await),
            Refusal::UnknownUser
        );
        assert_eq!(
            refused(check("carol", b"carol-pw").await),
            Refusal::NotActivated
        );
        assert_eq!(
            refused(check("carol", b"wrong").await),
            Refusal::WrongPassword
        );

        let carol = dir.lookup(&name("carol")).await.unwrap().unwrap();
        assert!(!carol.activated);
        assert_eq!(carol.dn, "carol");
        assert!(carol.groups.is_empty());
        assert!(dir.lookup(&name("mallory")).await.unwrap().is_none());
        dir.ping().await.unwrap();
    }

    impl FileDirectory {
        async fn check_password_owned(&self, user: &str, password: &[u8]) -> PasswordCheck {
            self.check_password(&name(user), password).await.unwrap()
        }
    }

    fn load_err(text: &str) -> String {
        let f = write(text);
        match FileDirectory::load(f.path()) {
            Ok(_) => panic!("loaded: {text}"),
            Err(DirectoryError::Protocol(m)) => {
                assert!(
                    m.contains(&f.path().display().to_string()),
                    "names the file: {m}"
                );
                m
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn refuses_malformed_files() {
        let h = quick_hash("x");
        let m = load_err(&format!(
            "[[users]]\nname = \"a\"\npassword_hash = \"{h}\"\nshell = \"/bin/sh\"\n"
        ));
        assert!(m.contains("shell"), "{m}");
        let m = load_err("[[users]]\nname = \"bob\"\npassword_hash = \"$argon2id$nonsense\"\n");
        assert!(m.contains("bob"), "{m}");
        let m = load_err(
            "[[users]]\nname = \"bob\"\npassword_hash = \"$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E\"\n",
        );
        assert!(m.contains("bob") && m.contains("argon2"), "{m}");
        let m = load_err(&format!(
            "[[users]]\nname = \"Bob\"\npassword_hash = \"{h}\"\n[[users]]\nname = \"bob\"\npassword_hash = \"{h}\"\n"
        ));
        assert!(m.contains("twice"), "{m}");
        let m = load_err(&format!(
            "[[users]]\nname = \"bad name\"\npassword_hash = \"{h}\"\n"
        ));
        assert!(m.contains("bad name"), "{m}");
        load_err("users = 3");
        assert!(matches!(
            FileDirectory::load(Path::new("/nonexistent/users.toml")),
            Err(DirectoryError::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn hash_password_round_trips() {
        let phc = hash_password("s3cret").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert_ne!(phc, hash_password("s3cret").unwrap(), "salted");
        let f = write(&format!(
            "[[users]]\nname = \"dave\"\npassword_hash = \"{phc}\"\n"
        ));
        let dir = FileDirectory::load(f.path()).unwrap();
        assert!(matches!(
            dir.check_password(&name("dave"), b"s3cret").await.unwrap(),
            PasswordCheck::Verified(_)
        ));
        // An empty file is a valid, empty directory.
        let empty = write("");
        assert!(FileDirectory::load(empty.path()).unwrap().is_empty());
    }
}
