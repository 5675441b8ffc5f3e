//! Priorities, cooperative yield and deadlines in the memory store, one manager per test.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::{CompletedSegment, TaskContext};

/// Long enough never to expire in a passing run: a wait that returns Ok was woken by the change.
const PATIENCE: Option<Duration> = Some(Duration::from_secs(60));

fn status(manager: &TaskManager, id: &str) -> TaskStatus {
    manager.status(id).expect("task exists")
}

/// A task that blocks until the returned sender is used (or dropped), already started.
fn running_gate(manager: &Arc<TaskManager>) -> (mpsc::Sender<()>, TaskId) {
    let (open, opened) = mpsc::channel::<()>();
    let id = manager
        .submit(Some("gate"), move |_: &TaskContext<'_>| {
            let _ = opened.recv();
            Ok(())
        })
        .unwrap();
    manager.wait_for_change(&id, 1, PATIENCE).unwrap();
    (open, id)
}

/// A body that records its task id in `order` when it runs.
fn records(order: &Arc<Mutex<Vec<String>>>) -> impl FnOnce(&TaskContext<'_>) -> Result<(), TaskFailure> + Send + 'static {
    let order = order.clone();
    move |context: &TaskContext<'_>| {
        order.lock().unwrap().push(context.task_id().to_owned());
        Ok(())
    }
}

fn at(priority: i32) -> Schedule {
    Schedule::with_priority(priority)
}

#[test]
fn higher_priorities_run_first_fifo_within_one_and_positions_count_what_is_ahead() {
    let manager = TaskManager::new();
    let (open, gate) = running_gate(&manager);
    let order = Arc::new(Mutex::new(Vec::new()));
    for (id, priority) in [("a", 0), ("b", 0), ("urgent", 10), ("soon", 5), ("later", -3), ("urgent-2", 10)] {
        manager.submit_with(Some(id), at(priority), records(&order)).unwrap();
    }
    let positions: Vec<(String, Option<u64>, i32)> = ["urgent", "urgent-2", "soon", "a", "b", "later"]
        .iter()
        .map(|id| {
            let status = status(&manager, id);
            (status.task_id, status.queue_position, status.priority)
        })
        .collect();
    assert_eq!(
        positions,
        [
            ("urgent".into(), Some(0), 10),
            ("urgent-2".into(), Some(1), 10),
            ("soon".into(), Some(2), 5),
            ("a".into(), Some(3), 0),
            ("b".into(), Some(4), 0),
            ("later".into(), Some(5), -3)
        ]
    );
    let stats = manager.stats();
    let by_priority: Vec<(i32, u64)> = stats.pending_by_priority.iter().map(|p| (p.priority, p.pending)).collect();
    assert_eq!(by_priority, [(10, 2), (5, 1), (0, 2), (-3, 1)]);
    assert_eq!(stats.queue_depth, 6);
    // Listing keeps submission order and shows each priority.
    let listed: Vec<TaskStatus> = serde_json::from_str(&manager.list_json(None)).unwrap();
    let listed: Vec<(&str, i32)> = listed.iter().map(|s| (s.task_id.as_str(), s.priority)).collect();
    assert_eq!(listed, [("gate", 0), ("a", 0), ("b", 0), ("urgent", 10), ("soon", 5), ("later", -3), ("urgent-2", 10)]);
    // A cancel out of the middle moves only those behind it.
    manager.cancel("soon").unwrap();
    assert_eq!(status(&manager, "a").queue_position, Some(2));
    assert_eq!(status(&manager, "urgent-2").queue_position, Some(1));
    drop(open);
    manager.wait(&gate, PATIENCE).unwrap();
    manager.wait("later", PATIENCE).unwrap();
    assert_eq!(*order.lock().unwrap(), ["urgent", "urgent-2", "a", "b", "later"]);
    assert!(manager.stats().pending_by_priority.is_empty());
}

