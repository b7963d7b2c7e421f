//! otpgate's RADIUS door: `otpgate serve` answers Access-Requests from VPN
//! concentrators, Wi-Fi controllers and PAM hosts over UDP.
//!
//! # Layout
//!
//! - [`server`]: the UDP loops over already-bound sockets: client lookup,
//!   verification, duplicate cache, bounded concurrency, deadlines, reject delay,
//!   Status-Server, graceful shutdown. `run(sockets, core, clients, config, options,
//!   shutdown)`.
//! - [`clients`]: the client table (longest-prefix match on the source address),
//!   swapped whole on reload.
//! - [`dedup`]: RFC 5080 duplicate detection: a retransmission gets the cached reply
//!   and is never evaluated twice.
//! - [`handler`]: the decision for one request (modes, challenge, email keyword,
//!   trusted devices, reply attributes), over the core; no sockets.
//! - [`metrics`]: metric names and descriptions.
//! - [`warnings`]: per-key rate limits for warnings an operator must see (a client
//!   whose requests lack the Message-Authenticator its entry requires).
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

pub mod clients;
pub mod dedup;
pub mod handler;
pub mod metrics;
pub mod server;
pub mod warnings;

pub use clients::{ClientTable, ClientTableError};
pub use server::{ServerError, ServerOptions, run};
