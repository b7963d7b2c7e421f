//! A user's tokens: the enrolled app (`app`, with `[totp]`'s parameters) and any
//! others (imported, hardware), each with its own digits, period and algorithm and its
//! own last accepted step. Here: the list the code check walks, the import (per user,
//! atomic, idempotent, audited), and the hardware-token pool (assign, remove, list).
//!
//! A hardware token removed from its user goes back to the pool, unassigned (its
//! serial stays known, so it can be assigned to someone else); a reset does the same
//! for every hardware token of the user.

use std::collections::BTreeMap;

use otpgate_config::TotpAlgorithm;
use serde::Serialize;

use super::Core;
use crate::audit::{Method, RequestContext};
use crate::error::{CoreError, Refusal};
use crate::import::{Format, ImportedToken, LineNote, Parsed, algorithm_name};
use crate::otp::totp::TotpParams;
use crate::secret::{TotpSecret, ct_eq};
use crate::store::{APP_TOKEN, Account, Claim, SealedSecret, StoreBackend, Token, TokenSource};
use crate::user::UserName;

/// Which last step a token's codes are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepKey<'a> {
    /// The enrolled app (`totp`): the account's original last step.
    App,
    /// Another token, by name.
    Token(&'a str),
}

/// One token a code may belong to.
pub(super) struct Candidate<'a> {
    pub(super) key: StepKey<'a>,
    pub(super) sealed: &'a SealedSecret,
    pub(super) params: TotpParams,
}

/// Every token of an account, the app first, then the others in their order.
pub(super) fn candidates<'a>(
    account: &'a Account,
    defaults: &'a TotpParams,
) -> impl Iterator<Item = Candidate<'a>> + 'a {
    let app = account.totp.as_ref().map(|sealed| Candidate {
        key: StepKey::App,
        sealed,
        params: *defaults,
    });
    app.into_iter()
        .chain(account.tokens.iter().map(|t| Candidate {
            key: StepKey::Token(&t.name),
            sealed: &t.secret,
            params: TotpParams {
                digits: t.digits,
                period: t.period,
                skew_steps: defaults.skew_steps,
                algorithm: t.algorithm,
            },
        }))
}

/// Whether the account holds any token (the app or another).
pub(super) fn has_token(account: &Account) -> bool {
    account.totp.is_some() || !account.tokens.is_empty()
}

/// A token as `otpgate token list` and `user status` show it (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    pub digits: u32,
    pub period: u64,
    pub algorithm: &'static str,
    pub source: &'static str,
    /// The user holding it (pool listings).
    pub user: Option<String>,
}

impl TokenInfo {
    fn of(t: &Token, user: Option<&UserName>) -> Self {
        Self {
            name: t.name.clone(),
            serial: t.serial.clone(),
            digits: t.digits,
            period: t.period,
            algorithm: algorithm_name(t.algorithm),
            source: t.source.as_str(),
            user: user.map(ToString::to_string),
        }
    }
}

/// What became of one entry of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LineOutcome {
    /// Imported (or, in a dry run, would be).
    Imported,
    /// The same token was there already.
    Unchanged,
    /// A hardware token added to the pool, unassigned.
    Pooled,
    /// Not imported: see the message.
    Refused,
    /// Reported only (scratch codes, options otpgate does not take).
    Note,
}

/// One line of an import's report.
#[derive(Debug, Clone, Serialize)]
pub struct ImportLine {
    pub line: usize,
    pub user: Option<String>,
    pub token: Option<String>,
    pub outcome: LineOutcome,
    pub message: String,
}

/// An import's report: one line per entry, in the file's order.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub format: Format,
    pub dry_run: bool,
    pub lines: Vec<ImportLine>,
}

impl ImportReport {
    /// Whether any entry was refused (the CLI exits 1).
    pub fn any_refused(&self) -> bool {
        self.lines.iter().any(|l| l.outcome == LineOutcome::Refused)
    }
}

