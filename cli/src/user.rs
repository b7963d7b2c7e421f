//! `otpgate user …`, `otpgate helpdesk …`, `otpgate audit`: each command as one call of
//! [`execute`], which makes the core calls and returns what to print. The CLI runs it
//! itself, or the server runs it for the CLI over the control socket
//! ([`crate::control`]); either way the output is the same.

use otpgate_core::Core;
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::user::UserName;
use serde_json::json;

use crate::Failure;
use crate::args::{
    Command as Cli, EmailCommand, HelpdeskCommand, TokenCommand, TrustedCommand, UserCommand,
};
use crate::protocol::{Command, Reply};

/// The operator running the CLI as the environment names them (`SUDO_USER`, else
/// `USER`).
pub fn operator_name() -> Option<String> {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
}

/// The operator running the CLI, for the audit trail.
pub fn operator() -> RequestContext {
    RequestContext::new(
        Door::Cli,
        operator_name().unwrap_or_else(|| "unknown".into()),
    )
}

fn name(user: &str) -> Result<UserName, Failure> {
    UserName::parse(user).map_err(|e| Failure::Refused(format!("{user:?}: {e}")))
}

/// The admin or helpdesk command on a command line, if it is one.
pub fn command(cli: &Cli) -> Option<Command> {
    Some(match cli {
        Cli::User { command } => match command {
            UserCommand::Status { user } => Command::UserStatus { user: user.clone() },
            UserCommand::Enroll { user, .. } => Command::UserEnroll { user: user.clone() },
            UserCommand::Confirm { user, code } => Command::UserConfirm {
                user: user.clone(),
                code: code.clone(),
            },
            UserCommand::Reset { user } => Command::UserReset { user: user.clone() },
            UserCommand::Email {
                command: EmailCommand::Set { user, address },
            } => Command::EmailSet {
                user: user.clone(),
                address: address.clone(),
            },
            UserCommand::Email {
                command: EmailCommand::Confirm { user, code },
            } => Command::EmailConfirm {
                user: user.clone(),
                code: code.clone(),
            },
            UserCommand::Unlock { user } => Command::UserUnlock { user: user.clone() },
            UserCommand::Trusted {
                command: TrustedCommand::List { user },
            } => Command::TrustedList { user: user.clone() },
            UserCommand::Trusted {
                command: TrustedCommand::Revoke { user, id },
            } => Command::TrustedRevoke {
                user: user.clone(),
                id: id.clone(),
            },
            // Read and parsed from its file first: `crate::tokens::import_command`.
            UserCommand::Import { .. } => return None,
        },
        Cli::Token { command } => match command {
            TokenCommand::List { user } => Command::TokenList { user: user.clone() },
            TokenCommand::Assign { serial, user } => Command::TokenAssign {
                serial: serial.clone(),
                user: user.clone(),
            },
            TokenCommand::Remove { user, token } => Command::TokenRemove {
                user: user.clone(),
                token: token.clone(),
            },
            TokenCommand::Unassign { serial } => Command::TokenUnassign {
                serial: serial.clone(),
            },
        },
        Cli::Helpdesk { command } => match command {
            HelpdeskCommand::List => Command::HelpdeskList,
            HelpdeskCommand::Issue { user } => Command::HelpdeskIssue { user: user.clone() },
        },
        Cli::Audit { user, since, limit } => Command::Audit {
            user: user.clone(),
            since: since.clone(),
            limit: *limit,
        },
        _ => return None,
    })
}

/// Prints a reply: its JSON values one per line with `--json`, else its text.
pub fn print(reply: &Reply, json: bool) {
    if json {
        for value in &reply.json {
            crate::output::print(true, value, String::new);
        }
    } else {
        println!("{}", reply.text);
    }
}

