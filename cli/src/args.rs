//! Every command and flag, defined once (SPEC §3). `--help`, the manual page
//! `otpgate(8)` and the shell completions are all generated from these definitions
//! (see [`crate::docs`]).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// What every `USER` argument means.
const USER_HELP: &str =
    "The user's ID in the directory (LDAP uid, or a name in the users file); matched without case";

/// otpgate: second-factor authentication for central accounts (RADIUS, PAM, portal).
#[derive(Debug, Parser)]
#[command(
    name = "otpgate",
    version,
    about,
    propagate_version = true,
    long_about = "otpgate: second-factor authentication for central accounts.\n\n\
        One binary: `otpgate serve` runs the RADIUS server (and the self-service portal \
        and the metrics endpoint, when configured); the other commands are the admin and \
        helpdesk tools, which open the same directory and store as the server.\n\n\
        Exit codes: 0 done; 1 refused (unknown user, wrong code, a backend down, ...), \
        with a one-line reason on stderr; 2 usage or configuration error.",
    after_help = "Examples:\n  otpgate check-config\n  otpgate user enroll alice --qr alice.png\n  \
        otpgate user confirm alice 492039\n  otpgate --json user status alice\n\n\
        Run the admin commands as root (they read /etc/otpgate/otpgate.toml, its secret \
        files and the master key). See otpgate.toml(5) and \
        pam_otpgate(8)."
)]
pub struct Args {
    /// The configuration file (TOML; see otpgate.toml(5)).
    #[arg(long, global = true, env = "OTPGATE_CONFIG", value_name = "PATH", default_value = otpgate_config::DEFAULT_PATH)]
    pub config: PathBuf,

