//! One request as a handler sees it: its session (read from the store, saved after the
//! response is built), language, client address and cookies; the CSRF check on forms;
//! and the responses.

use std::net::{IpAddr, Ipv4Addr};

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::service::{DeviceId, OtpVerified};

use crate::app::App;
use crate::form::Form;
use crate::html::{self, Layout, Nav};
use crate::i18n::{self, Lang, SiteTexts, t};
use crate::server::Remote;
use crate::session::{AnonCsrf, IDLE_TIMEOUT, Session, SessionRef, Signed, Stage, token_ok};

/// The session cookie: Lax, so that a link in a mail opens a signed-in session.
pub const SESSION_COOKIE: &str = "__Host-otpgate-session";
/// The signed CSRF token of anonymous pages (double-submit).
pub const CSRF_COOKIE: &str = "__Host-otpgate-csrf";
/// A message for the next anonymous page (one of [`FLASH_KEYS`], never free text).
pub const NOTICE_COOKIE: &str = "__Host-otpgate-notice";
/// The trusted-browser cookie: a random token whose keyed hash is the store's record.
pub const DEVICE_COOKIE: &str = "__Host-otpgate-device";
/// The chosen language.
pub const LANG_COOKIE: &str = "__Host-otpgate-lang";
/// The messages an anonymous page can be asked to show by [`NOTICE_COOKIE`].
const FLASH_KEYS: &[&str] = &["logout.done", "login.ended"];

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

/// The stored session this request read: where it is, its version, and how it read
/// (to save only what changed).
struct Stored {
    at: SessionRef,
    version: u64,
    original: Vec<u8>,
}

/// One request.
pub struct Visit {
    pub app: App,
    pub lang: Lang,
    pub session: Session,
    stored: Option<Stored>,
    /// Move the session to a new id when saving (the password step, sign-out).
    rotate: bool,
    /// The client's address (behind trusted proxies: the one they forwarded).
    pub remote: IpAddr,
    /// The trusted-browser token, if the browser has one.
    pub device: Option<String>,
    pub user_agent: String,
    /// This page (path and query) for a GET, else `/`: where the language links return.
    pub path: String,
    pub query: String,
    set_cookies: Vec<String>,
}

/// What is left to do after the handler: save, create or delete the session. Put in
/// the response's extensions; [`persist`] does it before the response leaves.
#[derive(Clone)]
pub(crate) struct Persist(std::sync::Arc<std::sync::Mutex<Option<PersistInner>>>);

struct PersistInner {
    stored: Option<Stored>,
    session: Session,
    rotate: bool,
    lang: Lang,
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

fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax")
}

