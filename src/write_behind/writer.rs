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

/// One stripe of the pending records.
type Stripe<K, V> = Mutex<StripeData<K, V>>;

/// A queue node: the index of a stripe with records the writer has not taken yet.
type StripeNode = Node<usize>;

/// A generation of records the writer took: immutable once taken, so the writer reads it
/// without the stripe's lock while callers still find its keys (under the lock) as dirty.
type Generation<K, V> = Arc<Records<K, V>>;

/// The pending records of one stripe, in two generations.
///
/// Callers write only `live`. A round of the writer moves `live` into `taken` (a swap, or a
/// merge while `taken` still holds writes that failed), writes `taken` without the lock, and
/// drops it once stored. A key may be in both: `taken` holds a write being stored, `live` a
/// newer one; `overlap` counts those keys, so the number of dirty keys is always
/// `live.len() + taken.len() − overlap` without a per-key walk. Neither side touches the
/// other's records key by key on the hot path: a caller's write is one index lookup (and an
/// append on the clean→dirty transition) in records the writer reads only in bulk, and the writer
/// retires a whole stored generation in O(1). (A round that settled each key under the lock,
/// as an earlier design did, made every key's record line travel between the two cores
/// twice per write.)
struct StripeData<K, V> {
    live: Records<K, V>,
    taken: Option<Generation<K, V>>,
    /// Keys in both `live` and `taken`.
    overlap: usize,
    /// Emptied records with their capacity, for the next `live`.
    spare: Option<Records<K, V>>,
    /// This stripe's node is queued (or popped by a round that has not taken the stripe yet):
    /// set by whoever pushes it, cleared under the lock by the round that takes the stripe.
    queued: bool,
    /// The sequence number of this stripe's latest write. Per stripe, under its lock, rather
    /// than one shared counter: sequence numbers only ever compare writes of one key (and a
    /// flush takes a target per stripe), so a global atomic would cost every write a locked
    /// increment for nothing.
    seq: u64,
}

impl<K, V> Default for StripeData<K, V> {
    fn default() -> Self {
        StripeData {
            live: Records::default(),
            taken: None,
            overlap: 0,
            spare: None,
            queued: false,
            seq: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, V> StripeData<K, V> {
    fn taken_has<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.taken.as_ref().is_some_and(|t| t.contains_key(key))
    }

    /// The newest pending record of `key`.
    fn get<Q>(&self, key: &Q) -> Option<&Record<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.live
            .get(key)
            .or_else(|| self.taken.as_ref().and_then(|t| t.get(key)))
    }
}

/// Pending records in the order their keys became dirty, indexed by key.
///
/// A list beside a small index, rather than a map of records: a caller's new record is an
/// append to the list's hot tail plus an index slot (16 bytes for a `u64` key), where a map
/// of records writes a whole record (56 bytes for `u64` keys and values) into a random slot,
/// a line the writer last read or cleared and the caller fetches back from its core; and the
/// writer reads the list in order.
#[derive(Clone)]
struct Records<K, V> {
    index: Map<K, usize>,
    list: Vec<(K, Record<V>)>,
}

impl<K, V> Default for Records<K, V> {
    fn default() -> Self {
        Records {
            index: Map::default(),
            list: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Records<K, V> {
    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.contains_key(key)
    }

    fn get<Q>(&self, key: &Q) -> Option<&Record<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.index.get(key).map(|&i| &self.list[i].1)
    }

    fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut Record<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.index.get(key)?;
        Some(&mut self.list[i].1)
    }

    /// Add the record of a key that has none.
    fn insert_new(&mut self, key: K, r: Record<V>) {
        self.index.insert(key.clone(), self.list.len());
        self.list.push((key, r));
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &Record<V>)> {
        self.list.iter().map(|(k, r)| (k, r))
    }

    fn keys(&self) -> impl Iterator<Item = &K> {
        self.list.iter().map(|(k, _)| k)
    }

    fn values(&self) -> impl Iterator<Item = &Record<V>> {
        self.list.iter().map(|(_, r)| r)
    }

    /// Whether the records are in the order their keys became dirty (what `stored_upto`
    /// relies on).
    fn in_dirty_order(&self) -> bool {
        self.list.windows(2).all(|w| w[0].1.oldest < w[1].1.oldest)
    }

    /// Empty, keeping the capacity.
    fn clear(&mut self) {
        self.index.clear();
        self.list.clear();
    }
}

impl<K: Hash + Eq + Clone, V> FromIterator<(K, Record<V>)> for Records<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, Record<V>)>>(items: I) -> Self {
        let mut r = Records::default();
        for (k, rec) in items {
            r.insert_new(k, rec);
        }
        r
    }
}

