//! One request as a handler sees it: its session (locked until the response is built),
//! language, client address and cookies; the CSRF check on forms; and the responses.

use std::net::{IpAddr, Ipv4Addr};

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::service::{DeviceId, OtpVerified};
use tokio::sync::OwnedMutexGuard;

use crate::app::App;
use crate::form::Form;
use crate::html::{self, Layout, Nav};
use crate::i18n::{self, Lang, t};
use crate::server::Remote;
use crate::session::{Session, Signed, Stage};

/// The session cookie: Lax, so that a link in a mail opens a signed-in session.
pub const SESSION_COOKIE: &str = "__Host-otpgate-session";
/// The trusted-browser cookie: a random token whose keyed hash is the store's record.
pub const DEVICE_COOKIE: &str = "__Host-otpgate-device";
/// The chosen language.
pub const LANG_COOKIE: &str = "__Host-otpgate-lang";

/// Why a page needs a signed-in user and did not get one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    /// Not signed in.
    Login,
    /// Password done; the code is awaited.
    Code,
    /// The page needs both factors; this is a password-only session.
    NeedsFull,
    /// The password-only session ended: a factor appeared elsewhere.
    Ended,
    /// Not an operator.
    NotAdmin,
}

/// One request.
pub struct Visit {
    pub app: App,
    pub lang: Lang,
    pub sid: String,
    pub session: OwnedMutexGuard<Session>,
    pub remote: IpAddr,
    /// The trusted-browser token, if the browser has one.
    pub device: Option<String>,
    pub user_agent: String,
    /// This page (path and query) for a GET, else `/`: where the language links return.
    pub path: String,
    pub query: String,
    set_cookies: Vec<String>,
}

fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn cookie<'a>(all: &'a [(String, String)], name: &str) -> Option<&'a str> {
    all.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A well-formed random token (64 hex digits), as the portal makes them.
fn token_ok(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl FromRequestParts<App> for Visit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let jar = cookies(&parts.headers);
        let lang = cookie(&jar, LANG_COOKIE)
            .and_then(Lang::from_code)
            .unwrap_or_else(|| i18n::negotiate(&parts.headers));
        let remote = parts
            .extensions
            .get::<Remote>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |r| r.0.ip());
        let mut set_cookies = Vec::new();
        let existing = cookie(&jar, SESSION_COOKIE)
            .filter(|id| token_ok(id))
            .and_then(|id| app.sessions.get(id).map(|s| (id.to_string(), s)));
        let (sid, session) = match existing {
            Some(found) => found,
            None => {
                let (id, session) = app.sessions.create(&app.random).map_err(|e| {
                    tracing::warn!("portal: no new session: {e}");
                    bare_page(lang, StatusCode::SERVICE_UNAVAILABLE, "err.busy")
                })?;
                set_cookies.push(session_cookie(&id));
                (id, session)
            }
        };
        let session = session.lock_owned().await;
        Ok(Visit {
            app: app.clone(),
            lang,
            sid,
            session,
            remote,
            device: cookie(&jar, DEVICE_COOKIE)
                .filter(|t| token_ok(t))
                .map(str::to_string),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(120)
                .collect(),
            // Where the language links come back to: this page for a GET, else home.
            path: match (parts.method == axum::http::Method::GET, parts.uri.query()) {
                (true, Some(q)) => format!("{}?{q}", parts.uri.path()),
                (true, None) => parts.uri.path().to_string(),
                (false, _) => "/".to_string(),
            },
            query: parts.uri.query().unwrap_or("").to_string(),
            set_cookies,
        })
    }
}

fn session_cookie(id: &str) -> String {
    format!("{SESSION_COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Lax")
}

/// A page outside any session (overload, bad request before a session exists).
pub fn bare_page(lang: Lang, status: StatusCode, key: &str) -> Response {
    let layout = Layout {
        lang,
        title: t(lang, key),
        user: None,
        nav: Nav::None,
        csrf: "",
        path: "/",
        notice: None,
    };
    let body = format!(
        r#"<p class="error">{}</p><p><a href="/">{}</a></p>"#,
        html::esc(t(lang, &format!("{key}.text"))),
        html::esc(t(lang, "back.home"))
    );
    (status, Html(html::page(&layout, &body))).into_response()
}