#[test]
fn the_running_task_is_asked_to_yield_only_while_a_higher_priority_task_waits() {
    let manager = TaskManager::new();
    let (asked, answers) = mpsc::channel::<bool>();
    let (go_on, next) = mpsc::channel::<()>();
    let next = Mutex::new(next);
    manager
        .submit_resumable(Some("book"), at(1), move |context: &TaskContext<'_>| {
            for _ in 0..4 {
                asked.send(context.is_yield_requested()).unwrap();
                next.lock().unwrap().recv().unwrap();
            }
            Ok(())
        })
        .unwrap();
    assert!(!answers.recv().unwrap());
    manager.submit_external_with(Some("same"), at(1)).unwrap();
    manager.submit_external_with(Some("lower"), at(0)).unwrap();
    go_on.send(()).unwrap();
    assert!(!answers.recv().unwrap(), "only a higher priority asks for a yield");
    assert!(!status(&manager, "book").yield_requested);
    manager.submit_external_with(Some("higher"), at(2)).unwrap();
    assert!(manager.is_yield_requested("book").unwrap());
    assert!(status(&manager, "book").yield_requested);
    assert!(!manager.is_yield_requested("higher").unwrap(), "a pending task is never asked");
    go_on.send(()).unwrap();
    assert!(answers.recv().unwrap());
    manager.cancel("higher").unwrap();
    go_on.send(()).unwrap();
    assert!(!answers.recv().unwrap(), "the urgent task is gone again");
    go_on.send(()).unwrap();
    // A task that never yields is not stopped: it completes, and the others follow.
    assert_eq!(serde_json::from_str::<TaskStatus>(&manager.wait("book", PATIENCE).unwrap()).unwrap().status, TaskState::Completed);
    assert_eq!(manager.is_yield_requested("nobody").unwrap_err().kind(), ErrorKind::NotFound);
    manager.shutdown(Some(Duration::ZERO)).unwrap_or(());
}

#[test]
fn a_yielded_task_goes_back_to_the_head_of_its_priority_keeping_what_it_did() {
    let manager = TaskManager::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let (started, first_start) = mpsc::channel::<()>();
    let (urgent_in, urgent_submitted) = mpsc::channel::<()>();
    let urgent_submitted = Mutex::new(urgent_submitted);
    let book_order = order.clone();
    manager
        .submit_resumable(Some("book"), Schedule::default(), move |context: &TaskContext<'_>| {
            let manager = context.manager();
            let done = status(manager, context.task_id()).completed_segments.len() as i64;
            book_order.lock().unwrap().push(format!("book from {done}"));
            for sentence in done..3 {
                if context.is_yield_requested() {
                    context.yield_task().unwrap();
                    // What a yielding run returns does not matter: it is a yield.
                    return Err(TaskFailure::Code(9));
                }
                let segment = CompletedSegment { segment_id: sentence.into(), audio_url: format!("/a/{sentence}.wav"), duration: 0.2 };
                manager.add_completed_segment(context.task_id(), &segment).unwrap();
                manager.set_checkpoint(context.task_id(), &format!("{{\"next\": {}}}", sentence + 1)).unwrap();
                if sentence == 0 {
                    started.send(()).unwrap();
                    urgent_submitted.lock().unwrap().recv().unwrap();
                }
            }
            Ok(())
        })
        .unwrap();
    first_start.recv().unwrap();
    manager.submit_with(Some("next-chapter"), Schedule::default(), records(&order)).unwrap();
    manager.submit_with(Some("preview"), at(5), records(&order)).unwrap();
    let yielded_at = manager.last_event_seq();
    urgent_in.send(()).unwrap();
    manager.wait("next-chapter", PATIENCE).unwrap();
    assert_eq!(*order.lock().unwrap(), ["book from 0", "preview", "book from 1", "next-chapter"]);
    let book = status(&manager, "book");
    assert_eq!(book.status, TaskState::Completed);
    assert_eq!((book.yields, book.attempt, book.completed_segments.len()), (1, 1, 3));
    assert_eq!(book.checkpoint, Some(serde_json::json!({"next": 3})));
    let kinds: Vec<(String, EventKind, TaskState)> = manager
        .wait_events(yielded_at, 100, PATIENCE)
        .unwrap()
        .into_iter()
        .map(|event| (event.task_id.to_string(), event.kind, event.status))
        .filter(|(id, kind, _)| id == "book" && matches!(kind, EventKind::Yielded | EventKind::Started | EventKind::Finished))
        .collect();
    assert_eq!(
        kinds,
        [
            ("book".into(), EventKind::Yielded, TaskState::Pending),
            ("book".into(), EventKind::Started, TaskState::Processing),
            ("book".into(), EventKind::Finished, TaskState::Completed)
        ]
    );
}

