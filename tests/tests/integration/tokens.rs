//! `otpgate user import` and `otpgate token …` (SPEC §2 "Tokens and import", §3) on one
//! set of real servers (slapd, Redis, two `otpgate serve` as in `pam.rs`): each format
//! imported, then logins over RADIUS (radclient) and PAM (pamtester, server mode) with
//! codes computed from the imported secrets at the step each token is in — an 8-digit
//! SHA256 token, a 60-second token, a 7-digit SHA512 token, hardware tokens from PSKC
//! files that `csv2pskc` (python-pskc) made, plain and encrypted. Bad input is refused
//! with the line and nothing half-written. No assertion depends on the time of day:
//! each code is computed for the step its token is in now, and the config accepts ±5
//! steps.

use std::path::Path;
use std::process::{Command, Output};

use otpgate_config::TotpAlgorithm;
use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::otp::totp::{self, TotpParams};
use otpgate_core::secret::TotpSecret;
use otpgate_tests::{PamResult, pamtester, require_binary};
use serde_json::Value;

use crate::pam::server_env;
use crate::radius::{assert_code, assert_generic_reject, json, otpgate, pap};

/// A token's code for the step it is in now (plus `ahead` steps).
fn code_now(
    secret: &[u8],
    digits: u32,
    period: u64,
    algorithm: TotpAlgorithm,
    ahead: u64,
) -> String {
    let p = TotpParams {
        digits,
        period,
        skew_steps: 5,
        algorithm,
    };
    let step = totp::step_at(SystemClock.now(), period) + ahead;
    totp::code_at_step(&TotpSecret::from_bytes(secret), step, &p)
}

