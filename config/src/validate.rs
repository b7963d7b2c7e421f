//! Stage two: raw TOML → [`Config`]. Defaults live here, named, next to their checks.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration::parse_duration;
use crate::error::locate;
use crate::raw::{self, RawConfig};
use crate::secret::{FileMode, SecretSource, read_secret_file};
use crate::*;

const DEFAULT_USER_FILTER: &str = "(uid={user})";
const DEFAULT_GROUPS_ATTRIBUTE: &str = "memberOf";
const DEFAULT_MAIL_ATTRIBUTE: &str = "mail";
const DEFAULT_LDAP_TIMEOUT: &str = "3s";
const DEFAULT_LDAP_POOL: usize = 4;
/// A minute: a deactivation or a group change reaches logins within a minute (the
/// password, a password-policy lock and a deleted entry take effect at once, as the
/// bind is never cached), while bursts of logins by one user (VPN reconnects, PAM
/// hosts, a NAS retrying) cost one search instead of one each.
pub const DEFAULT_LDAP_CACHE_FOR: &str = "60s";
/// Beyond a day, a deactivation would wait too long to reach logins.
const MAX_LDAP_CACHE_FOR: Duration = Duration::from_secs(86_400);
const DEFAULT_KEY_PREFIX: &str = "otpgate:";
const DEFAULT_STORE_TIMEOUT: &str = "2s";
const DEFAULT_ISSUER: &str = "otpgate";
const DEFAULT_TOTP_DIGITS: u32 = 6;
const DEFAULT_TOTP_PERIOD: &str = "30s";
const DEFAULT_SKEW_STEPS: u32 = 1;
const DEFAULT_EMAIL_DIGITS: u32 = 8;
const DEFAULT_EMAIL_VALID_FOR: &str = "24h";
const DEFAULT_RESET_VALID_FOR: &str = "24h";
const DEFAULT_SMTP_TIMEOUT: &str = "10s";
const DEFAULT_MAX_FAILURES: u32 = 10;
const DEFAULT_LOCK_FOR: &str = "15m";
const DEFAULT_REMEMBER_FOR: &str = "7d";
const DEFAULT_AUDIT_KEEP: &str = "90d";
const DEFAULT_RADIUS_LISTEN: &str = "0.0.0.0:1812";
const DEFAULT_EMAIL_KEYWORD: &str = "email";
const DEFAULT_REJECT_DELAY: &str = "1s";
const DEFAULT_REQUEST_TIMEOUT: &str = "2s";
const DEFAULT_MAX_IN_FLIGHT: usize = 256;
const DEFAULT_PAM_TIMEOUT: &str = "2s";
const DEFAULT_PAM_RETRIES: u32 = 2;
/// A master key is exactly this many raw bytes (`head -c 32 /dev/urandom`).
pub const MASTER_KEY_LEN: usize = 32;

/// Carries the text and path so every error can name its line.
struct Ctx<'a> {
    text: &'a str,
    path: &'a Path,
    opts: &'a LoadOptions,
}

impl Ctx<'_> {
    fn err(
        &self,
        section: &str,
        index: Option<usize>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        let dotted = match (index, key) {
            (Some(i), Some(k)) => format!("{section}[{i}].{k}"),
            (Some(i), None) => format!("{section}[{i}]"),
            (None, Some(k)) => format!("{section}.{k}"),
            (None, None) => section.to_string(),
        };
        ConfigError {
            file: self.path.to_path_buf(),
            line: locate(self.text, section, index, key),
            key: Some(dotted),
            message: message.into(),
        }
    }

    fn duration(
        &self,
        section: &str,
        key: &str,
        value: Option<&String>,
        default: &str,
    ) -> Result<Duration, ConfigError> {
        let text = value.map_or(default, String::as_str);
        parse_duration(text).map_err(|m| self.err(section, None, Some(key), m))
    }

    /// Relative paths are read from the configuration file's folder.
    fn path(&self, p: &Path) -> PathBuf {
        relative_to(self.path, p)
    }

    fn secret(
        &self,
        section: &str,
        index: Option<usize>,
        key: &str,
        file: Option<&PathBuf>,
        env: Option<&String>,
    ) -> Result<Option<SecretBytes>, ConfigError> {
        let file = file.map(|p| self.path(p));
        let source = SecretSource {
            file: file.as_ref(),
            env,
        };
        source
            .load(FileMode::NotForOthers, self.opts)
            .map_err(|m| self.err(section, index, Some(key), m))
    }

    fn required<T>(&self, section: &str, key: &str, value: Option<T>) -> Result<T, ConfigError> {
        value.ok_or_else(|| self.err(section, None, None, format!("`{key}` is required")))
    }
}

