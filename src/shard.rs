//! One shard: a lock-free reader half (the table) and a locked writer half (the policy and
//! the bookkeeping that maps policy tokens to table slots).
//!
//! Readers load the table pointer and probe it under an epoch guard; they never touch the
//! writer half. Every structural change happens under the writer lock: admission and eviction
//! through the policy, publication into the table, rebuilding the table, retiring entries.
//! User code (listeners, weighers, predicates) never runs under the lock: removed entries are
//! handed back to the caller, who reports them after unlocking while its guard keeps them
//! readable.

use crate::entry::{EntryRef, Expiry, Pool};
use crate::expiry::wheel::TimerWheel;
use crate::hash;
use crate::listener::RemovalCause;
use crate::policy::{Admit, EvictionPolicy, Policy, Residents, Reweigh, Token};
use crate::reclaim::Guard;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering, lock, lock_spinning, try_lock};
use crate::table::{Hit, Probe, Table, TablePtr, new_entry};
use crate::time::{self, LazyNow};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicUsize as HintCell, Ordering as HintOrdering};

/// An entry that left a shard, with the reason; readable while the caller's guard lives.
pub(crate) type Removed<'g, K, V> = (EntryRef<'g, K, V>, RemovalCause);

/// The entries one operation removed. Almost always 0–2 (a replaced value, a victim), so they
/// are kept inline; more spill to the heap. An evicting insert thus allocates nothing for them.
pub(crate) struct Removals<'g, K, V> {
    inline: [Option<Removed<'g, K, V>>; 4],
    len: usize,
    spill: Vec<Removed<'g, K, V>>,
}

