//! The module arguments of SPEC §6, parsed into [`Args`]:
//!
//! ```text
//! auth required pam_otpgate.so [config=PATH] [mode=otp-only|password+otp]
//!     [use_first_pass|try_first_pass] [nullok] [ignore_unknown_user] [remember] [debug]
//! ```
//!
//! An unknown or repeated argument, or one that would do nothing, is an error (the
//! module then returns PAM_SERVICE_ERR and logs why), never silently ignored.

use std::path::PathBuf;

/// The longest argument accepted, in bytes.
const MAX_ARG: usize = 4096;

/// What the module asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An earlier module checked the password: prompt only for the code.
    OtpOnly,
    /// Check the directory password too, then the code.
    PasswordOtp,
}

/// Where the password comes from in `mode=password+otp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPass {
    /// Always prompt.
    Prompt,
    /// Use the password an earlier module read (PAM_AUTHTOK); fail without one.
    Use,
    /// Use it when there is one, else prompt.
    Try,
}

/// The parsed module arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// `config=PATH`, default `/etc/otpgate/otpgate.toml`.
    pub config: PathBuf,
    /// `mode=`, default `otp-only`.
    pub mode: Mode,
    /// `use_first_pass` / `try_first_pass`.
    pub first_pass: FirstPass,
    /// `nullok`: users with no second factor are passed on (PAM_IGNORE in `otp-only`).
    pub nullok: bool,
    /// `ignore_unknown_user`: a user the directory does not know (root, local
    /// accounts) gets PAM_IGNORE, so the rest of the stack decides.
    pub ignore_unknown_user: bool,
    /// `remember`: trust the remote host after a login with a code.
    pub remember: bool,
    /// `debug`: log each step.
    pub debug: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            config: PathBuf::from(otpgate_config::DEFAULT_PATH),
            mode: Mode::OtpOnly,
            first_pass: FirstPass::Prompt,
            nullok: false,
            ignore_unknown_user: false,
            remember: false,
            debug: false,
        }
    }
}

/// Why the arguments were refused; the text goes to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgsError {
    /// Not an argument of this module.
    #[error("unknown argument `{0}`")]
    Unknown(String),
    /// Given twice (or both `use_first_pass` and `try_first_pass`).
    #[error("argument `{0}` given more than once or contradicted")]
    Repeated(String),
    /// A value the argument does not take.
    #[error("bad value in `{0}`: {1}")]
    BadValue(String, &'static str),
    /// `use_first_pass`/`try_first_pass` do nothing without `mode=password+otp`.
    #[error("`{0}` applies only with mode=password+otp")]
    NeedsPasswordMode(&'static str),
}

impl Args {
    /// Parses the arguments of the PAM configuration line.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, ArgsError> {
        let mut out = Self::default();
        let mut seen: Vec<&'static str> = Vec::new();
        let mut once = |name: &'static str| {
            if seen.contains(&name) {
                return Err(ArgsError::Repeated(name.to_string()));
            }
            seen.push(name);
            Ok(())
        };
        for arg in args {
            if arg.len() > MAX_ARG || arg.chars().any(char::is_control) {
                return Err(ArgsError::BadValue(
                    shown(arg),
                    "too long or has control characters",
                ));
            }
            match arg.split_once('=') {
                Some(("config", path)) => {
                    once("config")?;
                    if !path.starts_with('/') {
                        return Err(ArgsError::BadValue(shown(arg), "the path must be absolute"));
                    }
                    out.config = PathBuf::from(path);
                }
                Some(("mode", mode)) => {
                    once("mode")?;
                    out.mode = match mode {
                        "otp-only" => Mode::OtpOnly,
                        "password+otp" => Mode::PasswordOtp,
                        _ => {
                            return Err(ArgsError::BadValue(
                                shown(arg),
                                "use otp-only or password+otp",
                            ));
                        }
                    };
                }
                Some(_) => return Err(ArgsError::Unknown(shown(arg))),
                None => match arg {
                    "use_first_pass" | "try_first_pass" => {
                        once("first_pass").map_err(|_| {
                            ArgsError::Repeated("use_first_pass/try_first_pass".into())
                        })?;
                        out.first_pass = if arg == "use_first_pass" {
                            FirstPass::Use
                        } else {
                            FirstPass::Try
                        };
                    }
                    "nullok" => {
                        once("nullok")?;
                        out.nullok = true;
                    }
                    "ignore_unknown_user" => {
                        once("ignore_unknown_user")?;
                        out.ignore_unknown_user = true;
                    }
                    "remember" => {
                        once("remember")?;
                        out.remember = true;
                    }
                    "debug" => {
                        once("debug")?;
                        out.debug = true;
                    }
                    _ => return Err(ArgsError::Unknown(shown(arg))),
                },
            }
        }
        if out.mode == Mode::OtpOnly {
            match out.first_pass {
                FirstPass::Prompt => {}
                FirstPass::Use => return Err(ArgsError::NeedsPasswordMode("use_first_pass")),
                FirstPass::Try => return Err(ArgsError::NeedsPasswordMode("try_first_pass")),
            }
        }
        Ok(out)
    }
}

