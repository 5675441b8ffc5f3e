//! The one worker thread: takes tasks from the work queue in FIFO order and runs each
//! with no lock held, through the manager's methods (it touches none of its fields).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::body::{Job, TaskContext, TaskFailure};
use super::named::Handler;
use super::{drop_job, TaskManager};
use crate::runner::Assignment;
use crate::status::TaskState;
use crate::sync::{lock, wait_while_until};
use crate::task::{Deferral, Task};
use crate::work_queue::Queued;

/// Starts the worker thread of `manager`.
pub(super) fn spawn(manager: Arc<TaskManager>) -> std::io::Result<()> {
    std::thread::Builder::new().name("storyflow-worker".into()).spawn(move || work(&manager)).map(drop)
}

fn work(manager: &Arc<TaskManager>) {
    manager.mark_worker_thread();
    while let Some(Queued { task, job }) = manager.next_queued() {
        run(manager, &task, job);
    }
}

fn run(manager: &Arc<TaskManager>, task: &Arc<Task>, mut job: Job) {
    let mut data = lock(&task.data);
    if data.status != TaskState::Pending {
        drop(data);
        drop_job(Some(job)); // cancelled while queued
        return;
    }
    let mut handler = None;
    while let Job::Named { .. } = job {
        let Some((found, named_job)) = manager.handler_or_park(task, job) else { return };
        job = named_job;
        if let (Handler::Runner(runner), Job::Named { handler: name, payload }) = (&found, &job) {
            let assignment =
                Assignment::named(task.id.clone(), name.to_string(), payload.clone(), data.attempt + 1, data.checkpoint.clone());
            // Handed over under the task's lock, as runner tasks are.
            if !runner.hand_over_named(task, assignment) {
                // The runner closed after the lookup, and its close is about to unregister
                // the name: look again (the task parks once the name is gone).
                std::thread::yield_now();
                continue;
            }
            data.deferral = Deferral::Awaiting;
        }
        handler = Some(found);
        break;
    }
    if let Job::Runner(runner_job) = &mut job {
        // Handed over under the task's lock: the runner sees it PROCESSING once it can look.
        let runner = runner_job.runner().clone();
        if !runner.hand_over(runner_job, task) {
            manager.cancel_pending(task, data, "its runner closed before it ran", Some(job));
            return;
        }
    }
    let event = manager.start(task, &mut data);
    drop(data);
    manager.deliver(event);

    let (outcome, panicked) = match job {
        Job::Body(body) => {
            let context = TaskContext { manager, task };
            match catch_unwind(AssertUnwindSafe(|| body.run(&context))) {
                Ok(outcome) => (outcome, false),
                Err(panic) => (Err(TaskFailure::Message(format!("task panicked: {}", panic_text(&*panic)))), true),
            }
        }
        Job::Named { payload, .. } => match handler {
            Some(Handler::Function(handler)) => {
                let context = TaskContext { manager, task };
                match catch_unwind(AssertUnwindSafe(|| handler(&context, &payload))) {
                    Ok(outcome) => (outcome, false),
                    Err(panic) => (Err(TaskFailure::Message(format!("handler panicked: {}", panic_text(&*panic)))), true),
                }
            }
            _ => (Ok(()), false),
        },
        Job::External | Job::Runner(_) => (Ok(()), false),
    };

    let mut data = lock(&task.data);
    let event = match data.deferral {
        Deferral::NotDeferred => manager.finalize(task, &mut data, outcome),
        Deferral::Awaiting if panicked => {
            data.deferral = Deferral::Finished;
            manager.finalize(task, &mut data, outcome)
        }
        Deferral::Awaiting => {
            // Completion was handed off: hold the worker until `finish` finalises the task.
            data.waiters += 1;
            let (mut data, _) = wait_while_until(&task.changed, data, None, |data| !data.status.is_finished());
            data.waiters -= 1;
            return;
        }
        Deferral::Finished => return,
    };
    drop(data);
    manager.deliver(event);
}

pub(super) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_owned()
    }
}
