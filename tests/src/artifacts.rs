//! The product's own artifacts — the `otpgate` binary, `pam_otpgate.so` (server mode)
//! and `pam_otpgate_direct.so` (direct mode) — built once
//! per test process by the cargo that runs the tests, into the same target directory, so
//! a test never runs a stale binary. (`cargo test` does not build other packages'
//! binaries or cdylibs by itself.)

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{HarnessError, Result};

/// `target/<profile>`: the folder of the running executable, which is
/// `target/<profile>/deps/` for a test and `target/<profile>/` for a binary of the
/// workspace (the bench).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| HarnessError::io("locating the running executable", e))?;
    let dir = exe
        .parent()
        .ok_or_else(|| HarnessError::Usage(format!("{} has no parent folder", exe.display())))?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()
    } else {
        Some(dir)
    };
    dir.filter(|d| d.parent().is_some())
        .map(PathBuf::from)
        .ok_or_else(|| {
            HarnessError::Usage(format!("{} is not under target/<profile>", exe.display()))
        })
}

/// Builds `otpgate`, `pam_otpgate` and `pam_otpgate_direct` once; returns
/// `target/<profile>`.
fn build() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = profile_dir().map_err(|e| e.to_string())?;
            let target = dir.parent().ok_or("no target directory")?.to_path_buf();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            // One package per build: together, the modules would share the binary's
            // tokio features (its signal driver keeps a socket pair open for the life
            // of the process, which the module must not leave in sshd), and the
            // server-mode module would get the direct one's feature.
            for package in ["otpgate", "pam_otpgate", "pam_otpgate_direct"] {
                let mut cmd = Command::new(&cargo);
                cmd.args(["build", "--quiet", "-p", package])
                    .env("CARGO_TARGET_DIR", &target);
                // What `cargo test` set for this test process is not the build's: a
                // build script that watches one of these (ring watches
                // CARGO_MANIFEST_DIR) would otherwise be rebuilt by this build and
                // again by the next `cargo test`, each time.
                for (name, _) in std::env::vars_os() {
                    let name = name.to_string_lossy();
                    if name.starts_with("CARGO_PKG_")
                        || name.starts_with("CARGO_MANIFEST_")
                        || matches!(
                            name.as_ref(),
                            "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
                        )
                    {
                        cmd.env_remove(name.as_ref());
                    }
                }
                if dir.file_name().is_some_and(|n| n == "release") {
                    cmd.arg("--release");
                }
                let out = cmd
                    .output()
                    .map_err(|e| format!("running cargo build: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "cargo build -p {package} failed:\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            Ok(dir)
        })
        .clone()
        .map_err(HarnessError::Usage)
}

/// The `otpgate` binary, freshly built.
pub fn otpgate_binary() -> Result<PathBuf> {
    Ok(build()?.join("otpgate"))
}

/// `libpam_otpgate.so` (server mode), freshly built.
pub fn pam_module() -> Result<PathBuf> {
    Ok(build()?.join("libpam_otpgate.so"))
}

/// `libpam_otpgate_direct.so` (direct mode), freshly built.
pub fn pam_direct_module() -> Result<PathBuf> {
    Ok(build()?.join("libpam_otpgate_direct.so"))
}
