//! Fault tests. Each scenario runs in a subprocess of its own, where a crash,
//! an abort or a hang (a deadlock, cut off after `CHILD_TIME_LIMIT`) is the
//! failure being ruled out, and where shutdown and configuration, which are
//! process-wide and final, cannot disturb the other tests.
//!
//! The Rust scenarios re-run this test binary with `SFT_FAULT_SCENARIO` set to
//! the scenario's name; the child runs the scenario's body through the C ABI
//! (and the core, for Rust panics) and must print `SCENARIO <name> OK`. The C
//! scenarios (tests/faults/c) are compiled with `cc` against the real shared
//! library: `$STORYFLOW_TASKS_LIB` if set (the Makefile sets it), otherwise
//! target/release/libstoryflow_tasks.so, which must be newer than src/.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use storyflow_tasks::ffi::*;
use storyflow_tasks::{TaskContext, TaskFailure};

/// Longer than any scenario needs on a loaded 2-core machine; past it, the child is hung.
const CHILD_TIME_LIMIT: Duration = Duration::from_secs(120);

// ----- running a scenario in a child process --------------------------------------------

/// Runs `command` to its end or kills it at `CHILD_TIME_LIMIT`; returns (exit code, stdout, stderr).
fn run_bounded(command: Command, what: &str) -> (Option<i32>, String, String) {
    run_within(command, what, CHILD_TIME_LIMIT)
}

/// As [`run_bounded`], with its own time limit.
fn run_within(mut command: Command, what: &str, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let started = Instant::now();
    loop {
        if child.try_wait().expect("child status").is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{what} hung for {limit:?} (deadlock?)\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stdout).into(), String::from_utf8_lossy(&output.stderr).into())
}

