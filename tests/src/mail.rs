//! A received message, decoded just enough for assertions.

use crate::codec::{base64_decode, quoted_printable_decode};

/// One message from the [`SmtpSink`](crate::SmtpSink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The envelope recipients (RCPT TO), from aiosmtpd's `X-RcptTo` header.
    pub to: Vec<String>,
    /// The envelope sender (MAIL FROM), from aiosmtpd's `X-MailFrom` header.
    pub mail_from: String,
    /// The `From:` header, decoded (RFC 2047).
    pub from: String,
    /// The `Subject:` header, decoded (RFC 2047).
    pub subject: String,
    /// The text: the body, or the first `text/plain` part of a multipart message,
    /// with its quoted-printable or base64 transfer encoding undone.
    pub body: String,
    /// The message as stored.
    pub raw: String,
}

impl Mail {
    /// Parses a stored message.
    pub fn parse(raw: &[u8]) -> Self {
        let raw = String::from_utf8_lossy(raw).into_owned();
        let (headers, body) = split_message(&raw);
        let to = header(&headers, "X-RcptTo")
            .map(|list| list.split(',').map(|addr| addr.trim().to_owned()).collect())
            .unwrap_or_default();
        Self {
            to,
            mail_from: header(&headers, "X-MailFrom").unwrap_or_default(),
            from: header(&headers, "From")
                .map(|v| decode_words(&v))
                .unwrap_or_default(),
            subject: header(&headers, "Subject")
                .map(|v| decode_words(&v))
                .unwrap_or_default(),
            body: text_body(&headers, body),
            raw,
        }
    }

    /// The value of header `name` (case-insensitive), unfolded and decoded (RFC 2047).
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = split_message(&self.raw);
        header(&headers, name).map(|value| decode_words(&value))
    }

    /// The first run of exactly `digits` ASCII digits in the body (e.g. an 8-digit
    /// email OTP), not part of a longer number.
    pub fn code(&self, digits: usize) -> Option<String> {
        self.body
            .split(|c: char| !c.is_ascii_digit())
            .find(|run| run.len() == digits)
            .map(str::to_owned)
    }
}

/// Unfolded `(name, value)` headers and the body.
fn split_message(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = match raw.find("\r\n\r\n") {
        Some(at) if raw.find("\n\n").is_none_or(|lf| at < lf) => (&raw[..at], &raw[at + 4..]),
        _ => match raw.find("\n\n") {
            Some(at) => (&raw[..at], &raw[at + 2..]),
            None => (raw, ""),
        },
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body)
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
}

/// A header parameter such as `boundary` from `multipart/alternative; boundary="x"`.
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|part| {
        let (key, val) = part.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| val.trim().trim_matches('"').to_owned())
    })
}

/// The decoded text of a body with the given headers, descending into multipart.
fn text_body(headers: &[(String, String)], body: &str) -> String {
    let content_type = header(headers, "Content-Type").unwrap_or_else(|| "text/plain".into());
    if content_type.to_ascii_lowercase().starts_with("multipart/") {
        if let Some(boundary) = parameter(&content_type, "boundary") {
            let delimiter = format!("--{boundary}");
            let parts: Vec<&str> = body
                .split(delimiter.as_str())
                .skip(1)
                .take_while(|part| !part.starts_with("--"))
                .collect();
            let parsed: Vec<_> = parts
                .iter()
                .map(|part| split_message(part.trim_start_matches(['\r', '\n'])))
                .collect();
            let is_plain = |(h, _): &&(Vec<(String, String)>, &str)| {
                header(h, "Content-Type")
                    .is_none_or(|t| t.to_ascii_lowercase().starts_with("text/plain"))
            };
            if let Some((h, b)) = parsed.iter().find(is_plain).or(parsed.first()) {
                return text_body(h, b);
            }
        }
    }
    let encoding = header(headers, "Content-Transfer-Encoding")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bytes = match encoding.as_str() {
        "base64" => base64_decode(body),
        "quoted-printable" => quoted_printable_decode(body, false),
        _ => body.as_bytes().to_vec(),
    };
    String::from_utf8_lossy(&bytes).replace("\r\n", "\n")
}

/// Decodes RFC 2047 encoded words (`=?utf-8?B?…?=`, `=?utf-8?Q?…?=`), assuming UTF-8.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let word = rest[start + 2..].splitn(3, '?').collect::<Vec<_>>();
        let decoded = match word.as_slice() {
            [charset, encoding, tail] => tail.find("?=").map(|end| {
                let text = &tail[..end];
                let bytes = if encoding.eq_ignore_ascii_case("b") {
                    base64_decode(text)
                } else {
                    quoted_printable_decode(text, true)
                };
                let consumed = start + 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
                (String::from_utf8_lossy(&bytes).into_owned(), consumed)
            }),
            _ => None,
        };
        let Some((text, consumed)) = decoded else {
            break;
        };
        let between = &rest[..start];
        // Whitespace between two encoded words is not part of the text.
        if !(last_was_word && between.trim().is_empty()) {
            out.push_str(between);
        }
        out.push_str(&text);
        rest = &rest[consumed..];
        last_was_word = true;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_multipart_quoted_printable_mail() {
        let raw = "From: MFA <mfa@example.org>\r\nSubject: =?utf-8?b?44Ot44Kw44Kk44Oz?=\r\n =?utf-8?q?_code?=\r\n\
                   Content-Type: multipart/alternative;\r\n boundary=\"b1\"\r\n\
                   X-MailFrom: mfa@example.org\r\nX-RcptTo: alice@example.org, bob@example.org\r\n\r\n\
                   --b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                   Your code: 12345678 =3D=\r\nok\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b1--\r\n";
        let mail = Mail::parse(raw.as_bytes());
        assert_eq!(mail.to, ["alice@example.org", "bob@example.org"]);
        assert_eq!(mail.mail_from, "mfa@example.org");
        assert_eq!(mail.from, "MFA <mfa@example.org>");
        assert_eq!(mail.subject, "ログイン code");
        assert_eq!(mail.body, "Your code: 12345678 =ok\n");
        assert_eq!(mail.code(8).as_deref(), Some("12345678"));
        assert_eq!(mail.code(6), None);
    }

    #[test]
    fn parses_a_base64_single_part_mail() {
        let raw = "Subject: hi\nContent-Transfer-Encoding: base64\n\naGVsbG8gd29ybGQ=\n";
        let mail = Mail::parse(raw.as_bytes());
        assert_eq!(mail.subject, "hi");
        assert_eq!(mail.body, "hello world");
    }
}
