//! The self-service portal (SPEC §7) over HTTPS against real slapd, Redis and an SMTP
//! sink, with `otpgate serve` as a child process. Every flow of the portal is driven
//! as a browser would (cookies, redirects, CSRF tokens from the pages).
//!
//! Codes are computed for steps counted from the start of the test (see radius.rs);
//! the config accepts ±5 steps, and each use takes the next step.

use std::time::Duration;

use otpgate_core::secret::TotpSecret;
use otpgate_tests::portal::{Page, PortalClient, PortalTls, reset_link_path};
use otpgate_tests::{
    ALICE, BOB, CAROL, ConfigBuilder, DAVE, Mail, OtpgateServe, Redis, Slapd, SmtpSink, TestConfig,
    radius_section, wait_until, write_radius_secret,
};

use crate::radius::{code, current_step, enroll, json, otpgate};

const WAIT: Duration = Duration::from_secs(10);

/// The servers, the config, `otpgate serve` with the portal, and the next TOTP step.
pub struct Env {
    pub slapd: Slapd,
    pub redis: Redis,
    pub smtp: SmtpSink,
    pub tls: PortalTls,
    pub config: TestConfig,
    pub server: OtpgateServe,
    pub step: u64,
}

impl Env {
    pub fn start(extra: &str) -> Env {
        let slapd = Slapd::start().unwrap();
        let redis = Redis::start().unwrap();
        let smtp = SmtpSink::start().unwrap();
        let tls = PortalTls::create().unwrap();
        let config = ConfigBuilder::new(&slapd)
            .redis(&redis)
            .smtp(&smtp)
            .set("totp", "skew_steps", "5")
            .extra(&radius_section("auto", "100ms"))
            .extra(&tls.section("otp-admins"))
            .extra(extra)
            .write()
            .unwrap();
        write_radius_secret(config.dir(), "portal-tests-secret").unwrap();
        let server = OtpgateServe::start(config.path()).unwrap();
        Env {
            slapd,
            redis,
            smtp,
            tls,
            config,
            server,
            step: current_step() - 4,
        }
    }

    pub fn client(&self) -> PortalClient {
        PortalClient::new(&self.server.portal_url().unwrap(), &self.tls).unwrap()
    }

    /// The next code of `secret`.
    pub fn next_code(&mut self, secret: &TotpSecret) -> String {
        self.step += 1;
        code(secret, self.step)
    }

    /// Waits for the `n`th mail to `to` and returns it.
    pub fn mail(&self, to: &str, n: usize) -> Mail {
        let mut mails = Vec::new();
        assert!(
            wait_until(WAIT, || {
                mails = self.smtp.mails_to(to).unwrap();
                mails.len() >= n
            }),
            "mail #{n} to {to} did not arrive"
        );
        mails.swap_remove(n - 1)
    }

    /// Enrolls with the CLI (confirming with the next step); returns the secret.
    pub fn enroll_cli(&mut self, user: &str) -> TotpSecret {
        self.step += 1;
        enroll(self.config.path(), user, self.step + 1)
    }

    /// Registers and confirms a notification address with the CLI.
    pub fn address_cli(&self, user: &str, address: &str, nth: usize) {
        json(&otpgate(
            self.config.path(),
            &["user", "email", "set", user, address, "--json"],
        ));
        let code = self.mail(address, nth).code(8).unwrap();
        json(&otpgate(
            self.config.path(),
            &["user", "email", "confirm", user, &code, "--json"],
        ));
    }

    pub fn status(&self, user: &str) -> serde_json::Value {
        json(&otpgate(
            self.config.path(),
            &["user", "status", user, "--json"],
        ))
    }
}

/// The secret shown on an app set-up page.
pub fn shown_secret(page: &Page) -> TotpSecret {
    let text = page.text_of("secret").expect("the secret in text");
    let b32: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    TotpSecret::from_bytes(
        &data_encoding::BASE32_NOPAD
            .decode(b32.as_bytes())
            .expect("base32 secret"),
    )
}

fn assert_page(page: &Page, status: u16, path: &str) {
    assert_eq!(
        (page.status, page.path.as_str()),
        (status, path),
        "{}",
        page.html
    );
}

