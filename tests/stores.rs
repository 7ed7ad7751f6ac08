//! Contract tests for the in-process stores: the same checks run against `MemoryStore` and
//! `RedbStore`, then store-specific ones (fault injection; redb open errors).

mod support;

use cogwheel::store::{
    Applied, AppliedOp, BackingStore, FaultKind, Faults, MemoryStore, StoreErrorKind, Stored,
    WriteOp,
};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

fn put<'a, K, V>(key: &'a K, value: &'a V) -> WriteOp<'a, K, V> {
    WriteOp::Put {
        key,
        value,
        expires_at: None,
    }
}

fn put_ttl<'a, K, V>(key: &'a K, value: &'a V, at: SystemTime) -> WriteOp<'a, K, V> {
    WriteOp::Put {
        key,
        value,
        expires_at: Some(at),
    }
}

fn del<K, V>(key: &K) -> WriteOp<'_, K, V> {
    WriteOp::Delete { key }
}

fn scan_all<S: BackingStore<String, String>>(s: &S) -> BTreeMap<String, Stored<String>> {
    let mut out = BTreeMap::new();
    s.scan(&mut |item| {
        let (k, v) = item.unwrap();
        out.insert(k, v);
        true
    })
    .unwrap();
    out
}

/// The behaviour every store must share.
fn contract<S: BackingStore<String, String>>(s: &S) {
    let (a, b, c) = ("a".to_string(), "b".to_string(), "c".to_string());
    let (one, two, three) = ("1".to_string(), "2".to_string(), "3".to_string());

    // Round trip, and a miss is Ok(None).
    assert_eq!(s.load(&a).unwrap(), None);
    s.write_batch(&[put(&a, &one)]).unwrap();
    assert_eq!(
        s.load(&a).unwrap(),
        Some(Stored {
            value: one.clone(),
            expires_at: None
        })
    );

    // Ordered batch: the last op on a key wins.
    s.write_batch(&[put(&b, &one), put(&b, &two), del(&b), put(&b, &three)])
        .unwrap();
    assert_eq!(s.load(&b).unwrap().unwrap().value, three);
    s.write_batch(&[put(&c, &one), del(&c)]).unwrap();
    assert_eq!(s.load(&c).unwrap(), None);

    // Deleting an absent key is not an error.
    s.write_batch(&[del(&"never".to_string())]).unwrap();
    s.write_batch(&[]).unwrap();

    // Deadlines round-trip exactly (to the nanosecond); an expired entry is a miss.
    let later = SystemTime::now() + Duration::new(3600, 123_456_789);
    let past = SystemTime::now() - Duration::from_secs(1);
    let (t, x) = ("ttl".to_string(), "expired".to_string());
    s.write_batch(&[put_ttl(&t, &two, later), put_ttl(&x, &two, past)])
        .unwrap();
    assert_eq!(
        s.load(&t).unwrap(),
        Some(Stored {
            value: two.clone(),
            expires_at: Some(later)
        })
    );
    assert_eq!(s.load(&x).unwrap(), None);

    // Scan sees every live entry, skips the expired one, and stops when told to.
    let all = scan_all(s);
    assert_eq!(
        all.keys().cloned().collect::<Vec<_>>(),
        vec![a.clone(), b.clone(), t.clone()]
    );
    assert_eq!(all[&t].expires_at, Some(later));
    let mut seen = 0;
    s.scan(&mut |_| {
        seen += 1;
        false
    })
    .unwrap();
    assert_eq!(seen, 1);
}

#[test]
fn memory_store_contract() {
    contract(&MemoryStore::new());
}

