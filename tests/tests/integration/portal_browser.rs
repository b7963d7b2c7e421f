//! The portal end to end in headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver: a new user registers an address and
//! confirms it from the mail, sets up the app with a code computed from the secret
//! shown, signs in again with "Trust this browser" and is not asked for a code the
//! next time; a reset by mailed link; "Can't log in?" with and without an address.
//!
//! With `OTPGATE_PORTAL_SCREENSHOTS=DIR`, the main pages are saved as `DIR/NAME.png`
//! (the README's pictures under docs/portal/ come from there).

use std::time::Duration;

use otpgate_core::secret::TotpSecret;
use otpgate_tests::portal::reset_link_path;
use otpgate_tests::webdriver::Browser;
use otpgate_tests::{ALICE, BOB, DAVE, wait_until};

use crate::portal::Env;
use crate::radius::code;

/// Waits until the browser is on `path` (the path and query of its URL).
fn wait_path(b: &Browser, path: &str) {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(10), || {
        last = b.url().unwrap_or_default();
        let at = last.find("://").map_or(0, |i| i + 3);
        let rest = &last[at..];
        rest.find('/').map(|i| &rest[i..]) == Some(path)
    });
    assert!(
        ok,
        "expected {path}, at {last}: {}",
        b.source().unwrap_or_default()
    );
}

fn shot(b: &Browser, name: &str) {
    b.screenshot_if_asked(name).unwrap();
}

fn sign_in(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login")).unwrap();
    b.type_into("#user", user).unwrap();
    b.type_into("#password", password).unwrap();
    b.click("#login").unwrap();
}

fn sign_out(b: &Browser) {
    b.click("form[action='/logout'] button").unwrap();
    wait_path(b, "/login");
}

fn secret_on_page(b: &Browser) -> TotpSecret {
    let text: String = b
        .text("#secret")
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    TotpSecret::from_bytes(&data_encoding::BASE32_NOPAD.decode(text.as_bytes()).unwrap())
}

#[test]
fn every_flow_works_in_a_real_browser() {
    let mut env = Env::start("");
    let base = env.server.portal_url().unwrap();
    let b = Browser::start("en").unwrap();

    // A new user: the password alone opens the set-up pages.
    b.goto(&format!("{base}/login")).unwrap();
    shot(&b, "login");
    sign_in(&b, &base, BOB.uid, BOB.password);
    wait_path(&b, "/");
    assert!(b.has("#no-address").unwrap());
    shot(&b, "setup-start");

    // Register the notification address and confirm it with the mailed code.
    b.click("#step-address").unwrap();
    wait_path(&b, "/address");
    b.type_into("#address", "bob@example.ac.jp").unwrap();
    b.click("#send-code").unwrap();
    assert!(
        b.text(".error")
            .unwrap()
            .contains("example.ac.jp cannot be used")
    );
    shot(&b, "address-denied");
    b.type_into("#address", "bob@personal.example.net").unwrap();
    b.click("#send-code").unwrap();
    wait_path(&b, "/address");
    b.find("#confirm-address").unwrap();
    shot(&b, "address-confirm");
    let mailed = env.mail("bob@personal.example.net", 1).code(8).unwrap();
    b.type_into("#code", &mailed).unwrap();
    b.click("#confirm-address").unwrap();
    wait_path(&b, "/");
    assert_eq!(
        b.text("#state-address").unwrap(),
        "bob@personal.example.net"
    );

    // Set up the app with a code computed from the secret shown.
    b.click("#step-app").unwrap();
    wait_path(&b, "/app");
    b.click("form[action='/app/enroll'] button").unwrap();
    b.find("#qr svg").unwrap();
    shot(&b, "app-setup");
    let secret = secret_on_page(&b);
    b.type_into("#code", &env.next_code(&secret)).unwrap();
    b.click("#confirm-app").unwrap();
    wait_path(&b, "/");
    assert_eq!(b.text("#state-app").unwrap(), "set up");
    shot(&b, "home");
    sign_out(&b);

    // Sign in with the code and "Trust this browser"; the next time, no code.
    sign_in(&b, &base, BOB.uid, BOB.password);
    wait_path(&b, "/login/code");
    shot(&b, "code");
    b.type_into("#code", &env.next_code(&secret)).unwrap();
    b.click("#trust").unwrap();
    b.click("#verify").unwrap();
    wait_path(&b, "/");
    assert!(
        b.cookie_names()
            .unwrap()
            .contains(&"__Host-otpgate-device".to_string())
    );
    sign_out(&b);
    sign_in(&b, &base, BOB.uid, BOB.password);
    wait_path(&b, "/");
    b.goto(&format!("{base}/trusted")).unwrap();
    assert!(b.has("#trusted").unwrap());
    shot(&b, "trusted");

    // Reset by mailed link: the app and trusted browsers go; app set-up follows.
    b.goto(&format!("{base}/app")).unwrap();
    b.click("form[action='/reset'] button").unwrap();
    wait_path(&b, "/app");
    assert!(b.text(".notice").unwrap().contains("valid for 24 hours"));
    let mail = env.mail("bob@personal.example.net", 2);
    let link = reset_link_path(&mail.body).unwrap();
    sign_out(&b);
    b.goto(&format!("{base}{link}")).unwrap();
    shot(&b, "reset-link");
    b.type_into("#password", BOB.password).unwrap();
    b.click("#reset").unwrap();
    wait_path(&b, "/app");
    assert!(b.text(".notice").unwrap().contains("were removed"));
    assert!(b.has("form[action='/app/enroll']").unwrap());
    assert_eq!(env.status(BOB.uid)["trusted_devices"], 0);
    sign_out(&b);

    // "Can't log in?" with an address: a mailed code signs in.
    sign_in(&b, &base, BOB.uid, BOB.password);
    wait_path(&b, "/login/code");
    b.click("#cant").unwrap();
    assert!(
        b.text(".notice")
            .unwrap()
            .contains("b***@personal.example.net")
    );
    let mailed = env.mail("bob@personal.example.net", 3).code(8).unwrap();
    b.type_into("#code", &mailed).unwrap();
    b.click("#verify").unwrap();
    wait_path(&b, "/");
    sign_out(&b);

    // Without an address: the helpdesk, and a page that says what to do.
    env.enroll_cli(DAVE.uid);
    sign_in(&b, &base, DAVE.uid, DAVE.password);
    wait_path(&b, "/login/code");
    b.click("#cant").unwrap();
    assert!(b.text("#helpdesk").unwrap().contains("Call the helpdesk"));
    shot(&b, "helpdesk-request");
    b.click("form[action='/logout'] button").unwrap();
    wait_path(&b, "/login");

    // The operator's page shows the request; in Japanese for the picture.
    let alice = env.enroll_cli(ALICE.uid);
    sign_in(&b, &base, ALICE.uid, ALICE.password);
    wait_path(&b, "/login/code");
    env.step += 1;
    b.type_into("#code", &code(&alice, env.step)).unwrap();
    b.click("#verify").unwrap();
    wait_path(&b, "/");
    b.goto(&format!("{base}/admin")).unwrap();
    assert!(b.text("#queue").unwrap().contains("dave"));
    shot(&b, "admin");
    b.goto(&format!("{base}/lang/ja?back=%2Fadmin")).unwrap();
    wait_path(&b, "/admin");
    assert!(b.source().unwrap().contains("ヘルプデスク依頼一覧"));
    shot(&b, "admin-ja");
    sign_out(&b);
    shot(&b, "login-ja");
}