/// Signs in with password and code; `trust` ticks "Trust this browser".
pub fn login_with_code(
    env: &mut Env,
    web: &mut PortalClient,
    user: &str,
    pw: &str,
    secret: &TotpSecret,
    trust: bool,
) -> Page {
    let page = web.login(user, pw).unwrap();
    assert_page(&page, 200, "/login/code");
    let code = env.next_code(secret);
    let mut fields = vec![("code", code.as_str())];
    if trust {
        fields.push(("trust", "on"));
    }
    let page = web.post("/login/code", &fields).unwrap();
    assert_page(&page, 200, "/");
    page
}

#[test]
fn a_new_user_registers_an_address_sets_up_the_app_and_trusts_the_browser() {
    let mut env = Env::start("");
    let mut web = env.client();

    // Bob has neither an app nor an address: the password alone opens a set-up session.
    let home = web.login(BOB.uid, BOB.password).unwrap();
    assert_page(&home, 200, "/");
    assert!(home.has("id=\"step-address\"") && home.has("id=\"step-app\""));
    assert!(home.has("id=\"no-address\""), "the missing-address warning");
    // A password-only session cannot reach the other pages.
    assert_page(&web.get("/trusted").unwrap(), 200, "/");

    // Denied domains are refused with a clear message; nothing is mailed.
    web.get("/address").unwrap();
    for denied in ["bob@example.ac.jp", "bob@mail.example.ac.jp"] {
        let page = web.post("/address", &[("address", denied)]).unwrap();
        assert_eq!(page.status, 400);
        let domain = denied.split('@').nth(1).unwrap();
        assert!(
            page.has(&format!("Addresses in {domain} cannot be used")),
            "{}",
            page.html
        );
    }
    let page = web
        .post("/address", &[("address", "not an address")])
        .unwrap();
    assert!(page.has("not a valid mail address"), "{}", page.html);
    assert!(env.smtp.messages().unwrap().is_empty());

    // A good address gets a code; entering it registers the address.
    let page = web
        .post("/address", &[("address", "bob@personal.example.net")])
        .unwrap();
    assert_page(&page, 200, "/address");
    assert!(page.has("b***@personal.example.net"), "{}", page.html);
    let mailed = env.mail("bob@personal.example.net", 1).code(8).unwrap();
    let page = web
        .post("/address/confirm", &[("code", "00000000")])
        .unwrap();
    assert_eq!(page.status, 400);
    let page = web.post("/address/confirm", &[("code", &mailed)]).unwrap();
    assert_page(&page, 200, "/");
    assert_eq!(
        page.text_of("state-address").unwrap(),
        "bob@personal.example.net"
    );
    // Proving the address upgraded the session: the other pages open now.
    assert_page(&web.get("/trusted").unwrap(), 200, "/trusted");

    // App set-up: the QR code and the secret in text; pending until a code confirms it.
    web.get("/app").unwrap();
    let setup = web.post("/app/enroll", &[]).unwrap();
    assert!(
        setup.has("id=\"qr\"") && setup.has("<svg"),
        "{}",
        setup.html
    );
    assert!(
        !setup.has("id=\"no-address\""),
        "no warning with an address"
    );
    let secret = shown_secret(&setup);
    assert_eq!(env.status(BOB.uid)["state"], "app-pending");
    let page = web.post("/app/confirm", &[("code", "000000")]).unwrap();
    assert_eq!(page.status, 400);
    let code = env.next_code(&secret);
    let page = web.post("/app/confirm", &[("code", &code)]).unwrap();
    assert_page(&page, 200, "/");
    assert_eq!(env.status(BOB.uid)["state"], "app-enrolled");

    // Sign in again with "Trust this browser": the next time no code is asked.
    web.post("/logout", &[]).unwrap();
    let page = login_with_code(&mut env, &mut web, BOB.uid, BOB.password, &secret, true);
    let trust_cookie = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-otpgate-device="))
        .expect("the trusted-browser cookie")
        .clone();
    for attr in [
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=604800",
    ] {
        assert!(trust_cookie.contains(attr), "{trust_cookie}");
    }
    web.post("/logout", &[]).unwrap();
    let page = web.login(BOB.uid, BOB.password).unwrap();
    assert_page(&page, 200, "/");

    // The record is listed and revocable; revoked, the code is asked again.
    let page = web.get("/trusted").unwrap();
    assert!(
        page.has("otpgate-tests"),
        "the browser is listed: {}",
        page.html
    );
    let listed = json(&otpgate(
        env.config.path(),
        &["user", "trusted", "list", BOB.uid, "--json"],
    ));
    let id = listed["devices"][0]["id"].as_str().unwrap().to_owned();
    let page = web.post("/trusted/revoke", &[("id", &id)]).unwrap();
    assert_page(&page, 200, "/trusted");
    assert!(page.has("id=\"trusted-none\""), "{}", page.html);
    web.post("/logout", &[]).unwrap();
    assert_page(
        &web.login(BOB.uid, BOB.password).unwrap(),
        200,
        "/login/code",
    );
}

