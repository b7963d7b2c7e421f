//! `pam_otpgate_direct.so`: `pam_otpgate` built with its `direct` feature, for hosts
//! whose `[pam] backend = "direct"` (the module talks to LDAP, Redis and SMTP itself).
//! Everything lives in `pam_otpgate`; this crate only re-exports the module's entry
//! points so that they become this library's symbols.
#![forbid(unsafe_code)]

pub use pam_otpgate::ffi::{pam_sm_authenticate, pam_sm_setcred};
