//! The status model: task states, segment ids, and the status JSON wire format.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

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
    pub const ALL: [TaskState; 5] =
        [Self::Pending, Self::Processing, Self::Completed, Self::Failed, Self::Cancelled];

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

/// A segment id as the caller gave it: a JSON integer or a JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SegmentId {
    /// An integer id such as `7`.
    Integer(i64),
    /// A text id such as `"intro-1"`.
    Text(String),
}

impl SegmentId {
    /// Parses a JSON string or integer literal, the form the bindings pass.
    pub fn from_json(text: &str) -> Result<Self> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::String(s)) => Ok(Self::Text(s)),
            Ok(Value::Number(n)) => n.as_i64().map(Self::Integer).ok_or_else(|| {
                Error::invalid(format!("segment id {n} is not an integer in the 64-bit signed range"))
            }),
            Ok(other) => Err(Error::invalid(format!(
                "segment id must be a JSON string or integer, not {other}"
            ))),
            Err(e) => Err(Error::invalid(format!("segment id is not valid JSON: {e}"))),
        }
    }
}

impl From<i64> for SegmentId {
    fn from(id: i64) -> Self {
        Self::Integer(id)
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

/// One segment that could not be produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentError {
    /// The caller's segment id.
    pub segment_id: SegmentId,
    /// Why it failed.
    pub error: String,
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

/// Serialises a progress update into its raw JSON object.
pub(crate) fn progress_json(current: u64, total: u64, extra: Option<&Map<String, Value>>) -> Result<Box<RawValue>> {
    let mut progress = Map::new();
    progress.insert("current".into(), current.into());
    progress.insert("total".into(), total.into());
    progress.insert("percentage".into(), percentage(current, total).into());
    if let Some(extra) = extra {
        for (key, value) in extra {
            if RESERVED_PROGRESS_KEYS.contains(&key.as_str()) {
                return Err(Error::invalid(format!("progress extra key {key:?} is reserved")));
            }
            progress.insert(key.clone(), value.clone());
        }
    }
    to_raw(&progress)
}

/// Serialises any value into an owned raw JSON fragment.
pub(crate) fn to_raw<T: Serialize + ?Sized>(value: &T) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| Error::invalid(format!("value cannot be encoded as JSON: {e}")))
}

/// Parses `extra_json`: it must be a JSON object.
pub fn parse_extra_json(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::invalid(format!("extra_json must be a JSON object, not {other}"))),
        Err(e) => Err(Error::invalid(format!("extra_json is not valid JSON: {e}"))),
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
        assert_eq!(SegmentId::from_json("7").unwrap(), SegmentId::Integer(7));
        assert_eq!(SegmentId::from_json("\"7\"").unwrap(), SegmentId::Text("7".into()));
        assert_eq!(serde_json::to_string(&SegmentId::Integer(-3)).unwrap(), "-3");
        for bad in ["7.5", "null", "[1]", "{}", "", "18446744073709551615", "\"unterminated"] {
            assert!(SegmentId::from_json(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn progress_keeps_extra_types_and_order_and_rejects_reserved_keys() {
        let extra = parse_extra_json(r#"{"current_segment_id": 7, "label": "ch\"1", "ok": true, "f": 1.5}"#).unwrap();
        let raw = progress_json(2, 5, Some(&extra)).unwrap();
        assert_eq!(
            raw.get(),
            r#"{"current":2,"total":5,"percentage":40,"current_segment_id":7,"label":"ch\"1","ok":true,"f":1.5}"#
        );
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
