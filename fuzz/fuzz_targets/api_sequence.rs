//! Drives the C API with arbitrary call sequences, the tasks themselves
//! calling back into it from the worker thread (progress, self-cancel,
//! deferral, waits on themselves, child submissions). After every call:
//! result codes are known codes, failures leave an error message, every
//! returned JSON is well formed, at most one task is PROCESSING, a task's
//! revision never goes back and a finished task never changes state. At the
//! end of each input every task is driven to its end (no task may be lost or
//! hang) and every user data must have been freed exactly once.
#![no_main]

mod common;

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;

use arbitrary::Arbitrary;
use common::*;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use storyflow_tasks::ffi::*;

/// Finished tasks are removed on the next submissions (threshold 0), so
/// tasks vanish under the calls that name them.
const SEQUENCE_CONFIG: &str = r#"{"cleanup_threshold_secs": 0, "max_retained_finished": 8, "event_buffer_capacity": 256}"#;
/// Most calls taken from one input, so every input runs quickly.
const MAX_CALLS: usize = 48;
const ID_POOL: [&str; 4] = ["a", "b", "c\"\u{1}", "é"];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Behaviour {
    Succeed,
    Fail(i32),
    FailWithMessage,
    Report,
    PollCancel,
    Defer,
    CancelSelf,
    WaitOnSelf,
    SubmitChild,
}