/// In the parent: runs this binary's test `name` in a child and checks it ended cleanly.
/// In the child: runs `body`.
fn scenario(name: &str, body: fn()) {
    if std::env::var("SFT_FAULT_SCENARIO").as_deref() == Ok(name) {
        body();
        println!("SCENARIO {name} OK");
        return;
    }
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([name, "--exact", "--nocapture", "--test-threads=1"]).env("SFT_FAULT_SCENARIO", name);
    let (code, stdout, stderr) = run_bounded(command, name);
    assert!(
        code == Some(0) && stdout.contains(&format!("SCENARIO {name} OK")),
        "scenario {name} did not end cleanly (exit code {code:?}; None means killed by a signal)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

// ----- small helpers over the C ABI -----------------------------------------------------------

fn take(ptr: *mut c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a library string, freed once here.
    let text = unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_owned();
    // SAFETY: as above.
    unsafe { sft_string_free(ptr) };
    Some(text)
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("malformed JSON ({e}): {text}"))
}

fn status(id: &CStr) -> Option<Value> {
    // SAFETY: a valid id.
    take(unsafe { sft_get_task_status(id.as_ptr()) }).map(|s| parse(&s))
}

fn last_error() -> String {
    take(sft_last_error_message()).unwrap_or_default()
}

/// Waits for the task's end (or `timeout_ms`) and returns the result with the final status.
fn wait(id: &CStr, timeout_ms: i64) -> (SftResult, Option<Value>) {
    let mut out = null_mut();
    // SAFETY: valid id and out-pointer.
    let code = unsafe { sft_wait_task(id.as_ptr(), timeout_ms, &mut out) };
    (code, take(out).map(|s| parse(&s)))
}

fn final_state(id: &CStr) -> String {
    let (code, status) = wait(id, 60_000);
    assert_eq!(code, SftResult::SFT_OK, "waiting for {id:?}: {}", last_error());
    status.unwrap()["status"].as_str().unwrap().to_owned()
}

fn configure(json: &str) {
    let json = CString::new(json).unwrap();
    // SAFETY: a valid string.
    assert_eq!(unsafe { sft_configure(json.as_ptr()) }, SftResult::SFT_OK, "{}", last_error());
}

/// Blocks until the task left PENDING.
fn wait_started(id: &CStr) {
    let mut revision = 0;
    loop {
        let mut out = null_mut();
        // SAFETY: valid id and out-pointer.
        let code = unsafe { sft_wait_task_change(id.as_ptr(), revision, 60_000, &mut out) };
        assert_eq!(code, SftResult::SFT_OK, "{}", last_error());
        let status = parse(&take(out).unwrap());
        if status["status"] != "PENDING" {
            return;
        }
        revision = status["revision"].as_u64().unwrap();
    }
}

/// User data that counts its frees and catches a second one.
struct Tracked {
    frees: Arc<AtomicU32>,
    /// What the task function does with it.
    action: fn(&CStr, &Tracked) -> i32,
    gate: Arc<AtomicBool>,
}

fn tracked(action: fn(&CStr, &Tracked) -> i32, gate: &Arc<AtomicBool>) -> (*mut c_void, Arc<AtomicU32>) {
    let frees = Arc::new(AtomicU32::new(0));
    let data = Box::new(Tracked { frees: frees.clone(), action, gate: gate.clone() });
    (Box::into_raw(data).cast(), frees)
}

unsafe extern "C" fn run_tracked(task_id: *const c_char, user_data: *mut c_void) -> i32 {
    // SAFETY: the library passes a valid id and the user data given at submission.
    let (id, data) = unsafe { (CStr::from_ptr(task_id), &*user_data.cast::<Tracked>()) };
    (data.action)(id, data)
}

unsafe extern "C" fn free_tracked(user_data: *mut c_void) {
    // SAFETY: the pointer from `tracked`, handed back by the library.
    let data = unsafe { Box::from_raw(user_data.cast::<Tracked>()) };
    assert_eq!(data.frees.fetch_add(1, SeqCst), 0, "user data freed twice");
}

/// Submits a C-ABI task running `action`; returns the id and the free counter.
fn submit(id: &str, action: fn(&CStr, &Tracked) -> i32, gate: &Arc<AtomicBool>) -> (CString, Arc<AtomicU32>) {
    let (data, frees) = tracked(action, gate);
    let id = CString::new(id).unwrap();
    // SAFETY: valid pointers; `data` is the library's on SFT_OK.
    let code = unsafe { sft_submit_task(Some(run_tracked), data, Some(free_tracked), id.as_ptr(), null_mut()) };
    assert_eq!(code, SftResult::SFT_OK, "submit {id:?}: {}", last_error());
    (id, frees)
}

fn succeed(_: &CStr, _: &Tracked) -> i32 {
    0
}

/// Blocks until its gate opens, ignoring cancellation: a task that does not return in time.
fn block_until_gate(_: &CStr, data: &Tracked) -> i32 {
    while !data.gate.load(SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
    0
}

// ----- panics ------------------------------------------------------------------------------------------

/// A value whose destructor panics: user data whose free goes wrong.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("user data destructor panicked");
    }
}

unsafe extern "C" fn counting_listener(_event: *const c_char, calls: *mut c_void) {
    // SAFETY: the user data is the counter given to sft_set_event_listener.
    unsafe { &*calls.cast::<AtomicUsize>() }.fetch_add(1, SeqCst);
}

