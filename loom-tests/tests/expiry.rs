//! loom model: a reader racing maintenance that expires the same entry.
#![cfg(loom)]

use cogwheel::{Cache, ManualClock, RemovalCause, fixed_hasher};
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;
use std::time::Duration;

fn spawn<T: 'static>(f: impl FnOnce() -> T + 'static) -> thread::JoinHandle<T> {
    thread::spawn(move || {
        let r = f();
        cogwheel::__loom::release_thread_handles();
        r
    })
}

#[derive(Clone)]
/// The Arc is never read: it is there so loom checks the values for leaks.
#[allow(dead_code)]
struct Val(Arc<AtomicUsize>);

#[test]
fn reader_vs_expiry_by_maintenance() {
    loom::model(|| {
        let clock = ManualClock::new();
        let expired = Arc::new(AtomicUsize::new(0));
        let e2 = expired.clone();
        let c: Cache<u64, Val, _> = Cache::builder()
            .max_capacity(2)
            .shards(1)
            .hasher(fixed_hasher(0))
            .time_to_live(Duration::from_secs(1))
            .clock(clock.clone())
            .eviction_listener(move |_, _, cause| {
                assert_eq!(cause, RemovalCause::Expired);
                e2.fetch_add(1, SeqCst);
            })
            .build()
            .unwrap();
        c.insert(1, Val(Arc::new(AtomicUsize::new(0)))).unwrap();
        c.insert(2, Val(Arc::new(AtomicUsize::new(0)))).unwrap();
        // Past both deadlines and past the wheel's first tick.
        clock.advance(Duration::from_secs(3));
        let m = {
            let c = c.clone();
            spawn(move || c.run_pending_tasks())
        };
        assert!(c.get(&1).is_none(), "an expired entry is never returned");
        assert!(!c.contains_key(&2));
        m.join().unwrap();
        assert_eq!(
            expired.load(SeqCst),
            2,
            "each expired entry reported exactly once"
        );
        assert_eq!(c.len(), 0);
        c.validate_internals();
    });
}
