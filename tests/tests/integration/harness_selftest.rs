//! Tests of the harness itself: the servers it starts really answer, hold the test
//! users, go away on `stop()` and come back on `start_again()`.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otpgate_tests::codec::filter_escape;
use otpgate_tests::slapd::{SERVICE_DN, SERVICE_PASSWORD};
use otpgate_tests::users::{bulk_password, bulk_uid, group_dn, user_dn};
use otpgate_tests::{
    ALICE, BOB, CAROL, ConfigBuilder, DAVE, FaultProxy, HarnessError, LdapOp, Redis, RedisCluster,
    Resp, Slapd, SmtpSink, TestUserSpec, USERS, WEIRD, require_binary, require_python_modules,
    wait_until,
};

/// The DNs of the entries in an `ldapsearch -LLL` output.
fn dns(ldif: &str) -> Vec<&str> {
    ldif.lines()
        .filter_map(|line| {
            line.strip_prefix("dn: ")
                .or_else(|| line.strip_prefix("dn:: "))
        })
        .collect()
}

/// The values of `attribute` in an `ldapsearch -LLL -o ldif-wrap=no` output.
fn values<'a>(ldif: &'a str, attribute: &str) -> Vec<&'a str> {
    let prefix = format!("{attribute}: ");
    ldif.lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .collect()
}

#[test]
fn slapd_returns_alices_groups_and_mail_to_the_service_account() {
    let slapd = Slapd::start().unwrap();
    assert!(slapd.url().starts_with("ldap://127.0.0.1:"));

    // ldapsearch -x -D cn=otpgate,dc=example,dc=org -w … -b ou=people,… '(uid=alice)' memberOf mail
    let ldif = slapd.search("(uid=alice)", &["memberOf", "mail"]).unwrap();
    assert_eq!(dns(&ldif), [ALICE.dn()]);
    assert_eq!(values(&ldif, "mail"), ["alice@example.org"]);
    let mut groups = values(&ldif, "memberOf");
    groups.sort_unstable();
    assert_eq!(
        groups,
        [group_dn("otp-admins"), group_dn("vpn-staff")],
        "memberOf from the memberof overlay:\n{ldif}"
    );

    let bob = slapd.search("(uid=bob)", &["memberOf", "mail"]).unwrap();
    assert_eq!(values(&bob, "mail"), Vec::<&str>::new(), "bob has no mail");
    assert_eq!(values(&bob, "memberOf"), [group_dn("students")]);

    let dave = slapd.search("(uid=dave)", &["memberOf"]).unwrap();
    assert_eq!(values(&dave, "memberOf"), [group_dn("vpn-staff")]);
}

#[test]
fn activated_filter_excludes_only_carol() {
    let slapd = Slapd::start().unwrap();
    let filter = format!("(&(objectClass=inetOrgPerson){})", slapd.activated_filter());
    let ldif = slapd.search(&filter, &["1.1"]).unwrap();
    let mut found = dns(&ldif);
    found.sort_unstable();
    let mut expected: Vec<String> = USERS
        .iter()
        .filter(|u| u.activated)
        .map(|u| u.dn())
        .collect();
    expected.sort_unstable();
    assert_eq!(found.len(), expected.len(), "{ldif}");
    assert!(!ldif.contains(&CAROL.dn()));
    assert!(!ldif.contains("uid=carol"));
    assert!(
        slapd
            .search("(uid=carol)", &["employeeType"])
            .unwrap()
            .contains("employeeType: disabled")
    );
}

