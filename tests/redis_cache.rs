//! The cache over real Redis servers (started by `.ci/redis.sh`): write-through and
//! write-behind, a server restart in mid-stream, and two caches sharing one Redis.
//!
//!     bash .ci/redis.sh cargo test --features redis --test redis_cache
//!
//! Without `COGWHEEL_REDIS_URL` each test prints why it is skipped and passes.
#![cfg(feature = "redis")]

mod support;

use support::eventually;

use cogwheel::store::{BackingStore, RedisConfig, RedisStore};
use cogwheel::{Cache, Error, WriteBehind, WritePolicy};
use std::time::Duration;

type Store = RedisStore<String, String>;

fn url() -> Option<String> {
    let u = std::env::var("COGWHEEL_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if u.is_none() {
        println!("skipped: COGWHEEL_REDIS_URL not set (run through .ci/redis.sh)");
    }
    u
}

fn prefix(test: &str) -> String {
    support::prefix("cwcache", test)
}

fn store(url: &str, prefix: &str) -> Store {
    Store::open(RedisConfig::single(url).prefix(prefix.to_string())).unwrap()
}

#[test]
fn write_through_and_read_through() {
    let Some(url) = url() else { return };
    let p = prefix("wt");
    let c: Cache<String, String> = Cache::builder()
        .max_capacity(100)
        .store(store(&url, &p))
        .build()
        .unwrap();
    c.insert("a".into(), "1".into()).unwrap();
    let check = store(&url, &p);
    assert_eq!(
        check
            .load(&"a".to_string())
            .unwrap()
            .map(|s| s.value)
            .as_deref(),
        Some("1")
    );
    c.invalidate_all(); // cache only
    assert_eq!(
        c.fetch("a").unwrap().as_deref(),
        Some("1"),
        "read through from Redis"
    );
    assert_eq!(c.remove("a").unwrap().as_deref(), Some("1"));
    assert_eq!(
        check.load(&"a".to_string()).unwrap(),
        None,
        "remove reached Redis"
    );
    assert_eq!(c.fetch("a").unwrap(), None);
}

#[test]
fn two_caches_share_one_redis_through_read_through() {
    let Some(url) = url() else { return };
    let p = prefix("share");
    let a: Cache<String, String> = Cache::builder()
        .max_capacity(100)
        .store(store(&url, &p))
        .build()
        .unwrap();
    let b: Cache<String, String> = Cache::builder()
        .max_capacity(100)
        .store(store(&url, &p))
        .build()
        .unwrap();
    a.insert("k".into(), "from a".into()).unwrap();
    assert_eq!(b.get("k"), None, "not in b's memory");
    assert_eq!(
        b.fetch("k").unwrap().as_deref(),
        Some("from a"),
        "b reads a's write through Redis"
    );
    b.insert("j".into(), "from b".into()).unwrap();
    assert_eq!(a.fetch("j").unwrap().as_deref(), Some("from b"));
}

#[test]
fn write_behind_into_redis() {
    let Some(url) = url() else { return };
    let p = prefix("wb");
    let c: Cache<String, String> = Cache::builder()
        .max_capacity(1000)
        .store(store(&url, &p))
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default().max_batch(64),
        ))
        .build()
        .unwrap();
    for i in 0..300 {
        c.insert(format!("k{}", i % 100), format!("v{i}")).unwrap();
    }
    c.remove("k7").unwrap();
    c.flush().unwrap();
    let check = store(&url, &p);
    for i in 0..100 {
        let want = (i != 7).then(|| format!("v{}", 200 + i));
        assert_eq!(
            check.load(&format!("k{i}")).unwrap().map(|s| s.value),
            want,
            "k{i}"
        );
    }
}

#[test]
fn a_server_crash_loses_nothing_flushed_or_pending() {
    let vars = ["URL", "PORT", "DIR", "RESTART_CMD"]
        .map(|v| std::env::var(format!("COGWHEEL_REDIS_DURABLE_{v}")));
    let [Ok(url), Ok(port), Ok(dir), Ok(restart)] = vars else {
        println!("skipped: COGWHEEL_REDIS_DURABLE_* not set (run through .ci/redis.sh)");
        return;
    };
    let p = prefix("crash");
    let c: Cache<String, String> = Cache::builder()
        .max_capacity(1000)
        .store(store(&url, &p))
        .write_policy(WritePolicy::WriteBehind(
            WriteBehind::default()
                .retry_backoff(Duration::from_millis(5), Duration::from_millis(50)),
        ))
        .build()
        .unwrap();
    for i in 0..20 {
        c.insert(format!("k{i}"), format!("v{i}")).unwrap();
    }
    c.flush().unwrap();
    // The server crashes (SIGKILL) mid-stream; the cache keeps acknowledging writes in memory.
    let pid = std::fs::read_to_string(format!("{dir}/redis.pid")).expect("pid file");
    assert!(
        std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success()
    );
    eventually("the server to die", || {
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
            .is_err()
            .then_some(())
    });
    for i in 20..40 {
        c.insert(format!("k{i}"), format!("v{i}")).unwrap();
    }
    assert!(
        matches!(c.flush(), Err(Error::Unflushed { .. })),
        "flush reports the pending writes"
    );
    assert!(c.dirty_count() > 0);
    assert!(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&restart)
            .status()
            .unwrap()
            .success()
    );
    eventually("the flush to succeed after the restart", || c.flush().ok());
    assert_eq!(c.dirty_count(), 0);
    assert_eq!(c.stats().dead_letters, 0, "a down server is not poison");
    // Everything flushed before the crash survived it (the server fsyncs its append-only
    // file), and everything pending at the crash was written once it came back.
    let check = store(&url, &p);
    for i in 0..40 {
        assert_eq!(
            check.load(&format!("k{i}")).unwrap().map(|s| s.value),
            Some(format!("v{i}")),
            "k{i}"
        );
    }
}
