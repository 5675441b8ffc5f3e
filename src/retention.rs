//! Retention of finished tasks: they stay readable for `cleanup_threshold_secs`, at most
//! `max_retained_finished` of them (the oldest are evicted first), and are then removed.
//!
//! Cleanup runs in small batches on submissions rather than on a timer thread; an atomic
//! hint of when the oldest expires keeps the submissions with nothing to clean up off
//! this module's lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::status::TaskState;
use crate::sync::lock;
use crate::task::Task;

/// How many expired finished tasks one submission removes at most: more than
/// the one task a submission can add, so cleanup keeps up, yet a fixed bound.
const CLEANUP_BATCH: usize = 4;

/// A finished task awaiting cleanup; its state is final, so removal needs no task lock.
struct Retired {
    /// Nanoseconds after `epoch`.
    finished_at: u64,
    task: Arc<Task>,
    state: TaskState,
}

/// The finished tasks, in the order they finished.
pub(crate) struct Retention {
    finished: Mutex<VecDeque<Retired>>,
    /// When the oldest retained task expires (nanoseconds after `epoch`; `u64::MAX`: none).
    cleanup_due_at: AtomicU64,
    epoch: Instant,
}

impl Retention {
    pub fn new() -> Self {
        Self { finished: Mutex::new(VecDeque::new()), cleanup_due_at: AtomicU64::new(u64::MAX), epoch: Instant::now() }
    }

    /// Keeps a just-finished task and evicts the oldest past the configured cap; `forget`
    /// removes each evicted task, with this module's lock released.
    pub fn retire(&self, task: &Arc<Task>, state: TaskState, config: &Config, forget: impl FnMut(&Arc<Task>, TaskState)) {
        let cap = config.max_retained_finished;
        let finished_at = self.nanos_since_epoch();
        let mut finished = lock(&self.finished);
        finished.push_back(Retired { finished_at, task: task.clone(), state });
        let mut evicted = Vec::new();
        while cap > 0 && finished.len() as u64 > cap {
            evicted.extend(finished.pop_front());
        }
        if finished.len() == 1 || !evicted.is_empty() {
            self.note_oldest(&finished, config);
        }
        drop(finished);
        forget_each(&evicted, forget);
    }

    /// Removes, through `forget`, up to [`CLEANUP_BATCH`] tasks finished longer ago than the threshold.
    pub fn collect_expired(&self, config: &Config, forget: impl FnMut(&Arc<Task>, TaskState)) {
        let now = self.nanos_since_epoch();
        // A hint read without the lock: at worst one submission cleans up a little late or early.
        if now < self.cleanup_due_at.load(Ordering::Relaxed) {
            return;
        }
        let threshold = threshold_nanos(config);
        let mut expired = Vec::new();
        let mut finished = lock(&self.finished);
        while expired.len() < CLEANUP_BATCH {
            match finished.front() {
                Some(oldest) if oldest.finished_at.saturating_add(threshold) <= now => {
                    expired.extend(finished.pop_front());
                }
                _ => break,
            }
        }
        self.note_oldest(&finished, config);
        drop(finished);
        forget_each(&expired, forget);
    }

    /// Records when the oldest retained task expires, under the `finished` lock.
    fn note_oldest(&self, finished: &VecDeque<Retired>, config: &Config) {
        let due = finished.front().map_or(u64::MAX, |oldest| oldest.finished_at.saturating_add(threshold_nanos(config)));
        self.cleanup_due_at.store(due, Ordering::Relaxed);
    }

    fn nanos_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn forget_each(retired: &[Retired], mut forget: impl FnMut(&Arc<Task>, TaskState)) {
    retired.iter().for_each(|retired| forget(&retired.task, retired.state));
}

fn threshold_nanos(config: &Config) -> u64 {
    let threshold = Duration::try_from_secs_f64(config.cleanup_threshold_secs).unwrap_or(Duration::MAX);
    u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX)
}
