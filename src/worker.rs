//! The one worker thread: takes tasks in FIFO order and runs each with no lock held.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

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
        let mut spun = false;
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
            if !spun && spinning_pays() {
                spun = true;
                drop(queue);
                self.spin_for_work();
                queue = lock(&self.queue);
                continue;
            }
            queue.worker_waiting = true;
            queue = self.work_available.wait(queue).unwrap_or_else(PoisonError::into_inner);
            queue.worker_waiting = false;
        }
    }

    /// Spins up to [`SPIN_BEFORE_SLEEP`] for work to arrive, without holding the queue lock.
    fn spin_for_work(&self) {
        let deadline = Instant::now() + SPIN_BEFORE_SLEEP;
        while Instant::now() < deadline {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if let Ok(queue) = self.queue.try_lock() {
                if queue.pending.len() > 0 || queue.shut_down {
                    return;
                }
            }
        }
    }

    fn run(self: &Arc<Self>, task: &Arc<Task>) {
        let mut data = lock(&task.data);
        if data.status != TaskState::Pending {
            return; // cancelled while queued
        }
        let mut job = data.job.take();
        if let Some(Job::Runner(runner_job)) = &mut job {
            // Handed over under the task's lock: the runner sees it PROCESSING once it can look.
            let runner = runner_job.runner().clone();
            if !runner.hand_over(runner_job, task) {
                data.job = job;
                self.cancel_pending(task, data, "its runner closed before it ran");
                return;
            }
        }
        data.status = TaskState::Processing;
        data.started_at = Some(unix_now());
        self.counters.transition(TaskState::Pending, TaskState::Processing);
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
            Some(Job::External | Job::Runner(_)) | None => (Ok(()), false),
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

/// How long the worker spins for more work before it sleeps. In a burst of submissions the
/// queue refills within microseconds, and a futex sleep plus a wake per task costs more than
/// the task; an idle service pays this once, after its last task.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// Spinning only helps when the submitter runs on another core meanwhile.
fn spinning_pays() -> bool {
    // Cached in an atomic rather than a OnceLock: a OnceLock being set when the process
    // forks stays locked in the child, whose new worker would then hang here.
    static MULTI_CORE: AtomicU8 = AtomicU8::new(0); // 0: not known yet, 1: no, 2: yes
    match MULTI_CORE.load(Ordering::Relaxed) {
        0 => {
            let multi_core = std::thread::available_parallelism().map_or(false, |cores| cores.get() > 1);
            MULTI_CORE.store(if multi_core { 2 } else { 1 }, Ordering::Relaxed);
            multi_core
        }
        known => known == 2,
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
