//! The task manager: submission, the mutations a task reports, cancellation,
//! waiting, listing, statistics, cleanup and shutdown.
//!
//! The worker's queue ([`WorkQueue`]) and the retention of finished tasks
//! ([`Retention`]) are types of their own; the worker thread's loop is in
//! `worker.rs`, what a task runs in `body.rs`.
//!
//! Lock order, outermost first: a task's `data` -> the handlers -> the work queue -> a registry
//! shard -> a runner's mailbox / retention / the event log. No lock is held
//! while user code runs (task bodies, job destructors that free user data,
//! listeners).

mod body;
mod deadlines;
mod durable;
mod named;
mod worker;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::events::{EventKind, EventLog, TaskEvent};
use crate::registry::Registry;
use crate::retention::Retention;
use crate::runner::{Assignment, Runner, RunnerId, Runners};
use crate::stats::{Counters, PriorityPending, Stats};
use crate::status::{self, CompletedSegment, SegmentError, TaskState, TaskStatus};
use crate::sync::{deadline_after, lock, unix_now, wait_while_until};
use crate::task::{Deferral, Task, TaskData};
use crate::work_queue::{Queued, WorkQueue};
use crate::{Schedule, TaskId, DEADLINE_PASSED_PENDING, DEADLINE_PASSED_RUNNING};
use body::Job;
pub use body::{HandlerFn, ResumableBody, TaskBody, TaskContext, TaskFailure};
use deadlines::Deadlines;
use durable::Durable;
use named::Handlers;

/// A callback told of every event, on the thread that made the change, with no lock held.
pub type Listener = Arc<dyn Fn(&TaskEvent) + Send + Sync>;

/// A submission that was refused; the caller gets its task body back.
pub struct Rejected<B> {
    /// Why it was refused.
    pub error: Error,
    /// The body, untouched.
    pub body: B,
}

impl<B> std::fmt::Debug for Rejected<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejected").field("error", &self.error).finish_non_exhaustive()
    }
}

thread_local! {
    /// The address of the manager whose worker this thread is, or 0.
    static WORKER_OF: Cell<usize> = const { Cell::new(0) };
}

/// A registry of tasks and the one worker thread that runs them, highest priority first and
/// in submission order within one priority.
///
/// Create one with [`TaskManager::new`]; the C API and the bindings share a
/// process-wide one. The worker starts on the first submission and runs until
/// [`TaskManager::shutdown`]; it holds a reference to the manager meanwhile.
pub struct TaskManager {
    registry: Registry,
    queue: WorkQueue<Job>,
    retention: Retention,
    events: EventLog,
    listener: RwLock<Option<Listener>>,
    has_listener: AtomicBool,
    counters: Counters,
    runners: Runners,
    handlers: Mutex<Handlers>,
    /// Fixed at first use; `staged_config` collects settings until then.
    config: OnceLock<Config>,
    staged_config: Mutex<Config>,
    /// The durable store, once opened (set before `config` is fixed); never set for the memory store.
    durable: OnceLock<Arc<Durable>>,
    /// The memory store's deadlines, watched by a thread started at the first one.
    deadlines: Arc<Deadlines>,
}

impl TaskManager {
    /// A manager with the default configuration.
    pub fn new() -> Arc<Self> {
        Self::with_config(Config::default())
    }

    /// A manager with `config` (still changeable until the first submission).
    pub fn with_config(config: Config) -> Arc<Self> {
        Arc::new(Self {
            registry: Registry::new(),
            queue: WorkQueue::new(),
            retention: Retention::new(),
            events: EventLog::new(),
            listener: RwLock::new(None),
            has_listener: AtomicBool::new(false),
            counters: Counters::default(),
            runners: Runners::new(),
            handlers: Mutex::new(Handlers::default()),
            config: OnceLock::new(),
            staged_config: Mutex::new(config),
            durable: OnceLock::new(),
            deadlines: Arc::new(Deadlines::new()),
        })
    }

    // ----- configuration -------------------------------------------------

    /// The configuration in force (or that will be, if nothing was submitted yet).
    pub fn config(&self) -> Config {
        match self.config.get() {
            Some(config) => config.clone(),
            None => lock(&self.staged_config).clone(),
        }
    }

    /// Applies the settings of a JSON object on top of the current ones.
    ///
    /// Allowed until the first submission; afterwards only a call that changes
    /// nothing succeeds, others get [`ErrorKind::InvalidState`].
    pub fn configure_json(&self, json: &str) -> Result<()> {
        let merged = self.config().merged_with_json(json)?;
        self.configure(merged)
    }

    /// Replaces the configuration, under the same rule as [`TaskManager::configure_json`].
    pub fn configure(&self, config: Config) -> Result<()> {
        config.validate()?;
        let mut staged = lock(&self.staged_config);
        *staged = config.clone();
        drop(staged);
        match self.config.get() {
            Some(in_force) if *in_force != config => {
                Err(Error::invalid_state("the configuration is fixed once the first task was submitted"))
            }
            _ => Ok(()),
        }
    }

    /// The durable store this manager runs on (`None`: the memory store), opened by the
    /// first call that needs it, which fixes the configuration. An open that fails
    /// returns the store's error and fixes nothing, so that a corrected `configure` can
    /// follow. `freeze`: the caller fixes the configuration for the memory store too (a
    /// submission, a registration); reads do not.
    fn open_store(&self, freeze: bool) -> Result<Option<&Arc<Durable>>> {
        if self.config.get().is_some() {
            return Ok(self.durable.get());
        }
        self.open_store_first(freeze)
    }

    #[cold]
    fn open_store_first(&self, freeze: bool) -> Result<Option<&Arc<Durable>>> {
        let staged = lock(&self.staged_config);
        if self.config.get().is_some() {
            return Ok(self.durable.get());
        }
        staged.validate()?;
        let durable = match staged.store_choice()? {
            crate::config::StoreChoice::Memory => {
                if freeze {
                    let _ = self.config.set(staged.clone());
                }
                return Ok(None);
            }
            crate::config::StoreChoice::Sqlite(path) => Durable::open_sqlite(&path, &staged)?,
            crate::config::StoreChoice::Redis(url) => Durable::open_redis(&url, &staged)?,
        };
        let listener = self.listener.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let _ = self.durable.set(durable);
        let _ = self.config.set(staged.clone());
        drop(staged);
        let durable = self.durable.get().expect("just set");
        if listener.is_some() {
            self.set_durable_listener(durable, listener);
        }
        Ok(Some(durable))
    }