#[test]
fn every_user_binds_with_its_own_password_only() {
    let slapd = Slapd::start().unwrap();
    for user in USERS {
        assert!(
            slapd.can_bind(&user.dn(), user.password).unwrap(),
            "{} binds",
            user.uid
        );
        assert!(
            !slapd.can_bind(&user.dn(), "wrong-password").unwrap(),
            "{} wrong pw",
            user.uid
        );
    }
    assert!(!slapd.can_bind(&ALICE.dn(), DAVE.password).unwrap());
    assert!(
        !slapd.can_bind(&user_dn("nobody"), "x").unwrap(),
        "unknown DN"
    );

    // The service account binds with the file's content minus its trailing newline.
    let file = std::fs::read_to_string(slapd.bind_password_file()).unwrap();
    assert_eq!(file, format!("{SERVICE_PASSWORD}\n"));
    let mode = std::fs::metadata(slapd.bind_password_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(slapd.can_bind(SERVICE_DN, file.trim_end()).unwrap());
    assert!(
        slapd
            .can_bind(slapd.admin_dn(), slapd.admin_password())
            .unwrap()
    );
}

#[test]
fn weird_uid_exists_and_alice_star_matches_two_entries() {
    let slapd = Slapd::start().unwrap();
    let escaped = format!("(uid={})", filter_escape(WEIRD.uid));
    let ldif = slapd.search(&escaped, &["uid"]).unwrap();
    assert_eq!(dns(&ldif).len(), 1, "{ldif}");
    assert!(ldif.contains("weird*(user)"), "{ldif}");
    assert!(slapd.can_bind(&WEIRD.dn(), WEIRD.password).unwrap());

    let star = slapd.search("(uid=alice*)", &["1.1"]).unwrap();
    assert_eq!(dns(&star).len(), 2, "alice and alicex: {star}");
}

#[test]
fn users_added_online_get_member_of() {
    let slapd = Slapd::start().unwrap();
    let erin = TestUserSpec {
        uid: "erin",
        password: "erin-pw-7",
        mail: Some("erin@example.org"),
        groups: &["vpn-staff", "wifi-guests"],
        activated: true,
    };
    slapd.add_user(&erin).unwrap();
    let ldif = slapd.search("(uid=erin)", &["memberOf", "mail"]).unwrap();
    let mut groups = values(&ldif, "memberOf");
    groups.sort_unstable();
    assert_eq!(
        groups,
        [group_dn("vpn-staff"), group_dn("wifi-guests")],
        "{ldif}"
    );
    assert!(slapd.can_bind(&erin.dn(), erin.password).unwrap());
    // Alice keeps her membership of the group erin joined.
    let alice = slapd.search("(uid=alice)", &["memberOf"]).unwrap();
    assert_eq!(values(&alice, "memberOf").len(), 2);

    // An online change, e.g. disabling a user.
    slapd
        .modify(&format!(
            "dn: {}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n",
            DAVE.dn()
        ))
        .unwrap();
    assert!(
        slapd
            .search("(uid=dave)", &["employeeType"])
            .unwrap()
            .contains("disabled")
    );
}

#[test]
fn slapd_stops_and_starts_again_on_the_same_port_with_the_same_data() {
    let mut slapd = Slapd::start().unwrap();
    let port = slapd.port();
    slapd.stop();
    assert!(!slapd.is_running());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens"
    );
    assert!(
        slapd.can_bind(&ALICE.dn(), ALICE.password).is_err(),
        "outage is an error"
    );

    slapd.start_again().unwrap();
    assert_eq!(slapd.port(), port);
    assert!(slapd.can_bind(&ALICE.dn(), ALICE.password).unwrap());
    let ldif = slapd.search("(uid=alice)", &["memberOf"]).unwrap();
    assert_eq!(values(&ldif, "memberOf").len(), 2);
    assert!(slapd.start_again().is_err(), "already running");
}

#[test]
fn bulk_users_are_loaded_and_bind() {
    let slapd = Slapd::start_with_bulk_users(2000).unwrap();
    let ldif = slapd.search("(uid=user*)", &["1.1"]).unwrap();
    assert_eq!(dns(&ldif).len(), 2000);
    for index in [0, 57, 199] {
        let dn = user_dn(&bulk_uid(index));
        assert!(slapd.can_bind(&dn, &bulk_password(index)).unwrap(), "{dn}");
        assert!(
            !slapd.can_bind(&dn, &bulk_password(index + 1)).unwrap(),
            "{dn}"
        );
    }
    // The named users are there too.
    assert!(slapd.can_bind(&BOB.dn(), BOB.password).unwrap());
}

