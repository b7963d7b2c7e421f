//! Tests of loading and validation, including every shipped example.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

/// Writes `name` in `dir` with `mode`.
fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn parse(dir: &Path, text: &str) -> Result<Config, ConfigError> {
    let path = dir.join("otpgate.toml");
    fs::write(&path, text).unwrap();
    load(&path)
}

/// Every example under packaging/config parses once its /etc/otpgate secret files exist.
#[test]
fn shipped_examples_parse() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/config");
    let mut seen = 0;
    for entry in fs::read_dir(&examples).unwrap() {
        let example = entry.unwrap().path();
        if example.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let text = fs::read_to_string(&example).unwrap();
        let text = text.replace("/etc/otpgate/", &format!("{}/", dir.path().display()));
        write(dir.path(), "master.key", &[7u8; 32], 0o600);
        for secret in [
            "ldap.secret",
            "radius-vpn.secret",
            "radius-linux.secret",
            "pam-radius.secret",
            "smtp.secret",
        ] {
            write(dir.path(), secret, b"s3cret\n", 0o600);
        }
        let config =
            parse(dir.path(), &text).unwrap_or_else(|e| panic!("{}: {e}", example.display()));
        seen += 1;
        if let Some(DirectoryConfig::Ldap(ldap)) = &config.directory {
            assert_eq!(
                ldap.bind_password.expose(),
                b"s3cret",
                "trailing newline is not part of the secret"
            );
        }
    }
    assert!(seen >= 2, "expected the shipped examples, found {seen}");
}

#[test]
fn defaults_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let c = parse(dir.path(), "").unwrap();
    assert_eq!(c.totp.digits, 6);
    assert_eq!(c.totp.period.as_secs(), 30);
    assert_eq!(c.totp.skew_steps, 1);
    assert_eq!(c.email_otp.digits, 8);
    assert_eq!(c.email_otp.valid_for.as_secs(), 86_400);
    assert_eq!(c.lockout.max_failures, 10);
    assert_eq!(c.lockout.lock_for.as_secs(), 900);
    assert_eq!(c.trust.remember_for.as_secs(), 7 * 86_400);
    assert!(c.require_core().is_err());
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse(dir.path(), "[totp]\ndigits = 6\nperiode = \"30s\"\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("periode"), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3:", dir.path().join("otpgate.toml").display()))
    );
}

#[test]
fn bad_duration_names_its_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse(
        dir.path(),
        "[lockout]\nmax_failures = 3\nlock_for = \"15\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("lockout.lock_for"));
    assert_eq!(err.line, Some(3));
    assert!(err.message.contains("no unit"), "{err}");
}

#[test]
fn bad_client_address_names_the_client() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.secret", b"x", 0o600);
    let text = "[radius]\n[[radius.clients]]\nname = \"a\"\naddress = \"10.0.0.0/8\"\nsecret_file = \"a.secret\"\n\
                [[radius.clients]]\nname = \"b\"\naddress = \"nonsense\"\nsecret_file = \"a.secret\"\n";
    let err = parse(dir.path(), text).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("radius.clients[1].address"));
    assert_eq!(err.line, Some(8));
}

#[test]
fn secret_files_open_to_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "master.key", &[1u8; 32], 0o640);
    let err = parse(dir.path(), "[secrets]\nkey_file = \"master.key\"\n").unwrap_err();
    assert!(err.message.contains("chmod 600"), "{err}");
    write(dir.path(), "master.key", &[1u8; 32], 0o600);
    assert!(
        parse(dir.path(), "[secrets]\nkey_file = \"master.key\"\n")
            .unwrap()
            .master_key
            .is_some()
    );

    write(dir.path(), "r.secret", b"x", 0o644);
    let text = "[radius]\n[[radius.clients]]\nname = \"a\"\naddress = \"127.0.0.1\"\nsecret_file = \"r.secret\"\n";
    assert!(
        parse(dir.path(), text)
            .unwrap_err()
            .message
            .contains("others")
    );
}

#[test]
fn master_key_must_be_32_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "master.key", b"short\n", 0o600);
    let err = parse(dir.path(), "[secrets]\nkey_file = \"master.key\"\n").unwrap_err();
    assert!(err.message.contains("exactly 32"), "{err}");
}