    fn frozen_config(&self) -> &Config {
        self.config.get_or_init(|| lock(&self.staged_config).clone())
    }

    // ----- submission ----------------------------------------------------

    /// Queues `body` under `task_id` (a new UUIDv4 if `None`) and returns the id.
    ///
    /// On any error the body is handed back untouched in [`Rejected`].
    /// The body runs once: it cannot yield ([`TaskManager::submit_resumable`] makes one that can).
    pub fn submit<B: TaskBody>(self: &Arc<Self>, task_id: Option<&str>, body: B) -> Result<TaskId, Rejected<B>> {
        self.submit_with(task_id, Schedule::default(), body)
    }

    /// As [`TaskManager::submit`], scheduled by `schedule` (its priority and deadline).
    pub fn submit_with<B: TaskBody>(self: &Arc<Self>, task_id: Option<&str>, schedule: Schedule, body: B) -> Result<TaskId, Rejected<B>> {
        // Boxed before the queue lock is taken; under it the box only changes type.
        let mut body = Some(Box::new(body));
        self.submit_job(task_id, false, None, schedule, |_| Job::Body(body.take().expect("the job is made once")))
            .map_err(|error| Rejected { error, body: *body.take().expect("a refused submission keeps its body") })
    }

    /// Queues a body that may yield to a higher-priority task: it is run again when the task
    /// resumes. Otherwise as [`TaskManager::submit_with`].
    pub fn submit_resumable<B: ResumableBody>(
        self: &Arc<Self>,
        task_id: Option<&str>,
        schedule: Schedule,
        body: B,
    ) -> Result<TaskId, Rejected<B>> {
        let mut body = Some(Box::new(body));
        self.submit_job(task_id, false, None, schedule, |_| Job::Resumable(body.take().expect("the job is made once")))
            .map_err(|error| Rejected { error, body: *body.take().expect("a refused submission keeps its body") })
    }

    /// Queues a task with nothing to run: when the worker reaches it, it becomes
    /// PROCESSING and holds the worker until [`TaskManager::finish`] is called.
    /// This is how an event loop (a JS Promise, an asyncio coroutine) runs a task.
    pub fn submit_external(self: &Arc<Self>, task_id: Option<&str>) -> Result<TaskId> {
        self.submit_external_with(task_id, Schedule::default())
    }

    /// As [`TaskManager::submit_external`], scheduled by `schedule`.
    pub fn submit_external_with(self: &Arc<Self>, task_id: Option<&str>, schedule: Schedule) -> Result<TaskId> {
        self.submit_job(task_id, true, None, schedule, |_| Job::External)
    }

    /// Queues a task with the job `make_job` makes, once the task is accepted (a runner's job
    /// tells its runner when it is dropped unrun). `finished_from_outside`, `handler`: see [`Task::new`].
    fn submit_job(
        self: &Arc<Self>,
        task_id: Option<&str>,
        finished_from_outside: bool,
        handler: Option<TaskId>,
        schedule: Schedule,
        make_job: impl FnOnce(&TaskId) -> Job,
    ) -> Result<TaskId> {
        schedule.validate()?;
        if let Some(durable) = self.open_store(true)? {
            return self.submit_durable(durable, task_id, schedule, make_job);
        }
        let config = self.frozen_config();
        let task_id = config.task_id_or_new(task_id)?;
        self.ensure_worker()?;
        // Allocated before the queue lock: malloc now and then consolidates for milliseconds,
        // which under the lock would stall every submitter and every reader of a queue position.
        let task = Arc::new(Task::new(task_id.clone(), unix_now(), finished_from_outside, handler, schedule));
        let mut queue = self.queue.submission();
        if queue.is_shut_down() {
            return Err(Error::new(ErrorKind::ShutDown, "the task manager was shut down"));
        }
        if config.max_pending_tasks > 0 && queue.pending_len() as u64 >= config.max_pending_tasks {
            // A taken id is the permanent problem; report it rather than a full queue worth retrying.
            if self.registry.contains(&task_id) {
                return Err(duplicate_id(&task_id));
            }
            return Err(Error::new(
                ErrorKind::QueueFull,
                format!("the queue holds {} pending tasks, its configured maximum", queue.pending_len()),
            ));
        }
        queue.number(&task);
        if !self.registry.insert_new(&task) {
            return Err(duplicate_id(&task_id));
        }
        // Under the queue lock: a cancel of the just published task waits for the push,
        // then takes the job out of the queue with it.
        let job = make_job(&task_id);
        let watched = schedule.deadline.map(|deadline| (task.clone(), deadline));
        queue.push(Queued { task, job });
        self.counters.submitted();
        // Recorded under the queue lock so that "submitted" precedes the worker's "started".
        let event = self.record(&task_id, EventKind::Submitted, TaskState::Pending, 1);
        drop(queue);
        self.deliver(event);
        if let Some((task, deadline)) = watched {
            self.watch_deadline(&task, deadline);
        }
        self.collect_expired();
        Ok(task_id)
    }

    /// Has the task's deadline watched; one already past (clock skew) fails it at once.
    fn watch_deadline(self: &Arc<Self>, task: &Arc<Task>, deadline: f64) {
        if deadline <= unix_now() || self.deadlines.watch(self, task, deadline).is_err() {
            // Without a timer thread the deadline could pass unseen: the worker checks it
            // when it reaches the task, and a task already late fails now.
            if deadline <= unix_now() {
                self.deadline_passed(task);
            }
        }
    }

