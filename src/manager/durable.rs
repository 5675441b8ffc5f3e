//! The manager over a durable store (SQLite, Redis): the store keeps the registry and the
//! queue, shared by every process that opens it; the manager keeps what cannot be
//! stored and runs what its worker claims.
//!
//! What stays in this process: the jobs of its function tasks (a C function with its
//! user data, a runner's task, an external task), keyed by task id until the worker
//! claims them or they are cancelled; its handlers; and, while the worker runs a task,
//! a stand-in [`Task`] that carries the task's deferral and wakes the worker when the
//! task is finished from another thread (a runner's finish, `finish`). The runners
//! and the deadlock checks work on that stand-in as they do on a task of the memory
//! store.
//!
//! Listeners: a feed thread, started when the first listener is set, follows the
//! store's change feed and calls the listener for every event, of every process, in
//! `seq` order, shortly after the change (not on the thread that made it).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use super::body::{Job, TaskContext, TaskFailure};
use super::named::Handler;
use super::{drop_job, TaskManager};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::events::TaskEvent;
use crate::runner::{Assignment, Runner};
use crate::status::TaskState;
use crate::store::{Claim, RedisOptions, RedisStore, SqliteOptions, SqliteStore, Store, TaskKind};
use crate::sync::{lock, unix_now, wait_while_until};
use crate::task::{Deferral, Task};
use crate::{Listener, Schedule, TaskId, TaskOutcome};

/// How long one `claim_next` waits, so that the worker sees a shutdown that soon.
const CLAIM_WAIT: Duration = Duration::from_millis(100);
/// How long the feed thread waits for events at a time, so that it sees a shutdown that soon.
const FEED_WAIT: Duration = Duration::from_millis(200);

/// The worker thread's life: started, exited.
#[derive(Default)]
struct WorkerLife {
    started: bool,
    exited: bool,
}

/// The state of a manager that runs on a durable store.
pub(super) struct Durable {
    pub(super) store: Arc<dyn Store>,
    /// The jobs of this process's function tasks not yet claimed, by task id.
    jobs: Mutex<HashMap<TaskId, Job>>,
    /// The stand-in of the task the worker runs now.
    running: Mutex<Option<Arc<Task>>>,
    /// The worker is in a claim: a task it claims is PROCESSING in the store a moment
    /// before its stand-in is in `running`.
    claiming: Mutex<bool>,
    claim_done: Condvar,
    worker: Mutex<WorkerLife>,
    worker_exited: Condvar,
    shut_down: AtomicBool,
    listener: RwLock<Option<Listener>>,
    feed_started: AtomicBool,
}

impl Durable {
    /// Opens the SQLite store at `path` with `config`'s settings.
    pub(super) fn open_sqlite(path: &std::path::Path, config: &Config) -> Result<Arc<Self>> {
        let options = SqliteOptions { max_attempts: config.max_attempts, ..SqliteOptions::default() };
        Ok(Self::over(Arc::new(SqliteStore::open_with(path, config, options)?)))
    }

    /// Connects to the Redis store at `url` with `config`'s settings.
    pub(super) fn open_redis(url: &str, config: &Config) -> Result<Arc<Self>> {
        // The worker claims its next task with the end of the last: one round trip less each.
        let options = RedisOptions { max_attempts: config.max_attempts, claim_on_finish: true, ..RedisOptions::default() };
        Ok(Self::over(Arc::new(RedisStore::open_with(url, config, options)?)))
    }

