//! LDAP directory (ldap3): search with the service account, bind as the user.
//!
//! # Round trips
//!
//! A successful [`check_password`](DirectoryBackend::check_password) costs two: one
//! search whose filter is `(&USER_FILTER ACTIVATED_FILTER)`, then one bind as the
//! entry's DN on a pooled bind connection. Connections stay open between logins (see
//! `conn`). Refusals may cost more: when the combined search finds nothing, a second
//! search tells an unknown user from one who is not activated, and a not-activated user
//! is told so only if their password is right (a bind), so the state is not shown to
//! someone who does not know the password. A [`lookup`](DirectoryBackend::lookup) of
//! an activated user is one search (the combined filter); of one who is not, two.
//!
//! With `cache_for` (see `super::cache`), an activated user's search result is reused
//! for that long: a login within it costs the bind alone, a lookup nothing. The bind
//! is never cached, and an entry is served from the cache only while it was activated
//! when searched, so an activation takes effect at once and only a deactivation (and
//! groups, mail, display name) can lag, by at most `cache_for`.
//!
//! # Failing closed
//!
//! Only a bind that the server answers with success verifies a password. Every other
//! answer, a timeout or a lost connection is a [`DirectoryError`].

mod conn;

use std::sync::Arc;

use ldap3::Scope;
use zeroize::Zeroizing;

use self::conn::{BindOutcome, Found, Pool, RawEntry, describe, rc};
use super::cache::EntryCache;
use super::{DirectoryBackend, DirectoryError, PasswordCheck, UserEntry, filter, verified};
use crate::clock::Clock;
use crate::error::Refusal;
use crate::user::UserName;

/// Ask for at most this many entries: two are enough to see that a name is ambiguous.
const SIZE_LIMIT: i32 = 2;

/// LDAP with connection reuse and failover.
pub struct LdapDirectory {
    /// Boxed: it is large, and `Directory` holds this or a users file.
    pool: Box<Pool>,
    base_dn: String,
    /// `user_filter`, with `{user}` to fill.
    user_filter: String,
    /// `(&user_filter activated_filter)`, or `user_filter` when there is no
    /// `activated_filter`; with `{user}` to fill.
    activated_user_filter: String,
    activated_filter: Option<String>,
    mail_attribute: String,
    groups_attribute: String,
    /// Activated users' search results, when `cache_for` is not zero.
    cache: Option<EntryCache>,
    /// The cache's time.
    clock: Arc<dyn Clock>,
}

/// What a user search found.
enum Match {
    None,
    One(RawEntry),
    /// More than one entry: refused as unknown (and logged).
    Ambiguous,
}

