//! Nothing survives a call (SPEC §6; sshd forks around PAM): after many logins in one
//! process, in server mode (and direct mode, with `--features direct`), against real slapd, Redis, SMTP and `otpgate serve`, the
//! process has as many threads (`/proc/self/task`) and open descriptors
//! (`/proc/self/fd`) as before the first.
//!
//! Its own test binary with one test, so no other test's threads are counted. Run it
//! as `cargo test -p pam_otpgate`, not with the whole workspace: unified with the
//! binary's, tokio's features include "signal", whose driver keeps a socket pair open
//! for the life of the process — the very leftover this test catches.

use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::otp::totp::{self, TotpParams};
use otpgate_core::secret::TotpSecret;
use otpgate_tests::PamBackends;
use pam_otpgate::handle::Answers;
use pam_otpgate::{PamCode, authenticate};

fn params() -> TotpParams {
    TotpParams {
        digits: 6,
        period: 30,
        skew_steps: 5,
        algorithm: otpgate_config::TotpAlgorithm::Sha1,
    }
}

fn code(secret_base32: &str, step: u64) -> String {
    let bytes = data_encoding::BASE32_NOPAD
        .decode(secret_base32.as_bytes())
        .unwrap();
    totp::code_at_step(&TotpSecret::from_bytes(&bytes), step, &params())
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

fn links() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

fn login(config: &std::path::Path, extra: &[&str], handle: &mut Answers) -> PamCode {
    let config = format!("config={}", config.display());
    let mut args = vec![config.as_str()];
    args.extend_from_slice(extra);
    authenticate(handle, &args, pam_otpgate::backend::open)
}

#[test]
fn many_calls_in_both_modes_leave_no_thread_and_no_descriptor() {
    let b = PamBackends::start("[lockout]\nmax_failures = 1000\n").unwrap();
    let base = totp::step_at(SystemClock.now(), 30);
    let secret = b.enroll("alice", |s| code(s, base - 1)).unwrap();
    let threads = count("/proc/self/task");
    let fds = count("/proc/self/fd");

    let mut modes = vec![&b.server_mode_config];
    if cfg!(feature = "direct") {
        modes.push(&b.direct_mode_config);
    }
    for (i, config) in modes.iter().enumerate() {
        let step = base + i as u64;
        // A right code (with `remember`), then the trusted host, wrong codes, the
        // password mode with a wrong password, an unknown user, nullok.
        let mut h = Answers::new("alice", Some("192.0.2.50"), &[&code(&secret, step)]);
        assert_eq!(
            login(config, &["remember"], &mut h),
            PamCode::Success,
            "mode {i}: {:?}",
            h.logs
        );
        for _ in 0..10 {
            let mut h = Answers::new("alice", Some("192.0.2.50"), &[]);
            assert_eq!(login(config, &["remember"], &mut h), PamCode::Success);
            let mut h = Answers::new("alice", None, &["000000"]);
            assert_eq!(login(config, &[], &mut h), PamCode::AuthErr);
            let mut h = Answers::new("nobody", None, &["000000"]);
            assert_eq!(login(config, &[], &mut h), PamCode::UserUnknown);
            let mut h = Answers::new("bob", None, &[]);
            assert_eq!(login(config, &["nullok"], &mut h), PamCode::Ignore);
            let mut h = Answers::new("nobody", None, &[]);
            assert_eq!(
                login(config, &["ignore_unknown_user"], &mut h),
                PamCode::Ignore
            );
        }
        if i == 1 {
            // Password mode runs only where the server does not take the host's word.
            for _ in 0..5 {
                let mut h = Answers::new("alice", None, &["wrong-password"]);
                assert_eq!(
                    login(config, &["mode=password+otp"], &mut h),
                    PamCode::AuthErr
                );
            }
        }
    }
    assert_eq!(count("/proc/self/task"), threads, "threads left behind");
    assert_eq!(
        count("/proc/self/fd"),
        fds,
        "descriptors left behind: {:?}",
        links()
    );
}
