//! The pages. Each handler takes a [`Visit`](crate::visit::Visit), calls the core, and
//! answers with a page or a redirect; refusals go through [`crate::error`].

pub mod account;
pub mod admin;
pub mod login;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;

/// A request body as the handlers take it: a failure to read it is answered with the
/// portal's own page.
pub type Body = Result<Bytes, BytesRejection>;

/// Unwraps a `Result<T, Response>` or returns the response.
macro_rules! try_page {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(response) => return response,
        }
    };
}
pub(crate) use try_page;

/// Unwraps `Visit::require` or sends the visitor where they belong.
macro_rules! signed {
    ($v:ident, $limited_ok:expr) => {
        match $v.require($limited_ok).await {
            Ok(s) => s,
            Err(d) => return $v.deny(d),
        }
    };
}
pub(crate) use signed;
