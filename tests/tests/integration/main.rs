//! The one otpgate integration-test binary: each module tests one area against real
//! servers started by the `otpgate-tests` harness.

mod directory;
mod harness_selftest;
