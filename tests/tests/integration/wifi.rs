//! The Wi-Fi front (SPEC §5): FreeRADIUS terminates EAP-TTLS, configured with the
//! fragments in `packaging/freeradius/`, and proxies the inner PAP (password followed
//! by the code, append mode) to a real `otpgate serve`, whose `[radius]` section is the
//! README's Wi-Fi block as written; `eapol_test` is the supplicant and the NAS.

use std::path::{Path, PathBuf};
use std::process::Command;

use otpgate_tests::{
    ConfigBuilder, FreeRadiusFront, FrontOptions, OtpgateServe, Redis, Slapd, readme_block,
    require_binary, substitute, toml_string,
};

use crate::radius::{SECRET, code, current_step, enroll};

const NAS_SECRET: &str = "wifi-controller-secret-for-tests";

fn fragments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/freeradius")
}

/// Runs EAP-TTLS/PAP as `user` with `password` through `front`; whether
/// `eapol_test` reported SUCCESS (exit 0). Its output goes into a panic message.
fn ttls_pap(front: &FreeRadiusFront, user: &str, password: &str, run: &str) -> (bool, String) {
    let eapol_test = require_binary("eapol_test", &["eapoltest"]).unwrap();
    let conf = front.dir().join(format!("eapol-{run}.conf"));
    std::fs::write(
        &conf,
        format!(
            "network={{\n\tssid=\"otpgate\"\n\tkey_mgmt=WPA-EAP\n\teap=TTLS\n\
             \tidentity={}\n\tanonymous_identity=\"anonymous\"\n\tpassword={}\n\
             \tphase2=\"auth=PAP\"\n\tca_cert={}\n}}\n",
            toml_string(user),
            toml_string(password),
            toml_string(&front.ca_cert().to_string_lossy()),
        ),
    )
    .unwrap();
    let out = Command::new(eapol_test)
        .arg("-c")
        .arg(&conf)
        .args(["-a", "127.0.0.1", "-p"])
        .arg(front.auth_addr().port().to_string())
        .args(["-s", NAS_SECRET, "-t", "20"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("SUCCESS"), text)
}

#[test]
fn eap_ttls_pap_through_freeradius_with_password_and_totp() {
    let slapd = Slapd::start().unwrap();
    let redis = Redis::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The README's otpgate side of the Wi-Fi set-up, on a loopback port of the test's
    // choosing, with this host as the FreeRADIUS host and the secret in `dir`.
    let secret_file = dir.path().join("radius-freeradius.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let radius = substitute(
        &readme_block("wifi-otpgate").unwrap(),
        &[
            ("\"0.0.0.0:1812\"", "\"127.0.0.1:0\""),
            ("\"192.0.2.20\"", "\"127.0.0.1\""),
            (
                "\"/etc/otpgate/radius-freeradius.secret\"",
                &toml_string(&secret_file.to_string_lossy()),
            ),
        ],
    )
    .unwrap();
    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .set("totp", "skew_steps", "5")
        .extra(&radius)
        .write()
        .unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    let base = current_step();
    let secret = enroll(config.path(), "alice", base);
    let front = FreeRadiusFront::start(&FrontOptions {
        fragments: &fragments(),
        otpgate: server.radius_addr(),
        otpgate_secret: SECRET,
        nas_secret: NAS_SECRET,
    })
    .unwrap();

    let good = format!("alice-pw-1{}", code(&secret, base));
    let (ok, out) = ttls_pap(&front, "alice", &good, "good");
    assert!(
        ok,
        "password+code through EAP-TTLS: {out}\n--- freeradius:\n{}\n--- otpgate:\n{}",
        front.log_tail(),
        server.log()
    );

    // A code of no step in the window.
    let window: Vec<String> = (base - 6..=base + 6).map(|s| code(&secret, s)).collect();
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !window.contains(c))
        .unwrap();
    let (ok, out) = ttls_pap(&front, "alice", &format!("alice-pw-1{wrong}"), "wrong");
    assert!(!ok, "a wrong code must fail: {out}");
    assert!(out.contains("FAILURE"), "{out}");

    // The same code again: its step was used.
    let (ok, out) = ttls_pap(&front, "alice", &good, "replay");
    assert!(!ok, "a replayed code must fail: {out}");
    assert!(out.contains("FAILURE"), "{out}");

    // otpgate decided all three, with the reasons in its audit trail.
    let log = server.log();
    assert!(log.contains("Replay") || log.contains("replay"), "{log}");
}
