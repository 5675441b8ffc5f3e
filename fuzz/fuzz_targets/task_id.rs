//! Fuzzes task ids through the C API: submit with an arbitrary id, then every
//! call that takes a task id. The id must round-trip exactly (status JSON and
//! the returned id), be refused with SFT_ERR_INVALID_ARGUMENT when it is not
//! UTF-8, empty or over the limit, and user data must be freed exactly once
//! after SFT_OK and never after a refusal.
#![no_main]

mod common;

use std::ptr::null_mut;
use std::sync::atomic::Ordering::SeqCst;

use common::*;
use libfuzzer_sys::fuzz_target;
use storyflow_tasks::ffi::*;

/// The default `max_task_id_bytes`.
const MAX_ID_BYTES: usize = 256;

fuzz_target!(|data: &[u8]| {
    configure_once(FUZZ_CONFIG);
    let id = c_string(data);
    let text = std::str::from_utf8(id.to_bytes()).ok();
    let valid = text.is_some_and(|t| !t.is_empty() && t.len() <= MAX_ID_BYTES);
    let existed = status(&id).is_some();
    if existed {
        assert!(valid, "an invalid id is in the registry");
    }

    let frees_before = FREES.load(SeqCst);
    let user_data = new_user_data(0, 0);
    let mut out = null_mut();
    // SAFETY: valid pointers for the call; user data ownership as documented.
    let result = unsafe { sft_submit_task(Some(instant_task), user_data, Some(free_user_data), id.as_ptr(), &mut out) };
    let expected = match (valid, existed) {
        (false, _) => SftResult::SFT_ERR_INVALID_ARGUMENT,
        (true, true) => SftResult::SFT_ERR_DUPLICATE_ID,
        (true, false) => SftResult::SFT_OK,
    };
    assert_eq!(result, expected, "submit of {id:?}");
    if result != SftResult::SFT_OK {
        assert!(out.is_null(), "an id was returned with an error");
        assert!(!last_error().is_empty());
        assert_eq!(FREES.load(SeqCst), frees_before, "refused user data was freed by the library");
        free_refused(user_data);
    } else {
        assert_eq!(take(out).as_deref(), text, "the returned id differs from the one given");
        let mut final_status = null_mut();
        // SAFETY: valid pointers for the call.
        let waited = unsafe { sft_wait_task(id.as_ptr(), 60_000, &mut final_status) };
        assert_eq!(waited, SftResult::SFT_OK, "waiting for {id:?}");
        let final_status = json(&take(final_status).unwrap());
        check_status_shape(&final_status);
        assert_eq!(final_status["task_id"].as_str(), text, "the id did not round-trip through the status JSON");
        assert_eq!(final_status["status"], "COMPLETED");
        assert_eq!(FREES.load(SeqCst), frees_before + 1, "user data not freed exactly once");
    }

    // Every other call that takes a task id answers with a code and leaves no trace.
    let known = status(&id).is_some();
    // Lookups refuse only what is not UTF-8; an empty or oversized id is simply not found.
    let on_known = |code: SftResult, expected_if_known: SftResult| {
        let expected = match (text.is_some(), known) {
            (false, _) => SftResult::SFT_ERR_INVALID_ARGUMENT,
            (true, false) => SftResult::SFT_ERR_NOT_FOUND,
            (true, true) => expected_if_known,
        };
        assert_eq!(code, expected, "call on {id:?}");
    };
    let message = c"m";
    let before = status(&id);
    // SAFETY: valid pointers for every call below.
    unsafe {
        // Every task an input made is finished by now, and final is final: its reports are refused.
        on_known(sft_update_task_progress(id.as_ptr(), 1, 2, std::ptr::null()), SftResult::SFT_ERR_INVALID_STATE);
        // The id doubles as a text segment id, which must not be empty and which the same byte
        // limit bounds; both are checked before the task is looked up.
        let bad_segment_id = text.is_some_and(|text| text.is_empty() || text.len() > MAX_ID_BYTES);
        let segment = sft_add_completed_segment(id.as_ptr(), id.as_ptr(), message.as_ptr(), 1.0);
        let error = sft_add_error(id.as_ptr(), id.as_ptr(), message.as_ptr());
        for reported in [segment, error] {
            if bad_segment_id {
                assert_eq!(reported, SftResult::SFT_ERR_INVALID_ARGUMENT, "a bad segment id {id:?} was taken");
            } else {
                on_known(reported, SftResult::SFT_ERR_INVALID_STATE);
            }
        }
        on_known(sft_cancel_task(id.as_ptr()), SftResult::SFT_ERR_INVALID_STATE);
        on_known(sft_set_task_error(id.as_ptr(), message.as_ptr()), SftResult::SFT_ERR_INVALID_STATE);
        on_known(sft_defer_task(id.as_ptr()), SftResult::SFT_ERR_INVALID_STATE);
        on_known(sft_finish_task(id.as_ptr(), 0, std::ptr::null()), SftResult::SFT_ERR_INVALID_STATE);
        let mut requested = true;
        on_known(sft_is_cancel_requested(id.as_ptr(), &mut requested), SftResult::SFT_OK);
        let mut out = null_mut();
        on_known(sft_wait_task_change(id.as_ptr(), u64::MAX, 0, &mut out), SftResult::SFT_OK);
        take(out);
        let mut listed = null_mut();
        let filter = sft_list_tasks(id.as_ptr(), &mut listed);
        let state_name = ["PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED"].contains(&text.unwrap_or(""));
        assert_eq!(filter == SftResult::SFT_OK, state_name, "list filter {id:?}");
        take(listed).map(|list| json(&list));
    }
    // Refused calls leave no trace: a known task's status is what it was before them.
    if let Some(status) = status(&id) {
        check_status_shape(&status);
        assert_eq!(Some(status), before, "a refused call changed {id:?}");
    }
});
