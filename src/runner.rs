//! Runners: threads or event loops outside the core (a Python thread, a Node
//! event loop) that run the tasks submitted to them.
//!
//! A runner task sits in the one FIFO like every other task. When the worker
//! reaches it, the worker hands it to its runner's mailbox and stays with it
//! until the runner finishes it, so "one task at a time" holds across every
//! language. The runner blocks in one call for its next hand-over; a task that
//! was cancelled before it ran is handed over too, marked as not to be run, so
//! that the runner can forget what it kept for it.
//!
//! The thread that receives a task to run is "inside" it until the task is
//! finished (a thread-local mark): waiting there for work that needs the
//! worker would deadlock, and the manager refuses it instead.
//!
//! Lock order: a task's `data` -> the work queue -> a runner's mailbox (the worker
//! hands a task over under the task's lock; a submission makes its runner job under
//! the queue lock); no other lock is taken under a mailbox.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::{Error, ErrorKind, Result};
use crate::sync::{lock, wait_while_until};
use crate::task::Task;
use crate::TaskId;

/// A runner's id: a plain number, like a file descriptor; a stale one is simply unknown.
pub type RunnerId = u64;

/// What a runner is handed: a task to run, or one released without running.
///
/// Serialises as the assignment JSON of the C API:
/// `{"task_id":"…","run":true,"handler":null,"payload":null,"attempt":1,"checkpoint":null,"yields":0}`.
#[derive(Debug, Clone, Serialize)]
pub struct Assignment {
    /// The task.
    pub task_id: TaskId,
    /// True: run it now and finish it. False: it was cancelled or shut down before it
    /// started; forget it and do not finish it.
    pub run: bool,
    /// The name of the handler that runs it; `None` for a task the runner keeps a function for.
    pub handler: Option<String>,
    /// The handler's input; `None` for a function task.
    pub payload: Option<Box<RawValue>>,
    /// How many times the task has been started, this time included (0 when not run).
    pub attempt: u32,
    /// The last checkpoint the task recorded; `None` if none.
    pub checkpoint: Option<Box<RawValue>>,
    /// How many times the task yielded before this run: more than 0 means it resumes.
    pub yields: u32,
}

impl Assignment {
    /// The assignment JSON a runner receives.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an assignment serialises")
    }

    /// The assignment of a named task to run: its handler, payload, attempt, checkpoint and yields.
    pub fn named(
        task_id: TaskId,
        handler: String,
        payload: Box<RawValue>,
        attempt: u32,
        checkpoint: Option<Box<RawValue>>,
        yields: u32,
    ) -> Self {
        Self { task_id, run: true, handler: Some(handler), payload: Some(payload), attempt, checkpoint, yields }
    }

    /// The assignment of a function task to run (its runner keeps the function).
    fn function(task_id: TaskId, attempt: u32, checkpoint: Option<Box<RawValue>>, yields: u32) -> Self {
        Self { task_id, run: true, handler: None, payload: None, attempt, checkpoint, yields }
    }

    fn released(task_id: TaskId) -> Self {
        Self { task_id, run: false, handler: None, payload: None, attempt: 0, checkpoint: None, yields: 0 }
    }
}

/// One entry of a runner's mailbox.
enum Delivery {
    Run(Arc<Task>, Assignment),
    Released(TaskId),
}

struct Mailbox {
    deliveries: VecDeque<Delivery>,
    /// Its tasks still in the queue, to cancel when the runner closes.
    queued: HashSet<TaskId>,
    /// The task handed over to run and not yet finished.
    running: Option<Arc<Task>>,
    closed: bool,
    /// Threads blocked in `next`.
    waiting: usize,
}

/// A registered runner.
pub(crate) struct Runner {
    id: RunnerId,
    mailbox: Mutex<Mailbox>,
    delivered: Condvar,
}

/// What a closing runner leaves for the manager to finish.
pub(crate) struct Closed {
    /// Its tasks still queued: they are cancelled.
    pub queued: Vec<TaskId>,
    /// Its running task, asked to cancel and then failed if it does not finish. It stays
    /// the runner's running task meanwhile, so that the runner can still finish it.
    pub running: Option<Arc<Task>>,
}

impl Runner {
    /// Records a task submitted to this runner; the job goes into the task.
    pub fn enqueue(self: &Arc<Self>, task_id: &TaskId) -> RunnerJob {
        lock(&self.mailbox).queued.insert(task_id.clone());
        RunnerJob { runner: self.clone(), task_id: task_id.clone(), handed_over: false }
    }

