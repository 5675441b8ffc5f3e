//! The status model: task states, segment ids, and the status JSON wire format.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};
use crate::json;

/// Where a task is in its life. Serialises as the upper-case wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    /// Waiting in the queue.
    Pending,
    /// Being run by the worker.
    Processing,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled before it ran, or stopped after cancellation was requested.
    Cancelled,
}

impl TaskState {
    /// All states, in lifecycle order.
    pub const ALL: [TaskState; 5] = [Self::Pending, Self::Processing, Self::Completed, Self::Failed, Self::Cancelled];

    /// True for the three final states.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The wire name, e.g. `"PENDING"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Processing => "PROCESSING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }
}

/// A segment id as the caller gave it: a JSON integer (of any size, kept exactly) or a JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum SegmentId {
    /// An integer id such as `7`, or `1000000000000000000000000000000`.
    Integer(Number),
    /// A text id such as `"intro-1"`.
    Text(String),
}

impl SegmentId {
    /// Parses a JSON string or integer literal.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_value("segment_id", json::parse("segment_id", text)?)
    }

    /// Takes a parsed JSON value that must be a string or an integer; `what` names it in errors.
    pub(crate) fn from_value(what: &str, value: Value) -> Result<Self> {
        match value {
            Value::String(text) => Ok(Self::Text(text)),
            Value::Number(number) if json::is_integer_text(number.as_str()) => Ok(Self::Integer(number)),
            other => Err(Error::invalid(format!("{what} must be a JSON string or integer, not {} ({other})", json::kind_of(&other)))),
        }
    }
}

impl<'de> Deserialize<'de> for SegmentId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        // Through a Value: an untagged derive cannot see an arbitrary-precision number.
        let value = Value::deserialize(deserializer)?;
        Self::from_value("segment_id", value).map_err(serde::de::Error::custom)
    }
}

impl From<i64> for SegmentId {
    fn from(id: i64) -> Self {
        Self::Integer(id.into())
    }
}

impl From<&str> for SegmentId {
    fn from(id: &str) -> Self {
        Self::Text(id.to_owned())
    }
}

impl From<String> for SegmentId {
    fn from(id: String) -> Self {
        Self::Text(id)
    }
}

/// Takes the fields of a record object, refusing unknown and missing keys.
fn record_fields<const N: usize>(what: &str, text: &str, names: [&str; N]) -> Result<[Value; N]> {
    let Value::Object(mut map) = json::parse(what, text)? else {
        return Err(Error::invalid(format!("{what} must be a JSON object with the keys {names:?}")));
    };
    if let Some(unknown) = map.keys().find(|key| !names.contains(&key.as_str())) {
        return Err(Error::invalid(format!("{what} has the unknown key {unknown:?}; its keys are {names:?}")));
    }
    let mut fields = names.map(|name| map.shift_remove(name));
    if let Some(index) = fields.iter().position(Option::is_none) {
        return Err(Error::invalid(format!("{what} lacks the key {:?}", names[index])));
    }
    Ok(std::array::from_fn(|index| fields[index].take().expect("checked above")))
}

fn string_field(what: &str, name: &str, value: Value) -> Result<String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(Error::invalid(format!("{what}: {name:?} must be a string, not {}", json::kind_of(&other)))),
    }
}

/// One finished audio segment of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletedSegment {
    /// The caller's segment id.
    pub segment_id: SegmentId,
    /// Where the audio is served from.
    pub audio_url: String,
    /// Length of the audio in seconds.
    pub duration: f64,
}

impl CompletedSegment {
    /// Parses the wire object `{"segment_id": 7 | "7", "audio_url": "…", "duration": 2.5}`.
    pub fn from_json(text: &str) -> Result<Self> {
        const WHAT: &str = "segment_json";
        let [segment_id, audio_url, duration] = record_fields(WHAT, text, ["segment_id", "audio_url", "duration"])?;
        let duration = match duration {
            Value::Number(number) => number.as_f64().unwrap_or(f64::NAN),
            other => return Err(Error::invalid(format!("{WHAT}: \"duration\" must be a number, not {}", json::kind_of(&other)))),
        };
        Ok(Self {
            segment_id: SegmentId::from_value(&format!("{WHAT}: \"segment_id\""), segment_id)?,
            audio_url: string_field(WHAT, "audio_url", audio_url)?,
            duration,
        })
    }
}

