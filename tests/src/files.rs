//! Writing files into a test's temporary directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{HarnessError, Result};

/// Writes `contents` to a new file readable and writable by the owner only (0600),
/// as the product demands of secret files.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    write_mode(path, contents, 0o600)
}

/// Writes `contents` to a file with mode 0644.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<()> {
    write_mode(path, contents, 0o644)
}

fn write_mode(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let context = || format!("writing {}", path.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|err| HarnessError::io(context(), err))?;
    file.write_all(contents)
        .map_err(|err| HarnessError::io(context(), err))
}

/// `len` random bytes from `/dev/urandom`.
pub fn random_bytes(len: usize) -> Result<Vec<u8>> {
    use std::io::Read;

    let mut bytes = vec![0; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(|err| HarnessError::io("reading /dev/urandom", err))?;
    Ok(bytes)
}
