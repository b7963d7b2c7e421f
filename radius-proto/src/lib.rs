//! otpgate's RADIUS protocol crate: a strict, sans-IO codec (work in progress).
//!
//! # Layout
//!
//! - `attr`
//! - `auth`
//! - `codec`
//! - `exchange`
//! - `password`
//! - `reader`
//! - `request`: server side, `VerifiedRequest` and `encode_reply`
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![warn(missing_docs)]

pub mod attr;
pub mod auth;
pub mod codec;
pub mod exchange;
pub mod password;
pub mod reader;
pub mod request;
#[cfg(test)]
mod testdata;

pub use attr::Attribute;
pub use auth::Secret;
pub use codec::{Code, DecodeError, EncodeError, MAX_ATTRIBUTES, Packet, decode, encode};
pub use exchange::{
    AccessRequestParams, ClientError, Reply, ReplyError, check_reply, encode_access_request,
    encode_status_server,
};
pub use password::PasswordError;
pub use request::{RequestError, VerifiedRequest, encode_reply};
