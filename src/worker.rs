//! The one worker thread: takes tasks in FIFO order and runs each with no lock held.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::error::{Error, ErrorKind, Result};
use crate::events::EventKind;
use crate::manager::TaskManager;
use crate::status::TaskState;
use crate::sync::{lock, unix_now, wait_while_until};
use crate::task::{Deferral, Job, Task, TaskContext, TaskFailure};

impl TaskManager {
    /// Starts the worker thread unless it already runs (on the first submission).
    pub(crate) fn ensure_worker(self: &Arc<Self>) -> Result<()> {
        if self.worker_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let _spawning = lock(&self.worker_spawn);
        if self.worker_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let manager = Arc::clone(self);
        std::thread::Builder::new()
            .name("storyflow-worker".into())
            .spawn(move || manager.work())
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start the worker thread: {e}")))?;
        self.worker_started.store(true, Ordering::Release);
        Ok(())
    }

    fn work(self: Arc<Self>) {
        self.mark_worker_thread();
        while let Some(task) = self.next_task() {
            self.run(&task);
        }
    }

    /// Blocks for the next queued task; `None` once shut down with nothing left.
    fn next_task(&self) -> Option<Arc<Task>> {
        let mut queue = lock(&self.queue);
        queue.running = None;
        loop {
            if let Some(task) = queue.pending.pop_front() {
                queue.running = Some(task.clone());
                return Some(task);
            }
            if queue.shut_down {
                queue.worker_exited = true;
                self.worker_done.notify_all();
                return None;
            }
            queue.worker_waiting = true;
            queue = self.work_available.wait(queue).unwrap_or_else(PoisonError::into_inner);
            queue.worker_waiting = false;
        }
    }

    fn run(self: &Arc<Self>, task: &Arc<Task>) {
        let mut data = lock(&task.data);
        if data.status != TaskState::Pending {
            return; // cancelled while queued
        }
        data.status = TaskState::Processing;
        data.started_at = Some(unix_now());
        self.counters.transition(TaskState::Pending, TaskState::Processing);
        let job = data.job.take();
        let event = self.bump(task, &mut data, EventKind::Started);
        drop(data);
        self.deliver(event);

        let (outcome, panicked) = match job {
            Some(Job::Body(body)) => {
                let context = TaskContext { manager: self, task };
                match catch_unwind(AssertUnwindSafe(|| body.run(&context))) {
                    Ok(outcome) => (outcome, false),
                    Err(panic) => (Err(TaskFailure::Message(format!("task panicked: {}", panic_text(&*panic)))), true),
                }
            }
            Some(Job::External) | None => (Ok(()), false),
        };

        let mut data = lock(&task.data);
        let event = match data.deferral {
            Deferral::NotDeferred => self.finalize(task, &mut data, outcome),
            Deferral::Awaiting if panicked => {
                data.deferral = Deferral::Finished;
                self.finalize(task, &mut data, outcome)
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
        self.deliver(event);
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic payload".to_owned()
    }
}