    fn over(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            jobs: Mutex::new(HashMap::new()),
            running: Mutex::new(None),
            claiming: Mutex::new(false),
            claim_done: Condvar::new(),
            worker: Mutex::new(WorkerLife::default()),
            worker_exited: Condvar::new(),
            shut_down: AtomicBool::new(false),
            listener: RwLock::new(None),
            feed_started: AtomicBool::new(false),
        })
    }

    fn refuse_after_shutdown(&self) -> Result<()> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::ShutDown, "the task manager was shut down"));
        }
        Ok(())
    }

    /// The stand-in of the running task if it is `task_id`.
    fn running(&self, task_id: &str) -> Option<Arc<Task>> {
        lock(&self.running).as_ref().filter(|task| &*task.id == task_id).cloned()
    }

    /// The stand-in of the running task `task_id`, waiting for it if the worker has just
    /// claimed it: a caller that saw the task PROCESSING may call at once (finish an
    /// external task, yield, defer), before the worker installed the stand-in.
    fn running_now(&self, task_id: &str) -> Option<Arc<Task>> {
        if let Some(task) = self.running(task_id) {
            return Some(task);
        }
        if !matches!(self.state_of(task_id), Ok(TaskState::Processing)) {
            return None;
        }
        let mut claiming = lock(&self.claiming);
        while *claiming && self.running(task_id).is_none() {
            claiming = self.claim_done.wait(claiming).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        drop(claiming);
        self.running(task_id)
    }

    fn set_claiming(&self, claiming: bool) {
        *lock(&self.claiming) = claiming;
        if !claiming {
            self.claim_done.notify_all();
        }
    }

    /// Whether this worker's shutdown stopped `task`, a named task, on this process only.
    fn stopped_here(&self, task: &Task) -> bool {
        task.handler.is_some() && self.shut_down.load(Ordering::Acquire) && lock(&task.data).cancel_requested
    }

    /// Whether the task running here was asked to stop, by this worker's shutdown or in the store.
    pub(super) fn is_cancel_requested(&self, task_id: &str) -> Result<bool> {
        if self.running(task_id).is_some_and(|task| lock(&task.data).cancel_requested) {
            return Ok(true);
        }
        self.store.is_cancel_requested(task_id)
    }

    /// The state of a task, read from its status (for the deadlock checks only).
    fn state_of(&self, task_id: &str) -> Result<TaskState> {
        #[derive(serde::Deserialize)]
        struct StateOnly {
            status: TaskState,
        }
        let status = self.store.status_json(task_id)?;
        let state: StateOnly = serde_json::from_str(&status).map_err(|e| Error::new(ErrorKind::Internal, format!("status JSON: {e}")))?;
        Ok(state.status)
    }

    /// Finishes the running task in the store, then marks its stand-in final and wakes
    /// whoever waits for it (the worker holding a deferred task).
    fn finish_running(&self, task: &Task, outcome: std::result::Result<(), TaskFailure>) -> Result<TaskState> {
        if self.stopped_here(task) {
            // Left unfinished in the store: closing this handle hands it back to the queue.
            let mut data = lock(&task.data);
            data.status = TaskState::Cancelled;
            data.deferral = Deferral::Finished;
            task.changed.notify_all();
            return Ok(TaskState::Pending);
        }
        // A run that said it yields ends as a yield, whatever it returned (but a panic).
        let yielding = std::mem::take(&mut lock(&task.data).yielding);
        let outcome = if yielding { TaskOutcome::Yielded } else { outcome.into() };
        // The store may claim the worker's next task with this end (Redis): from here until
        // the worker installed its stand-in, a caller that sees it PROCESSING waits for it.
        self.set_claiming(true);
        let finished = self.store.finish(&task.id, outcome);
        let mut data = lock(&task.data);
        data.status = match &finished {
            Ok(state) => *state,
            // The lease was lost (the store found this process dead, or it was closed): the
            // task is another worker's now, and for this process it is over.
            Err(_) => TaskState::Failed,
        };
        data.deferral = Deferral::Finished;
        task.changed.notify_all();
        finished
    }
}

impl TaskManager {
    /// The durable store this manager runs on, if it was opened (the memory store: `None`).
    pub(super) fn durable(&self) -> Option<&Arc<Durable>> {
        self.durable.get()
    }

