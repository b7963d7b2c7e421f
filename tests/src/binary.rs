//! Finding the server and client binaries, and running short helper commands.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::error::{HarnessError, Result};

/// Directories searched after `$PATH`: the server daemons live in `sbin`, which a
/// non-root `$PATH` often lacks.
const EXTRA_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// How much of a failed command's output goes into the error.
const MAX_OUTPUT: usize = 2000;

/// Finds an executable by name (or checks an absolute path) or fails with
/// [`HarnessError::MissingBinary`], whose message names the `apt-get install` command for
/// `packages`.
///
/// ```no_run
/// let slapd = otpgate_tests::require_binary("slapd", &["slapd", "ldap-utils"])?;
/// # Ok::<(), otpgate_tests::HarnessError>(())
/// ```
pub fn require_binary(name: &str, packages: &[&str]) -> Result<PathBuf> {
    find_binary(name).ok_or_else(|| HarnessError::MissingBinary {
        name: name.to_owned(),
        packages: packages.join(" "),
    })
}

fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return is_executable(&path).then_some(path);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `/usr/bin/python3` with the named modules importable, or
/// [`HarnessError::MissingBinary`] naming `packages`. Debian's interpreter is used on
/// purpose: a `python3` earlier on `$PATH` may lack Debian's Python packages.
pub fn require_python_modules(modules: &[&str], packages: &[&str]) -> Result<PathBuf> {
    let python = require_binary("/usr/bin/python3", &["python3"])?;
    let script = format!("import {}", modules.join(", "));
    let ok = Command::new(&python)
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if ok {
        Ok(python)
    } else {
        Err(HarnessError::MissingBinary {
            name: format!(
                "python module {} (for /usr/bin/python3)",
                modules.join(", ")
            ),
            packages: packages.join(" "),
        })
    }
}

/// Runs a short helper command to completion, optionally feeding `stdin`, and returns
/// its output, or [`HarnessError::CommandFailed`] when it exits non-zero.
pub(crate) fn run(command: &mut Command, stdin: Option<&[u8]>) -> Result<Output> {
    let output = run_status(command, stdin)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(failed(command, &output))
    }
}

/// Like [`run`] but returns the output whatever the exit status.
pub(crate) fn run_status(command: &mut Command, stdin: Option<&[u8]>) -> Result<Output> {
    use std::io::Write;

    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|err| HarnessError::io(format!("spawning `{}`", describe(command)), err))?;
    if let Some(input) = stdin {
        // Take the pipe so that it closes (EOF) once written.
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(input).map_err(|err| {
                HarnessError::io(format!("writing to `{}`", describe(command)), err)
            })?;
        }
    }
    child
        .wait_with_output()
        .map_err(|err| HarnessError::io(format!("waiting for `{}`", describe(command)), err))
}

/// The error for a command that exited non-zero.
pub(crate) fn failed(command: &Command, output: &Output) -> HarnessError {
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    if text.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str(" […]");
    }
    HarnessError::CommandFailed {
        command: describe(command),
        status: output.status,
        output: text,
    }
}

/// A command line for messages.
pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}
