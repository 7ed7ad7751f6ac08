//! The write-behind state shared by the cache and its writer thread, and the writer's loop.

use super::mpsc::{MpscQueue, Node};
use super::wake::Wake;
use super::{DeadLetter, FlushReport, START_BATCH, WriteBehind};
use crate::error::Error;
use crate::store::{BackingStore, StoreError, WriteOp};
use crate::sync::{
    self, Arc, AtomicBool, AtomicU64, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering,
};
use crate::time::Clock;
use crossbeam_utils::CachePadded;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc as StdArc;
use std::time::{Duration, Instant, SystemTime};

/// The dead-letter hook: called for each write the writer gives up on.
pub(crate) type DeadLetterHook<K, V> = StdArc<dyn Fn(&K, DeadLetter<V>, &StoreError) + Send + Sync>;

const STRIPES: usize = 64;

/// A queued key (with its hash), the sequence number of the write being stored, and the write.
type Item<K, V> = (Arc<KeyNode<K>>, u64, Pending<V>);

/// One stripe of the pending records.
type Stripe<K, V> = Mutex<StripeData<K, V>>;

/// A queue node: a dirty key and its hash.
type KeyNode<K> = Node<(K, u64)>;

/// The pending records of one stripe (it derefs to them), and queue nodes to reuse.
struct StripeData<K, V> {
    map: Map<K, Record<V>>,
    /// The sequence number of this stripe's latest write. Per stripe, under its lock, rather
    /// than one shared counter: sequence numbers only ever compare writes of one key (and a
    /// flush takes a target per stripe), so a global atomic would cost every write a locked
    /// increment for nothing.
    seq: u64,
    /// Nodes of keys that became clean, kept for the next keys of this stripe that become
    /// dirty. A node is allocated by the thread that dirties a key and would otherwise be
    /// freed by the writer thread; with the default allocator, freeing thousands of another
    /// thread's blocks per round contends with that thread's own allocations (profiled: the
    /// caller then sleeps on the allocator's arena lock). Bounded by `Shared::free_cap`; a
    /// kept node still holds its last key until it is reused.
    free: Vec<Arc<KeyNode<K>>>,
}

impl<K, V> Default for StripeData<K, V> {
    fn default() -> Self {
        StripeData {
            map: Map::default(),
            seq: 0,
            free: Vec::new(),
        }
    }
}

