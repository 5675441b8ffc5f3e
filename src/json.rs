//! The rules every JSON input meets, whichever entry point it comes through:
//! what its strings may hold and what its numbers may be.
//!
//! - A string escape that is a lone UTF-16 surrogate (`"\ud800"`, which Python
//!   and JS strings can hold) cannot become UTF-8: it is refused with a message
//!   that names the argument, where it sits, and says "lone surrogate".
//! - Integers are kept exactly, whatever their size (`arbitrary_precision`):
//!   `10**30` comes back as the same thirty-one digits.
//! - Other numbers are kept as the double they denote, written in its shortest
//!   form (`2.50` becomes `2.5`); one that is not a finite double (`1e400`) is refused.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

/// Parses `text` as JSON for the argument `what`, checking its numbers and putting them in canonical form.
pub(crate) fn parse(what: &str, text: &str) -> Result<Value> {
    let mut value = serde_json::from_str::<Value>(text).map_err(|error| match lone_surrogates(text).first() {
        Some(&(start, unit)) => lone_surrogate_error(what, text, start, unit),
        None => Error::invalid(format!("{what} is not valid JSON: {error}")),
    })?;
    canonicalize(what, &mut value)?;
    Ok(value)
}

/// Parses a JSON string literal in which each lone surrogate escape stands for U+FFFD,
/// for text that must be kept rather than refused (a failure message).
pub(crate) fn parse_string_lossy(what: &str, text: &str) -> Result<String> {
    let repaired = replace_lone_surrogates(text);
    match serde_json::from_str::<Value>(&repaired) {
        Ok(Value::String(text)) => Ok(text),
        Ok(other) => Err(Error::invalid(format!("{what} must be a JSON string literal, not {}", kind_of(&other)))),
        Err(error) => Err(Error::invalid(format!("{what} is not a JSON string literal: {error}"))),
    }
}

/// Checks every number in `value` and rewrites it in canonical form (see the module doc).
pub(crate) fn canonicalize(what: &str, value: &mut Value) -> Result<()> {
    let mut path = Vec::new();
    canonicalize_at(what, value, &mut path)
}

/// A step of the path to a value inside a JSON document, for error messages.
enum Step {
    Key(String),
    Index(usize),
}

