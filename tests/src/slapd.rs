//! A throwaway OpenLDAP server (`slapd`) with the test users of [`crate::users`].
//!
//! Built fresh for every [`Slapd`]: a cn=config directory made by `slapadd -n 0`
//! (back_mdb, schemas core/cosine/inetorgperson/nis, the memberof overlay), the
//! entries loaded offline by `slapadd -n 1`, then `slapd -d none` in the foreground on
//! a loopback port. `olcLogLevel: none`, as Debian's slapd package configures it: with
//! slapd's own default (`stats`) every operation is sent to syslog, and on a host
//! without `/dev/log` each of those lines costs a socket, a failed connect and a close
//! under a process-wide lock (half of slapd's CPU under the bench's load). Groups are
//! added online with `ldapadd` after start, because the memberof overlay only
//! maintains `memberOf` for online changes.
//!
//! Access: `userPassword` is usable for binds only (`by self write by anonymous auth`),
//! everything else is readable by all; the service account has no size or time limit
//! (others keep slapd's default of 500 entries).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use crate::binary::{self, require_binary};
use crate::codec::{ldif_line, ssha};
use crate::error::{HarnessError, Result};
use crate::files::{random_bytes, write_private, write_public};
use crate::ports::{free_tcp_port, start_on_free_port};
use crate::process::ServerProcess;
use crate::tls::TestCa;
use crate::users::{
    ACTIVATED_FILTER, GROUPS_DN, PEOPLE_DN, SUFFIX, TestUserSpec, USERS, bulk_mail, bulk_password,
    bulk_uid, group_dn, user_dn,
};

/// The Debian packages that provide slapd and the LDAP client tools.
const PACKAGES: &[&str] = &["slapd", "ldap-utils"];

/// The directory manager (olcRootDN).
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
/// The directory manager's password.
pub const ADMIN_PASSWORD: &str = "admin-pw-0";
/// The product's service account, which searches `ou=people`.
pub const SERVICE_DN: &str = "cn=otpgate,dc=example,dc=org";
/// The service account's password (also in [`Slapd::bind_password_file`]).
pub const SERVICE_PASSWORD: &str = "otpgate-svc-pw";

/// The environment variable that sets slapd's `-d` level (default `none`, which logs
/// only errors; `stats` logs every operation) for debugging a test.
pub const LOGLEVEL_ENV: &str = "OTPGATE_TEST_SLAPD_LOGLEVEL";

/// The paths of the OpenLDAP binaries the harness drives.
#[derive(Debug)]
struct Tools {
    slapd: PathBuf,
    slapadd: PathBuf,
    slappasswd: PathBuf,
    ldapsearch: PathBuf,
    ldapadd: PathBuf,
    ldapmodify: PathBuf,
    ldapwhoami: PathBuf,
}

impl Tools {
    fn find() -> Result<Self> {
        Ok(Self {
            slapd: require_binary("slapd", PACKAGES)?,
            slapadd: require_binary("slapadd", PACKAGES)?,
            slappasswd: require_binary("slappasswd", PACKAGES)?,
            ldapsearch: require_binary("ldapsearch", PACKAGES)?,
            ldapadd: require_binary("ldapadd", PACKAGES)?,
            ldapmodify: require_binary("ldapmodify", PACKAGES)?,
            ldapwhoami: require_binary("ldapwhoami", PACKAGES)?,
        })
    }
}

/// A running slapd, killed and reaped on drop; its files live in a temporary
/// directory removed on drop.
#[derive(Debug)]
pub struct Slapd {
    /// The server; `None` between [`Slapd::stop`] and [`Slapd::start_again`]. Declared
    /// first so that it is dropped (killed) before `dir` is removed.
    process: Option<ServerProcess>,
    /// The loopback port, kept across restarts.
    port: u16,
    /// The LDAPS port, when started with TLS.
    ldaps_port: Option<u16>,
    /// The test CA and server certificate, when started with TLS.
    tls: Option<TestCa>,
    /// The binaries.
    tools: Tools,
    /// The service account's password, with a trailing newline, mode 0600.
    bind_password_file: PathBuf,
    /// slapd.d, the mdb database, the LDIF files and `slapd.log`.
    dir: TempDir,
}

