//! One task: its mutable state behind its own lock, and its status JSON.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Condvar, Mutex};

use serde_json::value::RawValue;

use crate::status::{StatusView, TaskState};
use crate::TaskId;

/// Where a task stands with deferred completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deferral {
    /// The task's own return decides its outcome.
    NotDeferred,
    /// Completion was handed off; the worker waits for `finish`.
    Awaiting,
    /// `finish` was called: the task is final and the worker may move on.
    Finished,
}

/// The mutable part of a task.
pub(crate) struct TaskData {
    pub status: TaskState,
    pub revision: u64,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub completed_at: Option<f64>,
    pub progress: Option<Box<RawValue>>,
    pub segments: Vec<Box<RawValue>>,
    pub errors: Vec<Box<RawValue>>,
    /// The failure text the task set for itself, then the final `error`.
    pub message: Option<Box<str>>,
    pub cancel_requested: bool,
    /// How many times the worker started it.
    pub attempt: u32,
    /// The last checkpoint a named task recorded.
    pub checkpoint: Option<Box<RawValue>>,
    pub deferral: Deferral,
    /// Threads blocked on `Task::changed`; notifying is skipped when there are none.
    pub waiters: u32,
}

/// A registry entry.
pub(crate) struct Task {
    pub id: TaskId,
    /// Its place in the queue; set once, under the queue lock, before the task is published.
    pub queue_seq: AtomicU64,
    /// The handler of a named task; `None` for every other task.
    pub handler: Option<TaskId>,
    /// A named task set aside because no handler of its name is registered: it is not in
    /// the queue, so it has no queue position. Written under the handlers' lock.
    pub awaiting_handler: AtomicBool,
    pub data: Mutex<TaskData>,
    pub changed: Condvar,
}

/// The JSON for an empty progress object.
///
/// Borrowed from a static string, not kept in a lazily set static: a `OnceLock`
/// that another thread is still setting when the process forks stays locked
/// forever in the child, whose first status read then hangs.
fn empty_progress() -> &'static RawValue {
    serde_json::from_str("{}").expect("{} is JSON")
}

impl Task {
    /// A pending task; `finished_from_outside`: its completion is handed off from the
    /// start (a task driven from outside, or by a runner), so the worker waits for `finish`.
    /// `handler`: the handler of a named task.
    pub fn new(id: TaskId, created_at: f64, finished_from_outside: bool, handler: Option<TaskId>) -> Self {
        Self {
            id,
            queue_seq: AtomicU64::new(0),
            handler,
            awaiting_handler: AtomicBool::new(false),
            data: Mutex::new(TaskData {
                status: TaskState::Pending,
                revision: 1,
                created_at,
                started_at: None,
                completed_at: None,
                progress: None,
                segments: Vec::new(),
                errors: Vec::new(),
                message: None,
                cancel_requested: false,
                attempt: 0,
                checkpoint: None,
                deferral: if finished_from_outside { Deferral::Awaiting } else { Deferral::NotDeferred },
                waiters: 0,
            }),
            changed: Condvar::new(),
        }
    }
}

impl TaskData {
    /// Serialises the status JSON; `queue_position` is looked up by the caller for pending tasks.
    pub fn to_raw(&self, task_id: &str, handler: Option<&str>, queue_position: Option<u64>) -> Box<RawValue> {
        let error = match self.status {
            TaskState::Failed | TaskState::Cancelled => self.message.as_deref(),
            _ => None,
        };
        let view = StatusView {
            task_id,
            status: self.status,
            progress: match &self.progress {
                Some(progress) => progress,
                None => empty_progress(),
            },
            completed_segments: &self.segments,
            errors: &self.errors,
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
            error,
            revision: self.revision,
            queue_position: queue_position.filter(|_| self.status == TaskState::Pending),
            cancel_requested: self.cancel_requested,
            handler,
            attempt: self.attempt,
            checkpoint: self.checkpoint.as_deref(),
        };
        serde_json::value::to_raw_value(&view).expect("a status view always serialises")
    }
}