fn canonicalize_at(what: &str, value: &mut Value, path: &mut Vec<Step>) -> Result<()> {
    match value {
        Value::Number(number) => {
            if let Some(canonical) = canonical_number(number) {
                *number = canonical.map_err(|text| {
                    Error::invalid(format!("{what}: the number {text}{} is not a finite number", at(path)))
                })?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                path.push(Step::Index(index));
                canonicalize_at(what, item, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                path.push(Step::Key(key.clone()));
                canonicalize_at(what, item, path)?;
                path.pop();
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

/// `None` if `number` is canonical already; else its canonical form, or its text if it is
/// not a finite double.
fn canonical_number(number: &Number) -> Option<std::result::Result<Number, String>> {
    let text = number.as_str();
    if is_integer_text(text) {
        return (text == "-0").then(|| Ok(Number::from(0u8)));
    }
    Some(match number.as_f64() {
        Some(double) => Number::from_f64(double).ok_or_else(|| text.to_owned()),
        None => Err(text.to_owned()),
    })
}

/// Whether the JSON number text is an integer (no fraction, no exponent).
pub(crate) fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit())
}

/// " at \"a\"/0" for a non-empty path, "" for the top level.
fn at(path: &[Step]) -> String {
    if path.is_empty() {
        return String::new();
    }
    let mut text = String::from(" at ");
    for (i, step) in path.iter().enumerate() {
        if i > 0 {
            text.push('/');
        }
        match step {
            Step::Key(key) => text.push_str(&serde_json::to_string(key).expect("a string serialises")),
            Step::Index(index) => write!(text, "{index}").expect("writing to a String succeeds"),
        }
    }
    text
}

/// A short name of a JSON value's type, for error messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The byte offset and code unit of every `\uXXXX` escape in `text` that is a lone surrogate.
fn lone_surrogates(text: &str) -> Vec<(usize, u16)> {
    let bytes = text.as_bytes();
    let unit_at = |i: usize| -> Option<u16> {
        let hex = bytes.get(i..i + 6)?;
        if hex[0] != b'\\' || hex[1] != b'u' {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
    };
    let mut lone = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        match unit_at(i) {
            Some(high @ 0xD800..=0xDBFF) => match unit_at(i + 6) {
                Some(0xDC00..=0xDFFF) => i += 12,
                _ => {
                    lone.push((i, high));
                    i += 6;
                }
            },
            Some(low @ 0xDC00..=0xDFFF) => {
                lone.push((i, low));
                i += 6;
            }
            Some(_) => i += 6,
            // Any other escape is two bytes; a malformed one is the parser's to report.
            None => i += 2,
        }
    }
    lone
}

fn replace_lone_surrogates(text: &str) -> Cow<'_, str> {
    let lone = lone_surrogates(text);
    if lone.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut repaired = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, _) in lone {
        repaired.push_str(&text[copied..start]);
        repaired.push_str("\\ufffd");
        copied = start + 6;
    }
    repaired.push_str(&text[copied..]);
    Cow::Owned(repaired)
}

/// A marker no caller's text is expected to hold, put where the lone surrogate was to find its path.
const MARKER: &str = "\u{10FFFF}\u{FFFE}lone surrogate\u{FFFE}\u{10FFFF}";

fn lone_surrogate_error(what: &str, text: &str, start: usize, unit: u16) -> Error {
    let marked = format!("{}{}{}", &text[..start], serde_json::to_string(MARKER).expect("a string serialises").trim_matches('"'), &text[start + 6..]);
    let mut path = Vec::new();
    let found = serde_json::from_str::<Value>(&replace_lone_surrogates(&marked))
        .ok()
        .and_then(|value| find_marker(&value, &mut path));
    let place = match found {
        Some(true) => format!("a key{}", at(&path)),
        Some(false) => format!("the string{}", at(&path)),
        None => "a string".to_owned(),
    };
    Error::invalid(format!("{what}: {place} holds a lone surrogate (\\u{unit:04x}), which UTF-8 cannot carry"))
}

/// Finds the string holding [`MARKER`]: `Some(true)` if it is a key (the path ends at its
/// object), `Some(false)` if a value.
fn find_marker(value: &Value, path: &mut Vec<Step>) -> Option<bool> {
    match value {
        Value::String(text) => text.contains(MARKER).then_some(false),
        Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            path.push(Step::Index(index));
            let found = find_marker(item, path);
            if found.is_none() {
                path.pop();
            }
            found
        }),
        Value::Object(map) => {
            if map.keys().any(|key| key.contains(MARKER)) {
                return Some(true);
            }
            find_in_map(map, path)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

fn find_in_map(map: &Map<String, Value>, path: &mut Vec<Step>) -> Option<bool> {
    map.iter().find_map(|(key, item)| {
        path.push(Step::Key(key.clone()));
        let found = find_marker(item, path);
        if found.is_none() {
            path.pop();
        }
        found
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Result<String> {
        parse("extra_json", text).map(|value| value.to_string())
    }

    #[test]
    fn integers_stay_exact_and_other_numbers_become_their_double() {
        assert_eq!(canonical("1000000000000000000000000000000").unwrap(), "1000000000000000000000000000000");
        assert_eq!(canonical("-9007199254740993").unwrap(), "-9007199254740993");
        assert_eq!(canonical("18446744073709551616").unwrap(), "18446744073709551616");
        assert_eq!(canonical("-0").unwrap(), "0");
        assert_eq!(canonical("[2.50, 1e2, 0.1, -0.0, 1E-7]").unwrap(), "[2.5,100.0,0.1,-0.0,1e-7]");
        assert_eq!(canonical(r#"{"a":[1,{"b":12345678901234567890123}]}"#).unwrap(), r#"{"a":[1,{"b":12345678901234567890123}]}"#);
    }

    #[test]
    fn numbers_that_are_no_finite_double_are_refused_with_their_place() {
        let error = canonical(r#"{"a":[1,{"b":1e400}]}"#).unwrap_err();
        assert_eq!(error.message(), r#"extra_json: the number 1e+400 at "a"/1/"b" is not a finite number"#);
        assert!(canonical("-1e400").unwrap_err().message().contains("not a finite number"));
        for not_json in ["NaN", "Infinity", "-Infinity", "{\"a\":NaN}"] {
            assert!(canonical(not_json).unwrap_err().message().contains("not valid JSON"), "{not_json}");
        }
    }

    #[test]
    fn lone_surrogates_are_refused_naming_the_argument_and_the_place() {
        let error = parse("error_json", r#"{"segment_id":3,"error":"a\ud800b"}"#).unwrap_err();
        assert_eq!(error.message(), r#"error_json: the string at "error" holds a lone surrogate (\ud800), which UTF-8 cannot carry"#);
        let error = parse("extra_json", r#"{"k":["x","\udc00"]}"#).unwrap_err();
        assert_eq!(error.message(), r#"extra_json: the string at "k"/1 holds a lone surrogate (\udc00), which UTF-8 cannot carry"#);
        let error = parse("extra_json", r#"{"\ud83d":1}"#).unwrap_err();
        assert_eq!(error.message(), r#"extra_json: a key holds a lone surrogate (\ud83d), which UTF-8 cannot carry"#);
        let error = parse("message_json", r#""\udfff""#).unwrap_err();
        assert_eq!(error.message(), r#"message_json: the string holds a lone surrogate (\udfff), which UTF-8 cannot carry"#);
        // A pair is one character; an escaped backslash before "u" is no escape at all.
        assert_eq!(parse("x", r#""\ud83c\udfa7""#).unwrap(), Value::from("\u{1F3A7}"));
        assert_eq!(parse("x", r#""\\ud800""#).unwrap(), Value::from("\\ud800"));
    }

    #[test]
    fn a_lossy_string_puts_the_replacement_character_for_each_lone_surrogate() {
        assert_eq!(parse_string_lossy("message_json", r#""a\ud800b\udc00""#).unwrap(), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(parse_string_lossy("message_json", r#""bad\u0000voice""#).unwrap(), "bad\0voice");
        assert!(parse_string_lossy("message_json", "7").is_err());
        assert!(parse_string_lossy("message_json", "\"open").is_err());
    }
}
