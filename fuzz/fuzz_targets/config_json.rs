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
const KEYS: [(&str, Kind); 14] = [
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
    ("redis_namespace", Kind::Namespace),
    ("machine_id", Kind::Machine),
];

#[derive(Clone, Copy)]
enum Kind {
    /// A finite number >= 0.
    Seconds,
    /// An integer >= 0.
    Count,
    /// An integer >= 1.
    Positive,
    /// `"memory"`, `"sqlite:<path>"` with a path, or a `redis://` URL (opened only at first
    /// use, never here).
    Store,
    /// An integer from 1 to 2^32-1.
    Attempts,
    /// 1 to 64 of `[A-Za-z0-9_.:-]`: no `{` or `}`, which would break the keys' hash tag.
    Namespace,
    /// 1 to 255 of `[A-Za-z0-9_.:-]`, or null (the machine's own identity).
    Machine,
}

/// Whether `text` is `len` of `[A-Za-z0-9_.:-]`.
fn identifier(text: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// What the validator knows of an input: accepted with these settings, refused, or (a
/// `redis://` URL, whose grammar is the URL standard's) either, as long as the library's
/// answer and its settings agree.
enum Expected {
    Accepted(Map<String, Value>),
    Refused,
    Either(Map<String, Value>),
}

fn valid(kind: Kind, value: &Value) -> bool {
    match kind {
        Kind::Seconds => value.as_f64().is_some_and(|v| v.is_finite() && v >= 0.0),
        Kind::Count => value.as_u64().is_some(),
        Kind::Positive => value.as_u64().is_some_and(|v| v >= 1),
        Kind::Store => value.as_str().is_some_and(|v| v == "memory" || v.strip_prefix("sqlite:").is_some_and(|path| !path.is_empty())),
        Kind::Attempts => value.as_u64().is_some_and(|v| (1..=u64::from(u32::MAX)).contains(&v)),
        Kind::Namespace => value.as_str().is_some_and(|v| identifier(v, 1..=64)),
        Kind::Machine => value.is_null() || value.as_str().is_some_and(|v| identifier(v, 1..=255)),
    }
}

fn is_redis_url(kind: Kind, value: &Value) -> bool {
    matches!(kind, Kind::Store) && value.as_str().is_some_and(|v| v.starts_with("redis://"))
}

/// What must become of the input.
fn expected(bytes: &[u8]) -> Expected {
    let Ok(Value::Object(settings)) = serde_json::from_slice::<Value>(bytes) else { return Expected::Refused };
    let mut certain = true;
    for (key, value) in &settings {
        let Some((_, kind)) = KEYS.iter().find(|(name, _)| name == key) else { return Expected::Refused };
        if is_redis_url(*kind, value) {
            certain = false;
        } else if !valid(*kind, value) {
            return Expected::Refused;
        }
    }
    if certain {
        Expected::Accepted(settings)
    } else {
        Expected::Either(settings)
    }
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
        Kind::Store | Kind::Namespace | Kind::Machine => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let defaults = config();
    let text = c_string(data);
    // SAFETY: a valid NUL-terminated string.
    let result = unsafe { sft_configure(text.as_ptr()) };
    let after = config();
    let refused = |after: &Value| {
        assert_eq!(result, SftResult::SFT_ERR_INVALID_ARGUMENT, "accepted {text:?}");
        assert!(!last_error().is_empty());
        assert_eq!(after, &defaults, "a refused configuration changed the settings");
    };
    let accepted = |after: &Value, overrides: &Map<String, Value>| {
        assert_eq!(result, SftResult::SFT_OK, "refused {text:?}: {}", last_error());
        for (key, kind) in KEYS {
            let expected = overrides.get(key).unwrap_or(&defaults[key]);
            assert!(same_setting(kind, &after[key], expected), "{key} is {} after {text:?}", after[key]);
        }
    };
    match expected(text.to_bytes()) {
        Expected::Accepted(overrides) => accepted(&after, &overrides),
        Expected::Refused => refused(&after),
        Expected::Either(overrides) if result == SftResult::SFT_OK => accepted(&after, &overrides),
        Expected::Either(_) => refused(&after),
    }
    let restore = CString::new(defaults.to_string()).unwrap();
    // SAFETY: a valid NUL-terminated string.
    assert_eq!(unsafe { sft_configure(restore.as_ptr()) }, SftResult::SFT_OK);
    assert_eq!(config(), defaults);
    assert_eq!(after.as_object().map(Map::len), Some(KEYS.len()), "sft_get_config must name every key");
});
