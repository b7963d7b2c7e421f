//! The router, the state every handler shares, and the middleware in front of every
//! request: a bound on requests in flight, a deadline, security headers, metrics.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use otpgate_core::Core;
use otpgate_core::random::OsRandom;
use tokio::sync::Semaphore;

use crate::PortalOptions;
use crate::handlers::{account, admin, login};
use crate::i18n;
use crate::limit::RateLimiter;
use crate::visit::{bare_page, persist};

/// Every request must be answered within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// Requests evaluated at once; more get "busy" at once instead of queueing.
pub const MAX_IN_FLIGHT: usize = 256;

/// Metric names (the same series as the other doors, with `door="portal"`).
pub mod metric {
    /// Counter: login decisions by `door` and `result` (`accept`, `reject`, `error`).
    pub const REQUESTS: &str = "otpgate_requests_total";
    /// Histogram: time to answer an HTTP request, by `door` and `result` (status class).
    pub const DURATION: &str = "otpgate_request_duration_seconds";
    /// Counter: backend failures that made a request fail closed, by `door`, `backend`.
    pub const BACKEND_ERRORS: &str = "otpgate_backend_errors_total";
}

/// What every handler shares.
pub struct Inner {
    pub core: Arc<Core>,
    pub limiter: RateLimiter,
    pub options: PortalOptions,
    pub in_flight: Arc<Semaphore>,
    pub random: OsRandom,
}

/// The shared state (cheap to clone).
#[derive(Clone)]
pub struct App(Arc<Inner>);

impl Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl App {
    pub fn new(core: Arc<Core>, options: PortalOptions) -> Self {
        App(Arc::new(Inner {
            core,
            limiter: RateLimiter::default(),
            options,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            random: OsRandom,
        }))
    }
}

/// Every page.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(account::home))
        .route("/style.css", get(style))
        .route("/lang/en", get(account::lang_en))
        .route("/lang/ja", get(account::lang_ja))
        .route("/login", get(login::login_page).post(login::login_post))
        .route("/login/code", get(login::code_page).post(login::code_post))
        .route("/login/help", post(login::help_post))
        .route("/login/reset", post(login::reset_request_post))
        .route("/logout", post(login::logout_post))
        .route(
            "/reset/confirm",
            get(login::reset_confirm_page).post(login::reset_confirm_post),
        )
        .route("/reset", post(account::reset_post))
        .route(
            "/address",
            get(account::address_page).post(account::address_post),
        )
        .route("/address/confirm", post(account::address_confirm_post))
        .route("/app", get(account::app_page))
        .route("/app/enroll", post(account::app_enroll_post))
        .route("/app/confirm", post(account::app_confirm_post))
        .route("/app/another", post(account::app_another_post))
        .route("/trusted", get(account::trusted_page))
        .route("/trusted/revoke", post(account::trusted_revoke_post))
        .route("/admin", get(admin::admin_page))
        .route("/admin/issue", post(admin::issue_post))
        .route("/admin/unlock", post(admin::unlock_post))
        .route("/admin/reset", post(admin::reset_post))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(crate::form::MAX_FORM))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::html::STYLE,
    )
        .into_response()
}

async fn not_found(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    bare_page(
        &app.options.site,
        i18n::negotiate(&headers),
        StatusCode::NOT_FOUND,
        "err.notfound",
    )
}

/// Bounds requests in flight, applies the deadline, adds the security headers and
/// records the time taken.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let lang = i18n::negotiate(req.headers());
    let mut response = match app.in_flight.clone().try_acquire_owned() {
        Err(_) => bare_page(
            &app.options.site,
            lang,
            StatusCode::SERVICE_UNAVAILABLE,
            "err.busy",
        ),
        Ok(_permit) => {
            let run = async { persist(&app, next.run(req).await).await };
            match tokio::time::timeout(REQUEST_DEADLINE, run).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("portal: a request passed its deadline");
                    bare_page(
                        &app.options.site,
                        lang,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "err.unavailable",
                    )
                }
            }
        }
    };
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Reset links carry a token in the query: never send it on.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::histogram!(metric::DURATION, "door" => "portal", "result" => class)
        .record(started.elapsed().as_secs_f64());
    response
}
