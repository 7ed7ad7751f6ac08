//! Expiry on the read path, with a manual clock (no sleeps).

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
