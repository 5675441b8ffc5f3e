//! Manager configuration: retention, queue bounds and the size limits on inputs.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::status::SegmentId;

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
    /// Largest `extra_json` progress object, in bytes.
    pub max_extra_json_bytes: usize,
    /// Most completed segments one task may record.
    pub max_segments_per_task: usize,
    /// Most segment errors one task may record.
    pub max_errors_per_task: usize,
    /// How many recent events the change feed keeps for slow readers.
    pub event_buffer_capacity: usize,
    /// Where the registry and the queue live: `"memory"`, `"sqlite:<path>"` or `"redis://host:port[/db]"`.
    pub store: String,
    /// How many times a named task may be started before an interruption makes it FAILED.
    pub max_attempts: u32,
    /// The Redis store's key namespace: every key is under `{<namespace>}:` (one Cluster slot).
    pub redis_namespace: String,
    /// This machine's identity in the Redis store (at most one task runs per machine);
    /// `None`: `STORYFLOW_TASKS_MACHINE`, else /etc/machine-id, else the host name.
    pub machine_id: Option<String>,
}

/// The environment variable naming the store when the configuration does not.
pub const STORE_ENV_VAR: &str = "STORYFLOW_TASKS_STORE";

/// A store kind, parsed from the `store` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// This process's memory: the default.
    Memory,
    /// One SQLite file shared by the processes of one machine.
    Sqlite(std::path::PathBuf),
    /// A Redis server shared by the processes of every machine: its `redis://` URL.
    Redis(String),
}

impl StoreChoice {
    /// Parses a `store` value; anything but `memory`, `sqlite:<path>` and `redis://host:port[/db]`
    /// is refused, saying so.
    pub fn parse(value: &str) -> Result<Self> {
        if value == "memory" {
            return Ok(Self::Memory);
        }
        if let Some(path) = value.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(Error::invalid("store \"sqlite:\" names no file: use \"sqlite:<path>\""));
            }
            return Ok(Self::Sqlite(path.into()));
        }
        if value.starts_with("redis://") {
            let parsed =
                redis::Client::open(value).map_err(|e| Error::invalid(format!("store {value:?} is not a valid Redis URL: {e}")))?;
            if parsed.get_connection_info().addr().to_string().is_empty() {
                return Err(Error::invalid(format!("store {value:?} names no server: use \"redis://host:port[/db]\"")));
            }
            return Ok(Self::Redis(value.to_owned()));
        }
        Err(Error::invalid(format!("unknown store {value:?}: use \"memory\", \"sqlite:<path>\" or \"redis://host:port[/db]\"")))
    }
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
            store: "memory".into(),
            max_attempts: 3,
            redis_namespace: "storyflow".into(),
            machine_id: None,
        }
    }
}

impl Config {
    /// The defaults, with the store named by `STORYFLOW_TASKS_STORE` if it is set (an invalid
    /// value is refused by the first call that needs the configuration).
    pub fn from_environment() -> Self {
        let mut config = Self::default();
        if let Some(store) = std::env::var_os(STORE_ENV_VAR) {
            config.store = store.to_string_lossy().into_owned();
        }
        config
    }

    /// The store this configuration names.
    pub fn store_choice(&self) -> Result<StoreChoice> {
        StoreChoice::parse(&self.store)
    }

    /// Parses a JSON object of settings; keys left out keep their defaults.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Config = serde_json::from_str(text).map_err(|e| Error::invalid(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a JSON object of settings on top of `self`, keeping what it does not name.
    pub fn merged_with_json(&self, text: &str) -> Result<Self> {
        let overrides: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::invalid(format!("invalid configuration: {e}")))?;
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
        self.store_choice()?;
        if self.max_attempts == 0 {
            return Err(Error::invalid("max_attempts must be at least 1"));
        }
        let namespace_ok = (1..=64).contains(&self.redis_namespace.len())
            && self.redis_namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !namespace_ok {
            return Err(Error::invalid(format!("redis_namespace {:?} must be 1 to 64 of [A-Za-z0-9_.:-]", self.redis_namespace)));
        }
        if let Some(machine) = &self.machine_id {
            if !crate::store::valid_machine_id(machine) {
                return Err(Error::invalid(format!("machine_id {machine:?} must be 1 to 255 of [A-Za-z0-9_.:-]")));
            }
        }
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
    fn check_len(what: &str, text: &str, limit: usize) -> Result<()> {
        if text.len() > limit {
            return Err(Error::invalid(format!("{what} is {} bytes, over the limit of {limit}", text.len())));
        }
        Ok(())
    }

