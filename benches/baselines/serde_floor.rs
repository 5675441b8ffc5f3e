//! The floor for a status read: serde_json writing the same k=0 status from a
//! plain struct into a fresh `String`, with no lookup, lock or copy around it.
//! Beside it, in the same process and alternating batch by batch, the library's
//! own `sft_get_task_status` + `sft_string_free` on that task.

use std::ffi::CString;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::Value;

use storyflow_tasks::ffi::{sft_get_task_status, sft_string_free};

use crate::measure::Report;
use crate::wire::WireStatus;

/// Same batch and sample count as the C side's `c_status_ns_k0`.
const BATCH: usize = 20_000;
const SAMPLES: usize = 15;

/// A PROCESSING task with no segments, held by the process-wide manager the C ABI uses.
fn hold_k0_task() -> (String, CString) {
    let manager = storyflow_tasks::ffi::process_manager();
    let task_id = manager.submit_external(None).expect("a fresh manager accepts a task");
    manager.wait_for_change(&task_id, 1, Some(Duration::from_secs(10))).expect("the worker starts it");
    let status = manager.status_json(&task_id).expect("the task exists");
    (status, CString::new(task_id.to_string()).expect("ids have no NUL"))
}

/// The same call the C side times, made from Rust in this process: tells apart
/// the C call's own cost from machine load that differs between two processes.
fn ffi_status_batch(task_id: &CString) -> f64 {
    let start = Instant::now();
    for _ in 0..BATCH {
        // SAFETY: a NUL-terminated id; the returned string is the library's and freed once.
        unsafe { sft_string_free(black_box(sft_get_task_status(task_id.as_ptr()))) };
    }
    start.elapsed().as_nanos() as f64 / BATCH as f64
}

pub fn run() -> Report {
    let (library_json, task_id) = hold_k0_task();
    let status: WireStatus<String, Value, Value> = serde_json::from_str(&library_json).expect("the library's status parses");
    let rewritten = serde_json::to_string(&status).expect("a status serialises");
    // The same status, or the floor would be a floor of something else. Only the
    // times may differ, in their last digit: serde_json's default float parsing
    // is not exact, so a time read back can print one digit shorter.
    let without_times = |json: &str| {
        let mut value: Value = serde_json::from_str(json).expect("a status is JSON");
        for key in ["created_at", "started_at", "completed_at"] {
            value[key] = Value::Null;
        }
        value
    };
    assert_eq!(without_times(&rewritten), without_times(&library_json), "the floor writes the library's status");
    assert!(rewritten.len().abs_diff(library_json.len()) <= 2, "the floor writes as many bytes");
    let (mut floor, mut through_ffi) = (Vec::with_capacity(SAMPLES), Vec::with_capacity(SAMPLES));
    for _ in 0..SAMPLES {
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(serde_json::to_string(black_box(&status)).expect("a status serialises"));
        }
        floor.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        through_ffi.push(ffi_status_batch(&task_id));
    }
    let manager = storyflow_tasks::ffi::process_manager();
    manager.finish(task_id.to_str().expect("UTF-8 id"), Ok(())).expect("the task awaits its finish");
    Report::default()
        .samples("serde_status_ns_k0", &floor)
        .samples("ffi_status_ns_k0_beside_floor", &through_ffi)
        .info("json_bytes", library_json.len())
}
