use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Barrier, Mutex as StdMutex};

const KEY: u64 = 7;
const HASH: u64 = 0x9e37_79b9_7f4a_7c15;

/// A stand-in for the cache: `check` reads it, `publish` inserts if absent.
#[derive(Default)]
struct FakeCache {
    slot: StdMutex<Option<u32>>,
}

impl FakeCache {
    fn get(&self) -> Option<u32> {
        *self.slot.lock().unwrap()
    }
    fn publish(&self, v: &u32) {
        self.slot.lock().unwrap().get_or_insert(*v);
    }
}

/// Keep the expected panics of these tests (messages starting with "planned") off stderr;
/// every other panic is still reported by the default hook.
fn quiet_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg = p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str));
            if !msg.is_some_and(|m| m.starts_with("planned")) {
                default(info);
            }
        }));
    });
}

/// Wait (yielding, never sleeping) until `n` callers wait on KEY's flight. Bounded by a
/// minute (a liveness bound, not a timing threshold), so a caller that never joins fails the
/// test instead of hanging it. After one wait timed out, every later one fails at once: a
/// leader that panics here hands the load to a waiter, which would wait a minute again.
fn until_waiting(loader: &Loader<u64, u32>, n: usize) {
    static TIMED_OUT: AtomicBool = AtomicBool::new(false);
    let start = std::time::Instant::now();
    while loader.waiting(HASH, &KEY) < n {
        assert!(
            !TIMED_OUT.load(Ordering::Relaxed),
            "an earlier wait for callers to join a flight timed out"
        );
        if start.elapsed() > std::time::Duration::from_secs(60) {
            TIMED_OUT.store(true, Ordering::Relaxed);
            panic!(
                "{} callers wait on the flight after a minute, expected {n}",
                loader.waiting(HASH, &KEY)
            );
        }
        std::thread::yield_now();
    }
}

#[test]
fn sixty_four_misses_load_once() {
    const N: usize = 64;
    let loader = Loader::<u64, u32>::new();
    let cache = FakeCache::default();
    let loads = AtomicUsize::new(0);
    let barrier = Barrier::new(N);
    let results: Vec<Loaded<u32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    loader
                        .run::<(), _, _, _>(
                            HASH,
                            &KEY,
                            || cache.get(),
                            || {
                                loads.fetch_add(1, Ordering::SeqCst);
                                // Hold the flight until everyone else has joined it.
                                until_waiting(&loader, N - 1);
                                Ok(42)
                            },
                            |v| cache.publish(v),
                        )
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(results.iter().all(|r| r.value == 42));
    let count = |o| results.iter().filter(|r| r.origin == o).count();
    assert_eq!(
        (count(Origin::Published), count(Origin::Shared)),
        (1, N - 1)
    );
    assert_eq!(cache.get(), Some(42));
    assert!(loader.is_empty());
}

#[test]
fn an_error_is_shared_with_waiters_and_not_cached() {
    const WAITERS: usize = 3;
    let loader = Loader::<u64, u32>::new();
    let loads = AtomicUsize::new(0);
    let run = || {
        loader.run(
            HASH,
            &KEY,
            || None,
            || {
                loads.fetch_add(1, Ordering::SeqCst);
                until_waiting(&loader, WAITERS);
                Err(String::from("store down"))
            },
            |_| unreachable!("an error is never published"),
        )
    };
    let errors: Vec<std::sync::Arc<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..=WAITERS).map(|_| s.spawn(run)).collect();
        hs.into_iter()
            .map(|h| match h.join().unwrap() {
                Err(LoadError::Failed(e)) => e,
                other => panic!("expected the shared error, got {other:?}"),
            })
            .collect()
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(
        errors
            .iter()
            .all(|e| std::sync::Arc::ptr_eq(e, &errors[0]) && **e == "store down")
    );
    assert!(loader.is_empty());
    // Not cached: the next caller loads again.
    let next = loader
        .run::<String, _, _, _>(HASH, &KEY, || None, || Ok(5), |_| {})
        .unwrap();
    assert_eq!(
        next,
        Loaded {
            value: 5,
            origin: Origin::Published
        }
    );
}

#[test]
fn a_waiter_with_another_error_type_starts_its_own_flight() {
    let loader = Loader::<u64, u32>::new();
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        let leader = s.spawn(|| {
            loader.run::<&'static str, _, _, _>(
                HASH,
                &KEY,
                || None,
                || {
                    tx.send(()).unwrap();
                    until_waiting(&loader, 1);
                    Err("leader's error")
                },
                |_| {},
            )
        });
        rx.recv().unwrap();
        let mine = loader.run::<u8, _, _, _>(HASH, &KEY, || None, || Ok(9), |_| {});
        assert!(matches!(leader.join().unwrap(), Err(LoadError::Failed(_))));
        assert_eq!(
            mine.unwrap(),
            Loaded {
                value: 9,
                origin: Origin::Published
            }
        );
    });
    assert!(loader.is_empty());
}

