//! Mail over SMTP (lettre): plain, STARTTLS (`smtp://…?tls=required`) or SMTPS, each
//! send bounded by the configured timeout. The texts are bilingual (English, Japanese).
//!
//! A failed send is a [`CoreError::Backend`] with [`Backend::Mail`]: the caller removes
//! the code it was about to mail, so no usable code is left behind.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use otpgate_config::SmtpTls;

use crate::error::{Backend, CoreError};

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// How mail leaves.
pub enum Mailer {
    /// Real SMTP.
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        timeout: Duration,
    },
    /// `otpgate demo` without an SMTP server: mail is printed to the terminal log.
    Terminal,
    /// No `[smtp]` configured: every send is a configuration error.
    None,
}

impl Mailer {
    /// Builds the mailer for `[smtp]`, if configured.
    pub fn from_config(config: Option<&otpgate_config::SmtpConfig>) -> Result<Mailer, CoreError> {
        let Some(c) = config else {
            return Ok(Mailer::None);
        };
        let from: Mailbox = c
            .from
            .parse()
            .map_err(|e| CoreError::Config(format!("[smtp] from `{}`: {e}", c.from)))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&c.url)
            .map_err(|e| CoreError::Config(format!("[smtp] url `{}`: {e}", c.url)))?
            .timeout(Some(c.timeout));
        if let Some(ca) = &c.tls_ca_file {
            builder = builder.tls(tls_trusting(c, ca)?);
        }
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            let password = password
                .expose_str()
                .ok_or_else(|| CoreError::Config("[smtp] password is not UTF-8".into()))?;
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    user.clone(),
                    password.to_string(),
                ));
        }
        Ok(Mailer::Smtp {
            transport: builder.build(),
            from,
            timeout: c.timeout,
        })
    }

    /// Whether mail can be sent at all.
    pub fn is_configured(&self) -> bool {
        !matches!(self, Mailer::None)
    }

    /// Connects, says EHLO (and STARTTLS, logs in, where configured) and quits, within
    /// the timeout; `None` when there is no SMTP server to probe.
    pub async fn probe(&self) -> Option<Result<(), String>> {
        let Mailer::Smtp {
            transport, timeout, ..
        } = self
        else {
            return None;
        };
        Some(
            match tokio::time::timeout(*timeout, transport.test_connection()).await {
                Ok(Ok(true)) => Ok(()),
                Ok(Ok(false)) => Err("the server did not answer NOOP".into()),
                Ok(Err(e)) => Err(format!("SMTP: {e}")),
                Err(_) => Err(format!("SMTP timed out after {timeout:?}")),
            },
        )
    }

    /// Sends one message, bounded by the timeout.
    pub async fn send(&self, mail: &Mail) -> Result<(), CoreError> {
        match self {
            Mailer::Smtp {
                transport,
                from,
                timeout,
            } => {
                let to: Mailbox = mail.to.parse().map_err(|e| {
                    CoreError::Refused(crate::Refusal::InvalidAddress(format!("{}: {e}", mail.to)))
                })?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(mail.subject.clone())
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.body.clone())
                    .map_err(|e| CoreError::Internal(format!("building a message: {e}")))?;
                match tokio::time::timeout(*timeout, transport.send(message)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(CoreError::backend(Backend::Mail, format!("SMTP: {e}"))),
                    Err(_) => Err(CoreError::backend(
                        Backend::Mail,
                        format!("SMTP timed out after {timeout:?}"),
                    )),
                }
            }
            Mailer::Terminal => {
                tracing::info!(target: "otpgate::mail", to = %mail.to, subject = %mail.subject, "demo mail (not sent):\n{}", mail.body);
                Ok(())
            }
            Mailer::None => Err(CoreError::Config(
                "mail is needed but no [smtp] section is configured".into(),
            )),
        }
    }
}

/// TLS for `[smtp]` that trusts only the CA in `ca` (PEM), as STARTTLS or from the first
/// byte as the URL says.
fn tls_trusting(c: &otpgate_config::SmtpConfig, ca: &std::path::Path) -> Result<Tls, CoreError> {
    let bad =
        |what: String| CoreError::Config(format!("[smtp] tls_ca_file {}: {what}", ca.display()));
    let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
    let cert = Certificate::from_pem(&pem).map_err(|e| bad(e.to_string()))?;
    let host = url::Url::parse(&c.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .ok_or_else(|| CoreError::Config(format!("[smtp] url `{}` has no host", c.url)))?;
    let parameters = TlsParameters::builder(host)
        .certificate_store(CertificateStore::None)
        .add_root_certificate(cert)
        .build_rustls()
        .map_err(|e| bad(e.to_string()))?;
    match c.tls {
        SmtpTls::StartTls => Ok(Tls::Required(parameters)),
        SmtpTls::Wrapper => Ok(Tls::Wrapper(parameters)),
        SmtpTls::None => Err(bad("a CA is only used with TLS".into())),
    }
}

/// The texts the product mails.
pub mod texts {
    use super::Mail;

    /// An email OTP.
    pub fn login_code(to: &str, user: &str, code: &str, valid_hours: u64) -> Mail {
        Mail {
            to: to.to_string(),
            subject: "Your one-time password / ワンタイムパスワード".into(),
            body: format!(
                "Your one-time password for {user} is:\n\n    {code}\n\n\
                 It is valid for {valid_hours} hours and can be used once.\n\
                 If you did not ask for it, someone may know your password: change it.\n\n\
                 {user} のワンタイムパスワードは {code} です。\n\
                 有効期間は{valid_hours}時間で、一度だけ使えます。\n\
                 心当たりがない場合は、パスワードを変更してください。\n"
            ),
        }
    }

    /// The code that confirms a new notification address.
    pub fn address_confirmation(to: &str, user: &str, code: &str) -> Mail {
        Mail {
            to: to.to_string(),
            subject: "Confirm your notification address / 通知先アドレスの確認".into(),
            body: format!(
                "To make this the notification address of {user}, enter this code:\n\n    {code}\n\n\
                 通知先アドレスを {user} に登録するには、次の確認コードを入力してください: {code}\n"
            ),
        }
    }

    /// Tells the old address that the notification address changed.
    pub fn address_changed(old: &str, user: &str, new: &str) -> Mail {
        Mail {
            to: old.to_string(),
            subject: "Your notification address was changed / 通知先アドレスが変更されました"
                .into(),
            body: format!(
                "The notification address of {user} was changed from this address to {new}.\n\
                 If you did not do this, contact the helpdesk at once.\n\n\
                 {user} の通知先アドレスがこのアドレスから {new} に変更されました。\n\
                 心当たりがない場合は、すぐにヘルプデスクに連絡してください。\n"
            ),
        }
    }

    /// A reset link.
    pub fn reset_link(to: &str, user: &str, link: &str, valid_hours: u64) -> Mail {
        Mail {
            to: to.to_string(),
            subject: "Reset your second factor / 多要素認証の初期化".into(),
            body: format!(
                "A reset of the authenticator app of {user} was requested.\n\
                 Follow this link within {valid_hours} hours and log in with your password to remove the app; \
                 then set it up again:\n\n    {link}\n\n\
                 If you did not ask for this, ignore this mail.\n\n\
                 {user} の認証アプリの初期化が要求されました。{valid_hours}時間以内に上記のリンクを開き、\
                 パスワードでログインすると初期化されます。心当たりがない場合は、このメールを無視してください。\n"
            ),
        }
    }
}