fn panics_are_contained() {
    let manager = process_manager();
    let body_panics = |text: &'static str| move |_: &TaskContext<'_>| -> Result<(), TaskFailure> { panic!("{text}") };
    let text_panic = manager.submit(Some("text-panic"), body_panics("boom")).unwrap();
    let value_panic = manager.submit(Some("value-panic"), |_: &TaskContext<'_>| -> Result<(), TaskFailure> { std::panic::panic_any(42u8) }).unwrap();
    let drop_panics = {
        let data = PanicsOnDrop;
        manager.submit(Some("drop-panic"), move |_: &TaskContext<'_>| -> Result<(), TaskFailure> { let _data = &data; Ok(()) }).unwrap()
    };
    let deferred_then_panics = manager
        .submit(Some("deferred-panic"), |context: &TaskContext<'_>| -> Result<(), TaskFailure> {
            context.defer().unwrap();
            context.manager().update_progress(context.task_id(), 1, 2, None).unwrap();
            panic!("after deferring")
        })
        .unwrap();
    // Pending behind them, then cancelled: its destructor panics on the cancelling thread.
    let cancelled_drop_panics = {
        let data = PanicsOnDrop;
        manager.submit(Some("cancelled-drop-panic"), move |_: &TaskContext<'_>| -> Result<(), TaskFailure> { let _data = &data; Ok(()) }).unwrap()
    };
    assert!(manager.cancel(&cancelled_drop_panics).is_ok(), "cancelling a task whose user data panics when freed");
    // A listener that panics (a Rust one, on the core API) must not take the call with it.
    let listener_calls = Arc::new(AtomicUsize::new(0));
    let calls = listener_calls.clone();
    manager.set_listener(Some(Arc::new(move |_| {
        calls.fetch_add(1, SeqCst);
        panic!("listener panicked")
    })));
    let after = manager.submit(Some("after-the-panics"), |_: &TaskContext<'_>| -> Result<(), TaskFailure> { Ok(()) }).unwrap();
    let wait_for = |id: &str| {
        manager.wait(id, Some(Duration::from_secs(60))).unwrap();
        manager.status(id).unwrap()
    };
    let status = wait_for(&text_panic);
    assert_eq!((status.status.as_str(), status.error.as_deref()), ("FAILED", Some("task panicked: boom")));
    let status = wait_for(&value_panic);
    assert_eq!(status.error.as_deref(), Some("task panicked: a non-text panic payload"));
    let status = wait_for(&drop_panics);
    assert_eq!(
        (status.status.as_str(), status.error.as_deref()),
        ("FAILED", Some("task panicked: user data destructor panicked")),
        "a panic while freeing the user data fails the task"
    );
    let status = wait_for(&deferred_then_panics);
    assert_eq!((status.status.as_str(), status.error.as_deref()), ("FAILED", Some("task panicked: after deferring")));
    assert_eq!(wait_for(&after).status.as_str(), "COMPLETED", "the worker survived every panic");
    // "submitted" and "started" of the last task reach it before its end; "finished" may come later.
    assert!(listener_calls.load(SeqCst) >= 2, "the panicking listener kept being called");
    manager.set_listener(None);

    // The C ABI still answers, and a C listener replacing the Rust one works.
    let calls = Box::leak(Box::new(AtomicUsize::new(0)));
    // SAFETY: a plain function and a counter that lives for the rest of the process.
    unsafe { sft_set_event_listener(Some(counting_listener), (calls as *const AtomicUsize).cast_mut().cast()) };
    let gate = Arc::new(AtomicBool::new(true));
    let (id, frees) = submit("c-after-panics", succeed, &gate);
    assert_eq!(final_state(&id), "COMPLETED");
    assert_eq!(frees.load(SeqCst), 1);
    assert!(calls.load(SeqCst) >= 2);
}

#[test]
fn a_panicking_task_listener_or_destructor_is_contained() {
    scenario("a_panicking_task_listener_or_destructor_is_contained", panics_are_contained);
}

// ----- tasks that abort their own work ---------------------------------------------------------------

fn cancel_self_after_two_segments(id: &CStr, _: &Tracked) -> i32 {
    // SAFETY: valid strings for every call.
    unsafe {
        for segment in [c"{\"segment_id\":1,\"audio_url\":\"/a.wav\",\"duration\":1.0}", c"{\"segment_id\":2,\"audio_url\":\"/a.wav\",\"duration\":1.0}"] {
            assert_eq!(sft_add_completed_segment_from_json(id.as_ptr(), segment.as_ptr()), SftResult::SFT_OK);
        }
        assert_eq!(sft_cancel_task(id.as_ptr()), SftResult::SFT_OK);
        let mut requested = false;
        assert_eq!(sft_is_cancel_requested(id.as_ptr(), &mut requested), SftResult::SFT_OK);
        assert!(requested);
    }
    1
}

fn give_up_with_a_message(id: &CStr, _: &Tracked) -> i32 {
    // SAFETY: valid strings.
    unsafe {
        assert_eq!(sft_add_error_from_json(id.as_ptr(), c"{\"segment_id\":3,\"error\":\"voice not found\"}".as_ptr()), SftResult::SFT_OK);
        assert_eq!(sft_set_task_error(id.as_ptr(), c"gave up after segment 3".as_ptr()), SftResult::SFT_OK);
    }
    -1
}

fn finish_self_without_deferring(id: &CStr, _: &Tracked) -> i32 {
    // SAFETY: a valid id; NULL message allowed.
    assert_eq!(unsafe { sft_finish_task(id.as_ptr(), 0, null()) }, SftResult::SFT_ERR_INVALID_STATE);
    // SAFETY: as above.
    assert_eq!(unsafe { sft_wait_task(id.as_ptr(), SFT_WAIT_FOREVER, null_mut()) }, SftResult::SFT_ERR_INVALID_STATE);
    0
}

fn defer_and_finish_from_a_helper_before_returning(id: &CStr, _: &Tracked) -> i32 {
    // SAFETY: a valid id.
    assert_eq!(unsafe { sft_defer_task(id.as_ptr()) }, SftResult::SFT_OK);
    let id = id.to_owned();
    let helper = std::thread::spawn(move || {
        // SAFETY: valid strings.
        unsafe { sft_finish_task(id.as_ptr(), 9, c"engine stopped".as_ptr()) }
    });
    assert_eq!(helper.join().unwrap(), SftResult::SFT_OK);
    0 // ignored: the task was already finished
}

fn tasks_abort_their_own_work() {
    let gate = Arc::new(AtomicBool::new(true));
    let (cancelled, cancelled_frees) = submit("cancels-itself", cancel_self_after_two_segments, &gate);
    let (gave_up, gave_up_frees) = submit("gives-up", give_up_with_a_message, &gate);
    let (finishes, _) = submit("finishes-itself", finish_self_without_deferring, &gate);
    let (deferred, deferred_frees) = submit("defers", defer_and_finish_from_a_helper_before_returning, &gate);
    let (after, _) = submit("after", succeed, &gate);
    assert_eq!(final_state(&after), "COMPLETED");
    let status = status(&cancelled).unwrap();
    assert_eq!(status["status"], "CANCELLED");
    assert_eq!(status["error"], "cancelled while running");
    assert_eq!(status["completed_segments"].as_array().unwrap().len(), 2, "work done before the abort is kept");
    let status = self::status(&gave_up).unwrap();
    assert_eq!((status["status"].as_str(), status["error"].as_str()), (Some("FAILED"), Some("gave up after segment 3")));
    assert_eq!(final_state(&finishes), "COMPLETED");
    let status = self::status(&deferred).unwrap();
    assert_eq!((status["status"].as_str(), status["error"].as_str()), (Some("FAILED"), Some("engine stopped")));
    for frees in [cancelled_frees, gave_up_frees, deferred_frees] {
        assert_eq!(frees.load(SeqCst), 1);
    }
}

#[test]
fn a_task_that_aborts_its_own_work_ends_cleanly() {
    scenario("a_task_that_aborts_its_own_work_ends_cleanly", tasks_abort_their_own_work);
}

// ----- a task that outlives shutdown's timeout ------------------------------------------------------------

fn task_outlives_the_shutdown_timeout() {
    let gate = Arc::new(AtomicBool::new(false));
    let (blocked, blocked_frees) = submit("blocked", block_until_gate, &gate);
    wait_started(&blocked);
    let queued: Vec<_> = (0..3).map(|i| submit(&format!("queued-{i}"), succeed, &gate)).collect();

    assert_eq!(sft_shutdown(100), SftResult::SFT_ERR_TIMEOUT, "the blocked task cannot finish in 100 ms");
    for (id, frees) in &queued {
        let status = status(id).unwrap();
        assert_eq!((status["status"].as_str(), status["error"].as_str()), (Some("CANCELLED"), Some("cancelled by shutdown")));
        assert_eq!(frees.load(SeqCst), 1, "a task cancelled by shutdown keeps its user data");
    }
    let status = status(&blocked).unwrap();
    assert_eq!((status["status"].as_str(), status["cancel_requested"].as_bool()), (Some("PROCESSING"), Some(true)));
    // Closed to new work, open for reads and waits.
    let (data, frees) = tracked(succeed, &gate);
    // SAFETY: valid pointers; refused, so `data` stays ours.
    let code = unsafe { sft_submit_task(Some(run_tracked), data, Some(free_tracked), null(), null_mut()) };
    assert_eq!(code, SftResult::SFT_ERR_SHUT_DOWN);
    assert_eq!(frees.load(SeqCst), 0, "refused user data is not freed by the library");
    // SAFETY: refused, still ours.
    unsafe { free_tracked(data) };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { sft_submit_external_task(null(), &mut null_mut()) }, SftResult::SFT_ERR_SHUT_DOWN);
    assert_eq!(wait(&blocked, 50).0, SftResult::SFT_ERR_TIMEOUT);
    let mut list = null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { sft_list_tasks(c"CANCELLED".as_ptr(), &mut list) }, SftResult::SFT_OK);
    assert_eq!(parse(&take(list).unwrap()).as_array().unwrap().len(), 3);
    assert!(take(sft_get_stats()).is_some());

    gate.store(true, SeqCst);
    assert_eq!(final_state(&blocked), "CANCELLED", "it was asked to cancel by shutdown");
    assert_eq!(blocked_frees.load(SeqCst), 1);
    assert_eq!(sft_shutdown(SFT_WAIT_FOREVER), SftResult::SFT_OK);
    assert_eq!(sft_shutdown(0), SftResult::SFT_OK, "shutdown again is harmless");
}

#[test]
fn a_task_that_outlives_the_shutdown_timeout_keeps_the_process_sound() {
    scenario("a_task_that_outlives_the_shutdown_timeout_keeps_the_process_sound", task_outlives_the_shutdown_timeout);
}

fn exit_while_a_task_never_returns() {
    let gate = Arc::new(AtomicBool::new(false));
    let (blocked, _) = submit("never-returns", block_until_gate, &gate);
    for i in 0..4 {
        submit(&format!("behind-{i}"), succeed, &gate);
    }
    wait_started(&blocked);
    assert_eq!(sft_shutdown(10), SftResult::SFT_ERR_TIMEOUT);
    // The test harness now returns and the process exits with the worker inside the task.
}

#[test]
fn the_process_exits_cleanly_while_a_task_never_returns() {
    scenario("the_process_exits_cleanly_while_a_task_never_returns", exit_while_a_task_never_returns);
}

// ----- a listener that calls back into the library -----------------------------------------------------

static REENTRANT_EVENTS: AtomicUsize = AtomicUsize::new(0);
static WAIT_FROM_WORKER: Mutex<Option<SftResult>> = Mutex::new(None);
static SHUTDOWN_FROM_LISTENER: Mutex<Option<SftResult>> = Mutex::new(None);

unsafe extern "C" fn reentrant_listener(event_json: *const c_char, _user_data: *mut c_void) {
    REENTRANT_EVENTS.fetch_add(1, SeqCst);
    // SAFETY: the library passes a valid event for the call.
    let event = parse(unsafe { CStr::from_ptr(event_json) }.to_str().unwrap());
    let id = CString::new(event["task_id"].as_str().unwrap()).unwrap();
    let (kind, seq) = (event["kind"].as_str().unwrap(), event["seq"].as_u64().unwrap());
    // SAFETY: valid strings and out-pointers for every call.
    unsafe {
        // Reads of every kind, from whatever thread the event came on.
        if let Some(status) = status(&id) {
            assert_eq!(status["task_id"], event["task_id"]);
        }
        assert!(take(sft_get_stats()).is_some());
        let mut out = null_mut();
        assert_eq!(sft_list_tasks(null(), &mut out), SftResult::SFT_OK);
        take(out);
        assert!(sft_last_event_seq() >= seq);
        assert_eq!(sft_wait_events(seq - 1, 1, 0, &mut out), SftResult::SFT_OK, "the event is in the feed");
        take(out);
        match (id.to_str().unwrap(), kind) {
            ("cancel-me", "started") => assert_eq!(sft_cancel_task(id.as_ptr()), SftResult::SFT_OK),
            ("wait-on-me", "started") => {
                // On the worker thread, waiting for the task it runs would deadlock: refused instead.
                *WAIT_FROM_WORKER.lock().unwrap() = Some(sft_wait_task(id.as_ptr(), SFT_WAIT_FOREVER, null_mut()));
            }
            ("spawner", "finished") => {
                let code = sft_submit_task(Some(run_tracked), tracked(succeed, &Arc::new(AtomicBool::new(true))).0, Some(free_tracked), c"spawned".as_ptr(), null_mut());
                assert_eq!(code, SftResult::SFT_OK);
            }
            ("progress", "started") => {
                // Nested: this call makes a "progress" event, delivered re-entrantly on this thread.
                assert_eq!(sft_update_task_progress(id.as_ptr(), 1, 2, c"{\"from\": \"listener\"}".as_ptr()), SftResult::SFT_OK);
            }
            ("quiet", "submitted") => assert_eq!(sft_set_event_listener(None, null_mut()), SftResult::SFT_OK),
            ("last", "finished") => *SHUTDOWN_FROM_LISTENER.lock().unwrap() = Some(sft_shutdown(0)),
            _ => {}
        }
    }
}

fn listener_calls_back_into_the_library() {
    // SAFETY: a plain function without user data.
    assert_eq!(unsafe { sft_set_event_listener(Some(reentrant_listener), null_mut()) }, SftResult::SFT_OK);
    let gate = Arc::new(AtomicBool::new(true));
    let (cancel_me, _) = submit("cancel-me", block_until_cancelled, &gate);
    let (wait_on_me, _) = submit("wait-on-me", succeed, &gate);
    let (progress, _) = submit("progress", succeed, &gate);
    let (spawner, _) = submit("spawner", succeed, &gate);
    assert_eq!(final_state(&cancel_me), "CANCELLED");
    assert_eq!(final_state(&wait_on_me), "COMPLETED");
    assert_eq!(*WAIT_FROM_WORKER.lock().unwrap(), Some(SftResult::SFT_ERR_INVALID_STATE));
    assert_eq!(final_state(&progress), "COMPLETED");
    assert_eq!(status(&progress).unwrap()["progress"]["from"], "listener");
    assert_eq!(final_state(&spawner), "COMPLETED");
    // The listener hears "finished" just after the status shows it: the child may take a moment to appear.
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(c"spawned").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(final_state(c"spawned"), "COMPLETED", "a task submitted from the listener ran");

    // From inside itself, the listener removes itself: no later event reaches it.
    let (quiet, _) = submit("quiet", succeed, &gate);
    assert_eq!(final_state(&quiet), "COMPLETED");
    let heard = REENTRANT_EVENTS.load(SeqCst);
    let (unheard, _) = submit("unheard", succeed, &gate);
    assert_eq!(final_state(&unheard), "COMPLETED");
    assert_eq!(REENTRANT_EVENTS.load(SeqCst), heard, "the removed listener was still called");

    // Shutdown from the listener, on the worker thread: it does all but wait.
    // SAFETY: as above.
    assert_eq!(unsafe { sft_set_event_listener(Some(reentrant_listener), null_mut()) }, SftResult::SFT_OK);
    let (last, _) = submit("last", succeed, &gate);
    assert_eq!(final_state(&last), "COMPLETED");
    let deadline = Instant::now() + Duration::from_secs(60);
    while SHUTDOWN_FROM_LISTENER.lock().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(*SHUTDOWN_FROM_LISTENER.lock().unwrap(), Some(SftResult::SFT_OK));
    assert_eq!(sft_shutdown(SFT_WAIT_FOREVER), SftResult::SFT_OK);
}

fn block_until_cancelled(id: &CStr, _: &Tracked) -> i32 {
    loop {
        let mut requested = false;
        // SAFETY: valid id and out-pointer.
        assert_eq!(unsafe { sft_is_cancel_requested(id.as_ptr(), &mut requested) }, SftResult::SFT_OK);
        if requested {
            return 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_listener_that_calls_back_into_the_library_neither_deadlocks_nor_crashes() {
    scenario("a_listener_that_calls_back_into_the_library_neither_deadlocks_nor_crashes", listener_calls_back_into_the_library);
}

// ----- waits on tasks that get cleaned up ------------------------------------------------------------------

fn waits_on_tasks_that_get_cleaned_up() {
    configure(r#"{"cleanup_threshold_secs": 0}"#);
    let gate = Arc::new(AtomicBool::new(false));
    let (blocker, _) = submit("blocker", block_until_gate, &gate);
    wait_started(&blocker);
    let targets: Vec<CString> = (0..8).map(|i| submit(&format!("target-{i}"), succeed, &gate).0).collect();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let waiters: Vec<_> = (0..16)
        .map(|i| {
            let id = targets[i % targets.len()].clone();
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                let outcome = if i % 2 == 0 {
                    wait(&id, SFT_WAIT_FOREVER)
                } else {
                    // Long-poll change by change until the end.
                    let mut revision = 0;
                    loop {
                        let mut out = null_mut();
                        // SAFETY: valid id and out-pointer.
                        let code = unsafe { sft_wait_task_change(id.as_ptr(), revision, SFT_WAIT_FOREVER, &mut out) };
                        let status = take(out).map(|s| parse(&s));
                        match &status {
                            Some(s) if s["status"] == "PENDING" || s["status"] == "PROCESSING" => {
                                revision = s["revision"].as_u64().unwrap();
                            }
                            _ => break (code, status),
                        }
                    }
                };
                outcomes.lock().unwrap().push(outcome);
            })
        })
        .collect();
    // Some waiters are blocked now; cancel every target, then let submissions clean them up.
    std::thread::sleep(Duration::from_millis(50));
    for id in &targets {
        // SAFETY: a valid id.
        assert_eq!(unsafe { sft_cancel_task(id.as_ptr()) }, SftResult::SFT_OK);
    }
    gate.store(true, SeqCst);
    for i in 0..8 {
        let (id, _) = submit(&format!("cleaner-{i}"), succeed, &gate);
        // With threshold 0 an instant task may be gone already: even its own submission cleans up.
        assert!(matches!(wait(&id, 60_000).0, SftResult::SFT_OK | SftResult::SFT_ERR_NOT_FOUND));
    }
    for waiter in waiters {
        waiter.join().expect("a waiter failed");
    }
    for (code, status) in outcomes.lock().unwrap().iter() {
        match code {
            SftResult::SFT_OK => assert_eq!(status.as_ref().unwrap()["status"], "CANCELLED"),
            // A waiter that started after the cleanup finds nothing, at once.
            SftResult::SFT_ERR_NOT_FOUND => assert!(status.is_none()),
            other => panic!("a wait ended with {other:?}"),
        }
    }
    for id in &targets {
        assert!(status(id).is_none(), "threshold 0: {id:?} should be gone");
        assert_eq!(wait(id, SFT_WAIT_FOREVER).0, SftResult::SFT_ERR_NOT_FOUND);
    }
}

#[test]
fn waits_on_tasks_that_get_cleaned_up_return() {
    scenario("waits_on_tasks_that_get_cleaned_up_return", waits_on_tasks_that_get_cleaned_up);
}

// ----- C programs against the real shared library ---------------------------------------------------------

/// The shared library to link: `$STORYFLOW_TASKS_LIB` (the Makefile sets it),
/// else target/release/libstoryflow_tasks.so. `cargo test` does not rebuild
/// the cdylib, so a library older than the sources is refused rather than tested.
fn shared_library() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let library = std::env::var_os("STORYFLOW_TASKS_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/libstoryflow_tasks.so"));
    let built = std::fs::metadata(&library)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("no shared library at {} (run `make build`, or set STORYFLOW_TASKS_LIB)", library.display()));
    let newest_source = newest_modification(&root.join("src"));
    assert!(built >= newest_source, "{} is older than src/: run `make build` first", library.display());
    library
}

