//! loom models of the write-behind wake-up hand-shake (`src/write_behind/wake.rs`): a caller
//! that makes a key dirty looks at an atomic, not the writer's mutex, to decide whether the
//! writer waits for it. A lost wake-up leaves the writer waiting on its condition variable
//! forever, which loom reports as a deadlock.
//!
//! The models mirror the writer thread's two waits (for any dirty key, and for a batch) and
//! the caller's side of `record` (push, increment, `wanted`, notify). Checked against bugs
//! planted by hand (then reverted): with either of the two fences in `wake.rs` removed, loom
//! reports the deadlock in both models.
#![cfg(loom)]

use cogwheel::__loom::{FILLING, IDLE, MpscQueue, Node, Wake};
use loom::sync::atomic::AtomicUsize;
use loom::sync::atomic::Ordering::AcqRel;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

struct Shared {
    queue: MpscQueue<Node<usize>>,
    dirty: AtomicUsize,
    wake: Wake,
    sig: Mutex<()>,
    cv: Condvar,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        queue: MpscQueue::new(),
        dirty: AtomicUsize::new(0),
        wake: Wake::new(),
        sig: Mutex::new(()),
        cv: Condvar::new(),
    })
}

/// The caller's side of `record` for a new dirty key.
fn make_dirty(sh: &Shared, key: usize, batch: usize) {
    sh.queue.push(Arc::new(Node::new(key)));
    let dirty = sh.dirty.fetch_add(1, AcqRel) + 1;
    if sh.wake.wanted(dirty, batch) {
        let _sig = sh.sig.lock().unwrap();
        sh.cv.notify_all();
    }
}

/// Pop every node the queue shows (the writer's round, reduced to counting).
fn drain(sh: &Shared) -> usize {
    let mut n = 0;
    if let Some(mut c) = sh.queue.consumer() {
        while c.pop_wait().is_some() {
            n += 1;
        }
    }
    n
}

/// The writer waits for any dirty key while one caller makes a key dirty: it must wake and
/// find the key.
#[test]
fn wake_idle_writer() {
    loom::model(|| {
        let sh = shared();
        let caller = {
            let sh = Arc::clone(&sh);
            thread::spawn(move || make_dirty(&sh, 1, usize::MAX))
        };
        {
            let mut sig = sh.sig.lock().unwrap();
            loop {
                sh.wake.announce(IDLE, &sh.dirty);
                if !sh.queue.is_empty() {
                    break;
                }
                sig = sh.cv.wait(sig).unwrap();
            }
            sh.wake.done();
        }
        caller.join().unwrap();
        assert_eq!(drain(&sh), 1, "the writer found the dirty key");
    });
}

/// The writer waits for a batch of two while two callers each make a key dirty: it must wake
/// once both are counted.
#[test]
fn wake_filling_writer() {
    loom::model(|| {
        let sh = shared();
        let callers: Vec<_> = (0..2)
            .map(|k| {
                let sh = Arc::clone(&sh);
                thread::spawn(move || make_dirty(&sh, k, 2))
            })
            .collect();
        {
            let mut sig = sh.sig.lock().unwrap();
            while sh.wake.announce(FILLING, &sh.dirty) < 2 {
                sig = sh.cv.wait(sig).unwrap();
            }
            sh.wake.done();
        }
        for c in callers {
            c.join().unwrap();
        }
        assert_eq!(drain(&sh), 2, "both keys were queued");
    });
}
