//! Memory per entry: live heap bytes after inserting N `u64 → u64` pairs (capacity N) into
//! cogwheel, moka and quick_cache, measured by a counting global allocator.
//!
//! Two numbers per cache:
//! * requested: the bytes the program asked the allocator for (live, net of frees);
//! * malloc est.: the same allocations rounded the way glibc malloc lays out chunks (8-byte
//!   header, 16-byte alignment, 32-byte minimum), closer to what RSS pays.
//!
//! Both are divided by the number of entries actually resident at the end (a sharded cache
//! may evict a few even at capacity N, when its shards fill unevenly).
//!
//! cogwheel is measured twice: as built by the throughput benches (no expiry), and with a
//! time-to-live, which gives every entry the layout with deadlines and a timer-wheel slot.
//!
//! A second table ("steady state") inserts 3N distinct keys into capacity N for cogwheel and
//! quick_cache, so eviction history (CLOCK-Pro's ghosts) is at its bound.
//!
//! `COGWHEEL_BENCH_QUICK=1` uses N = 100k instead of 1M.

mod common;

use common::{Target, key_of, quick};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static LIVE_CHUNK: AtomicIsize = AtomicIsize::new(0);
static LIVE_COUNT: AtomicIsize = AtomicIsize::new(0);

/// glibc's chunk size for a request (64-bit): size + 8-byte header, rounded up to 16, at
/// least 32. Large (mmapped) requests are page-rounded, which this ignores (< 0.1 %).
fn chunk(size: usize) -> isize {
    ((size + 8).div_ceil(16) * 16).max(32) as isize
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counters are plain atomics with no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize, chunk(layout.size()), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize, chunk(layout.size()), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize), -chunk(layout.size()), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract (see the impl).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(
                new_size as isize - layout.size() as isize,
                chunk(new_size) - chunk(layout.size()),
                0,
            );
        }
        p
    }
}

fn note(bytes: isize, chunk_bytes: isize, count: isize) {
    LIVE.fetch_add(bytes, Ordering::Relaxed);
    LIVE_CHUNK.fetch_add(chunk_bytes, Ordering::Relaxed);
    LIVE_COUNT.fetch_add(count, Ordering::Relaxed);
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snap {
    bytes: isize,
    chunk: isize,
    count: isize,
}

fn snap() -> Snap {
    Snap {
        bytes: LIVE.load(Ordering::Relaxed),
        chunk: LIVE_CHUNK.load(Ordering::Relaxed),
        count: LIVE_COUNT.load(Ordering::Relaxed),
    }
}

struct Row {
    name: &'static str,
    resident: usize,
    empty: isize,
    full: Snap,
}

/// Insert `keys` distinct keys into the cache `build` makes. With as many keys as its
/// capacity this is a fill; with 3× its capacity every key past the first capacity's worth
/// evicts, so a policy's history (CLOCK-Pro's ghosts) is at its steady-state size.
fn measure<C: Target>(name: &'static str, keys: u64, build: impl FnOnce() -> C) -> Row {
    let base = snap();
    let c = build();
    let empty = snap().bytes - base.bytes;
    for rank in 0..keys {
        let k = key_of(rank);
        c.insert(k, k);
    }
    // `len` also settles pending work (moka's write log) before the snapshot.
    let resident = c.len();
    let after = snap();
    drop(c);
    Row {
        name,
        resident,
        empty,
        full: Snap {
            bytes: after.bytes - base.bytes,
            chunk: after.chunk - base.chunk,
            count: after.count - base.count,
        },
    }
}

/// The unsynchronized reference map, filled the same way (no capacity reserved up front, so
/// it shows the map's own growth policy).
fn measure_map(n: u64) -> Row {
    let base = snap();
    let mut m = std::collections::HashMap::with_hasher(common::hasher());
    for rank in 0..n {
        let k = key_of(rank);
        m.insert(k, k);
    }
    let resident = m.len();
    let after = snap();
    drop(m);
    Row {
        name: "std HashMap (reference)",
        resident,
        empty: 0,
        full: Snap {
            bytes: after.bytes - base.bytes,
            chunk: after.chunk - base.chunk,
            count: after.count - base.count,
        },
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let n: u64 = if quick() { 100_000 } else { 1_000_000 };
    let rows = [
        measure("cogwheel", n, || common::cogwheel(n)),
        measure("cogwheel, 1 h TTL", n, || {
            cogwheel::Cache::builder()
                .max_capacity(n)
                .hasher(common::hasher())
                .time_to_live(std::time::Duration::from_secs(3600))
                .build()
                .expect("valid cogwheel settings")
        }),
        measure("moka", n, || common::moka(n)),
        measure("quick_cache", n, || common::quick_cache(n)),
        measure_map(n),
    ];
    println!("memory per entry: {n} u64 -> u64 inserts, capacity {n}");
    print_rows(&rows);
    // Steady state: 3n distinct keys into capacity n (every insert past the first n evicts).
    let steady = [
        measure("cogwheel", 3 * n, || common::cogwheel(n)),
        measure("quick_cache", 3 * n, || common::quick_cache(n)),
    ];
    println!();
    println!(
        "steady state: {} distinct u64 -> u64 inserts, capacity {n} (bytes per resident entry)",
        3 * n
    );
    print_rows(&steady);
}

fn print_rows(rows: &[Row]) {
    println!(
        "| cache | resident | empty cache (B) | live allocs | requested B/entry | malloc est. B/entry |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let per = |b: isize| b as f64 / r.resident.max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} |",
            r.name,
            r.resident,
            r.empty,
            r.full.count,
            per(r.full.bytes),
            per(r.full.chunk),
        );
    }
}
