//! RFC 4515 escaping: a user name is data, never filter syntax.

/// Escapes a value for use inside an LDAP filter: `*`, `(`, `)`, `\\`, NUL and the other
/// ASCII control characters become `\\XX` (e.g. `*` → `\\2a`); everything else,
/// non-ASCII UTF-8 included, is kept as it is (RFC 4515 allows UTF-8 in values).
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' | '(' | ')' | '\\' | '\0'..='\u{1f}' | '\u{7f}' => {
                out.push_str(&format!("\\{:02x}", u32::from(c)));
            }
            _ => out.push(c),
        }
    }
    out
}

/// Fills a filter template's `{user}` with the escaped name.
pub fn user_filter(template: &str, user: &str) -> String {
    template.replace("{user}", &escape(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_rfc4515_metacharacters() {
        assert_eq!(escape("weird*(user)\\"), "weird\\2a\\28user\\29\\5c");
        assert_eq!(escape("a\0b"), "a\\00b");
        assert_eq!(escape("山田*"), "山田\\2a");
        assert_eq!(user_filter("(uid={user})", "*"), "(uid=\\2a)");
    }
}