impl<K, V> std::ops::Deref for StripeData<K, V> {
    type Target = Map<K, Record<V>>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<K, V> std::ops::DerefMut for StripeData<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

/// The maps of pending records and poison counts: ahash (as the cache's own tables), not
/// std's SipHash, since every write-behind insert looks its key up here two or three times.
type Map<K, T> = HashMap<K, T, crate::hash::DefaultHashBuilder>;

/// The latest not-yet-stored write of a key.
#[derive(Clone)]
pub(crate) enum Pending<V> {
    Put(V, Option<SystemTime>),
    Delete,
}

struct Record<V> {
    op: Pending<V>,
    /// Sequence number of the latest write (the one `op` holds).
    seq: u64,
    /// A lower bound on the oldest write of this key not yet in the store: what a flush
    /// barrier waits on. Coalescing replaces `seq`, never this, so a newer write cannot hide
    /// an older acknowledged one from `flush`.
    oldest: u64,
    /// When the key became dirty, on the cache's clock (nanoseconds): quanta reads the TSC
    /// where `Instant::now()` is a slower vDSO call, and this runs on every clean→dirty
    /// transition.
    since: u64,
}

/// What the writer and flushers tell each other.
#[derive(Default)]
struct Signal {
    /// A flush wants the writer to go now (skip the batch delay and any back-off).
    kick: bool,
    /// Flushes waiting for the writer: while there are any, no round waits for its batch to
    /// fill (`kick` covers one round only; a flush may need several).
    flushers: usize,
    closing: bool,
    /// Bumped on every failed write attempt, so a flush can tell "failed since I began".
    error_epoch: u64,
    last_error: Option<StdArc<StoreError>>,
}

struct Shared<K, V> {
    cfg: WriteBehind,
    /// The dirty budget: `cfg.max_dirty`, or half the cache's capacity.
    max_dirty: usize,
    /// The cache's clock, for the age of dirty keys.
    clock: Clock,
    /// Dirty keys at which the writer starts a round without waiting for `max_delay`:
    /// `START_BATCH`, capped by `max_batch` and by half the dirty budget (so the writer is
    /// already busy before writers hit the budget).
    start_batch: usize,
    /// The most reusable nodes a stripe keeps (a batch's share of a stripe).
    free_cap: usize,
    store: StdArc<dyn BackingStore<K, V>>,
    /// Padded: the caller and the writer thread lock stripes all the time, and neighbours
    /// must not share a cache line.
    stripes: Box<[CachePadded<Stripe<K, V>>]>,
    queue: MpscQueue<KeyNode<K>>,
    /// Written on every clean→dirty transition (and by the writer once per batch), read by
    /// the writer thread per round. A cache line of its own: next to fields the writer reads
    /// for every key it settles, each caller write would first have to take the line back
    /// from the writer's core.
    dirty: CachePadded<AtomicUsize>,
    /// What the writer thread waits for, announced under `sig` and read by callers without
    /// it: a new dirty key costs the caller a load, not a lock, unless the writer waits for it.
    wake: Wake,
    sig: Mutex<Signal>,
    cv: Condvar,
    /// Serializes drain rounds in manual mode (several threads may call `flush`).
    drain: Mutex<()>,
    /// Consecutive failed rounds; after two, batches are split to find poison keys.
    failed_rounds: AtomicU64,
    /// Per-key failures counted while other writes succeed (poison detection).
    poison: Mutex<Map<K, u32>>,
    /// Whether `poison` may hold keys (set under its lock when a key is added), so that
    /// settling a written key skips that lock while no key is suspect (the common case).
    suspects: AtomicBool,
    dead_letter: Option<DeadLetterHook<K, V>>,
    writes: AtomicU64,
    write_errors: AtomicU64,
    dead_letters: AtomicU64,
    /// A std handle: the writer thread exists only outside loom (models use manual mode).
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    closed: std::sync::atomic::AtomicBool,
}

/// Write-behind state owned by the cache.
pub(crate) struct WriteBehindState<K, V> {
    shared: Arc<Shared<K, V>>,
    /// `close`, type-erased so that `Drop` (which cannot name the key's trait bounds) can
    /// call it.
    closer: Box<dyn Fn() + Send + Sync>,
}

impl<K, V> Drop for WriteBehindState<K, V> {
    fn drop(&mut self) {
        // The cache is gone: drain the queue; what cannot be written goes to the dead-letter
        // hook, so nothing is dropped silently.
        (self.closer)();
    }
}

impl<K, V> WriteBehindState<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(
        cfg: WriteBehind,
        capacity: u64,
        store: StdArc<dyn BackingStore<K, V>>,
        dead_letter: Option<DeadLetterHook<K, V>>,
        clock: Clock,
    ) -> Result<Self, std::io::Error> {
        let manual = cfg.manual;
        let half = usize::try_from(capacity / 2).unwrap_or(usize::MAX).max(1);
        let max_dirty = cfg.max_dirty.unwrap_or(half);
        let shared = Arc::new(Shared {
            max_dirty,
            clock,
            start_batch: START_BATCH.min(cfg.max_batch).min(max_dirty / 2).max(1),
            free_cap: cfg.max_batch.min(max_dirty).div_ceil(STRIPES),
            cfg,
            store,
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(Mutex::new(StripeData::default())))
                .collect(),
            queue: MpscQueue::new(),
            dirty: CachePadded::new(AtomicUsize::new(0)),
            wake: Wake::new(),
            sig: Mutex::new(Signal::default()),
            cv: Condvar::new(),
            drain: Mutex::new(()),
            failed_rounds: AtomicU64::new(0),
            poison: Mutex::new(Map::default()),
            suspects: AtomicBool::new(false),
            dead_letter,
            writes: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            thread: Mutex::new(None),
            closed: Default::default(),
        });
        if !manual {
            #[cfg(loom)]
            unreachable!("loom models use WriteBehind::manual");
            #[cfg(not(loom))]
            {
                let sh = Arc::clone(&shared);
                let t = std::thread::Builder::new()
                    .name("cogwheel-write-behind".into())
                    .spawn(move || sh.run())?;
                *sync::lock(&shared.thread) = Some(t);
            }
        }
        let sh = Arc::clone(&shared);
        let closer = Box::new(move || {
            let _ = sh.close();
        });
        Ok(WriteBehindState { shared, closer })
    }

    /// Flush, stop the writer, and hand whatever could not be written to the dead-letter hook
    /// (reported in the error). Later writes fail with `Closed`.
    pub(crate) fn close(&self) -> Result<FlushReport, Error> {
        self.shared.close()
    }

    /// Whether the key has a write not yet in the store (the eviction policy's pin test).
    #[inline]
    pub(crate) fn is_dirty<Q>(&self, hash: u64, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let sh = &*self.shared;
        sh.dirty.load(Ordering::Acquire) != 0
            && sync::lock_spinning(sh.stripe(hash)).contains_key(key)
    }

    /// The pending write of a key, if any: `Some(None)` is a pending delete. Read-through
    /// answers from this instead of the store, which may be stale.
    pub(crate) fn pending<Q>(&self, hash: u64, key: &Q) -> Option<Option<(V, Option<SystemTime>)>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let sh = &*self.shared;
        if sh.dirty.load(Ordering::Acquire) == 0 {
            return None;
        }
        sync::lock_spinning(sh.stripe(hash))
            .get(key)
            .map(|r| match &r.op {
                Pending::Put(v, at) => Some((v.clone(), *at)),
                Pending::Delete => None,
            })
    }

    /// Make room for one more dirty key (`key` itself may already be dirty). Waits for the
    /// writer, or fails with `Full` in fail-fast mode, or `Closed` after `close`.
    pub(crate) fn reserve<Q>(&self, hash: u64, key: &Q) -> Result<(), Error>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let sh = &*self.shared;
        loop {
            if sh.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if sh.dirty.load(Ordering::Acquire) < sh.max_dirty || self.is_dirty(hash, key) {
                return Ok(());
            }
            if sh.cfg.fail_fast {
                return Err(Error::Full);
            }
            self.wait_for_progress()?;
        }
    }

    /// Block until the writer has made progress (a round finished). In manual mode, do a
    /// round here instead.
    pub(crate) fn wait_for_progress(&self) -> Result<(), Error> {
        let sh = &*self.shared;
        if sh.cfg.manual {
            return sh.round_locked().map(|_| ()).map_err(|e| sh.unflushed(e));
        }
        let mut sig = sync::lock(&sh.sig);
        sig.kick = true;
        sh.cv.notify_all();
        let epoch = sig.error_epoch;
        let dirty = sh.dirty.load(Ordering::Acquire);
        while sh.dirty.load(Ordering::Acquire) >= dirty && sig.error_epoch == epoch && !sig.closing
        {
            sig = wait(&sh.cv, sig);
        }
        Ok(())
    }

    /// Record the latest write of a key (the caller holds the key's lock). Only the
    /// clean→dirty transition enqueues the key.
    pub(crate) fn record(&self, hash: u64, key: &K, op: Pending<V>) {
        let sh = &*self.shared;
        let mut map = sync::lock_spinning(sh.stripe(hash));
        map.seq += 1;
        let seq = map.seq;
        match map.get_mut(key) {
            Some(r) => {
                r.op = op;
                r.seq = seq;
            }
            None => {
                map.insert(
                    key.clone(),
                    Record {
                        op,
                        seq,
                        oldest: seq,
                        since: sh.clock.now(),
                    },
                );
                let node = match map.free.pop() {
                    Some(mut n) => match Arc::get_mut(&mut n) {
                        Some(v) => {
                            **v = (key.clone(), hash);
                            n
                        }
                        None => Arc::new(Node::new((key.clone(), hash))),
                    },
                    None => Arc::new(Node::new((key.clone(), hash))),
                };
                // The push comes before the increment, and both before the stripe unlocks: the
                // writer cannot settle the record (it needs the stripe) before `dirty` counts
                // it, so `dirty` never undercounts the records.
                sh.queue.push(node);
                let dirty = sh.dirty.fetch_add(1, Ordering::AcqRel) + 1;
                drop(map);
                if !sh.cfg.manual {
                    // Wake the writer only when it waits for this: for work at all, or for a
                    // full batch. (A notify is a syscall, and waking the writer for every new
                    // dirty key costs the writer and this thread a context switch each.)
                    // The increment above, then `wanted`: this side of the `wake` hand-shake.
                    if sh.wake.wanted(dirty, sh.start_batch) {
                        let _sig = sync::lock(&sh.sig);
                        sh.cv.notify_all();
                    }
                }
            }
        }
    }

    /// Every write acknowledged before this call is in the store when it returns `Ok`.
    pub(crate) fn flush(&self) -> Result<FlushReport, Error> {
        self.shared.flush()
    }

    pub(crate) fn dirty_count(&self) -> usize {
        self.shared.dirty.load(Ordering::Acquire)
    }

    pub(crate) fn dirty_keys(&self) -> Vec<K> {
        self.shared
            .stripes
            .iter()
            .flat_map(|s| sync::lock(s).keys().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Age of the oldest dirty key (since it became dirty).
    pub(crate) fn oldest_dirty(&self) -> Option<Duration> {
        let sh = &*self.shared;
        let oldest = sh
            .stripes
            .iter()
            .filter_map(|s| sync::lock(s).values().map(|r| r.since).min())
            .min()?;
        Some(Duration::from_nanos(sh.clock.now().saturating_sub(oldest)))
    }

    /// (writes, write errors, dead letters) for the stats.
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let sh = &*self.shared;
        (
            sh.writes.load(Ordering::Relaxed),
            sh.write_errors.load(Ordering::Relaxed),
            sh.dead_letters.load(Ordering::Relaxed),
        )
    }
}

