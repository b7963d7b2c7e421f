//! Stage one: the TOML exactly as written. Every struct refuses unknown keys, so a
//! misspelt setting is an error instead of a silently ignored line.

use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Format version; only 1 exists. Optional so that SPEC-shaped files parse as they are.
    pub version: Option<u32>,
    pub directory: Option<RawDirectory>,
    pub store: Option<RawStore>,
    pub secrets: Option<RawSecrets>,
    #[serde(default)]
    pub totp: RawTotp,
    #[serde(default)]
    pub email_otp: RawEmailOtp,
    #[serde(default)]
    pub notification: RawNotification,
    pub smtp: Option<RawSmtp>,
    #[serde(default)]
    pub lockout: RawLockout,
    #[serde(default)]
    pub trust: RawTrust,
    #[serde(default)]
    pub audit: RawAudit,
    pub radius: Option<RawRadius>,
    pub pam: Option<RawPam>,
    pub portal: Option<RawPortal>,
    pub metrics: Option<RawMetrics>,
    pub control: Option<RawControl>,
    /// `[[policy]]`: second-factor rules by directory group, first match wins.
    #[serde(default)]
    pub policy: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    pub kind: String,
    // kind = "ldap"
    #[serde(default)]
    pub urls: Vec<String>,
    pub base_dn: Option<String>,
    pub user_filter: Option<String>,
    pub bind_dn: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub bind_password_env: Option<String>,
    pub activated_filter: Option<String>,
    pub groups_attribute: Option<String>,
    pub mail_attribute: Option<String>,
    pub starttls: Option<bool>,
    pub tls_ca_file: Option<PathBuf>,
    pub timeout: Option<String>,
    pub pool_size: Option<usize>,
    pub cache_for: Option<String>,
    // kind = "file"
    pub path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master_name: String,
    pub urls: Vec<String>,
    /// Credentials for the sentinels themselves (the master takes `[store]`'s).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: String,
    pub url: Option<String>,
    pub cluster_urls: Option<Vec<String>>,
    pub sentinel: Option<RawSentinel>,
    pub key_prefix: Option<String>,
    pub path: Option<PathBuf>,
    pub timeout: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub require_persistence: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecrets {
    pub key_file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTotp {
    pub issuer: Option<String>,
    pub digits: Option<u32>,
    pub period: Option<String>,
    pub skew_steps: Option<u32>,
    pub algorithm: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmailOtp {
    pub digits: Option<u32>,
    pub valid_for: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotification {
    #[serde(default)]
    pub denied_domains: Vec<String>,
    pub reset_valid_for: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmtp {
    pub url: String,
    pub from: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub timeout: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLockout {
    pub max_failures: Option<u32>,
    pub lock_for: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    pub remember_for: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub file: Option<PathBuf>,
    pub keep: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRadius {
    #[serde(default)]
    pub listen: Vec<String>,
    pub mode: Option<String>,
    pub email_keyword: Option<String>,
    pub unenrolled: Option<String>,
    pub reject_delay: Option<String>,
    pub request_timeout: Option<String>,
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub clients: Vec<RawRadiusClient>,
    #[serde(default)]
    pub groups: Vec<RawRadiusGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRadiusClient {
    pub name: String,
    pub address: String,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    pub require_message_authenticator: Option<bool>,
    pub password_checked_by_client: Option<bool>,
    pub trust_calling_station: Option<bool>,
    pub reject_reasons: Option<bool>,
    pub limit_proxy_state: Option<bool>,
    pub pam_host: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRadiusGroup {
    pub group: String,
    pub filter_id: Option<String>,
    pub class: Option<String>,
    pub vlan: Option<String>,
    pub session_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPam {
    pub backend: Option<String>,
    #[serde(default)]
    pub servers: Vec<String>,
    pub secret_file: Option<PathBuf>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub remember_for: Option<String>,
    pub nas_identifier: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPortal {
    pub listen: String,
    pub public_url: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub admin_group: Option<String>,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` are believed (CIDRs or addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub site_name: Option<RawLocalized>,
    pub helpdesk_contact: Option<RawLocalized>,
    /// A connection's bound for each quiet phase (handshake, first request, idle).
    pub idle_timeout: Option<String>,
}

/// A text in both of the portal's languages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalized {
    pub en: String,
    pub ja: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    pub socket: PathBuf,
}

/// One `[[policy]]` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub groups: Vec<String>,
    pub doors: Option<Vec<String>>,
    pub clients: Option<Vec<String>>,
    pub second_factor: Option<String>,
    pub enroll_by: Option<String>,
    pub enroll_at_login: Option<bool>,
}
