//! The one otpgate integration-test binary: each module tests one area against real
//! servers started by the `otpgate-tests` harness.

mod backends;
mod baseline;
mod cli;
mod control;
mod core_rules;
mod directory;
mod directory_cache;
mod failover;
mod faults;
mod flow;
mod harness_selftest;
mod logs;
mod mail;
mod packages;
mod pam;
mod pam_radius;
mod policy;
mod portal;
mod portal_browser;
mod portal_edges;
mod radius;
mod radius_strict;
mod ssh;
mod store;
mod tokens;
mod wifi;
