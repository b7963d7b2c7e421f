//! How much time `pam_otpgate` adds to a login beyond the backends' round trips.
//!
//! ```sh
//! cargo run --release -p otpgate-bench --bin pam-overhead [-- ITERATIONS]
//! ```
//!
//! It starts the test harness's real slapd, Redis, SMTP sink and `otpgate serve`,
//! enrolls a user and logs in once with `remember` (so later logins are the
//! trusted-host path: one backend exchange, no code, repeatable), then alternates:
//!
//! - server mode: the whole module call (`logic::authenticate` with the module's own
//!   config loading) against the bare RADIUS exchange the module makes
//!   (`Client::authenticate` with the same attributes);
//! - direct mode: the whole module call (config loading and checks, a fresh runtime,
//!   the core) against the same core calls (`Core::open` and the login flow's
//!   trusted-host path) on a runtime made once.
//!
//! The difference of the medians is the module's own cost. Goal: under 10 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use otpgate_core::Core;
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::otp::totp::{self, TotpParams};
use otpgate_core::random::OsRandom;
use otpgate_core::secret::TotpSecret;
use otpgate_core::service::{
    CoreConfig, Credential, DeviceId, DoorPolicy, LoginRequest, LoginStep, PolicyPlace,
};
use otpgate_core::user::UserName;
use otpgate_radius_proto::{AccessRequestParams, Client, Reply, Secret};
use otpgate_tests::{PAM_RADIUS_SECRET, PamBackends};
use pam_otpgate::handle::Answers;
use pam_otpgate::{PamCode, authenticate};
use zeroize::Zeroizing;

const HOST: &str = "192.0.2.99";

fn code(secret_base32: &str, step: u64) -> String {
    let params = TotpParams {
        digits: 6,
        period: 30,
        skew_steps: 5,
        algorithm: otpgate_config::TotpAlgorithm::Sha1,
    };
    let bytes = data_encoding::BASE32_NOPAD
        .decode(secret_base32.as_bytes())
        .unwrap_or_default();
    totp::code_at_step(&TotpSecret::from_bytes(&bytes), step, &params)
}

fn module_call(config: &std::path::Path, answers: &[&str]) -> (PamCode, Duration) {
    let config = format!("config={}", config.display());
    let mut handle = Answers::new("alice", Some(HOST), answers);
    let started = Instant::now();
    let code = authenticate(
        &mut handle,
        &[config.as_str(), "remember"],
        pam_otpgate::backend::open,
    );
    (code, started.elapsed())
}

fn median_and_p95(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    (at(0.5), at(0.95))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(name: &str, module: Vec<Duration>, backends: Vec<Duration>) {
    let (m50, m95) = median_and_p95(module);
    let (b50, b95) = median_and_p95(backends);
    println!(
        "{name}: module call median {:.2} ms (p95 {:.2}); backend round trips median {:.2} ms (p95 {:.2}); added by the module {:.2} ms",
        ms(m50),
        ms(m95),
        ms(b50),
        ms(b95),
        ms(m50.saturating_sub(b50))
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100);
    let b = PamBackends::start("[lockout]\nmax_failures = 1000\n")?;
    let base = totp::step_at(SystemClock.now(), 30);
    let secret = b.enroll("alice", |s| code(s, base - 1))?;

    // One full login per mode makes HOST trusted in each.
    for (config, step) in [
        (&b.server_mode_config, base),
        (&b.direct_mode_config, base + 1),
    ] {
        let (result, _) = module_call(config, &[&code(&secret, step)]);
        if result != PamCode::Success {
            return Err(format!("the first login failed: {result:?}").into());
        }
    }

    // Server mode.
    let client = Client::new(
        vec![b.server.radius_addr()],
        Secret::new(PAM_RADIUS_SECRET.as_bytes().to_vec())?,
        Duration::from_secs(2),
        1,
    );
    let mut params = AccessRequestParams::new("alice");
    params.password = Some(Zeroizing::new(Vec::new()));
    params.calling_station_id = Some(HOST.to_string());
    let (mut module, mut backends) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let (result, took) = module_call(&b.server_mode_config, &[]);
        if result != PamCode::Success {
            return Err(format!("server mode: {result:?}").into());
        }
        module.push(took);
        let started = Instant::now();
        let reply = client.authenticate(&params)?;
        backends.push(started.elapsed());
        if !matches!(reply, Reply::Accept { .. }) {
            return Err("the bare exchange was not accepted".into());
        }
    }
    report("server mode", module, backends);

    // Direct mode.
    let config = otpgate_config::load(&b.direct_mode_config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let user = UserName::parse("alice")?;
    let device = DeviceId {
        door: Door::Pam,
        identifier: HOST.into(),
        label: HOST.into(),
    };
    let ctx = RequestContext::new(Door::Pam, HOST);
    let (mut module, mut backends) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        let (result, took) = module_call(&b.direct_mode_config, &[]);
        if result != PamCode::Success {
            return Err(format!("direct mode: {result:?}").into());
        }
        module.push(took);
        let started = Instant::now();
        runtime.block_on(async {
            let settings = CoreConfig::from_config(&config);
            let core = Arc::new(
                Core::open(&config, settings, Arc::new(SystemClock), Arc::new(OsRandom)).await?,
            );
            let pam = config.pam.as_ref().ok_or("no [pam] section")?;
            let step = core
                .login(LoginRequest {
                    user: user.clone(),
                    ctx: ctx.clone(),
                    credential: Credential::Vouched(pam.password_vouch("pam")),
                    answer: None,
                    device: Some(device.clone()),
                    remember: false,
                    policy: DoorPolicy {
                        place: Some(PolicyPlace {
                            door: otpgate_config::PolicyDoor::Radius,
                            client: None,
                        }),
                        nullok: false,
                        can_ask: true,
                        can_enroll: false,
                    },
                })
                .await?;
            if !matches!(step, LoginStep::Accepted(_)) {
                return Err("the trusted host was not accepted".into());
            }
            Ok::<(), Box<dyn std::error::Error>>(())
        })?;
        backends.push(started.elapsed());
    }
    report("direct mode", module, backends);
    Ok(())
}
