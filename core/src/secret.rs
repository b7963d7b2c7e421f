//! Secrets at rest: TOTP secrets sealed with AES-256-GCM (the user name as associated
//! data, so a sealed secret copied to another user does not open), and keyed hashes of
//! one-time codes and device identifiers. All keys are derived from the 32-byte master
//! key with HMAC-SHA256 and a label, so one key file serves every purpose without one
//! use weakening another.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use data_encoding::{BASE32_NOPAD, BASE64, HEXLOWER};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::CoreError;
use crate::random::{self, Random};
use crate::store::SealedSecret;
use crate::user::UserName;

type HmacSha256 = Hmac<Sha256>;

/// Length of a TOTP secret: 160 bits, as RFC 4226 recommends for HMAC-SHA1.
pub const TOTP_SECRET_LEN: usize = 20;

/// A TOTP secret in the clear: zeroed on drop, never printed.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl TotpSecret {
    /// A fresh 160-bit secret.
    pub fn generate(random: &dyn Random) -> Result<Self, CoreError> {
        let mut bytes = Zeroizing::new(vec![0u8; TOTP_SECRET_LEN]);
        random.fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Wraps known bytes (tests, RFC vectors).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// The raw key, for HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Base32 without padding, as authenticator apps expect.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(&self.0))
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

/// Keys derived from the master key.
pub struct Keys {
    seal: Zeroizing<[u8; 32]>,
    codes: Zeroizing<[u8; 32]>,
    devices: Zeroizing<[u8; 32]>,
    sessions: Zeroizing<[u8; 32]>,
    doors: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    #[allow(clippy::expect_used)] // HMAC takes keys of any length: this never fails
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(&[0]);
        }
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl Keys {
    /// Derives the keys from the 32-byte master key.
    pub fn derive(master: &[u8]) -> Result<Self, CoreError> {
        if master.len() != 32 {
            return Err(CoreError::Config(format!(
                "the master key must be 32 bytes, not {}",
                master.len()
            )));
        }
        Ok(Self {
            seal: Zeroizing::new(hmac(master, &[b"otpgate v1 totp-seal"])),
            codes: Zeroizing::new(hmac(master, &[b"otpgate v1 code-hash"])),
            devices: Zeroizing::new(hmac(master, &[b"otpgate v1 device-hash"])),
            sessions: Zeroizing::new(hmac(master, &[b"otpgate v1 session-seal"])),
            doors: Zeroizing::new(hmac(master, &[b"otpgate v1 door-mac"])),
        })
    }

    fn aad(user: &UserName) -> Vec<u8> {
        format!("otpgate:totp:{}", user.as_str()).into_bytes()
    }

    /// A pooled hardware token's associated data: the serial, under a label of its own
    /// (`otpgate:pool:`), so a pooled secret never opens as a user's and back.
    fn pool_aad(serial: &str) -> Vec<u8> {
        format!("otpgate:pool:{serial}").into_bytes()
    }

    /// Encrypts a TOTP secret for `user`.
    pub fn seal(
        &self,
        user: &UserName,
        secret: &TotpSecret,
        random: &dyn Random,
    ) -> Result<SealedSecret, CoreError> {
        self.seal_with(&Self::aad(user), secret, random)
    }

    /// Encrypts a hardware token's secret for the pool, bound to its serial.
    pub fn seal_for_pool(
        &self,
        serial: &str,
        secret: &TotpSecret,
        random: &dyn Random,
    ) -> Result<SealedSecret, CoreError> {
        self.seal_with(&Self::pool_aad(serial), secret, random)
    }

    /// Decrypts what [`Keys::seal_for_pool`] sealed for `serial`.
    pub fn open_from_pool(
        &self,
        serial: &str,
        sealed: &SealedSecret,
    ) -> Result<TotpSecret, CoreError> {
        self.open_with(
            &Self::pool_aad(serial),
            &format!("hardware token {serial}"),
            sealed,
        )
    }

    fn seal_with(
        &self,
        aad: &[u8],
        secret: &TotpSecret,
        random: &dyn Random,
    ) -> Result<SealedSecret, CoreError> {
        let cipher = Aes256Gcm::new_from_slice(self.seal.as_ref())
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let nonce = random::bytes::<12>(random)?;
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.expose(),
                    aad,
                },
            )
            .map_err(|_| CoreError::Internal("AES-GCM encryption failed".into()))?;
        Ok(SealedSecret {
            nonce: BASE64.encode(&nonce),
            ciphertext: BASE64.encode(&ciphertext),
        })
    }

    /// Decrypts a TOTP secret sealed for `user`; any tampering, a wrong key or another
    /// user's secret is [`CoreError::Corrupt`].
    pub fn open(&self, user: &UserName, sealed: &SealedSecret) -> Result<TotpSecret, CoreError> {
        self.open_with(&Self::aad(user), user.as_str(), sealed)
    }

    fn open_with(
        &self,
        aad: &[u8],
        whose: &str,
        sealed: &SealedSecret,
    ) -> Result<TotpSecret, CoreError> {
        let corrupt = |what: &str| CoreError::Corrupt(format!("the TOTP secret of {whose} {what}"));
        let nonce = BASE64
            .decode(sealed.nonce.as_bytes())
            .map_err(|_| corrupt("has a malformed nonce"))?;
        if nonce.len() != 12 {
            return Err(corrupt("has a nonce of the wrong length"));
        }
        let ciphertext = BASE64
            .decode(sealed.ciphertext.as_bytes())
            .map_err(|_| corrupt("is malformed"))?;
        let cipher = Aes256Gcm::new_from_slice(self.seal.as_ref())
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map_err(|_| corrupt("does not decrypt (wrong master key, or tampered)"))?;
        Ok(TotpSecret(Zeroizing::new(plain)))
    }

    /// The keyed hash under which a one-time code (or reset token) is stored.
    pub fn code_hash(&self, user: &UserName, purpose: &str, code: &str) -> String {
        HEXLOWER.encode(&hmac(
            self.codes.as_ref(),
            &[
                user.as_str().as_bytes(),
                purpose.as_bytes(),
                code.as_bytes(),
            ],
        ))
    }

    /// The keyed hash under which a device identifier is remembered.
    pub fn device_hash(&self, user: &UserName, door: &str, identifier: &str) -> String {
        HEXLOWER.encode(&hmac(
            self.devices.as_ref(),
            &[
                user.as_str().as_bytes(),
                door.as_bytes(),
                identifier.as_bytes(),
            ],
        ))
    }
}

