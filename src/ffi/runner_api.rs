//! Runners: how a binding runs its tasks (Python functions, JS functions) on its
//! own thread or event loop while the core keeps the one FIFO and the one-at-a-time rule.

use std::ffi::c_char;

use super::boundary::{borrow_optional_str, borrow_str, call, timeout_from_ms, OutString};
use super::global::process_manager;
use super::SftResult;
use crate::json::parse_string_lossy;
use crate::{Error, Schedule, TaskFailure};

/// Registers a runner: a binding's thread or event loop that runs the tasks
/// submitted to it. Stores its id in `*out_runner`. Runner ids are plain
/// numbers, never reused: a stale or unknown one gets `SFT_ERR_NOT_FOUND`.
/// Errors: `SFT_ERR_INVALID_ARGUMENT` (NULL `out_runner`).
///
/// # Safety
/// `out_runner` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_runner_register(out_runner: *mut u64) -> SftResult {
    call(|| {
        if out_runner.is_null() {
            return Err(Error::invalid("out_runner is NULL"));
        }
        let id = process_manager().register_runner();
        // SAFETY: non-NULL and writable by the caller's guarantee.
        unsafe { *out_runner = id };
        Ok(())
    })
}

/// Queues a task that `runner` runs. When the worker reaches it, it becomes
/// `PROCESSING` (a "started" event) and is handed to the runner's
/// `sft_runner_next`; the worker stays with it (one at a time, one FIFO shared
/// with every other task of the process) until `sft_runner_finish`. Ids and
/// errors as `sft_submit_task`, `SFT_ERR_NOT_FOUND` for an unknown runner and
/// `SFT_ERR_SHUT_DOWN` for one that is closing.
///
/// # Safety
/// `task_id` is NULL or NUL-terminated; `out_task_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_submit_runner_task(runner: u64, task_id: *const c_char, out_task_id: *mut *mut c_char) -> SftResult {
    // SAFETY: the caller's guarantees are those of sft_submit_runner_task_with_options with NULL options.
    unsafe { sft_submit_runner_task_with_options(runner, task_id, std::ptr::null(), out_task_id) }
}

/// As `sft_submit_runner_task`, scheduled by `options_json` (NULL, or
/// `{"priority": …, "deadline": …}` as in `sft_submit_task_with_options`, whose
/// rules and errors apply). A runner task that yields (`sft_yield_task` before
/// `sft_runner_finish`) is handed to the runner again later, its assignment's
/// `"yields"` counting how often it yielded; the runner keeps its function meanwhile.
///
/// # Safety
/// `task_id` and `options_json` are NULL or NUL-terminated; `out_task_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_submit_runner_task_with_options(
    runner: u64,
    task_id: *const c_char,
    options_json: *const c_char,
    out_task_id: *mut *mut c_char,
) -> SftResult {
    // SAFETY: the caller guarantees `out_task_id` is NULL or writable.
    let out = unsafe { OutString::new(out_task_id) };
    call(|| {
        // SAFETY: the caller guarantees NULL or NUL-terminated strings.
        let (task_id, options) = unsafe { (borrow_optional_str(task_id, "task_id")?, borrow_optional_str(options_json, "options_json")?) };
        let schedule = Schedule::from_json(options)?;
        let id = process_manager().submit_to_runner_with(runner, task_id, schedule)?;
        out.set(|| id.to_string());
        Ok(())
    })
}

