//! The `otpgate` binary: parse arguments, load the configuration, start logging, and
//! call the libraries. Exit codes: 0 done, 1 refused (one-line reason on stderr),
//! 2 usage or configuration error.

mod args;
mod demo;
mod metrics_http;
mod output;
mod serve;
mod user;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use otpgate_core::clock::SystemClock;
use otpgate_core::random::OsRandom;
use otpgate_core::service::CoreConfig;
use otpgate_core::{Core, CoreError};

use crate::args::{Args, Command};

// glibc's malloc took a sixth of the server's CPU under load (arena locks,
// consolidation); mimalloc's thread-local heaps suit tokio's worker threads. Only the
// binary sets this: pam_otpgate.so lives in other processes and uses theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: the request was refused, or a backend could not answer.
    Refused(String),
    /// Exit 2: usage or configuration.
    Config(String),
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Config(m) => Failure::Config(m),
            other => Failure::Refused(other.to_string()),
        }
    }
}

impl From<otpgate_config::ConfigError> for Failure {
    fn from(e: otpgate_config::ConfigError) -> Self {
        Failure::Config(e.to_string())
    }
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("otpgate: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(reason)) => {
            eprintln!("otpgate: {reason}");
            ExitCode::from(1)
        }
        Err(Failure::Config(reason)) => {
            eprintln!("otpgate: {reason}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(args: &Args) {
    let default = match args.command {
        Command::Serve | Command::Demo { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("OTPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: in a journal or a log file the escape codes are
    // bytes that nobody reads, formatted on every request.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

async fn run(args: Args) -> Result<(), Failure> {
    let json = args.json;
    match args.command {
        Command::CheckConfig => {
            let config = otpgate_config::load(&args.config)?;
            output::print(
                json,
                &serde_json::json!({"config": config.path, "valid": true}),
                || format!("{}: valid", config.path.display()),
            );
            Ok(())
        }
        Command::Serve => {
            let config = otpgate_config::load(&args.config)?;
            serve::serve(config).await
        }
        Command::Demo {
            dir,
            radius_port,
            portal_port,
        } => demo::run(&dir, radius_port, portal_port, json).await,
        Command::User { command } => {
            let core = open_core(&args.config).await?;
            user::user(&core, command, json).await
        }
        Command::Helpdesk { command } => {
            let core = open_core(&args.config).await?;
            user::helpdesk(&core, command, json).await
        }
        Command::Audit { user, since, limit } => {
            let core = open_core(&args.config).await?;
            user::audit(&core, user.as_deref(), &since, limit, json).await
        }
    }
}

/// Loads the configuration and opens the core on the real clock and randomness.
pub async fn open_core(path: &std::path::Path) -> Result<Core, Failure> {
    let config = otpgate_config::load(path)?;
    Ok(Core::open(
        &config,
        CoreConfig::from_config(&config),
        Arc::new(SystemClock),
        Arc::new(OsRandom),
    )
    .await?)
}
