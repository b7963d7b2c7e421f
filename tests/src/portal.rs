//! The portal from the outside: a `[portal]` section with a test certificate, and a
//! small HTTPS client that keeps cookies, follows redirects, and fills each form's CSRF
//! token from the last page it saw.
//!
//! ```no_run
//! # use otpgate_tests::*;
//! # use otpgate_tests::portal::*;
//! let slapd = Slapd::start()?;
//! let tls = PortalTls::create()?;
//! let config = ConfigBuilder::new(&slapd)
//!     .extra(&radius_section("auto", "1s"))
//!     .extra(&tls.section("otp-admins"))
//!     .write()?;
//! write_radius_secret(config.dir(), "s")?;
//! let server = OtpgateServe::start(config.path())?;
//! let mut web = PortalClient::new(&server.portal_url().unwrap(), &tls)?;
//! let page = web.get("/login")?;
//! assert_eq!(page.status, 200);
//! # Ok::<(), HarnessError>(())
//! ```

use std::time::Duration;

use crate::error::{HarnessError, Result};
use crate::tls::TestCa;

/// A test CA and the portal's certificate, in a temporary directory.
#[derive(Debug)]
pub struct PortalTls {
    pub ca: TestCa,
    _dir: tempfile::TempDir,
}

impl PortalTls {
    /// Makes the CA and a certificate for `127.0.0.1` and `localhost`.
    pub fn create() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("otpgate-portal-tls-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary directory", e))?;
        let ca = TestCa::create(dir.path())?;
        Ok(Self { ca, _dir: dir })
    }

    /// A `[portal]` section on `127.0.0.1:0` with this certificate; `admin_group` names
    /// the operators' group (a `cn`).
    pub fn section(&self, admin_group: &str) -> String {
        format!(
            "[portal]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://portal.example.org\"\n\
             tls_cert_file = {}\ntls_key_file = {}\nadmin_group = {}\n",
            crate::toml_string(&self.ca.server_cert.display().to_string()),
            crate::toml_string(&self.ca.server_key.display().to_string()),
            crate::toml_string(admin_group),
        )
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.ca.ca_cert)
            .map_err(|e| HarnessError::io(format!("reading {}", self.ca.ca_cert.display()), e))
    }
}

/// A page as received (after redirects).
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    /// The path (and query) of the final URL.
    pub path: String,
    pub html: String,
    /// Every `Set-Cookie` of the responses that led here (redirects included).
    pub set_cookies: Vec<String>,
    /// The final response's headers, lower-case names.
    pub headers: Vec<(String, String)>,
}

impl Page {
    /// Whether the page's text contains `needle` (HTML as sent).
    pub fn has(&self, needle: &str) -> bool {
        self.html.contains(needle)
    }

    /// The text inside the first element with `id="ID"` (tags stripped, entities for
    /// `&amp;` and friends decoded, whitespace collapsed).
    pub fn text_of(&self, id: &str) -> Option<String> {
        let marker = format!("id=\"{id}\"");
        let at = self.html.find(&marker)?;
        let open_end = self.html.get(at..)?.find('>')? + at + 1;
        let rest = self.html.get(open_end..)?;
        let mut depth = 1usize;
        let mut out = String::new();
        let mut i = 0;
        let bytes = rest.as_bytes();
        while i < bytes.len() {
            if bytes.get(i) == Some(&b'<') {
                let end = rest.get(i..)?.find('>')? + i;
                let tag = rest.get(i + 1..end)?;
                if tag.starts_with('/') {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                } else if !tag.ends_with('/') && !tag.starts_with("input") && !tag.starts_with("br")
                {
                    depth += 1;
                }
                i = end + 1;
            } else {
                let next = rest.get(i..)?.find('<').map_or(rest.len(), |n| n + i);
                out.push_str(rest.get(i..next)?);
                i = next;
            }
        }
        let decoded = out
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&");
        Some(decoded.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The CSRF token of the page's forms.
    pub fn csrf(&self) -> Option<String> {
        let marker = "name=\"csrf\" value=\"";
        let at = self.html.find(marker)? + marker.len();
        let end = self.html.get(at..)?.find('"')? + at;
        self.html.get(at..end).map(str::to_owned)
    }

    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A browser-like client of the portal.
pub struct PortalClient {
    client: reqwest::blocking::Client,
    base: String,
    last: Option<Page>,
    accept_language: String,
}

impl std::fmt::Debug for PortalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortalClient({})", self.base)
    }
}

impl PortalClient {
    /// A client for `base` (`https://127.0.0.1:PORT`) trusting the test CA only.
    pub fn new(base: &str, tls: &PortalTls) -> Result<Self> {
        let ca = reqwest::Certificate::from_pem(&tls.ca_pem()?)
            .map_err(|e| HarnessError::Usage(format!("the test CA: {e}")))?;
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(ca)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .user_agent("otpgate-tests")
            .build()
            .map_err(|e| HarnessError::Usage(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            last: None,
            accept_language: "en".into(),
        })
    }