/// The record index and the poison counts: ahash (as the cache's own tables), not std's
/// SipHash, since every write-behind insert looks its key up here two or three times.
type Map<K, T> = HashMap<K, T, crate::hash::DefaultHashBuilder>;

/// The latest not-yet-stored write of a key.
#[derive(Clone)]
pub(crate) enum Pending<V> {
    Put(V, Option<SystemTime>),
    Delete,
}

#[derive(Clone)]
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
    /// The writer thread panicked (a bug, or user code it ran: a key's or value's `Clone`,
    /// `Hash`, `Eq` or `Drop`). Nothing will be written any more: flushes and parked writers
    /// fail with this error instead of waiting forever, and later writes are refused.
    died: Option<StdArc<StoreError>>,
    /// The first `close` has finished (drained, reported, writer joined or detached), however
    /// it ended; and what it reported, for later closes.
    closed_done: bool,
    close_failed: Option<(usize, StdArc<StoreError>)>,
    /// The thread running the first `close` (a close from inside it, e.g. from the dead-letter
    /// hook, must not wait for itself).
    closer: Option<sync::thread::ThreadId>,
    /// Bumped on every failed write attempt, so a flush can tell "failed since I began".
    error_epoch: u64,
    last_error: Option<StdArc<StoreError>>,
}

/// A drain round's popped stripes, put back on the queue if the round unwinds (a key's or
/// value's `Clone`, `Hash`, `Eq` or `Drop` panicked in it). Popping a stripe clears its
/// `queued` flag; the stripe keeps its records, but without this nothing would queue it again,
/// and in manual mode every later flush (and `close`) would wait for it forever.
struct RequeueOnUnwind<'a, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    sh: &'a Shared<K, V>,
    taken: [bool; STRIPES],
}

