//! The only place that chooses between std/crossbeam primitives and loom's.
//!
//! Every other module imports atomics, `Arc`, locks and thread helpers from here, so a
//! `--cfg loom` build swaps all of them at once and loom sees every synchronizing access the
//! engine makes. Code switches on `cfg(loom)`, never on the `loom` feature: workspace feature
//! unification turns the feature on in ordinary builds, where it must change nothing.

#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(not(loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError, Weak};

#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(loom)]
#[allow(unused_imports)]
pub(crate) use std::sync::{TryLockError, Weak};

#[cfg(loom)]
pub(crate) use loom::thread_local;
#[cfg(not(loom))]
pub(crate) use std::thread_local;

/// Thread helpers that loom must see (spawning, parking, yielding).
pub(crate) mod thread {
    #[cfg(not(loom))]
    #[allow(unused_imports)]
    pub(crate) use std::thread::{JoinHandle, Thread, ThreadId, current, park, spawn, yield_now};

    #[cfg(loom)]
    #[allow(unused_imports)]
    pub(crate) use loom::thread::{JoinHandle, Thread, ThreadId, current, park, spawn, yield_now};
}

/// Lock a mutex, ignoring poisoning.
///
/// A panic inside a user callback never runs while a cogwheel lock is held (listeners, loaders
/// and weighers are called outside shard locks or before any state changes), so a poisoned lock
/// still guards consistent state; recovering is right and avoids turning one panic into many.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Lock a mutex that is held only briefly: try it a few times, spinning in between (about 300
/// spin hints in all), before sleeping on it. A thread that sleeps on the mutex's futex costs
/// itself a wake-up and the holder a system call to wake it, which is far more than the
/// sections these locks guard. Under loom: plain [`lock`].
pub(crate) fn lock_spinning<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    #[cfg(not(loom))]
    {
        let backoff = crossbeam_utils::Backoff::new();
        for _ in 0..SPIN_TRIES {
            if let Some(g) = try_lock(m) {
                return g;
            }
            backoff.spin();
        }
    }
    lock(m)
}

/// Tries of [`lock_spinning`] before it sleeps.
#[cfg(not(loom))]
const SPIN_TRIES: usize = 10;

#[allow(dead_code)] // callers: maintenance, and `lock_spinning` outside loom
/// Try to lock a mutex without waiting; `None` when another thread holds it.
pub(crate) fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// One step of a wait loop. Under loom this yields the model thread (a bare spin would hang the
/// model: loom's scheduler is unfair on purpose); otherwise it is a CPU spin hint followed by an
/// OS yield, for the rare, tiny windows (an MPSC producer between its two stores) it is used for.
#[inline]
pub(crate) fn spin_wait(step: &mut u32) {
    #[cfg(loom)]
    {
        let _ = step;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if *step < 6 {
            for _ in 0..(1u32 << *step) {
                std::hint::spin_loop();
            }
            *step += 1;
        } else {
            std::thread::yield_now();
        }
    }
}
