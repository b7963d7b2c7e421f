//! FreeRADIUS doing otpgate's RADIUS work with its own modules: the yardstick of the
//! load bench (`bench/`), never part of the product.
//!
//! The same Access-Request as otpgate's append mode (User-Password is the password
//! followed by a 6-digit TOTP code) is split in unlang; `rlm_ldap` searches for the
//! user as the service account (with the same activated filter) and takes the TOTP
//! secret from the entry's `description`, binds as the user to check the password,
//! and `rlm_totp` checks the code. There is no replay protection, no lockout and no
//! audit record: FreeRADIUS 3.2 has none of them for TOTP. Given a `cache_for`, as
//! otpgate's `[directory] cache_for`, an `rlm_cache` instance in front of `rlm_ldap`
//! keeps each user's DN and TOTP secret that long, so a cached user's login skips the
//! search and makes one LDAP operation, the bind (`rlm_ldap` rebinds a connection as
//! the service account only before its next search).
//!
//! [`FreeRadiusBaseline::start`] copies the packaged `/etc/freeradius/3.0` (with
//! `freeradius-ldap` installed), makes that site and its modules the only enabled
//! ones, and runs `freeradius -f` (threaded, as deployed, not the single-threaded
//! `-X`) with logging of each request off, tuned for load ([`TUNING`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use crate::Slapd;
use crate::binary::require_binary;
use crate::error::{HarnessError, Result};
use crate::files::{write_private, write_public};
use crate::freeradius::{packaged_copy, read, remove_entries, replace_once, set_line, spawn_ready};
use crate::ports::{START_ATTEMPTS, free_udp_port};
use crate::process::{ServerProcess, log_tail};
use crate::slapd::{SERVICE_DN, SERVICE_PASSWORD};
use crate::users::{ACTIVATED_FILTER, PEOPLE_DN};

/// FreeRADIUS's settings for the bench, in words (the bench prints them).
pub const TUNING: &str = "max_requests = 65536; reject_delay = 0; thread pool \
     start_servers = 32, max_servers = 64, min_spare_servers = 16, max_spare_servers = 64, \
     max_queue_size = 65536; rlm_ldap pool start = 32, min = 32, max = 64, spare = 32, \
     uses = 0, lifetime = 0";

/// `radiusd.conf` lines for [`TUNING`]: the packaged values (5 to 32 threads, 16 384
/// requests) queue and drop requests at 64 in flight ("max_requests is probably set
/// too low"). The packaged `reject_delay = 1` would hold a reject's worker for a second
/// (the bench's otpgate runs with `reject_delay = "0s"`; a reject at a step boundary
/// would cost FreeRADIUS a second of one worker's time).
const RADIUSD_TUNING: [(&str, &str); 7] = [
    ("max_requests", "65536"),
    ("reject_delay", "0"),
    ("start_servers", "32"),
    ("max_servers", "64"),
    ("min_spare_servers", "16"),
    ("max_spare_servers", "64"),
    ("max_queue_size", "65536"),
];

/// The site's user lookup without a cache: the search as the service account.
const SEARCH: &str = "\t\tldap
		if (!(ok || updated)) {
			reject
		}";

/// With the cache: a read-only look-up first (`notfound` or `updated`, never an empty
/// entry made before the search); on a miss the search, then the cache once more, to
/// make the entry from what the search put in the control list.
const CACHED_SEARCH: &str = "\t\tupdate control {
			&Cache-Read-Only := yes
		}
		user_cache
		if (notfound) {
			ldap
			if (!(ok || updated)) {
				reject
			}
			user_cache
		}";

/// The module FreeRADIUS needs for LDAP, which the `freeradius` package lacks.
const RLM_LDAP: &str = "/usr/lib/freeradius/rlm_ldap.so";

/// A running FreeRADIUS baseline, killed on drop.
#[derive(Debug)]
pub struct FreeRadiusBaseline {
    /// Declared first: killed before `dir` is removed.
    process: ServerProcess,
    addr: SocketAddr,
    dir: TempDir,
}

