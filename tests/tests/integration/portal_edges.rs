//! The portal's network-facing edges under attack and behind proxies, on the real
//! `otpgate serve` with slapd, Redis and an SMTP sink: a flood of anonymous visitors,
//! sessions that any instance continues, idle sockets, mail limits, trusted proxies,
//! and the configured site texts.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use otpgate_tests::portal::{Page, PortalClient};
use otpgate_tests::{BOB, ConfigBuilder, DAVE, OtpgateServe, radius_section, write_radius_secret};

use crate::portal::Env;

fn assert_page(page: &Page, status: u16, path: &str) {
    assert_eq!(
        (page.status, page.path.as_str()),
        (status, path),
        "{}",
        page.html
    );
}

/// The keys of the store matching `pattern`.
fn store_keys(env: &Env, pattern: &str) -> Vec<String> {
    match env.redis.command(&["KEYS", pattern]).unwrap() {
        otpgate_tests::redis::Resp::Array(Some(items)) => items
            .iter()
            .filter_map(otpgate_tests::redis::Resp::as_text)
            .collect(),
        other => panic!("KEYS answered {other:?}"),
    }
}

/// `total` GET /login without cookies over keep-alive connections from `threads`
/// threads, stopping at `bound`. Returns (sent, answered 200).
fn flood(base: &str, ca: &[u8], total: usize, threads: usize, bound: Duration) -> (usize, usize) {
    let sent = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + bound;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (sent, ok) = (sent.clone(), ok.clone());
            let url = format!("{base}/login");
            let ca = reqwest::Certificate::from_pem(ca).unwrap();
            std::thread::spawn(move || {
                // No cookie store: every request is a new anonymous visitor.
                let client = reqwest::blocking::Client::builder()
                    .add_root_certificate(ca)
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                while Instant::now() < until && sent.fetch_add(1, Ordering::Relaxed) < total {
                    if let Ok(r) = client.get(&url).send() {
                        if r.status().as_u16() == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = r.bytes();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    (
        sent.load(Ordering::Relaxed).min(total),
        ok.load(Ordering::Relaxed),
    )
}

#[test]
fn a_flood_of_anonymous_visitors_costs_no_state_and_stops_no_one() {
    let mut env = Env::start("");
    let secret = env.enroll_cli(DAVE.uid);
    // A session opened before the flood, waiting at its password step.
    let mut early = env.client();
    assert_page(
        &early.login(DAVE.uid, DAVE.password).unwrap(),
        200,
        "/login/code",
    );
    let base = env.server.portal_url().unwrap();
    let started = Instant::now();
    let (sent, ok) = flood(
        &base,
        &env.tls.ca_pem().unwrap(),
        20_000,
        4,
        Duration::from_secs(240),
    );
    eprintln!(
        "flood: {sent} requests, {ok} answered 200, in {:?}",
        started.elapsed()
    );
    assert_eq!(sent, 20_000, "the flood ran to its end");
    assert_eq!(ok, sent, "every anonymous visitor got the page");
    // Nothing of the flood is kept: the only session is the one opened before it.
    assert_eq!(store_keys(&env, "*:session:*").len(), 1);

    // A new visitor signs in.
    let started = Instant::now();
    let mut late = env.client();
    let page = late.login(BOB.uid, BOB.password).unwrap();
    assert_page(&page, 200, "/");
    eprintln!(
        "a new visitor signed in {:?} after the flood",
        started.elapsed()
    );
    // The session opened before the flood goes on with its code.
    let code = env.next_code(&secret);
    let page = early.post("/login/code", &[("code", &code)]).unwrap();
    assert_page(&page, 200, "/");
    assert!(page.has("id=\"state-app\""), "{}", page.html);
}

#[test]
fn a_login_begun_on_one_instance_goes_on_on_another_and_the_store_holds_no_proof() {
    let mut env = Env::start("");
    let secret = env.enroll_cli(DAVE.uid);
    let second = OtpgateServe::start(env.config.path()).unwrap();
    let (a, b) = (
        env.server.portal_url().unwrap(),
        second.portal_url().unwrap(),
    );
    assert_ne!(a, b);
    let mut web = env.client();
    // The password on A.
    assert_page(
        &web.login(DAVE.uid, DAVE.password).unwrap(),
        200,
        "/login/code",
    );
    // The code on B.
    web.switch_to(&b);
    assert_page(&web.get("/login/code").unwrap(), 200, "/login/code");
    let code = env.next_code(&secret);
    let page = web.post("/login/code", &[("code", &code)]).unwrap();
    assert_page(&page, 200, "/");
    // Signed in on B, and on A.
    assert_page(&web.get("/trusted").unwrap(), 200, "/trusted");
    web.switch_to(&a);
    assert_page(&web.get("/trusted").unwrap(), 200, "/trusted");

    // The store has the session under the user's tag, named by a keyed hash, and sealed:
    // neither the browser's token nor the stage can be read from it.
    let page = web.get("/").unwrap();
    assert_page(&page, 200, "/");
    let keys = store_keys(&env, "*:session:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("otpgate:{dave}:session:"), "{keys:?}");
    let data = match env.redis.command(&["HGET", &keys[0], "data"]).unwrap() {
        otpgate_tests::redis::Resp::Bulk(Some(d)) => d,
        other => panic!("session data: {other:?}"),
    };
    let text = String::from_utf8_lossy(&data);
    for plain in ["dave", "Full", "csrf", page.csrf().unwrap().as_str()] {
        assert!(!text.contains(plain), "{plain} readable in the store");
    }
    let ttl = env.redis.command(&["TTL", &keys[0]]).unwrap();
    assert!(
        matches!(ttl, otpgate_tests::redis::Resp::Integer(t) if t > 0 && t <= 900),
        "{ttl:?}"
    );

    // Signing out on B ends the session everywhere.
    web.switch_to(&b);
    web.post("/logout", &[]).unwrap();
    web.switch_to(&a);
    assert_page(&web.get("/").unwrap(), 200, "/login");
    assert!(store_keys(&env, "*:session:*").is_empty());
}

/// A portal on plain HTTP (as behind a TLS-terminating proxy), so that a socket can
/// send the HTTP/2 preface and nothing more.
fn plain_portal(
    env_extra: &str,
) -> (
    otpgate_tests::Slapd,
    otpgate_tests::TestConfig,
    OtpgateServe,
) {
    let slapd = otpgate_tests::Slapd::start().unwrap();
    let config = ConfigBuilder::new(&slapd)
        .extra(&radius_section("auto", "100ms"))
        .extra(&format!(
            "[portal]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://portal.example.org\"\n{env_extra}"
        ))
        .write()
        .unwrap();
    write_radius_secret(config.dir(), "edges-secret").unwrap();
    let server = OtpgateServe::start(config.path()).unwrap();
    (slapd, config, server)
}

#[test]
fn idle_sockets_are_closed_in_time_and_block_no_other_client() {
    let (_slapd, _config, server) = plain_portal("idle_timeout = \"2s\"\n");
    let base = server.portal_url().unwrap();
    let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    // 600 sockets from 127.0.0.1: 550 send nothing, 50 only the HTTP/2 preface.
    let mut idle: Vec<TcpStream> = (0..600)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for s in idle.iter_mut().take(50) {
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    }
    // Another client (another loopback address) is served at once.
    let tls = otpgate_tests::portal::PortalTls::create().unwrap();
    let mut visitor = PortalClient::from_address(
        &base,
        &tls,
        "127.0.0.2".parse::<IpAddr>().unwrap(),
        Duration::from_secs(2),
    )
    .unwrap();
    let page = visitor.get("/login").expect("served within 2 s");
    assert_page(&page, 200, "/login");
    // Every idle socket is closed by the server: at once past the per-address cap, else
    // after the idle timeout (2 s) and its grace time. A socket still open after 15 s
    // fails the test.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (i, s) in idle.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                // An HTTP/2 server says GOAWAY before it closes.
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    break;
                }
                Err(e) => panic!("socket {i} still open: {e}"),
            }
        }
    }
    // And the portal still serves the first address once its sockets are gone.
    let mut again = PortalClient::from_address(
        &base,
        &tls,
        "127.0.0.1".parse::<IpAddr>().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_page(&again.get("/login").unwrap(), 200, "/login");
}

#[test]
fn confirmation_mails_are_limited_per_address_and_per_user() {
    let env = Env::start("");
    let mut web = env.client();
    assert_page(&web.login(BOB.uid, BOB.password).unwrap(), 200, "/");
    web.get("/address").unwrap();
    let victim = "victim@elsewhere.example.net";
    // Three mails to one address in the hour; the fourth is refused and not sent.
    for _ in 0..3 {
        let page = web.post("/address", &[("address", victim)]).unwrap();
        assert_page(&page, 200, "/address");
    }
    let page = web.post("/address", &[("address", victim)]).unwrap();
    assert_eq!(page.status, 400, "{}", page.html);
    assert!(
        page.has("Too many confirmation mails were sent in the last hour"),
        "{}",
        page.html
    );
    // Five requests of one user in the hour; the sixth is refused (a new address).
    let page = web
        .post("/address", &[("address", "bob-1@elsewhere.example.net")])
        .unwrap();
    assert_page(&page, 200, "/address");
    let page = web
        .post("/address", &[("address", "bob-2@elsewhere.example.net")])
        .unwrap();
    assert_eq!(page.status, 400, "{}", page.html);
    assert!(page.has("Too many confirmation mails"), "{}", page.html);
    // Exactly the accepted ones were mailed (each response came after the SMTP
    // server's answer).
    env.mail("bob-1@elsewhere.example.net", 1);
    assert_eq!(env.smtp.mails_to(victim).unwrap().len(), 3);
    assert!(
        env.smtp
            .mails_to("bob-2@elsewhere.example.net")
            .unwrap()
            .is_empty()
    );
    assert_eq!(env.smtp.messages().unwrap().len(), 4);
}

/// `n` wrong passwords for dave, each with `X-Forwarded-For: forwarded`; the statuses.
fn wrong_passwords(
    web: &mut PortalClient,
    n: usize,
    forwarded: &dyn Fn(usize) -> String,
) -> Vec<u16> {
    web.get("/login").unwrap();
    (0..n)
        .map(|i| {
            web.post_with(
                "/login",
                &[("user", DAVE.uid), ("password", "wrong")],
                &[("X-Forwarded-For", &forwarded(i))],
            )
            .unwrap()
            .status
        })
        .collect()
}

#[test]
fn forwarded_addresses_count_only_from_trusted_proxies() {
    let env = Env::start("trusted_proxies = [\"127.0.0.1/32\"]\n");
    // Behind the trusted proxy: each forwarded client has its own bucket.
    let mut one = env.client();
    let statuses = wrong_passwords(&mut one, 31, &|_| "198.51.100.1".into());
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[30], 429);
    let mut two = env.client();
    // What a client wrote itself (left of the proxy's entry) does not count.
    let statuses = wrong_passwords(&mut two, 1, &|_| "198.51.100.1, 198.51.100.2".into());
    assert_eq!(statuses, vec![401], "another client, another bucket");
    // The audit records show the forwarded address.
    let out = crate::radius::otpgate(env.config.path(), &["audit", "--user", DAVE.uid, "--json"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).replace(": ", ":");
    assert!(text.contains("\"client\":\"198.51.100.2\""), "{text}");
    assert!(text.contains("\"client\":\"198.51.100.1\""), "{text}");
    assert!(!text.contains("\"client\":\"127.0.0.1\""), "{text}");

    // Without the setting the header is ignored: every forwarded name shares the
    // peer's bucket, and the audit shows the peer.
    let env = Env::start("");
    let mut web = env.client();
    let statuses = wrong_passwords(&mut web, 31, &|i| format!("203.0.113.{i}"));
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[30], 429);
    let out = crate::radius::otpgate(env.config.path(), &["audit", "--user", DAVE.uid, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).replace(": ", ":");
    assert!(text.contains("\"client\":\"127.0.0.1\""), "{text}");
    assert!(!text.contains("203.0.113."), "{text}");
}

#[test]
fn the_site_name_and_the_helpdesk_contact_are_shown_in_both_languages() {
    let mut env = Env::start(
        "site_name = { en = \"Example University MFA\", ja = \"例大学 多要素認証\" }\n\
         helpdesk_contact = { en = \"ICT Support, +81-3-0000-0000, weekdays 9:00-17:00\", ja = \"ICTサポート 03-0000-0000（平日9時〜17時）\" }\n",
    );
    env.enroll_cli(BOB.uid);
    for (lang, site, contact) in [
        (
            "en",
            "Example University MFA",
            "Helpdesk: ICT Support, +81-3-0000-0000, weekdays 9:00-17:00",
        ),
        (
            "ja",
            "例大学 多要素認証",
            "ヘルプデスク: ICTサポート 03-0000-0000（平日9時〜17時）",
        ),
    ] {
        let mut web = env.client();
        web.accept_language(lang);
        let page = web.get("/login").unwrap();
        assert!(
            page.has(&format!("<strong class=\"site\">{site}</strong>")),
            "{}",
            page.html
        );
        assert!(page.has(&format!("— {site}</title>")), "{}", page.html);
        // Bob has an app and no address: "Can't log in?" sends him to the helpdesk.
        web.post("/login", &[("user", BOB.uid), ("password", BOB.password)])
            .unwrap();
        let page = web.post("/login/help", &[]).unwrap();
        assert!(page.has("id=\"helpdesk\""), "{}", page.html);
        assert_eq!(
            page.text_of("helpdesk-contact").as_deref(),
            Some(contact),
            "{}",
            page.html
        );
    }
}
