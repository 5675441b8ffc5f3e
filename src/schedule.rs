//! How a task is scheduled (its priority and deadline), how a run ends, and the
//! texts every store gives a task whose deadline passed.
//!
//! The rules live here, in the core, so that the C API and every binding parse
//! submit options the same way and every store words a missed deadline alike.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::TaskFailure;

/// The `error` of a task whose deadline passed while it was still PENDING: it never starts.
pub const DEADLINE_PASSED_PENDING: &str = "its deadline passed before it started";

/// The `error` of a task that was asked to cancel because its deadline passed while it ran.
pub const DEADLINE_PASSED_RUNNING: &str = "its deadline passed while it was running";

/// How a task is scheduled, fixed at submit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Schedule {
    /// Higher runs first; FIFO within one priority. Any i32; default 0.
    pub priority: i32,
    /// Unix epoch seconds (like the status times). None: no deadline.
    pub deadline: Option<f64>,
}

impl Schedule {
    /// A schedule with `priority` and no deadline.
    pub fn with_priority(priority: i32) -> Self {
        Self { priority, deadline: None }
    }

    /// Parses submit options: `None` (no options), or a JSON object with the optional keys
    /// `"priority"` (an integer in i32 range) and `"deadline"` (a finite number >= 0, epoch
    /// seconds, or null). Anything else is [`crate::ErrorKind::InvalidArgument`] naming the key.
    pub fn from_json(options: Option<&str>) -> Result<Self> {
        let Some(text) = options else { return Ok(Self::default()) };
        let value: Value = serde_json::from_str(text).map_err(|e| Error::invalid(format!("invalid submit options: {e}")))?;
        let Value::Object(object) = value else {
            return Err(Error::invalid("submit options must be a JSON object, like {\"priority\": 10}"));
        };
        let mut schedule = Self::default();
        for (key, value) in &object {
            match key.as_str() {
                "priority" => {
                    schedule.priority = value.as_i64().and_then(|p| i32::try_from(p).ok()).ok_or_else(|| {
                        Error::invalid(format!(
                            "submit option \"priority\" must be an integer from {} to {}, not {value}",
                            i32::MIN,
                            i32::MAX
                        ))
                    })?;
                }
                "deadline" => {
                    schedule.deadline = match value {
                        Value::Null => None,
                        _ => Some(value.as_f64().filter(|d| value.is_number() && d.is_finite() && *d >= 0.0).ok_or_else(|| {
                            Error::invalid(format!(
                                "submit option \"deadline\" must be a finite number of epoch seconds >= 0 or null, not {value}"
                            ))
                        })?),
                    };
                }
                other => {
                    return Err(Error::invalid(format!("unknown submit option {other:?}: the options are \"priority\" and \"deadline\"")))
                }
            }
        }
        schedule.validate()?;
        Ok(schedule)
    }

    /// Checks a schedule built in Rust: the deadline, if any, is finite and >= 0.
    pub fn validate(&self) -> Result<()> {
        match self.deadline {
            Some(deadline) if !deadline.is_finite() || deadline < 0.0 => {
                Err(Error::invalid(format!("submit option \"deadline\" must be a finite number of epoch seconds >= 0, not {deadline}")))
            }
            _ => Ok(()),
        }
    }
}

/// How a task's run ended, as its runner or function reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// It did its work: COMPLETED (CANCELLED if cancellation was requested).
    Completed,
    /// It failed: FAILED with this failure (CANCELLED if cancellation was requested).
    Failed(TaskFailure),
    /// It stopped early to let a higher-priority task run: back to PENDING at the head of
    /// its priority, with its segments, errors, progress and checkpoint kept.
    Yielded,
}

impl From<std::result::Result<(), TaskFailure>> for TaskOutcome {
    fn from(result: std::result::Result<(), TaskFailure>) -> Self {
        match result {
            Ok(()) => Self::Completed,
            Err(failure) => Self::Failed(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn options_parse_and_default() {
        assert_eq!(Schedule::from_json(None).unwrap(), Schedule::default());
        assert_eq!(Schedule::from_json(Some("{}")).unwrap(), Schedule::default());
        assert_eq!(
            Schedule::from_json(Some(r#"{"priority": -7, "deadline": 12.5}"#)).unwrap(),
            Schedule { priority: -7, deadline: Some(12.5) }
        );
        assert_eq!(Schedule::from_json(Some(r#"{"deadline": null}"#)).unwrap().deadline, None);
        assert_eq!(Schedule::from_json(Some(r#"{"deadline": 3}"#)).unwrap().deadline, Some(3.0));
        assert_eq!(Schedule::from_json(Some(&format!(r#"{{"priority": {}}}"#, i32::MAX))).unwrap().priority, i32::MAX);
    }

    #[test]
    fn bad_options_are_refused_naming_the_key() {
        for (options, named) in [
            ("[]", "object"),
            ("7", "object"),
            ("not json", "invalid"),
            (r#"{"priority": 1.5}"#, "priority"),
            (r#"{"priority": "high"}"#, "priority"),
            (r#"{"priority": 2147483648}"#, "priority"),
            (r#"{"priority": null}"#, "priority"),
            (r#"{"deadline": -1}"#, "deadline"),
            (r#"{"deadline": "soon"}"#, "deadline"),
            (r#"{"deadline": 1e999}"#, "deadline"),
            (r#"{"prio": 1}"#, "prio"),
        ] {
            let error = Schedule::from_json(Some(options)).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{options}");
            assert!(error.message().contains(named), "{options}: {}", error.message());
        }
    }
}
