//! Randomness is passed in, so tests can make it predictable where they must.

use crate::error::CoreError;

/// A cryptographically secure source of random bytes.
pub trait Random: Send + Sync + 'static {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]) -> Result<(), CoreError>;
}

/// The operating system's CSPRNG (`getrandom`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), CoreError> {
        getrandom::fill(buf)
            .map_err(|e| CoreError::Internal(format!("the system random source failed: {e}")))
    }
}

/// `N` random bytes.
pub fn bytes<const N: usize>(random: &dyn Random) -> Result<[u8; N], CoreError> {
    let mut out = [0u8; N];
    random.fill(&mut out)?;
    Ok(out)
}

/// A uniformly random decimal code of `digits` digits (leading zeros kept), by rejection
/// sampling so that no code is likelier than another.
pub fn decimal_code(random: &dyn Random, digits: u32) -> Result<String, CoreError> {
    let modulus = 10u64.pow(digits);
    // The largest multiple of `modulus` that fits in u64; values at or above it are redrawn.
    let limit = u64::MAX - (u64::MAX % modulus);
    loop {
        let value = u64::from_le_bytes(bytes::<8>(random)?);
        if value < limit {
            return Ok(format!(
                "{:0width$}",
                value % modulus,
                width = digits as usize
            ));
        }
    }
}

/// Lower-case hex of random bytes, for identifiers that carry nothing secret.
pub fn hex_id<const N: usize>(random: &dyn Random) -> Result<String, CoreError> {
    Ok(data_encoding::HEXLOWER.encode(&bytes::<N>(random)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_asked_length_and_vary() {
        let a = decimal_code(&OsRandom, 8).unwrap();
        let b = decimal_code(&OsRandom, 8).unwrap();
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_digit()));
        assert_ne!(a, b, "two 8-digit codes from the OS source collided");
    }
}
