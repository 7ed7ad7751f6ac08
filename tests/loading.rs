//! Single-flight loading and compute through the public API.

use cogwheel::{Cache, Compute, Error, LoadError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

fn cache() -> Cache<u64, u64> {
    Cache::builder().max_capacity(1000).build().unwrap()
}

#[test]
fn sixty_four_threads_missing_one_key_run_the_loader_once() {
    let c = cache();
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(64));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let go_rx = Arc::new(std::sync::Mutex::new(go_rx));
    let handles: Vec<_> = (0..64)
        .map(|_| {
            let (c, runs, barrier, entered_tx, go_rx) = (
                c.clone(),
                runs.clone(),
                barrier.clone(),
                entered_tx.clone(),
                go_rx.clone(),
            );
            thread::spawn(move || {
                barrier.wait();
                c.get_with(42, || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    entered_tx.send(()).unwrap();
                    // Hold the load open until the test lets it finish, so the others pile up.
                    go_rx.lock().unwrap().recv().unwrap();
                    4242
                })
                .unwrap()
            })
        })
        .collect();
    entered_rx.recv().unwrap();
    go_tx.send(()).unwrap();
    for h in handles {
        assert_eq!(h.join().unwrap(), 4242);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "exactly one loader run");
    assert_eq!(c.get(&42), Some(4242));
    let s = c.stats();
    assert_eq!((s.loads, s.load_failures), (1, 0));
}

#[test]
fn errors_are_shared_and_not_cached() {
    let c = cache();
    let r = c.try_get_with(1, || Err::<u64, _>(String::from("down")));
    match r {
        Err(LoadError::Failed(e)) => assert_eq!(*e, "down"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.get(&1), None, "an error is not cached");
    assert_eq!(c.try_get_with(1, || Ok::<_, String>(5)).unwrap(), 5);
    assert_eq!(c.stats().load_failures, 1);
}

#[test]
fn a_panicking_loader_does_not_hang_waiters() {
    let c = cache();
    let barrier = Arc::new(Barrier::new(2));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let leader = {
        let (c, barrier) = (c.clone(), barrier.clone());
        thread::spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                c.get_with(9, || {
                    entered_tx.send(()).unwrap();
                    barrier.wait(); // the waiter is about to call get_with
                    panic!("loader blew up")
                })
            }))
            .is_err()
        })
    };
    entered_rx.recv().unwrap();
    let waiter = {
        let c = c.clone();
        thread::spawn(move || {
            barrier.wait();
            c.get_with(9, || 99).unwrap()
        })
    };
    assert!(
        leader.join().unwrap(),
        "the panic reached the panicking caller"
    );
    assert_eq!(
        waiter.join().unwrap(),
        99,
        "the waiter retried with its own loader"
    );
    assert_eq!(c.get(&9), Some(99));
    assert_eq!(c.stats().load_failures, 1);
}

#[test]
fn recursion_is_an_error_not_a_deadlock() {
    let c = cache();
    let inner = c.clone();
    let v = c.get_with(1, || match inner.get_with(1, || 2) {
        Err(Error::Recursive) => 7,
        other => panic!("expected Recursive, got {other:?}"),
    });
    assert_eq!(v.unwrap(), 7);
}

#[test]
fn a_load_does_not_overwrite_a_concurrent_insert_or_remove() {
    // insert during the load: the insert wins.
    let c = cache();
    let c2 = c.clone();
    let v = c.get_with(5, || {
        c2.insert(5, 500).unwrap();
        1
    });
    assert_eq!(
        v.unwrap(),
        1,
        "the loader's caller gets the value it loaded"
    );
    assert_eq!(c.get(&5), Some(500), "but the cache keeps the newer write");
    // remove during the load: the key stays removed.
    let c3 = c.clone();
    let v = c.get_with(6, || {
        c3.insert(6, 600).unwrap();
        c3.remove(&6).unwrap();
        2
    });
    assert_eq!(v.unwrap(), 2);
    assert_eq!(c.get(&6), None, "a remove during the load is not undone");
}

#[test]
fn a_compute_remove_of_an_absent_key_wins_over_a_load_in_flight() {
    // The cache does not hold the key when `compute` decides to remove it, but a load already
    // read the source: as with `remove`, the load's value must not be cached after it.
    let c = cache();
    let c2 = c.clone();
    let v = c.get_with(7, || {
        assert_eq!(c2.compute(7, |_| cogwheel::Compute::Remove).unwrap(), None);
        70
    });
    assert_eq!(v.unwrap(), 70);
    assert_eq!(c.get(&7), None, "the removal is not undone by the load");
}

#[test]
fn a_load_in_flight_is_not_cached_after_invalidate_all_or_invalidate_if() {
    // The loader read its source before the sweep: its value answers its caller, but the
    // cache must not keep it (a later get would serve what the sweep meant to drop).
    let c = cache();
    let c2 = c.clone();
    let v = c.get_with(5, || {
        c2.invalidate_all();
        1
    });
    assert_eq!(v.unwrap(), 1);
    assert_eq!(c.get(&5), None, "invalidate_all during the load");
    let c3 = c.clone();
    let v = c.get_with(6, || {
        assert_eq!(c3.invalidate_if(|_, _| true), 0);
        2
    });
    assert_eq!(v.unwrap(), 2);
    assert_eq!(c.get(&6), None, "invalidate_if during the load");
    // A load that starts after the sweep is cached as usual.
    assert_eq!(c.get_with(6, || 3).unwrap(), 3);
    assert_eq!(c.get(&6), Some(3));
}

#[test]
fn compute_is_atomic_per_key() {
    let c = cache();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || {
                for _ in 0..1000 {
                    c.compute(1, |v| Compute::Put(v.copied().unwrap_or(0) + 1))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(c.get(&1), Some(8000), "no increment lost");
    assert_eq!(c.compute(1, |_| Compute::Remove).unwrap(), None);
    assert_eq!(c.get(&1), None);
    assert_eq!(
        c.compute(1, |v| {
            assert!(v.is_none());
            Compute::Keep
        })
        .unwrap(),
        None
    );
}

#[test]
fn compute_retries_when_a_plain_insert_races() {
    let c = cache();
    c.insert(1, 10).unwrap();
    let c2 = c.clone();
    let mut calls = 0;
    let out = c
        .compute(1, |v| {
            calls += 1;
            if calls == 1 {
                c2.insert(1, 20).unwrap(); // lands between the read and the write
            }
            Compute::Put(v.copied().unwrap() + 1)
        })
        .unwrap();
    assert_eq!(calls, 2, "decided again on the new value");
    assert_eq!(out, Some(21));
    assert_eq!(c.get(&1), Some(21));
}
