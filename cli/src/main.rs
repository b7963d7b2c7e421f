//! The `otpgate` binary: parse arguments, load the configuration, start logging, and
//! call the libraries. Exit codes: 0 done, 1 refused (one-line reason on stderr),
//! 2 usage or configuration error.

mod args;
mod control;
mod demo;
mod docs;
mod health;
mod logging;
mod metrics_http;
mod output;
mod protocol;
mod serve;
mod tokens;
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
        // A one-shot command prints its own one-line result; the store's settings
        // warnings (AOF off, …) are the server's to log at start, not every command's.
        _ => "warn,otpgate_core::store::redis=error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("OTPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    logging::init(filter);
}

async fn run(args: Args) -> Result<(), Failure> {
    let json = args.json;
    match args.command {
        Command::CheckConfig { connect } => {
            let config = otpgate_config::load(&args.config)?;
            output::print(
                json,
                &serde_json::json!({"config": config.path, "valid": true}),
                || format!("{}: valid", config.path.display()),
            );
            if connect {
                check_connections(&config, json).await?;
            }
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
        Command::Docs { out } => docs::write(&out),
        cli => admin(&args.config, &cli, json).await,
    }
}

/// An admin or helpdesk command: through a running server's control socket when one
/// answers there, else against the store directly.
async fn admin(config: &std::path::Path, cli: &Command, json: bool) -> Result<(), Failure> {
    let command = match cli {
        Command::User {
            command:
                args::UserCommand::Import {
                    file,
                    format,
                    dry_run,
                    user,
                    pskc_password_file,
                    pskc_key_file,
                },
        } => tokens::import_command(&tokens::ImportArgs {
            file,
            format: *format,
            dry_run: *dry_run,
            user: user.as_deref(),
            password_file: pskc_password_file.as_deref(),
            key_file: pskc_key_file.as_deref(),
        })?,
        cli => user::command(cli).ok_or_else(|| Failure::Config("not an admin command".into()))?,
    };
    let through_server = match otpgate_config::control_socket(config)? {
        Some(socket) => control::call(&socket, command.clone()).await?,
        None => None,
    };
    let reply = match through_server {
        Some(reply) => reply,
        None => {
            let core = open_core(config).await?;
            user::execute(&core, command, &user::operator()).await?
        }
    };
    if let (
        Command::User {
            command: args::UserCommand::Enroll { qr: Some(path), .. },
        },
        Some(uri),
    ) = (cli, &reply.otpauth_uri)
    {
        let png = otpgate_core::qr::png(uri, 8)?;
        std::fs::write(path, png)
            .map_err(|e| Failure::Refused(format!("cannot write {}: {e}", path.display())))?;
    }
    user::print(&reply, json);
    if let Command::User {
        command: args::UserCommand::Enroll { qr: Some(path), .. },
    } = cli
        && !json
    {
        println!("QR code:     {}", path.display());
    }
    match reply.refused {
        Some(reason) => Err(Failure::Refused(reason)),
        None => Ok(()),
    }
}

/// `check-config --connect`: one line per backend; refused (exit 1) if any failed.
async fn check_connections(config: &otpgate_config::Config, json: bool) -> Result<(), Failure> {
    let core = Core::open_with(
        config,
        CoreConfig::from_config(config),
        Arc::new(SystemClock),
        Arc::new(OsRandom),
        otpgate_core::store::Connect::Lazily,
    )
    .await?;
    let lines = health::lines(&core.probe(true, true).await);
    let failed: Vec<&str> = lines
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| *n)
        .collect();
    for (name, result) in &lines {
        let value = match result {
            Ok(()) => serde_json::json!({"backend": name, "ok": true}),
            Err(e) => serde_json::json!({"backend": name, "ok": false, "error": e}),
        };
        output::print(json, &value, || match result {
            Ok(()) => format!("{name}: ok"),
            Err(e) => format!("{name}: FAILED: {e}"),
        });
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Refused(format!(
            "cannot use {}",
            failed.join(", ")
        )))
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
