//! Sessions, in the store: any instance serves any request.
//!
//! - An **anonymous** visitor costs no server state. The CSRF token of an anonymous page
//!   is a signed double-submit cookie: a random nonce and its keyed hash under a key
//!   derived from the master key ([`AnonCsrf`]); a form is accepted when its token is
//!   the cookie's and the hash checks. A flood of visitors fills nothing.
//! - A server-side session is made only when the password step succeeds. The browser
//!   holds `<user, hex>.<256-bit random token>` ([`SessionRef`]); the store holds the
//!   session under the user's hash tag and a keyed hash of the token, sealed by the
//!   core (AES-256-GCM) with the user and that hash as associated data, and it expires
//!   after [`IDLE_TIMEOUT`] without use.
//! - Each change is saved with the version it read (compare-and-set): of two
//!   concurrent posts of one browser, the second to save is refused and shown a
//!   "try again" page, so their login steps never interleave in the session.

use std::time::Duration;

use data_encoding::HEXLOWER;
use otpgate_core::CoreError;
use otpgate_core::random::{Random, hex_id};
use otpgate_core::service::PendingLogin;
use otpgate_core::user::UserName;
use serde::{Deserialize, Serialize};

/// A session unused this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where a visitor is in the login.
#[derive(Debug, Default, Serialize, Deserialize)]
pub enum Stage {
    /// Not signed in (never stored).
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

impl Stage {
    /// The user this stage is about, if any.
    pub fn user(&self) -> Option<&UserName> {
        match self {
            Stage::Anonymous => None,
            Stage::Password(p) => Some(p.user()),
            Stage::Limited(s) | Stage::Full(s) => Some(&s.user),
        }
    }
}

/// A signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signed {
    pub user: UserName,
    /// In the configured operators' group.
    pub admin: bool,
}

/// One browser's session.
#[derive(Debug, Serialize, Deserialize)]
pub struct Session {
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    pub stage: Stage,
    /// A message for the next page shown (already translated).
    pub notice: Option<String>,
}

/// What the session cookie names: the user (so the store key, under the user's hash
/// tag, can be found) and the random token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub user: UserName,
    pub token: String,
}

impl SessionRef {
    /// A fresh reference for `user`.
    pub fn new(user: UserName, random: &dyn Random) -> Result<Self, CoreError> {
        Ok(Self {
            user,
            token: hex_id::<32>(random)?,
        })
    }

    /// From a cookie value; `None` unless well-formed.
    pub fn parse(value: &str) -> Option<Self> {
        let (user, token) = value.split_once('.')?;
        if user.is_empty() || user.len() > 512 || !token_ok(token) {
            return None;
        }
        let name = HEXLOWER.decode(user.as_bytes()).ok()?;
        let user = UserName::parse(std::str::from_utf8(&name).ok()?).ok()?;
        Some(Self {
            user,
            token: token.to_string(),
        })
    }

    /// The cookie value.
    pub fn cookie_value(&self) -> String {
        format!(
            "{}.{}",
            HEXLOWER.encode(self.user.as_str().as_bytes()),
            self.token
        )
    }
}

/// A well-formed random token (64 lowercase hex digits), as the portal makes them.
pub fn token_ok(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The signed double-submit CSRF token of anonymous pages: `<nonce>.<mac>`.
pub struct AnonCsrf;

/// The purpose label of the anonymous CSRF token's keyed hash.
const ANON_CSRF: &str = "portal anonymous csrf";

impl AnonCsrf {
    /// A new token, signed with `mac`.
    pub fn make(random: &dyn Random, mac: impl Fn(&[u8]) -> String) -> Result<String, CoreError> {
        let nonce = hex_id::<16>(random)?;
        let tag = mac(nonce.as_bytes());
        Ok(format!("{nonce}.{tag}"))
    }

    /// Whether `token` is one this portal signed.
    pub fn valid(token: &str, mac: impl Fn(&[u8]) -> String) -> bool {
        let Some((nonce, tag)) = token.split_once('.') else {
            return false;
        };
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        let expected = mac(nonce.as_bytes());
        otpgate_core::secret::ct_eq(expected.as_bytes(), tag.as_bytes())
    }

    /// The keyed hash for these tokens, from the core's door keys.
    pub fn mac(core: &otpgate_core::Core) -> impl Fn(&[u8]) -> String + '_ {
        move |nonce| core.door_mac(ANON_CSRF, nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpgate_core::random::OsRandom;

    fn mac(data: &[u8]) -> String {
        format!("{:02x}{}", data.len(), "0".repeat(62))
    }

    #[test]
    fn session_refs_round_trip_and_refuse_junk() {
        let alice = UserName::parse("alice").unwrap();
        let r = SessionRef::new(alice.clone(), &OsRandom).unwrap();
        let value = r.cookie_value();
        assert!(value.starts_with("616c696365."));
        assert_eq!(SessionRef::parse(&value), Some(r.clone()));
        let other = SessionRef::new(alice, &OsRandom).unwrap();
        assert_ne!(other.token, r.token);
        for bad in [
            "",
            ".",
            "616c696365",
            "616c696365.",
            "zz.0000000000000000000000000000000000000000000000000000000000000000",
            "616c696365.000000000000000000000000000000000000000000000000000000000000000",
            "616c696365.000000000000000000000000000000000000000000000000000000000000000G",
            ".0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(SessionRef::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn anonymous_tokens_check_their_signature() {
        let t = AnonCsrf::make(&OsRandom, mac).unwrap();
        assert!(AnonCsrf::valid(&t, mac));
        let (nonce, _) = t.split_once('.').unwrap();
        assert!(!AnonCsrf::valid(
            &format!("{nonce}.{}", "1".repeat(64)),
            mac
        ));
        assert!(!AnonCsrf::valid("x", mac));
        assert!(!AnonCsrf::valid(&format!("short.{}", mac(b"short")), mac));
    }

    #[test]
    fn stages_survive_a_round_through_json() {
        let s = Session {
            csrf: "c".into(),
            stage: Stage::Full(Signed {
                user: UserName::parse("bob").unwrap(),
                admin: true,
            }),
            notice: Some("n".into()),
        };
        let back: Session = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back.stage.user().unwrap().as_str(), "bob");
        assert!(matches!(
            back.stage,
            Stage::Full(Signed { admin: true, .. })
        ));
    }
}
