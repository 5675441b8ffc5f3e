//! Counters behind the statistics call, kept with atomics so transitions take no extra lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::status::TaskState;

#[derive(Default)]
pub(crate) struct Counters {
    /// Tasks currently in the registry, per state (indexed like `TaskState::ALL`).
    retained: [AtomicU64; 5],
    submitted_total: AtomicU64,
    completed_total: AtomicU64,
    failed_total: AtomicU64,
    cancelled_total: AtomicU64,
    run_count: AtomicU64,
    run_nanos_total: AtomicU64,
    run_nanos_max: AtomicU64,
}

fn index(state: TaskState) -> usize {
    state as usize
}

impl Counters {
    pub fn submitted(&self) {
        self.submitted_total.fetch_add(1, Relaxed);
        self.retained[index(TaskState::Pending)].fetch_add(1, Relaxed);
    }

    pub fn transition(&self, from: TaskState, to: TaskState) {
        self.retained[index(from)].fetch_sub(1, Relaxed);
        self.retained[index(to)].fetch_add(1, Relaxed);
        let total = match to {
            TaskState::Completed => &self.completed_total,
            TaskState::Failed => &self.failed_total,
            TaskState::Cancelled => &self.cancelled_total,
            TaskState::Pending | TaskState::Processing => return,
        };
        total.fetch_add(1, Relaxed);
    }

    pub fn ran_for(&self, seconds: f64) {
        let nanos = (seconds.max(0.0) * 1e9) as u64;
        self.run_count.fetch_add(1, Relaxed);
        self.run_nanos_total.fetch_add(nanos, Relaxed);
        self.run_nanos_max.fetch_max(nanos, Relaxed);
    }

    pub fn removed(&self, state: TaskState) {
        self.retained[index(state)].fetch_sub(1, Relaxed);
    }

    /// The statistics now; `pending_by_priority` comes from the queue, highest priority first.
    pub fn snapshot(&self, queue_depth: usize, pending_by_priority: Vec<PriorityPending>) -> Stats {
        let retained = |state: TaskState| self.retained[index(state)].load(Relaxed);
        let run_count = self.run_count.load(Relaxed);
        let run_total = self.run_nanos_total.load(Relaxed) as f64 / 1e9;
        Stats {
            counts: StateCounts {
                pending: retained(TaskState::Pending),
                processing: retained(TaskState::Processing),
                completed: retained(TaskState::Completed),
                failed: retained(TaskState::Failed),
                cancelled: retained(TaskState::Cancelled),
            },
            queue_depth: queue_depth as u64,
            retained: TaskState::ALL.into_iter().map(retained).sum(),
            submitted_total: self.submitted_total.load(Relaxed),
            completed_total: self.completed_total.load(Relaxed),
            failed_total: self.failed_total.load(Relaxed),
            cancelled_total: self.cancelled_total.load(Relaxed),
            mean_run_secs: if run_count == 0 { 0.0 } else { run_total / run_count as f64 },
            max_run_secs: self.run_nanos_max.load(Relaxed) as f64 / 1e9,
            pending_by_priority,
        }
    }
}

/// Tasks in the registry per state, under the wire names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub struct StateCounts {
    pub pending: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// A snapshot of the manager's statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Tasks in the registry, per state.
    pub counts: StateCounts,
    /// Tasks waiting in the queue.
    pub queue_depth: u64,
    /// Tasks in the registry in all.
    pub retained: u64,
    /// Tasks ever accepted.
    pub submitted_total: u64,
    /// Tasks ever completed.
    pub completed_total: u64,
    /// Tasks ever failed.
    pub failed_total: u64,
    /// Tasks ever cancelled.
    pub cancelled_total: u64,
    /// Mean seconds from start to finish over every task that ran.
    pub mean_run_secs: f64,
    /// Longest seconds from start to finish of any task that ran.
    pub max_run_secs: f64,
    /// Pending tasks per priority, highest priority first, only priorities with pending tasks.
    pub pending_by_priority: Vec<PriorityPending>,
}

/// How many tasks of one priority are pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PriorityPending {
    /// The priority.
    pub priority: i32,
    /// How many PENDING tasks have it.
    pub pending: u64,
}
