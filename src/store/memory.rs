//! An in-memory [`BackingStore`] for tests and examples, with programmable faults.
//!
//! [`MemoryStore`] is a cheap handle (clones share one store), so a test keeps one handle to
//! program faults and inspect what was applied while the cache owns another. Everything is
//! deterministic: failures are drawn from a seeded generator indexed by the call number, never
//! from the wall clock, and "hang" is a gate the test opens, not a timeout.

use super::{BackingStore, ScanItem, StoreError, Stored, WriteOp};
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

/// How an injected failure is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// [`StoreErrorKind::Fail`](super::StoreErrorKind::Fail): nothing is applied.
    Fail,
    /// [`StoreErrorKind::Unknown`](super::StoreErrorKind::Unknown): `applied` says how much of a
    /// failing `write_batch` really reached the store (loads and scans apply nothing anyway).
    Unknown {
        /// What the failing batch applied before the error.
        applied: Applied,
    },
}

/// How much of a batch an `Unknown` failure applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing (the request was lost on the way there).
    Nothing,
    /// Everything (the reply was lost on the way back).
    All,
    /// The first `n` operations, in order (the connection broke mid-batch).
    Prefix(usize),
}

/// A fault programme. The default injects nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Percentage (0–100) of affected calls that fail.
    pub fail_percent: u8,
    /// How injected failures are reported.
    pub kind: FaultKind,
    /// Seed of the deterministic failure sequence: call number `n` fails if a hash of
    /// `(seed, n)` falls under `fail_percent`.
    pub seed: u64,
    /// Whether `load` calls are subject to `fail_percent`.
    pub loads: bool,
    /// Whether `write_batch` calls are subject to `fail_percent`.
    pub writes: bool,
    /// Whether `scan` calls are subject to `fail_percent`.
    pub scans: bool,
    /// Added to every call (before it is applied).
    pub latency: Option<Duration>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_percent: 0,
            kind: FaultKind::Fail,
            seed: 0,
            loads: true,
            writes: true,
            scans: true,
            latency: None,
        }
    }
}

impl Faults {
    /// Fail `percent` % of every kind of call, reported as `kind`, with `seed`.
    pub fn failing(percent: u8, kind: FaultKind, seed: u64) -> Self {
        Faults {
            fail_percent: percent.min(100),
            kind,
            seed,
            ..Faults::default()
        }
    }

    /// Only `write_batch` calls are subject to failures.
    pub fn writes_only(mut self) -> Self {
        self.loads = false;
        self.scans = false;
        self
    }
}

/// One operation the store applied, in the order it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppliedOp<K, V> {
    /// A put.
    Put {
        /// The key.
        key: K,
        /// The value.
        value: V,
        /// Its deadline.
        expires_at: Option<SystemTime>,
    },
    /// A delete (recorded even when the key was absent).
    Delete {
        /// The key.
        key: K,
    },
}

/// How many calls the store received, and how many of them failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCounts {
    /// `load` calls.
    pub loads: u64,
    /// `write_batch` calls.
    pub write_batches: u64,
    /// `scan` calls.
    pub scans: u64,
    /// Calls that returned an error (injected, down, or hung-then-down).
    pub errors: u64,
}

#[derive(Debug)]
struct State<K, V> {
    data: HashMap<K, Stored<V>>,
    log: Vec<AppliedOp<K, V>>,
    faults: Faults,
    down: bool,
    hung: bool,
    waiting: usize,
    now: Option<SystemTime>,
}

struct Inner<K, V> {
    state: Mutex<State<K, V>>,
    gate: Condvar,
    call_no: AtomicU64,
    loads: AtomicU64,
    writes: AtomicU64,
    scans: AtomicU64,
    errors: AtomicU64,
}

/// A thread-safe in-memory store with fault injection.
///
/// ```
/// use cogwheel::store::{BackingStore, FaultKind, Faults, MemoryStore, StoreErrorKind, WriteOp};
///
/// let store: MemoryStore<String, u32> = MemoryStore::new();
/// let k = "a".to_string();
/// store.write_batch(&[WriteOp::Put { key: &k, value: &1, expires_at: None }]).unwrap();
/// assert_eq!(store.load(&k).unwrap().unwrap().value, 1);
///
/// // Every write now fails as Unknown, but is applied anyway (a lost reply).
/// store.set_faults(Faults::failing(100, FaultKind::Unknown { applied: cogwheel::store::Applied::All }, 7));
/// let e = store.write_batch(&[WriteOp::Put { key: &k, value: &2, expires_at: None }]).unwrap_err();
/// assert_eq!(e.kind(), StoreErrorKind::Unknown);
/// store.clear_faults();
/// assert_eq!(store.load(&k).unwrap().unwrap().value, 2);
/// assert_eq!(store.applied_ops().len(), 2);
///
/// store.set_down(true);
/// assert_eq!(store.load(&k).unwrap_err().kind(), StoreErrorKind::Fail);
/// ```
pub struct MemoryStore<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for MemoryStore<K, V> {
    fn clone(&self) -> Self {
        MemoryStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> Default for MemoryStore<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for MemoryStore<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("MemoryStore")
            .field("entries", &s.data.len())
            .field("applied_ops", &s.log.len())
            .field("faults", &s.faults)
            .field("down", &s.down)
            .field("hung", &s.hung)
            .finish()
    }
}