pub(crate) fn validate(
    raw: RawConfig,
    text: &str,
    path: &Path,
    opts: &LoadOptions,
) -> Result<Config, ConfigError> {
    let cx = Ctx { text, path, opts };
    if let Some(v) = raw.version {
        if v != 1 {
            return Err(cx.err(
                "",
                None,
                Some("version"),
                format!("version {v} is not known; this otpgate reads version 1"),
            ));
        }
    }
    let directory = raw.directory.map(|d| directory(&cx, d)).transpose()?;
    let store = raw.store.map(|s| store(&cx, s)).transpose()?;
    let master_key = raw
        .secrets
        .map(|s| {
            let file = cx.path(&s.key_file);
            let key = read_secret_file(&file, FileMode::OwnerOnly, opts.check_permissions, false)
                .map_err(|m| cx.err("secrets", None, Some("key_file"), m))?;
            if key.expose().len() != MASTER_KEY_LEN {
                return Err(cx.err(
                    "secrets",
                    None,
                    Some("key_file"),
                    format!(
                        "{} holds {} bytes; it must hold exactly {MASTER_KEY_LEN} raw random bytes (`head -c 32 /dev/urandom > FILE`)",
                        file.display(),
                        key.expose().len()
                    ),
                ));
            }
            Ok(key)
        })
        .transpose()?;
    let radius = raw.radius.map(|r| radius(&cx, r)).transpose()?;
    let policy = policy(&cx, raw.policy, radius.as_ref())?;
    Ok(Config {
        path: path.to_path_buf(),
        directory,
        store,
        master_key,
        totp: totp(&cx, raw.totp)?,
        email_otp: email_otp(&cx, raw.email_otp)?,
        notification: notification(&cx, raw.notification)?,
        smtp: raw.smtp.map(|s| smtp(&cx, s)).transpose()?,
        lockout: lockout(&cx, raw.lockout)?,
        trust: TrustConfig {
            remember_for: cx.duration(
                "trust",
                "remember_for",
                raw.trust.remember_for.as_ref(),
                DEFAULT_REMEMBER_FOR,
            )?,
        },
        audit: AuditConfig {
            file: raw.audit.file.map(|p| cx.path(&p)),
            keep: cx.duration("audit", "keep", raw.audit.keep.as_ref(), DEFAULT_AUDIT_KEEP)?,
        },
        radius,
        pam: raw.pam.map(|p| pam(&cx, p)).transpose()?,
        portal: raw.portal.map(|p| portal(&cx, p)).transpose()?,
        metrics: raw
            .metrics
            .map(|m| {
                Ok::<_, ConfigError>(MetricsConfig {
                    listen: socket_addr(&m.listen)
                        .map_err(|e| cx.err("metrics", None, Some("listen"), e))?,
                })
            })
            .transpose()?,
        control: raw.control.map(|c| ControlConfig {
            socket: cx.path(&c.socket),
        }),
        policy,
    })
}

