//! A signed-in user's pages: home (state and next steps), the notification address,
//! the app (set-up, another device, reset), trusted browsers, and the language switch.

use axum::http::StatusCode;
use axum::response::Response;
use otpgate_core::CoreError;
use otpgate_core::audit::Method;
use otpgate_core::service::{Enrollment, UserStatus};

use super::{Body, signed, try_page};
use crate::error::{error_block, refusal};
use crate::html::{button_form, code_form, csrf_field, esc};
use crate::i18n::Lang;
use crate::session::Signed;
use crate::visit::Visit;

/// A posted code: the form (CSRF checked), the signed-in user, and the rate limit.
macro_rules! code_post {
    ($v:ident, $body:ident, $limited_ok:expr) => {{
        let form = try_page!($v.form($body));
        let s = signed!($v, $limited_ok);
        if !$v.app.limiter.allow($v.remote) {
            return $v.error_page(StatusCode::TOO_MANY_REQUESTS, "err.too_many");
        }
        (form, s)
    }};
}

/// The user's status, or the failure page.
async fn status(v: &mut Visit, s: &Signed) -> Result<UserStatus, Response> {
    let core = v.app.core.clone();
    core.status(&s.user).await.map_err(|e| v.failure_page(&e))
}

fn no_address_warning(v: &Visit) -> String {
    format!(
        r#"<p class="warning" id="no-address">{}</p>"#,
        esc(&v.with_contact(v.t("warn.no_address")))
    )
}

/// GET /: where the user stands and what to do next.
pub async fn home(mut v: Visit) -> Response {
    let s = signed!(v, true);
    let st = try_page!(status(&mut v, &s).await);
    let name = st
        .display_name
        .clone()
        .unwrap_or_else(|| s.user.to_string());
    let mut body = format!(
        r#"<p>{}</p><table><tr><th>{}</th><td id="state-address">{}</td></tr><tr><th>{}</th><td id="state-app">{}</td></tr><tr><th>{}</th><td>{}</td></tr></table>"#,
        esc(&v.t("home.hello").replace("{name}", &name)),
        esc(v.t("home.address")),
        esc(st
            .notification_address
            .as_deref()
            .unwrap_or(v.t("home.none"))),
        esc(v.t("home.app")),
        esc(v.t(&format!("state.{}", st.state))),
        esc(v.t("home.trusted")),
        st.trusted_devices,
    );
    let mut steps = String::new();
    if st.notification_address.is_none() {
        steps.push_str(&format!(
            r#"<li><a href="/address" id="step-address">{}</a></li>"#,
            esc(v.t("home.step_address"))
        ));
    }
    if st.state != "app-enrolled" {
        steps.push_str(&format!(
            r#"<li><a href="/app" id="step-app">{}</a></li>"#,
            esc(v.t("home.step_app"))
        ));
    }
    if !steps.is_empty() {
        body.push_str(&format!(
            "<section><h2>{}</h2><ol>{steps}</ol></section>",
            esc(v.t("home.next"))
        ));
    }
    if st.notification_address.is_none() {
        body.push_str(&no_address_warning(&v));
    }
    body.push_str(&policy_section(&v, &st));
    let title = v.t("home.title");
    v.page(title, &body)
}

/// What `[[policy]]` asks of the user at each door (and client), with the deadline.
fn policy_section(v: &Visit, st: &UserStatus) -> String {
    use otpgate_core::policy::Requirement;
    let mut rows = String::new();
    for place in &st.policy {
        let mut door = v.t(&format!("policy.{}", place.door)).to_string();
        if let Some(client) = &place.client {
            door = format!("{door} — {}", v.t("policy.via").replace("{client}", client));
        }
        let mut what = v
            .t(&format!("policy.{}", place.requirement.name()))
            .to_string();
        if let Requirement::Required {
            enroll_by: Some(by),
            ..
        } = place.requirement
        {
            what = format!(
                "{what}; {}",
                v.t("policy.enroll_by").replace("{date}", &by.to_string())
            );
        }
        rows.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(&door),
            esc(&what)
        ));
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        r#"<section id="policy"><h2>{}</h2><table>{rows}</table></section>"#,
        esc(v.t("policy.title"))
    )
}

