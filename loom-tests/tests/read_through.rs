//! loom model of read-through (`fetch`, write-through store) racing a `remove`: a load that
//! a write invalidated must not hand its value to a caller who arrives after the write.
#![cfg(loom)]

use cogwheel::store::{BackingStore, StoreError, Stored, WriteOp};
use cogwheel::{Cache, fixed_hasher};
use loom::sync::{Arc, Mutex};
use loom::thread;
use std::collections::HashMap;

/// A store on loom's mutex, so the model sees loads and deletes race.
#[derive(Clone, Default)]
struct LoomStore(Arc<Mutex<HashMap<u64, u64>>>);

impl BackingStore<u64, u64> for LoomStore {
    fn load(&self, key: &u64) -> Result<Option<Stored<u64>>, StoreError> {
        let v = self.0.lock().unwrap().get(key).copied();
        Ok(v.map(|value| Stored {
            value,
            expires_at: None,
        }))
    }
    fn write_batch(&self, ops: &[WriteOp<'_, u64, u64>]) -> Result<(), StoreError> {
        let mut m = self.0.lock().unwrap();
        for op in ops {
            match op {
                WriteOp::Put { key, value, .. } => {
                    m.insert(**key, **value);
                }
                WriteOp::Delete { key } => {
                    m.remove(*key);
                }
            }
        }
        Ok(())
    }
}

#[test]
fn a_fetch_after_a_remove_never_joins_a_stale_load() {
    loom::model(|| {
        let store = LoomStore::default();
        store.0.lock().unwrap().insert(1, 10);
        let c: Cache<u64, u64, ahash::RandomState> = Cache::builder()
            .max_capacity(4)
            .shards(1)
            .hasher(fixed_hasher(0))
            .store(store.clone())
            .build()
            .unwrap();
        let early = {
            let c = c.clone();
            thread::spawn(move || {
                let r = c.fetch(&1).unwrap();
                cogwheel::__loom::release_thread_handles();
                r
            })
        };
        c.remove(&1).unwrap();
        // Arrives after the remove returned: the store no longer holds the key.
        assert_eq!(c.fetch(&1).unwrap(), None, "a removed value came back");
        let r = early.join().unwrap();
        assert!(r == Some(10) || r.is_none());
        assert_eq!(c.get(&1), None);
        cogwheel::__loom::release_thread_handles();
    });
}
