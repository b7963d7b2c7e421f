//! Key names, shared by both backends.
//!
//! All of one user's keys share the Redis hash tag `{<user>}`; the user name is
//! percent-encoded so that `{`, `}` and `:` in a name cannot move the tag or collide
//! with another user's keys. The global keys (helpdesk queue, audit log) use tags that
//! start with `!`, a byte the encoding never leaves bare, so no user name can produce
//! them.

use crate::store::{CodeSlot, Counter};
use crate::user::UserName;

/// The account hash: `version` and `json`.
pub const ACCOUNT: &str = "account";
/// Consecutive second-factor failures (an integer; expires 30 days after the last).
pub const FAILURES: &str = "failures";
/// The lock: the time it ends (seconds), with a TTL.
pub const LOCK: &str = "lock";
/// The last accepted TOTP step. Never expires.
pub const TOTP_STEP: &str = "totp-step";
/// The last accepted step of each of the user's other tokens: a hash of token name →
/// zero-padded step (Redis); one JSON map (embedded). Never expires.
pub const TOKEN_STEPS: &str = "token-steps";
/// Trusted devices: a hash of device id → JSON record.
pub const TRUSTED: &str = "trusted";

/// Percent-encodes every byte except ASCII letters, digits and `-_.@`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The user's part of every key, `{alice}`, with the name percent-encoded.
pub fn user_tag(user: &UserName) -> String {
    format!("{{{}}}", escape(user.as_str()))
}

/// `<prefix>{<user>}:<what>`.
pub fn user_key(prefix: &str, user: &UserName, what: &str) -> String {
    format!("{prefix}{}:{what}", user_tag(user))
}

/// The key of a code slot: `<prefix>{<user>}:code:<slot>`.
pub fn code_key(prefix: &str, user: &UserName, slot: CodeSlot) -> String {
    user_key(prefix, user, &format!("code:{}", slot.as_str()))
}

/// The key of a challenge: `<prefix>{<user>}:challenge:<id, percent-encoded>`.
pub fn challenge_key(prefix: &str, user: &UserName, id: &str) -> String {
    user_key(prefix, user, &format!("challenge:{}", escape(id)))
}

/// The start of every challenge key of a user (for prefix scans in the embedded store).
pub fn challenge_key_prefix(prefix: &str, user: &UserName) -> String {
    user_key(prefix, user, "challenge:")
}

/// The key of a door's session: `<prefix>{<user>}:session:<id hash, percent-encoded>`.
pub fn session_key(prefix: &str, user: &UserName, id_hash: &str) -> String {
    user_key(prefix, user, &format!("session:{}", escape(id_hash)))
}

/// The start of every session key of a user (for prefix scans in the embedded store).
pub fn session_key_prefix(prefix: &str, user: &UserName) -> String {
    user_key(prefix, user, "session:")
}

/// The key of a rate counter: under the user's tag, or a tag of its own (starting with
/// `!`, so no user name can produce it) for a counter that belongs to no user.
pub fn counter_key(prefix: &str, counter: &Counter<'_>) -> String {
    match counter {
        Counter::User { user, name } => user_key(prefix, user, &format!("count:{}", escape(name))),
        Counter::Global { name } => format!("{prefix}{{!count:{}}}:n", escape(name)),
    }
}

/// The helpdesk queue: one hash, field = user name, value = JSON request.
pub fn helpdesk_key(prefix: &str) -> String {
    format!("{prefix}{{!helpdesk}}:queue")
}

/// One user's entry in the embedded store's helpdesk queue (Redis keeps the queue in
/// one hash instead).
pub fn helpdesk_entry_key(prefix: &str, user: &UserName) -> String {
    format!("{}:{}", helpdesk_key(prefix), escape(user.as_str()))
}

/// The hardware-token pool: one hash, field = serial, value = JSON token (its secret
/// sealed for the pool).
pub fn pool_key(prefix: &str) -> String {
    format!("{prefix}{{!tokens}}:pool")
}

/// The pool's assignments: one hash, field = serial, value = user name (same tag as the
/// pool, so one script may touch both).
pub fn pool_assigned_key(prefix: &str) -> String {
    format!("{prefix}{{!tokens}}:assigned")
}

/// One serial's entry in the embedded store's pool (Redis keeps it in one hash).
pub fn pool_entry_key(prefix: &str, serial: &str) -> String {
    format!("{}:{}", pool_key(prefix), escape(serial))
}

/// The audit log: a sorted set scored by time.
pub fn audit_log_key(prefix: &str) -> String {
    format!("{prefix}{{!audit}}:log")
}

/// The audit sequence, which keeps records of one second in the order they came
/// (same tag as the log, so one script may touch both).
pub fn audit_seq_key(prefix: &str) -> String {
    format!("{prefix}{{!audit}}:seq")
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

    #[test]
    fn global_tags_cannot_be_a_user_tag() {
        let u = UserName::parse("!audit").unwrap();
        assert_eq!(user_tag(&u), "{%21audit}");
        assert!(audit_log_key("p:").starts_with("p:{!audit}"));
        assert!(helpdesk_key("p:").starts_with("p:{!helpdesk}"));
    }

    #[test]
    fn sessions_and_counters_keep_their_tags() {
        let a = UserName::parse("alice").unwrap();
        assert_eq!(session_key("p:", &a, "ab:}"), "p:{alice}:session:ab%3A%7D");
        assert!(session_key("p:", &a, "x").starts_with(&session_key_prefix("p:", &a)));
        let user = Counter::User {
            user: &a,
            name: "mail",
        };
        assert_eq!(counter_key("p:", &user), "p:{alice}:count:mail");
        let global = Counter::Global { name: "to:a}b" };
        assert_eq!(counter_key("p:", &global), "p:{!count:to%3Aa%7Db}:n");
    }

    #[test]
    fn challenge_ids_are_encoded() {
        let a = UserName::parse("alice").unwrap();
        assert_eq!(
            challenge_key("p:", &a, "a:b}"),
            "p:{alice}:challenge:a%3Ab%7D"
        );
        assert!(challenge_key("p:", &a, "x").starts_with(&challenge_key_prefix("p:", &a)));
    }
}
