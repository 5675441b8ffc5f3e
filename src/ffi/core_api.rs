//! The core C API: submit, status, progress, segments, errors, strings, versions.

use std::ffi::{c_char, c_void, CString};

use super::boundary::{borrow_optional_str, borrow_str, call, call_returning_string, guard, into_c_string, last_error, OutString};
use super::global::process_manager;
use super::{SftFreeFn, SftResult, SftTaskFn};
use crate::{CompletedSegment, Error, ResumableBody, Schedule, SegmentError, TaskContext, TaskFailure};

/// A C task function with its user data; frees the user data exactly once when dropped.
/// It can run again (after a yield) with the same user data.
struct ForeignTask {
    run: unsafe extern "C" fn(*const c_char, *mut c_void) -> i32,
    user_data: *mut c_void,
    free_user_data: SftFreeFn,
}

// SAFETY: by submitting, the caller hands `user_data` to the worker thread, as sft_submit_task documents.
unsafe impl Send for ForeignTask {}

impl Drop for ForeignTask {
    fn drop(&mut self) {
        if let Some(free) = self.free_user_data.take() {
            // SAFETY: the caller gave this function for this pointer; `take` makes it once.
            unsafe { free(self.user_data) };
        }
    }
}

impl ResumableBody for ForeignTask {
    fn run(&mut self, context: &TaskContext<'_>) -> Result<(), TaskFailure> {
        let task_id = CString::new(context.task_id()).map_err(|_| TaskFailure::Message("task id contains NUL".into()))?;
        // SAFETY: `run` is the caller's task function, called as documented: the id
        // lives for the call and `user_data` is the caller's pointer. The worker drops
        // (frees) it right after the last run returns.
        let code = unsafe { (self.run)(task_id.as_ptr(), self.user_data) };
        if code == 0 {
            Ok(())
        } else {
            Err(TaskFailure::Code(code))
        }
    }
}

/// Submits a task: `task_fn(task_id, user_data)` runs on the worker thread, at priority 0
/// in FIFO order (see `sft_submit_task_with_options` for priorities and deadlines).
///
/// `task_id` NULL makes a new UUIDv4. If `out_task_id` is not NULL it receives
/// the id (free it with `sft_string_free`), or NULL on error.
///
/// Ownership: on `SFT_OK` the library owns `user_data` and calls
/// `free_user_data` (if not NULL) exactly once: after `task_fn` returns for the
/// last time (a task that yields with `sft_yield_task` is run again later with
/// the same `user_data`; a deferred one keeps it until `sft_finish_task`), or
/// when the task is cancelled before it ran. On any error the caller keeps it
/// and `free_user_data` is never called.
///
/// Errors: `SFT_ERR_INVALID_ARGUMENT` (NULL `task_fn`, empty or over-long id,
/// invalid UTF-8), `SFT_ERR_DUPLICATE_ID`, `SFT_ERR_QUEUE_FULL`, `SFT_ERR_SHUT_DOWN`.
///
/// # Safety
/// `task_id` is NULL or a NUL-terminated string; `out_task_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_submit_task(
    task_fn: SftTaskFn,
    user_data: *mut c_void,
    free_user_data: SftFreeFn,
    task_id: *const c_char,
    out_task_id: *mut *mut c_char,
) -> SftResult {
    // SAFETY: the caller's guarantees are those of sft_submit_task_with_options with NULL options.
    unsafe { sft_submit_task_with_options(task_fn, user_data, free_user_data, task_id, std::ptr::null(), out_task_id) }
}

/// As `sft_submit_task`, scheduled by `options_json`: NULL, or a JSON object with
/// the optional keys `"priority"` (an integer in the int32 range, default 0;
/// higher runs first, FIFO within one priority) and `"deadline"` (Unix epoch
/// seconds as a finite number >= 0, or null for none). A task still `PENDING`
/// at its deadline never starts: it becomes `FAILED` with the error "its deadline
/// passed before it started" (also at once for a deadline already past). A task
/// still running at its deadline is asked to cancel (`sft_is_cancel_requested`),
/// and ends `CANCELLED` with "its deadline passed while it was running".
///
/// Errors as `sft_submit_task`, and `SFT_ERR_INVALID_ARGUMENT` naming the key
/// for options that are not a JSON object, an unknown key, a wrong type or a
/// value out of range; nothing is queued then and the caller keeps `user_data`.
///
/// # Safety
/// `task_id` and `options_json` are NULL or NUL-terminated strings; `out_task_id`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_submit_task_with_options(
    task_fn: SftTaskFn,
    user_data: *mut c_void,
    free_user_data: SftFreeFn,
    task_id: *const c_char,
    options_json: *const c_char,
    out_task_id: *mut *mut c_char,
) -> SftResult {
    // SAFETY: the caller guarantees `out_task_id` is NULL or writable.
    let out = unsafe { OutString::new(out_task_id) };
    call(|| {
        let Some(run) = task_fn else { return Err(Error::invalid("task_fn is NULL")) };
        // SAFETY: the caller guarantees `task_id` and `options_json` are NULL or NUL-terminated.
        let (task_id, options) = unsafe { (borrow_optional_str(task_id, "task_id")?, borrow_optional_str(options_json, "options_json")?) };
        let schedule = Schedule::from_json(options)?;
        let task = ForeignTask { run, user_data, free_user_data };
        match process_manager().submit_resumable(task_id, schedule, task) {
            Ok(id) => {
                out.set(|| id.to_string());
                Ok(())
            }
            Err(mut rejected) => {
                rejected.body.free_user_data = None; // the caller keeps its user data
                Err(rejected.error)
            }
        }
    })
}