    /// What a passed deadline does: a pending task fails, a running one is asked to cancel.
    fn deadline_passed(&self, task: &Arc<Task>) {
        let mut data = lock(&task.data);
        match data.status {
            TaskState::Pending => self.end_pending(task, data, TaskState::Failed, DEADLINE_PASSED_PENDING, None),
            TaskState::Processing => {
                if !data.cancel_requested {
                    data.deadline_cancel = true;
                }
                let event = self.request_cancel(task, &mut data);
                drop(data);
                self.deliver(event);
            }
            _ => {}
        }
    }

    // ----- runners ---------------------------------------------------------

    /// Registers a runner: a thread or event loop outside the core that runs the tasks
    /// submitted to it with [`TaskManager::submit_to_runner`].
    pub fn register_runner(&self) -> RunnerId {
        self.runners.register()
    }

    /// Queues a task that `runner` runs. When the worker reaches it, it becomes
    /// PROCESSING and is handed to the runner's [`TaskManager::next_assignment`]; the
    /// worker stays with it until [`TaskManager::finish_runner_task`].
    pub fn submit_to_runner(self: &Arc<Self>, runner: RunnerId, task_id: Option<&str>) -> Result<TaskId> {
        self.submit_to_runner_with(runner, task_id, Schedule::default())
    }

    /// As [`TaskManager::submit_to_runner`], scheduled by `schedule`.
    pub fn submit_to_runner_with(self: &Arc<Self>, runner: RunnerId, task_id: Option<&str>, schedule: Schedule) -> Result<TaskId> {
        // A runner that closes after this check gets the task back unrun from the worker.
        let runner = self.runners.get_open(runner)?;
        self.submit_job(task_id, true, None, schedule, |task_id| Job::Runner(runner.enqueue(task_id)))
    }

    /// Blocks until the worker hands `runner` a task, or `timeout` passes.
    ///
    /// With `run: true` the calling thread is inside that task until it is finished:
    /// waiting there for a pending task, or for that task to finish, is refused
    /// ([`ErrorKind::InvalidState`]) because it would deadlock. `run: false` is a task
    /// released without running (cancelled, or shut down, before it started).
    /// Errors: [`ErrorKind::Timeout`], [`ErrorKind::ShutDown`] (the runner was closed, or
    /// the manager shut down with nothing left for it), [`ErrorKind::NotFound`].
    pub fn next_assignment(&self, runner: RunnerId, timeout: Option<Duration>) -> Result<Assignment> {
        self.runners.next(runner, deadline_after(timeout))
    }

    /// Finishes the task `runner` was handed, from any thread: `Ok` completes it, `Err`
    /// fails it (CANCELLED instead if cancellation was requested); after
    /// [`TaskManager::yield_task`] it goes back to PENDING instead. It cannot fail on the
    /// message: one over `max_message_bytes` is shortened and says so.
    pub fn finish_runner_task(&self, runner: RunnerId, task_id: &str, outcome: Result<(), TaskFailure>) -> Result<()> {
        let runner = self.runners.get(runner)?;
        let Some(task) = runner.take_running(task_id) else {
            if !self.contains(task_id) {
                return Err(Error::not_found(task_id));
            }
            return Err(Error::invalid_state(format!("task {task_id:?} is not the task this runner is running")));
        };
        let outcome = outcome.map_err(|failure| match failure {
            TaskFailure::Message(message) => TaskFailure::Message(self.frozen_config().shorten_message(message)),
            code => code,
        });
        if let Some(durable) = self.durable() {
            return self.finish_runner_durable(durable, &task, outcome);
        }
        let mut data = lock(&task.data);
        if data.status != TaskState::Processing || data.deferral != Deferral::Awaiting {
            return Err(Error::invalid_state(format!("task {task_id:?} is {} already", data.status.as_str())));
        }
        data.deferral = Deferral::Finished;
        let event = self.end_run(&task, &mut data, outcome);
        drop(data);
        self.deliver(event);
        Ok(())
    }

    /// Closes a runner: its queued tasks are CANCELLED; its running task is asked to cancel,
    /// given `timeout` to finish, then FAILED. A blocked `next_assignment` returns
    /// [`ErrorKind::ShutDown`]. Until it returns, the runner can still finish its running
    /// task (the close then returns at once) and refuses new tasks; its id is unknown afterwards.
    pub fn close_runner(&self, runner_id: RunnerId, timeout: Option<Duration>) -> Result<()> {
        let deadline = deadline_after(timeout);
        let (runner, closed) = self.runners.close(runner_id)?;
        self.remove_runner_handlers(&runner);
        if let Some(durable) = self.durable() {
            self.close_runner_durable(durable, &runner, closed.queued, closed.running, deadline);
            self.runners.unregister(runner_id);
            return Ok(());
        }
        for task_id in closed.queued {
            if let Some(task) = self.registry.get(&task_id) {
                let data = lock(&task.data);
                if data.status == TaskState::Pending {
                    self.cancel_pending(&task, data, "its runner closed before it ran", None);
                }
            }
        }
        if let Some(task) = closed.running {
            self.stop_running_task_of_closed_runner(&runner, &task, deadline);
        }
        self.runners.unregister(runner_id);
        Ok(())
    }

    /// Asks a closed runner's running task to cancel, waits until `deadline` for the runner
    /// to finish it (it still can: the runner stays registered meanwhile), then fails it.
    fn stop_running_task_of_closed_runner(&self, runner: &Runner, task: &Arc<Task>, deadline: Option<Instant>) {
        let mut data = lock(&task.data);
        if data.status != TaskState::Processing {
            return;
        }
        let event = self.request_cancel(task, &mut data);
        drop(data);
        self.deliver(event);
        // On the thread inside the task nothing can finish it meanwhile: fail it at once.
        let inside = self.runners.task_inside().is_some_and(|inside| Arc::ptr_eq(&inside, task));
        if !inside {
            let mut data = lock(&task.data);
            data.waiters += 1;
            let (mut data, _) = wait_while_until(&task.changed, data, deadline, |data| !data.status.is_finished());
            data.waiters -= 1;
            if data.status.is_finished() {
                return;
            }
        }
        // Whoever takes the running task finishes it: a `finish_runner_task` that took it
        // first is about to, and no user code runs in between, so that wait is short.
        if runner.take_running(&task.id).is_none() {
            let mut data = lock(&task.data);
            data.waiters += 1;
            let (mut data, _) = wait_while_until(&task.changed, data, None, |data| !data.status.is_finished());
            data.waiters -= 1;
            return;
        }
        let mut data = lock(&task.data);
        data.deferral = Deferral::Finished;
        let event = self.conclude(task, &mut data, TaskState::Failed, Some("its runner closed while it was running".into()));
        drop(data);
        self.deliver(event);
    }

