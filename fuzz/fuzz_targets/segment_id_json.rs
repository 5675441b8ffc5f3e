//! Fuzzes segment ids: the bytes go into the wire objects of
//! `sft_add_completed_segment_from_json` and `sft_add_error_from_json` as the
//! `segment_id` value (a JSON integer of any size or string, kept with its
//! type), and to `sft_add_completed_segment` / `sft_add_error` (a plain string,
//! kept as a JSON string, byte for byte). Each input gets a fresh PENDING task,
//! cancelled afterwards; the status must hold exactly the accepted segments.
#![no_main]

mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use storyflow_tasks::ffi::*;

/// The default `max_task_id_bytes`, which also bounds segment ids (text bytes or integer digits).
const MAX_ID_BYTES: usize = 256;

/// The segment id a record holding these bytes as its id must store, or `None` if it must be refused.
fn expected_from_json(record: &[u8], keys: &[&str]) -> Option<Value> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(record) else { return None };
    if map.len() != keys.len() || !keys.iter().all(|key| map.contains_key(*key)) {
        return None;
    }
    // The bytes can also repeat the other keys (the last one wins): those must be valid too.
    let fields_ok = match (map.get("audio_url"), map.get("duration"), map.get("error")) {
        (Some(Value::String(url)), Some(Value::Number(duration)), None) => {
            url.len() <= 8 * 1024 && duration.as_str().parse::<f64>().is_ok_and(|d| d.is_finite() && d >= 0.0)
        }
        (None, None, Some(Value::String(error))) => error.len() <= 64 * 1024,
        _ => false,
    };
    if !fields_ok {
        return None;
    }
    match &map["segment_id"] {
        Value::String(text) if !text.is_empty() && text.len() <= MAX_ID_BYTES => Some(Value::from(text.as_str())),
        Value::Number(number) => {
            let text = number.as_str();
            let digits = text.strip_prefix('-').unwrap_or(text);
            let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
            let canonical = if text == "-0" { Value::from(0) } else { Value::Number(number.clone()) };
            (integer && text.len() <= MAX_ID_BYTES).then_some(canonical)
        }
        _ => None,
    }
}

/// The segment id the plain variants must store, or `None` if they must refuse it.
fn expected_plain(bytes: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(bytes).ok()?;
    (!text.is_empty() && text.len() <= MAX_ID_BYTES).then(|| Value::from(text))
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

fn record(prefix: &[u8], bytes: &[u8], suffix: &[u8]) -> Vec<u8> {
    [prefix, bytes, suffix].concat()
}

fuzz_target!(|data: &[u8]| {
    worker_holder();
    let segment = c_string(data);
    let bytes = segment.to_bytes();
    let task = submit_external(None);
    let (url, message) = (c"/media/audio/1.wav", c"voice not found");
    let segment_record = record(b"{\"segment_id\":", bytes, b",\"audio_url\":\"/media/audio/1.wav\",\"duration\":2.5}");
    let error_record = record(b"{\"segment_id\":", bytes, b",\"error\":\"voice not found\"}");
    let from_segment_json = expected_from_json(&segment_record, &["segment_id", "audio_url", "duration"]);
    let from_error_json = expected_from_json(&error_record, &["segment_id", "error"]);
    let plain = expected_plain(bytes);
    let (segment_record, error_record) = (c_string(&segment_record), c_string(&error_record));
    // SAFETY: valid NUL-terminated strings for every call.
    unsafe {
        check(sft_add_completed_segment_from_json(task.as_ptr(), segment_record.as_ptr()), &from_segment_json, "segment_json", bytes);
        check(sft_add_error_from_json(task.as_ptr(), error_record.as_ptr()), &from_error_json, "error_json", bytes);
        check(sft_add_completed_segment(task.as_ptr(), segment.as_ptr(), url.as_ptr(), 0.0), &plain, "segment", bytes);
        check(sft_add_error(task.as_ptr(), segment.as_ptr(), message.as_ptr()), &plain, "error", bytes);
    }
    let status = status(&task).expect("the task exists");
    check_status_shape(&status);
    assert_eq!(status["status"], "PENDING");
    let expected_segments: Vec<&Value> = [&from_segment_json, &plain].into_iter().flatten().collect();
    let expected_errors: Vec<&Value> = [&from_error_json, &plain].into_iter().flatten().collect();
    let segment_ids: Vec<&Value> = status["completed_segments"].as_array().unwrap().iter().map(|s| &s["segment_id"]).collect();
    let error_ids: Vec<&Value> = status["errors"].as_array().unwrap().iter().map(|e| &e["segment_id"]).collect();
    assert_eq!(segment_ids, expected_segments, "segments of {bytes:?}");
    assert_eq!(error_ids, expected_errors, "errors of {bytes:?}");
    let accepted = expected_segments.len() + expected_errors.len();
    assert_eq!(status["revision"].as_u64(), Some(1 + accepted as u64));
    // SAFETY: a valid NUL-terminated id.
    assert_eq!(unsafe { sft_cancel_task(task.as_ptr()) }, SftResult::SFT_OK);
});