impl<'g, K, V> Removals<'g, K, V> {
    pub(crate) fn new() -> Self {
        Removals {
            inline: [None; 4],
            len: 0,
            spill: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, r: Removed<'g, K, V>) {
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = Some(r),
            None => self.spill.push(r),
        }
        self.len += 1;
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = Removed<'g, K, V>> + '_ {
        // Only the filled prefix: an insert that removed nothing iterates nothing.
        let filled = self.len.min(self.inline.len());
        self.inline[..filled]
            .iter()
            .flatten()
            .copied()
            .chain(self.spill.iter().copied())
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InsertOutcome {
    Inserted,
    Replaced,
    TooHeavy,
    /// No room: every evictable entry is pinned.
    Full,
    /// The condition did not hold; nothing changed.
    Unchanged,
    /// `Cond::IfRoom`: the shard has no room for it without evicting; nothing changed.
    NoRoom,
}

/// When an insert may happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cond {
    /// Insert or replace.
    Always,
    /// Only if the key has no live entry (an expired one counts as absent).
    IfAbsent,
    /// As `IfAbsent`, and only if the shard has room without evicting anything (a warm
    /// restart fills the cache; it must not push out what it loaded a moment ago).
    IfRoom,
    /// Only if the key's live entry is still the one at this address (0: still absent).
    IfCurrent(usize),
}

/// The address that identifies an entry for `Cond::IfCurrent` (0 for "no entry").
pub(crate) fn entry_id<K, V>(e: Option<EntryRef<'_, K, V>>) -> usize {
    e.map_or(0, EntryRef::addr)
}

pub(crate) struct Shard<K, V> {
    table: CachePadded<TablePtr<K, V>>,
    writer: Mutex<Writer<K, V>>,
    /// Mirrors of the writer's counts, for `len()` without the lock.
    len: AtomicUsize,
    weight: AtomicU64,
    /// The policy's ghost table (address, slots) as of the last admission, so a `get` that
    /// misses can prefetch the slot the key's admission will read. Hints only: they guard
    /// nothing and order nothing, so they are std atomics even under loom.
    ghost_base: HintCell,
    ghost_len: HintCell,
    /// The table's groups (address, count) as of the last rebuild, so an insert can prefetch
    /// its home group before what precedes its probe (the pin, the lock, and in write-behind
    /// the record), and `get_many` the groups of keys further on. Hints only, like the ghost
    /// table's.
    groups_base: HintCell,
    groups_len: HintCell,
    capacity: u64,
    /// The cache's key hash, for rebuilds (entries do not store their hash).
    rehash: Rehash<K>,
}

/// Hashes a key as the cache does.
pub(crate) type Rehash<K> = Box<dyn Fn(&K) -> u64 + Send + Sync>;

struct Writer<K, V> {
    policy: Policy,
    /// Table slot of each resident token.
    slot_of: Vec<u32>,
    live: usize,
    tombstones: usize,
    slots: usize,
    /// Scratch for the policy's victims.
    evicted: Vec<Token>,
    /// Deadlines of the residents that can expire.
    wheel: TimerWheel,
    /// Scratch for the wheel's due tokens.
    due: Vec<Token>,
    /// Entry memory: unlinked entries waiting to be handed to the epoch, and memory to reuse.
    pool: Pool<K, V>,
}

impl<K, V> Writer<K, V> {
    /// (Re)schedule a resident's expiry; `NEVER` takes it off the wheel.
    fn schedule(&mut self, token: Token, deadline: u64) {
        if deadline != time::NEVER || self.wheel.contains(token) {
            self.wheel.schedule(token, deadline);
        }
    }
}

/// Wheel steps of expiry work done by each write.
const WRITE_BUDGET: usize = 16;

/// The shard's answers to the policy, valid for one locked operation.
struct Res<'a, K, V> {
    table: &'a Table<K, V>,
    slot_of: &'a [u32],
    guard: &'a Guard,
    pin: Pin<'a, K>,
}

/// Asks whether a resident (by key) is pinned: dirty in write-behind mode.
pub(crate) type Pin<'a, K> = Option<&'a (dyn Fn(&K) -> bool + 'a)>;

impl<K, V> Residents for Res<'_, K, V> {
    /// The reference bit lives in the slot's group, so the hand never loads the entry.
    fn take_referenced(&mut self, token: Token) -> bool {
        self.table.take_referenced(self.slot_of[token as usize])
    }

    fn is_pinned(&self, token: Token) -> bool {
        let Some(pin) = self.pin else { return false };
        self.table
            .entry_at(self.slot_of[token as usize], self.guard)
            .is_some_and(|e| pin(&e.key))
    }
}

/// Most of the table may hold entries and tombstones before a rebuild; the rest keeps probe
/// paths short and guarantees every path ends at an empty slot.
fn max_load(slots: usize) -> usize {
    slots - slots / 8
}

/// Live entries above this share of the slots make a rebuild grow the table.
fn grow_at(slots: usize) -> usize {
    slots * 5 / 8
}

impl<K, V> Shard<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight.load(Ordering::Relaxed)
    }

    /// The most weight this shard may hold.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl<K: Eq, V> Shard<K, V> {
    /// A shard holding up to `capacity` weight, with a table sized for `expected` entries;
    /// an error if that table's memory cannot be had.
    pub(crate) fn new(
        kind: EvictionPolicy,
        capacity: u64,
        expected: usize,
        rehash: Rehash<K>,
    ) -> Result<Self, crate::table::TableAllocError> {
        // 1.6 slots per expected entry, and enough that a full shard never counts as one to
        // grow (`grow_at` of the slots is at least `expected + 1`).
        let table =
            Table::try_with_slots(expected.saturating_add(1).saturating_mul(8).div_ceil(5))?;
        let slots = table.slots();
        let (groups_base, groups_len) = table.groups_hint();
        Ok(Shard {
            table: CachePadded::new(TablePtr::new(table)),
            writer: Mutex::new(Writer {
                policy: Policy::new(kind, capacity),
                slot_of: Vec::new(),
                live: 0,
                tombstones: 0,
                slots,
                evicted: Vec::new(),
                wheel: TimerWheel::new(),
                due: Vec::new(),
                pool: Pool::for_entries(expected),
            }),
            len: AtomicUsize::new(0),
            weight: AtomicU64::new(0),
            ghost_base: HintCell::new(0),
            ghost_len: HintCell::new(0),
            groups_base: HintCell::new(groups_base),
            groups_len: HintCell::new(groups_len),
            capacity,
            rehash,
        })
    }

    /// Lock-free read for `get`: the entry and its slot's reference bit, which the caller
    /// sets (`Hit::touch`) once it has checked expiry.
    #[inline]
    pub(crate) fn lookup<'g>(
        &self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<Hit<'g, K, V>> {
        self.table
            .load(guard)
            .find(hash, hash::tag(hash), eq, guard)
    }

    /// Start fetching the entries a lookup of `hash` compares keys with (call once
    /// [`prefetch_home_hint`](Self::prefetch_home_hint) had time to bring their group in).
    #[inline]
    pub(crate) fn prefetch_candidates(&self, hash: u64, guard: &Guard) {
        self.table
            .load(guard)
            .prefetch_candidates(hash, hash::tag(hash), guard);
    }

    /// Prefetch the ghost-index slot an admission of `hash` would read first. The table may
    /// have been replaced since the hint was set (or the pair may be torn): that costs one
    /// useless prefetch, which cannot fault.
    #[inline]
    pub(crate) fn prefetch_ghost(&self, hash: u64) {
        let len = self.ghost_len.load(HintOrdering::Relaxed);
        if len != 0 {
            let base = self.ghost_base.load(HintOrdering::Relaxed);
            crate::table::prefetch(crate::policy::clock_pro::ghost_home((base, len), hash));
        }
    }

    /// Prefetch the home group of `hash` without pinning, from the groups hint. A stale or
    /// torn hint costs one useless prefetch, which cannot fault.
    #[inline]
    pub(crate) fn prefetch_home_hint(&self, hash: u64) {
        let hint = (
            self.groups_base.load(HintOrdering::Relaxed),
            self.groups_len.load(HintOrdering::Relaxed),
        );
        crate::table::prefetch(Table::<K, V>::home_addr(hint, hash));
    }

    /// Writer only (the lock holder is the hint's one writer, so its loads see its own last
    /// stores): point the hint at the policy's ghost table, storing only when it moved.
    fn set_ghost_hint(&self, (base, len): (usize, usize)) {
        if self.ghost_base.load(HintOrdering::Relaxed) != base {
            self.ghost_base.store(base, HintOrdering::Relaxed);
        }
        if self.ghost_len.load(HintOrdering::Relaxed) != len {
            self.ghost_len.store(len, HintOrdering::Relaxed);
        }
    }

    /// Lock-free read without marking the entry referenced (`contains_key`, loaders).
    #[inline]
    pub(crate) fn peek<'g>(
        &self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<EntryRef<'g, K, V>> {
        self.lookup(hash, eq, guard).map(|hit| hit.entry)
    }

    /// The writer lock for a user's write. It spins before it sleeps: at 2 threads, 12 % of
    /// the 95/5 loop's samples had gone to sleeping on it and being woken.
    #[inline]
    fn lock_writer(&self) -> crate::sync::MutexGuard<'_, Writer<K, V>> {
        lock_spinning(&self.writer)
    }

    /// Insert or replace. `now` decides whether a replaced entry had already expired (it is
    /// then reported as `Expired`, not `Replaced`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert<'g>(
        &self,
        hash: u64,
        key: K,
        value: V,
        weight: u32,
        exp: Expiry,
        now: &LazyNow<'_>,
        cond: Cond,
        pin: Pin<'_, K>,
        guard: &'g Guard,
        out: &mut Removals<'g, K, V>,
    ) -> InsertOutcome {
        let tag = hash::tag(hash);
        let mut w = self.lock_writer();
        let w = &mut *w;
        w.pool.prepare(exp);
        self.ensure_room(w, guard);
        let table = self.table.load(guard);
        let outcome = match table.probe(hash, tag, |k| *k == key, guard) {
            Some(Probe::Found(slot)) => {
                let Some(old) = table.entry_at(slot, guard) else {
                    unreachable!("a found slot holds an entry")
                };
                let live = !now.passed(old.deadline());
                let allowed = match cond {
                    Cond::Always => true,
                    Cond::IfAbsent => !live,
                    // Replacing an expired entry of at least the weight needs no room.
                    Cond::IfRoom => !live && old.weight >= weight,
                    Cond::IfCurrent(id) => {
                        if live {
                            id == entry_id(Some(old))
                        } else {
                            id == 0
                        }
                    }
                };
                if !allowed {
                    return InsertOutcome::Unchanged;
                }
                let token = old.token;
                if old.weight != weight {
                    let mut res = Res {
                        table,
                        slot_of: &w.slot_of,
                        guard,
                        pin,
                    };
                    let reweighed = guarded(pin.is_some(), || {
                        w.policy.reweigh(token, weight, &mut res, &mut w.evicted)
                    });
                    let reweighed = self.or_repair(w, table, guard, out, reweighed);
                    match reweighed {
                        Reweigh::Done => {}
                        Reweigh::TooHeavy => {
                            // The caller meant to replace the value: keeping the old one would
                            // serve a value the caller has superseded. It leaves as `Replaced`.
                            let e = self.unlink(w, table, slot, token, guard);
                            w.policy.remove(token);
                            let cause = if live {
                                RemovalCause::Replaced
                            } else {
                                RemovalCause::Expired
                            };
                            out.push((e, cause));
                            self.publish_counts(w);
                            return InsertOutcome::TooHeavy;
                        }
                        Reweigh::AllPinned => {
                            // Only dirty write-behind entries could make room: the old value
                            // stays until the writer has stored some (the caller waits).
                            self.remove_victims(w, table, guard, out);
                            self.publish_counts(w);
                            return InsertOutcome::Full;
                        }
                    }
                }
                let fresh = w.pool.alloc(key, value, token, weight, exp);
                let expired = !live;
                // The slot keeps its reference bit across the replacement, unless the old
                // entry had expired: then the newcomer starts unreferenced.
                if expired {
                    table.take_referenced(slot);
                }
                let old_ptr = table.replace(slot, new_entry(fresh, guard), guard);
                self.table.retire(old_ptr, &mut w.pool, guard);
                w.schedule(token, exp.deadline);
                out.push((
                    old,
                    if expired {
                        RemovalCause::Expired
                    } else {
                        RemovalCause::Replaced
                    },
                ));
                self.remove_victims(w, table, guard, out);
                if expired {
                    InsertOutcome::Inserted
                } else {
                    InsertOutcome::Replaced
                }
            }
            Some(Probe::Vacant(_)) if matches!(cond, Cond::IfCurrent(id) if id != 0) => {
                return InsertOutcome::Unchanged;
            }
            // (An entry heavier than the whole shard goes on to be refused as `TooHeavy`.)
            Some(Probe::Vacant(_))
                if cond == Cond::IfRoom
                    && u64::from(weight) <= self.capacity
                    && w.policy.weight() + u64::from(weight) > self.capacity =>
            {
                return InsertOutcome::NoRoom;
            }
            Some(Probe::Vacant(slot)) => {
                let mut res = Res {
                    table,
                    slot_of: &w.slot_of,
                    guard,
                    pin,
                };
                let admitted = guarded(pin.is_some(), || {
                    w.policy.admit(hash, weight, &mut res, &mut w.evicted)
                });
                let admitted = self.or_repair(w, table, guard, out, admitted);
                match admitted {
                    Admit::TooHeavy => InsertOutcome::TooHeavy,
                    Admit::AllPinned => {
                        self.remove_victims(w, table, guard, out);
                        InsertOutcome::Full
                    }
                    Admit::Resident(token) => {
                        // Victims first: the newcomer may reuse a victim's token.
                        self.remove_victims(w, table, guard, out);
                        // The next admission of this shard starts where this one left the
                        // hands: fetch that while the caller does other work.
                        w.policy.prefetch_next();
                        if let Some(g) = w.policy.ghost_table() {
                            self.set_ghost_hint(g);
                        }
                        let e = new_entry(w.pool.alloc(key, value, token, weight, exp), guard);
                        if table.publish(slot, tag, e) {
                            w.tombstones -= 1;
                        }
                        let t = token as usize;
                        if w.slot_of.len() <= t {
                            w.slot_of.resize(t + 1, u32::MAX);
                        }
                        w.slot_of[t] = slot;
                        w.live += 1;
                        w.schedule(token, exp.deadline);
                        InsertOutcome::Inserted
                    }
                }
            }
            None => unreachable!("ensure_room leaves a free slot on every probe path"),
        };
        // Amortized maintenance: a little expiry work on every write, so a cache with writes
        // never needs a maintenance thread to reclaim expired entries.
        if !w.wheel.is_empty() {
            self.expire(w, table, now.get(), WRITE_BUDGET, guard, out);
        }
        self.publish_counts(w);
        outcome
    }

    /// Reclaim expired entries (up to `budget` wheel steps). Returns whether the wheel caught
    /// up with `now`. Waits for the lock.
    pub(crate) fn run_expiry<'g>(
        &self,
        now: u64,
        budget: usize,
        guard: &'g Guard,
        out: &mut Removals<'g, K, V>,
    ) -> bool {
        let mut w = lock(&self.writer);
        self.expire_locked(&mut w, now, budget, guard, out)
    }

    /// Like `run_expiry`, but gives up at once (returning `true`) if a writer holds the lock:
    /// optional maintenance never makes anyone wait.
    pub(crate) fn try_run_expiry<'g>(
        &self,
        now: u64,
        budget: usize,
        guard: &'g Guard,
        out: &mut Removals<'g, K, V>,
    ) -> bool {
        match try_lock(&self.writer) {
            Some(mut w) => self.expire_locked(&mut w, now, budget, guard, out),
            None => true,
        }
    }

    fn expire_locked<'g>(
        &self,
        w: &mut Writer<K, V>,
        now: u64,
        budget: usize,
        guard: &'g Guard,
        out: &mut Removals<'g, K, V>,
    ) -> bool {
        if w.wheel.is_empty() {
            return true;
        }
        let table = self.table.load(guard);
        let done = self.expire(w, table, now, budget, guard, out);
        self.publish_counts(w);
        done
    }

    fn expire<'g>(
        &self,
        w: &mut Writer<K, V>,
        table: &Table<K, V>,
        now: u64,
        budget: usize,
        guard: &'g Guard,
        out: &mut Removals<'g, K, V>,
    ) -> bool {
        let mut due = std::mem::take(&mut w.due);
        let done = w.wheel.advance(now, budget, &mut due);
        // Judge by the wheel's clamped time: a caller's `now` read before another writer
        // advanced the wheel is older, and an entry it fired but `now` found not yet due would
        // go straight back into the due list, to be fired again by the same sweep, forever.
        let now = now.max(w.wheel.now());
        for token in due.drain(..) {
            let Some(e) = table.entry_at(w.slot_of[token as usize], guard) else {
                debug_assert!(false, "wheel token {token} has no entry");
                continue;
            };
            // The wheel fires by bucket; the entry's own deadline decides (a read may have
            // pushed a time-to-idle deadline forward since it was scheduled).
            let deadline = e.deadline();
            if deadline <= now {
                let slot = w.slot_of[token as usize];
                let e = self.unlink(w, table, slot, token, guard);
                w.policy.remove(token);
                out.push((e, RemovalCause::Expired));
            } else {
                w.wheel.schedule(token, deadline);
            }
        }
        w.due = due;
        done
    }

    /// Remove the key's entry, if present.
    pub(crate) fn remove<'g>(
        &self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        guard: &'g Guard,
    ) -> Option<EntryRef<'g, K, V>> {
        self.remove_if(hash, eq, |_| true, guard)
    }

    /// Remove `entry` if it is still the key's current entry (not replaced meanwhile).
    pub(crate) fn remove_exact<'g>(
        &self,
        hash: u64,
        entry: EntryRef<'g, K, V>,
        guard: &'g Guard,
    ) -> bool {
        self.remove_if(hash, |k| *k == entry.key, |e| e.same(entry), guard)
            .is_some()
    }

    /// Remove the key's entry if `accept` agrees, under the lock.
    fn remove_if<'g>(
        &self,
        hash: u64,
        eq: impl FnMut(&K) -> bool,
        accept: impl FnOnce(EntryRef<'g, K, V>) -> bool,
        guard: &'g Guard,
    ) -> Option<EntryRef<'g, K, V>> {
        let mut w = self.lock_writer();
        let w = &mut *w;
        let table = self.table.load(guard);
        let Some(Probe::Found(slot)) = table.probe(hash, hash::tag(hash), eq, guard) else {
            return None;
        };
        let token = table.entry_at(slot, guard).filter(|e| accept(*e))?.token;
        let e = self.unlink(w, table, slot, token, guard);
        w.policy.remove(token);
        self.publish_counts(w);
        Some(e)
    }

    /// Remove every entry.
    pub(crate) fn clear<'g>(&self, guard: &'g Guard, out: &mut Removals<'g, K, V>) {
        let mut w = lock(&self.writer);
        let w = &mut *w;
        // A fresh table instead of clearing slot by slot: readers on the old one still see a
        // consistent (if stale) snapshot, and no tombstones are left behind. It is installed
        // before any entry is retired: an entry handed to the epoch while a table readers can
        // still load holds it could be freed under a reader that pinned after the hand-over.
        // Our guard keeps the old table readable until the loop is done.
        let old = self.table.load(guard);
        self.install(Table::with_slots(w.slots), guard);
        for (slot, e) in old.entries(guard) {
            self.table
                .retire(old.ptr_at(slot, guard), &mut w.pool, guard);
            out.push((e, RemovalCause::Removed));
        }
        w.policy.clear();
        w.wheel = TimerWheel::new();
        w.slot_of.clear();
        w.live = 0;
        w.tombstones = 0;
        self.publish_counts(w);
    }

    /// Weakly consistent snapshot of the shard's entries, read without the lock.
    pub(crate) fn entries<'g>(
        &self,
        guard: &'g Guard,
    ) -> impl Iterator<Item = EntryRef<'g, K, V>> + 'g
    where
        K: 'g,
        V: 'g,
    {
        self.table.load(guard).entries(guard).map(|(_, e)| e)
    }

    /// Take the entry at `slot` (resident `token`) out of the table. The caller passes the
    /// token it already knows, so an eviction never loads the victim entry itself: its cache
    /// line is a miss the hand would otherwise pay on every eviction.
    fn unlink<'g>(
        &self,
        w: &mut Writer<K, V>,
        table: &Table<K, V>,
        slot: u32,
        token: Token,
        guard: &'g Guard,
    ) -> EntryRef<'g, K, V> {
        let Some(e) = table.entry_at(slot, guard) else {
            unreachable!("unlink of an empty slot")
        };
        let (ptr, tomb) = table.clear(slot, guard);
        if tomb {
            w.tombstones += 1;
        }
        w.live -= 1;
        w.wheel.cancel(token);
        self.table.retire(ptr, &mut w.pool, guard);
        e
    }

    /// The outcome of a [`guarded`] policy step. If a pin check in it (the key's `Hash` or
    /// `Eq`, user code) panicked after the policy let victims go, the victims leave the table
    /// too, so the two agree (a released token may be handed out again), and the panic goes on.
    fn or_repair<'g, T>(
        &self,
        w: &mut Writer<K, V>,
        table: &Table<K, V>,
        guard: &'g Guard,
        out: &mut Removals<'g, K, V>,
        step: std::thread::Result<T>,
    ) -> T {
        step.unwrap_or_else(|panic| {
            self.remove_victims(w, table, guard, out);
            self.publish_counts(w);
            std::panic::resume_unwind(panic)
        })
    }

    /// Unlink the entries the policy chose as victims. Inlined for its first check: most
    /// writes (a replaced value, or room to spare) have none, and every write calls this.
    #[inline]
    fn remove_victims<'g>(
        &self,
        w: &mut Writer<K, V>,
        table: &Table<K, V>,
        guard: &'g Guard,
        out: &mut Removals<'g, K, V>,
    ) {
        if !w.evicted.is_empty() {
            self.unlink_victims(w, table, guard, out);
        }
    }

    #[inline(never)]
    fn unlink_victims<'g>(
        &self,
        w: &mut Writer<K, V>,
        table: &Table<K, V>,
        guard: &'g Guard,
        out: &mut Removals<'g, K, V>,
    ) {
        let mut victims = std::mem::take(&mut w.evicted);
        for token in victims.drain(..) {
            let slot = w.slot_of[token as usize];
            let e = self.unlink(w, table, slot, token, guard);
            out.push((e, RemovalCause::Evicted));
        }
        w.evicted = victims;
    }

    /// Rebuild the table if one more entry could leave a probe path without a free slot.
    fn ensure_room(&self, w: &mut Writer<K, V>, guard: &Guard) {
        if w.live + w.tombstones < max_load(w.slots) {
            return;
        }
        let slots = if w.live + 1 > grow_at(w.slots) {
            w.slots * 2
        } else {
            w.slots
        };
        self.rebuild(w, slots, guard);
    }

    /// Copy the live entries into a fresh table of `slots` slots, publish it, retire the old.
    fn rebuild(&self, w: &mut Writer<K, V>, slots: usize, guard: &Guard) {
        let old = self.table.load(guard);
        let fresh = Table::with_slots(slots);
        // The new slots are noted aside and applied only once every key is placed: `rehash`
        // runs the key's `Hash`, which may panic, and a half-updated `slot_of` would point
        // into the old table, which stays installed then.
        let mut moved = Vec::with_capacity(w.live);
        for (slot, e) in old.entries(guard) {
            let h = (self.rehash)(&e.key);
            let new_slot = fresh.place(h, hash::tag(h), old.ptr_at(slot, guard), guard);
            if old.is_referenced(slot) {
                fresh.touch(new_slot);
            }
            moved.push((e.token, new_slot));
        }
        for (token, new_slot) in moved {
            w.slot_of[token as usize] = new_slot;
        }
        w.slots = fresh.slots();
        w.tombstones = 0;
        self.install(fresh, guard);
    }

    /// Writer only: publish a new table (and its groups hint), retiring the old one.
    fn install(&self, table: Table<K, V>, guard: &Guard) {
        let (base, len) = table.groups_hint();
        self.groups_base.store(base, HintOrdering::Relaxed);
        self.groups_len.store(len, HintOrdering::Relaxed);
        self.table.swap_in(table, guard);
    }

    /// Rebuild the table now, at its current size (loom models of rebuild racing readers).
    #[cfg(loom)]
    pub(crate) fn force_rebuild(&self, guard: &Guard) {
        let mut w = lock(&self.writer);
        let slots = w.slots;
        self.rebuild(&mut w, slots, guard);
    }

    fn publish_counts(&self, w: &Writer<K, V>) {
        self.len.store(w.live, Ordering::Relaxed);
        self.weight.store(w.policy.weight(), Ordering::Relaxed);
    }

    /// Check the writer's bookkeeping against the table (tests).
    pub(crate) fn validate(&self, guard: &Guard) {
        let w = lock(&self.writer);
        let table = self.table.load(guard);
        let mut n = 0;
        for (slot, e) in table.entries(guard) {
            n += 1;
            assert_eq!(
                w.slot_of[e.token as usize], slot,
                "slot_of maps each token to its slot"
            );
            if e.deadline() != time::NEVER {
                assert!(
                    w.wheel.contains(e.token),
                    "an entry that can expire is on the wheel"
                );
            }
        }
        assert_eq!(n, w.live, "live counts the table's entries");
        assert_eq!(w.policy.len(), w.live, "the policy tracks every live entry");
        w.policy.validate();
        w.wheel.validate();
        assert!(w.wheel.len() <= w.live, "the wheel holds only residents");
    }
}

