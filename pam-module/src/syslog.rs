//! Log lines to syslog, facility authpriv, over the local `/dev/log` datagram socket.
//!
//! Each line opens the socket, sends one datagram and closes it, so no descriptor
//! outlives the call (unlike `openlog(3)`, which keeps one open in the caller). A
//! missing or full syslog socket drops the line: logging never changes a PAM result.

use std::os::unix::net::UnixDatagram;

use crate::handle::Level;

/// The syslog socket.
const DEV_LOG: &str = "/dev/log";
/// LOG_AUTHPRIV (10) << 3.
const AUTHPRIV: u8 = 10 << 3;
/// Longest message sent, in bytes.
const MAX_LINE: usize = 1024;

fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warning => 4,
        Level::Notice => 5,
        Level::Info => 6,
        Level::Debug => 7,
    }
}

/// The datagram for one line: `<PRI>pam_otpgate[PID]: (SERVICE) MESSAGE`, with
/// control characters replaced and the length bounded.
pub fn format_line(level: Level, service: &str, message: &str, pid: u32) -> Vec<u8> {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    let mut line = format!(
        "<{}>pam_otpgate[{pid}]: ({}) {}",
        AUTHPRIV | severity(level),
        clean(service),
        clean(message)
    )
    .into_bytes();
    if line.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while cut > 0 && (line.get(cut).copied().unwrap_or(0) & 0xC0) == 0x80 {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

/// Sends one line; failures are ignored.
pub fn send(level: Level, service: &str, message: &str) {
    let line = format_line(level, service, message, std::process::id());
    if let Ok(socket) = UnixDatagram::unbound() {
        let _ = socket.send_to(&line, DEV_LOG);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_authpriv_clean_and_bounded() {
        let line = format_line(Level::Notice, "sshd", "refused\nuser", 42);
        assert_eq!(line, b"<85>pam_otpgate[42]: (sshd) refused user");
        let line = format_line(Level::Error, "sshd", &"\u{e9}".repeat(2000), 1);
        assert!(line.len() <= MAX_LINE);
        assert!(std::str::from_utf8(&line).is_ok());
        assert!(line.starts_with(b"<83>"));
    }
}
