//! Named handlers: work any worker of the service can run because it is named, not a
//! function pointer: registering handlers, submitting named tasks, checkpoints.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::boundary::{borrow_optional_str, borrow_str, call, OutString};
use super::global::process_manager;
use super::{SftHandlerFn, SftResult};
use crate::{Error, HandlerFn, Schedule, TaskFailure};

/// A C handler with its data.
struct ForeignHandler {
    run: unsafe extern "C" fn(*const c_char, *const c_char, *mut c_void) -> i32,
    handler_data: *mut c_void,
}

// SAFETY: by registering, the caller hands `handler_data` to the worker thread for as long
// as the process lives, as sft_register_handler documents; the library only passes it through.
unsafe impl Send for ForeignHandler {}
// SAFETY: as above: the handler is only ever called on the worker thread.
unsafe impl Sync for ForeignHandler {}

impl ForeignHandler {
    fn call(&self, task_id: &str, payload_json: &str) -> Result<(), TaskFailure> {
        let task_id = CString::new(task_id).map_err(|_| TaskFailure::Message("task id contains NUL".into()))?;
        // serde_json escapes NUL, so JSON text never holds one.
        let payload = CString::new(payload_json).map_err(|_| TaskFailure::Message("payload contains NUL".into()))?;
        // SAFETY: `run` is the caller's handler, called as documented: both strings live
        // for the call and `handler_data` is the caller's pointer.
        let code = unsafe { (self.run)(task_id.as_ptr(), payload.as_ptr(), self.handler_data) };
        if code == 0 {
            Ok(())
        } else {
            Err(TaskFailure::Code(code))
        }
    }
}

/// Registers a C handler for the named tasks of `name`: each runs on the
/// worker thread as `handler(task_id, payload_json, handler_data)`, one at a
/// time in the one FIFO; 0 completes it, anything else fails it (never
/// retried). A panic inside the library during the call is contained like a
/// task function's. Registering makes this process a worker for named tasks:
/// its worker starts now, and every task of `name` waiting for a handler is put
/// back at the head of the queue, in submission order. `handler_data` must
/// live as long as the process. Errors: `SFT_ERR_DUPLICATE_ID` (`name` already
/// registered in this process, by a C handler or a runner),
/// `SFT_ERR_INVALID_ARGUMENT` (NULL handler, empty or over-long name, invalid
/// UTF-8).
///
/// # Safety
/// `name` is NULL or NUL-terminated; `handler` is safe to call on the worker
/// thread with `handler_data` for as long as the process lives.
#[no_mangle]
pub unsafe extern "C" fn sft_register_handler(name: *const c_char, handler: SftHandlerFn, handler_data: *mut c_void) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NULL or a NUL-terminated string.
        let name = unsafe { borrow_str(name, "name") }?;
        let Some(run) = handler else { return Err(Error::invalid("handler is NULL")) };
        let foreign = ForeignHandler { run, handler_data };
        let handler: HandlerFn = Arc::new(move |context, payload| foreign.call(context.task_id(), payload.get()));
        process_manager().register_handler(name, handler)
    })
}

/// Makes `runner` serve the named tasks of `name`: `sft_runner_next` hands
/// each over with `"handler"`, `"payload"`, `"attempt"` and `"checkpoint"`
/// filled, and the runner finishes it with `sft_runner_finish`. Registering
/// starts the worker and puts the tasks of `name` waiting for a handler back at
/// the head of the queue; `sft_runner_close` unregisters the name. Errors as
/// `sft_register_handler`, `SFT_ERR_NOT_FOUND` (unknown runner),
/// `SFT_ERR_SHUT_DOWN` (a closing runner).
///
/// # Safety
/// `name` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_runner_add_handler(runner: u64, name: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NULL or a NUL-terminated string.
        let name = unsafe { borrow_str(name, "name") }?;
        process_manager().add_runner_handler(runner, name)
    })
}

/// Queues a named task for the handler `handler`, with `payload_json` (any JSON
/// text, at most `max_extra_json_bytes`; NULL is `null`) as its input.
/// `task_id` NULL makes a new UUIDv4; `*out_task_id` as in `sft_submit_task`.
/// A task whose handler no process registered stays `PENDING` with
/// `"queue_position": null` until one is registered, without holding up the
/// tasks behind it. Errors as `sft_submit_task`, and
/// `SFT_ERR_INVALID_ARGUMENT` for a bad handler name or payload (malformed, a
/// lone surrogate escape, a number that is not a finite double, too long).
///
/// # Safety
/// The strings are NULL or NUL-terminated; `out_task_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_submit_named(
    handler: *const c_char,
    payload_json: *const c_char,
    task_id: *const c_char,
    out_task_id: *mut *mut c_char,
) -> SftResult {
    // SAFETY: the caller's guarantees are those of sft_submit_named_with_options with NULL options.
    unsafe { sft_submit_named_with_options(handler, payload_json, task_id, std::ptr::null(), out_task_id) }
}

/// As `sft_submit_named`, scheduled by `options_json` (NULL, or `{"priority": …,
/// "deadline": …}` as in `sft_submit_task_with_options`, whose rules and errors apply).
/// A handler yields with `sft_yield_task` and is called again for the task later,
/// with the same payload; the task's checkpoint says where it left off.
///
/// # Safety
/// The strings are NULL or NUL-terminated; `out_task_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_submit_named_with_options(
    handler: *const c_char,
    payload_json: *const c_char,
    task_id: *const c_char,
    options_json: *const c_char,
    out_task_id: *mut *mut c_char,
) -> SftResult {
    // SAFETY: the caller guarantees `out_task_id` is NULL or writable.
    let out = unsafe { OutString::new(out_task_id) };
    call(|| {
        // SAFETY: the caller guarantees NULL or NUL-terminated strings.
        let (handler, payload_json, task_id, options) = unsafe {
            (
                borrow_str(handler, "handler")?,
                borrow_optional_str(payload_json, "payload_json")?,
                borrow_optional_str(task_id, "task_id")?,
                borrow_optional_str(options_json, "options_json")?,
            )
        };
        let schedule = Schedule::from_json(options)?;
        let id = process_manager().submit_named_with(handler, payload_json, task_id, schedule)?;
        out.set(|| id.to_string());
        Ok(())
    })
}

/// Records the task's checkpoint (any JSON text, at most
/// `max_extra_json_bytes`), shown as `"checkpoint"` in its status and handed
/// back to a resumed attempt; the latest call wins. It counts as a progress
/// change (revision and a `progress` event). Errors: `SFT_ERR_NOT_FOUND`,
/// `SFT_ERR_INVALID_STATE` (the task is finished: its status is final),
/// `SFT_ERR_INVALID_ARGUMENT` (NULL, malformed, lone surrogate, too long).
///
/// # Safety
/// The strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_set_checkpoint(task_id: *const c_char, checkpoint_json: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NUL-terminated strings.
        let (task_id, checkpoint_json) = unsafe { (borrow_str(task_id, "task_id")?, borrow_str(checkpoint_json, "checkpoint_json")?) };
        process_manager().set_checkpoint(task_id, checkpoint_json)
    })
}
