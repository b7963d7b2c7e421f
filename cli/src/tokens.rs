//! `otpgate user import` and `otpgate token …`. The CLI reads and parses the import
//! file itself (it may be a user's home-directory file the server cannot read); the
//! entries then go to the core, here or through the control socket, like every admin
//! command. No secret is printed: reports name lines, users, tokens and parameters.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use otpgate_core::Core;
use otpgate_core::audit::RequestContext;
use otpgate_core::import::{self, FileError, Format, PskcKey};
use otpgate_core::service::{ImportRequest, LineOutcome, TokenInfo};
use otpgate_core::user::UserName;
use serde_json::json;
use zeroize::Zeroizing;

use crate::Failure;
use crate::args::ImportFormat;
use crate::protocol::{Command, Reply};

/// The largest import file read.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// What `otpgate user import` was given.
pub struct ImportArgs<'a> {
    pub file: &'a Path,
    pub format: Option<ImportFormat>,
    pub dry_run: bool,
    pub user: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
}

fn read_limited(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let cannot =
        |e: std::io::Error| Failure::Config(format!("cannot read {what} {}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if meta.len() > MAX_FILE {
        return Err(Failure::Config(format!(
            "{} is larger than 4 MiB; split it",
            path.display()
        )));
    }
    Ok(Zeroizing::new(std::fs::read(path).map_err(cannot)?))
}

/// A secret file's content without its trailing newline.
fn secret_file(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut bytes = read_limited(path, what)?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    Ok(bytes)
}

/// Reads and parses the file into the command the core runs.
pub fn import_command(args: &ImportArgs<'_>) -> Result<Command, Failure> {
    let bytes = read_limited(args.file, "the import file")?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        Failure::Config(format!(
            "{}: not UTF-8 text (at byte {})",
            args.file.display(),
            e.valid_up_to()
        ))
    })?;
    let format = match args.format {
        Some(ImportFormat::Otpauth) => Format::Otpauth,
        Some(ImportFormat::GoogleAuthenticator) => Format::GoogleAuthenticator,
        Some(ImportFormat::Pskc) => Format::Pskc,
        Some(ImportFormat::Csv) => Format::Csv,
        None => Format::guess(text),
    };
    let key = match (args.password_file, args.key_file) {
        (Some(_), Some(_)) => {
            return Err(Failure::Config(
                "give --pskc-password-file or --pskc-key-file, not both".into(),
            ));
        }
        (Some(p), None) => {
            let password = secret_file(p, "the PSKC password file")?;
            PskcKey::Password(Zeroizing::new(
                String::from_utf8(password.to_vec())
                    .map_err(|_| Failure::Config("the PSKC password is not UTF-8".into()))?,
            ))
        }
        (None, Some(k)) => {
            PskcKey::PreShared(preshared_key(&secret_file(k, "the PSKC key file")?)?)
        }
        (None, None) => PskcKey::None,
    };
    let parsed = import::parse(format, text, &key).map_err(|e| {
        let message = format!("{}: {e}", args.file.display());
        match e {
            FileError::WrongKey(_) => Failure::Refused(message),
            _ => Failure::Config(message),
        }
    })?;
    let user = match (args.user, format) {
        (Some(u), _) => Some(u.to_string()),
        (None, Format::GoogleAuthenticator) => Some(file_owner(args.file)?),
        (None, _) => None,
    };
    Ok(Command::UserImport {
        format,
        parsed,
        user,
        dry_run: args.dry_run,
    })
}

/// A pre-shared key: hex (32, 48 or 64 digits), or the raw 16, 24 or 32 bytes.
fn preshared_key(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Ok(key) = data_encoding::HEXLOWER_PERMISSIVE.decode(bytes) {
        if [16, 24, 32].contains(&key.len()) {
            return Ok(Zeroizing::new(key));
        }
    }
    if [16, 24, 32].contains(&bytes.len()) {
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    Err(Failure::Config(
        "the PSKC key file holds neither a hex AES key nor 16, 24 or 32 raw bytes".into(),
    ))
}

/// The user of a google-authenticator file without `--user`: the owner of a file named
/// `.google_authenticator` (as in `/home/USER/.google_authenticator`), never root.
fn file_owner(path: &Path) -> Result<String, Failure> {
    let usage = || {
        Failure::Config(format!(
            "{}: a google-authenticator file names no user: give --user USER",
            path.display()
        ))
    };
    if path.file_name().and_then(|n| n.to_str()) != Some(".google_authenticator") {
        return Err(usage());
    }
    let uid = std::fs::metadata(path).map_err(|_| usage())?.uid();
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(owner)) if uid != 0 => Ok(owner.name),
        _ => Err(usage()),
    }
}