    /// A client whose connections leave from `local` (another loopback address is
    /// another client to the server) and whose requests give up after `timeout`.
    pub fn from_address(
        base: &str,
        tls: &PortalTls,
        local: std::net::IpAddr,
        timeout: Duration,
    ) -> Result<Self> {
        let ca = reqwest::Certificate::from_pem(&tls.ca_pem()?)
            .map_err(|e| HarnessError::Usage(format!("the test CA: {e}")))?;
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(ca)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .local_address(local)
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent("otpgate-tests")
            .build()
            .map_err(|e| HarnessError::Usage(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            last: None,
            accept_language: "en".into(),
        })
    }

    /// Talks to another server from now on, keeping the cookies (cookies are per host,
    /// not per port: two portals on 127.0.0.1 see the same jar).
    pub fn switch_to(&mut self, base: &str) {
        self.base = base.trim_end_matches('/').to_owned();
    }

    /// GET `path` with extra request headers.
    pub fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Page> {
        let mut request = self
            .client
            .get(format!("{}{path}", self.base))
            .header("Accept-Language", &self.accept_language);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request
            .send()
            .map_err(|e| HarnessError::Usage(format!("GET {path}: {e}")))?;
        self.finish(response)
    }

    /// POST a form (with the last page's CSRF token) with extra request headers.
    pub fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Result<Page> {
        let csrf = self.last.as_ref().and_then(Page::csrf).unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Accept-Language", &self.accept_language)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form_body(&all));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request
            .send()
            .map_err(|e| HarnessError::Usage(format!("POST {path}: {e}")))?;
        self.finish(response)
    }

    /// The Accept-Language sent from now on.
    pub fn accept_language(&mut self, value: &str) {
        self.accept_language = value.to_owned();
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Follows redirects (as a browser: 303 becomes GET), collecting every
    /// `Set-Cookie` on the way, and reads the final page.
    fn finish(&mut self, mut response: reqwest::blocking::Response) -> Result<Page> {
        let mut cookies_seen: Vec<String> = Vec::new();
        for _ in 0..10 {
            if !response.status().is_redirection() {
                break;
            }
            cookies_seen.extend(
                response
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .map(|v| v.to_str().unwrap_or("").to_owned()),
            );
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("/")
                .to_owned();
            let url = response
                .url()
                .join(&location)
                .map_err(|e| HarnessError::Usage(format!("redirect to {location}: {e}")))?;
            response = self
                .client
                .get(url)
                .header("Accept-Language", &self.accept_language)
                .send()
                .map_err(|e| HarnessError::Usage(format!("GET {location}: {e}")))?;
        }
        let status = response.status().as_u16();
        let url = response.url();
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        cookies_seen.extend(
            headers
                .iter()
                .filter(|(k, _)| k == "set-cookie")
                .map(|(_, v)| v.clone()),
        );
        let set_cookies = cookies_seen;
        let html = response
            .text()
            .map_err(|e| HarnessError::Usage(format!("reading the portal's answer: {e}")))?;
        let page = Page {
            status,
            path,
            html,
            set_cookies,
            headers,
        };
        self.last = Some(page.clone());
        Ok(page)
    }

    /// GET `path`.
    pub fn get(&mut self, path: &str) -> Result<Page> {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .header("Accept-Language", &self.accept_language)
            .send()
            .map_err(|e| HarnessError::Usage(format!("GET {path}: {e}")))?;
        self.finish(response)
    }

    /// POST a form to `path`, adding the CSRF token of the last page seen.
    pub fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Result<Page> {
        let csrf = self.last.as_ref().and_then(Page::csrf).unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all)
    }

    /// POST exactly these fields (no CSRF token added).
    pub fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Result<Page> {
        let body: String = form_body(fields);
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Accept-Language", &self.accept_language)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .map_err(|e| HarnessError::Usage(format!("POST {path}: {e}")))?;
        self.finish(response)
    }

    /// POST a raw body.
    pub fn post_bytes(&mut self, path: &str, body: Vec<u8>) -> Result<Page> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .map_err(|e| HarnessError::Usage(format!("POST {path}: {e}")))?;
        self.finish(response)
    }

    /// Signs in with the password: the page after it (the code page, or home).
    pub fn login(&mut self, user: &str, password: &str) -> Result<Page> {
        self.get("/login")?;
        self.post("/login", &[("user", user), ("password", password)])
    }
}

/// `application/x-www-form-urlencoded`.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The path and query of the first `…/reset/confirm?…` link in a mail body (its host is
/// the configured `public_url`, not the test server's address).
pub fn reset_link_path(body: &str) -> Option<String> {
    let at = body.find("/reset/confirm?")?;
    let rest = body.get(at..)?;
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"' || c == '<')
        .unwrap_or(rest.len());
    rest.get(..end).map(str::to_owned)
}
