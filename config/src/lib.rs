//! otpgate configuration: the TOML file of the product's contract, read in two stages.
//!
//! # Layout
//!
//! - [`raw`]: serde structs mirroring the file, `deny_unknown_fields` everywhere.
//! - this module: the validated [`Config`] of parsed types (durations, socket addresses,
//!   CIDRs, loaded secrets). Everything a door needs is checked here, once, so the rest of
//!   the product never sees a half-valid setting.
//! - [`duration`]: `"30s"`, `"15m"`, `"24h"`, `"7d"`.
//! - [`secret`]: secrets come from `*_file` (permissions checked) or `*_env`, never
//!   from the main file.
//! - [`policy`]: `[[policy]]` rules and the `enroll_by` date.
//! - [`error`]: every error names the file, the line when known, and the key.
//! - [`user_name`]: the checked, canonical [`user_name::UserName`] every door uses (here
//!   rather than in the core, so the PAM module in server mode needs no core).
//!
//! Sections are optional where a host may not need them: a PAM host in server mode has
//! only `[pam]`; [`Config::require_core`] is what the server and the CLI call to insist on
//! the directory, store and key.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod duration;
pub mod error;
pub mod policy;
pub mod raw;
pub mod secret;
pub mod user_name;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
pub use ipnet::IpNet;
pub use policy::{Date, PolicyDoor, PolicyRule, SecondFactor};
pub use secret::SecretBytes;
/// `[directory] cache_for` when the configuration says nothing (the bench gives the
/// FreeRADIUS baseline a user cache as long).
pub use validate::DEFAULT_LDAP_CACHE_FOR;

/// The default configuration path, overridden by `--config` or `OTPGATE_CONFIG`.
pub const DEFAULT_PATH: &str = "/etc/otpgate/otpgate.toml";

/// How a file is loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Allow `*_env` secrets. The PAM module turns this off: its settings come from the
    /// root-owned file only, never from the environment of the process that loaded it.
    pub allow_env_secrets: bool,
    /// Refuse secret files readable by others (and the master key readable by the
    /// group). Only tests that cannot set modes turn this off.
    pub check_permissions: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            allow_env_secrets: true,
            check_permissions: true,
        }
    }
}

/// A validated configuration. `Debug` is safe: every secret is a [`SecretBytes`], which
/// redacts itself.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub directory: Option<DirectoryConfig>,
    pub store: Option<StoreConfig>,
    /// The 32-byte key that encrypts TOTP secrets at rest.
    pub master_key: Option<SecretBytes>,
    pub totp: TotpConfig,
    pub email_otp: EmailOtpConfig,
    pub notification: NotificationConfig,
    pub smtp: Option<SmtpConfig>,
    pub lockout: LockoutConfig,
    pub trust: TrustConfig,
    pub audit: AuditConfig,
    pub radius: Option<RadiusConfig>,
    pub pam: Option<PamConfig>,
    pub portal: Option<PortalConfig>,
    pub metrics: Option<MetricsConfig>,
    pub control: Option<ControlConfig>,
    /// `[[policy]]` rules, in file order (first match wins).
    pub policy: Vec<PolicyRule>,
}

/// The sections every use of the core needs, borrowed from a [`Config`].
#[derive(Debug, Clone, Copy)]
pub struct CoreSections<'a> {
    pub directory: &'a DirectoryConfig,
    pub store: &'a StoreConfig,
    pub master_key: &'a SecretBytes,
}

impl Config {
    /// Insists on `[directory]`, `[store]` and `[secrets]`, which every door that runs
    /// the core needs (the server, the CLI, PAM direct mode).
    pub fn require_core(&self) -> Result<CoreSections<'_>, ConfigError> {
        let missing = |section: &str| ConfigError {
            file: self.path.clone(),
            line: None,
            key: Some(section.to_string()),
            message: format!("the section [{section}] is required here"),
        };
        Ok(CoreSections {
            directory: self
                .directory
                .as_ref()
                .ok_or_else(|| missing("directory"))?,
            store: self.store.as_ref().ok_or_else(|| missing("store"))?,
            master_key: self.master_key.as_ref().ok_or_else(|| missing("secrets"))?,
        })
    }
}

/// Where users and their passwords live.
#[derive(Debug, Clone)]
pub enum DirectoryConfig {
    Ldap(Box<LdapConfig>),
    /// A users file with argon2 hashes, for a single host and the demo.
    File {
        path: PathBuf,
    },
}

/// `[directory] kind = "ldap"`.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// Tried in order; the next is used when one cannot be reached.
    pub urls: Vec<String>,
    pub base_dn: String,
    /// Contains `{user}`, replaced by the RFC 4515-escaped user name.
    pub user_filter: String,
    pub bind_dn: String,
    pub bind_password: SecretBytes,
    /// Users whose entry does not match cannot enroll or log in.
    pub activated_filter: Option<String>,
    pub groups_attribute: String,
    pub mail_attribute: String,
    pub starttls: bool,
    pub tls_ca_file: Option<PathBuf>,
    /// Bound on every LDAP operation, connecting included.
    pub timeout: Duration,
    /// Service-account connections kept open for searches.
    pub pool_size: usize,
    /// How long a user's search result (DN, activation, groups, mail, display name) is
    /// reused before the directory is searched again; zero turns the cache off. The
    /// password bind always goes to the directory. Whole seconds.
    pub cache_for: Duration,
}

