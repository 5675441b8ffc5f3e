//! Lock and wait helpers shared by the core.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Locks `mutex`, recovering the data if a panic elsewhere poisoned it.
///
/// No core code panics while holding a lock, and tasks never run under one, so
/// a poisoned lock can only come from a bug; keeping the manager usable then is
/// worth more than propagating the poison into every later call.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The instant a wait of `timeout` started now ends; `None` waits forever.
pub(crate) fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future))
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Waits on `condvar` while `waiting` holds or until `deadline`; true if it gave up at the deadline.
pub(crate) fn wait_while_until<'a, T>(
    condvar: &Condvar,
    mut guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
    mut waiting: impl FnMut(&mut T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    while waiting(&mut guard) {
        match deadline {
            None => guard = condvar.wait(guard).unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return (guard, true);
                }
                guard = condvar.wait_timeout(guard, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
            }
        }
    }
    (guard, false)
}

/// Now as Unix epoch seconds, like Python's `time.time()`.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