    /// Machine-readable output: one JSON object (or array) on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the RADIUS server (and the portal and metrics, when configured) until SIGTERM; SIGHUP reloads the RADIUS clients.
    #[command(
        after_help = "Example:\n  otpgate --config /etc/otpgate/otpgate.toml serve\n\n\
        The packaged systemd unit (otpgate.service) runs exactly this as the otpgate user."
    )]
    Serve,
    /// Validate the configuration; errors name the file, line and key.
    #[command(
        after_help = "Examples:\n  otpgate check-config && systemctl restart otpgate\n  otpgate check-config --connect"
    )]
    CheckConfig {
        /// Also probe LDAP (service bind), Redis (PING, server settings, script load) and SMTP (EHLO, STARTTLS where configured), one line each; exit 1 if any fails.
        #[arg(long)]
        connect: bool,
    },
    /// Run a self-contained demo: embedded store, a users file, a demo user; nothing else needed.
    #[command(after_help = "Example:\n  otpgate demo --dir /tmp/otpgate-demo --radius-port 0")]
    Demo {
        /// Where the demo keeps its files (created if missing).
        #[arg(long, value_name = "DIR", default_value = "otpgate-demo")]
        dir: PathBuf,
        /// RADIUS port on 127.0.0.1 (0 picks a free one).
        #[arg(long, value_name = "PORT", default_value_t = 18120)]
        radius_port: u16,
        /// Portal port on 127.0.0.1 (plain HTTP; 0 picks a free one).
        #[arg(long, value_name = "PORT", default_value_t = 8080)]
        portal_port: u16,
    },
    /// Manage one user.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Tokens: list a user's or the hardware-token pool, assign a hardware token by serial, remove one.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The helpdesk queue and operator-issued codes.
    Helpdesk {
        #[command(subcommand)]
        command: HelpdeskCommand,
    },
    /// Read the audit trail.
    #[command(after_help = "Example:\n  otpgate audit --user alice --since 1h")]
    Audit {
        /// Only this user (the ID in the directory).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only records newer than this: a duration such as "30m", "1h", "7d".
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        since: String,
        /// At most this many records.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: usize,
    },
    /// Write the manual page otpgate(8) and the bash and zsh completions into DIR (used when packaging).
    #[command(hide = true)]
    Docs {
        /// The folder to write `otpgate.8`, `otpgate.bash` and `_otpgate` into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// State, lock, notification address, trusted devices.
    #[command(after_help = "Example:\n  otpgate user status alice --json")]
    Status {
        #[arg(help = USER_HELP)]
        user: String,
    },
    /// Issue a pending app secret: prints the secret, the otpauth URI and a QR code.
    #[command(
        after_help = "Example:\n  otpgate user enroll alice --qr /tmp/alice.png\n\n\
        The secret stays pending until `otpgate user confirm` with a code from the app."
    )]
    Enroll {
        #[arg(help = USER_HELP)]
        user: String,
        /// Also write the QR code to this PNG file.
        #[arg(long, value_name = "FILE.png")]
        qr: Option<PathBuf>,
    },
    /// Activate the pending app secret with a code from the app.
    #[command(after_help = "Example:\n  otpgate user confirm alice 492039")]
    Confirm {
        #[arg(help = USER_HELP)]
        user: String,
        /// The code the app shows now (6 digits by default, `[totp] digits`).
        code: String,
    },
    /// Remove the app and every trusted device.
    #[command(after_help = "Example:\n  otpgate user reset alice")]
    Reset {
        #[arg(help = USER_HELP)]
        user: String,
    },
    /// The notification address.
    Email {
        #[command(subcommand)]
        command: EmailCommand,
    },
    /// Clear the failure count and the lock.
    #[command(after_help = "Example:\n  otpgate user unlock alice")]
    Unlock {
        #[arg(help = USER_HELP)]
        user: String,
    },
    /// Trusted devices.
    Trusted {
        #[command(subcommand)]
        command: TrustedCommand,
    },
    /// Import existing TOTP secrets: otpauth:// URIs, a google-authenticator file, PSKC or CSV.
    #[command(after_help = "Examples:\n  \
        otpgate user import --dry-run /home/alice/.google_authenticator\n  \
        otpgate user import /home/alice/.google_authenticator --user alice\n  \
        otpgate user import tokens.pskc --pskc-password-file /root/pskc.pass\n  \
        otpgate user import --format csv secrets.csv\n\n\
        Each entry is reported with its line: imported, unchanged (already there: \
        re-running an import is safe), added to the pool (a PSKC token without a user), \
        or refused with the reason. A user's entries are imported all together or not at \
        all. Exit 1 if any entry was refused, 2 if the file cannot be read as a whole. \
        Secrets are never printed.\n\n\
        Migrating from google-authenticator-libpam:\n  \
        1. otpgate user import --dry-run /home/alice/.google_authenticator   (check; the \
        user is the file's owner, or --user)\n  \
        2. for f in /home/*/.google_authenticator; do otpgate user import \"$f\"; done\n  \
        3. otpgate token list alice   (shows the google-authenticator token)\n  \
        4. replace pam_google_authenticator.so by pam_otpgate.so in the PAM stack; test \
        with pamtester\n  \
        5. shred -u /home/*/.google_authenticator   (the files hold the secrets in the clear)\n\n\
        Hardware tokens from a PSKC file:\n  \
        1. otpgate user import tokens.pskc --pskc-password-file /root/vendor.pass   (or \
        --pskc-key-file with the pre-shared key in hex; a token with a UserId goes to that \
        user, the others to the pool)\n  \
        2. otpgate token list   (the pool: serial, digits, period, algorithm, holder)\n  \
        3. otpgate token assign SERIAL USER   (a serial assigned already is refused)\n  \
        4. otpgate token remove USER SERIAL   (lost or returned: back to the pool)")]
    Import {
        /// The file to read (at most 4 MiB).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Its format; guessed from the content when not given (XML: pskc; otpauth:// lines: otpauth; a base32 line then `"` options: google-authenticator; else csv).
        #[arg(long, value_enum, value_name = "FORMAT")]
        format: Option<ImportFormat>,
        /// Check and report, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The user of entries that name none: a google-authenticator file's (default: the owner of a `.google_authenticator` file).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// A file holding the password of a password-encrypted PSKC file (its trailing newline is not part of it).
        #[arg(long, value_name = "FILE")]
        pskc_password_file: Option<PathBuf>,
        /// A file holding the pre-shared key of a PSKC file: hex, or the raw 16, 24 or 32 bytes.
        #[arg(long, value_name = "FILE")]
        pskc_key_file: Option<PathBuf>,
    },
}