    // ----- reads ---------------------------------------------------------

    fn find(&self, task_id: &str) -> Result<Arc<Task>> {
        self.registry.get(task_id).ok_or_else(|| Error::not_found(task_id))
    }

    /// Whether a task with this id is in the registry.
    pub fn contains(&self, task_id: &str) -> bool {
        match self.open_store(false) {
            Ok(Some(durable)) => durable.store.status_json(task_id).is_ok(),
            Ok(None) => self.registry.contains(task_id),
            Err(_) => false,
        }
    }

    /// Renders a task's status under its lock.
    fn render(&self, task: &Task, data: &TaskData) -> Box<RawValue> {
        let position = (data.status == TaskState::Pending && !task.awaiting_handler.load(Ordering::Acquire))
            // A task the worker already dequeued but not yet started (or is putting back
            // after a yield) is next: 0.
            .then(|| self.queue.position(task).unwrap_or(0));
        let yield_requested = data.status == TaskState::Processing && self.queue.has_pending_above(task.priority);
        data.to_raw(task, position, yield_requested)
    }

    /// The status JSON of a task, or `None` if the id is unknown (or the store cannot be read).
    pub fn status_json(&self, task_id: &str) -> Option<String> {
        self.read_status(task_id).ok()
    }

    /// The status JSON of a task: [`ErrorKind::NotFound`] if the id is unknown, or the
    /// store's error (one that cannot be opened, or read).
    pub fn read_status(&self, task_id: &str) -> Result<String> {
        if let Some(durable) = self.open_store(false)? {
            return durable.store.status_json(task_id);
        }
        self.memory_status_json(task_id).ok_or_else(|| Error::not_found(task_id))
    }

    fn memory_status_json(&self, task_id: &str) -> Option<String> {
        let task = self.registry.get(task_id)?;
        let data = lock(&task.data);
        Some(raw_into_string(self.render(&task, &data)))
    }

    /// The status of a task as a typed value, or `None` if the id is unknown.
    pub fn status(&self, task_id: &str) -> Option<TaskStatus> {
        let json = self.status_json(task_id)?;
        Some(serde_json::from_str(&json).expect("the status JSON matches TaskStatus"))
    }

    /// Statuses of every task (or those in `filter`), in submission order, as a JSON array
    /// (`[]` if the store cannot be read: [`TaskManager::list`] says why).
    pub fn list_json(&self, filter: Option<TaskState>) -> String {
        self.list(filter).unwrap_or_else(|_| "[]".to_owned())
    }

    /// As [`TaskManager::list_json`], with the store's error if it cannot be opened or read.
    pub fn list(&self, filter: Option<TaskState>) -> Result<String> {
        if let Some(durable) = self.open_store(false)? {
            return durable.store.list_json(filter);
        }
        Ok(self.memory_list_json(filter))
    }

    fn memory_list_json(&self, filter: Option<TaskState>) -> String {
        let mut rendered: Vec<(u64, Box<RawValue>)> = self
            .registry
            .snapshot()
            .into_iter()
            .filter_map(|task| {
                let data = lock(&task.data);
                let wanted = filter.is_none_or(|state| state == data.status);
                wanted.then(|| (task.order.load(Ordering::Relaxed), self.render(&task, &data)))
            })
            .collect();
        rendered.sort_unstable_by_key(|(seq, _)| *seq);
        let statuses: Vec<&RawValue> = rendered.iter().map(|(_, raw)| raw.as_ref()).collect();
        serde_json::to_string(&statuses).expect("raw statuses serialise")
    }

    /// Counts by state, queue depth, totals and run times (zeros if the store cannot be
    /// read: [`TaskManager::read_stats`] says why).
    pub fn stats(&self) -> Stats {
        self.read_stats().unwrap_or_else(|_| Counters::default().snapshot(0, Vec::new()))
    }

    /// As [`TaskManager::stats`], with the store's error if it cannot be opened or read.
    pub fn read_stats(&self) -> Result<Stats> {
        if let Some(durable) = self.open_store(false)? {
            return durable.store.stats();
        }
        Ok(self.memory_stats())
    }

    fn memory_stats(&self) -> Stats {
        // The tasks set aside for a handler are pending too, each at its own priority.
        let parked = lock(&self.handlers).parked_priorities();
        let mut by_priority = self.queue.depth_by_priority();
        for priority in parked {
            match by_priority.binary_search_by(|(p, _)| priority.cmp(p)) {
                Ok(index) => by_priority[index].1 += 1,
                Err(index) => by_priority.insert(index, (priority, 1)),
            }
        }
        let depth = by_priority.iter().map(|(_, n)| n).sum();
        let by_priority = by_priority.into_iter().map(|(priority, n)| PriorityPending { priority, pending: n as u64 }).collect();
        self.counters.snapshot(depth, by_priority)
    }

    /// Whether cancellation of a task was requested (polled by running tasks).
    pub fn is_cancel_requested(&self, task_id: &str) -> Result<bool> {
        if let Some(durable) = self.open_store(false)? {
            return durable.is_cancel_requested(task_id);
        }
        Ok(lock(&self.find(task_id)?.data).cancel_requested)
    }

    // ----- mutations a task reports ---------------------------------------

    /// Applies `change` to a task under its lock, then bumps its revision and records the event.
    fn change_task(&self, task_id: &str, change: impl FnOnce(&mut TaskData, &Config) -> Result<EventKind>) -> Result<()> {
        let task = self.find(task_id)?;
        let mut data = lock(&task.data);
        let kind = change(&mut data, self.frozen_config())?;
        let event = self.bump(&task, &mut data, kind);
        drop(data);
        self.deliver(event);
        Ok(())
    }

