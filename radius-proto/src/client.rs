//! A blocking RADIUS client for the PAM module's server mode.
//!
//! It runs inside sshd, so it starts no thread and no runtime, and nothing it
//! creates outlives the call: each server gets a fresh UDP socket that is
//! closed when the call moves on or returns. Waiting uses the socket's read
//! timeout, recomputed from an [`Instant`] deadline after every datagram, so
//! stray datagrams cannot stretch a wait.
//!
//! Servers are tried in order. Each gets `1 + retries` transmissions of the
//! same bytes (RFC 5080 §2.2.1: a retransmission is identical), each followed
//! by a wait of `timeout`. A datagram counts as the answer only if it comes
//! from the server's address and port and passes [`check_reply`]; anything
//! else is ignored and the wait goes on until its deadline.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::auth::Secret;
use crate::codec::{Code, MAX_PACKET_LEN, Packet};
use crate::exchange::{
    AccessRequestParams, ClientError, Reply, check_reply, encode_access_request,
    encode_status_server,
};

/// A blocking RADIUS client: servers in failover order and one shared secret.
pub struct Client {
    /// Servers in the order they are tried.
    servers: Vec<SocketAddr>,
    /// The shared secret, the same for every server.
    secret: Secret,
    /// How long to wait for a reply after each transmission.
    timeout: Duration,
    /// Retransmissions per server after the first transmission.
    retries: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.servers)
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// One request ready to send to one server, with what is needed to check
/// the reply.
struct Outgoing {
    /// The encoded, signed request; retransmitted unchanged.
    bytes: Vec<u8>,
    /// Its identifier.
    identifier: u8,
    /// Its Request Authenticator.
    authenticator: [u8; 16],
}

impl Client {
    /// A client for `servers` (tried in order) sharing `secret`, waiting
    /// `timeout` after each of the `1 + retries` transmissions per server.
    ///
    /// A zero `timeout` waits for nothing; an empty `servers` makes every call
    /// fail with [`ClientError::NoServers`].
    #[must_use]
    pub fn new(servers: Vec<SocketAddr>, secret: Secret, timeout: Duration, retries: u32) -> Self {
        Self {
            servers,
            secret,
            timeout,
            retries,
        }
    }

    /// Sends an Access-Request and returns the first authentic reply.
    ///
    /// Each server gets its own random identifier and Request Authenticator.
    ///
    /// # Errors
    ///
    /// [`ClientError::NoServerAnswered`] when every server stayed silent (or
    /// sent only invalid datagrams); [`ClientError::NoServers`]; an error
    /// building the request; [`ClientError::UnusableReply`] for an authentic
    /// reply that cannot be used. Never a success on an error.
    pub fn authenticate(&self, params: &AccessRequestParams) -> Result<Reply, ClientError> {
        let packet = self.exchange(
            |identifier, authenticator| {
                encode_access_request(params, identifier, authenticator, &self.secret)
            },
            |code| !code.is_request(),
        )?;
        Reply::from_packet(packet.1).map_err(ClientError::UnusableReply)
    }

    /// Sends Status-Server (RFC 5997) and returns the address of the first
    /// server that answered with an authentic Access-Accept.
    ///
    /// # Errors
    ///
    /// As for [`Client::authenticate`].
    pub fn status(&self) -> Result<SocketAddr, ClientError> {
        let (server, _) = self.exchange(
            |identifier, authenticator| {
                encode_status_server(identifier, authenticator, &self.secret)
            },
            |code| code == Code::AccessAccept,
        )?;
        Ok(server)
    }

    /// Runs one exchange with failover. `build` makes the request for a
    /// given identifier and authenticator; `wanted` says which reply codes
    /// answer it (others are ignored).
    fn exchange(
        &self,
        build: impl Fn(u8, [u8; 16]) -> Result<Vec<u8>, ClientError>,
        wanted: impl Fn(Code) -> bool,
    ) -> Result<(SocketAddr, Packet), ClientError> {
        if self.servers.is_empty() {
            return Err(ClientError::NoServers);
        }
        for &server in &self.servers {
            let mut random = [0u8; 17];
            getrandom::fill(&mut random).map_err(ClientError::Random)?;
            let [identifier, authenticator @ ..] = random;
            let outgoing = Outgoing {
                bytes: build(identifier, authenticator)?,
                identifier,
                authenticator,
            };
            if let Some(reply) = self.ask(server, &outgoing, &wanted) {
                return Ok((server, reply));
            }
        }
        Err(ClientError::NoServerAnswered)
    }

    /// Sends `outgoing` to one server up to `1 + retries` times; the first
    /// authentic reply with a wanted code, or `None`. Socket errors make the
    /// server count as silent, so the caller fails over.
    fn ask(
        &self,
        server: SocketAddr,
        outgoing: &Outgoing,
        wanted: &impl Fn(Code) -> bool,
    ) -> Option<Packet> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        // Dropped, and so closed, when this function returns.
        let socket = UdpSocket::bind(local).ok()?;
        let mut buf = vec![0u8; MAX_PACKET_LEN];
        for _ in 0..=self.retries {
            socket.send_to(&outgoing.bytes, server).ok()?;
            let deadline = Instant::now().checked_add(self.timeout)?;
            if let Some(reply) = self.wait(&socket, server, outgoing, wanted, deadline, &mut buf) {
                return Some(reply);
            }
        }
        None
    }

    /// Reads datagrams until an authentic reply from `server` arrives or the
    /// deadline passes.
    fn wait(
        &self,
        socket: &UdpSocket,
        server: SocketAddr,
        outgoing: &Outgoing,
        wanted: &impl Fn(Code) -> bool,
        deadline: Instant,
        buf: &mut [u8],
    ) -> Option<Packet> {
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return None;
            }
            socket.set_read_timeout(Some(remaining)).ok()?;
            let (len, from) = match socket.recv_from(buf) {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // Timed out (WouldBlock/TimedOut), or an error: this attempt is over.
                Err(_) => return None,
            };
            if from != server {
                continue;
            }
            let Some(datagram) = buf.get(..len) else {
                continue;
            };
            match check_reply(
                datagram,
                outgoing.identifier,
                outgoing.authenticator,
                &self.secret,
            ) {
                Ok(packet) if wanted(packet.code) => return Some(packet),
                Ok(_) | Err(_) => continue,
            }
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