impl LdapDirectory {
    /// Opens and binds a service connection (trying `urls` in order). Failing on every
    /// URL is [`DirectoryError::Unavailable`] naming the URLs tried. `clock` dates the
    /// entries of the cache.
    pub async fn connect(
        config: &otpgate_config::LdapConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DirectoryError> {
        Self::connect_with(config, clock, crate::store::Connect::Now).await
    }

    /// Like [`LdapDirectory::connect`]; with [`crate::store::Connect::Lazily`] nothing is
    /// opened here (the settings are still checked), and the first use connects.
    pub async fn connect_with(
        config: &otpgate_config::LdapConfig,
        clock: Arc<dyn Clock>,
        connect: crate::store::Connect,
    ) -> Result<Self, DirectoryError> {
        for (key, f) in [
            ("user_filter", Some(&config.user_filter)),
            ("activated_filter", config.activated_filter.as_ref()),
        ] {
            if let Some(f) = f {
                if !(f.starts_with('(') && f.ends_with(')')) {
                    return Err(DirectoryError::Protocol(format!(
                        "{key} `{f}` is not a parenthesised LDAP filter"
                    )));
                }
            }
        }
        if !config.user_filter.contains("{user}") {
            return Err(DirectoryError::Protocol(
                "user_filter does not contain `{user}`".into(),
            ));
        }
        let activated_user_filter = match &config.activated_filter {
            Some(a) => format!("(&{}{a})", config.user_filter),
            None => config.user_filter.clone(),
        };
        let pool = Box::new(Pool::new(config)?);
        if connect == crate::store::Connect::Now {
            pool.warm().await?;
        }
        Ok(Self {
            pool,
            base_dn: config.base_dn.clone(),
            user_filter: config.user_filter.clone(),
            activated_user_filter,
            activated_filter: config.activated_filter.clone(),
            mail_attribute: config.mail_attribute.clone(),
            groups_attribute: config.groups_attribute.clone(),
            cache: EntryCache::new(config.cache_for),
            clock,
        })
    }

    /// The cached entry of an activated user, searched for less than `cache_for` ago.
    fn cached(&self, user: &UserName) -> Option<UserEntry> {
        self.cache.as_ref()?.get(user, self.clock.now())
    }

    /// Keeps an activated user's entry (others are searched for each time, so an
    /// activation takes effect at once).
    fn keep(&self, entry: &UserEntry) {
        if let (Some(cache), true) = (&self.cache, entry.activated) {
            cache.put(&entry.name, entry, self.clock.now());
        }
    }

    /// Forgets a user's cached entry (a bind as it was refused: it may have moved).
    fn forget(&self, user: &UserName) {
        if let Some(cache) = &self.cache {
            cache.forget(user);
        }
    }

    /// How many entries the cache holds (0 when it is off).
    pub fn cached_entries(&self) -> usize {
        self.cache.as_ref().map_or(0, EntryCache::len)
    }

    /// The entry by search: the combined filter first (one search for an activated
    /// user), then, when there is an `activated_filter` and nothing activated matched,
    /// the user filter alone (the entry, not activated).
    async fn search_entry(&self, user: &UserName) -> Result<Option<UserEntry>, DirectoryError> {
        match self.find(user, &self.activated_user_filter).await? {
            Match::One(raw) => Ok(Some(self.entry(user, raw, true))),
            Match::Ambiguous => Ok(None),
            Match::None if self.activated_filter.is_none() => Ok(None),
            Match::None => match self.find(user, &self.user_filter).await? {
                Match::One(raw) => Ok(Some(self.entry(user, raw, false))),
                Match::None | Match::Ambiguous => Ok(None),
            },
        }
    }

    fn attributes(&self) -> [&str; 4] {
        [
            &self.mail_attribute,
            &self.groups_attribute,
            "cn",
            "displayName",
        ]
    }

    /// Searches `base_dn` (subtree) with `template`, `{user}` filled with the escaped
    /// name.
    async fn find(&self, user: &UserName, template: &str) -> Result<Match, DirectoryError> {
        let filter = filter::user_filter(template, user.as_str());
        let found = self
            .pool
            .search(
                &self.base_dn,
                Scope::Subtree,
                &filter,
                &self.attributes(),
                SIZE_LIMIT,
            )
            .await?;
        // sizeLimitExceeded means more entries matched than came back, even if a
        // server-side limit let only one through: never take that one as the user.
        let truncated = found.result.rc == rc::SIZE_LIMIT_EXCEEDED;
        let mut entries = entries_of(found, &filter)?.into_iter();
        match (entries.next(), entries.next()) {
            (None, _) if !truncated => Ok(Match::None),
            (Some(entry), None) if !truncated => Ok(Match::One(entry)),
            _ => {
                tracing::warn!(
                    user = %user,
                    "more than one directory entry matches the user name; refused as unknown"
                );
                Ok(Match::Ambiguous)
            }
        }
    }

    fn entry(&self, user: &UserName, raw: RawEntry, activated: bool) -> UserEntry {
        UserEntry {
            name: user.clone(),
            mail: raw.first(&self.mail_attribute),
            groups: raw
                .values(&self.groups_attribute)
                .map(str::to_owned)
                .collect(),
            display_name: raw.first("displayName").or_else(|| raw.first("cn")),
            activated,
            dn: raw.dn,
        }
    }
}

/// The entries of a search, judging the server's result code: success, too many
/// entries (the caller sees two) and "no such object" (none) are answers; anything
/// else is an error.
fn entries_of(found: Found, filter: &str) -> Result<Vec<RawEntry>, DirectoryError> {
    match found.result.rc {
        rc::SUCCESS | rc::SIZE_LIMIT_EXCEEDED => Ok(found.entries),
        rc::NO_SUCH_OBJECT => Ok(Vec::new()),
        rc::BUSY | rc::UNAVAILABLE => Err(DirectoryError::Unavailable(format!(
            "search {filter}: {}",
            describe(&found.result)
        ))),
        _ => Err(DirectoryError::Protocol(format!(
            "search {filter}: {}",
            describe(&found.result)
        ))),
    }
}

impl DirectoryBackend for LdapDirectory {
    async fn ping(&self) -> Result<(), DirectoryError> {
        let found = self
            .pool
            .search("", Scope::Base, "(objectClass=*)", &["1.1"], 1)
            .await?;
        if found.result.rc == rc::SUCCESS {
            Ok(())
        } else {
            Err(DirectoryError::Protocol(format!(
                "root DSE: {}",
                describe(&found.result)
            )))
        }
    }

    async fn lookup(&self, user: &UserName) -> Result<Option<UserEntry>, DirectoryError> {
        if let Some(entry) = self.cached(user) {
            return Ok(Some(entry));
        }
        let entry = self.search_entry(user).await?;
        if let Some(entry) = &entry {
            self.keep(entry);
        }
        Ok(entry)
    }

