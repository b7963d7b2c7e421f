//! Operator pages, for members of `portal.admin_group` signed in with both factors:
//! a user's status, the helpdesk queue, issuing a one-time code, unlock and reset —
//! the same core operations as `otpgate user …` and `otpgate helpdesk …`.

use axum::http::StatusCode;
use axum::response::Response;
use otpgate_core::CoreError;
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::user::UserName;

use super::{Body, try_page};
use crate::error::{error_block, refusal};
use crate::html::{button_form, esc, url_component};
use crate::session::Signed;
use crate::visit::{Deny, Visit};

/// An operator, or the refusal.
async fn operator(v: &mut Visit) -> Result<Signed, Deny> {
    let s = v.require(false).await?;
    if s.admin { Ok(s) } else { Err(Deny::NotAdmin) }
}

/// The audit context names the operator.
fn ctx(v: &Visit, s: &Signed) -> RequestContext {
    RequestContext::new(Door::Portal, format!("{} operator {}", v.remote, s.user))
}

/// GET /admin[?user=NAME]: the queue, a lookup, and the user's status with actions.
pub async fn admin_page(mut v: Visit) -> Response {
    let _s = match operator(&mut v).await {
        Ok(s) => s,
        Err(d) => return v.deny(d),
    };
    let q = try_page!(v.query_form());
    let wanted = q.str("user").trim().to_string();
    let core = v.app.core.clone();
    let csrf = v.csrf();
    let mut body = format!(
        r#"<form method="get" action="/admin"><label for="user">{l}</label><input type="text" id="user" name="user" value="{u}" required><button type="submit" id="lookup">{b}</button></form>"#,
        l = esc(v.t("admin.lookup")),
        u = esc(&wanted),
        b = esc(v.t("admin.show")),
    );
    if !wanted.is_empty() {
        match UserName::parse(&wanted) {
            Err(_) => body.push_str(&error_block(&esc(v.t("ref.unknown_user")))),
            Ok(user) => match core.status(&user).await {
                Ok(st) => {
                    let row = |k: &str, val: &str| {
                        format!("<tr><th>{}</th><td>{}</td></tr>", esc(v.t(k)), esc(val))
                    };
                    let none = v.t("home.none");
                    body.push_str(&format!(
                        r#"<section><h2>{h}</h2><table id="status">{r1}{r2}{r3}{r4}{r5}{r6}</table><p>{issue} {unlock} {reset}</p></section>"#,
                        h = esc(user.as_str()),
                        r1 = row("admin.state", v.t(&format!("state.{}", st.state))),
                        r2 = row("home.address", st.notification_address.as_deref().unwrap_or(none)),
                        r3 = row("admin.locked", if st.locked { v.t("admin.yes") } else { v.t("admin.no") }),
                        r4 = row("admin.failures", &st.failures.to_string()),
                        r5 = row("home.trusted", &st.trusted_devices.to_string()),
                        r6 = row("admin.enrolled_at", st.enrolled_at.as_deref().unwrap_or(none)),
                        issue = button_form("/admin/issue", &csrf, &[("user", user.as_str())], v.t("admin.issue"), ""),
                        unlock = button_form("/admin/unlock", &csrf, &[("user", user.as_str())], v.t("admin.unlock"), "secondary"),
                        reset = button_form("/admin/reset", &csrf, &[("user", user.as_str())], v.t("admin.reset"), "secondary"),
                    ));
                }
                Err(CoreError::Refused(r)) => body.push_str(&error_block(&refusal(v.lang, &r))),
                Err(e) => return v.failure_page(&e),
            },
        }
    }
    let queue = match core.helpdesk_queue().await {
        Ok(q) => q,
        Err(e) => return v.failure_page(&e),
    };
    body.push_str(&format!("<section><h2>{}</h2>", esc(v.t("admin.queue"))));
    if queue.is_empty() {
        body.push_str(&format!(
            r#"<p id="queue-empty">{}</p>"#,
            esc(v.t("admin.queue_empty"))
        ));
    } else {
        body.push_str(&format!(
            r#"<table id="queue"><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr>"#,
            esc(v.t("login.user")),
            esc(v.t("admin.kind")),
            esc(v.t("admin.via")),
            esc(v.t("admin.when")),
        ));
        for r in &queue {
            body.push_str(&format!(
                r#"<tr><td><a href="/admin?user={link}">{u}</a></td><td>{k}</td><td>{via}</td><td>{when}</td><td>{issue}</td></tr>"#,
                link = esc(&url_component(r.user.as_str())),
                u = esc(r.user.as_str()),
                k = esc(r.kind.as_str()),
                via = esc(&r.via),
                when = esc(&r.requested_at.to_rfc3339()),
                issue = button_form("/admin/issue", &csrf, &[("user", r.user.as_str())], v.t("admin.issue"), ""),
            ));
        }
        body.push_str("</table>");
    }
    body.push_str("</section>");
    let title = v.t("admin.title");
    v.page(title, &body)
}