impl FromRequestParts<App> for Visit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let jar = cookies(&parts.headers);
        let lang = cookie(&jar, LANG_COOKIE)
            .and_then(Lang::from_code)
            .unwrap_or_else(|| i18n::negotiate(&parts.headers));
        let peer = parts
            .extensions
            .get::<Remote>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |r| r.0.ip());
        let remote =
            crate::client::client_address(peer, &parts.headers, &app.options.trusted_proxies);
        let site = &app.options.site;
        let mut set_cookies = Vec::new();
        let given = cookie(&jar, SESSION_COOKIE);
        let mut stored = None;
        let mut session = None;
        if let Some(at) = given.and_then(SessionRef::parse) {
            let loaded = app
                .core
                .load_session::<Session>(&at.user, &at.token, IDLE_TIMEOUT)
                .await
                .map_err(|e| {
                    crate::error::log_failure(&e);
                    bare_page(
                        site,
                        lang,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "err.unavailable",
                    )
                })?;
            if let Some(loaded) = loaded.filter(|l| l.value.stage.user() == Some(&at.user)) {
                let original = serde_json::to_vec(&loaded.value).unwrap_or_default();
                stored = Some(Stored {
                    at,
                    version: loaded.version,
                    original,
                });
                session = Some(loaded.value);
            }
        }
        let session = match session {
            Some(s) => s,
            None => {
                if given.is_some() {
                    set_cookies.push(clear_cookie(SESSION_COOKIE));
                }
                let mac = AnonCsrf::mac(&app.core);
                let csrf = match cookie(&jar, CSRF_COOKIE).filter(|t| AnonCsrf::valid(t, &mac)) {
                    Some(token) => token.to_string(),
                    None => {
                        let token = AnonCsrf::make(&app.random, &mac).map_err(|e| {
                            crate::error::log_failure(&e);
                            bare_page(
                                site,
                                lang,
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "err.internal",
                            )
                        })?;
                        set_cookies.push(format!(
                            "{CSRF_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax"
                        ));
                        token
                    }
                };
                let notice = cookie(&jar, NOTICE_COOKIE)
                    .and_then(|k| FLASH_KEYS.iter().find(|f| **f == k))
                    .map(|k| t(lang, k).to_string());
                Session {
                    csrf,
                    stage: Stage::Anonymous,
                    notice,
                }
            }
        };
        if cookie(&jar, NOTICE_COOKIE).is_some() {
            set_cookies.push(clear_cookie(NOTICE_COOKIE));
        }
        Ok(Visit {
            app: app.clone(),
            lang,
            session,
            stored,
            rotate: false,
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

fn session_cookie(value: &str) -> String {
    format!("{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax")
}

/// A page outside any session (overload, bad request before a session exists).
pub fn bare_page(site: &SiteTexts, lang: Lang, status: StatusCode, key: &str) -> Response {
    let layout = Layout {
        lang,
        site: site.name(lang),
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

/// Saves, creates or deletes the session a handler left in `response`, before the
/// response leaves: a save that lost to another request of the same browser becomes a
/// "try again" page; a store failure, the unavailable page (fail closed).
pub(crate) async fn persist(app: &App, mut response: Response) -> Response {
    let Some(p) = response
        .extensions_mut()
        .remove::<Persist>()
        .and_then(|p| p.0.lock().unwrap_or_else(|e| e.into_inner()).take())
    else {
        return response;
    };
    match save(app, p.stored, &p.session, p.rotate).await {
        Ok(Saved::Unchanged) => response,
        Ok(Saved::Cookie(c)) => {
            if let Ok(v) = HeaderValue::from_str(&c) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
            response
        }
        Ok(Saved::Conflict) => bare_page(
            &app.options.site,
            p.lang,
            StatusCode::CONFLICT,
            "err.conflict",
        ),
        Err(e) => {
            crate::error::log_failure(&e);
            let status = match e {
                otpgate_core::CoreError::Backend { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            bare_page(&app.options.site, p.lang, status, "err.unavailable")
        }
    }
}

enum Saved {
    Unchanged,
    Cookie(String),
    Conflict,
}

async fn save(
    app: &App,
    stored: Option<Stored>,
    session: &Session,
    rotate: bool,
) -> Result<Saved, otpgate_core::CoreError> {
    let core = &app.core;
    let user = session.stage.user().cloned();
    // The stored session stays where it is unless it must move (a new id at the
    // password step and at sign-out) or ends.
    let (keep, drop_old) = match stored {
        Some(s) if !rotate && user.as_ref() == Some(&s.at.user) => (Some(s), None),
        other => (None, other),
    };
    let mut cookie = None;
    if let Some(old) = drop_old {
        core.delete_session(&old.at.user, &old.at.token).await?;
        cookie = Some(clear_cookie(SESSION_COOKIE));
    }
    let Some(user) = user else {
        return Ok(cookie.map_or(Saved::Unchanged, Saved::Cookie));
    };
    let bytes = serde_json::to_vec(session)
        .map_err(|e| otpgate_core::CoreError::Internal(e.to_string()))?;
    match keep {
        Some(s) if s.original == bytes => Ok(Saved::Unchanged),
        Some(s) => {
            match core
                .save_session(&user, &s.at.token, s.version, session, IDLE_TIMEOUT)
                .await?
            {
                Some(_) => Ok(Saved::Unchanged),
                None => Ok(Saved::Conflict),
            }
        }
        None => {
            let at = SessionRef::new(user.clone(), &app.random)?;
            match core
                .save_session(&user, &at.token, 0, session, IDLE_TIMEOUT)
                .await?
            {
                Some(_) => Ok(Saved::Cookie(session_cookie(&at.cookie_value()))),
                // A fresh 256-bit id that exists already: not a race, a broken store.
                None => Err(otpgate_core::CoreError::Internal(
                    "a new session id was taken".into(),
                )),
            }
        }
    }
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

    /// The site's name and helpdesk contact.
    pub fn site(&self) -> &SiteTexts {
        &self.app.options.site
    }

    /// "Helpdesk: <contact>" in the visitor's language, when a contact is configured.
    pub fn helpdesk_contact(&self) -> Option<String> {
        self.site()
            .helpdesk(self.lang)
            .map(|c| self.t("helpdesk.contact").replace("{contact}", c))
    }

    /// `text`, followed by the helpdesk contact when one is configured.
    pub fn with_contact(&self, text: &str) -> String {
        match self.helpdesk_contact() {
            Some(c) => format!("{text} {c}"),
            None => text.to_string(),
        }
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
            .map_err(|_| bare_page(self.site(), self.lang, StatusCode::BAD_REQUEST, "err.form"))
    }

    /// Moves the session to a new id when it is saved, with a new CSRF token now. Used
    /// at the password step and at sign-out, against fixation.
    pub fn rotate(&mut self) -> Result<(), Response> {
        let csrf = otpgate_core::random::hex_id::<32>(&self.app.random)
            .map_err(|e| self.failure_page(&e))?;
        self.session.csrf = csrf;
        self.rotate = true;
        Ok(())
    }

    /// Shows one of the fixed anonymous messages on the next page (a signed-out
    /// browser has no session to keep a notice in).
    pub fn flash(&mut self, key: &'static str) {
        if FLASH_KEYS.contains(&key) {
            self.set_cookies.push(format!(
                "{NOTICE_COOKIE}={key}; Path=/; Max-Age=60; Secure; HttpOnly; SameSite=Lax"
            ));
        }
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
        self.hand_over(&mut response);
        response
    }

    /// Puts the cookies and the session to save on `response`.
    fn hand_over(self, response: &mut Response) {
        for c in &self.set_cookies {
            if let Ok(v) = HeaderValue::from_str(c) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        let inner = PersistInner {
            stored: self.stored,
            session: self.session,
            rotate: self.rotate,
            lang: self.lang,
        };
        response
            .extensions_mut()
            .insert(Persist(std::sync::Arc::new(std::sync::Mutex::new(Some(
                inner,
            )))));
    }

    /// A page in the layout, with the pending notice.
    pub fn page_status(mut self, status: StatusCode, title: &str, body: &str) -> Response {
        let notice = self.session.notice.take();
        let user = self.user().map(|s| s.user.to_string());
        let csrf = self.csrf();
        let site = self.site().name(self.lang).to_string();
        let layout = Layout {
            lang: self.lang,
            site: &site,
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

    /// An error page with the message `key` and `key.text`. The session is left as
    /// it was read (nothing of this request is saved).
    pub fn error_page(&mut self, status: StatusCode, key: &str) -> Response {
        let lang = self.lang;
        let mut r = bare_page(self.site(), lang, status, key);
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
                self.flash("login.ended");
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
