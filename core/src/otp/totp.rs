//! RFC 6238 TOTP over RFC 4226 HOTP, with a skew window that reports which step
//! matched, so the caller can refuse replays of that step.
//!
//! Written on the `hmac`/`sha1`/`sha2` crates rather than a TOTP crate because the
//! product needs three things at once that the crates do not all give: the matched
//! step, a constant-time comparison against every step of the window (no early exit
//! that would time which step matched), and SHA-1/256/512 with any key length.

use hmac::{Hmac, Mac};
use otpgate_config::{TotpAlgorithm, TotpConfig};
use subtle::ConstantTimeEq;

use crate::clock::Timestamp;
use crate::secret::TotpSecret;

/// TOTP parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    pub digits: u32,
    /// Step length in seconds.
    pub period: u64,
    /// Steps either side of now that are accepted.
    pub skew_steps: u32,
    pub algorithm: TotpAlgorithm,
}

impl From<&TotpConfig> for TotpParams {
    fn from(c: &TotpConfig) -> Self {
        Self {
            digits: c.digits,
            period: c.period.as_secs().max(1),
            skew_steps: c.skew_steps,
            algorithm: c.algorithm,
        }
    }
}

/// An HMAC keyed once: the key's pads are computed once per window, not once per step.
#[derive(Clone)]
enum Keyed {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> M {
    #[allow(clippy::expect_used)] // HMAC takes keys of any length: this never fails
    <M as hmac::digest::KeyInit>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// Dynamic truncation (RFC 4226 §5.3) to `digits` decimal digits. Digests are 20, 32 or
/// 64 bytes, so the offset (0..=15) plus 4 is always inside; `get` keeps that a checked
/// fact.
fn truncate(digest: &[u8], digits: u32) -> u32 {
    let offset = digest.last().map_or(0, |b| usize::from(b & 0x0f));
    let word = digest
        .get(offset..offset + 4)
        .and_then(|w| <[u8; 4]>::try_from(w).ok())
        .map_or(0, u32::from_be_bytes);
    (word & 0x7fff_ffff) % 10u32.pow(digits)
}

impl Keyed {
    fn new(key: &[u8], algorithm: TotpAlgorithm) -> Self {
        match algorithm {
            TotpAlgorithm::Sha1 => Keyed::Sha1(keyed(key)),
            TotpAlgorithm::Sha256 => Keyed::Sha256(keyed(key)),
            TotpAlgorithm::Sha512 => Keyed::Sha512(keyed(key)),
        }
    }

