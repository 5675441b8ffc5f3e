//! The process-wide manager shared by every C, Python and Node caller, and what fork() does to it.

use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Arc;

use crate::{Config, TaskManager};

/// The live manager; null until first use and again in a freshly forked child.
static CURRENT: AtomicPtr<Arc<TaskManager>> = AtomicPtr::new(null_mut());
/// The parent's manager as a forked child inherited it: kept reachable, never used.
static INHERITED: AtomicPtr<Arc<TaskManager>> = AtomicPtr::new(null_mut());
/// Whether the fork handler is registered: an atomic, not a `Once`, because a `Once` that
/// another thread is running when the process forks stays locked in the child.
static FORK_HANDLER_REGISTERED: AtomicBool = AtomicBool::new(false);

/// The process-wide manager that the C API, the Python and the Node bindings share.
///
/// Created on first use. In the child of a `fork()` the first use creates a
/// fresh, empty manager: the parent's worker thread does not exist there and
/// its tasks must never run twice, so the inherited one is set aside unused.
pub fn process_manager() -> &'static Arc<TaskManager> {
    let current = CURRENT.load(Ordering::Acquire);
    if current.is_null() {
        return install();
    }
    // SAFETY: every pointer stored in CURRENT comes from Box::into_raw in `install`
    // and is never freed, so it is valid for 'static.
    unsafe { &*current }
}

#[cold]
fn install() -> &'static Arc<TaskManager> {
    if !FORK_HANDLER_REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: the child handler only swaps two atomics, which is async-signal-safe.
        unsafe { libc::pthread_atfork(None, None, Some(set_aside_in_child)) };
    }
    let fresh = Box::into_raw(Box::new(TaskManager::with_config(Config::from_environment())));
    match CURRENT.compare_exchange(null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: `fresh` was just leaked into CURRENT and is never freed.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: `fresh` lost the race, was never shared, and has no worker yet.
            drop(unsafe { Box::from_raw(fresh) });
            // SAFETY: `winner` is a CURRENT pointer, valid for 'static as above.
            unsafe { &*winner }
        }
    }
}

extern "C" fn set_aside_in_child() {
    let inherited = CURRENT.swap(null_mut(), Ordering::AcqRel);
    if !inherited.is_null() {
        INHERITED.store(inherited, Ordering::Release);
        // A static that is only written would be optimised away, and the set-aside
        // manager with it would look leaked to leak checkers: make it escape.
        std::hint::black_box(&INHERITED);
    }
}
