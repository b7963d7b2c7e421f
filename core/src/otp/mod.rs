//! One-time passwords: TOTP (RFC 6238) and the random codes mailed or read out.
//! Pure functions; the rules that need the store live in `crate::service`.

pub mod totp;