    /// Hands `task` over to run, called by the worker under the task's lock, with the
    /// attempt, checkpoint and yields the assignment carries; false if the runner closed meanwhile.
    pub fn hand_over(&self, job: &mut RunnerJob, task: &Arc<Task>, attempt: u32, checkpoint: Option<Box<RawValue>>, yields: u32) -> bool {
        let mut mailbox = lock(&self.mailbox);
        if mailbox.closed {
            return false;
        }
        mailbox.queued.remove(&job.task_id);
        mailbox.running = Some(task.clone());
        mailbox.deliveries.push_back(Delivery::Run(task.clone(), Assignment::function(task.id.clone(), attempt, checkpoint, yields)));
        job.handed_over = true;
        self.delivered.notify_one();
        true
    }

    /// Hands a named task over to run, called by the worker under the task's lock; false
    /// if the runner closed meanwhile.
    pub fn hand_over_named(&self, task: &Arc<Task>, assignment: Assignment) -> bool {
        let mut mailbox = lock(&self.mailbox);
        if mailbox.closed {
            return false;
        }
        mailbox.running = Some(task.clone());
        mailbox.deliveries.push_back(Delivery::Run(task.clone(), assignment));
        self.delivered.notify_one();
        true
    }

    /// Tells the runner that a task it was given will never run.
    fn release(&self, task_id: &TaskId) {
        let mut mailbox = lock(&self.mailbox);
        if mailbox.closed {
            return;
        }
        mailbox.queued.remove(task_id);
        mailbox.deliveries.push_back(Delivery::Released(task_id.clone()));
        self.delivered.notify_one();
    }

    /// Blocks until something is delivered or `deadline`; `manager_shut_down` ends the wait
    /// once nothing is left for this runner.
    fn next(&self, deadline: Option<Instant>, manager_shut_down: &AtomicBool) -> Result<Delivery> {
        let idle_after_shutdown =
            |mailbox: &Mailbox| manager_shut_down.load(Ordering::Acquire) && mailbox.queued.is_empty() && mailbox.running.is_none();
        let mut mailbox = lock(&self.mailbox);
        mailbox.waiting += 1;
        let (mut mailbox, timed_out) = wait_while_until(&self.delivered, mailbox, deadline, |mailbox| {
            mailbox.deliveries.is_empty() && !mailbox.closed && !idle_after_shutdown(mailbox)
        });
        mailbox.waiting -= 1;
        if mailbox.closed {
            return Err(Error::new(ErrorKind::ShutDown, format!("runner {} was closed", self.id)));
        }
        if let Some(delivery) = mailbox.deliveries.pop_front() {
            return Ok(delivery);
        }
        if timed_out {
            return Err(Error::new(ErrorKind::Timeout, format!("nothing was handed to runner {} in time", self.id)));
        }
        Err(Error::new(ErrorKind::ShutDown, format!("the task manager was shut down with nothing left for runner {}", self.id)))
    }

    /// Takes the running task if it is `task_id`: only the task handed over can be finished.
    pub fn take_running(&self, task_id: &str) -> Option<Arc<Task>> {
        let mut mailbox = lock(&self.mailbox);
        if mailbox.running.as_ref().is_none_or(|task| &*task.id != task_id) {
            return None;
        }
        let task = mailbox.running.take();
        // A `next` waiting after a shutdown may now have nothing left to wait for.
        self.delivered.notify_all();
        task
    }

    /// Closes the mailbox: every blocked `next` returns and nothing more is handed over;
    /// the running task stays, for `take_running`. `None` if it was closed already.
    fn close(&self) -> Option<Closed> {
        let mut mailbox = lock(&self.mailbox);
        if mailbox.closed {
            return None;
        }
        mailbox.closed = true;
        mailbox.deliveries.clear();
        self.delivered.notify_all();
        Some(Closed { queued: mailbox.queued.drain().collect(), running: mailbox.running.clone() })
    }

    fn wake(&self) {
        let _mailbox = lock(&self.mailbox);
        self.delivered.notify_all();
    }
}

/// The job of a runner task: while it is queued, dropping it (the task was cancelled or
/// dropped unrun) tells the runner it will never run.
pub(crate) struct RunnerJob {
    runner: Arc<Runner>,
    task_id: TaskId,
    handed_over: bool,
}