fn address_body(v: &Visit, st: &UserStatus, error: Option<&str>) -> String {
    let csrf = v.csrf();
    let current = match &st.notification_address {
        Some(a) => esc(&v.t("address.current").replace("{address}", a)),
        None => esc(v.t("address.none")),
    };
    let mut body = format!(
        r#"{error}<p id="address-current">{current}</p>
<form method="post" action="/address">{csrf_f}
<label for="address">{l_addr}</label><input type="email" id="address" name="address" autocomplete="email" required>
<p>{hint}</p><button type="submit" id="send-code">{b_send}</button></form>"#,
        error = error.map(error_block).unwrap_or_default(),
        csrf_f = csrf_field(&csrf),
        l_addr = esc(v.t("address.label")),
        hint = esc(v.t("address.hint")),
        b_send = esc(v.t("address.send")),
    );
    if let Some(pending) = &st.pending_address {
        body.push_str(&format!(
            r#"<section><h2>{h}</h2><p>{p}</p>{form}</section>"#,
            h = esc(v.t("address.confirm_title")),
            p = esc(&v.t("address.pending").replace("{address}", pending)),
            form = code_form(
                "/address/confirm",
                &csrf,
                v.t("address.code"),
                "confirm-address",
                v.t("address.confirm")
            ),
        ));
    }
    body
}

/// GET /address.
pub async fn address_page(mut v: Visit) -> Response {
    let s = signed!(v, true);
    let st = try_page!(status(&mut v, &s).await);
    let body = address_body(&v, &st, None);
    let title = v.t("address.title");
    v.page(title, &body)
}

async fn address_error(mut v: Visit, s: &Signed, e: CoreError) -> Response {
    let CoreError::Refused(r) = e else {
        return v.failure_page(&e);
    };
    let st = try_page!(status(&mut v, s).await);
    let body = address_body(&v, &st, Some(&refusal(v.lang, &r)));
    let title = v.t("address.title");
    v.page_status(StatusCode::BAD_REQUEST, title, &body)
}

/// POST /address: mails a code to the new address (denied domains refused).
pub async fn address_post(mut v: Visit, body: Body) -> Response {
    let form = try_page!(v.form(body));
    let s = signed!(v, true);
    let ctx = v.ctx();
    let core = v.app.core.clone();
    match core.set_address(&s.user, form.str("address"), &ctx).await {
        Ok(masked) => {
            let text = v.t("address.sent").replace("{address}", &masked);
            v.notice(text);
            v.redirect("/address")
        }
        Err(e) => address_error(v, &s, e).await,
    }
}

/// POST /address/confirm: the mailed code makes the address the user's.
pub async fn address_confirm_post(mut v: Visit, body: Body) -> Response {
    let (form, s) = code_post!(v, body, true);
    let ctx = v.ctx();
    let core = v.app.core.clone();
    match core.confirm_address(&s.user, form.str("code"), &ctx).await {
        Ok((address, proof)) => {
            // The user proved the address in this session: it is a full one now.
            v.upgrade(proof);
            let text = v.t("address.done").replace("{address}", &address);
            v.notice(text);
            v.redirect("/")
        }
        Err(e) => address_error(v, &s, e).await,
    }
}

/// GET /app.
pub async fn app_page(mut v: Visit) -> Response {
    let s = signed!(v, true);
    let st = try_page!(status(&mut v, &s).await);
    let body = app_body(&v, &st, None);
    let title = v.t("app.title");
    v.page(title, &body)
}

fn app_body(v: &Visit, st: &UserStatus, error: Option<&str>) -> String {
    let csrf = v.csrf();
    let error = error.map(error_block).unwrap_or_default();
    let warning = if st.notification_address.is_none() {
        no_address_warning(v)
    } else {
        String::new()
    };
    if st.state == "app-enrolled" {
        format!(
            r#"{error}<p id="app-enrolled">{p}</p>
<section><h2>{h_other}</h2><p>{p_other}</p>{other}</section>
<section><h2>{h_reset}</h2><p>{p_reset}</p>{reset}</section>{warning}"#,
            p = esc(v.t("app.enrolled")),
            h_other = esc(v.t("app.another_title")),
            p_other = esc(v.t("app.another_text")),
            other = code_form(
                "/app/another",
                &csrf,
                v.t("code.label"),
                "show-again",
                v.t("app.another_button")
            ),
            h_reset = esc(v.t("lost.title")),
            p_reset = esc(v.t("app.reset_text")),
            reset = button_form("/reset", &csrf, &[], v.t("lost.button"), "secondary"),
        )
    } else {
        format!(
            r#"{error}{warning}<p>{p}</p>{enroll}"#,
            p = esc(v.t("app.intro")),
            enroll = button_form("/app/enroll", &csrf, &[], v.t("app.start"), ""),
        )
    }
}

