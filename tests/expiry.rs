//! Expiry on the read path, with a manual clock (no sleeps).

mod support;

use cogwheel::{Cache, ManualClock, RemovalCause};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

fn cache(clock: &ManualClock, ttl: Option<Duration>, tti: Option<Duration>) -> Cache<u32, u32> {
    let mut b = Cache::builder().max_capacity(100).clock(clock.clone());
    if let Some(t) = ttl {
        b = b.time_to_live(t);
    }
    if let Some(t) = tti {
        b = b.time_to_idle(t);
    }
    b.build().unwrap()
}

#[test]
fn ttl_expires_exactly_at_the_deadline() {
    let clock = ManualClock::new();
    let c = cache(&clock, Some(10 * S), None);
    c.insert(1, 1).unwrap();
    clock.advance(10 * S - Duration::from_nanos(1));
    assert_eq!(c.get(&1), Some(1), "one nanosecond before the deadline");
    assert!(c.contains_key(&1));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(c.get(&1), None, "at the deadline");
    assert!(!c.contains_key(&1));
    assert_eq!(c.iter().count(), 0, "iter skips expired entries");
    assert_eq!(
        c.remove(&1).unwrap(),
        None,
        "remove does not return an expired value"
    );
}

#[test]
fn per_entry_ttl_overrides_the_default() {
    let clock = ManualClock::new();
    let c = cache(&clock, Some(10 * S), None);
    c.insert_with_ttl(1, 1, 2 * S).unwrap();
    c.insert_with_ttl(2, 2, 100 * S).unwrap();
    c.insert(3, 3).unwrap();
    clock.advance(2 * S);
    assert_eq!((c.get(&1), c.get(&2), c.get(&3)), (None, Some(2), Some(3)));
    clock.advance(8 * S);
    assert_eq!((c.get(&2), c.get(&3)), (Some(2), None));
}

#[test]
fn per_entry_ttl_without_a_default() {
    let clock = ManualClock::new();
    let c = cache(&clock, None, None);
    c.insert(1, 1).unwrap();
    c.insert_with_ttl(2, 2, S).unwrap();
    clock.advance(S);
    assert_eq!((c.get(&1), c.get(&2)), (Some(1), None));
}

#[test]
fn zero_ttl_is_not_stored_and_supersedes() {
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(10)
        .clock(clock.clone())
        .eviction_listener(move |k, v, cause| s2.lock().unwrap().push((*k, *v, cause)))
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    c.insert_with_ttl(1, 2, Duration::ZERO).unwrap();
    assert_eq!(c.get(&1), None);
    assert_eq!(c.len(), 0);
    assert_eq!(*seen.lock().unwrap(), vec![(1, 1, RemovalCause::Replaced)]);
}

#[test]
fn time_to_idle_is_extended_by_reads() {
    let clock = ManualClock::new();
    let c = cache(&clock, None, Some(10 * S));
    c.insert(1, 1).unwrap();
    for _ in 0..5 {
        clock.advance(9 * S);
        assert_eq!(
            c.get(&1),
            Some(1),
            "a read within the idle time keeps it alive"
        );
    }
    assert!(c.contains_key(&1));
    clock.advance(10 * S);
    assert_eq!(c.get(&1), None, "idle for the full time-to-idle");
}

#[test]
fn contains_key_does_not_extend_idle() {
    let clock = ManualClock::new();
    let c = cache(&clock, None, Some(10 * S));
    c.insert(1, 1).unwrap();
    clock.advance(9 * S);
    assert!(c.contains_key(&1));
    clock.advance(S);
    assert!(!c.contains_key(&1));
}

#[test]
fn ttl_caps_time_to_idle() {
    let clock = ManualClock::new();
    let c = cache(&clock, Some(15 * S), Some(10 * S));
    c.insert(1, 1).unwrap();
    clock.advance(9 * S);
    assert_eq!(c.get(&1), Some(1));
    clock.advance(5 * S); // t = 14 s: idle 5 s, alive 14 s
    assert_eq!(c.get(&1), Some(1));
    clock.advance(S); // t = 15 s: the TTL ends it even though it was read 1 s ago
    assert_eq!(c.get(&1), None);
}

