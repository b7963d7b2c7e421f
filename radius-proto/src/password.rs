//! User-Password hiding (RFC 2865 §5.2).
//!
//! The password is padded with NULs to a multiple of 16 bytes and XORed with
//! an MD5 chain: `b1 = MD5(S | RA)`, `c1 = p1 ^ b1`, `bi = MD5(S | c(i-1))`,
//! `ci = pi ^ bi`, where S is the shared secret and RA the Request
//! Authenticator. The hidden value is 16 to 128 bytes long.
//!
//! Cleartext and keystream live in [`Zeroizing`] buffers and are wiped when
//! dropped.

use zeroize::Zeroizing;

use crate::auth::{Secret, md5};

/// Longest password RFC 2865 §5.2 can carry, and longest hidden value.
pub const MAX_PASSWORD_LEN: usize = 128;
/// Size of one block of the MD5 chain.
const BLOCK: usize = 16;

/// A User-Password could not be hidden or unhidden.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The hidden value is not a multiple of 16 bytes in `16..=128`: the
    /// request is malformed and is dropped.
    #[error("hidden User-Password of {len} bytes is not a multiple of 16 in 16..=128")]
    BadHiddenLength {
        /// The length of the hidden value.
        len: usize,
    },
    /// The cleartext is longer than 128 bytes and cannot be sent; refuse it
    /// before it reaches the wire.
    #[error("password of {len} bytes exceeds 128")]
    TooLong {
        /// The length of the cleartext.
        len: usize,
    },
}

impl PasswordError {
    /// A stable, low-cardinality name for metrics labels and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadHiddenLength { .. } => "bad_hidden_password_length",
            Self::TooLong { .. } => "password_too_long",
        }
    }
}

/// Hides `password` for the User-Password attribute of a request with
/// Request Authenticator `request_auth`.
///
/// An empty password gives one block of hidden NULs.
///
/// # Errors
///
/// [`PasswordError::TooLong`] for more than 128 bytes.
pub fn hide(
    password: &[u8],
    secret: &Secret,
    request_auth: &[u8; 16],
) -> Result<Vec<u8>, PasswordError> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong {
            len: password.len(),
        });
    }
    let padded_len = password.len().div_ceil(BLOCK).max(1).saturating_mul(BLOCK);
    let mut padded = Zeroizing::new(vec![0u8; padded_len]);
    if let Some(prefix) = padded.get_mut(..password.len()) {
        prefix.copy_from_slice(password);
    }

    let mut out = Vec::with_capacity(padded_len);
    let mut chain: [u8; 16] = *request_auth;
    for block in padded.chunks(BLOCK) {
        let key = Zeroizing::new(md5(&[secret.expose(), &chain]));
        for (p, k) in block.iter().zip(key.iter()) {
            out.push(p ^ k);
        }
        // The next link is this ciphertext block, which is public.
        chain = last_block(&out);
    }
    Ok(out)
}

/// Recovers the cleartext of a hidden User-Password, without its NUL padding.
///
/// # Errors
///
/// [`PasswordError::BadHiddenLength`] unless the value is a multiple of 16
/// bytes in `16..=128`.
pub fn unhide(
    hidden: &[u8],
    secret: &Secret,
    request_auth: &[u8; 16],
) -> Result<Zeroizing<Vec<u8>>, PasswordError> {
    let len = hidden.len();
    if !(BLOCK..=MAX_PASSWORD_LEN).contains(&len) || len % BLOCK != 0 {
        return Err(PasswordError::BadHiddenLength { len });
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let mut chain: &[u8] = request_auth;
    for block in hidden.chunks(BLOCK) {
        let key = Zeroizing::new(md5(&[secret.expose(), chain]));
        for (c, k) in block.iter().zip(key.iter()) {
            out.push(c ^ k);
        }
        chain = block;
    }
    // Strip the padding; a password cannot end in NUL (RFC 2865 §5.2).
    while out.last() == Some(&0) {
        out.pop();
    }
    Ok(out)
}

/// The last 16 bytes of `bytes` (which always holds whole blocks here).
fn last_block(bytes: &[u8]) -> [u8; 16] {
    let start = bytes.len().saturating_sub(BLOCK);
    bytes
        .get(start..)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .unwrap_or([0; 16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::USER_PASSWORD;
    use crate::codec::decode;
    use crate::testdata::{RFC2865_ACCESS_REQUEST, RFC2865_SECRET};

    fn secret() -> Secret {
        Secret::new(RFC2865_SECRET).unwrap()
    }

    #[test]
    fn unhides_the_rfc_2865_example() {
        let p = decode(&RFC2865_ACCESS_REQUEST).unwrap();
        let hidden = p.first(USER_PASSWORD).unwrap();
        let clear = unhide(hidden, &secret(), &p.authenticator).unwrap();
        assert_eq!(clear.as_slice(), b"arctangent");
    }

    #[test]
    fn hides_the_rfc_2865_example() {
        let p = decode(&RFC2865_ACCESS_REQUEST).unwrap();
        let hidden = hide(b"arctangent", &secret(), &p.authenticator).unwrap();
        assert_eq!(hidden, p.first(USER_PASSWORD).unwrap());
    }

    #[test]
    fn round_trips_every_length() {
        let ra = [0x42; 16];
        for len in 0..=MAX_PASSWORD_LEN {
            let password: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let hidden = hide(&password, &secret(), &ra).unwrap();
            assert_eq!(hidden.len(), len.div_ceil(16).max(1) * 16, "len {len}");
            let clear = unhide(&hidden, &secret(), &ra).unwrap();
            assert_eq!(clear.as_slice(), password.as_slice(), "len {len}");
        }
    }

    #[test]
    fn later_blocks_depend_on_earlier_ciphertext() {
        let ra = [7; 16];
        let a = hide(&[b'x'; 32], &secret(), &ra).unwrap();
        let b = hide(&[b'x'; 32], &secret(), &[8; 16]).unwrap();
        assert_ne!(a[16..], b[16..]);
        // Identical plaintext blocks do not give identical ciphertext blocks.
        assert_ne!(a[..16], a[16..]);
    }

    #[test]
    fn wrong_secret_gives_other_bytes() {
        let ra = [1; 16];
        let hidden = hide(b"123456", &secret(), &ra).unwrap();
        let other = Secret::new(b"other".to_vec()).unwrap();
        let clear = unhide(&hidden, &other, &ra).unwrap();
        assert_ne!(clear.as_slice(), b"123456");
    }

    #[test]
    fn refuses_malformed_hidden_lengths() {
        let ra = [0; 16];
        for len in [0usize, 1, 15, 17, 31, 127, 129, 144, 253] {
            assert_eq!(
                unhide(&vec![1; len], &secret(), &ra),
                Err(PasswordError::BadHiddenLength { len }),
                "len {len}"
            );
        }
        for len in [16usize, 32, 128] {
            assert!(unhide(&vec![1; len], &secret(), &ra).is_ok());
        }
    }

    #[test]
    fn refuses_passwords_over_128_bytes() {
        assert_eq!(
            hide(&[b'a'; 129], &secret(), &[0; 16]),
            Err(PasswordError::TooLong { len: 129 })
        );
        assert_ne!(
            PasswordError::TooLong { len: 0 }.kind(),
            PasswordError::BadHiddenLength { len: 0 }.kind()
        );
    }
}