    // Every size rule on an input is one of these checks, so that every entry point
    // (Rust, C, and the bindings above C) meets the same limits.

    /// A task id: not empty, at most `max_task_id_bytes`.
    pub(crate) fn check_task_id(&self, task_id: &str) -> Result<()> {
        if task_id.is_empty() {
            return Err(Error::invalid("task id is empty"));
        }
        Self::check_len("task id", task_id, self.max_task_id_bytes)
    }

    /// `task_id` checked, or a new UUIDv4 when none is given.
    pub(crate) fn task_id_or_new(&self, task_id: Option<&str>) -> Result<crate::TaskId> {
        match task_id {
            Some(id) => {
                self.check_task_id(id)?;
                Ok(std::sync::Arc::from(id))
            }
            None => Ok(crate::new_task_id()),
        }
    }

    /// A segment id: a text one not empty and at most `max_task_id_bytes`; an integer one
    /// at most that many characters.
    pub(crate) fn check_segment_id(&self, segment_id: &SegmentId) -> Result<()> {
        match segment_id {
            SegmentId::Text(text) if text.is_empty() => Err(Error::invalid("segment_id is empty")),
            SegmentId::Text(text) => Self::check_len("segment_id", text, self.max_task_id_bytes),
            SegmentId::Integer(number) => Self::check_len("segment_id", number.as_str(), self.max_task_id_bytes),
        }
    }

    /// An audio URL: at most `max_url_bytes`.
    pub(crate) fn check_url(&self, url: &str) -> Result<()> {
        Self::check_len("audio_url", url, self.max_url_bytes)
    }

    /// A segment error or failure message: at most `max_message_bytes`.
    pub(crate) fn check_message(&self, what: &str, message: &str) -> Result<()> {
        Self::check_len(what, message, self.max_message_bytes)
    }

    /// A handler name: not empty, at most `max_task_id_bytes` (it names work as an id names a task).
    pub(crate) fn check_handler_name(&self, handler: &str) -> Result<()> {
        if handler.is_empty() {
            return Err(Error::invalid("handler name is empty"));
        }
        Self::check_len("handler name", handler, self.max_task_id_bytes)
    }

    /// The JSON text of a checkpoint: at most `max_extra_json_bytes`.
    pub(crate) fn check_checkpoint_json(&self, text: &str) -> Result<()> {
        Self::check_len("checkpoint_json", text, self.max_extra_json_bytes)
    }

    /// The JSON text of a named task's payload: at most `max_extra_json_bytes`.
    pub(crate) fn check_payload_json(&self, text: &str) -> Result<()> {
        Self::check_len("payload_json", text, self.max_extra_json_bytes)
    }

    /// The text of a progress update's extras: at most `max_extra_json_bytes`.
    pub(crate) fn check_extra_json(&self, text: &str) -> Result<()> {
        Self::check_len("extra_json", text, self.max_extra_json_bytes)
    }

    /// A failure message that must be kept whatever its size: one over
    /// `max_message_bytes` is cut at a character boundary and says so.
    pub(crate) fn shorten_message(&self, message: String) -> String {
        let limit = self.max_message_bytes;
        if message.len() <= limit {
            return message;
        }
        let note = format!(" [shortened from {} bytes]", message.len());
        let mut shortened = String::with_capacity(limit);
        shortened.push_str(&message[..floor_char_boundary(&message, limit.saturating_sub(note.len()))]);
        shortened.push_str(&note);
        // A limit smaller than the note itself: the note is cut too, the limit holds.
        shortened.truncate(floor_char_boundary(&shortened, limit));
        shortened
    }
}

