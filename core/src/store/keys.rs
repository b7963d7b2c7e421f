//! Key names. All of one user's keys share the Redis hash tag `{<user>}`; the user
//! name is percent-encoded so that `{`, `}` and `:` in a name cannot move the tag or
//! collide with another user's keys.

use crate::user::UserName;

/// The user's part of every key, `{alice}`, with the name percent-encoded.
pub fn user_tag(user: &UserName) -> String {
    let mut out = String::with_capacity(user.as_str().len() + 2);
    out.push('{');
    for b in user.as_str().bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push('}');
    out
}

/// `<prefix>{<user>}:<what>`.
pub fn user_key(prefix: &str, user: &UserName, what: &str) -> String {
    format!("{prefix}{}:{what}", user_tag(user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_cannot_be_broken_by_the_name() {
        let u = UserName::parse("we}ird{:x").unwrap();
        assert_eq!(
            user_key("otpgate:", &u, "account"),
            "otpgate:{we%7Dird%7B%3Ax}:account"
        );
        let a = UserName::parse("alice").unwrap();
        assert_eq!(
            user_key("otpgate:", &a, "account"),
            "otpgate:{alice}:account"
        );
    }
}
