//! `application/x-www-form-urlencoded` bodies and query strings, parsed by the portal
//! itself so that no parser's error text reaches a browser. Values are zeroised when
//! the form is dropped (passwords, codes, tokens).

use zeroize::Zeroizing;

/// The largest form accepted, in bytes.
pub const MAX_FORM: usize = 8 * 1024;
/// The most fields a form may have.
const MAX_FIELDS: usize = 16;

/// Parsed fields, in order.
pub struct Form(Vec<(String, Zeroizing<String>)>);

impl std::fmt::Debug for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
        write!(f, "Form({keys:?}, values redacted)")
    }
}

/// A body or query the portal refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    TooLarge,
    TooManyFields,
    /// A field appears twice.
    Repeated,
}

impl Form {
    /// Parses `input` (a body or a query string).
    pub fn parse(input: &[u8]) -> Result<Form, FormError> {
        if input.len() > MAX_FORM {
            return Err(FormError::TooLarge);
        }
        let mut fields: Vec<(String, Zeroizing<String>)> = Vec::new();
        for (key, value) in form_urlencoded::parse(input) {
            if fields.len() >= MAX_FIELDS {
                return Err(FormError::TooManyFields);
            }
            if fields.iter().any(|(k, _)| k == key.as_ref()) {
                return Err(FormError::Repeated);
            }
            fields.push((key.into_owned(), Zeroizing::new(value.into_owned())));
        }
        Ok(Form(fields))
    }

    /// A field's value, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A field's value, or "".
    pub fn str(&self, key: &str) -> &str {
        self.get(key).unwrap_or("")
    }

    /// Whether a checkbox was ticked.
    pub fn checked(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let f = Form::parse(b"user=alice&password=a%26b+c&trust=on").unwrap();
        assert_eq!(f.get("user"), Some("alice"));
        assert_eq!(f.get("password"), Some("a&b c"));
        assert!(f.checked("trust"));
        assert!(!f.checked("other"));
        assert_eq!(Form::parse(b"a=1&a=2").unwrap_err(), FormError::Repeated);
        assert_eq!(
            Form::parse(&vec![b'a'; MAX_FORM + 1]).unwrap_err(),
            FormError::TooLarge
        );
        let many: Vec<String> = (0..20).map(|i| format!("k{i}=v")).collect();
        assert_eq!(
            Form::parse(many.join("&").as_bytes()).unwrap_err(),
            FormError::TooManyFields
        );
        // Invalid percent-encoding is taken literally, never a panic.
        assert_eq!(Form::parse(b"x=%zz%").unwrap().get("x"), Some("%zz%"));
    }
}
