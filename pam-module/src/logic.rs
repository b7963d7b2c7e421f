//! The login, as ordinary Rust over [`PamHandle`] and [`Backend`]:
//!
//! 1. parse the arguments (a bad one is PAM_SERVICE_ERR, logged);
//! 2. read and check the user name, and (with `remember`) the remote host;
//! 3. in `mode=password+otp`, take the password (`use_first_pass`, `try_first_pass`,
//!    else prompt "Password: ") and keep it as PAM_AUTHTOK for later modules;
//! 4. open the backend from the root-owned configuration (failure:
//!    PAM_AUTHINFO_UNAVAIL);
//! 5. begin; while a code is needed, prompt "One-time password: " (the email keyword
//!    mails a code and asks again), at most [`MAX_PROMPTS`] times;
//! 6. map the outcome to a [`PamCode`]. Only [`Outcome::LetIn`] (and, in
//!    `mode=password+otp`, [`Outcome::NoSecondFactor`]) becomes PAM_SUCCESS; with
//!    `ignore_unknown_user` an unknown user, and in `mode=otp-only` a `nullok` user
//!    with no second factor, become PAM_IGNORE.

use zeroize::Zeroizing;

use crate::args::{Args, FirstPass, Mode};
use crate::backend::{Backend, BackendError, Login, Outcome, Refused};
use crate::handle::{HandleError, Level, MAX_TOKEN, PamCode, PamHandle};

/// The code prompt (SPEC §6).
pub const OTP_PROMPT: &str = "One-time password: ";
/// The password prompt in `mode=password+otp`.
pub const PASSWORD_PROMPT: &str = "Password: ";
/// How many times one call prompts for a code (the keyword counts as one).
pub const MAX_PROMPTS: usize = 3;
/// The longest remote host name kept, in bytes.
const MAX_HOST: usize = 253;

/// Authenticates one user. `open` builds the backend from the parsed arguments (the
/// module passes [`crate::backend::open`]; tests pass a fake).
pub fn authenticate<H, F>(handle: &mut H, raw_args: &[&str], open: F) -> PamCode
where
    H: PamHandle + ?Sized,
    F: FnOnce(&Args) -> Result<Box<dyn Backend>, BackendError>,
{
    let args = match Args::parse(raw_args.iter().copied()) {
        Ok(a) => a,
        Err(e) => {
            handle.log(Level::Error, &format!("bad module arguments: {e}"));
            return PamCode::ServiceErr;
        }
    };
    let mut run = Run {
        handle,
        args: &args,
    };
    match run.login(open) {
        Ok(code) => code,
        Err(code) => code,
    }
}

/// One call's handle and arguments.
struct Run<'a, H: PamHandle + ?Sized> {
    handle: &'a mut H,
    args: &'a Args,
}

