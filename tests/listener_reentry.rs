//! An eviction listener may write to the cache (or to another cache), also to the key whose
//! removal it hears about, even when that removal happened while the caller held a per-key
//! lock (write-through, `compute`) or a loader's publish lock (read-through and `get_with`
//! replacing an expired entry).

mod support;
use support::within_a_minute;

use cogwheel::store::MemoryStore;
use cogwheel::{Cache, ManualClock, RemovalCause};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

type Heard = Arc<Mutex<Vec<(u32, u32, RemovalCause)>>>;

/// A cache whose listener records what it hears and, on `Replaced` or `Expired` of key 1,
/// writes key 1 again (value 99) through the cache itself.
fn rewriting(b: cogwheel::CacheBuilder<u32, u32>) -> (Cache<u32, u32>, Heard) {
    let slot: Arc<OnceLock<Cache<u32, u32>>> = Arc::default();
    let heard: Heard = Arc::default();
    let (s2, h2) = (slot.clone(), heard.clone());
    let c = b
        .eviction_listener(move |k, v, cause| {
            h2.lock().unwrap().push((*k, *v, cause));
            if *k == 1
                && *v != 99
                && matches!(cause, RemovalCause::Replaced | RemovalCause::Expired)
            {
                s2.get().unwrap().insert(1, 99).unwrap();
            }
        })
        .build()
        .unwrap();
    let _ = slot.set(c.clone());
    (c, heard)
}

#[test]
fn a_listener_can_rewrite_the_key_a_write_through_insert_replaced() {
    let store = MemoryStore::new();
    let (c, heard) = rewriting(Cache::builder().max_capacity(100).store(store.clone()));
    c.insert(1, 10).unwrap();
    let c2 = c.clone();
    within_a_minute(move || c2.insert(1, 11).unwrap());
    assert!(
        heard
            .lock()
            .unwrap()
            .contains(&(1, 10, RemovalCause::Replaced))
    );
    assert_eq!(
        c.get(&1),
        Some(99),
        "the listener's write came after the insert"
    );
    assert_eq!(store.snapshot().get(&1).map(|s| s.value), Some(99));
}

#[test]
fn a_listener_can_rewrite_the_key_a_loader_replaced_after_expiry() {
    let clock = ManualClock::new();
    let (c, heard) = rewriting(
        Cache::builder()
            .max_capacity(100)
            .time_to_live(Duration::from_secs(1))
            .clock(clock.clone()),
    );
    c.insert(1, 10).unwrap();
    clock.advance(Duration::from_secs(2));
    // The expired entry is still in the table: get_with's publish replaces it, and the
    // listener hears `Expired` while the load's flight is still registered.
    let c2 = c.clone();
    let got = within_a_minute(move || c2.get_with(1, || 20).unwrap());
    assert_eq!(got, 20);
    assert!(
        heard
            .lock()
            .unwrap()
            .contains(&(1, 10, RemovalCause::Expired))
    );
    assert_eq!(
        c.get(&1),
        Some(99),
        "the listener's write landed after the load"
    );
}

#[test]
fn a_listener_can_write_to_another_cache_whose_key_lock_its_thread_holds() {
    // `b` has no listener of its own; `a`'s listener writes to `b`. The thread holds `b`'s
    // lock on key 1 (inside `compute`) when its write to `a` evicts and calls the listener.
    let b: Cache<u32, u32> = Cache::builder().max_capacity(100).build().unwrap();
    let b2 = b.clone();
    let a: Cache<u32, u32> = Cache::builder()
        .max_capacity(1)
        .eviction_listener(move |k, _, _| {
            b2.compute(1, |n| cogwheel::Compute::Put(n.copied().unwrap_or(0) + k))
                .unwrap();
        })
        .build()
        .unwrap();
    a.insert(100, 0).unwrap();
    let (a2, b3) = (a.clone(), b.clone());
    within_a_minute(move || {
        b3.compute(1, |_| {
            a2.insert(200, 0).unwrap(); // evicts 100: the listener adds 100 to b's key 1
            cogwheel::Compute::Put(1)
        })
        .unwrap();
    });
    assert_eq!(a.len(), 1);
    assert_eq!(
        b.get(&1),
        Some(101),
        "the listener's write came after compute's"
    );
}

/// A cache of capacity 1 whose listener counts what it hears, and panics on key 13.
fn counting() -> (Cache<u32, u32>, Arc<std::sync::atomic::AtomicUsize>) {
    let heard = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h2 = heard.clone();
    let c = Cache::builder()
        .max_capacity(1)
        .eviction_listener(move |k: &u32, _: &u32, _| {
            assert_ne!(*k, 13, "a listener that panics");
            h2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .build()
        .unwrap();
    (c, heard)
}

#[test]
fn listener_calls_held_under_a_panicking_closure_still_run() {
    // `a`'s eviction happens inside `b.compute`'s closure (under `b`'s key lock, so the call
    // is held), and then the closure panics.
    let (a, heard) = counting();
    let b: Cache<u32, u32> = Cache::builder().max_capacity(100).build().unwrap();
    a.insert(1, 0).unwrap();
    let (a2, b2) = (a.clone(), b.clone());
    let r = std::thread::spawn(move || {
        b2.compute(1, |_| {
            a2.insert(2, 0).unwrap(); // evicts 1
            panic!("the closure fails");
        })
    })
    .join();
    assert!(r.is_err(), "the closure's panic reaches the caller");
    assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_panicking_listener_costs_no_other_held_call_its_turn() {
    let (a, heard) = counting();
    let b: Cache<u32, u32> = Cache::builder().max_capacity(100).build().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.compute(1, |_| {
            a.insert(13, 0).unwrap();
            a.insert(2, 0).unwrap(); // evicts 13: its call will panic
            a.insert(3, 0).unwrap(); // evicts 2
            cogwheel::Compute::Put(1)
        })
    }));
    assert!(r.is_err(), "the listener's panic reaches the caller");
    assert_eq!(
        heard.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "2's call ran"
    );
    assert_eq!(
        b.get(&1),
        Some(1),
        "compute's write landed before the listeners ran"
    );
}

#[test]
fn a_panicking_listener_does_not_stop_a_sweep() {
    let clock = ManualClock::new();
    let heard = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h2 = heard.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(1000)
        .shards(4)
        .clock(clock.clone())
        .time_to_live(Duration::from_secs(1))
        .eviction_listener(move |k: &u32, _: &u32, _| {
            assert_ne!(*k, 13, "a listener that panics");
            h2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let fill = || (0..100).for_each(|k| c.insert(k, k).unwrap());
    let heard_all = |what: &str| {
        assert_eq!(c.len(), 0, "{what}: the sweep stopped at the panic");
        assert_eq!(
            heard.swap(0, std::sync::atomic::Ordering::SeqCst),
            99,
            "{what}"
        );
    };
    let caught = |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    fill();
    assert!(
        caught(&|| c.invalidate_all()).is_err(),
        "the panic reaches the caller"
    );
    heard_all("invalidate_all");
    fill();
    assert!(
        caught(&|| {
            c.invalidate_if(|_, _| true);
        })
        .is_err()
    );
    heard_all("invalidate_if");
    fill();
    clock.advance(Duration::from_secs(2));
    assert!(caught(&|| c.run_pending_tasks()).is_err());
    heard_all("run_pending_tasks");
}