impl Slapd {
    /// Starts slapd with the users of [`USERS`].
    pub fn start() -> Result<Self> {
        Self::start_with(&SlapdOptions::default())
    }

    /// Starts slapd with the users of [`USERS`] and `count` generated users
    /// `user0000`… (password `user0000-pw`, mail `user0000@example.org`, activated, no
    /// groups), loaded offline so that thousands take a second or two.
    pub fn start_with_bulk_users(count: usize) -> Result<Self> {
        Self::start_with(&SlapdOptions {
            bulk_users: count,
            ..SlapdOptions::default()
        })
    }

    /// Starts slapd with the users of [`USERS`] and an LDAPS listener whose certificate
    /// (SAN `IP:127.0.0.1, DNS:localhost`) is signed by a fresh test CA
    /// ([`Slapd::ca_cert`]).
    pub fn start_with_tls() -> Result<Self> {
        Self::start_with(&SlapdOptions {
            tls: true,
            ..SlapdOptions::default()
        })
    }

    /// Starts slapd as `options` say.
    pub fn start_with(options: &SlapdOptions) -> Result<Self> {
        let tools = Tools::find()?;
        let dir = tempfile::Builder::new()
            .prefix("otpgate-slapd-")
            .tempdir()
            .map_err(|err| HarnessError::io("creating a temporary directory", err))?;
        let root = dir.path();
        let db = root.join("db");
        let slapd_d = root.join("slapd.d");
        for path in [&db, &slapd_d] {
            std::fs::create_dir(path)
                .map_err(|err| HarnessError::io(format!("creating {}", path.display()), err))?;
        }

        let tls = if options.tls {
            Some(TestCa::create(root)?)
        } else {
            None
        };
        let config = config_ldif(&hash(&tools, ADMIN_PASSWORD)?, &db, tls.as_ref());
        let config_path = root.join("config.ldif");
        write_public(&config_path, config.as_bytes())?;
        binary::run(
            Command::new(&tools.slapadd)
                .args(["-n", "0", "-F"])
                .arg(&slapd_d)
                .arg("-l")
                .arg(&config_path),
            None,
        )?;

        let data = data_ldif(&tools, options.bulk_users, &options.bulk_descriptions)?;
        let data_path = root.join("data.ldif");
        write_public(&data_path, data.as_bytes())?;
        binary::run(
            Command::new(&tools.slapadd)
                .args(["-q", "-n", "1", "-F"])
                .arg(&slapd_d)
                .arg("-l")
                .arg(&data_path),
            None,
        )?;

        let bind_password_file = root.join("ldap-bind.secret");
        write_private(
            &bind_password_file,
            format!("{SERVICE_PASSWORD}\n").as_bytes(),
        )?;

        let slapd = start_on_free_port(|port| {
            let ldaps_port = match &tls {
                Some(_) => Some(free_tcp_port()?),
                None => None,
            };
            let process = spawn(&tools, root, port, ldaps_port, tls.as_ref())?;
            Ok((port, ldaps_port, process))
        })
        .map(|(port, ldaps_port, process)| Self {
            process: Some(process),
            port,
            ldaps_port,
            tls,
            tools,
            bind_password_file,
            dir,
        })?;
        slapd.add_groups(USERS)?;
        Ok(slapd)
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT`, when started with TLS. The certificate also names
    /// `DNS:localhost`, but OpenLDAP's own client tools replace `localhost` by the
    /// machine's host name before checking it; use the IP address with them.
    pub fn ldaps_url(&self) -> Option<String> {
        self.ldaps_port
            .map(|port| format!("ldaps://127.0.0.1:{port}"))
    }

    /// The test CA's certificate (PEM) that signed the LDAPS certificate, when started
    /// with TLS.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|tls| tls.ca_cert.as_path())
    }

    /// The port slapd listens on (the same after [`Slapd::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where users live: `ou=people,dc=example,dc=org`.
    pub fn base_dn(&self) -> &'static str {
        PEOPLE_DN
    }