/// Run `f`, catching a panic only when it may run user code (the write-behind pin check): the
/// landing pad stays off the paths that cannot panic.
#[inline]
fn guarded<T>(user_code: bool, f: impl FnOnce() -> T) -> std::thread::Result<T> {
    if user_code {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
    } else {
        Ok(f())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::reclaim::Reclaimer;
    use crate::time::Clock;

    /// Insert `k → k` (weight 1, no expiry) as the cache would, with the hash the shard's
    /// rehash function gives.
    fn insert_key(shard: &Shard<u64, u64>, reclaim: &Reclaimer, clock: &Clock, k: u64) {
        let guard = reclaim.pin();
        let mut out = Removals::new();
        let now = LazyNow::new(clock);
        shard.insert(
            k.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            k,
            k,
            1,
            Expiry::NEVER,
            &now,
            Cond::Always,
            None,
            &guard,
            &mut out,
        );
    }

    /// The groups hint follows the table through its rebuilds and `clear`, so an insert
    /// prefetches a group of the table its probe reads.
    #[test]
    fn groups_hint_follows_the_table() {
        let shard: Shard<u64, u64> = Shard::new(
            EvictionPolicy::ClockPro,
            4096,
            8,
            Box::new(|k: &u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        )
        .unwrap();
        let reclaim = Reclaimer::new();
        let clock = Clock::system();
        let hint = |s: &Shard<u64, u64>| {
            (
                s.groups_base.load(HintOrdering::Relaxed),
                s.groups_len.load(HintOrdering::Relaxed),
            )
        };
        let mut sizes = Vec::new();
        for k in 0..3_000u64 {
            insert_key(&shard, &reclaim, &clock, k);
            let guard = reclaim.pin();
            let table = shard.table.load(&guard).groups_hint();
            assert_eq!(hint(&shard), table, "hint after inserting key {k}");
            if sizes.last() != Some(&table.1) {
                sizes.push(table.1);
            }
        }
        assert!(
            sizes.len() > 2,
            "the table grew while the test watched: {sizes:?}"
        );
        let guard = reclaim.pin();
        let before = hint(&shard);
        shard.clear(&guard, &mut Removals::new());
        let after = shard.table.load(&guard).groups_hint();
        assert_ne!(before.0, after.0, "clear installs a fresh table");
        assert_eq!(hint(&shard), after, "hint after clear");
    }

    /// The prefetch hint follows the policy's ghost table through its growth, so a miss
    /// prefetches the table the next admission reads.
    #[test]
    fn ghost_hint_follows_the_ghost_table() {
        let shard: Shard<u64, u64> = Shard::new(
            EvictionPolicy::ClockPro,
            64,
            64,
            Box::new(|k: &u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        )
        .unwrap();
        let reclaim = Reclaimer::new();
        let clock = Clock::system();
        let mut sizes = Vec::new();
        for k in 0..2_000u64 {
            insert_key(&shard, &reclaim, &clock, k);
            let w = lock(&shard.writer);
            let table = w.policy.ghost_table().expect("CLOCK-Pro has a ghost table");
            let hint = (
                shard.ghost_base.load(HintOrdering::Relaxed),
                shard.ghost_len.load(HintOrdering::Relaxed),
            );
            assert_eq!(hint, table, "hint after inserting key {k}");
            if sizes.last() != Some(&table.1) {
                sizes.push(table.1);
            }
        }
        assert!(
            sizes.len() > 2,
            "the ghost table grew while the test watched: {sizes:?}"
        );
    }
}