/// Blocks until the worker hands this runner something, or `timeout_ms`
/// passes (`SFT_WAIT_FOREVER`: no limit). On `SFT_OK`, `*out_assignment_json`
/// (free it with `sft_string_free`) is
/// `{"task_id":"…","run":true,"handler":null,"payload":null,"attempt":1,"checkpoint":null,"yields":0}`.
///
/// `"run": false` means the task was released without running (cancelled or
/// shut down before it started): forget its function and do not finish it.
/// `"handler"` and `"payload"` are null for function tasks; `"checkpoint"` is the
/// task's last checkpoint (null if none); `"yields"` more than 0 means the task
/// yielded before and resumes now (its status has what it did so far).
/// With `"run": true` the calling thread is inside that task until it is
/// finished: on that thread, waiting for a `PENDING` task, or for that task
/// itself to finish, returns `SFT_ERR_INVALID_STATE` (it would deadlock).
///
/// Errors: `SFT_ERR_TIMEOUT` (nothing in time), `SFT_ERR_SHUT_DOWN` (the runner
/// was closed, or the manager shut down with nothing left for it),
/// `SFT_ERR_NOT_FOUND` (unknown runner), `SFT_ERR_INVALID_ARGUMENT` (bad
/// timeout, NULL `out_assignment_json`).
///
/// # Safety
/// `out_assignment_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_runner_next(runner: u64, timeout_ms: i64, out_assignment_json: *mut *mut c_char) -> SftResult {
    // SAFETY: the caller guarantees `out_assignment_json` is NULL or writable.
    let out = unsafe { OutString::new(out_assignment_json) };
    call(|| {
        // Without somewhere to put it, an assignment taken from the mailbox would be lost.
        if !out.is_wanted() {
            return Err(Error::invalid("out_assignment_json is NULL"));
        }
        let assignment = process_manager().next_assignment(runner, timeout_from_ms(timeout_ms)?)?;
        out.set(|| assignment.to_json());
        Ok(())
    })
}

/// Finishes the task this runner was handed, from any thread: `code` 0
/// completes it; any other code fails it with `message_json` (NULL, or a JSON
/// string literal, so that NUL and every character round-trip; NULL uses the
/// text set by `sft_set_task_error` or a generic one naming the code). It ends
/// `CANCELLED` instead if cancellation was requested. After `sft_yield_task` the
/// run ends as a yield instead: the task is back in the queue when this returns
/// (`PENDING`, or handed over again already if nothing was ahead of it).
///
/// It cannot fail on the message: one over `max_message_bytes` is shortened at
/// a character boundary and ends with " [shortened from N bytes]"; a lone
/// surrogate escape in it becomes U+FFFD. The status is final when it returns.
/// Errors: `SFT_ERR_NOT_FOUND` (unknown runner or task),
/// `SFT_ERR_INVALID_STATE` (not this runner's running task),
/// `SFT_ERR_INVALID_ARGUMENT` only if `message_json` is not a JSON string.
///
/// # Safety
/// `task_id` and `message_json` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_runner_finish(runner: u64, task_id: *const c_char, code: i32, message_json: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NUL-terminated strings.
        let (task_id, message_json) = unsafe { (borrow_str(task_id, "task_id")?, borrow_optional_str(message_json, "message_json")?) };
        let outcome = match (code, message_json) {
            (0, _) => Ok(()),
            (_, Some(text)) => Err(TaskFailure::Message(parse_string_lossy("message_json", text)?)),
            (code, None) => Err(TaskFailure::Code(code)),
        };
        process_manager().finish_runner_task(runner, task_id, outcome)
    })
}

/// Closes a runner: its queued tasks become `CANCELLED` ("its runner closed
/// before it ran"); its running task is asked to cancel and given `timeout_ms`
/// to finish, then `FAILED` ("its runner closed while it was running"); a
/// blocked `sft_runner_next` returns `SFT_ERR_SHUT_DOWN`. While it waits, the
/// runner's `sft_runner_finish` of that task still works, and the close returns
/// as soon as the task is final; a new `sft_submit_runner_task` to the runner
/// gets `SFT_ERR_SHUT_DOWN`. The id is unknown once it returns. For interpreter
/// and process exit. Errors: `SFT_ERR_NOT_FOUND` (unknown or already closing),
/// `SFT_ERR_INVALID_ARGUMENT` (bad timeout).
#[no_mangle]
pub extern "C" fn sft_runner_close(runner: u64, timeout_ms: i64) -> SftResult {
    call(|| process_manager().close_runner(runner, timeout_from_ms(timeout_ms)?))
}