    /// Submits a function task to the durable store: the job stays here, under its id,
    /// before the store can hand the task to this process's worker.
    pub(super) fn submit_durable(
        self: &Arc<Self>,
        durable: &Arc<Durable>,
        task_id: Option<&str>,
        schedule: Schedule,
        make_job: impl FnOnce(&TaskId) -> Job,
    ) -> Result<TaskId> {
        durable.refuse_after_shutdown()?;
        let config = self.frozen_config();
        let task_id = config.task_id_or_new(task_id)?;
        self.ensure_durable_worker(durable)?;
        // Held across the store's submit: the worker, which may claim the task at once,
        // takes its job under this lock, so it finds it. The job is made only once the
        // store took the task, so a refused submission hands back what it was given.
        let mut jobs = lock(&durable.jobs);
        if jobs.contains_key(&task_id) {
            return Err(super::duplicate_id(&task_id));
        }
        let id = durable.store.submit(Some(&task_id), TaskKind::Function, schedule)?;
        jobs.insert(id.clone(), make_job(&id));
        Ok(id)
    }

    /// Submits a named task to the durable store; any process with its handler may run it.
    pub(super) fn submit_named_durable(
        &self,
        durable: &Durable,
        handler: &str,
        payload: &RawValue,
        task_id: Option<&str>,
        schedule: Schedule,
    ) -> Result<TaskId> {
        durable.refuse_after_shutdown()?;
        if let Some(id) = task_id {
            self.frozen_config().check_task_id(id)?;
        }
        durable.store.submit(task_id, TaskKind::Named { handler, payload: Some(payload) }, schedule)
    }

    /// Starts the worker thread that claims this process's tasks from the store.
    pub(super) fn ensure_durable_worker(self: &Arc<Self>, durable: &Arc<Durable>) -> Result<()> {
        let mut life = lock(&durable.worker);
        if life.started {
            return Ok(());
        }
        durable.refuse_after_shutdown()?;
        let manager = Arc::clone(self);
        let worker_durable = Arc::clone(durable);
        std::thread::Builder::new()
            .name("storyflow-worker".into())
            .spawn(move || work(&manager, &worker_durable))
            .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot start the worker thread: {e}")))?;
        life.started = true;
        Ok(())
    }

    /// Cancels a task in the store; a pending function task of this process loses its job
    /// (its user data is freed, its runner told).
    pub(super) fn cancel_durable(&self, durable: &Durable, task_id: &str) -> Result<TaskState> {
        let state = durable.store.cancel(task_id)?;
        if state == TaskState::Cancelled {
            let job = lock(&durable.jobs).remove(task_id);
            drop_job(job);
        }
        Ok(state)
    }

    /// Says that the task this process runs yields at the end of its run.
    pub(super) fn yield_durable(&self, durable: &Durable, task_id: &str) -> Result<()> {
        let Some(task) = durable.running_now(task_id) else {
            let state = durable.state_of(task_id)?;
            return Err(Error::invalid_state(format!(
                "only a task this process runs can yield; task {task_id:?} is {} here",
                if state == TaskState::Processing { "run by another process" } else { state.as_str() }
            )));
        };
        let mut data = lock(&task.data);
        super::mark_yielding(task_id, &mut data)
    }

    /// Marks the running task as completing later.
    pub(super) fn defer_durable(&self, durable: &Durable, task_id: &str) -> Result<()> {
        let Some(task) = durable.running_now(task_id) else {
            let state = durable.state_of(task_id)?;
            return Err(Error::invalid_state(format!(
                "only a task this process runs can defer its completion; task {task_id:?} is {}",
                state.as_str()
            )));
        };
        let mut data = lock(&task.data);
        if data.deferral == Deferral::NotDeferred {
            data.deferral = Deferral::Awaiting;
        }
        Ok(())
    }

