//! A loopback TCP fault proxy: put it between otpgate and a real server (slapd, Redis,
//! the SMTP sink) to make that server slow or hang, and to count LDAP binds.
//!
//! ```no_run
//! use std::time::Duration;
//! use otpgate_tests::{FaultProxy, LdapOp, Slapd};
//!
//! let slapd = Slapd::start()?;
//! let proxy = FaultProxy::start(([127, 0, 0, 1], slapd.port()).into())?;
//! // … point otpgate at `ldap://{proxy.addr()}` …
//! proxy.hold_next_ldap(LdapOp::Search);
//! // … start a login, which hangs in its user search …
//! proxy.wait_holding(Duration::from_secs(10))?;
//! proxy.release();
//! # Ok::<(), otpgate_tests::HarnessError>(())
//! ```
//!
//! Each accepted connection gets its own upstream connection and two pump threads, one
//! per direction; each pump forwards in order, so a delayed or held unit holds back
//! everything after it in that direction. Client→server bytes are read as a stream of
//! LDAP messages (BER `SEQUENCE`s, reassembled across reads) while they look like LDAP;
//! at the first byte that does not (Redis, SMTP, TLS, junk) that connection falls back
//! to forwarding raw chunks. Waiting is done on a condition variable, so `release` and
//! drop end every wait at once.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

/// The largest LDAP message the proxy reassembles; a longer one ends parsing on that
/// connection (its bytes are still forwarded).
const MAX_LDAP_MESSAGE: usize = 16 << 20;

/// How long connecting to the upstream server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The read buffer of each pump.
const CHUNK: usize = 16 * 1024;

/// An LDAP operation, by the application tag of its `protocolOp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapOp {
    /// BindRequest (`[APPLICATION 0]`, tag 0x60).
    Bind,
    /// SearchRequest (`[APPLICATION 3]`, tag 0x63).
    Search,
    /// UnbindRequest (`[APPLICATION 2]`, primitive, tag 0x42).
    Unbind,
    /// Any other request, by its tag byte (e.g. 0x77 for an ExtendedRequest).
    Other(u8),
}

impl LdapOp {
    /// The operation a `protocolOp` tag byte stands for.
    fn from_tag(tag: u8) -> Self {
        match tag {
            0x60 => Self::Bind,
            0x63 => Self::Search,
            0x42 => Self::Unbind,
            other => Self::Other(other),
        }
    }

    /// Whether `tag` is this operation (`Other(t)` matches exactly `t`).
    fn matches(self, tag: u8) -> bool {
        Self::from_tag(tag) == self
    }
}

/// A TCP proxy on `127.0.0.1:0` that forwards to one upstream server, with switchable
/// delays and holds. Dropping it closes the listener and every connection and joins
/// its threads.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// The state shared with the threads.
    shared: Arc<Shared>,
    /// The accepting thread; joined on drop.
    acceptor: Option<JoinHandle<()>>,
}

/// State shared by the proxy handle and its threads.
#[derive(Debug, Default)]
struct Shared {
    /// Everything that changes; one lock, small critical sections.
    state: Mutex<State>,
    /// Signalled on every change a waiting pump or `wait_holding` may care about.
    changed: Condvar,
    /// The connection threads (each joins its own server→client pump); joined on drop.
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The faults in force and what the proxy has seen.
#[derive(Debug, Default)]
struct State {
    /// Set by drop: every wait ends and every pump stops.
    shutdown: bool,
    /// The delay applied to every unit in both directions.
    delay: Duration,
    /// `stall`: nothing is forwarded on any connection.
    stalled: bool,
    /// Armed one-shot holds, fired by the next client message of that op.
    hold_ops: Vec<LdapOp>,
    /// Armed one-shot delays, fired by the next client message of that op.
    delay_ops: Vec<(LdapOp, Duration)>,
    /// Armed one-shot reply hold: the pattern, and its arming number (so bytes a client
    /// sent before arming do not count).
    reply_pattern: Option<(Vec<u8>, u64)>,
    /// Bumped at each `hold_replies_after`.
    reply_generation: u64,
    /// Connections held in both directions (a fired `hold_next_ldap`).
    held: Vec<u64>,
    /// Connections whose server→client direction is held (a fired reply hold).
    held_replies: Vec<u64>,
    /// How many pumps are waiting now with data in hand because of a stall or hold.
    holding: usize,
    /// Bind DNs, in the order the clients sent them.
    binds: Vec<String>,
    /// SearchRequests the clients sent.
    searches: usize,
    /// Connections accepted since start or `clear_counts`.
    accepted: usize,
    /// Next connection id.
    next_id: u64,
    /// Both sockets of every live connection, shut down on drop.
    sockets: HashMap<u64, (TcpStream, TcpStream)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits on the condition variable (at most until `deadline`).
    fn wait<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        match deadline {
            None => self
                .changed
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                self.changed
                    .wait_timeout(guard, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        }
    }