#[test]
fn a_panic_wakes_the_waiters_and_exactly_one_retries() {
    quiet_planned_panics();
    const N: usize = 8;
    let loader = Loader::<u64, u32>::new();
    let cache = FakeCache::default();
    let armed = AtomicBool::new(true);
    let loads = AtomicUsize::new(0);
    let barrier = Barrier::new(N);
    let outcomes: Vec<std::thread::Result<Loaded<u32>>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..N)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    panic::catch_unwind(AssertUnwindSafe(|| {
                        loader
                            .run::<(), _, _, _>(
                                HASH,
                                &KEY,
                                || cache.get(),
                                || {
                                    loads.fetch_add(1, Ordering::SeqCst);
                                    if armed.swap(false, Ordering::SeqCst) {
                                        until_waiting(&loader, N - 1);
                                        panic!("planned: loader blew up");
                                    }
                                    Ok(11)
                                },
                                |v| cache.publish(v),
                            )
                            .unwrap()
                    }))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let panicked = outcomes.iter().filter(|o| o.is_err()).count();
    // The planned panic, not a failed wait (which would also be one panic).
    let payload = outcomes.iter().find_map(|o| o.as_ref().err());
    assert_eq!(
        payload.and_then(|p| p.downcast_ref::<&str>().copied()),
        Some("planned: loader blew up")
    );
    let ok: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(panicked, 1, "the panic reaches the panicking caller only");
    assert!(ok.iter().all(|l| l.value == 11));
    assert_eq!(
        ok.iter().filter(|l| l.origin == Origin::Published).count(),
        1,
        "exactly one new leader"
    );
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "the failed load and one retry"
    );
    assert!(loader.is_empty());
    assert_eq!(cache.get(), Some(11));
}

#[test]
fn a_panic_in_check_or_publish_also_abandons() {
    quiet_planned_panics();
    let loader = Loader::<u64, u32>::new();
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        loader.run::<(), _, _, _>(HASH, &KEY, || panic!("planned: check"), || Ok(1), |_| {})
    }));
    assert!(r.is_err());
    assert!(loader.is_empty());
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        loader.run::<(), _, _, _>(
            HASH,
            &KEY,
            || None,
            || Ok(1),
            |_| panic!("planned: publish"),
        )
    }));
    assert!(r.is_err());
    assert!(loader.is_empty());
    let again = loader
        .run::<(), _, _, _>(HASH, &KEY, || None, || Ok(2), |_| {})
        .unwrap();
    assert_eq!(again.value, 2);
}

/// A value whose clone panics if armed (the `check` path clones what it found for the
/// waiters).
struct CloneBomb(bool);

impl Clone for CloneBomb {
    fn clone(&self) -> Self {
        assert!(!self.0, "planned: clone");
        CloneBomb(false)
    }
}

#[test]
fn a_panicking_clone_of_a_present_value_abandons_the_flight() {
    quiet_planned_panics();
    let loader = Loader::<u64, CloneBomb>::new();
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        loader.run::<(), _, _, _>(
            HASH,
            &KEY,
            || Some(CloneBomb(true)),
            || unreachable!(),
            |_| {},
        )
    }));
    assert!(r.is_err());
    assert!(loader.is_empty(), "no flight is left running");
    // The key is not wedged: a new load leads and completes.
    let again = loader.run::<(), _, _, _>(HASH, &KEY, || None, || Ok(CloneBomb(false)), |_| {});
    assert!(matches!(
        again,
        Ok(Loaded {
            origin: Origin::Published,
            ..
        })
    ));
}

#[test]
fn recursion_on_the_same_thread_is_an_error() {
    let loader = Loader::<u64, u32>::new();
    let outer = loader
        .run::<(), _, _, _>(
            HASH,
            &KEY,
            || None,
            || {
                let inner = loader.run::<(), _, _, _>(HASH, &KEY, || None, || Ok(1), |_| {});
                assert!(matches!(inner, Err(LoadError::Recursive)));
                // Another key is fine.
                let other = loader.run::<(), _, _, _>(HASH, &(KEY + 1), || None, || Ok(3), |_| {});
                assert_eq!(other.unwrap().value, 3);
                Ok(2)
            },
            |_| {},
        )
        .unwrap();
    assert_eq!(outer.value, 2);
    assert!(loader.is_empty());
}

