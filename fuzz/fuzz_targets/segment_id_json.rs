//! Fuzzes segment ids: the same bytes go to `sft_add_completed_segment_json`
//! and `sft_add_error_json` (a JSON integer or string literal, kept with its
//! type) and to `sft_add_completed_segment` / `sft_add_error` (a plain string,
//! kept as a JSON string, byte for byte). Each input gets a fresh PENDING task,
//! cancelled afterwards; the status must hold exactly the accepted segments.
#![no_main]

mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use storyflow_tasks::ffi::*;

/// The default `max_task_id_bytes`, which also bounds text segment ids.
const MAX_ID_BYTES: usize = 256;
/// The default `max_extra_json_bytes`, which bounds the segment-id JSON.
const MAX_JSON_BYTES: usize = 64 * 1024;

/// The segment id the JSON variants must store, or `None` if they must refuse it.
fn expected_from_json(bytes: &[u8]) -> Option<Value> {
    if bytes.len() > MAX_JSON_BYTES {
        return None;
    }
    match serde_json::from_slice::<Value>(bytes).ok()? {
        Value::String(text) if text.len() <= MAX_ID_BYTES => Some(Value::String(text)),
        Value::Number(number) => number.as_i64().map(Value::from),
        _ => None,
    }
}

/// The segment id the plain variants must store, or `None` if they must refuse it.
fn expected_plain(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    (text.len() <= MAX_ID_BYTES).then(|| Value::from(text))
}

fn check(code: SftResult, expected: &Option<Value>, what: &str, input: &[u8]) {
    match expected {
        Some(_) => assert_eq!(code, SftResult::SFT_OK, "{what} refused {input:?}: {}", last_error()),
        None => {
            assert_eq!(code, SftResult::SFT_ERR_INVALID_ARGUMENT, "{what} accepted {input:?}");
            assert!(!last_error().is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    worker_holder();
    let segment = c_string(data);
    let bytes = segment.to_bytes();
    let task = submit_external(None);
    let (url, message) = (c"/media/audio/1.wav", c"voice not found");
    let from_json = expected_from_json(bytes);
    let plain = expected_plain(bytes);
    // SAFETY: valid NUL-terminated strings for every call.
    unsafe {
        check(sft_add_completed_segment_json(task.as_ptr(), segment.as_ptr(), url.as_ptr(), 2.5), &from_json, "segment_json", bytes);
        check(sft_add_error_json(task.as_ptr(), segment.as_ptr(), message.as_ptr()), &from_json, "error_json", bytes);
        check(sft_add_completed_segment(task.as_ptr(), segment.as_ptr(), url.as_ptr(), 0.0), &plain, "segment", bytes);
        check(sft_add_error(task.as_ptr(), segment.as_ptr(), message.as_ptr()), &plain, "error", bytes);
    }
    let status = status(&task).expect("the task exists");
    check_status_shape(&status);
    assert_eq!(status["status"], "PENDING");
    let expected_ids: Vec<&Value> = [&from_json, &plain].into_iter().flatten().collect();
    let segment_ids: Vec<&Value> = status["completed_segments"].as_array().unwrap().iter().map(|s| &s["segment_id"]).collect();
    let error_ids: Vec<&Value> = status["errors"].as_array().unwrap().iter().map(|e| &e["segment_id"]).collect();
    assert_eq!(segment_ids, expected_ids, "segments of {bytes:?}");
    assert_eq!(error_ids, expected_ids, "errors of {bytes:?}");
    assert_eq!(status["revision"].as_u64(), Some(1 + 2 * expected_ids.len() as u64));
    // SAFETY: a valid NUL-terminated id.
    assert_eq!(unsafe { sft_cancel_task(task.as_ptr()) }, SftResult::SFT_OK);
});