    /// Finishes a deferred or external task of this process.
    pub(super) fn finish_durable(&self, durable: &Durable, task_id: &str, outcome: std::result::Result<(), TaskFailure>) -> Result<()> {
        let awaiting = durable.running_now(task_id).filter(|task| lock(&task.data).deferral == Deferral::Awaiting);
        let Some(task) = awaiting else {
            let state = durable.state_of(task_id)?;
            return Err(Error::invalid_state(format!("task {task_id:?} is {} and not awaiting deferred completion", state.as_str())));
        };
        {
            let mut data = lock(&task.data);
            if data.deferral != Deferral::Awaiting {
                return Err(Error::invalid_state(format!("task {task_id:?} is finished already")));
            }
            data.deferral = Deferral::Finished;
        }
        durable.finish_running(&task, outcome).map(drop)
    }

    /// Finishes the stand-in a runner was handed (taken out of its mailbox by the caller).
    pub(super) fn finish_runner_durable(
        &self,
        durable: &Durable,
        task: &Task,
        outcome: std::result::Result<(), TaskFailure>,
    ) -> Result<()> {
        {
            let mut data = lock(&task.data);
            if data.status != TaskState::Processing || data.deferral != Deferral::Awaiting {
                return Err(Error::invalid_state(format!("task {:?} is {} already", task.id, data.status.as_str())));
            }
            data.deferral = Deferral::Finished;
        }
        durable.finish_running(task, outcome).map(drop)
    }

    /// The durable half of closing a runner: its queued tasks are cancelled; its running
    /// task is asked to cancel, given until `deadline`, then failed.
    pub(super) fn close_runner_durable(
        &self,
        durable: &Durable,
        runner: &Runner,
        queued: Vec<TaskId>,
        running: Option<Arc<Task>>,
        deadline: Option<Instant>,
    ) {
        for task_id in queued {
            let _ = self.cancel_durable(durable, &task_id);
        }
        let Some(task) = running else { return };
        if lock(&task.data).status != TaskState::Processing {
            return;
        }
        let _ = durable.store.cancel(&task.id);
        let inside = self.runners.task_inside().is_some_and(|inside| Arc::ptr_eq(&inside, &task));
        if !inside {
            let data = lock(&task.data);
            let (data, _) = wait_while_until(&task.changed, data, deadline, |data| data.status == TaskState::Processing);
            if data.status != TaskState::Processing {
                return;
            }
        }
        if runner.take_running(&task.id).is_none() {
            let data = lock(&task.data);
            let _ = wait_while_until(&task.changed, data, None, |data| data.status == TaskState::Processing);
            return;
        }
        lock(&task.data).deferral = Deferral::Finished;
        let _ = durable.finish_running(&task, Err(TaskFailure::Message("its runner closed while it was running".into())));
    }

    /// The deadlock check of a wait in durable mode: on the worker thread, or on a thread
    /// inside a running task, waiting for work that needs the worker is refused.
    pub(super) fn check_durable_wait(&self, durable: &Durable, task_id: &str, awaited: &str) -> Result<()> {
        let on_worker = self.on_own_worker();
        let inside = self.runners.task_inside();
        if !on_worker && inside.is_none() {
            return Ok(());
        }
        let blocked = match durable.state_of(task_id)? {
            TaskState::Pending => true,
            TaskState::Processing => awaited == "finish" && (on_worker || inside.as_ref().is_some_and(|inside| &*inside.id == task_id)),
            _ => false,
        };
        if blocked {
            let place = if on_worker { "on the worker thread" } else { "inside a running task" };
            return Err(Error::invalid_state(format!(
                "waiting {place} for task {task_id:?} to {awaited} would deadlock: it needs the worker"
            )));
        }
        Ok(())
    }

