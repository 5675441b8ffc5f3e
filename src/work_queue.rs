//! The worker's queue: the FIFO of pending tasks, each beside the job it will run, the
//! task the worker is on, and the worker thread's start, its wait for work and its exit.
//!
//! Generic over the job so that this module knows tasks but not what they run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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

struct QueueState<J> {
    pending: PendingQueue<Queued<J>>,
    /// Tasks put back ahead of every pending one (named tasks whose handler was just
    /// registered), by their original numbers; usually empty.
    front: VecDeque<Queued<J>>,
    /// The task the worker took last, until it asks for the next one.
    running: Option<Arc<Task>>,
    shut_down: bool,
    /// The worker sleeps on `work_available`: a submission must wake it.
    worker_waiting: bool,
    worker_exited: bool,
}

/// The queue between every submitter and the one worker thread.
pub(crate) struct WorkQueue<J> {
    state: Mutex<QueueState<J>>,
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
        self.state.pending.len() + self.state.front.len()
    }

    /// Gives `task` its place in the queue, before it is published.
    pub fn number(&self, task: &Task) {
        task.queue_seq.store(self.state.pending.next_seq(), Ordering::Relaxed);
    }

    /// Appends the numbered task and wakes the worker if it sleeps.
    pub fn push(&mut self, queued: Queued<J>) {
        debug_assert_eq!(queued.task.queue_seq.load(Ordering::Relaxed), self.state.pending.next_seq());
        self.state.pending.push(queued);
        if self.state.worker_waiting {
            self.queue.work_available.notify_one();
        }
    }
}

impl<J> WorkQueue<J> {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(QueueState {
                pending: PendingQueue::default(),
                front: VecDeque::new(),
                running: None,
                shut_down: false,
                worker_waiting: false,
                worker_exited: false,
            }),
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

    /// How many pending tasks are ahead of the one numbered `seq`; `None` if it left the queue.
    pub fn position(&self, seq: u64) -> Option<u64> {
        let state = lock(&self.state);
        match state.pending.position(seq) {
            Some(position) => Some(position + state.front.len() as u64),
            None => state.front.iter().position(|queued| queued.task.queue_seq.load(Ordering::Relaxed) == seq).map(|index| index as u64),
        }
    }

    /// Takes the task numbered `seq` out of the queue, if it is still there, and returns its job.
    pub fn remove(&self, seq: u64) -> Option<J> {
        let mut state = lock(&self.state);
        if let Some(queued) = state.pending.remove(seq) {
            return Some(queued.job);
        }
        let index = state.front.iter().position(|queued| queued.task.queue_seq.load(Ordering::Relaxed) == seq)?;
        state.front.remove(index).map(|queued| queued.job)
    }

    /// Puts tasks back at the head of the queue, ahead of every pending task, in the order
    /// of their numbers. Once shut down nothing changes and they come back in `Err`.
    pub fn requeue_at_head(&self, tasks: Vec<Queued<J>>) -> Result<(), Vec<Queued<J>>> {
        let mut state = lock(&self.state);
        if state.shut_down {
            return Err(tasks);
        }
        state.front.extend(tasks);
        state.front.make_contiguous().sort_by_key(|queued| queued.task.queue_seq.load(Ordering::Relaxed));
        if state.worker_waiting {
            self.work_available.notify_one();
        }
        Ok(())
    }

    /// How many tasks are pending.
    pub fn depth(&self) -> usize {
        let state = lock(&self.state);
        state.pending.len() + state.front.len()
    }

    /// Takes nothing more; returns every pending task, oldest first, and the worker's task.
    pub fn shut_down(&self) -> (Vec<Queued<J>>, Option<Arc<Task>>) {
        let mut state = lock(&self.state);
        state.shut_down = true;
        self.work_available.notify_all();
        let mut drained: Vec<Queued<J>> = state.front.drain(..).collect();
        drained.extend(state.pending.drain());
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
            if let Some(queued) = state.front.pop_front().or_else(|| state.pending.pop_front()) {
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
                if state.pending.len() > 0 || !state.front.is_empty() || state.shut_down {
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