impl Keys {
    /// A keyed hash for a door, one per `purpose`: names a session in the store without
    /// the browser's token, signs an anonymous form's CSRF token, stands for an address
    /// in a counter. Lowercase hex.
    pub fn door_mac(&self, purpose: &str, data: &[u8]) -> String {
        HEXLOWER.encode(&hmac(self.doors.as_ref(), &[purpose.as_bytes(), data]))
    }

    /// Encrypts a door's session (AES-256-GCM under the session key, `aad` bound in):
    /// the 12-byte nonce, then the ciphertext with its tag.
    pub fn seal_session(
        &self,
        aad: &[u8],
        plain: &[u8],
        random: &dyn Random,
    ) -> Result<Vec<u8>, CoreError> {
        let cipher = Aes256Gcm::new_from_slice(self.sessions.as_ref())
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let nonce = random::bytes::<12>(random)?;
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| CoreError::Internal("AES-GCM encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what [`Keys::seal_session`] made with the same `aad`; `None` when it
    /// does not open (another key, another session's record, or tampered).
    pub fn open_session(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (nonce, ciphertext) = sealed.split_at_checked(12)?;
        let cipher = Aes256Gcm::new_from_slice(self.sessions.as_ref()).ok()?;
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// Compares two byte strings in constant time (for equal lengths).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::OsRandom;

    fn keys() -> Keys {
        Keys::derive(&[42u8; 32]).unwrap()
    }

    #[test]
    fn sessions_seal_bound_to_their_aad_and_door_macs_differ_by_purpose() {
        let k = keys();
        let sealed = k.seal_session(b"s1", b"state", &OsRandom).unwrap();
        assert_eq!(k.open_session(b"s1", &sealed).unwrap().as_slice(), b"state");
        assert!(
            k.open_session(b"s2", &sealed).is_none(),
            "another session's aad"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(k.open_session(b"s1", &tampered).is_none());
        assert!(k.open_session(b"s1", &sealed[..5]).is_none());
        let other = Keys::derive(&[7u8; 32]).unwrap();
        assert!(other.open_session(b"s1", &sealed).is_none(), "another key");
        assert_ne!(k.door_mac("a", b"x"), k.door_mac("b", b"x"));
        assert_eq!(k.door_mac("a", b"x"), k.door_mac("a", b"x"));
        assert_ne!(k.door_mac("a", b"x"), other.door_mac("a", b"x"));
    }

    #[test]
    fn seal_round_trips_and_binds_the_user() {
        let alice = UserName::parse("alice").unwrap();
        let bob = UserName::parse("bob").unwrap();
        let secret = TotpSecret::generate(&OsRandom).unwrap();
        let sealed = keys().seal(&alice, &secret, &OsRandom).unwrap();
        assert!(!sealed.ciphertext.contains(secret.to_base32().as_str()));
        assert_eq!(
            keys().open(&alice, &sealed).unwrap().expose(),
            secret.expose()
        );
        assert!(matches!(
            keys().open(&bob, &sealed),
            Err(CoreError::Corrupt(_))
        ));
        let other = Keys::derive(&[1u8; 32]).unwrap();
        assert!(matches!(
            other.open(&alice, &sealed),
            Err(CoreError::Corrupt(_))
        ));
        let mut tampered = sealed.clone();
        tampered.ciphertext = BASE64.encode(&[0u8; 36]);
        assert!(keys().open(&alice, &tampered).is_err());
    }

    #[test]
    fn hashes_are_keyed_and_separated() {
        let alice = UserName::parse("alice").unwrap();
        let h = keys().code_hash(&alice, "login", "12345678");
        assert_eq!(h, keys().code_hash(&alice, "login", "12345678"));
        assert_ne!(h, keys().code_hash(&alice, "address", "12345678"));
        assert_ne!(
            h,
            Keys::derive(&[1u8; 32])
                .unwrap()
                .code_hash(&alice, "login", "12345678")
        );
        assert!(!h.contains("12345678"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = TotpSecret::from_bytes(b"12345678901234567890");
        assert_eq!(format!("{s:?}"), "TotpSecret(<redacted>)");
    }
}