/// `[[policy]]`: each rule names at least one group, known doors and clients, and a
/// deadline or first-login enrollment only where they mean something (`required`).
fn policy(
    cx: &Ctx<'_>,
    rules: Vec<raw::RawPolicy>,
    radius: Option<&RadiusConfig>,
) -> Result<Vec<PolicyRule>, ConfigError> {
    const S: &str = "policy";
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.into_iter().enumerate() {
        let err = |key: Option<&str>, m: String| cx.err(S, Some(i), key, m);
        if r.groups.is_empty() || r.groups.iter().any(|g| g.trim().is_empty()) {
            return Err(err(
                Some("groups"),
                "name at least one group (a DN or a name, as the directory's groups attribute gives it)".into(),
            ));
        }
        let second_factor = match r.second_factor.as_deref() {
            Some("required") => SecondFactor::Required,
            Some("optional") => SecondFactor::Optional,
            Some("exempt") => SecondFactor::Exempt,
            Some(other) => {
                return Err(err(
                    Some("second_factor"),
                    format!(
                        "unknown value `{other}`; use \"required\", \"optional\" or \"exempt\""
                    ),
                ));
            }
            None => return Err(err(None, "`second_factor` is required".into())),
        };
        let mut doors = Vec::new();
        for d in r.doors.unwrap_or_default() {
            let door = match d.as_str() {
                "radius" => PolicyDoor::Radius,
                "pam" => PolicyDoor::Pam,
                "portal" => {
                    return Err(err(
                        Some("doors"),
                        "the portal is not a door for `[[policy]]`: it always asks an enrolled user for a code and lets one without a factor set one up; it shows the policy of the other doors".into(),
                    ));
                }
                other => {
                    return Err(err(
                        Some("doors"),
                        format!("unknown door `{other}`; use \"radius\" or \"pam\""),
                    ));
                }
            };
            if !doors.contains(&door) {
                doors.push(door);
            }
        }
        let clients = r.clients.unwrap_or_default();
        for c in &clients {
            if !radius.is_some_and(|r| r.clients.iter().any(|k| &k.name == c)) {
                return Err(err(
                    Some("clients"),
                    format!("no [[radius.clients]] is named `{c}`"),
                ));
            }
        }
        let enroll_by = r
            .enroll_by
            .map(|d| Date::parse(&d).map_err(|m| err(Some("enroll_by"), m)))
            .transpose()?;
        let enroll_at_login = r.enroll_at_login.unwrap_or(false);
        if second_factor != SecondFactor::Required {
            if enroll_by.is_some() {
                return Err(err(
                    Some("enroll_by"),
                    format!(
                        "a deadline needs `second_factor = \"required\"`, not \"{}\"",
                        second_factor.as_str()
                    ),
                ));
            }
            if enroll_at_login {
                return Err(err(
                    Some("enroll_at_login"),
                    format!(
                        "enrollment at the login needs `second_factor = \"required\"`, not \"{}\"",
                        second_factor.as_str()
                    ),
                ));
            }
        }
        out.push(PolicyRule {
            groups: r.groups,
            doors,
            clients,
            second_factor,
            enroll_by,
            enroll_at_login,
        });
    }
    Ok(out)
}

/// `p` as written in the file at `config`: relative paths are relative to its directory.
pub(crate) fn relative_to(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(p)
    }
}

fn directory(cx: &Ctx<'_>, d: raw::RawDirectory) -> Result<DirectoryConfig, ConfigError> {
    const S: &str = "directory";
    match d.kind.as_str() {
        "ldap" => {
            if d.path.is_some() {
                return Err(cx.err(
                    S,
                    None,
                    Some("path"),
                    "`path` is for kind = \"file\"; an LDAP directory uses `urls`",
                ));
            }
            if d.urls.is_empty() {
                return Err(cx.err(
                    S,
                    None,
                    Some("urls"),
                    "give at least one LDAP URL, e.g. [\"ldap://127.0.0.1:389\"]",
                ));
            }
            for url in &d.urls {
                if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
                    return Err(cx.err(
                        S,
                        None,
                        Some("urls"),
                        format!("`{url}` is not an ldap:// or ldaps:// URL"),
                    ));
                }
            }
            let user_filter = d
                .user_filter
                .unwrap_or_else(|| DEFAULT_USER_FILTER.to_string());
            if !user_filter.contains("{user}") {
                return Err(cx.err(
                    S,
                    None,
                    Some("user_filter"),
                    "the filter must contain `{user}`",
                ));
            }
            for (key, filter) in [
                ("user_filter", Some(&user_filter)),
                ("activated_filter", d.activated_filter.as_ref()),
            ] {
                if let Some(f) = filter {
                    if !(f.starts_with('(') && f.ends_with(')')) {
                        return Err(cx.err(
                            S,
                            None,
                            Some(key),
                            format!("`{f}` is not a parenthesised LDAP filter"),
                        ));
                    }
                }
            }
            let bind_password = cx
                .secret(
                    S,
                    None,
                    "bind_password_file",
                    d.bind_password_file.as_ref(),
                    d.bind_password_env.as_ref(),
                )?
                .ok_or_else(|| {
                    cx.err(
                        S,
                        None,
                        None,
                        "`bind_password_file` (or `bind_password_env`) is required",
                    )
                })?;
            let pool_size = d.pool_size.unwrap_or(DEFAULT_LDAP_POOL);
            if pool_size == 0 || pool_size > 256 {
                return Err(cx.err(S, None, Some("pool_size"), "must be between 1 and 256"));
            }
            let cache_for =
                cx.duration(S, "cache_for", d.cache_for.as_ref(), DEFAULT_LDAP_CACHE_FOR)?;
            if cache_for.subsec_nanos() != 0 || cache_for > MAX_LDAP_CACHE_FOR {
                return Err(cx.err(
                    S,
                    None,
                    Some("cache_for"),
                    "must be whole seconds, at most \"1d\" (\"0s\" turns the cache off)",
                ));
            }
            Ok(DirectoryConfig::Ldap(Box::new(LdapConfig {
                urls: d.urls,
                base_dn: cx.required(S, "base_dn", d.base_dn)?,
                user_filter,
                bind_dn: cx.required(S, "bind_dn", d.bind_dn)?,
                bind_password,
                activated_filter: d.activated_filter,
                groups_attribute: d
                    .groups_attribute
                    .unwrap_or_else(|| DEFAULT_GROUPS_ATTRIBUTE.into()),
                mail_attribute: d
                    .mail_attribute
                    .unwrap_or_else(|| DEFAULT_MAIL_ATTRIBUTE.into()),
                starttls: d.starttls.unwrap_or(false),
                tls_ca_file: d.tls_ca_file.map(|p| cx.path(&p)),
                timeout: cx.duration(S, "timeout", d.timeout.as_ref(), DEFAULT_LDAP_TIMEOUT)?,
                pool_size,
                cache_for,
            })))
        }
        "file" => {
            if !d.urls.is_empty() || d.bind_dn.is_some() || d.cache_for.is_some() {
                return Err(cx.err(
                    S,
                    None,
                    Some("kind"),
                    "a users file takes only `path`; remove the LDAP keys or set kind = \"ldap\"",
                ));
            }
            let path = cx.required(S, "path", d.path)?;
            Ok(DirectoryConfig::File {
                path: cx.path(&path),
            })
        }
        other => Err(cx.err(
            S,
            None,
            Some("kind"),
            format!("unknown kind `{other}`; use \"ldap\" or \"file\""),
        )),
    }
}

