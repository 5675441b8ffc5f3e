//! The worker's queue: the pending tasks by priority, each priority a FIFO, each task
//! beside the job it will run; the task the worker is on; and the worker thread's start,
//! its wait for work and its exit.
//!
//! With every task at priority 0 (the common case) there is one level, and submitting,
//! taking and positions cost what one FIFO costs.
//!
//! Generic over the job so that this module knows tasks but not what they run.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::queue::PendingQueue;
use crate::sync::{lock, wait_while_until};
use crate::task::Task;

/// A task in the queue with its job: whoever takes it out of the queue owns the job.
pub(crate) struct Queued<J> {
    pub task: Arc<Task>,
    pub job: J,
}

/// The pending tasks of one priority.
struct Level<J> {
    /// Tasks put back ahead of every other task of this priority: a task that yielded
    /// (at the front), named tasks whose handler was just registered (after it, in
    /// submission order); usually empty.
    head: VecDeque<Queued<J>>,
    /// The rest, in submission order.
    pending: PendingQueue<Queued<J>>,
}

impl<J> Default for Level<J> {
    fn default() -> Self {
        Self { head: VecDeque::new(), pending: PendingQueue::default() }
    }
}

impl<J> Level<J> {
    fn len(&self) -> usize {
        self.head.len() + self.pending.len()
    }

    fn pop(&mut self) -> Option<Queued<J>> {
        self.head.pop_front().or_else(|| self.pending.pop_front())
    }

    /// Where `task` stands in this level: `Ok(seq)` in `pending`, `Err(index)` in `head`.
    fn find(&self, task: &Task) -> Option<Result<u64, usize>> {
        let seq = task.queue_seq.load(Ordering::Relaxed);
        // A level dropped once empty numbers afresh, so a number alone could name another task.
        if self.pending.get(seq).is_some_and(|queued| std::ptr::eq(Arc::as_ptr(&queued.task), task)) {
            return Some(Ok(seq));
        }
        self.head.iter().position(|queued| std::ptr::eq(Arc::as_ptr(&queued.task), task)).map(Err)
    }
}

/// Empty levels are kept (so that a burst of one priority does not allocate a level per
/// task) until there are more than this many levels.
const MAX_EMPTY_LEVELS: usize = 16;

/// No task is pending: the value of `top_priority` then.
const NO_PENDING: i64 = i64::MIN;

struct QueueState<J> {
    /// The pending tasks by priority, highest first.
    levels: BTreeMap<Reverse<i32>, Level<J>>,
    /// How many tasks are pending, over every level.
    len: usize,
    /// The submission order the next task gets.
    next_order: u64,
    /// The task the worker took last, until it asks for the next one.
    running: Option<Arc<Task>>,
    shut_down: bool,
    /// The worker sleeps on `work_available`: a submission must wake it.
    worker_waiting: bool,
    worker_exited: bool,
}

impl<J> QueueState<J> {
    fn level(&mut self, priority: i32) -> &mut Level<J> {
        self.levels.entry(Reverse(priority)).or_default()
    }

    /// The highest priority with a pending task.
    fn top(&self) -> i64 {
        self.levels.iter().find(|(_, level)| level.len() > 0).map_or(NO_PENDING, |(Reverse(priority), _)| i64::from(*priority))
    }

    /// Drops the empty levels once there are many; a level of a priority in use stays.
    fn prune(&mut self) {
        if self.levels.len() > MAX_EMPTY_LEVELS {
            self.levels.retain(|_, level| level.len() > 0);
        }
    }
}

/// The queue between every submitter and the one worker thread.
pub(crate) struct WorkQueue<J> {
    state: Mutex<QueueState<J>>,
    /// The highest priority with a pending task ([`NO_PENDING`] if none), kept under the
    /// queue lock and read without it: the yield check is one atomic load.
    top_priority: AtomicI64,
    work_available: Condvar,
    worker_done: Condvar,
    worker_started: AtomicBool,
    worker_spawn: Mutex<()>,
}

/// The queue, locked by a submitter: it checks, numbers and pushes one task.
pub(crate) struct Submission<'a, J> {
    state: MutexGuard<'a, QueueState<J>>,
    queue: &'a WorkQueue<J>,
}

