//! Named handlers: work registered under a name (a C function, or a runner serving it),
//! and the named tasks that wait for a handler of their name.
//!
//! A named task the worker reaches before any handler of its name is registered is set
//! aside ("parked") instead of holding up the tasks behind it. It stays PENDING with no
//! queue position (it is not in the queue). Registering the handler puts every task
//! parked for it back at the head of the queue, in submission order: they reached the
//! head before everything still queued, so the FIFO order holds.
//!
//! Lock order: a task's `data` -> the handlers -> the work queue.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::body::{HandlerFn, Job};
use super::TaskManager;
use crate::error::{Error, ErrorKind, Result};
use crate::json;
use crate::runner::{Runner, RunnerId};
use crate::status::{self, TaskState};
use crate::sync::lock;
use crate::task::Task;
use crate::work_queue::Queued;
use crate::{Schedule, TaskId};

/// Who runs the named tasks of one name in this process.
#[derive(Clone)]
pub(super) enum Handler {
    /// A function run on the worker thread.
    Function(HandlerFn),
    /// A runner: the worker hands the task to it and waits for its finish.
    Runner(Arc<Runner>),
}

/// The handlers of this process, and the named tasks waiting for one.
#[derive(Default)]
pub(super) struct Handlers {
    by_name: HashMap<TaskId, Handler>,
    /// In the order the worker reached them.
    parked: Vec<Queued<Job>>,
}

impl Handlers {
    /// The priorities of the named tasks waiting for a handler, one per task.
    pub fn parked_priorities(&self) -> Vec<i32> {
        self.parked.iter().map(|queued| queued.task.priority).collect()
    }
}

impl TaskManager {
    /// Registers `handler` for the named tasks of `name`: each runs on the worker thread as
    /// `handler(context, payload)`. Starts the worker. A name registered twice in one
    /// manager (by a function or a runner) is [`ErrorKind::DuplicateId`].
    pub fn register_handler(self: &Arc<Self>, name: &str, handler: HandlerFn) -> Result<()> {
        self.add_handler(name, Handler::Function(handler))
    }

    /// Makes `runner` serve the named tasks of `name`: the worker hands each to its
    /// [`TaskManager::next_assignment`] with the handler, payload, attempt and checkpoint
    /// filled. Closing the runner unregisters the name. Errors as
    /// [`TaskManager::register_handler`], and those of an unknown or closing runner.
    pub fn add_runner_handler(self: &Arc<Self>, runner: RunnerId, name: &str) -> Result<()> {
        let runner = self.runners.get_open(runner)?;
        self.add_handler(name, Handler::Runner(runner))
    }

    fn add_handler(self: &Arc<Self>, name: &str, handler: Handler) -> Result<()> {
        let durable = self.open_store(true)?;
        self.frozen_config().check_handler_name(name)?;
        if durable.is_none() {
            self.ensure_worker()?;
        }
        let mut handlers = lock(&self.handlers);
        if handlers.by_name.contains_key(name) {
            return Err(Error::new(ErrorKind::DuplicateId, format!("a handler named {name:?} is registered already in this process")));
        }
        handlers.by_name.insert(Arc::from(name), handler);
        if let Some(durable) = durable {
            // The store hands this process the tasks of `name` from now on: the handler is
            // in place before it can, and is withdrawn again if the store refuses.
            drop(handlers);
            let registered = durable.store.register_handler(name).and_then(|()| self.ensure_durable_worker(durable));
            if registered.is_err() {
                lock(&self.handlers).by_name.remove(name);
            }
            return registered;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut handlers.parked).into_iter().partition(|queued| queued.task.handler.as_deref() == Some(name));
        handlers.parked = waiting;
        if ready.is_empty() {
            return Ok(());
        }
        let tasks: Vec<Arc<Task>> = ready.iter().map(|queued| queued.task.clone()).collect();
        match self.queue.requeue_at_head(ready) {
            // Cleared once they are in the queue, so that a reader never finds one in neither.
            Ok(()) => tasks.iter().for_each(|task| task.awaiting_handler.store(false, Ordering::Release)),
            // Shut down meanwhile: the shutdown cancels the parked tasks.
            Err(back) => handlers.parked.extend(back),
        }
        Ok(())
    }