/// Whether a task of a higher priority is waiting while this task runs: the task
/// should stop at its next convenient point (between two sentences), call
/// `sft_yield_task` and return, to be run again after the urgent work. Stores
/// the answer in `*out_requested`; false for a task that is not `PROCESSING`.
/// Cheap enough to poll per sentence, like `sft_is_cancel_requested`.
/// Errors: `SFT_ERR_NOT_FOUND`, `SFT_ERR_INVALID_ARGUMENT` (NULL pointer).
///
/// # Safety
/// `task_id` is NULL or NUL-terminated; `out_requested` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn sft_is_yield_requested(task_id: *const c_char, out_requested: *mut bool) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        if out_requested.is_null() {
            return Err(Error::invalid("out_requested is NULL"));
        }
        let requested = process_manager().is_yield_requested(task_id)?;
        // SAFETY: non-NULL and writable by the caller's guarantee.
        unsafe { *out_requested = requested };
        Ok(())
    })
}

/// Says that the running task yields: called by (or for) a `PROCESSING` task
/// before its function returns, or before `sft_runner_finish` / `sft_finish_task`,
/// the end of that run then counts as a yield whatever code it returns. The task
/// goes back to `PENDING` at the head of its priority (ahead of every other task
/// of that priority) with its segments, errors, progress and checkpoint kept;
/// its status `"yields"` grows by one and `"attempt"` stays. It runs again after
/// the higher-priority work: a task function is called again with the same
/// `user_data`, a runner is handed it again (`"yields"` in the assignment). A
/// task may yield without being asked. If cancellation was requested, or its
/// deadline passed, it ends `CANCELLED` instead. Errors: `SFT_ERR_NOT_FOUND`,
/// `SFT_ERR_INVALID_STATE` (not `PROCESSING`, or running in another process).
///
/// # Safety
/// `task_id` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_yield_task(task_id: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees a NUL-terminated string.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        process_manager().yield_task(task_id)
    })
}

/// The task's status JSON (see the README for the format), or NULL if the id is
/// unknown or invalid. Free it with `sft_string_free`.
///
/// # Safety
/// `task_id` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn sft_get_task_status(task_id: *const c_char) -> *mut c_char {
    call_returning_string(|| {
        // SAFETY: the caller guarantees `task_id` is NULL or NUL-terminated.
        let task_id = unsafe { borrow_str(task_id, "task_id") }?;
        process_manager().read_status(task_id)
    })
}

/// Frees a string the library returned. NULL is fine; any other pointer must
/// come from this library and be freed once.
///
/// # Safety
/// `s` is NULL or a string returned by this library and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn sft_string_free(s: *mut c_char) {
    guard((), || {
        if !s.is_null() {
            // SAFETY: the caller guarantees `s` came from CString::into_raw here, freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// Replaces the task's progress with `current` of `total`; `percentage` is
/// `current*100/total` floored and clamped to 100 (0 when `total` is 0).
///
/// `extra_json` is NULL or a JSON object whose keys are added beside
/// `current`, `total` and `percentage` with their JSON types (those three
/// names are reserved). Integers in it are kept exactly, whatever their size;
/// other numbers must be finite doubles. Errors: `SFT_ERR_NOT_FOUND`,
/// `SFT_ERR_INVALID_STATE` (the task is finished: its status is final),
/// `SFT_ERR_INVALID_ARGUMENT` (malformed, not an object, a reserved key, a lone
/// surrogate escape, a number that is not a finite double, over `max_extra_json_bytes`).
///
/// # Safety
/// `task_id` and `extra_json` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn sft_update_task_progress(
    task_id: *const c_char,
    current: u64,
    total: u64,
    extra_json: *const c_char,
) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees both are NULL or NUL-terminated.
        let (task_id, extra_json) = unsafe { (borrow_str(task_id, "task_id")?, borrow_optional_str(extra_json, "extra_json")?) };
        process_manager().update_progress_json(task_id, current, total, extra_json)
    })
}

