//! Behaviour of the core manager, one independent manager per test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::*;
use crate::{CompletedSegment, SegmentError, SegmentId, TaskContext};

/// Long enough never to expire in a passing run: a wait that returns Ok was woken by the change.
const PATIENCE: Option<Duration> = Some(Duration::from_secs(60));

fn ok(_: &TaskContext<'_>) -> Result<(), TaskFailure> {
    Ok(())
}

fn manager_with(config_json: &str) -> Arc<TaskManager> {
    let manager = TaskManager::new();
    manager.configure_json(config_json).unwrap();
    manager
}

/// A task that blocks until the returned sender is used (or dropped).
fn gate() -> (mpsc::Sender<()>, impl FnOnce(&TaskContext<'_>) -> Result<(), TaskFailure> + Send + 'static) {
    let (open, opened) = mpsc::channel::<()>();
    (open, move |_: &TaskContext<'_>| {
        let _ = opened.recv();
        Ok(())
    })
}

/// Counts how often it was dropped, to prove user data is released exactly once.
struct DropCounter(Arc<AtomicUsize>);
impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A gate task that the worker has already started (so the queue holds only what follows).
fn running_gate(manager: &Arc<TaskManager>, task_id: Option<&str>) -> (mpsc::Sender<()>, TaskId) {
    let (open, body) = gate();
    let id = manager.submit(task_id, body).unwrap();
    manager.wait_for_change(&id, 1, PATIENCE).unwrap();
    (open, id)
}

fn status(manager: &TaskManager, id: &str) -> TaskStatus {
    manager.status(id).expect("task exists")
}

