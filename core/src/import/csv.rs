//! `user,secret[,digits,period,algorithm]`, one token per line: the secret in base32,
//! an empty or missing field takes `[totp]`'s default. A first line starting with
//! `user,` is a header; blank lines and lines starting with `#` are skipped. Fields
//! are not quoted (no field of this format holds a comma).

use super::{
    ImportedToken, Parsed, parse_algorithm, parse_base32_secret, parse_digits, parse_period,
};

/// Parses every line.
pub fn parse(text: &str) -> Parsed {
    super::per_line(
        text,
        |line, raw| line == 1 && raw.to_ascii_lowercase().starts_with("user,"),
        // A row with a comma names its user first, even when the rest is wrong.
        |raw| {
            raw.split_once(',')
                .map(|(u, _)| u.trim())
                .filter(|u| !u.is_empty())
                .map(str::to_string)
        },
        parse_row,
    )
}

fn parse_row(raw: &str, line: usize) -> Result<ImportedToken, String> {
    let fields: Vec<&str> = raw.split(',').map(str::trim).collect();
    if !(2..=5).contains(&fields.len()) {
        return Err(format!(
            "{} fields; expected user,secret[,digits,period,algorithm]",
            fields.len()
        ));
    }
    let field = |i: usize| fields.get(i).copied().filter(|f| !f.is_empty());
    let user = field(0).ok_or("the user is empty")?;
    let secret = parse_base32_secret(field(1).ok_or("the secret is empty")?)?;
    Ok(ImportedToken {
        line,
        user: Some(user.to_string()),
        name: None,
        serial: None,
        secret,
        digits: field(2).map(parse_digits).transpose()?,
        period: field(3).map(parse_period).transpose()?,
        algorithm: field(4).map(parse_algorithm).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use otpgate_config::TotpAlgorithm;

    use super::*;

    #[test]
    fn rows_header_and_defaults() {
        let parsed = parse(
            "user,secret,digits,period,algorithm\nalice,JBSWY3DPEHPK3PXP\n\
             bob,JBSWY3DPEHPK3PXP,8,60,SHA512\ncarol,JBSWY3DPEHPK3PXP,,,sha256\n\
             dave,JBSWY3DPEHPK3PXP,9\n,JBSWY3DPEHPK3PXP\nerin\n",
        );
        assert_eq!(parsed.tokens.len(), 3);
        assert_eq!(parsed.tokens[0].line, 2);
        assert_eq!(parsed.tokens[0].digits, None);
        assert_eq!(
            (
                parsed.tokens[1].digits,
                parsed.tokens[1].period,
                parsed.tokens[1].algorithm
            ),
            (Some(8), Some(60), Some(TotpAlgorithm::Sha512))
        );
        assert_eq!(parsed.tokens[2].algorithm, Some(TotpAlgorithm::Sha256));
        let refused: Vec<(usize, &str)> = parsed
            .refused
            .iter()
            .map(|n| (n.line, n.message.as_str()))
            .collect();
        assert_eq!(
            refused,
            vec![
                (5, "digits \"9\" is not 6, 7 or 8"),
                (6, "the user is empty"),
                (
                    7,
                    "1 fields; expected user,secret[,digits,period,algorithm]"
                ),
            ]
        );
    }
}
