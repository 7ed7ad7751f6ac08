//! `write_behind ceiling ROUNDS`: what the cheapest possible write-behind costs the caller on
//! this machine, next to the real one, in one process.
//!
//! Four variants run the same insert pass (Zipf 0.99 over 1M keys into a 100k cache, one
//! caller thread), alternating pass by pass; every figure is a median of per-round ratios to
//! the cache without a store:
//! * `log under a lock`: the plain cache, plus each `(key, value)` appended to one of 64
//!   `Vec`s, each under a mutex; a thread swaps the `Vec`s out and writes them to the 1 ms
//!   store. No coalescing, no pinning, no read-your-writes, no dirty budget.
//! * `lock-free ring`: the plain cache, plus each `(key, value)` written into a
//!   single-producer ring (two relaxed stores and a release store of the tail: no locked
//!   instruction on the caller's side) that the thread drains into the store. The least a
//!   caller can do to hand a write to another thread.
//! * `write-behind`: the real thing, `WritePolicy::WriteBehind` with its defaults.
//!
//! Neither toy is a cache design: they keep none of the contracts (§5 of the design) and
//! exist to show where the machine, not the design, puts the ceiling.

use super::{C, SlowStore, insert_pass, median, plain, store_from_env};
use cogwheel::store::BackingStore;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A side log the toy variants append every insert to.
trait Log: Send + Sync + 'static {
    fn push(&self, k: u64, v: u64);
    /// Move what is logged into `out` (the writer thread).
    fn drain(&self, out: &mut Vec<(u64, u64)>);
}

const STRIPES: usize = 64;

/// One stripe of the log: the pairs appended since the thread last took them.
type Stripe = CachePadded<Mutex<Vec<(u64, u64)>>>;

/// `(key, value)` pairs in 64 vectors, each under its own mutex.
struct LockLog {
    stripes: Vec<Stripe>,
}

impl LockLog {
    fn new() -> Self {
        LockLog {
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(Mutex::new(Vec::new())))
                .collect(),
        }
    }
}

impl Log for LockLog {
    fn push(&self, k: u64, v: u64) {
        let s = (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize;
        self.stripes[s].lock().expect("stripe").push((k, v));
    }

    fn drain(&self, out: &mut Vec<(u64, u64)>) {
        for s in &self.stripes {
            out.append(&mut s.lock().expect("stripe"));
        }
    }
}

/// A single-producer, single-consumer ring of `(key, value)` pairs.
struct Ring {
    slots: Vec<[AtomicU64; 2]>,
    /// Next slot the producer writes.
    tail: CachePadded<AtomicUsize>,
    /// Next slot the consumer reads.
    head: CachePadded<AtomicUsize>,
}

/// Slots in the ring: about 8 ms of inserts at this machine's rates, so a 1 ms store call
/// never fills it.
const RING: usize = 1 << 16;

impl Ring {
    fn new() -> Self {
        Ring {
            slots: (0..RING)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            tail: CachePadded::new(AtomicUsize::new(0)),
            head: CachePadded::new(AtomicUsize::new(0)),
        }
    }
}

impl Log for Ring {
    fn push(&self, k: u64, v: u64) {
        let t = self.tail.load(Ordering::Relaxed);
        while t - self.head.load(Ordering::Acquire) == RING {
            std::thread::yield_now();
        }
        let slot = &self.slots[t % RING];
        slot[0].store(k, Ordering::Relaxed);
        slot[1].store(v, Ordering::Relaxed);
        self.tail.store(t + 1, Ordering::Release);
    }

    fn drain(&self, out: &mut Vec<(u64, u64)>) {
        let h = self.head.load(Ordering::Relaxed);
        let t = self.tail.load(Ordering::Acquire);
        out.extend((h..t).map(|i| {
            let s = &self.slots[i % RING];
            (s[0].load(Ordering::Relaxed), s[1].load(Ordering::Relaxed))
        }));
        self.head.store(t, Ordering::Release);
    }
}

/// A plain cache whose inserts are also appended to a log, drained by a thread into the
/// 1 ms store.
struct Toy<L: Log> {
    cache: C,
    log: Arc<L>,
    /// Pairs pushed by the caller, and pairs the thread has written to the store.
    pushed: AtomicU64,
    written: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<L: Log> Toy<L> {
    fn new(log: L, store: SlowStore) -> Self {
        let log = Arc::new(log);
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let thread = {
            let (log, stop, written) = (Arc::clone(&log), Arc::clone(&stop), Arc::clone(&written));
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                loop {
                    let stopping = stop.load(Ordering::Acquire);
                    log.drain(&mut batch);
                    if batch.is_empty() {
                        if stopping {
                            return;
                        }
                        std::thread::sleep(Duration::from_micros(100));
                        continue;
                    }
                    let ops = crate::common::puts(&batch);
                    store.write_batch(&ops).expect("toy store");
                    drop(ops);
                    written.fetch_add(batch.len() as u64, Ordering::Release);
                    batch.clear();
                }
            })
        };
        Toy {
            cache: plain(),
            log,
            pushed: AtomicU64::new(0),
            written,
            stop,
            thread: Some(thread),
        }
    }

    fn insert_pass(&self, keys: &[u64], salt: u64) {
        for (i, &k) in keys.iter().enumerate() {
            let v = salt ^ i as u64;
            self.cache.insert(k, v).expect("insert");
            self.log.push(k, v);
        }
        self.pushed.fetch_add(keys.len() as u64, Ordering::Relaxed);
    }

    /// Wait until the thread has written everything pushed.
    fn settle(&self) {
        while self.written.load(Ordering::Acquire) < self.pushed.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl<L: Log> Drop for Toy<L> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("toy writer");
        }
    }
}

/// Run `rounds` rounds of the four variants and print their ratios to the cache without a
/// store.
pub(super) fn run(keys: &[u64], rounds: usize, behind: C) {
    let plain = plain();
    let lock = Toy::new(LockLog::new(), store_from_env());
    let ring = Toy::new(Ring::new(), store_from_env());
    let pass = |i: usize, salt: u64| match i {
        0 => insert_pass(&plain, keys, salt),
        1 => lock.insert_pass(keys, salt),
        2 => ring.insert_pass(keys, salt),
        _ => insert_pass(&behind, keys, salt),
    };
    // Between passes each variant's thread finishes its backlog, off the clock, so it does
    // not compete with the next variant's pass.
    let settle = |i: usize| match i {
        1 => lock.settle(),
        2 => ring.settle(),
        3 => drop(behind.flush().expect("flush")),
        _ => {}
    };
    for i in 0..4 {
        pass(i, 0);
        settle(i);
    }
    let mut ratios: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        let mut rate = [0.0f64; 4];
        for j in 0..4 {
            let i = (round + j) % 4;
            let start = Instant::now();
            pass(i, round as u64 + 1);
            rate[i] = keys.len() as f64 / start.elapsed().as_secs_f64();
            settle(i);
        }
        for i in 0..4 {
            ratios[i].push(rate[i] / rate[0]);
        }
    }
    println!(
        "== write-behind ceiling: {rounds} rounds of {} inserts, ratio to no store (median, min..max) ==",
        keys.len()
    );
    for (i, name) in [
        "no store",
        "log under a lock",
        "lock-free ring",
        "write-behind",
    ]
    .iter()
    .enumerate()
    {
        let v = &mut ratios[i];
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
        println!("{name:<18} {:.3}  ({lo:.3}..{hi:.3})", median(v));
    }
}