    /// Changes the state and wakes every waiter.
    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards every accepted connection to `upstream`.
    /// A client whose upstream connection fails is disconnected.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|err| HarnessError::io("binding the fault proxy", err))?;
        let addr = listener
            .local_addr()
            .map_err(|err| HarnessError::io("reading the fault proxy's address", err))?;
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("fault-proxy-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &shared, upstream))
                .map_err(|err| HarnessError::io("starting the fault proxy thread", err))?
        };
        Ok(Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ldap://127.0.0.1:PORT`, for LDAP clients and otpgate's `[directory] urls`.
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}", self.addr)
    }

    /// From now on every unit (an LDAP message, or a chunk as read) in both directions
    /// waits `delay` after it was read before it is forwarded; `Duration::ZERO`: none.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.update(|state| state.delay = delay);
    }

    /// Stops forwarding in both directions on every connection, existing and new, until
    /// [`FaultProxy::release`]. Connections are still accepted.
    pub fn stall(&self) {
        self.shared.update(|state| state.stalled = true);
    }

    /// Undoes [`FaultProxy::stall`] and every hold, fired or still armed; held data is
    /// then forwarded in order. The delay of [`FaultProxy::set_delay`] stays.
    pub fn release(&self) {
        self.shared.update(|state| {
            state.stalled = false;
            state.hold_ops.clear();
            state.reply_pattern = None;
            state.held.clear();
            state.held_replies.clear();
        });
    }

    /// One-shot: the next LDAP message with `op` a client sends (on any connection) is
    /// held, with everything after it on that connection in both directions, until
    /// [`FaultProxy::release`]. Calling it twice arms two holds.
    pub fn hold_next_ldap(&self, op: LdapOp) {
        self.shared.update(|state| state.hold_ops.push(op));
    }

    /// One-shot: the next LDAP message with `op` a client sends waits `delay` (besides
    /// any [`FaultProxy::set_delay`]) before it is forwarded.
    pub fn delay_next_ldap(&self, op: LdapOp, delay: Duration) {
        self.shared
            .update(|state| state.delay_ops.push((op, delay)));
    }

    /// One-shot: once a client has sent `pattern` (e.g. `b"\r\n.\r\n"`, the end of an
    /// SMTP DATA block) on some connection, that data is forwarded but the server's
    /// replies on that connection are held until [`FaultProxy::release`]. Only bytes
    /// forwarded after this call count. An empty pattern is ignored.
    pub fn hold_replies_after(&self, pattern: &[u8]) {
        if pattern.is_empty() {
            return;
        }
        self.shared.update(|state| {
            state.reply_generation += 1;
            state.reply_pattern = Some((pattern.to_vec(), state.reply_generation));
        });
    }

    /// Whether a stall or fired hold is keeping data back now: some pump has read data
    /// it may not forward. (A stall with no traffic holds nothing yet.)
    pub fn holding(&self) -> bool {
        self.shared.lock().holding > 0
    }

    /// Waits until [`FaultProxy::holding`] is true; an error if `within` passes first.
    pub fn wait_holding(&self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        let mut state = self.shared.lock();
        while state.holding == 0 {
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "the fault proxy on {} held no data within {within:?}",
                    self.addr
                )));
            }
            state = self.shared.wait(state, Some(deadline));
        }
        Ok(())
    }

    /// The DN (`name`) of every LDAP BindRequest clients sent through the proxy, in
    /// order, since start or [`FaultProxy::clear_counts`]; counted when the proxy reads
    /// it, also if it is then held.
    pub fn ldap_binds(&self) -> Vec<String> {
        self.shared.lock().binds.clone()
    }

    /// How many LDAP SearchRequests clients sent through the proxy since start or
    /// [`FaultProxy::clear_counts`]; counted when the proxy reads them, like binds.
    pub fn ldap_searches(&self) -> usize {
        self.shared.lock().searches
    }

    /// Forgets the binds, searches and connections counted so far.
    pub fn clear_counts(&self) {
        self.shared.update(|state| {
            state.binds.clear();
            state.searches = 0;
            state.accepted = 0;
        });
    }

    /// The connections accepted since start or [`FaultProxy::clear_counts`].
    pub fn connections(&self) -> usize {
        self.shared.lock().accepted
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.update(|state| state.shutdown = true);
        // Wake the blocking accept; it sees `shutdown` and returns.
        if let Some(acceptor) = self.acceptor.take() {
            if TcpStream::connect(self.addr).is_ok() {
                let _ = acceptor.join();
            }
        }
        for (client, server) in self.shared.lock().sockets.values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// Accepts until shutdown; each connection runs on its own thread.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, upstream: SocketAddr) {
    for client in listener.incoming() {
        let mut state = shared.lock();
        if state.shutdown {
            return;
        }
        let Ok(client) = client else { continue };
        state.accepted += 1;
        state.next_id += 1;
        let id = state.next_id;
        drop(state);
        let conn_shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("fault-conn-{id}"))
            .spawn(move || connection(&conn_shared, id, client, upstream));
        if let Ok(handle) = spawned {
            let mut threads = shared
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            threads.retain(|thread| !thread.is_finished());
            threads.push(handle);
        }
    }
}