#[test]
fn idle_shorter_than_ttl() {
    let clock = ManualClock::new();
    let c = cache(&clock, Some(100 * S), Some(10 * S));
    c.insert(1, 1).unwrap();
    clock.advance(10 * S);
    assert_eq!(c.get(&1), None, "never read: idle expiry comes first");
}

#[test]
fn an_update_resets_the_deadline() {
    let clock = ManualClock::new();
    let c = cache(&clock, Some(10 * S), None);
    c.insert(1, 1).unwrap();
    clock.advance(9 * S);
    c.insert(1, 2).unwrap();
    clock.advance(9 * S);
    assert_eq!(c.get(&1), Some(2));
}

#[test]
fn replacing_an_expired_entry_reports_it_as_expired() {
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(10)
        .time_to_live(S)
        .clock(clock.clone())
        .eviction_listener(move |k, v, cause| s2.lock().unwrap().push((*k, *v, cause)))
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    clock.advance(S);
    c.insert(1, 2).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(1, 1, RemovalCause::Expired)]);
    let s = c.stats();
    assert_eq!((s.inserts, s.updates, s.expirations), (2, 0, 1));
    // The same through a zero-TTL write, and an expired entry is not offered to (nor
    // removed by) invalidate_if.
    clock.advance(S);
    c.insert_with_ttl(1, 3, Duration::ZERO).unwrap();
    c.insert(2, 2).unwrap();
    clock.advance(S);
    assert_eq!(
        c.invalidate_if(|_, _| true),
        0,
        "2 had expired: nothing to remove"
    );
    c.invalidate_all(); // an expired entry it clears is reported as expired
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (1, 1, RemovalCause::Expired),
            (1, 2, RemovalCause::Expired),
            (2, 2, RemovalCause::Expired)
        ]
    );
}

#[test]
fn clock_near_the_end_of_time() {
    let clock = ManualClock::new();
    clock.set_nanos(u64::MAX - 5);
    let c = cache(
        &clock,
        Some(Duration::MAX),
        Some(Duration::from_secs(u64::MAX)),
    );
    c.insert(1, 1).unwrap();
    c.insert_with_ttl(2, 2, Duration::from_nanos(3)).unwrap();
    clock.advance(Duration::from_nanos(3));
    assert_eq!(
        c.get(&1),
        Some(1),
        "a TTL of Duration::MAX never wraps into the past"
    );
    assert_eq!(c.get(&2), None);
    clock.advance(Duration::MAX);
    assert_eq!(clock.nanos(), u64::MAX);
    assert_eq!(c.get(&1), Some(1), "saturating: never is never");
}

type Seen = Arc<Mutex<Vec<(u32, RemovalCause)>>>;

fn recording(clock: &ManualClock, ttl: Duration) -> (Cache<u32, u32>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let c = Cache::builder()
        .max_capacity(10_000)
        .shards(4)
        .time_to_live(ttl)
        .clock(clock.clone())
        .eviction_listener(move |k, _, cause| s2.lock().unwrap().push((*k, cause)))
        .build()
        .unwrap();
    (c, seen)
}

#[test]
fn an_expired_entry_chosen_as_a_victim_is_reported_expired() {
    let clock = ManualClock::new();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(2)
        .shards(1)
        .time_to_live(S)
        .clock(clock.clone())
        .eviction_listener(move |k, _, cause| s2.lock().unwrap().push((*k, cause)))
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    c.insert(2, 2).unwrap();
    clock.advance(S);
    // The admission of 3 evicts one of the two (both past their deadline) before the write's
    // expiry step runs: it had expired, it was not evicted for size.
    c.insert(3, 3).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|(k, cause)| *k != 3 && *cause == RemovalCause::Expired),
        "{seen:?}"
    );
    assert_eq!(c.stats().evictions, 0);
    assert_eq!(c.stats().expirations, seen.len() as u64);
}

