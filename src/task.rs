//! One task: its mutable state behind its own lock, and what the worker runs.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::value::RawValue;

use crate::error::Result;
use crate::manager::TaskManager;
use crate::runner::RunnerJob;
use crate::status::{StatusView, TaskState};
use crate::TaskId;

/// Why a task function did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFailure {
    /// A non-zero return code; the status shows the text the task set, or a generic one naming the code.
    Code(i32),
    /// An explicit failure text.
    Message(String),
}

/// Work that the worker runs once, on its thread.
///
/// Implemented for every `FnOnce(&TaskContext) -> Result<(), TaskFailure> + Send`.
pub trait TaskBody: Send + 'static {
    /// Runs the task; the manager's locks are not held.
    fn run(self: Box<Self>, context: &TaskContext<'_>) -> Result<(), TaskFailure>;
}

impl<F> TaskBody for F
where
    F: FnOnce(&TaskContext<'_>) -> Result<(), TaskFailure> + Send + 'static,
{
    fn run(self: Box<Self>, context: &TaskContext<'_>) -> Result<(), TaskFailure> {
        (*self)(context)
    }
}

/// What a queued task will do when the worker reaches it.
pub(crate) enum Job {
    /// Run this body.
    Body(Box<dyn TaskBody>),
    /// Nothing to run: the task holds the worker until `finish` is called (a task driven from outside).
    External,
    /// Handed to a runner, which runs it and finishes it; the worker waits meanwhile.
    Runner(RunnerJob),
}

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
    pub deferral: Deferral,
    pub job: Option<Job>,
    /// Threads blocked on `Task::changed`; notifying is skipped when there are none.
    pub waiters: u32,
}

/// A registry entry.
pub(crate) struct Task {
    pub id: TaskId,
    /// Its place in the queue; set once, under the queue lock, before the task is published.
    pub queue_seq: AtomicU64,
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
    /// A pending task with no job yet: [`Task::attach`] gives it one before it is published.
    pub fn new(id: TaskId, created_at: f64) -> Self {
        Self {
            id,
            queue_seq: AtomicU64::new(0),
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
                deferral: Deferral::NotDeferred,
                job: None,
                waiters: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Gives a new, not yet published task its job (so no other thread can hold its lock).
    pub fn attach(&self, job: Job) {
        let mut data = crate::sync::lock(&self.data);
        if matches!(job, Job::External | Job::Runner(_)) {
            data.deferral = Deferral::Awaiting;
        }
        data.job = Some(job);
    }
}

impl TaskData {
    /// Serialises the status JSON; `queue_position` is looked up by the caller for pending tasks.
    pub fn to_raw(&self, task_id: &str, queue_position: Option<u64>) -> Box<RawValue> {
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
        };
        serde_json::value::to_raw_value(&view).expect("a status view always serialises")
    }
}

/// What a running task sees of itself and of the manager.
pub struct TaskContext<'a> {
    pub(crate) manager: &'a Arc<TaskManager>,
    pub(crate) task: &'a Arc<Task>,
}

impl<'a> TaskContext<'a> {
    /// The running task's id.
    pub fn task_id(&self) -> &str {
        &self.task.id
    }

    /// The manager running it, for progress reports and any other call.
    pub fn manager(&self) -> &'a Arc<TaskManager> {
        self.manager
    }

    /// Whether cancellation of this task was requested; cheap enough to poll per segment.
    pub fn is_cancel_requested(&self) -> bool {
        crate::sync::lock(&self.task.data).cancel_requested
    }

    /// Hands completion off: after the body returns, the worker stays with this task
    /// until [`TaskManager::finish`] is called for it, from any thread.
    pub fn defer(&self) -> Result<()> {
        self.manager.defer(&self.task.id)
    }
}
