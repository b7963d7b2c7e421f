//! The only `unsafe` in otpgate: the Linux-PAM C declarations, the two exported entry
//! points, and [`CHandle`], which implements the safe [`PamHandle`] over a
//! `pam_handle_t`.
//!
//! Every entry point catches panics and maps them to PAM_SERVICE_ERR, so no unwind
//! crosses into C and no error becomes PAM_SUCCESS. Conversation replies are copied
//! into wiped buffers, then zeroed in place and freed with `free(3)`, as the
//! application allocated them with `malloc(3)`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use zeroize::{Zeroize, Zeroizing};

use crate::handle::{HandleError, Level, PamCode, PamHandle};

/// `pam_handle_t`, opaque.
#[repr(C)]
pub struct PamHandleT {
    _private: [u8; 0],
}

/// `struct pam_message`.
#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

/// `struct pam_response`.
#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

/// The conversation function's type.
type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

const PAM_SUCCESS: c_int = 0;
const PAM_SERVICE_ERR: c_int = 3;
const PAM_AUTH_ERR: c_int = 7;
const PAM_AUTHINFO_UNAVAIL: c_int = 9;
const PAM_USER_UNKNOWN: c_int = 10;
const PAM_MAXTRIES: c_int = 11;
const PAM_CONV_ERR: c_int = 19;
const PAM_IGNORE: c_int = 25;

const PAM_SERVICE: c_int = 1;
const PAM_RHOST: c_int = 4;
const PAM_CONV: c_int = 5;
const PAM_AUTHTOK: c_int = 6;

const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_TEXT_INFO: c_int = 4;

