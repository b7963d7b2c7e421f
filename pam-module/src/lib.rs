//! pam_otpgate.so
