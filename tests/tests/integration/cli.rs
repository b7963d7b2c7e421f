//! The `otpgate` command line (SPEC §3) against real slapd, Redis and an SMTP sink: the
//! JSON it prints and its exit codes (0 done, 1 refused, 2 usage or configuration).

use std::path::Path;
use std::process::{Command, Output};

use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::otp::totp::{self, TotpParams};
use otpgate_core::secret::TotpSecret;
use otpgate_tests::{ConfigBuilder, Redis, Slapd, SmtpSink, otpgate_binary};
use serde_json::Value;

fn otpgate(config: &Path, args: &[&str]) -> Output {
    Command::new(otpgate_binary().unwrap())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("OTPGATE_CONFIG")
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn refused(out: &Output, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{stderr:?} should say {needle:?}");
}

/// The code for now on the wall clock: the binary reads the real clock, and the ±1
/// step window covers a step boundary between here and there.
fn code_now(secret_b32: &str) -> String {
    let secret = TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(secret_b32.as_bytes())
            .unwrap(),
    );
    let params = TotpParams {
        digits: 6,
        period: 30,
        skew_steps: 1,
        algorithm: otpgate_config::TotpAlgorithm::Sha1,
    };
    totp::code_at(&secret, SystemClock.now(), &params)
}

#[test]
fn enroll_confirm_status_and_audit_as_json() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .smtp(&smtp)
        .write()
        .unwrap();
    let c = config.path();
    let png = config.dir().join("alice.png");

    let enrolled = json(&otpgate(
        c,
        &[
            "user",
            "enroll",
            "alice",
            "--qr",
            png.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(enrolled["user"], "alice");
    let secret = enrolled["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 32, "160 bits in base32");
    assert!(
        enrolled["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    let status = json(&otpgate(c, &["user", "status", "alice", "--json"]));
    assert_eq!(status["state"], "app-pending");
    assert_eq!(status["locked"], false);
    assert_eq!(status["notification_address"], Value::Null);

    refused(
        &otpgate(c, &["user", "confirm", "alice", "abcdef"]),
        "wrong code",
    );
    let confirmed = json(&otpgate(
        c,
        &["--json", "user", "confirm", "alice", &code_now(secret)],
    ));
    assert_eq!(confirmed["state"], "app-enrolled");
    assert_eq!(
        json(&otpgate(c, &["user", "status", "alice", "--json"]))["state"],
        "app-enrolled"
    );
    refused(
        &otpgate(c, &["user", "enroll", "alice"]),
        "already enrolled",
    );

    let audit = otpgate(c, &["audit", "--user", "alice", "--json"]);
    assert!(audit.status.success());
    let methods: Vec<String> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["method"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        methods.contains(&"enroll".to_string()) && methods.contains(&"enroll-confirm".to_string()),
        "{methods:?}"
    );

    let human = otpgate(c, &["user", "status", "alice"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("app-enrolled"));
}

#[test]
fn helpdesk_queue_and_issue() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let config = ConfigBuilder::new(&slapd).redis(&redis).write().unwrap();
    let c = config.path();
    assert_eq!(
        json(&otpgate(c, &["helpdesk", "list", "--json"]))["requests"],
        serde_json::json!([])
    );
    let issued = json(&otpgate(c, &["helpdesk", "issue", "bob", "--json"]));
    assert_eq!(issued["user"], "bob");
    let otp = issued["otp"].as_str().unwrap();
    assert!(
        otp.len() == 8 && otp.bytes().all(|b| b.is_ascii_digit()),
        "{otp}"
    );
    assert!(issued["expires_at"].as_str().unwrap().ends_with('Z'));
    refused(
        &otpgate(c, &["helpdesk", "issue", "carol"]),
        "not activated",
    );
}

#[test]
fn refusals_exit_1_and_usage_or_config_errors_exit_2() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let config = ConfigBuilder::new(&slapd).redis(&redis).write().unwrap();
    let c = config.path();
    refused(
        &otpgate(c, &["user", "status", "nosuchuser"]),
        "unknown user",
    );
    refused(
        &otpgate(c, &["user", "status", "bad\u{1}name"]),
        "control character",
    );
    refused(
        &otpgate(c, &["user", "trusted", "revoke", "alice", "ffff"]),
        "no such trusted device",
    );
    assert_eq!(
        json(&otpgate(c, &["user", "unlock", "alice", "--json"]))["locked"],
        false
    );

    assert_eq!(otpgate(c, &["user", "frobnicate"]).status.code(), Some(2));
    let valid = otpgate(c, &["check-config"]);
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stderr)
    );

    let broken = config.dir().join("broken.toml");
    std::fs::write(&broken, "[totp]\ndigits = 6\nperiode = \"30s\"\n").unwrap();
    let out = otpgate(&broken, &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3", broken.display())) && stderr.contains("periode"),
        "{stderr}"
    );

    let missing = otpgate(
        &config.dir().join("nope.toml"),
        &["user", "status", "alice"],
    );
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn a_backend_that_is_down_is_a_clear_refusal_not_a_success() {
    let mut slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let config = ConfigBuilder::new(&slapd).redis(&redis).write().unwrap();
    slapd.stop();
    let out = otpgate(config.path(), &["user", "enroll", "alice", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no secret printed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("directory"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the child on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `otpgate demo` runs with nothing but itself, and the login it prints works over
/// RADIUS with FreeRADIUS's radtest — once; the same code again is a replay.
#[test]
fn the_demo_serves_a_working_radius_login() {
    use std::io::BufRead;
    let radtest = otpgate_tests::require_binary("radtest", &["freeradius-utils"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Child(
        Command::new(otpgate_binary().unwrap())
            .args([
                "demo",
                "--radius-port",
                "0",
                "--portal-port",
                "0",
                "--json",
                "--dir",
            ])
            .arg(dir.path().join("demo"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let code = code_now(info["secret"].as_str().unwrap());
    let login = || {
        Command::new(&radtest)
            .args([
                info["user"].as_str().unwrap(),
                &format!("{}{code}", info["password"].as_str().unwrap()),
                info["radius"].as_str().unwrap(),
                "0",
                info["radius_secret"].as_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let first = String::from_utf8_lossy(&login().stdout).into_owned();
    assert!(first.contains("Received Access-Accept"), "{first}");
    assert!(
        first.contains("Filter-Id = \"staff\""),
        "reply attributes by group: {first}"
    );
    let again = String::from_utf8_lossy(&login().stdout).into_owned();
    assert!(
        again.contains("Received Access-Reject"),
        "a replayed code is refused: {again}"
    );
}