/// What to import and how.
#[derive(Debug)]
pub struct ImportRequest {
    pub format: Format,
    pub parsed: Parsed,
    /// The user for entries that name none (a google-authenticator file).
    pub user: Option<UserName>,
    pub dry_run: bool,
}

/// One entry on its way in.
struct Pending {
    entry: ImportedToken,
    name: String,
    digits: u32,
    period: u64,
    algorithm: TotpAlgorithm,
}

impl Pending {
    /// This entry's line of the report, for `owner`.
    fn report(&self, owner: &str, outcome: LineOutcome, message: impl Into<String>) -> ImportLine {
        line(&self.entry, Some(owner), Some(&self.name), outcome, message)
    }

    fn matches(&self, t: &Token, secret: &TotpSecret) -> bool {
        t.digits == self.digits
            && t.period == self.period
            && t.algorithm == self.algorithm
            && t.serial == self.entry.serial
            && ct_eq(secret.expose(), self.entry.secret.expose())
    }
}

fn source_of(format: Format) -> TokenSource {
    match format {
        Format::Otpauth => TokenSource::Otpauth,
        Format::GoogleAuthenticator => TokenSource::GoogleAuthenticator,
        Format::Pskc => TokenSource::Pskc,
        Format::Csv => TokenSource::Csv,
    }
}

fn line(
    entry: &ImportedToken,
    user: Option<&str>,
    token: Option<&str>,
    outcome: LineOutcome,
    message: impl Into<String>,
) -> ImportLine {
    ImportLine {
        line: entry.line,
        user: user.map(str::to_string),
        token: token.map(str::to_string),
        outcome,
        message: message.into(),
    }
}

impl Core {
    /// Imports what a parser read: per user atomically (every token of a user from
    /// the file, or none of them), idempotently (a token that is there with the same
    /// secret and parameters is "unchanged"), hardware tokens without a user into the
    /// pool. Each imported token is audited; no secret is reported or logged.
    ///
    /// # Errors
    ///
    /// A backend failure (what was written before it stays written: whole users only).
    pub async fn import_tokens(
        &self,
        request: ImportRequest,
        ctx: &RequestContext,
    ) -> Result<ImportReport, CoreError> {
        let ImportRequest {
            format,
            parsed,
            user,
            dry_run,
        } = request;
        let mut lines: Vec<ImportLine> = Vec::new();
        let note = |n: &LineNote, outcome: LineOutcome| ImportLine {
            line: n.line,
            user: n.user.clone(),
            token: None,
            outcome,
            message: n.message.clone(),
        };
        lines.extend(parsed.refused.iter().map(|n| note(n, LineOutcome::Refused)));
        lines.extend(parsed.notes.iter().map(|n| note(n, LineOutcome::Note)));
        let mut by_user: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        let mut pool = Vec::new();
        for entry in parsed.tokens {
            let owner = entry
                .user
                .clone()
                .or_else(|| user.as_ref().map(ToString::to_string));
            let name = entry
                .name
                .clone()
                .unwrap_or_else(|| format.as_str().to_string());
            let pending = Pending {
                digits: entry.digits.unwrap_or(self.settings.totp.digits),
                period: entry.period.unwrap_or(self.settings.totp.period),
                algorithm: entry.algorithm.unwrap_or(self.settings.totp.algorithm),
                name,
                entry,
            };
            match owner {
                Some(owner) => by_user.entry(owner).or_default().push(pending),
                None if pending.entry.serial.is_some() => pool.push(pending),
                None => lines.push(line(
                    &pending.entry,
                    None,
                    None,
                    LineOutcome::Refused,
                    "the entry names no user: give one with --user",
                )),
            }
        }
        for (owner, entries) in by_user {
            // A refused line of this user's keeps the user's other entries out too.
            if let Some(bad) = parsed
                .refused
                .iter()
                .find(|n| n.user.as_ref() == Some(&owner))
            {
                lines.extend(entries.iter().map(|p| {
                    p.report(
                        &owner,
                        LineOutcome::Refused,
                        format!(
                            "not imported: line {} of the same user was refused ({})",
                            bad.line, bad.message
                        ),
                    )
                }));
                continue;
            }
            lines.extend(
                self.import_for_user(&owner, entries, format, dry_run, ctx)
                    .await?,
            );
        }
        for pending in pool {
            lines.push(self.import_to_pool(pending, format, dry_run, ctx).await?);
        }
        lines.sort_by_key(|l| l.line);
        Ok(ImportReport {
            format,
            dry_run,
            lines,
        })
    }