    /// The durable half of a shutdown: this process's pending function tasks are
    /// cancelled, the running task is asked to cancel, and the worker (which closes the
    /// store once its task ended) is given until `deadline`. Named tasks stay queued for
    /// the other workers of the store.
    pub(super) fn shutdown_durable(&self, durable: &Durable, deadline: Option<Instant>) -> Result<()> {
        durable.shut_down.store(true, Ordering::Release);
        let pending: Vec<TaskId> = lock(&durable.jobs).keys().cloned().collect();
        for task_id in pending {
            if !matches!(durable.store.cancel(&task_id), Ok(TaskState::Processing)) {
                let job = lock(&durable.jobs).remove(&task_id);
                drop_job(job);
            }
        }
        let running = lock(&durable.running).clone();
        if let Some(task) = running {
            if task.handler.is_some() {
                // Another worker may run a named task: this worker's shutdown asks it to stop
                // here only (the stand-in's flag, which is_cancel_requested reads first), and
                // what it leaves is an interruption, resumed elsewhere, not a cancellation.
                lock(&task.data).cancel_requested = true;
            } else {
                let _ = durable.store.cancel(&task.id);
            }
        }
        self.runners.shut_down();
        let life = lock(&durable.worker);
        if !life.started {
            drop(life);
            return durable.store.close();
        }
        if self.on_own_worker() || self.runners.task_inside().is_some() {
            return Ok(());
        }
        let (_life, timed_out) = wait_while_until(&durable.worker_exited, life, deadline, |life| !life.exited);
        if timed_out {
            return Err(Error::new(ErrorKind::Timeout, "the running task did not finish before the shutdown timeout"));
        }
        Ok(())
    }

    /// Installs the listener for the durable store's feed, starting the feed thread once.
    pub(super) fn set_durable_listener(&self, durable: &Arc<Durable>, listener: Option<Listener>) {
        let wanted = listener.is_some();
        *durable.listener.write().unwrap_or_else(std::sync::PoisonError::into_inner) = listener;
        if wanted && !durable.feed_started.swap(true, Ordering::AcqRel) {
            let feed = Arc::clone(durable);
            let after = durable.store.last_event_seq().unwrap_or(0);
            let spawned = std::thread::Builder::new().name("storyflow-feed".into()).spawn(move || follow_feed(&feed, after));
            if spawned.is_err() {
                durable.feed_started.store(false, Ordering::Release);
            }
        }
    }
}

/// Calls the listener for every event of the store's feed after `after`, until shutdown.
fn follow_feed(durable: &Durable, mut after: u64) {
    while !durable.shut_down.load(Ordering::Acquire) {
        let events: Vec<TaskEvent> = match durable.store.wait_events(after, 256, Some(FEED_WAIT)) {
            Ok(events) => events,
            Err(error) if error.kind() == ErrorKind::Timeout => continue,
            Err(_) => {
                std::thread::sleep(FEED_WAIT);
                continue;
            }
        };
        for event in events {
            after = after.max(event.seq);
            let listener = durable.listener.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            if let Some(listener) = listener {
                let _ = catch_unwind(AssertUnwindSafe(|| listener(&event)));
            }
        }
    }
}

/// The worker thread: claims this process's next task from the store and runs it, until
/// shutdown; then closes the store.
fn work(manager: &Arc<TaskManager>, durable: &Arc<Durable>) {
    manager.mark_worker_thread();
    let mut feed_seen = durable.store.last_event_seq().unwrap_or(0);
    let mut feed_looked = Instant::now();
    while !durable.shut_down.load(Ordering::Acquire) {
        durable.set_claiming(true);
        match durable.store.claim_next(Some(CLAIM_WAIT)) {
            Ok(Some(claim)) => run_claim(manager, durable, claim),
            Ok(None) => durable.set_claiming(false),
            // Storage trouble (a lock held past the busy timeout, a full disk): try again.
            Err(_) => {
                durable.set_claiming(false);
                std::thread::sleep(CLAIM_WAIT);
            }
        }
        // At most once per claim wait, not after every task: a worker draining a queue of
        // short tasks would otherwise read the feed once more per task.
        if feed_looked.elapsed() >= CLAIM_WAIT {
            release_finished_jobs(durable, &mut feed_seen);
            feed_looked = Instant::now();
        }
    }
    durable.set_claiming(false);
    // What was cancelled by another process never comes back: its user data goes now.
    let left: Vec<Job> = lock(&durable.jobs).drain().map(|(_, job)| job).collect();
    left.into_iter().for_each(|job| drop_job(Some(job)));
    let _ = durable.store.close();
    let mut life = lock(&durable.worker);
    life.exited = true;
    durable.worker_exited.notify_all();
}