/// PING over raw RESP.
fn raw_ping(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

#[test]
fn redis_answers_ping_goes_away_and_comes_back() {
    let mut redis = Redis::start().unwrap();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/0"));
    assert_eq!(raw_ping(port).unwrap(), "+PONG\r\n");
    assert_eq!(
        redis.command(&["SET", "k", "v"]).unwrap(),
        Resp::Simple("OK".into())
    );
    assert_eq!(
        redis.command(&["GET", "k"]).unwrap(),
        Resp::Bulk(Some(b"v".to_vec()))
    );

    redis.stop();
    assert!(raw_ping(port).is_err(), "gone after stop()");
    assert!(!redis.ping());

    redis.start_again().unwrap();
    assert_eq!(redis.port(), port);
    assert_eq!(raw_ping(port).unwrap(), "+PONG\r\n");
    assert_eq!(
        redis.command(&["GET", "k"]).unwrap(),
        Resp::Bulk(None),
        "no persistence"
    );
}

#[test]
fn redis_cluster_of_three_masters_is_ok() {
    let cluster = RedisCluster::start(3).unwrap();
    assert_eq!(cluster.urls().len(), 3);
    for &port in cluster.ports() {
        let info = otpgate_tests::redis::resp_command(port, &["CLUSTER", "INFO"])
            .unwrap()
            .as_text()
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
    }
    // A key with a hash tag lands on one node; the others redirect.
    let replies: Vec<Resp> = cluster
        .ports()
        .iter()
        .map(|&port| otpgate_tests::redis::resp_command(port, &["SET", "{alice}:x", "1"]).unwrap())
        .collect();
    let ok = replies
        .iter()
        .filter(|r| **r == Resp::Simple("OK".into()))
        .count();
    let moved = replies
        .iter()
        .filter(|r| matches!(r, Resp::Error(e) if e.starts_with("MOVED")))
        .count();
    assert_eq!((ok, moved), (1, 2), "{replies:?}");
}

/// Sends one message over raw SMTP and returns the reply to the final ".".
fn send_raw_mail(port: u16, from: &str, to: &[&str], data: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = || {
        // Multi-line replies ("250-…") end with a "250 " line.
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "connection closed");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    };
    assert!(reply().starts_with("220"));
    let mut command = |text: &str, expect: &str| {
        writer.write_all(text.as_bytes()).unwrap();
        let answer = reply();
        assert!(answer.starts_with(expect), "{text:?} got {answer:?}");
        answer
    };
    command("EHLO test.example.org\r\n", "250");
    command(&format!("MAIL FROM:<{from}>\r\n"), "250");
    for rcpt in to {
        command(&format!("RCPT TO:<{rcpt}>\r\n"), "250");
    }
    command("DATA\r\n", "354");
    let done = command(&format!("{data}\r\n.\r\n"), "250");
    command("QUIT\r\n", "221");
    done
}