    /// The service account's DN: `cn=otpgate,dc=example,dc=org`.
    pub fn bind_dn(&self) -> &'static str {
        SERVICE_DN
    }

    /// The service account's password.
    pub fn bind_password(&self) -> &'static str {
        SERVICE_PASSWORD
    }

    /// A 0600 file holding the service account's password and a trailing newline.
    pub fn bind_password_file(&self) -> &Path {
        &self.bind_password_file
    }

    /// The directory manager's DN (can write anything).
    pub fn admin_dn(&self) -> &'static str {
        ADMIN_DN
    }

    /// The directory manager's password.
    pub fn admin_password(&self) -> &'static str {
        ADMIN_PASSWORD
    }

    /// The `activated_filter` matching the test users' `employeeType`.
    pub fn activated_filter(&self) -> &'static str {
        ACTIVATED_FILTER
    }

    /// The temporary directory (holds `slapd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// slapd's log file (`-d none`, or the level in [`LOGLEVEL_ENV`]).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("slapd.log")
    }

    /// Kills slapd (an outage); the data stays. Does nothing if already stopped.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts slapd again on the same port with the same data, after [`Slapd::stop`].
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Err(HarnessError::Usage("slapd is already running".into()));
        }
        self.process = Some(spawn(
            &self.tools,
            self.dir.path(),
            self.port,
            self.ldaps_port,
            self.tls.as_ref(),
        )?);
        Ok(())
    }

    /// Whether slapd is running (started and not exited).
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| process.check_alive().is_ok())
    }

    /// slapd's process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::id)
    }

    /// Adds a user online (ldapadd as the directory manager), then adds it to its groups
    /// (creating missing groups), so that its `memberOf` is maintained.
    pub fn add_user(&self, user: &TestUserSpec<'_>) -> Result<()> {
        let password = hash(&self.tools, user.password)?;
        self.ldap_add(&user_ldif(user, &password))?;
        self.add_groups(std::slice::from_ref(user))
    }

    /// Applies an LDIF change (ldapmodify as the directory manager), e.g. to disable a
    /// user:
    /// `"dn: uid=dave,ou=people,dc=example,dc=org\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n"`.
    pub fn modify(&self, ldif: &str) -> Result<()> {
        binary::run(
            self.admin_command(&self.tools.ldapmodify).arg("-c"),
            Some(ldif.as_bytes()),
        )
        .map(drop)
    }

    /// Searches `ou=people` as the service account (`ldapsearch -LLL`) and returns the
    /// LDIF text.
    pub fn search(&self, filter: &str, attributes: &[&str]) -> Result<String> {
        let output = binary::run(
            Command::new(&self.tools.ldapsearch)
                .env("LDAPNOINIT", "1")
                .args([
                    "-x",
                    "-LLL",
                    "-o",
                    "ldif-wrap=no",
                    "-o",
                    "nettimeout=5",
                    "-H",
                ])
                .arg(self.url())
                .args(["-D", SERVICE_DN, "-w", SERVICE_PASSWORD, "-b", PEOPLE_DN])
                .arg(filter)
                .args(attributes),
            None,
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Whether a simple bind as `dn` with `password` succeeds (ldapwhoami): `Ok(false)`
    /// for invalid credentials, an error for anything else.
    pub fn can_bind(&self, dn: &str, password: &str) -> Result<bool> {
        let mut command = Command::new(&self.tools.ldapwhoami);
        command
            .env("LDAPNOINIT", "1")
            .args(["-x", "-o", "nettimeout=5", "-H"])
            .arg(self.url())
            .args(["-D", dn, "-w", password]);
        let output = binary::run_status(&mut command, None)?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(49) => Ok(false),
            _ => Err(binary::failed(&command, &output)),
        }
    }

    fn admin_command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("LDAPNOINIT", "1")
            .args(["-x", "-o", "nettimeout=5", "-H"])
            .arg(self.url())
            .args(["-D", ADMIN_DN, "-w", ADMIN_PASSWORD]);
        command
    }

    fn ldap_add(&self, ldif: &str) -> Result<()> {
        binary::run(
            &mut self.admin_command(&self.tools.ldapadd),
            Some(ldif.as_bytes()),
        )
        .map(drop)
    }

    /// Adds every user of `users` to its groups online, creating missing groups.
    fn add_groups(&self, users: &[TestUserSpec<'_>]) -> Result<()> {
        let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
        for user in users {
            for &group in user.groups {
                match groups.iter_mut().find(|(name, _)| *name == group) {
                    Some((_, members)) => members.push(user.dn()),
                    None => groups.push((group, vec![user.dn()])),
                }
            }
        }
        for (group, members) in groups {
            let dn = group_dn(group);
            let mut ldif = ldif_line("dn", &dn);
            if self.group_exists(&dn)? {
                ldif.push_str("changetype: modify\nadd: member\n");
            } else {
                ldif.push_str("changetype: add\nobjectClass: groupOfNames\n");
                ldif.push_str(&ldif_line("cn", group));
            }
            for member in &members {
                ldif.push_str(&ldif_line("member", member));
            }
            binary::run(
                &mut self.admin_command(&self.tools.ldapmodify),
                Some(ldif.as_bytes()),
            )?;
        }
        Ok(())
    }

    fn group_exists(&self, dn: &str) -> Result<bool> {
        let mut command = self.admin_command(&self.tools.ldapsearch);
        command.args(["-LLL", "-s", "base", "-b", dn, "(objectClass=*)", "1.1"]);
        let output = binary::run_status(&mut command, None)?;
        match output.status.code() {
            Some(0) => Ok(true),
            Some(32) => Ok(false),
            _ => Err(binary::failed(&command, &output)),
        }
    }
}

