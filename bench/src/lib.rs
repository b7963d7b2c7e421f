//! otpgate benchmarks: reproducible runs against the test harness's real servers.
//!
//! # Layout
//!
//! - `src/bin/pam-overhead.rs`: the time `pam_otpgate` adds to a login beyond the
//!   backends' round trips, in server and direct mode
//!   (`cargo run --release -p otpgate-bench --bin pam-overhead [-- ITERATIONS]`).
#![forbid(unsafe_code)]
