//! The UDP server: already-bound sockets in, answers out, until the shutdown token.
//!
//! One receive loop per socket does only cheap work: find the client by source
//! address, verify the datagram with its secret ([`VerifiedRequest::verify`]), consult
//! the duplicate cache, take a permit. The evaluation runs in a task of its own,
//! holding the permit; there are never more than `max_in_flight` of them (a full
//! server drops and counts, it does not queue without bound). An evaluation is never
//! cut short (the login flow must not stop between consuming a code and auditing it);
//! every backend call has its own timeout, and a reply later than `request_timeout` is
//! still sent, cached and counted as late.
//!
//! ```text
//!  datagram ─► client by source (longest prefix) ─► verify (secret, MA policy)
//!     │ unknown: drop, log rate-limited          │ bad: drop silently, count by kind
//!     ▼                                          ▼
//!  duplicate cache ── answered: resend cached bytes; in progress: drop
//!     │ new
//!     ▼
//!  permit (max_in_flight) ── none free: drop, count
//!     ▼
//!  task: handler::handle / health (Status-Server), run to completion
//!     ├─ Accept / Challenge: encode, send, cache
//!     ├─ Reject: encode, release the permit, hand the bytes to the delay queue,
//!     │          which sends them `reject_delay` after the request arrived
//!     └─ Drop (backend down): nothing is sent; the cache forgets the
//!                request so a retransmission is evaluated afresh
//! ```
//!
//! The reject delay holds no worker and no permit: a single queue task per server
//! holds the encoded bytes and sends each at its time (the delay is the same for
//! every reject, so arrival order is due order).
//!
//! Shutdown: the loops stop receiving at once; requests in progress and queued
//! rejects are finished within [`ServerOptions::drain_timeout`], then the rest is
//! abandoned (the NAS retransmits to another server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use otpgate_config::{RadiusConfig, RadiusMode};
use otpgate_core::Core;
use otpgate_core::audit::Method;
use otpgate_radius_proto::attr::{
    self, Attribute, CLASS, FILTER_ID, SESSION_TIMEOUT, STATE, TUNNEL_MEDIUM_IEEE_802,
    TUNNEL_TYPE_VLAN,
};
use otpgate_radius_proto::codec::MAX_PACKET_LEN;
use otpgate_radius_proto::{Code, RequestError, VerifiedRequest, encode_reply};
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

use crate::clients::{Client, ClientTable};
use crate::dedup::{self, Begin, DedupCache, DedupKey, Pending};
use crate::handler::{self, Decision, REJECT_MESSAGE, ReplyAttribute};
use crate::metrics as m;
use crate::warnings::{MISSING_MESSAGE_AUTHENTICATOR_EVERY, RateLimited};

/// How often, at most, packets from unknown sources are logged (each is counted).
const UNKNOWN_LOG_EVERY: Duration = Duration::from_secs(10);

/// Rejects waiting for their delay, at most; beyond this a reject is dropped instead
/// (fail closed) and counted. At 1 s of delay this is 65k rejects per second.
const DELAY_QUEUE_CAPACITY: usize = 1 << 16;

/// Settings of the server loop that are not in the configuration file.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How long an answered request is remembered for retransmissions.
    pub dedup_ttl: Duration,
    /// How many requests the duplicate cache holds at most.
    pub dedup_capacity: usize,
    /// How long shutdown waits for requests in progress and queued rejects.
    pub drain_timeout: Duration,
}