/// SplitMix64: a well-mixed hash of one word, used to draw the fault sequence.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Load,
    Write,
    Scan,
}

impl<K, V> MemoryStore<K, V> {
    /// An empty store without faults.
    pub fn new() -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    data: HashMap::new(),
                    log: Vec::new(),
                    faults: Faults::default(),
                    down: false,
                    hung: false,
                    waiting: 0,
                    now: None,
                }),
                gate: Condvar::new(),
                call_no: AtomicU64::new(0),
                loads: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                scans: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        }
    }

    // A test that panics while holding the lock must not turn every later call into a panic:
    // the state is plain data and stays consistent between statements.
    fn lock(&self) -> MutexGuard<'_, State<K, V>> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace the fault programme. The call counter that indexes the failure sequence keeps
    /// running; see [`reset_counts`](Self::reset_counts) to restart it.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Stop injecting failures and latency (does not lift `down` or open a hang).
    pub fn clear_faults(&self) {
        self.lock().faults = Faults::default();
    }

    /// The current fault programme.
    pub fn faults(&self) -> Faults {
        self.lock().faults
    }

    /// Add `latency` to every call (`None` for none).
    pub fn set_latency(&self, latency: Option<Duration>) {
        self.lock().faults.latency = latency;
    }

    /// Take the store down (`true`: every call fails with `Fail` and applies nothing) or bring it
    /// back. Calls blocked in a hang wake up and fail when the store goes down.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
        self.inner.gate.notify_all();
    }

    /// Whether the store is down.
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// Close the gate: every call from now on blocks (before doing anything) until
    /// [`release`](Self::release) or [`set_down`](Self::set_down)`(true)`.
    pub fn hang(&self) {
        self.lock().hung = true;
    }

    /// Open the gate: blocked calls proceed.
    pub fn release(&self) {
        self.lock().hung = false;
        self.inner.gate.notify_all();
    }

    /// How many calls are blocked in a hang right now.
    pub fn hung_calls(&self) -> usize {
        self.lock().waiting
    }

    /// Block until at least `n` calls are blocked in a hang (a deterministic way for a test to
    /// know that its background call has reached the store).
    pub fn wait_for_hung_calls(&self, n: usize) {
        let mut s = self.lock();
        while s.waiting < n {
            s = self
                .inner
                .gate
                .wait(s)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Fix the wall-clock "now" that decides whether an entry has expired (`None`: the system
    /// clock). Expired entries are misses for `load` and are skipped by `scan`.
    pub fn set_now(&self, now: Option<SystemTime>) {
        self.lock().now = now;
    }

    /// Every operation applied so far, in order.
    pub fn applied_ops(&self) -> Vec<AppliedOp<K, V>>
    where
        K: Clone,
        V: Clone,
    {
        self.lock().log.clone()
    }

    /// Forget the recorded operations (contents stay).
    pub fn clear_applied_ops(&self) {
        self.lock().log.clear();
    }

    /// A copy of the contents, expired entries included.
    pub fn snapshot(&self) -> HashMap<K, Stored<V>>
    where
        K: Clone,
        V: Clone,
    {
        self.lock().data.clone()
    }

    /// Number of entries held, expired entries included.
    pub fn len(&self) -> usize {
        self.lock().data.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lock().data.is_empty()
    }

    /// Put an entry directly, bypassing faults, counters and the applied-ops log (to set up a
    /// test, e.g. a warm restart).
    pub fn insert(&self, key: K, value: V, expires_at: Option<SystemTime>)
    where
        K: Eq + Hash,
    {
        self.lock().data.insert(key, Stored { value, expires_at });
    }

    /// Calls received so far.
    pub fn calls(&self) -> CallCounts {
        CallCounts {
            loads: self.inner.loads.load(Ordering::Relaxed),
            write_batches: self.inner.writes.load(Ordering::Relaxed),
            scans: self.inner.scans.load(Ordering::Relaxed),
            errors: self.inner.errors.load(Ordering::Relaxed),
        }
    }

    /// Zero the call counts and restart the failure sequence at call number 0.
    pub fn reset_counts(&self) {
        for c in [
            &self.inner.call_no,
            &self.inner.loads,
            &self.inner.writes,
            &self.inner.scans,
            &self.inner.errors,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// The common prologue of every call: count it, wait at the gate, add latency, and decide
    /// whether it fails. Returns the locked state to apply the call under, with the injected
    /// fault if this call draws one; `Err` when the store is down.
    #[allow(clippy::type_complexity)]
    fn enter(
        &self,
        call: Call,
    ) -> Result<(MutexGuard<'_, State<K, V>>, Option<(StoreError, FaultKind)>), StoreError> {
        let counter = match call {
            Call::Load => &self.inner.loads,
            Call::Write => &self.inner.writes,
            Call::Scan => &self.inner.scans,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let n = self.inner.call_no.fetch_add(1, Ordering::Relaxed);

        let mut s = self.lock();
        if s.hung && !s.down {
            s.waiting += 1;
            self.inner.gate.notify_all();
            while s.hung && !s.down {
                s = self
                    .inner
                    .gate
                    .wait(s)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            s.waiting -= 1;
        }
        if let Some(d) = s.faults.latency {
            drop(s);
            std::thread::sleep(d);
            s = self.lock();
        }
        if s.down {
            return Err(self.fail(StoreError::fail("memory store is down")));
        }
        let f = s.faults;
        let subject = match call {
            Call::Load => f.loads,
            Call::Write => f.writes,
            Call::Scan => f.scans,
        };
        let draw = mix(f.seed ^ mix(n)) % 100;
        if subject && draw < u64::from(f.fail_percent) {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
            let e = match f.kind {
                FaultKind::Fail => StoreError::fail(format!("injected failure (call {n})")),
                FaultKind::Unknown { .. } => {
                    StoreError::unknown(format!("injected unknown outcome (call {n})"))
                }
            };
            return Ok((s, Some((e, f.kind))));
        }
        Ok((s, None))
    }

    fn now(s: &State<K, V>) -> SystemTime {
        s.now.unwrap_or_else(SystemTime::now)
    }

    fn fail(&self, e: StoreError) -> StoreError {
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        e
    }
}

fn live<V>(st: &Stored<V>, now: SystemTime) -> bool {
    st.expires_at.is_none_or(|t| t > now)
}

fn apply<K: Eq + Hash + Clone, V: Clone>(s: &mut State<K, V>, op: &WriteOp<'_, K, V>) {
    match *op {
        WriteOp::Put {
            key,
            value,
            expires_at,
        } => {
            s.data.insert(
                key.clone(),
                Stored {
                    value: value.clone(),
                    expires_at,
                },
            );
            s.log.push(AppliedOp::Put {
                key: key.clone(),
                value: value.clone(),
                expires_at,
            });
        }
        WriteOp::Delete { key } => {
            s.data.remove(key);
            s.log.push(AppliedOp::Delete { key: key.clone() });
        }
    }
}

impl<K, V> BackingStore<K, V> for MemoryStore<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn load(&self, key: &K) -> Result<Option<Stored<V>>, StoreError> {
        let (s, fault) = self.enter(Call::Load)?;
        if let Some((e, _)) = fault {
            return Err(e);
        }
        let now = Self::now(&s);
        Ok(s.data.get(key).filter(|st| live(st, now)).cloned())
    }

    fn write_batch(&self, ops: &[WriteOp<'_, K, V>]) -> Result<(), StoreError> {
        let (mut s, fault) = self.enter(Call::Write)?;
        let (n, result) = match fault {
            None => (ops.len(), Ok(())),
            Some((
                e,
                FaultKind::Unknown {
                    applied: Applied::All,
                },
            )) => (ops.len(), Err(e)),
            Some((
                e,
                FaultKind::Unknown {
                    applied: Applied::Prefix(n),
                },
            )) => (n.min(ops.len()), Err(e)),
            Some((e, _)) => (0, Err(e)),
        };
        for op in &ops[..n] {
            apply(&mut s, op);
        }
        result
    }

    fn scan(&self, visit: &mut dyn FnMut(ScanItem<K, V>) -> bool) -> Result<(), StoreError> {
        let entries: Vec<(K, Stored<V>)> = {
            let (s, fault) = self.enter(Call::Scan)?;
            if let Some((e, _)) = fault {
                return Err(e);
            }
            let now = Self::now(&s);
            s.data
                .iter()
                .filter(|(_, st)| live(st, now))
                .map(|(k, st)| (k.clone(), st.clone()))
                .collect()
        };
        // Visit outside the lock, so the visitor may call back into the store.
        for (k, st) in entries {
            if !visit(Ok((k, st))) {
                break;
            }
        }
        Ok(())
    }

    /// A write for the fault injection: it fails (applying nothing, or everything for
    /// `Unknown { applied: All }`) as a `write_batch` would, and its deletes are logged.
    fn purge_expired(&self, now: SystemTime) -> Result<usize, StoreError> {
        let (mut s, fault) = self.enter(Call::Write)?;
        let result = match fault {
            None => Ok(()),
            Some((
                e,
                FaultKind::Unknown {
                    applied: Applied::All,
                },
            )) => Err(e),
            Some((e, _)) => return Err(e),
        };
        let doomed: Vec<K> = s
            .data
            .iter()
            .filter(|(_, st)| !live(st, now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &doomed {
            apply(&mut s, &WriteOp::Delete { key });
        }
        result.map(|()| doomed.len())
    }
}