#[test]
fn a_task_runs_to_completion_with_its_reports() {
    let manager = TaskManager::new();
    let id = manager
        .submit(Some("story-1"), |context: &TaskContext<'_>| {
            let manager = context.manager();
            let extra = crate::parse_extra_json(r#"{"current_segment_id": 7}"#).unwrap();
            manager.update_progress(context.task_id(), 2, 5, Some(&extra)).unwrap();
            let segment = CompletedSegment { segment_id: 1.into(), audio_url: "/media/audio/1.wav".into(), duration: 2.5 };
            manager.add_completed_segment(context.task_id(), &segment).unwrap();
            let error = SegmentError { segment_id: "3".into(), error: "voice not found".into() };
            manager.add_error(context.task_id(), &error).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(&*id, "story-1");
    let done: TaskStatus = serde_json::from_str(&manager.wait(&id, PATIENCE).unwrap()).unwrap();
    assert_eq!(done.status, TaskState::Completed);
    assert_eq!(done.progress["percentage"], 40);
    assert_eq!(done.progress["current_segment_id"], 7);
    assert_eq!(done.completed_segments[0].segment_id, SegmentId::from(1));
    assert_eq!(done.errors[0].segment_id, SegmentId::Text("3".into()));
    assert_eq!(done.error, None);
    assert_eq!(done.queue_position, None);
    let (created, started, completed) = (done.created_at, done.started_at.unwrap(), done.completed_at.unwrap());
    assert!(created <= started && started <= completed);
    // submitted(1) -> started -> progress -> segment -> error -> finished
    assert_eq!(done.revision, 6);
}

#[test]
fn status_is_none_for_unknown_ids_and_mutations_say_not_found() {
    let manager = TaskManager::new();
    assert!(manager.status_json("nope").is_none());
    assert_eq!(manager.update_progress("nope", 1, 2, None).unwrap_err().kind(), ErrorKind::NotFound);
    let segment = CompletedSegment { segment_id: 1.into(), audio_url: "u".into(), duration: 1.0 };
    assert_eq!(manager.add_completed_segment("nope", &segment).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(manager.cancel("nope").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(manager.wait("nope", Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn tasks_run_one_at_a_time_in_submission_order() {
    let manager = TaskManager::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let (open, _gate) = running_gate(&manager, None);
    let ids: Vec<TaskId> = (0..50)
        .map(|i| {
            let (order, running) = (order.clone(), running.clone());
            manager
                .submit(None, move |_: &TaskContext<'_>| {
                    assert_eq!(running.fetch_add(1, Ordering::SeqCst), 0, "two tasks ran at once");
                    order.lock().unwrap().push(i);
                    thread::yield_now();
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap()
        })
        .collect();
    assert_eq!(status(&manager, &ids[0]).queue_position, Some(0));
    assert_eq!(status(&manager, &ids[49]).queue_position, Some(49));
    open.send(()).unwrap();
    for id in &ids {
        assert_eq!(status_of_wait(&manager, id).status, TaskState::Completed);
    }
    assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
}

fn status_of_wait(manager: &TaskManager, id: &str) -> TaskStatus {
    serde_json::from_str(&manager.wait(id, PATIENCE).unwrap()).unwrap()
}

#[test]
fn failures_carry_the_tasks_text_or_a_generic_one_and_panics_are_contained() {
    let manager = TaskManager::new();
    let coded = manager.submit(None, |_: &TaskContext<'_>| Err(TaskFailure::Code(3))).unwrap();
    let explained = manager
        .submit(None, |context: &TaskContext<'_>| {
            context.manager().set_failure_message(context.task_id(), "engine exploded").unwrap();
            Err(TaskFailure::Code(1))
        })
        .unwrap();
    let panicked = manager.submit(None, |_: &TaskContext<'_>| -> Result<(), TaskFailure> { panic!("boom") }).unwrap();
    let after = manager.submit(None, ok).unwrap();
    assert_eq!(status_of_wait(&manager, &coded).error.as_deref(), Some("task function returned 3"));
    assert_eq!(status_of_wait(&manager, &explained).error.as_deref(), Some("engine exploded"));
    let panic_status = status_of_wait(&manager, &panicked);
    assert_eq!((panic_status.status, panic_status.error.as_deref()), (TaskState::Failed, Some("task panicked: boom")));
    assert_eq!(status_of_wait(&manager, &after).status, TaskState::Completed);
    let stats = manager.stats();
    assert_eq!((stats.failed_total, stats.completed_total), (3, 1));
}

#[test]
fn refused_submissions_hand_the_body_back_untouched() {
    let manager = manager_with(r#"{"max_pending_tasks": 1, "max_task_id_bytes": 8}"#);
    let drops = Arc::new(AtomicUsize::new(0));
    let (open, _gate) = running_gate(&manager, Some("a"));
    let blocked = Arc::new(AtomicUsize::new(0));
    manager.submit(Some("b"), ok).unwrap();
    let counter = DropCounter(drops.clone());
    let make = |counter: DropCounter, blocked: Arc<AtomicUsize>| {
        move |_: &TaskContext<'_>| {
            let _keep = &counter;
            blocked.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    };
    let full = manager.submit(Some("c"), make(counter, blocked.clone())).unwrap_err();
    assert_eq!(full.error.kind(), ErrorKind::QueueFull);
    let duplicate = manager.submit(Some("a"), full.body).unwrap_err();
    assert_eq!(duplicate.error.kind(), ErrorKind::DuplicateId);
    let too_long = manager.submit(Some("123456789"), duplicate.body).unwrap_err();
    assert_eq!(too_long.error.kind(), ErrorKind::InvalidArgument);
    let empty = manager.submit(Some(""), too_long.body).unwrap_err();
    assert_eq!(empty.error.kind(), ErrorKind::InvalidArgument);
    assert_eq!(drops.load(Ordering::SeqCst), 0, "a refused body was dropped");
    drop(empty.body);
    assert_eq!((drops.load(Ordering::SeqCst), blocked.load(Ordering::SeqCst)), (1, 0));
    open.send(()).unwrap();
}

#[test]
fn cancelling_a_pending_task_frees_it_at_once_and_it_never_runs() {
    let manager = TaskManager::new();
    let (open, _gate) = running_gate(&manager, None);
    let drops = Arc::new(AtomicUsize::new(0));
    let ran = Arc::new(AtomicUsize::new(0));
    let ids: Vec<TaskId> = (0..3)
        .map(|_| {
            let (counter, ran) = (DropCounter(drops.clone()), ran.clone());
            manager
                .submit(None, move |_: &TaskContext<'_>| {
                    let _keep = &counter;
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap()
        })
        .collect();
    assert_eq!(manager.cancel(&ids[1]).unwrap(), TaskState::Cancelled);
    assert_eq!(drops.load(Ordering::SeqCst), 1, "cancel did not free the user data at once");
    let cancelled = status(&manager, &ids[1]);
    assert_eq!((cancelled.status, cancelled.queue_position), (TaskState::Cancelled, None));
    assert_eq!(cancelled.error.as_deref(), Some("cancelled before it started"));
    assert_eq!(status(&manager, &ids[2]).queue_position, Some(status(&manager, &ids[0]).queue_position.unwrap() + 1));
    assert_eq!(manager.cancel(&ids[1]).unwrap_err().kind(), ErrorKind::InvalidState);
    open.send(()).unwrap();
    status_of_wait(&manager, &ids[2]);
    assert_eq!((ran.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)), (2, 3));
}

#[test]
fn a_running_task_sees_the_cancel_request_and_ends_cancelled() {
    let manager = TaskManager::new();
    let (started_tx, started) = mpsc::channel();
    let id = manager
        .submit(None, move |context: &TaskContext<'_>| {
            started_tx.send(()).unwrap();
            while !context.is_cancel_requested() {
                thread::yield_now();
            }
            Ok(())
        })
        .unwrap();
    started.recv().unwrap();
    assert_eq!(manager.cancel(&id).unwrap(), TaskState::Processing);
    let done = status_of_wait(&manager, &id);
    assert_eq!((done.status, done.cancel_requested), (TaskState::Cancelled, true));
    assert_eq!(done.error.as_deref(), Some("cancelled while running"));
}

#[test]
fn waits_wake_on_the_change_and_time_out_cleanly() {
    let manager = TaskManager::new();
    let (open, first) = gate();
    let id = manager.submit(None, first).unwrap();
    assert_eq!(manager.wait(&id, Some(Duration::from_millis(1))).unwrap_err().kind(), ErrorKind::Timeout);
    let revision = status(&manager, &id).revision;
    let waiter = {
        let (manager, id) = (manager.clone(), id.clone());
        thread::spawn(move || manager.wait(&id, PATIENCE))
    };
    let long_poll = {
        let (manager, id) = (manager.clone(), id.clone());
        thread::spawn(move || manager.wait_for_change(&id, revision + 1, PATIENCE))
    };
    manager.update_progress(&id, 1, 2, None).unwrap_or(()); // may land before or after "started"
    manager.update_progress(&id, 2, 2, None).unwrap();
    let changed: TaskStatus = serde_json::from_str(&long_poll.join().unwrap().unwrap()).unwrap();
    assert!(changed.revision > revision + 1);
    open.send(()).unwrap();
    let finished: TaskStatus = serde_json::from_str(&waiter.join().unwrap().unwrap()).unwrap();
    assert_eq!(finished.status, TaskState::Completed);
}

#[test]
fn the_worker_refuses_to_wait_for_work_that_needs_it() {
    let manager = TaskManager::new();
    let (verdict_tx, verdict) = mpsc::channel();
    manager
        .submit(None, move |context: &TaskContext<'_>| {
            let manager = context.manager();
            let later = manager.submit(None, ok).unwrap();
            let on_later = manager.wait(&later, PATIENCE).map(drop).map_err(|e| e.kind());
            let on_self = manager.wait(context.task_id(), PATIENCE).map(drop).map_err(|e| e.kind());
            verdict_tx.send((on_later, on_self)).unwrap();
            Ok(())
        })
        .unwrap();
    let invalid = Err(ErrorKind::InvalidState);
    assert_eq!(verdict.recv().unwrap(), (invalid, invalid));
}

#[test]
fn a_task_can_use_every_call_from_inside() {
    let manager = TaskManager::new();
    let (report_tx, report) = mpsc::channel();
    let id = manager
        .submit(Some("outer"), move |context: &TaskContext<'_>| {
            let manager = context.manager();
            let inner = manager.submit(Some("inner"), ok).unwrap();
            manager.update_progress("outer", 1, 1, None).unwrap();
            let own = manager.status("outer").unwrap();
            let listed = manager.list_json(Some(TaskState::Pending));
            let stats = manager.stats();
            report_tx.send((inner, own.status, listed.contains("\"inner\""), stats.counts.processing)).unwrap();
            Ok(())
        })
        .unwrap();
    let (inner, own_state, inner_listed, processing) = report.recv().unwrap();
    assert_eq!((own_state, inner_listed, processing), (TaskState::Processing, true, 1));
    assert_eq!(status_of_wait(&manager, &id).status, TaskState::Completed);
    assert_eq!(status_of_wait(&manager, &inner).status, TaskState::Completed);
}

#[test]
fn deferred_completion_holds_the_worker_until_finished_from_another_thread() {
    let manager = TaskManager::new();
    let deferred = manager
        .submit(None, |context: &TaskContext<'_>| {
            context.defer().unwrap();
            Err(TaskFailure::Code(9)) // ignored once deferred
        })
        .unwrap();
    let next = manager.submit(None, ok).unwrap();
    let started = manager.wait_for_change(&deferred, 1, PATIENCE).unwrap();
    assert!(started.contains("PROCESSING"), "{started}");
    // The worker is held: the next task cannot start until the deferred one finishes.
    assert_eq!(manager.finish(&next, Ok(())).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(status(&manager, &next).status, TaskState::Pending);
    let finisher = {
        let (manager, deferred) = (manager.clone(), deferred.clone());
        thread::spawn(move || manager.finish(&deferred, Err(TaskFailure::Message("GPU fault".into()))))
    };
    finisher.join().unwrap().unwrap();
    let done = status(&manager, &deferred);
    assert_eq!((done.status, done.error.as_deref()), (TaskState::Failed, Some("GPU fault")));
    assert_eq!(manager.finish(&deferred, Ok(())).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(status_of_wait(&manager, &next).status, TaskState::Completed);
}

#[test]
fn external_tasks_start_on_the_worker_and_finish_from_outside() {
    let manager = TaskManager::new();
    let (open, gate_id) = running_gate(&manager, None);
    let seq = manager.last_event_seq();
    let id = manager.submit_external(Some("js-task")).unwrap();
    assert_eq!(manager.finish(&id, Ok(())).unwrap_err().kind(), ErrorKind::InvalidState, "finished before it started");
    open.send(()).unwrap();
    let mut seen = Vec::new();
    let mut after = seq;
    while !seen.contains(&EventKind::Started) {
        for event in manager.wait_events(after, 16, PATIENCE).unwrap() {
            after = event.seq;
            seen.push(event.kind);
        }
    }
    manager.finish(&id, Ok(())).unwrap();
    assert_eq!(status(&manager, &id).status, TaskState::Completed);
    let events = manager.wait_events(seq, 100, Some(Duration::ZERO)).unwrap();
    let kinds: Vec<(bool, EventKind)> = events.iter().map(|e| (e.task_id == id, e.kind)).collect();
    let (ours, gate): (Vec<_>, Vec<_>) = kinds.into_iter().partition(|(is_ours, _)| *is_ours);
    let ours: Vec<EventKind> = ours.into_iter().map(|(_, kind)| kind).collect();
    assert_eq!(ours, vec![EventKind::Submitted, EventKind::Started, EventKind::Finished]);
    assert_eq!(gate.into_iter().map(|(_, kind)| kind).collect::<Vec<_>>(), vec![EventKind::Finished], "{gate_id}");
    assert!(events.windows(2).all(|pair| pair[1].seq == pair[0].seq + 1));
    assert_eq!(manager.wait_events(manager.last_event_seq(), 1, Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::Timeout);
}

#[test]
fn listeners_run_with_no_lock_held_and_may_call_back_in() {
    let manager = TaskManager::new();
    let (seen_tx, seen) = mpsc::channel();
    let seen_tx = Mutex::new(seen_tx);
    let listener: Listener = {
        let manager = Arc::downgrade(&manager);
        Arc::new(move |event: &TaskEvent| {
            let manager = manager.upgrade().unwrap();
            // Each of these takes the task's and the queue's locks: a deadlock if any were held.
            let status = manager.status(&event.task_id).unwrap();
            let _ = manager.stats();
            seen_tx.lock().unwrap().send((event.seq, event.kind, status.revision >= event.revision)).unwrap();
        })
    };
    manager.set_listener(Some(listener));
    manager.submit(None, ok).unwrap();
    let mut seen: Vec<_> = (0..3).map(|_| seen.recv_timeout(PATIENCE.unwrap()).unwrap()).collect();
    manager.set_listener(None);
    // Each event is delivered on the thread that made the change, so calls can arrive
    // in any order across threads; `seq` is the order.
    seen.sort_by_key(|(seq, _, _)| *seq);
    let seen: Vec<_> = seen.into_iter().map(|(_, kind, read_back)| (kind, read_back)).collect();
    assert_eq!(seen, vec![(EventKind::Submitted, true), (EventKind::Started, true), (EventKind::Finished, true)]);
}

#[test]
fn listing_and_statistics_follow_the_states() {
    let manager = TaskManager::new();
    let (open, _running) = running_gate(&manager, Some("r"));
    manager.submit(Some("p1"), ok).unwrap();
    manager.submit(Some("p2"), ok).unwrap();
    manager.cancel("p2").unwrap();
    let pending: Vec<TaskStatus> = serde_json::from_str(&manager.list_json(Some(TaskState::Pending))).unwrap();
    assert_eq!(pending.iter().map(|s| s.task_id.as_str()).collect::<Vec<_>>(), vec!["p1"]);
    let all: Vec<TaskStatus> = serde_json::from_str(&manager.list_json(None)).unwrap();
    assert_eq!(all.iter().map(|s| s.task_id.as_str()).collect::<Vec<_>>(), vec!["r", "p1", "p2"]);
    let stats = manager.stats();
    assert_eq!((stats.counts.processing, stats.counts.pending, stats.counts.cancelled), (1, 1, 1));
    assert_eq!((stats.queue_depth, stats.submitted_total, stats.retained), (1, 3, 3));
    open.send(()).unwrap();
    status_of_wait(&manager, "p1");
    let stats = manager.stats();
    assert_eq!((stats.completed_total, stats.counts.completed, stats.queue_depth), (2, 2, 0));
    assert!(stats.max_run_secs >= stats.mean_run_secs && stats.mean_run_secs > 0.0);
}

#[test]
fn configuration_is_fixed_at_the_first_submission() {
    let manager = TaskManager::new();
    manager.configure_json(r#"{"max_pending_tasks": 5}"#).unwrap();
    assert_eq!(manager.configure_json(r#"{"bogus": 1}"#).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(manager.config().max_pending_tasks, 5);
    manager.submit(None, ok).unwrap();
    manager.configure_json(r#"{"max_pending_tasks": 5}"#).unwrap(); // no change: fine
    assert_eq!(manager.configure_json(r#"{"max_pending_tasks": 6}"#).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(manager.config().max_pending_tasks, 5);
}

#[test]
fn finished_tasks_expire_after_the_threshold_and_the_oldest_are_evicted_over_the_cap() {
    let expiring = manager_with(r#"{"cleanup_threshold_secs": 0}"#);
    let first = expiring.submit(None, ok).unwrap();
    status_of_wait(&expiring, &first);
    expiring.submit(None, ok).unwrap(); // a submission runs the cleanup step
    assert!(expiring.status_json(&first).is_none(), "an expired task was kept");
    assert_eq!(expiring.stats().submitted_total, 2);

    let capped = manager_with(r#"{"max_retained_finished": 2}"#);
    let ids: Vec<TaskId> = (0..4).map(|_| capped.submit(None, ok).unwrap()).collect();
    status_of_wait(&capped, &ids[3]);
    let kept: Vec<bool> = ids.iter().map(|id| capped.contains(id)).collect();
    assert_eq!(kept, vec![false, false, true, true]);
    assert_eq!(capped.stats().retained, 2);
    // An evicted id can be used again.
    capped.submit(Some(&ids[0]), ok).unwrap();
}

#[test]
fn a_waiter_keeps_its_task_even_when_cleanup_removes_it() {
    let manager = manager_with(r#"{"cleanup_threshold_secs": 0}"#);
    let (open, first) = gate();
    let id = manager.submit(None, first).unwrap();
    let waiter = {
        let (manager, id) = (manager.clone(), id.clone());
        thread::spawn(move || manager.wait(&id, PATIENCE))
    };
    open.send(()).unwrap();
    let done: TaskStatus = serde_json::from_str(&waiter.join().unwrap().unwrap()).unwrap();
    assert_eq!(done.status, TaskState::Completed);
}

#[test]
fn shutdown_cancels_the_queue_asks_the_running_task_and_keeps_reads_working() {
    let manager = TaskManager::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let (started_tx, started) = mpsc::channel();
    let running = manager
        .submit(None, move |context: &TaskContext<'_>| {
            started_tx.send(()).unwrap();
            while !context.is_cancel_requested() {
                thread::yield_now();
            }
            Err(TaskFailure::Code(1))
        })
        .unwrap();
    started.recv().unwrap();
    let counter = DropCounter(drops.clone());
    let queued = manager
        .submit(None, move |_: &TaskContext<'_>| {
            let _keep = &counter;
            Ok(())
        })
        .unwrap();
    manager.shutdown(PATIENCE).unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert_eq!(status(&manager, &queued).error.as_deref(), Some("cancelled by shutdown"));
    assert_eq!(status(&manager, &running).status, TaskState::Cancelled);
    let refused = manager.submit(None, ok).unwrap_err();
    assert_eq!(refused.error.kind(), ErrorKind::ShutDown);
    assert!(manager.wait(&queued, Some(Duration::ZERO)).is_ok());
    manager.shutdown(Some(Duration::ZERO)).unwrap(); // again: still fine
}

#[test]
fn shutdown_times_out_on_a_task_that_does_not_stop() {
    let manager = TaskManager::new();
    let (open, id) = running_gate(&manager, None);
    assert_eq!(manager.shutdown(Some(Duration::from_millis(10))).unwrap_err().kind(), ErrorKind::Timeout);
    open.send(()).unwrap();
    manager.shutdown(PATIENCE).unwrap();
    assert_eq!(status(&manager, &id).status, TaskState::Cancelled);
}

#[test]
fn caller_strings_round_trip_exactly() {
    let manager = TaskManager::new();
    let tricky = "id \"quoted\" \\ back\nline\ttab \u{1} ünïcødé 🎧";
    // Held pending behind a gate, so that the reports reach it before it finishes.
    let (open, _) = running_gate(&manager, None);
    let id = manager.submit(Some(tricky), ok).unwrap();
    let segment = CompletedSegment { segment_id: tricky.into(), audio_url: tricky.into(), duration: 0.0 };
    manager.add_completed_segment(&id, &segment).unwrap();
    manager.add_error(&id, &SegmentError { segment_id: (-5).into(), error: tricky.into() }).unwrap();
    drop(open);
    let parsed = status_of_wait(&manager, &id);
    assert_eq!(parsed.task_id, tricky);
    assert_eq!(parsed.completed_segments[0], segment);
    assert_eq!(parsed.errors[0].error, tricky);
    assert_eq!(parsed.errors[0].segment_id, SegmentId::from(-5));
}

#[test]
fn bad_reports_change_nothing() {
    let manager = manager_with(r#"{"max_url_bytes": 4, "max_segments_per_task": 1}"#);
    let (open, id) = running_gate(&manager, None);
    let before = manager.status_json(&id).unwrap();
    let bad_segments = [
        CompletedSegment { segment_id: 1.into(), audio_url: "u".into(), duration: -1.0 },
        CompletedSegment { segment_id: 1.into(), audio_url: "u".into(), duration: f64::NAN },
        CompletedSegment { segment_id: 1.into(), audio_url: "u".into(), duration: f64::INFINITY },
        CompletedSegment { segment_id: 1.into(), audio_url: "too long".into(), duration: 1.0 },
    ];
    for segment in &bad_segments {
        assert_eq!(manager.add_completed_segment(&id, segment).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
    let reserved = crate::parse_extra_json(r#"{"total": 1}"#).unwrap();
    assert_eq!(manager.update_progress(&id, 1, 2, Some(&reserved)).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(manager.status_json(&id).unwrap(), before);
    let fine = CompletedSegment { segment_id: 1.into(), audio_url: "u".into(), duration: 1.0 };
    manager.add_completed_segment(&id, &fine).unwrap();
    assert_eq!(manager.add_completed_segment(&id, &fine).unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(status(&manager, &id).completed_segments.len(), 1);
    open.send(()).unwrap();
}

#[test]
fn a_finished_tasks_status_is_final() {
    let manager = TaskManager::new();
    let id = manager.submit(Some("final"), ok).unwrap();
    manager.wait(&id, PATIENCE).unwrap();
    let before = manager.status_json(&id).unwrap();
    let segment = CompletedSegment { segment_id: 1.into(), audio_url: "/a.wav".into(), duration: 1.0 };
    let refusals = [
        manager.update_progress(&id, 1, 2, None),
        manager.update_progress_json(&id, 1, 2, Some(r#"{"k":1}"#)),
        manager.add_completed_segment(&id, &segment),
        manager.add_completed_segment_json(&id, r#"{"segment_id":1,"audio_url":"/a.wav","duration":1}"#),
        manager.add_error(&id, &SegmentError { segment_id: 1.into(), error: "x".into() }),
        manager.add_error_json(&id, r#"{"segment_id":1,"error":"x"}"#),
        manager.set_failure_message(&id, "x"),
    ];
    for refused in refusals {
        let error = refused.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidState, "{error}");
        assert!(error.message().contains("COMPLETED"), "{error}");
    }
    assert_eq!(manager.status_json(&id).unwrap(), before);
}

#[test]
fn records_given_as_json_keep_every_string_and_integer_exactly() {
    let manager = TaskManager::new();
    let (open, id) = running_gate(&manager, Some("records"));
    manager
        .add_completed_segment_json(&id, r#"{"segment_id":1000000000000000000000000000000,"audio_url":"/a\u0000.wav","duration":2}"#)
        .unwrap();
    manager.add_error_json(&id, r#"{"segment_id":"","error":"x"}"#).unwrap_err();
    manager.add_error_json(&id, r#"{"segment_id":"s\u0000","error":"bad\u0000voice"}"#).unwrap();
    manager.update_progress_json(&id, 1, 2, Some(r#"{"big":-1000000000000000000000000000000,"f":2.50}"#)).unwrap();
    let text = manager.status_json(&id).unwrap();
    assert!(
        text.contains(r#""completed_segments":[{"segment_id":1000000000000000000000000000000,"audio_url":"/a\u0000.wav","duration":2.0}]"#),
        "{text}"
    );
    assert!(text.contains(r#""errors":[{"segment_id":"s\u0000","error":"bad\u0000voice"}]"#), "{text}");
    assert!(
        text.contains(r#""progress":{"current":1,"total":2,"percentage":50,"big":-1000000000000000000000000000000,"f":2.5}"#),
        "{text}"
    );
    let parsed = status(&manager, &id);
    assert_eq!(parsed.completed_segments[0].segment_id, SegmentId::from_json("1000000000000000000000000000000").unwrap());
    for (bad, says) in [
        (r#"{"segment_id":1,"audio_url":"/a.wav"}"#, "lacks the key \"duration\""),
        (r#"{"segment_id":1,"audio_url":"/a.wav","duration":1,"x":0}"#, "unknown key \"x\""),
        (r#"{"segment_id":1.5,"audio_url":"/a.wav","duration":1}"#, "must be a JSON string or integer"),
        (r#"{"segment_id":1,"audio_url":"/a\ud800.wav","duration":1}"#, "lone surrogate"),
        (r#"{"segment_id":1,"audio_url":"/a.wav","duration":1e400}"#, "not a finite number"),
        (r#"{"segment_id":1,"audio_url":"/a.wav","duration":-1}"#, "duration must be finite and >= 0"),
        (r#"{"segment_id":"","audio_url":"/a.wav","duration":1}"#, "segment_id is empty"),
        ("[1]", "must be a JSON object"),
    ] {
        let error = manager.add_completed_segment_json(&id, bad).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(error.message().contains(says), "{bad}: {error}");
    }
    drop(open);
    manager.wait(&id, PATIENCE).unwrap();
}

#[test]
fn a_runner_is_handed_its_tasks_in_the_one_fifo_and_finishes_them() {
    let manager = TaskManager::new();
    let runner = manager.register_runner();
    let (open, gate_id) = running_gate(&manager, None);
    let first = manager.submit_to_runner(runner, Some("first")).unwrap();
    let second = manager.submit_to_runner(runner, Some("second")).unwrap();
    assert_eq!(manager.next_assignment(runner, Some(Duration::ZERO)).unwrap_err().kind(), ErrorKind::Timeout);
    drop(open); // the gate task ends; the worker moves on to the runner's first task
    let assignment = manager.next_assignment(runner, PATIENCE).unwrap();
    assert_eq!(
        serde_json::to_string(&assignment).unwrap(),
        r#"{"task_id":"first","run":true,"handler":null,"payload":null,"attempt":1,"checkpoint":null,"yields":0}"#
    );
    assert_eq!(status(&manager, &first).status, TaskState::Processing);
    // Inside "first", waiting for the pending "second" or for "first" itself would deadlock.
    assert_eq!(manager.wait(&second, PATIENCE).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(manager.wait(&first, PATIENCE).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(manager.wait_for_change(&second, 1, PATIENCE).unwrap_err().kind(), ErrorKind::InvalidState);
    manager.wait(&gate_id, PATIENCE).unwrap(); // a finished task is fine
    assert_eq!(manager.finish_runner_task(runner, &second, Ok(())).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(manager.finish_runner_task(runner, "nobody", Ok(())).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(manager.finish_runner_task(runner + 1, &first, Ok(())).unwrap_err().kind(), ErrorKind::NotFound);
    manager.finish_runner_task(runner, &first, Err(TaskFailure::Message("x".repeat(70_000)))).unwrap();
    let failed = status(&manager, &first);
    assert_eq!(failed.status, TaskState::Failed);
    let error = failed.error.unwrap();
    assert!(error.len() <= 64 * 1024 && error.ends_with(" [shortened from 70000 bytes]"), "{}", &error[error.len() - 40..]);
    assert_eq!(manager.finish_runner_task(runner, &first, Ok(())).unwrap_err().kind(), ErrorKind::InvalidState);
    // The mark of the finished task is stale: waiting is fine again.
    let assignment = manager.next_assignment(runner, PATIENCE).unwrap();
    assert_eq!((&*assignment.task_id, assignment.run), ("second", true));
    manager.finish_runner_task(runner, &second, Err(TaskFailure::Code(4))).unwrap();
    assert_eq!(status(&manager, &second).error.as_deref(), Some("task function returned 4"));
    manager.wait(&second, PATIENCE).unwrap();
}

#[test]
fn runner_tasks_cancelled_before_they_run_come_back_not_to_run() {
    let manager = TaskManager::new();
    let runner = manager.register_runner();
    let (open, _) = running_gate(&manager, None);
    let cancelled = manager.submit_to_runner(runner, Some("cancelled")).unwrap();
    let kept = manager.submit_to_runner(runner, Some("kept")).unwrap();
    assert_eq!(manager.cancel(&cancelled).unwrap(), TaskState::Cancelled);
    let released = manager.next_assignment(runner, Some(Duration::ZERO)).unwrap();
    assert_eq!((&*released.task_id, released.run, released.attempt), ("cancelled", false, 0));
    drop(open);
    let assignment = manager.next_assignment(runner, PATIENCE).unwrap();
    assert_eq!((&*assignment.task_id, assignment.run), ("kept", true));
    manager.cancel(&kept).unwrap();
    manager.finish_runner_task(runner, &kept, Ok(())).unwrap();
    assert_eq!(status(&manager, &kept).status, TaskState::Cancelled);
}

#[test]
fn closing_a_runner_cancels_its_queue_and_fails_its_running_task() {
    let manager = TaskManager::new();
    let runner = manager.register_runner();
    let running = manager.submit_to_runner(runner, Some("running")).unwrap();
    let queued = manager.submit_to_runner(runner, Some("queued")).unwrap();
    let after = manager.submit(Some("after"), ok).unwrap();
    assert!(manager.next_assignment(runner, PATIENCE).unwrap().run);
    let blocked = {
        let manager = manager.clone();
        thread::spawn(move || manager.next_assignment(runner, PATIENCE).map(|a| a.task_id))
    };
    while manager.runners.waiting(runner) == 0 {
        thread::yield_now();
    }
    manager.close_runner(runner, Some(Duration::ZERO)).unwrap();
    assert_eq!(blocked.join().unwrap().unwrap_err().kind(), ErrorKind::ShutDown);
    let queued = status(&manager, &queued);
    assert_eq!((queued.status, queued.error.as_deref()), (TaskState::Cancelled, Some("its runner closed before it ran")));
    let running = status(&manager, &running);
    assert_eq!((running.status, running.error.as_deref()), (TaskState::Failed, Some("its runner closed while it was running")));
    assert!(running.cancel_requested);
    // The worker moved on, and the runner id is unknown now.
    assert_eq!(status_of_wait(&manager, &after).status, TaskState::Completed);
    assert_eq!(manager.next_assignment(runner, PATIENCE).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(manager.submit_to_runner(runner, None).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(manager.close_runner(runner, None).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn a_shut_down_manager_releases_runner_tasks_then_tells_the_runner() {
    let manager = TaskManager::new();
    let runner = manager.register_runner();
    let running = manager.submit_to_runner(runner, Some("running")).unwrap();
    manager.submit_to_runner(runner, Some("queued")).unwrap();
    assert!(manager.next_assignment(runner, PATIENCE).unwrap().run);
    let finisher = {
        let manager = manager.clone();
        thread::spawn(move || {
            while !manager.is_cancel_requested("running").unwrap() {
                thread::yield_now();
            }
            manager.finish_runner_task(runner, "running", Ok(()))
        })
    };
    manager.shutdown(PATIENCE).unwrap();
    finisher.join().unwrap().unwrap();
    assert_eq!(status(&manager, &running).status, TaskState::Cancelled);
    let released = manager.next_assignment(runner, PATIENCE).unwrap();
    assert_eq!((&*released.task_id, released.run), ("queued", false));
    assert_eq!(manager.next_assignment(runner, PATIENCE).unwrap_err().kind(), ErrorKind::ShutDown);
}
