//! `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&digits=…&period=…&algorithm=…`, one
//! per line (the Key URI Format authenticator apps scan). The account is the user; the
//! issuer, when present, names the token. Omitted parameters take the format's own
//! defaults (6 digits, 30 s, SHA1), which is what every app assumed when it scanned the
//! URI. Blank lines and lines starting with `#` are skipped.

use super::{
    ImportedToken, Parsed, parse_algorithm, parse_base32_secret, parse_digits, parse_period,
};

/// Parses every line.
pub fn parse(text: &str) -> Parsed {
    super::per_line(text, |_, _| false, |_| None, parse_uri)
}

/// Parses one URI.
pub fn parse_uri(raw: &str, line: usize) -> Result<ImportedToken, String> {
    let url = url::Url::parse(raw).map_err(|_| "not an otpauth:// URI".to_string())?;
    if url.scheme() != "otpauth" {
        return Err("not an otpauth:// URI".into());
    }
    match url.host_str() {
        Some(h) if h.eq_ignore_ascii_case("totp") => {}
        Some(h) if h.eq_ignore_ascii_case("hotp") => {
            return Err("an HOTP URI: otpgate takes TOTP tokens only".into());
        }
        _ => return Err("not an otpauth://totp/ URI".into()),
    }
    let label = url.path().trim_start_matches('/');
    let label = percent_decode(label).ok_or("the label is not UTF-8")?;
    let (label_issuer, account) = match label.split_once(':') {
        Some((i, a)) => (Some(i.trim().to_string()), a.trim().to_string()),
        None => (None, label.trim().to_string()),
    };
    if account.is_empty() {
        return Err("the URI names no account (the user)".into());
    }
    let mut secret = None;
    let mut issuer = label_issuer;
    let (mut digits, mut period, mut algorithm) = (6, 30, otpgate_config::TotpAlgorithm::Sha1);
    for (key, value) in url.query_pairs() {
        match key.to_ascii_lowercase().as_str() {
            "secret" => secret = Some(parse_base32_secret(&value)?),
            "issuer" => issuer = Some(value.trim().to_string()),
            "digits" => digits = parse_digits(&value)?,
            "period" => period = parse_period(&value)?,
            "algorithm" => algorithm = parse_algorithm(&value)?,
            // image, counter of other apps' making: nothing of the code
            _ => {}
        }
    }
    let secret = secret.ok_or("the URI has no secret= parameter")?;
    Ok(ImportedToken {
        line,
        user: Some(account),
        name: issuer.filter(|i| !i.is_empty()).map(|i| token_name(&i)),
        serial: None,
        secret,
        digits: Some(digits),
        period: Some(period),
        algorithm: Some(algorithm),
    })
}

/// A token name from an issuer: lower case, spaces as dashes, at most 40 characters.
fn token_name(issuer: &str) -> String {
    issuer
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| {
            if c.is_whitespace() {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .take(40)
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use otpgate_config::TotpAlgorithm;

    use super::*;

    #[test]
    fn every_parameter_is_read_and_defaults_are_the_formats() {
        let text = "# exported\n\
            otpauth://totp/Example%20University:alice?secret=JBSWY3DPEHPK3PXP&issuer=Example%20University\n\
            \n\
            otpauth://totp/VPN:bob?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA&digits=8&period=60&algorithm=SHA256\n\
            otpauth://totp/carol?secret=JBSWY3DPEHPK3PXP&algorithm=MD5\n\
            otpauth://hotp/dave?secret=JBSWY3DPEHPK3PXP&counter=1\n\
            otpauth://totp/erin\n\
            not a uri\n";
        let parsed = parse(text);
        assert_eq!(parsed.tokens.len(), 2);
        let alice = &parsed.tokens[0];
        assert_eq!(alice.line, 2);
        assert_eq!(alice.user.as_deref(), Some("alice"));
        assert_eq!(alice.name.as_deref(), Some("example-university"));
        assert_eq!(
            (alice.digits, alice.period, alice.algorithm),
            (Some(6), Some(30), Some(TotpAlgorithm::Sha1))
        );
        assert_eq!(alice.secret.expose(), b"Hello!\xde\xad\xbe\xef");
        let bob = &parsed.tokens[1];
        assert_eq!(bob.line, 4);
        assert_eq!(
            (bob.digits, bob.period, bob.algorithm),
            (Some(8), Some(60), Some(TotpAlgorithm::Sha256))
        );
        let lines: Vec<(usize, &str)> = parsed
            .refused
            .iter()
            .map(|n| (n.line, n.message.as_str()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (5, "algorithm \"MD5\" is not SHA1, SHA256 or SHA512"),
                (6, "an HOTP URI: otpgate takes TOTP tokens only"),
                (7, "the URI has no secret= parameter"),
                (8, "not an otpauth:// URI"),
            ]
        );
    }

    #[test]
    fn no_message_holds_the_secret() {
        let parsed = parse("otpauth://totp/a?secret=JBSWY3DPEHPK3PX1\n");
        assert_eq!(parsed.refused.len(), 1);
        assert!(!parsed.refused[0].message.contains("JBSWY3DPEHPK3PX1"));
    }
}
