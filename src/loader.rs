//! Single-flight loading: at most one caller per key runs the loader at a time; the others
//! wait for its outcome.
//!
//! The registry maps each key with a load in progress to a *flight*, sharded by key hash so that
//! unrelated misses do not contend. No registry lock is held while user code runs (`check`,
//! `init`, `publish`); waiters block on the flight's condition variable, never spin.
//!
//! # Outcomes
//!
//! * **Value.** The leader's `init` returns `Ok(v)`: `publish(&v)` runs (unless the flight was
//!   invalidated, below), then every waiter gets a clone of `v`.
//! * **Error.** `init` returns `Err(e)`: the leader and every waiter get the same `Arc<E>`. An
//!   error is never cached: the flight leaves the registry first, so the next caller starts a
//!   new one. (A waiter whose `E` differs from the leader's cannot receive it and simply starts
//!   a new flight itself.)
//! * **Panic.** `init` (or `check`, or `publish`) panics: the flight is marked abandoned and
//!   removed, every waiter wakes and retries from the start, so exactly one of them becomes the
//!   new leader. The panic continues in the panicking caller only.
//! * **Recursion.** A thread that calls `run` for a key whose flight it leads itself (its `init`
//!   asked for the same key) gets [`LoadError::Recursive`] instead of waiting for itself forever.
//!   (Two threads loading two keys that need each other still deadlock, as with any lock.)
//!
//! # Not overwriting a newer write: `invalidate` and `publish`
//!
//! A load that started before a concurrent `insert` or `remove` of the same key must not put
//! its (older) value into the cache after that write. The protocol has two halves:
//!
//! 1. A writer calls [`Loader::invalidate`] for the key *before* it changes the cache, holding
//!    no cache lock. If a flight is running it is marked *stale*.
//! 2. The leader does not publish its value itself after `run` returns (by then the flight is
//!    gone and a writer's `invalidate` could no longer see it). Instead `run` calls `publish`
//!    while the flight is still registered, under the flight's own lock, and only if the flight
//!    is not stale. `invalidate` takes that lock too, so it either happens before the publish
//!    (which is then skipped: [`Origin::Stale`]) or waits until the publish is complete (and the
//!    writer's change lands after it).
//!
//! A stale value is still handed to the leader and the waiters: it is the answer to their
//! `get`, just not something to keep. Loads that start *after* the `invalidate` cannot be
//! ordered this way, because `check` may run before the writer's change; `publish` must
//! therefore be an insert-if-absent, so a writer's value is never replaced by a load's.
//! `publish` runs under the flight lock: it must not call back into this loader for the same
//! key (in particular not through a path that calls `invalidate`).
//!
//! The items are `pub` inside this private module only so that the loom shim (`crate::__loom`)
//! can re-export them; outside the crate they stay unreachable.

use crate::sync::{self, Arc, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering, thread};
use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::panic::{self, AssertUnwindSafe};

/// Registry shards; a power of two. Loads are rare next to reads, so a few suffice.
const SHARDS: usize = 16;

/// An error shared by the leader and its waiters, with its type erased so one registry serves
/// callers with different error types. A std `Arc` (not the facade's): it only carries the
/// user's immutable value, published under the flight mutex, and loom's `Arc` cannot hold a
/// `dyn Any`.
type SharedError = std::sync::Arc<dyn Any + Send + Sync>;

/// Why `run` returned no value.
#[derive(Debug)]
pub enum LoadError<E> {
    /// The leader's `init` failed; every caller of that flight shares this error.
    Failed(std::sync::Arc<E>),
    /// This thread is already loading this key (its `init` asked for the same key).
    Recursive,
}

/// Where the value `run` returned came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `check` found it: someone stored it meanwhile; nothing was loaded.
    Present,
    /// This caller ran `init` and published the value.
    Published,
    /// This caller ran `init`, but the flight was invalidated by a concurrent write, so the
    /// value was not published.
    Stale,
    /// Another caller's flight loaded it (published or not: the leader's business).
    Shared,
}

/// A value returned by [`Loader::run`], and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<V> {
    /// The value.
    pub value: V,
    /// How it was obtained.
    pub origin: Origin,
}

/// The single-flight registry; see the module docs.
pub struct Loader<K, V> {
    shards: Box<[Shard<K, V>]>,
}

/// One load in progress.
struct Flight<V> {
    /// The thread running `init`, to detect re-entrant loads.
    leader: thread::Thread,
    state: Mutex<State<V>>,
    /// Signalled once, when `state` leaves `Running`.
    done: Condvar,
}

enum State<V> {
    Running {
        stale: bool,
    },
    Done(V),
    Failed(SharedError),
    /// The leader panicked; waiters start over.
    Abandoned,
}