#[test]
fn memory_store_records_applied_ops_in_order() {
    let s: MemoryStore<u32, u32> = MemoryStore::new();
    s.write_batch(&[put(&1, &10), del(&2), put(&1, &11)])
        .unwrap();
    s.write_batch(&[del(&1)]).unwrap();
    assert_eq!(
        s.applied_ops(),
        vec![
            AppliedOp::Put {
                key: 1,
                value: 10,
                expires_at: None
            },
            AppliedOp::Delete { key: 2 },
            AppliedOp::Put {
                key: 1,
                value: 11,
                expires_at: None
            },
            AppliedOp::Delete { key: 1 },
        ]
    );
    assert!(s.snapshot().is_empty());
    let c = s.calls();
    assert_eq!((c.loads, c.write_batches, c.scans, c.errors), (0, 2, 0, 0));
}

/// Which of 200 calls fail, as a bit pattern.
fn failure_pattern(seed: u64, percent: u8) -> Vec<bool> {
    let s: MemoryStore<u32, u32> = MemoryStore::new();
    s.set_faults(Faults::failing(percent, FaultKind::Fail, seed));
    (0..200)
        .map(|i| s.write_batch(&[put(&i, &i)]).is_err())
        .collect()
}

#[test]
fn memory_faults_are_seeded_and_deterministic() {
    let a = failure_pattern(42, 30);
    assert_eq!(a, failure_pattern(42, 30), "same seed, same failures");
    assert_ne!(a, failure_pattern(43, 30), "another seed, other failures");
    let failed = a.iter().filter(|f| **f).count();
    assert!(
        (30..=90).contains(&failed),
        "about 30% of 200 should fail, got {failed}"
    );
    assert!(failure_pattern(1, 0).iter().all(|f| !f));
    assert!(failure_pattern(1, 100).iter().all(|f| *f));
}

#[test]
fn memory_fail_applies_nothing() {
    let s: MemoryStore<u32, u32> = MemoryStore::new();
    s.set_faults(Faults::failing(100, FaultKind::Fail, 0));
    let e = s.write_batch(&[put(&1, &1), put(&2, &2)]).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Fail);
    assert!(s.snapshot().is_empty());
    assert!(s.applied_ops().is_empty());
    assert_eq!(s.load(&1).unwrap_err().kind(), StoreErrorKind::Fail);
    assert_eq!(s.calls().errors, 2);
}

#[test]
fn memory_unknown_can_apply_nothing_all_or_a_prefix() {
    for (applied, expect) in [
        (Applied::Nothing, vec![]),
        (Applied::All, vec![1, 2, 3]),
        (Applied::Prefix(2), vec![1, 2]),
    ] {
        let s: MemoryStore<u32, u32> = MemoryStore::new();
        s.set_faults(Faults::failing(100, FaultKind::Unknown { applied }, 0).writes_only());
        let e = s
            .write_batch(&[put(&1, &1), put(&2, &2), put(&3, &3)])
            .unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Unknown);
        let mut keys: Vec<u32> = s.snapshot().into_keys().collect();
        keys.sort();
        assert_eq!(keys, expect, "{applied:?}");
        assert_eq!(s.applied_ops().len(), expect.len());
        // Loads are not subject to the fault programme (writes_only).
        s.load(&1).unwrap();
    }
}

#[test]
fn memory_down_and_back_up() {
    let s: MemoryStore<u32, u32> = MemoryStore::new();
    s.write_batch(&[put(&1, &1)]).unwrap();
    s.set_down(true);
    assert!(s.is_down());
    assert_eq!(
        s.write_batch(&[put(&2, &2)]).unwrap_err().kind(),
        StoreErrorKind::Fail
    );
    assert_eq!(s.load(&1).unwrap_err().kind(), StoreErrorKind::Fail);
    assert_eq!(
        s.scan(&mut |_| true).unwrap_err().kind(),
        StoreErrorKind::Fail
    );
    s.set_down(false);
    assert_eq!(s.load(&1).unwrap().unwrap().value, 1);
    assert_eq!(s.load(&2).unwrap(), None);
}

