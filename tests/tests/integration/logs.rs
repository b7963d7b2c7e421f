//! What an operator's log receives from the real binary: plain text on a pipe, colour
//! only on a terminal, and under a journal stream (`JOURNAL_STREAM`) native journal
//! entries with priorities and the audit record's fields, read back from a real
//! `systemd-journald` running in a private mount namespace.
//!
//! The command logged is `otpgate user unlock alice` with `OTPGATE_LOG=info` and an
//! `[audit] file` in a directory that does not exist: one audit record (info) and one
//! error (the audit file cannot be written).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use otpgate_tests::{ConfigBuilder, Slapd, TestConfig, otpgate_binary, require_binary};
use serde_json::Value;

const ESC: &str = "\x1b[";

fn config(slapd: &Slapd) -> TestConfig {
    ConfigBuilder::new(slapd)
        .extra("[audit]\nfile = \"/nonexistent-otpgate-dir/audit.log\"\n")
        .write()
        .unwrap()
}

fn unlock(config: &Path) -> Command {
    let mut command = Command::new(otpgate_binary().unwrap());
    command
        .arg("--config")
        .arg(config)
        .args(["user", "unlock", "alice"])
        .env_remove("OTPGATE_CONFIG")
        .env_remove("JOURNAL_STREAM")
        .env("OTPGATE_LOG", "info");
    command
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn stderr_to_a_pipe_is_plain_text_and_a_terminal_gets_colour() {
    let slapd = Slapd::start().unwrap();
    let config = config(&slapd);

    let piped = unlock(config.path()).stdin(Stdio::null()).output().unwrap();
    assert!(piped.status.success(), "{}", text(&piped));
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        stderr.contains("ERROR") && stderr.contains("cannot append to the audit file"),
        "{stderr}"
    );
    assert!(
        stderr.contains("INFO otpgate::audit:") && stderr.contains("\"method\":\"unlock\""),
        "the audit record as a JSON line: {stderr}"
    );
    assert!(!stderr.contains(ESC), "escape codes on a pipe: {stderr:?}");
    assert!(
        !stderr.contains("audit_user"),
        "the journal-only fields stay out of text: {stderr}"
    );

    // The same command on a pseudo-terminal (script(1) gives it one).
    let script = require_binary("script", &["bsdutils"]).unwrap();
    let line = format!(
        "OTPGATE_LOG=info '{}' --config '{}' user unlock alice",
        otpgate_binary().unwrap().display(),
        config.path().display()
    );
    let on_tty = Command::new(script)
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_remove("OTPGATE_CONFIG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(on_tty.status.success(), "{}", text(&on_tty));
    let shown = text(&on_tty);
    assert!(
        shown.contains("cannot append to the audit file") && shown.contains(ESC),
        "colour on a terminal: {shown:?}"
    );
}

/// Runs `command` (a shell word list) under `systemd-cat` with `JOURNAL_STREAM` naming
/// its stderr, as systemd sets it for a service, against a journald of its own in a
/// private mount namespace; returns the journal's entries.
fn in_a_private_journal(command: &str) -> Vec<Value> {
    let unshare = require_binary("unshare", &["util-linux"]).unwrap();
    for (name, package) in [("systemd-cat", "systemd"), ("journalctl", "systemd")] {
        require_binary(name, &[package]).unwrap();
    }
    let journald = Path::new("/lib/systemd/systemd-journald");
    assert!(
        journald.exists(),
        "{} is missing: apt-get install systemd",
        journald.display()
    );
    // tmpfs over the journal's sockets and files, so the host's are never touched; the
    // socket is polled for (at most 10 s), then the command runs, then the journal is
    // synced and read.
    let script = format!(
        r#"set -e
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
{journald} >/dev/null 2>&1 &
JOURNALD=$!
trap 'kill $JOURNALD' EXIT
tries=0
until [ -S /run/systemd/journal/socket ] && [ -S /run/systemd/journal/stdout ]; do
  tries=$((tries + 1)); [ $tries -le 200 ] || {{ echo "journald did not start" >&2; exit 3; }}
  sleep 0.05
done
systemd-cat -t otpgate-stream sh -c 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$@"' sh {command}
journalctl --sync
journalctl -o json --no-pager
"#,
        journald = journald.display(),
    );
    let out = Command::new(unshare)
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove("JOURNAL_STREAM")
        .env("OTPGATE_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn under_a_journal_stream_entries_are_native_with_priorities_and_audit_fields() {
    let slapd = Slapd::start().unwrap();
    let config = config(&slapd);
    let command = format!(
        "'{}' --config '{}' user unlock alice",
        otpgate_binary().unwrap().display(),
        config.path().display()
    );
    let entries = in_a_private_journal(&command);
    let ours: Vec<&Value> = entries
        .iter()
        .filter(|e| e["SYSLOG_IDENTIFIER"] == "otpgate")
        .collect();
    let all = || serde_json::to_string_pretty(&entries).unwrap();
    assert!(!ours.is_empty(), "no entries from otpgate: {}", all());
    for entry in &ours {
        assert_eq!(
            entry["_TRANSPORT"], "journal",
            "native, not the stream: {entry}"
        );
        let message = entry["MESSAGE"].as_str().unwrap_or_default();
        assert!(!message.contains(ESC), "{entry}");
    }
    let error = ours
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("cannot append to the audit file"))
        })
        .unwrap_or_else(|| panic!("no error entry: {}", all()));
    assert_eq!(error["PRIORITY"], "3", "an error is priority err: {error}");
    let audit = ours
        .iter()
        .find(|e| e["OTPGATE_AUDIT_METHOD"] == "unlock")
        .unwrap_or_else(|| panic!("no audit entry with fields: {}", all()));
    assert_eq!(audit["OTPGATE_AUDIT_USER"], "alice", "{audit}");
    assert_eq!(audit["OTPGATE_AUDIT_DOOR"], "cli", "{audit}");
    assert_eq!(audit["OTPGATE_AUDIT_RESULT"], "ok", "{audit}");
    assert_eq!(audit["TARGET"], "otpgate::audit", "{audit}");
    let priority: u8 = audit["PRIORITY"].as_str().unwrap().parse().unwrap();
    assert!(
        (5..=6).contains(&priority),
        "info is notice or info, below warning: {audit}"
    );
    // Nothing came as text through the stream (it would be priority info, unparsed).
    assert!(
        !entries
            .iter()
            .any(|e| e["SYSLOG_IDENTIFIER"] == "otpgate-stream"
                && e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.contains("otpgate::audit"))),
        "{}",
        all()
    );
}