    /// Replaces a task's progress with `current` of `total` plus `extra` keys.
    ///
    /// Integers in `extra` are kept exactly; other numbers must be finite doubles.
    pub fn update_progress(&self, task_id: &str, current: u64, total: u64, extra: Option<&Map<String, Value>>) -> Result<()> {
        let extra = match extra {
            Some(extra) => {
                let mut extra = Value::Object(extra.clone());
                crate::json::canonicalize("extra", &mut extra)?;
                let Value::Object(extra) = extra else { unreachable!("an object stays an object") };
                Some(extra)
            }
            None => None,
        };
        if let Some(durable) = self.open_store(false)? {
            return durable.store.update_progress(task_id, current, total, extra.as_ref());
        }
        self.set_progress(task_id, status::progress_json(current, total, extra.as_ref())?)
    }

    /// As [`TaskManager::update_progress`], with the extras as the text of a JSON object.
    pub fn update_progress_json(&self, task_id: &str, current: u64, total: u64, extra_json: Option<&str>) -> Result<()> {
        let extra = match extra_json {
            Some(text) => {
                self.config().check_extra_json(text)?;
                Some(status::parse_extra_json(text)?)
            }
            None => None,
        };
        if let Some(durable) = self.open_store(false)? {
            return durable.store.update_progress(task_id, current, total, extra.as_ref());
        }
        self.set_progress(task_id, status::progress_json(current, total, extra.as_ref())?)
    }

    fn set_progress(&self, task_id: &str, progress: Box<RawValue>) -> Result<()> {
        self.change_unfinished_task(task_id, |data, _| {
            data.progress = Some(progress);
            Ok(EventKind::Progress)
        })
    }

    /// Appends a completed segment.
    pub fn add_completed_segment(&self, task_id: &str, segment: &CompletedSegment) -> Result<()> {
        if !segment.duration.is_finite() || segment.duration < 0.0 {
            return Err(Error::invalid(format!("duration must be finite and >= 0, not {}", segment.duration)));
        }
        let limits = self.config();
        limits.check_segment_id(&segment.segment_id)?;
        limits.check_url(&segment.audio_url)?;
        if let Some(durable) = self.open_store(false)? {
            return durable.store.add_segment(task_id, segment);
        }
        self.append_report(task_id, status::to_raw(segment)?, EventKind::Segment)
    }

    /// Appends a completed segment given as its wire object
    /// `{"segment_id": 7 | "7", "audio_url": "…", "duration": 2.5}`.
    pub fn add_completed_segment_json(&self, task_id: &str, segment_json: &str) -> Result<()> {
        self.add_completed_segment(task_id, &CompletedSegment::from_json(segment_json)?)
    }

    /// Appends a segment error.
    pub fn add_error(&self, task_id: &str, error: &SegmentError) -> Result<()> {
        let limits = self.config();
        limits.check_segment_id(&error.segment_id)?;
        limits.check_message("error message", &error.error)?;
        if let Some(durable) = self.open_store(false)? {
            return durable.store.add_error(task_id, error);
        }
        self.append_report(task_id, status::to_raw(error)?, EventKind::Error)
    }

    /// Appends a segment error given as its wire object `{"segment_id": 3 | "3", "error": "…"}`.
    pub fn add_error_json(&self, task_id: &str, error_json: &str) -> Result<()> {
        self.add_error(task_id, &SegmentError::from_json(error_json)?)
    }

    /// Appends a serialised segment (`Segment`) or segment error (`Error`) within its per-task cap.
    fn append_report(&self, task_id: &str, report: Box<RawValue>, kind: EventKind) -> Result<()> {
        self.change_unfinished_task(task_id, |data, config| {
            let (reports, cap, what) = if kind == EventKind::Segment {
                (&mut data.segments, config.max_segments_per_task, "completed segments")
            } else {
                (&mut data.errors, config.max_errors_per_task, "segment errors")
            };
            if reports.len() >= cap {
                return Err(Error::invalid(format!("task already has {} {what}, the configured maximum", reports.len())));
            }
            reports.push(report);
            Ok(kind)
        })
    }

    /// As `change_task`, refused with [`ErrorKind::InvalidState`] once the task is final:
    /// a finished task's status never changes again.
    fn change_unfinished_task(&self, task_id: &str, change: impl FnOnce(&mut TaskData, &Config) -> Result<EventKind>) -> Result<()> {
        self.change_task(task_id, |data, config| {
            if data.status.is_finished() {
                return Err(finished_already(task_id, data.status));
            }
            change(data, config)
        })
    }

    /// Sets the text the status `error` shows if the task fails; the latest call wins.
    pub fn set_failure_message(&self, task_id: &str, message: &str) -> Result<()> {
        self.config().check_message("failure message", message)?;
        if let Some(durable) = self.open_store(false)? {
            return durable.store.set_failure_message(task_id, message);
        }
        let task = self.find(task_id)?;
        let mut data = lock(&task.data);
        if data.status.is_finished() {
            return Err(finished_already(task_id, data.status));
        }
        data.message = Some(message.into());
        Ok(())
    }

    // ----- cancellation ----------------------------------------------------

    /// Cancels a task. A pending task becomes CANCELLED at once and never runs
    /// (returns `Cancelled`); a running one is asked to stop (returns `Processing`).
    /// Never waits for the worker.
    pub fn cancel(&self, task_id: &str) -> Result<TaskState> {
        if let Some(durable) = self.open_store(false)? {
            return self.cancel_durable(durable, task_id);
        }
        let task = self.find(task_id)?;
        let mut data = lock(&task.data);
        match data.status {
            TaskState::Pending => {
                self.cancel_pending(&task, data, "cancelled before it started", None);
                Ok(TaskState::Cancelled)
            }
            TaskState::Processing => {
                let event = self.request_cancel(&task, &mut data);
                drop(data);
                self.deliver(event);
                Ok(TaskState::Processing)
            }
            finished => Err(Error::invalid_state(format!("task {task_id:?} already finished as {}", finished.as_str()))),
        }
    }

