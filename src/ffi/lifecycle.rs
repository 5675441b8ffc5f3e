//! The task lifecycle: cancellation, waiting, deferred completion, the change
//! feed, listing, statistics, configuration and shutdown.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::boundary::{borrow_optional_str, borrow_str, call, call_returning_string, guard, timeout_from_ms, OutString};
use super::global::process_manager;
use super::{SftEventFn, SftResult};
use crate::{Error, Schedule, TaskEvent, TaskFailure, TaskState};

/// Cancels a task. A `PENDING` task becomes `CANCELLED` at once, never runs,
/// and its user data is freed. A `PROCESSING` task gets a cancellation request
/// (`cancel_requested` in its status, `sft_is_cancel_requested` from inside);
/// when it returns it ends `CANCELLED`. Never waits for the worker.
/// Errors: `SFT_ERR_NOT_FOUND`, `SFT_ERR_INVALID_STATE` (already finished).
///
/// # Safety
/// `task_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_cancel_task(task_id: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        process_manager().cancel(task_id).map(drop)
    })
}

/// Stores in `*out_requested` whether cancellation of the task was requested.
/// Cheap enough for a running task to poll between segments.
/// Errors: `SFT_ERR_NOT_FOUND`, `SFT_ERR_INVALID_ARGUMENT` (NULL `out_requested`).
///
/// # Safety
/// `task_id` is NULL or NUL-terminated; `out_requested` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_is_cancel_requested(task_id: *const c_char, out_requested: *mut bool) -> SftResult {
    call(|| {
        if out_requested.is_null() {
            return Err(Error::invalid("out_requested is NULL"));
        }
        // SAFETY: the caller guarantees a NUL-terminated string.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        let requested = process_manager().is_cancel_requested(task_id)?;
        // SAFETY: non-NULL and writable by the caller's guarantee.
        unsafe { *out_requested = requested };
        Ok(())
    })
}

/// Blocks until the task is `COMPLETED`, `FAILED` or `CANCELLED`, or
/// `timeout_ms` passes (`SFT_WAIT_FOREVER`: no limit). Wakes on the change
/// itself, not by polling. On `SFT_OK`, `*out_status_json` (if not NULL) gets
/// the final status; on any error it is set to NULL.
/// Errors: `SFT_ERR_NOT_FOUND`, `SFT_ERR_TIMEOUT`, `SFT_ERR_INVALID_ARGUMENT`
/// (bad timeout), `SFT_ERR_INVALID_STATE` (called from a task for a task that
/// needs the worker: it would deadlock).
///
/// # Safety
/// `task_id` is NULL or NUL-terminated; `out_status_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_wait_task(task_id: *const c_char, timeout_ms: i64, out_status_json: *mut *mut c_char) -> SftResult {
    // SAFETY: the caller guarantees `out_status_json` is NULL or writable.
    let out = unsafe { OutString::new(out_status_json) };
    call(|| {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        let status = process_manager().wait(task_id, timeout_from_ms(timeout_ms)?)?;
        out.set(|| status);
        Ok(())
    })
}

/// Long-poll: blocks until the task's `revision` is greater than
/// `after_revision` or the task is finished, or `timeout_ms` passes. On
/// `SFT_OK`, `*out_status_json` (if not NULL) gets the new status. Errors as
/// `sft_wait_task`.
///
/// # Safety
/// `task_id` is NULL or NUL-terminated; `out_status_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_wait_task_change(
    task_id: *const c_char,
    after_revision: u64,
    timeout_ms: i64,
    out_status_json: *mut *mut c_char,
) -> SftResult {
    // SAFETY: the caller guarantees `out_status_json` is NULL or writable.
    let out = unsafe { OutString::new(out_status_json) };
    call(|| {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        let status = process_manager().wait_for_change(task_id, after_revision, timeout_from_ms(timeout_ms)?)?;
        out.set(|| status);
        Ok(())
    })
}

/// Called by a running task function before it returns: hands its completion
/// off. The function's return value is then ignored and the worker stays with
/// this task (still one at a time) until `sft_finish_task` is called for it,
/// from any thread. Errors: `SFT_ERR_NOT_FOUND`, `SFT_ERR_INVALID_STATE` (not running).
///
/// # Safety
/// `task_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_defer_task(task_id: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        process_manager().defer(task_id)
    })
}