impl<K, V> Shared<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Every write acknowledged before this call is in the store when it returns `Ok`.
    fn flush(&self) -> Result<FlushReport, Error> {
        self.flush_within(None)
    }

    /// `flush`, giving up at `deadline` (threaded mode only: in manual mode the caller's own
    /// thread does the writing and cannot be interrupted).
    fn flush_within(&self, deadline: Option<Instant>) -> Result<FlushReport, Error> {
        let sh = self;
        let target = sh.seq_targets();
        let flushed = sh.pending_upto(&target);
        if sh.cfg.manual {
            let mut step = 0;
            loop {
                if sh.pending_upto(&target) == 0 {
                    return Ok(FlushReport { flushed });
                }
                match sh.round_locked() {
                    Err(e) => return Err(sh.unflushed(e)),
                    // A writer is between creating a record and enqueueing its key (or another
                    // flusher holds the queue): let it finish instead of spinning hot.
                    Ok(0) => sync::spin_wait(&mut step),
                    Ok(_) => step = 0,
                }
            }
        }
        let mut sig = sync::lock(&sh.sig);
        let epoch = sig.error_epoch;
        sig.kick = true;
        sig.flushers += 1;
        sh.cv.notify_all();
        let r = loop {
            if sh.pending_upto(&target) == 0 {
                break Ok(FlushReport { flushed });
            }
            if sig.error_epoch != epoch || sig.closing {
                let e = sig
                    .last_error
                    .clone()
                    .unwrap_or_else(|| StdArc::new(StoreError::fail("the writer stopped")));
                break Err(Error::Unflushed {
                    pending: sh.pending_upto(&target),
                    cause: e,
                });
            }
            match deadline {
                None => sig = wait(&sh.cv, sig),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        let e = StoreError::unknown(
                            "the store did not finish writing before the close timeout",
                        );
                        break Err(Error::Unflushed {
                            pending: sh.pending_upto(&target),
                            cause: StdArc::new(e),
                        });
                    }
                    sig = sh
                        .cv
                        .wait_timeout(sig, left)
                        .map_or_else(|p| p.into_inner().0, |(g, _)| g);
                }
            }
        };
        sig.flushers -= 1;
        r
    }

    fn close(&self) -> Result<FlushReport, Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(FlushReport::default());
        }
        let deadline = Instant::now().checked_add(self.cfg.close_timeout);
        let r = self.flush_within(deadline);
        let sh = self;
        {
            let mut sig = sync::lock(&sh.sig);
            sig.closing = true;
            sh.cv.notify_all();
        }
        let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
        if let Some(t) = sync::lock(&self.thread).take() {
            if timed_out && !t.is_finished() {
                // The writer is stuck inside the store (it hangs): waiting for it would hang the
                // closing thread too. It is detached; when the store answers, it sees `closing`
                // and exits. What it was writing is reported below as not confirmed.
                drop(t);
            } else {
                // The writer holds no cache lock and never calls into the cache: joining is safe.
                let _ = t.join();
            }
        }
        if r.is_err() {
            sh.dead_letter_all();
        }
        r
    }

    fn stripe(&self, hash: u64) -> &Stripe<K, V> {
        &self.stripes[stripe_index(hash)]
    }

    /// Each stripe's latest sequence number: what a flush waits for.
    fn seq_targets(&self) -> [u64; STRIPES] {
        std::array::from_fn(|i| sync::lock(&self.stripes[i]).seq)
    }

    /// How many dirty keys hold a write with a sequence number up to their stripe's target.
    fn pending_upto(&self, target: &[u64; STRIPES]) -> usize {
        if self.dirty.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.stripes
            .iter()
            .zip(target)
            .map(|(s, &t)| sync::lock(s).values().filter(|r| r.oldest <= t).count())
            .sum()
    }

    fn unflushed(&self, cause: StdArc<StoreError>) -> Error {
        Error::Unflushed {
            pending: self.dirty.load(Ordering::Acquire),
            cause,
        }
    }

    /// The writer thread.
    #[cfg(not(loom))]
    fn run(&self) {
        let mut backoff = self.cfg.retry_base;
        loop {
            {
                let mut sig = sync::lock(&self.sig);
                loop {
                    // Announce, then look (the `wake` hand-shake with `record`).
                    self.wake.announce(super::wake::IDLE, &self.dirty);
                    if sig.closing || !self.queue.is_empty() {
                        break;
                    }
                    sig = wait(&self.cv, sig);
                }
                self.wake.done();
                if sig.closing {
                    return;
                }
                // Let a batch fill for up to `max_delay`, unless a flush is waiting. A round
                // starts at `start_batch` dirty keys and takes all pending up to `max_batch`:
                // while the writer is behind, batches grow with the backlog.
                let start = Instant::now();
                while !sig.kick
                    && sig.flushers == 0
                    && !sig.closing
                    && start.elapsed() < self.cfg.max_delay
                {
                    if self.wake.announce(super::wake::FILLING, &self.dirty) >= self.start_batch {
                        break;
                    }
                    let left = self.cfg.max_delay.saturating_sub(start.elapsed());
                    sig = self
                        .cv
                        .wait_timeout(sig, left)
                        .map_or_else(|p| p.into_inner().0, |(g, _)| g);
                }
                self.wake.done();
                sig.kick = false;
            }
            match self.round_locked() {
                Ok(_) => backoff = self.cfg.retry_base,
                Err(_) => {
                    // Back off, unless a flush or close asks to go now.
                    let mut sig = sync::lock(&self.sig);
                    if !sig.kick && !sig.closing {
                        sig = self
                            .cv
                            .wait_timeout(sig, backoff)
                            .map_or_else(|p| p.into_inner().0, |(g, _)| g);
                    }
                    sig.kick = false;
                    drop(sig);
                    backoff = (backoff * 2).min(self.cfg.retry_max);
                }
            }
        }
    }

    /// One drain round (serialized): pop up to `max_batch` keys, write them, settle them.
    /// Returns how many keys were written.
    fn round_locked(&self) -> Result<usize, StdArc<StoreError>> {
        let _one = sync::lock(&self.drain);
        let mut nodes = Vec::new();
        if let Some(mut consumer) = self.queue.consumer() {
            while nodes.len() < self.cfg.max_batch {
                match consumer.pop_wait() {
                    Some(n) => nodes.push(n),
                    None => break,
                }
            }
        }
        if nodes.is_empty() {
            return Ok(0);
        }
        let batch = self.snapshot(nodes);
        let split = self.failed_rounds.load(Ordering::Relaxed) >= 2 && batch.len() > 1;
        let result = if split {
            self.write_singly(batch)
        } else {
            self.write_all(batch)
        };
        let mut sig = sync::lock(&self.sig);
        match &result {
            Ok(_) => self.failed_rounds.store(0, Ordering::Relaxed),
            Err(e) => {
                self.failed_rounds.fetch_add(1, Ordering::Relaxed);
                sig.error_epoch += 1;
                sig.last_error = Some(StdArc::clone(e));
            }
        }
        self.cv.notify_all();
        result
    }

    /// The current record of each popped key (keys dead-lettered meanwhile are dropped).
    ///
    /// The keys are sorted by stripe and each stripe is locked once per run of up to `RUN`
    /// keys, not once per key: the caller locks the same stripes on every write, and a lock
    /// per key would bounce each stripe's cache line between the two threads thousands of
    /// times per round. (The order of different keys in a batch carries no meaning; each key
    /// appears in a batch at most once.)
    fn snapshot(&self, nodes: Vec<Arc<KeyNode<K>>>) -> Vec<Item<K, V>> {
        let mut out = Vec::with_capacity(nodes.len());
        self.in_stripe_runs(
            by_stripe(nodes),
            |n| n.1,
            |map, n| {
                if let Some(r) = map.get(&n.0) {
                    let (seq, op) = (r.seq, r.op.clone());
                    out.push((n, seq, op));
                }
            },
        );
        out
    }

    /// Visit `items` (grouped by stripe) holding each stripe's lock once per run of up to
    /// `RUN` consecutive items of that stripe, then letting callers in.
    fn in_stripe_runs<T>(
        &self,
        items: Vec<T>,
        hash_of: impl Fn(&T) -> u64,
        mut visit: impl FnMut(&mut StripeData<K, V>, T),
    ) {
        let mut items = items.into_iter().peekable();
        while let Some(first) = items.next() {
            let s = stripe_index(hash_of(&first));
            let mut map = sync::lock(&self.stripes[s]);
            visit(&mut map, first);
            for _ in 1..RUN {
                match items.next_if(|n| stripe_index(hash_of(n)) == s) {
                    Some(n) => visit(&mut map, n),
                    None => break,
                }
            }
        }
    }

    fn write(&self, batch: &[Item<K, V>]) -> Result<(), StdArc<StoreError>> {
        let ops: Vec<WriteOp<'_, K, V>> = batch
            .iter()
            .map(|(n, _, op)| match op {
                Pending::Put(v, at) => WriteOp::Put {
                    key: &n.0,
                    value: v,
                    expires_at: *at,
                },
                Pending::Delete => WriteOp::Delete { key: &n.0 },
            })
            .collect();
        // A panicking store must not kill the writer (every later write would be lost) nor
        // be swallowed: it becomes an `Unknown` failure that flush callers see.
        let r = panic::catch_unwind(AssertUnwindSafe(|| self.store.write_batch(&ops)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(StoreError::unknown(format!(
                    "the store panicked in write_batch: {msg}"
                )))
            });
        match r {
            Ok(()) => {
                self.writes.fetch_add(ops.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
                Err(StdArc::new(e))
            }
        }
    }

    fn write_all(&self, batch: Vec<Item<K, V>>) -> Result<usize, StdArc<StoreError>> {
        match self.write(&batch) {
            Ok(()) => {
                let n = batch.len();
                self.settle_all(batch);
                Ok(n)
            }
            Err(e) => {
                if batch.len() == 1 {
                    let item = batch.into_iter().next().expect("one item");
                    self.single_failed(item, &e, false);
                } else {
                    for (node, _, _) in batch {
                        self.queue.push(node); // still dirty: try again later
                    }
                }
                Err(e)
            }
        }
    }

    /// After repeated failures: one write per key, to tell a poison key from a down store.
    fn write_singly(&self, batch: Vec<Item<K, V>>) -> Result<usize, StdArc<StoreError>> {
        let mut ok = 0;
        let mut failed = Vec::new();
        for item in batch {
            match self.write(std::slice::from_ref(&item)) {
                Ok(()) => {
                    ok += 1;
                    self.settle(item.0, item.1);
                }
                Err(e) => failed.push((item, e)),
            }
        }
        let Some(last) = failed.last().map(|(_, e)| StdArc::clone(e)) else {
            return Ok(ok);
        };
        for (item, e) in failed {
            self.single_failed(item, &e, ok > 0);
        }
        if ok > 0 { Ok(ok) } else { Err(last) }
    }

    /// A write of one key failed. The key becomes a *suspect* when other writes succeeded in
    /// the same round (the store works, this key does not); a suspect's every further failure
    /// counts, and after `max_attempts` it is dead-lettered. Keys that fail while everything
    /// fails (the store is down) are never given up.
    fn single_failed(&self, item: Item<K, V>, e: &StdArc<StoreError>, others_ok: bool) {
        let (node, seq, op) = item;
        let give_up = {
            let mut p = sync::lock(&self.poison);
            match p.get_mut(&node.0) {
                Some(n) => {
                    *n += 1;
                    *n >= self.cfg.max_attempts
                }
                None if others_ok => {
                    p.insert(node.0.clone(), 1);
                    self.suspects.store(true, Ordering::Relaxed);
                    self.cfg.max_attempts <= 1
                }
                None => false,
            }
        };
        if give_up {
            self.dead_letter_one(&node, seq, op, e);
        } else {
            self.queue.push(node);
        }
    }

    /// `settle` for a whole written batch (sorted by stripe, as `snapshot` left it): one
    /// stripe lock per run of keys, and one update of `dirty` for the batch.
    fn settle_all(&self, batch: Vec<Item<K, V>>) {
        let mut cleaned = 0;
        let mut again = Vec::new();
        self.in_stripe_runs(
            batch,
            |(n, _, _)| n.1,
            |map, (node, seq, _)| {
                let (k, _) = &**node;
                match map.get_mut(k) {
                    Some(r) if r.seq == seq => {
                        map.remove(k);
                        cleaned += 1;
                        // Lock order: a stripe, then `poison` (nothing locks them the other way
                        // round).
                        self.forgive(k);
                        if map.free.len() < self.free_cap {
                            map.free.push(node);
                        }
                    }
                    Some(r) => {
                        // Everything up to `seq` is stored; the newer writes are not yet.
                        r.oldest = seq + 1;
                        again.push(node);
                    }
                    None => {}
                }
            },
        );
        // Decremented only after the records are gone: `dirty` never undercounts them (its
        // zero is a fast path for "no record at all").
        self.dirty.fetch_sub(cleaned, Ordering::AcqRel);
        for node in again {
            self.queue.push(node);
        }
    }

    /// A written key is clean again unless it was written meanwhile (then it goes back on
    /// the queue with its newer record).
    fn settle(&self, node: Arc<Node<(K, u64)>>, seq: u64) {
        let (k, h) = &**node;
        let mut map = sync::lock(self.stripe(*h));
        match map.get_mut(k) {
            Some(r) if r.seq == seq => {
                map.remove(k);
                drop(map);
                self.dirty.fetch_sub(1, Ordering::AcqRel);
                self.forgive(k);
            }
            Some(r) => {
                // Everything up to `seq` is stored; the newer writes are not yet.
                r.oldest = seq + 1;
                drop(map);
                self.queue.push(node);
            }
            None => {}
        }
    }

    /// A key is no longer suspect (written, or given up on).
    fn forgive(&self, k: &K) {
        // `suspects` and `poison` change only inside drain rounds, which the drain lock
        // serializes (this runs in one), so a relaxed load sees the latest value.
        if self.suspects.load(Ordering::Relaxed) {
            let mut p = sync::lock(&self.poison);
            p.remove(k);
            if p.is_empty() {
                self.suspects.store(false, Ordering::Relaxed);
            }
        }
    }

    fn dead_letter_one(&self, node: &Node<(K, u64)>, seq: u64, op: Pending<V>, e: &StoreError) {
        let (k, h) = &**node;
        let mut map = sync::lock(self.stripe(*h));
        if map.get(k).is_some_and(|r| r.seq == seq) {
            map.remove(k);
            drop(map);
            self.dirty.fetch_sub(1, Ordering::AcqRel);
            self.dead_letters.fetch_add(1, Ordering::Relaxed);
            self.forgive(k);
            if let Some(hook) = &self.dead_letter {
                hook(k, to_dead(op), e);
            }
        } else if map.contains_key(k) {
            // Rewritten meanwhile: the new value gets its own chances.
            drop(map);
            self.queue.push(Arc::new(Node::new((k.clone(), *h))));
        }
    }

    /// At close, after a failed final flush: report every remaining write.
    fn dead_letter_all(&self) {
        let e = sync::lock(&self.sig)
            .last_error
            .clone()
            .unwrap_or_else(|| StdArc::new(StoreError::fail("closed before it could be written")));
        for s in self.stripes.iter() {
            let drained: Vec<(K, Record<V>)> = sync::lock(s).drain().collect();
            for (k, r) in drained {
                self.dirty.fetch_sub(1, Ordering::AcqRel);
                self.dead_letters.fetch_add(1, Ordering::Relaxed);
                if let Some(hook) = &self.dead_letter {
                    hook(&k, to_dead(r.op), &e);
                }
            }
        }
    }
}