/// The most module arguments read.
const MAX_ARGS: usize = 32;

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_user(
        pamh: *mut PamHandleT,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    fn pam_get_item(pamh: *const PamHandleT, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_item(pamh: *mut PamHandleT, item_type: c_int, item: *const c_void) -> c_int;
}

unsafe extern "C" {
    fn free(ptr: *mut c_void);
}

/// The C value of a result.
fn to_c(code: PamCode) -> c_int {
    match code {
        PamCode::Success => PAM_SUCCESS,
        PamCode::Ignore => PAM_IGNORE,
        PamCode::AuthErr => PAM_AUTH_ERR,
        PamCode::UserUnknown => PAM_USER_UNKNOWN,
        PamCode::MaxTries => PAM_MAXTRIES,
        PamCode::AuthInfoUnavail => PAM_AUTHINFO_UNAVAIL,
        PamCode::ServiceErr => PAM_SERVICE_ERR,
        PamCode::ConvErr => PAM_CONV_ERR,
    }
}

/// A PAM handle for the length of one call.
struct CHandle {
    pamh: *mut PamHandleT,
    /// PAM_SERVICE, for log lines.
    service: String,
}

impl CHandle {
    /// A string item, copied; `None` when unset.
    fn item(&self, item_type: c_int) -> Result<Option<Zeroizing<Vec<u8>>>, HandleError> {
        let mut ptr: *const c_void = std::ptr::null();
        // SAFETY: `pamh` is the live handle the application passed to this call;
        // `ptr` is a valid out-pointer. PAM keeps ownership of what it points to.
        let rc = unsafe { pam_get_item(self.pamh, item_type, &mut ptr) };
        if rc != PAM_SUCCESS {
            return Err(HandleError::Item(format!(
                "pam_get_item({item_type}) = {rc}"
            )));
        }
        if ptr.is_null() {
            return Ok(None);
        }
        // SAFETY: string items (PAM_SERVICE, PAM_RHOST, PAM_AUTHTOK) are
        // NUL-terminated C strings owned by PAM, valid until changed; we copy at once.
        let bytes = unsafe { CStr::from_ptr(ptr.cast::<c_char>()) }.to_bytes();
        Ok(Some(Zeroizing::new(bytes.to_vec())))
    }

    /// One message through the application's conversation; the reply (for prompts).
    fn converse(
        &mut self,
        style: c_int,
        text: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, HandleError> {
        let fail = |what: &str| HandleError::Conversation(what.to_string());
        let mut conv_ptr: *const c_void = std::ptr::null();
        // SAFETY: as in `item`; PAM_CONV points to the application's `pam_conv`.
        let rc = unsafe { pam_get_item(self.pamh, PAM_CONV, &mut conv_ptr) };
        if rc != PAM_SUCCESS || conv_ptr.is_null() {
            return Err(fail("no conversation function"));
        }
        // SAFETY: PAM_CONV is a `struct pam_conv` that outlives the call.
        let conv = unsafe { &*conv_ptr.cast::<PamConv>() };
        let Some(function) = conv.conv else {
            return Err(fail("no conversation function"));
        };
        let text = CString::new(text).map_err(|_| fail("a message with a NUL"))?;
        let message = PamMessage {
            msg_style: style,
            msg: text.as_ptr(),
        };
        let mut messages: [*const PamMessage; 1] = [&message];
        let mut response: *mut PamResponse = std::ptr::null_mut();
        // SAFETY: one valid message array of length 1 and an out-pointer, as the PAM
        // conversation contract says; `text` and `message` live across the call.
        let rc = unsafe { function(1, messages.as_mut_ptr(), &mut response, conv.appdata_ptr) };
        // SAFETY: on return, `response` is null or a malloc'd array of one
        // `pam_response` whose `resp` is null or a malloc'd C string; we own both.
        let reply = unsafe { take_response(response) };
        if rc != PAM_SUCCESS {
            return Err(fail(&format!("the conversation returned {rc}")));
        }
        Ok(reply)
    }
}

/// Copies a conversation reply into a wiped buffer, zeroes the original and frees it.
///
/// # Safety
///
/// `response` is null or a `malloc`'d `pam_response` whose `resp` is null or a
/// `malloc`'d NUL-terminated string, owned by the caller and not used afterwards.
unsafe fn take_response(response: *mut PamResponse) -> Option<Zeroizing<Vec<u8>>> {
    if response.is_null() {
        return None;
    }
    // SAFETY: non-null and owned by us, per this function's contract.
    let resp = unsafe { (*response).resp };
    let mut out = None;
    if !resp.is_null() {
        // SAFETY: a NUL-terminated string we own; we copy it, zero it in place (its
        // length without the NUL) and free it.
        unsafe {
            let len = CStr::from_ptr(resp).to_bytes().len();
            let bytes = std::slice::from_raw_parts_mut(resp.cast::<u8>(), len);
            out = Some(Zeroizing::new(bytes.to_vec()));
            bytes.zeroize();
            free(resp.cast::<c_void>());
        }
    }
    // SAFETY: the array was malloc'd by the application and is ours to free.
    unsafe { free(response.cast::<c_void>()) };
    out
}

impl PamHandle for CHandle {
    fn user(&mut self) -> Result<Zeroizing<Vec<u8>>, HandleError> {
        let mut ptr: *const c_char = std::ptr::null();
        // SAFETY: live handle, valid out-pointer, null prompt (PAM's default).
        let rc = unsafe { pam_get_user(self.pamh, &mut ptr, std::ptr::null()) };
        if rc != PAM_SUCCESS || ptr.is_null() {
            return Err(HandleError::Item(format!("pam_get_user = {rc}")));
        }
        // SAFETY: PAM_USER is a NUL-terminated string owned by PAM; copied at once.
        let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
        Ok(Zeroizing::new(bytes.to_vec()))
    }

    fn rhost(&mut self) -> Result<Option<Vec<u8>>, HandleError> {
        Ok(self.item(PAM_RHOST)?.map(|h| h.to_vec()))
    }

    fn authtok(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, HandleError> {
        self.item(PAM_AUTHTOK)
    }

    fn set_authtok(&mut self, token: &[u8]) -> Result<(), HandleError> {
        let token =
            CString::new(token).map_err(|_| HandleError::Item("a password with a NUL".into()))?;
        // SAFETY: live handle; PAM copies the string, which lives across the call.
        let rc = unsafe { pam_set_item(self.pamh, PAM_AUTHTOK, token.as_ptr().cast()) };
        let mut bytes = token.into_bytes();
        bytes.zeroize();
        if rc != PAM_SUCCESS {
            return Err(HandleError::Item(format!(
                "pam_set_item(PAM_AUTHTOK) = {rc}"
            )));
        }
        Ok(())
    }

    fn prompt_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, HandleError> {
        self.converse(PAM_PROMPT_ECHO_OFF, prompt)?
            .ok_or_else(|| HandleError::Conversation("no reply".into()))
    }

    fn info(&mut self, text: &str) -> Result<(), HandleError> {
        self.converse(PAM_TEXT_INFO, text).map(|_| ())
    }

    fn log(&mut self, level: Level, message: &str) {
        crate::syslog::send(level, &self.service, message);
    }
}

/// The module arguments as strings; `None` when there are too many or one is not
/// UTF-8.
///
/// # Safety
///
/// `argv` points to `argc` NUL-terminated strings (PAM's contract).
unsafe fn arguments(argc: c_int, argv: *const *const c_char) -> Option<Vec<String>> {
    let count = usize::try_from(argc).ok()?;
    if count > MAX_ARGS || (count > 0 && argv.is_null()) {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: `i < argc` and `argv` has `argc` entries.
        let arg = unsafe { *argv.add(i) };
        if arg.is_null() {
            return None;
        }
        // SAFETY: each entry is a NUL-terminated string owned by PAM.
        let text = unsafe { CStr::from_ptr(arg) }.to_str().ok()?;
        out.push(text.to_string());
    }
    Some(out)
}

/// The body of `pam_sm_authenticate`, outside the panic guard.
///
/// # Safety
///
/// As for [`pam_sm_authenticate`].
unsafe fn authenticate(pamh: *mut PamHandleT, argc: c_int, argv: *const *const c_char) -> c_int {
    if pamh.is_null() {
        return PAM_SERVICE_ERR;
    }
    let mut handle = CHandle {
        pamh,
        service: String::new(),
    };
    handle.service = handle
        .item(PAM_SERVICE)
        .ok()
        .flatten()
        .map(|s| String::from_utf8_lossy(&s).chars().take(64).collect())
        .unwrap_or_default();
    // SAFETY: PAM passes `argc` strings in `argv`.
    let Some(args) = (unsafe { arguments(argc, argv) }) else {
        handle.log(Level::Error, "module arguments are not UTF-8 or too many");
        return PAM_SERVICE_ERR;
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    to_c(crate::logic::authenticate(
        &mut handle,
        &args,
        crate::backend::open,
    ))
}

/// Authenticates PAM_USER: SPEC §6.
///
/// # Safety
///
/// Called by libpam with a live handle and `argc` argument strings in `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut PamHandleT,
    _flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: the arguments are passed on as libpam gave them.
    match catch_unwind(AssertUnwindSafe(|| unsafe {
        authenticate(pamh, argc, argv)
    })) {
        Ok(rc) => rc,
        Err(_) => {
            crate::syslog::send(Level::Error, "", "internal error (panic caught)");
            PAM_SERVICE_ERR
        }
    }
}

/// Nothing to set: returns PAM_SUCCESS.
///
/// # Safety
///
/// Called by libpam; the arguments are not used.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pam_sm_setcred(
    _pamh: *mut PamHandleT,
    _flags: c_int,
    _argc: c_int,
    _argv: *const *const c_char,
) -> c_int {
    PAM_SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_result_has_its_c_value_and_only_success_is_zero() {
        for code in [
            PamCode::Ignore,
            PamCode::AuthErr,
            PamCode::UserUnknown,
            PamCode::MaxTries,
            PamCode::AuthInfoUnavail,
            PamCode::ServiceErr,
            PamCode::ConvErr,
        ] {
            assert_ne!(to_c(code), PAM_SUCCESS);
        }
        assert_eq!(to_c(PamCode::Success), 0);
        assert_eq!(to_c(PamCode::MaxTries), 11);
        assert_eq!(to_c(PamCode::AuthInfoUnavail), 9);
        assert_eq!(to_c(PamCode::Ignore), 25);
    }

    #[test]
    fn arguments_are_read_and_bounded() {
        let a = CString::new("nullok").unwrap();
        let b = CString::new("debug").unwrap();
        let argv = [a.as_ptr(), b.as_ptr()];
        // SAFETY: two valid strings.
        let args = unsafe { arguments(2, argv.as_ptr()) }.unwrap();
        assert_eq!(args, ["nullok", "debug"]);
        // SAFETY: null argv with zero count is fine; a negative count is refused.
        assert_eq!(unsafe { arguments(0, std::ptr::null()) }, Some(vec![]));
        assert_eq!(unsafe { arguments(-1, std::ptr::null()) }, None);
    }

    #[test]
    fn a_null_handle_is_service_err() {
        // SAFETY: a null handle is checked before use.
        assert_eq!(
            unsafe { pam_sm_authenticate(std::ptr::null_mut(), 0, 0, std::ptr::null()) },
            PAM_SERVICE_ERR
        );
    }
}
