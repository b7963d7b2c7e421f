//! The safe face of a PAM handle: what the login logic needs from the application
//! (the user, the remote host, an earlier module's password, the conversation) and
//! the result codes it returns. [`crate::ffi`] implements [`PamHandle`] over the C
//! API; the unit tests implement it with a scripted fake that checks every prompt.

use zeroize::Zeroizing;

/// The longest token (password or code) accepted, in bytes: what fits a RADIUS
/// User-Password.
pub const MAX_TOKEN: usize = 128;

/// A PAM result, as the login logic decides it. [`crate::ffi`] maps each to its C
/// value; nothing else can reach the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamCode {
    /// PAM_SUCCESS: both factors (or a trusted host) passed; or, in `mode=password+otp`,
    /// the password and `nullok`.
    Success,
    /// PAM_IGNORE: the module has no say: `ignore_unknown_user` and a user the directory
    /// does not know, or `nullok` and a user with no second factor (`mode=otp-only`).
    /// The rest of the stack decides.
    Ignore,
    /// PAM_AUTH_ERR: a wrong password or code, a replay, a refused token.
    AuthErr,
    /// PAM_USER_UNKNOWN: the directory has no such user.
    UserUnknown,
    /// PAM_MAXTRIES: the user is locked out.
    MaxTries,
    /// PAM_AUTHINFO_UNAVAIL: a backend is down, or the configuration is unreadable or
    /// unsafe.
    AuthInfoUnavail,
    /// PAM_SERVICE_ERR: the module is misconfigured (a bad argument) or failed
    /// internally (including a caught panic).
    ServiceErr,
    /// PAM_CONV_ERR: the conversation failed (no terminal, the user hung up).
    ConvErr,
}

/// Severity of a log line (syslog levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// LOG_ERR.
    Error,
    /// LOG_WARNING.
    Warning,
    /// LOG_NOTICE: decisions.
    Notice,
    /// LOG_INFO.
    Info,
    /// LOG_DEBUG (only with the `debug` argument).
    Debug,
}

/// Why the handle could not answer; the logic maps it to a [`PamCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The conversation failed or was refused.
    #[error("conversation failed: {0}")]
    Conversation(String),
    /// The application gave no user or an item PAM could not read.
    #[error("PAM item unavailable: {0}")]
    Item(String),
}

/// What the login logic asks of the application.
pub trait PamHandle {
    /// The user being authenticated (PAM_USER, asked of the application if unset).
    fn user(&mut self) -> Result<Zeroizing<Vec<u8>>, HandleError>;
    /// The remote host (PAM_RHOST), if the application set one.
    fn rhost(&mut self) -> Result<Option<Vec<u8>>, HandleError>;
    /// The password an earlier module read (PAM_AUTHTOK), if any.
    fn authtok(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, HandleError>;
    /// Stores the password for later modules (PAM_AUTHTOK).
    fn set_authtok(&mut self, token: &[u8]) -> Result<(), HandleError>;
    /// Asks with echo off; the reply is wiped when dropped.
    fn prompt_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, HandleError>;
    /// Shows a line of information (PAM_TEXT_INFO).
    fn info(&mut self, text: &str) -> Result<(), HandleError>;
    /// Writes a log line (syslog authpriv in the module).
    fn log(&mut self, level: Level, message: &str);
}

/// A handle that answers every prompt from a list, in order, and keeps the log lines:
/// for driving the login logic in-process (the no-leftovers test, the overhead
/// benchmark). Its user and remote host are fixed; it has no earlier password.
#[derive(Debug)]
pub struct Answers {
    user: String,
    rhost: Option<String>,
    /// Reversed: the next answer is last.
    answers: Vec<String>,
    /// The prompts shown, in order.
    pub prompts: Vec<String>,
    /// The log lines written, in order.
    pub logs: Vec<String>,
}

impl Answers {
    /// A handle for `user` from `rhost` answering `answers`.
    pub fn new(user: &str, rhost: Option<&str>, answers: &[&str]) -> Self {
        Self {
            user: user.to_string(),
            rhost: rhost.map(str::to_string),
            answers: answers.iter().rev().map(|a| a.to_string()).collect(),
            prompts: Vec::new(),
            logs: Vec::new(),
        }
    }
}

impl PamHandle for Answers {
    fn user(&mut self) -> Result<Zeroizing<Vec<u8>>, HandleError> {
        Ok(Zeroizing::new(self.user.as_bytes().to_vec()))
    }
    fn rhost(&mut self) -> Result<Option<Vec<u8>>, HandleError> {
        Ok(self.rhost.as_ref().map(|h| h.as_bytes().to_vec()))
    }
    fn authtok(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, HandleError> {
        Ok(None)
    }
    fn set_authtok(&mut self, _token: &[u8]) -> Result<(), HandleError> {
        Ok(())
    }
    fn prompt_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, HandleError> {
        self.prompts.push(prompt.to_string());
        let answer = self
            .answers
            .pop()
            .ok_or_else(|| HandleError::Conversation("no more answers".into()))?;
        Ok(Zeroizing::new(answer.into_bytes()))
    }
    fn info(&mut self, _text: &str) -> Result<(), HandleError> {
        Ok(())
    }
    fn log(&mut self, _level: Level, message: &str) {
        self.logs.push(message.to_string());
    }
}
