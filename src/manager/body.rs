//! What a task runs: a body on the worker thread, or nothing (the task is driven from
//! outside), and what a running body sees of itself and of the manager.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::TaskManager;
use crate::error::Result;
use crate::runner::RunnerJob;
use crate::task::Task;
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

/// Work that the worker may run more than once: after a run that yielded to a
/// higher-priority task ([`TaskContext::yield_task`]) it is run again when the task
/// resumes, and it picks up where its status (segments, checkpoint) says it left off.
///
/// Implemented for every `FnMut(&TaskContext) -> Result<(), TaskFailure> + Send`.
pub trait ResumableBody: Send + 'static {
    /// Runs (or resumes) the task; the manager's locks are not held.
    fn run(&mut self, context: &TaskContext<'_>) -> Result<(), TaskFailure>;
}

impl<F> ResumableBody for F
where
    F: FnMut(&TaskContext<'_>) -> Result<(), TaskFailure> + Send + 'static,
{
    fn run(&mut self, context: &TaskContext<'_>) -> Result<(), TaskFailure> {
        self(context)
    }
}

/// What a queued task will do when the worker reaches it; it travels in the queue beside
/// its task, so that whoever takes the task out of the queue owns it.
pub(super) enum Job {
    /// Run this body, once: it cannot yield.
    Body(Box<dyn TaskBody>),
    /// Run this body, and again after each yield.
    Resumable(Box<dyn ResumableBody>),
    /// Nothing to run: the task holds the worker until `finish` is called (a task driven from outside).
    External,
    /// Handed to a runner, which runs it and finishes it; the worker waits meanwhile.
    Runner(RunnerJob),
    /// A named task: run by whatever handler of that name is registered when the worker
    /// reaches it, or set aside until one is.
    Named {
        /// The handler's name (also the task's `handler`).
        handler: TaskId,
        /// Its input, as JSON.
        payload: Box<RawValue>,
    },
}

/// A handler run in-process for named tasks of its name, on the worker thread, given the
/// task's payload. Called once per task; it may be called again for the next one.
pub type HandlerFn = Arc<dyn Fn(&TaskContext<'_>, &RawValue) -> Result<(), TaskFailure> + Send + Sync>;

/// What a running task sees of itself and of the manager.
pub struct TaskContext<'a> {
    pub(super) manager: &'a Arc<TaskManager>,
    pub(super) task: &'a Arc<Task>,
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
        if let Some(durable) = self.manager.durable() {
            return durable.store.is_cancel_requested(&self.task.id).unwrap_or(false);
        }
        crate::sync::lock(&self.task.data).cancel_requested
    }

    /// Whether a task of a higher priority waits: the task should stop at its next
    /// convenient point and [`TaskContext::yield_task`]. Cheap enough to poll per sentence.
    pub fn is_yield_requested(&self) -> bool {
        self.manager.is_yield_requested(&self.task.id).unwrap_or(false)
    }

    /// Says that this run yields: when the body returns (or its deferred completion is
    /// finished) the task goes back to PENDING at the head of its priority, whatever the
    /// outcome, keeping its segments, errors, progress and checkpoint. A run-once body
    /// ([`TaskManager::submit`]) cannot yield: [`crate::ErrorKind::InvalidState`].
    pub fn yield_task(&self) -> Result<()> {
        self.manager.yield_task(&self.task.id)
    }

    /// Hands completion off: after the body returns, the worker stays with this task
    /// until [`TaskManager::finish`] is called for it, from any thread.
    pub fn defer(&self) -> Result<()> {
        self.manager.defer(&self.task.id)
    }
}