#[test]
fn a_yielded_task_waits_ahead_of_its_priority_and_behind_higher_ones() {
    let manager = TaskManager::new();
    let (started, has_started) = mpsc::channel::<()>();
    let (go_on, queued) = mpsc::channel::<()>();
    let queued = Mutex::new(queued);
    let runs = Arc::new(Mutex::new(0));
    let counted = runs.clone();
    manager
        .submit_resumable(Some("book"), Schedule::default(), move |context: &TaskContext<'_>| {
            *counted.lock().unwrap() += 1;
            if *counted.lock().unwrap() == 1 {
                started.send(()).unwrap();
                queued.lock().unwrap().recv().unwrap();
                context.yield_task().unwrap(); // unasked: a task may yield whenever it likes
            }
            Ok(())
        })
        .unwrap();
    has_started.recv().unwrap();
    // Holds the worker once the book is back in the queue.
    let (open, opened) = mpsc::channel::<()>();
    let gate = manager
        .submit_with(Some("gate"), at(9), move |_: &TaskContext<'_>| {
            let _ = opened.recv();
            Ok(())
        })
        .unwrap();
    manager.submit_external_with(Some("chapter-2"), Schedule::default()).unwrap();
    manager.submit_external_with(Some("urgent"), at(3)).unwrap();
    go_on.send(()).unwrap();
    manager.wait_for_change(&gate, 1, PATIENCE).unwrap();
    let book = status(&manager, "book");
    assert_eq!((book.status, book.yields, book.attempt, book.started_at), (TaskState::Pending, 1, 1, None));
    assert_eq!(book.queue_position, Some(1), "behind the higher priority, ahead of its own");
    assert_eq!(status(&manager, "chapter-2").queue_position, Some(2));
    manager.cancel("urgent").unwrap();
    manager.cancel("chapter-2").unwrap();
    drop(open);
    let done: TaskStatus = serde_json::from_str(&manager.wait("book", PATIENCE).unwrap()).unwrap();
    assert_eq!((done.status, done.yields, done.attempt), (TaskState::Completed, 1, 1));
    assert_eq!(*runs.lock().unwrap(), 2);
}

#[test]
fn only_a_running_resumable_task_can_yield_and_cancel_wins_over_a_yield() {
    let manager = TaskManager::new();
    let (refused, refusal) = mpsc::channel::<ErrorKind>();
    manager
        .submit(Some("once"), move |context: &TaskContext<'_>| {
            refused.send(context.yield_task().unwrap_err().kind()).unwrap();
            Ok(())
        })
        .unwrap();
    assert_eq!(refusal.recv().unwrap(), ErrorKind::InvalidState);
    manager.wait("once", PATIENCE).unwrap();
    assert_eq!(manager.yield_task("once").unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(manager.yield_task("nobody").unwrap_err().kind(), ErrorKind::NotFound);
    manager
        .submit_resumable(Some("cancelled"), Schedule::default(), |context: &TaskContext<'_>| {
            context.manager().cancel(context.task_id()).unwrap();
            context.yield_task().unwrap();
            Ok(())
        })
        .unwrap();
    let done: TaskStatus = serde_json::from_str(&manager.wait("cancelled", PATIENCE).unwrap()).unwrap();
    assert_eq!((done.status, done.yields, done.error.as_deref()), (TaskState::Cancelled, 0, Some("cancelled while running")));
}