/// The QR code and the secret in text; with the confirmation form when it is pending.
fn secret_body(v: &Visit, e: &Enrollment, confirm: bool) -> Result<String, CoreError> {
    let svg = otpgate_core::qr::svg(&e.otpauth_uri)?;
    let svg = svg
        .find("<svg")
        .map_or(svg.as_str(), |at| &svg[at..])
        .to_string();
    let grouped: Vec<String> = e
        .secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let mut body = String::new();
    if e.warning.is_some() {
        body.push_str(&no_address_warning(v));
    }
    body.push_str(&format!(
        r#"<p>{scan}</p><div class="qr" id="qr">{svg}</div><p>{typed}</p><p class="secret" id="secret">{secret}</p>"#,
        scan = esc(v.t("app.scan")),
        typed = esc(v.t("app.typed")),
        secret = esc(&grouped.join(" ")),
    ));
    if confirm {
        body.push_str(&app_confirm_form(v));
    } else {
        body.push_str(&format!(
            r#"<p><a href="/">{}</a></p>"#,
            esc(v.t("back.home"))
        ));
    }
    Ok(body)
}

fn app_confirm_form(v: &Visit) -> String {
    code_form(
        "/app/confirm",
        &v.csrf(),
        v.t("app.confirm_label"),
        "confirm-app",
        v.t("app.confirm"),
    )
}

/// POST /app/enroll: a new pending secret, shown once.
pub async fn app_enroll_post(mut v: Visit, body: Body) -> Response {
    let _form = try_page!(v.form(body));
    let s = signed!(v, true);
    let ctx = v.ctx();
    let core = v.app.core.clone();
    match core.enroll(&s.user, &ctx).await {
        Ok(enrollment) => match secret_body(&v, &enrollment, true) {
            Ok(body) => {
                let title = v.t("app.setup_title");
                v.page(title, &body)
            }
            Err(e) => v.failure_page(&e),
        },
        Err(CoreError::Refused(r)) => {
            let text = refusal(v.lang, &r);
            let st = try_page!(status(&mut v, &s).await);
            let body = app_body(&v, &st, Some(&text));
            let title = v.t("app.title");
            v.page_status(StatusCode::BAD_REQUEST, title, &body)
        }
        Err(e) => v.failure_page(&e),
    }
}

/// POST /app/confirm: the first code activates the app.
pub async fn app_confirm_post(mut v: Visit, body: Body) -> Response {
    let (form, s) = code_post!(v, body, true);
    let ctx = v.ctx();
    let core = v.app.core.clone();
    match core
        .confirm_enrollment(&s.user, form.str("code"), &ctx)
        .await
    {
        Ok(proof) => {
            v.upgrade(proof);
            let text = v.t("app.done");
            v.notice(text);
            v.redirect("/")
        }
        Err(CoreError::Refused(r)) => {
            let csrf = v.csrf();
            let body = format!(
                r#"{err}{form}<section>{again}</section>"#,
                err = error_block(&refusal(v.lang, &r)),
                form = app_confirm_form(&v),
                again = button_form("/app/enroll", &csrf, &[], v.t("app.restart"), "secondary"),
            );
            let title = v.t("app.setup_title");
            v.page_status(StatusCode::BAD_REQUEST, title, &body)
        }
        Err(e) => v.failure_page(&e),
    }
}

/// POST /app/another: after a fresh code, the enrolled secret again.
pub async fn app_another_post(mut v: Visit, body: Body) -> Response {
    let (form, s) = code_post!(v, body, false);
    let ctx = v.ctx();
    let core = v.app.core.clone();
    let refused = match core
        .verify_code(&s.user, form.str("code"), &ctx, Method::AddDevice)
        .await
    {
        Ok(Ok(otp)) => match core.show_secret(&otp, &ctx).await {
            Ok(enrollment) => {
                return match secret_body(&v, &enrollment, false) {
                    Ok(body) => {
                        let title = v.t("app.another_title");
                        v.page(title, &body)
                    }
                    Err(e) => v.failure_page(&e),
                };
            }
            Err(CoreError::Refused(r)) => r,
            Err(e) => return v.failure_page(&e),
        },
        Ok(Err(r)) => r,
        Err(e) => return v.failure_page(&e),
    };
    let st = try_page!(status(&mut v, &s).await);
    let body = app_body(&v, &st, Some(&refusal(v.lang, &refused)));
    let title = v.t("app.title");
    v.page_status(StatusCode::UNAUTHORIZED, title, &body)
}

