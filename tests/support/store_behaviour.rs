//! What every `Store` does alike, whatever keeps the tasks: the conformance checks that
//! tests/sqlite_store.rs and tests/redis_store.rs both run, each with its own opener.
//!
//! `open` gives a new handle on one shared store each time it is called: another
//! connection to the same SQLite file, or another worker (of another machine) on the same
//! Redis server and namespace.

use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;
use storyflow_tasks::{
    CompletedSegment, Config, ErrorKind, EventKind, Schedule, SegmentError, SegmentId, Store, TaskFailure, TaskKind, TaskOutcome, TaskState,
};

// ----- the helpers both test files use ------------------------------------------------

pub const LONG: Option<Duration> = Some(Duration::from_secs(60));

pub fn status(store: &impl Store, id: &str) -> Value {
    serde_json::from_str(&store.status_json(id).unwrap()).unwrap()
}

/// Long-polls a task until `done` holds for its status.
pub fn wait_for(store: &impl Store, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut s = status(store, id);
    while !done(&s) {
        s = serde_json::from_str(&store.wait_for_change(id, s["revision"].as_u64().unwrap(), LONG).unwrap()).unwrap();
    }
    s
}

pub fn named<'a>(handler: &'a str, payload: &'a RawValue) -> TaskKind<'a> {
    TaskKind::Named { handler, payload: Some(payload) }
}

pub fn json(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap()
}

pub fn segment(id: i64) -> CompletedSegment {
    CompletedSegment { segment_id: SegmentId::from(id), audio_url: format!("file:///audio/{id}.wav"), duration: 1.5 }
}

pub fn at(priority: i32) -> Schedule {
    Schedule::with_priority(priority)
}

// ----- the behaviours -----------------------------------------------------------------

