//! Write-behind with the writer thread running while callers write: writers parked at the
//! dirty budget over a hung store, and per-key order of puts and removes racing the writer.

use cogwheel::store::{AppliedOp, MemoryStore};
use cogwheel::{Cache, WriteBehind, WritePolicy};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod support;

fn threaded(store: &MemoryStore<u64, u64>, wb: WriteBehind) -> Cache<u64, u64> {
    Cache::builder()
        .max_capacity(100_000)
        .store(store.clone())
        .write_policy(WritePolicy::WriteBehind(wb))
        .build()
        .unwrap()
}

#[test]
fn writers_park_at_the_dirty_budget_while_the_store_hangs_then_resume() {
    let store = MemoryStore::new();
    store.hang();
    let c = Arc::new(threaded(&store, WriteBehind::default().max_dirty(10)));
    let done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (c, done) = (c.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..100 {
                c.insert(i, i).unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // The writer thread is inside the hung store: nothing it took can be stored, so the
    // caller fills the budget and parks (not spins, not errs, not overshoots).
    store.wait_for_hung_calls(1);
    for _ in 0..50 {
        assert!(
            c.dirty_count() <= 10,
            "dirty {} over the budget",
            c.dirty_count()
        );
        std::thread::yield_now();
    }
    assert!(
        done.load(Ordering::SeqCst) < 100,
        "100 writes got past a budget of 10 with nothing stored"
    );
    store.release();
    writer.join().unwrap();
    c.flush().unwrap();
    assert_eq!(store.len(), 100, "every parked write went through");
}

#[test]
fn puts_and_removes_racing_the_writer_reach_the_store_in_order() {
    let store = MemoryStore::new();
    store.set_latency(Some(Duration::from_micros(200)));
    let c = Arc::new(threaded(
        &store,
        WriteBehind::default()
            .max_delay(Duration::from_micros(100))
            .max_batch(64),
    ));
    const KEYS: u64 = 64;
    const STEPS: u64 = 300;
    // Thread t owns the keys k with k % 2 == t; step j of key k is a remove when j % 3 == 1,
    // else a put of the value j (so a key's puts carry increasing values).
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for j in 0..STEPS {
                    for k in (0..KEYS).filter(|k| k % 2 == t) {
                        if j % 3 == 1 {
                            c.remove(&k).unwrap();
                        } else {
                            c.insert(k, j).unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    c.flush().unwrap();
    let mut last: HashMap<u64, Option<u64>> = HashMap::new();
    for op in store.applied_ops() {
        match op {
            AppliedOp::Put { key, value, .. } => {
                if let Some(Some(prev)) = last.get(&key) {
                    assert!(value > *prev, "key {key}: put {value} after put {prev}");
                }
                last.insert(key, Some(value));
            }
            AppliedOp::Delete { key } => {
                // A delete never follows the key's final put (step 299, the last step).
                assert_ne!(last.get(&key), Some(&Some(STEPS - 1)), "key {key}");
                last.insert(key, None);
            }
        }
    }
    for k in 0..KEYS {
        // The last step (299) is a put; the store ends there.
        assert_eq!(store.snapshot().get(&k).map(|s| s.value), Some(STEPS - 1));
        assert_eq!(last.get(&k), Some(&Some(STEPS - 1)), "key {k}");
    }
    assert!(
        store.applied_ops().len() as u64 >= KEYS,
        "every key was written"
    );
}

#[test]
fn writers_parked_on_a_failing_store_wait_out_the_back_off() {
    let store = MemoryStore::new();
    store.set_down(true);
    let backoff = Duration::from_millis(20);
    let c = Arc::new(threaded(
        &store,
        WriteBehind::default()
            .max_dirty(2)
            .retry_backoff(backoff, backoff),
    ));
    let start = std::time::Instant::now();
    let writer = {
        let c = c.clone();
        std::thread::spawn(move || {
            for i in 0..5 {
                c.insert(i, i).unwrap();
            }
        })
    };
    // The writer parks at the budget. Its waiting must not drive the store: retries come
    // at the back-off's pace (the first one may be immediate), however often it wakes.
    // (Rounds, not failed store calls: after two failed rounds a round writes key by key.)
    // The bound only caps retries by elapsed time, so a slow machine cannot fail it; the
    // back-off runs on `Instant`, which a manual clock cannot drive.
    support::within_a_minute({
        let c = c.clone();
        move || {
            while c.stats().write_retries < 3 {
                std::thread::yield_now();
            }
        }
    });
    let retries = c.stats().write_retries;
    let paced = (start.elapsed().as_millis() / backoff.as_millis()) as u64 + 1;
    assert!(
        retries <= paced,
        "{retries} retried rounds in {:?}",
        start.elapsed()
    );
    store.set_down(false);
    writer.join().unwrap();
    c.flush().unwrap();
    assert_eq!(store.len(), 5);
}

#[test]
fn an_idle_writer_thread_is_always_woken_by_the_writes_that_follow() {
    // The writer thread sleeps without a timeout once nothing is dirty; only the hand-shake
    // with `record` wakes it. Round after round: let it go idle, then write from several
    // threads at once, and wait (no flush) until it has stored everything. A lost wake-up
    // leaves keys dirty for good, and the wait fails after a minute instead of hanging.
    let store = MemoryStore::new();
    let c = threaded(&store, WriteBehind::default().max_delay(Duration::ZERO));
    let threads = 4u64;
    for round in 0..200u64 {
        // Odd rounds write one key: no other write of the round can make up for a lost wake.
        let writers = if round % 2 == 1 { 1 } else { threads };
        std::thread::scope(|s| {
            for t in 0..writers {
                let c = &c;
                s.spawn(move || c.insert(round * threads + t, round).unwrap());
            }
        });
        support::within_a_minute({
            let c = c.clone();
            move || {
                while c.stats().dirty > 0 {
                    std::thread::yield_now();
                }
            }
        });
    }
    assert_eq!(store.len() as u64, 100 * threads + 100);
}
