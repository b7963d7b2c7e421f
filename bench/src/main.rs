//! `otpgate-bench`: reproducible load runs against a real `otpgate serve`.
//!
//! ```text
//! cargo run --release -p otpgate-bench -- radius --users 20000 --in-flight 16,64 --duration 20s
//! ```
//!
//! Starts slapd (bulk users), Redis and `otpgate serve` from the test harness, enrolls
//! every user, then runs the load at each in-flight level in turn and prints one line
//! per level, with the CPU time each server process spent per login. Exits 1 when any
//! request was not an Access-Accept.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use otpgate_bench::load::{self, RunOptions, Target};
use otpgate_bench::logins::Logins;
use otpgate_bench::procs::{
    CpuSample, Watched, redis_commands, redis_commands_per_request, resident_kib,
};
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
    /// A run before the measured ones with a password, not reported (connections,
    /// caches); the OTP-only runs have their own, `--otp-only-warmup`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// How long a request waits for its reply before it counts as a timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// The server's `[totp] skew_steps` (at most 10). The product's default is 1; a
    /// run of R req/s for T s needs about R·T / (2·skew_steps + T/30) users.
    #[arg(long, default_value_t = 10)]
    skew_steps: u32,
    /// otpgate's `[directory] cache_for` (default: the product's default), and as long
    /// FreeRADIUS's user cache (`rlm_cache`: the DN and the TOTP secret; `0s`: none).
    #[arg(long, default_value = otpgate_config::DEFAULT_LDAP_CACHE_FOR, value_parser = parse_duration)]
    cache_for: Duration,
    /// In-flight levels of the OTP-only run against otpgate (a
    /// `password_checked_by_client` client: the code alone, no user bind); `0` for
    /// none.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    otp_only_in_flight: Vec<usize>,
    /// Length of each OTP-only run (default: `--duration`). It uses fresh codes about
    /// twice as fast as the runs with a password: a shorter run needs fewer users.
    #[arg(long, value_parser = parse_duration)]
    otp_only_duration: Option<Duration>,
    /// The warm-up before the OTP-only runs. The runs with a password have already
    /// brought every user's record and entry into the caches; a long warm-up at this
    /// rate would only use up fresh codes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    otp_only_warmup: Duration,
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

/// What each run measures besides the requests: the servers' processes, and Redis's
/// commands when there is a Redis.
struct Measured {
    processes: Vec<Watched>,
    redis_port: Option<u16>,
}

/// The process ids of the harness's servers.
fn pid_of(name: &'static str, pid: Option<u32>) -> anyhow::Result<Watched> {
    let pid = pid.with_context(|| format!("{name} is not running"))?;
    Ok(Watched { name, pid })
}

/// `VmRSS` (and `VmHWM`) of a process, for the report.
fn rss(pid: u32) -> String {
    match resident_kib(pid) {
        Ok((now, peak)) => format!(
            "{:.1} MiB (peak {:.1} MiB)",
            now as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        Err(e) => format!("unknown ({e})"),
    }
}

/// `otpgate serve` on slapd and Redis, with every user enrolled through the core.
async fn run_otpgate(args: &RadiusArgs) -> anyhow::Result<bool> {
    println!("== otpgate serve (append mode, replay protection, lockout, audit)");
    let started = std::time::Instant::now();
    // Blocking here is harmless: nothing else runs on this thread yet.
    let env = setup::start(args.users, args.skew_steps, args.cache_for)
        .context("starting slapd, Redis and otpgate serve")?;
    let server_pid = env.server.pid();
    println!(
        "servers up in {:.1} s: otpgate serve at {}; idle otpgate serve: {}",
        started.elapsed().as_secs_f64(),
        env.server.radius_addr(),
        rss(server_pid)
    );
    let measured = Measured {
        processes: vec![
            Watched {
                name: "otpgate",
                pid: server_pid,
            },
            pid_of("slapd", env.slapd.pid())?,
            pid_of("redis", env.redis.pid())?,
        ],
        redis_port: Some(env.redis.port()),
    };

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

    let logins = Arc::new(Mutex::new(Logins::new(users, env.params)));
    let now_step = totp::step_at(SystemClock.now(), env.params.period);
    println!(
        "fresh logins available now: {}",
        lock(&logins).capacity(now_step)
    );
    let target = Target {
        addr: env.server.radius_addr(),
        secret: bench_secret()?,
        source: std::net::Ipv4Addr::LOCALHOST,
    };
    let mut accepted = run_levels(
        args,
        target,
        Arc::clone(&logins),
        env.params.period,
        &measured,
        &args.in_flight,
        false,
    )
    .await?;
    let otp_only: Vec<usize> = args
        .otp_only_in_flight
        .iter()
        .copied()
        .filter(|&n| n > 0)
        .collect();
    if !otp_only.is_empty() {
        println!("-- OTP-only client (password_checked_by_client: the code alone, no user bind)");
        let target = Target {
            addr: env.server.radius_addr(),
            secret: bench_secret()?,
            source: setup::OTP_ONLY_SOURCE,
        };
        accepted &= run_levels(
            args,
            target,
            logins,
            env.params.period,
            &measured,
            &otp_only,
            true,
        )
        .await?;
    }
    println!("otpgate serve after the runs: {}", rss(server_pid));
    Ok(accepted)
}

fn lock(logins: &Mutex<Logins>) -> std::sync::MutexGuard<'_, Logins> {
    logins
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The FreeRADIUS baseline (rlm_ldap + rlm_totp) on a slapd of its own.
async fn run_freeradius(args: &RadiusArgs) -> anyhow::Result<bool> {
    println!("== FreeRADIUS baseline (rlm_ldap search + bind, rlm_totp; no replay protection)");
    let cache_for = args.cache_for;
    let started = std::time::Instant::now();
    let mut env = setup::start_baseline(args.users, cache_for)
        .context("starting slapd and the FreeRADIUS baseline")?;
    println!(
        "servers up in {:.1} s: freeradius at {}; idle freeradius: {}",
        started.elapsed().as_secs_f64(),
        env.server.addr(),
        rss(env.server.pid())
    );
    println!(
        "tuning: {}; rlm_cache of the DN and TOTP secret for {} s",
        otpgate_tests::baseline::TUNING,
        cache_for.as_secs()
    );
    let measured = Measured {
        processes: vec![
            Watched {
                name: "freeradius",
                pid: env.server.pid(),
            },
            pid_of("slapd", env.slapd.pid())?,
        ],
        redis_port: None,
    };
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
        source: std::net::Ipv4Addr::LOCALHOST,
    };
    let accepted = run_levels(
        args,
        target,
        Arc::new(Mutex::new(logins)),
        params.period,
        &measured,
        &args.in_flight,
        false,
    )
    .await;
    if !matches!(accepted, Ok(true)) {
        println!("freeradius log:\n{}", env.server.log_tail());
    }
    println!("freeradius after the runs: {}", rss(env.server.pid()));
    accepted
}