/// Drops the jobs of this process's tasks that finished without running here (a passed
/// deadline, a cancel from another process), as the change feed tells: their user data
/// goes now rather than at shutdown. Reads only the events since the last look.
fn release_finished_jobs(durable: &Durable, seen: &mut u64) {
    loop {
        let Ok(events) = durable.store.wait_events(*seen, 256, Some(Duration::ZERO)) else { return };
        let full = events.len() == 256;
        for event in events {
            *seen = (*seen).max(event.seq);
            if event.kind == crate::EventKind::Finished {
                let job = lock(&durable.jobs).remove(&event.task_id);
                drop_job(job);
            }
        }
        if !full {
            return;
        }
    }
}

/// Runs one claimed task and finishes it in the store (or waits for whoever finishes it).
fn run_claim(manager: &Arc<TaskManager>, durable: &Durable, claim: Claim) {
    let handler = claim.handler.as_deref().map(Arc::from);
    let task = Arc::new(Task::new(claim.task_id.clone(), unix_now(), false, handler, Schedule::default()));
    {
        let mut data = lock(&task.data);
        data.status = TaskState::Processing;
        data.attempt = claim.attempt;
        data.checkpoint = claim.checkpoint.clone();
        data.yields = claim.yields;
        // A named task is run again by its name; a function task by the job it keeps.
        data.can_yield = claim.handler.is_some();
        // An external task awaits its finish from the start: one may come as soon as the
        // stand-in is in place.
        if claim.handler.is_none() && matches!(lock(&durable.jobs).get(&claim.task_id), Some(Job::External)) {
            data.deferral = Deferral::Awaiting;
        }
    }
    *lock(&durable.running) = Some(task.clone());
    durable.set_claiming(false);
    let (outcome, kept) = match &claim.handler {
        Some(name) => (run_named(manager, &task, &claim, name), None),
        None => run_function(manager, durable, &task),
    };
    let mut data = lock(&task.data);
    match (data.deferral, outcome) {
        (Deferral::NotDeferred, Ran::Returned(outcome)) => {
            let yielding = data.yielding;
            drop(data);
            // Back in place before the store can hand the task to this worker again.
            if yielding {
                if let Some(job) = kept {
                    lock(&durable.jobs).insert(task.id.clone(), super::worker::rerun(job, &task.id));
                }
            } else {
                drop_job(kept);
            }
            let finished = durable.finish_running(&task, outcome);
            if yielding && !matches!(finished, Ok(TaskState::Pending)) {
                drop_job(lock(&durable.jobs).remove(&task.id));
            }
        }
        (Deferral::NotDeferred | Deferral::Awaiting, Ran::Panicked(outcome)) => {
            data.yielding = false;
            drop(data);
            drop_job(kept);
            let _ = durable.finish_running(&task, outcome);
        }
        (Deferral::Awaiting | Deferral::Finished, _) => {
            let (data, _) = wait_while_until(&task.changed, data, None, |data| data.status == TaskState::Processing);
            let yielded = data.status == TaskState::Pending;
            drop(data);
            match kept {
                Some(job) if yielded => {
                    // Put back, then looked at: a cancel that came between the yield and
                    // now found no job to drop, so the job is dropped here instead.
                    lock(&durable.jobs).insert(task.id.clone(), super::worker::rerun(job, &task.id));
                    if !matches!(durable.state_of(&task.id), Ok(TaskState::Pending)) {
                        drop_job(lock(&durable.jobs).remove(&task.id));
                    }
                }
                kept => drop_job(kept),
            }
        }
    }
    *lock(&durable.running) = None;
}