/// Options for [`Slapd::start_with`].
#[derive(Debug, Clone, Default)]
pub struct SlapdOptions {
    /// How many generated users `user0000`… to load besides [`USERS`].
    pub bulk_users: usize,
    /// Whether to add an LDAPS listener with a certificate from a fresh test CA.
    pub tls: bool,
    /// A `description` for bulk user `index` (the value at that index), for runs that
    /// keep per-user data in the directory; bulk users past its end have none.
    pub bulk_descriptions: Vec<String>,
}

/// Starts slapd on `port` (and `ldaps_port`) and waits until an anonymous rootDSE
/// search answers on each.
fn spawn(
    tools: &Tools,
    root: &Path,
    port: u16,
    ldaps_port: Option<u16>,
    tls: Option<&TestCa>,
) -> Result<ServerProcess> {
    let level = std::env::var(LOGLEVEL_ENV).unwrap_or_else(|_| "none".into());
    let mut urls = format!("ldap://127.0.0.1:{port}/");
    if let Some(ldaps) = ldaps_port {
        urls.push_str(&format!(" ldaps://127.0.0.1:{ldaps}/"));
    }
    let mut command = Command::new(&tools.slapd);
    command
        .args(["-d", &level, "-F"])
        .arg(root.join("slapd.d"))
        .args(["-h", &urls]);
    let mut process = ServerProcess::spawn("slapd", command, &root.join("slapd.log"))?;
    let plain = format!("ldap://127.0.0.1:{port}");
    let secure = ldaps_port.map(|port| format!("ldaps://127.0.0.1:{port}"));
    process.wait_ready(|| {
        root_dse_answers(tools, &plain, None)
            && match (&secure, tls) {
                (Some(url), Some(tls)) => root_dse_answers(tools, url, Some(&tls.ca_cert)),
                _ => true,
            }
    })?;
    Ok(process)
}

