//! Small encoders and decoders the harness needs: base64, quoted-printable, LDIF
//! values, RFC 4514 DN values and `{SSHA}` password hashes.

use sha1::{Digest, Sha1};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Lenient base64 decoding: characters outside the alphabet (line breaks, padding) are
/// skipped.
pub fn base64_decode(input: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for byte in input.bytes() {
        let Some(value) = B64.iter().position(|&c| c == byte) else {
            continue;
        };
        acc = (acc << 6) | value as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Quoted-printable decoding (RFC 2045); `underscore_is_space` for RFC 2047 "Q" words.
pub fn quoted_printable_decode(input: &str, underscore_is_space: bool) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') => i += 3,
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if i + 2 < bytes.len() && hex_pair(bytes[i + 1], bytes[i + 2]).is_some() => {
                out.extend(hex_pair(bytes[i + 1], bytes[i + 2]));
                i += 3;
            }
            b'_' if underscore_is_space => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    out
}

fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

/// One `attr: value` LDIF line, base64-encoded (`attr:: …`) when the value is not a
/// SAFE-STRING of RFC 2849.
pub fn ldif_line(attribute: &str, value: &str) -> String {
    let bytes = value.as_bytes();
    let safe = bytes
        .iter()
        .all(|&b| (1..=127).contains(&b) && b != b'\n' && b != b'\r')
        && !matches!(bytes.first(), Some(b' ' | b':' | b'<'))
        && !bytes.ends_with(b" ");
    if safe {
        format!("{attribute}: {value}\n")
    } else {
        format!("{attribute}:: {}\n", base64_encode(bytes))
    }
}

/// Escapes an attribute value for use in a DN (RFC 4514 §2.4).
pub fn dn_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' | ',' | '+' | '"' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// Escapes a value for use in an LDAP search filter (RFC 4515 §3).
pub fn filter_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// A `{SSHA}` userPassword value (SHA-1 over password and salt), as `slappasswd`
/// makes; used for bulk users, where one `slappasswd` process per user is too slow.
pub fn ssha(password: &str, salt: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(password.as_bytes());
    hasher.update(salt);
    let mut raw = hasher.finalize().to_vec();
    raw.extend_from_slice(salt);
    format!("{{SSHA}}{}", base64_encode(&raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for input in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64_encode(input)), input);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn quoted_printable_decodes() {
        assert_eq!(quoted_printable_decode("a=3Db=\r\nc", false), b"a=bc");
        assert_eq!(quoted_printable_decode("a_b", true), b"a b");
    }

    #[test]
    fn escapes() {
        assert_eq!(dn_escape("weird*(user)\\"), "weird*(user)\\\\");
        assert_eq!(filter_escape("weird*(user)\\"), "weird\\2a\\28user\\29\\5c");
        assert_eq!(ldif_line("uid", "alice"), "uid: alice\n");
        assert_eq!(ldif_line("cn", " x"), "cn:: IHg=\n");
    }
}