/// One segment that could not be produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentError {
    /// The caller's segment id.
    pub segment_id: SegmentId,
    /// Why it failed.
    pub error: String,
}

impl SegmentError {
    /// Parses the wire object `{"segment_id": 3 | "3", "error": "…"}`.
    pub fn from_json(text: &str) -> Result<Self> {
        const WHAT: &str = "error_json";
        let [segment_id, error] = record_fields(WHAT, text, ["segment_id", "error"])?;
        Ok(Self {
            segment_id: SegmentId::from_value(&format!("{WHAT}: \"segment_id\""), segment_id)?,
            error: string_field(WHAT, "error", error)?,
        })
    }
}

/// A task's status as the wire format describes it, parsed back for Rust callers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TaskStatus {
    /// The task id.
    pub task_id: String,
    /// The lifecycle state.
    pub status: TaskState,
    /// `{}` until the first progress update, then current/total/percentage and extras.
    pub progress: Map<String, Value>,
    /// Finished segments in the order reported.
    pub completed_segments: Vec<CompletedSegment>,
    /// Segment errors in the order reported.
    pub errors: Vec<SegmentError>,
    /// Unix time of submission.
    pub created_at: f64,
    /// Unix time the worker started it.
    pub started_at: Option<f64>,
    /// Unix time it finished.
    pub completed_at: Option<f64>,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// Grows on every change.
    pub revision: u64,
    /// Tasks ahead of it while pending (0 = next).
    pub queue_position: Option<u64>,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
    /// The name of the handler that runs a named task; `None` for a function task.
    pub handler: Option<String>,
    /// How many times the task was started: 0 before the first start.
    pub attempt: u32,
    /// The last value given to `set_checkpoint`, if any.
    pub checkpoint: Option<Value>,
    /// Higher runs first; FIFO within one priority.
    pub priority: i32,
    /// Unix time by which it must have started (else FAILED) and finished (else CANCELLED).
    pub deadline: Option<f64>,
    /// Whether a higher-priority task waits while this one runs: it should yield.
    pub yield_requested: bool,
    /// How many times it yielded to a higher-priority task.
    pub yields: u32,
}

/// The serialisable view of one task, borrowed from its state under the task's lock.
///
/// Segments, errors and progress are kept pre-serialised, so writing a status
/// copies bytes instead of re-encoding every segment: a reader of a task with
/// thousands of segments holds the task's lock for microseconds.
#[derive(Serialize)]
pub(crate) struct StatusView<'a> {
    pub task_id: &'a str,
    pub status: TaskState,
    pub progress: &'a RawValue,
    pub completed_segments: &'a [Box<RawValue>],
    pub errors: &'a [Box<RawValue>],
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub error: Option<&'a str>,
    pub revision: u64,
    pub queue_position: Option<u64>,
    pub cancel_requested: bool,
    pub handler: Option<&'a str>,
    pub attempt: u32,
    pub checkpoint: Option<&'a RawValue>,
    pub priority: i32,
    pub deadline: Option<f64>,
    pub yield_requested: bool,
    pub yields: u32,
}

/// The integer percentage of `current` out of `total`: floored, clamped to 100, 0 when `total` is 0.
pub fn percentage(current: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    let floored = u128::from(current) * 100 / u128::from(total);
    floored.min(100) as u64
}

/// Names that the progress object sets itself and extras may not override.
pub(crate) const RESERVED_PROGRESS_KEYS: [&str; 3] = ["current", "total", "percentage"];