#[test]
fn an_entry_that_expires_during_invalidate_if_or_compute_is_reported_expired() {
    let clock = ManualClock::new();
    let (c, seen) = recording(&clock, 10 * S);
    c.insert(1, 1).unwrap();
    c.insert(2, 2).unwrap();
    // The predicate sees 1 live; it expires before the removal.
    let n = c.invalidate_if(|k, _| {
        if *k == 1 {
            clock.advance(10 * S);
        }
        *k == 1
    });
    assert_eq!(n, 0, "an expired entry is not counted as removed");
    assert_eq!(*seen.lock().unwrap(), vec![(1, RemovalCause::Expired)]);
    seen.lock().unwrap().clear();
    c.insert(3, 3).unwrap();
    let r = c.compute(3, |v| {
        assert_eq!(v, Some(&3));
        clock.advance(10 * S);
        cogwheel::Compute::Remove
    });
    assert_eq!(r.unwrap(), None);
    assert!(
        seen.lock().unwrap().contains(&(3, RemovalCause::Expired)),
        "{:?}",
        seen.lock().unwrap()
    );
    assert_eq!(c.stats().removals, 0);
}

#[test]
fn run_pending_tasks_reclaims_memory_and_fires_the_listener() {
    let clock = ManualClock::new();
    let (c, seen) = recording(&clock, 10 * S);
    for i in 0..100 {
        c.insert(i, i).unwrap();
    }
    clock.advance(5 * S);
    c.run_pending_tasks();
    assert_eq!(c.len(), 100, "nothing is due yet");
    clock.advance(7 * S); // past the deadline and the wheel's 1.07 s tick
    c.run_pending_tasks();
    assert_eq!(c.len(), 0, "maintenance reclaimed every expired entry");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 100);
    assert!(seen.iter().all(|(_, c)| *c == RemovalCause::Expired));
    assert_eq!(c.stats().expirations, 100);
    c.validate_internals();
}

#[test]
fn the_wheel_cascades_across_levels() {
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .clock(clock.clone())
        .eviction_listener(move |k, _, _| s2.lock().unwrap().push(*k))
        .build()
        .unwrap();
    let ttls = [
        2 * S,
        5 * 60 * S,
        3 * 3600 * S,
        3 * 86_400 * S,
        30 * 86_400 * S,
        400 * 86_400 * S,
    ];
    for (i, t) in ttls.iter().enumerate() {
        c.insert_with_ttl(i as u32, i as u32, *t).unwrap();
    }
    // Walk time forward in uneven steps; at each step, exactly the entries whose deadline
    // (plus the wheel's one-tick precision) has passed are gone, and none before its deadline.
    let tick = Duration::from_nanos(1 << 30);
    let mut now = Duration::ZERO;
    for step in [
        S,
        3 * S,
        10 * 60 * S,
        2 * 3600 * S,
        3600 * S,
        86_400 * S,
        2 * 86_400 * S,
        27 * 86_400 * S,
        400 * 86_400 * S,
    ] {
        clock.advance(step);
        now += step;
        c.run_pending_tasks();
        let gone = seen.lock().unwrap().clone();
        for (i, t) in ttls.iter().enumerate() {
            let reclaimed = gone.contains(&(i as u32));
            assert!(
                !reclaimed || *t <= now,
                "entry {i} reclaimed before its deadline"
            );
            if *t + tick <= now {
                assert!(reclaimed, "entry {i} (ttl {t:?}) not reclaimed at {now:?}");
            }
            assert_eq!(c.get(&(i as u32)).is_some(), *t > now);
        }
        c.validate_internals();
    }
    assert_eq!(c.len(), 0);
}

