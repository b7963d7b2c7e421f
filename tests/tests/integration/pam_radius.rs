//! Debian 12's `pam_radius_auth` (2.0.0, which sends no Message-Authenticator) against
//! a real `otpgate serve`, set up with the README's blocks as written: with the client
//! entry's default (a Message-Authenticator required) every login is dropped, and the
//! server names the client in a warning; with the README's setting, password+code
//! (append mode) logs in and a wrong code is refused.

use std::time::Duration;

use otpgate_tests::{
    ConfigBuilder, OtpgateServe, PamResult, PamStack, Redis, Slapd, pam_radius_auth_module,
    pamtester, readme_block, substitute, toml_string, wait_until,
};

use crate::radius::{code, current_step, enroll};

const SECRET: &str = "a-long-shared-secret-for-linux-hosts";

#[test]
fn pam_radius_auth_is_dropped_with_a_warning_then_logs_in_as_the_readme_says() {
    let module = pam_radius_auth_module().unwrap();
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("radius-linux-hosts.secret");
    write_0600(&secret_file, &format!("{SECRET}\n"));

    // otpgate's side, from the README, on a loopback port; first without the line that
    // turns the requirement off, i.e. with the default client settings.
    let as_written = substitute(
        &readme_block("pam-radius-auth-client").unwrap(),
        &[
            ("[radius]\n", "[radius]\nlisten = [\"127.0.0.1:0\"]\n"),
            ("\"192.0.2.0/24\"", "\"127.0.0.1/32\""),
            (
                "\"/etc/otpgate/radius-linux-hosts.secret\"",
                &toml_string(&secret_file.to_string_lossy()),
            ),
        ],
    )
    .unwrap();
    let setting = as_written
        .lines()
        .find(|l| l.starts_with("require_message_authenticator = false"))
        .expect("the README block turns the requirement off");
    let by_default = as_written.replace(&format!("{setting}\n"), "");
    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .set("totp", "skew_steps", "5")
        .extra(&by_default)
        .extra("[metrics]\nlisten = \"127.0.0.1:0\"\n")
        .write()
        .unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    let base = current_step();
    let secret = enroll(config.path(), "alice", base);

    // The host's side, from the README.
    let conf = dir.path().join("pam_radius_auth.conf");
    let server_addr = server.radius_addr().to_string();
    write_0600(
        &conf,
        &substitute(
            &readme_block("pam-radius-auth-conf").unwrap(),
            &[
                ("192.0.2.10:1812", server_addr.as_str()),
                ("the-shared-secret", SECRET),
            ],
        )
        .unwrap(),
    );
    let module_path = module.to_string_lossy();
    let conf_path = conf.to_string_lossy();
    let stack = PamStack::new().unwrap();
    stack
        .service_with_auth(
            "radius",
            &substitute(
                &readme_block("pam-radius-auth-pam").unwrap(),
                &[
                    (" pam_radius_auth.so ", &format!(" {module_path} ")),
                    ("/etc/pam_radius_auth.conf", &conf_path),
                ],
            )
            .unwrap(),
        )
        .unwrap();
    let login = |answer: &str| pamtester(&stack, "radius", "alice", None, &[answer]).unwrap();

    // Default settings: pam_radius_auth sends no Message-Authenticator, every request
    // is dropped, the user sees a timeout, and the operator sees why.
    let dropped = login(&format!("alice-pw-1{}", code(&secret, base)));
    assert_eq!(
        dropped.result,
        PamResult::AuthInfoUnavail,
        "{}",
        dropped.output
    );
    let warned = wait_until(Duration::from_secs(10), || {
        server
            .log()
            .contains("dropped a request from client `linux-hosts` without Message-Authenticator")
    });
    let log = server.log();
    assert!(warned, "no warning naming the client:\n{log}");
    assert!(
        log.contains("set `require_message_authenticator = false` in its [[radius.clients]] entry")
            && log.contains("BlastRADIUS"),
        "the warning says what to set and what it costs:\n{log}"
    );
    assert_eq!(
        log.matches("without Message-Authenticator").count(),
        1,
        "one warning a minute per client, however many retransmissions:\n{log}"
    );
    assert!(
        server.metric("otpgate_radius_dropped_total{reason=\"message_authenticator_missing\"}")
            >= 1.0,
        "every drop is counted"
    );

    // As the README says: the setting for this client, then a reload.
    let text = config.contents().unwrap();
    assert!(text.contains(&by_default));
    std::fs::write(config.path(), text.replace(&by_default, &as_written)).unwrap();
    server.signal("HUP").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log()
            .contains("reloaded radius clients: 1")),
        "{}",
        server.log()
    );

    let accepted = login(&format!("alice-pw-1{}", code(&secret, base + 1)));
    assert_eq!(
        accepted.result,
        PamResult::Success,
        "{}\n{}",
        accepted.output,
        server.log()
    );

    let window: Vec<String> = (base - 6..=base + 6).map(|s| code(&secret, s)).collect();
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !window.contains(c))
        .unwrap();
    let refused = login(&format!("alice-pw-1{wrong}"));
    assert_eq!(refused.result, PamResult::AuthErr, "{}", refused.output);
}

fn write_0600(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