/// The largest index `<= index` that is a character boundary of `text`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
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
    fn an_over_long_failure_message_is_shortened_at_a_character_boundary_and_says_so() {
        let config = Config { max_message_bytes: 40, ..Config::default() };
        assert_eq!(config.shorten_message("short".into()), "short");
        let exact = "x".repeat(40);
        assert_eq!(config.shorten_message(exact.clone()), exact);
        // 'é' is two bytes: the cut falls inside one and moves back to its start.
        let shortened = config.shorten_message("é".repeat(30));
        assert_eq!(shortened, format!("{} [shortened from 60 bytes]", "é".repeat(7)));
        assert!(shortened.len() <= 40);
        let tiny = Config { max_message_bytes: 5, ..Config::default() };
        assert_eq!(tiny.shorten_message("abcdefgh".into()), " [sho");
    }

    #[test]
    fn ids_are_checked_against_their_limits() {
        let config = Config { max_task_id_bytes: 4, ..Config::default() };
        assert!(config.check_task_id("abcd").is_ok());
        assert!(config.check_task_id("abcde").unwrap_err().message().contains("over the limit of 4"));
        assert_eq!(config.check_task_id("").unwrap_err().message(), "task id is empty");
        assert_eq!(config.check_segment_id(&"".into()).unwrap_err().message(), "segment_id is empty");
        assert!(config.check_segment_id(&"ünï".into()).is_err()); // five bytes
        assert!(config.check_segment_id(&SegmentId::from(-999)).is_ok());
        assert!(config.check_segment_id(&SegmentId::from(10000)).is_err());
    }

    #[test]
    fn stores_are_memory_sqlite_or_redis_and_others_are_refused_clearly() {
        let config = Config::default().merged_with_json(r#"{"store": "sqlite:/tmp/t.db", "max_attempts": 2}"#).unwrap();
        assert_eq!(config.store_choice().unwrap(), StoreChoice::Sqlite("/tmp/t.db".into()));
        assert_eq!(config.max_attempts, 2);
        assert!(config.to_json().contains(r#""store":"sqlite:/tmp/t.db","max_attempts":2"#), "{}", config.to_json());
        assert_eq!(Config::default().store_choice().unwrap(), StoreChoice::Memory);
        let redis = Config::default()
            .merged_with_json(r#"{"store": "redis://127.0.0.1:6380/2", "redis_namespace": "tts.prod", "machine_id": "gpu-7"}"#)
            .unwrap();
        assert_eq!(redis.store_choice().unwrap(), StoreChoice::Redis("redis://127.0.0.1:6380/2".into()));
        assert_eq!((redis.redis_namespace.as_str(), redis.machine_id.as_deref()), ("tts.prod", Some("gpu-7")));
        for (bad, says) in [
            (r#"{"store": "postgres://x"}"#, "unknown store"),
            (r#"{"store": "sqlite:"}"#, "names no file"),
            (r#"{"store": "redis://"}"#, "Redis URL"),
            (r#"{"redis_namespace": ""}"#, "redis_namespace"),
            (r#"{"redis_namespace": "a{b}"}"#, "redis_namespace"),
            (r#"{"machine_id": "two words"}"#, "machine_id"),
            (r#"{"machine_id": 7}"#, "invalid type"),
            (r#"{"max_attempts": 0}"#, "max_attempts must be at least 1"),
            (r#"{"max_attempts": -1}"#, "expected u32"),
        ] {
            let error = Config::default().merged_with_json(bad).unwrap_err();
            assert!(error.message().contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [r#"{"cleanup_threshold_secs": -1}"#, r#"{"max_url_bytes": 0}"#, "[]", "{", r#"{"max_pending_tasks": "3"}"#] {
            assert!(Config::default().merged_with_json(bad).is_err(), "{bad} accepted");
        }
    }
}
