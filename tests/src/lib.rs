//! The otpgate integration-test harness: real `slapd`, `redis-server` and an SMTP sink
//! started as child processes on loopback ports, under temporary directories, and an
//! otpgate configuration that points at them.
//!
//! ```no_run
//! use otpgate_tests::{ALICE, ConfigBuilder, Redis, Slapd, SmtpSink};
//!
//! let slapd = Slapd::start()?;
//! let redis = Redis::start()?;
//! let smtp = SmtpSink::start()?;
//! let config = ConfigBuilder::new(&slapd).redis(&redis).smtp(&smtp).write()?;
//! // … run otpgate with `--config config.path()`, log in as ALICE …
//! assert!(smtp.mails_to(ALICE.mail.unwrap())?.is_empty());
//! # Ok::<(), otpgate_tests::HarnessError>(())
//! ```
//!
//! # Layout
//!
//! - [`slapd`]: [`Slapd`], OpenLDAP with cn=config built by `slapadd`, the memberof
//!   overlay, the test users, optional bulk users and optional LDAPS; `stop`/`start_again` for outages.
//! - [`tls`]: [`tls::TestCa`], a throwaway CA and server certificate for LDAPS.
//! - [`users`]: the test users ([`USERS`]: [`ALICE`], [`BOB`], [`CAROL`], [`DAVE`],
//!   [`WEIRD`], [`ALICEX`]) and the bulk users' names and passwords.
//! - [`redis`]: [`Redis`] (standalone), [`RedisCluster`] (masters only), [`RedisSentinel`]
//!   (a master, a replica and a Sentinel, with failover) and a tiny RESP
//!   client for probing and inspecting keys.
//! - [`smtp`]: [`SmtpSink`], aiosmtpd storing into a maildir; [`mail`]: [`Mail`], a
//!   received message decoded for assertions.
//! - [`config`]: [`ConfigBuilder`], which writes an otpgate TOML config (SPEC §4) and
//!   its secret files.
//! - [`fault`]: [`FaultProxy`], a loopback TCP proxy in front of any of these servers
//!   with switchable delays, a stall, one-shot holds of an LDAP operation or of the
//!   replies after a client pattern, and a count of LDAP binds by DN.
//! - [`ports`]: loopback ports picked by the kernel, and starting with retries.
//! - [`serve`]: [`OtpgateServe`], the real `otpgate serve` on ports it picks, read from
//!   its `listening on` lines; signals, logs and metrics.
//! - [`portal`]: [`portal::PortalTls`] (a `[portal]` section with a test certificate) and
//!   [`portal::PortalClient`], an HTTPS client that keeps cookies and fills CSRF tokens.
//! - [`webdriver`]: chromedriver and headless Chromium, driven over WebDriver.
//! - [`pam`]: [`PamStack`], PAM service files loading the built module, and
//!   `pamtester` under pam_wrapper ([`pamtester`], [`spawn_pamtester`]).
//! - [`sshd`]: [`Sshd`], a throwaway OpenSSH server using a [`PamStack`], a
//!   [`LocalUser`] for it, and [`ssh_login`], a paramiko keyboard-interactive client.
//! - [`freeradius`]: [`FreeRadiusFront`], FreeRADIUS terminating EAP-TTLS and proxying
//!   the inner PAP to otpgate, configured with the fragments in `packaging/freeradius/`.
//! - [`baseline`]: [`FreeRadiusBaseline`], FreeRADIUS doing otpgate's append-mode work
//!   with rlm_ldap and rlm_totp, the yardstick of the load bench.
//! - [`readme`]: [`readme_block`], a set-up block of the README marked for tests, and
//!   [`substitute`], which fills in its placeholders (failing when one is gone).
//! - [`artifacts`]: the `otpgate` binary and `pam_otpgate.so`, built once per test run.
//! - [`binary`]: [`require_binary`], which turns a missing server into a failure that
//!   names the install command; never a silent skip.
//! - `process` (private): the child process that is killed and reaped on drop, and
//!   readiness probing against a deadline ([`wait_until`]).
//! - [`codec`], [`files`]: base64, quoted-printable, LDIF/DN/filter escaping, `{SSHA}`;
//!   0600 files and random bytes.
//! - [`error`]: [`HarnessError`], the one error type.
//!
//! Every server is a child of the test process, owned by its value: dropping the value
//! (also while a test panics) kills it with SIGKILL, waits for it, and removes its
//! temporary directory. Readiness is decided by probing the server (an LDAP search, a
//! PING, an SMTP greeting) until it answers or a 10 s deadline passes. The library is
//! synchronous (std only), so tests with or without tokio can use it.
#![forbid(unsafe_code)]

pub mod artifacts;
pub mod baseline;
pub mod binary;
pub mod codec;
pub mod config;
pub mod error;
pub mod fault;
pub mod files;
pub mod freeradius;
pub mod mail;
pub mod pam;
pub mod portal;
pub mod ports;
mod process;
pub mod readme;
pub mod redis;
pub mod serve;
pub mod slapd;
pub mod smtp;
pub mod sshd;
pub mod tls;
pub mod users;
pub mod webdriver;

pub use artifacts::{otpgate_binary, pam_direct_module, pam_module};
pub use baseline::FreeRadiusBaseline;
pub use binary::{require_binary, require_python_modules};
pub use config::{ConfigBuilder, TestConfig, toml_string, toml_string_array};
pub use error::{HarnessError, Result};
pub use fault::{FaultProxy, LdapOp};
pub use freeradius::{FreeRadiusFront, FrontOptions};
pub use mail::Mail;
pub use pam::{
    PAM_RADIUS_SECRET, PamBackends, PamModule, PamResult, PamRun, PamSession, PamStack,
    pam_radius_auth_module, pamtester, security_module, spawn_pamtester,
};
pub use ports::{free_tcp_port, free_udp_port};
pub use process::{READY_TIMEOUT, wait_until};
pub use readme::{readme_block, substitute};
pub use redis::{Redis, RedisCluster, RedisOptions, RedisSentinel, Resp, SentinelOptions};
pub use serve::{OtpgateServe, radius_section, write_radius_secret};
pub use slapd::{Slapd, SlapdOptions};
pub use smtp::{SinkTls, SmtpSink};
pub use sshd::{APP_CODE, LocalUser, SshLogin, Sshd, ssh_login};
pub use users::{ALICE, ALICEX, BOB, CAROL, DAVE, TestUser, TestUserSpec, USERS, WEIRD};