impl<J> Submission<'_, J> {
    /// Whether the queue was shut down: it takes nothing more.
    pub fn is_shut_down(&self) -> bool {
        self.state.shut_down
    }

    /// How many tasks are pending.
    pub fn pending_len(&self) -> usize {
        self.state.len
    }

    /// Gives `task` its place in the queue and in submission order, before it is published.
    pub fn number(&mut self, task: &Task) {
        let order = self.state.next_order;
        self.state.next_order += 1;
        task.order.store(order, Ordering::Relaxed);
        let seq = self.state.level(task.priority).pending.next_seq();
        task.queue_seq.store(seq, Ordering::Relaxed);
    }

    /// Appends the numbered task and wakes the worker if it sleeps.
    pub fn push(&mut self, queued: Queued<J>) {
        let priority = queued.task.priority;
        let level = self.state.level(priority);
        debug_assert_eq!(queued.task.queue_seq.load(Ordering::Relaxed), level.pending.next_seq());
        level.pending.push(queued);
        self.state.len += 1;
        self.queue.top_priority.fetch_max(i64::from(priority), Ordering::Release);
        if self.state.worker_waiting {
            self.queue.work_available.notify_one();
        }
    }
}

impl<J> WorkQueue<J> {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(QueueState {
                levels: BTreeMap::new(),
                len: 0,
                next_order: 0,
                running: None,
                shut_down: false,
                worker_waiting: false,
                worker_exited: false,
            }),
            top_priority: AtomicI64::new(NO_PENDING),
            work_available: Condvar::new(),
            worker_done: Condvar::new(),
            worker_started: AtomicBool::new(false),
            worker_spawn: Mutex::new(()),
        }
    }

    /// Starts the worker with `spawn` unless it was started already.
    pub fn ensure_worker<E>(&self, spawn: impl FnOnce() -> Result<(), E>) -> Result<(), E> {
        if self.worker_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let _spawning = lock(&self.worker_spawn);
        if self.worker_started.load(Ordering::Acquire) {
            return Ok(());
        }
        spawn()?;
        self.worker_started.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a worker thread was started.
    pub fn worker_started(&self) -> bool {
        self.worker_started.load(Ordering::Acquire)
    }

    /// Locks the queue for one submission.
    pub fn submission(&self) -> Submission<'_, J> {
        Submission { state: lock(&self.state), queue: self }
    }

    /// Whether a pending task of a priority above `priority` waits: O(1), no lock.
    pub fn has_pending_above(&self, priority: i32) -> bool {
        self.top_priority.load(Ordering::Acquire) > i64::from(priority)
    }

    fn refresh_top(&self, state: &QueueState<J>) {
        self.top_priority.store(state.top(), Ordering::Release);
    }

    /// How many pending tasks run before `task`: every task of a higher priority, then
    /// those ahead of it in its own. `None` if it is not in the queue.
    pub fn position(&self, task: &Task) -> Option<u64> {
        let state = lock(&self.state);
        let level = state.levels.get(&Reverse(task.priority))?;
        let within = match level.find(task)? {
            Ok(seq) => level.head.len() as u64 + level.pending.position(seq)?,
            Err(index) => index as u64,
        };
        let above: usize = state.levels.range(..Reverse(task.priority)).map(|(_, level)| level.len()).sum();
        Some(above as u64 + within)
    }

    /// Takes `task` out of the queue, if it is still there, and returns its job.
    pub fn remove(&self, task: &Task) -> Option<J> {
        let mut state = lock(&self.state);
        let level = state.levels.get_mut(&Reverse(task.priority))?;
        let queued = match level.find(task)? {
            Ok(seq) => level.pending.remove(seq),
            Err(index) => level.head.remove(index),
        }?;
        state.len -= 1;
        self.refresh_top(&state);
        Some(queued.job)
    }

    /// Puts tasks back at the head of their priority, ahead of every other pending task of
    /// it but one that yielded, in submission order. Once shut down nothing changes and
    /// they come back in `Err`.
    pub fn requeue_at_head(&self, mut tasks: Vec<Queued<J>>) -> Result<(), Vec<Queued<J>>> {
        let mut state = lock(&self.state);
        if state.shut_down {
            return Err(tasks);
        }
        tasks.sort_by_key(|queued| queued.task.order.load(Ordering::Relaxed));
        state.len += tasks.len();
        for queued in tasks {
            state.level(queued.task.priority).head.push_back(queued);
        }
        self.refresh_top(&state);
        if state.worker_waiting {
            self.work_available.notify_one();
        }
        Ok(())
    }

    /// Puts a task that yielded back at the very head of its priority. Once shut down
    /// nothing changes and it comes back in `Err`.
    pub fn requeue_yielded(&self, queued: Queued<J>) -> Result<(), Queued<J>> {
        let mut state = lock(&self.state);
        if state.shut_down {
            return Err(queued);
        }
        let priority = queued.task.priority;
        state.level(priority).head.push_front(queued);
        state.len += 1;
        self.top_priority.fetch_max(i64::from(priority), Ordering::Release);
        if state.worker_waiting {
            self.work_available.notify_one();
        }
        Ok(())
    }

    /// How many tasks are pending per priority, highest first, leaving out empty priorities.
    pub fn depth_by_priority(&self) -> Vec<(i32, usize)> {
        let state = lock(&self.state);
        state.levels.iter().filter(|(_, level)| level.len() > 0).map(|(Reverse(priority), level)| (*priority, level.len())).collect()
    }

    /// Takes nothing more; returns every pending task, in the order they would have run,
    /// and the worker's task.
    pub fn shut_down(&self) -> (Vec<Queued<J>>, Option<Arc<Task>>) {
        let mut state = lock(&self.state);
        state.shut_down = true;
        self.work_available.notify_all();
        let mut drained: Vec<Queued<J>> = Vec::with_capacity(state.len);
        for level in state.levels.values_mut() {
            drained.extend(level.head.drain(..));
            drained.extend(level.pending.drain());
        }
        state.len = 0;
        self.refresh_top(&state);
        (drained, state.running.clone())
    }

    /// Waits until the worker has exited after a shutdown, or `deadline`; false if it had not.
    pub fn wait_for_worker_exit(&self, deadline: Option<Instant>) -> bool {
        let state = lock(&self.state);
        let (_state, timed_out) = wait_while_until(&self.worker_done, state, deadline, |state| !state.worker_exited);
        !timed_out
    }

    /// The worker's next task, blocking until there is one; `None` once shut down with
    /// nothing left (the worker then exits).
    pub fn next(&self) -> Option<Queued<J>> {
        let mut state = lock(&self.state);
        state.running = None;
        let mut spun = false;
        loop {
            if state.len > 0 {
                let queued = state.levels.values_mut().find_map(Level::pop).expect("a pending task is in a level");
                state.len -= 1;
                if queued.task.priority != 0 || state.levels.len() > 1 {
                    self.refresh_top(&state);
                    state.prune();
                } else if state.len == 0 {
                    self.top_priority.store(NO_PENDING, Ordering::Release);
                }
                state.running = Some(queued.task.clone());
                return Some(queued);
            }
            if state.shut_down {
                state.worker_exited = true;
                self.worker_done.notify_all();
                return None;
            }
            if !spun && spinning_pays() {
                spun = true;
                drop(state);
                self.spin_for_work();
                state = lock(&self.state);
                continue;
            }
            state.worker_waiting = true;
            state = self.work_available.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.worker_waiting = false;
        }
    }

    /// Spins up to [`SPIN_BEFORE_SLEEP`] for work to arrive, without holding the queue lock.
    fn spin_for_work(&self) {
        let deadline = Instant::now() + SPIN_BEFORE_SLEEP;
        while Instant::now() < deadline {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if let Ok(state) = self.state.try_lock() {
                if state.len > 0 || state.shut_down {
                    return;
                }
            }
        }
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
            let multi_core = std::thread::available_parallelism().is_ok_and(|cores| cores.get() > 1);
            MULTI_CORE.store(if multi_core { 2 } else { 1 }, Ordering::Relaxed);
            multi_core
        }
        known => known == 2,
    }
}