#[test]
fn env_secrets_can_be_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[smtp]\nurl = \"smtp://127.0.0.1:25\"\nfrom = \"a@b.c\"\nusername = \"u\"\npassword_env = \"OTPGATE_TEST_NEVER_SET\"\n";
    let path = dir.path().join("c.toml");
    fs::write(&path, text).unwrap();
    let strict = LoadOptions {
        allow_env_secrets: false,
        check_permissions: true,
    };
    assert!(
        load_with(&path, &strict)
            .unwrap_err()
            .message
            .contains("not allowed")
    );
    assert!(load(&path).unwrap_err().message.contains("not set"));
}

#[test]
fn denied_domain_rules() {
    let exact = DomainRule::Exact("example.ac.jp".into());
    let sub = DomainRule::Subdomains("example.ac.jp".into());
    assert!(exact.matches("EXAMPLE.ac.jp"));
    assert!(!exact.matches("mail.example.ac.jp"));
    assert!(sub.matches("mail.example.ac.jp"));
    assert!(!sub.matches("example.ac.jp"));
    assert!(!sub.matches("badexample.ac.jp"));
}

#[test]
fn store_needs_exactly_one_target() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse(dir.path(), "[store]\nkind = \"redis\"\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("store.url"));
    let err = parse(dir.path(), "[store]\nkind = \"embedded\"\n").unwrap_err();
    assert!(err.message.contains("path"), "{err}");
    let c = parse(
        dir.path(),
        "[store]\nkind = \"embedded\"\npath = \"s.redb\"\n",
    )
    .unwrap();
    assert!(
        matches!(c.store, Some(StoreConfig::Embedded { ref path, .. }) if path == &dir.path().join("s.redb"))
    );
}

#[test]
fn redis_credentials_come_from_files_and_tls_from_rediss() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse(
        dir.path(),
        "[store]\nkind = \"redis\"\nurl = \"redis://otp:pw@127.0.0.1:6379/0\"\n",
    )
    .unwrap_err();
    assert!(err.message.contains("password_file"), "{err}");
    let err = parse(
        dir.path(),
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1\"\nusername = \"otp\"\n",
    )
    .unwrap_err();
    assert!(err.message.contains("password_file"), "{err}");
    let err = parse(
        dir.path(),
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1\"\ntls_ca_file = \"ca.pem\"\n",
    )
    .unwrap_err();
    assert_eq!(err.key.as_deref(), Some("store.tls_ca_file"), "{err}");

    write(
        dir.path(),
        "ca.pem",
        b"-----BEGIN CERTIFICATE-----\n",
        0o644,
    );
    write(dir.path(), "redis.secret", b"pw\n", 0o600);
    write(dir.path(), "sentinel.secret", b"spw\n", 0o600);
    let c = parse(
        dir.path(),
        "[store]\nkind = \"redis\"\nusername = \"otp\"\npassword_file = \"redis.secret\"\n\
         tls_ca_file = \"ca.pem\"\nrequire_persistence = true\n\
         sentinel = { master_name = \"m\", urls = [\"rediss://127.0.0.1:26379\"], \
         username = \"watch\", password_file = \"sentinel.secret\" }\n",
    )
    .unwrap();
    let Some(StoreConfig::Redis(r)) = &c.store else {
        panic!("{:?}", c.store)
    };
    assert_eq!(r.auth.username.as_deref(), Some("otp"));
    assert_eq!(r.auth.password.as_ref().unwrap().expose(), b"pw");
    assert!(r.tls_ca.is_some() && r.require_persistence);
    let RedisTarget::Sentinel { auth, .. } = &r.target else {
        panic!("{:?}", r.target)
    };
    assert_eq!(auth.username.as_deref(), Some("watch"));
    assert_eq!(auth.password.as_ref().unwrap().expose(), b"spw");
    assert!(!format!("{c:?}").contains("spw"), "Debug shows no secret");
}

#[test]
fn pam_server_mode_needs_servers_and_secret() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse(dir.path(), "[pam]\nbackend = \"server\"\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("pam.servers"));
}