#[test]
fn writes_reclaim_expired_entries_without_maintenance() {
    let clock = ManualClock::new();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(10_000)
        .shards(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..200 {
        c.insert_with_ttl(i, i, S).unwrap();
    }
    clock.advance(3 * S);
    for i in 0..40 {
        c.insert(1000 + i, i).unwrap(); // each write does a budgeted slice of expiry work
    }
    assert_eq!(c.len(), 40, "the writes reclaimed all 200 expired entries");
    assert_eq!(c.stats().expirations, 200);
}

#[test]
fn a_listener_may_call_into_the_cache_during_maintenance() {
    let clock = ManualClock::new();
    let slot: Arc<Mutex<Option<Cache<u32, u32>>>> = Arc::new(Mutex::new(None));
    let s2 = slot.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .time_to_live(S)
        .clock(clock.clone())
        .eviction_listener(move |k, v, _| {
            if let Some(c) = s2.lock().unwrap().as_ref() {
                // Same shard: this would deadlock if maintenance held the shard lock.
                c.insert(k + 100, *v).unwrap();
            }
        })
        .build()
        .unwrap();
    *slot.lock().unwrap() = Some(c.clone());
    c.insert(1, 1).unwrap();
    clock.advance(3 * S);
    c.run_pending_tasks();
    slot.lock().unwrap().take();
    assert_eq!(c.get(&1), None);
    assert_eq!(
        c.get(&101),
        Some(1),
        "the listener's own insert went through"
    );
}

/// A cache with a one-second TTL on a manual clock and a maintenance thread, whose listener
/// sends what it hears (after `hear` has seen the key) to the returned receiver.
fn maintained(
    hear: impl Fn(u32) -> u32 + Send + Sync + 'static,
) -> (
    ManualClock,
    Cache<u32, u32>,
    std::sync::mpsc::Receiver<(u32, RemovalCause)>,
) {
    let clock = ManualClock::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let c = Cache::builder()
        .max_capacity(100)
        .time_to_live(S)
        .clock(clock.clone())
        .maintenance_interval(Duration::from_millis(5))
        .eviction_listener(move |k, _, cause| {
            let heard = (hear(*k), cause); // before the lock: `hear` may panic
            let _ = tx.lock().unwrap().send(heard);
        })
        .build()
        .unwrap();
    (clock, c, rx)
}

#[test]
fn the_maintenance_thread_expires_without_traffic_and_stops_with_the_cache() {
    let (clock, c, rx) = maintained(|k| k);
    c.insert(7, 7).unwrap();
    clock.advance(3 * S);
    // No call into the cache from here on: only the maintenance thread can expire the entry.
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the maintenance thread expired the entry");
    assert_eq!(got, (7, RemovalCause::Expired));
    assert_eq!(c.len(), 0);
    drop(c);
    // The listener (and its sender) is dropped with the cache: the thread held no strong
    // reference, so the channel disconnects.
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
    );
}

#[test]
fn the_maintenance_thread_survives_a_panicking_listener() {
    let (clock, c, rx) = maintained(|k| {
        assert_ne!(k, 13, "a listener that panics");
        k
    });
    c.insert(13, 0).unwrap();
    clock.advance(3 * S);
    // The thread expires 13, and its listener call panics there.
    support::eventually("the maintenance thread to expire 13", || {
        c.is_empty().then_some(())
    });
    c.insert(7, 7).unwrap();
    clock.advance(3 * S);
    // No call into the cache from here on: only a surviving thread can expire 7.
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the maintenance thread died with the listener's panic");
    assert_eq!(got, (7, RemovalCause::Expired));
}

#[test]
fn maintenance_after_the_clock_went_back_returns() {
    let clock = ManualClock::new();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(10_000)
        .shards(1)
        .time_to_live(10 * S)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..2000 {
        c.insert(i, i).unwrap();
    }
    clock.set_nanos(20_000_000_000);
    c.insert(5000, 0).unwrap(); // advances the wheel to 20 s (a budgeted slice)
    clock.set_nanos(5_000_000_000); // a reader of an older `now`
    let c2 = c.clone();
    support::within_a_minute(move || c2.run_pending_tasks());
    assert!(
        c.len() <= 1,
        "everything due by 20 s was reclaimed: {}",
        c.len()
    );
}

#[test]
fn listener_calls_held_back_by_a_panicking_operation_run_later() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h2 = heard.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(1)
        .shards(1)
        .eviction_listener(move |k, _, cause| h2.lock().unwrap().push((*k, cause)))
        .build()
        .unwrap();
    c.insert(0, 0).unwrap();
    let c2 = c.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c2.compute(1, |_| {
            c2.insert(2, 2).unwrap(); // evicts 0 while compute holds listener calls
            panic!("the compute function failed");
        })
    }));
    assert!(r.is_err());
    // The next operation that holds listener calls runs the waiting one.
    c.get_with(3, || 3).unwrap();
    assert!(
        heard.lock().unwrap().contains(&(0, RemovalCause::Evicted)),
        "{:?}",
        heard.lock().unwrap()
    );
}