/// Whether an anonymous rootDSE search at `url` succeeds (trusting `ca_cert` for
/// ldaps).
fn root_dse_answers(tools: &Tools, url: &str, ca_cert: Option<&Path>) -> bool {
    let mut command = Command::new(&tools.ldapsearch);
    match ca_cert {
        // LDAPNOINIT would also ignore LDAPTLS_CACERT; the variable wins over ldap.conf.
        Some(ca) => command
            .env("LDAPTLS_CACERT", ca)
            .env("LDAPTLS_REQCERT", "demand"),
        None => command.env("LDAPNOINIT", "1"),
    };
    command
        .args(["-x", "-o", "nettimeout=1", "-H", url])
        .args(["-b", "", "-s", "base", "namingContexts"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// An `{SSHA}` hash made by slappasswd.
fn hash(tools: &Tools, password: &str) -> Result<String> {
    let output = binary::run(
        Command::new(&tools.slappasswd).args(["-h", "{SSHA}", "-s", password]),
        None,
    )?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The cn=config LDIF for `slapadd -n 0`.
fn config_ldif(root_password_hash: &str, db: &Path, tls: Option<&TestCa>) -> String {
    let tls = tls.map_or_else(String::new, |tls| {
        format!(
            "olcTLSCACertificateFile: {}\nolcTLSCertificateFile: {}\nolcTLSCertificateKeyFile: {}\n",
            tls.ca_cert.display(),
            tls.server_cert.display(),
            tls.server_key.display(),
        )
    });
    format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
olcLogLevel: none
{tls}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: memberof

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

include: file:///etc/ldap/schema/nis.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcRootDN: {ADMIN_DN}
olcRootPW: {root_password_hash}
olcDbDirectory: {db}
olcDbMaxSize: 268435456
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: member eq
olcLimits: {{0}}dn.exact=\"{SERVICE_DN}\" size=unlimited time=unlimited
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by * read

dn: olcOverlay={{0}}memberof,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfRefInt: TRUE
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf
",
        db = db.display(),
    )
}

/// The entries for `slapadd -n 1`: base, service account, the two OUs, [`USERS`] and
/// `bulk` generated users (with `descriptions` by index). Groups are not here (see the
/// module doc).
fn data_ldif(tools: &Tools, bulk: usize, descriptions: &[String]) -> Result<String> {
    let mut ldif = format!(
        "dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example University

dn: {SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: otpgate
description: otpgate service account
userPassword: {service}

dn: {PEOPLE_DN}
objectClass: organizationalUnit
ou: people

dn: {GROUPS_DN}
objectClass: organizationalUnit
ou: groups

",
        service = hash(tools, SERVICE_PASSWORD)?,
    );
    for user in USERS {
        ldif.push_str(&user_ldif(user, &hash(tools, user.password)?));
        ldif.push('\n');
    }
    let salts = random_bytes(bulk * 8)?;
    for (index, salt) in salts.chunks(8).enumerate() {
        let (uid, mail) = (bulk_uid(index), bulk_mail(index));
        let user = TestUserSpec {
            uid: &uid,
            password: "",
            mail: Some(&mail),
            groups: &[],
            activated: true,
        };
        ldif.push_str(&user_ldif(&user, &ssha(&bulk_password(index), salt)));
        if let Some(description) = descriptions.get(index) {
            ldif.push_str(&ldif_line("description", description));
        }
        ldif.push('\n');
    }
    Ok(ldif)
}

/// One user's entry (without groups), with `password_hash` as userPassword.
fn user_ldif(user: &TestUserSpec<'_>, password_hash: &str) -> String {
    let mut ldif = ldif_line("dn", &user_dn(user.uid));
    ldif.push_str("objectClass: inetOrgPerson\n");
    for attribute in ["uid", "cn", "sn"] {
        ldif.push_str(&ldif_line(attribute, user.uid));
    }
    if let Some(mail) = user.mail {
        ldif.push_str(&ldif_line("mail", mail));
    }
    let status = if user.activated { "active" } else { "disabled" };
    let _ = writeln!(ldif, "employeeType: {status}");
    ldif.push_str(&ldif_line("userPassword", password_hash));
    ldif
}