    fn request_cancel(&self, task: &Task, data: &mut TaskData) -> Option<TaskEvent> {
        if data.cancel_requested {
            return None;
        }
        data.cancel_requested = true;
        self.bump(task, data, EventKind::CancelRequested)
    }

    /// PENDING -> CANCELLED; frees the job (user data) after releasing the lock: `job` if the
    /// caller holds it, else the one the task still has in the queue.
    fn cancel_pending(&self, task: &Arc<Task>, data: std::sync::MutexGuard<'_, TaskData>, reason: &str, job: Option<Job>) {
        self.end_pending(task, data, TaskState::Cancelled, reason, job);
    }

    /// PENDING -> `state` (CANCELLED, or FAILED for a passed deadline) with `reason` as its
    /// `error`; frees the job as [`TaskManager::cancel_pending`] does.
    fn end_pending(
        &self,
        task: &Arc<Task>,
        mut data: std::sync::MutexGuard<'_, TaskData>,
        state: TaskState,
        reason: &str,
        job: Option<Job>,
    ) {
        data.status = state;
        data.message = Some(reason.into());
        data.completed_at = Some(unix_now());
        let job = job.or_else(|| self.queue.remove(task)).or_else(|| self.take_parked(task));
        self.counters.transition(TaskState::Pending, state);
        let event = self.bump(task, &mut data, EventKind::Finished);
        self.retire(task, &data);
        drop(data);
        drop_job(job);
        self.deliver(event);
    }

    // ----- deferred completion ----------------------------------------------

    /// Marks the running task as completing later: the worker waits for [`TaskManager::finish`].
    pub fn defer(&self, task_id: &str) -> Result<()> {
        if let Some(durable) = self.open_store(false)? {
            return self.defer_durable(durable, task_id);
        }
        let task = self.find(task_id)?;
        let mut data = lock(&task.data);
        match (data.status, data.deferral) {
            (TaskState::Processing, Deferral::NotDeferred) => {
                data.deferral = Deferral::Awaiting;
                Ok(())
            }
            (TaskState::Processing, Deferral::Awaiting) => Ok(()),
            (state, _) => {
                Err(Error::invalid_state(format!("only a running task can defer its completion; task {task_id:?} is {}", state.as_str())))
            }
        }
    }

    /// Finishes a deferred or external task from any thread: `Ok` completes it,
    /// `Err` fails it (CANCELLED instead if cancellation was requested); after
    /// [`TaskManager::yield_task`] it goes back to PENDING instead.
    pub fn finish(&self, task_id: &str, outcome: Result<(), TaskFailure>) -> Result<()> {
        if let Err(TaskFailure::Message(message)) = &outcome {
            self.config().check_message("failure message", message)?;
        }
        if let Some(durable) = self.open_store(false)? {
            return self.finish_durable(durable, task_id, outcome);
        }
        let task = self.find(task_id)?;
        let mut data = lock(&task.data);
        if data.status != TaskState::Processing || data.deferral != Deferral::Awaiting {
            return Err(Error::invalid_state(format!("task {task_id:?} is {} and not awaiting deferred completion", data.status.as_str())));
        }
        data.deferral = Deferral::Finished;
        let event = self.end_run(&task, &mut data, outcome);
        drop(data);
        self.deliver(event);
        Ok(())
    }

    // ----- cooperative yield ------------------------------------------------------

    /// Whether the task runs while a task of a higher priority waits that this process can
    /// run: it should yield. Memory store: one atomic load and the task's lock.
    pub fn is_yield_requested(&self, task_id: &str) -> Result<bool> {
        if let Some(durable) = self.open_store(false)? {
            return durable.store.is_yield_requested(task_id);
        }
        let task = self.find(task_id)?;
        let running = lock(&task.data).status == TaskState::Processing;
        Ok(running && self.queue.has_pending_above(task.priority))
    }

    /// Says that the running task yields: the end of this run (its function's return, its
    /// runner's or deferred finish) puts it back to PENDING at the head of its priority,
    /// whatever the outcome, with its segments, errors, progress and checkpoint; `yields`
    /// grows by one and `attempt` stays. A task may yield unasked. Cancellation and a
    /// passed deadline still win. Errors: [`ErrorKind::NotFound`], [`ErrorKind::InvalidState`]
    /// (not running, or a run-once body of [`TaskManager::submit`]).
    pub fn yield_task(&self, task_id: &str) -> Result<()> {
        if let Some(durable) = self.open_store(false)? {
            return self.yield_durable(durable, task_id);
        }
        let task = self.find(task_id)?;
        let mut data = lock(&task.data);
        mark_yielding(task_id, &mut data)
    }

    /// PROCESSING -> PENDING after a yield, under the task's lock, unless cancellation or the
    /// deadline wins (then it is finalised). True: the caller puts the task back in the queue.
    fn yield_run(&self, task: &Arc<Task>, data: &mut TaskData) -> (Option<TaskEvent>, bool) {
        data.yielding = false;
        let late = task.deadline.is_some_and(|deadline| deadline <= unix_now());
        if data.cancel_requested || late {
            if !data.cancel_requested {
                data.deadline_cancel = true;
                data.cancel_requested = true;
            }
            return (self.finalize(task, data, Ok(())), false);
        }
        data.status = TaskState::Pending;
        data.started_at = None;
        data.yields += 1;
        data.resuming = true;
        self.counters.transition(TaskState::Processing, TaskState::Pending);
        (self.bump(task, data, EventKind::Yielded), true)
    }

    /// The end of a run finished from outside (a deferred, external or runner task): a yield
    /// marks it PENDING, and the worker, which holds its job, puts it back in the queue.
    fn end_run(&self, task: &Arc<Task>, data: &mut TaskData, outcome: Result<(), TaskFailure>) -> Option<TaskEvent> {
        if data.yielding {
            return self.yield_run(task, data).0;
        }
        self.finalize(task, data, outcome)
    }