#[test]
fn memory_hang_blocks_until_released() {
    let s: MemoryStore<u32, u32> = MemoryStore::new();
    s.hang();
    let bg = {
        let s = s.clone();
        std::thread::spawn(move || s.write_batch(&[put(&1, &1)]))
    };
    s.wait_for_hung_calls(1);
    assert_eq!(s.hung_calls(), 1);
    assert!(s.snapshot().is_empty(), "a hung call applies nothing yet");
    s.release();
    bg.join().unwrap().unwrap();
    assert_eq!(s.hung_calls(), 0);
    assert_eq!(s.snapshot()[&1].value, 1);
}

#[test]
fn memory_hang_then_down_fails_the_blocked_call() {
    let s: MemoryStore<u32, u32> = MemoryStore::new();
    s.hang();
    let bg = {
        let s = s.clone();
        std::thread::spawn(move || s.load(&1))
    };
    s.wait_for_hung_calls(1);
    s.set_down(true);
    assert_eq!(bg.join().unwrap().unwrap_err().kind(), StoreErrorKind::Fail);
}

#[test]
fn memory_latency_is_added() {
    let s: MemoryStore<u32, u32> = MemoryStore::new();
    s.set_latency(Some(Duration::from_millis(20)));
    let t = std::time::Instant::now();
    s.write_batch(&[put(&1, &1)]).unwrap();
    // A lower bound only (sleep never returns early); no upper timing threshold.
    assert!(t.elapsed() >= Duration::from_millis(20));
    s.clear_faults();
    assert_eq!(s.faults(), Faults::default());
}

#[test]
fn memory_fixed_now_decides_expiry() {
    let s: MemoryStore<u32, u32> = MemoryStore::new();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    s.set_now(Some(t0));
    s.write_batch(&[put_ttl(&1, &1, t0 + Duration::from_secs(10))])
        .unwrap();
    assert!(s.load(&1).unwrap().is_some());
    s.set_now(Some(t0 + Duration::from_secs(10)));
    assert_eq!(s.load(&1).unwrap(), None, "expired exactly at the deadline");
    assert_eq!(s.len(), 1, "still held, just not served");
}

#[cfg(feature = "redb")]
mod redb_store {
    use super::*;
    use cogwheel::store::redb::{OpenError, STORE_FORMAT_VERSION};
    use cogwheel::store::{PostcardCodec, RedbStore, StoreError};
    use std::path::Path;

    type Store = RedbStore<String, String>;

