//! The deadline timer of the memory store: one thread, started at the first deadline,
//! that fails a pending task whose deadline passed and asks a running one to cancel,
//! on time even while the worker is busy with another task.
//!
//! It holds the tasks weakly: a task that finished and was cleaned up long before its
//! deadline is not kept alive by it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::TaskManager;
use crate::sync::{lock, unix_now};
use crate::task::Task;

/// How long the timer sleeps with nothing to watch before it looks whether its manager is gone.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The heap is swept of tasks that no longer exist once it grew past this and doubled.
const MIN_SWEEP_LEN: usize = 1024;

/// One watched deadline.
struct Due {
    at: f64,
    task: Weak<Task>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    /// Reversed, so that the max-heap gives the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at)
    }
}

struct Watched {
    heap: BinaryHeap<Due>,
    started: bool,
    stopped: bool,
    /// The heap's length after its last sweep.
    swept_len: usize,
}

/// The deadlines a manager watches.
pub(super) struct Deadlines {
    watched: Mutex<Watched>,
    changed: Condvar,
}

impl Deadlines {
    pub fn new() -> Self {
        Self {
            watched: Mutex::new(Watched { heap: BinaryHeap::new(), started: false, stopped: false, swept_len: 0 }),
            changed: Condvar::new(),
        }
    }

    /// Watches `task`, whose deadline is `at`; starts the timer thread for `manager` first.
    pub fn watch(self: &Arc<Self>, manager: &Arc<TaskManager>, task: &Arc<Task>, at: f64) -> std::io::Result<()> {
        let mut watched = lock(&self.watched);
        if watched.stopped {
            return Ok(());
        }
        if !watched.started {
            let deadlines = Arc::clone(self);
            let manager = Arc::downgrade(manager);
            std::thread::Builder::new().name("storyflow-deadlines".into()).spawn(move || deadlines.run(&manager))?;
            watched.started = true;
        }
        let earliest = watched.heap.peek().is_none_or(|due| at < due.at);
        watched.heap.push(Due { at, task: Arc::downgrade(task) });
        if watched.heap.len() > MIN_SWEEP_LEN.max(2 * watched.swept_len) {
            watched.heap.retain(|due| due.task.strong_count() > 0);
            watched.swept_len = watched.heap.len();
        }
        if earliest {
            self.changed.notify_all();
        }
        Ok(())
    }

    /// Stops the timer thread (at shutdown); deadlines not yet reached are dropped.
    pub fn stop(&self) {
        let mut watched = lock(&self.watched);
        watched.stopped = true;
        watched.heap.clear();
        self.changed.notify_all();
    }

    /// The timer thread: sleeps until the earliest deadline, then hands every task due to
    /// the manager, with no lock held.
    fn run(&self, manager: &Weak<TaskManager>) {
        loop {
            let due = {
                let mut watched = lock(&self.watched);
                loop {
                    if watched.stopped {
                        return;
                    }
                    let now = unix_now();
                    match watched.heap.peek() {
                        Some(next) if next.at <= now => break,
                        Some(next) => {
                            let wait = Duration::from_secs_f64((next.at - now).clamp(0.0, IDLE_CHECK.as_secs_f64()));
                            watched = self.changed.wait_timeout(watched, wait).unwrap_or_else(|e| e.into_inner()).0;
                        }
                        None => {
                            watched = self.changed.wait_timeout(watched, IDLE_CHECK).unwrap_or_else(|e| e.into_inner()).0;
                        }
                    }
                    if manager.strong_count() == 0 {
                        return;
                    }
                }
                let now = unix_now();
                let mut due = Vec::new();
                while watched.heap.peek().is_some_and(|next| next.at <= now) {
                    if let Some(task) = watched.heap.pop().and_then(|due| due.task.upgrade()) {
                        due.push(task);
                    }
                }
                due
            };
            let Some(manager) = manager.upgrade() else { return };
            for task in due {
                manager.deadline_passed(&task);
            }
        }
    }
}