impl RunnerJob {
    /// The runner this task is for.
    pub fn runner(&self) -> &Arc<Runner> {
        &self.runner
    }
}

impl Drop for RunnerJob {
    fn drop(&mut self) {
        if !self.handed_over {
            self.runner.release(&self.task_id);
        }
    }
}

/// Every registered runner of a manager.
pub(crate) struct Runners {
    table: Mutex<HashMap<RunnerId, Arc<Runner>>>,
    last_id: AtomicU64,
    shut_down: AtomicBool,
}

impl Runners {
    pub fn new() -> Self {
        Self { table: Mutex::new(HashMap::new()), last_id: AtomicU64::new(0), shut_down: AtomicBool::new(false) }
    }

    /// A new runner; ids are never reused.
    pub fn register(&self) -> RunnerId {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let runner = Runner {
            id,
            mailbox: Mutex::new(Mailbox { deliveries: VecDeque::new(), queued: HashSet::new(), running: None, closed: false, waiting: 0 }),
            delivered: Condvar::new(),
        };
        lock(&self.table).insert(id, Arc::new(runner));
        id
    }

    /// A registered runner, closing ones included (they can still finish their running task).
    pub fn get(&self, id: RunnerId) -> Result<Arc<Runner>> {
        lock(&self.table).get(&id).cloned().ok_or_else(|| unknown_runner(id))
    }

    /// A registered runner that is not closing, to submit a task to.
    pub fn get_open(&self, id: RunnerId) -> Result<Arc<Runner>> {
        let runner = self.get(id)?;
        if lock(&runner.mailbox).closed {
            return Err(Error::new(ErrorKind::ShutDown, format!("runner {id} is closing")));
        }
        Ok(runner)
    }

    /// Closes a runner's mailbox; it stays registered until [`Runners::unregister`], so that
    /// its running task can still be finished while the close waits for it.
    pub fn close(&self, id: RunnerId) -> Result<(Arc<Runner>, Closed)> {
        let runner = self.get(id)?;
        let closed = runner.close().ok_or_else(|| Error::new(ErrorKind::NotFound, format!("runner {id} is closed already")))?;
        Ok((runner, closed))
    }

    /// Forgets a closed runner: its id is unknown afterwards.
    pub fn unregister(&self, id: RunnerId) {
        lock(&self.table).remove(&id);
    }

    /// Blocks for the next delivery to runner `id`.
    pub fn next(&self, id: RunnerId, deadline: Option<Instant>) -> Result<Assignment> {
        let runner = self.get(id)?;
        Ok(match runner.next(deadline, &self.shut_down)? {
            Delivery::Run(task, assignment) => {
                INSIDE.with(|inside| *inside.borrow_mut() = Some((self as *const Self as usize, task)));
                assignment
            }
            Delivery::Released(task_id) => Assignment::released(task_id),
        })
    }

    /// How many threads are blocked in `next` for runner `id` (0 for an unknown one).
    #[cfg(test)]
    pub fn waiting(&self, id: RunnerId) -> usize {
        self.get(id).map_or(0, |runner| lock(&runner.mailbox).waiting)
    }

    /// After the manager shut down: wakes every runner waiting for work, so that one with
    /// nothing left learns it.
    pub fn shut_down(&self) {
        self.shut_down.store(true, Ordering::Release);
        let runners: Vec<Arc<Runner>> = lock(&self.table).values().cloned().collect();
        runners.iter().for_each(|runner| runner.wake());
    }

    /// The task the calling thread was handed to run by one of these runners, if it is
    /// not finished yet (a mark left by a finished task is ignored).
    pub fn task_inside(&self) -> Option<Arc<Task>> {
        let task = INSIDE.with(|inside| match &*inside.borrow() {
            Some((owner, task)) if *owner == self as *const Self as usize => Some(task.clone()),
            _ => None,
        })?;
        let unfinished = !lock(&task.data).status.is_finished();
        unfinished.then_some(task)
    }
}

thread_local! {
    /// The task this thread was last handed to run, with the address of the `Runners` that handed it.
    static INSIDE: RefCell<Option<(usize, Arc<Task>)>> = const { RefCell::new(None) };
}

fn unknown_runner(id: RunnerId) -> Error {
    Error::new(ErrorKind::NotFound, format!("no runner with id {id}"))
}
