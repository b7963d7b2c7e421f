//! `otpgate-bench`: reproducible load runs against a real `otpgate serve`.
//!
//! ```text
//! cargo run --release -p otpgate-bench -- radius --users 20000 --in-flight 16,64 --duration 20s
//! ```
//!
//! Starts slapd (bulk users), Redis and `otpgate serve` from the test harness, enrolls
//! every user, then runs the load at each in-flight level in turn and prints one line
//! per level. Exits 1 when any request was not an Access-Accept.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use otpgate_bench::load::{self, RunOptions, Target};
use otpgate_bench::logins::Logins;
use otpgate_bench::setup;
use otpgate_core::clock::{Clock, SystemClock};
use otpgate_core::otp::totp;
use otpgate_radius_proto::Secret;

#[derive(Parser)]
#[command(name = "otpgate-bench", about = "otpgate load generator")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// PAP password+TOTP (append mode) against `otpgate serve` on the harness's slapd
    /// and Redis.
    Radius(RadiusArgs),
}

#[derive(clap::Args)]
struct RadiusArgs {
    /// Users to create in slapd and enroll. Each logs in once per TOTP step, walking
    /// through the accepted window, so users × (2 × skew_steps) logins are available
    /// at once, plus one per user per 30 s.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Requests in flight, one run per value (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    in_flight: Vec<usize>,
    /// Length of each run.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// A run before the measured ones, not reported (connections, caches).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// How long a request waits for its reply before it counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// The server's `[totp] skew_steps` (at most 10).
    #[arg(long, default_value_t = 10)]
    skew_steps: u32,
    /// Enrollments in parallel during setup.
    #[arg(long, default_value_t = 16)]
    enroll_concurrency: usize,
    /// The servers to measure, one after the other (comma-separated): `otpgate serve`,
    /// and FreeRADIUS doing the same work with rlm_ldap and rlm_totp (needs the
    /// `freeradius` and `freeradius-ldap` packages).
    #[arg(long, value_delimiter = ',', default_value = "otpgate,freeradius")]
    server: Vec<Server>,
}

/// A server the bench can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Server {
    /// `otpgate serve`.
    Otpgate,
    /// The FreeRADIUS baseline.
    Freeradius,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    otpgate_config::duration::parse_duration(text)
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One thread for the generator: the server under test gets the other cores.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("otpgate-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("otpgate-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The load average, as `uptime` shows it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let Command::Radius(args) = args.command;
    if args.in_flight.is_empty() || args.in_flight.contains(&0) {
        bail!("--in-flight needs one or more values above 0");
    }
    if args.server.is_empty() {
        bail!("--server needs otpgate, freeradius or both");
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "otpgate-bench radius: {} users, skew_steps {}, runs of {:?} at in-flight {:?}; {cores} cores, load average {}",
        args.users,
        args.skew_steps,
        args.duration,
        args.in_flight,
        load_average()
    );
    let mut all_accepted = true;
    for server in &args.server {
        // Each server runs alone: the previous one and its backends are stopped.
        all_accepted &= match server {
            Server::Otpgate => run_otpgate(&args).await?,
            Server::Freeradius => run_freeradius(&args).await?,
        };
    }
    Ok(all_accepted)
}

/// `otpgate serve` on slapd and Redis, with every user enrolled through the core.
async fn run_otpgate(args: &RadiusArgs) -> anyhow::Result<bool> {
    println!("== otpgate serve (append mode, replay protection, lockout, audit)");
    let started = std::time::Instant::now();
    // Blocking here is harmless: nothing else runs on this thread yet.
    let env = setup::start(args.users, args.skew_steps)
        .context("starting slapd, Redis and otpgate serve")?;
    println!(
        "servers up in {:.1} s: otpgate serve at {}",
        started.elapsed().as_secs_f64(),
        env.server.radius_addr()
    );

    let started = std::time::Instant::now();
    let users = setup::enroll(
        env.config.path(),
        args.users,
        args.enroll_concurrency,
        env.params,
    )
    .await
    .context("enrolling the users")?;
    println!(
        "{} users enrolled in {:.1} s",
        users.len(),
        started.elapsed().as_secs_f64()
    );

    let logins = Logins::new(users, env.params);
    let now_step = totp::step_at(SystemClock.now(), env.params.period);
    println!("fresh logins available now: {}", logins.capacity(now_step));
    let target = Target {
        addr: env.server.radius_addr(),
        secret: bench_secret()?,
    };
    run_levels(args, target, logins, env.params.period).await
}

/// The FreeRADIUS baseline (rlm_ldap + rlm_totp) on a slapd of its own.
async fn run_freeradius(args: &RadiusArgs) -> anyhow::Result<bool> {
    println!("== FreeRADIUS baseline (rlm_ldap search + bind, rlm_totp; no replay protection)");
    let started = std::time::Instant::now();
    let mut env =
        setup::start_baseline(args.users).context("starting slapd and the FreeRADIUS baseline")?;
    println!(
        "servers up in {:.1} s: freeradius at {}",
        started.elapsed().as_secs_f64(),
        env.server.addr()
    );
    let params = otpgate_core::otp::totp::TotpParams {
        digits: 6,
        period: 30,
        skew_steps: 0,
        algorithm: otpgate_config::TotpAlgorithm::Sha1,
    };
    let logins = Logins::current_step(env.users.drain(..).collect(), params);
    let target = Target {
        addr: env.server.addr(),
        secret: bench_secret()?,
    };
    let accepted = run_levels(args, target, logins, params.period).await;
    if !matches!(accepted, Ok(true)) {
        println!("freeradius log:\n{}", env.server.log_tail());
    }
    accepted
}

fn bench_secret() -> anyhow::Result<Secret> {
    Secret::new(setup::SECRET.as_bytes().to_vec())
        .map_err(|e| anyhow::anyhow!("the bench secret: {e}"))
}

/// The warm-up, then one run per in-flight level; whether every request was
/// accepted (stale rejects aside) and the schedule never ran dry.
async fn run_levels(
    args: &RadiusArgs,
    target: Target,
    logins: Logins,
    period: u64,
) -> anyhow::Result<bool> {
    let logins = Arc::new(Mutex::new(logins));
    let target = Arc::new(target);
    let options = |in_flight, duration| RunOptions {
        in_flight,
        duration,
        timeout: args.timeout,
        period,
    };
    if !args.warmup.is_zero() {
        let first = args.in_flight.first().copied().unwrap_or(1);
        let mut warm = load::run(
            Arc::clone(&target),
            Arc::clone(&logins),
            options(first, args.warmup),
        )
        .await?;
        println!("warm-up     {}", warm.stats.summary(warm.elapsed));
    }

    let mut all_accepted = true;
    for &in_flight in &args.in_flight {
        let load_before = load_average();
        let mut result = load::run(
            Arc::clone(&target),
            Arc::clone(&logins),
            options(in_flight, args.duration),
        )
        .await?;
        all_accepted &= result.stats.all_accepted();
        println!(
            "in-flight {in_flight:>3} {}  (load average {load_before} before)",
            result.stats.summary(result.elapsed)
        );
        if result.exhausted {
            all_accepted = false;
            println!(
                "  ended early after {:.1} s: no fresh (user, step) left; use more --users",
                result.elapsed.as_secs_f64()
            );
        }
    }
    println!("load average after: {}", load_average());
    Ok(all_accepted)
}
