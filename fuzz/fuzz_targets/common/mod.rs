//! Helpers shared by the fuzz targets: C strings in and out of the real C API,
//! tracked user data, and a process-wide setup done once per fuzzing process.
#![allow(dead_code)] // each target uses its own subset

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Once;

use serde_json::Value;
use storyflow_tasks::ffi::*;

/// The configuration of the targets that submit: few finished tasks kept and
/// a short event log, so memory stays flat over millions of inputs.
pub const FUZZ_CONFIG: &str = r#"{"max_retained_finished": 8, "event_buffer_capacity": 256}"#;

/// Applies `config` once per process (before the first submission).
pub fn configure_once(config: &str) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let config = CString::new(config).unwrap();
        // SAFETY: a valid NUL-terminated string.
        let result = unsafe { sft_configure(config.as_ptr()) };
        assert_eq!(result, SftResult::SFT_OK, "the fuzz configuration was refused");
    });
}

/// The bytes up to the first NUL, as the C API would see them.
pub fn c_string(bytes: &[u8]) -> CString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    CString::new(&bytes[..end]).expect("no NUL before end")
}

/// Takes ownership of a library string, frees it with `sft_string_free`, and returns its text.
pub fn take(ptr: *mut c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-NULL string the library returned and that is freed once, here.
    let text = unsafe { CStr::from_ptr(ptr) }.to_str().expect("library strings are UTF-8").to_owned();
    // SAFETY: as above.
    unsafe { sft_string_free(ptr) };
    Some(text)
}

/// Parses a JSON text the library returned; any malformed output is a bug.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the library returned malformed JSON ({e}): {text}"))
}

/// The status of a task as JSON, or `None` if the registry does not know it.
pub fn status(task_id: &CStr) -> Option<Value> {
    // SAFETY: a valid NUL-terminated id.
    take(unsafe { sft_get_task_status(task_id.as_ptr()) }).map(|text| json(&text))
}

/// This thread's last error message; every failed call must leave one.
pub fn last_error() -> String {
    take(sft_last_error_message()).expect("a failed call left no error message")
}

/// The status keys the wire format fixes, in order.
pub const STATUS_KEYS: [&str; 19] = [
    "task_id",
    "status",
    "progress",
    "completed_segments",
    "errors",
    "created_at",
    "started_at",
    "completed_at",
    "error",
    "revision",
    "queue_position",
    "cancel_requested",
    "handler",
    "attempt",
    "checkpoint",
    "priority",
    "deadline",
    "yield_requested",
    "yields",
];

/// Checks the shape of a status object.
pub fn check_status_shape(status: &Value) {
    let object = status.as_object().expect("a status is an object");
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(keys, STATUS_KEYS, "status keys: {status}");
    let state = status["status"].as_str().expect("status is a string");
    assert!(["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"].contains(&state), "{status}");
    assert!(status["revision"].as_u64().is_some_and(|r| r >= 1), "{status}");
    assert_eq!(status["queue_position"].is_null(), state != "PENDING", "{status}");
    assert_eq!(status["completed_at"].is_null(), ["PENDING", "PROCESSING"].contains(&state), "{status}");
}

// ----- tracked user data -----

const LIVE: u64 = 0x5afe_da7a_0000_0001;
const FREED: u64 = 0xdead_da7a_0000_0002;

/// User data whose free function checks it is freed once, and counts frees.
pub struct UserData {
    magic: AtomicU64,
    /// What the task function should do (target-specific).
    pub behaviour: u32,
    /// A number for the behaviour, such as the code to return.
    pub argument: i32,
}

/// How many user data the library freed in this process.
pub static FREES: AtomicU64 = AtomicU64::new(0);

pub fn new_user_data(behaviour: u32, argument: i32) -> *mut c_void {
    Box::into_raw(Box::new(UserData { magic: AtomicU64::new(LIVE), behaviour, argument })).cast()
}

/// The free function given to the library.
pub unsafe extern "C" fn free_user_data(user_data: *mut c_void) {
    // SAFETY: the library passes back the pointer from `new_user_data`; a second
    // free would be a use-after-free that ASan reports, and the magic check
    // catches it without ASan.
    let data = unsafe { Box::from_raw(user_data.cast::<UserData>()) };
    let was = data.magic.swap(FREED, SeqCst);
    if was != LIVE {
        eprintln!("user data freed twice or never allocated (magic {was:#x})");
        std::process::abort();
    }
    FREES.fetch_add(1, SeqCst);
}

/// Frees user data the library refused (the caller still owns it).
pub fn free_refused(user_data: *mut c_void) {
    // SAFETY: the pointer came from `new_user_data` and the library did not take it.
    drop(unsafe { Box::from_raw(user_data.cast::<UserData>()) });
}

/// Reads a task function's user data.
pub unsafe fn user_data<'a>(user_data: *mut c_void) -> &'a UserData {
    // SAFETY: the library passes the pointer given at submission, still live while the task runs.
    let data = unsafe { &*user_data.cast::<UserData>() };
    assert_eq!(data.magic.load(SeqCst), LIVE, "a task ran with freed user data");
    data
}

/// A task function that succeeds at once.
pub unsafe extern "C" fn instant_task(_task_id: *const c_char, user_data: *mut c_void) -> i32 {
    // SAFETY: forwarded from the library's contract.
    unsafe { self::user_data(user_data) };
    0
}

/// Submits an external task (holds the worker once reached) and returns its id.
pub fn submit_external(task_id: Option<&CStr>) -> CString {
    let mut out = null_mut();
    let id_ptr = task_id.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: valid pointers for the call.
    let result = unsafe { sft_submit_external_task(id_ptr, &mut out) };
    assert_eq!(result, SftResult::SFT_OK, "external submit: {}", last_error());
    CString::new(take(out).expect("an id on success")).unwrap()
}

/// Blocks until the task's status is not PENDING (it started, or finished).
pub fn wait_until_started(task_id: &CStr) {
    let mut revision = 0;
    loop {
        let mut out = null_mut();
        // SAFETY: valid pointers for the call.
        let result = unsafe { sft_wait_task_change(task_id.as_ptr(), revision, 60_000, &mut out) };
        assert_eq!(result, SftResult::SFT_OK, "waiting for the start: {}", last_error());
        let status = json(&take(out).unwrap());
        if status["status"] != "PENDING" {
            return;
        }
        revision = status["revision"].as_u64().unwrap();
    }
}

/// An external task that holds the worker for the whole run, so that tasks
/// submitted after it stay PENDING (and are cancelled, not run).
pub fn worker_holder() -> &'static CString {
    static HOLDER: std::sync::OnceLock<CString> = std::sync::OnceLock::new();
    HOLDER.get_or_init(|| {
        configure_once(FUZZ_CONFIG);
        let id = submit_external(None);
        wait_until_started(&id);
        id
    })
}
