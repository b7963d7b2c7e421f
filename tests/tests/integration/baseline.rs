//! The bench's FreeRADIUS baseline does the work it is compared for: it accepts the
//! password followed by the current TOTP code of the secret in the user's entry, and
//! refuses a wrong code, a wrong password and an unknown user. Without this the
//! comparison in `bench/README.md` could measure a server that rejects everything.

use std::time::Duration;

use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::otp::totp;
use otpgate_core::secret::TotpSecret;
use otpgate_tests::users::{bulk_password, bulk_uid};
use otpgate_tests::{FreeRadiusBaseline, Slapd, SlapdOptions};

use crate::radius::{SECRET, assert_code, params, radclient};

/// A reply to `user` / `password` from the baseline, as radclient saw it.
fn login(baseline: &FreeRadiusBaseline, user: &str, password: &str) -> crate::radius::RadReply {
    radclient(
        baseline.addr(),
        SECRET,
        &format!("User-Name = \"{user}\"\nUser-Password = \"{password}\""),
        true,
        5,
    )
}

#[test]
fn baseline_checks_the_password_and_the_code() {
    check_logins(Duration::ZERO);
}

/// With the user cache the bench gives it (`rlm_cache` of the DN and the TOTP secret),
/// a cached user's wrong password or wrong code is still refused.
#[test]
fn baseline_with_its_user_cache_checks_the_password_and_the_code() {
    check_logins(Duration::from_secs(60));
}

fn check_logins(cache_for: Duration) {
    let secrets: Vec<TotpSecret> = (0..2u8)
        .map(|i| TotpSecret::from_bytes(&[i.wrapping_mul(37).wrapping_add(11); 20]))
        .collect();
    let slapd = Slapd::start_with(&SlapdOptions {
        bulk_users: 2,
        bulk_descriptions: secrets.iter().map(|s| s.to_base32().to_string()).collect(),
        ..SlapdOptions::default()
    })
    .unwrap();
    let baseline = FreeRadiusBaseline::start(&slapd, SECRET, cache_for).unwrap();
    let step = || totp::step_at(SystemClock.now(), 30);
    // FreeRADIUS reads the wall clock, so the code is the current step's.
    let code = |index: usize| totp::code_at_step(&secrets[index], step(), &params());

    // rlm_totp accepts the current step only, so a login sent as the step turns is
    // refused; one more try then lands inside a single step.
    let try_accept = || {
        let before = step();
        let reply = login(
            &baseline,
            &bulk_uid(0),
            &format!("{}{}", bulk_password(0), code(0)),
        );
        (reply, before != step())
    };
    let accept = || match try_accept() {
        (reply, true) if !reply.output.contains("Access-Accept") => try_accept().0,
        (reply, _) => reply,
    };
    // Twice: with the cache the second login finds the user cached.
    for _ in 0..2 {
        let accepted = accept();
        assert_code(&accepted, "Access-Accept");
        assert!(
            accepted.output.contains("Message-Authenticator"),
            "{}",
            accepted.output
        );
    }

    // The other user's code, the other user's password (with the right code and
    // without), no code, nobody.
    for (user, password) in [
        (bulk_uid(0), format!("{}{}", bulk_password(0), code(1))),
        (bulk_uid(0), format!("{}{}", bulk_password(1), code(0))),
        (bulk_uid(1), format!("{}{}", bulk_password(0), code(1))),
        (bulk_uid(0), bulk_password(0)),
        (
            "nobody".to_owned(),
            format!("{}{}", bulk_password(0), code(0)),
        ),
    ] {
        let reply = login(&baseline, &user, &password);
        assert_code(&reply, "Access-Reject");
    }
}