#[derive(Arbitrary, Debug)]
enum Id {
    Generated,
    Pool(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Target {
    Submitted(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Call {
    Submit { behaviour: Behaviour, id: Id },
    SubmitExternal { id: Id },
    Progress { target: Target, current: u64, total: u64, extra: Option<Vec<u8>> },
    Segment { target: Target, segment: Vec<u8>, url: Vec<u8>, duration: f64, as_json: bool },
    Error { target: Target, segment: Vec<u8>, message: Vec<u8>, as_json: bool },
    SetError { target: Target, message: Vec<u8> },
    Cancel(Target),
    IsCancelRequested(Target),
    Wait { target: Target, timeout: u8 },
    WaitChange { target: Target, after_revision: u64, timeout: u8 },
    Defer(Target),
    Finish { target: Target, code: i32, message: Option<Vec<u8>> },
    Status(Target),
    List(Option<Vec<u8>>),
    Stats,
    Events { back: u8, max_events: u32, timeout: u8 },
    ResultName(i32),
}

/// User data accepted by the library (which must free each exactly once).
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
/// Ids of tasks that tasks submitted from the worker thread.
static CHILDREN: Mutex<Vec<CString>> = Mutex::new(Vec::new());

const BEHAVIOURS: [fn(i32) -> Behaviour; 9] = [
    |_| Behaviour::Succeed,
    Behaviour::Fail,
    |_| Behaviour::FailWithMessage,
    |_| Behaviour::Report,
    |_| Behaviour::PollCancel,
    |_| Behaviour::Defer,
    |_| Behaviour::CancelSelf,
    |_| Behaviour::WaitOnSelf,
    |_| Behaviour::SubmitChild,
];

fn encode(behaviour: Behaviour) -> (u32, i32) {
    match behaviour {
        Behaviour::Succeed => (0, 0),
        Behaviour::Fail(code) => (1, code),
        Behaviour::FailWithMessage => (2, 0),
        Behaviour::Report => (3, 0),
        Behaviour::PollCancel => (4, 0),
        Behaviour::Defer => (5, 0),
        Behaviour::CancelSelf => (6, 0),
        Behaviour::WaitOnSelf => (7, 0),
        Behaviour::SubmitChild => (8, 0),
    }
}

fn ok(code: SftResult, what: &str) {
    assert_eq!(code, SftResult::SFT_OK, "{what}: {}", take(sft_last_error_message()).unwrap_or_default());
}

/// Ids of tasks whose completion another thread may have taken over (a defer
/// or finish from outside was tried): their own later calls may find them
/// finished (SFT_ERR_INVALID_STATE) or already cleaned up (SFT_ERR_NOT_FOUND).
static TAKEN_OVER: Mutex<Vec<CString>> = Mutex::new(Vec::new());

/// A call a task makes on itself: it must succeed unless its completion was taken over.
fn ok_on_self(code: SftResult, id: &CStr, what: &str) {
    let taken_over = TAKEN_OVER.lock().unwrap().iter().any(|taken| taken.as_c_str() == id);
    if !(taken_over && matches!(code, SftResult::SFT_ERR_NOT_FOUND | SftResult::SFT_ERR_INVALID_STATE)) {
        ok(code, what);
    }
}

/// The task function: does what its user data says, calling back into the library.
unsafe extern "C" fn task(task_id: *const c_char, user_data: *mut c_void) -> i32 {
    // SAFETY: the library passes its user data and a valid id for the call.
    let (data, id) = unsafe { (common::user_data(user_data), CStr::from_ptr(task_id)) };
    let behaviour = BEHAVIOURS[data.behaviour as usize](data.argument);
    // SAFETY: valid NUL-terminated strings and out-pointers for every call.
    unsafe {
        match behaviour {
            Behaviour::Succeed => 0,
            Behaviour::Fail(code) => code,
            Behaviour::FailWithMessage => {
                ok_on_self(sft_set_task_error(id.as_ptr(), c"it went \"wrong\"\n".as_ptr()), id, "set error");
                7
            }
            Behaviour::Report => {
                ok_on_self(sft_update_task_progress(id.as_ptr(), 1, 2, c"{\"current_segment_id\": 1}".as_ptr()), id, "progress");
                ok_on_self(
                    sft_add_completed_segment_from_json(id.as_ptr(), c"{\"segment_id\":1,\"audio_url\":\"/a.wav\",\"duration\":1.5}".as_ptr()),
                    id,
                    "segment",
                );
                ok_on_self(sft_add_error_from_json(id.as_ptr(), c"{\"segment_id\":\"2\",\"error\":\"no voice\"}".as_ptr()), id, "error");
                0
            }
            Behaviour::PollCancel => {
                for _ in 0..200 {
                    let mut requested = false;
                    ok_on_self(sft_is_cancel_requested(id.as_ptr(), &mut requested), id, "poll");
                    if requested {
                        return 1;
                    }
                    std::thread::yield_now();
                }
                0
            }
            Behaviour::Defer => {
                ok_on_self(sft_defer_task(id.as_ptr()), id, "defer");
                0
            }
            Behaviour::CancelSelf => {
                ok_on_self(sft_cancel_task(id.as_ptr()), id, "cancel self");
                0
            }
            Behaviour::WaitOnSelf => {
                let mut out = null_mut();
                let code = sft_wait_task(id.as_ptr(), SFT_WAIT_FOREVER, &mut out);
                if code != SftResult::SFT_OK {
                    assert!(out.is_null());
                    ok_on_self(if code == SftResult::SFT_ERR_INVALID_STATE { SftResult::SFT_OK } else { code }, id, "wait on self");
                } else {
                    // Only a task already finished from outside has a status to wait for.
                    take(out);
                    ok_on_self(SftResult::SFT_ERR_INVALID_STATE, id, "a task waiting on itself must be refused");
                }
                0
            }
            Behaviour::SubmitChild => {
                let child = new_user_data(0, 0);
                let mut out = null_mut();
                ok(sft_submit_task(Some(task), child, Some(free_user_data), null(), &mut out), "child submit");
                ACCEPTED.fetch_add(1, SeqCst);
                CHILDREN.lock().unwrap().push(CString::new(take(out).unwrap()).unwrap());
                0
            }
        }
    }
}

fn timeout_ms(choice: u8) -> i64 {
    match choice % 5 {
        0 | 1 => 0,
        2 => 1,
        3 => 2,
        _ => -2, // invalid: refused
    }
}

/// What the checks remember of each task: (revision, state) by (id, created_at).
type Seen = HashMap<(String, u64), (u64, String)>;

struct Run {
    submitted: Vec<CString>,
    seen: Seen,
    last_seq: u64,
}

impl Run {
    fn target(&self, target: &Target) -> CString {
        match target {
            Target::Submitted(i) if !self.submitted.is_empty() => self.submitted[*i as usize % self.submitted.len()].clone(),
            Target::Submitted(_) => c"none".into(),
            Target::Raw(bytes) => c_string(bytes),
        }
    }

    fn id(&self, id: &Id) -> Option<CString> {
        match id {
            Id::Generated => None,
            Id::Pool(i) => Some(CString::new(ID_POOL[*i as usize % ID_POOL.len()]).unwrap()),
            Id::Raw(bytes) => Some(c_string(bytes)),
        }
    }

    /// Checks one status: its shape, and that it did not go back in time.
    fn observe(&mut self, status: &Value) {
        check_status_shape(status);
        let key = (status["task_id"].as_str().unwrap().to_owned(), status["created_at"].as_f64().unwrap().to_bits());
        let revision = status["revision"].as_u64().unwrap();
        let state = status["status"].as_str().unwrap().to_owned();
        if let Some((seen_revision, seen_state)) = self.seen.get(&key) {
            assert!(revision >= *seen_revision, "revision went back: {seen_revision} -> {status}");
            let finished = !["PENDING", "PROCESSING"].contains(&seen_state.as_str());
            assert!(!finished || *seen_state == state, "a finished task changed state: {seen_state} -> {status}");
        }
        self.seen.insert(key, (revision, state));
    }

    fn observe_text(&mut self, text: Option<String>) {
        if let Some(text) = text {
            let status = json(&text);
            self.observe(&status);
        }
    }

    fn observe_list(&mut self, text: &str) {
        let list = json(text);
        let statuses = list.as_array().expect("a list is an array");
        let running = statuses.iter().filter(|s| s["status"] == "PROCESSING").count();
        assert!(running <= 1, "{running} tasks PROCESSING at once");
        for status in statuses {
            self.observe(status);
        }
    }

    fn submit(&mut self, behaviour: Option<Behaviour>, id: &Id) -> SftResult {
        let id = self.id(id);
        let id_ptr = id.as_ref().map_or(null(), |id| id.as_ptr());
        let mut out = null_mut();
        let code = match behaviour {
            Some(behaviour) => {
                let (kind, argument) = encode(behaviour);
                let data = new_user_data(kind, argument);
                // SAFETY: valid pointers; ownership of `data` as documented.
                let code = unsafe { sft_submit_task(Some(task), data, Some(free_user_data), id_ptr, &mut out) };
                match code {
                    SftResult::SFT_OK => {
                        ACCEPTED.fetch_add(1, SeqCst);
                    }
                    _ => free_refused(data),
                }
                code
            }
            // SAFETY: valid pointers for the call.
            None => unsafe { sft_submit_external_task(id_ptr, &mut out) },
        };
        assert_eq!(code == SftResult::SFT_OK, !out.is_null(), "an id comes back exactly on success");
        if let Some(new_id) = take(out) {
            if let Some(id) = &id {
                assert_eq!(new_id.as_bytes(), id.to_bytes(), "submit returned another id");
            }
            self.submitted.push(CString::new(new_id).unwrap());
        }
        code
    }

    fn call(&mut self, call: &Call) -> SftResult {
        let text = |bytes: &[u8]| c_string(bytes);
        // SAFETY: every pointer below is a valid NUL-terminated string, NULL
        // where the API allows it, or a valid out-pointer.
        unsafe {
            match call {
                Call::Submit { behaviour, id } => self.submit(Some(*behaviour), id),
                Call::SubmitExternal { id } => self.submit(None, id),
                Call::Progress { target, current, total, extra } => {
                    let extra = extra.as_deref().map(text);
                    let extra_ptr = extra.as_ref().map_or(null(), |e| e.as_ptr());
                    sft_update_task_progress(self.target(target).as_ptr(), *current, *total, extra_ptr)
                }
                // The wire-object forms get the segment bytes as the id's JSON text, verbatim.
                Call::Segment { target, segment, url, duration, as_json: true } => {
                    let url = serde_json::to_string(&String::from_utf8_lossy(url)).unwrap();
                    let segment = String::from_utf8_lossy(text(segment).to_bytes()).into_owned();
                    let record = format!("{{\"segment_id\":{segment},\"audio_url\":{url},\"duration\":{duration:?}}}");
                    sft_add_completed_segment_from_json(self.target(target).as_ptr(), text(record.as_bytes()).as_ptr())
                }
                Call::Segment { target, segment, url, duration, as_json: false } => {
                    sft_add_completed_segment(self.target(target).as_ptr(), text(segment).as_ptr(), text(url).as_ptr(), *duration)
                }
                Call::Error { target, segment, message, as_json: true } => {
                    let message = serde_json::to_string(&String::from_utf8_lossy(message)).unwrap();
                    let segment = String::from_utf8_lossy(text(segment).to_bytes()).into_owned();
                    let record = format!("{{\"segment_id\":{segment},\"error\":{message}}}");
                    sft_add_error_from_json(self.target(target).as_ptr(), text(record.as_bytes()).as_ptr())
                }
                Call::Error { target, segment, message, as_json: false } => {
                    sft_add_error(self.target(target).as_ptr(), text(segment).as_ptr(), text(message).as_ptr())
                }
                Call::SetError { target, message } => sft_set_task_error(self.target(target).as_ptr(), text(message).as_ptr()),
                Call::Cancel(target) => sft_cancel_task(self.target(target).as_ptr()),
                Call::IsCancelRequested(target) => {
                    let mut requested = false;
                    sft_is_cancel_requested(self.target(target).as_ptr(), &mut requested)
                }
                Call::Wait { target, timeout } => {
                    let mut out = null_mut();
                    let code = sft_wait_task(self.target(target).as_ptr(), timeout_ms(*timeout), &mut out);
                    let status = take(out);
                    assert_eq!(code == SftResult::SFT_OK, status.is_some());
                    if let Some(status) = &status {
                        let state = json(status)["status"].as_str().unwrap().to_owned();
                        assert!(!["PENDING", "PROCESSING"].contains(&state.as_str()), "wait returned an unfinished task");
                    }
                    self.observe_text(status);
                    code
                }
                Call::WaitChange { target, after_revision, timeout } => {
                    let mut out = null_mut();
                    let code = sft_wait_task_change(self.target(target).as_ptr(), *after_revision, timeout_ms(*timeout), &mut out);
                    let status = take(out);
                    assert_eq!(code == SftResult::SFT_OK, status.is_some());
                    self.observe_text(status);
                    code
                }
                Call::Defer(target) => {
                    let id = self.target(target);
                    // Recorded before the call: the task's own next call may come before it returns.
                    TAKEN_OVER.lock().unwrap().push(id.clone());
                    sft_defer_task(id.as_ptr())
                }
                Call::Finish { target, code, message } => {
                    let message = message.as_deref().map(text);
                    let id = self.target(target);
                    // Recorded before the call: the task's own next call may come before it returns.
                    TAKEN_OVER.lock().unwrap().push(id.clone());
                    sft_finish_task(id.as_ptr(), *code, message.as_ref().map_or(null(), |m| m.as_ptr()))
                }
                Call::Status(target) => {
                    let status = take(sft_get_task_status(self.target(target).as_ptr()));
                    let found = status.is_some();
                    self.observe_text(status);
                    if found {
                        SftResult::SFT_OK
                    } else {
                        SftResult::SFT_ERR_NOT_FOUND
                    }
                }
                Call::List(filter) => {
                    let filter = filter.as_deref().map(text);
                    let mut out = null_mut();
                    let code = sft_list_tasks(filter.as_ref().map_or(null(), |f| f.as_ptr()), &mut out);
                    if let Some(list) = take(out) {
                        self.observe_list(&list);
                    }
                    code
                }
                Call::Stats => {
                    let stats = json(&take(sft_get_stats()).expect("stats"));
                    assert!(stats["counts"].is_object() && stats["submitted_total"].is_u64(), "{stats}");
                    SftResult::SFT_OK
                }
                Call::Events { back, max_events, timeout } => {
                    let after = self.last_seq.saturating_sub(u64::from(*back));
                    let mut out = null_mut();
                    let code = sft_wait_events(after, *max_events, timeout_ms(*timeout), &mut out);
                    if let Some(events) = take(out) {
                        let events = json(&events);
                        let events = events.as_array().expect("events are an array");
                        assert!(!events.is_empty() && events.len() <= *max_events as usize);
                        let mut previous = after;
                        for event in events {
                            let seq = event["seq"].as_u64().expect("seq");
                            assert!(seq > previous, "event seqs out of order: {previous} then {seq}");
                            previous = seq;
                        }
                        self.last_seq = self.last_seq.max(previous);
                    }
                    code
                }
                Call::ResultName(code) => {
                    let name = CStr::from_ptr(sft_result_name(*code)).to_str().unwrap();
                    let expected = ["SFT_OK", "SFT_ERR_NOT_FOUND", "SFT_ERR_INVALID_ARGUMENT", "SFT_ERR_DUPLICATE_ID", "SFT_ERR_QUEUE_FULL", "SFT_ERR_SHUT_DOWN", "SFT_ERR_INVALID_STATE", "SFT_ERR_TIMEOUT", "SFT_ERR_INTERNAL"];
                    assert_eq!(name, usize::try_from(*code).ok().and_then(|i| expected.get(i)).copied().unwrap_or("SFT_UNKNOWN_RESULT"));
                    SftResult::SFT_OK
                }
            }
        }
    }

    /// Drives every task of this input to its end; a task that never ends is a bug.
    fn drain(&mut self) {
        for _round in 0..20_000 {
            let mut ids = self.submitted.clone();
            ids.extend(CHILDREN.lock().unwrap().iter().cloned());
            let mut unfinished = None;
            for id in &ids {
                let Some(current) = status(id) else { continue };
                self.observe(&current);
                // SAFETY: valid NUL-terminated ids.
                unsafe {
                    match current["status"].as_str().unwrap() {
                        "PENDING" => {
                            sft_cancel_task(id.as_ptr());
                        }
                        "PROCESSING" => {
                            sft_cancel_task(id.as_ptr());
                            TAKEN_OVER.lock().unwrap().push(id.clone());
                            sft_finish_task(id.as_ptr(), 0, null());
                        }
                        _ => continue,
                    }
                }
                if status(id).is_some_and(|s| ["PENDING", "PROCESSING"].contains(&s["status"].as_str().unwrap())) {
                    unfinished = Some(id.clone());
                }
            }
            let Some(id) = unfinished else {
                // A deferred task can be finished before its function returned and
                // freed its user data; once the worker reached a later task, it has.
                let sentinel = submit_external(None);
                wait_until_started(&sentinel);
                // SAFETY: a valid id.
                ok(unsafe { sft_finish_task(sentinel.as_ptr(), 0, null()) }, "finish sentinel");
                return;
            };
            // SAFETY: a valid id; NULL out-pointer allowed.
            unsafe { sft_wait_task(id.as_ptr(), 5, null_mut()) };
        }
        panic!("tasks never finished: deadlock or a lost task");
    }
}

fuzz_target!(|calls: Vec<Call>| {
    configure_once(SEQUENCE_CONFIG);
    let frees_before = FREES.load(SeqCst);
    let accepted_before = ACCEPTED.load(SeqCst);
    let mut run = Run { submitted: Vec::new(), seen: Seen::new(), last_seq: sft_last_event_seq() };
    for call in calls.iter().take(MAX_CALLS) {
        let code = run.call(call);
        assert!((code as i32) >= 0 && (code as i32) <= 8, "unknown result code");
        if code != SftResult::SFT_OK {
            let message = take(sft_last_error_message()).expect("a failed call left no message");
            assert!(!message.is_empty());
        }
    }
    run.drain();
    CHILDREN.lock().unwrap().clear();
    TAKEN_OVER.lock().unwrap().clear();
    let accepted = ACCEPTED.load(SeqCst) - accepted_before;
    assert_eq!(FREES.load(SeqCst) - frees_before, accepted, "user data freed {} times for {accepted} accepted tasks", FREES.load(SeqCst) - frees_before);
});