    /// One user's entries: all or none.
    async fn import_for_user(
        &self,
        owner: &str,
        entries: Vec<Pending>,
        format: Format,
        dry_run: bool,
        ctx: &RequestContext,
    ) -> Result<Vec<ImportLine>, CoreError> {
        let refuse_all = |entries: &[Pending], why: &str| {
            entries
                .iter()
                .map(|p| p.report(owner, LineOutcome::Refused, why))
                .collect::<Vec<_>>()
        };
        let user = match UserName::parse(owner) {
            Ok(u) => u,
            Err(e) => return Ok(refuse_all(&entries, &format!("user {owner:?}: {e}"))),
        };
        match self.lookup(&user).await? {
            None => return Ok(refuse_all(&entries, &format!("unknown user {owner}"))),
            Some(e) if !e.activated => {
                return Ok(refuse_all(
                    &entries,
                    &format!("the account {owner} is not activated"),
                ));
            }
            Some(_) => {}
        }
        let record = self.store.load(&user, self.now()).await?;
        let account = record.account.unwrap_or_default();
        // Each entry: refused (why), unchanged, or new.
        let mut verdicts: Vec<Result<bool, String>> = Vec::with_capacity(entries.len());
        for (i, p) in entries.iter().enumerate() {
            let earlier = entries.iter().take(i).find(|o| {
                o.name == p.name || (p.entry.serial.is_some() && o.entry.serial == p.entry.serial)
            });
            let verdict = if let Some(o) = earlier {
                Err(format!(
                    "token {:?} is also on line {} for {owner}",
                    p.name, o.entry.line
                ))
            } else if p.name == APP_TOKEN {
                Err(format!(
                    "the name {APP_TOKEN:?} is the enrolled app's; name the token otherwise"
                ))
            } else {
                self.verdict(&user, &account, p).await?
            };
            verdicts.push(verdict);
        }
        if let Some((bad, why)) = entries
            .iter()
            .zip(&verdicts)
            .find_map(|(p, v)| v.as_ref().err().map(|why| (p, why)))
        {
            let first = bad.entry.line;
            return Ok(entries
                .iter()
                .zip(&verdicts)
                .map(|(p, v)| {
                    let why = match v {
                        Err(why) => why.clone(),
                        Ok(_) => format!(
                            "not imported: line {first} of the same user was refused ({why})"
                        ),
                    };
                    p.report(owner, LineOutcome::Refused, why)
                })
                .collect());
        }
        let new: Vec<&Pending> = entries
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| matches!(v, Ok(true)))
            .map(|(p, _)| p)
            .collect();
        let mut report: Vec<ImportLine> = entries
            .iter()
            .zip(&verdicts)
            .map(|(p, v)| {
                let (outcome, message) = if matches!(v, Ok(true)) {
                    let verb = if dry_run {
                        "would be imported"
                    } else {
                        "imported"
                    };
                    (LineOutcome::Imported, format!("{verb}: {}", describe(p)))
                } else {
                    (
                        LineOutcome::Unchanged,
                        "unchanged: the same token is there".to_string(),
                    )
                };
                p.report(owner, outcome, message)
            })
            .collect();
        if dry_run || new.is_empty() {
            return Ok(report);
        }
        if let Err(why) = self.write_user_tokens(&user, &new, format).await? {
            for l in &mut report {
                l.outcome = LineOutcome::Refused;
                l.message = why.clone();
            }
            return Ok(report);
        }
        for p in new {
            self.audit(
                ctx,
                user.as_str(),
                Method::TokenImport,
                crate::audit::Outcome::Ok,
                &format!(
                    "token {} imported from {} line {}: {}",
                    p.name,
                    format,
                    p.entry.line,
                    describe(p)
                ),
            )
            .await;
        }
        Ok(report)
    }

    /// Whether an entry is new (`Ok(true)`), there already (`Ok(false)`) or refused.
    async fn verdict(
        &self,
        user: &UserName,
        account: &Account,
        p: &Pending,
    ) -> Result<Result<bool, String>, CoreError> {
        if let Some(t) = account
            .tokens
            .iter()
            .find(|t| t.name == p.name || (p.entry.serial.is_some() && t.serial == p.entry.serial))
        {
            let secret = self.keys.open(user, &t.secret)?;
            return Ok(if p.matches(t, &secret) {
                Ok(false)
            } else {
                Err(Refusal::TokenExists(t.name.clone()).to_string())
            });
        }
        if let Some(serial) = &p.entry.serial {
            if let Some(entry) = self.store.pool_get(serial).await? {
                return Ok(Err(match entry.assigned_to {
                    Some(other) => Refusal::SerialAssigned {
                        serial: serial.clone(),
                        user: other.to_string(),
                    }
                    .to_string(),
                    None => format!(
                        "serial {serial} is in the pool already: otpgate token assign {serial} {user}"
                    ),
                }));
            }
        }
        Ok(Ok(true))
    }

    /// Writes a user's new tokens: hardware serials into the pool (assigned), then the
    /// account in one compare-and-set; undone if either step is refused.
    async fn write_user_tokens(
        &self,
        user: &UserName,
        new: &[&Pending],
        format: Format,
    ) -> Result<Result<(), String>, CoreError> {
        let now = self.now();
        let mut tokens = Vec::with_capacity(new.len());
        let mut pooled: Vec<&str> = Vec::new();
        for p in new {
            let token = self.make_token(
                p,
                format,
                self.keys
                    .seal(user, &p.entry.secret, self.random.as_ref())?,
                now,
            );
            if let Some(serial) = &p.entry.serial {
                let for_pool = Token {
                    secret: self.keys.seal_for_pool(
                        serial,
                        &p.entry.secret,
                        self.random.as_ref(),
                    )?,
                    ..token.clone()
                };
                if !self.store.pool_add(&for_pool, serial, Some(user)).await? {
                    self.undo_pool(&pooled).await?;
                    return Ok(Err(format!(
                        "serial {serial} was added to the pool meanwhile; run the import again"
                    )));
                }
                pooled.push(serial);
            }
            tokens.push(token);
        }
        let saved = self
            .update_account(user, |account| {
                if let Some(t) = tokens
                    .iter()
                    .find(|t| account.tokens.iter().any(|a| a.name == t.name))
                {
                    return Err(Refusal::TokenExists(t.name.clone()).into());
                }
                account.tokens.extend(tokens.iter().cloned());
                Ok(Some(()))
            })
            .await;
        match saved {
            Ok(_) => Ok(Ok(())),
            Err(e) => {
                self.undo_pool(&pooled).await?;
                match e {
                    CoreError::Refused(r) => Ok(Err(r.to_string())),
                    other => Err(other),
                }
            }
        }
    }

    async fn undo_pool(&self, serials: &[&str]) -> Result<(), CoreError> {
        for serial in serials {
            self.store.pool_remove(serial).await?;
        }
        Ok(())
    }

    fn make_token(
        &self,
        p: &Pending,
        format: Format,
        secret: SealedSecret,
        now: crate::clock::Timestamp,
    ) -> Token {
        Token {
            name: p.name.clone(),
            serial: p.entry.serial.clone(),
            secret,
            digits: p.digits,
            period: p.period,
            algorithm: p.algorithm,
            source: source_of(format),
            added_at: now,
        }
    }

    /// A hardware token with no user: into the pool, unassigned.
    async fn import_to_pool(
        &self,
        p: Pending,
        format: Format,
        dry_run: bool,
        ctx: &RequestContext,
    ) -> Result<ImportLine, CoreError> {
        let Some(serial) = p.entry.serial.clone() else {
            return Ok(line(
                &p.entry,
                None,
                None,
                LineOutcome::Refused,
                "no user and no serial",
            ));
        };
        let refuse = |why: String| line(&p.entry, None, Some(&serial), LineOutcome::Refused, why);
        if let Some(existing) = self.store.pool_get(&serial).await? {
            let secret = self.keys.open_from_pool(&serial, &existing.token.secret)?;
            return Ok(if p.matches(&existing.token, &secret) {
                line(
                    &p.entry,
                    existing.assigned_to.as_ref().map(UserName::as_str),
                    Some(&serial),
                    LineOutcome::Unchanged,
                    "unchanged: the same token is in the pool",
                )
            } else {
                refuse(format!(
                    "serial {serial} is in the pool already with another secret or parameters"
                ))
            });
        }
        if !dry_run {
            let sealed = self
                .keys
                .seal_for_pool(&serial, &p.entry.secret, self.random.as_ref())?;
            let token = self.make_token(&p, format, sealed, self.now());
            if !self.store.pool_add(&token, &serial, None).await? {
                return Ok(refuse(format!(
                    "serial {serial} was added meanwhile; run the import again"
                )));
            }
            self.audit(
                ctx,
                "",
                Method::TokenImport,
                crate::audit::Outcome::Ok,
                &format!(
                    "hardware token {serial} added to the pool from {format} line {}: {}",
                    p.entry.line,
                    describe(&p)
                ),
            )
            .await;
        }
        let verb = if dry_run { "would be added" } else { "added" };
        Ok(line(
            &p.entry,
            None,
            Some(&serial),
            LineOutcome::Pooled,
            format!("{verb} to the pool, unassigned: {}", describe(&p)),
        ))
    }

    /// Assigns a pooled hardware token to a user. Audited.
    pub async fn assign_token(
        &self,
        serial: &str,
        user: &UserName,
        ctx: &RequestContext,
    ) -> Result<TokenInfo, CoreError> {
        let outcome = self.assign_inner(serial, user).await;
        self.audit_outcome(
            ctx,
            user,
            Method::TokenAssign,
            &format!("hardware token {serial} assigned"),
            &outcome,
        )
        .await;
        outcome
    }

    async fn assign_inner(&self, serial: &str, user: &UserName) -> Result<TokenInfo, CoreError> {
        self.activated_entry(user).await?;
        let token = match self.store.pool_claim(serial, user).await? {
            Claim::Claimed(t) => t,
            Claim::AssignedTo(other) => {
                return Err(Refusal::SerialAssigned {
                    serial: serial.to_string(),
                    user: other.to_string(),
                }
                .into());
            }
            Claim::Unknown => return Err(Refusal::UnknownSerial(serial.to_string()).into()),
        };
        let added = async {
            let secret = self.keys.open_from_pool(serial, &token.secret)?;
            let mine = Token {
                secret: self.keys.seal(user, &secret, self.random.as_ref())?,
                added_at: self.now(),
                ..token.clone()
            };
            self.update_account(user, |account| {
                if account.tokens.iter().any(|t| t.name == mine.name) {
                    return Err(Refusal::TokenExists(mine.name.clone()).into());
                }
                account.tokens.push(mine.clone());
                Ok(Some(()))
            })
            .await
        }
        .await;
        if let Err(e) = added {
            self.store.pool_release(serial, user).await?;
            return Err(e);
        }
        Ok(TokenInfo::of(&token, Some(user)))
    }

    /// Removes a token by name or serial (`app`: the enrolled app). A hardware token
    /// goes back to the pool, unassigned. Audited.
    pub async fn remove_token(
        &self,
        user: &UserName,
        which: &str,
        ctx: &RequestContext,
    ) -> Result<String, CoreError> {
        let outcome = self.remove_inner(user, which).await;
        let what = match &outcome {
            Ok(name) => format!("token {name} removed"),
            Err(_) => String::new(),
        };
        self.audit_outcome(ctx, user, Method::TokenRemove, &what, &outcome)
            .await;
        outcome
    }

    async fn remove_inner(&self, user: &UserName, which: &str) -> Result<String, CoreError> {
        let removed = self
            .update_account(user, |account| {
                if which == APP_TOKEN && account.totp.is_some() {
                    account.totp = None;
                    account.enrolled_at = None;
                    return Ok(Some((APP_TOKEN.to_string(), None)));
                }
                let Some(i) = account
                    .tokens
                    .iter()
                    .position(|t| t.name == which || t.serial.as_deref() == Some(which))
                else {
                    return Err(Refusal::NoSuchToken(which.to_string()).into());
                };
                let t = account.tokens.remove(i);
                Ok(Some((t.name, t.serial)))
            })
            .await?
            .ok_or_else(|| CoreError::Refused(Refusal::NoSuchToken(which.to_string())))?;
        let (name, serial) = removed;
        if let Some(serial) = serial {
            self.store.pool_release(&serial, user).await?;
        }
        Ok(name)
    }

    /// Unassigns a hardware token by serial, whoever holds it.
    pub async fn unassign_token(
        &self,
        serial: &str,
        ctx: &RequestContext,
    ) -> Result<UserName, CoreError> {
        let entry = self
            .store
            .pool_get(serial)
            .await?
            .ok_or_else(|| CoreError::Refused(Refusal::UnknownSerial(serial.to_string())))?;
        let Some(user) = entry.assigned_to else {
            return Err(Refusal::NoSuchToken(format!("{serial} (it is not assigned)")).into());
        };
        self.remove_token(&user, serial, ctx).await?;
        Ok(user)
    }

    /// A user's tokens (the app first), never their secrets.
    pub async fn tokens_of(&self, user: &UserName) -> Result<Vec<TokenInfo>, CoreError> {
        self.lookup(user).await?.ok_or(Refusal::UnknownUser)?;
        let record = self.store.load(user, self.now()).await?;
        Ok(record
            .account
            .map(|a| self.token_infos(&a, user))
            .unwrap_or_default())
    }

    pub(super) fn token_infos(&self, account: &Account, user: &UserName) -> Vec<TokenInfo> {
        let d = &self.settings.totp;
        let app = account.totp.as_ref().map(|_| TokenInfo {
            name: APP_TOKEN.to_string(),
            serial: None,
            digits: d.digits,
            period: d.period,
            algorithm: algorithm_name(d.algorithm),
            source: TokenSource::Enrolled.as_str(),
            user: Some(user.to_string()),
        });
        app.into_iter()
            .chain(account.tokens.iter().map(|t| TokenInfo::of(t, Some(user))))
            .collect()
    }

    /// The hardware-token pool, assigned or not.
    pub async fn token_pool(&self) -> Result<Vec<TokenInfo>, CoreError> {
        Ok(self
            .store
            .pool_list()
            .await?
            .iter()
            .map(|e| TokenInfo::of(&e.token, e.assigned_to.as_ref()))
            .collect())
    }

    /// Releases every hardware token of an account to the pool (a reset).
    pub(super) async fn release_hardware(
        &self,
        user: &UserName,
        tokens: &[Token],
    ) -> Result<(), CoreError> {
        for serial in tokens.iter().filter_map(|t| t.serial.as_deref()) {
            self.store.pool_release(serial, user).await?;
        }
        Ok(())
    }
}

fn describe(p: &Pending) -> String {
    format!(
        "{} digits, {} s, {}",
        p.digits,
        p.period,
        algorithm_name(p.algorithm)
    )
}