    #[test]
    fn redb_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        contract(&Store::open(dir.path().join("c.redb")).unwrap());
    }

    #[test]
    fn dropping_the_last_handle_during_a_maintenance_run_closes_the_store_before_it_returns() {
        use cogwheel::{Cache, ManualClock, RemovalCause, WriteBehind, WritePolicy};
        use std::sync::{Mutex, mpsc};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        let (entered_tx, entered) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let clock = ManualClock::new();
        let cache: Cache<String, String> = Cache::builder()
            .max_capacity(10)
            .clock(clock.clone())
            .store(Store::open(&path).unwrap())
            .write_policy(WritePolicy::WriteBehind(WriteBehind::default()))
            .maintenance_interval(Duration::from_millis(1))
            .eviction_listener(move |_, _, cause| {
                if cause == RemovalCause::Expired {
                    entered_tx.send(()).unwrap();
                    let _ = go_rx.lock().unwrap().recv();
                }
            })
            .build()
            .unwrap();
        cache.insert("kept".into(), "v".into()).unwrap();
        cache
            .insert_with_ttl("brief".into(), "v".into(), Duration::from_secs(1))
            .unwrap();
        clock.advance(Duration::from_secs(2));
        // The maintenance thread is now inside a run (holding the cache) and in the listener.
        entered.recv().unwrap();
        let dropper = std::thread::spawn(move || {
            drop(cache);
            // The drop drained the write-behind queue and closed the file before returning.
            let s = Store::open(&path).map_err(|e| e.to_string())?;
            Ok::<_, String>(s.load(&"kept".to_string()).unwrap().map(|st| st.value))
        });
        go.send(()).unwrap();
        assert_eq!(dropper.join().unwrap(), Ok(Some("v".to_string())));
    }

    #[test]
    fn expired_records_are_purged_from_the_file_while_the_cache_runs() {
        use cogwheel::{Cache, ManualClock};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.redb");
        let clock = ManualClock::new();
        let cache: Cache<String, String> = Cache::builder()
            .max_capacity(10)
            .clock(clock.clone())
            .store(Store::open(&path).unwrap())
            .build()
            .unwrap();
        for i in 0..100 {
            let k = format!("session{i}");
            cache
                .insert_with_ttl(k, "v".into(), Duration::from_secs(60))
                .unwrap();
        }
        cache
            .insert_with_ttl("long".into(), "v".into(), Duration::from_secs(3600))
            .unwrap();
        assert_eq!(
            cache.purge_expired_records().unwrap(),
            0,
            "nothing expired yet"
        );
        clock.advance(Duration::from_secs(61));
        assert_eq!(cache.purge_expired_records().unwrap(), 100);
        assert_eq!(cache.fetch("long").unwrap().as_deref(), Some("v"));
        drop(cache);
        // Only the hour-long record is left in the file.
        let s = Store::open(&path).unwrap();
        let far = SystemTime::now() + Duration::from_secs(10 * 365 * 24 * 3600);
        assert_eq!(s.purge_expired(far).unwrap(), 1);
    }

    #[test]
    fn the_maintenance_thread_purges_the_store_on_its_period() {
        use cogwheel::{Cache, ManualClock};
        let store = MemoryStore::new();
        let clock = ManualClock::new();
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(10)
            .clock(clock.clone())
            .store(store.clone())
            .maintenance_interval(Duration::from_millis(1))
            .purge_store_every(Duration::from_secs(3600))
            .build()
            .unwrap();
        cache
            .insert_with_ttl(1, 1, Duration::from_secs(60))
            .unwrap();
        cache.insert(2, 2).unwrap();
        assert_eq!(store.len(), 2);
        clock.advance(Duration::from_secs(3600));
        support::eventually("the expired record is purged", || {
            (store.len() == 1).then_some(())
        });
        assert!(store.snapshot().contains_key(&2));
    }

    #[test]
    fn redb_survives_reopen_and_scans_for_warm_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.redb");
        let later = SystemTime::now() + Duration::from_secs(600);
        {
            let s = Store::open(&path).unwrap();
            let keys: Vec<String> = (0..100).map(|i| format!("k{i:03}")).collect();
            let vals: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
            let ops: Vec<_> = keys
                .iter()
                .zip(&vals)
                .map(|(k, v)| put_ttl(k, v, later))
                .collect();
            s.write_batch(&ops).unwrap();
            s.write_batch(&[del(&keys[5])]).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all = scan_all(&s);
        assert_eq!(all.len(), 99);
        assert!(!all.contains_key("k005"));
        assert_eq!(
            all["k042"],
            Stored {
                value: "v42".into(),
                expires_at: Some(later)
            }
        );
    }

    #[test]
    fn redb_purge_expired() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().join("p.redb")).unwrap();
        let now = SystemTime::now();
        let (a, b, c) = ("a".to_string(), "b".to_string(), "c".to_string());
        s.write_batch(&[
            put_ttl(&a, &a, now - Duration::from_secs(1)),
            put_ttl(&b, &b, now + Duration::from_secs(60)),
            put(&c, &c),
        ])
        .unwrap();
        assert_eq!(s.purge_expired(now).unwrap(), 1);
        assert_eq!(scan_all(&s).len(), 2);
        // Across several of the purge's chunks: every other one of 2,500 records expired.
        let keys: Vec<String> = (0..2500).map(|i| format!("k{i:04}")).collect();
        let ops: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let at = if i % 2 == 0 {
                    now - Duration::from_secs(1)
                } else {
                    now + Duration::from_secs(60)
                };
                put_ttl(k, k, at)
            })
            .collect();
        s.write_batch(&ops).unwrap();
        assert_eq!(s.purge_expired(now).unwrap(), 1250);
        assert_eq!(scan_all(&s).len(), 2 + 1250);
        assert_eq!(s.purge_expired(now).unwrap(), 0);
    }

    #[test]
    fn redb_second_handle_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let _first = Store::open(&path).unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, OpenError::Locked { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("locked") && msg.contains("l.redb"), "{msg}");
        let se: StoreError = e.into();
        assert_eq!(se.kind(), StoreErrorKind::Fail);
        assert!(se.message().contains("locked"));
    }

    #[test]
    fn redb_file_locked_by_another_process() {
        // A child process (this test binary, re-run on a hidden test) holds the file open.
        if let Ok(path) = std::env::var("COGWHEEL_HOLD_REDB") {
            let _s = Store::open(&path).unwrap();
            println!("HOLDING");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            return;
        }
        use std::io::{BufRead, BufReader, Write};
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.redb");
        drop(Store::open(&path).unwrap());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "redb_store::redb_file_locked_by_another_process",
                "--nocapture",
            ])
            .env("COGWHEEL_HOLD_REDB", &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("HOLDING") {
            line.clear();
            assert_ne!(
                out.read_line(&mut line).unwrap(),
                0,
                "child exited before holding"
            );
        }
        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, OpenError::Locked { .. }), "{e:?}");
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        assert!(child.wait().unwrap().success());
        Store::open(&path).unwrap();
    }

    #[test]
    fn redb_corrupt_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in [
            ("garbage.redb", vec![0xAB; 8192]),
            ("short.redb", b"not a database".to_vec()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &bytes).unwrap();
            let e = Store::open(&path).unwrap_err();
            assert!(matches!(e, OpenError::Corrupt { .. }), "{name}: {e:?}");
            assert!(e.to_string().contains("corrupt"), "{e}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{name} left untouched"
            );
        }
    }

    #[test]
    fn redb_damaged_header_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        {
            let s = Store::open(&path).unwrap();
            s.write_batch(&[put(&"k".to_string(), &"v".to_string())])
                .unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0xFF; // the magic number
        std::fs::write(&path, &bytes).unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, OpenError::Corrupt { .. }), "{e:?}");
    }

    fn write_meta(path: &Path, version: Option<u32>, codec: &str) {
        use redb::{Database, TableDefinition};
        let meta: TableDefinition<&str, &[u8]> = TableDefinition::new("cogwheel.meta");
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(meta).unwrap();
            match version {
                Some(v) => {
                    t.insert("format_version", v.to_le_bytes().as_slice())
                        .unwrap();
                }
                None => {
                    t.remove("format_version").unwrap();
                }
            }
            t.insert("codec", codec.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn redb_version_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.redb");
        drop(Store::open(&path).unwrap());
        write_meta(&path, Some(STORE_FORMAT_VERSION + 1), "postcard-v1");
        let e = Store::open(&path).unwrap_err();
        match &e {
            OpenError::IncompatibleVersion {
                found, expected, ..
            } => {
                assert_eq!(
                    (*found, *expected),
                    (STORE_FORMAT_VERSION + 1, STORE_FORMAT_VERSION)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .contains("incompatible store format version 2"),
            "{e}"
        );
    }

    #[test]
    fn redb_codec_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codec.redb");
        drop(Store::open(&path).unwrap());
        write_meta(&path, Some(STORE_FORMAT_VERSION), "json-v9");
        let e = RedbStore::<String, String, _>::open_with_codec(&path, PostcardCodec::new())
            .unwrap_err();
        assert!(matches!(e, OpenError::IncompatibleCodec { .. }), "{e:?}");
        assert!(e.to_string().contains("json-v9"), "{e}");
    }

    #[test]
    fn redb_foreign_database_is_not_touched() {
        use redb::{Database, TableDefinition};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foreign.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(TableDefinition::<u64, u64>::new("theirs"))
                .unwrap()
                .insert(1, 2)
                .unwrap();
            txn.commit().unwrap();
        }
        let e = Store::open(&path).unwrap_err();
        assert!(matches!(e, OpenError::NotACogwheelStore { .. }), "{e:?}");
        // Missing version record in a cogwheel meta table is reported the same way.
        let path2 = dir.path().join("nover.redb");
        write_meta(&path2, None, "postcard-v1");
        assert!(matches!(
            Store::open(&path2).unwrap_err(),
            OpenError::NotACogwheelStore { .. }
        ));
    }

    #[test]
    fn redb_corrupt_record_is_a_fail_error_not_a_panic_and_does_not_stop_a_warm_restart() {
        use redb::{Database, TableDefinition};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        {
            let s = Store::open(&path).unwrap();
            let ops: Vec<(String, String)> = (0..10)
                .map(|i| (format!("k{i}"), format!("v{i}")))
                .collect();
            let puts: Vec<_> = ops.iter().map(|(k, v)| put(k, v)).collect();
            s.write_batch(&puts).unwrap();
        }
        let codec = PostcardCodec::new();
        use cogwheel::store::Codec;
        let k = codec.encode_key("bad").unwrap();
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let data: TableDefinition<&[u8], &[u8]> = TableDefinition::new("cogwheel.data");
            txn.open_table(data)
                .unwrap()
                .insert(k.as_slice(), [7u8, 0, 1].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let s = Store::open(&path).unwrap();
        let e = s.load(&"bad".to_string()).unwrap_err();
        assert_eq!(e.kind(), StoreErrorKind::Fail);
        assert!(e.message().contains("format version 7"), "{e}");
        let (mut good, mut bad) = (0, Vec::new());
        s.scan(&mut |item| {
            match item {
                Ok(_) => good += 1,
                Err(e) => bad.push(e),
            }
            true
        })
        .unwrap();
        assert_eq!(good, 10, "the bad record hid good ones");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].kind(), StoreErrorKind::Fail);
        drop(s);

        // A warm restart loads the good records and counts the bad one.
        let c: cogwheel::Cache<String, String> = cogwheel::Cache::builder()
            .max_capacity(100)
            .store(Store::open(&path).unwrap())
            .preload(true)
            .build()
            .expect("one bad record must not fail the build");
        assert_eq!(c.len(), 10);
        assert_eq!(c.get("k3").as_deref(), Some("v3"));
        c.invalidate_all();
        let p = c.preload(|_, _| true, |_| {}).unwrap();
        assert_eq!((p.scanned, p.loaded, p.corrupt), (11, 10, 1));
    }

    #[test]
    fn redb_concurrent_batches_from_threads() {
        let dir = tempfile::tempdir().unwrap();
        let s =
            std::sync::Arc::new(RedbStore::<u32, u64>::open(dir.path().join("t.redb")).unwrap());
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..25u32 {
                        let k = t * 1000 + i;
                        let v = u64::from(k) * 2;
                        s.write_batch(&[put(&k, &v)]).unwrap();
                        assert_eq!(s.load(&k).unwrap().unwrap().value, v);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut n = 0;
        s.scan(&mut |item| {
            let (k, v) = item.unwrap();
            assert_eq!(v.value, u64::from(k) * 2);
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 100);
    }
}

mod model {
    //! Random batches against a `BTreeMap` reference: after every batch, each store holds
    //! exactly what the model says (per-key order inside a batch included).
    use super::*;
    use proptest::prelude::*;

    type Batch = Vec<(u8, Option<u16>)>;

    fn apply_model(model: &mut BTreeMap<u8, u16>, batch: &Batch) {
        for (k, v) in batch {
            match v {
                Some(v) => model.insert(*k, *v),
                None => model.remove(k),
            };
        }
    }

    fn check<S: BackingStore<u8, u16>>(s: &S, batches: &[Batch]) {
        let mut model = BTreeMap::new();
        for batch in batches {
            let ops: Vec<WriteOp<'_, u8, u16>> = batch
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => WriteOp::Put {
                        key: k,
                        value: v,
                        expires_at: None,
                    },
                    None => WriteOp::Delete { key: k },
                })
                .collect();
            s.write_batch(&ops).unwrap();
            apply_model(&mut model, batch);
            for k in 0..16u8 {
                assert_eq!(
                    s.load(&k).unwrap().map(|st| st.value),
                    model.get(&k).copied(),
                    "{k}"
                );
            }
        }
        let mut scanned = BTreeMap::new();
        s.scan(&mut |item| {
            let (k, v) = item.unwrap();
            assert!(scanned.insert(k, v.value).is_none());
            true
        })
        .unwrap();
        assert_eq!(scanned, model);
    }

    fn batches() -> impl Strategy<Value = Vec<Batch>> {
        let op = (0..16u8, proptest::option::weighted(0.7, any::<u16>()));
        proptest::collection::vec(proptest::collection::vec(op, 0..12), 1..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn memory_store_matches_the_model(b in batches()) {
            check(&MemoryStore::new(), &b);
        }
    }

    #[cfg(feature = "redb")]
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn redb_store_matches_the_model(b in batches()) {
            let dir = tempfile::tempdir().unwrap();
            check(&cogwheel::store::RedbStore::open(dir.path().join("m.redb")).unwrap(), &b);
        }
    }
}

