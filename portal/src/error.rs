//! The one place where core errors become what a browser sees. Refusals become a
//! message in the visitor's language; backend and internal failures become a generic
//! page (the details go to the log). Nothing is ever accepted on an error.

use otpgate_core::{CoreError, Refusal};

use crate::app::metric;
use crate::html::esc;
use crate::i18n::{Lang, t};

/// Logs a failure and counts backend errors.
pub fn log_failure(e: &CoreError) {
    if let CoreError::Backend { backend, .. } = e {
        metrics::counter!(metric::BACKEND_ERRORS, "door" => "portal", "backend" => backend.as_str())
            .increment(1);
    }
    tracing::error!(door = "portal", "request failed closed: {e}");
}

/// What the visitor is told about a refusal (escaped HTML).
pub fn refusal(lang: Lang, r: &Refusal) -> String {
    let key = match r {
        Refusal::WrongCode | Refusal::Replay => "ref.wrong_code",
        Refusal::Locked(_) => "ref.locked",
        Refusal::InvalidAddress(_) => "ref.invalid_address",
        Refusal::DeniedDomain(domain) => {
            return esc(&t(lang, "ref.denied_domain").replace("{domain}", domain));
        }
        Refusal::NothingOutstanding => "ref.nothing",
        Refusal::NoPendingEnrollment => "ref.no_pending",
        Refusal::AlreadyEnrolled => "ref.already",
        Refusal::NotEnrolled => "ref.not_enrolled",
        Refusal::NoSuchDevice => "ref.no_device",
        Refusal::TooManyMails => "ref.too_many_mails",
        Refusal::NotActivated => "ref.not_activated",
        Refusal::UnknownUser => "ref.unknown_user",
        _ => "ref.generic",
    };
    esc(t(lang, key))
}

/// An error paragraph.
pub fn error_block(text_html: &str) -> String {
    format!(r#"<p class="error" role="alert">{text_html}</p>"#)
}