#[test]
fn smtp_urls_say_how_mail_is_protected() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = |url: &str, extra: &str| {
        parse(
            dir.path(),
            &format!("[smtp]\nurl = \"{url}\"\nfrom = \"a@b.c\"\n{extra}"),
        )
    };
    let tls = |url: &str| smtp(url, "").unwrap().smtp.unwrap().tls;
    assert_eq!(tls("smtp://127.0.0.1:25"), SmtpTls::None);
    assert_eq!(tls("smtp://relay:587?tls=required"), SmtpTls::StartTls);
    assert_eq!(tls("smtps://relay:465"), SmtpTls::Wrapper);
    for (url, why) in [
        ("smtp://relay:587?tls=opportunistic", "not supported"),
        ("smtps://relay?tls=none", "not supported"),
        (
            "smtp://relay?tls=required&tls=required",
            "only query parameter",
        ),
        ("smtp://relay?auth=plain", "only query parameter"),
        ("smtp://:25", "not an smtp://HOST"),
        ("http://relay", "not an smtp://HOST"),
    ] {
        let err = smtp(url, "").unwrap_err();
        assert!(err.message.contains(why), "{url}: {err}");
        assert_eq!(err.key.as_deref(), Some("smtp.url"), "{url}: {err}");
    }
    let ca = smtp("smtps://relay", "tls_ca_file = \"ca.pem\"\n")
        .unwrap()
        .smtp
        .unwrap()
        .tls_ca_file
        .unwrap();
    assert_eq!(ca, dir.path().join("ca.pem"));
    let err = smtp("smtp://relay", "tls_ca_file = \"ca.pem\"\n").unwrap_err();
    assert!(err.message.contains("only used with TLS"), "{err}");
}