/// Finishes a deferred or external task, from any thread: `code` 0 completes
/// it; any other code fails it with `message` (or, if NULL, the text set by
/// `sft_set_task_error` or a generic one). If cancellation was requested it
/// ends `CANCELLED`. The status is final when this returns, and the worker
/// moves on; after `sft_yield_task` the task is back in the queue instead. Errors: `SFT_ERR_NOT_FOUND`, `SFT_ERR_INVALID_STATE` (not running
/// and awaiting completion), `SFT_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `task_id` and `message` are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_finish_task(task_id: *const c_char, code: i32, message: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NUL-terminated strings.
        let (task_id, message) = unsafe { (borrow_str(task_id, "task_id")?, borrow_optional_str(message, "message")?) };
        let outcome = match (code, message) {
            (0, _) => Ok(()),
            (_, Some(message)) => Err(TaskFailure::Message(message.to_owned())),
            (code, None) => Err(TaskFailure::Code(code)),
        };
        process_manager().finish(task_id, outcome)
    })
}

/// Submits a task with no function, driven from outside (a JS Promise, an
/// asyncio coroutine, a GPU queue): when the worker reaches it, it becomes
/// `PROCESSING` (a "started" event) and holds the worker until
/// `sft_finish_task`. Ids and errors as `sft_submit_task`.
///
/// # Safety
/// `task_id` is NULL or NUL-terminated; `out_task_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_submit_external_task(task_id: *const c_char, out_task_id: *mut *mut c_char) -> SftResult {
    // SAFETY: the caller's guarantees are those of sft_submit_external_task_with_options with NULL options.
    unsafe { sft_submit_external_task_with_options(task_id, std::ptr::null(), out_task_id) }
}

/// As `sft_submit_external_task`, scheduled by `options_json` (NULL, or
/// `{"priority": …, "deadline": …}` as in `sft_submit_task_with_options`, whose
/// rules and errors apply). An external task that yields (`sft_yield_task`
/// before `sft_finish_task`) is back in the queue when the finish returns, and
/// becomes `PROCESSING` again (a "started" event) when the worker reaches it.
///
/// # Safety
/// `task_id` and `options_json` are NULL or NUL-terminated; `out_task_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_submit_external_task_with_options(
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
        let id = process_manager().submit_external_with(task_id, schedule)?;
        out.set(|| id.to_string());
        Ok(())
    })
}

/// The change feed: blocks until an event with `seq > after_seq` exists or
/// `timeout_ms` passes, then stores in `*out_events_json` a JSON array of at
/// most `max_events` events, oldest first:
/// `{"seq":12,"task_id":"…","kind":"progress","status":"PROCESSING","revision":5}`
/// with `kind` one of submitted, started, progress, segment, error,
/// cancel_requested, finished. The feed keeps the newest
/// `event_buffer_capacity` events; a reader that fell behind sees a jump in
/// `seq`. Errors: `SFT_ERR_TIMEOUT` (no event), `SFT_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `out_events_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_wait_events(after_seq: u64, max_events: u32, timeout_ms: i64, out_events_json: *mut *mut c_char) -> SftResult {
    // SAFETY: the caller guarantees `out_events_json` is NULL or writable.
    let out = unsafe { OutString::new(out_events_json) };
    call(|| {
        let events = process_manager().wait_events(after_seq, max_events as usize, timeout_from_ms(timeout_ms)?)?;
        out.set(|| serde_json::to_string(&events).expect("events serialise"));
        Ok(())
    })
}

/// The `seq` of the newest event, 0 before the first: start a feed reader here
/// to see only what happens from now on.
#[no_mangle]
pub extern "C" fn sft_last_event_seq() -> u64 {
    guard(0, || process_manager().last_event_seq())
}

struct ForeignListener {
    listener: unsafe extern "C" fn(*const c_char, *mut c_void),
    user_data: *mut c_void,
}

// SAFETY: the caller of sft_set_event_listener promises that the listener may be
// called with `user_data` from any thread, as its documentation says.
unsafe impl Send for ForeignListener {}
// SAFETY: as above; the library only passes the pointer through.
unsafe impl Sync for ForeignListener {}

impl ForeignListener {
    fn notify(&self, event: &TaskEvent) {
        let Ok(json) = serde_json::to_string(event).map(CString::new) else { return };
        let Ok(json) = json else { return };
        // SAFETY: the caller's listener, called as documented, with a string valid for the call.
        unsafe { (self.listener)(json.as_ptr(), self.user_data) };
    }
}