#[test]
fn smtp_sink_stores_mail_before_answering_250() {
    let mut smtp = SmtpSink::start().unwrap();
    let port = smtp.port();
    assert_eq!(smtp.url(), format!("smtp://127.0.0.1:{port}"));
    assert!(smtp.messages().unwrap().is_empty());

    let data = "From: MFA <mfa@example.org>\r\nTo: alice@example.org\r\n\
                Subject: =?utf-8?b?44Ot44Kw44Kk44Oz?= code\r\nMIME-Version: 1.0\r\n\
                Content-Type: text/plain; charset=utf-8\r\n\
                Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                Your one-time code is 12345678 =E2=9C=93";
    send_raw_mail(
        port,
        "mfa@example.org",
        &["alice@example.org", "dave@example.org"],
        data,
    );
    // Read right after 250: no waiting.
    let messages = smtp.messages().unwrap();
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    assert_eq!(mail.to, ["alice@example.org", "dave@example.org"]);
    assert_eq!(mail.mail_from, "mfa@example.org");
    assert_eq!(mail.from, "MFA <mfa@example.org>");
    assert_eq!(mail.subject, "ログイン code");
    assert_eq!(mail.body.trim_end(), "Your one-time code is 12345678 ✓");
    assert_eq!(mail.code(8).as_deref(), Some("12345678"));

    // The claim above, many times over: each message is there as soon as 250 came back.
    for round in 0..20 {
        let text = format!("Subject: round {round}\r\n\r\nbody {round}");
        send_raw_mail(port, "mfa@example.org", &["bob@example.org"], &text);
        let to_bob = smtp.mails_to("BOB@example.org").unwrap();
        assert_eq!(to_bob.len(), round + 1, "round {round}");
        assert_eq!(to_bob.last().unwrap().subject, format!("round {round}"));
    }
    assert_eq!(smtp.mails_to("alice@example.org").unwrap().len(), 1);

    smtp.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "gone after stop()"
    );
    smtp.start_again().unwrap();
    send_raw_mail(
        port,
        "mfa@example.org",
        &["dave@example.org"],
        "Subject: again\r\n\r\nx",
    );
    assert_eq!(
        smtp.messages().unwrap().len(),
        22,
        "messages kept across restarts"
    );
}

#[test]
fn missing_binary_is_an_error_naming_the_install_command() {
    let err =
        require_binary("otpgate-no-such-server", &["no-such-package", "ldap-utils"]).unwrap_err();
    assert!(matches!(err, HarnessError::MissingBinary { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("otpgate-no-such-server not found")
            && message.contains("sudo apt-get install -y no-such-package ldap-utils")
            && message.contains("./scripts/install-test-deps"),
        "{message}"
    );

    let err =
        require_python_modules(&["otpgate_no_such_module"], &["python3-nothing"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("apt-get install -y python3-nothing"),
        "{err}"
    );

    assert!(require_binary("slapd", &["slapd"]).unwrap().is_absolute());
}

#[test]
fn config_builder_writes_the_spec_sections_and_secret_files() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();

    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .smtp(&smtp)
        .set("directory", "timeout", &otpgate_tests::toml_string("1s"))
        .extra("[lockout]\nmax_failures = 3\nlock_for = \"15m\"\n")
        .write()
        .unwrap();
    let text = config.contents().unwrap();
    let toml: toml::Table = text.parse().unwrap_or_else(|err| panic!("{err}\n{text}"));
    let mut sections: Vec<&str> = toml.keys().map(String::as_str).collect();
    sections.sort_unstable();
    assert_eq!(
        sections,
        [
            "directory",
            "lockout",
            "notification",
            "secrets",
            "smtp",
            "store",
            "totp"
        ]
    );
    let directory = &toml["directory"];
    assert_eq!(directory["kind"].as_str(), Some("ldap"));
    assert_eq!(directory["urls"][0].as_str(), Some(slapd.url().as_str()));
    assert_eq!(
        directory["base_dn"].as_str(),
        Some("ou=people,dc=example,dc=org")
    );
    assert_eq!(directory["user_filter"].as_str(), Some("(uid={user})"));
    assert_eq!(
        directory["bind_dn"].as_str(),
        Some("cn=otpgate,dc=example,dc=org")
    );
    assert_eq!(
        directory["activated_filter"].as_str(),
        Some("(!(employeeType=disabled))")
    );
    assert_eq!(directory["groups_attribute"].as_str(), Some("memberOf"));
    assert_eq!(directory["timeout"].as_str(), Some("1s"), "overridden");
    assert_eq!(toml["store"]["kind"].as_str(), Some("redis"));
    assert_eq!(toml["store"]["url"].as_str(), Some(redis.url().as_str()));
    assert_eq!(toml["store"]["key_prefix"].as_str(), Some("otpgate:"));
    assert_eq!(toml["totp"]["issuer"].as_str(), Some("Example University"));
    assert_eq!(toml["smtp"]["url"].as_str(), Some(smtp.url().as_str()));
    assert_eq!(toml["smtp"]["from"].as_str(), Some("MFA <mfa@example.org>"));
    assert_eq!(
        toml["notification"]["denied_domains"][1].as_str(),
        Some("*.example.ac.jp")
    );
    assert_eq!(toml["lockout"]["max_failures"].as_integer(), Some(3));

    let key_file = toml["secrets"]["key_file"].as_str().unwrap();
    assert_eq!(key_file, config.key_file().to_str().unwrap());
    assert_eq!(std::fs::read(key_file).unwrap().len(), 32);
    let password_file = directory["bind_password_file"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(password_file).unwrap(),
        format!("{SERVICE_PASSWORD}\n")
    );
    for secret in [key_file, password_file] {
        let mode = std::fs::metadata(secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }

    // Without Redis and SMTP: the embedded store and no [smtp].
    let embedded = ConfigBuilder::new(&slapd).write().unwrap();
    let toml: toml::Table = embedded.contents().unwrap().parse().unwrap();
    assert_eq!(toml["store"]["kind"].as_str(), Some("embedded"));
    assert_eq!(
        toml["store"]["path"].as_str(),
        embedded.store_path().to_str()
    );
    assert!(!toml.contains_key("smtp"));
}

#[test]
fn servers_are_killed_when_their_owner_is_dropped() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let pid = slapd.pid().unwrap();
    let ports = [slapd.port(), redis.port(), smtp.port()];
    let dirs = [
        slapd.dir().to_owned(),
        redis.dir().to_owned(),
        smtp.dir().to_owned(),
    ];
    drop((slapd, redis, smtp));
    for port in ports {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} closed"
        );
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} removed", dir.display());
    }
    // Reaped, not a zombie: the pid is gone from /proc.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn servers_are_killed_when_a_test_panics() {
    let mut pid_and_port = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let redis = Redis::start().unwrap();
        pid_and_port = Some(redis.port());
        panic!("a failing test");
    }));
    assert!(result.is_err());
    let port = pid_and_port.unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "redis on {port} killed during unwinding"
    );
}

