//! The C ABI: a thin boundary over the core.
//!
//! Every export runs behind [`boundary`]'s panic guard, checks its arguments,
//! borrows input strings for the call only, and returns library-allocated
//! strings that the caller frees with `sft_string_free`. All exports share one
//! process-wide [`crate::TaskManager`], created on first use.

mod boundary;
mod core_api;
mod global;
mod lifecycle;
mod named_api;
mod runner_api;
#[cfg(feature = "testing")]
mod testing;

pub use core_api::*;
pub use global::process_manager;
pub use lifecycle::*;
pub use named_api::*;
pub use runner_api::*;
#[cfg(feature = "testing")]
pub use testing::*;

use std::ffi::{c_char, c_void};

/// The outcome of a call. `SFT_OK` is 0; every other value is an error whose
/// message `sft_last_error_message` returns on the same thread.
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftResult {
    /// Success.
    SFT_OK = 0,
    /// No task with that id is in the registry.
    SFT_ERR_NOT_FOUND = 1,
    /// NULL where not allowed, invalid UTF-8, malformed JSON, a bad number, or a value over a limit.
    SFT_ERR_INVALID_ARGUMENT = 2,
    /// A task with that id is already in the registry.
    SFT_ERR_DUPLICATE_ID = 3,
    /// The queue holds `max_pending_tasks` tasks already.
    SFT_ERR_QUEUE_FULL = 4,
    /// The manager was shut down: no new tasks.
    SFT_ERR_SHUT_DOWN = 5,
    /// The call does not fit the task's or the manager's state.
    SFT_ERR_INVALID_STATE = 6,
    /// A wait ended before the awaited change.
    SFT_ERR_TIMEOUT = 7,
    /// A bug inside the library was caught; the manager keeps working.
    SFT_ERR_INTERNAL = 8,
}

/// A task function, run on the worker thread with no library lock held.
///
/// `task_id` is valid for the duration of the call. Return 0 for success
/// (`COMPLETED`); any other value fails the task (`FAILED`) with the text given
/// earlier to `sft_set_task_error`, or a generic one naming the code. It must
/// not unwind (throw a C++ exception or `longjmp`) out of the call.
pub type SftTaskFn = Option<unsafe extern "C" fn(task_id: *const c_char, user_data: *mut c_void) -> i32>;

/// A named handler: runs each named task of its name on the worker thread as
/// `handler(task_id, payload_json, handler_data)`.
///
/// `task_id` and `payload_json` (the task's payload as JSON text, `null` when
/// none was given) are valid for the duration of the call. Return 0 for
/// success (`COMPLETED`); any other value fails the task (`FAILED`, never
/// retried) with the text given to `sft_set_task_error`, or a generic one
/// naming the code. It must not unwind (throw a C++ exception or `longjmp`)
/// out of the call.
pub type SftHandlerFn = Option<unsafe extern "C" fn(task_id: *const c_char, payload_json: *const c_char, handler_data: *mut c_void) -> i32>;

/// Frees a task's `user_data`; called exactly once, with no library lock held.
pub type SftFreeFn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// An event listener: `event_json` is one change-feed event, valid for the call only.
/// Called on the thread that made the change, with no library lock held; it may call the library.
pub type SftEventFn = Option<unsafe extern "C" fn(event_json: *const c_char, user_data: *mut c_void)>;

/// Pass as `timeout_ms` to wait without a time limit.
pub const SFT_WAIT_FOREVER: i64 = -1;

/// The longest finite timeout accepted, in milliseconds (one year).
pub const SFT_MAX_TIMEOUT_MS: i64 = 31_536_000_000;