    /// The HOTP value for `counter`, as a number (no text is made).
    fn value(&self, counter: u64, digits: u32) -> u32 {
        fn run<M: Mac + Clone>(m: &M, counter: u64, digits: u32) -> u32 {
            let mut m = m.clone();
            m.update(&counter.to_be_bytes());
            truncate(&m.finalize().into_bytes(), digits)
        }
        match self {
            Keyed::Sha1(m) => run(m, counter, digits),
            Keyed::Sha256(m) => run(m, counter, digits),
            Keyed::Sha512(m) => run(m, counter, digits),
        }
    }
}

/// RFC 4226 HOTP value for `counter`, as a zero-padded decimal string.
pub fn hotp(key: &[u8], counter: u64, digits: u32, algorithm: TotpAlgorithm) -> String {
    let value = Keyed::new(key, algorithm).value(counter, digits);
    format!("{value:0width$}", width = digits as usize)
}

/// The step that contains `t`.
pub fn step_at(t: Timestamp, period: u64) -> u64 {
    t.0 / period.max(1)
}

/// The code for `step`.
pub fn code_at_step(secret: &TotpSecret, step: u64, p: &TotpParams) -> String {
    hotp(secret.expose(), step, p.digits, p.algorithm)
}

/// The code at time `t`.
pub fn code_at(secret: &TotpSecret, t: Timestamp, p: &TotpParams) -> String {
    code_at_step(secret, step_at(t, p.period), p)
}

/// The step in `now ± skew_steps` whose code equals `code`, if any. Every step of the
/// window is computed and compared in constant time; when two steps share a code (about
/// one in a million), the earliest is reported, so a later legitimate code still counts.
pub fn matching_step(
    secret: &TotpSecret,
    code: &str,
    now: Timestamp,
    p: &TotpParams,
) -> Option<u64> {
    matching_steps(secret, code, now, p).first().copied()
}

/// Every step in `now ± skew_steps` whose code equals `code`, earliest first (almost
/// always none or one). Every step of the window is computed and compared in constant
/// time. A caller whose earliest match was already used tries the next, so a code that
/// happens to equal an older, used step's code is not mistaken for a replay.
pub fn matching_steps(secret: &TotpSecret, code: &str, now: Timestamp, p: &TotpParams) -> Vec<u64> {
    let mut found = Vec::new();
    if code.len() != p.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return found;
    }
    // At most 8 digits (the configuration's bound; 9 fit too): a u32.
    let Ok(wanted) = code.parse::<u32>() else {
        return found;
    };
    let keyed = Keyed::new(secret.expose(), p.algorithm);
    let center = step_at(now, p.period);
    let first = center.saturating_sub(u64::from(p.skew_steps));
    let last = center.saturating_add(u64::from(p.skew_steps));
    for step in first..=last {
        let candidate = keyed.value(step, p.digits);
        if bool::from(candidate.ct_eq(&wanted)) {
            found.push(step);
        }
    }
    found
}

/// Percent-encodes for an `otpauth://` URI's label and query.
fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Key Uri Format an authenticator app scans:
/// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=…&digits=…&period=…`.
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str, p: &TotpParams) -> String {
    let algorithm = match p.algorithm {
        TotpAlgorithm::Sha1 => "SHA1",
        TotpAlgorithm::Sha256 => "SHA256",
        TotpAlgorithm::Sha512 => "SHA512",
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_base32}&issuer={}&algorithm={algorithm}&digits={}&period={}",
        uri_encode(issuer),
        uri_encode(account),
        uri_encode(issuer),
        p.digits,
        p.period
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(digits: u32, algorithm: TotpAlgorithm) -> TotpParams {
        TotpParams {
            digits,
            period: 30,
            skew_steps: 1,
            algorithm,
        }
    }

    /// RFC 6238 Appendix B: each algorithm with its own key length.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = TotpSecret::from_bytes(b"12345678901234567890");
        let sha256 = TotpSecret::from_bytes(b"12345678901234567890123456789012");
        let sha512 = TotpSecret::from_bytes(
            b"1234567890123456789012345678901234567890123456789012345678901234",
        );
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (t, c1, c256, c512) in table {
            let t = Timestamp(t);
            assert_eq!(
                code_at(&sha1, t, &params(8, TotpAlgorithm::Sha1)),
                c1,
                "SHA1 at {t:?}"
            );
            assert_eq!(
                code_at(&sha256, t, &params(8, TotpAlgorithm::Sha256)),
                c256,
                "SHA256 at {t:?}"
            );
            assert_eq!(
                code_at(&sha512, t, &params(8, TotpAlgorithm::Sha512)),
                c512,
                "SHA512 at {t:?}"
            );
        }
    }

    #[test]
    fn the_window_matches_exactly_the_steps_whose_text_code_is_the_code() {
        // The window compares numbers; the codes users type are text with leading
        // zeros. Every step's own code, over many steps and each algorithm, is found
        // at that step (and others only where their text code is the same).
        let secret = TotpSecret::from_bytes(b"12345678901234567890");
        for algorithm in [
            TotpAlgorithm::Sha1,
            TotpAlgorithm::Sha256,
            TotpAlgorithm::Sha512,
        ] {
            for digits in [6, 8] {
                let p = TotpParams {
                    skew_steps: 3,
                    ..params(digits, algorithm)
                };
                let mut leading_zero = false;
                for step in 1_000..1_200u64 {
                    let code = code_at_step(&secret, step, &p);
                    leading_zero |= code.starts_with('0');
                    let now = Timestamp(step * p.period);
                    let expected: Vec<u64> = (step - 3..=step + 3)
                        .filter(|s| code_at_step(&secret, *s, &p) == code)
                        .collect();
                    assert!(expected.contains(&step));
                    assert_eq!(matching_steps(&secret, &code, now, &p), expected);
                }
                assert!(leading_zero, "some code began with 0");
            }
        }
        let p = params(6, TotpAlgorithm::Sha1);
        for bad in ["12345", "1234567", "12a456", "+12345", " 12345", ""] {
            assert!(
                matching_steps(&secret, bad, Timestamp(59), &p).is_empty(),
                "{bad}"
            );
        }
    }

    #[test]
    fn window_reports_the_matching_step() {
        let s = TotpSecret::from_bytes(b"12345678901234567890");
        let p = params(6, TotpAlgorithm::Sha1);
        let now = Timestamp(1_700_000_000);
        let step = step_at(now, 30);
        for (delta, expect) in [(-1i64, true), (0, true), (1, true), (-2, false), (2, false)] {
            let s_step = step.checked_add_signed(delta).unwrap();
            let code = code_at_step(&s, s_step, &p);
            let got = matching_step(&s, &code, now, &p);
            if expect {
                assert_eq!(got, Some(s_step), "delta {delta}");
            } else {
                assert_ne!(
                    got,
                    Some(s_step),
                    "delta {delta} must be outside the window"
                );
            }
        }
        assert_eq!(matching_step(&s, "12345", now, &p), None);
        assert_eq!(matching_step(&s, "12a456", now, &p), None);
    }

    /// Two steps of one window sharing a code (found by search, about one window in
    /// 50 000 at skew 10): both are reported, earliest first.
    #[test]
    fn window_reports_every_step_sharing_a_code() {
        let s = TotpSecret::from_bytes(b"12345678901234567890");
        let p = TotpParams {
            skew_steps: 10,
            ..params(6, TotpAlgorithm::Sha1)
        };
        let codes: Vec<String> = (0..400_000u64).map(|n| code_at_step(&s, n, &p)).collect();
        let mut seen = std::collections::HashMap::new();
        let (early, late) = codes
            .iter()
            .enumerate()
            .find_map(|(late, code)| {
                let early = seen.insert(code.clone(), late)?;
                (late - early <= 20).then_some((early as u64, late as u64))
            })
            .expect("a shared code within 20 steps in the first 400 000");
        let now = Timestamp((early + 10) * 30);
        let code = code_at_step(&s, late, &p);
        assert_eq!(matching_steps(&s, &code, now, &p), vec![early, late]);
        assert_eq!(matching_step(&s, &code, now, &p), Some(early));
        assert!(matching_steps(&s, "12a456", now, &p).is_empty());
    }

    #[test]
    fn uri_has_the_key_uri_format() {
        let p = params(6, TotpAlgorithm::Sha1);
        let uri = otpauth_uri("Example University", "alice", "JBSWY3DPEHPK3PXP", &p);
        assert_eq!(
            uri,
            "otpauth://totp/Example%20University:alice?secret=JBSWY3DPEHPK3PXP&issuer=Example%20University&algorithm=SHA1&digits=6&period=30"
        );
    }
}
