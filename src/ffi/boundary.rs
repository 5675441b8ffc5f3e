//! The panic guard, argument conversion, string ownership and the per-thread last error.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use super::{SftResult, SFT_MAX_TIMEOUT_MS, SFT_WAIT_FOREVER};
use crate::{Error, ErrorKind, Result};

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

impl From<ErrorKind> for SftResult {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NotFound => SftResult::SFT_ERR_NOT_FOUND,
            ErrorKind::InvalidArgument => SftResult::SFT_ERR_INVALID_ARGUMENT,
            ErrorKind::DuplicateId => SftResult::SFT_ERR_DUPLICATE_ID,
            ErrorKind::QueueFull => SftResult::SFT_ERR_QUEUE_FULL,
            ErrorKind::ShutDown => SftResult::SFT_ERR_SHUT_DOWN,
            ErrorKind::InvalidState => SftResult::SFT_ERR_INVALID_STATE,
            ErrorKind::Timeout => SftResult::SFT_ERR_TIMEOUT,
            ErrorKind::Internal => SftResult::SFT_ERR_INTERNAL,
        }
    }
}

/// Records `error` as this thread's last error and returns its code.
pub(crate) fn fail(error: Error) -> SftResult {
    let code = SftResult::from(error.kind());
    LAST_ERROR.with(|last| *last.borrow_mut() = Some(error.message().to_owned()));
    code
}

/// This thread's last error message, if any.
pub(crate) fn last_error() -> Option<String> {
    LAST_ERROR.with(|last| last.borrow().clone())
}

/// Runs `body`, turning a panic into `on_panic` (and an `SFT_ERR_INTERNAL` last error).
/// The one panic boundary every export goes through.
pub(crate) fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        fail(Error::new(ErrorKind::Internal, "internal error: a panic was caught at the C boundary"));
        on_panic
    })
}

/// Runs a fallible `body` behind the guard and maps its result to a code.
pub(crate) fn call(body: impl FnOnce() -> Result<()>) -> SftResult {
    guard(SftResult::SFT_ERR_INTERNAL, || match body() {
        Ok(()) => SftResult::SFT_OK,
        Err(error) => fail(error),
    })
}

/// Runs `body` behind the guard and returns its string for the caller to free, or NULL.
pub(crate) fn call_returning_string(body: impl FnOnce() -> Result<String>) -> *mut c_char {
    guard(std::ptr::null_mut(), || match body() {
        Ok(text) => into_c_string(text),
        Err(error) => {
            fail(error);
            std::ptr::null_mut()
        }
    })
}

/// Hands `text` to the caller, who frees it with `sft_string_free`.
pub(crate) fn into_c_string(text: String) -> *mut c_char {
    // JSON and UTF-8 ids never contain NUL (serde_json escapes it), so this cannot fail in practice.
    CString::new(text).map_or(std::ptr::null_mut(), CString::into_raw)
}

/// Borrows a required input string for the duration of the call.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn borrow_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string that outlives 'a.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|e| Error::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// Borrows an optional input string: NULL is `None`.
///
/// # Safety
/// As [`borrow_str`].
pub(crate) unsafe fn borrow_optional_str<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { borrow_str(ptr, what) }.map(Some)
}

/// An out-parameter for a library-allocated string: cleared on entry, filled on success.
pub(crate) struct OutString(*mut *mut c_char);

impl OutString {
    /// Takes `out` (NULL: the caller does not want the string) and clears what it points to.
    ///
    /// # Safety
    /// `out` is NULL or valid for writing one pointer for the duration of the call.
    pub unsafe fn new(out: *mut *mut c_char) -> Self {
        if !out.is_null() {
            // SAFETY: the caller guarantees `out` is writable.
            unsafe { *out = std::ptr::null_mut() };
        }
        Self(out)
    }

    /// Whether the caller wants the string.
    pub fn is_wanted(&self) -> bool {
        !self.0.is_null()
    }

    /// Gives `text` to the caller if wanted.
    pub fn set(self, text: impl FnOnce() -> String) {
        if self.is_wanted() {
            // SAFETY: `new` was promised `out` is writable for the call, and it is non-NULL here.
            unsafe { *self.0 = into_c_string(text()) };
        }
    }
}

/// Converts a C timeout to the core's: `SFT_WAIT_FOREVER` is `None`; anything outside
/// `0..=SFT_MAX_TIMEOUT_MS` is an error.
pub(crate) fn timeout_from_ms(timeout_ms: i64) -> Result<Option<Duration>> {
    match timeout_ms {
        SFT_WAIT_FOREVER => Ok(None),
        0..=SFT_MAX_TIMEOUT_MS => Ok(Some(Duration::from_millis(timeout_ms as u64))),
        _ => Err(Error::invalid(format!("timeout_ms must be SFT_WAIT_FOREVER or in 0..={SFT_MAX_TIMEOUT_MS}, not {timeout_ms}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_internal_and_sets_the_last_error() {
        let code = call(|| panic!("boom"));
        assert_eq!(code, SftResult::SFT_ERR_INTERNAL);
        assert!(last_error().unwrap().contains("panic"));
        let null = call_returning_string(|| panic!("boom"));
        assert!(null.is_null());
    }

    #[test]
    fn timeouts_are_checked() {
        assert_eq!(timeout_from_ms(SFT_WAIT_FOREVER).unwrap(), None);
        assert_eq!(timeout_from_ms(0).unwrap(), Some(Duration::ZERO));
        assert!(timeout_from_ms(-2).is_err());
        assert!(timeout_from_ms(SFT_MAX_TIMEOUT_MS + 1).is_err());
    }
}