/// The formats of `otpgate user import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// otpauth://totp/ISSUER:USER?secret=…&digits=…&period=…&algorithm=… , one per line.
    Otpauth,
    /// google-authenticator-libpam's ~/.google_authenticator (TOTP only).
    GoogleAuthenticator,
    /// PSKC (RFC 6030), plain or encrypted; hardware tokens by serial.
    Pskc,
    /// user,secret[,digits,period,algorithm] with the secret in base32.
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// A user's tokens; without USER, the hardware-token pool and who holds each.
    #[command(after_help = "Examples:\n  otpgate token list alice\n  otpgate token list --json")]
    List {
        /// The user (the ID in the directory); without it, the hardware-token pool.
        user: Option<String>,
    },
    /// Assign a hardware token from the pool to a user (refused if it is assigned already).
    #[command(after_help = "Example:\n  otpgate token assign 12345678 alice")]
    Assign {
        /// The token's serial number, as its PSKC file gives it.
        serial: String,
        #[arg(help = USER_HELP)]
        user: String,
    },
    /// Remove one of a user's tokens by name or serial (`app`: the enrolled app); a hardware token goes back to the pool, unassigned.
    #[command(
        after_help = "Examples:\n  otpgate token remove alice google-authenticator\n  otpgate token remove alice 12345678"
    )]
    Remove {
        #[arg(help = USER_HELP)]
        user: String,
        /// The token's name or serial, as `otpgate token list USER` shows it.
        #[arg(value_name = "NAME|SERIAL")]
        token: String,
    },
    /// Take a hardware token back from whoever holds it, into the pool.
    #[command(after_help = "Example:\n  otpgate token unassign 12345678")]
    Unassign {
        /// The token's serial number.
        serial: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EmailCommand {
    /// Mail a confirmation code to a new notification address.
    #[command(after_help = "Example:\n  otpgate user email set alice alice@example.org")]
    Set {
        #[arg(help = USER_HELP)]
        user: String,
        /// The new notification address (a domain in `[notification] denied_domains` is refused).
        address: String,
    },
    /// Confirm the new address with the mailed code.
    #[command(after_help = "Example:\n  otpgate user email confirm alice 40312877")]
    Confirm {
        #[arg(help = USER_HELP)]
        user: String,
        /// The code mailed to the new address (8 digits by default, `[email_otp] digits`).
        code: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustedCommand {
    /// List the user's trusted devices.
    #[command(after_help = "Example:\n  otpgate user trusted list alice")]
    List {
        #[arg(help = USER_HELP)]
        user: String,
    },
    /// Revoke one device by id, or all of them.
    #[command(
        after_help = "Example:\n  otpgate user trusted revoke alice 3f2a9c\n  \
        otpgate user trusted revoke alice        # every device"
    )]
    Revoke {
        #[arg(help = USER_HELP)]
        user: String,
        /// The device's ID as `otpgate user trusted list` shows it; without it, every device is revoked.
        id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HelpdeskCommand {
    /// Queued requests, oldest first.
    #[command(after_help = "Example:\n  otpgate helpdesk list --json")]
    List,
    /// Issue an 8-digit one-time password to read to the caller.
    #[command(after_help = "Example:\n  otpgate helpdesk issue bob\n\n\
        Check the caller's identity first; the code is valid for `[email_otp] valid_for`.")]
    Issue {
        #[arg(help = USER_HELP)]
        user: String,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Args;

    /// Every argument of every command is explained in `--help` (and so in the manual
    /// page), and every command a user runs shows an example.
    #[test]
    fn every_argument_is_explained_and_every_command_has_an_example() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && arg.get_id() != "help" && arg.get_id() != "version" {
                    missing.push(format!("{path}: argument {} has no help", arg.get_id()));
                }
            }
            let leaf = !command.has_subcommands();
            if leaf && command.get_after_help().is_none() && command.get_name() != "help" {
                missing.push(format!("{path}: no example"));
            }
            // clap's generated `help` subcommand mirrors the others: not ours to explain.
            for sub in command
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            {
                walk(sub, &path, missing);
            }
        }
        let mut command = Args::command();
        command.build();
        command.clone().debug_assert();
        let mut missing = Vec::new();
        walk(&command, "", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
