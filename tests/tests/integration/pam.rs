//! `pam_otpgate.so` (SPEC §6) loaded by `pamtester` under pam_wrapper, in both modes,
//! against real slapd, Redis and an SMTP sink (and a real `otpgate serve` in server
//! mode). Codes are computed for steps relative to the test's start, as in
//! `radius.rs`: enrollment is confirmed with `base - 1`, each later login uses the
//! next step, and the config accepts ±5 steps.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use otpgate_tests::{
    ConfigBuilder, OtpgateServe, PamModule, PamResult, PamStack, Redis, Slapd, SmtpSink,
    TestConfig, free_udp_port, pamtester, security_module, spawn_pamtester, wait_until,
    write_radius_secret,
};

use crate::radius::{SECRET, code, current_step, enroll, json, otpgate};

const OTP_PROMPT: &str = "One-time password: ";
const PASSWORD_PROMPT: &str = "Password: ";
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const LOCKOUT: &str = "[lockout]\nmax_failures = 4\nlock_for = \"15m\"\n";

/// Servers, the config the CLI uses, and the module's config.
pub struct Env {
    pub slapd: Slapd,
    pub redis: Redis,
    pub smtp: SmtpSink,
    /// The full configuration (the server's in server mode; the module's in direct mode).
    pub config: TestConfig,
    /// Server mode: the server whose client entry vouches for the password (otp-only
    /// hosts), then one whose entry does not (password+otp hosts). One entry per
    /// address, so two servers.
    pub servers: Vec<OtpgateServe>,
    /// The second server's config.
    _other_config: Option<TestConfig>,
    /// What `config=` names for otp-only services.
    pub pam_config: PathBuf,
    /// What `config=` names for the password+otp service.
    pub pw_config: PathBuf,
    /// Holds the module's configs in server mode.
    _pam_dir: Option<tempfile::TempDir>,
    pub base: u64,
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `[[radius.clients]]` for this host with `options`, and the server sections.
fn server_sections(options: &str) -> String {
    format!(
        "[radius]\nlisten = [\"127.0.0.1:0\"]\nmode = \"auto\"\nreject_delay = \"10ms\"\n\
         request_timeout = \"5s\"\n\n\
         [[radius.clients]]\nname = \"pam-host\"\naddress = \"127.0.0.1/32\"\n\
         secret_file = \"radius.secret\"\nreject_reasons = true\n{options}\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// A host's `[pam]` for server mode: only the servers and the secret.
pub fn write_server_pam_config(dir: &Path, servers: &[String], timeout: &str) -> PathBuf {
    let secret = dir.join("pam-radius.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    chmod(&secret, 0o600);
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let path = dir.join("pam.toml");
    std::fs::write(
        &path,
        format!(
            "[pam]\nbackend = \"server\"\nservers = [{}]\nsecret_file = \"pam-radius.secret\"\n\
             timeout = \"{timeout}\"\nretries = 1\nremember_for = \"7d\"\n",
            servers.join(", ")
        ),
    )
    .unwrap();
    chmod(&path, 0o644);
    path
}

/// An `otpgate serve` config on the harness's servers with this host's client entry
/// `options`.
fn server_config(slapd: &Slapd, redis: &Redis, smtp: &SmtpSink, options: &str) -> TestConfig {
    let config = ConfigBuilder::new(slapd)
        .redis(redis)
        .smtp(smtp)
        .set("totp", "skew_steps", "5")
        .extra(LOCKOUT)
        .extra(&server_sections(options))
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    config
}

/// Server mode: two `otpgate serve` on one Redis and one master key (see
/// [`Env::servers`]), both trusting hosts by Calling-Station-Id.
pub fn server_env() -> Env {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let vouching = server_config(
        &slapd,
        &redis,
        &smtp,
        "password_checked_by_client = true\ntrust_calling_station = true",
    );
    let checking = server_config(&slapd, &redis, &smtp, "trust_calling_station = true");
    std::fs::copy(vouching.key_file(), checking.key_file()).unwrap();
    let servers = vec![
        OtpgateServe::start(vouching.path()).unwrap(),
        OtpgateServe::start(checking.path()).unwrap(),
    ];
    let pam_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(pam_dir.path().join("pw")).unwrap();
    let pam_config = write_server_pam_config(
        pam_dir.path(),
        &[servers[0].radius_addr().to_string()],
        "2s",
    );
    let pw_config = write_server_pam_config(
        &pam_dir.path().join("pw"),
        &[servers[1].radius_addr().to_string()],
        "2s",
    );
    Env {
        slapd,
        redis,
        smtp,
        config: vouching,
        _other_config: Some(checking),
        servers,
        pam_config,
        pw_config,
        _pam_dir: Some(pam_dir),
        base: current_step(),
    }
}

/// Direct mode: the module's config is the full one, mode 0600.
pub fn direct_env() -> Env {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .smtp(&smtp)
        .set("totp", "skew_steps", "5")
        .extra(LOCKOUT)
        .extra("[pam]\nbackend = \"direct\"\nremember_for = \"7d\"\n")
        .write()
        .unwrap();
    chmod(config.path(), 0o600);
    let pam_config = config.path().to_path_buf();
    Env {
        slapd,
        redis,
        smtp,
        config,
        servers: Vec::new(),
        _other_config: None,
        pw_config: pam_config.clone(),
        pam_config,
        _pam_dir: None,
        base: current_step(),
    }
}

impl Env {
    /// A stack with services `otp` (otp-only), `pw` (password+otp, remember),
    /// `remember` (otp-only, remember), and `passon` / `passon-deny`: the packaged
    /// profile's `[success=done ignore=ignore default=die] … nullok ignore_unknown_user`
    /// followed by pam_permit (the rest of the stack lets in) or pam_deny (it does not:
    /// so a PAM_IGNORE shows as a refusal, a PAM_SUCCESS as a success).
    pub fn stack(&self) -> PamStack {
        let module = if self.servers.is_empty() {
            PamModule::Direct
        } else {
            PamModule::Server
        };
        let stack = PamStack::with_module(module).unwrap();
        let config = format!("config={}", self.pam_config.display());
        stack.service("otp", &config).unwrap();
        for (name, then) in [("passon", "pam_permit.so"), ("passon-deny", "pam_deny.so")] {
            stack
                .service_with_control(
                    name,
                    "[success=done ignore=ignore default=die]",
                    &format!("{config} nullok ignore_unknown_user"),
                    &format!("auth required {}\n", security_module(then)),
                )
                .unwrap();
        }
        stack
            .service(
                "pw",
                &format!(
                    "config={} mode=password+otp remember",
                    self.pw_config.display()
                ),
            )
            .unwrap();
        stack
            .service("remember", &format!("{config} remember"))
            .unwrap();
        stack
    }

    /// Registers and confirms `address` as `user`'s notification address.
    fn register_address(&self, user: &str, address: &str) {
        let c = self.config.path();
        json(&otpgate(
            c,
            &["user", "email", "set", user, address, "--json"],
        ));
        let mails = self.smtp.mails_to(address).unwrap();
        let confirm = mails.last().unwrap().code(8).unwrap();
        json(&otpgate(
            c,
            &["user", "email", "confirm", user, &confirm, "--json"],
        ));
    }

    /// The newest 8-digit code mailed to `address` other than those in `seen`.
    fn new_mailed_code(&self, address: &str, seen: &[String]) -> String {
        let mut found = None;
        assert!(
            wait_until(WAIT, || {
                found = self
                    .smtp
                    .mails_to(address)
                    .unwrap()
                    .iter()
                    .filter_map(|m| m.code(8))
                    .find(|c| !seen.contains(c));
                found.is_some()
            }),
            "no code mailed to {address}"
        );
        found.unwrap()
    }
}

/// Everything SPEC §6 asks of both modes, in one sequence on one environment.
fn the_login_rules(e: &mut Env) {
    let stack = e.stack();
    let secret = enroll(e.config.path(), "alice", e.base);
    let run = |service: &str, user: &str, answers: &[&str]| {
        pamtester(&stack, service, user, None, answers).unwrap()
    };

    // Right code: one prompt, success.
    let right = code(&secret, e.base);
    let ok = run("otp", "alice", &[&right]);
    assert_eq!(ok.result, PamResult::Success, "{}", ok.output);
    assert_eq!(ok.prompts(OTP_PROMPT), 1, "{}", ok.output);

    // The same code again: a replay.
    let replay = run("otp", "alice", &[&right]);
    assert_eq!(replay.result, PamResult::AuthErr, "{}", replay.output);

    // A wrong code.
    let wrong = run("otp", "alice", &["000000"]);
    assert_eq!(wrong.result, PamResult::AuthErr, "{}", wrong.output);

    // Unknown user.
    let unknown = run("otp", "nosuchuser", &["123456"]);
    assert_eq!(unknown.result, PamResult::UserUnknown, "{}", unknown.output);

    // nullok: bob has no second factor at all.
    let without = run("otp", "bob", &[]);
    assert_eq!(without.result, PamResult::AuthErr, "{}", without.output);
    assert_eq!(without.prompts(OTP_PROMPT), 0, "{}", without.output);
    // nullok and ignore_unknown_user pass bob and an unknown user on (PAM_IGNORE),
    // unasked: the rest of the stack decides, so pam_permit lets them in and pam_deny
    // does not (a PAM_SUCCESS would have ended the stack before pam_deny).
    for user in ["bob", "nosuchuser"] {
        let on = run("passon", user, &[]);
        assert_eq!(on.result, PamResult::Success, "{user}: {}", on.output);
        assert_eq!(on.prompts(OTP_PROMPT), 0, "{user}: {}", on.output);
        let denied = run("passon-deny", user, &[]);
        assert_eq!(
            denied.result,
            PamResult::AuthErr,
            "{user}: {}",
            denied.output
        );
        assert_eq!(denied.prompts(OTP_PROMPT), 0, "{user}: {}", denied.output);
    }
    // A user the directory knows is still asked, and a wrong code ends the stack
    // (default=die) before pam_permit.
    let enrolled = run("passon", "alice", &["999999"]);
    assert_eq!(enrolled.result, PamResult::AuthErr, "{}", enrolled.output);
    assert_eq!(enrolled.prompts(OTP_PROMPT), 1, "{}", enrolled.output);

    // The email keyword round: dave has an address and no app.
    e.register_address("dave", "dave.private@example.org");
    let seen: Vec<String> = e
        .smtp
        .mails_to("dave.private@example.org")
        .unwrap()
        .iter()
        .filter_map(|m| m.code(8))
        .collect();
    let mut session = spawn_pamtester(&stack, "otp", "dave", None).unwrap();
    session.answer("email").unwrap();
    let mailed = e.new_mailed_code("dave.private@example.org", &seen);
    session.answer(&mailed).unwrap();
    let round = session.finish().unwrap();
    assert_eq!(round.result, PamResult::Success, "{}", round.output);
    assert_eq!(round.prompts(OTP_PROMPT), 2, "{}", round.output);
    assert!(
        round.output.contains("d***@example.org"),
        "{}",
        round.output
    );
    // The mailed code is usable once.
    let again = run("otp", "dave", &[&mailed]);
    assert_eq!(again.result, PamResult::AuthErr, "{}", again.output);

    // password+otp with remember: the first login from a host needs the code, the
    // second from the same host does not; another host still does.
    let host = Some("192.0.2.7");
    let pw = pamtester(&stack, "pw", "dave", host, &["wrong-password", "12345678"]).unwrap();
    assert_eq!(pw.result, PamResult::AuthErr, "{}", pw.output);
    assert_eq!(pw.prompts(OTP_PROMPT), 0, "{}", pw.output);
    let c1 = code(&secret, e.base + 1);
    let first = pamtester(&stack, "pw", "alice", host, &["alice-pw-1", &c1]).unwrap();
    assert_eq!(first.result, PamResult::Success, "{}", first.output);
    assert_eq!(first.prompts(PASSWORD_PROMPT), 1, "{}", first.output);
    assert_eq!(first.prompts(OTP_PROMPT), 1, "{}", first.output);
    let second = pamtester(&stack, "pw", "alice", host, &["alice-pw-1"]).unwrap();
    assert_eq!(second.result, PamResult::Success, "{}", second.output);
    assert_eq!(second.prompts(OTP_PROMPT), 0, "{}", second.output);
    let other = pamtester(
        &stack,
        "pw",
        "alice",
        Some("192.0.2.8"),
        &["alice-pw-1", "000000"],
    )
    .unwrap();
    assert_eq!(other.result, PamResult::AuthErr, "{}", other.output);
    assert_eq!(other.prompts(OTP_PROMPT), 1, "{}", other.output);

    // Lockout (max_failures = 4): the success above reset the count; the other
    // host's wrong code was the first failure, two more are refused, the fourth locks.
    for wrong in ["111111", "222222"] {
        let r = run("otp", "alice", &[wrong]);
        assert_eq!(r.result, PamResult::AuthErr, "{}", r.output);
    }
    let locked = run("otp", "alice", &["333333"]);
    assert_eq!(locked.result, PamResult::MaxTries, "{}", locked.output);
    // Locked: no prompt at all, even with a right code, and a trusted host does not
    // skip the lock.
    let still = run("otp", "alice", &[&code(&secret, e.base + 2)]);
    assert_eq!(still.result, PamResult::MaxTries, "{}", still.output);
    assert_eq!(still.prompts(OTP_PROMPT), 0, "{}", still.output);
    let trusted = pamtester(&stack, "pw", "alice", host, &["alice-pw-1"]).unwrap();
    assert_eq!(trusted.result, PamResult::MaxTries, "{}", trusted.output);

    // The trusted host is listed (and so revocable) with the CLI.
    let list = json(&otpgate(
        e.config.path(),
        &["user", "trusted", "list", "alice", "--json"],
    ));
    assert!(list.to_string().contains("192.0.2.7"), "{list}");

    // Redis down: fail closed.
    e.redis.stop();
    let down = run("otp", "dave", &["12345678"]);
    assert_eq!(down.result, PamResult::AuthInfoUnavail, "{}", down.output);
    let down = pamtester(&stack, "pw", "dave", None, &["dave-pw-4", "12345678"]).unwrap();
    assert_eq!(down.result, PamResult::AuthInfoUnavail, "{}", down.output);
}

#[test]
fn server_mode_follows_the_login_rules() {
    let mut e = server_env();
    the_login_rules(&mut e);
}

#[test]
fn direct_mode_follows_the_login_rules() {
    let mut e = direct_env();
    the_login_rules(&mut e);
}

#[test]
fn server_mode_fails_over_and_fails_closed() {
    let e = server_env();
    let secret = enroll(e.config.path(), "alice", e.base);
    let dead = format!("127.0.0.1:{}", free_udp_port().unwrap());
    let real = e.servers[0].radius_addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let stack = PamStack::new().unwrap();

    let failover = write_server_pam_config(dir.path(), &[dead.clone(), real], "300ms");
    stack
        .service("failover", &format!("config={}", failover.display()))
        .unwrap();
    let run = pamtester(&stack, "failover", "alice", None, &[&code(&secret, e.base)]).unwrap();
    assert_eq!(run.result, PamResult::Success, "{}", run.output);

    let down_dir = tempfile::tempdir().unwrap();
    let down = write_server_pam_config(down_dir.path(), &[dead], "300ms");
    stack
        .service("down", &format!("config={}", down.display()))
        .unwrap();
    let run = pamtester(&stack, "down", "alice", None, &["123456"]).unwrap();
    assert_eq!(run.result, PamResult::AuthInfoUnavail, "{}", run.output);

    // A config that others may write, or that is missing, is refused.
    chmod(&failover, 0o666);
    let run = pamtester(&stack, "failover", "alice", None, &["123456"]).unwrap();
    assert_eq!(run.result, PamResult::AuthInfoUnavail, "{}", run.output);
    stack
        .service("missing", "config=/nonexistent/otpgate.toml")
        .unwrap();
    let run = pamtester(&stack, "missing", "alice", None, &["123456"]).unwrap();
    assert_eq!(run.result, PamResult::AuthInfoUnavail, "{}", run.output);

    // An unknown argument is a service error, not ignored.
    stack
        .service("typo", &format!("config={} nulok", down.display()))
        .unwrap();
    let run = pamtester(&stack, "typo", "alice", None, &["123456"]).unwrap();
    assert_eq!(run.result, PamResult::ServiceErr, "{}", run.output);
}

#[test]
fn direct_mode_refuses_a_config_others_can_read() {
    let e = direct_env();
    chmod(e.config.path(), 0o644);
    let stack = e.stack();
    let run = pamtester(&stack, "otp", "alice", None, &["123456"]).unwrap();
    assert_eq!(run.result, PamResult::AuthInfoUnavail, "{}", run.output);
    assert_eq!(run.prompts(OTP_PROMPT), 0, "{}", run.output);
}