impl<H: PamHandle + ?Sized> Run<'_, H> {
    fn debug(&mut self, message: &str) {
        if self.args.debug {
            self.handle.log(Level::Debug, message);
        }
    }

    /// The whole login; `Err` carries an early result.
    fn login<F>(&mut self, open: F) -> Result<PamCode, PamCode>
    where
        F: FnOnce(&Args) -> Result<Box<dyn Backend>, BackendError>,
    {
        let user = self.user()?;
        let remember_host = if self.args.remember {
            self.remote_host()?
        } else {
            None
        };
        let password = match self.args.mode {
            Mode::OtpOnly => None,
            Mode::PasswordOtp => Some(self.password(&user)?),
        };
        let login = Login {
            user,
            password,
            remember_host,
            nullok: self.args.nullok,
        };
        self.debug(&format!("{login:?}"));
        let mut backend = open(self.args).map_err(|e| self.backend_failed(&login.user, &e))?;
        let mut outcome = backend
            .begin(&login)
            .map_err(|e| self.backend_failed(&login.user, &e))?;
        let mut prompts = 0;
        loop {
            match outcome {
                Outcome::LetIn { how, notice } => {
                    if let Some(notice) = notice {
                        self.show(&notice)?;
                    }
                    self.handle.log(
                        Level::Notice,
                        &format!("accepted user {} ({how})", login.user),
                    );
                    return Ok(PamCode::Success);
                }
                Outcome::NoSecondFactor => return Ok(self.no_second_factor(&login.user)),
                Outcome::Refused(why) => return Ok(self.refused(&login.user, &why)),
                Outcome::NeedCode { message } => {
                    if prompts == MAX_PROMPTS {
                        self.handle.log(
                            Level::Notice,
                            &format!("refused user {}: too many prompts", login.user),
                        );
                        return Ok(PamCode::AuthErr);
                    }
                    prompts += 1;
                    if let Some(message) = message {
                        self.show(&message)?;
                    }
                    let answer = self
                        .handle
                        .prompt_hidden(OTP_PROMPT)
                        .map_err(|e| self.conv_failed(&e))?;
                    let answer = self.token(&login.user, "code", answer)?;
                    outcome = backend
                        .answer(&login, &answer)
                        .map_err(|e| self.backend_failed(&login.user, &e))?;
                }
            }
        }
    }

    /// Shows server or core text (made printable) as PAM_TEXT_INFO messages of at most
    /// [`MAX_INFO`] bytes each, split at line ends (an enrollment's QR code is longer
    /// than one message may be).
    fn show(&mut self, text: &str) -> Result<(), PamCode> {
        for part in info_messages(&printable(text)) {
            self.handle.info(&part).map_err(|e| self.conv_failed(&e))?;
        }
        Ok(())
    }

    /// The user name, checked: UTF-8, 1..=128 bytes, no whitespace or control
    /// characters; canonical (lower-case).
    fn user(&mut self) -> Result<String, PamCode> {
        let raw = self.handle.user().map_err(|e| self.conv_failed(&e))?;
        let parsed = otpgate_config::user_name::UserName::from_bytes(&raw);
        match parsed {
            Ok(name) => Ok(name.as_str().to_string()),
            Err(e) => {
                self.handle
                    .log(Level::Notice, &format!("refused a user name: {e}"));
                Err(PamCode::UserUnknown)
            }
        }
    }

    /// PAM_RHOST when it is a plausible host name or address; anything else is logged
    /// and not remembered.
    fn remote_host(&mut self) -> Result<Option<String>, PamCode> {
        let host = self.handle.rhost().map_err(|e| self.conv_failed(&e))?;
        let Some(host) = host else {
            self.debug("remember: no PAM_RHOST, nothing to remember");
            return Ok(None);
        };
        let fine =
            !host.is_empty() && host.len() <= MAX_HOST && host.iter().all(|b| b.is_ascii_graphic());
        if !fine {
            self.handle.log(
                Level::Warning,
                "remember: PAM_RHOST is not a host name or address; not remembered",
            );
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&host).into_owned()))
    }

    /// The password for `mode=password+otp`, as the arguments say.
    fn password(&mut self, user: &str) -> Result<Zeroizing<Vec<u8>>, PamCode> {
        let earlier = match self.args.first_pass {
            FirstPass::Prompt => None,
            FirstPass::Use | FirstPass::Try => {
                self.handle.authtok().map_err(|e| self.conv_failed(&e))?
            }
        };
        let token = match (earlier, self.args.first_pass) {
            (Some(t), _) => t,
            (None, FirstPass::Use) => {
                self.handle.log(
                    Level::Notice,
                    &format!("refused user {user}: use_first_pass but no earlier password"),
                );
                return Err(PamCode::AuthErr);
            }
            (None, _) => {
                let typed = self
                    .handle
                    .prompt_hidden(PASSWORD_PROMPT)
                    .map_err(|e| self.conv_failed(&e))?;
                let typed = self.token(user, "password", typed)?;
                self.handle
                    .set_authtok(&typed)
                    .map_err(|e| self.conv_failed(&e))?;
                typed
            }
        };
        self.token(user, "password", token)
    }

    /// Checks a typed token: 1..=128 bytes, UTF-8, no NUL or control characters.
    fn token(
        &mut self,
        user: &str,
        what: &str,
        token: Zeroizing<Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, PamCode> {
        let problem = if token.is_empty() {
            Some("is empty")
        } else if token.len() > MAX_TOKEN {
            Some("is too long")
        } else if std::str::from_utf8(&token).is_err() {
            Some("is not UTF-8")
        } else if token.iter().any(|b| b.is_ascii_control()) {
            Some("has a NUL or control character")
        } else {
            None
        };
        match problem {
            None => Ok(token),
            Some(p) => {
                self.handle.log(
                    Level::Notice,
                    &format!("refused user {user}: the {what} {p}"),
                );
                Err(PamCode::AuthErr)
            }
        }
    }

    /// `nullok` and no second factor: in `otp-only` the module checked nothing, so it
    /// has no say; in `password+otp` it checked the password.
    fn no_second_factor(&mut self, user: &str) -> PamCode {
        let code = match self.args.mode {
            Mode::OtpOnly => PamCode::Ignore,
            Mode::PasswordOtp => PamCode::Success,
        };
        self.handle.log(
            Level::Notice,
            &format!("passed user {user} on: no second factor (nullok), {code:?}"),
        );
        code
    }

    fn refused(&mut self, user: &str, why: &Refused) -> PamCode {
        if *why == Refused::UnknownUser && self.args.ignore_unknown_user {
            self.handle.log(
                Level::Info,
                &format!("ignored user {user}: not in the directory (ignore_unknown_user)"),
            );
            return PamCode::Ignore;
        }
        let (code, reason) = match why {
            Refused::Denied(r) => (PamCode::AuthErr, r.as_str()),
            Refused::UnknownUser => (PamCode::UserUnknown, "unknown user"),
            Refused::Locked => (PamCode::MaxTries, "locked"),
            Refused::NotEnrolled { message } => {
                // Where to set a second factor up; the answer stays PAM_AUTH_ERR even if
                // the conversation cannot show it.
                if let Some(message) = message {
                    let _ = self.show(message);
                }
                (PamCode::AuthErr, "no second factor (no nullok)")
            }
        };
        self.handle
            .log(Level::Notice, &format!("refused user {user}: {reason}"));
        code
    }

    fn backend_failed(&mut self, user: &str, e: &BackendError) -> PamCode {
        self.handle
            .log(Level::Error, &format!("user {user}: unavailable: {e}"));
        PamCode::AuthInfoUnavail
    }

    fn conv_failed(&mut self, e: &HandleError) -> PamCode {
        self.handle.log(Level::Error, &e.to_string());
        match e {
            HandleError::Conversation(_) => PamCode::ConvErr,
            HandleError::Item(_) => PamCode::ServiceErr,
        }
    }
}

/// The longest text shown in one PAM message, in bytes (Linux-PAM's PAM_MAX_MSG_SIZE
/// is 512, with its NUL).
pub const MAX_INFO: usize = 500;
/// The longest text shown for one outcome, in characters: an enrollment's QR code
/// and secret fit.
const MAX_SHOWN: usize = 6000;

/// Server text made safe to show: control characters other than newline removed,
/// at most [`MAX_SHOWN`] characters.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .take(MAX_SHOWN)
        .collect()
}

/// `text` in messages of at most [`MAX_INFO`] bytes, split after whole lines (a line
/// longer than that alone is split at a character boundary).
fn info_messages(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        if !current.is_empty() && current.len() + line.len() > MAX_INFO {
            out.push(std::mem::take(&mut current));
        }
        for c in line.chars() {
            if current.len() + c.len_utf8() > MAX_INFO {
                out.push(std::mem::take(&mut current));
            }
            current.push(c);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
        .map(|m| m.trim_end_matches('\n').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

#[cfg(test)]
#[path = "logic_tests.rs"]
mod tests;