#[test]
fn iter_does_not_return_entries_that_expired_while_it_ran() {
    let clock = ManualClock::new();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .clock(clock.clone())
        .time_to_live(10 * S)
        .build()
        .unwrap();
    c.insert(1, 1).unwrap();
    c.insert(2, 2).unwrap();
    c.insert_with_ttl(3, 3, 100 * S).unwrap();
    let mut it = c.iter();
    let first = it.next().expect("three live entries");
    clock.advance(10 * S);
    // The shard was copied out before the clock moved: of the rest, only key 3 is live.
    let rest: Vec<_> = it.collect();
    let live: Vec<_> = rest.iter().filter(|(k, _)| *k == 3).collect();
    assert_eq!(rest.len(), live.len(), "expired entries returned: {rest:?}");
    assert_eq!(
        rest.len() + usize::from(first.0 == 3),
        1,
        "key 3 is seen once"
    );
}

#[test]
fn iter_returns_an_entry_whose_idle_deadline_a_read_extended() {
    let clock = ManualClock::new();
    let c = cache(&clock, None, Some(10 * S));
    c.insert(1, 1).unwrap();
    c.insert(2, 2).unwrap();
    let mut it = c.iter();
    let first = it.next().expect("two live entries");
    // Both copies carry the deadline 10 s; a read at 9 s pushes the other key's to 19 s.
    let other = if first.0 == 1 { 2 } else { 1 };
    clock.advance(9 * S);
    assert_eq!(c.get(&other), Some(other));
    clock.advance(5 * S);
    assert_eq!(it.collect::<Vec<_>>(), vec![(other, other)]);
}

#[test]
fn compute_with_a_zero_default_ttl_supersedes_the_old_value() {
    let clock = ManualClock::new();
    let removed = Arc::new(Mutex::new(Vec::new()));
    let log = removed.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .clock(clock.clone())
        .time_to_live(Duration::ZERO)
        .eviction_listener(move |k, v, cause| log.lock().unwrap().push((*k, *v, cause)))
        .build()
        .unwrap();
    c.insert_with_ttl(1, 1, 60 * S).unwrap();
    assert_eq!(c.compute(1, |_| cogwheel::Compute::Put(2)).unwrap(), None);
    assert_eq!(
        c.get(&1),
        None,
        "as insert would, the put removes the old value"
    );
    assert_eq!(
        *removed.lock().unwrap(),
        vec![(1, 1, RemovalCause::Replaced)]
    );
    // Of an absent key: nothing is kept, nothing reported.
    assert_eq!(c.compute(5, |_| cogwheel::Compute::Put(5)).unwrap(), None);
    assert_eq!(removed.lock().unwrap().len(), 1);
}

#[test]
fn a_listener_panicking_on_one_removal_of_a_write_does_not_lose_the_others() {
    let clock = ManualClock::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let c: Cache<u32, u32> = Cache::builder()
        .max_capacity(100)
        .shards(1)
        .clock(clock.clone())
        .eviction_listener(move |k, _, cause| {
            log.lock().unwrap().push((*k, cause));
            assert_ne!(
                cause,
                RemovalCause::Replaced,
                "listener refuses replacements"
            );
        })
        .build()
        .unwrap();
    c.insert_with_ttl(2, 2, S).unwrap();
    c.insert(1, 1).unwrap();
    clock.advance(2 * S);
    // One write, two removals: key 1's old value (replaced, the listener panics) and key 2
    // (expired, reclaimed by the write's expiry step).
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.insert(1, 10)));
    assert!(r.is_err(), "the listener's panic reaches the writer");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|(k, _)| *k);
    assert_eq!(
        seen,
        vec![(1, RemovalCause::Replaced), (2, RemovalCause::Expired)]
    );
    let s = c.stats();
    assert_eq!((s.inserts, s.updates, s.expirations), (2, 1, 1));
    assert_eq!(c.get(&1), Some(10));
}