impl FreeRadiusBaseline {
    /// Configures and starts FreeRADIUS against `slapd`, with one client for
    /// 127.0.0.1 that shares `secret` and must send Message-Authenticator, and a user
    /// cache (`rlm_cache`) of `cache_for` (whole seconds; zero for none); retries on
    /// another port if the one picked was taken.
    pub fn start(slapd: &Slapd, secret: &str, cache_for: Duration) -> Result<Self> {
        let freeradius = require_binary("freeradius", &["freeradius"])?;
        if !Path::new(RLM_LDAP).exists() {
            return Err(HarnessError::MissingBinary {
                name: RLM_LDAP.to_owned(),
                packages: "freeradius-ldap".to_owned(),
            });
        }
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_udp_port()?;
            match Self::start_on(&freeradius, slapd, secret, cache_for, port) {
                Ok(server) => return Ok(server),
                Err(err) if err.is_retryable_start() => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Usage("no start attempt was made".into())))
    }

    fn start_on(
        freeradius: &Path,
        slapd: &Slapd,
        secret: &str,
        cache_for: Duration,
        port: u16,
    ) -> Result<Self> {
        let (dir, conf) = packaged_copy("otpgate-baseline-")?;
        configure(&conf, slapd, secret, cache_for.as_secs(), port)?;
        let process = spawn_ready(freeradius, &["-f", "-l", "stdout"], &conf, dir.path())?;
        Ok(Self {
            process,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            dir,
        })
    }

    /// Where Access-Requests go.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// FreeRADIUS's process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// The configuration copy and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last part of the log.
    pub fn log_tail(&self) -> String {
        log_tail(self.process.log())
    }
}

/// A double-quoted string in FreeRADIUS's configuration syntax.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn configure(conf: &Path, slapd: &Slapd, secret: &str, cache_secs: u64, port: u16) -> Result<()> {
    let radiusd = conf.join("radiusd.conf");
    let mut text = replace_once(
        &read(&radiusd)?,
        "#\tmax_queue_size = 65536",
        "\tmax_queue_size = 65536",
        "radiusd.conf",
    )?;
    for (key, value) in RADIUSD_TUNING {
        text = set_line(&text, key, value, "radiusd.conf")?;
    }
    write_public(&radiusd, text.as_bytes())?;

    remove_entries(&conf.join("sites-enabled"))?;
    let lookup = if cache_secs == 0 {
        SEARCH
    } else {
        CACHED_SEARCH
    };
    let site = format!(
        r#"server otpgate-baseline {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
	}}
	authorize {{
		if (&User-Password =~ /^(.+)([0-9]{{6}})$/) {{
			update request {{
				&TOTP-Password := "%{{2}}"
				&User-Password := "%{{1}}"
			}}
		}}
		else {{
			reject
		}}
{lookup}
		update control {{
			&Auth-Type := LDAP
		}}
	}}
	authenticate {{
		Auth-Type LDAP {{
			ldap
			if (ok) {{
				totp
			}}
		}}
	}}
	post-auth {{
		update reply {{
			&Message-Authenticator := 0x00000000000000000000000000000000
		}}
		Post-Auth-Type REJECT {{
			update reply {{
				&Message-Authenticator := 0x00000000000000000000000000000000
			}}
		}}
	}}
}}
"#
    );
    write_public(
        &conf.join("sites-enabled/otpgate-baseline"),
        site.as_bytes(),
    )?;

    let ldap = format!(
        r#"ldap {{
	server = {url}
	identity = {identity}
	password = {password}
	base_dn = {people}
	update {{
		control:TOTP-Secret := 'description'
	}}
	user {{
		base_dn = {people}
		filter = "(&(uid=%{{User-Name}}){activated})"
		scope = 'one'
	}}
	options {{
		res_timeout = 5
		srv_timelimit = 5
		net_timeout = 2
	}}
	pool {{
		start = 32
		min = 32
		max = 64
		spare = 32
		uses = 0
		retry_delay = 30
		lifetime = 0
		idle_timeout = 60
	}}
}}
"#,
        url = quoted(&slapd.url()),
        identity = quoted(SERVICE_DN),
        password = quoted(SERVICE_PASSWORD),
        people = quoted(PEOPLE_DN),
        activated = ACTIVATED_FILTER,
    );
    // Only what the site uses: the unlang keywords of `always` (`reject`), ldap, totp
    // and the cache.
    let always = std::fs::read(conf.join("mods-enabled/always"))
        .map_err(|e| HarnessError::io("reading mods-enabled/always", e))?;
    remove_entries(&conf.join("mods-enabled"))?;
    write_public(&conf.join("mods-enabled/always"), &always)?;
    write_private(&conf.join("mods-enabled/ldap"), ldap.as_bytes())?;
    write_public(&conf.join("mods-enabled/totp"), b"totp {\n}\n")?;
    if cache_secs > 0 {
        let cache = format!(
            r#"cache user_cache {{
	driver = "rlm_cache_rbtree"
	key = "%{{User-Name}}"
	ttl = {cache_secs}
	add_stats = no
	update {{
		&control:LDAP-UserDN := &control:LDAP-UserDN
		&control:TOTP-Secret := &control:TOTP-Secret
	}}
}}
"#
        );
        write_public(&conf.join("mods-enabled/user_cache"), cache.as_bytes())?;
    }

    let clients = format!(
        "client bench {{\n\tipaddr = 127.0.0.1\n\tsecret = {}\n\
         \trequire_message_authenticator = yes\n}}\n",
        quoted(secret)
    );
    write_private(&conf.join("clients.conf"), clients.as_bytes())?;
    Ok(())
}