#[test]
fn portal_proxies_site_texts_and_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[portal]\nlisten = \"127.0.0.1:8443\"\npublic_url = \"https://mfa.example.org\"\n";
    let c = parse(
        dir.path(),
        &format!(
            "{base}trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\"]\n\
             site_name = {{ en = \"Example MFA\", ja = \"例 多要素認証\" }}\n\
             helpdesk_contact = {{ en = \"ext. 1234\" }}\nidle_timeout = \"5s\"\n"
        ),
    )
    .unwrap();
    let p = c.portal.unwrap();
    assert_eq!(p.trusted_proxies.len(), 2);
    assert!(p.trusted_proxies[1].contains(&"192.0.2.7".parse::<std::net::IpAddr>().unwrap()));
    assert_eq!(p.site_name.as_ref().unwrap().ja, "例 多要素認証");
    // Japanese falls back to the English text.
    assert_eq!(p.helpdesk_contact.as_ref().unwrap().ja, "ext. 1234");
    assert_eq!(p.idle_timeout.as_secs(), 5);
    // Defaults: nobody trusted, built-in texts, 20 s.
    let p = parse(dir.path(), base).unwrap().portal.unwrap();
    assert!(p.trusted_proxies.is_empty() && p.site_name.is_none());
    assert_eq!(p.idle_timeout.as_secs(), 20);
    for (bad, key) in [
        (
            "trusted_proxies = [\"proxy.example\"]\n",
            "portal.trusted_proxies",
        ),
        ("site_name = { en = \"\" }\n", "portal.site_name"),
        ("site_name = { en = \"a\", fr = \"b\" }\n", "portal"),
        (
            "helpdesk_contact = { en = \"a\\u0007\" }\n",
            "portal.helpdesk_contact",
        ),
        ("idle_timeout = \"0s\"\n", "portal.idle_timeout"),
    ] {
        let err = parse(dir.path(), &format!("{base}{bad}")).unwrap_err();
        assert!(
            err.key.as_deref().unwrap_or("").starts_with(key) || err.message.contains("fr"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn policy_rules_parse_in_order_and_name_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.secret", b"x", 0o600);
    let head = "[radius]\n[[radius.clients]]\nname = \"vpn\"\naddress = \"10.0.0.0/8\"\nsecret_file = \"a.secret\"\npam_host = false\n";
    let text = format!(
        "{head}[[policy]]\ngroups = [\"cn=Staff,ou=groups,dc=example,dc=org\"]\ndoors = [\"radius\", \"pam\"]\n\
         clients = [\"vpn\"]\nsecond_factor = \"required\"\nenroll_by = \"2027-04-01\"\nenroll_at_login = true\n\
         [[policy]]\ngroups = [\"guests\"]\nsecond_factor = \"exempt\"\n"
    );
    let config = parse(dir.path(), &text).unwrap();
    assert_eq!(config.policy.len(), 2);
    let staff = &config.policy[0];
    assert_eq!(staff.doors, vec![PolicyDoor::Radius, PolicyDoor::Pam]);
    assert_eq!(staff.clients, vec!["vpn".to_string()]);
    assert_eq!(staff.second_factor, SecondFactor::Required);
    assert_eq!(staff.enroll_by.unwrap().to_string(), "2027-04-01");
    assert!(staff.enroll_at_login);
    assert!(config.policy[1].doors.is_empty() && config.policy[1].clients.is_empty());
    assert_eq!(config.policy[1].second_factor, SecondFactor::Exempt);
    assert!(!config.radius.unwrap().clients[0].pam_host);

    let cases = [
        (
            "groups = []\nsecond_factor = \"optional\"\n",
            "policy[0].groups",
            "at least one group",
        ),
        (
            "groups = [\"g\"]\nsecond_factor = \"sometimes\"\n",
            "policy[0].second_factor",
            "unknown value",
        ),
        (
            "groups = [\"g\"]\n",
            "policy[0]",
            "`second_factor` is required",
        ),
        (
            "groups = [\"g\"]\nsecond_factor = \"optional\"\ndoors = [\"portal\"]\n",
            "policy[0].doors",
            "not a door",
        ),
        (
            "groups = [\"g\"]\nsecond_factor = \"optional\"\ndoors = [\"vpn\"]\n",
            "policy[0].doors",
            "unknown door",
        ),
        (
            "groups = [\"g\"]\nsecond_factor = \"optional\"\nclients = [\"wifi\"]\n",
            "policy[0].clients",
            "`wifi`",
        ),
        (
            "groups = [\"g\"]\nsecond_factor = \"required\"\nenroll_by = \"2027-02-30\"\n",
            "policy[0].enroll_by",
            "YYYY-MM-DD",
        ),
        (
            "groups = [\"g\"]\nsecond_factor = \"optional\"\nenroll_by = \"2027-02-01\"\n",
            "policy[0].enroll_by",
            "needs `second_factor = \"required\"`",
        ),
        (
            "groups = [\"g\"]\nsecond_factor = \"exempt\"\nenroll_at_login = true\n",
            "policy[0].enroll_at_login",
            "needs `second_factor = \"required\"`",
        ),
        (
            "groups = [\"g\"]\nsecond_factor = \"optional\"\nwhen = \"always\"\n",
            "",
            "when",
        ),
    ];
    for (rule, key, message) in cases {
        let text = format!("{head}[[policy]]\n{rule}");
        let err = parse(dir.path(), &text).unwrap_err();
        if !key.is_empty() {
            assert_eq!(err.key.as_deref(), Some(key), "{rule}: {err}");
            assert!(err.line.is_some_and(|l| l >= 7), "{rule}: {err}");
        }
        assert!(err.to_string().contains(message), "{rule}: {err}");
    }
}

#[test]
fn directory_cache_for_defaults_to_a_minute_and_zero_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ldap.secret", b"pw", 0o600);
    let ldap = |extra: &str| {
        let text = format!(
            "[directory]\nkind = \"ldap\"\nurls = [\"ldap://127.0.0.1\"]\nbase_dn = \"dc=x\"\n\
             bind_dn = \"cn=s,dc=x\"\nbind_password_file = \"ldap.secret\"\n{extra}"
        );
        parse(dir.path(), &text)
    };
    let cache_for = |extra: &str| match ldap(extra).unwrap().directory {
        Some(DirectoryConfig::Ldap(l)) => l.cache_for,
        other => panic!("{other:?}"),
    };
    assert_eq!(cache_for("").as_secs(), 60);
    assert_eq!(cache_for("cache_for = \"0s\"\n").as_secs(), 0);
    assert_eq!(cache_for("cache_for = \"5m\"\n").as_secs(), 300);
    for bad in ["\"1500ms\"", "\"2d\"", "\"10\""] {
        let err = ldap(&format!("cache_for = {bad}\n")).unwrap_err();
        assert_eq!(
            err.key.as_deref(),
            Some("directory.cache_for"),
            "{bad}: {err}"
        );
    }
    let err = parse(
        dir.path(),
        "[directory]\nkind = \"file\"\npath = \"u.toml\"\ncache_for = \"1m\"\n",
    )
    .unwrap_err();
    assert!(err.message.contains("only `path`"), "{err}");
}