impl Visit {
    /// The audit context: the portal and the client's address.
    pub fn ctx(&self) -> RequestContext {
        RequestContext::new(Door::Portal, self.remote.to_string())
    }

    /// A message in the visitor's language.
    pub fn t(&self, key: &str) -> &'static str {
        t(self.lang, key)
    }

    /// The CSRF token of this session.
    pub fn csrf(&self) -> String {
        self.session.csrf.clone()
    }

    /// The signed-in user, if any (either kind of session).
    pub fn user(&self) -> Option<&Signed> {
        match &self.session.stage {
            Stage::Full(s) | Stage::Limited(s) => Some(s),
            _ => None,
        }
    }

    /// Parses a posted form and checks its CSRF token. Any failure is the portal's own
    /// page, never a parser's text.
    pub fn form(&mut self, body: Result<Bytes, BytesRejection>) -> Result<Form, Response> {
        let Ok(body) = body else {
            return Err(self.error_page(StatusCode::PAYLOAD_TOO_LARGE, "err.form"));
        };
        let Ok(form) = Form::parse(&body) else {
            return Err(self.error_page(StatusCode::BAD_REQUEST, "err.form"));
        };
        let given = form.str("csrf").as_bytes();
        let expected = self.session.csrf.as_bytes();
        let same = given.len() == expected.len()
            && bool::from(subtle::ConstantTimeEq::ct_eq(given, expected));
        if !same {
            return Err(self.error_page(StatusCode::FORBIDDEN, "err.csrf"));
        }
        Ok(form)
    }

    /// The query string, parsed.
    pub fn query_form(&self) -> Result<Form, Response> {
        Form::parse(self.query.as_bytes())
            .map_err(|_| bare_page(self.lang, StatusCode::BAD_REQUEST, "err.form"))
    }

    /// Starts a new session (new id and CSRF token), leaving the old one; the stage
    /// moves over. Used at the password step and at sign-out, against fixation.
    pub fn rotate(&mut self) -> Result<(), Response> {
        let (id, session) = self.app.sessions.create(&self.app.random).map_err(|e| {
            tracing::warn!("portal: no new session: {e}");
            bare_page(self.lang, StatusCode::SERVICE_UNAVAILABLE, "err.busy")
        })?;
        let Ok(mut guard) = session.try_lock_owned() else {
            return Err(bare_page(
                self.lang,
                StatusCode::SERVICE_UNAVAILABLE,
                "err.busy",
            ));
        };
        guard.stage = std::mem::take(&mut self.session.stage);
        guard.notice = self.session.notice.take();
        self.app.sessions.remove(&self.sid);
        self.session = guard;
        self.sid = id;
        self.set_cookies.retain(|c| !c.starts_with(SESSION_COOKIE));
        self.set_cookies.push(session_cookie(&self.sid));
        Ok(())
    }

    /// The trusted-browser identity of this browser, making a token when it has none.
    pub fn device_id(&mut self) -> Result<DeviceId, Response> {
        let token = match &self.device {
            Some(t) => t.clone(),
            None => {
                let t = otpgate_core::random::hex_id::<32>(&self.app.random)
                    .map_err(|e| self.failure_page(&e))?;
                self.device = Some(t.clone());
                t
            }
        };
        let label = if self.user_agent.is_empty() {
            format!("browser at {}", self.remote)
        } else {
            format!("{} ({})", self.user_agent, self.remote)
        };
        Ok(DeviceId {
            door: Door::Portal,
            identifier: token,
            label,
        })
    }

    /// Sets the trusted-browser cookie for the configured time.
    pub fn set_device_cookie(&mut self) {
        if let Some(token) = &self.device {
            let age = self.app.options.remember_for.as_secs();
            self.set_cookies.push(format!(
                "{DEVICE_COOKIE}={token}; Path=/; Max-Age={age}; Secure; HttpOnly; SameSite=Strict"
            ));
        }
    }

    /// Sets the language cookie.
    pub fn set_lang(&mut self, lang: Lang) {
        self.lang = lang;
        self.set_cookies.push(format!(
            "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; Secure; HttpOnly; SameSite=Lax",
            lang.code()
        ));
    }

    /// Keeps a message for the next page.
    pub fn notice(&mut self, text: impl Into<String>) {
        self.session.notice = Some(text.into());
    }

    fn nav(&self) -> Nav {
        match &self.session.stage {
            Stage::Full(s) => Nav::Full { admin: s.admin },
            Stage::Limited(_) => Nav::Limited,
            _ => Nav::None,
        }
    }

    fn finish(self, status: StatusCode, body: String) -> Response {
        let mut response = (status, Html(body)).into_response();
        for c in &self.set_cookies {
            if let Ok(v) = HeaderValue::from_str(c) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        response
    }

    /// A page in the layout, with the pending notice.
    pub fn page_status(mut self, status: StatusCode, title: &str, body: &str) -> Response {
        let notice = self.session.notice.take();
        let user = self.user().map(|s| s.user.to_string());
        let csrf = self.csrf();
        let layout = Layout {
            lang: self.lang,
            title,
            user: user.as_deref(),
            nav: self.nav(),
            csrf: &csrf,
            path: &self.path,
            notice: notice.as_deref(),
        };
        let text = html::page(&layout, body);
        self.finish(status, text)
    }

    /// A 200 page.
    pub fn page(self, title: &str, body: &str) -> Response {
        self.page_status(StatusCode::OK, title, body)
    }

    /// 303 See Other to `to` (a local path).
    pub fn redirect(self, to: &str) -> Response {
        let mut response = self.finish(StatusCode::SEE_OTHER, String::new());
        if let Ok(v) = HeaderValue::from_str(to) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        response
    }

    /// An error page with the message `key` and `key.text`.
    pub fn error_page(&mut self, status: StatusCode, key: &str) -> Response {
        let lang = self.lang;
        let mut r = bare_page(lang, status, key);
        for c in self.set_cookies.drain(..) {
            if let Ok(v) = HeaderValue::from_str(&c) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        r
    }

    /// The page for a backend or internal failure (fail closed; details only logged).
    pub fn failure_page(&mut self, e: &otpgate_core::CoreError) -> Response {
        crate::error::log_failure(e);
        match e {
            otpgate_core::CoreError::Backend { .. } => {
                self.error_page(StatusCode::SERVICE_UNAVAILABLE, "err.unavailable")
            }
            _ => self.error_page(StatusCode::INTERNAL_SERVER_ERROR, "err.internal"),
        }
    }

    /// Where a denied visitor goes.
    pub fn deny(mut self, d: Deny) -> Response {
        match d {
            Deny::Login => self.redirect("/login"),
            Deny::Code => self.redirect("/login/code"),
            Deny::NeedsFull => self.redirect("/"),
            Deny::Ended => {
                let text = self.t("login.ended");
                self.notice(text);
                self.redirect("/login")
            }
            Deny::NotAdmin => self.error_page(StatusCode::FORBIDDEN, "err.forbidden"),
        }
    }

    /// The signed-in user. A password-only session is allowed when `limited_ok`, and is
    /// ended if the user has a second factor by now (set up elsewhere).
    pub async fn require(&mut self, limited_ok: bool) -> Result<Signed, Deny> {
        match &self.session.stage {
            Stage::Anonymous => Err(Deny::Login),
            Stage::Password(_) => Err(Deny::Code),
            Stage::Full(s) => Ok(s.clone()),
            Stage::Limited(_) if !limited_ok => Err(Deny::NeedsFull),
            Stage::Limited(s) => {
                let s = s.clone();
                let still_none = self
                    .app
                    .core
                    .has_second_factor(&s.user)
                    .await
                    .map(|has| !has)
                    // A store failure also ends the password-only session: fail closed.
                    .unwrap_or(false);
                if still_none {
                    Ok(s)
                } else {
                    self.session.stage = Stage::Anonymous;
                    Err(Deny::Ended)
                }
            }
        }
    }

    /// A password-only session that proved a factor becomes a full one: only with the
    /// proof of a code the same user entered just now (`confirm_enrollment`,
    /// `confirm_address`).
    pub fn upgrade(&mut self, proof: OtpVerified) {
        self.session.stage = match std::mem::take(&mut self.session.stage) {
            Stage::Limited(s) if &s.user == proof.user() => Stage::Full(s),
            other => other,
        };
    }
}