/// A progress object as it is written: `current`, `total`, `percentage`, then the extras.
struct ProgressView<'a> {
    current: u64,
    total: u64,
    extra: Option<&'a Map<String, Value>>,
}

impl Serialize for ProgressView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let extra = self.extra.map_or(0, Map::len);
        let mut map = serializer.serialize_map(Some(3 + extra))?;
        map.serialize_entry("current", &self.current)?;
        map.serialize_entry("total", &self.total)?;
        map.serialize_entry("percentage", &percentage(self.current, self.total))?;
        for (key, value) in self.extra.into_iter().flatten() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Serialises a progress update into its raw JSON object; `extra` is in canonical form
/// already (see [`crate::json`]).
pub(crate) fn progress_json(current: u64, total: u64, extra: Option<&Map<String, Value>>) -> Result<Box<RawValue>> {
    if let Some(key) = extra.into_iter().flat_map(Map::keys).find(|key| RESERVED_PROGRESS_KEYS.contains(&key.as_str())) {
        return Err(Error::invalid(format!("progress extra key {key:?} is reserved")));
    }
    to_raw(&ProgressView { current, total, extra })
}

/// Serialises any value into an owned raw JSON fragment.
pub(crate) fn to_raw<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value).map_err(|e| Error::invalid(format!("value cannot be encoded as JSON: {e}")))
}

/// Parses `extra_json`: it must be a JSON object; its numbers are checked and made canonical.
pub fn parse_extra_json(text: &str) -> Result<Map<String, Value>> {
    match json::parse("extra_json", text)? {
        Value::Object(map) => Ok(map),
        other => Err(Error::invalid(format!("extra_json must be a JSON object, not {} ({other})", json::kind_of(&other)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_floors_clamps_and_survives_zero_total() {
        assert_eq!(percentage(2, 5), 40);
        assert_eq!(percentage(1, 3), 33);
        assert_eq!(percentage(2, 3), 66);
        assert_eq!(percentage(7, 5), 100);
        assert_eq!(percentage(3, 0), 0);
        assert_eq!(percentage(u64::MAX, u64::MAX), 100);
        assert_eq!(percentage(u64::MAX - 1, u64::MAX), 99);
    }

    #[test]
    fn segment_ids_keep_their_json_type() {
        assert_eq!(SegmentId::from_json("7").unwrap(), SegmentId::from(7));
        assert_eq!(SegmentId::from_json("\"7\"").unwrap(), SegmentId::Text("7".into()));
        assert_eq!(serde_json::to_string(&SegmentId::from(-3)).unwrap(), "-3");
        let huge = SegmentId::from_json("100000000000000000000000000000").unwrap();
        assert_eq!(serde_json::to_string(&huge).unwrap(), "100000000000000000000000000000");
        assert_eq!(
            serde_json::from_str::<SegmentId>("-18446744073709551617").unwrap(),
            SegmentId::from_json("-18446744073709551617").unwrap()
        );
        for bad in ["7.5", "7.0", "1e2", "null", "[1]", "{}", "", "\"unterminated"] {
            assert!(SegmentId::from_json(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn progress_keeps_extra_types_and_order_and_rejects_reserved_keys() {
        let extra = parse_extra_json(r#"{"current_segment_id": 7, "label": "ch\"1", "ok": true, "f": 1.5}"#).unwrap();
        let raw = progress_json(2, 5, Some(&extra)).unwrap();
        assert_eq!(raw.get(), r#"{"current":2,"total":5,"percentage":40,"current_segment_id":7,"label":"ch\"1","ok":true,"f":1.5}"#);
        let reserved = parse_extra_json(r#"{"percentage": 99}"#).unwrap();
        assert!(progress_json(1, 2, Some(&reserved)).is_err());
        assert!(parse_extra_json("[1]").is_err());
        assert!(parse_extra_json("{").is_err());
    }

    #[test]
    fn state_names_round_trip() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::from_name(state.as_str()), Some(state));
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{}\"", state.as_str()));
        }
        assert_eq!(TaskState::from_name("pending"), None);
    }
}