/// One proxied connection: connects upstream, pumps both ways, forgets its sockets.
fn connection(shared: &Arc<Shared>, id: u64, client: TcpStream, upstream: SocketAddr) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, CONNECT_TIMEOUT) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clones = || Some((client.try_clone().ok()?, server.try_clone().ok()?));
    let (Some(registered), Some((client_read, server_write)), Some((client_write, server_read))) =
        (clones(), clones(), clones())
    else {
        return;
    };
    {
        let mut state = shared.lock();
        if state.shutdown {
            return;
        }
        state.sockets.insert(id, registered);
    }
    let replies = Pump {
        shared: Arc::clone(shared),
        id,
        to_server: false,
        src: server_read,
        dst: client_write,
        tail: (0, Vec::new()),
    };
    let replies = std::thread::Builder::new()
        .name(format!("fault-conn-{id}-replies"))
        .spawn(move || replies.run_raw());
    let requests = Pump {
        shared: Arc::clone(shared),
        id,
        to_server: true,
        src: client_read,
        dst: server_write,
        tail: (0, Vec::new()),
    };
    requests.run_client();
    if let Ok(replies) = replies {
        let _ = replies.join();
    } else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
    }
    shared.lock().sockets.remove(&id);
}

/// Why a pump stopped.
enum Stop {
    /// Its source reached end of file: propagate the half-close.
    Eof,
    /// A socket error or the proxy's shutdown: end the whole connection.
    Broken,
}

/// One direction of one connection.
struct Pump {
    /// The proxy's state.
    shared: Arc<Shared>,
    /// The connection.
    id: u64,
    /// Client→server (true) or server→client.
    to_server: bool,
    /// Where bytes come from.
    src: TcpStream,
    /// Where they go.
    dst: TcpStream,
    /// Client→server: the reply-hold arming this tail belongs to, and the last bytes
    /// forwarded since then (a pattern may span two units).
    tail: (u64, Vec<u8>),
}

impl Pump {
    /// Forwards chunk by chunk until EOF or an error.
    fn run_raw(mut self) {
        let stop = self.raw_loop(&mut [0; CHUNK]);
        self.finish(stop);
    }

    fn raw_loop(&mut self, buf: &mut [u8]) -> Stop {
        loop {
            let n = match self.read(buf) {
                Ok(0) => return Stop::Eof,
                Ok(n) => n,
                Err(stop) => return stop,
            };
            let read_at = Instant::now();
            if let Err(stop) = self.forward(buf.get(..n).unwrap_or_default(), read_at, None) {
                return stop;
            }
        }
    }

