//! Reading existing TOTP secrets from other systems' files, without I/O: each parser
//! takes the file's text and returns the tokens it holds, each with the line it came
//! from, and a precise refusal for each entry it cannot take. What happens to them
//! (per user, atomically, idempotently) is the core's `Core::import_tokens`.
//!
//! # Layout
//!
//! - `otpauth`: `otpauth://totp/…` Key URIs, one per line.
//! - `google_authenticator`: google-authenticator-libpam's `~/.google_authenticator`.
//! - `pskc`: PSKC (RFC 6030) files, plain or encrypted (pre-shared key or PBKDF2).
//! - `csv`: `user,secret[,digits,period,algorithm]`.
//!
//! Secrets are held in [`TotpSecret`] (zeroed on drop, never printed); no message a
//! parser makes contains one.

use otpgate_config::TotpAlgorithm;

use crate::secret::TotpSecret;

pub mod csv;
pub mod google_authenticator;
pub mod otpauth;
pub mod pskc;

/// The formats `otpgate user import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `otpauth://totp/…` URIs, one per line.
    Otpauth,
    /// A google-authenticator-libpam file.
    GoogleAuthenticator,
    /// PSKC (RFC 6030).
    Pskc,
    /// `user,secret[,digits,period,algorithm]`.
    Csv,
}

impl Format {
    /// The name on the command line and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Otpauth => "otpauth",
            Format::GoogleAuthenticator => "google-authenticator",
            Format::Pskc => "pskc",
            Format::Csv => "csv",
        }
    }

    /// Guesses the format from the text: XML is PSKC, `otpauth://` lines are URIs, a
    /// first line of base32 followed by `"` option lines is google-authenticator, else
    /// CSV.
    pub fn guess(text: &str) -> Format {
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("");
        if first.starts_with('<') {
            Format::Pskc
        } else if first.to_ascii_lowercase().starts_with("otpauth://") {
            Format::Otpauth
        } else if !first.contains(',') && text.lines().nth(1).is_some_and(|l| l.starts_with("\" "))
        {
            Format::GoogleAuthenticator
        } else {
            Format::Csv
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One token read from a file. It crosses the control socket (CLI → server) as JSON,
/// its secret in base32; `Debug` never shows the secret.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportedToken {
    /// Where it was: the line (1-based) of the URI, CSV row or PSKC `KeyPackage`.
    pub line: usize,
    /// The user it belongs to, when the file says (`None`: a PSKC token for the pool,
    /// or a google-authenticator file, whose user is given on the command line).
    pub user: Option<String>,
    /// The token's name, when the file gives one.
    pub name: Option<String>,
    /// A hardware token's serial number.
    pub serial: Option<String>,
    #[serde(with = "secret_base32")]
    pub secret: TotpSecret,
    /// `None`: `[totp]`'s default.
    pub digits: Option<u32>,
    /// Seconds; `None`: `[totp]`'s default.
    pub period: Option<u64>,
    /// `None`: `[totp]`'s default.
    pub algorithm: Option<TotpAlgorithm>,
}

impl std::fmt::Debug for ImportedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedToken")
            .field("line", &self.line)
            .field("user", &self.user)
            .field("name", &self.name)
            .field("serial", &self.serial)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ImportedToken {
    fn eq(&self, other: &Self) -> bool {
        (
            self.line,
            &self.user,
            &self.name,
            &self.serial,
            self.digits,
            self.period,
            self.algorithm,
        ) == (
            other.line,
            &other.user,
            &other.name,
            &other.serial,
            other.digits,
            other.period,
            other.algorithm,
        ) && crate::secret::ct_eq(self.secret.expose(), other.secret.expose())
    }
}

impl Eq for ImportedToken {}

/// A secret on the wire: base32, decoded back into a [`TotpSecret`].
mod secret_base32 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::secret::TotpSecret;

    pub fn serialize<S: Serializer>(secret: &TotpSecret, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&secret.to_base32())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TotpSecret, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        super::parse_base32_secret(&text).map_err(serde::de::Error::custom)
    }
}

/// An entry the parser could not take, or something worth telling the operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineNote {
    /// 1-based line in the file.
    pub line: usize,
    pub message: String,
    /// The user the refused entry was for, when the line still says (so the user's
    /// other entries are refused with it: a user's entries go in all or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// What a parser read from a whole file.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parsed {
    pub tokens: Vec<ImportedToken>,
    /// Entries refused, each with its line and why.
    pub refused: Vec<LineNote>,
    /// Things reported and not imported (google-authenticator scratch codes).
    pub notes: Vec<LineNote>,
}

/// A file that cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file is not of its format (malformed XML, not a google-authenticator file).
    /// Fix the file or name the right `--format`.
    #[error("{0}")]
    Malformed(String),
    /// The file is of a kind the product does not take (an HOTP google-authenticator
    /// file: otpgate is TOTP-only).
    #[error("{0}")]
    Unsupported(String),
    /// An encrypted PSKC file without the password or key to open it.
    #[error("{0}")]
    NeedKey(String),
    /// The PSKC password or key does not open the file (its MAC does not match).
    #[error("{0}")]
    WrongKey(String),
}

/// How to open an encrypted PSKC file.
pub enum PskcKey {
    /// Nothing given (a plain file needs nothing).
    None,
    /// A password (PBKDF2, as `csv2pskc --password` makes).
    Password(zeroize::Zeroizing<String>),
    /// A pre-shared AES key (as `csv2pskc --secret` takes).
    PreShared(zeroize::Zeroizing<Vec<u8>>),
}

