//! The accept loop. Each connection holds a permit of a bounded semaphore and a slot of
//! its client address's share ([`MAX_PER_ADDRESS`]; trusted proxies are exempt), and
//! every quiet phase is bounded by `idle_timeout`: the TLS handshake, the first request
//! (protocol detection included), HTTP/1 keep-alive and HTTP/2 idle time (no stream
//! open). It is served by hyper (HTTP/1.1 or HTTP/2); on shutdown the listener closes
//! and open connections are drained gracefully.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use otpgate_config::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connections served at once; further clients wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections one client address may hold at once; more are closed at accept.
pub const MAX_PER_ADDRESS: usize = 64;
/// How long open connections may take to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds of the accept loop.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Each quiet phase of a connection ends after this.
    pub idle_timeout: Duration,
    /// Peers exempt from [`MAX_PER_ADDRESS`] (the proxies in front of the portal).
    pub trusted_proxies: Vec<IpNet>,
}

impl Limits {
    pub fn new(options: &crate::PortalOptions) -> Self {
        Self {
            idle_timeout: options.idle_timeout,
            trusted_proxies: options.trusted_proxies.clone(),
        }
    }
}

/// Connections held per client address.
#[derive(Default)]
struct PerAddress {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's share of its address; given back on drop.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn take(table: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let mut held = table.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.table.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Requests in progress on a connection, and when the last one ended.
struct Activity {
    started: Instant,
    busy: AtomicUsize,
    /// Milliseconds after `started` when the connection was last busy.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            busy: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// When the connection has been quiet for `idle` (later, while a request runs).
    fn quiet_deadline(&self, idle: Duration) -> Instant {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return Instant::now() + idle;
        }
        self.started + Duration::from_millis(self.last.load(Ordering::Relaxed)) + idle
    }
}

/// Marks a request in progress until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's address, put into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remote(pub SocketAddr);

/// Why the portal could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortalError {
    /// The certificate or key file cannot be read or used: fix the files named.
    #[error("portal TLS: {0}")]
    Tls(String),
    /// The listener failed: check the address and the process's limits.
    #[error("portal listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A rustls server configuration from PEM files: the certificate chain and its key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, PortalError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PortalError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(PortalError::Tls(format!(
            "{}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| PortalError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PortalError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| PortalError::Tls(format!("certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts until `shutdown`, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> Result<(), PortalError> {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    let limits = Arc::new(limits);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off a little instead of spinning.
                    tracing::warn!("portal: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let ip = remote.ip();
        let exempt = limits.trusted_proxies.iter().any(|n| n.contains(&ip));
        let slot = if exempt {
            None
        } else {
            match PerAddress::take(&per_address, ip) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%remote, "portal: too many connections from one address");
                    metrics::counter!("otpgate_portal_connections_refused_total", "reason" => "per_address")
                        .increment(1);
                    drop(stream);
                    continue;
                }
            }
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            connection(stream, remote, acceptor, router, &limits, shutdown).await;
        });
    }
    drop(listener);
    // Every connection gives its permit back when it ends: all of them back, all done.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(
        DRAIN_TIMEOUT + Duration::from_secs(1),
        slots.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::warn!("portal: connections still open after the drain timeout; closing them");
    }
    Ok(())
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    router: axum::Router,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let idle = limits.idle_timeout;
    match acceptor {
        Some(acceptor) => {
            let tls = tokio::select! {
                () = shutdown.cancelled() => return,
                done = tokio::time::timeout(idle, acceptor.accept(stream)) => match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, "portal: TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "portal: TLS handshake timed out");
                        return;
                    }
                },
            };
            drive(tls, remote, router, idle, shutdown).await;
        }
        None => drive(stream, remote, router, idle, shutdown).await,
    }
}

/// Serves one connection until it ends, it has been quiet for `idle` (then it is shut
/// down gracefully, and dropped if that takes longer than `idle` again), or `shutdown`.
async fn drive<I>(
    io: I,
    remote: SocketAddr,
    router: axum::Router,
    idle: Duration,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(Remote(remote));
        let busy = Busy::start(&seen);
        let router = router.clone();
        async move {
            let response = router.oneshot(req).await;
            drop(busy);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(32)
        .keep_alive_interval(Some(idle))
        .keep_alive_timeout(idle);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing: Option<Instant> = None;
    loop {
        let wake = closing.unwrap_or_else(|| activity.quiet_deadline(idle));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, "portal: connection ended: {e}");
                }
                return;
            }
            () = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            () = tokio::time::sleep_until(wake) => {
                if closing.is_some() {
                    tracing::debug!(%remote, "portal: connection closed after its grace time");
                    return;
                }
                if Instant::now() >= activity.quiet_deadline(idle) {
                    tracing::debug!(%remote, "portal: idle connection closed");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now() + idle);
                }
            }
        }
    }
}
