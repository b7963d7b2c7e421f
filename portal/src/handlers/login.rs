//! Signing in: ID and password, then the code (or a trusted browser), "Trust this
//! browser", "Can't log in?" (a mailed code, or a helpdesk request), a reset link, and
//! signing out.

use axum::http::StatusCode;
use axum::response::Response;
use otpgate_core::service::{
    Accepted, Answer, CodeDelivery, ContinueRequest, Credential, DoorPolicy, Factor, LoginRequest,
    LoginStep, PendingLogin,
};
use otpgate_core::user::UserName;
use otpgate_core::{CoreError, Refusal};
use zeroize::Zeroizing;

use super::{Body, try_page};
use crate::app::metric;
use crate::error::{error_block, refusal};
use crate::form::Form;
use crate::html::{csrf_field, esc};
use crate::session::{Signed, Stage};
use crate::visit::Visit;

fn count(result: &'static str) {
    metrics::counter!(metric::REQUESTS, "door" => "portal", "result" => result).increment(1);
}

/// Whether the entry is in the configured operators' group (by DN or by `cn`).
fn is_admin(admin_group: Option<&str>, groups: &[String]) -> bool {
    let Some(admin) = admin_group else {
        return false;
    };
    groups.iter().any(|g| {
        g.eq_ignore_ascii_case(admin)
            || g.split(',')
                .next()
                .and_then(|rdn| rdn.trim().split_once('='))
                .is_some_and(|(k, val)| {
                    k.eq_ignore_ascii_case("cn") && val.eq_ignore_ascii_case(admin)
                })
    })
}

/// The session after an accept.
fn signed_in(v: &Visit, accepted: &Accepted) -> Signed {
    Signed {
        admin: is_admin(
            v.app.options.admin_group.as_deref(),
            &accepted.entry().groups,
        ),
        user: accepted.user().clone(),
    }
}

fn login_form(v: &Visit, error: Option<&str>, user: &str) -> String {
    format!(
        r#"{error}<form method="post" action="/login">{csrf}
<label for="user">{l_user}</label><input type="text" id="user" name="user" value="{user}" autocomplete="username" autocapitalize="none" required autofocus>
<label for="password">{l_pw}</label><input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" id="login">{l_next}</button></form>"#,
        error = error.map(error_block).unwrap_or_default(),
        csrf = csrf_field(&v.csrf()),
        l_user = esc(v.t("login.user")),
        l_pw = esc(v.t("login.password")),
        l_next = esc(v.t("login.next")),
        user = esc(user),
    )
}

/// GET /login.
pub async fn login_page(v: Visit) -> Response {
    match v.session.stage {
        Stage::Anonymous => {
            let body = login_form(&v, None, "");
            let title = v.t("login.title");
            v.page(title, &body)
        }
        Stage::Password(_) => v.redirect("/login/code"),
        _ => v.redirect("/"),
    }
}

fn login_failed(v: Visit, user: &str, key: &str, status: StatusCode) -> Response {
    let text = if key == "ref.locked" {
        v.with_contact(v.t(key))
    } else {
        v.t(key).to_string()
    };
    let body = login_form(&v, Some(&esc(&text)), user);
    let title = v.t("login.title");
    v.page_status(status, title, &body)
}

