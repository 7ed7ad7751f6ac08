//! Helpers shared by integration tests: real Redis servers, and a bound on waits that must end.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

/// A key prefix no other test (or earlier run) uses.
pub fn prefix(kind: &str, test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{kind}:{test}:{}:{nanos}:", std::process::id())
}

/// Poll `f` until it gives a value: for a real server that restarts, whose readiness is an
/// external event. Bounded (20 s), so a broken server fails the test instead of hanging it.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = f() {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Run `f` on its own thread and fail (instead of hanging the test run) if it takes longer
/// than a minute: for tests whose bug shows up as a wait that never ends.
pub fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the operation hung (or panicked)")
}

thread_local! {
    static ARMED: std::cell::Cell<Option<(u64, usize)>> = const { std::cell::Cell::new(None) };
}

/// A key whose `Hash` panics on demand, to test what a panicking user key leaves behind. See
/// [`PanicKey::armed`].
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct PanicKey(pub u64);

impl std::hash::Hash for PanicKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        ARMED.with(|a| {
            if let Some((spared, left)) = a.get()
                && self.0 != spared
            {
                if left == 1 {
                    a.set(None);
                    panic!("a key whose Hash panics");
                }
                a.set(Some((spared, left - 1)));
            }
        });
        self.0.hash(h)
    }
}

impl PanicKey {
    /// Run `f` on this thread with hashing armed: the `after`-th hash of a key other than
    /// `spared` (the one `f` writes) panics, so only cache work that hashes *other* keys (a
    /// table rebuild, a write-behind pin check) trips it, midway. Returns `f`'s outcome.
    pub fn armed<T>(spared: u64, after: usize, f: impl FnOnce() -> T) -> std::thread::Result<T> {
        ARMED.with(|a| a.set(Some((spared, after))));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        ARMED.with(|a| a.set(None));
        r
    }
}