/// Installs `listener` (NULL removes it), called with each event's JSON (the
/// format of `sft_wait_events`) on the thread that made the change, with no
/// library lock held: it may call any `sft_` function. Calls made on different
/// threads can arrive out of order; each event's `seq` gives the order. A call
/// already under way when the listener is replaced may still finish with the old one.
/// On the SQLite store a thread of the library follows the store's change feed
/// instead: the listener is called on that thread, in `seq` order, shortly after
/// each change, for the changes of every process sharing the file.
///
/// # Safety
/// `listener` must be safe to call from any thread with `user_data` until replaced.
#[no_mangle]
pub unsafe extern "C" fn sft_set_event_listener(listener: SftEventFn, user_data: *mut c_void) -> SftResult {
    call(|| {
        let listener: Option<crate::Listener> = listener.map(|listener| {
            let foreign = ForeignListener { listener, user_data };
            Arc::new(move |event: &TaskEvent| foreign.notify(event)) as crate::Listener
        });
        process_manager().set_listener(listener);
        Ok(())
    })
}

/// Stores in `*out_json` a JSON array of the statuses of every task in the
/// registry, in submission order; `status_filter` NULL for all, or a state
/// name ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED").
/// Errors: `SFT_ERR_INVALID_ARGUMENT` (unknown state name, NULL `out_json`).
///
/// # Safety
/// `status_filter` is NULL or NUL-terminated; `out_json` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_list_tasks(status_filter: *const c_char, out_json: *mut *mut c_char) -> SftResult {
    // SAFETY: the caller guarantees `out_json` is NULL or writable.
    let out = unsafe { OutString::new(out_json) };
    call(|| {
        if !out.is_wanted() {
            return Err(Error::invalid("out_json is NULL"));
        }
        // SAFETY: the caller guarantees NULL or a NUL-terminated string.
        let filter = match unsafe { borrow_optional_str(status_filter, "status_filter") }? {
            None => None,
            Some(name) => Some(TaskState::from_name(name).ok_or_else(|| {
                Error::invalid(format!("unknown status filter {name:?}: use PENDING, PROCESSING, COMPLETED, FAILED or CANCELLED"))
            })?),
        };
        let listing = process_manager().list(filter)?;
        out.set(|| listing);
        Ok(())
    })
}

/// Statistics as JSON: `counts` (tasks in the registry per state),
/// `queue_depth`, `retained`, `submitted_total`, `completed_total`,
/// `failed_total`, `cancelled_total`, `mean_run_secs`, `max_run_secs`.
/// Free it with `sft_string_free`.
#[no_mangle]
pub extern "C" fn sft_get_stats() -> *mut c_char {
    call_returning_string(|| Ok(serde_json::to_string(&process_manager().read_stats()?).expect("stats serialise")))
}

/// Applies a JSON object of settings, before or at first use (before the first
/// submit): `cleanup_threshold_secs`, `max_pending_tasks`,
/// `max_retained_finished`, `max_task_id_bytes`, `max_message_bytes`,
/// `max_url_bytes`, `max_extra_json_bytes`, `max_segments_per_task`,
/// `max_errors_per_task`, `event_buffer_capacity`, `store` (`"memory"`, the
/// default, or `"sqlite:<path>"`; when no configuration names one, the
/// environment variable `STORYFLOW_TASKS_STORE` does), `max_attempts` (>= 1,
/// default 3: how many starts a named task may have before an interruption
/// fails it). Keys left out keep their values. An unknown store kind is
/// `SFT_ERR_INVALID_ARGUMENT`; a store this build cannot run the manager on
/// yet is refused by the first submit or registration with
/// `SFT_ERR_INVALID_STATE`, leaving the configuration changeable. Errors: `SFT_ERR_INVALID_ARGUMENT` (malformed, unknown key, bad
/// value), `SFT_ERR_INVALID_STATE` (a change after the first submit).
///
/// # Safety
/// `config_json` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_configure(config_json: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let config_json = unsafe { borrow_str(config_json, "config_json") }?;
        process_manager().configure_json(config_json)
    })
}

/// The configuration in force, as a JSON object with every key. Free it with `sft_string_free`.
#[no_mangle]
pub extern "C" fn sft_get_config() -> *mut c_char {
    call_returning_string(|| Ok(process_manager().config().to_json()))
}

/// Shuts down: later submits get `SFT_ERR_SHUT_DOWN`, pending tasks become
/// `CANCELLED` (user data freed), the running task is asked to cancel and
/// waited for up to `timeout_ms` (`SFT_WAIT_FOREVER`: no limit). Reads,
/// listing and waits keep working. Returns `SFT_ERR_TIMEOUT` if the running
/// task did not finish in time (it keeps the worker until it does). Safe to
/// call again; from inside a task it does everything but wait.
#[no_mangle]
pub extern "C" fn sft_shutdown(timeout_ms: i64) -> SftResult {
    call(|| process_manager().shutdown(timeout_from_ms(timeout_ms)?))
}
