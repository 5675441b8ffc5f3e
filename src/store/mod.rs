//! Stores: where the registry and the queue of tasks live.
//!
//! A [`Store`] is everything a manager needs from the place its tasks are kept:
//! submitting, reading and changing statuses, claiming the next task for this
//! process's worker, finishing it, waiting for changes and the change feed. The
//! in-memory registry can implement it as well as [`SqliteStore`] (one file
//! shared by every process of one machine) and [`RedisStore`] (one server shared
//! by every process of every machine).
//!
//! A store handle belongs to one process and carries that process's worker
//! identity: function tasks it submits are run only by it, named tasks by any
//! handle that registered their handler.

use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::Result;
use crate::events::TaskEvent;
use crate::stats::Stats;
use crate::status::{CompletedSegment, SegmentError, TaskState};
use crate::TaskId;
use crate::{Schedule, TaskOutcome};

mod redis;
mod sqlite;

pub(crate) use self::redis::valid_machine_id;
pub use self::redis::{RedisOptions, RedisStore, MACHINE_ENV_VAR};
pub use sqlite::{SqliteOptions, SqliteStore};

/// What a submitted task runs.
#[derive(Debug, Clone, Copy)]
pub enum TaskKind<'a> {
    /// A function (a C callback, a Python callable, a JS function) that only
    /// the submitting process holds, so only its worker may run it.
    Function,
    /// Work any process may run once it registered `handler`, given `payload`.
    Named {
        /// The handler's name.
        handler: &'a str,
        /// Any JSON value; `None` is JSON `null`.
        payload: Option<&'a RawValue>,
    },
}

/// A task handed to this process's worker by [`Store::claim_next`]: PROCESSING, its lease
/// held by this handle until [`Store::finish`]. The same record a runner is handed.
pub use crate::runner::Assignment as Claim;

/// A task's status as every shared store writes it: the keys and their order of the
/// status JSON (API.md), with the stored JSON parts (progress, segments, errors,
/// checkpoint) passed through as they were stored.
#[derive(Serialize)]
pub(crate) struct StatusOut<'a> {
    pub task_id: &'a str,
    pub status: TaskState,
    pub progress: Box<RawValue>,
    pub completed_segments: Vec<Box<RawValue>>,
    pub errors: Vec<Box<RawValue>>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub error: Option<String>,
    pub revision: u64,
    pub queue_position: Option<u64>,
    pub cancel_requested: bool,
    pub handler: Option<String>,
    pub attempt: u32,
    pub checkpoint: Option<Box<RawValue>>,
    pub priority: i32,
    pub deadline: Option<f64>,
    pub yield_requested: bool,
    pub yields: u32,
}

/// What a liveness sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Worker identities found dead and removed.
    pub dead_workers: Vec<String>,
    /// Named tasks put back at the head of the queue.
    pub requeued: Vec<TaskId>,
    /// Tasks failed: function tasks of a dead process, named tasks out of attempts.
    pub failed: Vec<TaskId>,
}

/// The place tasks live, as a manager uses it. Every method may be called from any thread.
pub trait Store: Send + Sync {
    /// This handle's worker identity: new on every open, never reused.
    fn worker_id(&self) -> &str;

    /// Makes this process a worker for named tasks of `handler`.
    fn register_handler(&self, handler: &str) -> Result<()>;

    /// Queues a task under `task_id` (a new UUIDv4 if `None`) with its `schedule`; durable
    /// when it returns. A deadline already past is accepted: the task fails at once.
    fn submit(&self, task_id: Option<&str>, kind: TaskKind<'_>, schedule: Schedule) -> Result<TaskId>;

    /// The status JSON of a task.
    fn status_json(&self, task_id: &str) -> Result<String>;

    /// Statuses of every task (or those in `filter`), in submission order, as a JSON array.
    fn list_json(&self, filter: Option<TaskState>) -> Result<String>;

    /// Counts by state, queue depth, totals and run times, over every process.
    fn stats(&self) -> Result<Stats>;

    /// Whether cancellation of a task was requested (also when its deadline passed while it ran).
    fn is_cancel_requested(&self, task_id: &str) -> Result<bool>;

    /// Whether the task is PROCESSING while a PENDING task of a higher priority exists that a
    /// live worker can run now. Polled between sentences: it never writes and answers from
    /// one indexed read or a value a background thread keeps fresh.
    fn is_yield_requested(&self, task_id: &str) -> Result<bool>;

    /// Replaces a task's progress. Never waits on a disk write; may be coalesced.
    fn update_progress(&self, task_id: &str, current: u64, total: u64, extra: Option<&Map<String, Value>>) -> Result<()>;

    /// Appends a completed segment; durable when it returns.
    fn add_segment(&self, task_id: &str, segment: &CompletedSegment) -> Result<()>;

    /// Appends a segment error; durable when it returns.
    fn add_error(&self, task_id: &str, error: &SegmentError) -> Result<()>;

    /// Sets the checkpoint a resumed task is handed; durable when it returns.
    fn set_checkpoint(&self, task_id: &str, checkpoint: &RawValue) -> Result<()>;

    /// Sets the text the status `error` shows if the task fails.
    fn set_failure_message(&self, task_id: &str, message: &str) -> Result<()>;

    /// Cancels a pending task at once (`Cancelled`) or asks a running one to stop (`Processing`).
    fn cancel(&self, task_id: &str) -> Result<TaskState>;

    /// Takes the next task this process may run, if no task runs anywhere: the highest
    /// priority first, within one priority a requeued (yielded or recovered) task first,
    /// then submission order; waits up to `timeout` (`None`: no limit) for one. `Ok(None)` on timeout.
    fn claim_next(&self, timeout: Option<Duration>) -> Result<Option<Claim>>;

    /// Ends the run of a task this handle claimed: COMPLETED, FAILED, or for
    /// [`TaskOutcome::Yielded`] PENDING again at the head of its priority (`yields` + 1,
    /// `attempt` unchanged, segments, errors, progress and checkpoint kept); CANCELLED
    /// instead whenever cancellation was requested or the deadline passed. Returns the
    /// new state. The new state and the lease's release are one transaction; a handle
    /// that no longer holds the lease is refused.
    fn finish(&self, task_id: &str, outcome: TaskOutcome) -> Result<TaskState>;

    /// Blocks until the task is finished or `timeout` passes; returns its final status.
    fn wait(&self, task_id: &str, timeout: Option<Duration>) -> Result<String>;

    /// Blocks until the task's revision exceeds `after_revision` or it is finished.
    fn wait_for_change(&self, task_id: &str, after_revision: u64, timeout: Option<Duration>) -> Result<String>;

    /// Up to `max` events with `seq > after_seq`, blocking until one exists or `timeout` passes.
    fn wait_events(&self, after_seq: u64, max: usize, timeout: Option<Duration>) -> Result<Vec<TaskEvent>>;

    /// The sequence number of the newest event (0 before the first).
    fn last_event_seq(&self) -> Result<u64>;

    /// One bounded pass of retention; returns how many tasks it removed.
    fn collect_garbage(&self) -> Result<usize>;

    /// Finds workers whose process died and recovers their tasks.
    fn recover(&self) -> Result<Recovery>;

    /// Stops this handle's threads and withdraws its worker identity. Idempotent.
    fn close(&self) -> Result<()>;
}
