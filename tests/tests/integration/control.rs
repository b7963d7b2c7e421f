//! The CLI beside a running `otpgate serve` on the embedded store, through the control
//! socket: the store file is held by the server, so every command that works here
//! went through the socket. A peer that is neither root nor in the socket's group is
//! refused.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use otpgate_tests::{
    ALICE, ConfigBuilder, OtpgateServe, Slapd, otpgate_binary, radius_section, require_binary,
    write_radius_secret,
};
use serde_json::Value;

use crate::radius::{SECRET, code, current_step, json, otpgate, radclient};

fn refused(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn admin_commands_work_while_serve_holds_the_embedded_store() {
    let slapd = Slapd::start().unwrap();
    let config = ConfigBuilder::new(&slapd)
        .set("totp", "skew_steps", "5")
        .extra(&radius_section("append", "10ms"))
        .extra("[control]\nsocket = \"control.sock\"\n")
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    let socket = config.dir().join("control.sock");
    assert!(
        server
            .log()
            .contains(&format!("listening on control unix {}", socket.display())),
        "{}",
        server.log()
    );
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the socket is owner and group only");

    // Without the socket the CLI would open the store file, which the server holds.
    let base = current_step();
    let enrolled = json(&otpgate(
        config.path(),
        &["user", "enroll", "alice", "--json"],
    ));
    let secret = otpgate_core::secret::TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(enrolled["secret"].as_str().unwrap().as_bytes())
            .unwrap(),
    );
    assert!(
        enrolled["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let confirmed = json(&otpgate(
        config.path(),
        &[
            "user",
            "confirm",
            "alice",
            &code(&secret, base - 1),
            "--json",
        ],
    ));
    assert_eq!(confirmed["state"], "app-enrolled");

    // A wrong code over RADIUS counts a failure; status shows it, unlock clears it.
    let login = |otp: &str| {
        radclient(
            server.radius_addr(),
            SECRET,
            &format!(
                "User-Name = alice\nUser-Password = \"{}{otp}\"",
                ALICE.password
            ),
            true,
            5,
        )
    };
    let window: Vec<String> = (base - 6..=base + 6).map(|s| code(&secret, s)).collect();
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !window.contains(c))
        .unwrap();
    assert_eq!(login(&wrong).code.as_deref(), Some("Access-Reject"));
    let status = json(&otpgate(
        config.path(),
        &["user", "status", "alice", "--json"],
    ));
    assert_eq!(status["state"], "app-enrolled", "{status}");
    assert_eq!(status["failures"], 1, "{status}");
    let human = otpgate(config.path(), &["user", "status", "alice"]);
    assert!(human.status.success());
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("failures:             1"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );
    let unlocked = json(&otpgate(
        config.path(),
        &["user", "unlock", "alice", "--json"],
    ));
    assert_eq!(
        unlocked,
        serde_json::json!({"user": "alice", "locked": false})
    );
    let status = json(&otpgate(
        config.path(),
        &["user", "status", "alice", "--json"],
    ));
    assert_eq!(status["failures"], 0, "{status}");

    // The enrolled secret logs in over RADIUS while the CLI shares the server.
    let accepted = login(&code(&secret, base));
    assert_eq!(
        accepted.code.as_deref(),
        Some("Access-Accept"),
        "{}",
        accepted.output
    );

    // Refusals keep their exit code and message through the socket.
    let unknown = refused(&otpgate(config.path(), &["user", "status", "nobody-here"]));
    assert!(unknown.contains("unknown user"), "{unknown}");

    // The audit trail names the operator by the peer's account.
    let audit = otpgate(config.path(), &["audit", "--user", "alice", "--json"]);
    assert!(audit.status.success());
    let records: Vec<Value> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let unlock = records
        .iter()
        .find(|r| r["method"] == "unlock")
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(unlock["door"], "cli");
    assert!(
        unlock["client"].as_str().unwrap().contains("root"),
        "{unlock}"
    );
}

#[test]
fn a_peer_neither_root_nor_in_the_group_is_refused() {
    let setpriv = require_binary("setpriv", &["util-linux"]).unwrap();
    let slapd = Slapd::start().unwrap();
    let config = ConfigBuilder::new(&slapd)
        .extra(&radius_section("append", "10ms"))
        .extra("[control]\nsocket = \"control.sock\"\n")
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    // The operator may read the configuration (as group otpgate may when packaged),
    // never the secrets beside it (0600).
    std::fs::set_permissions(config.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(config.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    // The binary where `nobody` may run it.
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = bin_dir.path().join("otpgate");
    std::fs::copy(otpgate_binary().unwrap(), &binary).unwrap();
    let as_nobody = || {
        Command::new(&setpriv)
            .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
            .arg(&binary)
            .arg("--config")
            .arg(config.path())
            .args(["user", "status", "alice"])
            .env_remove("OTPGATE_CONFIG")
            .output()
            .unwrap()
    };

    // The socket's mode keeps nobody out; the CLI says so and does not fall back to
    // the store (whose secrets nobody cannot read anyway).
    let message = refused(&as_nobody());
    assert!(
        message.contains("is not yours to use: run otpgate as root or as a member of group root"),
        "{message}"
    );

    // Even through a socket whose mode lets everyone connect, the server checks the
    // peer's credentials.
    let socket = config.dir().join("control.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let message = refused(&as_nobody());
    assert!(
        message.contains(
            "the control socket refuses uid 65534: run otpgate as root or as a member of group root"
        ),
        "{message}"
    );
    assert!(
        server.log().contains("control: refused a peer"),
        "{}",
        server.log()
    );
}

#[test]
fn a_socket_path_that_names_another_file_stops_the_server_and_keeps_the_file() {
    let slapd = Slapd::start().unwrap();
    let config = ConfigBuilder::new(&slapd)
        .extra(&radius_section("append", "10ms"))
        .extra("[control]\nsocket = \"otpgate.toml\"\n")
        .write()
        .unwrap();
    write_radius_secret(config.dir(), SECRET).unwrap();
    let before = config.contents().unwrap();
    let out = Command::new(otpgate_binary().unwrap())
        .arg("--config")
        .arg(config.path())
        .arg("serve")
        .env_remove("OTPGATE_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exists and is not a socket"), "{stderr}");
    assert_eq!(config.contents().unwrap(), before, "the file is untouched");
}
