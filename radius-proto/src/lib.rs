//! otpgate's RADIUS protocol crate: a strict, sans-IO codec for RFC 2865
//! Access-Request/Accept/Reject/Challenge, RFC 3579 Message-Authenticator and
//! RFC 5997 Status-Server, plus one blocking client for the PAM module.
//!
//! There is no async runtime here and no I/O outside [`client`]: the otpgate
//! server feeds datagrams to [`VerifiedRequest::verify`] and sends what
//! [`encode_reply`] returns; the PAM module, inside sshd, calls
//! [`Client::authenticate`], which uses plain blocking UDP sockets that are
//! closed before it returns.
//!
//! # Layout
//!
//! - [`reader`]: a bounded byte reader that never panics and never allocates
//!   by a length read off the wire.
//! - [`attr`]: attribute type numbers, the [`Attribute`] value and builders
//!   (strings, integers, RFC 2868 tunnel attributes, split Reply-Messages).
//! - [`codec`]: [`Code`], [`Packet`], strict [`decode`] and its inverse
//!   [`encode`], with cheap typed errors whose `kind()` labels metrics.
//! - [`password`]: User-Password hiding and unhiding (RFC 2865 §5.2).
//! - [`auth`]: the [`Secret`] type and the Response and Message
//!   authenticators; crate-private computations, compared in constant time.
//! - [`request`]: the server side. [`VerifiedRequest`] is a proof token that
//!   only `verify` can create; [`encode_reply`] requires one and signs the
//!   reply with the Message-Authenticator first and Proxy-State copied.
//! - [`exchange`]: the client side without I/O: signed Access-Request and
//!   Status-Server, and [`check_reply`] for replies.
//! - [`client`]: the blocking UDP [`Client`] with failover and retransmission.
//!
//! # Example
//!
//! ```
//! use otpgate_radius_proto::{
//!     AccessRequestParams, Code, Reply, Secret, VerifiedRequest, attr::Attribute, check_reply,
//!     encode_access_request, encode_reply,
//! };
//! use zeroize::Zeroizing;
//!
//! let secret = Secret::new(b"a long shared secret".to_vec())?;
//! let mut params = AccessRequestParams::new("alice");
//! params.password = Some(Zeroizing::new(b"password123456".to_vec()));
//! let datagram = encode_access_request(&params, 7, [0x42; 16], &secret)?;
//!
//! // Server side.
//! let request = VerifiedRequest::verify(&datagram, &secret, true)?;
//! assert_eq!(request.user_password(), Some(&b"password123456"[..]));
//! let reply = encode_reply(&request, Code::AccessReject, &Attribute::reply_messages("Denied"), &secret)?;
//!
//! // Client side.
//! let packet = check_reply(&reply, 7, [0x42; 16], &secret)?;
//! let Reply::Reject { reply_message, .. } = Reply::from_packet(packet)? else { panic!() };
//! assert_eq!(reply_message.as_deref(), Some("Denied"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
pub mod client;
pub mod codec;
pub mod exchange;
#[cfg(test)]
mod fuzz_corpus;
pub mod password;
pub mod reader;
pub mod request;
#[cfg(test)]
mod testdata;

pub use attr::Attribute;
pub use auth::Secret;
pub use client::Client;
pub use codec::{Code, DecodeError, EncodeError, MAX_ATTRIBUTES, Packet, decode, encode};
pub use exchange::{
    AccessRequestParams, ClientError, Reply, ReplyError, check_reply, encode_access_request,
    encode_status_server,
};
pub use password::PasswordError;
pub use request::{Policy, RequestError, VerifiedRequest, encode_reply};