#[test]
fn cant_log_in_mails_a_code_or_queues_for_the_helpdesk_where_an_operator_issues_one() {
    let mut env = Env::start("");
    // Dave: app and a confirmed address. Bob: app, no address. Alice: operator.
    let dave = env.enroll_cli(DAVE.uid);
    env.address_cli(DAVE.uid, "dave@home.example.net", 1);
    env.enroll_cli(BOB.uid);
    let alice = env.enroll_cli(ALICE.uid);

    // With an address: a mailed 8-digit code signs in.
    let mut web = env.client();
    web.login(DAVE.uid, DAVE.password).unwrap();
    let page = web.post("/login/help", &[]).unwrap();
    assert_page(&page, 200, "/login/help");
    assert!(page.has("d***@home.example.net"), "{}", page.html);
    let mailed = env.mail("dave@home.example.net", 2).code(8).unwrap();
    let page = web.post("/login/code", &[("code", &mailed)]).unwrap();
    assert_page(&page, 200, "/");
    // The app still works for dave too.
    web.post("/logout", &[]).unwrap();
    login_with_code(&mut env, &mut web, DAVE.uid, DAVE.password, &dave, false);

    // Without one: a helpdesk request, and a page that says so and what to do.
    let mut bob = env.client();
    bob.login(BOB.uid, BOB.password).unwrap();
    let page = bob.post("/login/help", &[]).unwrap();
    assert!(page.has("id=\"helpdesk\""), "{}", page.html);
    assert!(page.has("Call the helpdesk"), "{}", page.html);
    assert!(page.has("name=\"code\""), "the code form stays on the page");

    // A non-operator does not see the helpdesk pages.
    let page = web.get("/admin").unwrap();
    assert_eq!(page.status, 403);

    // The operator sees the queue, issues a code, and bob signs in with it.
    let mut op = env.client();
    login_with_code(&mut env, &mut op, ALICE.uid, ALICE.password, &alice, false);
    let page = op.get("/admin").unwrap();
    assert!(
        page.has("id=\"queue\"") && page.has(">bob</a>"),
        "{}",
        page.html
    );
    let page = op.post("/admin/issue", &[("user", BOB.uid)]).unwrap();
    let otp = page.text_of("issued-otp").unwrap();
    assert_eq!(otp.len(), 8, "{}", page.html);
    assert!(op.get("/admin").unwrap().has("id=\"queue-empty\""));
    let page = bob.post("/login/code", &[("code", &otp)]).unwrap();
    assert_page(&page, 200, "/");
    // The code works once.
    bob.post("/logout", &[]).unwrap();
    bob.login(BOB.uid, BOB.password).unwrap();
    assert_eq!(
        bob.post("/login/code", &[("code", &otp)]).unwrap().status,
        401
    );

    // Operator status, unlock and reset are the CLI's operations.
    let page = op.get("/admin?user=bob").unwrap();
    assert!(
        page.text_of("status").unwrap().contains("set up"),
        "{}",
        page.html
    );
    let page = op.post("/admin/unlock", &[("user", BOB.uid)]).unwrap();
    assert_page(&page, 200, "/admin?user=bob");
    assert_eq!(env.status(BOB.uid)["locked"], false);
    op.post("/admin/reset", &[("user", BOB.uid)]).unwrap();
    assert_eq!(env.status(BOB.uid)["state"], "new");
    // Every decision is audited with door "portal".
    let out = otpgate(env.config.path(), &["audit", "--user", BOB.uid, "--json"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).replace(": ", ":");
    for method in ["email-otp-request", "helpdesk-issue", "unlock", "reset"] {
        assert!(text.contains(method), "{method} in {text}");
    }
    assert!(text.contains("\"door\":\"portal\""), "{text}");
}

#[test]
fn a_mailed_reset_link_with_the_password_clears_the_app_and_leads_to_set_up() {
    let mut env = Env::start("");
    let secret = env.enroll_cli(DAVE.uid);
    env.address_cli(DAVE.uid, "dave@home.example.net", 1);
    let mut web = env.client();
    // Trust this browser first: the reset must revoke it.
    login_with_code(&mut env, &mut web, DAVE.uid, DAVE.password, &secret, true);
    web.post("/logout", &[]).unwrap();

    // Trusted, so the code is skipped; ask for the link from the app page.
    assert_page(&web.login(DAVE.uid, DAVE.password).unwrap(), 200, "/");
    web.get("/app").unwrap();
    let page = web.post("/reset", &[]).unwrap();
    assert_page(&page, 200, "/app");
    assert!(page.has("valid for 24 hours"), "{}", page.html);
    let mail = env.mail("dave@home.example.net", 2);
    let link = reset_link_path(&mail.body).expect("a reset link");
    web.post("/logout", &[]).unwrap();

    // Following it needs the password.
    let page = web.get(&link).unwrap();
    assert_eq!(page.status, 200, "{}", page.html);
    let user = "dave";
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let page = web
        .post(
            "/reset/confirm",
            &[("user", user), ("token", &token), ("password", "wrong")],
        )
        .unwrap();
    assert_eq!(page.status, 401);
    assert_eq!(env.status(DAVE.uid)["state"], "app-enrolled");
    let page = web
        .post(
            "/reset/confirm",
            &[
                ("user", user),
                ("token", &token),
                ("password", DAVE.password),
            ],
        )
        .unwrap();
    assert_page(&page, 200, "/app");
    assert!(page.has("were removed"), "{}", page.html);
    assert_eq!(env.status(DAVE.uid)["state"], "email-registered");
    assert_eq!(env.status(DAVE.uid)["trusted_devices"], 0);

    // Set the app up again right there.
    let setup = web.post("/app/enroll", &[]).unwrap();
    let new_secret = shown_secret(&setup);
    let code = env.next_code(&new_secret);
    assert_page(
        &web.post("/app/confirm", &[("code", &code)]).unwrap(),
        200,
        "/",
    );

    // The link works once; a forged token does nothing.
    web.post("/logout", &[]).unwrap();
    let page = web.get(&link).unwrap();
    let page2 = web
        .post(
            "/reset/confirm",
            &[
                ("user", user),
                ("token", &token),
                ("password", DAVE.password),
            ],
        )
        .unwrap();
    assert_eq!((page.status, page2.status), (200, 400), "{}", page2.html);
    assert_eq!(env.status(DAVE.uid)["state"], "app-enrolled");
    // The trusted browser was revoked by the reset: the code is asked again.
    assert_page(
        &web.login(DAVE.uid, DAVE.password).unwrap(),
        200,
        "/login/code",
    );
    // And from the code page, "Lost your device?" mails a new link.
    let page = web.post("/login/reset", &[]).unwrap();
    assert!(page.has("valid for 24 hours"), "{}", page.html);
    env.mail("dave@home.example.net", 3);
}

#[test]
fn another_device_gets_the_same_secret_after_a_fresh_code() {
    let mut env = Env::start("");
    let secret = env.enroll_cli(DAVE.uid);
    let mut web = env.client();
    login_with_code(&mut env, &mut web, DAVE.uid, DAVE.password, &secret, false);
    let page = web.get("/app").unwrap();
    assert!(page.has("id=\"app-enrolled\"") && page.has("id=\"no-address\""));
    let page = web.post("/app/another", &[("code", "123456")]).unwrap();
    assert_eq!(page.status, 401);
    assert!(!page.has("id=\"secret\""));
    let code = env.next_code(&secret);
    let page = web.post("/app/another", &[("code", &code)]).unwrap();
    assert!(page.has("id=\"qr\""), "{}", page.html);
    assert_eq!(
        shown_secret(&page).to_base32().to_string(),
        secret.to_base32().to_string()
    );
    // The same code again is a replay.
    assert_eq!(
        web.post("/app/another", &[("code", &code)]).unwrap().status,
        401
    );
}

#[test]
fn a_password_only_session_ends_when_a_factor_appears_elsewhere() {
    let mut env = Env::start("");
    let mut web = env.client();
    assert_page(&web.login(BOB.uid, BOB.password).unwrap(), 200, "/");
    env.enroll_cli(BOB.uid);
    let page = web.get("/").unwrap();
    assert_page(&page, 200, "/login");
    assert!(
        page.has("set up for this account elsewhere"),
        "{}",
        page.html
    );
    // Not activated: no session at all.
    let page = web.login(CAROL.uid, CAROL.password).unwrap();
    assert_eq!((page.status, page.path.as_str()), (401, "/login"));
}

#[test]
fn wrong_codes_lock_the_user_like_the_other_doors() {
    let mut env = Env::start("[lockout]\nmax_failures = 3\nlock_for = \"15m\"\n");
    let secret = env.enroll_cli(DAVE.uid);
    let mut web = env.client();
    web.login(DAVE.uid, DAVE.password).unwrap();
    for _ in 0..3 {
        assert_eq!(
            web.post("/login/code", &[("code", "000000")])
                .unwrap()
                .status,
            401
        );
    }
    let good = env.next_code(&secret);
    let page = web.post("/login/code", &[("code", &good)]).unwrap();
    assert_eq!(page.status, 401);
    assert!(page.has("locked"), "{}", page.html);
    // Locked: even the password step says so.
    web.post("/logout", &[]).unwrap();
    let page = web.login(DAVE.uid, DAVE.password).unwrap();
    assert_eq!(page.status, 403);
    assert_eq!(env.status(DAVE.uid)["locked"], true);
    // Wrong passwords: the same generic message for an unknown user.
    let a = web.login(DAVE.uid, "nope").unwrap();
    let b = web.login("nobody-here", "nope").unwrap();
    assert_eq!((a.status, b.status), (401, 401));
    assert!(a.has("The ID or the password is wrong.") && b.has("The ID or the password is wrong."));
    assert!(
        env.server
            .metric("otpgate_requests_total{door=\"portal\",result=\"reject\"}")
            >= 2.0
    );
}

#[test]
fn forms_need_their_csrf_token_and_bad_input_gets_the_portals_own_pages() {
    let env = Env::start("");
    let mut web = env.client();
    let page = web.get("/login").unwrap();
    // Cookies and headers. An anonymous page makes no session: its CSRF token is a
    // signed cookie, and the form carries the same value.
    assert!(
        !page
            .set_cookies
            .iter()
            .any(|c| c.starts_with("__Host-otpgate-session=")),
        "{:?}",
        page.set_cookies
    );
    let csrf = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-otpgate-csrf="))
        .expect("a CSRF cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(csrf.contains(attr), "{csrf}");
    }
    assert!(
        csrf.contains(&format!("={};", page.csrf().unwrap())),
        "{csrf}"
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(page.header("strict-transport-security").is_some());

    // No token, or a wrong one: refused before the password is looked at.
    let page = web
        .post_raw("/login", &[("user", DAVE.uid), ("password", DAVE.password)])
        .unwrap();
    assert_eq!(page.status, 403);
    assert!(page.has("This form has expired"));
    let page = web
        .post_raw(
            "/login",
            &[
                ("csrf", "x"),
                ("user", DAVE.uid),
                ("password", DAVE.password),
            ],
        )
        .unwrap();
    assert_eq!(page.status, 403);

    // Oversized, repeated and malformed bodies: the portal's own page, no parser text.
    let page = web.post_bytes("/login", vec![b'a'; 10_000]).unwrap();
    assert_eq!(page.status, 413);
    assert!(page.has("The form could not be read"), "{}", page.html);
    let page = web.post_bytes("/login", b"csrf=a&csrf=b".to_vec()).unwrap();
    assert_eq!(page.status, 400);
    let page = web.get("/reset/confirm?user=&token=").unwrap();
    assert_eq!(page.status, 400);
    assert!(page.has("This link is incomplete"));
    let page = web.get("/no/such/page").unwrap();
    assert_eq!(page.status, 404);
    assert!(page.has("There is no such page."));

    // The session id changes at the password step (no fixation).
    let before = web.get("/login").unwrap();
    let old = before.csrf().unwrap();
    let page = web
        .post("/login", &[("user", DAVE.uid), ("password", DAVE.password)])
        .unwrap();
    assert_page(&page, 200, "/");
    assert_ne!(
        page.csrf().unwrap(),
        old,
        "a new CSRF token after the password"
    );
    let session = page
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-otpgate-session="))
        .expect("a session cookie after the password");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attr), "{session}");
    }
    // A made-up session cookie (the right user, a guessed token) is no session.
    let mut forged = env.client();
    let made_up = format!(
        "__Host-otpgate-session={}.{}",
        data_encoding::HEXLOWER.encode(DAVE.uid.as_bytes()),
        "0".repeat(64)
    );
    let page = forged.get_with("/", &[("Cookie", &made_up)]).unwrap();
    assert_page(&page, 200, "/login");
    assert!(!page.has("state-app"));
}

