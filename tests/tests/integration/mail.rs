//! Mail over TLS against a real aiosmtpd: STARTTLS and SMTPS deliver when the server's
//! certificate is from the configured CA, and nothing is sent otherwise — not to a
//! certificate from another CA, and not in clear when STARTTLS is required but missing.

use otpgate_config::SmtpConfig;
use otpgate_core::mail::{Mail, Mailer};
use otpgate_core::{Backend, CoreError};
use otpgate_tests::tls::TestCa;
use otpgate_tests::{SinkTls, SmtpSink};

const TO: &str = "alice@example.org";

/// The validated `[smtp]` section for `url`, trusting `ca`, as `otpgate serve` loads it.
fn smtp_config(url: &str, ca: Option<&TestCa>) -> SmtpConfig {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!("[smtp]\nurl = \"{url}\"\nfrom = \"MFA <mfa@example.org>\"\n");
    if let Some(ca) = ca {
        text.push_str(&format!("tls_ca_file = \"{}\"\n", ca.ca_cert.display()));
    }
    let path = dir.path().join("otpgate.toml");
    std::fs::write(&path, text).unwrap();
    otpgate_config::load(&path).unwrap().smtp.unwrap()
}

fn mail(subject: &str) -> Mail {
    Mail {
        to: TO.into(),
        subject: subject.into(),
        body: "code 12345678\n".into(),
    }
}

async fn send(config: &SmtpConfig, subject: &str) -> Result<(), CoreError> {
    Mailer::from_config(Some(config))?
        .send(&mail(subject))
        .await
}

fn assert_mail_backend_error(result: Result<(), CoreError>, what: &str) {
    match result {
        Err(CoreError::Backend {
            backend: Backend::Mail,
            ..
        }) => {}
        other => panic!("{what}: expected a mail backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn starttls_and_smtps_deliver_to_a_server_from_the_configured_ca() {
    for tls in [SinkTls::StartTls, SinkTls::Smtps] {
        let sink = SmtpSink::start_with(tls).unwrap();
        let config = smtp_config(&sink.url(), sink.ca());
        send(&config, &format!("over {tls:?}")).await.unwrap();
        let got = sink.mails_to(TO).unwrap();
        assert_eq!(got.len(), 1, "{tls:?}");
        assert_eq!(got[0].subject, format!("over {tls:?}"));
        assert!(got[0].body.contains("12345678"), "{tls:?}");
    }
}

#[tokio::test]
async fn a_certificate_from_another_ca_gets_no_mail() {
    let other = tempfile::tempdir().unwrap();
    let other_ca = TestCa::create(other.path()).unwrap();
    for tls in [SinkTls::StartTls, SinkTls::Smtps] {
        let sink = SmtpSink::start_with(tls).unwrap();
        let config = smtp_config(&sink.url(), Some(&other_ca));
        assert_mail_backend_error(send(&config, "untrusted").await, &format!("{tls:?}"));
        assert!(sink.messages().unwrap().is_empty(), "{tls:?}");
    }
}

#[tokio::test]
async fn required_starttls_is_never_downgraded_to_clear_text() {
    // A server that offers no STARTTLS: the mail must not go out in clear.
    let plain = SmtpSink::start().unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = TestCa::create(ca_dir.path()).unwrap();
    let url = format!("smtp://127.0.0.1:{}?tls=required", plain.port());
    assert_mail_backend_error(
        send(&smtp_config(&url, Some(&ca)), "downgrade").await,
        "no STARTTLS offered",
    );
    assert_mail_backend_error(
        send(&smtp_config(&url, None), "downgrade").await,
        "no STARTTLS offered, Mozilla roots",
    );
    assert!(plain.messages().unwrap().is_empty());
}