/// POST /login: the password step. The core's flow decides what follows: a trusted
/// browser signs in, a user with no second factor gets a set-up session, the rest are
/// asked for a code.
pub async fn login_post(mut v: Visit, body: Body) -> Response {
    let form = try_page!(v.form(body));
    let name = form.str("user").trim().to_string();
    if !v.app.limiter.allow(v.remote) {
        return login_failed(v, &name, "err.too_many.text", StatusCode::TOO_MANY_REQUESTS);
    }
    let ctx = v.ctx();
    let core = v.app.core.clone();
    let Ok(user) = UserName::parse(&name) else {
        count("reject");
        return login_failed(v, &name, "login.failed", StatusCode::UNAUTHORIZED);
    };
    let password = Zeroizing::new(form.str("password").as_bytes().to_vec());
    drop(form);
    let device = if v.device.is_some() {
        Some(try_page!(v.device_id()))
    } else {
        None
    };
    let step = core
        .login(LoginRequest {
            user,
            ctx,
            credential: Credential::Password(password),
            answer: None,
            device,
            remember: false,
            // Neither an app nor an address: the password alone opens a set-up
            // session (the portal is where users enroll; `[[policy]]` is not read here).
            policy: DoorPolicy::portal(),
        })
        .await;
    match step {
        Ok(LoginStep::Refused(r)) => {
            count("reject");
            let key = match r {
                Refusal::Locked(_) => "ref.locked",
                _ => "login.failed",
            };
            let status = match r {
                Refusal::Locked(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_failed(v, &name, key, status)
        }
        Ok(step) => {
            // No fixation: past the password, a new session id and CSRF token.
            try_page!(v.rotate());
            v.session.stage = Stage::Anonymous;
            match step {
                LoginStep::NeedCode { pending, .. } => {
                    v.session.stage = Stage::Password(pending);
                    v.redirect("/login/code")
                }
                LoginStep::Accepted(accepted) => signed_in_page(v, &accepted),
                // The portal's policy never enrolls at the login (it has its own pages).
                LoginStep::Refused(_) | LoginStep::Enroll { .. } => v.redirect("/login"),
            }
        }
        Err(e) => {
            count("error");
            v.failure_page(&e)
        }
    }
}

/// Stores the signed-in stage after an accept, and goes home.
fn signed_in_page(mut v: Visit, accepted: &Accepted) -> Response {
    count("accept");
    if accepted.remembered().is_some() {
        v.set_device_cookie();
    }
    let signed = signed_in(&v, accepted);
    v.session.stage = if accepted.factor() == Factor::NotEnrolled {
        Stage::Limited(signed)
    } else {
        Stage::Full(signed)
    };
    v.redirect("/")
}

/// The code page's body, with an error or a notice above.
fn code_body(v: &Visit, error: Option<&str>) -> String {
    let csrf = v.csrf();
    format!(
        r#"{error}<form method="post" action="/login/code">{csrf_f}
<label for="code">{l_code}</label><input type="text" id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="12" required autofocus>
<label class="check"><input type="checkbox" id="trust" name="trust" value="on"> {l_trust}</label>
<button type="submit" id="verify">{l_signin}</button></form>
<section><h2>{h_help}</h2><p>{p_help}</p>
<form method="post" action="/login/help">{csrf_f}<button type="submit" class="secondary" id="cant">{b_help}</button></form></section>
<section><h2>{h_lost}</h2><p>{p_lost}</p>
<form method="post" action="/login/reset">{csrf_f}<button type="submit" class="secondary" id="lost">{b_lost}</button></form></section>
<p><form method="post" action="/logout" class="inline">{csrf_f}<button type="submit" class="link">{b_cancel}</button></form></p>"#,
        error = error.map(error_block).unwrap_or_default(),
        csrf_f = csrf_field(&csrf),
        l_code = esc(v.t("code.label")),
        l_trust = esc(&v.t("code.trust").replace(
            "{days}",
            &(v.app.options.remember_for.as_secs() / 86_400)
                .max(1)
                .to_string()
        )),
        l_signin = esc(v.t("code.signin")),
        h_help = esc(v.t("help.title")),
        p_help = esc(v.t("help.text")),
        b_help = esc(v.t("help.button")),
        h_lost = esc(v.t("lost.title")),
        p_lost = esc(v.t("lost.text")),
        b_lost = esc(v.t("lost.button")),
        b_cancel = esc(v.t("code.cancel")),
    )
}

fn code_page_with(v: Visit, status: StatusCode, error: Option<&str>) -> Response {
    let body = code_body(&v, error);
    let title = v.t("code.title");
    v.page_status(status, title, &body)
}

/// The login waiting for the code, or the redirect.
fn pending_login(v: &Visit) -> Option<PendingLogin> {
    match &v.session.stage {
        Stage::Password(p) => Some(p.clone()),
        _ => None,
    }
}

/// The form and the waiting user of a post on the code page, or the early answer.
macro_rules! pending {
    ($v:ident, $body:ident) => {
        match pending_step(&mut $v, $body) {
            Ok(found) => found,
            Err(Step::Response(r)) => return r,
            Err(Step::Back) => return $v.redirect("/login"),
            Err(Step::TooMany) => return too_many($v),
        }
    };
}

/// Why a post on the code page stops early.
enum Step {
    /// The form was refused (this page says why).
    Response(Response),
    /// No password step in this session.
    Back,
    /// Over the rate limit.
    TooMany,
}

/// The form (CSRF checked), the login waiting for a code, and the rate limit.
fn pending_step(v: &mut Visit, body: Body) -> Result<(Form, PendingLogin), Step> {
    let form = v.form(body).map_err(Step::Response)?;
    let pending = pending_login(v).ok_or(Step::Back)?;
    if !v.app.limiter.allow(v.remote) {
        return Err(Step::TooMany);
    }
    Ok((form, pending))
}

fn too_many(v: Visit) -> Response {
    let msg = esc(v.t("err.too_many.text"));
    code_page_with(v, StatusCode::TOO_MANY_REQUESTS, Some(&msg))
}

/// GET /login/code.
pub async fn code_page(v: Visit) -> Response {
    if pending_login(&v).is_none() {
        return v.redirect("/login");
    }
    code_page_with(v, StatusCode::OK, None)
}

/// An answer on the code page, through the core's flow.
async fn answer(
    v: &mut Visit,
    pending: PendingLogin,
    answer: Answer,
    trust: bool,
) -> Result<LoginStep, Response> {
    let device = if trust { Some(v.device_id()?) } else { None };
    let core = v.app.core.clone();
    core.continue_login(ContinueRequest {
        pending,
        answer,
        ctx: v.ctx(),
        device,
        remember: trust,
    })
    .await
    .map_err(|e| {
        count("error");
        v.failure_page(&e)
    })
}

/// POST /login/code: the second factor.
pub async fn code_post(mut v: Visit, body: Body) -> Response {
    let (form, pending) = pending!(v, body);
    let code = Answer::Code(Zeroizing::new(form.str("code").to_string()));
    let trust = form.checked("trust");
    drop(form);
    match answer(&mut v, pending, code, trust).await {
        Ok(LoginStep::Accepted(accepted)) => signed_in_page(v, &accepted),
        Ok(LoginStep::Refused(r)) => {
            count("reject");
            let msg = refusal(v.lang, &r);
            code_page_with(v, StatusCode::UNAUTHORIZED, Some(&msg))
        }
        // A code never asks for another; shown as the page again.
        Ok(LoginStep::NeedCode { .. } | LoginStep::Enroll { .. }) => {
            code_page_with(v, StatusCode::OK, None)
        }
        Err(page) => page,
    }
}

/// POST /login/help: "Can't log in?" — a mailed code, or a helpdesk request.
pub async fn help_post(mut v: Visit, body: Body) -> Response {
    let (_form, pending) = pending!(v, body);
    match answer(&mut v, pending, Answer::Keyword, false).await {
        Ok(LoginStep::NeedCode {
            notice: Some(CodeDelivery::Mailed { masked_address }),
            ..
        }) => {
            let text = v.t("help.mailed").replace("{address}", &masked_address);
            v.notice(text);
            code_page_with(v, StatusCode::OK, None)
        }
        Ok(LoginStep::NeedCode { .. }) => helpdesk_page(v),
        Ok(LoginStep::Enroll { .. }) => code_page_with(v, StatusCode::OK, None),
        Ok(LoginStep::Refused(r)) => {
            let msg = refusal(v.lang, &r);
            code_page_with(v, StatusCode::BAD_REQUEST, Some(&msg))
        }
        Ok(LoginStep::Accepted(accepted)) => signed_in_page(v, &accepted),
        Err(page) => page,
    }
}

/// "Your request went to the helpdesk": what happens next, and the code form.
fn helpdesk_page(v: Visit) -> Response {
    let contact = v
        .helpdesk_contact()
        .map(|c| format!(r#"<p id="helpdesk-contact">{}</p>"#, esc(&c)))
        .unwrap_or_default();
    let body = format!(
        r#"<div class="warning" id="helpdesk"><p>{p1}</p><p>{p2}</p>{contact}</div>{form}"#,
        p1 = esc(v.t("helpdesk.queued")),
        p2 = esc(v.t("helpdesk.next")),
        form = code_body(&v, None),
    );
    let title = v.t("helpdesk.title");
    v.page(title, &body)
}

/// POST /login/reset: "Lost your device?" from the code page — mails a reset link.
pub async fn reset_request_post(mut v: Visit, body: Body) -> Response {
    let (_form, pending) = pending!(v, body);
    let ctx = v.ctx();
    match v.app.core.request_reset(pending.user(), &ctx).await {
        Ok(delivery) => {
            let text = reset_notice(&v, &delivery);
            v.notice(text);
            code_page_with(v, StatusCode::OK, None)
        }
        Err(CoreError::Refused(r)) => {
            let msg = refusal(v.lang, &r);
            code_page_with(v, StatusCode::BAD_REQUEST, Some(&msg))
        }
        Err(e) => v.failure_page(&e),
    }
}

/// What the user is told after asking for a reset.
pub fn reset_notice(v: &Visit, delivery: &CodeDelivery) -> String {
    match delivery {
        CodeDelivery::Mailed { masked_address } => {
            v.t("reset.mailed").replace("{address}", masked_address)
        }
        CodeDelivery::QueuedForHelpdesk => v.with_contact(v.t("reset.helpdesk")),
    }
}

/// POST /logout.
pub async fn logout_post(mut v: Visit, body: Body) -> Response {
    let _form = try_page!(v.form(body));
    v.session.stage = Stage::Anonymous;
    try_page!(v.rotate());
    v.flash("logout.done");
    v.redirect("/login")
}

fn reset_form(v: &Visit, user: &str, token: &str, error: Option<&str>) -> String {
    format!(
        r#"{error}<p>{intro}</p><form method="post" action="/reset/confirm">{csrf}
<input type="hidden" name="user" value="{user}"><input type="hidden" name="token" value="{token}">
<label>{l_user}</label><p><strong>{user}</strong></p>
<label for="password">{l_pw}</label><input type="password" id="password" name="password" autocomplete="current-password" required autofocus>
<button type="submit" id="reset">{b}</button></form>"#,
        error = error.map(error_block).unwrap_or_default(),
        intro = esc(v.t("resetlink.intro")),
        csrf = csrf_field(&v.csrf()),
        user = esc(user),
        token = esc(token),
        l_user = esc(v.t("login.user")),
        l_pw = esc(v.t("login.password")),
        b = esc(v.t("resetlink.button")),
    )
}

/// GET /reset/confirm?user=…&token=…: the mailed link.
pub async fn reset_confirm_page(mut v: Visit) -> Response {
    let q = try_page!(v.query_form());
    let (user, token) = (q.str("user").to_string(), q.str("token").to_string());
    if UserName::parse(&user).is_err() || token.is_empty() || token.len() > 128 {
        return v.error_page(StatusCode::BAD_REQUEST, "err.link");
    }
    let body = reset_form(&v, &user, &token, None);
    let title = v.t("resetlink.title");
    v.page(title, &body)
}

/// POST /reset/confirm: with the password, removes the app and trusted browsers and
/// signs in for app set-up.
pub async fn reset_confirm_post(mut v: Visit, body: Body) -> Response {
    let form = try_page!(v.form(body));
    let (name, token) = (form.str("user").to_string(), form.str("token").to_string());
    let Ok(user) = UserName::parse(&name) else {
        return v.error_page(StatusCode::BAD_REQUEST, "err.link");
    };
    let title = v.t("resetlink.title");
    if !v.app.limiter.allow(v.remote) {
        let body = reset_form(&v, &name, &token, Some(&esc(v.t("err.too_many.text"))));
        return v.page_status(StatusCode::TOO_MANY_REQUESTS, title, &body);
    }
    let ctx = v.ctx();
    let core = v.app.core.clone();
    let password = Zeroizing::new(form.str("password").as_bytes().to_vec());
    let token = Zeroizing::new(token);
    drop(form);
    match core
        .login_with_reset_link(user, password, token.clone(), ctx)
        .await
    {
        Ok(LoginStep::Accepted(accepted)) => {
            try_page!(v.rotate());
            let text = v.t("resetlink.done");
            v.notice(text);
            let response = signed_in_page(v, &accepted);
            redirect_to(response, "/app")
        }
        Ok(LoginStep::Refused(Refusal::NothingOutstanding)) => {
            count("reject");
            v.error_page(StatusCode::BAD_REQUEST, "err.link")
        }
        Ok(_) => {
            count("reject");
            let body = reset_form(&v, &name, &token, Some(&esc(v.t("login.failed"))));
            v.page_status(StatusCode::UNAUTHORIZED, title, &body)
        }
        Err(e) => v.failure_page(&e),
    }
}

/// Points a redirect elsewhere.
fn redirect_to(mut response: Response, to: &'static str) -> Response {
    if response.status() == StatusCode::SEE_OTHER {
        response.headers_mut().insert(
            axum::http::header::LOCATION,
            axum::http::HeaderValue::from_static(to),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_admin;

    #[test]
    fn operators_by_group_dn_or_cn() {
        let groups = vec!["cn=otp-admins,ou=groups,dc=example,dc=org".to_string()];
        assert!(is_admin(Some("otp-admins"), &groups));
        assert!(is_admin(
            Some("CN=otp-admins,ou=groups,dc=example,dc=org"),
            &groups
        ));
        assert!(!is_admin(Some("admins"), &groups));
        assert!(!is_admin(Some("otp-admins,ou=groups"), &groups));
        assert!(!is_admin(None, &groups));
        assert!(!is_admin(Some("otp-admins"), &[]));
    }
}