    /// Puts a task that yielded back at the head of its priority with `job`, which runs it
    /// again; unless it was cancelled meanwhile (the job is dropped) or the queue shut down.
    fn requeue_yielded(&self, task: &Arc<Task>, job: Job) {
        let data = lock(&task.data);
        if data.status != TaskState::Pending {
            drop(data);
            drop_job(Some(job));
            return;
        }
        if let Err(Queued { job, .. }) = self.queue.requeue_yielded(Queued { task: task.clone(), job }) {
            self.end_pending(task, data, TaskState::Cancelled, "cancelled by shutdown", Some(job));
        }
    }

    /// PENDING -> PROCESSING, under the task's lock, as the worker starts it.
    fn start(&self, task: &Task, data: &mut TaskData) -> Option<TaskEvent> {
        data.status = TaskState::Processing;
        data.started_at = Some(unix_now());
        // A task resumed after a yield goes on with the same attempt.
        if !std::mem::take(&mut data.resuming) {
            data.attempt += 1;
        }
        self.counters.transition(TaskState::Pending, TaskState::Processing);
        self.bump(task, data, EventKind::Started)
    }

    /// PROCESSING -> COMPLETED / FAILED / CANCELLED, under the task's lock; also queues it for cleanup.
    fn finalize(&self, task: &Arc<Task>, data: &mut TaskData, outcome: Result<(), TaskFailure>) -> Option<TaskEvent> {
        let (state, message) = match (outcome, data.cancel_requested) {
            (_, true) if data.deadline_cancel => (TaskState::Cancelled, Some(DEADLINE_PASSED_RUNNING.into())),
            (_, true) => (TaskState::Cancelled, Some("cancelled while running".into())),
            (Ok(()), false) => (TaskState::Completed, None),
            (Err(TaskFailure::Message(message)), false) => (TaskState::Failed, Some(message.into_boxed_str())),
            (Err(TaskFailure::Code(code)), false) => {
                let generic = || format!("task function returned {code}").into_boxed_str();
                (TaskState::Failed, Some(data.message.take().unwrap_or_else(generic)))
            }
        };
        self.conclude(task, data, state, message)
    }

    /// PROCESSING -> `state` with `message` as its `error` (if any), under the task's lock.
    fn conclude(&self, task: &Arc<Task>, data: &mut TaskData, state: TaskState, message: Option<Box<str>>) -> Option<TaskEvent> {
        if message.is_some() {
            data.message = message;
        }
        let now = unix_now();
        data.status = state;
        data.completed_at = Some(now);
        self.counters.transition(TaskState::Processing, state);
        self.counters.ran_for(now - data.started_at.unwrap_or(now));
        let event = self.bump(task, data, EventKind::Finished);
        self.retire(task, data);
        event
    }

    // ----- waiting ------------------------------------------------------------

    /// Blocks until the task is finished or `timeout` passes (`None`: no limit); returns its final status.
    pub fn wait(&self, task_id: &str, timeout: Option<Duration>) -> Result<String> {
        if let Some(durable) = self.open_store(false)? {
            self.check_durable_wait(durable, task_id, "finish")?;
            return durable.store.wait(task_id, timeout);
        }
        self.wait_until(task_id, timeout, "finish", |data| data.status.is_finished())
    }

    /// Blocks until the task's revision exceeds `after_revision` or it is finished
    /// (long-poll); returns the new status.
    pub fn wait_for_change(&self, task_id: &str, after_revision: u64, timeout: Option<Duration>) -> Result<String> {
        if let Some(durable) = self.open_store(false)? {
            self.check_durable_wait(durable, task_id, "change")?;
            return durable.store.wait_for_change(task_id, after_revision, timeout);
        }
        self.wait_until(task_id, timeout, "change", |data| data.revision > after_revision || data.status.is_finished())
    }

    fn wait_until(&self, task_id: &str, timeout: Option<Duration>, awaited: &str, done: impl Fn(&TaskData) -> bool) -> Result<String> {
        let deadline = deadline_after(timeout);
        let task = self.find(task_id)?;
        // Looked up before the awaited task is locked: one task lock at a time.
        let inside = self.runners.task_inside();
        let mut data = lock(&task.data);
        if !done(&data) {
            let on_worker = self.on_own_worker();
            let blocked = match data.status {
                TaskState::Pending => on_worker || inside.is_some(),
                TaskState::Processing => {
                    awaited == "finish" && (on_worker || inside.as_ref().is_some_and(|inside| Arc::ptr_eq(inside, &task)))
                }
                _ => false,
            };
            if blocked {
                let place = if on_worker { "on the worker thread" } else { "inside a running task" };
                return Err(Error::invalid_state(format!(
                    "waiting {place} for task {task_id:?} to {awaited} would deadlock: it needs the worker"
                )));
            }
        }
        data.waiters += 1;
        let (mut data, timed_out) = wait_while_until(&task.changed, data, deadline, |data| !done(data));
        data.waiters -= 1;
        if timed_out {
            return Err(Error::new(ErrorKind::Timeout, format!("task {task_id:?} did not {awaited} in time")));
        }
        Ok(raw_into_string(self.render(&task, &data)))
    }

    // ----- the change feed --------------------------------------------------

    /// Up to `max` events with `seq > after_seq`, blocking until one exists or `timeout` passes.
    pub fn wait_events(&self, after_seq: u64, max: usize, timeout: Option<Duration>) -> Result<Vec<TaskEvent>> {
        if max == 0 {
            return Err(Error::invalid("max_events must be at least 1"));
        }
        if let Some(durable) = self.open_store(false)? {
            return durable.store.wait_events(after_seq, max, timeout);
        }
        let events = self.events.wait_after(after_seq, max, deadline_after(timeout));
        if events.is_empty() {
            return Err(Error::new(ErrorKind::Timeout, format!("no event after {after_seq} in time")));
        }
        Ok(events)
    }

    /// The sequence number of the newest event (0 before the first, or if the store cannot be read).
    pub fn last_event_seq(&self) -> u64 {
        self.read_last_event_seq().unwrap_or(0)
    }

    /// As [`TaskManager::last_event_seq`], with the store's error if it cannot be opened or read.
    pub fn read_last_event_seq(&self) -> Result<u64> {
        if let Some(durable) = self.open_store(false)? {
            return durable.store.last_event_seq();
        }
        Ok(self.events.last_seq())
    }