    async fn check_password(
        &self,
        user: &UserName,
        password: &[u8],
    ) -> Result<PasswordCheck, DirectoryError> {
        // Directory::verify_password refuses this first; an empty simple bind is an
        // anonymous bind, which "succeeds", so never let one through.
        if password.is_empty() {
            return Ok(PasswordCheck::Refused(Refusal::EmptyPassword));
        }
        // ldap3 sends passwords as &str. A password that is not UTF-8 cannot be sent
        // unchanged, so it cannot be right: refuse it without asking.
        let Ok(password) = std::str::from_utf8(password) else {
            tracing::debug!(user = %user, "password is not UTF-8; refused");
            return Ok(PasswordCheck::Refused(Refusal::WrongPassword));
        };
        let password = Zeroizing::new(password.to_owned());

        // A cached activated entry: the bind alone. A refused bind forgets the entry, so
        // the next login searches again (the entry may have moved or gone).
        if let Some(entry) = self.cached(user) {
            return match self.pool.bind(&entry.dn, &password).await? {
                BindOutcome::Success => Ok(PasswordCheck::Verified(verified(entry))),
                BindOutcome::InvalidCredentials => {
                    self.forget(user);
                    Ok(PasswordCheck::Refused(Refusal::WrongPassword))
                }
            };
        }
        match self.find(user, &self.activated_user_filter).await? {
            Match::One(raw) => match self.pool.bind(&raw.dn, &password).await? {
                BindOutcome::Success => {
                    let entry = self.entry(user, raw, true);
                    self.keep(&entry);
                    Ok(PasswordCheck::Verified(verified(entry)))
                }
                BindOutcome::InvalidCredentials => {
                    Ok(PasswordCheck::Refused(Refusal::WrongPassword))
                }
            },
            Match::Ambiguous => Ok(PasswordCheck::Refused(Refusal::UnknownUser)),
            Match::None if self.activated_filter.is_none() => {
                Ok(PasswordCheck::Refused(Refusal::UnknownUser))
            }
            // Nothing activated matches: unknown, or there but not activated?
            Match::None => match self.find(user, &self.user_filter).await? {
                Match::None | Match::Ambiguous => Ok(PasswordCheck::Refused(Refusal::UnknownUser)),
                Match::One(raw) => match self.pool.bind(&raw.dn, &password).await? {
                    BindOutcome::Success => Ok(PasswordCheck::Refused(Refusal::NotActivated)),
                    BindOutcome::InvalidCredentials => {
                        Ok(PasswordCheck::Refused(Refusal::WrongPassword))
                    }
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otpgate_config::{LdapConfig, SecretBytes};
    use std::time::{Duration, Instant};

    fn config(urls: Vec<String>) -> LdapConfig {
        LdapConfig {
            urls,
            base_dn: "ou=people,dc=example,dc=org".into(),
            user_filter: "(uid={user})".into(),
            bind_dn: "cn=otpgate,dc=example,dc=org".into(),
            bind_password: SecretBytes::new(b"service".to_vec()),
            activated_filter: Some("(!(employeeType=disabled))".into()),
            groups_attribute: "memberOf".into(),
            mail_attribute: "mail".into(),
            starttls: false,
            tls_ca_file: None,
            timeout: Duration::from_secs(2),
            pool_size: 2,
            cache_for: Duration::ZERO,
        }
    }

    fn clock() -> Arc<dyn Clock> {
        Arc::new(crate::clock::ManualClock::default())
    }

    /// A loopback port with nothing listening.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("ldap://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn unreachable_servers_are_unavailable_naming_each_url() {
        let (a, b) = (dead_url(), dead_url());
        let started = Instant::now();
        let err = match LdapDirectory::connect(&config(vec![a.clone(), b.clone()]), clock()).await {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
        assert!(started.elapsed() < Duration::from_secs(5));
        let DirectoryError::Unavailable(message) = err else {
            panic!("{err}");
        };
        assert!(message.contains(&a) && message.contains(&b), "{message}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        // Accepts TCP connections (the kernel does) but never speaks LDAP.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ldap://{}", listener.local_addr().unwrap());
        let mut c = config(vec![url]);
        c.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let result = LdapDirectory::connect(&c, clock()).await;
        assert!(matches!(result, Err(DirectoryError::Unavailable(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
    }

    #[tokio::test]
    async fn bad_settings_are_refused_before_connecting() {
        let mut c = config(vec!["http://127.0.0.1".into()]);
        assert!(matches!(
            LdapDirectory::connect(&c, clock()).await,
            Err(DirectoryError::Protocol(_))
        ));
        c.urls = vec![dead_url()];
        c.user_filter = "uid={user}".into();
        assert!(matches!(
            LdapDirectory::connect(&c, clock()).await,
            Err(DirectoryError::Protocol(_))
        ));
        c.user_filter = "(uid=alice)".into();
        assert!(matches!(
            LdapDirectory::connect(&c, clock()).await,
            Err(DirectoryError::Protocol(_))
        ));
        c.user_filter = "(uid={user})".into();
        c.tls_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            LdapDirectory::connect(&c, clock()).await,
            Err(DirectoryError::Protocol(_))
        ));
    }

    #[test]
    fn futures_are_send() {
        fn send<T: Send>(_: &T) {}
        async fn all(d: &LdapDirectory, u: &UserName) {
            let _ = d.check_password(u, b"pw").await;
            let _ = d.lookup(u).await;
            let _ = d.ping().await;
        }
        fn check(d: &LdapDirectory, u: &UserName) {
            send(&all(d, u));
        }
        let _ = check;
    }
}