fn name(user: &str) -> Result<UserName, Failure> {
    UserName::parse(user).map_err(|e| Failure::Refused(format!("{user:?}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, Failure> {
    serde_json::to_value(value).map_err(|e| Failure::Refused(format!("cannot print JSON: {e}")))
}

fn token_line(t: &TokenInfo) -> String {
    format!(
        "{:<24} {:<12} {} digits  {:>3} s  {:<6} {:<20} {}",
        t.name,
        t.serial.as_deref().unwrap_or("-"),
        t.digits,
        t.period,
        t.algorithm,
        t.source,
        t.user.as_deref().unwrap_or("(unassigned)")
    )
}

/// The token lines of a listing (also `user status`).
pub fn token_lines(tokens: &[TokenInfo]) -> String {
    tokens.iter().map(token_line).collect::<Vec<_>>().join("\n")
}

/// Runs an import or token command.
pub async fn execute(
    core: &Core,
    command: Command,
    ctx: &RequestContext,
) -> Result<Reply, Failure> {
    Ok(match command {
        Command::UserImport {
            format,
            parsed,
            user,
            dry_run,
        } => {
            let user = user.as_deref().map(name).transpose()?;
            let report = core
                .import_tokens(
                    ImportRequest {
                        format,
                        parsed,
                        user,
                        dry_run,
                    },
                    ctx,
                )
                .await?;
            let mut text: Vec<String> = report
                .lines
                .iter()
                .map(|l| {
                    let who = match (&l.user, &l.token) {
                        (Some(u), Some(t)) => format!("{u} {t}: "),
                        (None, Some(t)) => format!("{t}: "),
                        (Some(u), None) => format!("{u}: "),
                        (None, None) => String::new(),
                    };
                    let tag = match l.outcome {
                        LineOutcome::Refused => "REFUSED: ",
                        LineOutcome::Note => "note: ",
                        _ => "",
                    };
                    format!("line {}: {who}{tag}{}", l.line, l.message)
                })
                .collect();
            let count = |o: LineOutcome| report.lines.iter().filter(|l| l.outcome == o).count();
            let refused = count(LineOutcome::Refused);
            text.push(format!(
                "{}{} imported, {} added to the pool, {} unchanged, {} refused",
                if dry_run {
                    "dry run (nothing written): "
                } else {
                    ""
                },
                count(LineOutcome::Imported),
                count(LineOutcome::Pooled),
                count(LineOutcome::Unchanged),
                refused
            ));
            Reply {
                refused: (refused > 0).then(|| {
                    format!(
                        "{refused} entr{} refused",
                        if refused == 1 { "y" } else { "ies" }
                    )
                }),
                ..Reply::one(to_json(&report)?, text.join("\n"))
            }
        }
        Command::TokenList { user } => {
            let (tokens, who) = match user {
                Some(u) => {
                    let u = name(&u)?;
                    (core.tokens_of(&u).await?, json!(u.as_str()))
                }
                None => (core.token_pool().await?, serde_json::Value::Null),
            };
            let text = if tokens.is_empty() {
                "no tokens".to_string()
            } else {
                token_lines(&tokens)
            };
            Reply::one(json!({"user": who, "tokens": to_json(&tokens)?}), text)
        }
        Command::TokenAssign { serial, user } => {
            let user = name(&user)?;
            let token = core.assign_token(&serial, &user, ctx).await?;
            Reply::one(
                json!({"user": user.as_str(), "assigned": to_json(&token)?}),
                format!("{user}: hardware token {serial} assigned"),
            )
        }
        Command::TokenRemove { user, token } => {
            let user = name(&user)?;
            let removed = core.remove_token(&user, &token, ctx).await?;
            Reply::one(
                json!({"user": user.as_str(), "removed": removed}),
                format!("{user}: token {removed} removed"),
            )
        }
        Command::TokenUnassign { serial } => {
            let user = core.unassign_token(&serial, ctx).await?;
            Reply::one(
                json!({"serial": serial, "unassigned_from": user.as_str()}),
                format!("hardware token {serial} taken from {user}, back in the pool"),
            )
        }
        _ => return Err(Failure::Config("not a token command".into())),
    })
}
