//! google-authenticator-libpam's `~/.google_authenticator`, as its
//! `google-authenticator` command writes it:
//!
//! ```text
//! JBSWY3DPEHPK3PXP            the secret, base32
//! " RATE_LIMIT 3 30 …         options, each on a line starting with `" `
//! " WINDOW_SIZE 17
//! " DISALLOW_REUSE 5698…
//! " TOTP_AUTH                 (an HOTP file has `" HOTP_COUNTER n` instead)
//! " STEP_SIZE 60              (only when not 30)
//! 12345678                    emergency scratch codes, 8 digits each
//! ```
//!
//! The file names no user: the caller gives it. Codes are 6 digits, SHA1, the step is
//! `STEP_SIZE` (30 s without it). `WINDOW_SIZE`, `RATE_LIMIT` and `DISALLOW_REUSE` are
//! otpgate's own rules here (`[totp] skew_steps`, the lockout, every step at most
//! once) and are reported, not imported; so are the scratch codes (otpgate has no
//! recovery codes: the mailed and helpdesk codes take their place).

use super::{FileError, ImportedToken, LineNote, Parsed, parse_base32_secret, parse_period};

/// Parses a whole file (one token).
///
/// # Errors
///
/// A file whose first line is not a secret ([`FileError::Malformed`]), or an HOTP file
/// ([`FileError::Unsupported`]).
pub fn parse(text: &str) -> Result<Parsed, FileError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let Some((_, first)) = lines.next() else {
        return Err(FileError::Malformed(
            "line 1: the file is empty (a google-authenticator file starts with its secret)".into(),
        ));
    };
    let secret = parse_base32_secret(first).map_err(|e| {
        FileError::Malformed(format!("line 1: not a google-authenticator file: {e}"))
    })?;
    let mut parsed = Parsed::default();
    let mut period = None;
    let mut scratch = 0usize;
    for (line, text) in lines {
        if text.is_empty() {
            continue;
        }
        if let Some(option) = text.strip_prefix("\" ") {
            let mut words = option.split_whitespace();
            match words.next().unwrap_or("") {
                "TOTP_AUTH" => {}
                "HOTP_COUNTER" => {
                    return Err(FileError::Unsupported(format!(
                        "line {line}: an HOTP (counter-based) google-authenticator file; \
                         otpgate takes TOTP only: enroll the user's app again instead"
                    )));
                }
                "STEP_SIZE" => {
                    period = Some(parse_period(words.next().unwrap_or("")).map_err(|e| {
                        FileError::Malformed(format!("line {line}: STEP_SIZE: {e}"))
                    })?);
                }
                "WINDOW_SIZE" | "RATE_LIMIT" | "DISALLOW_REUSE" => parsed.notes.push(LineNote {
                    line,
                    user: None,
                    message: format!(
                        "{} is not imported: otpgate's own [totp] skew_steps, lockout and \
                         single use apply",
                        option.split_whitespace().next().unwrap_or("")
                    ),
                }),
                other => parsed.notes.push(LineNote {
                    line,
                    user: None,
                    message: format!("option {other:?} ignored"),
                }),
            }
        } else if text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()) {
            scratch += 1;
        } else {
            return Err(FileError::Malformed(format!(
                "line {line}: neither an option (\" …) nor an 8-digit scratch code"
            )));
        }
    }
    if scratch > 0 {
        parsed.notes.push(LineNote {
            line: 1,
            user: None,
            message: format!(
                "{scratch} emergency scratch code(s) not imported (otpgate has no recovery \
                 codes; mailed and helpdesk codes take their place)"
            ),
        });
    }
    parsed.tokens.push(ImportedToken {
        line: 1,
        user: None,
        name: Some("google-authenticator".into()),
        serial: None,
        secret,
        digits: Some(6),
        period: Some(period.unwrap_or(30)),
        algorithm: Some(otpgate_config::TotpAlgorithm::Sha1),
    });
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "JBSWY3DPEHPK3PXP\n\" RATE_LIMIT 3 30 1700000000\n\" WINDOW_SIZE 17\n\
        \" DISALLOW_REUSE 56666666\n\" TOTP_AUTH\n\" STEP_SIZE 60\n12345678\n87654321\n";

    #[test]
    fn the_secret_and_step_are_read_and_the_rest_reported() {
        let parsed = parse(FILE).unwrap();
        assert_eq!(parsed.tokens.len(), 1);
        let t = &parsed.tokens[0];
        assert_eq!(t.period, Some(60));
        assert_eq!(t.digits, Some(6));
        assert_eq!(t.user, None);
        assert!(parsed.refused.is_empty());
        let notes: Vec<usize> = parsed.notes.iter().map(|n| n.line).collect();
        assert_eq!(notes, vec![2, 3, 4, 1]);
        assert!(
            parsed.notes[3]
                .message
                .starts_with("2 emergency scratch code(s)")
        );
        let no_step = parse("JBSWY3DPEHPK3PXP\n\" TOTP_AUTH\n").unwrap();
        assert_eq!(no_step.tokens[0].period, Some(30));
    }

    #[test]
    fn hotp_and_malformed_files_are_refused_with_their_line() {
        let hotp = parse("JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n").unwrap_err();
        assert!(matches!(&hotp, FileError::Unsupported(m) if m.starts_with("line 2: an HOTP")));
        let bad = parse("JBSWY3DPEHPK3PXP\n\" TOTP_AUTH\n1234\n").unwrap_err();
        assert!(
            matches!(&bad, FileError::Malformed(m) if m.starts_with("line 3:")),
            "{bad}"
        );
        let not_ga = parse("alice,JBSWY3DPEHPK3PXP\n").unwrap_err();
        assert!(matches!(&not_ga, FileError::Malformed(m) if m.starts_with("line 1:")));
        assert!(!not_ga.to_string().contains("JBSWY3DPEHPK3PXP"));
    }
}