/// An argument as shown in a log line: at most 64 characters.
fn shown(arg: &str) -> String {
    arg.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let args = Args::parse([]).unwrap();
        assert_eq!(args, Args::default());
        assert_eq!(args.config, PathBuf::from("/etc/otpgate/otpgate.toml"));
        assert_eq!(args.mode, Mode::OtpOnly);
    }

    #[test]
    fn every_argument() {
        let args = Args::parse([
            "config=/etc/otpgate/pam.toml",
            "mode=password+otp",
            "try_first_pass",
            "nullok",
            "ignore_unknown_user",
            "remember",
            "debug",
        ])
        .unwrap();
        assert_eq!(
            args,
            Args {
                config: PathBuf::from("/etc/otpgate/pam.toml"),
                mode: Mode::PasswordOtp,
                first_pass: FirstPass::Try,
                nullok: true,
                ignore_unknown_user: true,
                remember: true,
                debug: true,
            }
        );
        let args = Args::parse(["mode=password+otp", "use_first_pass"]).unwrap();
        assert_eq!(args.first_pass, FirstPass::Use);
        assert_eq!(Args::parse(["mode=otp-only"]).unwrap().mode, Mode::OtpOnly);
    }

    #[test]
    fn unknown_repeated_and_bad_arguments_are_errors() {
        assert_eq!(
            Args::parse(["nulok"]),
            Err(ArgsError::Unknown("nulok".into()))
        );
        assert_eq!(
            Args::parse(["secret=x"]),
            Err(ArgsError::Unknown("secret=x".into()))
        );
        assert_eq!(
            Args::parse(["nullok", "nullok"]),
            Err(ArgsError::Repeated("nullok".into()))
        );
        assert!(matches!(
            Args::parse(["mode=password+otp", "use_first_pass", "try_first_pass"]),
            Err(ArgsError::Repeated(_))
        ));
        assert!(matches!(
            Args::parse(["mode=otp"]),
            Err(ArgsError::BadValue(..))
        ));
        assert!(matches!(
            Args::parse(["config=relative.toml"]),
            Err(ArgsError::BadValue(..))
        ));
        assert!(matches!(
            Args::parse(["config=/a\u{7}b"]),
            Err(ArgsError::BadValue(..))
        ));
        assert_eq!(
            Args::parse(["use_first_pass"]),
            Err(ArgsError::NeedsPasswordMode("use_first_pass"))
        );
        let long = format!("config=/{}", "a".repeat(5000));
        assert!(matches!(
            Args::parse([long.as_str()]),
            Err(ArgsError::BadValue(..))
        ));
    }
}