fn b32(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn import(config: &Path, args: &[&str]) -> Output {
    let mut all = vec!["user", "import"];
    all.extend_from_slice(args);
    otpgate(config, &all)
}

/// The names of a user's tokens (or the pool's serials and holders, without a user).
fn tokens(config: &Path, user: Option<&str>) -> Vec<(String, Option<String>)> {
    let mut args = vec!["token", "list", "--json"];
    args.extend(user);
    let listed = json(&otpgate(config, &args));
    listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["user"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// `csv2pskc` (python-pskc) on `csv`, with `extra` arguments.
fn csv2pskc(dir: &Path, name: &str, csv: &str, extra: &[&str]) -> std::path::PathBuf {
    let tool = require_binary("csv2pskc", &["python3-pskc", "pskc-utils"]).unwrap();
    let input = dir.join(format!("{name}.csv"));
    std::fs::write(&input, csv).unwrap();
    let output = dir.join(format!("{name}.pskc"));
    let out = Command::new(tool)
        .args(extra)
        .arg("-o")
        .arg(&output)
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "csv2pskc: {}", text(&out));
    output
}

/// Every line of a report refers to its file line; secrets never appear.
fn assert_no_secret(out: &Output, secrets: &[&[u8]]) {
    let all = text(out);
    for s in secrets {
        assert!(!all.contains(&b32(s)), "a secret was printed:\n{all}");
        assert!(!all.contains(&hex(s)), "a secret was printed:\n{all}");
    }
}

const PSKC_TOTP: &str = "urn:ietf:params:xml:ns:keyprov:pskc:totp";

#[test]
fn every_format_imports_and_its_tokens_log_in_over_radius_and_pam() {
    let e = server_env();
    let c = e.config.path();
    let dir = tempfile::tempdir().unwrap();
    let stack = e.stack();
    let radius = e.servers[1].radius_addr();
    let pam = |user: &str, answer: &str| pamtester(&stack, "otp", user, None, &[answer]).unwrap();

    // --- otpauth: an 8-digit SHA256 token and a 60-second token for alice ---
    let vpn = b"alice-vpn-secret-0123456789abcdef";
    let slow = b"alice-60s-secret-0123";
    let uris = format!(
        "# exported from the old server\n\
         otpauth://totp/VPN:alice?secret={}&issuer=VPN&digits=8&period=30&algorithm=SHA256\n\
         otpauth://totp/Slow%20App:alice?secret={}&period=60\n",
        b32(vpn),
        b32(slow)
    );
    let uri_file = dir.path().join("uris.txt");
    std::fs::write(&uri_file, &uris).unwrap();
    let uri_path = uri_file.to_str().unwrap();

    let dry = import(c, &["--dry-run", uri_path]);
    assert!(dry.status.success(), "{}", text(&dry));
    let said = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        said.contains("line 2: alice vpn: would be imported: 8 digits, 30 s, SHA256"),
        "{said}"
    );
    assert!(
        said.contains("line 3: alice slow-app: would be imported: 6 digits, 60 s, SHA1"),
        "{said}"
    );
    assert!(
        tokens(c, Some("alice")).is_empty(),
        "a dry run writes nothing"
    );

    let done = import(c, &[uri_path]);
    assert!(done.status.success(), "{}", text(&done));
    assert_no_secret(&done, &[vpn, slow]);
    let again = import(c, &["--json", uri_path]);
    let report: Value = serde_json::from_slice(&again.stdout).unwrap();
    let outcomes: Vec<&str> = report["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        vec!["unchanged", "unchanged"],
        "a re-run changes nothing"
    );
    assert_eq!(
        tokens(c, Some("alice")),
        vec![
            ("vpn".to_string(), Some("alice".to_string())),
            ("slow-app".to_string(), Some("alice".to_string()))
        ]
    );

    // RADIUS append mode: password + the 8-digit SHA256 code; the same again is a replay.
    let eight = code_now(vpn, 8, 30, TotpAlgorithm::Sha256, 0);
    assert_code(
        &pap(radius, "alice", &format!("alice-pw-1{eight}")),
        "Access-Accept",
    );
    assert_generic_reject(&pap(radius, "alice", &format!("alice-pw-1{eight}")));
    // PAM (otp-only host): the 60-second token's code.
    let sixty = code_now(slow, 6, 60, TotpAlgorithm::Sha1, 0);
    let ok = pam("alice", &sixty);
    assert_eq!(ok.result, PamResult::Success, "{}", ok.output);
    let replay = pam("alice", &sixty);
    assert_eq!(replay.result, PamResult::AuthErr, "{}", replay.output);
    // Over RADIUS too, the 60-second token works in append mode (its next step).
    let next = code_now(slow, 6, 60, TotpAlgorithm::Sha1, 1);
    assert_code(
        &pap(radius, "alice", &format!("alice-pw-1{next}")),
        "Access-Accept",
    );

    // --- google-authenticator-libpam's file for dave, as its tool writes it ---
    let ga = b"dave-ga-secret-0123";
    let ga_file = dir.path().join(".google_authenticator");
    std::fs::write(
        &ga_file,
        format!(
            "{}\n\" RATE_LIMIT 3 30 1700000000\n\" WINDOW_SIZE 17\n\" DISALLOW_REUSE 56666666\n\
             \" TOTP_AUTH\n12345678\n23456789\n34567890\n45678901\n56789012\n",
            b32(ga)
        ),
    )
    .unwrap();
    let ga_path = ga_file.to_str().unwrap();
    let ga_done = import(c, &[ga_path, "--user", "dave"]);
    assert!(ga_done.status.success(), "{}", text(&ga_done));
    let said = String::from_utf8_lossy(&ga_done.stdout).to_string();
    assert!(
        said.contains("line 1: dave google-authenticator: imported: 6 digits, 30 s, SHA1"),
        "{said}"
    );
    assert!(
        said.contains("5 emergency scratch code(s) not imported"),
        "{said}"
    );
    assert!(
        !said.contains("12345678"),
        "scratch codes are not printed: {said}"
    );
    let ok = pam("dave", &code_now(ga, 6, 30, TotpAlgorithm::Sha1, 0));
    assert_eq!(ok.result, PamResult::Success, "{}", ok.output);
    let hotp = dir.path().join("hotp");
    std::fs::write(&hotp, format!("{}\n\" HOTP_COUNTER 1\n", b32(ga))).unwrap();
    let refused = import(
        c,
        &[
            "--format",
            "google-authenticator",
            hotp.to_str().unwrap(),
            "--user",
            "dave",
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("line 2: an HOTP"),
        "{}",
        text(&refused)
    );

    // --- CSV: a 7-digit SHA512 token for bob; bad lines refused, nothing half-written ---
    let seven = b"bob-csv-secret-012345";
    let other = b"alicex-csv-secret-012";
    let csv = dir.path().join("tokens.csv");
    std::fs::write(
        &csv,
        format!(
            "user,secret,digits,period,algorithm\nbob,{},7,30,SHA512\n\
             alicex,{},6\nalicex,{},9\nnosuchuser,{}\nbob\n",
            b32(seven),
            b32(other),
            b32(other),
            b32(other)
        ),
    )
    .unwrap();
    let out = import(c, &[csv.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused entries exit 1: {}",
        text(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("line 2: bob csv: imported: 7 digits, 30 s, SHA512"),
        "{said}"
    );
    assert!(
        said.contains(
            "line 3: alicex csv: REFUSED: not imported: line 4 of the same user was refused"
        ),
        "{said}"
    );
    assert!(
        said.contains("line 4: alicex: REFUSED: digits \"9\" is not 6, 7 or 8"),
        "{said}"
    );
    assert!(
        said.contains("line 5: nosuchuser csv: REFUSED: unknown user nosuchuser"),
        "{said}"
    );
    assert!(said.contains("line 6: REFUSED: 1 fields"), "{said}");
    assert!(text(&out).contains("4 entries refused"), "{}", text(&out));
    assert_no_secret(&out, &[seven, other]);
    assert!(
        tokens(c, Some("alicex")).is_empty(),
        "a user's entries: all or none"
    );
    let seven_code = code_now(seven, 7, 30, TotpAlgorithm::Sha512, 0);
    assert_code(
        &pap(radius, "bob", &format!("bob-pw-2{seven_code}")),
        "Access-Accept",
    );

    // --- PSKC from csv2pskc: plain (one token assigned by UserId, one for the pool) ---
    let hw_a = b"hardware-token-A-key";
    let hw_b = b"hardware-token-B-key";
    let plain = csv2pskc(
        dir.path(),
        "plain",
        &format!(
            "serial,secret,algorithm,response_length,time_interval,key_userid\n\
             HW-0001,{},{PSKC_TOTP},8,30,alicex\nHW-0002,{},{PSKC_TOTP},6,30,\n",
            hex(hw_a),
            hex(hw_b)
        ),
        &[],
    );
    let plain = plain.to_str().unwrap();
    let out = import(c, &[plain]);
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("alicex HW-0001: imported: 8 digits, 30 s, SHA1"),
        "{said}"
    );
    assert!(
        said.contains("HW-0002: added to the pool, unassigned: 6 digits, 30 s, SHA1"),
        "{said}"
    );
    assert_eq!(
        tokens(c, Some("alicex")),
        vec![("HW-0001".into(), Some("alicex".into()))]
    );
    let pool = tokens(c, None);
    assert!(
        pool.contains(&("HW-0001".into(), Some("alicex".into()))),
        "{pool:?}"
    );
    assert!(pool.contains(&("HW-0002".into(), None)), "{pool:?}");
    let again = import(c, &[plain]);
    assert!(
        String::from_utf8_lossy(&again.stdout)
            .contains("0 imported, 0 added to the pool, 2 unchanged"),
        "{}",
        text(&again)
    );
    let hw_code = code_now(hw_a, 8, 30, TotpAlgorithm::Sha1, 0);
    let ok = pam("alicex", &hw_code);
    assert_eq!(ok.result, PamResult::Success, "{}", ok.output);

    // Assign the pooled token by serial; a serial assigned already is refused.
    json(&otpgate(
        c,
        &["token", "assign", "HW-0002", "bob", "--json"],
    ));
    let taken = otpgate(c, &["token", "assign", "HW-0002", "dave"]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        text(&taken).contains("serial HW-0002 is already assigned to bob"),
        "{}",
        text(&taken)
    );
    let b_code = code_now(hw_b, 6, 30, TotpAlgorithm::Sha1, 0);
    assert_code(
        &pap(radius, "bob", &format!("bob-pw-2{b_code}")),
        "Access-Accept",
    );
    // A duplicate serial in another file for another user: refused with its line.
    let dup = csv2pskc(
        dir.path(),
        "dup",
        &format!(
            "serial,secret,algorithm,response_length,time_interval,key_userid\n\
             HW-0002,{},{PSKC_TOTP},6,30,dave\n",
            hex(hw_a)
        ),
        &[],
    );
    let out = import(c, &[dup.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out)
            .contains("line 3: dave HW-0002: REFUSED: serial HW-0002 is already assigned to bob"),
        "{}",
        text(&out)
    );
    // Removed from bob, the hardware token goes back to the pool.
    json(&otpgate(
        c,
        &["token", "remove", "bob", "HW-0002", "--json"],
    ));
    assert!(tokens(c, None).contains(&("HW-0002".into(), None)));
    assert_generic_reject(&pap(
        radius,
        "bob",
        &format!("bob-pw-2{}", code_now(hw_b, 6, 30, TotpAlgorithm::Sha1, 1)),
    ));

    // --- PSKC encrypted: with a password, and with a pre-shared key ---
    let hw_c = b"hardware-token-C-key";
    let hw_d = b"hardware-token-D-key";
    let pw_file = dir.path().join("pskc.pass");
    std::fs::write(&pw_file, "correct horse\n").unwrap();
    let wrong_pw = dir.path().join("wrong.pass");
    std::fs::write(&wrong_pw, "wrong horse\n").unwrap();
    let encrypted = csv2pskc(
        dir.path(),
        "password",
        &format!(
            "serial,secret,algorithm,response_length,time_interval,key_userid\n\
             HW-0003,{},{PSKC_TOTP},6,60,dave\n",
            hex(hw_c)
        ),
        &["--password", "correct horse"],
    );
    let encrypted = encrypted.to_str().unwrap();
    let out = import(
        c,
        &[
            encrypted,
            "--pskc-password-file",
            wrong_pw.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("the password or key does not open this PSKC file"),
        "{}",
        text(&out)
    );
    assert!(
        !tokens(c, None)
            .iter()
            .any(|(serial, _)| serial == "HW-0003"),
        "nothing written"
    );
    let none = import(c, &[encrypted]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
    let out = import(
        c,
        &[encrypted, "--pskc-password-file", pw_file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ok = pam("dave", &code_now(hw_c, 6, 60, TotpAlgorithm::Sha1, 0));
    assert_eq!(ok.result, PamResult::Success, "{}", ok.output);

    let key = "000102030405060708090a0b0c0d0e0f";
    let key_file = dir.path().join("pskc.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let psk = csv2pskc(
        dir.path(),
        "psk",
        &format!(
            "serial,secret,algorithm,response_length,time_interval\n\
             HW-0004,{},{PSKC_TOTP},8,30\n",
            hex(hw_d)
        ),
        &["--secret", key],
    );
    let out = import(
        c,
        &[
            psk.to_str().unwrap(),
            "--pskc-key-file",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("HW-0004: added to the pool"),
        "{}",
        text(&out)
    );
    json(&otpgate(
        c,
        &["token", "assign", "HW-0004", "dave", "--json"],
    ));
    let d_code = code_now(hw_d, 8, 30, TotpAlgorithm::Sha1, 0);
    assert_code(
        &pap(radius, "dave", &format!("dave-pw-4{d_code}")),
        "Access-Accept",
    );

    // An 8-digit tail may be an 8-digit token's code or a helpdesk code: both are
    // checked (without consuming) before the one bind, and the helpdesk code logs in.
    let issued = json(&otpgate(c, &["helpdesk", "issue", "dave", "--json"]));
    let otp = issued["otp"].as_str().unwrap();
    assert_code(
        &pap(radius, "dave", &format!("dave-pw-4{otp}")),
        "Access-Accept",
    );

    // The same secret under two names (the google-authenticator token and a copy): a
    // code accepted through one is not accepted again through the other.
    let copy = dir.path().join("copy.txt");
    std::fs::write(
        &copy,
        format!("otpauth://totp/Copy:dave?secret={}\n", b32(ga)),
    )
    .unwrap();
    json(&otpgate(
        c,
        &["user", "import", copy.to_str().unwrap(), "--json"],
    ));
    let ga_next = code_now(ga, 6, 30, TotpAlgorithm::Sha1, 1);
    let ok = pam("dave", &ga_next);
    assert_eq!(ok.result, PamResult::Success, "{}", ok.output);
    let replay = pam("dave", &ga_next);
    assert_eq!(replay.result, PamResult::AuthErr, "{}", replay.output);

    // Status lists every token; the audit trail has each import, without secrets.
    let status = json(&otpgate(c, &["user", "status", "alice", "--json"]));
    assert_eq!(status["state"], "app-enrolled");
    assert_eq!(status["tokens"].as_array().unwrap().len(), 2, "{status}");
    let audit = otpgate(c, &["audit", "--user", "alice", "--json"]);
    let all = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(
        all.contains("token-import") && all.contains("token vpn imported from otpauth line 2"),
        "{all}"
    );
    assert_no_secret(&audit, &[vpn, slow]);
}