    /// Forgets the names a closing runner served; their next tasks wait for a new handler.
    pub(super) fn remove_runner_handlers(&self, runner: &Arc<Runner>) {
        lock(&self.handlers).by_name.retain(|_, handler| !matches!(handler, Handler::Runner(served) if Arc::ptr_eq(served, runner)));
    }

    /// Queues a named task: `payload_json` is any JSON text (`None`: null); `task_id` `None`
    /// makes a new UUIDv4. Errors as [`TaskManager::submit_external`], and
    /// [`ErrorKind::InvalidArgument`] for a bad handler name or payload.
    pub fn submit_named(self: &Arc<Self>, handler: &str, payload_json: Option<&str>, task_id: Option<&str>) -> Result<TaskId> {
        self.submit_named_with(handler, payload_json, task_id, Schedule::default())
    }

    /// As [`TaskManager::submit_named`], scheduled by `schedule`.
    pub fn submit_named_with(
        self: &Arc<Self>,
        handler: &str,
        payload_json: Option<&str>,
        task_id: Option<&str>,
        schedule: Schedule,
    ) -> Result<TaskId> {
        schedule.validate()?;
        let durable = self.open_store(true)?;
        let config = self.frozen_config();
        config.check_handler_name(handler)?;
        let payload = match payload_json {
            Some(text) => {
                config.check_payload_json(text)?;
                status::to_raw(&json::parse("payload_json", text)?)?
            }
            None => status::to_raw(&serde_json::Value::Null)?,
        };
        if let Some(durable) = durable {
            return self.submit_named_durable(durable, handler, &payload, task_id, schedule);
        }
        let handler: TaskId = Arc::from(handler);
        self.submit_job(task_id, false, Some(handler.clone()), schedule, |_| Job::Named { handler, payload })
    }

    /// Records a task's checkpoint (any JSON text), handed back to a resumed attempt.
    /// Final is final: refused with [`ErrorKind::InvalidState`] once the task finished.
    pub fn set_checkpoint(&self, task_id: &str, checkpoint_json: &str) -> Result<()> {
        self.config().check_checkpoint_json(checkpoint_json)?;
        let checkpoint: Box<RawValue> = status::to_raw(&json::parse("checkpoint_json", checkpoint_json)?)?;
        if let Some(durable) = self.open_store(false)? {
            return durable.store.set_checkpoint(task_id, &checkpoint);
        }
        self.change_unfinished_task(task_id, |data, _| {
            data.checkpoint = Some(checkpoint);
            // The change feed has no kind of its own for a checkpoint: it is the task's progress.
            Ok(crate::events::EventKind::Progress)
        })
    }

    /// The handler registered under `name` in this process.
    pub(super) fn handler_named(&self, name: &str) -> Option<Handler> {
        lock(&self.handlers).by_name.get(name).cloned()
    }

    /// The worker's lookup for a named task it reached, under the task's lock: its handler
    /// (with the job back), or `None` once the task is parked until one registers.
    pub(super) fn handler_or_park(&self, task: &Arc<Task>, job: Job) -> Option<(Handler, Job)> {
        let mut handlers = lock(&self.handlers);
        if let Some(handler) = task.handler.as_deref().and_then(|name| handlers.by_name.get(name)) {
            return Some((handler.clone(), job));
        }
        task.awaiting_handler.store(true, Ordering::Release);
        handlers.parked.push(Queued { task: task.clone(), job });
        None
    }

    /// Takes a parked task out (it was cancelled) and returns its job.
    pub(super) fn take_parked(&self, task: &Task) -> Option<Job> {
        let mut handlers = lock(&self.handlers);
        let index = handlers.parked.iter().position(|queued| std::ptr::eq(Arc::as_ptr(&queued.task), task))?;
        Some(handlers.parked.remove(index).job)
    }

    /// Cancels every parked task, at shutdown.
    pub(super) fn cancel_parked(&self) {
        let parked = std::mem::take(&mut lock(&self.handlers).parked);
        for Queued { task, job } in parked {
            let data = lock(&task.data);
            if data.status == TaskState::Pending {
                self.cancel_pending(&task, data, "cancelled by shutdown", Some(job));
            }
        }
    }
}
