//! The one worker thread: takes tasks from the work queue (highest priority first, FIFO
//! within one) and runs each
//! with no lock held, through the manager's methods (it touches none of its fields).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::body::{Job, TaskContext, TaskFailure};
use super::named::Handler;
use super::{drop_job, TaskManager};
use crate::runner::Assignment;
use crate::status::TaskState;
use crate::sync::{lock, unix_now, wait_while_until};
use crate::task::{Deferral, Task};
use crate::work_queue::Queued;
use crate::{TaskId, DEADLINE_PASSED_PENDING};

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
    if task.deadline.is_some_and(|deadline| deadline <= unix_now()) {
        // The deadline timer is about to fail it; the worker does not start it meanwhile.
        manager.end_pending(task, data, TaskState::Failed, DEADLINE_PASSED_PENDING, Some(job));
        return;
    }
    // The attempt this start makes: a task resumed after a yield goes on with its attempt.
    let attempt = if data.resuming { data.attempt } else { data.attempt + 1 };
    data.deferral = match job {
        Job::External | Job::Runner(_) => Deferral::Awaiting,
        _ => Deferral::NotDeferred,
    };
    let mut handler = None;
    while let Job::Named { .. } = job {
        let Some((found, named_job)) = manager.handler_or_park(task, job) else { return };
        job = named_job;
        if let (Handler::Runner(runner), Job::Named { handler: name, payload }) = (&found, &job) {
            let assignment =
                Assignment::named(task.id.clone(), name.to_string(), payload.clone(), attempt, data.checkpoint.clone(), data.yields);
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
        if !runner.hand_over(runner_job, task, attempt, data.checkpoint.clone(), data.yields) {
            manager.cancel_pending(task, data, "its runner closed before it ran", Some(job));
            return;
        }
    }
    // A run-once body is consumed by its run: there is nothing to run again after a yield.
    data.can_yield = !matches!(job, Job::Body(_));
    data.yielding = false;
    // A finish from outside that yields counts one more; a cancel may follow before the
    // worker looks, and the job must still go back (its drop then tells a runner).
    let yields_before = data.yields;
    let event = manager.start(task, &mut data);
    drop(data);
    manager.deliver(event);

    // What ran comes back (but a run-once body), to run again if the task yields.
    let context = TaskContext { manager, task };
    let (outcome, panicked, kept) = match job {
        Job::Body(body) => match catch_unwind(AssertUnwindSafe(|| body.run(&context))) {
            Ok(outcome) => (outcome, false, None),
            Err(panic) => (Err(TaskFailure::Message(format!("task panicked: {}", panic_text(&*panic)))), true, None),
        },
        Job::Resumable(mut body) => match catch_unwind(AssertUnwindSafe(|| body.run(&context))) {
            Ok(outcome) => (outcome, false, Some(Job::Resumable(body))),
            Err(panic) => (Err(TaskFailure::Message(format!("task panicked: {}", panic_text(&*panic)))), true, Some(Job::Resumable(body))),
        },
        Job::Named { handler: name, payload } => {
            let ran = match &handler {
                Some(Handler::Function(handler)) => match catch_unwind(AssertUnwindSafe(|| handler(&context, &payload))) {
                    Ok(outcome) => (outcome, false),
                    Err(panic) => (Err(TaskFailure::Message(format!("handler panicked: {}", panic_text(&*panic)))), true),
                },
                _ => (Ok(()), false),
            };
            (ran.0, ran.1, Some(Job::Named { handler: name, payload }))
        }
        job @ (Job::External | Job::Runner(_)) => (Ok(()), false, Some(job)),
    };

    // A job that will not run again is dropped (its user data freed) before the task is
    // final, as soon as its code returned; one that may still yield is kept until it is over.
    let data = lock(&task.data);
    let may_run_again = !panicked && (data.yielding || data.deferral != Deferral::NotDeferred);
    drop(data);
    let kept = if may_run_again {
        kept
    } else {
        drop_job(kept);
        None
    };

    let mut data = lock(&task.data);
    let (event, requeue) = match data.deferral {
        Deferral::NotDeferred if data.yielding && kept.is_some() && data.status == TaskState::Processing => {
            manager.yield_run(task, &mut data)
        }
        Deferral::NotDeferred => (manager.finalize(task, &mut data, outcome), false),
        Deferral::Awaiting if panicked => {
            data.deferral = Deferral::Finished;
            (manager.finalize(task, &mut data, outcome), false)
        }
        Deferral::Awaiting => {
            // Completion was handed off: hold the worker until `finish` ends the run.
            data.waiters += 1;
            let (mut waited, _) = wait_while_until(&task.changed, data, None, |data| data.status == TaskState::Processing);
            waited.waiters -= 1;
            data = waited;
            (None, data.yields > yields_before)
        }
        // Finished from outside before the code returned; back in the queue if that run yielded.
        Deferral::Finished => (None, data.yields > yields_before),
    };
    drop(data);
    manager.deliver(event);
    match kept {
        Some(job) if requeue => manager.requeue_yielded(task, rerun(job, &task.id)),
        kept => drop_job(kept),
    }
}

/// The job that runs a yielded task again: the same one, but a runner's, which is queued
/// with its runner afresh (so that a close of the runner meanwhile releases it).
pub(super) fn rerun(job: Job, task_id: &TaskId) -> Job {
    match job {
        Job::Runner(ran) => {
            let runner = ran.runner().clone();
            drop(ran);
            Job::Runner(runner.enqueue(task_id))
        }
        job => job,
    }
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
