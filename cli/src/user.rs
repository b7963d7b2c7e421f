//! `otpgate user …`, `otpgate helpdesk …`, `otpgate audit`.

use otpgate_core::Core;
use otpgate_core::audit::{Door, RequestContext};
use otpgate_core::user::UserName;
use serde_json::json;

use crate::Failure;
use crate::args::{EmailCommand, HelpdeskCommand, TrustedCommand, UserCommand};
use crate::output::print;

/// The operator running the CLI, for the audit trail.
fn operator() -> RequestContext {
    let who = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    RequestContext::new(Door::Cli, who)
}

fn name(user: &str) -> Result<UserName, Failure> {
    UserName::parse(user).map_err(|e| Failure::Refused(format!("{user:?}: {e}")))
}

pub async fn user(core: &Core, command: UserCommand, json: bool) -> Result<(), Failure> {
    let ctx = operator();
    match command {
        UserCommand::Status { user } => {
            let status = core.status(&name(&user)?).await?;
            print(json, &status, || {
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
                out
            });
        }
        UserCommand::Enroll { user, qr } => {
            let enrollment = core.enroll(&name(&user)?, &ctx).await?;
            if let Some(path) = &qr {
                let png = otpgate_core::qr::png(&enrollment.otpauth_uri, 8)?;
                std::fs::write(path, png).map_err(|e| {
                    Failure::Refused(format!("cannot write {}: {e}", path.display()))
                })?;
            }
            let terminal = otpgate_core::qr::terminal(&enrollment.otpauth_uri)?;
            print(json, &enrollment, || {
                let mut out = format!(
                    "{terminal}\nsecret:      {}\notpauth URI: {}\n",
                    enrollment.secret, enrollment.otpauth_uri
                );
                if let Some(path) = &qr {
                    out += &format!("QR code:     {}\n", path.display());
                }
                if let Some(w) = &enrollment.warning {
                    out += &format!("warning:     {w}\n");
                }
                out += &format!(
                    "Scan it, then: otpgate user confirm {} CODE",
                    enrollment.user
                );
                out
            });
        }
        UserCommand::Confirm { user, code } => {
            let user = name(&user)?;
            core.confirm_enrollment(&user, &code, &ctx).await?;
            print(
                json,
                &json!({"user": user.as_str(), "state": "app-enrolled"}),
                || format!("{user}: app enrolled"),
            );
        }
        UserCommand::Reset { user } => {
            let user = name(&user)?;
            core.reset(&user, &ctx).await?;
            print(json, &json!({"user": user.as_str(), "reset": true}), || {
                format!("{user}: app and trusted devices removed; the user can enroll again")
            });
        }
        UserCommand::Email {
            command: EmailCommand::Set { user, address },
        } => {
            let user = name(&user)?;
            let masked = core.set_address(&user, &address, &ctx).await?;
            print(
                json,
                &json!({"user": user.as_str(), "confirmation_sent_to": masked}),
                || {
                    format!(
                        "{user}: a confirmation code was mailed to {masked}; then: otpgate user email confirm {user} CODE"
                    )
                },
            );
        }
        UserCommand::Email {
            command: EmailCommand::Confirm { user, code },
        } => {
            let user = name(&user)?;
            let (address, _proof) = core.confirm_address(&user, &code, &ctx).await?;
            print(
                json,
                &json!({"user": user.as_str(), "notification_address": address}),
                || format!("{user}: notification address is now {address}"),
            );
        }
        UserCommand::Unlock { user } => {
            let user = name(&user)?;
            core.unlock(&user, &ctx).await?;
            print(
                json,
                &json!({"user": user.as_str(), "locked": false}),
                || format!("{user}: unlocked"),
            );
        }
        UserCommand::Trusted {
            command: TrustedCommand::List { user },
        } => {
            let user = name(&user)?;
            let devices = core.trusted_devices(&user).await?;
            let rows: Vec<_> = devices
                .iter()
                .map(|d| {
                    json!({"id": d.id, "door": d.door, "label": d.label,
                           "created_at": d.created_at.to_rfc3339(), "expires_at": d.expires_at.to_rfc3339()})
                })
                .collect();
            print(
                json,
                &json!({"user": user.as_str(), "devices": rows}),
                || {
                    if devices.is_empty() {
                        return format!("{user}: no trusted devices");
                    }
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
                },
            );
        }
        UserCommand::Trusted {
            command: TrustedCommand::Revoke { user, id },
        } => {
            let user = name(&user)?;
            let n = core.revoke_trusted(&user, id.as_deref(), &ctx).await?;
            print(json, &json!({"user": user.as_str(), "revoked": n}), || {
                format!("{user}: {n} trusted device(s) revoked")
            });
        }
    }
    Ok(())
}

pub async fn helpdesk(core: &Core, command: HelpdeskCommand, json: bool) -> Result<(), Failure> {
    match command {
        HelpdeskCommand::List => {
            let queue = core.helpdesk_queue().await?;
            let rows: Vec<_> = queue
                .iter()
                .map(|r| {
                    json!({"user": r.user.as_str(), "kind": r.kind, "via": r.via,
                                "requested_at": r.requested_at.to_rfc3339()})
                })
                .collect();
            print(json, &json!({"requests": rows}), || {
                if queue.is_empty() {
                    return "the helpdesk queue is empty".into();
                }
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
            });
        }
        HelpdeskCommand::Issue { user } => {
            let issued = core.helpdesk_issue(&name(&user)?, &operator()).await?;
            print(json, &issued, || {
                format!(
                    "one-time password for {}: {}  (valid until {}, single use)\nRead it to the caller only after checking their identity.",
                    issued.user, issued.otp, issued.expires_at
                )
            });
        }
    }
    Ok(())
}

pub async fn audit(
    core: &Core,
    user: Option<&str>,
    since: &str,
    limit: usize,
    json: bool,
) -> Result<(), Failure> {
    let window = otpgate_config::duration::parse_duration(since)
        .map_err(|e| Failure::Config(format!("--since: {e}")))?;
    let since = otpgate_core::clock::Timestamp(core.now().0.saturating_sub(window.as_secs()));
    let user = user.map(name).transpose()?;
    let records = core.audit_records(since, user.as_ref(), limit).await?;
    if json {
        for r in &records {
            print(true, r, String::new);
        }
    } else if records.is_empty() {
        println!("no audit records");
    } else {
        for r in &records {
            println!(
                "{} {:<7} {:<20} {:<16} {:<8} {} ({})",
                r.time,
                r.door.as_str(),
                r.user,
                r.method,
                r.result,
                r.reason,
                r.client
            );
        }
    }
    Ok(())
}