fn store(cx: &Ctx<'_>, s: raw::RawStore) -> Result<StoreConfig, ConfigError> {
    const S: &str = "store";
    let key_prefix = s.key_prefix.unwrap_or_else(|| DEFAULT_KEY_PREFIX.into());
    if key_prefix.contains(['{', '}']) {
        return Err(cx.err(
            S,
            None,
            Some("key_prefix"),
            "must not contain `{` or `}` (they mark Redis hash tags)",
        ));
    }
    match s.kind.as_str() {
        "redis" => {
            if s.path.is_some() {
                return Err(cx.err(S, None, Some("path"), "`path` is for kind = \"embedded\""));
            }
            let check = |url: &String| {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(format!("`{url}` is not a redis:// or rediss:// URL"));
                }
                // A password in the URL would sit in the main file (SPEC §4).
                let userinfo = url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split('/').next())
                    .and_then(|authority| authority.rsplit_once('@'))
                    .map(|(info, _)| info);
                if userinfo.is_some_and(|i| i.contains(':')) {
                    return Err(format!(
                        "`{url}` carries a password; use `username` and `password_file` (or `password_env`)"
                    ));
                }
                Ok(())
            };
            let redis_auth = |cx: &Ctx<'_>,
                              key: &str,
                              username: Option<String>,
                              file: Option<&PathBuf>,
                              env: Option<&String>|
             -> Result<RedisAuth, ConfigError> {
                let password = cx.secret(S, None, key, file, env)?;
                if username.is_some() && password.is_none() {
                    return Err(cx.err(
                        S,
                        None,
                        Some(key),
                        "`username` needs `password_file` (or `password_env`)",
                    ));
                }
                Ok(RedisAuth { username, password })
            };
            let auth = redis_auth(
                cx,
                "password_file",
                s.username,
                s.password_file.as_ref(),
                s.password_env.as_ref(),
            )?;
            // Checks every URL under `key`; whether any speaks TLS.
            let check_all = |urls: &[String], key: &str| -> Result<bool, ConfigError> {
                let mut tls = false;
                for u in urls {
                    check(u).map_err(|m| cx.err(S, None, Some(key), m))?;
                    tls |= u.starts_with("rediss://");
                }
                Ok(tls)
            };
            let tls;
            let target = match (s.url, s.cluster_urls, s.sentinel) {
                (Some(url), None, None) => {
                    tls = check_all(std::slice::from_ref(&url), "url")?;
                    RedisTarget::Standalone(url)
                }
                (None, Some(urls), None) if !urls.is_empty() => {
                    tls = check_all(&urls, "cluster_urls")?;
                    RedisTarget::Cluster(urls)
                }
                (None, None, Some(sentinel)) if !sentinel.urls.is_empty() => {
                    tls = check_all(&sentinel.urls, "sentinel")?;
                    let sentinel_auth = redis_auth(
                        cx,
                        "sentinel",
                        sentinel.username,
                        sentinel.password_file.as_ref(),
                        sentinel.password_env.as_ref(),
                    )?;
                    RedisTarget::Sentinel {
                        master_name: sentinel.master_name,
                        urls: sentinel.urls,
                        auth: sentinel_auth,
                    }
                }
                _ => {
                    return Err(cx.err(
                        S,
                        None,
                        Some("url"),
                        "give exactly one of `url`, `cluster_urls` or `sentinel`",
                    ));
                }
            };
            let tls_ca = match &s.tls_ca_file {
                None => None,
                Some(_) if !tls => {
                    return Err(cx.err(S, None, Some("tls_ca_file"), "is for rediss:// URLs only"));
                }
                Some(p) => {
                    let path = cx.path(p);
                    Some(std::fs::read(&path).map_err(|e| {
                        cx.err(
                            S,
                            None,
                            Some("tls_ca_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?)
                }
            };
            Ok(StoreConfig::Redis(RedisConfig {
                target,
                key_prefix,
                timeout: cx.duration(S, "timeout", s.timeout.as_ref(), DEFAULT_STORE_TIMEOUT)?,
                auth,
                tls_ca,
                require_persistence: s.require_persistence.unwrap_or(false),
            }))
        }
        "embedded" => {
            if s.url.is_some()
                || s.cluster_urls.is_some()
                || s.sentinel.is_some()
                || s.tls_ca_file.is_some()
                || s.username.is_some()
                || s.password_file.is_some()
                || s.password_env.is_some()
                || s.require_persistence.is_some()
            {
                return Err(cx.err(S, None, Some("kind"), "an embedded store takes only `path`"));
            }
            let path = cx.required(S, "path", s.path)?;
            Ok(StoreConfig::Embedded {
                path: cx.path(&path),
                key_prefix,
            })
        }
        other => Err(cx.err(
            S,
            None,
            Some("kind"),
            format!("unknown kind `{other}`; use \"redis\" or \"embedded\""),
        )),
    }
}

fn totp(cx: &Ctx<'_>, t: raw::RawTotp) -> Result<TotpConfig, ConfigError> {
    const S: &str = "totp";
    let digits = t.digits.unwrap_or(DEFAULT_TOTP_DIGITS);
    if !(6..=8).contains(&digits) {
        return Err(cx.err(S, None, Some("digits"), "must be 6, 7 or 8"));
    }
    let period = cx.duration(S, "period", t.period.as_ref(), DEFAULT_TOTP_PERIOD)?;
    if period.as_secs() == 0 || period.subsec_nanos() != 0 {
        return Err(cx.err(
            S,
            None,
            Some("period"),
            "must be a whole number of seconds, at least 1s",
        ));
    }
    let skew_steps = t.skew_steps.unwrap_or(DEFAULT_SKEW_STEPS);
    if skew_steps > 10 {
        return Err(cx.err(
            S,
            None,
            Some("skew_steps"),
            "more than 10 steps either side makes codes guessable; use 0 to 10",
        ));
    }
    let algorithm = match t
        .algorithm
        .as_deref()
        .unwrap_or("SHA1")
        .to_ascii_uppercase()
        .as_str()
    {
        "SHA1" => TotpAlgorithm::Sha1,
        "SHA256" => TotpAlgorithm::Sha256,
        "SHA512" => TotpAlgorithm::Sha512,
        other => {
            return Err(cx.err(
                S,
                None,
                Some("algorithm"),
                format!("unknown algorithm `{other}`; use SHA1, SHA256 or SHA512"),
            ));
        }
    };
    Ok(TotpConfig {
        issuer: t.issuer.unwrap_or_else(|| DEFAULT_ISSUER.into()),
        digits,
        period,
        skew_steps,
        algorithm,
    })
}

fn email_otp(cx: &Ctx<'_>, e: raw::RawEmailOtp) -> Result<EmailOtpConfig, ConfigError> {
    let digits = e.digits.unwrap_or(DEFAULT_EMAIL_DIGITS);
    if !(8..=10).contains(&digits) {
        return Err(cx.err(
            "email_otp",
            None,
            Some("digits"),
            "must be between 8 and 10 (they must differ in length from TOTP codes)",
        ));
    }
    Ok(EmailOtpConfig {
        digits,
        valid_for: cx.duration(
            "email_otp",
            "valid_for",
            e.valid_for.as_ref(),
            DEFAULT_EMAIL_VALID_FOR,
        )?,
    })
}

fn notification(cx: &Ctx<'_>, n: raw::RawNotification) -> Result<NotificationConfig, ConfigError> {
    const S: &str = "notification";
    let mut denied_domains = Vec::with_capacity(n.denied_domains.len());
    for entry in n.denied_domains {
        let lower = entry.trim().to_ascii_lowercase();
        let (rule, domain) = match lower.strip_prefix("*.") {
            Some(rest) => (DomainRule::Subdomains(rest.to_string()), rest.to_string()),
            None => (DomainRule::Exact(lower.clone()), lower.clone()),
        };
        let valid = !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(cx.err(
                S,
                None,
                Some("denied_domains"),
                format!("`{entry}` is not a domain or `*.domain`"),
            ));
        }
        denied_domains.push(rule);
    }
    Ok(NotificationConfig {
        denied_domains,
        reset_valid_for: cx.duration(
            S,
            "reset_valid_for",
            n.reset_valid_for.as_ref(),
            DEFAULT_RESET_VALID_FOR,
        )?,
    })
}

fn smtp(cx: &Ctx<'_>, s: raw::RawSmtp) -> Result<SmtpConfig, ConfigError> {
    const S: &str = "smtp";
    let tls = smtp_tls(&s.url).map_err(|why| cx.err(S, None, Some("url"), why))?;
    if s.tls_ca_file.is_some() && tls == SmtpTls::None {
        return Err(cx.err(
            S,
            None,
            Some("tls_ca_file"),
            "a CA is only used with TLS: use `smtps://` or `smtp://…?tls=required`",
        ));
    }
    if !s.from.contains('@') {
        return Err(cx.err(
            S,
            None,
            Some("from"),
            format!("`{}` is not a mail address", s.from),
        ));
    }
    let password = cx.secret(
        S,
        None,
        "password_file",
        s.password_file.as_ref(),
        s.password_env.as_ref(),
    )?;
    if password.is_some() != s.username.is_some() {
        return Err(cx.err(
            S,
            None,
            Some("username"),
            "give both `username` and `password_file` (or neither)",
        ));
    }
    Ok(SmtpConfig {
        url: s.url,
        from: s.from,
        username: s.username,
        password,
        timeout: cx.duration(S, "timeout", s.timeout.as_ref(), DEFAULT_SMTP_TIMEOUT)?,
        tls,
        tls_ca_file: s.tls_ca_file.map(|p| cx.path(&p)),
    })
}

/// Reads how mail is protected off an SMTP URL. Opportunistic STARTTLS is refused: an
/// attacker on the path can strip it, and the mail carries login codes.
fn smtp_tls(url: &str) -> Result<SmtpTls, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut tls = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("tls", value)) if tls.is_none() => tls = Some(value),
            _ => {
                return Err(format!(
                    "`{url}`: the only query parameter is `tls=required` (once)"
                ));
            }
        }
    }
    let host = |rest: &str| !rest.is_empty() && !rest.starts_with(':') && !rest.starts_with('/');
    match (base.split_once("://"), tls) {
        (Some(("smtp", rest)), None) if host(rest) => Ok(SmtpTls::None),
        (Some(("smtp", rest)), Some("required")) if host(rest) => Ok(SmtpTls::StartTls),
        (Some(("smtps", rest)), None) if host(rest) => Ok(SmtpTls::Wrapper),
        (Some(("smtp" | "smtps", _)), Some(other)) => Err(format!(
            "`{url}`: tls={other} is not supported; use `smtp://…?tls=required` (STARTTLS) or `smtps://`"
        )),
        _ => Err(format!("`{url}` is not an smtp://HOST or smtps://HOST URL")),
    }
}

