//! Write-behind and poison writes: a key the store always refuses goes to the dead-letter
//! hook after `max_attempts` counted failures, an outage does not count, and a flush that
//! gives a write up says so.

use cogwheel::store::{BackingStore, MemoryStore, StoreError, Stored, WriteOp};
use cogwheel::{Cache, DeadLetter, Error, WriteBehind, WritePolicy};
use std::sync::{Arc, Mutex};

fn store_value(store: &MemoryStore<u64, u64>, k: u64) -> Option<u64> {
    store.snapshot().get(&k).map(|s| s.value)
}

/// Dead letters as `(key, what)`.
type Dead = Arc<Mutex<Vec<(u64, DeadLetter<u64>)>>>;

/// A manual write-behind cache over a memory store that always refuses key 13, with its dead
/// letters recorded.
fn poisoned(max_attempts: u32) -> (MemoryStore<u64, u64>, Cache<u64, u64>, Dead) {
    let store = MemoryStore::new();
    let dead: Dead = Arc::default();
    let d2 = dead.clone();
    let c = Cache::builder()
        .max_capacity(1000)
        .store(Poison {
            inner: store.clone(),
            poison: 13,
        })
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default()
                .manual(true)
                .max_attempts(max_attempts),
        ))
        .dead_letter(move |k, op, _| d2.lock().unwrap().push((*k, op)))
        .build()
        .unwrap();
    (store, c, dead)
}

/// A store that always fails writes of one key.
struct Poison {
    inner: MemoryStore<u64, u64>,
    poison: u64,
}

impl BackingStore<u64, u64> for Poison {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        self.inner.load(key)
    }
    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        let bad = ops.iter().any(|op| match op {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => **key == self.poison,
        });
        if bad {
            Err(StoreError::fail("poison"))
        } else {
            self.inner.write_batch(ops)
        }
    }
}

#[test]
fn a_poison_entry_goes_to_the_dead_letter_hook() {
    let (store, c, dead) = poisoned(3);
    for i in 0..20 {
        c.insert(i, i * 10).unwrap();
    }
    let mut tries = 0;
    while c.flush().is_err() {
        tries += 1;
        assert!(tries < 100, "the poison key kept blocking the queue");
    }
    assert_eq!(*dead.lock().unwrap(), vec![(13, DeadLetter::Put(130))]);
    assert_eq!(c.stats().dead_letters, 1);
    for i in (0..20).filter(|i| *i != 13) {
        assert_eq!(store_value(&store, i), Some(i * 10));
    }
}

#[test]
fn a_flush_that_gives_up_a_write_does_not_return_ok() {
    let (store, c, dead) = poisoned(1);
    c.insert(13, 130).unwrap();
    c.insert(14, 140).unwrap();
    let mut results = Vec::new();
    while dead.lock().unwrap().is_empty() {
        results.push(c.flush());
        assert!(results.len() < 100, "13 was never given up");
    }
    // The flush during which 13 was given up stored 14, but 13 is not in the store.
    match results.last().unwrap() {
        Err(Error::Unflushed { pending: 1, .. }) => {}
        other => panic!("expected Unflushed with 1 write, got {other:?}"),
    }
    assert!(results.iter().all(Result::is_err));
    assert_eq!(store_value(&store, 14), Some(140));
    assert_eq!(store_value(&store, 13), None);
    // Nothing is pending any more: the next flush is Ok.
    c.flush().unwrap();
}

#[test]
fn failures_during_an_outage_do_not_count_against_a_suspect() {
    let (store, c, dead) = poisoned(4);
    c.insert(13, 130).unwrap();
    c.insert(1, 10).unwrap();
    // Two failed batches, then key by key: 1 is stored, 13 fails and becomes a suspect; the
    // same flush goes on with 13 alone, which fails again: two counted failures of four.
    let mut flushes = 0;
    while store_value(&store, 1).is_none() {
        assert!(c.flush().is_err());
        flushes += 1;
        assert!(flushes < 100, "1 was never stored");
    }
    assert!(dead.lock().unwrap().is_empty());
    // The store goes down with another write pending: everything fails, in batches, then
    // key by key. None of that is 13's fault.
    store.set_down(true);
    c.insert(2, 20).unwrap();
    for _ in 0..6 {
        assert!(c.flush().is_err());
    }
    assert!(
        dead.lock().unwrap().is_empty(),
        "dead-lettered during an outage"
    );
    // Back up: 2 is stored while 13 fails again (third), then alone (fourth): given up.
    store.set_down(false);
    assert!(c.flush().is_err(), "the flush that gives 13 up reports it");
    assert_eq!(*dead.lock().unwrap(), vec![(13, DeadLetter::Put(130))]);
    assert_eq!(store_value(&store, 2), Some(20));
    c.flush().unwrap();
}

