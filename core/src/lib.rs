//! otpgate core: every rule of the second factor, knowing nothing of RADIUS, PAM or HTTP.
//!
//! # Layout
//!
//! - [`user`]: user names (checked, canonical) and the user state machine's states.
//! - [`clock`], [`random`]: time and randomness, passed in.
//! - [`directory`]: LDAP and users-file directories; the password check and its proof.
//! - [`store`]: Redis and embedded stores behind one contract; atomic single-use,
//!   replay and counter operations.
//! - [`otp`]: TOTP and code generation, pure.
//! - [`import`]: reading TOTP secrets from other systems' files (otpauth URIs,
//!   google-authenticator, PSKC, CSV), pure.
//! - [`secret`]: sealing TOTP secrets, keyed hashes of codes and devices.
//! - [`policy`]: `[[policy]]` rules by group: who needs a second factor, where.
//! - [`qr`]: QR codes for enrollment (terminal, PNG, SVG).
//! - [`mail`]: SMTP and the texts mailed.
//! - [`audit`]: the audit trail.
//! - [`service`]: [`Core`], the one API the doors call, with the login proofs.
//! - [`error`]: refusals versus backend failures (which always fail closed).
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

pub mod audit;
pub mod clock;
pub mod directory;
pub mod error;
pub mod import;
pub mod mail;
pub mod otp;
pub mod policy;
pub mod qr;
pub mod random;
pub mod secret;
pub mod service;
pub mod store;
pub mod user;

pub use error::{Backend, CoreError, Refusal};
pub use service::{Core, Probe};
