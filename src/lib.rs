//! storyflow-tasks: a process-wide background task manager for audio generation.
//!
//! One worker thread runs task functions one at a time in submission order,
//! while any number of threads submit tasks, report progress, completed
//! segments and errors, and poll, wait for or long-poll a task's status JSON.
//! The core in this crate is plain Rust ([`TaskManager`]); the C ABI in
//! [`ffi`] shares one process-wide manager among C/C++, Python and Node callers.

mod config;
mod error;
mod events;
mod json;
mod manager;
mod queue;
mod registry;
mod retention;
mod runner;
mod schedule;
mod stats;
mod status;
mod store;
mod sync;
mod task;
mod work_queue;

pub mod ffi;

/// A task id, shared between the registry, the queue and the events.
pub type TaskId = std::sync::Arc<str>;

/// A new task id: a UUIDv4, hyphenated, lower case.
pub(crate) fn new_task_id() -> TaskId {
    let mut buffer = uuid::Uuid::encode_buffer();
    std::sync::Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer))
}

pub use config::{Config, StoreChoice, STORE_ENV_VAR};
pub use error::{Error, ErrorKind, Result};
pub use events::{EventKind, TaskEvent};
pub use manager::{HandlerFn, Listener, Rejected, ResumableBody, TaskBody, TaskContext, TaskFailure, TaskManager};
pub use runner::{Assignment, RunnerId};
pub use schedule::{Schedule, TaskOutcome, DEADLINE_PASSED_PENDING, DEADLINE_PASSED_RUNNING};
pub use stats::{PriorityPending, StateCounts, Stats};
pub use status::{parse_extra_json, percentage, CompletedSegment, SegmentError, SegmentId, TaskState, TaskStatus};
pub use store::{Claim, Recovery, RedisOptions, RedisStore, SqliteOptions, SqliteStore, Store, TaskKind, MACHINE_ENV_VAR};
