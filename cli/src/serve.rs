//! `otpgate serve`: the long-running server. Glue only: open the core, bind the
//! sockets, start the metrics endpoint, hand everything to the doors' libraries, and
//! turn signals into a shutdown (SIGTERM, SIGINT) or a client reload (SIGHUP).
//!
//! For every socket bound, one line goes to stderr whatever the log level:
//! `listening on radius udp 127.0.0.1:1812` (and `listening on metrics http …`), with
//! the port the kernel gave, so a supervisor or a test can bind port 0 and read it.
//! With `[control] socket`, `listening on control unix PATH` comes first.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use otpgate_config::Config;
use otpgate_core::Core;
use otpgate_core::clock::SystemClock;
use otpgate_core::random::OsRandom;
use otpgate_core::service::CoreConfig;
use otpgate_radius_server::{ClientTable, ServerOptions};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Failure;

/// Runs the configured doors until SIGTERM.
pub async fn serve(config: Config) -> Result<(), Failure> {
    config.require_core()?;
    if config.radius.is_none() {
        return Err(Failure::Config(format!(
            "{}: [radius] is required for `otpgate serve`",
            config.path.display()
        )));
    }
    // Reset links point at the portal this server runs, if it runs one. LDAP and Redis
    // may come up after otpgate (a power cut): connect on first use.
    let settings = CoreConfig::from_config(&config)
        .reset_links_at(config.portal.as_ref().map(|p| p.public_url.clone()));
    let core = Core::open_with(
        &config,
        settings,
        Arc::new(SystemClock),
        Arc::new(OsRandom),
        otpgate_core::store::Connect::Lazily,
    )
    .await?;
    run_doors(config, Arc::new(core), |_| {}).await
}

/// Binds and runs every door of `config` over `core` until SIGTERM or SIGINT; SIGHUP
/// reloads the RADIUS clients from the configuration file. `ready` is called with the
/// RADIUS addresses actually bound, once everything listens (the demo prints its
/// instructions there).
pub async fn run_doors(
    config: Config,
    core: Arc<Core>,
    ready: impl FnOnce(&[SocketAddr]),
) -> Result<(), Failure> {
    let radius = config.radius.clone().ok_or_else(|| {
        Failure::Config(format!(
            "{}: [radius] is required for `otpgate serve`",
            config.path.display()
        ))
    })?;
    let table = ClientTable::new(&radius.clients)
        .map_err(|e| Failure::Config(format!("{}: radius.clients: {e}", config.path.display())))?;
    if table.is_empty() {
        tracing::warn!("no [[radius.clients]]: every RADIUS packet will be dropped");
    }
    let shutdown = CancellationToken::new();

    // Before the RADIUS sockets, so that once those are announced the CLI can use it.
    let control = match &config.control {
        Some(control) => {
            let socket = crate::control::bind(&control.socket).await?;
            eprintln!("listening on control unix {}", control.socket.display());
            tracing::info!(path = %control.socket.display(), "listening on control unix");
            Some(tokio::spawn(crate::control::run(
                socket,
                core.clone(),
                shutdown.clone(),
            )))
        }
        None => None,
    };

    let mut sockets = Vec::with_capacity(radius.listen.len());
    let mut bound = Vec::with_capacity(radius.listen.len());
    for addr in &radius.listen {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|e| Failure::Config(format!("radius: cannot bind udp {addr}: {e}")))?;
        let local = socket
            .local_addr()
            .map_err(|e| Failure::Config(format!("radius: udp {addr}: {e}")))?;
        eprintln!("listening on radius udp {local}");
        tracing::info!(address = %local, "listening on radius udp");
        sockets.push(socket);
        bound.push(local);
    }

    if let Some(metrics) = &config.metrics {
        let local = crate::metrics_http::start(metrics.listen, shutdown.clone()).await?;
        eprintln!("listening on metrics http {local}");
        tracing::info!(address = %local, "listening on metrics http");
    }

    let probe = crate::health::at_start(&core).await;
    if let Some(e) = crate::health::unsuitable_store(&probe) {
        return Err(Failure::Config(format!("{}: {e}", config.path.display())));
    }
    crate::health::spawn(core.clone(), probe, shutdown.clone());

    let portal = match &config.portal {
        Some(p) => Some(start_portal(&config, p, core.clone(), shutdown.clone()).await?),
        None => None,
    };

    let (clients_tx, clients_rx) = watch::channel(Arc::new(table));
    let signals = tokio::spawn(handle_signals(
        config.path.clone(),
        clients_tx,
        shutdown.clone(),
    ));
    ready(&bound);

    let options = ServerOptions::for_config(&radius);
    let result = otpgate_radius_server::run(
        sockets,
        core,
        clients_rx,
        Arc::new(radius),
        options,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    signals.abort();
    if let Some(control) = control
        && let Err(e) = control.await
    {
        tracing::error!("control socket task: {e}");
    }
    if let Some(portal) = portal {
        match portal.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("portal: {e}"),
            Err(e) => tracing::error!("portal task: {e}"),
        }
    }
    result.map_err(|e| Failure::Config(format!("{}: {e}", config.path.display())))
}

/// Binds the portal, prints its `listening on portal https ADDR` line, and runs it until
/// `shutdown` (it drains its connections then).
async fn start_portal(
    config: &Config,
    portal: &otpgate_config::PortalConfig,
    core: Arc<Core>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<(), otpgate_portal::PortalError>>, Failure> {
    let tls = match (&portal.tls_cert_file, &portal.tls_key_file) {
        (Some(cert), Some(key)) => Some(Arc::new(
            otpgate_portal::tls_config(cert, key)
                .map_err(|e| Failure::Config(format!("{}: {e}", config.path.display())))?,
        )),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(portal.listen)
        .await
        .map_err(|e| Failure::Config(format!("portal: cannot bind tcp {}: {e}", portal.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Config(format!("portal: tcp {}: {e}", portal.listen)))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if tls.is_none() {
        tracing::warn!(
            "portal: no tls_cert_file/tls_key_file: serving plain HTTP; put a TLS-terminating proxy in front (cookies are Secure)"
        );
    }
    eprintln!("listening on portal {scheme} {local}");
    tracing::info!(address = %local, "listening on portal {scheme}");
    let options = otpgate_portal::PortalOptions::from_config(portal, config);
    Ok(tokio::spawn(otpgate_portal::run(
        listener, tls, core, options, shutdown,
    )))
}

/// SIGTERM and SIGINT stop the server (gracefully); SIGHUP reloads the clients.
async fn handle_signals(
    path: std::path::PathBuf,
    clients: watch::Sender<Arc<ClientTable>>,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        shutdown.cancel();
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping");
                break;
            }
            _ = hup.recv() => reload_clients(&path, &clients),
            () = shutdown.cancelled() => return,
        }
    }
    shutdown.cancel();
}

/// Reads the configuration file again and swaps in its client list. A file that does
/// not load keeps the old list, and the log says why.
fn reload_clients(path: &Path, clients: &watch::Sender<Arc<ClientTable>>) {
    let loaded = otpgate_config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            c.radius
                .ok_or_else(|| "the [radius] section is gone".to_string())
        })
        .and_then(|r| ClientTable::new(&r.clients).map_err(|e| e.to_string()));
    match loaded {
        Ok(table) => {
            let count = table.len();
            clients.send_replace(Arc::new(table));
            tracing::info!(clients = count, "SIGHUP: RADIUS clients reloaded");
            eprintln!("reloaded radius clients: {count}");
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: reload failed; keeping the old RADIUS clients");
            eprintln!("reload failed, keeping the old radius clients: {e}");
        }
    }
}
