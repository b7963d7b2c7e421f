//! LDAP connections: opening them (failover across URLs, StartTLS, trust from
//! `tls_ca_file`), the service connections that carry every search, and the pool of bind
//! connections that check user passwords.
//!
//! An ldap3 [`Ldap`] handle multiplexes operations over one connection, so a few service
//! connections (`pool_size`) serve all searches concurrently. A bind changes the
//! identity of its connection, so user binds run on connections of their own, which are
//! never used to search. Every operation is bounded by `timeout`; a connection that
//! fails is dropped, and the operation is retried once on a fresh connection.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use ldap3::asn1::StructureTag;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, Scope, SearchOptions};
use otpgate_config::{LdapConfig, SecretBytes};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::timeout;

use crate::directory::DirectoryError;

/// LDAP result codes this module acts on (RFC 4511, appendix A).
pub(super) mod rc {
    /// success
    pub const SUCCESS: u32 = 0;
    /// sizeLimitExceeded: more entries matched than were asked for.
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    /// noSuchObject: the search base does not exist.
    pub const NO_SUCH_OBJECT: u32 = 32;
    /// invalidCredentials: a wrong password (or a DN that cannot bind).
    pub const INVALID_CREDENTIALS: u32 = 49;
    /// busy
    pub const BUSY: u32 = 51;
    /// unavailable
    pub const UNAVAILABLE: u32 = 52;
}

/// A result code and the server's text, for logs and errors.
pub(super) fn describe(result: &LdapResult) -> String {
    if result.text.is_empty() {
        format!("result code {}", result.rc)
    } else {
        format!("result code {} ({})", result.rc, result.text)
    }
}

/// Opens connections, trying the configured URLs in order.
struct Connector {
    urls: Vec<String>,
    /// Connect timeout, StartTLS and the TLS configuration.
    settings: LdapConnSettings,
    timeout: Duration,
}

impl Connector {
    fn new(config: &LdapConfig) -> Result<Self, DirectoryError> {
        if config.urls.is_empty() {
            return Err(DirectoryError::Protocol("no LDAP URL is configured".into()));
        }
        for url in &config.urls {
            // ldap3 panics on a URL without a host part; the config checks this too.
            if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
                return Err(DirectoryError::Protocol(format!(
                    "`{url}` is not an ldap:// or ldaps:// URL"
                )));
            }
            if url.starts_with("ldap://") && !config.starttls && !is_loopback(url) {
                tracing::warn!(
                    url = %url,
                    "LDAP without TLS: passwords cross the network in clear; set starttls or use ldaps://"
                );
            }
        }
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout)
            .set_starttls(config.starttls);
        if let Some(ca) = &config.tls_ca_file {
            settings = settings.set_config(tls_config(ca)?);
        }
        Ok(Self {
            urls: config.urls.clone(),
            settings,
            timeout: config.timeout,
        })
    }

    /// A connection to the first URL that answers, bound as `service` when given.
    /// Failing on every URL is [`DirectoryError::Unavailable`] naming each URL and why.
    async fn open(&self, service: Option<(&str, &SecretBytes)>) -> Result<Ldap, DirectoryError> {
        let mut failures = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            match self.open_one(url, service).await {
                Ok(ldap) => return Ok(ldap),
                Err(e) => {
                    tracing::warn!(url = %url, error = %e, "LDAP server unusable");
                    failures.push(format!("{url}: {e}"));
                }
            }
        }
        Err(DirectoryError::Unavailable(format!(
            "no LDAP server could be used ({})",
            failures.join("; ")
        )))
    }

    async fn open_one(
        &self,
        url: &str,
        service: Option<(&str, &SecretBytes)>,
    ) -> Result<Ldap, String> {
        // ldap3 bounds the TCP connect; this also bounds StartTLS and the TLS handshake.
        let (conn, mut ldap) = timeout(
            self.timeout,
            LdapConnAsync::with_settings(self.settings.clone(), url),
        )
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let url_owned = url.to_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(url = %url_owned, error = %e, "LDAP connection closed");
            }
        });
        if let Some((dn, password)) = service {
            let password = password
                .expose_str()
                .ok_or_else(|| "the bind password is not UTF-8".to_string())?;
            if password.is_empty() {
                // An empty simple bind is an anonymous bind that "succeeds".
                return Err("the bind password is empty".into());
            }
            let result = timeout(
                self.timeout,
                ldap.with_timeout(self.timeout).simple_bind(dn, password),
            )
            .await
            .map_err(|_| format!("binding as {dn} timed out"))?
            .map_err(|e| format!("binding as {dn}: {e}"))?;
            if result.rc != rc::SUCCESS {
                return Err(format!("binding as {dn} refused: {}", describe(&result)));
            }
        }
        Ok(ldap)
    }
}