/// `ldapwhoami` as `dn` over `url`, trusting `ca` (or the system's CAs).
fn whoami_over_tls(url: &str, ca: Option<&std::path::Path>, dn: &str, password: &str) -> bool {
    let mut command = std::process::Command::new("ldapwhoami");
    command.env("LDAPTLS_REQCERT", "demand");
    if let Some(ca) = ca {
        command.env("LDAPTLS_CACERT", ca);
    } else {
        command.env("LDAPTLS_CACERT", "/etc/ssl/certs/ca-certificates.crt");
    }
    command
        .args([
            "-x",
            "-o",
            "nettimeout=5",
            "-H",
            url,
            "-D",
            dn,
            "-w",
            password,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn slapd_with_tls_serves_ldaps_with_a_test_ca() {
    let slapd = Slapd::start_with_tls().unwrap();
    let ldaps = slapd.ldaps_url().unwrap();
    let ca = slapd.ca_cert().unwrap();
    assert!(ldaps.starts_with("ldaps://127.0.0.1:"));
    assert!(whoami_over_tls(
        &ldaps,
        Some(ca),
        &ALICE.dn(),
        ALICE.password
    ));
    assert!(!whoami_over_tls(&ldaps, Some(ca), &ALICE.dn(), "wrong"));
    assert!(
        !whoami_over_tls(&ldaps, None, &ALICE.dn(), ALICE.password),
        "untrusted CA"
    );
    // Plain LDAP still answers.
    assert!(slapd.can_bind(&ALICE.dn(), ALICE.password).unwrap());
    assert!(Slapd::start().unwrap().ldaps_url().is_none());
}

/// How long a fault test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(10);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `ldapsearch -x -LLL` for alice in `ou=people` as the service account over `url`, as
/// a child whose stdout is piped.
fn spawn_ldapsearch(url: &str) -> Child {
    Command::new(require_binary("ldapsearch", &["ldap-utils"]).unwrap())
        .env("LDAPNOINIT", "1")
        .args(["-x", "-LLL", "-o", "nettimeout=5", "-H", url])
        .args(["-D", SERVICE_DN, "-w", SERVICE_PASSWORD])
        .args(["-b", "ou=people,dc=example,dc=org", "(uid=alice)", "1.1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `ldapwhoami -x` as `dn` over `url`, as a child.
fn spawn_ldapwhoami(url: &str, dn: &str, password: &str) -> Child {
    Command::new(require_binary("ldapwhoami", &["ldap-utils"]).unwrap())
        .env("LDAPNOINIT", "1")
        .args([
            "-x",
            "-o",
            "nettimeout=5",
            "-H",
            url,
            "-D",
            dn,
            "-w",
            password,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit (killing it after [`WAIT`]) and returns its stdout, after
/// asserting success.
fn finished(mut child: Child) -> String {
    let exited = wait_until(WAIT, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    assert!(exited, "still running after {WAIT:?}");
    assert!(
        output.status.success(),
        "{}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn fault_proxy_counts_ldap_binds_by_dn() {
    let slapd = Slapd::start().unwrap();
    let proxy = FaultProxy::start(loopback(slapd.port())).unwrap();
    assert_eq!(proxy.ldap_url(), format!("ldap://{}", proxy.addr()));
    assert_eq!((proxy.ldap_binds().len(), proxy.connections()), (0, 0));

    let whoami = finished(spawn_ldapwhoami(
        &proxy.ldap_url(),
        &ALICE.dn(),
        ALICE.password,
    ));
    assert_eq!(whoami.trim(), format!("dn:{}", ALICE.dn()));
    assert_eq!(proxy.ldap_binds(), [ALICE.dn()]);
    assert_eq!(proxy.connections(), 1);

    let ldif = finished(spawn_ldapsearch(&proxy.ldap_url()));
    assert_eq!(dns(&ldif), [ALICE.dn()]);
    assert_eq!(proxy.ldap_binds(), [ALICE.dn(), SERVICE_DN.to_owned()]);
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.ldap_searches(), 1, "ldapwhoami searches nothing");

    proxy.clear_counts();
    assert!(proxy.ldap_binds().is_empty());
    assert_eq!(proxy.ldap_searches(), 0);
    assert_eq!(proxy.connections(), 0);
    // A refused bind counts too.
    let status = spawn_ldapwhoami(&proxy.ldap_url(), &BOB.dn(), "wrong")
        .wait()
        .unwrap();
    assert_eq!(status.code(), Some(49), "invalid credentials");
    assert_eq!(proxy.ldap_binds(), [BOB.dn()]);
}

#[test]
fn fault_proxy_holds_an_ldap_search_and_a_stall_until_release() {
    let slapd = Slapd::start().unwrap();
    let proxy = FaultProxy::start(loopback(slapd.port())).unwrap();
    assert!(proxy.wait_holding(Duration::from_millis(50)).is_err());

    proxy.hold_next_ldap(LdapOp::Search);
    let mut search = spawn_ldapsearch(&proxy.ldap_url());
    proxy.wait_holding(WAIT).unwrap();
    assert!(proxy.holding());
    assert_eq!(proxy.ldap_binds(), [SERVICE_DN], "the bind went through");
    assert!(search.try_wait().unwrap().is_none(), "hangs while held");
    // Other connections are not held.
    finished(spawn_ldapwhoami(
        &proxy.ldap_url(),
        &ALICE.dn(),
        ALICE.password,
    ));
    assert!(search.try_wait().unwrap().is_none(), "still held");
    proxy.release();
    assert_eq!(dns(&finished(search)), [ALICE.dn()]);
    assert!(!proxy.holding());

    // The hold was one-shot: the next search goes through.
    assert_eq!(
        dns(&finished(spawn_ldapsearch(&proxy.ldap_url()))),
        [ALICE.dn()]
    );

    // A stall holds every connection, from its first message.
    proxy.stall();
    let mut whoami = spawn_ldapwhoami(&proxy.ldap_url(), &ALICE.dn(), ALICE.password);
    proxy.wait_holding(WAIT).unwrap();
    assert!(whoami.try_wait().unwrap().is_none(), "hangs while stalled");
    proxy.release();
    finished(whoami);
}

/// `INCR n` in RESP.
const INCR: &[u8] = b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n";

#[test]
fn fault_proxy_delays_in_order_propagates_eof_and_closes_on_drop() {
    let redis = Redis::start().unwrap();
    let proxy = FaultProxy::start(loopback(redis.port())).unwrap();
    let delay = Duration::from_millis(200);
    proxy.set_delay(delay);

    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let started = Instant::now();
    for _ in 0..5 {
        writer.write_all(INCR).unwrap();
    }
    let replies: Vec<String> = (0..5)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line
        })
        .collect();
    assert_eq!(replies, [":1\r\n", ":2\r\n", ":3\r\n", ":4\r\n", ":5\r\n"]);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());

    // The client's half-close reaches Redis, which closes; that reaches the client.
    writer.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    // Dropping the proxy ends a held connection and closes the listener.
    proxy.set_delay(Duration::ZERO);
    let mut held = TcpStream::connect(proxy.addr()).unwrap();
    held.set_read_timeout(Some(WAIT)).unwrap();
    proxy.stall();
    held.write_all(INCR).unwrap();
    proxy.wait_holding(WAIT).unwrap();
    let addr = proxy.addr();
    assert_eq!(proxy.connections(), 2);
    drop(proxy);
    let mut buf = [0; 16];
    match held.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "EOF, not the held reply"),
        Err(err) => assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}"),
    }
    assert!(TcpStream::connect(addr).is_err(), "listener closed");
    assert_eq!(
        redis.command(&["GET", "n"]).unwrap(),
        Resp::Bulk(Some(b"5".to_vec())),
        "the held INCR never reached Redis"
    );
}

#[test]
fn fault_proxy_holds_smtp_replies_after_the_end_of_data() {
    let smtp = SmtpSink::start().unwrap();
    let proxy = FaultProxy::start(loopback(smtp.port())).unwrap();
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let reply = |reader: &mut BufReader<TcpStream>| loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "connection closed");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line;
        }
    };
    assert!(reply(&mut reader).starts_with("220"));
    for (command, expect) in [
        ("EHLO test.example.org\r\n", "250"),
        ("MAIL FROM:<mfa@example.org>\r\n", "250"),
        ("RCPT TO:<alice@example.org>\r\n", "250"),
        ("DATA\r\n", "354"),
    ] {
        writer.write_all(command.as_bytes()).unwrap();
        let answer = reply(&mut reader);
        assert!(answer.starts_with(expect), "{command:?} got {answer:?}");
    }

    proxy.hold_replies_after(b"\r\n.\r\n");
    writer
        .write_all(b"Subject: held\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    proxy.wait_holding(WAIT).unwrap();
    // The data went through (the sink stores before it answers), the 250 did not.
    assert_eq!(smtp.messages().unwrap().len(), 1);
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut line = String::new();
    let err = reader.read_line(&mut line).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    assert!(line.is_empty(), "{line:?}");

    proxy.release();
    reader.get_ref().set_read_timeout(Some(WAIT)).unwrap();
    assert!(reply(&mut reader).starts_with("250"));
    writer.write_all(b"QUIT\r\n").unwrap();
    assert!(reply(&mut reader).starts_with("221"));
    assert!(!proxy.holding());
}