/// Runs one command against the core as `ctx`'s operator.
pub async fn execute(
    core: &Core,
    command: Command,
    ctx: &RequestContext,
) -> Result<Reply, Failure> {
    match command {
        Command::HelpdeskList | Command::HelpdeskIssue { .. } => helpdesk(core, command, ctx).await,
        Command::Audit { user, since, limit } => audit(core, user.as_deref(), &since, limit).await,
        Command::UserImport { .. }
        | Command::TokenList { .. }
        | Command::TokenAssign { .. }
        | Command::TokenRemove { .. }
        | Command::TokenUnassign { .. } => crate::tokens::execute(core, command, ctx).await,
        user_command => user(core, user_command, ctx).await,
    }
}

async fn user(core: &Core, command: Command, ctx: &RequestContext) -> Result<Reply, Failure> {
    Ok(match command {
        Command::UserStatus { user } => {
            let status = core.status(&name(&user)?).await?;
            let mut out = format!(
                "user:                 {}\nstate:                {}\n",
                status.user, status.state
            );
            out += &format!(
                "locked:               {}\n",
                status
                    .locked_until
                    .as_deref()
                    .map_or("no".to_string(), |t| format!("yes, until {t}"))
            );
            out += &format!("failures:             {}\n", status.failures);
            out += &format!(
                "notification address: {}\n",
                status.notification_address.as_deref().unwrap_or("(none)")
            );
            if let Some(p) = &status.pending_address {
                out += &format!("pending address:      {p} (awaiting its code)\n");
            }
            if let Some(t) = &status.enrolled_at {
                out += &format!("app enrolled at:      {t}\n");
            }
            out += &format!("trusted devices:      {}", status.trusted_devices);
            if !status.tokens.is_empty() {
                out += &format!("\ntokens:\n{}", crate::tokens::token_lines(&status.tokens));
            }
            for place in &status.policy {
                out += &format!("\nsecond factor:        {}", place.describe());
            }
            Reply::one(to_json(&status)?, out)
        }
        Command::UserEnroll { user } => {
            let enrollment = core.enroll(&name(&user)?, ctx).await?;
            let terminal = otpgate_core::qr::terminal(&enrollment.otpauth_uri)?;
            let mut out = format!(
                "{terminal}\nsecret:      {}\notpauth URI: {}\n",
                enrollment.secret, enrollment.otpauth_uri
            );
            if let Some(w) = &enrollment.warning {
                out += &format!("warning:     {w}\n");
            }
            out += &format!(
                "Scan it, then: otpgate user confirm {} CODE",
                enrollment.user
            );
            Reply {
                otpauth_uri: Some(enrollment.otpauth_uri.clone()),
                ..Reply::one(to_json(&enrollment)?, out)
            }
        }
        Command::UserConfirm { user, code } => {
            let user = name(&user)?;
            core.confirm_enrollment(&user, &code, ctx).await?;
            Reply::one(
                json!({"user": user.as_str(), "state": "app-enrolled"}),
                format!("{user}: app enrolled"),
            )
        }
        Command::UserReset { user } => {
            let user = name(&user)?;
            core.reset(&user, ctx).await?;
            Reply::one(
                json!({"user": user.as_str(), "reset": true}),
                format!("{user}: app and trusted devices removed; the user can enroll again"),
            )
        }
        Command::EmailSet { user, address } => {
            let user = name(&user)?;
            let masked = core.set_address(&user, &address, ctx).await?;
            Reply::one(
                json!({"user": user.as_str(), "confirmation_sent_to": masked}),
                format!(
                    "{user}: a confirmation code was mailed to {masked}; then: otpgate user email confirm {user} CODE"
                ),
            )
        }
        Command::EmailConfirm { user, code } => {
            let user = name(&user)?;
            let (address, _proof) = core.confirm_address(&user, &code, ctx).await?;
            Reply::one(
                json!({"user": user.as_str(), "notification_address": address}),
                format!("{user}: notification address is now {address}"),
            )
        }
        Command::UserUnlock { user } => {
            let user = name(&user)?;
            core.unlock(&user, ctx).await?;
            Reply::one(
                json!({"user": user.as_str(), "locked": false}),
                format!("{user}: unlocked"),
            )
        }
        Command::TrustedList { user } => {
            let user = name(&user)?;
            let devices = core.trusted_devices(&user).await?;
            let rows: Vec<_> = devices
                .iter()
                .map(|d| {
                    json!({"id": d.id, "door": d.door, "label": d.label,
                           "created_at": d.created_at.to_rfc3339(), "expires_at": d.expires_at.to_rfc3339()})
                })
                .collect();
            let text = if devices.is_empty() {
                format!("{user}: no trusted devices")
            } else {
                devices
                    .iter()
                    .map(|d| {
                        format!(
                            "{}  {:<7} {:<40} until {}",
                            d.id,
                            d.door,
                            d.label,
                            d.expires_at.to_rfc3339()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Reply::one(json!({"user": user.as_str(), "devices": rows}), text)
        }
        Command::TrustedRevoke { user, id } => {
            let user = name(&user)?;
            let n = core.revoke_trusted(&user, id.as_deref(), ctx).await?;
            Reply::one(
                json!({"user": user.as_str(), "revoked": n}),
                format!("{user}: {n} trusted device(s) revoked"),
            )
        }
        Command::HelpdeskList
        | Command::HelpdeskIssue { .. }
        | Command::Audit { .. }
        | Command::UserImport { .. }
        | Command::TokenList { .. }
        | Command::TokenAssign { .. }
        | Command::TokenRemove { .. }
        | Command::TokenUnassign { .. } => {
            return Err(Failure::Config("not a user command".into()));
        }
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, Failure> {
    serde_json::to_value(value).map_err(|e| Failure::Refused(format!("cannot print JSON: {e}")))
}

async fn helpdesk(core: &Core, command: Command, ctx: &RequestContext) -> Result<Reply, Failure> {
    Ok(match command {
        Command::HelpdeskIssue { user } => {
            let issued = core.helpdesk_issue(&name(&user)?, ctx).await?;
            let text = format!(
                "one-time password for {}: {}  (valid until {}, single use)\nRead it to the caller only after checking their identity.",
                issued.user, issued.otp, issued.expires_at
            );
            Reply::one(to_json(&issued)?, text)
        }
        _ => {
            let queue = core.helpdesk_queue().await?;
            let rows: Vec<_> = queue
                .iter()
                .map(|r| {
                    json!({"user": r.user.as_str(), "kind": r.kind, "via": r.via,
                                "requested_at": r.requested_at.to_rfc3339()})
                })
                .collect();
            let text = if queue.is_empty() {
                "the helpdesk queue is empty".into()
            } else {
                queue
                    .iter()
                    .map(|r| {
                        format!(
                            "{}  {:<20} {:<11} via {}",
                            r.requested_at.to_rfc3339(),
                            r.user,
                            r.kind,
                            r.via
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Reply::one(json!({"requests": rows}), text)
        }
    })
}

async fn audit(
    core: &Core,
    user: Option<&str>,
    since: &str,
    limit: usize,
) -> Result<Reply, Failure> {
    let window = otpgate_config::duration::parse_duration(since)
        .map_err(|e| Failure::Config(format!("--since: {e}")))?;
    let since = otpgate_core::clock::Timestamp(core.now().0.saturating_sub(window.as_secs()));
    let user = user.map(name).transpose()?;
    let records = core.audit_records(since, user.as_ref(), limit).await?;
    let text = if records.is_empty() {
        "no audit records".to_string()
    } else {
        records
            .iter()
            .map(|r| {
                format!(
                    "{} {:<7} {:<20} {:<16} {:<8} {} ({})",
                    r.time,
                    r.door.as_str(),
                    r.user,
                    r.method,
                    r.result,
                    r.reason,
                    r.client
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let json = records.iter().map(to_json).collect::<Result<_, _>>()?;
    Ok(Reply {
        json,
        text,
        otpauth_uri: None,
        refused: None,
    })
}
