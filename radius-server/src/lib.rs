//! otpgate's RADIUS door: `otpgate serve` answers Access-Requests from VPN
//! concentrators, Wi-Fi controllers and PAM hosts over UDP.
//!
//! # Layout
//!
//! - [`handler`]: the decision for one request (modes, challenge, email keyword,
//!   trusted devices, reply attributes), over the core; no sockets.
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

pub mod handler;