/// Parses `text` as `format`.
///
/// # Errors
///
/// A file that cannot be read as a whole ([`FileError`]).
pub fn parse(format: Format, text: &str, key: &PskcKey) -> Result<Parsed, FileError> {
    match format {
        Format::Otpauth => Ok(otpauth::parse(text)),
        Format::GoogleAuthenticator => google_authenticator::parse(text),
        Format::Pskc => pskc::parse(text, key),
        Format::Csv => Ok(csv::parse(text)),
    }
}

/// A one-token-per-line format: blank lines, `#` comments and lines `skip` names are
/// passed over; each other line is a token or a refusal with its line number.
fn per_line(
    text: &str,
    skip: impl Fn(usize, &str) -> bool,
    user_of: impl Fn(&str) -> Option<String>,
    row: impl Fn(&str, usize) -> Result<ImportedToken, String>,
) -> Parsed {
    let mut parsed = Parsed::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') || skip(line, raw) {
            continue;
        }
        match row(raw, line) {
            Ok(token) => parsed.tokens.push(token),
            Err(message) => parsed.refused.push(LineNote {
                line,
                message,
                user: user_of(raw),
            }),
        }
    }
    parsed
}

/// The bounds every imported token must keep.
pub mod limits {
    /// Digits of a code.
    pub const DIGITS: std::ops::RangeInclusive<u32> = 6..=8;
    /// Seconds of a step.
    pub const PERIOD: std::ops::RangeInclusive<u64> = 10..=300;
    /// Bytes of a secret (80 bits, as google-authenticator-libpam makes, up to 512).
    pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 10..=64;
}

/// Parses a digit count and checks it (6–8).
pub(crate) fn parse_digits(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(d) if limits::DIGITS.contains(&d) => Ok(d),
        _ => Err(format!("digits {:?} is not 6, 7 or 8", text.trim())),
    }
}

/// Parses a period in seconds and checks it (10–300).
pub(crate) fn parse_period(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix('s').unwrap_or(t);
    match t.parse::<u64>() {
        Ok(p) if limits::PERIOD.contains(&p) => Ok(p),
        _ => Err(format!(
            "period {:?} is not a number of seconds from 10 to 300",
            text.trim()
        )),
    }
}

/// Parses an algorithm name (`SHA1`, `SHA256`, `SHA512`; also `HMAC-SHA1` and without
/// case or dash).
pub(crate) fn parse_algorithm(text: &str) -> Result<TotpAlgorithm, String> {
    let t = text.trim().to_ascii_uppercase().replace('-', "");
    let t = t.strip_prefix("HMAC").unwrap_or(&t);
    match t {
        "SHA1" => Ok(TotpAlgorithm::Sha1),
        "SHA256" => Ok(TotpAlgorithm::Sha256),
        "SHA512" => Ok(TotpAlgorithm::Sha512),
        _ => Err(format!(
            "algorithm {:?} is not SHA1, SHA256 or SHA512",
            text.trim()
        )),
    }
}

/// Decodes a base32 secret (any case, spaces and padding ignored) and checks its length.
pub(crate) fn parse_base32_secret(text: &str) -> Result<TotpSecret, String> {
    let cleaned: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        text.chars()
            .filter(|c| !c.is_whitespace() && *c != '=' && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    if cleaned.is_empty() {
        return Err("the secret is empty".into());
    }
    let bytes = zeroize::Zeroizing::new(
        data_encoding::BASE32_NOPAD
            .decode(cleaned.as_bytes())
            .map_err(|_| "the secret is not base32 (letters A-Z and digits 2-7)".to_string())?,
    );
    check_secret_len(&bytes)?;
    Ok(TotpSecret::from_bytes(&bytes))
}

/// Checks a secret's length.
pub(crate) fn check_secret_len(bytes: &[u8]) -> Result<(), String> {
    if limits::SECRET_BYTES.contains(&bytes.len()) {
        Ok(())
    } else {
        Err(format!(
            "the secret is {} bytes; 10 to 64 are taken",
            bytes.len()
        ))
    }
}

/// The name of an algorithm as listings show it.
pub fn algorithm_name(a: TotpAlgorithm) -> &'static str {
    match a {
        TotpAlgorithm::Sha1 => "SHA1",
        TotpAlgorithm::Sha256 => "SHA256",
        TotpAlgorithm::Sha512 => "SHA512",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_guessed_from_the_text() {
        assert_eq!(
            Format::guess("<?xml version=\"1.0\"?>\n<pskc:KeyContainer/>"),
            Format::Pskc
        );
        assert_eq!(
            Format::guess("otpauth://totp/x?secret=AAAA"),
            Format::Otpauth
        );
        assert_eq!(
            Format::guess("JBSWY3DPEHPK3PXP\n\" TOTP_AUTH\n"),
            Format::GoogleAuthenticator
        );
        assert_eq!(Format::guess("alice,JBSWY3DPEHPK3PXP\n"), Format::Csv);
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(parse_digits("8"), Ok(8));
        assert!(parse_digits("9").is_err());
        assert!(parse_digits("x").is_err());
        assert_eq!(parse_period("60"), Ok(60));
        assert_eq!(parse_period("30s"), Ok(30));
        assert!(parse_period("0").is_err());
        assert_eq!(parse_algorithm("sha256"), Ok(TotpAlgorithm::Sha256));
        assert_eq!(parse_algorithm("HMAC-SHA512"), Ok(TotpAlgorithm::Sha512));
        assert!(parse_algorithm("MD5").is_err());
        assert!(parse_base32_secret("JBSWY3DPEHPK3PXP").is_ok());
        assert!(parse_base32_secret("jbsw y3dp ehpk 3pxp").is_ok());
        assert!(parse_base32_secret("JBSW").is_err(), "too short");
        assert!(
            parse_base32_secret("JBSWY3DPEHPK3PX1").is_err(),
            "1 is not base32"
        );
    }
}