    /// Installs (or with `None` removes) the listener called for every event, on the thread
    /// that made the change; calls on different threads can arrive out of `seq` order.
    ///
    /// On a durable store the listener is called by a thread of its own that follows the
    /// store's change feed: for every event of every process sharing the store, in `seq`
    /// order, shortly after the change.
    pub fn set_listener(&self, listener: Option<Listener>) {
        let mut slot = self.listener.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.has_listener.store(listener.is_some(), Ordering::Release);
        *slot = listener.clone();
        drop(slot);
        if let Some(durable) = self.durable() {
            self.set_durable_listener(durable, listener);
        }
    }

    /// Bumps the revision, wakes waiters and records the event; returns it if a listener wants it.
    fn bump(&self, task: &Task, data: &mut TaskData, kind: EventKind) -> Option<TaskEvent> {
        data.revision += 1;
        if data.waiters > 0 {
            task.changed.notify_all();
        }
        self.record(&task.id, kind, data.status, data.revision)
    }

    fn record(&self, task_id: &TaskId, kind: EventKind, state: TaskState, revision: u64) -> Option<TaskEvent> {
        let capacity = self.frozen_config().event_buffer_capacity;
        let event = self.events.record(capacity, task_id, kind, state, revision);
        self.has_listener.load(Ordering::Acquire).then_some(event)
    }

    /// Calls the listener, if any, with no lock held; a panicking listener is contained.
    fn deliver(&self, event: Option<TaskEvent>) {
        let Some(event) = event else { return };
        let listener = self.listener.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        if let Some(listener) = listener {
            let _ = catch_unwind(AssertUnwindSafe(|| listener(&event)));
        }
    }

    // ----- retention ------------------------------------------------------------

    /// Queues a just-finished task for cleanup and evicts the oldest past the retention cap.
    ///
    /// Called under the finished task's lock, so a waiter woken by the finish
    /// already sees the registry within its cap.
    fn retire(&self, task: &Arc<Task>, data: &TaskData) {
        self.retention.retire(task, data.status, self.frozen_config(), |task, state| self.forget(task, state));
    }

    fn collect_expired(&self) {
        self.retention.collect_expired(self.frozen_config(), |task, state| self.forget(task, state));
    }

    fn forget(&self, task: &Arc<Task>, state: TaskState) {
        if self.registry.remove(task) {
            self.counters.removed(state);
        }
    }

    // ----- shutdown ---------------------------------------------------------------

    /// Stops accepting tasks, cancels the pending ones, asks the running one to
    /// cancel, and waits up to `timeout` for the worker to finish it.
    ///
    /// Reads, listing and waits keep working afterwards. Called on the worker
    /// thread itself, it does everything but wait.
    pub fn shutdown(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = deadline_after(timeout);
        if let Some(durable) = self.durable() {
            return self.shutdown_durable(durable, deadline);
        }
        self.deadlines.stop();
        let (cancelled, running) = self.queue.shut_down();
        for Queued { task, job } in cancelled {
            let data = lock(&task.data);
            if data.status == TaskState::Pending {
                self.cancel_pending(&task, data, "cancelled by shutdown", Some(job));
            } else {
                // Cancelled meanwhile, by a call that found the queue drained already.
                drop(data);
                drop_job(Some(job));
            }
        }
        if let Some(task) = running {
            let mut data = lock(&task.data);
            match data.status {
                // Dequeued by the worker but not started yet: cancel it like the queued ones.
                TaskState::Pending => self.cancel_pending(&task, data, "cancelled by shutdown", None),
                TaskState::Processing => {
                    let event = self.request_cancel(&task, &mut data);
                    drop(data);
                    self.deliver(event);
                }
                _ => {}
            }
        }
        self.cancel_parked();
        self.runners.shut_down();
        if !self.queue.worker_started() || self.on_own_worker() || self.runners.task_inside().is_some() {
            return Ok(());
        }
        if !self.queue.wait_for_worker_exit(deadline) {
            return Err(Error::new(ErrorKind::Timeout, "the running task did not finish before the shutdown timeout"));
        }
        Ok(())
    }

    /// Starts the worker thread unless it already runs (on the first submission).
    fn ensure_worker(self: &Arc<Self>) -> Result<()> {
        self.queue
            .ensure_worker(|| worker::spawn(Arc::clone(self)))
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start the worker thread: {e}")))
    }

    /// The worker's next task, blocking; `None` once it should exit.
    fn next_queued(&self) -> Option<Queued<Job>> {
        self.queue.next()
    }

    /// Whether the calling thread is this manager's worker.
    fn on_own_worker(&self) -> bool {
        WORKER_OF.with(|worker| worker.get() == self as *const Self as usize)
    }

    fn mark_worker_thread(&self) {
        WORKER_OF.with(|worker| worker.set(self as *const Self as usize));
    }
}

/// Marks a running task's run as one that yields, under its lock.
fn mark_yielding(task_id: &str, data: &mut TaskData) -> Result<()> {
    if data.status != TaskState::Processing {
        return Err(Error::invalid_state(format!("only a running task can yield; task {task_id:?} is {}", data.status.as_str())));
    }
    if !data.can_yield {
        return Err(Error::invalid_state(format!(
            "task {task_id:?} runs a body that cannot run again, so it cannot yield: submit it as resumable"
        )));
    }
    data.yielding = true;
    Ok(())
}

fn finished_already(task_id: &str, state: TaskState) -> Error {
    Error::invalid_state(format!("task {task_id:?} already finished as {}: its status is final", state.as_str()))
}

/// Drops a job (which may free foreign user data) outside every lock; a panic there is contained.
fn drop_job(job: Option<Job>) {
    if let Some(job) = job {
        let _ = catch_unwind(AssertUnwindSafe(move || drop(job)));
    }
}

fn duplicate_id(task_id: &str) -> Error {
    Error::new(ErrorKind::DuplicateId, format!("a task with id {task_id:?} already exists"))
}

fn raw_into_string(raw: Box<RawValue>) -> String {
    Box::<str>::from(raw).into_string()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod named_tests;

#[cfg(test)]
mod schedule_tests;