/// The target user of an operator's form, with the operator.
async fn target(v: &mut Visit, body: Body) -> Result<(Signed, UserName), Response> {
    let form = v.form(body)?;
    let s = match operator(v).await {
        Ok(s) => s,
        Err(Deny::NotAdmin) => return Err(v.error_page(StatusCode::FORBIDDEN, "err.forbidden")),
        Err(_) => return Err(v.error_page(StatusCode::FORBIDDEN, "err.forbidden")),
    };
    let user = UserName::parse(form.str("user").trim())
        .map_err(|_| v.error_page(StatusCode::BAD_REQUEST, "err.form"))?;
    Ok((s, user))
}

fn back_to(v: Visit, user: &UserName) -> Response {
    let to = format!("/admin?user={}", url_component(user.as_str()));
    v.redirect(&to)
}

/// POST /admin/issue: an 8-digit code to read to the caller.
pub async fn issue_post(mut v: Visit, body: Body) -> Response {
    let (s, user) = try_page!(target(&mut v, body).await);
    let ctx = ctx(&v, &s);
    let core = v.app.core.clone();
    match core.helpdesk_issue(&user, &ctx).await {
        Ok(issued) => {
            let body = format!(
                r#"<p>{p}</p><p class="otp" id="issued-otp">{otp}</p><p>{until}</p><p><a href="/admin">{back}</a></p>"#,
                p = esc(&v.t("admin.issued").replace("{user}", &issued.user)),
                otp = esc(&issued.otp),
                until = esc(&v
                    .t("admin.valid_until")
                    .replace("{time}", &issued.expires_at)),
                back = esc(v.t("admin.title")),
            );
            let title = v.t("admin.issue");
            v.page(title, &body)
        }
        Err(CoreError::Refused(r)) => {
            let text = refusal(v.lang, &r);
            v.notice(text);
            back_to(v, &user)
        }
        Err(e) => v.failure_page(&e),
    }
}

/// POST /admin/unlock.
pub async fn unlock_post(mut v: Visit, body: Body) -> Response {
    let (s, user) = try_page!(target(&mut v, body).await);
    let ctx = ctx(&v, &s);
    let core = v.app.core.clone();
    match core.unlock(&user, &ctx).await {
        Ok(()) => {
            let text = v.t("admin.unlocked");
            v.notice(text);
            back_to(v, &user)
        }
        Err(e) => v.failure_page(&e),
    }
}

/// POST /admin/reset: removes the user's app and trusted devices.
pub async fn reset_post(mut v: Visit, body: Body) -> Response {
    let (s, user) = try_page!(target(&mut v, body).await);
    let ctx = ctx(&v, &s);
    let core = v.app.core.clone();
    match core.reset(&user, &ctx).await {
        Ok(()) => {
            let text = v.t("admin.was_reset");
            v.notice(text);
            back_to(v, &user)
        }
        Err(CoreError::Refused(r)) => {
            let text = refusal(v.lang, &r);
            v.notice(text);
            back_to(v, &user)
        }
        Err(e) => v.failure_page(&e),
    }
}