#[test]
fn japanese_by_accept_language_and_by_choice() {
    let env = Env::start("");
    let mut web = env.client();
    web.accept_language("ja-JP,ja;q=0.9,en;q=0.5");
    let page = web.get("/login").unwrap();
    assert!(
        page.has("<html lang=\"ja\">") && page.has("パスワード"),
        "{}",
        page.html
    );
    // The footer's switch wins over the header, and comes back to the same page.
    let page = web.get("/lang/en?back=%2Flogin").unwrap();
    assert_page(&page, 200, "/login");
    assert!(page.has("<html lang=\"en\">") && page.has("Password"));
    // A switch never sends the browser to another site.
    let page = web.get("/lang/ja?back=%2F%2Fevil.example%2F").unwrap();
    assert_page(&page, 200, "/login");
    assert!(page.has("ログイン"));
}

#[test]
fn sigterm_stops_the_portal_with_the_rest() {
    let mut env = Env::start("");
    let mut web = env.client();
    assert_eq!(web.get("/login").unwrap().status, 200);
    env.server.signal("TERM").unwrap();
    let status = env.server.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        env.server.log()
    );
    assert!(web.get("/login").is_err(), "nothing listens any more");
}

#[test]
fn a_backend_outage_is_an_unavailable_page_never_a_sign_in() {
    let mut env = Env::start("");
    let secret = env.enroll_cli(DAVE.uid);
    let mut web = env.client();
    assert_page(
        &web.login(DAVE.uid, DAVE.password).unwrap(),
        200,
        "/login/code",
    );
    // The store goes away between the password and the code.
    env.redis.stop();
    let code = env.next_code(&secret);
    let page = web.post("/login/code", &[("code", &code)]).unwrap();
    assert_eq!(page.status, 503, "{}", page.html);
    assert!(page.has("unavailable"));
    assert!(
        !page.has("redis") && !page.has("Connection refused"),
        "no backend text: {}",
        page.html
    );
    // Not signed in. Sessions live in the store: while it is down no page of a
    // session opens, and none is made up (fail closed).
    let page = web.get("/").unwrap();
    assert_eq!(page.status, 503, "{}", page.html);
    assert!(page.has("unavailable") && !page.has("state-app"));
    // The directory down: the password step fails closed too.
    env.redis.start_again().unwrap();
    env.slapd.stop();
    let page = web.login(DAVE.uid, DAVE.password).unwrap();
    assert_eq!(page.status, 503, "{}", page.html);
    assert!(
        env.server
            .metric("otpgate_backend_errors_total{door=\"portal\",backend=\"directory\"}")
            >= 1.0
    );
    assert!(
        env.server
            .metric("otpgate_backend_errors_total{door=\"portal\",backend=\"store\"}")
            >= 1.0
    );
}

#[test]
fn password_attempts_are_rate_limited_per_address() {
    let env = Env::start("");
    let mut web = env.client();
    web.get("/login").unwrap();
    let mut statuses = Vec::new();
    for _ in 0..31 {
        statuses.push(
            web.post("/login", &[("user", DAVE.uid), ("password", "wrong")])
                .unwrap()
                .status,
        );
    }
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[30], 429);
    // Even the right password waits now.
    let page = web
        .post("/login", &[("user", DAVE.uid), ("password", DAVE.password)])
        .unwrap();
    assert_eq!(page.status, 429);
    assert!(page.has("Too many attempts"));
}
