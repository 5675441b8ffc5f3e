//! Fuzzes `extra_json` of `sft_update_task_progress`: the first 16 bytes are
//! `current` and `total`, the rest the JSON text. Accepted exactly when it is a
//! UTF-8 JSON object without the reserved keys and within the size limit; then
//! the status progress is current/total/percentage followed by the extra keys
//! with their JSON types and order kept: integers exactly as written, other
//! numbers as the double they denote (refused when that is not finite).
//! Refused input changes nothing.
#![no_main]

mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use storyflow_tasks::ffi::*;

/// The default `max_extra_json_bytes`.
const MAX_EXTRA_BYTES: usize = 64 * 1024;

/// The reference's canonical numbers: integers as written ("-0" is 0), others as their
/// double in its shortest form; `None` if a number is not a finite double.
fn canonical(value: Value) -> Option<Value> {
    Some(match value {
        Value::Number(number) => {
            let text = number.as_str();
            let digits = text.strip_prefix('-').unwrap_or(text);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                Value::Number(if text == "-0" { Number::from(0) } else { number })
            } else {
                let double: f64 = text.parse().ok()?;
                Value::Number(Number::from_f64(double).filter(|_| double.is_finite())?)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect::<Option<_>>()?),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| canonical(v).map(|v| (k, v))).collect::<Option<_>>()?),
        other => other,
    })
}

/// What the reference says the progress object becomes, or `None` if the input must be refused.
fn expected_progress(current: u64, total: u64, extra: Option<&[u8]>) -> Option<String> {
    let percentage = if total == 0 { 0 } else { (u128::from(current) * 100 / u128::from(total)).min(100) };
    let mut progress = Map::new();
    progress.insert("current".into(), current.into());
    progress.insert("total".into(), total.into());
    progress.insert("percentage".into(), (percentage as u64).into());
    if let Some(extra) = extra {
        if extra.len() > MAX_EXTRA_BYTES {
            return None;
        }
        // from_slice refuses invalid UTF-8 as the C API must.
        let Ok(Value::Object(extra)) = serde_json::from_slice::<Value>(extra) else { return None };
        let Value::Object(extra) = canonical(Value::Object(extra))? else { return None };
        for (key, value) in extra {
            if progress.contains_key(&key) {
                return None;
            }
            progress.insert(key, value);
        }
    }
    Some(Value::Object(progress).to_string())
}

/// The progress object exactly as the library wrote it.
fn raw_progress(task_id: &std::ffi::CStr) -> String {
    #[derive(serde::Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        progress: &'a serde_json::value::RawValue,
    }
    // SAFETY: a valid NUL-terminated id.
    let text = take(unsafe { sft_get_task_status(task_id.as_ptr()) }).expect("the task exists");
    let status: Status<'_> = serde_json::from_str(&text).expect("status JSON");
    status.progress.get().to_owned()
}

fuzz_target!(|data: &[u8]| {
    let holder = worker_holder();
    let (numbers, text) = data.split_at(data.len().min(16));
    let mut padded = [0u8; 16];
    padded[..numbers.len()].copy_from_slice(numbers);
    let current = u64::from_le_bytes(padded[..8].try_into().unwrap());
    let total = u64::from_le_bytes(padded[8..].try_into().unwrap());
    // An input of exactly 16 bytes or less passes NULL: no extra keys.
    let extra = (data.len() > 16).then(|| c_string(text));

    let before = status(holder).expect("the holder task exists");
    let extra_ptr = extra.as_ref().map_or(std::ptr::null(), |e| e.as_ptr());
    // SAFETY: valid NUL-terminated strings (or NULL) for the call.
    let result = unsafe { sft_update_task_progress(holder.as_ptr(), current, total, extra_ptr) };
    let after = status(holder).expect("the holder task exists");
    check_status_shape(&after);
    // Compared as the library's own text: parsing its floats back would lose
    // the last bit (serde_json parses best-effort unless float_roundtrip is on).
    let after_progress = raw_progress(holder);
    match expected_progress(current, total, extra.as_ref().map(|e| e.to_bytes())) {
        Some(progress) => {
            assert_eq!(result, SftResult::SFT_OK, "refused {:?}: {}", extra, last_error());
            assert_eq!(after_progress, progress, "progress for {extra:?}");
            assert_eq!(after["revision"].as_u64(), before["revision"].as_u64().map(|r| r + 1));
        }
        None => {
            assert_eq!(result, SftResult::SFT_ERR_INVALID_ARGUMENT, "accepted {extra:?}");
            assert!(!last_error().is_empty());
            assert_eq!(after, before, "a refused update changed the task");
        }
    }
});