/// A named task from submit to its end: the status record and its keys, the claim, its
/// progress, segments, errors and checkpoint, what a finished task refuses, the change
/// feed, the stats and the listing.
pub fn a_named_task_runs_with_its_segments_errors_checkpoint_and_progress<S: Store>(open: impl Fn() -> S) {
    let store = open();
    let payload = json(r#"{"chapter": 3, "text": "Once upon a time"}"#);
    let first = store.submit(Some("chapter-3"), named("narrate", &payload), Schedule::default()).unwrap();
    let second = store.submit(None, named("narrate", &payload), Schedule::default()).unwrap();
    assert_eq!(store.submit(Some("chapter-3"), TaskKind::Function, Schedule::default()).unwrap_err().kind(), ErrorKind::DuplicateId);

    let pending = status(&store, &first);
    assert_eq!(pending["status"], "PENDING");
    assert_eq!((pending["handler"].as_str(), pending["attempt"].as_u64()), (Some("narrate"), Some(0)));
    assert!(pending["checkpoint"].is_null());
    // No live worker serves "narrate" yet: waiting outside the line, with no position.
    assert!(pending["queue_position"].is_null(), "no live worker serves it yet");
    assert!(status(&store, &second)["queue_position"].is_null());
    let keys: Vec<&str> = pending.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "task_id",
            "status",
            "progress",
            "completed_segments",
            "errors",
            "created_at",
            "started_at",
            "completed_at",
            "error",
            "revision",
            "queue_position",
            "cancel_requested",
            "handler",
            "attempt",
            "checkpoint",
            "priority",
            "deadline",
            "yield_requested",
            "yields"
        ]
    );

    assert!(store.claim_next(Some(Duration::from_millis(20))).unwrap().is_none(), "nothing to claim before the handler");
    store.register_handler("narrate").unwrap();
    assert_eq!(status(&store, &first)["queue_position"], 0);
    assert_eq!(status(&store, &second)["queue_position"], 1);
    let claim = store.claim_next(LONG).unwrap().unwrap();
    let assignment: Value = serde_json::from_str(&claim.to_json()).unwrap();
    assert_eq!(
        assignment,
        serde_json::json!({"task_id": "chapter-3", "run": true, "handler": "narrate",
                           "payload": {"chapter": 3, "text": "Once upon a time"}, "attempt": 1, "checkpoint": null, "yields": 0})
    );
    assert_eq!(status(&store, &second)["queue_position"], 0);

    store.update_progress(&first, 1, 4, Some(&serde_json::from_str(r#"{"sentence": "One"}"#).unwrap())).unwrap();
    // Seen at once in this process, before the flush writes (commits) it.
    let running = status(&store, &first);
    assert_eq!(running["progress"], serde_json::json!({"current": 1, "total": 4, "percentage": 25, "sentence": "One"}));
    store.add_segment(&first, &segment(1)).unwrap();
    store.add_segment(&first, &CompletedSegment { segment_id: SegmentId::Text("two \"quoted\" ü".into()), ..segment(2) }).unwrap();
    store.add_error(&first, &SegmentError { segment_id: SegmentId::from(3), error: "bad\u{0}voice".into() }).unwrap();
    store.set_checkpoint(&first, &json(r#"{"next": 4}"#)).unwrap();
    assert_eq!(
        store.add_segment(&first, &CompletedSegment { segment_id: SegmentId::Text(String::new()), ..segment(0) }).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let after = status(&store, &first);
    assert!(after["revision"].as_u64() > running["revision"].as_u64());
    assert_eq!(after["progress"]["sentence"], "One");
    assert_eq!(after["completed_segments"][1]["segment_id"], "two \"quoted\" ü");
    assert_eq!(after["errors"][0], serde_json::json!({"segment_id": 3, "error": "bad\u{0}voice"}));
    assert_eq!(after["checkpoint"], serde_json::json!({"next": 4}));
    assert_eq!(after["status"], "PROCESSING");
    assert!(after["started_at"].as_f64().unwrap() >= after["created_at"].as_f64().unwrap());

    assert_eq!(store.finish(&first, TaskOutcome::Completed).unwrap(), TaskState::Completed);
    let done = status(&store, &first);
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["progress"]["current"], 1, "the coalesced progress is written with the end");
    assert!(done["error"].is_null());
    assert_eq!(store.add_segment(&first, &segment(9)).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(store.update_progress(&first, 2, 4, None).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(store.finish(&first, TaskOutcome::Completed).unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(store.status_json("nope").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.cancel("nope").unwrap_err().kind(), ErrorKind::NotFound);

    let events = store.wait_events(0, 100, Some(Duration::ZERO)).unwrap();
    let kinds: Vec<EventKind> = events.iter().filter(|e| &*e.task_id == "chapter-3").map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&EventKind::Submitted));
    assert_eq!(kinds.iter().filter(|k| **k == EventKind::Finished).count(), 1);
    assert!(events.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    assert_eq!(store.last_event_seq().unwrap(), events.last().unwrap().seq);
    let finished = events.iter().find(|e| e.kind == EventKind::Finished).unwrap();
    assert_eq!((finished.status, finished.revision), (TaskState::Completed, done["revision"].as_u64().unwrap()));
    assert!(store.wait_events(events.last().unwrap().seq, 10, Some(Duration::from_millis(20))).unwrap_err().kind() == ErrorKind::Timeout);

    let stats = store.stats().unwrap();
    assert_eq!((stats.counts.completed, stats.counts.pending, stats.submitted_total, stats.completed_total), (1, 1, 2, 1));
    assert!(stats.mean_run_secs >= 0.0 && stats.max_run_secs >= stats.mean_run_secs);
    let listed: Vec<Value> = serde_json::from_str(&store.list_json(None).unwrap()).unwrap();
    assert_eq!(listed.iter().map(|s| s["task_id"].as_str().unwrap()).collect::<Vec<_>>(), [&*first, &*second]);
    let completed: Vec<Value> = serde_json::from_str(&store.list_json(Some(TaskState::Completed)).unwrap()).unwrap();
    assert_eq!(completed.len(), 1);
}

/// A named task no live worker serves waits outside the line (no queue position) until a
/// worker registers its handler, and again once that worker goes away.
pub fn a_named_task_no_live_worker_serves_waits_with_no_queue_position<S: Store>(open: impl Fn() -> S) {
    let store = open();
    let waiting = store.submit(Some("unserved"), named("nobody-yet", &json("null")), Schedule::default()).unwrap();
    let function = store.submit(Some("function"), TaskKind::Function, Schedule::default()).unwrap();
    assert_eq!(status(&store, &waiting)["status"], "PENDING");
    assert!(status(&store, &waiting)["queue_position"].is_null(), "a task no worker serves is not in the line");
    assert_eq!(status(&store, &function)["queue_position"], 1, "counted behind the named task, which may be served any time");
    // Another process (on Redis, a worker of another machine) registers the handler: now it is in line.
    let other = open();
    other.register_handler("nobody-yet").unwrap();
    assert_eq!(status(&store, &waiting)["queue_position"], 0);
    // That worker goes away: the task waits outside the line again.
    other.close().unwrap();
    assert!(status(&store, &waiting)["queue_position"].is_null());
}

/// Function tasks are their submitter's alone; cancel before and while running, a failure's
/// message and code, and a finish from a worker that does not hold the task.
pub fn cancel_failure_and_stale_finish<S: Store>(open: impl Fn() -> S) {
    let a = open();
    let b = open();
    assert_ne!(a.worker_id(), b.worker_id());
    let own = a.submit(Some("a-fn"), TaskKind::Function, Schedule::default()).unwrap();
    let later = a.submit(Some("a-later"), TaskKind::Function, Schedule::default()).unwrap();
    // A function task is only ever its submitter's to run (on any machine).
    assert!(b.claim_next(Some(Duration::from_millis(20))).unwrap().is_none());
    assert_eq!(a.cancel(&later).unwrap(), TaskState::Cancelled);
    assert_eq!(status(&a, &later)["error"], "cancelled before it started");
    assert_eq!(a.cancel(&later).unwrap_err().kind(), ErrorKind::InvalidState);
    let claim = a.claim_next(LONG).unwrap().unwrap();
    assert_eq!(&*claim.task_id, "a-fn");
    assert_eq!(b.finish(&own, TaskOutcome::Completed).unwrap_err().kind(), ErrorKind::InvalidState, "another worker cannot finish it");
    a.set_failure_message(&own, "the voice model crashed").unwrap();
    assert!(status(&b, &own)["error"].is_null(), "the failure message shows once it failed");
    assert_eq!(a.finish(&own, TaskOutcome::Failed(TaskFailure::Code(2))).unwrap(), TaskState::Failed);
    assert_eq!(status(&b, &own)["error"], "the voice model crashed");

    let coded = a.submit(Some("coded"), TaskKind::Function, Schedule::default()).unwrap();
    a.claim_next(LONG).unwrap().unwrap();
    assert_eq!(a.finish(&coded, TaskOutcome::Failed(TaskFailure::Code(7))).unwrap(), TaskState::Failed);
    assert_eq!(status(&b, &coded)["error"], "task function returned 7");

    let c = a.submit(Some("c"), TaskKind::Function, Schedule::default()).unwrap();
    a.claim_next(LONG).unwrap().unwrap();
    assert!(!a.is_cancel_requested(&c).unwrap());
    assert_eq!(b.cancel(&c).unwrap(), TaskState::Processing);
    assert!(a.is_cancel_requested(&c).unwrap());
    assert_eq!(status(&b, &c)["cancel_requested"], true);
    assert_eq!(a.finish(&c, TaskOutcome::Completed).unwrap(), TaskState::Cancelled);
    assert_eq!(status(&b, &c)["error"], "cancelled while running");
    assert_eq!(b.cancel(&c).unwrap_err().kind(), ErrorKind::InvalidState);
    let stats = b.stats().unwrap();
    assert_eq!((stats.failed_total, stats.cancelled_total, stats.counts.processing), (2, 2, 0));
}

/// Priorities set the claim order and the queue positions (named and function tasks
/// alike, first come first served within a priority, to the ends of the i32 range); the
/// listing keeps submission order and the stats count the pending tasks of each priority.
pub fn priorities_set_the_claim_order_and_the_queue_positions<S: Store>(open: impl Fn() -> S) {
    let store = open();
    store.register_handler("h").unwrap();
    let payload = json("null");
    for (id, priority) in [("a", 0), ("b", 0), ("urgent", 10), ("soon", 5), ("later", -3), ("urgent-2", 10)] {
        store.submit(Some(id), named("h", &payload), at(priority)).unwrap();
    }
    let function = store.submit(Some("fn-soon"), TaskKind::Function, at(5)).unwrap();
    let order = ["urgent", "urgent-2", "soon", "fn-soon", "a", "b", "later"];
    let positions: Vec<(String, u64, i64)> = order
        .iter()
        .map(|id| {
            let s = status(&store, id);
            (s["task_id"].as_str().unwrap().to_owned(), s["queue_position"].as_u64().unwrap(), s["priority"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(
        positions,
        [
            ("urgent".into(), 0, 10),
            ("urgent-2".into(), 1, 10),
            ("soon".into(), 2, 5),
            ("fn-soon".into(), 3, 5),
            ("a".into(), 4, 0),
            ("b".into(), 5, 0),
            ("later".into(), 6, -3)
        ]
    );
    assert_eq!(status(&store, &function)["priority"], 5);
    assert!(status(&store, "soon")["deadline"].is_null());
    let keys: Vec<String> =
        serde_json::from_str::<serde_json::Map<String, Value>>(&store.status_json("a").unwrap()).unwrap().keys().cloned().collect();
    let tail: Vec<&str> = keys.iter().rev().take(5).rev().map(String::as_str).collect();
    assert_eq!(tail, ["checkpoint", "priority", "deadline", "yield_requested", "yields"]);
    let by_priority: Vec<(i32, u64)> = store.stats().unwrap().pending_by_priority.iter().map(|p| (p.priority, p.pending)).collect();
    assert_eq!(by_priority, [(10, 2), (5, 2), (0, 2), (-3, 1)]);
    let listed: Vec<Value> = serde_json::from_str(&store.list_json(None).unwrap()).unwrap();
    let listed: Vec<&str> = listed.iter().map(|s| s["task_id"].as_str().unwrap()).collect();
    assert_eq!(listed, ["a", "b", "urgent", "soon", "later", "urgent-2", "fn-soon"], "listing keeps submission order");
    for id in order {
        let claim = store.claim_next(LONG).unwrap().unwrap();
        assert_eq!(&*claim.task_id, id);
        store.finish(id, TaskOutcome::Completed).unwrap();
    }
    assert!(store.claim_next(Some(Duration::ZERO)).unwrap().is_none(), "every task was claimed once");
    let extreme = store.submit(Some("max"), named("h", &payload), at(i32::MAX)).unwrap();
    store.submit(Some("min"), named("h", &payload), at(i32::MIN)).unwrap();
    assert_eq!(status(&store, &extreme)["queue_position"], 0);
    assert_eq!(status(&store, "min")["queue_position"], 1);
}

/// A cancel requested while a task runs wins over its yield, for function and named tasks:
/// the task ends CANCELLED, not back in line, and no yield is counted.
pub fn a_cancel_requested_wins_over_a_yield<S: Store>(open: impl Fn() -> S) {
    let store = open();
    store.register_handler("h").unwrap();
    let function = store.submit(Some("cancelled"), TaskKind::Function, Schedule::default()).unwrap();
    store.claim_next(Some(Duration::ZERO)).unwrap().unwrap();
    store.cancel(&function).unwrap();
    assert_eq!(store.finish(&function, TaskOutcome::Yielded).unwrap(), TaskState::Cancelled);
    let s = status(&store, &function);
    assert_eq!((s["error"].as_str(), s["yields"].as_u64()), (Some("cancelled while running"), Some(0)));

    let id = store.submit(Some("y"), named("h", &json("null")), at(0)).unwrap();
    store.claim_next(LONG).unwrap().unwrap();
    assert_eq!(store.cancel(&id).unwrap(), TaskState::Processing);
    assert_eq!(store.finish(&id, TaskOutcome::Yielded).unwrap(), TaskState::Cancelled);
    let s = status(&store, &id);
    assert_eq!((s["error"].as_str(), s["yields"].as_u64()), (Some("cancelled while running"), Some(0)));
}

/// The bound on pending tasks refuses a submit (and queues nothing) until one is claimed;
/// the caps on a task's segments and errors refuse the one past them, saying the cap.
pub fn the_queue_bound_and_the_report_caps_hold<S: Store>(open: impl Fn(&Config) -> S) {
    let config = Config { max_pending_tasks: 2, max_segments_per_task: 2, max_errors_per_task: 1, ..Config::default() };
    let store = open(&config);
    store.register_handler("h").unwrap();
    let payload = json("null");
    store.submit(Some("one"), named("h", &payload), Schedule::default()).unwrap();
    store.submit(Some("two"), named("h", &payload), Schedule::default()).unwrap();
    let full = store.submit(Some("three"), named("h", &payload), Schedule::default()).unwrap_err();
    assert_eq!(full.kind(), ErrorKind::QueueFull, "{full}");
    assert_eq!(store.submit(Some("one"), named("h", &payload), Schedule::default()).unwrap_err().kind(), ErrorKind::DuplicateId);
    assert_eq!(store.status_json("three").unwrap_err().kind(), ErrorKind::NotFound, "nothing was queued");
    store.claim_next(LONG).unwrap().unwrap();
    store.submit(Some("three"), named("h", &payload), Schedule::default()).unwrap();
    store.add_segment("one", &segment(1)).unwrap();
    store.add_segment("one", &segment(2)).unwrap();
    let capped = store.add_segment("one", &segment(3)).unwrap_err();
    assert_eq!(capped.kind(), ErrorKind::InvalidArgument);
    assert!(capped.message().contains("2 completed segments"), "{capped}");
    store.add_error("one", &SegmentError { segment_id: SegmentId::from(1), error: "x".into() }).unwrap();
    let capped = store.add_error("one", &SegmentError { segment_id: SegmentId::from(2), error: "y".into() }).unwrap_err();
    assert!(capped.message().contains("1 segment errors"), "{capped}");
    assert_eq!(status(&store, "one")["completed_segments"].as_array().unwrap().len(), 2);
}

/// Only the newest `max_retained_finished` finished tasks are kept (function and named
/// tasks alike, with their segments), while the totals count every one. Gives back the
/// store, for the checks of how each store keeps them.
pub fn retention_keeps_the_newest_finished_tasks<S: Store>(open: impl Fn(&Config) -> S) -> S {
    let config = Config { max_retained_finished: 5, event_buffer_capacity: 50, ..Config::default() };
    let store = open(&config);
    store.register_handler("h").unwrap();
    let payload = json("null");
    for i in 0..40 {
        let kind = if i % 2 == 0 { TaskKind::Function } else { named("h", &payload) };
        let id = store.submit(Some(&format!("t{i}")), kind, Schedule::default()).unwrap();
        assert_eq!(&*store.claim_next(LONG).unwrap().unwrap().task_id, &*id);
        for s in 0..20 {
            store.add_segment(&id, &segment(s)).unwrap();
        }
        store.finish(&id, TaskOutcome::Completed).unwrap();
    }
    let stats = store.stats().unwrap();
    assert_eq!((stats.counts.completed, stats.completed_total, stats.retained), (5, 40, 5));
    assert_eq!(store.status_json("t0").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.status_json("t34").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(status(&store, "t35")["completed_segments"].as_array().unwrap().len(), 20);
    assert_eq!(status(&store, "t39")["completed_segments"].as_array().unwrap().len(), 20);
    store
}
