//! Engine time: `u64` nanoseconds since the cache's origin.
//!
//! Production reads quanta (a TSC read where available, far cheaper than `Instant::now()` on
//! the read path); tests use a [`ManualClock`] they move by hand, so no test ever sleeps. Engine
//! time is never mixed with wall-clock time: it only orders deadlines inside one process. The
//! deadlines a backing store keeps are wall-clock times, read through `Clock::wall` so that a
//! manual clock moves them too.
//! Every sum of a time and a duration saturates, so a TTL of `Duration::MAX` means "never" and
//! cannot wrap around into the past.

use crate::sync::{Arc, AtomicU64, Ordering};
use std::fmt;
use std::time::{Duration, SystemTime};

/// Engine nanoseconds that mean "never".
pub(crate) const NEVER: u64 = u64::MAX;

/// The time source of a cache.
///
/// The default is the system's monotonic clock (through quanta). Tests pass a [`ManualClock`]
/// to the builder instead.
#[derive(Clone)]
pub struct Clock {
    inner: ClockInner,
}

#[derive(Clone)]
enum ClockInner {
    System {
        clock: quanta::Clock,
        origin: quanta::Instant,
    },
    Manual {
        nanos: Arc<AtomicU64>,
        wall_origin: SystemTime,
    },
}

impl Clock {
    /// The system's monotonic clock.
    pub fn system() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.now();
        Clock {
            inner: ClockInner::System { clock, origin },
        }
    }

    /// Nanoseconds since this clock's origin.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match &self.inner {
            ClockInner::System { clock, origin } => {
                let d = clock.now().saturating_duration_since(*origin);
                duration_nanos(d)
            }
            ClockInner::Manual { nanos, .. } => nanos.load(Ordering::Acquire),
        }
    }

    /// Wall-clock time, for the deadlines a backing store keeps (`SystemTime`): the system's
    /// for the system clock; for a manual clock, the moment it was created plus its reading,
    /// so a store-backed cache's TTLs move with the manual clock too.
    pub(crate) fn wall(&self) -> SystemTime {
        match &self.inner {
            ClockInner::System { .. } => SystemTime::now(),
            ClockInner::Manual { nanos, wall_origin } => {
                let d = Duration::from_nanos(nanos.load(Ordering::Acquire));
                // A reading past what `SystemTime` can hold (the end of time) stays there.
                wall_origin
                    .checked_add(d)
                    .or_else(|| wall_origin.checked_add(Duration::from_secs(u64::from(u32::MAX))))
                    .unwrap_or(*wall_origin)
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        // Under loom the default is a manual clock: quanta calibrates against the OS clock,
        // which is slow and nondeterministic inside a model.
        #[cfg(loom)]
        return ManualClock::new().into();
        #[cfg(not(loom))]
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            ClockInner::System { .. } => f.write_str("Clock::System"),
            ClockInner::Manual { nanos, .. } => {
                write!(f, "Clock::Manual({} ns)", nanos.load(Ordering::Relaxed))
            }
        }
    }
}

/// A clock that only moves when told to: for deterministic tests of expiry.
///
/// ```
/// use cogwheel::{Cache, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let cache: Cache<u32, u32> = Cache::builder()
///     .max_capacity(100)
///     .time_to_live(Duration::from_secs(10))
///     .clock(clock.clone())
///     .build()
///     .unwrap();
/// cache.insert(1, 1).unwrap();
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(cache.get(&1), None); // expired exactly at the deadline
/// ```
///
/// Deadlines kept in a backing store are wall-clock times. With a manual clock the cache takes
/// wall time to be the moment the clock was created plus its reading, so a stored deadline
/// passes when the manual clock says so (a read-through never brings back a value the cache
/// has expired).
#[derive(Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
    wall_origin: SystemTime,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A manual clock at time zero.
    pub fn new() -> Self {
        ManualClock {
            nanos: Arc::new(AtomicU64::new(0)),
            wall_origin: SystemTime::now(),
        }
    }

    /// Move the clock forward by `d` (saturating at the end of time).
    pub fn advance(&self, d: Duration) {
        let add = duration_nanos(d);
        let mut cur = self.nanos.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(add);
            match self
                .nanos
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Set the clock to `nanos` since its origin. Moving it backwards is allowed, to test
    /// what a thread holding an older reading does; the engine never lets time run backwards
    /// inside a shard, so an entry written after such a move is judged by the latest time the
    /// shard has seen (with a TTL shorter than the move, it is expired at once).
    pub fn set_nanos(&self, nanos: u64) {
        self.nanos.store(nanos, Ordering::Release);
    }

    /// The current reading in nanoseconds since the origin.
    pub fn nanos(&self) -> u64 {
        self.nanos.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManualClock({} ns)", self.nanos())
    }
}

impl From<ManualClock> for Clock {
    fn from(m: ManualClock) -> Self {
        Clock {
            inner: ClockInner::Manual {
                nanos: m.nanos,
                wall_origin: m.wall_origin,
            },
        }
    }
}

/// The current time, read from the clock at most once and only if someone asks: a write to a
/// cache where nothing can expire never pays for a clock read.
pub(crate) struct LazyNow<'a> {
    clock: &'a Clock,
    read: std::cell::Cell<Option<u64>>,
}

impl<'a> LazyNow<'a> {
    pub(crate) fn new(clock: &'a Clock) -> Self {
        LazyNow {
            clock,
            read: std::cell::Cell::new(None),
        }
    }

    pub(crate) fn get(&self) -> u64 {
        match self.read.get() {
            Some(n) => n,
            None => {
                let n = self.clock.now();
                self.read.set(Some(n));
                n
            }
        }
    }

    /// Whether `deadline` has passed; reads the clock only for a real deadline.
    #[inline]
    pub(crate) fn passed(&self, deadline: u64) -> bool {
        deadline != NEVER && deadline <= self.get()
    }
}

/// A duration in nanoseconds, saturating at `u64::MAX` (≈ 584 years, i.e. "never").
#[inline]
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `now + d`, saturating: the deadline of something that lives for `d`.
#[inline]
pub(crate) fn deadline(now: u64, d: Duration) -> u64 {
    now.saturating_add(duration_nanos(d))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_saturates() {
        let m = ManualClock::new();
        let c: Clock = m.clone().into();
        m.advance(Duration::from_secs(5));
        assert_eq!(c.now(), 5_000_000_000);
        m.advance(Duration::MAX);
        assert_eq!(c.now(), u64::MAX);
        assert_eq!(deadline(c.now(), Duration::from_secs(1)), u64::MAX);
    }

    #[test]
    fn system_clock_moves_forward() {
        let c = Clock::system();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