/// Where second-factor state lives.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Redis(RedisConfig),
    /// redb, single process: one host and the demo.
    Embedded {
        path: PathBuf,
        key_prefix: String,
    },
}

/// A Redis store: where, how to authenticate, and what the server must guarantee.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub target: RedisTarget,
    pub key_prefix: String,
    /// Bound on every store operation.
    pub timeout: Duration,
    /// Credentials for the data nodes (standalone, cluster nodes, the sentinels' master).
    pub auth: RedisAuth,
    /// PEM certificates to trust for `rediss://` instead of the system's roots.
    pub tls_ca: Option<Vec<u8>>,
    /// Refuse a server without AOF persistence instead of warning.
    pub require_persistence: bool,
}

impl RedisConfig {
    /// A plain configuration: no credentials, system roots, persistence only warned
    /// about (tests and tools that point at one URL).
    pub fn plain(target: RedisTarget, key_prefix: &str, timeout: Duration) -> Self {
        Self {
            target,
            key_prefix: key_prefix.into(),
            timeout,
            auth: RedisAuth::default(),
            tls_ca: None,
            require_persistence: false,
        }
    }
}

/// Redis ACL credentials (`AUTH [username] password`); none when `password` is `None`.
#[derive(Debug, Clone, Default)]
pub struct RedisAuth {
    pub username: Option<String>,
    pub password: Option<SecretBytes>,
}

/// Which Redis deployment.
#[derive(Debug, Clone)]
pub enum RedisTarget {
    Standalone(String),
    Cluster(Vec<String>),
    Sentinel {
        master_name: String,
        urls: Vec<String>,
        /// Credentials for the sentinels (the master uses [`RedisConfig::auth`]).
        auth: RedisAuth,
    },
}

/// TOTP hash function (RFC 6238 allows SHA-1, SHA-256, SHA-512). Stored with a token
/// as `"SHA1"`, `"SHA256"`, `"SHA512"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TotpAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Clone)]
pub struct TotpConfig {
    pub issuer: String,
    pub digits: u32,
    pub period: Duration,
    /// Steps either side of now that are accepted.
    pub skew_steps: u32,
    pub algorithm: TotpAlgorithm,
}

#[derive(Debug, Clone)]
pub struct EmailOtpConfig {
    pub digits: u32,
    pub valid_for: Duration,
}

/// A refused domain for notification addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRule {
    /// `example.ac.jp`: that domain exactly.
    Exact(String),
    /// `*.example.ac.jp`: its subdomains (not the domain itself).
    Subdomains(String),
}

