//! Fuzzes `sft_configure`. No task is ever submitted here, so the
//! configuration stays changeable: each input is applied on top of the
//! defaults, checked against an independent validator, and the defaults are
//! restored afterwards. Refused input must leave the configuration unchanged;
//! accepted input must show in `sft_get_config` key by key.
#![no_main]

mod common;

use std::ffi::CString;

use common::*;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use storyflow_tasks::ffi::*;

/// The documented keys: (name, kind).
const KEYS: [(&str, Kind); 12] = [
    ("cleanup_threshold_secs", Kind::Seconds),
    ("max_pending_tasks", Kind::Count),
    ("max_retained_finished", Kind::Count),
    ("max_task_id_bytes", Kind::Positive),
    ("max_message_bytes", Kind::Positive),
    ("max_url_bytes", Kind::Positive),
    ("max_extra_json_bytes", Kind::Positive),
    ("max_segments_per_task", Kind::Count),
    ("max_errors_per_task", Kind::Count),
    ("event_buffer_capacity", Kind::Positive),
    ("store", Kind::Store),
    ("max_attempts", Kind::Attempts),
];

#[derive(Clone, Copy)]
enum Kind {
    /// A finite number >= 0.
    Seconds,
    /// An integer >= 0.
    Count,
    /// An integer >= 1.
    Positive,
    /// `"memory"` or `"sqlite:<path>"` with a path (opened only at first use, never here).
    Store,
    /// An integer from 1 to 2^32-1.
    Attempts,
}

fn valid(kind: Kind, value: &Value) -> bool {
    match kind {
        Kind::Seconds => value.as_f64().is_some_and(|v| v.is_finite() && v >= 0.0),
        Kind::Count => value.as_u64().is_some(),
        Kind::Positive => value.as_u64().is_some_and(|v| v >= 1),
        Kind::Store => value.as_str().is_some_and(|v| v == "memory" || v.strip_prefix("sqlite:").is_some_and(|path| !path.is_empty())),
        Kind::Attempts => value.as_u64().is_some_and(|v| (1..=u64::from(u32::MAX)).contains(&v)),
    }
}

/// The settings the input names, if the input must be accepted.
fn expected_overrides(bytes: &[u8]) -> Option<Map<String, Value>> {
    let Value::Object(settings) = serde_json::from_slice::<Value>(bytes).ok()? else { return None };
    for (key, value) in &settings {
        let (_, kind) = KEYS.iter().find(|(name, _)| name == key)?;
        if !valid(*kind, value) {
            return None;
        }
    }
    Some(settings)
}

fn config() -> Value {
    json(&take(sft_get_config()).expect("the configuration"))
}

fn same_setting(kind: Kind, a: &Value, b: &Value) -> bool {
    match kind {
        // Exactly: the library enables serde_json's float_roundtrip, so a value parsed on its
        // way in and out comes back bit for bit (before, 1.7777777777e46 came back 1 ulp off).
        Kind::Seconds => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a.to_bits() == b.to_bits(),
            _ => false,
        },
        Kind::Count | Kind::Positive | Kind::Attempts => a.as_u64() == b.as_u64(),
        Kind::Store => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let defaults = config();
    let text = c_string(data);
    // SAFETY: a valid NUL-terminated string.
    let result = unsafe { sft_configure(text.as_ptr()) };
    let after = config();
    match expected_overrides(text.to_bytes()) {
        Some(overrides) => {
            assert_eq!(result, SftResult::SFT_OK, "refused {text:?}: {}", last_error());
            for (key, kind) in KEYS {
                let expected = overrides.get(key).unwrap_or(&defaults[key]);
                assert!(same_setting(kind, &after[key], expected), "{key} is {} after {text:?}", after[key]);
            }
        }
        None => {
            assert_eq!(result, SftResult::SFT_ERR_INVALID_ARGUMENT, "accepted {text:?}");
            assert!(!last_error().is_empty());
            assert_eq!(after, defaults, "a refused configuration changed the settings");
        }
    }
    let restore = CString::new(defaults.to_string()).unwrap();
    // SAFETY: a valid NUL-terminated string.
    assert_eq!(unsafe { sft_configure(restore.as_ptr()) }, SftResult::SFT_OK);
    assert_eq!(config(), defaults);
    assert_eq!(after.as_object().map(Map::len), Some(KEYS.len()), "sft_get_config must name every key");
});