#[test]
fn close_reports_a_write_it_gave_up_even_if_its_last_attempt_succeeded() {
    let store = MemoryStore::new();
    let c: Cache<u64, u64> = Cache::builder()
        .max_capacity(1000)
        .store(Poison {
            inner: store.clone(),
            poison: 13,
        })
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().max_attempts(2).retry_backoff(
                std::time::Duration::from_millis(1),
                std::time::Duration::from_millis(2),
            ),
        ))
        .build()
        .unwrap();
    c.insert(13, 130).unwrap();
    c.insert(1, 10).unwrap();
    // Close retries until 13 is given up; the attempt after that stores nothing and
    // succeeds, but close must still report the write it gave up.
    match c.close() {
        Err(Error::Unflushed { pending: 1, .. }) => {}
        other => panic!("expected Unflushed with the given-up write, got {other:?}"),
    }
    assert_eq!(c.stats().dead_letters, 1);
    assert_eq!(store_value(&store, 1), Some(10));
    // A later close reports the same outcome.
    assert!(matches!(
        c.close(),
        Err(Error::Unflushed { pending: 1, .. })
    ));
}

#[test]
fn a_newer_write_of_a_key_being_given_up_gets_chances_of_its_own() {
    // The store refuses key 13 always; while it refuses 13's first write on its own, a newer
    // write of 13 arrives. The old write's failure must not give the newer one up with it.
    struct Refuses {
        inner: MemoryStore<u64, u64>,
        cache: Arc<std::sync::OnceLock<Cache<u64, u64>>>,
        rewritten: std::sync::atomic::AtomicBool,
    }
    impl BackingStore<u64, u64> for Refuses {
        fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
            self.inner.load(key)
        }
        fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
            let has_13 = ops
                .iter()
                .any(|op| matches!(op, WriteOp::Put { key: 13, .. }));
            if !has_13 {
                return self.inner.write_batch(ops);
            }
            if ops.len() == 1
                && !self
                    .rewritten
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                self.cache.get().unwrap().insert(13, 131).unwrap();
            }
            Err(StoreError::fail("poison"))
        }
    }
    let store = MemoryStore::new();
    let slot: Arc<std::sync::OnceLock<Cache<u64, u64>>> = Arc::default();
    let dead: Dead = Arc::default();
    let d2 = dead.clone();
    let c = Cache::builder()
        .max_capacity(1000)
        .store(Refuses {
            inner: store.clone(),
            cache: slot.clone(),
            rewritten: false.into(),
        })
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().manual(true).max_attempts(1),
        ))
        .dead_letter(move |k, op, _| d2.lock().unwrap().push((*k, op)))
        .build()
        .unwrap();
    let _ = slot.set(c.clone());
    c.insert(13, 130).unwrap();
    c.insert(14, 140).unwrap();
    let mut flushes = 0;
    while dead.lock().unwrap().is_empty() {
        assert!(c.flush().is_err());
        flushes += 1;
        assert!(flushes < 100, "13 was never given up");
        // Another write that succeeds beside 13's, so its failures count (alone, or with
        // every write failing, they would look like an outage).
        c.insert(100 + flushes, 1).unwrap();
    }
    assert_eq!(
        *dead.lock().unwrap(),
        vec![(13, DeadLetter::Put(131))],
        "the newer write was given up with the older one's failures"
    );
    assert_eq!(store_value(&store, 14), Some(140));
    c.flush().unwrap();
    drop(slot);
}