#[test]
fn runner_external_and_named_tasks_yield_and_are_handed_over_again() {
    let manager = TaskManager::new();
    let runner = manager.register_runner();
    manager.submit_to_runner_with(runner, Some("run"), Schedule::default()).unwrap();
    let first = manager.next_assignment(runner, PATIENCE).unwrap();
    assert_eq!((first.attempt, first.yields), (1, 0));
    manager.set_checkpoint("run", r#"{"sentence": 4}"#).unwrap();
    manager.yield_task("run").unwrap();
    manager.finish_runner_task(runner, "run", Ok(())).unwrap();
    // Back in the queue, and with nothing ahead of it, handed over again at once.
    assert_eq!(status(&manager, "run").yields, 1);
    let again = manager.next_assignment(runner, PATIENCE).unwrap();
    assert_eq!((&*again.task_id, again.run, again.attempt, again.yields), ("run", true, 1, 1));
    assert_eq!(again.checkpoint.map(|c| c.get().to_owned()).as_deref(), Some(r#"{"sentence":4}"#));
    manager.finish_runner_task(runner, "run", Ok(())).unwrap();
    assert_eq!(status(&manager, "run").status, TaskState::Completed);

    // A yielded runner task cancelled before it resumed comes back to the runner not to run.
    manager.submit_to_runner(runner, Some("dropped")).unwrap();
    manager.next_assignment(runner, PATIENCE).unwrap();
    let (open, opened) = mpsc::channel::<()>();
    let gate = manager
        .submit_with(Some("gate"), at(1), move |_: &TaskContext<'_>| {
            let _ = opened.recv();
            Ok(())
        })
        .unwrap();
    manager.yield_task("dropped").unwrap();
    manager.finish_runner_task(runner, "dropped", Ok(())).unwrap();
    // The gate, of a higher priority, runs before it could be handed over again.
    manager.cancel("dropped").unwrap();
    let released = manager.next_assignment(runner, PATIENCE).unwrap();
    assert_eq!((&*released.task_id, released.run), ("dropped", false));
    drop(open);
    manager.wait(&gate, PATIENCE).unwrap();

    manager.submit_external_with(Some("outside"), Schedule::default()).unwrap();
    manager.wait_for_change("outside", 1, PATIENCE).unwrap();
    manager.yield_task("outside").unwrap();
    manager.finish("outside", Err(TaskFailure::Code(1))).unwrap();
    let restarted: TaskStatus = serde_json::from_str(&manager.wait_for_change("outside", 3, PATIENCE).unwrap()).unwrap();
    assert_eq!((restarted.status, restarted.yields), (TaskState::Processing, 1));
    manager.finish("outside", Ok(())).unwrap();
    assert_eq!(status(&manager, "outside").status, TaskState::Completed);

    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let handler: HandlerFn = Arc::new(move |context: &TaskContext<'_>, payload: &RawValue| {
        assert_eq!(payload.get(), r#"{"chapter":2}"#);
        let mut calls = counted.lock().unwrap();
        *calls += 1;
        if *calls == 1 {
            context.yield_task().unwrap();
        }
        Ok(())
    });
    manager.register_handler("narrate", handler).unwrap();
    manager.submit_named_with("narrate", Some(r#"{"chapter": 2}"#), Some("named"), at(2)).unwrap();
    let done = status_of_wait(&manager, "named");
    assert_eq!((done.status, done.yields, done.attempt, done.priority), (TaskState::Completed, 1, 1, 2));
    assert_eq!(*calls.lock().unwrap(), 2);
}

fn status_of_wait(manager: &TaskManager, id: &str) -> TaskStatus {
    serde_json::from_str(&manager.wait(id, PATIENCE).unwrap()).unwrap()
}

#[test]
fn a_pending_task_past_its_deadline_fails_while_the_worker_is_busy() {
    let manager = TaskManager::new();
    let (open, gate) = running_gate(&manager);
    let ran = Arc::new(Mutex::new(false));
    let flag = ran.clone();
    let soon = Schedule { priority: 0, deadline: Some(unix_now() + 0.05) };
    manager
        .submit_with(Some("late"), soon, move |_: &TaskContext<'_>| {
            *flag.lock().unwrap() = true;
            Ok(())
        })
        .unwrap();
    assert_eq!(status(&manager, "late").deadline, soon.deadline);
    let late = status_of_wait(&manager, "late");
    assert_eq!((late.status, late.error.as_deref()), (TaskState::Failed, Some(DEADLINE_PASSED_PENDING)));
    assert_eq!(status(&manager, &gate).status, TaskState::Processing, "failed while the worker was still busy");
    // A deadline already past at submission is accepted and fails at once.
    let past = Schedule { priority: 0, deadline: Some(1.0) };
    manager.submit_external_with(Some("skewed"), past).unwrap();
    let skewed = status(&manager, "skewed");
    assert_eq!((skewed.status, skewed.error.as_deref()), (TaskState::Failed, Some(DEADLINE_PASSED_PENDING)));
    drop(open);
    manager.wait(&gate, PATIENCE).unwrap();
    assert!(!*ran.lock().unwrap());
    assert_eq!(manager.stats().counts.failed, 2);
    let bad = Schedule { priority: 0, deadline: Some(f64::NAN) };
    assert_eq!(manager.submit_external_with(None, bad).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn a_running_task_past_its_deadline_is_asked_to_cancel_and_ends_cancelled_saying_so() {
    let manager = TaskManager::new();
    let soon = Schedule { priority: 0, deadline: Some(unix_now() + 0.05) };
    manager
        .submit_resumable(Some("long"), soon, |context: &TaskContext<'_>| {
            while !context.is_cancel_requested() {
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
        .unwrap();
    let done = status_of_wait(&manager, "long");
    assert_eq!((done.status, done.error.as_deref(), done.cancel_requested), (TaskState::Cancelled, Some(DEADLINE_PASSED_RUNNING), true));
    // A yield past the deadline ends it too.
    let soon = Schedule { priority: 0, deadline: Some(unix_now() + 0.05) };
    manager
        .submit_resumable(Some("yields-late"), soon, |context: &TaskContext<'_>| {
            while !context.is_cancel_requested() {
                std::thread::sleep(Duration::from_millis(2));
            }
            context.yield_task().unwrap();
            Ok(())
        })
        .unwrap();
    let done = status_of_wait(&manager, "yields-late");
    assert_eq!((done.status, done.error.as_deref(), done.yields), (TaskState::Cancelled, Some(DEADLINE_PASSED_RUNNING), 0));
}

#[test]
fn a_shutdown_cancels_pending_tasks_with_deadlines_too() {
    let manager = TaskManager::new();
    let (open, gate) = running_gate(&manager);
    manager.submit_external_with(Some("waits"), at(0)).unwrap();
    let deadline = Schedule { priority: 0, deadline: Some(unix_now() + 3600.0) };
    manager.submit_external_with(Some("far"), deadline).unwrap();
    manager.shutdown(Some(Duration::ZERO)).unwrap_or(());
    drop(open);
    manager.wait(&gate, PATIENCE).unwrap();
    assert_eq!(status(&manager, "far").status, TaskState::Cancelled);
    assert_eq!(status(&manager, "waits").status, TaskState::Cancelled);
}
