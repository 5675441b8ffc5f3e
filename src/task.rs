//! One task: its mutable state behind its own lock, and its status JSON.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Condvar, Mutex};

use serde_json::value::RawValue;

use crate::status::{StatusView, TaskState};
use crate::{Schedule, TaskId};

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
    /// How many times it yielded to a higher-priority task.
    pub yields: u32,
    /// The running task said it yields: the end of this run puts it back in the queue.
    pub yielding: bool,
    /// What runs this time can run again, so the task may yield (a run-once body cannot).
    pub can_yield: bool,
    /// Back in the queue after a yield: its next start resumes the same attempt.
    pub resuming: bool,
    /// Cancellation was requested because the deadline passed while it ran.
    pub deadline_cancel: bool,
}

/// A registry entry.
pub(crate) struct Task {
    pub id: TaskId,
    /// Its place in its priority's queue; set under the queue lock before the task is
    /// published, and again when it goes back to the queue after a yield.
    pub queue_seq: AtomicU64,
    /// Its place in submission order (the listing order); set once, with `queue_seq`.
    pub order: AtomicU64,
    /// Higher runs first; fixed at submit.
    pub priority: i32,
    /// Unix time by which it must start (else FAILED) and finish (else CANCELLED); fixed at submit.
    pub deadline: Option<f64>,
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
    /// `schedule`: its priority and deadline.
    pub fn new(id: TaskId, created_at: f64, finished_from_outside: bool, handler: Option<TaskId>, schedule: Schedule) -> Self {
        Self {
            id,
            queue_seq: AtomicU64::new(0),
            order: AtomicU64::new(0),
            priority: schedule.priority,
            deadline: schedule.deadline,
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
                yields: 0,
                yielding: false,
                can_yield: false,
                resuming: false,
                deadline_cancel: false,
            }),
            changed: Condvar::new(),
        }
    }
}

impl TaskData {
    /// Serialises the status JSON of `task`; `queue_position` is looked up by the caller for
    /// pending tasks, `yield_requested` for a running one.
    pub fn to_raw(&self, task: &Task, queue_position: Option<u64>, yield_requested: bool) -> Box<RawValue> {
        let error = match self.status {
            TaskState::Failed | TaskState::Cancelled => self.message.as_deref(),
            _ => None,
        };
        let view = StatusView {
            task_id: &task.id,
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
            handler: task.handler.as_deref(),
            attempt: self.attempt,
            checkpoint: self.checkpoint.as_deref(),
            priority: task.priority,
            deadline: task.deadline,
            yield_requested: yield_requested && self.status == TaskState::Processing,
            yields: self.yields,
        };
        serde_json::value::to_raw_value(&view).expect("a status view always serialises")
    }
}
