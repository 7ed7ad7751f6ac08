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