fn bench_secret() -> anyhow::Result<Secret> {
    Secret::new(setup::SECRET.as_bytes().to_vec())
        .map_err(|e| anyhow::anyhow!("the bench secret: {e}"))
}

/// The warm-up, then one run per in-flight level; whether every request was
/// accepted (stale rejects aside) and the schedule never ran dry. Each level's line
/// has the CPU each of `watched` spent per accepted request (and the generator's own).
async fn run_levels(
    args: &RadiusArgs,
    target: Target,
    logins: Arc<Mutex<Logins>>,
    period: u64,
    measured: &Measured,
    levels: &[usize],
    code_only: bool,
) -> anyhow::Result<bool> {
    let (duration, warmup) = if code_only {
        (
            args.otp_only_duration.unwrap_or(args.duration),
            args.otp_only_warmup,
        )
    } else {
        (args.duration, args.warmup)
    };
    let (watched, redis_port) = (measured.processes.as_slice(), measured.redis_port);
    let target = Arc::new(target);
    let options = |in_flight, duration| RunOptions {
        in_flight,
        duration,
        timeout: args.timeout,
        period,
        code_only,
    };
    if !warmup.is_zero() {
        let first = levels.first().copied().unwrap_or(1);
        let mut warm = load::run(
            Arc::clone(&target),
            Arc::clone(&logins),
            options(first, warmup),
        )
        .await?;
        println!("warm-up     {}", warm.stats.summary(warm.elapsed));
    }

    let generator = [Watched {
        name: "generator",
        pid: std::process::id(),
    }];
    let mut all_accepted = true;
    for &in_flight in levels {
        let load_before = load_average();
        let before = CpuSample::take(watched)?;
        let generator_before = CpuSample::take(&generator)?;
        let redis_before = redis_port.map(redis_commands).transpose()?;
        let mut result = load::run(
            Arc::clone(&target),
            Arc::clone(&logins),
            options(in_flight, duration),
        )
        .await?;
        let spent = CpuSample::take(watched)?.since(&before);
        let generator_spent = CpuSample::take(&generator)?.since(&generator_before);
        let redis_after = redis_port.map(redis_commands).transpose()?;
        all_accepted &= result.stats.all_accepted();
        let accepts = result.stats.accepts;
        println!(
            "in-flight {in_flight:>3} {}  (load average {load_before} before)",
            result.stats.summary(result.elapsed)
        );
        println!(
            "              {} (generator {:.0}, not counted)",
            spent.per_request(accepts),
            generator_spent.per_request(accepts).total()
        );
        if let (Some(before), Some(after)) = (&redis_before, &redis_after) {
            println!(
                "              redis commands/login: {}",
                redis_commands_per_request(before, after, accepts)
            );
        }
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
