//! The one otpgate integration-test binary: each module tests one area against real
//! servers started by the `otpgate-tests` harness.

mod baseline;
mod cli;
mod core_rules;
mod directory;
mod directory_cache;
mod flow;
mod harness_selftest;
mod mail;
mod pam;
mod portal;
mod portal_browser;
mod radius;
mod ssh;
mod store;
mod wifi;