/// A store whose `purge_expired` blocks until released (a hung disk or network).
struct HungPurge {
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl BackingStore<u64, u64> for HungPurge {
    fn load(&self, _: &u64) -> Result<Option<Stored<u64>>, cogwheel::store::StoreError> {
        Ok(None)
    }
    fn write_batch(&self, _: &[WriteOp<'_, u64, u64>]) -> Result<(), cogwheel::store::StoreError> {
        Ok(())
    }
    fn purge_expired(&self, _: SystemTime) -> Result<usize, cogwheel::store::StoreError> {
        let _ = self.entered.lock().unwrap().send(());
        let _ = self.release.lock().unwrap().recv();
        Ok(0)
    }
}

#[test]
fn dropping_the_last_handle_does_not_wait_forever_for_a_hung_purge() {
    use cogwheel::{Cache, ManualClock};
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .clock(clock.clone())
        .store(HungPurge {
            entered: std::sync::Mutex::new(entered_tx),
            release: std::sync::Mutex::new(release_rx),
        })
        .maintenance_interval(Duration::from_millis(1))
        .purge_store_every(Duration::from_secs(1))
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(2));
    entered.recv().unwrap(); // the maintenance thread is stuck in the store
    // The drop waits a while for the run, then leaves it to finish on its own thread.
    support::within_a_minute(move || drop(cache));
    release.send(()).unwrap();
}

#[test]
fn a_memory_store_purge_goes_through_its_fault_injection() {
    let store: MemoryStore<u64, u64> = MemoryStore::new();
    let past = SystemTime::now() - Duration::from_secs(1);
    store.insert(1, 1, Some(past));
    store.insert(2, 2, None);
    store.set_down(true);
    assert!(
        store.purge_expired(SystemTime::now()).is_err(),
        "a down store purges nothing"
    );
    assert_eq!(store.len(), 2);
    store.set_down(false);
    store.clear_applied_ops();
    assert_eq!(store.purge_expired(SystemTime::now()).unwrap(), 1);
    assert_eq!(store.applied_ops(), vec![AppliedOp::Delete { key: 1 }]);
    assert_eq!(store.len(), 1);
}