/// Whether an `ldap://` URL names this host (plain LDAP is then acceptable).
fn is_loopback(url: &str) -> bool {
    let authority = url
        .trim_start_matches("ldap://")
        .split('/')
        .next()
        .unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A TLS configuration trusting only the certificates in `path` (PEM).
fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let bad =
        |what: String| DirectoryError::Protocol(format!("tls_ca_file {}: {what}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A search entry, parsed without panicking (ldap3's `SearchEntry::construct` panics on
/// malformed input, and the server is not ours to trust that far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RawEntry {
    pub dn: String,
    /// Attribute names as the server spelled them, with their values.
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl RawEntry {
    /// Parses a SearchResultEntry (`[APPLICATION 4] { objectName, attributes }`).
    pub fn parse(tag: StructureTag) -> Option<RawEntry> {
        let mut parts = tag.match_id(4)?.expect_constructed()?.into_iter();
        let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
        let mut attrs = Vec::new();
        for attr in parts.next()?.expect_constructed()? {
            let mut attr = attr.expect_constructed()?.into_iter();
            let name = String::from_utf8(attr.next()?.expect_primitive()?).ok()?;
            let values = attr
                .next()?
                .expect_constructed()?
                .into_iter()
                .map(StructureTag::expect_primitive)
                .collect::<Option<Vec<_>>>()?;
            attrs.push((name, values));
        }
        Some(RawEntry { dn, attrs })
    }

    /// The UTF-8 values of an attribute (names compare case-insensitively).
    pub fn values<'a>(&'a self, attr: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attrs
            .iter()
            .filter(move |(name, _)| name.eq_ignore_ascii_case(attr))
            .flat_map(|(_, values)| values.iter())
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// The first UTF-8 value of an attribute.
    pub fn first(&self, attr: &str) -> Option<String> {
        self.values(attr).next().map(str::to_owned)
    }
}

/// What a search returned: the entries and the server's result.
pub(super) struct Found {
    pub entries: Vec<RawEntry>,
    pub result: LdapResult,
}

/// The outcome of a user bind that the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BindOutcome {
    /// The password is right.
    Success,
    /// `invalidCredentials`.
    InvalidCredentials,
}

/// A service connection and the generation it was opened in, so that a failure on an
/// old connection does not discard its replacement.
struct Service {
    generation: u64,
    ldap: Ldap,
}

/// The service connections and the bind connections.
pub(super) struct Pool {
    connector: Connector,
    bind_dn: String,
    bind_password: SecretBytes,
    timeout: Duration,
    /// `pool_size` slots, used round-robin; empty until first used or after a failure.
    service: Vec<Mutex<Option<Service>>>,
    next_service: AtomicUsize,
    generation: AtomicU64,
    /// Idle bind connections (any identity; only ever rebound). Never held across an
    /// await.
    idle_binders: std::sync::Mutex<Vec<Ldap>>,
    /// Bounds the bind connections in use (and so the pool's size).
    binder_permits: Semaphore,
}

impl Pool {
    /// Checks the settings; opens nothing (see [`Pool::warm`]).
    pub fn new(config: &LdapConfig) -> Result<Self, DirectoryError> {
        let connector = Connector::new(config)?;
        let slots = config.pool_size.max(1);
        Ok(Self {
            connector,
            bind_dn: config.bind_dn.clone(),
            bind_password: config.bind_password.clone(),
            timeout: config.timeout,
            service: (0..slots).map(|_| Mutex::new(None)).collect(),
            next_service: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            idle_binders: std::sync::Mutex::new(Vec::new()),
            binder_permits: Semaphore::new(slots.saturating_mul(4)),
        })
    }

    /// Opens and binds the first service connection, so that a wrong setting shows at
    /// start-up. The other slots connect when first used.
    pub async fn warm(&self) -> Result<(), DirectoryError> {
        self.service_at(0).await.map(|_| ())
    }

    /// The service connection in slot `index`, (re)connecting it when it has none or
    /// its connection has closed.
    async fn service_at(&self, index: usize) -> Result<(u64, Ldap), DirectoryError> {
        let slot = self
            .service
            .get(index)
            .ok_or_else(|| DirectoryError::Protocol("no such service connection".into()))?;
        let mut guard = timeout(self.timeout, slot.lock()).await.map_err(|_| {
            DirectoryError::Unavailable("timed out waiting for an LDAP service connection".into())
        })?;
        if let Some(service) = guard.as_mut() {
            if !service.ldap.is_closed() {
                return Ok((service.generation, service.ldap.clone()));
            }
        }
        *guard = None;
        let ldap = self
            .connector
            .open(Some((&self.bind_dn, &self.bind_password)))
            .await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        *guard = Some(Service {
            generation,
            ldap: ldap.clone(),
        });
        Ok((generation, ldap))
    }

    /// Forgets the service connection in `index` if it is still the one of
    /// `generation`; the next use opens a new one.
    async fn discard_service(&self, index: usize, generation: u64) {
        let Some(slot) = self.service.get(index) else {
            return;
        };
        if let Ok(mut guard) = timeout(self.timeout, slot.lock()).await {
            if guard.as_ref().is_some_and(|s| s.generation == generation) {
                *guard = None;
            }
        }
    }

    /// Searches on a service connection: one attempt, and one more on a fresh
    /// connection if the first fails or times out. The server's result code is
    /// returned for the caller to judge.
    pub async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        size_limit: i32,
    ) -> Result<Found, DirectoryError> {
        let index = self.next_service.fetch_add(1, Ordering::Relaxed) % self.service.len().max(1);
        let mut last_error = String::new();
        for _attempt in 0..2 {
            let (generation, mut ldap) = self.service_at(index).await?;
            let search = ldap
                .with_search_options(SearchOptions::new().sizelimit(size_limit))
                .with_timeout(self.timeout)
                .search(base, scope, filter, attrs);
            match timeout(self.timeout, search).await {
                Ok(Ok(found)) => {
                    let (raw, result) = (found.0, found.1);
                    let mut entries = Vec::with_capacity(raw.len());
                    for entry in raw {
                        entries.push(RawEntry::parse(entry.0).ok_or_else(|| {
                            DirectoryError::Protocol(format!(
                                "malformed search entry from the server (filter {filter})"
                            ))
                        })?);
                    }
                    return Ok(Found { entries, result });
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "timed out".into(),
            }
            tracing::warn!(error = %last_error, "LDAP search failed; reconnecting");
            self.discard_service(index, generation).await;
        }
        Err(DirectoryError::Unavailable(format!(
            "LDAP search failed twice: {last_error}"
        )))
    }

    fn take_idle_binder(&self) -> Option<Ldap> {
        let mut idle = self
            .idle_binders
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn return_binder(&self, ldap: Ldap) {
        self.idle_binders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(ldap);
    }

    /// Binds as `dn` with `password` on a bind connection: the pooled one if any, and,
    /// if that fails, once more on a fresh one. A result code other than success or
    /// `invalidCredentials` is an error (fail closed) and the connection is dropped.
    pub async fn bind(&self, dn: &str, password: &str) -> Result<BindOutcome, DirectoryError> {
        // An empty DN or password makes an anonymous or unauthenticated bind, which
        // many servers answer with success: it proves nothing.
        if dn.is_empty() || password.is_empty() {
            return Err(DirectoryError::Protocol(
                "refusing to bind with an empty DN or password".into(),
            ));
        }
        let _permit = match timeout(self.timeout, self.binder_permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => {
                return Err(DirectoryError::Unavailable(
                    "the LDAP bind pool is closed".into(),
                ));
            }
            Err(_) => {
                return Err(DirectoryError::Unavailable(
                    "timed out waiting for an LDAP bind connection".into(),
                ));
            }
        };
        let mut last_error = String::new();
        for attempt in 0..2 {
            let reused = if attempt == 0 {
                self.take_idle_binder()
            } else {
                None
            };
            let mut ldap = match reused {
                Some(ldap) => ldap,
                None => self.connector.open(None).await?,
            };
            let bind = ldap.with_timeout(self.timeout).simple_bind(dn, password);
            match timeout(self.timeout, bind).await {
                Ok(Ok(result)) => {
                    return match result.rc {
                        rc::SUCCESS => {
                            self.return_binder(ldap);
                            Ok(BindOutcome::Success)
                        }
                        rc::INVALID_CREDENTIALS => {
                            self.return_binder(ldap);
                            Ok(BindOutcome::InvalidCredentials)
                        }
                        rc::BUSY | rc::UNAVAILABLE => Err(DirectoryError::Unavailable(format!(
                            "binding as {dn}: {}",
                            describe(&result)
                        ))),
                        _ => Err(DirectoryError::Protocol(format!(
                            "binding as {dn}: {}",
                            describe(&result)
                        ))),
                    };
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "timed out".into(),
            }
            tracing::warn!(dn = %dn, error = %last_error, "LDAP bind failed; reconnecting");
        }
        Err(DirectoryError::Unavailable(format!(
            "binding as {dn} failed twice: {last_error}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{PL, TagClass};

    fn prim(id: u64, bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(bytes.to_vec()),
        }
    }

    fn cons(class: TagClass, id: u64, inner: Vec<StructureTag>) -> StructureTag {
        StructureTag {
            class,
            id,
            payload: PL::C(inner),
        }
    }

    fn attr(name: &str, values: &[&[u8]]) -> StructureTag {
        cons(
            TagClass::Universal,
            16,
            vec![
                prim(4, name.as_bytes()),
                cons(
                    TagClass::Universal,
                    17,
                    values.iter().map(|v| prim(4, v)).collect(),
                ),
            ],
        )
    }

    #[test]
    fn parses_entries_without_panicking() {
        let entry = cons(
            TagClass::Application,
            4,
            vec![
                prim(4, b"uid=alice,ou=people,dc=example,dc=org"),
                cons(
                    TagClass::Universal,
                    16,
                    vec![
                        attr("mail", &[b"alice@example.org"]),
                        attr("memberOf", &[b"cn=a", b"\xff\xfe", b"cn=b"]),
                    ],
                ),
            ],
        );
        let parsed = RawEntry::parse(entry).unwrap();
        assert_eq!(parsed.dn, "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(parsed.first("MAIL").as_deref(), Some("alice@example.org"));
        assert_eq!(
            parsed.values("memberof").collect::<Vec<_>>(),
            ["cn=a", "cn=b"]
        );
        assert_eq!(parsed.first("cn"), None);

        // Wrong tag, missing parts, primitive where constructed is expected: None.
        assert!(RawEntry::parse(prim(4, b"x")).is_none());
        assert!(RawEntry::parse(cons(TagClass::Application, 5, vec![])).is_none());
        assert!(RawEntry::parse(cons(TagClass::Application, 4, vec![])).is_none());
        assert!(
            RawEntry::parse(cons(
                TagClass::Application,
                4,
                vec![prim(4, b"dn"), prim(4, b"not a sequence")]
            ))
            .is_none()
        );
        assert!(
            RawEntry::parse(cons(
                TagClass::Application,
                4,
                vec![prim(4, b"\xff"), cons(TagClass::Universal, 16, vec![])]
            ))
            .is_none()
        );
    }

    #[tokio::test]
    async fn never_binds_with_an_empty_dn_or_password() {
        let config = LdapConfig {
            urls: vec!["ldap://127.0.0.1:9".into()],
            base_dn: "dc=example,dc=org".into(),
            user_filter: "(uid={user})".into(),
            bind_dn: "cn=svc,dc=example,dc=org".into(),
            bind_password: SecretBytes::new(b"pw".to_vec()),
            activated_filter: None,
            groups_attribute: "memberOf".into(),
            mail_attribute: "mail".into(),
            starttls: false,
            tls_ca_file: None,
            timeout: Duration::from_secs(1),
            pool_size: 1,
            cache_for: Duration::ZERO,
        };
        let pool = Pool::new(&config).unwrap();
        for (dn, pw) in [("", "pw"), ("uid=a,dc=example,dc=org", "")] {
            assert!(matches!(
                pool.bind(dn, pw).await,
                Err(DirectoryError::Protocol(_))
            ));
        }
    }

    #[test]
    fn tls_trust_file_must_hold_certificates() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"not a certificate\n").unwrap();
        assert!(matches!(
            tls_config(f.path()),
            Err(DirectoryError::Protocol(_))
        ));
        assert!(tls_config(Path::new("/nonexistent/ca.pem")).is_err());
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback("ldap://127.0.0.1:389"));
        assert!(is_loopback("ldap://localhost"));
        assert!(is_loopback("ldap://[::1]:389"));
        assert!(!is_loopback("ldap://ldap.example.org"));
        assert!(!is_loopback("ldap://127.example.org"));
    }
}
