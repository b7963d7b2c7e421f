//! `[[policy]]` by group, door and RADIUS client (SPEC §2 "Policy by group", §5, §6),
//! against real slapd (groups through `memberOf`), Redis, `otpgate serve`, radclient,
//! pamtester and sshd with a paramiko client.
//!
//! Deadlines are far in the past (2000-01-01) or the future (2999-01-01), so no case
//! depends on today's date. Codes are computed for the step a case needs.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use otpgate_core::secret::TotpSecret;
use otpgate_radius_proto::{Reply, check_reply};
use otpgate_tests::portal::PortalTls;
use otpgate_tests::{
    APP_CODE, ConfigBuilder, LocalUser, OtpgateServe, PamModule, PamResult, PamStack, Redis, Slapd,
    SmtpSink, Sshd, TestUserSpec, files::random_bytes, pamtester, radius_section, ssh_login,
    write_radius_secret,
};
use serde_json::Value;

use crate::radius::{
    SECRET, access_request, answer, assert_code, assert_generic_reject, code, current_step, enroll,
    json, otpgate, pap, recv, udp,
};

const PORTAL: &str = "https://portal.example.org";

/// The rules of these tests: otp-admins (alice) exempt everywhere; vpn-staff (dave)
/// required through the client `localhost` since 2000-01-01, optional elsewhere on
/// RADIUS; students (bob) required from 2999-01-01; anyone else (alicex) the default
/// (`unenrolled = "reject"`: required, no deadline).
const RADIUS_RULES: &str = "\
[[policy]]
groups = [\"otp-admins\"]
second_factor = \"exempt\"

[[policy]]
groups = [\"cn=VPN-Staff,ou=groups,dc=example,dc=org\"]
clients = [\"localhost\"]
second_factor = \"required\"
enroll_by = \"2000-01-01\"

[[policy]]
groups = [\"vpn-staff\"]
doors = [\"radius\"]
second_factor = \"optional\"

[[policy]]
groups = [\"students\"]
second_factor = \"required\"
enroll_by = \"2999-01-01\"
";

/// A second client, `wifi`, at 127.0.0.2 (the harness's `localhost` is 127.0.0.1).
const WIFI_CLIENT: &str = "[[radius.clients]]\nname = \"wifi\"\naddress = \"127.0.0.2/32\"\nsecret_file = \"radius.secret\"\n";

fn radius_server(
    slapd: &Slapd,
    redis: &Redis,
    smtp: &SmtpSink,
    tls: &PortalTls,
    mode: &str,
) -> (otpgate_tests::TestConfig, OtpgateServe) {
    let config = ConfigBuilder::new(slapd)
        .redis(redis)
        .smtp(smtp)
        .set("totp", "skew_steps", "5")
        .extra(&radius_section(mode, "100ms"))
        .extra(WIFI_CLIENT)
        .extra(&tls.section("otp-admins"))
        .extra(RADIUS_RULES)
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    (config, server)
}

/// One PAP request from 127.0.0.2 (the client `wifi`): the reply.
fn pap_from_wifi(addr: SocketAddr, user: &str, password: &str, id: u8) -> Reply {
    let socket = udp("127.0.0.2");
    let auth = [id; 16];
    socket
        .send_to(&access_request(user, password, id, auth), addr)
        .unwrap();
    let bytes = recv(&socket);
    let secret = otpgate_radius_proto::Secret::new(SECRET.as_bytes().to_vec()).unwrap();
    Reply::from_packet(check_reply(&bytes, id, auth, &secret).unwrap()).unwrap()
}

/// The Reply-Message radclient printed, unquoted.
fn reply_message(reply: &crate::radius::RadReply) -> String {
    reply
        .attributes
        .iter()
        .filter(|(n, _)| n == "Reply-Message")
        .map(|(_, v)| v.trim_matches('"').to_string())
        .collect()
}

fn audit_methods(config: &std::path::Path, user: &str) -> Vec<String> {
    let out = otpgate(config, &["audit", "--user", user, "--json"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{}",
                v["method"].as_str().unwrap(),
                v["result"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn radius_applies_the_policy_by_group_client_and_deadline() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let tls = PortalTls::create().unwrap();
    let (config, server) = radius_server(&slapd, &redis, &smtp, &tls, "auto");
    let (challenge_config, challenge) = radius_server(&slapd, &redis, &smtp, &tls, "challenge");
    std::fs::copy(config.key_file(), challenge_config.key_file()).unwrap();
    let c = config.path();
    let addr = server.radius_addr();
    let base = current_step();
    enroll(c, "alice", base);

    // Exempt: the password alone, though alice has an app; audited as such.
    let exempt = pap(addr, "alice", "alice-pw-1");
    assert_code(&exempt, "Access-Accept");
    assert!(
        audit_methods(c, "alice").contains(&"exempt:accept".to_string()),
        "{:?}",
        audit_methods(c, "alice")
    );

    // Required through `localhost` since 2000-01-01: refused, told where to enroll.
    let refused = pap(addr, "dave", "dave-pw-4");
    assert_code(&refused, "Access-Reject");
    let message = reply_message(&refused);
    assert!(message.contains(PORTAL), "{}", refused.output);
    assert!(
        !message.contains("Authentication failed"),
        "{}",
        refused.output
    );
    // A wrong password still gets the generic message only.
    assert_generic_reject(&pap(addr, "dave", "not-dave-pw"));
    // No rule for alicex: the default (`unenrolled = "reject"`), with the portal named.
    let default = pap(addr, "alicex", "alicex-pw-6");
    assert_code(&default, "Access-Reject");
    assert!(
        reply_message(&default).contains(PORTAL),
        "{}",
        default.output
    );

    // The same user through `wifi`: the optional rule, the password alone.
    match pap_from_wifi(addr, "dave", "dave-pw-4", 7) {
        Reply::Accept { .. } => {}
        other => panic!("dave through wifi: {other:?}"),
    }
    match pap_from_wifi(addr, "dave", "not-dave-pw", 8) {
        Reply::Reject { .. } => {}
        other => panic!("a wrong password through wifi: {other:?}"),
    }

    // Required from 2999-01-01: let in, with a notice naming the portal and the day.
    let notice = pap(addr, "bob", "bob-pw-2");
    assert_code(&notice, "Access-Accept");
    assert_eq!(
        reply_message(&notice),
        format!("Set up your second factor at {PORTAL} before 2999-01-01."),
        "{}",
        notice.output
    );

    // Challenge mode: an Access-Challenge saying where; its answer ends in a reject.
    let told = pap(challenge.radius_addr(), "dave", "dave-pw-4");
    assert_code(&told, "Access-Challenge");
    assert!(reply_message(&told).contains(PORTAL), "{}", told.output);
    let state = told.get("State").unwrap().to_string();
    let after = answer(challenge.radius_addr(), "dave", &state, "123456");
    assert_generic_reject(&after);
    // Before the deadline, challenge mode lets bob in with the notice too.
    let before = pap(challenge.radius_addr(), "bob", "bob-pw-2");
    assert_code(&before, "Access-Accept");
    assert!(
        reply_message(&before).contains("2999-01-01"),
        "{}",
        before.output
    );

    // Status shows the policy per door, and the client that narrows it.
    let status = json(&otpgate(c, &["user", "status", "dave", "--json"]));
    let policy = status["policy"].as_array().unwrap();
    assert!(
        policy.contains(&serde_json::json!({"door": "radius", "second_factor": "optional"})),
        "{status}"
    );
    assert!(
        policy.contains(&serde_json::json!({"door": "radius", "client": "localhost",
            "second_factor": "required", "enroll_by": "2000-01-01", "enroll_at_login": false})),
        "{status}"
    );
    let text = otpgate(c, &["user", "status", "bob"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("radius: required, enroll by 2999-01-01"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}

/// The PAM rules: otp-admins exempt, students required from 2999-01-01, vpn-staff
/// required since 2000-01-01, `pam-enroll` required with enrollment at the login.
const PAM_RULES: &str = "\
[[policy]]
groups = [\"otp-admins\"]
second_factor = \"exempt\"

[[policy]]
groups = [\"students\"]
doors = [\"pam\"]
second_factor = \"required\"
enroll_by = \"2999-01-01\"

[[policy]]
groups = [\"vpn-staff\"]
second_factor = \"required\"
enroll_by = \"2000-01-01\"

[[policy]]
groups = [\"pam-enroll\"]
doors = [\"pam\"]
second_factor = \"required\"
enroll_at_login = true
";

/// Direct mode's config: the full one, 0600, with a `[portal]` (never started) whose
/// URL the texts name.
fn pam_direct_config(slapd: &Slapd, redis: &Redis, smtp: &SmtpSink) -> otpgate_tests::TestConfig {
    let config = ConfigBuilder::new(slapd)
        .redis(redis)
        .smtp(smtp)
        .set("totp", "skew_steps", "5")
        .extra("[pam]\nbackend = \"direct\"\n")
        .extra(&format!(
            "[portal]\nlisten = \"127.0.0.1:9\"\npublic_url = \"{PORTAL}\"\n"
        ))
        .extra(PAM_RULES)
        .write()
        .unwrap();
    std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    config
}

#[test]
fn pam_applies_the_policy_and_enrolls_at_the_first_ssh_login() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = pam_direct_config(&slapd, &redis, &smtp);
    let c = config.path();
    // The policy as status shows it (and the CLI is ready before a step is counted).
    let alice = json(&otpgate(c, &["user", "status", "alice", "--json"]));
    assert!(
        alice["policy"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"door": "pam", "second_factor": "exempt"})),
        "{alice}"
    );
    let base = current_step();
    enroll(c, "alice", base);

    let stack = PamStack::with_module(PamModule::Direct).unwrap();
    let module_config = format!("config={}", c.display());
    stack.service("otp", &module_config).unwrap();
    stack
        .service("pw", &format!("{module_config} mode=password+otp"))
        .unwrap();
    let run = |service: &str, user: &str, answers: &[&str]| {
        pamtester(&stack, service, user, None, answers).unwrap()
    };

    // Exempt: the password alone (password+otp), nothing at all (otp-only).
    let exempt = run("pw", "alice", &["alice-pw-1"]);
    assert_eq!(exempt.result, PamResult::Success, "{}", exempt.output);
    assert_eq!(
        exempt.prompts("One-time password: "),
        0,
        "{}",
        exempt.output
    );
    let vouched = run("otp", "alice", &[]);
    assert_eq!(vouched.result, PamResult::Success, "{}", vouched.output);
    // The password is still checked.
    let wrong = run("pw", "alice", &["not-alice-pw"]);
    assert_eq!(wrong.result, PamResult::AuthErr, "{}", wrong.output);

    // Before the deadline: let in, with the notice.
    let notice = run("pw", "bob", &["bob-pw-2"]);
    assert_eq!(notice.result, PamResult::Success, "{}", notice.output);
    assert!(
        notice.output.contains(&format!(
            "Set up your second factor at {PORTAL} before 2999-01-01."
        )),
        "{}",
        notice.output
    );
    // After it: refused.
    let late = run("pw", "dave", &["dave-pw-4"]);
    assert_eq!(late.result, PamResult::AuthErr, "{}", late.output);
    assert!(
        late.output.contains(&format!(
            "A second factor is required: set it up at {PORTAL}"
        )),
        "{}",
        late.output
    );

    // Enrollment at the first login, over ssh keyboard-interactive.
    stack
        .service("sshd", &format!("{module_config} mode=password+otp"))
        .unwrap();
    enrolls_at_the_first_ssh_login(&slapd, &stack, c, "otpnew");
}

#[test]
fn a_pam_host_in_server_mode_enrolls_at_the_first_ssh_login() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    // The host is a RADIUS client marked `pam_host`: its requests are the door "pam".
    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .smtp(&smtp)
        .set("totp", "skew_steps", "5")
        .extra(&radius_section("auto", "10ms").replace(
            "secret_file = \"radius.secret\"\n",
            "secret_file = \"radius.secret\"\npam_host = true\nreject_reasons = true\n",
        ))
        .extra(&format!(
            "[portal]\nlisten = \"127.0.0.1:9\"\npublic_url = \"{PORTAL}\"\n"
        ))
        .extra(PAM_RULES)
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    let host = tempfile::tempdir().unwrap();
    let module_config =
        crate::pam::write_server_pam_config(host.path(), &[server.radius_addr().to_string()], "5s");
    let stack = PamStack::with_module(PamModule::Server).unwrap();
    stack
        .service(
            "sshd",
            &format!("config={} mode=password+otp", module_config.display()),
        )
        .unwrap();

    enrolls_at_the_first_ssh_login(&slapd, &stack, config.path(), "otpsrv");
}

/// A user of the group `pam-enroll` with no factor logs in over ssh (`stack`'s sshd
/// service): shown the QR code and the secret, answers with a code from it, is enrolled
/// (`app-enrolled`, `enroll-confirm` audited in `config`'s store); then logs in with the
/// app like anyone, and a wrong code is refused.
fn enrolls_at_the_first_ssh_login(
    slapd: &Slapd,
    stack: &PamStack,
    config: &std::path::Path,
    prefix: &str,
) {
    let suffix: String = random_bytes(3)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = format!("{prefix}{suffix}");
    let password = "new-user-pw-8";
    slapd
        .add_user(&TestUserSpec {
            uid: &name,
            password,
            mail: None,
            groups: &["pam-enroll"],
            activated: true,
        })
        .unwrap();
    let user = LocalUser::create(&name).unwrap();
    let sshd = Sshd::start(stack).unwrap();
    let first = ssh_login(sshd.port(), user.name(), &[password, APP_CODE]).unwrap();
    assert!(first.ok, "{}\n{}", first.output, sshd.log());
    assert_eq!(first.prompts.len(), 2, "{}", first.output);
    let shown = format!("{}{}", first.infos.join("\n"), first.prompts[1]);
    assert!(
        shown.contains('▀') || shown.contains('▄'),
        "no QR code: {shown}"
    );
    assert!(shown.contains("recovery needs the helpdesk"), "{shown}");
    let secret_text = shown
        .split("Secret: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let status = json(&otpgate(config, &["user", "status", &name, "--json"]));
    assert_eq!(status["state"], "app-enrolled", "{status}");
    assert!(
        audit_methods(config, &name).contains(&"enroll-confirm:ok".to_string()),
        "{:?}",
        audit_methods(config, &name)
    );

    // Then an ordinary login with a code from the app: no QR code any more.
    let secret = TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(secret_text.as_bytes())
            .unwrap(),
    );
    let next = code(&secret, current_step() + 1);
    let second = ssh_login(sshd.port(), user.name(), &[password, &next]).unwrap();
    assert!(second.ok, "{}\n{}", second.output, sshd.log());
    assert_eq!(second.prompts, ["Password: ", "One-time password: "]);
    assert!(!second.output.contains("Secret: "), "{}", second.output);
    // A wrong code is still refused.
    let bad = ssh_login(sshd.port(), user.name(), &[password, "000000"]).unwrap();
    assert!(!bad.ok, "{}", bad.output);
}
