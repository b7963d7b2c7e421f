//! otpgate's load generator: PAP password+TOTP logins (append mode) against a real
//! `otpgate serve`, with a fixed number of requests in flight, reporting requests per
//! second and latency percentiles, and checking that every reply is an Access-Accept.
//!
//! # Layout
//!
//! - [`logins`]: [`logins::Logins`], the schedule of fresh logins: each user logs in
//!   once per TOTP step, the steps walking forward inside the server's accepted window,
//!   so no code is ever a replay.
//! - [`load`]: [`load::run`], the generator: one UDP socket per request in flight,
//!   requests built and replies checked with the project's RADIUS codec.
//! - [`stats`]: latencies and outcomes of one run, and their summary.
//! - [`procs`]: CPU time per process from `/proc/<pid>/stat` before and after a run,
//!   and resident memory.
//! - [`setup`]: the environment (the harness's slapd with bulk users, Redis and
//!   `otpgate serve`) and the enrollment of every user through the core.
//!
//! The binary (`src/main.rs`) is glue: arguments, setup, one run per in-flight level,
//! the report.
//!
//! `src/bin/pam-overhead.rs` measures the time `pam_otpgate` adds to a login beyond the
//! backends' round trips, in server and direct mode
//! (`cargo run --release -p otpgate-bench --bin pam-overhead [-- ITERATIONS]`).
#![forbid(unsafe_code)]

pub mod load;
pub mod logins;
pub mod procs;
pub mod setup;
pub mod stats;
