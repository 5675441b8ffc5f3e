//! Manager configuration: retention, queue bounds and the size limits on inputs.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Everything that can be configured, with the documented defaults.
///
/// Unknown keys are rejected when parsed from JSON, so a misspelt setting is
/// an error instead of a silent no-op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Seconds a finished task stays in the registry before cleanup removes it.
    pub cleanup_threshold_secs: f64,
    /// Most tasks that may wait in the queue at once; 0 means unbounded.
    pub max_pending_tasks: u64,
    /// Most finished tasks kept; the oldest finished are evicted first. 0 means unbounded.
    pub max_retained_finished: u64,
    /// Longest task id, in bytes.
    pub max_task_id_bytes: usize,
    /// Longest error or failure message, in bytes.
    pub max_message_bytes: usize,
    /// Longest audio URL, in bytes.
    pub max_url_bytes: usize,
    /// Largest `extra_json` progress object and segment-id JSON, in bytes.
    pub max_extra_json_bytes: usize,
    /// Most completed segments one task may record.
    pub max_segments_per_task: usize,
    /// Most segment errors one task may record.
    pub max_errors_per_task: usize,
    /// How many recent events the change feed keeps for slow readers.
    pub event_buffer_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cleanup_threshold_secs: 3600.0,
            max_pending_tasks: 0,
            max_retained_finished: 0,
            max_task_id_bytes: 256,
            max_message_bytes: 64 * 1024,
            max_url_bytes: 8 * 1024,
            max_extra_json_bytes: 64 * 1024,
            max_segments_per_task: 100_000,
            max_errors_per_task: 100_000,
            event_buffer_capacity: 65_536,
        }
    }
}

impl Config {
    /// Parses a JSON object of settings; keys left out keep their defaults.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Config = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a JSON object of settings on top of `self`, keeping what it does not name.
    pub fn merged_with_json(&self, text: &str) -> Result<Self> {
        let overrides: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("invalid configuration: {e}")))?;
        let serde_json::Value::Object(overrides) = overrides else {
            return Err(Error::invalid("configuration must be a JSON object"));
        };
        let mut merged = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(Error::new(crate::ErrorKind::Internal, "configuration did not serialise")),
        };
        merged.extend(overrides);
        Self::from_json(&serde_json::Value::Object(merged).to_string())
    }

    /// The configuration as a JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Config always serialises")
    }

    /// Checks value ranges that the types alone do not express.
    pub fn validate(&self) -> Result<()> {
        if !self.cleanup_threshold_secs.is_finite() || self.cleanup_threshold_secs < 0.0 {
            return Err(Error::invalid("cleanup_threshold_secs must be a finite number >= 0"));
        }
        let positive = [
            ("max_task_id_bytes", self.max_task_id_bytes),
            ("max_message_bytes", self.max_message_bytes),
            ("max_url_bytes", self.max_url_bytes),
            ("max_extra_json_bytes", self.max_extra_json_bytes),
            ("event_buffer_capacity", self.event_buffer_capacity),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::invalid(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    /// Rejects `text` if it is longer than `limit` bytes, naming `what` in the error.
    pub(crate) fn check_len(what: &str, text: &str, limit: usize) -> Result<()> {
        if text.len() > limit {
            return Err(Error::invalid(format!(
                "{what} is {} bytes, over the limit of {limit}",
                text.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_json(r#"{"max_pending_taks": 3}"#).unwrap_err();
        assert!(err.message().contains("max_pending_taks"), "{err}");
    }

    #[test]
    fn omitted_keys_keep_defaults() {
        let config = Config::from_json(r#"{"max_pending_tasks": 3}"#).unwrap();
        assert_eq!(config.max_pending_tasks, 3);
        assert_eq!(config.cleanup_threshold_secs, 3600.0);
    }

    #[test]
    fn merge_keeps_earlier_settings() {
        let first = Config::default().merged_with_json(r#"{"max_pending_tasks": 3}"#).unwrap();
        let second = first.merged_with_json(r#"{"max_url_bytes": 10}"#).unwrap();
        assert_eq!((second.max_pending_tasks, second.max_url_bytes), (3, 10));
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [r#"{"cleanup_threshold_secs": -1}"#, r#"{"max_url_bytes": 0}"#, "[]", "{", r#"{"max_pending_tasks": "3"}"#] {
            assert!(Config::default().merged_with_json(bad).is_err(), "{bad} accepted");
        }
    }
}
