//! Tests of the blocking [`Client`] against fake servers on loopback sockets.

use std::net::{SocketAddr, UdpSocket};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use zeroize::Zeroizing;

use super::*;
use crate::attr::{Attribute, STATE};
use crate::request::{VerifiedRequest, encode_reply};

const SECRET: &[u8] = b"client-test-secret";
/// How long a fake server waits for a datagram before giving up.
const SERVER_PATIENCE: Duration = Duration::from_secs(10);

fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

fn bind() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(SERVER_PATIENCE)).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 4096];
    let (len, from) = socket.recv_from(&mut buf).unwrap();
    (buf[..len].to_vec(), from)
}

/// Every datagram already queued on a socket, without waiting.
fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
    socket.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok((len, _)) = socket.recv_from(&mut buf) {
        out.push(buf[..len].to_vec());
    }
    out
}

fn params() -> AccessRequestParams {
    let mut p = AccessRequestParams::new("dave");
    p.password = Some(Zeroizing::new(b"pw-123456".to_vec()));
    p
}

fn client(servers: Vec<SocketAddr>, timeout_ms: u64, retries: u32) -> Client {
    Client::new(
        servers,
        secret(),
        Duration::from_millis(timeout_ms),
        retries,
    )
}

/// A fake server that ignores the first `ignore` datagrams, then answers the
/// next with `code`; returns every datagram it received.
fn answering_server(socket: UdpSocket, ignore: usize, code: Code) -> JoinHandle<Vec<Vec<u8>>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        loop {
            let (datagram, from) = receive(&socket);
            seen.push(datagram.clone());
            if seen.len() > ignore {
                let request = VerifiedRequest::verify(&datagram, &secret(), true).unwrap();
                let reply = encode_reply(&request, code, &[], &secret()).unwrap();
                socket.send_to(&reply, from).unwrap();
                return seen;
            }
        }
    })
}

#[test]
fn fails_over_to_the_second_server_after_retransmitting_to_the_first() {
    let (silent, silent_addr) = bind();
    let (second, second_addr) = bind();
    let server = answering_server(second, 0, Code::AccessAccept);

    let reply = client(vec![silent_addr, second_addr], 150, 1)
        .authenticate(&params())
        .unwrap();
    assert!(matches!(reply, Reply::Accept { .. }));

    let to_silent = drain(&silent);
    assert_eq!(
        to_silent.len(),
        2,
        "1 + retries transmissions to the silent server"
    );
    assert_eq!(
        to_silent[0], to_silent[1],
        "a retransmission repeats the same bytes"
    );
    let to_second = server.join().unwrap();
    assert_eq!(to_second.len(), 1);
    // The second server got a request of its own (new identifier and authenticator).
    assert_ne!(to_second[0][1..20], to_silent[0][1..20]);
}

#[test]
fn retransmits_identical_bytes_until_answered() {
    let (socket, addr) = bind();
    let server = answering_server(socket, 2, Code::AccessReject);
    let reply = client(vec![addr], 100, 3).authenticate(&params()).unwrap();
    assert!(matches!(
        reply,
        Reply::Reject {
            reply_message: None,
            ..
        }
    ));
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|d| d == &seen[0]));
}

#[test]
fn ignores_forged_and_misaddressed_replies() {
    let (socket, addr) = bind();
    let server = thread::spawn(move || {
        let (datagram, from) = receive(&socket);
        let request = VerifiedRequest::verify(&datagram, &secret(), true).unwrap();
        let accept = |s: &Secret| encode_reply(&request, Code::AccessAccept, &[], s).unwrap();

        // 1. An Accept signed with the wrong secret.
        let wrong = Secret::new(b"guessed".to_vec()).unwrap();
        socket.send_to(&accept(&wrong), from).unwrap();
        // 2. A correctly signed Accept from another port.
        let (elsewhere, _) = bind();
        elsewhere.send_to(&accept(&secret()), from).unwrap();
        // 3. A correctly signed Accept with a flipped attribute byte.
        let mut tampered = accept(&secret());
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        socket.send_to(&tampered, from).unwrap();
        // 4. Garbage.
        socket.send_to(b"not radius", from).unwrap();
        // 5. The genuine answer: a challenge.
        let mut attrs = vec![Attribute::new(STATE, b"s".to_vec()).unwrap()];
        attrs.extend(Attribute::reply_messages("Code: "));
        let challenge = encode_reply(&request, Code::AccessChallenge, &attrs, &secret()).unwrap();
        socket.send_to(&challenge, from).unwrap();
    });

    let reply = client(vec![addr], 2000, 0).authenticate(&params()).unwrap();
    assert_eq!(
        reply,
        Reply::Challenge {
            state: b"s".to_vec(),
            reply_message: Some("Code: ".into())
        }
    );
    server.join().unwrap();
}

#[test]
fn no_server_answered_is_an_error() {
    let (_a, a) = bind();
    let (_b, b) = bind();
    let err = client(vec![a, b], 30, 1)
        .authenticate(&params())
        .unwrap_err();
    assert!(matches!(err, ClientError::NoServerAnswered), "{err:?}");
}

#[test]
fn no_servers_is_an_error() {
    let err = client(vec![], 30, 1).authenticate(&params()).unwrap_err();
    assert!(matches!(err, ClientError::NoServers));
}

#[test]
fn status_server_reports_the_answering_server() {
    let (silent, silent_addr) = bind();
    let (socket, addr) = bind();
    let server = answering_server(socket, 0, Code::AccessAccept);
    assert_eq!(
        client(vec![silent_addr, addr], 100, 0).status().unwrap(),
        addr
    );
    let seen = server.join().unwrap();
    assert_eq!(seen[0][0], 12, "Status-Server code");
    assert_eq!(drain(&silent).len(), 1);
}

#[test]
fn debug_does_not_show_the_secret() {
    let c = client(vec![], 1, 0);
    let debug = format!("{c:?}");
    assert!(debug.contains("Secret(..)") && !debug.contains("client-test-secret"));
}
