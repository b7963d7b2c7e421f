//! Loopback ports picked by the kernel, and starting a server on one with retries.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::{Mutex, PoisonError};

use crate::error::{HarnessError, Result};

/// How many ports a server start tries before giving up.
pub const START_ATTEMPTS: usize = 5;

/// Ports handed out in this process, so that two servers started by concurrent tests
/// are never given the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1: binds port 0, reads the port the kernel chose, and
/// releases it. Another process may take it before the caller binds it; callers that
/// start servers use [`start_on_free_port`], which retries.
pub fn free_tcp_port() -> Result<u16> {
    pick(|| {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|err| HarnessError::io("binding 127.0.0.1:0 (tcp)", err))?;
        let port = listener
            .local_addr()
            .map_err(|err| HarnessError::io("reading a tcp port", err))?
            .port();
        Ok(port)
    })
}

/// A free UDP port on 127.0.0.1 (for RADIUS servers under test), picked like
/// [`free_tcp_port`].
pub fn free_udp_port() -> Result<u16> {
    pick(|| {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|err| HarnessError::io("binding 127.0.0.1:0 (udp)", err))?;
        let port = socket
            .local_addr()
            .map_err(|err| HarnessError::io("reading a udp port", err))?
            .port();
        Ok(port)
    })
}

fn pick(mut bind: impl FnMut() -> Result<u16>) -> Result<u16> {
    for _ in 0..64 {
        let port = bind()?;
        let mut guard = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(HarnessError::Usage(
        "the kernel kept handing out ports already used by this test process".into(),
    ))
}

/// Calls `start(port)` with a fresh free port until it succeeds, up to
/// [`START_ATTEMPTS`] times. Only a server that exited before it was ready (typically
/// "address already in use") is retried; any other error is returned at once.
pub fn start_on_free_port<T>(mut start: impl FnMut(u16) -> Result<T>) -> Result<T> {
    let mut last = None;
    for _ in 0..START_ATTEMPTS {
        match start(free_tcp_port()?) {
            Ok(server) => return Ok(server),
            Err(err) if err.is_retryable_start() => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| HarnessError::Usage("no start attempt was made".into())))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;

    fn exited() -> HarnessError {
        HarnessError::ServerExited {
            server: "test".into(),
            status: ExitStatus::from_raw(256),
            log: "/dev/null".into(),
            log_tail: String::new(),
        }
    }

    #[test]
    fn ports_are_never_handed_out_twice() {
        let ports: HashSet<u16> = (0..50).map(|_| free_tcp_port().unwrap()).collect();
        assert_eq!(ports.len(), 50);
    }

    #[test]
    fn a_server_that_exits_is_retried_on_another_port() {
        let mut tried = Vec::new();
        let port = start_on_free_port(|port| {
            tried.push(port);
            if tried.len() < 3 {
                Err(exited())
            } else {
                Ok(port)
            }
        })
        .unwrap();
        assert_eq!(tried.len(), 3);
        assert_eq!(
            tried.iter().collect::<HashSet<_>>().len(),
            3,
            "a new port each time"
        );
        assert_eq!(port, tried[2]);

        let mut attempts = 0;
        let err = start_on_free_port::<()>(|_| {
            attempts += 1;
            Err(exited())
        })
        .unwrap_err();
        assert!(matches!(err, HarnessError::ServerExited { .. }));
        assert_eq!(attempts, START_ATTEMPTS);

        let mut attempts = 0;
        let err = start_on_free_port::<()>(|_| {
            attempts += 1;
            Err(HarnessError::Usage("no".into()))
        })
        .unwrap_err();
        assert!(matches!(err, HarnessError::Usage(_)));
        assert_eq!(attempts, 1, "other errors are not retried");
    }
}
