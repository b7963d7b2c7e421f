//! Every command and flag, defined once (SPEC §3).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// otpgate: second-factor authentication for central accounts (RADIUS, PAM, portal).
#[derive(Debug, Parser)]
#[command(name = "otpgate", version, about, propagate_version = true)]
pub struct Args {
    /// The configuration file.
    #[arg(long, global = true, env = "OTPGATE_CONFIG", default_value = otpgate_config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the RADIUS server (and the portal and metrics, when configured) until SIGTERM; SIGHUP reloads the RADIUS clients.
    Serve,
    /// Validate the configuration; errors name the file, line and key.
    CheckConfig {
        /// Also probe LDAP (service bind), Redis (PING, server settings, script load) and SMTP (EHLO, STARTTLS where configured), one line each; exit 1 if any fails.
        #[arg(long)]
        connect: bool,
    },
    /// Run a self-contained demo: embedded store, a users file, a demo user; nothing else needed.
    Demo {
        /// Where the demo keeps its files (created if missing).
        #[arg(long, default_value = "otpgate-demo")]
        dir: PathBuf,
        /// RADIUS port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 18120)]
        radius_port: u16,
        /// Portal port on 127.0.0.1 (plain HTTP; 0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        portal_port: u16,
    },
    /// Manage one user.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The helpdesk queue and operator-issued codes.
    Helpdesk {
        #[command(subcommand)]
        command: HelpdeskCommand,
    },
    /// Read the audit trail.
    Audit {
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Only records newer than this, e.g. "1h", "7d".
        #[arg(long, default_value = "24h")]
        since: String,
        /// At most this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// State, lock, notification address, trusted devices.
    Status { user: String },
    /// Issue a pending app secret: prints the secret, the otpauth URI and a QR code.
    Enroll {
        user: String,
        /// Also write the QR code to this PNG file.
        #[arg(long, value_name = "FILE.png")]
        qr: Option<PathBuf>,
    },
    /// Activate the pending app secret with a code from the app.
    Confirm { user: String, code: String },
    /// Remove the app and every trusted device.
    Reset { user: String },
    /// The notification address.
    Email {
        #[command(subcommand)]
        command: EmailCommand,
    },
    /// Clear the failure count and the lock.
    Unlock { user: String },
    /// Trusted devices.
    Trusted {
        #[command(subcommand)]
        command: TrustedCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EmailCommand {
    /// Mail a confirmation code to a new notification address.
    Set { user: String, address: String },
    /// Confirm the new address with the mailed code.
    Confirm { user: String, code: String },
}

#[derive(Debug, Subcommand)]
pub enum TrustedCommand {
    /// List the user's trusted devices.
    List { user: String },
    /// Revoke one device by id, or all of them.
    Revoke { user: String, id: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum HelpdeskCommand {
    /// Queued requests, oldest first.
    List,
    /// Issue an 8-digit one-time password to read to the caller.
    Issue { user: String },
}
