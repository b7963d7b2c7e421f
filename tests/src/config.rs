//! Writing an otpgate configuration (SPEC §4) that points at the harness's servers.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::error::{HarnessError, Result};
use crate::files::{random_bytes, write_private};
use crate::redis::{Redis, RedisCluster};
use crate::slapd::Slapd;
use crate::smtp::SmtpSink;
use crate::users::ACTIVATED_FILTER;

/// The `[totp] issuer` written.
pub const ISSUER: &str = "Example University";
/// The `[smtp] from` written.
pub const MAIL_FROM: &str = "MFA <mfa@example.org>";
/// The `[store] key_prefix` written for Redis stores.
pub const KEY_PREFIX: &str = "otpgate:";

/// Placeholders for files whose place is known only when the config is written.
const IN_DIR_KEY: &str = "@master.key@";
const IN_DIR_BIND_PASSWORD: &str = "@ldap.secret@";
const IN_DIR_STORE: &str = "@otpgate.redb@";

/// Quotes `value` as a TOML basic string.
pub fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Quotes `values` as a TOML array of strings.
pub fn toml_string_array<S: AsRef<str>>(values: &[S]) -> String {
    let items: Vec<String> = values.iter().map(|v| toml_string(v.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// Builds an otpgate TOML config for a [`Slapd`], an optional [`Redis`] (else the
/// embedded store) and an optional [`SmtpSink`].
///
/// It writes `[directory]`, `[store]`, `[secrets]`, `[totp]`, `[smtp]` (only with a
/// sink) and `[notification]`; a test adds more with [`ConfigBuilder::set`] or
/// [`ConfigBuilder::extra`]:
///
/// ```no_run
/// # use otpgate_tests::*;
/// let slapd = Slapd::start()?;
/// let redis = Redis::start()?;
/// let config = ConfigBuilder::new(&slapd)
///     .redis(&redis)
///     .set("directory", "timeout", &toml_string("1s"))
///     .extra("[lockout]\nmax_failures = 3\nlock_for = \"15m\"\n")
///     .write()?;
/// println!("{}", config.path().display());
/// # Ok::<(), HarnessError>(())
/// ```
#[derive(Debug)]
pub struct ConfigBuilder {
    /// Ordered sections of `key = raw TOML value` lines.
    sections: Vec<(String, Vec<(String, String)>)>,
    /// The directory's bind password, written to a 0600 file beside the config.
    bind_password: String,
    /// Raw TOML appended after the sections.
    extra: String,
}

impl ConfigBuilder {
    /// Starts from the directory section for `slapd`.
    pub fn new(slapd: &Slapd) -> Self {
        let mut builder = Self {
            sections: Vec::new(),
            bind_password: slapd.bind_password().to_owned(),
            extra: String::new(),
        };
        let directory = [
            ("kind", toml_string("ldap")),
            ("urls", toml_string_array(&[slapd.url()])),
            ("base_dn", toml_string(slapd.base_dn())),
            ("user_filter", toml_string("(uid={user})")),
            ("bind_dn", toml_string(slapd.bind_dn())),
            ("bind_password_file", IN_DIR_BIND_PASSWORD.to_owned()),
            ("activated_filter", toml_string(ACTIVATED_FILTER)),
            ("groups_attribute", toml_string("memberOf")),
            ("timeout", toml_string("3s")),
        ];
        for (key, value) in directory {
            builder = builder.set("directory", key, &value);
        }
        builder
            .set("store", "kind", &toml_string("embedded"))
            .set("store", "path", IN_DIR_STORE)
            .set("secrets", "key_file", IN_DIR_KEY)
            .set("totp", "issuer", &toml_string(ISSUER))
            .set(
                "notification",
                "denied_domains",
                &toml_string_array(&["example.ac.jp", "*.example.ac.jp"]),
            )
    }

    /// Uses `redis` as the store (`kind = "redis"`, `url`, `key_prefix = "otpgate:"`);
    /// `rediss://` and `tls_ca_file` (copied beside the config) for a TLS server.
    pub fn redis(self, redis: &Redis) -> Self {
        let builder = self
            .clear("store")
            .set("store", "kind", &toml_string("redis"))
            .set("store", "url", &toml_string(&redis.tls_url()))
            .set("store", "key_prefix", &toml_string(KEY_PREFIX));
        match redis.ca_cert() {
            Some(ca) => builder.set(
                "store",
                "tls_ca_file",
                &toml_string(&ca.display().to_string()),
            ),
            None => builder,
        }
    }

    /// Uses a Redis cluster as the store (`kind = "redis"`, `cluster_urls`).
    pub fn redis_cluster(self, cluster: &RedisCluster) -> Self {
        self.clear("store")
            .set("store", "kind", &toml_string("redis"))
            .set("store", "cluster_urls", &toml_string_array(&cluster.urls()))
            .set("store", "key_prefix", &toml_string(KEY_PREFIX))
    }

    /// Sends mail to `sink` (`[smtp] url`, `from = "MFA <mfa@example.org>"`, and
    /// `tls_ca_file` for a TLS sink).
    pub fn smtp(self, sink: &SmtpSink) -> Self {
        let builder = self.set("smtp", "url", &toml_string(&sink.url())).set(
            "smtp",
            "from",
            &toml_string(MAIL_FROM),
        );
        match sink.ca() {
            Some(ca) => builder.set(
                "smtp",
                "tls_ca_file",
                &toml_string(&ca.ca_cert.to_string_lossy()),
            ),
            None => builder,
        }
    }

    /// Sets `key = value` in `[section]` (creating it), replacing a value the builder
    /// wrote. `value` is raw TOML: quote strings with [`toml_string`].
    pub fn set(mut self, section: &str, key: &str, value: &str) -> Self {
        let index = match self.sections.iter().position(|(name, _)| name == section) {
            Some(index) => index,
            None => {
                self.sections.push((section.to_owned(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let entries = &mut self.sections[index].1;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_owned(),
            None => entries.push((key.to_owned(), value.to_owned())),
        }
        self
    }

    /// Removes `key` from `[section]` (to test a missing setting).
    pub fn remove(mut self, section: &str, key: &str) -> Self {
        if let Some((_, entries)) = self.sections.iter_mut().find(|(name, _)| name == section) {
            entries.retain(|(k, _)| k != key);
        }
        self
    }

    /// Empties `[section]`, keeping its place.
    fn clear(mut self, section: &str) -> Self {
        if let Some((_, entries)) = self.sections.iter_mut().find(|(name, _)| name == section) {
            entries.clear();
        }
        self
    }

    /// Appends raw TOML (whole sections such as `[lockout]` or `[[radius.clients]]`)
    /// after the written sections.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        if !self.extra.ends_with('\n') {
            self.extra.push('\n');
        }
        self
    }

    /// Writes the config and its secret files into a new temporary directory.
    pub fn write(self) -> Result<TestConfig> {
        let dir = tempfile::Builder::new()
            .prefix("otpgate-config-")
            .tempdir()
            .map_err(|err| HarnessError::io("creating a temporary directory", err))?;
        let path = self.write_in(dir.path())?;
        Ok(TestConfig { dir, path })
    }

    /// Writes `otpgate.toml`, `master.key` (32 random bytes, 0600) and `ldap.secret`
    /// (the bind password and a newline, 0600) into `dir`; returns the config's path.
    /// The embedded store, if used, is `dir/otpgate.redb`.
    pub fn write_in(self, dir: &Path) -> Result<PathBuf> {
        let key_file = dir.join("master.key");
        write_private(&key_file, &random_bytes(32)?)?;
        let bind_password_file = dir.join("ldap.secret");
        write_private(
            &bind_password_file,
            format!("{}\n", self.bind_password).as_bytes(),
        )?;
        let in_dir = |value: &str| {
            let file = match value {
                IN_DIR_KEY => "master.key",
                IN_DIR_BIND_PASSWORD => "ldap.secret",
                IN_DIR_STORE => "otpgate.redb",
                other => return other.to_owned(),
            };
            toml_string(&dir.join(file).to_string_lossy())
        };

        let mut text = String::from("# otpgate test configuration, written by otpgate-tests\n");
        for (name, entries) in &self.sections {
            text.push_str(&format!("\n[{name}]\n"));
            for (key, value) in entries {
                text.push_str(&format!("{key} = {}\n", in_dir(value)));
            }
        }
        if !self.extra.is_empty() {
            text.push('\n');
            text.push_str(&self.extra);
        }
        let path = dir.join("otpgate.toml");
        std::fs::write(&path, text)
            .map_err(|err| HarnessError::io(format!("writing {}", path.display()), err))?;
        Ok(path)
    }
}

/// A written config and its temporary directory (removed on drop).
#[derive(Debug)]
pub struct TestConfig {
    /// Holds the config, its secrets and the embedded store.
    dir: TempDir,
    /// `dir/otpgate.toml`.
    path: PathBuf,
}

impl TestConfig {
    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The 32-byte master key file (0600).
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("master.key")
    }

    /// The LDAP bind password file (0600).
    pub fn bind_password_file(&self) -> PathBuf {
        self.dir.path().join("ldap.secret")
    }

    /// Where the embedded store lives when no Redis was given.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("otpgate.redb")
    }

    /// The config's text.
    pub fn contents(&self) -> Result<String> {
        std::fs::read_to_string(&self.path)
            .map_err(|err| HarnessError::io(format!("reading {}", self.path.display()), err))
    }
}
