//! The environment the bench measures: the test harness's slapd (with bulk users
//! `user0000`…, password `user0000-pw`), a Redis, and a release `otpgate serve` in
//! append mode with `reject_delay = "0s"`, configured exactly as the integration tests
//! configure it; then every user enrolled through the core, as `otpgate user enroll`
//! and `otpgate user confirm` would.

use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use otpgate_core::Core;
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::clock::SystemClock;
use otpgate_core::otp::totp::{self, TotpParams};
use otpgate_core::random::OsRandom;
use otpgate_core::secret::TotpSecret;
use otpgate_core::service::CoreConfig;
use otpgate_core::user::UserName;
use otpgate_tests::users::{bulk_password, bulk_uid};
use otpgate_tests::{
    ConfigBuilder, FreeRadiusBaseline, HarnessError, OtpgateServe, Redis, Slapd, SlapdOptions,
    TestConfig, radius_section, toml_string, write_radius_secret,
};

use crate::logins::BenchUser;

/// The shared secret of the bench's RADIUS client (127.0.0.1/32).
pub const SECRET: &str = "otpgate-bench-shared-secret";

/// Why the environment could not be set up.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A server of the harness did not start (the message names the install command
    /// when a binary is missing).
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// The written configuration did not load.
    #[error(transparent)]
    Config(#[from] otpgate_config::ConfigError),
    /// The core refused or failed an enrollment.
    #[error("enrolling {user}: {error}")]
    Enroll {
        /// The user.
        user: String,
        /// What the core said.
        error: otpgate_core::CoreError,
    },
    /// The core could not be opened.
    #[error(transparent)]
    Core(#[from] otpgate_core::CoreError),
    /// A bulk user's name is not a valid user name.
    #[error("user name {0}")]
    UserName(String),
    /// The enrollment gave a secret that is not base32.
    #[error("enrollment of {0} gave a secret that is not base32")]
    Secret(String),
}

/// The running servers; dropping it stops them all.
pub struct Environment {
    /// `otpgate serve`; declared first so it stops before its backends.
    pub server: OtpgateServe,
    /// The configuration (and its secrets).
    pub config: TestConfig,
    /// The store.
    pub redis: Redis,
    /// The directory.
    pub slapd: Slapd,
    /// The `[totp]` settings the server runs with.
    pub params: TotpParams,
}

/// The source address of the OTP-only client (`password_checked_by_client`): requests
/// from it carry the code alone.
pub const OTP_ONLY_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 2);

/// A second client entry: `127.0.0.2`, same secret, the password checked by the client
/// (a PAM host's case), so a request carries the code alone and makes no user bind.
fn otp_only_client() -> String {
    format!(
        "\n[[radius.clients]]\nname = \"otp-only\"\naddress = \"{OTP_ONLY_SOURCE}/32\"\n\
         secret_file = \"radius.secret\"\npassword_checked_by_client = true\n"
    )
}

/// Starts slapd with `users` bulk users, Redis and `otpgate serve` (append mode, no
/// reject delay, `skew_steps` as given, `[directory] cache_for` as given, which the
/// server validates as it would any configuration), with a second, OTP-only client for [`OTP_ONLY_SOURCE`].
///
/// # Errors
///
/// [`SetupError::Harness`] when a server does not start.
pub fn start(
    users: usize,
    skew_steps: u32,
    cache_for: std::time::Duration,
) -> Result<Environment, SetupError> {
    let slapd = Slapd::start_with_bulk_users(users)?;
    let redis = Redis::start()?;
    let config = ConfigBuilder::new(&slapd)
        .redis(&redis)
        .set("totp", "skew_steps", &skew_steps.to_string())
        .set(
            "directory",
            "cache_for",
            &toml_string(&format!("{}ms", cache_for.as_millis())),
        )
        .extra(&radius_section("append", "0s"))
        .extra(&otp_only_client())
        .write()?;
    write_radius_secret(config.dir(), SECRET)?;
    let server = OtpgateServe::start(config.path())?;
    Ok(Environment {
        server,
        config,
        redis,
        slapd,
        params: TotpParams {
            digits: 6,
            period: 30,
            skew_steps,
            algorithm: otpgate_config::TotpAlgorithm::Sha1,
        },
    })
}