fn stripe_index(hash: u64) -> usize {
    (hash >> 40) as usize % STRIPES
}

/// The nodes grouped by stripe (a counting sort: one pass to count, one to place; the
/// writer does this for every round, and a comparison sort cost it more than the grouping
/// saved).
fn by_stripe<K>(nodes: Vec<Arc<KeyNode<K>>>) -> Vec<Arc<KeyNode<K>>> {
    let mut start = [0usize; STRIPES + 1];
    for n in &nodes {
        start[stripe_index(n.1) + 1] += 1;
    }
    for i in 1..=STRIPES {
        start[i] += start[i - 1];
    }
    let mut placed: Vec<Option<Arc<KeyNode<K>>>> = Vec::with_capacity(nodes.len());
    placed.resize_with(nodes.len(), || None);
    for n in nodes {
        let s = stripe_index(n.1);
        placed[start[s]] = Some(n);
        start[s] += 1;
    }
    placed.into_iter().flatten().collect()
}

/// The most keys the writer handles under one stripe lock before letting callers in.
const RUN: usize = 64;

fn to_dead<V>(op: Pending<V>) -> DeadLetter<V> {
    match op {
        Pending::Put(v, _) => DeadLetter::Put(v),
        Pending::Delete => DeadLetter::Delete,
    }
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|p| p.into_inner())
}
