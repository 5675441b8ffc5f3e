//! Named handlers in the in-memory manager.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::TaskContext;

const PATIENCE: Option<Duration> = Some(Duration::from_secs(60));

fn status_value(manager: &TaskManager, id: &str) -> Value {
    serde_json::from_str(&manager.status_json(id).expect("task exists")).unwrap()
}

/// A handler that sends each payload it runs (and its task id) to the returned receiver.
fn recording_handler() -> (HandlerFn, mpsc::Receiver<(String, String)>) {
    let (sent, received) = mpsc::channel();
    let sent = Mutex::new(sent);
    let handler: HandlerFn = Arc::new(move |context: &TaskContext<'_>, payload: &RawValue| {
        lock(&sent).send((context.task_id().to_owned(), payload.get().to_owned())).unwrap();
        Ok(())
    });
    (handler, received)
}

#[test]
fn every_status_has_handler_attempt_checkpoint_then_the_schedule_after_cancel_requested() {
    let manager = TaskManager::new();
    let id = manager.submit(None, |_: &TaskContext<'_>| Ok(())).unwrap();
    let status = manager.wait(&id, PATIENCE).unwrap();
    let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(&status).unwrap().keys().cloned().collect();
    let tail: Vec<&str> = keys.iter().rev().take(8).rev().map(String::as_str).collect();
    assert_eq!(tail, ["cancel_requested", "handler", "attempt", "checkpoint", "priority", "deadline", "yield_requested", "yields"]);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!((status["handler"].clone(), status["attempt"].clone(), status["checkpoint"].clone()), (Value::Null, 1.into(), Value::Null));
}

#[test]
fn a_named_task_without_a_handler_waits_without_holding_up_the_tasks_behind_it() {
    let manager = TaskManager::new();
    let first = manager.submit_named("narrate", Some(r#"{"chapter": 1}"#), Some("n1")).unwrap();
    let second = manager.submit_named("narrate", None, Some("n2")).unwrap();
    let plain = manager.submit(None, |_: &TaskContext<'_>| Ok(())).unwrap();
    // The function task behind them runs although no handler is registered.
    manager.wait(&plain, PATIENCE).unwrap();
    for id in [&first, &second] {
        let status = status_value(&manager, id);
        assert_eq!(status["status"], "PENDING");
        assert_eq!(status["queue_position"], Value::Null, "a parked task is not in the queue");
        assert_eq!(status["handler"], "narrate");
        assert_eq!(status["attempt"], 0);
    }
    assert_eq!(manager.stats().queue_depth, 2);

    // Registering puts them back at the head, ahead of a task queued after them, in order.
    let (open, body) = {
        let (open, opened) = mpsc::channel::<()>();
        (open, move |_: &TaskContext<'_>| {
            let _ = opened.recv();
            Ok(())
        })
    };
    let gate = manager.submit(None, body).unwrap();
    manager.wait_for_change(&gate, 1, PATIENCE).unwrap();
    let later = manager.submit_named("narrate", Some("3"), Some("n3")).unwrap();
    let (handler, ran) = recording_handler();
    manager.register_handler("narrate", handler).unwrap();
    assert_eq!(status_value(&manager, &first)["queue_position"], 0);
    assert_eq!(status_value(&manager, &second)["queue_position"], 1);
    assert_eq!(status_value(&manager, &later)["queue_position"], 2);
    open.send(()).unwrap();
    let order: Vec<(String, String)> = (0..3).map(|_| ran.recv_timeout(Duration::from_secs(60)).unwrap()).collect();
    assert_eq!(order, [("n1".into(), r#"{"chapter":1}"#.into()), ("n2".into(), "null".into()), ("n3".into(), "3".into())]);
    let done = status_value(&manager, &manager.wait(&later, PATIENCE).map(|_| later.clone()).unwrap());
    assert_eq!((done["status"].clone(), done["attempt"].clone()), ("COMPLETED".into(), 1.into()));
}

#[test]
fn a_handler_failure_or_panic_fails_the_task_and_registering_twice_is_refused() {
    let manager = TaskManager::new();
    let failing: HandlerFn = Arc::new(|context: &TaskContext<'_>, _: &RawValue| {
        context.manager().set_failure_message(context.task_id(), "no voice").unwrap();
        Err(TaskFailure::Code(3))
    });
    manager.register_handler("fail", failing).unwrap();
    let panicking: HandlerFn = Arc::new(|_: &TaskContext<'_>, _: &RawValue| panic!("boom"));
    manager.register_handler("panic", panicking.clone()).unwrap();
    assert_eq!(manager.register_handler("panic", panicking).unwrap_err().kind(), ErrorKind::DuplicateId);
    assert_eq!(
        manager.register_handler("", Arc::new(|_: &TaskContext<'_>, _: &RawValue| Ok(()))).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let failed = manager.submit_named("fail", None, None).unwrap();
    let panicked = manager.submit_named("panic", None, None).unwrap();
    let failed: Value = serde_json::from_str(&manager.wait(&failed, PATIENCE).unwrap()).unwrap();
    assert_eq!((failed["status"].clone(), failed["error"].clone()), ("FAILED".into(), "no voice".into()));
    let panicked: Value = serde_json::from_str(&manager.wait(&panicked, PATIENCE).unwrap()).unwrap();
    assert_eq!(panicked["status"], "FAILED");
    assert!(panicked["error"].as_str().unwrap().contains("boom"));
}

#[test]
fn bad_payloads_and_checkpoints_are_refused_and_a_final_checkpoint_is_final() {
    let manager = TaskManager::new();
    for bad in ["{", "1e400", r#""\ud800""#] {
        assert_eq!(manager.submit_named("h", Some(bad), None).unwrap_err().kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    let checkpointing: HandlerFn = Arc::new(|context: &TaskContext<'_>, _: &RawValue| {
        let manager = context.manager();
        manager.set_checkpoint(context.task_id(), r#"{"next_sentence": 4}"#).map_err(|e| TaskFailure::Message(e.to_string()))?;
        assert_eq!(manager.set_checkpoint(context.task_id(), "{").unwrap_err().kind(), ErrorKind::InvalidArgument);
        Ok(())
    });
    manager.register_handler("h", checkpointing).unwrap();
    let id = manager.submit_named("h", None, None).unwrap();
    let done: Value = serde_json::from_str(&manager.wait(&id, PATIENCE).unwrap()).unwrap();
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["checkpoint"], serde_json::json!({"next_sentence": 4}));
    let revision = done["revision"].clone();
    assert_eq!(manager.set_checkpoint(&id, "5").unwrap_err().kind(), ErrorKind::InvalidState);
    assert_eq!(status_value(&manager, &id)["revision"], revision);
    assert_eq!(manager.set_checkpoint("nobody", "5").unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn a_runner_serves_a_name_with_the_assignment_filled_and_its_close_unregisters_it() {
    let manager = TaskManager::new();
    let runner = manager.register_runner();
    manager.add_runner_handler(runner, "speak").unwrap();
    assert_eq!(manager.add_runner_handler(runner, "speak").unwrap_err().kind(), ErrorKind::DuplicateId);
    let id = manager.submit_named("speak", Some(r#"{"text":"hi"}"#), Some("s1")).unwrap();
    let assignment = manager.next_assignment(runner, PATIENCE).unwrap();
    assert_eq!(
        serde_json::to_string(&assignment).unwrap(),
        r#"{"task_id":"s1","run":true,"handler":"speak","payload":{"text":"hi"},"attempt":1,"checkpoint":null,"yields":0}"#
    );
    assert_eq!(status_value(&manager, &id)["status"], "PROCESSING");
    // Inside the task: waiting for it would deadlock.
    assert_eq!(manager.wait(&id, PATIENCE).unwrap_err().kind(), ErrorKind::InvalidState);
    manager.finish_runner_task(runner, &id, Ok(())).unwrap();
    assert_eq!(status_value(&manager, &id)["status"], "COMPLETED");

    manager.close_runner(runner, PATIENCE).unwrap();
    let waiting = manager.submit_named("speak", None, None).unwrap();
    let plain = manager.submit(None, |_: &TaskContext<'_>| Ok(())).unwrap();
    manager.wait(&plain, PATIENCE).unwrap();
    assert_eq!(status_value(&manager, &waiting)["status"], "PENDING");
    // A parked task can be cancelled, and shutdown cancels the rest.
    let cancelled = manager.submit_named("speak", None, None).unwrap();
    let plain = manager.submit(None, |_: &TaskContext<'_>| Ok(())).unwrap();
    manager.wait(&plain, PATIENCE).unwrap();
    assert_eq!(manager.cancel(&cancelled).unwrap(), TaskState::Cancelled);
    assert_eq!(manager.stats().queue_depth, 1);
    manager.shutdown(PATIENCE).unwrap();
    assert_eq!(status_value(&manager, &waiting)["status"], "CANCELLED");
}
