//! Statistics: striped counters, summed on demand.
//!
//! A hit must not write a cache line that other cores write too, so every counter is striped:
//! each thread picks a stripe once (round robin) and adds to it with a Relaxed RMW; a
//! snapshot sums the stripes. With at least as many stripes as busy threads, each line is
//! written by one core only. Counts are exact once the threads that made them are quiescent;
//! while they run, a snapshot is a consistent-enough sum of monotonic counters.

use crate::sync::{AtomicU64, Ordering, thread_local};
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize as StripeCounter, Ordering as StripeOrdering};

/// Which counter to bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Counter {
    Hits,
    Misses,
    Inserts,
    Updates,
    Removals,
    EvictedSize,
    EvictedExpired,
    Refused,
    Loads,
    LoadFailures,
    LoadNanos,
    StoreHits,
    StoreWrites,
    StoreWriteErrors,
}

const COUNTERS: usize = Counter::StoreWriteErrors as usize + 1;

/// Stripe choice is a per-thread constant; a std counter is fine: it only spreads threads.
static NEXT_STRIPE: StripeCounter = StripeCounter::new(0);

// A `const` initializer makes the access a plain TLS load (no lazy-init check) on every hit;
// loom's `thread_local!` does not accept one.
#[cfg(not(loom))]
thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}
#[cfg(loom)]
thread_local! {
    static STRIPE: Cell<usize> = Cell::new(usize::MAX);
}

#[inline]
fn my_stripe() -> usize {
    STRIPE.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            v
        } else {
            let v = NEXT_STRIPE.fetch_add(1, StripeOrdering::Relaxed);
            s.set(v);
            v
        }
    })
}

struct Stripe {
    c: [AtomicU64; COUNTERS],
}

pub(crate) struct Counters {
    stripes: Box<[CachePadded<Stripe>]>,
    mask: usize,
}

impl Counters {
    pub(crate) fn new(stripes: usize) -> Self {
        let n = stripes.max(1).next_power_of_two();
        Counters {
            stripes: (0..n)
                .map(|_| {
                    CachePadded::new(Stripe {
                        c: std::array::from_fn(|_| AtomicU64::new(0)),
                    })
                })
                .collect(),
            mask: n - 1,
        }
    }

    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        if n != 0 {
            self.stripes[my_stripe() & self.mask].c[c as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn incr(&self, c: Counter) {
        self.add(c, 1)
    }

    pub(crate) fn sum(&self, c: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.c[c as usize].load(Ordering::Relaxed))
            .sum()
    }
}

/// A snapshot of a cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing (or only an expired entry).
    pub misses: u64,
    /// Writes that added a new key.
    pub inserts: u64,
    /// Writes that replaced the value of a present key.
    pub updates: u64,
    /// Entries removed explicitly (`remove`, `invalidate_*`).
    pub removals: u64,
    /// Entries evicted to stay within capacity.
    pub evictions: u64,
    /// Entries removed because they expired.
    pub expirations: u64,
    /// Writes refused because the entry was heavier than a shard can hold.
    pub refused: u64,
    /// Loader runs (`get_with`, `try_get_with`, read-through).
    pub loads: u64,
    /// Loader runs that returned an error or panicked.
    pub load_failures: u64,
    /// Total time spent in loaders, in nanoseconds.
    pub load_nanos: u64,
    /// Misses served by the backing store.
    pub store_hits: u64,
    /// Operations written to the backing store.
    pub store_writes: u64,
    /// Failed writes to the backing store (each failed attempt counts).
    pub store_write_errors: u64,
    /// Keys with writes not yet in the store (write-behind queue depth).
    pub dirty: u64,
    /// How long the oldest dirty key has waited, in nanoseconds.
    pub oldest_dirty_nanos: u64,
    /// Writes given up on and handed to the dead-letter hook.
    pub dead_letters: u64,
    /// Write-behind rounds that retried writes after a failed round (each waits out the
    /// back-off first, unless a flush or close asks it to go now).
    pub write_retries: u64,
}

impl Stats {
    pub(crate) fn from_counters(c: &Counters) -> Self {
        Stats {
            hits: c.sum(Counter::Hits),
            misses: c.sum(Counter::Misses),
            inserts: c.sum(Counter::Inserts),
            updates: c.sum(Counter::Updates),
            removals: c.sum(Counter::Removals),
            evictions: c.sum(Counter::EvictedSize),
            expirations: c.sum(Counter::EvictedExpired),
            refused: c.sum(Counter::Refused),
            loads: c.sum(Counter::Loads),
            load_failures: c.sum(Counter::LoadFailures),
            load_nanos: c.sum(Counter::LoadNanos),
            store_hits: c.sum(Counter::StoreHits),
            store_writes: c.sum(Counter::StoreWrites),
            store_write_errors: c.sum(Counter::StoreWriteErrors),
            dirty: 0,
            oldest_dirty_nanos: 0,
            dead_letters: 0,
            write_retries: 0,
        }
    }

    /// Total reads.
    pub fn requests(&self) -> u64 {
        self.hits + self.misses
    }

    /// `hits / (hits + misses)`, or 0 when there were no reads.
    pub fn hit_ratio(&self) -> f64 {
        let r = self.requests();
        if r == 0 {
            0.0
        } else {
            self.hits as f64 / r as f64
        }
    }
}