#[test]
fn check_short_circuits_a_new_leader() {
    let loader = Loader::<u64, u32>::new();
    let got = loader
        .run::<(), _, _, _>(
            HASH,
            &KEY,
            || Some(8),
            || unreachable!("present"),
            |_| unreachable!(),
        )
        .unwrap();
    assert_eq!(
        got,
        Loaded {
            value: 8,
            origin: Origin::Present
        }
    );
    assert!(loader.is_empty());
}

#[test]
fn an_invalidated_flight_serves_its_waiters_but_is_not_published() {
    let loader = Loader::<u64, u32>::new();
    let cache = FakeCache::default();
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (loader, cache) = (&loader, &cache);
    let (leader, waiter) = std::thread::scope(|s| {
        let leader = s.spawn(move || {
            loader.run::<(), _, _, _>(
                HASH,
                &KEY,
                || cache.get(),
                || {
                    started_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    Ok(1)
                },
                |v| cache.publish(v),
            )
        });
        // Owned here: if this thread panics (below), the leader's `recv` fails instead of
        // blocking the scope's join forever.
        let go_tx = go_tx;
        started_rx.recv().unwrap();
        let waiter = s.spawn(|| {
            loader.run::<(), _, _, _>(HASH, &KEY, || None, || unreachable!(), |_| unreachable!())
        });
        until_waiting(loader, 1);
        // A concurrent write: invalidate first, then change the cache.
        assert!(loader.invalidate(HASH, &KEY));
        *cache.slot.lock().unwrap() = Some(2);
        go_tx.send(()).unwrap();
        (
            leader.join().unwrap().unwrap(),
            waiter.join().unwrap().unwrap(),
        )
    });
    assert_eq!(
        leader,
        Loaded {
            value: 1,
            origin: Origin::Stale
        }
    );
    assert_eq!(
        waiter,
        Loaded {
            value: 1,
            origin: Origin::Shared
        }
    );
    assert_eq!(cache.get(), Some(2), "the newer write survives");
    assert!(!loader.invalidate(HASH, &KEY), "nothing in flight any more");
    assert!(loader.is_empty());
}

/// Many threads, few keys, every outcome mixed (value, error, panic, invalidation): nothing
/// hangs, every caller gets a value some `init` of its key produced or that init's error, and
/// the registry ends empty.
#[test]
fn mixed_outcomes_under_contention() {
    quiet_planned_panics();
    const THREADS: u32 = 4;
    const ROUNDS: u32 = 400;
    let loader = Loader::<u64, u32>::new();
    let caches: Vec<FakeCache> = (0..3).map(|_| FakeCache::default()).collect();
    let inits = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (loader, caches, inits) = (&loader, &caches, &inits);
            s.spawn(move || {
                // A small xorshift per thread: deterministic choices without a dependency.
                let mut x = 0x2545_f491_u32 ^ (t + 1).wrapping_mul(0x9e37_79b9);
                let mut next = move || {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x
                };
                for _ in 0..ROUNDS {
                    let key = u64::from(next() % 3);
                    let hash = key << 62; // spread the keys over registry shards
                    let cache = &caches[key as usize];
                    match next() % 8 {
                        0 => {
                            loader.invalidate(hash, &key);
                            *cache.slot.lock().unwrap() = None;
                            continue;
                        }
                        1 => {
                            loader.invalidate(hash, &key);
                            *cache.slot.lock().unwrap() = Some(1_000_000 + key as u32);
                            continue;
                        }
                        _ => {}
                    }
                    let choice = next() % 6;
                    let r = panic::catch_unwind(AssertUnwindSafe(|| {
                        loader.run::<u32, _, _, _>(
                            hash,
                            &key,
                            || cache.get(),
                            || {
                                let id = inits.fetch_add(1, Ordering::SeqCst) as u32;
                                match choice {
                                    0 => Err(id),
                                    1 => panic!("planned"),
                                    _ => Ok(id * 4 + key as u32),
                                }
                            },
                            |v| cache.publish(v),
                        )
                    }));
                    match r {
                        Ok(Ok(l)) => {
                            assert!(l.value % 4 == key as u32 || l.value >= 1_000_000, "{l:?}")
                        }
                        Ok(Err(LoadError::Failed(_))) | Err(_) => {}
                        Ok(Err(LoadError::Recursive)) => panic!("no recursion here"),
                    }
                }
            });
        }
    });
    assert!(loader.is_empty());
}