/// Records a finished audio segment; `segment_id` is kept as a JSON string.
///
/// `duration` is in seconds, finite and >= 0. Errors: `SFT_ERR_NOT_FOUND`,
/// `SFT_ERR_INVALID_STATE` (the task is finished: its status is final),
/// `SFT_ERR_INVALID_ARGUMENT` (NULL, invalid UTF-8, empty segment id, bad
/// duration, over a limit).
///
/// # Safety
/// The strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_add_completed_segment(
    task_id: *const c_char,
    segment_id: *const c_char,
    audio_url: *const c_char,
    duration: f64,
) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NUL-terminated strings.
        let (task_id, segment_id, audio_url) =
            unsafe { (borrow_str(task_id, "task_id")?, borrow_str(segment_id, "segment_id")?, borrow_str(audio_url, "audio_url")?) };
        let segment = CompletedSegment { segment_id: segment_id.into(), audio_url: audio_url.to_owned(), duration };
        process_manager().add_completed_segment(task_id, &segment)
    })
}

/// Records a finished audio segment given as its wire object, encoded by the
/// caller's JSON library: `{"segment_id": 7 | "7", "audio_url": "…", "duration": 2.5}`.
/// Every string round-trips exactly (NUL and non-ASCII included) and the
/// segment id keeps its JSON type; an integer id of any size is kept exactly.
/// Errors as `sft_add_completed_segment`, and `SFT_ERR_INVALID_ARGUMENT` for
/// malformed JSON, a missing or unknown key, or a lone surrogate escape.
///
/// # Safety
/// The strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_add_completed_segment_from_json(task_id: *const c_char, segment_json: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NUL-terminated strings.
        let (task_id, segment_json) = unsafe { (borrow_str(task_id, "task_id")?, borrow_str(segment_json, "segment_json")?) };
        process_manager().add_completed_segment_json(task_id, segment_json)
    })
}

/// Records a segment that failed; `segment_id` is kept as a JSON string.
/// Errors: `SFT_ERR_NOT_FOUND`, `SFT_ERR_INVALID_STATE` (the task is finished),
/// `SFT_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// The strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_add_error(task_id: *const c_char, segment_id: *const c_char, error_message: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NUL-terminated strings.
        let (task_id, segment_id, message) = unsafe {
            (borrow_str(task_id, "task_id")?, borrow_str(segment_id, "segment_id")?, borrow_str(error_message, "error_message")?)
        };
        let error = SegmentError { segment_id: segment_id.into(), error: message.to_owned() };
        process_manager().add_error(task_id, &error)
    })
}

/// Records a segment that failed, given as its wire object:
/// `{"segment_id": 3 | "3", "error": "…"}`. Errors as
/// `sft_add_completed_segment_from_json`.
///
/// # Safety
/// The strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_add_error_from_json(task_id: *const c_char, error_json: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NUL-terminated strings.
        let (task_id, error_json) = unsafe { (borrow_str(task_id, "task_id")?, borrow_str(error_json, "error_json")?) };
        process_manager().add_error_json(task_id, error_json)
    })
}

/// Sets the text the status `error` carries if the task fails (returns
/// non-zero); call it from the task before returning. The latest call wins.
/// Errors: `SFT_ERR_NOT_FOUND`, `SFT_ERR_INVALID_STATE` (already finished), `SFT_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// The strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn sft_set_task_error(task_id: *const c_char, message: *const c_char) -> SftResult {
    call(|| {
        // SAFETY: the caller guarantees NUL-terminated strings.
        let (task_id, message) = unsafe { (borrow_str(task_id, "task_id")?, borrow_str(message, "message")?) };
        process_manager().set_failure_message(task_id, message)
    })
}

/// The message of the most recent failed call on this thread, or NULL if none
/// failed yet. Free it with `sft_string_free`.
#[no_mangle]
pub extern "C" fn sft_last_error_message() -> *mut c_char {
    guard(std::ptr::null_mut(), || last_error().map_or(std::ptr::null_mut(), into_c_string))
}

/// The library version, e.g. "0.1.0". Static: do not free.
#[no_mangle]
pub extern "C" fn sft_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a result code, e.g. "SFT_ERR_NOT_FOUND"; "SFT_UNKNOWN_RESULT"
/// for a value that is not one. Static: do not free.
#[no_mangle]
pub extern "C" fn sft_result_name(result: i32) -> *const c_char {
    let name: &'static str = match result {
        0 => "SFT_OK\0",
        1 => "SFT_ERR_NOT_FOUND\0",
        2 => "SFT_ERR_INVALID_ARGUMENT\0",
        3 => "SFT_ERR_DUPLICATE_ID\0",
        4 => "SFT_ERR_QUEUE_FULL\0",
        5 => "SFT_ERR_SHUT_DOWN\0",
        6 => "SFT_ERR_INVALID_STATE\0",
        7 => "SFT_ERR_TIMEOUT\0",
        8 => "SFT_ERR_INTERNAL\0",
        _ => "SFT_UNKNOWN_RESULT\0",
    };
    name.as_ptr().cast()
}
