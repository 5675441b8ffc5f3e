//! Test hooks, built only with the `testing` feature: they make the library
//! panic on purpose so the C tests can show that no panic crosses the boundary.

use std::ffi::c_char;

use super::boundary::{borrow_str, call, call_returning_string};
use super::global::process_manager;
use super::SftResult;
use crate::{Error, TaskContext, TaskFailure};

/// Test hook: panics inside an export; returns `SFT_ERR_INTERNAL`.
#[no_mangle]
pub extern "C" fn sft_testing_panic_in_call() -> SftResult {
    call(|| panic!("deliberate test panic in a call"))
}

/// Test hook: panics inside an export that returns a string; returns NULL.
#[no_mangle]
pub extern "C" fn sft_testing_panic_in_string_call() -> *mut c_char {
    call_returning_string(|| panic!("deliberate test panic in a string call"))
}

/// Test hook: submits a Rust task that panics when the worker runs it.
///
/// # Safety
/// `task_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_testing_submit_panicking_task(task_id: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        let panicking = |_: &TaskContext<'_>| -> Result<(), TaskFailure> { panic!("deliberate test panic in a task") };
        process_manager().submit(Some(task_id), panicking).map(drop).map_err(|rejected| rejected.error)
    })
}

/// Test hook: installs a listener that panics on every event.
#[no_mangle]
pub extern "C" fn sft_testing_install_panicking_listener() -> SftResult {
    call(|| {
        process_manager().set_listener(Some(std::sync::Arc::new(|_: &crate::TaskEvent| panic!("deliberate test panic in a listener"))));
        Ok::<(), Error>(())
    })
}