    /// Client→server: LDAP message by message while the bytes parse as LDAP, then raw.
    fn run_client(mut self) {
        let mut chunk = [0; CHUNK];
        let mut pending: Vec<u8> = Vec::new();
        let stop = loop {
            let n = match self.read(&mut chunk) {
                Ok(0) => break Stop::Eof,
                Ok(n) => n,
                Err(stop) => break stop,
            };
            let read_at = Instant::now();
            pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
            let mut raw = false;
            let mut result = Ok(());
            while result.is_ok() {
                match frame(&pending) {
                    Frame::Partial => break,
                    Frame::Junk => {
                        raw = true;
                        result = self.forward(&std::mem::take(&mut pending), read_at, None);
                        break;
                    }
                    Frame::Complete(len) => {
                        let message: Vec<u8> = pending.drain(..len).collect();
                        let delay = self.inspect(&message);
                        result = self.forward(&message, read_at, delay);
                    }
                }
            }
            if let Err(stop) = result {
                break stop;
            }
            if raw {
                break self.raw_loop(&mut chunk);
            }
        };
        // A truncated last message still goes through before the half-close.
        let stop = match stop {
            Stop::Eof if !pending.is_empty() => self
                .forward(&pending, Instant::now(), None)
                .map_or_else(|stop| stop, |()| Stop::Eof),
            stop => stop,
        };
        self.finish(stop);
    }

    /// Records a bind or a search and fires the armed one-shots of this message's op;
    /// returns the one-shot delay it fired, if any.
    fn inspect(&self, message: &[u8]) -> Option<Duration> {
        let (tag, bind_dn) = ldap_request(message)?;
        let mut state = self.shared.lock();
        if let Some(dn) = bind_dn {
            state.binds.push(dn);
        }
        if LdapOp::Search.matches(tag) {
            state.searches += 1;
        }
        if let Some(index) = state.hold_ops.iter().position(|op| op.matches(tag)) {
            state.hold_ops.remove(index);
            state.held.push(self.id);
        }
        state
            .delay_ops
            .iter()
            .position(|(op, _)| op.matches(tag))
            .map(|index| state.delay_ops.remove(index).1)
    }