fn newest_modification(dir: &Path) -> std::time::SystemTime {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                newest_modification(&path)
            } else {
                std::fs::metadata(&path).and_then(|m| m.modified()).unwrap()
            }
        })
        .max()
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// Compiles tests/faults/c/<name>.c against the real library; returns the program's path.
fn compile_c(name: &str) -> PathBuf {
    let library = shared_library();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults");
    std::fs::create_dir_all(&out_dir).unwrap();
    // The library's SONAME is libstoryflow_tasks.so.0: give the loader that name beside the program.
    for link in ["libstoryflow_tasks.so", "libstoryflow_tasks.so.0"] {
        let link = out_dir.join(link);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(std::fs::canonicalize(&library).unwrap(), &link).unwrap();
    }
    let program = out_dir.join(name);
    let output = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-pthread", "-o"])
        .arg(&program)
        .arg(root.join(format!("tests/faults/c/{name}.c")))
        .arg("-I")
        .arg(root.join("include"))
        .arg(format!("-L{}", out_dir.display()))
        .arg(format!("-Wl,-rpath,{}", out_dir.display()))
        .arg("-lstoryflow_tasks")
        .output()
        .expect("cc runs");
    assert!(output.status.success(), "compiling {name}.c failed:\n{}", String::from_utf8_lossy(&output.stderr));
    program
}

/// Regression: a child forked while another thread was setting a lazily
/// initialised static (the empty progress JSON, set on the first status read)
/// hung on its own first status read. That first read races the first fork,
/// so the program runs many times (about 40 ms each): one run in ten hung
/// before the fix, so 40 runs catch it with 98% odds.
#[test]
fn fork_during_activity_gives_children_a_fresh_manager_and_spares_the_parent() {
    let program = compile_c("fork_during_activity");
    for run in 1..=40 {
        let (code, stdout, stderr) = run_within(Command::new(&program), "fork_during_activity", Duration::from_secs(30));
        assert!(
            code == Some(0) && stdout.contains(" 0 failed"),
            "fork_during_activity run {run}: exit code {code:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
}

#[test]
fn a_c_process_exits_cleanly_with_the_worker_inside_a_task() {
    let program = compile_c("exit_mid_task");
    for mode in ["return", "exit", "in-task"] {
        let mut command = Command::new(&program);
        command.arg(mode);
        let (code, stdout, stderr) = run_bounded(command, "exit_mid_task");
        assert_eq!(code, Some(0), "exit_mid_task {mode}: exit code {code:?} (None: killed by a signal)\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }
}
