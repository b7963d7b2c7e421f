//! `pam_otpgate.so`: the PAM door (SPEC §6).
//!
//! # Layout
//!
//! - [`ffi`]: the only `unsafe` in the project: the Linux-PAM declarations, the
//!   exported `pam_sm_authenticate` and `pam_sm_setcred` (each catching panics), and
//!   the C handle behind the safe [`handle::PamHandle`] trait. Conversation replies are
//!   copied into wiped buffers, zeroed in place and freed.
//! - [`handle`]: the safe trait the logic is written against, and [`handle::PamCode`].
//! - [`args`]: the module arguments, parsed into a typed struct; an unknown one is
//!   PAM_SERVICE_ERR.
//! - [`logic`]: the login: user and token checks, prompts, the email keyword round,
//!   and the mapping of outcomes to results (only an accept is PAM_SUCCESS). Tested
//!   with a scripted conversation that checks every prompt.
//! - [`backend`]: loading the root-owned configuration, and the two ways to the core:
//!   [`backend::server`] (a RADIUS client of `otpgate serve`) and [`backend::direct`]
//!   (the core on a current-thread runtime that lives only for the call).
//! - [`syslog`]: log lines to authpriv, one datagram each, no descriptor kept.
//!
//! Nothing survives a call: no thread, no runtime, no socket (sshd forks around PAM).
//! Settings come only from the configuration file, never from the environment.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod args;
pub mod backend;
pub mod ffi;
pub mod handle;
pub mod logic;
pub mod syslog;

pub use handle::{PamCode, PamHandle};
pub use logic::authenticate;