impl DomainRule {
    /// Whether `domain` (any case) falls under this rule.
    pub fn matches(&self, domain: &str) -> bool {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        match self {
            DomainRule::Exact(d) => domain == *d,
            DomainRule::Subdomains(d) => domain
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NotificationConfig {
    pub denied_domains: Vec<DomainRule>,
    /// How long a mailed reset link stays valid.
    pub reset_valid_for: Duration,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// `smtp://host:port` (add `?tls=required` for STARTTLS) or `smtps://host:port`.
    pub url: String,
    pub from: String,
    pub username: Option<String>,
    pub password: Option<SecretBytes>,
    pub timeout: Duration,
    /// How the connection is protected, read off `url`.
    pub tls: SmtpTls,
    /// Trust only this CA (PEM) for the server's certificate, instead of the Mozilla
    /// roots; for a campus relay with an internal CA.
    pub tls_ca_file: Option<PathBuf>,
}

/// How mail to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://host:port`: no TLS (a relay on the same host or network).
    None,
    /// `smtp://host:port?tls=required`: STARTTLS, and no mail is sent without it.
    StartTls,
    /// `smtps://host:port`: TLS from the first byte (RFC 8314).
    Wrapper,
}

#[derive(Debug, Clone)]
pub struct LockoutConfig {
    pub max_failures: u32,
    pub lock_for: Duration,
}

#[derive(Debug, Clone)]
pub struct TrustConfig {
    pub remember_for: Duration,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// JSON lines are appended here when set (they always go to the log too).
    pub file: Option<PathBuf>,
    /// How long audit records are kept in the store.
    pub keep: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadiusMode {
    Append,
    Challenge,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unenrolled {
    Reject,
    PasswordOnly,
}

#[derive(Debug, Clone)]
pub struct RadiusConfig {
    pub listen: Vec<SocketAddr>,
    pub mode: RadiusMode,
    pub email_keyword: String,
    pub unenrolled: Unenrolled,
    pub reject_delay: Duration,
    /// Whole-request deadline; well inside a NAS's retransmit timeout.
    pub request_timeout: Duration,
    pub max_in_flight: usize,
    pub clients: Vec<RadiusClient>,
    pub groups: Vec<RadiusGroup>,
}

#[derive(Debug, Clone)]
pub struct RadiusClient {
    pub name: String,
    pub network: IpNet,
    pub secret: SecretBytes,
    pub require_message_authenticator: bool,
    /// The client checked the password already (a PAM host): the code alone is sent.
    pub password_checked_by_client: bool,
    /// Trust devices by Calling-Station-Id after a full login.
    pub trust_calling_station: bool,
    /// Tell the client why a request was rejected (unknown user, locked, not enrolled)
    /// in an otpgate vendor attribute: for pam_otpgate hosts, which map it to their
    /// PAM result. Never shown to users; off for NASes.
    pub reject_reasons: bool,
    /// Drop a request with Proxy-State but no Message-Authenticator (BlastRADIUS;
    /// FreeRADIUS's `limit_proxy_state`). Matters only when
    /// `require_message_authenticator` is off.
    pub limit_proxy_state: bool,
    /// The client is a pam_otpgate host (server mode): its requests count as the door
    /// "pam" for `[[policy]]`. (Enrollment at the login is direct mode's only: its QR
    /// code does not fit a RADIUS packet.)
    pub pam_host: bool,
}

/// A door's configured word that an earlier step checked the password: a RADIUS client
/// with `password_checked_by_client = true`, or a host's own `[pam]` section for the
/// module in `mode=otp-only`. Made only here, from settings that say so; the core's
/// login flow takes it in place of a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordVouch {
    by: String,
}

impl PasswordVouch {
    /// Who vouches: the RADIUS client's name, or the PAM host.
    pub fn by(&self) -> &str {
        &self.by
    }
}

impl RadiusClient {
    /// The client's word that it checked the password, if its entry says it may give it.
    pub fn password_vouch(&self) -> Option<PasswordVouch> {
        self.password_checked_by_client.then(|| PasswordVouch {
            by: self.name.clone(),
        })
    }
}

impl PamConfig {
    /// The PAM stack's word that an earlier module checked the password (`mode=otp-only`
    /// on a host whose root-owned configuration has this `[pam]` section).
    pub fn password_vouch(&self, host: &str) -> PasswordVouch {
        PasswordVouch {
            by: host.to_string(),
        }
    }
}

/// Reply attributes for members of an LDAP group.
#[derive(Debug, Clone)]
pub struct RadiusGroup {
    pub group: String,
    pub filter_id: Option<String>,
    pub class: Option<String>,
    pub vlan: Option<String>,
    pub session_timeout: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamBackend {
    Server,
    Direct,
}

#[derive(Debug, Clone)]
pub struct PamConfig {
    pub backend: PamBackend,
    pub servers: Vec<SocketAddr>,
    pub secret: Option<SecretBytes>,
    pub timeout: Duration,
    pub retries: u32,
    pub remember_for: Duration,
    pub nas_identifier: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PortalConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Members of this LDAP group see the admin/helpdesk pages.
    pub admin_group: Option<String>,
    /// `Forwarded` / `X-Forwarded-For` are honoured only from these peers.
    pub trusted_proxies: Vec<IpNet>,
    /// The site's name in the page title and header (the built-in name when unset).
    pub site_name: Option<LocalizedText>,
    /// How users reach the helpdesk, shown wherever a page sends them there.
    pub helpdesk_contact: Option<LocalizedText>,
    /// Each quiet phase of a connection (TLS handshake, first request, keep-alive idle)
    /// ends after this.
    pub idle_timeout: Duration,
}

/// A text in English and Japanese (Japanese falls back to the English one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalizedText {
    pub en: String,
    pub ja: String,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

/// `[control]`: the local socket through which the CLI asks a running server.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The Unix socket `otpgate serve` listens on (created 0660, owned by the server's
    /// user and group); relative paths are relative to the configuration file.
    pub socket: PathBuf,
}

/// The control socket named by the file at `path`, read without validating anything
/// else (no secret is read): the CLI asks a running server through it, and an
/// operator who may use the socket need not be able to read the server's secrets.
pub fn control_socket(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let text = read(path)?;
    let raw = parse_raw(&text, path)?;
    Ok(raw.control.map(|c| validate::relative_to(path, &c.socket)))
}

/// The text of the configuration file at `path`, or the error that names it.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot read the configuration: {e}"),
    })
}

/// Loads and validates a file with the default options.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &LoadOptions::default())
}

/// Loads and validates a file.
pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Config, ConfigError> {
    let text = read(path)?;
    parse_str(&text, path, opts)
}

/// Validates configuration text; `path` names it in errors and anchors relative paths.
pub fn parse_str(text: &str, path: &Path, opts: &LoadOptions) -> Result<Config, ConfigError> {
    validate::validate(parse_raw(text, path)?, text, path, opts)
}

/// Stage one only: the TOML into the raw structs.
fn parse_raw(text: &str, path: &Path) -> Result<raw::RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|span| {
            text.get(..span.start)
                .map_or(1, |head| head.matches('\n').count() + 1)
        });
        ConfigError {
            file: path.to_path_buf(),
            line,
            key: None,
            message: e.message().trim().to_string(),
        }
    })
}

#[cfg(test)]
mod tests;