fn lockout(cx: &Ctx<'_>, l: raw::RawLockout) -> Result<LockoutConfig, ConfigError> {
    let max_failures = l.max_failures.unwrap_or(DEFAULT_MAX_FAILURES);
    if max_failures == 0 {
        return Err(cx.err("lockout", None, Some("max_failures"), "must be at least 1"));
    }
    Ok(LockoutConfig {
        max_failures,
        lock_for: cx.duration("lockout", "lock_for", l.lock_for.as_ref(), DEFAULT_LOCK_FOR)?,
    })
}

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("`{text}` is not an address:port such as 127.0.0.1:1812 or [::1]:1812")
    })
}

fn radius(cx: &Ctx<'_>, r: raw::RawRadius) -> Result<RadiusConfig, ConfigError> {
    const S: &str = "radius";
    let listen_raw = if r.listen.is_empty() {
        vec![DEFAULT_RADIUS_LISTEN.to_string()]
    } else {
        r.listen
    };
    let listen = listen_raw
        .iter()
        .map(|l| socket_addr(l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| cx.err(S, None, Some("listen"), m))?;
    let mode = match r.mode.as_deref().unwrap_or("auto") {
        "append" => RadiusMode::Append,
        "challenge" => RadiusMode::Challenge,
        "auto" => RadiusMode::Auto,
        other => {
            return Err(cx.err(
                S,
                None,
                Some("mode"),
                format!("unknown mode `{other}`; use \"append\", \"challenge\" or \"auto\""),
            ));
        }
    };
    let unenrolled = match r.unenrolled.as_deref().unwrap_or("reject") {
        "reject" => Unenrolled::Reject,
        "password-only" => Unenrolled::PasswordOnly,
        other => {
            return Err(cx.err(
                S,
                None,
                Some("unenrolled"),
                format!("unknown policy `{other}`; use \"reject\" or \"password-only\""),
            ));
        }
    };
    let email_keyword = r
        .email_keyword
        .unwrap_or_else(|| DEFAULT_EMAIL_KEYWORD.into());
    if email_keyword.is_empty()
        || email_keyword
            .chars()
            .any(|c| c.is_ascii_digit() || c.is_whitespace())
    {
        return Err(cx.err(
            S,
            None,
            Some("email_keyword"),
            "must be a word without digits or spaces, so it can never be mistaken for a code",
        ));
    }
    let mut clients = Vec::with_capacity(r.clients.len());
    for (i, c) in r.clients.into_iter().enumerate() {
        let network = parse_network(&c.address)
            .map_err(|m| cx.err("radius.clients", Some(i), Some("address"), m))?;
        let secret = cx
            .secret(
                "radius.clients",
                Some(i),
                "secret_file",
                c.secret_file.as_ref(),
                c.secret_env.as_ref(),
            )?
            .ok_or_else(|| {
                cx.err(
                    "radius.clients",
                    Some(i),
                    None,
                    "`secret_file` (or `secret_env`) is required",
                )
            })?;
        if secret.expose().is_empty() {
            return Err(cx.err(
                "radius.clients",
                Some(i),
                Some("secret_file"),
                "the shared secret is empty",
            ));
        }
        if clients
            .iter()
            .any(|other: &RadiusClient| other.name == c.name)
        {
            return Err(cx.err(
                "radius.clients",
                Some(i),
                Some("name"),
                format!("`{}` is used by another client", c.name),
            ));
        }
        clients.push(RadiusClient {
            name: c.name,
            network,
            secret,
            require_message_authenticator: c.require_message_authenticator.unwrap_or(true),
            password_checked_by_client: c.password_checked_by_client.unwrap_or(false),
            trust_calling_station: c.trust_calling_station.unwrap_or(false),
            reject_reasons: c.reject_reasons.unwrap_or(false),
            limit_proxy_state: c.limit_proxy_state.unwrap_or(true),
            pam_host: c.pam_host.unwrap_or(false),
        });
    }
    let mut groups = Vec::with_capacity(r.groups.len());
    for (i, g) in r.groups.into_iter().enumerate() {
        let session_timeout = g
            .session_timeout
            .map(|t| {
                parse_duration(&t)
                    .ok()
                    .and_then(|d| u32::try_from(d.as_secs()).ok())
                    .ok_or_else(|| {
                        cx.err(
                            "radius.groups",
                            Some(i),
                            Some("session_timeout"),
                            format!("`{t}` is not a duration such as \"8h\""),
                        )
                    })
            })
            .transpose()?;
        groups.push(RadiusGroup {
            group: g.group,
            filter_id: g.filter_id,
            class: g.class,
            vlan: g.vlan,
            session_timeout,
        });
    }
    Ok(RadiusConfig {
        listen,
        mode,
        email_keyword,
        unenrolled,
        reject_delay: cx.duration(
            S,
            "reject_delay",
            r.reject_delay.as_ref(),
            DEFAULT_REJECT_DELAY,
        )?,
        request_timeout: cx.duration(
            S,
            "request_timeout",
            r.request_timeout.as_ref(),
            DEFAULT_REQUEST_TIMEOUT,
        )?,
        max_in_flight: r.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT).max(1),
        clients,
        groups,
    })
}

