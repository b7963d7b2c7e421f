//! otpgate's self-service portal: server-rendered HTTPS pages (English and Japanese)
//! over the same [`Core`] and store as the other doors.
//!
//! # Layout
//!
//! - [`server`]: the accept loop: TLS (rustls) from the configured certificate files,
//!   a bound on connections, a handshake timeout, graceful drain on the shutdown token.
//! - `app`: the router, the shared state, and the middleware every request passes
//!   (a bound on requests in flight, a 30 s deadline, security headers, metrics).
//! - `visit`: one request as the handlers see it: the session (read from the store,
//!   saved by version after the response is built), the language, the client address,
//!   cookies, the CSRF check, and the responses (pages, redirects).
//! - `session`: the login stages; sessions in the store (made only after the password
//!   step, sealed by the core); the signed CSRF cookie of anonymous pages.
//! - `client`: the client's address behind `trusted_proxies`.
//! - `form`: strict `application/x-www-form-urlencoded` parsing; values zeroised.
//! - `limit`: the per-address rate limit on password and code attempts.
//! - `i18n`: the message catalogue (en, ja) and Accept-Language negotiation.
//! - `html`: escaping and the page layout.
//! - `handlers`: `login` (password, code, trusted browser, "Can't log in?", reset
//!   link), `account` (address, app, another device, trusted browsers), `admin`
//!   (status, helpdesk queue, issue, unlock, reset).
//! - `error`: the one place where core errors become pages; no internal text reaches
//!   the browser.
//!
//! Sessions and trusted browsers are store records, shared by every instance: several
//! instances behind one name need no sticky balancing. Anonymous visitors cost no
//! server state.
#![forbid(unsafe_code)]
// Handlers return early with a whole `Response` (once per request); boxing it buys nothing.
#![allow(clippy::result_large_err)]

mod app;
mod client;
mod error;
mod form;
mod handlers;
mod html;
mod i18n;
mod limit;
pub mod server;
mod session;
mod visit;

use std::sync::Arc;
use std::time::Duration;

use otpgate_core::Core;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use i18n::SiteTexts;
pub use server::{PortalError, tls_config};

/// What the portal needs from the configuration.
#[derive(Debug, Clone)]
pub struct PortalOptions {
    /// The URL users reach the portal at (links in mail point here).
    pub public_url: String,
    /// Members of this directory group (its DN, or its `cn`) see the operator pages.
    pub admin_group: Option<String>,
    /// How long "Trust this browser" lasts (`trust.remember_for`).
    pub remember_for: Duration,
    /// Peers whose `Forwarded` / `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<otpgate_config::IpNet>,
    /// The site's name and helpdesk contact.
    pub site: SiteTexts,
    /// Each quiet phase of a connection ends after this.
    pub idle_timeout: Duration,
}

impl PortalOptions {
    /// From a validated configuration's `[portal]` and `[trust]`.
    pub fn from_config(
        portal: &otpgate_config::PortalConfig,
        config: &otpgate_config::Config,
    ) -> Self {
        Self {
            public_url: portal.public_url.clone(),
            admin_group: portal.admin_group.clone(),
            remember_for: config.trust.remember_for,
            trusted_proxies: portal.trusted_proxies.clone(),
            site: SiteTexts {
                name: portal.site_name.clone(),
                helpdesk: portal.helpdesk_contact.clone(),
            },
            idle_timeout: portal.idle_timeout,
        }
    }
}

/// Serves the portal on `listener` (HTTPS when `tls` is given) until `shutdown` is
/// cancelled, then drains the connections in progress.
pub async fn run(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    core: Arc<Core>,
    options: PortalOptions,
    shutdown: CancellationToken,
) -> Result<(), PortalError> {
    let limits = server::Limits::new(&options);
    let router = app::router(app::App::new(core, options));
    server::serve(listener, tls, router, limits, shutdown).await
}