impl<K, V> Drop for RequeueOnUnwind<'_, K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if std::thread::panicking() {
            let taken = self.taken;
            self.sh.requeue((0..STRIPES).filter(move |&s| taken[s]));
        }
    }
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
    store: StdArc<dyn BackingStore<K, V>>,
    /// Padded: the caller and the writer thread lock stripes all the time, and neighbours
    /// must not share a cache line.
    stripes: Box<[CachePadded<Stripe<K, V>>]>,
    /// Fed with stripes that have records not yet taken (each stripe's node at most once).
    queue: MpscQueue<StripeNode>,
    /// One permanent node per stripe.
    nodes: Box<[Arc<StripeNode>]>,
    /// Written on every clean→dirty transition (and by the writer once per retired
    /// generation), read by the writer thread per round. A cache line of its own: each caller
    /// write would otherwise first have to take back a line the writer's core keeps reading.
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
    /// Rounds that followed a failed round.
    retries: AtomicU64,
    /// A std handle: the writer thread exists only outside loom (models use manual mode).
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// On the sync facade, so that loom models see `close` racing writers.
    closed: AtomicBool,
    /// Set once `Signal::died` is (read without the signal lock on the write path).
    writer_died: AtomicBool,
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
            cfg,
            store,
            stripes: (0..STRIPES)
                .map(|_| CachePadded::new(Mutex::new(StripeData::default())))
                .collect(),
            queue: MpscQueue::new(),
            nodes: (0..STRIPES).map(|i| Arc::new(Node::new(i))).collect(),
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
            retries: AtomicU64::new(0),
            thread: Mutex::new(None),
            closed: AtomicBool::new(false),
            writer_died: AtomicBool::new(false),
        });
        if !manual {
            #[cfg(loom)]
            unreachable!("loom models use WriteBehind::manual");
            #[cfg(not(loom))]
            {
                let sh = Arc::clone(&shared);
                let t = std::thread::Builder::new()
                    .name("cogwheel-write-behind".into())
                    .spawn(move || {
                        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| sh.run())) {
                            sh.died(&*p);
                        }
                    })?;
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
        sh.dirty.load(Ordering::Acquire) != 0 && {
            let st = sync::lock_spinning(sh.stripe(hash));
            st.live.contains_key(key) || st.taken_has(key)
        }
    }

    /// The pending write of a key, if any: `Some(None)` is a pending delete. Read-through
    /// answers from this instead of the store, which may be stale.
    pub(crate) fn pending<Q>(&self, hash: u64, key: &Q) -> Option<Option<(V, Option<SystemTime>)>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // No `dirty == 0` shortcut here: read-through registers its load, then looks here,
        // while a remove records, then looks for loads to invalidate. Through the stripe lock
        // one of the two sees the other; with a lone atomic load on this side both could miss
        // (the store-buffering pattern; loom model `fetch_vs_remove_never_resurrects`).
        sync::lock_spinning(self.shared.stripe(hash))
            .get(key)
            .map(|r| match &r.op {
                Pending::Put(v, at) => Some((v.clone(), *at)),
                Pending::Delete => None,
            })
    }

    /// Every key with a pending write or delete now. A warm restart notes them before it
    /// scans the store: such a key's write may reach the store while the scan runs, after the
    /// scan read the older copy.
    pub(crate) fn pending_keys(
        &self,
    ) -> std::collections::HashSet<K, crate::hash::DefaultHashBuilder> {
        let mut keys = std::collections::HashSet::default();
        for st in self.shared.stripes.iter() {
            let st = sync::lock(st);
            keys.extend(st.live.keys().cloned());
            if let Some(t) = &st.taken {
                keys.extend(t.keys().cloned());
            }
        }
        keys
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
            if sh.writer_died.load(Ordering::Acquire) {
                return Err(sh.writer_died_error());
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
        // Ask for a round now (no waiting for a batch to fill), unless the store is failing:
        // then the writer's back-off paces the retries, and parked writers wait for them
        // instead of driving the store in a tight loop.
        if sh.failed_rounds.load(Ordering::Relaxed) == 0 {
            sig.kick = true;
            sh.cv.notify_all();
        }
        let epoch = sig.error_epoch;
        let dirty = sh.dirty.load(Ordering::Acquire);
        while sh.dirty.load(Ordering::Acquire) >= dirty
            && sig.error_epoch == epoch
            && !sig.closing
            && sig.died.is_none()
        {
            sig = wait(&sh.cv, sig);
        }
        match &sig.died {
            Some(e) => Err(Error::Store(StdArc::clone(e))),
            None => Ok(()),
        }
    }

    /// Record the latest write of a key (the caller holds the key's lock). Only a key's
    /// clean→dirty transition counts it, and only a stripe's first untaken record enqueues
    /// the stripe. `Closed` once `close` has begun: `close` reads every stripe's sequence
    /// number after setting `closed`, so a record either lands before that read (and its
    /// final flush covers it) or sees `closed` here, under the same stripe lock.
    pub(crate) fn record(&self, hash: u64, key: &K, op: Pending<V>) -> Result<(), Error> {
        let sh = &*self.shared;
        let s = stripe_index(hash);
        let mut st = sync::lock_spinning(&sh.stripes[s]);
        if sh.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        st.seq += 1;
        let seq = st.seq;
        if let Some(r) = st.live.get_mut(key) {
            r.op = op;
            r.seq = seq;
            return Ok(());
        }
        let in_taken = st.taken_has(key);
        let since = sh.clock.now();
        st.live.insert_new(
            key.clone(),
            Record {
                op,
                seq,
                oldest: seq,
                since,
            },
        );
        if !st.queued {
            st.queued = true;
            sh.queue.push(Arc::clone(&sh.nodes[s]));
        }
        if in_taken {
            // Dirty already (its older write is being stored): counted once.
            st.overlap += 1;
            return Ok(());
        }
        // Before the stripe unlocks: the writer cannot retire the record (it needs the
        // stripe) before `dirty` counts it, so `dirty` never undercounts the records.
        let dirty = sh.dirty.fetch_add(1, Ordering::AcqRel) + 1;
        drop(st);
        if !sh.cfg.manual {
            // Wake the writer only when it waits for this: for work at all, or for a full
            // batch. (A notify is a syscall, and waking the writer for every new dirty key
            // costs the writer and this thread a context switch each.) The increment above,
            // then `wanted`: this side of the `wake` hand-shake.
            if sh.wake.wanted(dirty, sh.start_batch) {
                let _sig = sync::lock(&sh.sig);
                sh.cv.notify_all();
            }
        }
        Ok(())
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
            .flat_map(|s| {
                let st = sync::lock(s);
                let taken = st.taken.iter().flat_map(|t| t.keys());
                let only_taken = taken.filter(|k| !st.live.contains_key(*k));
                st.live
                    .keys()
                    .chain(only_taken)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Age of the oldest dirty key (since it became dirty).
    pub(crate) fn oldest_dirty(&self) -> Option<Duration> {
        let sh = &*self.shared;
        let oldest = sh
            .stripes
            .iter()
            .filter_map(|s| {
                let st = sync::lock(s);
                let taken = st.taken.iter().flat_map(|t| t.values());
                st.live.values().chain(taken).map(|r| r.since).min()
            })
            .min()?;
        Some(Duration::from_nanos(sh.clock.now().saturating_sub(oldest)))
    }

    /// (writes, write errors, dead letters, retried rounds) for the stats.
    pub(crate) fn counts(&self) -> (u64, u64, u64, u64) {
        let sh = &*self.shared;
        (
            sh.writes.load(Ordering::Relaxed),
            sh.write_errors.load(Ordering::Relaxed),
            sh.dead_letters.load(Ordering::Relaxed),
            sh.retries.load(Ordering::Relaxed),
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
        // Writes given up on during this flush (dead-lettered) are not in the store: the flush
        // reports them instead of `Ok`. Read before the targets: a write retired as given up
        // after its stripe's target was read is counted after this read (see
        // `single_failed`). Conservative: a give-up of a later write also fails the flush.
        let dead_before = sh.dead_letters.load(Ordering::Acquire);
        let target = sh.seq_targets();
        let flushed = sh.pending_upto(&target);
        let done = || match sh.given_up_since(dead_before) {
            None => Ok(FlushReport { flushed }),
            Some(e) => Err(e),
        };
        if sh.cfg.manual {
            let mut step = 0;
            loop {
                if sh.stored_upto(&target) {
                    return done();
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
            if sh.stored_upto(&target) {
                drop(sig);
                let r = done();
                sig = sync::lock(&sh.sig);
                break r;
            }
            if let Some(e) = &sig.died {
                break Err(Error::Unflushed {
                    pending: sh.pending_upto(&target),
                    cause: StdArc::clone(e),
                });
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
        let me = sync::thread::current().id();
        if self.closed.swap(true, Ordering::AcqRel) {
            // Another close is under way: return once it is done, so that "close returned"
            // means the same for every caller (everything drained or reported), with its
            // outcome. From inside that close (its own thread) there is nothing to wait for.
            let mut sig = sync::lock(&self.sig);
            while !sig.closed_done && sig.closer != Some(me) {
                sig = wait(&self.cv, sig);
            }
            return match &sig.close_failed {
                None => Ok(FlushReport::default()),
                Some((pending, cause)) => Err(Error::Unflushed {
                    pending: *pending,
                    cause: StdArc::clone(cause),
                }),
            };
        }
        sync::lock(&self.sig).closer = Some(me);
        // Marks the close done however it ends, a panic in user code it runs included, so
        // that later closes never wait forever.
        struct Done<'a, K, V>(&'a Shared<K, V>);
        impl<K, V> Drop for Done<'_, K, V> {
            fn drop(&mut self) {
                let mut sig = sync::lock(&self.0.sig);
                sig.closed_done = true;
                self.0.cv.notify_all();
            }
        }
        let _done = Done(self);
        let dead_at_start = self.dead_letters.load(Ordering::Acquire);
        let deadline = Instant::now().checked_add(self.cfg.close_timeout);
        let before_deadline = || deadline.is_none_or(|d| Instant::now() < d);
        // A failed store write is retried (with back-off) until the close timeout: one
        // transient error must not send everything to the dead-letter hook.
        let mut backoff = self.cfg.retry_base;
        let r = loop {
            let r = self.flush_within(deadline);
            let retry = matches!(r, Err(Error::Unflushed { .. }))
                && sync::lock(&self.sig).died.is_none()
                && before_deadline();
            if !retry {
                break r;
            }
            let left = deadline.map_or(backoff, |d| d.saturating_duration_since(Instant::now()));
            std::thread::sleep(backoff.min(left));
            backoff = backoff.saturating_mul(2).min(self.cfg.retry_max);
        };
        // A write given up during an earlier attempt (poison) is not in the store: a later
        // attempt's `Ok` must not hide it.
        let r = r.and_then(|report| match self.given_up_since(dead_at_start) {
            None => Ok(report),
            Some(e) => Err(e),
        });
        let sh = self;
        {
            let mut sig = sync::lock(&sh.sig);
            sig.closing = true;
            sh.cv.notify_all();
        }
        if let Some(t) = sync::lock(&self.thread).take() {
            // The writer holds no cache lock and never calls into the cache, so waiting for it
            // is safe; but it may be stuck inside a hung store, and that must not hang the
            // closing thread past the timeout: then it is detached (when the store answers,
            // it sees `closing` and exits) and what it was writing is reported below.
            while !t.is_finished() && before_deadline() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        if r.is_err() {
            sh.dead_letter_all();
        }
        if let Err(Error::Unflushed { pending, cause }) = &r {
            sync::lock(&sh.sig).close_failed = Some((*pending, StdArc::clone(cause)));
        }
        r
    }

    /// `Unflushed`, counting the writes given up (dead-lettered) since the dead-letter count
    /// was `before`; `None` if there were none.
    fn given_up_since(&self, before: u64) -> Option<Error> {
        let given_up = self.dead_letters.load(Ordering::Acquire) - before;
        (given_up > 0).then(|| Error::Unflushed {
            pending: usize::try_from(given_up).unwrap_or(usize::MAX),
            cause: self.sig_last_error("writes were handed to the dead-letter hook"),
        })
    }

    /// The last store error, or `fallback` when there was none.
    fn sig_last_error(&self, fallback: &str) -> StdArc<StoreError> {
        sync::lock(&self.sig)
            .last_error
            .clone()
            .unwrap_or_else(|| StdArc::new(StoreError::fail(fallback)))
    }

    fn stripe(&self, hash: u64) -> &Stripe<K, V> {
        &self.stripes[stripe_index(hash)]
    }

    /// Each stripe's latest sequence number: what a flush waits for.
    fn seq_targets(&self) -> [u64; STRIPES] {
        std::array::from_fn(|i| sync::lock(&self.stripes[i]).seq)
    }

    /// Whether every write with a sequence number up to its stripe's target is stored: the
    /// flush barrier's test, O(1) per stripe. A generation lists its records in the order
    /// their keys became dirty, so its first record holds its smallest `oldest` (a rewrite
    /// keeps a record's place and its `oldest`; a merge after a failure appends only newer
    /// keys; a partial retirement keeps the order). This is DESIGN's `flushed_seq`, per
    /// stripe: everything below the first pending record's `oldest` is in the store.
    fn stored_upto(&self, target: &[u64; STRIPES]) -> bool {
        if self.dirty.load(Ordering::Acquire) == 0 {
            return true;
        }
        self.stripes.iter().zip(target).all(|(s, &t)| {
            let st = sync::lock(s);
            let first = |g: &Records<K, V>| g.list.first().map(|(_, r)| r.oldest);
            let oldest = [first(&st.live), st.taken.as_deref().and_then(first)];
            debug_assert!(st.live.in_dirty_order() && st.taken.iter().all(|g| g.in_dirty_order()));
            oldest.into_iter().flatten().all(|o| o > t)
        })
    }

    /// How many dirty keys hold a write with a sequence number up to their stripe's target
    /// (for reports: it walks every record).
    fn pending_upto(&self, target: &[u64; STRIPES]) -> usize {
        if self.dirty.load(Ordering::Acquire) == 0 {
            return 0;
        }
        self.stripes
            .iter()
            .zip(target)
            .map(|(s, &t)| {
                let st = sync::lock(s);
                let due = |r: &Record<V>| r.oldest <= t;
                let live = st.live.values().filter(|r| due(r)).count();
                // A key due in both generations counts once.
                let taken = st.taken.iter().flat_map(|g| g.iter());
                let taken_only = taken
                    .filter(|(k, r)| due(r) && !st.live.get(*k).is_some_and(due))
                    .count();
                live + taken_only
            })
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
                if sig.closing {
                    // Close came while a batch was filling: its own flush has the records.
                    return;
                }
            }
            match self.round_locked() {
                Ok(_) => backoff = self.cfg.retry_base,
                Err(_) => {
                    // Back off, unless a flush or close asks to go now. (Other wake-ups, such
                    // as a caller's new dirty key, do not cut the back-off short.)
                    let mut sig = sync::lock(&self.sig);
                    let start = Instant::now();
                    while !sig.kick && !sig.closing {
                        let left = backoff.saturating_sub(start.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        sig = self
                            .cv
                            .wait_timeout(sig, left)
                            .map_or_else(|p| p.into_inner().0, |(g, _)| g);
                    }
                    sig.kick = false;
                    drop(sig);
                    backoff = backoff.saturating_mul(2).min(self.cfg.retry_max);
                }
            }
        }
    }

    /// One drain round (serialized): take the records of queued stripes (about `max_batch`
    /// keys), write them in batches of at most `max_batch`, and retire what was stored.
    /// Returns how many keys were written.
    fn round_locked(&self) -> Result<usize, StdArc<StoreError>> {
        let _one = sync::lock(&self.drain);
        // Stripes are taken until the round holds `max_batch` keys; the rest stay queued and
        // keep coalescing. (Taking everything would make a round of a small `max_batch` over a
        // slow store long, and every key written during it a second store write.)
        let mut gens: Vec<(usize, Generation<K, V>)> = Vec::new();
        let mut keys = 0;
        let mut round = RequeueOnUnwind {
            sh: self,
            taken: [false; STRIPES],
        };
        if let Some(mut consumer) = self.queue.consumer() {
            while keys < self.cfg.max_batch {
                let Some(node) = consumer.pop_wait() else {
                    break;
                };
                let s = **node;
                if std::mem::replace(&mut round.taken[s], true) {
                    // Pushed again by a caller since this round took it: its new records
                    // belong to the next round (taking them now would merge the generation
                    // being written and write its keys twice). Its flag is still set.
                    drop(consumer);
                    self.queue.push(node);
                    break;
                }
                if let Some(g) = self.take(s) {
                    keys += g.len();
                    gens.push((s, g));
                }
            }
        }
        if gens.is_empty() {
            return Ok(0);
        }
        let failed_before = self.failed_rounds.load(Ordering::Relaxed);
        if failed_before > 0 {
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
        let split = failed_before >= 2 && keys > 1;
        let result = if split {
            self.write_singly(gens)
        } else {
            self.write_all(gens)
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

    /// Take a stripe's untaken records for this round: `live` becomes the taken generation
    /// (a swap), or joins the generation left by a failed round (a merge, under the lock:
    /// failure rounds only). `None` when the stripe has nothing pending.
    fn take(&self, s: usize) -> Option<Generation<K, V>> {
        let mut guard = sync::lock(&self.stripes[s]);
        let st = &mut *guard;
        st.queued = false;
        if st.live.is_empty() {
            return st.taken.clone();
        }
        let generation = match &st.taken {
            None => {
                let fresh = st.spare.take().unwrap_or_default();
                std::mem::replace(&mut st.live, fresh)
            }
            Some(old) => {
                // A newer write of a key replaces its older one (only the latest state needs
                // storing); the older `oldest` and `since` stay, for flush and age. Built
                // aside (failure rounds only, so the copies are rare) and swapped in when
                // complete: a panic in a key's or value's `Clone`, `Hash` or `Eq` here ends
                // the writer thread but leaves both generations for `close` to report.
                let mut merged = Records::clone(old);
                for (k, r) in st.live.iter() {
                    match merged.get_mut(k) {
                        Some(m) => {
                            m.op = r.op.clone();
                            m.seq = r.seq;
                        }
                        None => merged.insert_new(k.clone(), r.clone()),
                    }
                }
                st.live.clear();
                st.overlap = 0;
                merged
            }
        };
        let g = Arc::new(generation);
        st.taken = Some(Arc::clone(&g));
        Some(g)
    }

    /// Write a round's generations in batches of at most `max_batch` and retire each stored
    /// generation (O(1) per stripe). When a batch fails, the batches before it are retired
    /// key by key and the rest is kept for the retry.
    fn write_all(&self, gens: Vec<(usize, Generation<K, V>)>) -> Result<usize, StdArc<StoreError>> {
        let ops: Vec<WriteOp<'_, K, V>> = gens
            .iter()
            .flat_map(|(_, g)| g.iter().map(|(k, r)| write_op(k, &r.op)))
            .collect();
        let n = ops.len();
        let mut stored = 0;
        for chunk in ops.chunks(self.cfg.max_batch) {
            if let Err(e) = self.write(chunk) {
                drop(ops);
                if n == 1 {
                    // A single pending key: a suspect's failure counts (see `single_failed`).
                    let (s, g) = &gens[0];
                    let (k, r) = g.iter().next().expect("one key");
                    if self.single_failed(*s, k, r, &e, false, true) {
                        self.retire_some(*s, g, &[k], 1);
                    }
                }
                // The batches before the failed one are stored: retire their keys (the ops
                // follow the generations' lists in order).
                // The rest is kept and written again after the back-off.
                for (s, g) in &gens {
                    let done: Vec<&K> = g.keys().take(stored).collect();
                    stored -= done.len();
                    self.retire_some(*s, g, &done, 0);
                }
                self.requeue(gens.iter().map(|(s, _)| *s));
                return Err(e);
            }
            stored += chunk.len();
        }
        drop(ops);
        for (s, g) in gens {
            self.retire_all(s, g);
        }
        Ok(n)
    }

    /// After repeated failures: one write per key, to tell a poison key from a down store.
    fn write_singly(
        &self,
        gens: Vec<(usize, Generation<K, V>)>,
    ) -> Result<usize, StdArc<StoreError>> {
        let mut ok = 0;
        let mut last = None;
        // Per generation: the keys stored, and the failures (judged once the round knows
        // whether anything succeeded).
        let mut outcome = Vec::with_capacity(gens.len());
        for (s, g) in &gens {
            let (mut done, mut failed) = (Vec::new(), Vec::new());
            for (k, r) in g.iter() {
                match self.write(&[write_op(k, &r.op)]) {
                    Ok(()) => {
                        ok += 1;
                        done.push(k);
                    }
                    Err(e) => {
                        last = Some(StdArc::clone(&e));
                        failed.push((k, r, e));
                    }
                }
            }
            outcome.push((*s, g, done, failed));
        }
        for (s, g, mut done, failed) in outcome {
            let mut given_up = 0;
            for (k, r, e) in failed {
                if self.single_failed(s, k, r, &e, ok > 0, false) {
                    done.push(k);
                    given_up += 1;
                }
            }
            self.retire_some(s, g, &done, given_up);
        }
        self.requeue(gens.iter().map(|(s, _)| *s));
        match last {
            Some(e) if ok == 0 => Err(e),
            _ => Ok(ok),
        }
    }

    /// A write of one key failed. The key becomes a *suspect* when other writes succeeded in
    /// the same round (the store works, this key does not). A suspect's failure counts when
    /// other writes succeeded again, or when it was the only write (`alone`: nothing tells
    /// then whether the store is down); not when the others failed too (the store is down).
    /// After `max_attempts` counted failures it is dead-lettered (unless a newer write of the
    /// key is pending, which gets its own chances). Returns whether it was dead-lettered; the
    /// caller retires the key with `retire_some`, which counts it in `dead_letters` under the
    /// same stripe lock (so a flush that finds the key gone also finds it counted).
    fn single_failed(
        &self,
        s: usize,
        k: &K,
        r: &Record<V>,
        e: &StdArc<StoreError>,
        others_ok: bool,
        alone: bool,
    ) -> bool {
        let give_up = {
            let mut p = sync::lock(&self.poison);
            match p.get_mut(k) {
                Some(n) => {
                    if others_ok || alone {
                        *n += 1;
                    }
                    *n >= self.cfg.max_attempts
                }
                None if others_ok => {
                    p.insert(k.clone(), 1);
                    self.suspects.store(true, Ordering::Relaxed);
                    self.cfg.max_attempts <= 1
                }
                None => false,
            }
        };
        if !give_up {
            return false;
        }
        if sync::lock(&self.stripes[s]).live.contains_key(k) {
            // The newer write gets chances of its own.
            self.forgive(k);
            return false;
        }
        self.forgive(k);
        self.dead_letter(k, r, e);
        true
    }

    /// A whole taken generation is stored: the stripe forgets it, and its keys are clean
    /// unless written again meanwhile (those are in `live`, counted by `overlap`).
    fn retire_all(&self, s: usize, g: Generation<K, V>) {
        {
            let mut st = sync::lock(&self.stripes[s]);
            if !st.taken.as_ref().is_some_and(|t| Arc::ptr_eq(t, &g)) {
                return; // dead-lettered by `close` meanwhile
            }
            let clean = g.len() - st.overlap;
            st.overlap = 0;
            st.taken = None;
            // Decremented only after the records are gone: `dirty` never undercounts them
            // (its zero is a fast path for "no record at all").
            self.dirty.fetch_sub(clean, Ordering::AcqRel);
        }
        if self.suspects.load(Ordering::Relaxed) {
            for k in g.keys() {
                self.forgive(k);
            }
        }
        // The records keep their capacity for a later `live` (cleared outside the lock).
        if let Ok(mut m) = Arc::try_unwrap(g) {
            m.clear();
            let mut st = sync::lock(&self.stripes[s]);
            if st.spare.is_none() {
                st.spare = Some(m);
            }
        }
    }

    /// Some keys of a taken generation are done (stored, or dead-lettered: `given_up` of
    /// them): the rest stays taken, as a new generation.
    fn retire_some(&self, s: usize, g: &Generation<K, V>, done: &[&K], given_up: u64) {
        if done.is_empty() {
            return;
        }
        let done: std::collections::HashSet<&K, crate::hash::DefaultHashBuilder> =
            done.iter().copied().collect();
        let rest: Records<K, V> = g
            .iter()
            .filter(|(k, _)| !done.contains(k))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        let mut st = sync::lock(&self.stripes[s]);
        if !st.taken.as_ref().is_some_and(|t| Arc::ptr_eq(t, g)) {
            return;
        }
        let clean = done.iter().filter(|k| !st.live.contains_key(**k)).count();
        st.overlap = rest.keys().filter(|k| st.live.contains_key(*k)).count();
        st.taken = (!rest.is_empty()).then(|| Arc::new(rest));
        // Counted under the stripe lock and before `dirty` drops, as the records leave: a
        // flush that finds a given-up key gone (under this lock, or through `dirty` reaching
        // zero) then also finds it counted, and cannot report `Ok` for a write that was
        // dead-lettered.
        if given_up != 0 {
            self.dead_letters.fetch_add(given_up, Ordering::AcqRel);
        }
        self.dirty.fetch_sub(clean, Ordering::AcqRel);
        drop(st);
        for k in done {
            self.forgive(k);
        }
    }

    /// Put every listed stripe that still has pending records back on the queue.
    fn requeue(&self, stripes: impl Iterator<Item = usize>) {
        for s in stripes {
            let mut st = sync::lock(&self.stripes[s]);
            if !st.queued && (!st.live.is_empty() || st.taken.is_some()) {
                st.queued = true;
                self.queue.push(Arc::clone(&self.nodes[s]));
            }
        }
    }

    fn write(&self, ops: &[WriteOp<'_, K, V>]) -> Result<(), StdArc<StoreError>> {
        // A panicking store must not kill the writer (every later write would be lost) nor
        // be swallowed: it becomes an `Unknown` failure that flush callers see.
        let r = panic::catch_unwind(AssertUnwindSafe(|| self.store.write_batch(ops)))
            .unwrap_or_else(|p| {
                Err(StoreError::unknown(format!(
                    "the store panicked in write_batch: {}",
                    panic_message(&*p)
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

    /// The writer thread panicked with `p`: wake everyone who waits for it, with the error.
    #[cfg(not(loom))]
    fn died(&self, p: &(dyn std::any::Any + Send)) {
        let e = StdArc::new(StoreError::fail(format!(
            "the write-behind writer thread panicked: {}",
            panic_message(p)
        )));
        let mut sig = sync::lock(&self.sig);
        sig.last_error = Some(StdArc::clone(&e));
        sig.died = Some(e);
        self.writer_died.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    fn writer_died_error(&self) -> Error {
        let e = sync::lock(&self.sig).died.clone();
        Error::Store(e.unwrap_or_else(|| StdArc::new(StoreError::fail("the writer stopped"))))
    }

    fn dead_letter(&self, k: &K, r: &Record<V>, e: &StoreError) {
        if let Some(hook) = &self.dead_letter {
            call_hook(hook, k, r, e);
        }
    }

    /// At close, after a failed final flush: report every remaining write (a key's latest).
    fn dead_letter_all(&self) {
        // No round may be writing what is handed over here (it would be both stored and
        // reported): in manual mode wait for a flush on another thread to finish its round;
        // in threaded mode the writer has exited, unless it is stuck in a hung store and was
        // detached (what it is writing is then reported as not confirmed: it may land).
        let no_round = if self.cfg.manual {
            Some(sync::lock(&self.drain))
        } else {
            sync::try_lock(&self.drain)
        };
        let e = self.sig_last_error("closed before it could be written");
        // Each stripe's records are taken out, and counted (dirty, dead letters), under its
        // lock, so a flush that finds the stripe empty also finds them counted as given up.
        // The hook is called after the drain lock is released: it is user code, and one that
        // calls into the cache (say, close from the closing thread) must not find it held.
        let taken: Vec<_> = self
            .stripes
            .iter()
            .map(|s| {
                let mut st = sync::lock(s);
                let live = std::mem::take(&mut st.live);
                let taken = st.taken.take();
                let older = taken.iter().flat_map(|g| g.keys());
                let n = live.len() + older.filter(|k| !live.contains_key(*k)).count();
                st.overlap = 0;
                // Dead letters first: a flush that sees `dirty` at zero (its lock-free fast
                // path) must see them counted.
                self.dead_letters.fetch_add(n as u64, Ordering::AcqRel);
                self.dirty.fetch_sub(n, Ordering::AcqRel);
                (live, taken)
            })
            .collect();
        drop(no_round);
        for (live, taken) in taken {
            let older = taken.iter().flat_map(|g| g.iter());
            let older = older.filter(|(k, _)| !live.contains_key(*k));
            for (k, r) in live.iter().chain(older) {
                self.dead_letter(k, r, &e);
            }
        }
    }
}

/// The store operation of a pending write.
fn write_op<'a, K, V>(key: &'a K, op: &'a Pending<V>) -> WriteOp<'a, K, V> {
    match op {
        Pending::Put(v, at) => WriteOp::Put {
            key,
            value: v,
            expires_at: *at,
        },
        Pending::Delete => WriteOp::Delete { key },
    }
}

fn stripe_index(hash: u64) -> usize {
    (hash >> 40) as usize % STRIPES
}

/// The text of a panic's payload.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Hand a write to the dead-letter hook. A panicking hook is the user's bug, but it must not
/// kill the writer thread (every later write would be stranded): its panic is caught and the
/// write still counts as dead-lettered.
fn call_hook<K, V: Clone>(hook: &DeadLetterHook<K, V>, k: &K, r: &Record<V>, e: &StoreError) {
    let _ = panic::catch_unwind(AssertUnwindSafe(|| hook(k, to_dead(r.op.clone()), e)));
}

fn to_dead<V>(op: Pending<V>) -> DeadLetter<V> {
    match op {
        Pending::Put(v, _) => DeadLetter::Put(v),
        Pending::Delete => DeadLetter::Delete,
    }
}

fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|p| p.into_inner())
}