/// A client address: a CIDR (`192.0.2.0/24`) or a single address.
fn parse_network(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{text}` is neither an address nor a CIDR such as 192.0.2.0/24"))
}

fn pam(cx: &Ctx<'_>, p: raw::RawPam) -> Result<PamConfig, ConfigError> {
    const S: &str = "pam";
    let backend = match p.backend.as_deref().unwrap_or("server") {
        "server" => PamBackend::Server,
        "direct" => PamBackend::Direct,
        other => {
            return Err(cx.err(
                S,
                None,
                Some("backend"),
                format!("unknown backend `{other}`; use \"server\" or \"direct\""),
            ));
        }
    };
    let servers = p
        .servers
        .iter()
        .map(|s| socket_addr(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| cx.err(S, None, Some("servers"), m))?;
    let secret = cx.secret(S, None, "secret_file", p.secret_file.as_ref(), None)?;
    if backend == PamBackend::Server {
        if servers.is_empty() {
            return Err(cx.err(
                S,
                None,
                Some("servers"),
                "server mode needs at least one otpgate server address",
            ));
        }
        if secret.is_none() {
            return Err(cx.err(
                S,
                None,
                Some("secret_file"),
                "server mode needs the RADIUS shared secret file",
            ));
        }
    }
    Ok(PamConfig {
        backend,
        servers,
        secret,
        timeout: cx.duration(S, "timeout", p.timeout.as_ref(), DEFAULT_PAM_TIMEOUT)?,
        retries: p.retries.unwrap_or(DEFAULT_PAM_RETRIES),
        remember_for: cx.duration(
            S,
            "remember_for",
            p.remember_for.as_ref(),
            DEFAULT_REMEMBER_FOR,
        )?,
        nas_identifier: p.nas_identifier,
    })
}

fn portal(cx: &Ctx<'_>, p: raw::RawPortal) -> Result<PortalConfig, ConfigError> {
    const S: &str = "portal";
    if p.tls_cert_file.is_some() != p.tls_key_file.is_some() {
        return Err(cx.err(
            S,
            None,
            Some("tls_cert_file"),
            "give both `tls_cert_file` and `tls_key_file`",
        ));
    }
    if !(p.public_url.starts_with("https://") || p.public_url.starts_with("http://")) {
        return Err(cx.err(S, None, Some("public_url"), "must be an https:// URL"));
    }
    let trusted_proxies = p
        .trusted_proxies
        .iter()
        .map(|t| parse_network(t).map_err(|m| cx.err(S, None, Some("trusted_proxies"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let localized = |key: &str, raw: Option<raw::RawLocalized>| {
        raw.map(|r| {
            let ja = r.ja.unwrap_or_else(|| r.en.clone());
            for text in [&r.en, &ja] {
                if text.trim().is_empty() || text.chars().count() > 300 {
                    return Err(cx.err(S, None, Some(key), "give 1 to 300 characters"));
                }
                if text.chars().any(char::is_control) {
                    return Err(cx.err(S, None, Some(key), "control characters are not allowed"));
                }
            }
            Ok(LocalizedText { en: r.en, ja })
        })
        .transpose()
    };
    let idle_timeout = cx.duration(S, "idle_timeout", p.idle_timeout.as_ref(), "20s")?;
    if idle_timeout < Duration::from_secs(1) || idle_timeout > Duration::from_secs(600) {
        return Err(cx.err(S, None, Some("idle_timeout"), "must be between 1s and 10m"));
    }
    Ok(PortalConfig {
        listen: socket_addr(&p.listen).map_err(|m| cx.err(S, None, Some("listen"), m))?,
        public_url: p.public_url.trim_end_matches('/').to_string(),
        tls_cert_file: p.tls_cert_file.map(|f| cx.path(&f)),
        tls_key_file: p.tls_key_file.map(|f| cx.path(&f)),
        admin_group: p.admin_group,
        trusted_proxies,
        site_name: localized("site_name", p.site_name)?,
        helpdesk_contact: localized("helpdesk_contact", p.helpdesk_contact)?,
        idle_timeout,
    })
}