/// One registry shard: the flights, and how many there are. The count is changed only under
/// the map's lock, and read without it by `invalidate`: every insert and remove calls
/// `invalidate`, and almost always no load is running, so the common case costs one load
/// instead of a lock.
struct Shard<K, V> {
    map: Mutex<HashMap<K, Arc<Flight<V>>>>,
    flights: AtomicUsize,
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Loader<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Loader<K, V> {
    /// An empty registry.
    pub fn new() -> Self {
        Loader {
            shards: (0..SHARDS)
                .map(|_| Shard {
                    map: Mutex::new(HashMap::new()),
                    flights: AtomicUsize::new(0),
                })
                .collect(),
        }
    }

    /// Get the value of `key`, loading it with `init` unless another caller already is.
    ///
    /// A new leader first calls `check` (a value stored since the caller's miss is returned
    /// as [`Origin::Present`] without loading), then `init` with no lock held, then, if the
    /// flight was not invalidated, `publish(&value)` (see the module docs for why publishing
    /// happens in here). `hash` must be the key's hash under the cache's hasher; it only picks a
    /// registry shard.
    pub fn run<E, C, I, P>(
        &self,
        hash: u64,
        key: &K,
        check: C,
        init: I,
        publish: P,
    ) -> Result<Loaded<V>, LoadError<E>>
    where
        E: Send + Sync + 'static,
        C: FnOnce() -> Option<V>,
        I: FnOnce() -> Result<V, E>,
        P: FnOnce(&V),
    {
        let shard = self.shard(hash);
        let me = thread::current();
        loop {
            let flight = 'join: {
                let mut map = sync::lock(&shard.map);
                let replace = match map.get(key) {
                    Some(flight) if flight.leader.id() == me.id() => {
                        return Err(LoadError::Recursive);
                    }
                    // Joinable only while running and not invalidated: a stale flight's value
                    // is older than a write this caller must see (a removed key would come
                    // back through it), and a finished one still registered may be stale too.
                    // Such a flight is replaced by a new one this caller leads. (Registry lock,
                    // then flight lock: no path takes them the other way round.)
                    Some(flight) => {
                        let joinable =
                            matches!(*sync::lock(&flight.state), State::Running { stale: false });
                        if joinable {
                            break 'join Arc::clone(flight);
                        }
                        true
                    }
                    None => false,
                };
                let flight = Arc::new(Flight {
                    leader: me,
                    state: Mutex::new(State::Running { stale: false }),
                    done: Condvar::new(),
                });
                if !replace {
                    // SeqCst pairs with the load in `invalidate`: a writer that misses this
                    // increment started before the flight existed, and any load that then
                    // starts is ordered after the writer's change by `check`/`publish`. (A
                    // replaced flight's entry is reused: its leader's `unregister` finds a
                    // stranger and leaves the count to this flight's.)
                    shard.flights.fetch_add(1, Ordering::SeqCst);
                }
                map.insert(key.clone(), Arc::clone(&flight));
                drop(map);
                return lead(shard, key, &flight, check, init, publish);
            };
            let mut state = sync::lock(&flight.state);
            while let State::Running { .. } = *state {
                state = wait(&flight.done, state);
            }
            match &*state {
                State::Done(value) => {
                    return Ok(Loaded {
                        value: value.clone(),
                        origin: Origin::Shared,
                    });
                }
                State::Failed(error) => {
                    if let Ok(error) = std::sync::Arc::clone(error).downcast::<E>() {
                        return Err(LoadError::Failed(error));
                    }
                    // Another error type: this caller cannot receive it. The flight is already
                    // out of the registry, so the next round starts a fresh one.
                }
                // The leader panicked and the flight is out of the registry: start over.
                State::Abandoned => {}
                State::Running { .. } => unreachable!("waited until not running"),
            }
        }
    }

    /// Mark a load of `key` that is in flight as stale, so its value is not published. Call it
    /// before changing the cache for `key` (insert, remove), holding no cache lock. Returns
    /// whether a running flight was marked. If the flight is publishing right now, this waits
    /// until the publish is complete, so the caller's change lands after it.
    #[inline]
    pub fn invalidate<Q>(&self, hash: u64, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Every write calls this, and almost never with a load in flight: the check is inlined
        // into the write, the rest is not.
        if self.shard(hash).flights.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.invalidate_flight(hash, key)
    }

    #[cold]
    #[inline(never)]
    fn invalidate_flight<Q>(&self, hash: u64, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // Take the flight out under the registry lock, then lock the flight alone: the registry
        // and flight locks are never held together, so there is no lock order to get wrong.
        let shard = self.shard(hash);
        let Some(flight) = sync::lock(&shard.map).get(key).cloned() else {
            return false;
        };
        let mut state = sync::lock(&flight.state);
        match &mut *state {
            State::Running { stale } => {
                *stale = true;
                true
            }
            _ => false,
        }
    }

    /// Mark every load in flight as stale (see [`invalidate`](Self::invalidate)), for a
    /// sweep that may touch any key (`invalidate_all`, `invalidate_if`). Loads that start
    /// afterwards are not affected.
    pub fn invalidate_all(&self) {
        for shard in self.shards.iter() {
            if shard.flights.load(Ordering::SeqCst) == 0 {
                continue;
            }
            // Copied out first: the registry and flight locks are never held together.
            let flights: Vec<Arc<Flight<V>>> = sync::lock(&shard.map).values().cloned().collect();
            for flight in flights {
                if let State::Running { stale } = &mut *sync::lock(&flight.state) {
                    *stale = true;
                }
            }
        }
    }