/// POST /reset: mails a reset link (or queues a helpdesk request).
pub async fn reset_post(mut v: Visit, body: Body) -> Response {
    let _form = try_page!(v.form(body));
    let s = signed!(v, false);
    let ctx = v.ctx();
    let core = v.app.core.clone();
    match core.request_reset(&s.user, &ctx).await {
        Ok(delivery) => {
            let text = super::login::reset_notice(&v, &delivery);
            v.notice(text);
            v.redirect("/app")
        }
        Err(CoreError::Refused(r)) => {
            let text = refusal(v.lang, &r);
            v.notice(text);
            v.redirect("/app")
        }
        Err(e) => v.failure_page(&e),
    }
}

/// GET /trusted: this user's trusted browsers and devices.
pub async fn trusted_page(mut v: Visit) -> Response {
    let s = signed!(v, false);
    let core = v.app.core.clone();
    let devices = match core.trusted_devices(&s.user).await {
        Ok(d) => d,
        Err(e) => return v.failure_page(&e),
    };
    let csrf = v.csrf();
    let mut body = String::new();
    if devices.is_empty() {
        body.push_str(&format!(
            r#"<p id="trusted-none">{}</p>"#,
            esc(v.t("trusted.none"))
        ));
    } else {
        body.push_str(&format!(
            r#"<table id="trusted"><tr><th>{}</th><th>{}</th><th>{}</th><th></th></tr>"#,
            esc(v.t("trusted.device")),
            esc(v.t("trusted.since")),
            esc(v.t("trusted.until")),
        ));
        for d in &devices {
            body.push_str(&format!(
                "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.label),
                esc(d.door.as_str()),
                esc(&d.created_at.to_rfc3339()),
                esc(&d.expires_at.to_rfc3339()),
                button_form(
                    "/trusted/revoke",
                    &csrf,
                    &[("id", &d.id)],
                    v.t("trusted.revoke"),
                    "secondary"
                ),
            ));
        }
        body.push_str("</table>");
        body.push_str(&button_form(
            "/trusted/revoke",
            &csrf,
            &[("id", "all")],
            v.t("trusted.revoke_all"),
            "",
        ));
    }
    let title = v.t("trusted.title");
    v.page(title, &body)
}

/// POST /trusted/revoke: one (`id`) or all (`id=all`).
pub async fn trusted_revoke_post(mut v: Visit, body: Body) -> Response {
    let form = try_page!(v.form(body));
    let s = signed!(v, false);
    let id = form.str("id");
    let which = (id != "all").then_some(id);
    let ctx = v.ctx();
    let core = v.app.core.clone();
    match core.revoke_trusted(&s.user, which, &ctx).await {
        Ok(n) => {
            let text = v.t("trusted.revoked").replace("{n}", &n.to_string());
            v.notice(text);
            v.redirect("/trusted")
        }
        Err(CoreError::Refused(r)) => {
            let text = refusal(v.lang, &r);
            v.notice(text);
            v.redirect("/trusted")
        }
        Err(e) => v.failure_page(&e),
    }
}

/// A local path to go back to after switching language (never another site).
fn back_path(v: &Visit) -> String {
    let q = v.query_form().ok();
    safe_back(q.as_ref().map(|q| q.str("back")).unwrap_or("/"))
}

/// `back` if it is a path on this site (not `//host`, not a language switch), else `/`.
fn safe_back(back: &str) -> String {
    let safe = back.starts_with('/')
        && !back.starts_with("//")
        && !back.contains('\\')
        && back.bytes().all(|b| b.is_ascii_graphic());
    if safe && !back.starts_with("/lang/") {
        back.to_string()
    } else {
        "/".into()
    }
}

async fn switch(mut v: Visit, lang: Lang) -> Response {
    let back = back_path(&v);
    v.set_lang(lang);
    v.redirect(&back)
}

/// GET /lang/en.
pub async fn lang_en(v: Visit) -> Response {
    switch(v, Lang::En).await
}

/// GET /lang/ja.
pub async fn lang_ja(v: Visit) -> Response {
    switch(v, Lang::Ja).await
}

#[cfg(test)]
mod tests {
    use super::safe_back;

    #[test]
    fn the_language_switch_returns_only_to_this_site() {
        assert_eq!(safe_back("/address"), "/address");
        assert_eq!(
            safe_back("/reset/confirm?user=a&token=b"),
            "/reset/confirm?user=a&token=b"
        );
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "/lang/ja",
            "",
            "/a b",
        ] {
            assert_eq!(safe_back(bad), "/", "{bad}");
        }
    }
}