    fn read(&mut self, buf: &mut [u8]) -> std::result::Result<usize, Stop> {
        loop {
            match self.src.read(buf) {
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Stop::Broken),
            }
        }
    }

    /// Waits out the delays, then any stall or hold, then writes `bytes`.
    fn forward(
        &mut self,
        bytes: &[u8],
        read_at: Instant,
        extra: Option<Duration>,
    ) -> std::result::Result<(), Stop> {
        let mut state = self.shared.lock();
        let deadline = (read_at + state.delay).max(read_at + extra.unwrap_or_default());
        while !state.shutdown && Instant::now() < deadline {
            state = self.shared.wait(state, Some(deadline));
        }
        let mut counted = false;
        while !state.shutdown && self.held(&state) {
            if !counted {
                counted = true;
                state.holding += 1;
                self.shared.changed.notify_all();
            }
            state = self.shared.wait(state, None);
        }
        if counted {
            state.holding -= 1;
        }
        if state.shutdown {
            return Err(Stop::Broken);
        }
        if self.to_server {
            watch_pattern(&mut state, &mut self.tail, self.id, bytes);
        }
        drop(state);
        self.dst.write_all(bytes).map_err(|_| Stop::Broken)
    }

    /// Whether this direction of this connection may not forward now.
    fn held(&self, state: &State) -> bool {
        state.stalled
            || state.held.contains(&self.id)
            || (!self.to_server && state.held_replies.contains(&self.id))
    }

    /// Propagates a half-close, or ends the connection.
    fn finish(self, stop: Stop) {
        match stop {
            Stop::Eof => {
                let _ = self.dst.shutdown(Shutdown::Write);
            }
            Stop::Broken => {
                let _ = self.src.shutdown(Shutdown::Both);
                let _ = self.dst.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Fires the reply hold if the client bytes forwarded since it was armed, ending with
/// `bytes`, contain its pattern.
fn watch_pattern(state: &mut State, tail: &mut (u64, Vec<u8>), id: u64, bytes: &[u8]) {
    let Some((pattern, generation)) = &state.reply_pattern else {
        return;
    };
    if tail.0 != *generation {
        *tail = (*generation, Vec::new());
    }
    tail.1.extend_from_slice(bytes);
    let found = tail
        .1
        .windows(pattern.len())
        .any(|window| window == pattern);
    let keep_from = tail.1.len().saturating_sub(pattern.len().saturating_sub(1));
    tail.1.drain(..keep_from);
    if found {
        state.reply_pattern = None;
        state.held_replies.push(id);
    }
}

/// How far the head of a client buffer is a complete LDAP message.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// The first `n` bytes are one BER `SEQUENCE`.
    Complete(usize),
    /// More bytes are needed.
    Partial,
    /// Not LDAP (another tag, an indefinite or oversized length): stop parsing.
    Junk,
}

/// Frames the LDAPMessage at the head of `buf`.
fn frame(buf: &[u8]) -> Frame {
    match buf.first() {
        None => Frame::Partial,
        Some(0x30) => match length(buf.get(1..).unwrap_or_default()) {
            Length::Partial => Frame::Partial,
            Length::Bad => Frame::Junk,
            Length::Ok { header, content } => {
                let total = 1 + header + content;
                if total > MAX_LDAP_MESSAGE {
                    Frame::Junk
                } else if buf.len() >= total {
                    Frame::Complete(total)
                } else {
                    Frame::Partial
                }
            }
        },
        Some(_) => Frame::Junk,
    }
}

/// A BER length read from the bytes after a tag.
#[derive(Debug, PartialEq, Eq)]
enum Length {
    /// `header` length bytes announcing `content` bytes.
    Ok { header: usize, content: usize },
    /// The length is cut off.
    Partial,
    /// Indefinite (forbidden in LDAP), longer than 4 bytes, or above the bound.
    Bad,
}

fn length(buf: &[u8]) -> Length {
    let Some(&first) = buf.first() else {
        return Length::Partial;
    };
    if first < 0x80 {
        return Length::Ok {
            header: 1,
            content: usize::from(first),
        };
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > 4 {
        return Length::Bad;
    }
    let Some(bytes) = buf.get(1..=count) else {
        return Length::Partial;
    };
    let content = bytes
        .iter()
        .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
    if content > MAX_LDAP_MESSAGE {
        return Length::Bad;
    }
    Length::Ok {
        header: 1 + count,
        content,
    }
}

/// Splits a complete BER element off `buf`: its tag, its content and the rest.
fn element(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, after) = buf.split_first()?;
    let Length::Ok { header, content } = length(after) else {
        return None;
    };
    let body = after.get(header..)?;
    let value = body.get(..content)?;
    Some((tag, value, body.get(content..)?))
}

/// The `protocolOp` tag of an LDAPMessage and, for a BindRequest, its DN.
fn ldap_request(message: &[u8]) -> Option<(u8, Option<String>)> {
    let (0x30, body, _) = element(message)? else {
        return None;
    };
    let (0x02, _message_id, rest) = element(body)? else {
        return None;
    };
    let (tag, op, _) = element(rest)?;
    if tag != 0x60 {
        return Some((tag, None));
    }
    // BindRequest ::= [APPLICATION 0] SEQUENCE { version INTEGER, name LDAPDN, … }
    let dn = element(op)
        .filter(|(tag, _, _)| *tag == 0x02)
        .and_then(|(_, _, rest)| element(rest))
        .filter(|(tag, _, _)| *tag == 0x04)
        .map(|(_, name, _)| String::from_utf8_lossy(name).into_owned());
    Some((tag, dn))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BindRequest: `SEQUENCE { 1, [APPLICATION 0] { 3, dn, [0] password } }`.
    fn bind(dn: &str) -> Vec<u8> {
        let mut op = vec![0x02, 0x01, 0x03, 0x04, u8::try_from(dn.len()).unwrap()];
        op.extend_from_slice(dn.as_bytes());
        op.extend_from_slice(&[0x80, 0x02, b'p', b'w']);
        let mut body = vec![0x02, 0x01, 0x01, 0x60, u8::try_from(op.len()).unwrap()];
        body.extend_from_slice(&op);
        let mut message = vec![0x30, u8::try_from(body.len()).unwrap()];
        message.extend_from_slice(&body);
        message
    }

    #[test]
    fn a_bind_request_is_framed_and_its_dn_read() {
        let message = bind("cn=x,dc=example,dc=org");
        assert_eq!(frame(&message), Frame::Complete(message.len()));
        for cut in 0..message.len() {
            assert_eq!(frame(&message[..cut]), Frame::Partial, "cut at {cut}");
        }
        let mut two = message.clone();
        two.extend_from_slice(&message);
        assert_eq!(frame(&two), Frame::Complete(message.len()));
        assert_eq!(
            ldap_request(&message),
            Some((0x60, Some("cn=x,dc=example,dc=org".to_owned())))
        );
    }

    #[test]
    fn long_form_lengths_are_read_and_bounded() {
        // An unbind (0x42 00) in a SEQUENCE with a two-byte long-form length.
        let message = [0x30, 0x82, 0x00, 0x05, 0x02, 0x01, 0x07, 0x42, 0x00];
        assert_eq!(frame(&message), Frame::Complete(message.len()));
        assert_eq!(ldap_request(&message), Some((0x42, None)));
        assert_eq!(frame(&[0x30, 0x84, 0x01]), Frame::Partial);
        // 16 MiB + 1 and a five-byte length: refused, not awaited.
        assert_eq!(frame(&[0x30, 0x84, 0x01, 0x00, 0x00, 0x01]), Frame::Junk);
        assert_eq!(frame(&[0x30, 0x85, 0, 0, 0, 0, 1]), Frame::Junk);
        // Indefinite length is not LDAP.
        assert_eq!(frame(&[0x30, 0x80, 0x00, 0x00]), Frame::Junk);
    }

    #[test]
    fn junk_is_junk_and_never_panics() {
        assert_eq!(frame(b"*1\r\n$4\r\nPING\r\n"), Frame::Junk);
        assert_eq!(frame(b"EHLO x\r\n"), Frame::Junk);
        assert_eq!(frame(&[0x16, 0x03, 0x01]), Frame::Junk, "a TLS record");
        assert_eq!(frame(&[]), Frame::Partial);
        // Framed but malformed inside: forwarded as an unknown message.
        assert_eq!(ldap_request(&[0x30, 0x03, 0x04, 0x01, 0x00]), None);
        assert_eq!(
            ldap_request(&[0x30, 0x05, 0x02, 0x01, 0x01, 0x60, 0x09]),
            None
        );
        // Every prefix and every byte value at every position of a bind: no panic.
        let message = bind("cn=y");
        for cut in 0..=message.len() {
            let _ = ldap_request(&message[..cut]);
            for byte in [0x00, 0x7f, 0x80, 0x84, 0xff] {
                let mut bent = message.clone();
                if let Some(slot) = bent.get_mut(cut) {
                    *slot = byte;
                }
                let _ = frame(&bent);
                let _ = ldap_request(&bent);
            }
        }
    }

    #[test]
    fn a_pattern_is_found_across_units_only_after_arming() {
        let mut state = State::default();
        let mut tail = (0, Vec::new());
        watch_pattern(&mut state, &mut tail, 1, b"before\r\n.\r\n");
        assert!(state.held_replies.is_empty(), "not armed");
        state.reply_pattern = Some((b"\r\n.\r\n".to_vec(), 1));
        watch_pattern(&mut state, &mut tail, 1, b"body\r\n.");
        assert!(state.held_replies.is_empty());
        watch_pattern(&mut state, &mut tail, 1, b"\r\n");
        assert_eq!(state.held_replies, [1]);
        assert!(state.reply_pattern.is_none(), "one-shot");
    }

    #[test]
    fn ops_match_their_tags() {
        assert!(LdapOp::Bind.matches(0x60));
        assert!(LdapOp::Search.matches(0x63));
        assert!(LdapOp::Unbind.matches(0x42));
        assert!(LdapOp::Other(0x77).matches(0x77));
        assert!(!LdapOp::Other(0x60).matches(0x60), "a bind is Bind");
        assert!(!LdapOp::Search.matches(0x60));
    }
}
