//! The change feed: a bounded log of task events that readers long-poll by sequence number.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::status::TaskState;
use crate::sync::{lock, wait_while_until};
use crate::TaskId;

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// It entered the queue.
    Submitted,
    /// The worker started it.
    Started,
    /// It reported progress.
    Progress,
    /// It recorded a completed segment.
    Segment,
    /// It recorded a segment error.
    Error,
    /// Its cancellation was requested while it ran.
    CancelRequested,
    /// It reached COMPLETED, FAILED or CANCELLED.
    Finished,
    /// It yielded to a higher-priority task: PENDING again, at the head of its priority.
    Yielded,
}

/// One entry of the change feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskEvent {
    /// Position in the feed; the first event is 1 and each next one is one more.
    pub seq: u64,
    /// The task it concerns.
    pub task_id: TaskId,
    /// What happened.
    pub kind: EventKind,
    /// The task's state right after the change.
    pub status: TaskState,
    /// The task's revision right after the change.
    pub revision: u64,
}

struct Ring {
    events: VecDeque<TaskEvent>,
    last_seq: u64,
    waiters: usize,
}

/// The bounded event log. Recording is O(1); the oldest events fall off when it is full.
pub(crate) struct EventLog {
    ring: Mutex<Ring>,
    appended: Condvar,
}

impl EventLog {
    pub fn new() -> Self {
        Self { ring: Mutex::new(Ring { events: VecDeque::new(), last_seq: 0, waiters: 0 }), appended: Condvar::new() }
    }

    /// Appends an event, keeping at most `capacity`, and returns it.
    pub fn record(&self, capacity: usize, task_id: &TaskId, kind: EventKind, status: TaskState, revision: u64) -> TaskEvent {
        let mut ring = lock(&self.ring);
        ring.last_seq += 1;
        let event = TaskEvent { seq: ring.last_seq, task_id: task_id.clone(), kind, status, revision };
        while ring.events.len() >= capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Skipping the notify when nobody waits saves a futex syscall per change on the hot path.
        if ring.waiters > 0 {
            self.appended.notify_all();
        }
        event
    }

    /// The sequence number of the newest event (0 before the first).
    pub fn last_seq(&self) -> u64 {
        lock(&self.ring).last_seq
    }

    /// Events with `seq > after_seq`, at most `max`, waiting until `deadline` for the first.
    ///
    /// Events that already fell off the log are skipped: a reader sees the gap as a jump in `seq`.
    pub fn wait_after(&self, after_seq: u64, max: usize, deadline: Option<Instant>) -> Vec<TaskEvent> {
        let mut ring = lock(&self.ring);
        ring.waiters += 1;
        let (mut ring, _timed_out) = wait_while_until(&self.appended, ring, deadline, |ring| ring.last_seq <= after_seq);
        ring.waiters -= 1;
        let first_kept = ring.events.front().map_or(ring.last_seq + 1, |e| e.seq);
        let skip = after_seq.saturating_add(1).saturating_sub(first_kept) as usize;
        ring.events.iter().skip(skip).take(max).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn keeps_the_newest_and_reports_gaps_by_seq() {
        let log = EventLog::new();
        let id: TaskId = Arc::from("t");
        for revision in 1..=5 {
            log.record(3, &id, EventKind::Progress, TaskState::Processing, revision);
        }
        let events = log.wait_after(0, 10, Some(Instant::now()));
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(log.wait_after(3, 1, None).iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
        assert!(log.wait_after(5, 10, Some(Instant::now() + Duration::from_millis(5))).is_empty());
    }

    #[test]
    fn a_waiter_is_woken_by_the_append() {
        let log = Arc::new(EventLog::new());
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || log.wait_after(0, 10, None))
        };
        while lock(&log.ring).waiters == 0 {
            std::thread::yield_now();
        }
        log.record(8, &Arc::from("t"), EventKind::Submitted, TaskState::Pending, 1);
        assert_eq!(reader.join().unwrap().len(), 1);
    }
}