/// Enrolls bulk users `0..count` through a core opened on `config` (the server's),
/// `concurrency` at a time. Each enrollment is confirmed with the code of the oldest
/// step the window safely accepts, so the logins have the rest of the window.
///
/// # Errors
///
/// The first enrollment that failed.
pub async fn enroll(
    config: &Path,
    count: usize,
    concurrency: usize,
    params: TotpParams,
) -> Result<Vec<BenchUser>, SetupError> {
    let config = otpgate_config::load(config)?;
    let core = Core::open(
        &config,
        CoreConfig::from_config(&config),
        Arc::new(SystemClock),
        Arc::new(OsRandom),
    )
    .await?;
    let ctx = RequestContext::new(Door::Cli, "otpgate-bench");
    stream::iter(0..count)
        .map(|index| enroll_one(&core, &ctx, index, params))
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

async fn enroll_one(
    core: &Core,
    ctx: &RequestContext,
    index: usize,
    params: TotpParams,
) -> Result<BenchUser, SetupError> {
    let name = bulk_uid(index);
    let failed = |error| SetupError::Enroll {
        user: name.clone(),
        error,
    };
    let user = UserName::parse(&name).map_err(|e| SetupError::UserName(format!("{name}: {e}")))?;
    let enrollment = core.enroll(&user, ctx).await.map_err(failed)?;
    let secret = data_encoding::BASE32_NOPAD
        .decode(enrollment.secret.as_bytes())
        .map(|bytes| TotpSecret::from_bytes(&bytes))
        .map_err(|_| SetupError::Secret(name.clone()))?;
    let now_step = totp::step_at(core.now(), params.period);
    let step = (now_step + 1).saturating_sub(u64::from(params.skew_steps));
    let code = totp::code_at_step(&secret, step, &params);
    core.confirm_enrollment(&user, &code, ctx)
        .await
        .map_err(failed)?;
    Ok(BenchUser {
        password: bulk_password(index),
        name,
        secret,
        last_step: step,
    })
}

/// FreeRADIUS doing the same work with its own modules
/// ([`FreeRadiusBaseline`]), on a slapd of its own whose bulk users carry their TOTP
/// secret in `description`; dropping it stops both.
pub struct BaselineEnvironment {
    /// FreeRADIUS; declared first so it stops before its directory.
    pub server: FreeRadiusBaseline,
    /// The directory.
    pub slapd: Slapd,
    /// The users, with the secrets the directory holds.
    pub users: Vec<BenchUser>,
}

/// Starts slapd with `users` bulk users, each with a fresh random TOTP secret of 160
/// bits in its entry, and the FreeRADIUS baseline on it, caching each user's DN and
/// secret for `cache_for` (zero: no cache).
///
/// # Errors
///
/// [`SetupError::Harness`] when a server does not start (or `freeradius-ldap` is
/// missing), [`SetupError::Core`] when no randomness is to be had.
pub fn start_baseline(
    users: usize,
    cache_for: std::time::Duration,
) -> Result<BaselineEnvironment, SetupError> {
    let secrets = (0..users)
        .map(|_| TotpSecret::generate(&OsRandom))
        .collect::<Result<Vec<_>, _>>()?;
    let slapd = Slapd::start_with(&SlapdOptions {
        bulk_users: users,
        bulk_descriptions: secrets.iter().map(|s| s.to_base32().to_string()).collect(),
        ..SlapdOptions::default()
    })?;
    let server = FreeRadiusBaseline::start(&slapd, SECRET, cache_for)?;
    let users = secrets
        .into_iter()
        .enumerate()
        .map(|(index, secret)| BenchUser {
            name: bulk_uid(index),
            password: bulk_password(index),
            secret,
            last_step: 0,
        })
        .collect();
    Ok(BaselineEnvironment {
        server,
        slapd,
        users,
    })
}