/// What running a task's code gave.
enum Ran {
    Returned(std::result::Result<(), TaskFailure>),
    Panicked(std::result::Result<(), TaskFailure>),
}

fn guarded(what: &str, run: impl FnOnce() -> std::result::Result<(), TaskFailure>) -> Ran {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(outcome) => Ran::Returned(outcome),
        Err(panic) => Ran::Panicked(Err(TaskFailure::Message(format!("{what} panicked: {}", super::worker::panic_text(&*panic))))),
    }
}

fn run_named(manager: &Arc<TaskManager>, task: &Arc<Task>, claim: &Claim, name: &str) -> Ran {
    let handler = manager.handler_named(name);
    let null;
    let payload: &RawValue = match &claim.payload {
        Some(payload) => payload,
        None => {
            null = serde_json::value::to_raw_value(&serde_json::Value::Null).expect("null serialises");
            &null
        }
    };
    match handler {
        Some(Handler::Function(handler)) => {
            let context = TaskContext { manager, task };
            guarded("handler", || handler(&context, payload))
        }
        Some(Handler::Runner(runner)) => {
            let assignment = Assignment::named(
                task.id.clone(),
                name.to_owned(),
                payload.to_owned(),
                claim.attempt,
                claim.checkpoint.clone(),
                claim.yields,
            );
            let mut data = lock(&task.data);
            if !runner.hand_over_named(task, assignment) {
                drop(data);
                return Ran::Returned(Err(TaskFailure::Message(format!("the runner serving handler {name:?} closed before it ran"))));
            }
            data.deferral = Deferral::Awaiting;
            Ran::Returned(Ok(()))
        }
        // Unregistered after the claim (its runner closed): the store only hands this
        // process the names it registered.
        None => Ran::Returned(Err(TaskFailure::Message(format!("no handler named {name:?} is registered in the process that claimed it")))),
    }
}

/// Runs this process's job of a function task; returns what ran with the job to keep, so
/// that it can run again if the task yields (a run-once body is gone).
fn run_function(manager: &Arc<TaskManager>, durable: &Durable, task: &Arc<Task>) -> (Ran, Option<Job>) {
    let job = lock(&durable.jobs).remove(&task.id);
    lock(&task.data).can_yield = matches!(job, Some(Job::Resumable(_) | Job::External | Job::Runner(_)));
    match job {
        Some(Job::Body(body)) => {
            let context = TaskContext { manager, task };
            (guarded("task", || body.run(&context)), None)
        }
        Some(Job::Resumable(mut body)) => {
            let context = TaskContext { manager, task };
            (guarded("task", || body.run(&context)), Some(Job::Resumable(body)))
        }
        Some(Job::External) => {
            lock(&task.data).deferral = Deferral::Awaiting;
            (Ran::Returned(Ok(())), Some(Job::External))
        }
        Some(Job::Runner(mut runner_job)) => {
            let runner = runner_job.runner().clone();
            let mut data = lock(&task.data);
            let (attempt, checkpoint, yields) = (data.attempt, data.checkpoint.clone(), data.yields);
            if !runner.hand_over(&mut runner_job, task, attempt, checkpoint, yields) {
                drop(data);
                drop_job(Some(Job::Runner(runner_job)));
                return (Ran::Returned(Err(TaskFailure::Message("its runner closed before it ran".into()))), None);
            }
            data.deferral = Deferral::Awaiting;
            (Ran::Returned(Ok(())), Some(Job::Runner(runner_job)))
        }
        Some(named @ Job::Named { .. }) => {
            drop_job(Some(named));
            (Ran::Returned(Err(TaskFailure::Message("a named task was stored as a function task".into()))), None)
        }
        None => (Ran::Returned(Err(TaskFailure::Message("this process holds no function for it".into()))), None),
    }
}
