//! otpgate's RADIUS protocol crate: a strict, sans-IO codec (work in progress).
//!
//! # Layout
//!
//! - `attr`
//! - `codec`
//! - `reader`
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
pub mod codec;
pub mod reader;
#[cfg(test)]
mod testdata;

pub use attr::Attribute;
pub use codec::{Code, DecodeError, EncodeError, MAX_ATTRIBUTES, Packet, decode, encode};