impl ServerOptions {
    /// The defaults for a configuration: 30 s of duplicate detection, and a drain
    /// long enough for the slowest request and its reject delay.
    pub fn for_config(config: &RadiusConfig) -> Self {
        Self {
            dedup_ttl: dedup::DEFAULT_TTL,
            dedup_capacity: dedup::DEFAULT_CAPACITY,
            drain_timeout: config.request_timeout + config.reject_delay + Duration::from_secs(1),
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No socket was given: bind at least one `[radius] listen` address.
    #[error("no RADIUS socket to serve")]
    NoSockets,
    /// A group's reply attribute cannot be encoded (e.g. a Filter-Id over 253 bytes or
    /// an empty VLAN). Fix `[[radius.groups]]`.
    #[error("radius.groups: {0}")]
    BadGroupAttribute(String),
}

/// What every task shares.
struct Shared {
    core: Arc<Core>,
    config: Arc<RadiusConfig>,
    dedup: Arc<DedupCache>,
    /// `max_in_flight` permits; a request task holds one while it evaluates.
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    /// The reject-delay queue.
    delayed: mpsc::Sender<DelayedReply>,
}

/// A reject waiting for its time: only bytes, an address and the cache entry.
struct DelayedReply {
    due: Instant,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    bytes: Arc<[u8]>,
    pending: Pending,
}

/// Serves RADIUS on `sockets` until `shutdown` is cancelled, then drains.
///
/// `clients` is the client table; send a new one to reload (SIGHUP). Settings other
/// than the clients come from `config` and are fixed for the server's life.
///
/// # Errors
///
/// [`ServerError::NoSockets`] for an empty `sockets`, or
/// [`ServerError::BadGroupAttribute`] when a group's attributes cannot be encoded.
pub async fn run(
    sockets: Vec<UdpSocket>,
    core: Arc<Core>,
    clients: watch::Receiver<Arc<ClientTable>>,
    config: Arc<RadiusConfig>,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    if sockets.is_empty() {
        return Err(ServerError::NoSockets);
    }
    check_groups(&config)?;
    m::describe();
    let (delayed, delayed_rx) = mpsc::channel(DELAY_QUEUE_CAPACITY);
    let delay_task = tokio::spawn(delay_queue(delayed_rx));
    let shared = Arc::new(Shared {
        core,
        dedup: DedupCache::new(options.dedup_ttl, options.dedup_capacity),
        permits: Arc::new(Semaphore::new(config.max_in_flight)),
        config,
        tracker: TaskTracker::new(),
        delayed,
    });
    let mut loops = tokio::task::JoinSet::new();
    for socket in sockets {
        loops.spawn(receive_loop(
            Arc::new(socket),
            Arc::clone(&shared),
            clients.clone(),
            shutdown.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}

    // Drain: finish what is in progress, then the queued rejects, within the bound.
    let deadline = Instant::now() + options.drain_timeout;
    shared.tracker.close();
    let in_flight = shared.permits.available_permits();
    tracing::info!(
        in_progress = shared.config.max_in_flight.saturating_sub(in_flight),
        "radius: stopped receiving; finishing requests in progress"
    );
    if tokio::time::timeout_at(deadline, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("radius: requests still in progress at the drain deadline were abandoned");
    }
    drop(shared);
    let abort = delay_task.abort_handle();
    if tokio::time::timeout_at(deadline, delay_task).await.is_err() {
        abort.abort();
        tracing::warn!("radius: delayed rejects still queued at the drain deadline were dropped");
    }
    tracing::info!("radius: stopped");
    Ok(())
}

/// Refuses group attributes that cannot be encoded, at start rather than per accept.
fn check_groups(config: &RadiusConfig) -> Result<(), ServerError> {
    for g in &config.groups {
        let attrs: Vec<ReplyAttribute> = [
            g.filter_id.clone().map(ReplyAttribute::FilterId),
            g.class.clone().map(ReplyAttribute::Class),
            g.vlan.clone().map(ReplyAttribute::Vlan),
            g.session_timeout.map(ReplyAttribute::SessionTimeout),
        ]
        .into_iter()
        .flatten()
        .collect();
        encode_attributes(&attrs)
            .map_err(|e| ServerError::BadGroupAttribute(format!("group `{}`: {e}", g.group)))?;
    }
    Ok(())
}

/// Rate-limits the log line about packets from unknown sources.
struct UnknownSources {
    next_log: Instant,
    suppressed: u64,
}

impl UnknownSources {
    fn note(&mut self, from: SocketAddr, now: Instant) {
        counter!(m::DROPPED, "reason" => "unknown_client").increment(1);
        if now < self.next_log {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            source = %from,
            suppressed = self.suppressed,
            "radius: dropped a packet from an address that matches no client \
             (logged at most every 10 s; `suppressed` counts those not logged since)"
        );
        self.next_log = now + UNKNOWN_LOG_EVERY;
        self.suppressed = 0;
    }
}

/// A client's requests are dropped because they carry no Message-Authenticator while
/// its entry requires one (the default). Many clients send none (Debian 12's
/// pam_radius_auth among them): say which client and what to set.
fn warn_missing_message_authenticator(client: &str, from: SocketAddr, suppressed: u64) {
    tracing::warn!(
        client,
        source = %from,
        suppressed,
        "radius: dropped a request from client `{client}` without Message-Authenticator, \
         which its entry requires; this client does not send one. To accept its requests, \
         set `require_message_authenticator = false` in its [[radius.clients]] entry: its \
         requests are then protected only by the shared secret, and someone on the path \
         can forge replies to it (BlastRADIUS, CVE-2024-3596), so do this only for a \
         client on a trusted network (loopback, a management VLAN). Logged at most once a \
         minute per client; `suppressed` counts the drops since the last warning"
    );
}

async fn receive_loop(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    clients: watch::Receiver<Arc<ClientTable>>,
    shutdown: CancellationToken,
) {
    // One byte more than the largest packet, so an oversized datagram is seen as such.
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    let mut unknown = UnknownSources {
        next_log: Instant::now(),
        suppressed: 0,
    };
    let mut missing_ma = RateLimited::new(MISSING_MESSAGE_AUTHENTICATOR_EVERY);
    loop {
        let (len, from) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "radius: receive failed");
                    continue;
                }
            },
        };
        let datagram = buf.get(..len).unwrap_or_default();
        let table = Arc::clone(&clients.borrow());
        let Some(client) = table.lookup(from.ip()) else {
            unknown.note(from, Instant::now());
            continue;
        };
        let request = match VerifiedRequest::verify_with(datagram, &client.secret, client.policy())
        {
            Ok(r) => r,
            Err(RequestError::MessageAuthenticatorMissing) => {
                counter!(m::DROPPED, "reason" => "message_authenticator_missing").increment(1);
                if let Some(suppressed) =
                    missing_ma.note(&client.config.name, Instant::now().into_std())
                {
                    warn_missing_message_authenticator(&client.config.name, from, suppressed);
                }
                continue;
            }
            Err(e) => {
                counter!(m::DROPPED, "reason" => e.kind()).increment(1);
                tracing::debug!(client = %client.config.name, source = %from, reason = e.kind(), "radius: dropped an invalid packet");
                continue;
            }
        };
        let received = Instant::now();
        let key = DedupKey {
            source: from,
            identifier: request.identifier(),
            authenticator: *request.authenticator(),
        };
        let pending = match shared.dedup.begin(key, received.into_std()) {
            Begin::Fresh(p) => {
                if p.made_room() {
                    counter!(m::DEDUP_EVICTED).increment(1);
                }
                p
            }
            Begin::Cached(bytes) => {
                counter!(m::DUPLICATES, "outcome" => "resent").increment(1);
                send(&socket, &bytes, from).await;
                continue;
            }
            Begin::InProgress => {
                counter!(m::DUPLICATES, "outcome" => "in_progress").increment(1);
                counter!(m::DROPPED, "reason" => "duplicate_in_progress").increment(1);
                continue;
            }
            Begin::Full => {
                counter!(m::DROPPED, "reason" => "duplicate_cache_full").increment(1);
                tracing::warn!(client = %client.config.name, "radius: duplicate cache full; request dropped");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() else {
            counter!(m::DROPPED, "reason" => "overload").increment(1);
            tracing::debug!(client = %client.config.name, "radius: max_in_flight reached; request dropped");
            continue;
        };
        // Boxed, like the login flow's task: tokio copies a task's future when it
        // spawns and finishes it, and a pointer is cheaper to copy.
        shared.tracker.spawn(Box::pin(serve_request(
            Arc::clone(&shared),
            Arc::clone(&socket),
            from,
            Arc::clone(client),
            request,
            pending,
            permit,
            received,
        )));
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, to).await {
        tracing::warn!(to = %to, error = %e, "radius: send failed");
    }
}

/// What came of one request, for the log line and the metrics.
struct Outcome {
    result: &'static str,
    user: String,
    reason: String,
    reply: Option<(Code, Vec<Attribute>)>,
    backend: Option<&'static str>,
    /// When there is no reply: the `reason` label of the drop counter.
    drop_reason: &'static str,
}

#[allow(clippy::too_many_arguments)]
async fn serve_request(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    from: SocketAddr,
    client: Arc<Client>,
    request: VerifiedRequest,
    pending: Pending,
    permit: OwnedSemaphorePermit,
    received: Instant,
) {
    gauge!(m::IN_FLIGHT).increment(1.0);
    // Never cut short: the login flow consumes codes and writes audit records, and a
    // request stopped halfway could burn a code whose reply never leaves. Each backend
    // call has its own timeout, so this ends; a reply later than `request_timeout` is
    // still sent and cached (the NAS's retransmission then gets it, never a second
    // evaluation), and counted as late.
    let outcome = evaluate(&shared, &client, &request).await;
    gauge!(m::IN_FLIGHT).decrement(1.0);
    drop(permit);
    let elapsed = received.elapsed();
    let client_name = client.config.name.as_str();
    let mode = mode_name(shared.config.mode);
    if elapsed > shared.config.request_timeout {
        counter!(m::LATE).increment(1);
        tracing::warn!(
            user = %outcome.user,
            client = client_name,
            ms = elapsed.as_millis() as u64,
            "radius request answered after request_timeout ({:?}); a backend is slow",
            shared.config.request_timeout
        );
    }
    counter!(m::REQUESTS, "door" => "radius", "result" => outcome.result).increment(1);
    histogram!(m::DURATION, "door" => "radius", "result" => outcome.result)
        .record(elapsed.as_secs_f64());
    if let Some(backend) = outcome.backend {
        counter!(m::BACKEND_ERRORS, "door" => "radius", "backend" => backend).increment(1);
    }
    let log = |result: &str, reason: &str| {
        tracing::info!(
            user = %outcome.user,
            client = client_name,
            source = %from,
            mode,
            result,
            reason,
            ms = elapsed.as_millis() as u64,
            "radius request"
        );
    };
    let Some((code, attributes)) = outcome.reply else {
        counter!(m::DROPPED, "reason" => outcome.drop_reason).increment(1);
        log(outcome.result, &outcome.reason);
        return; // `pending` is dropped: a retransmission is evaluated afresh.
    };
    let bytes: Arc<[u8]> = match encode_reply(&request, code, &attributes, &client.secret) {
        Ok(b) => Arc::from(b),
        Err(e) => {
            counter!(m::DROPPED, "reason" => "encode_error").increment(1);
            log("drop", &format!("cannot encode the reply: {e}"));
            return;
        }
    };
    log(outcome.result, &outcome.reason);
    if code == Code::AccessReject {
        let due = received + shared.config.reject_delay;
        let item = DelayedReply {
            due,
            socket,
            to: from,
            bytes,
            pending,
        };
        if let Err(e) = shared.delayed.try_send(item) {
            counter!(m::DROPPED, "reason" => "reject_queue_full").increment(1);
            tracing::warn!("radius: reject delay queue full; reject dropped");
            drop(e); // drops the pending entry too: a retransmission is evaluated again
        }
        return;
    }
    pending.complete(Arc::clone(&bytes), std::time::Instant::now());
    send(&socket, &bytes, from).await;
}

/// Sends each queued reject at its time. Ends when every sender is gone.
async fn delay_queue(mut rx: mpsc::Receiver<DelayedReply>) {
    while let Some(item) = rx.recv().await {
        tokio::time::sleep_until(item.due).await;
        // Cached first, so a retransmission arriving now gets the same bytes.
        item.pending
            .complete(Arc::clone(&item.bytes), std::time::Instant::now());
        send(&item.socket, &item.bytes, item.to).await;
    }
}

fn mode_name(mode: RadiusMode) -> &'static str {
    match mode {
        RadiusMode::Append => "append",
        RadiusMode::Challenge => "challenge",
        RadiusMode::Auto => "auto",
    }
}

/// Evaluates a verified request: Status-Server by the core's health, an
/// Access-Request by the handler.
async fn evaluate(shared: &Shared, client: &Client, request: &VerifiedRequest) -> Outcome {
    if request.code() == Code::StatusServer {
        return match shared.core.health().await {
            Ok(()) => Outcome {
                result: "status_ok",
                user: String::new(),
                reason: "Status-Server: every backend answers".into(),
                reply: Some((Code::AccessAccept, Vec::new())),
                backend: None,
                drop_reason: "",
            },
            Err(e) => Outcome {
                result: "drop",
                user: String::new(),
                reason: format!("Status-Server unanswered: {e}"),
                reply: None,
                backend: match &e {
                    otpgate_core::CoreError::Backend { backend, .. } => Some(backend.as_str()),
                    _ => None,
                },
                drop_reason: "unhealthy",
            },
        };
    }
    let other_method = if request.has_eap() {
        Some(Method::Eap)
    } else if request.has_mschap() {
        Some(Method::MsChap)
    } else if request.has_chap() {
        Some(Method::Chap)
    } else {
        None
    };
    let req = handler::Request {
        user_name: request.user_name().unwrap_or_default().to_vec(),
        password: request.user_password().map(|p| Zeroizing::new(p.to_vec())),
        state: request.state().map(<[u8]>::to_vec),
        calling_station_id: request
            .calling_station_id()
            .map(|c| String::from_utf8_lossy(c).into_owned()),
        other_method,
    };
    let decision = handler::handle(&shared.core, &shared.config, &client.config, req).await;
    outcome_of(decision, &client.config)
}

/// The reply (if any) for a decision.
fn outcome_of(decision: Decision, client: &otpgate_config::RadiusClient) -> Outcome {
    match decision {
        Decision::Accept {
            user,
            attributes,
            log,
            message,
        } => match encode_attributes(&attributes) {
            Ok(mut attrs) => Outcome {
                reply: Some((Code::AccessAccept, {
                    if let Some(m) = &message {
                        attrs.extend(Attribute::reply_messages(m));
                    }
                    attrs
                })),
                result: "accept",
                user,
                reason: log,
                backend: None,
                drop_reason: "",
            },
            // Checked at start; an accept without the VLAN or filter it should carry
            // could put the user somewhere they should not be, so fail closed.
            Err(e) => Outcome {
                result: "drop",
                user,
                reason: format!("reply attributes cannot be encoded: {e}"),
                reply: None,
                backend: None,
                drop_reason: "encode_error",
            },
        },
        Decision::Reject {
            user,
            log,
            reason,
            message,
        } => {
            let mut attrs = Attribute::reply_messages(message.as_deref().unwrap_or(REJECT_MESSAGE));
            if let Some(reason) = reason.filter(|_| client.reject_reasons) {
                // A short constant: always fits a vendor attribute.
                if let Ok(a) = Attribute::vendor_specific(
                    attr::VENDOR_OTPGATE,
                    attr::OTPGATE_REJECT_REASON,
                    reason.as_bytes(),
                ) {
                    attrs.push(a);
                }
            }
            Outcome {
                result: "reject",
                user,
                reason: log,
                reply: Some((Code::AccessReject, attrs)),
                backend: None,
                drop_reason: "",
            }
        }
        Decision::Challenge {
            user,
            state,
            message,
            log,
        } => match Attribute::new(STATE, state) {
            Ok(state) => {
                let mut attrs = vec![state];
                attrs.extend(Attribute::reply_messages(&message));
                Outcome {
                    result: "challenge",
                    user,
                    reason: log,
                    reply: Some((Code::AccessChallenge, attrs)),
                    backend: None,
                    drop_reason: "",
                }
            }
            Err(e) => Outcome {
                result: "drop",
                user,
                reason: format!("challenge State cannot be encoded: {e}"),
                reply: None,
                backend: None,
                drop_reason: "encode_error",
            },
        },
        Decision::Drop { user, log, backend } => Outcome {
            result: "drop",
            user,
            reason: log,
            reply: None,
            backend,
            drop_reason: if backend.is_some() {
                "backend"
            } else {
                "error"
            },
        },
    }
}

/// RADIUS attributes for reply attributes chosen by group.
pub fn encode_attributes(attrs: &[ReplyAttribute]) -> Result<Vec<Attribute>, String> {
    let mut out = Vec::with_capacity(attrs.len());
    for a in attrs {
        match a {
            ReplyAttribute::FilterId(v) => {
                out.push(Attribute::string(FILTER_ID, v).map_err(|e| format!("Filter-Id: {e}"))?);
            }
            ReplyAttribute::Class(v) => {
                out.push(Attribute::string(CLASS, v).map_err(|e| format!("Class: {e}"))?);
            }
            ReplyAttribute::Vlan(v) => {
                let vlan = |e| format!("VLAN `{v}`: {e}");
                out.push(Attribute::tunnel_type(0, TUNNEL_TYPE_VLAN).map_err(vlan)?);
                out.push(Attribute::tunnel_medium_type(0, TUNNEL_MEDIUM_IEEE_802).map_err(vlan)?);
                out.push(Attribute::tunnel_private_group_id(None, v).map_err(vlan)?);
            }
            ReplyAttribute::SessionTimeout(s) => {
                out.push(Attribute::integer(SESSION_TIMEOUT, *s));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
