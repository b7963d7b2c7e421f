//! The Prometheus endpoint at `[metrics] listen`: the `metrics` recorder from
//! `metrics-exporter-prometheus`, served by a minimal HTTP/1.1 responder on a listener
//! bound here (so a test can bind port 0 and learn the port). It answers
//! `GET /metrics` and nothing else, one request per connection, with a bound on the
//! request size and time.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::Failure;

/// Latency buckets (seconds): a LAN LDAP bind plus a Redis round trip is a few ms;
/// the NAS's retransmit timeout is seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// The largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often histograms are compacted.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the recorder and serves it on `listen` until `shutdown`. Returns the
/// address bound.
pub async fn start(listen: SocketAddr, shutdown: CancellationToken) -> Result<SocketAddr, Failure> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| Failure::Config(format!("metrics: {e}")))?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::Config(format!("metrics: cannot bind tcp {listen}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Config(format!("metrics: tcp {listen}: {e}")))?;
    tokio::spawn(serve(listener, handle, shutdown));
    Ok(local)
}

async fn serve(listener: TcpListener, handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let handle = handle.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, &handle)).await;
                    });
                }
                Err(e) => tracing::warn!(error = %e, "metrics: accept failed"),
            },
        }
    }
}

async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let (status, content_type, body) = match (method, target) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        (Some(b"GET"), _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