    /// Number of loads in flight (for tests and stats).
    #[allow(dead_code)] // used by the loom models and unit tests
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| sync::lock(&s.map).len()).sum()
    }

    /// Whether no load is in flight.
    #[allow(dead_code)] // used by the loom models and unit tests
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many callers are waiting on `key`'s flight (0 if none); lets tests make sure
    /// waiters are registered before the leader finishes, without sleeping.
    #[cfg(test)]
    fn waiting(&self, hash: u64, key: &K) -> usize {
        // One reference is the registry's, one the leader's; the rest belong to waiters.
        sync::lock(&self.shard(hash).map)
            .get(key)
            .map_or(0, |f| Arc::strong_count(f).saturating_sub(2))
    }

    fn shard(&self, hash: u64) -> &Shard<K, V> {
        // Picked as the cache picks its shards (mixed top bits), so a weak user hasher does
        // not put every flight in one registry shard.
        &self.shards[crate::hash::shard_index(hash, SHARDS.trailing_zeros())]
    }
}

/// The leader's side of `run`, for a flight it has just registered.
fn lead<K, V, E, C, I, P>(
    shard: &Shard<K, V>,
    key: &K,
    flight: &Arc<Flight<V>>,
    check: C,
    init: I,
    publish: P,
) -> Result<Loaded<V>, LoadError<E>>
where
    K: Hash + Eq,
    V: Clone,
    E: Send + Sync + 'static,
    C: FnOnce() -> Option<V>,
    I: FnOnce() -> Result<V, E>,
    P: FnOnce(&V),
{
    // Until disarmed, dropping the guard (an early return is impossible, so: unwinding out of
    // `check`, `publish` or a clone) abandons the flight, which wakes every waiter.
    let mut guard = Abandon {
        shard,
        key,
        flight,
        armed: true,
    };
    if let Some(value) = check() {
        // Clone while still armed: a panicking clone must abandon the flight, not leave it
        // registered and running with nobody to finish it.
        let shared = value.clone();
        guard.armed = false;
        complete(shard, key, flight, State::Done(shared));
        return Ok(Loaded {
            value,
            origin: Origin::Present,
        });
    }
    // AssertUnwindSafe: after a panic nothing `init` captured is looked at again here; the
    // payload goes straight back to this caller, who owns whatever `init` borrowed.
    match panic::catch_unwind(AssertUnwindSafe(init)) {
        Ok(Ok(value)) => {
            let mut state = sync::lock(&flight.state);
            let stale = matches!(*state, State::Running { stale: true });
            if !stale {
                // Under the flight lock: a concurrent `invalidate` waits for this to finish.
                publish(&value);
            }
            *state = State::Done(value.clone());
            guard.armed = false;
            // Wake the waiters before taking the flight out of the registry: a waiter that saw
            // `Done` returns without looking at the registry again, so no order is needed here,
            // and a caller arriving meanwhile still finds the flight and its value.
            flight.done.notify_all();
            drop(state);
            unregister(shard, key, flight);
            Ok(Loaded {
                value,
                origin: if stale {
                    Origin::Stale
                } else {
                    Origin::Published
                },
            })
        }
        Ok(Err(error)) => {
            let error = std::sync::Arc::new(error);
            guard.armed = false;
            complete(shard, key, flight, State::Failed(error.clone()));
            Err(LoadError::Failed(error))
        }
        Err(payload) => {
            drop(guard); // abandons the flight and wakes the waiters
            panic::resume_unwind(payload)
        }
    }
}

/// Take the flight out of the registry, then publish its final state and wake the waiters.
/// This order matters for `Failed` and `Abandoned`: a waiter that sees either goes back to the
/// registry, which must not still hold this flight (it would find it and spin on it).
fn complete<K: Hash + Eq, V>(shard: &Shard<K, V>, key: &K, flight: &Arc<Flight<V>>, end: State<V>) {
    unregister(shard, key, flight);
    let mut state = sync::lock(&flight.state);
    *state = end;
    flight.done.notify_all();
}

fn unregister<K: Hash + Eq, V>(shard: &Shard<K, V>, key: &K, flight: &Arc<Flight<V>>) {
    let mut map = sync::lock(&shard.map);
    // Only the leader removes its flight, so the entry is this flight; check anyway rather
    // than remove a stranger's.
    if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
        map.remove(key);
        shard.flights.fetch_sub(1, Ordering::SeqCst);
    }
}

fn wait<'a, T>(cond: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    // Poisoning is ignored for the same reason as in `sync::lock`.
    cond.wait(guard).unwrap_or_else(|p| p.into_inner())
}

/// Abandons a flight when dropped while armed (the leader is unwinding).
struct Abandon<'a, K: Hash + Eq, V> {
    shard: &'a Shard<K, V>,
    key: &'a K,
    flight: &'a Arc<Flight<V>>,
    armed: bool,
}

impl<K: Hash + Eq, V> Drop for Abandon<'_, K, V> {
    fn drop(&mut self) {
        if self.armed {
            complete(self.shard, self.key, self.flight, State::Abandoned);
        }
    }
}

impl<K, V> fmt::Debug for Loader<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
