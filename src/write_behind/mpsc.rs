//! An intrusive, lock-free multi-producer single-consumer queue (Vyukov's algorithm).
//!
//! # Shape
//!
//! Nodes are `Arc<T>` where `T: Linked` embeds a [`Links<T>`]: one atomic `next` pointer. A
//! queued node costs no allocation; the queue owns exactly one strong count of every node it
//! holds (taken with `Arc::into_raw` in [`MpscQueue::push`], given back with `Arc::from_raw`
//! when the node is popped or the queue is dropped). The list runs from `tail` (oldest, the
//! consumer's end) to `head` (newest, the producers' end). A queue-owned *stub* node (a bare
//! `Links<T>` in a `Box`) keeps the list non-empty so producers never see a null `head`. In
//! `head`, `tail` and `next` the stub is represented by its own address cast to `*mut T`; that
//! pointer is only ever compared, never dereferenced as a `T`.
//!
//! # Protocol
//!
//! `push(n)` (any thread, wait-free: one compare-exchange, one swap and one store):
//! 1. claim `n`: `n.next` goes from `UNQUEUED` to null (Acquire), or `push` panics because `n`
//!    is already in a queue (see "At most one queue at a time" below);
//! 2. `prev = head.swap(n)` (AcqRel): `n` is now the newest node;
//! 3. `prev.next = n` (Release): `n` is now reachable from `tail`.
//!
//! `pop()` (the consumer only): let `tail` be the oldest node and `next = tail.next`
//! (Acquire). If `tail` is the stub, step over it first. If `next` is set, `tail` is complete:
//! advance `tail` to `next` and return the old `tail`. If `next` is null and `tail` is also
//! `head`, `tail` is the last node: the consumer pushes the stub behind it (as a producer would)
//! so that it can advance past `tail`, and returns `tail` once its `next` is linked. A returned
//! node's `next` is reset to `UNQUEUED` (Release), which makes it pushable again.
//!
//! # The inconsistent window
//!
//! Between steps 2 and 3 of a push, `head` has moved but the chain from `tail` does not reach
//! it yet. A consumer that arrives at the unlinked gap cannot proceed until that producer runs
//! step 3, and nodes pushed behind the gap (even by pushes that already returned) are invisible
//! until then. `pop` reports this as [`TryPopError::Inconsistent`] rather than `Empty`, because
//! `head` shows that nodes are on their way. The window is two instructions long, but a producer
//! may be preempted inside it, so the consumer must not spin without bound:
//! [`Consumer::pop_wait`] waits with [`crate::sync::spin_wait`], a few spin hints and then OS
//! yields (and a model-thread yield under loom, which would otherwise never run the producer).
//! This is the known trade of the algorithm: producers are wait-free, the consumer is blocking
//! with respect to a stalled producer, and the queue is not linearizable (a completed push can
//! be invisible behind a slower one). The write-behind writer only needs
//! "every push is eventually popped, in per-producer order", which holds.
//!
//! # Orderings, and why
//!
//! - The claim (`n.next`: `UNQUEUED` → null) is Acquire and the reset to `UNQUEUED` when `n`
//!   is popped is Release. Coherence of `n.next` alone already puts the consumer's last read
//!   of it before a new claim; Acquire/Release makes the claim a full hand-off of the node
//!   (whatever the consumer did before releasing it is visible to the next pusher), so the
//!   queue does not lean on the caller's own hand-off. It is free on x86.
//! - `head.swap` is AcqRel. Release: the producer that later swaps `n` out of `head` writes
//!   `n.next`; it must do so *after* our claim wrote null there (otherwise the null could
//!   overwrite its link and lose the rest of the queue). Acquire: symmetrically, our step 3
//!   writes `prev.next` and must come after `prev`'s own claim by its producer.
//! - `prev.next = n` is Release and the consumer's loads of `next` are Acquire. This is the edge
//!   that hands the node over: everything `n`'s producer did before pushing (building the node,
//!   changing its fields) is visible to the consumer that pops `n`, and so is the null that the
//!   claim wrote to `n.next`.
//! - The consumer's loads of `head` are Relaxed. They only decide between "empty",
//!   "inconsistent" and "push the stub"; a stale value just yields `Inconsistent` (the stub push
//!   and the following Acquire load of `next` settle the real state), and no pointer read from
//!   `head` is ever dereferenced by the consumer.
//! - `tail` is written only by the consumer that holds the consumer role; it is an atomic
//!   (Relaxed) so that [`MpscQueue::is_empty`] may read it from any thread. Consecutive
//!   consumers are ordered by the consumer flag (Acquire to take, Release to give back).
//!
//! # Single consumer
//!
//! The consumer role is an atomic flag: [`MpscQueue::consumer`] takes it (or returns `None`
//! when another thread holds it) and the returned [`Consumer`] gives it back when dropped;
//! [`MpscQueue::pop`] takes it for a single pop and reports [`TryPopError::Busy`] when it is
//! held. The writer thread takes the role once per batch. `Drop` needs no flag: `&mut self`
//! proves that no consumer and no producer is active.
//!
//! # At most one queue at a time
//!
//! A node has one `next` field, so it may be in at most one queue, at most once, at any time.
//! Breaking that rule would corrupt the list and free a node twice, so a safe `push` must not
//! be able to do it: the rule is enforced in every build, at no extra space. A node in no queue
//! has `next == UNQUEUED` (a dangling, never-allocated address); `push` claims the node by
//! swinging `next` from `UNQUEUED` to null with a compare-exchange, and panics if `next` held
//! anything else; `pop` (and `Drop`) store `UNQUEUED` back once the node is unlinked. The
//! compare-exchange takes the place of the plain `next = null` store of the textbook algorithm,
//! so a push still costs one read-modify-write on the node and one on `head`.
//!
//! The panic is a bug check, not flow control: write-behind pushes a stripe's node only when
//! the stripe's `queued` flag goes from false to true under the stripe's lock, and clears the
//! flag (under the same lock) only after popping the node, so a node is never pushed while
//! queued.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr;

use crossbeam_utils::CachePadded;

use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release};
use crate::sync::{Arc, AtomicBool, AtomicPtr, spin_wait};

/// The link a node embeds to be queued in an [`MpscQueue`]: one atomic `next` pointer.
pub struct Links<T> {
    /// While queued: the next-newer node (an `Arc::into_raw` pointer), the queue's stub (cast),
    /// or null. In no queue: [`unqueued`].
    next: AtomicPtr<T>,
}

impl<T> Links<T> {
    /// Unlinked links, for a node that is in no queue.
    #[must_use]
    pub fn new() -> Self {
        Links {
            next: AtomicPtr::new(unqueued()),
        }
    }
}

impl<T> Default for Links<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Links<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Links").finish_non_exhaustive()
    }
}

/// A type that can be a node of an [`MpscQueue`] because it embeds a [`Links`].
///
/// # Safety
///
/// `links` must return a reference to a `Links<Self>` stored inline in `self` (a field, at any
/// depth, but not behind a pointer), and the same one on every call. Then every node has its
/// own `next` field that lives exactly as long as the node, which is what the queue's raw
/// pointer accesses rely on.
pub unsafe trait Linked: Sized {
    /// The node's embedded links.
    fn links(&self) -> &Links<Self>;
}

/// A ready-made node: a value with links beside it, for values that do not embed [`Links`]
/// themselves (simple records, tests and loom models).
pub struct Node<V> {
    links: Links<Node<V>>,
    value: V,
}

impl<V> Node<V> {
    /// A new, unqueued node holding `value`.
    pub fn new(value: V) -> Self {
        Node {
            links: Links::new(),
            value,
        }
    }
}

impl<V> Deref for Node<V> {
    type Target = V;

    fn deref(&self) -> &V {
        &self.value
    }
}

/// Changing the value needs `&mut Node`, which a queued node never gives out (the queue holds
/// a strong count of it, so `Arc::get_mut` fails): only a node in no queue can be reused.
impl<V> DerefMut for Node<V> {
    fn deref_mut(&mut self) -> &mut V {
        &mut self.value
    }
}

impl<V: fmt::Debug> fmt::Debug for Node<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Node").field(&self.value).finish()
    }
}

// SAFETY: `links` returns the inline `links` field of `self`, the same field on every call.
unsafe impl<V> Linked for Node<V> {
    fn links(&self) -> &Links<Self> {
        &self.links
    }
}

/// Why [`MpscQueue::pop`] returned no node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryPopError {
    /// The queue held no node when it was looked at.
    Empty,
    /// A producer is between its two steps: nodes are on their way but not reachable yet.
    /// Retry after a [`spin_wait`] step (or use [`Consumer::pop_wait`]).
    Inconsistent,
    /// Another thread holds the consumer role.
    #[allow(dead_code)] // reported by `MpscQueue::pop`, used by the loom models
    Busy,
}

/// An intrusive lock-free MPSC queue of `Arc<T>` nodes; see the [module docs](self).
pub struct MpscQueue<T: Linked> {
    /// The newest node (producers' end); the stub when nothing was pushed since it was.
    head: CachePadded<AtomicPtr<T>>,
    /// The oldest node (consumer's end). Written only by the holder of the consumer role.
    tail: CachePadded<AtomicPtr<T>>,
    /// The consumer role: set while a [`Consumer`] exists.
    has_consumer: CachePadded<AtomicBool>,
    /// The stub node. Boxed so that its address survives moves of the queue.
    stub: Box<Links<T>>,
    /// The queue owns one strong count of each queued node; this makes `Send`/`Sync` follow
    /// `Arc<T>`'s (raw pointers alone would make the queue `Send + Sync` for any `T`).
    _owns: PhantomData<Arc<T>>,
}

impl<T: Linked> MpscQueue<T> {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        // The stub starts in the list, alone: `next` null, not `UNQUEUED`.
        let stub = Box::new(Links {
            next: AtomicPtr::new(ptr::null_mut()),
        });
        let stub_ptr = stub_ptr(&stub);
        MpscQueue {
            head: CachePadded::new(AtomicPtr::new(stub_ptr)),
            tail: CachePadded::new(AtomicPtr::new(stub_ptr)),
            has_consumer: CachePadded::new(AtomicBool::new(false)),
            stub,
            _owns: PhantomData,
        }
    }

    /// Append `node`. Wait-free (no loop, no wait on other threads), from any number of
    /// threads.
    ///
    /// The queue keeps `node`'s strong count until the node is popped or the queue is dropped.
    ///
    /// # Panics
    ///
    /// If `node` is already in a queue (this one or another, not yet popped): a node has one
    /// `next` field. The cache never does this (see the module docs).
    pub fn push(&self, node: Arc<T>) {
        let claimed =
            node.links()
                .next
                .compare_exchange(unqueued(), ptr::null_mut(), Acquire, Relaxed);
        assert!(
            claimed.is_ok(),
            "MpscQueue::push: node is already queued (a node may be in one queue, once, at a time)"
        );
        let node = Arc::into_raw(node).cast_mut();
        // SAFETY: `node` comes from `Arc::into_raw` just above, so the queue now owns a strong
        // count of it and it is not the stub. The claim above succeeded, so `node` was in no
        // queue and its `next` is null and ours: no other push can claim it until it is popped.
        unsafe { self.link(node) };
    }

    /// Take the consumer role, or `None` when another thread holds it.
    pub fn consumer(&self) -> Option<Consumer<'_, T>> {
        self.has_consumer
            .compare_exchange(false, true, Acquire, Relaxed)
            .ok()
            .map(|_| Consumer { queue: self })
    }

    /// Pop the oldest node, taking the consumer role for this one call.
    ///
    /// # Errors
    ///
    /// [`TryPopError::Busy`] when another thread holds the consumer role; otherwise as
    /// [`Consumer::pop`].
    #[allow(dead_code)] // the writer uses a `Consumer`; loom models use this
    pub fn pop(&self) -> Result<Arc<T>, TryPopError> {
        self.consumer().ok_or(TryPopError::Busy)?.pop()
    }

    /// Pop the oldest node, waiting out [`TryPopError::Inconsistent`] (see
    /// [`Consumer::pop_wait`]).
    ///
    /// # Errors
    ///
    /// [`TryPopError::Empty`] or [`TryPopError::Busy`]; never `Inconsistent`.
    #[allow(dead_code)] // the writer uses a `Consumer`; loom models use this
    pub fn pop_wait(&self) -> Result<Arc<T>, TryPopError> {
        self.consumer()
            .ok_or(TryPopError::Busy)?
            .pop_wait()
            .ok_or(TryPopError::Empty)
    }

    /// Whether the queue looked empty. A hint only: pushes and pops may run concurrently.
    pub fn is_empty(&self) -> bool {
        let stub = stub_ptr(&self.stub);
        self.tail.load(Relaxed) == stub && self.head.load(Relaxed) == stub
    }

    /// The links of `node`, which may be the stub.
    ///
    /// # Safety
    ///
    /// `node` is the stub pointer or points to a node of which the queue owns a strong count
    /// (pushed and not yet popped) for as long as the returned reference is used.
    unsafe fn links_of(&self, node: *mut T) -> &Links<T> {
        if node == stub_ptr(&self.stub) {
            &self.stub
        } else {
            // SAFETY: by this function's contract `node` is a live `Arc<T>` payload (the queue
            // holds a strong count of it), so it may be borrowed shared.
            unsafe { (*node).links() }
        }
    }

    /// Steps 2 and 3 of the push protocol, for a node whose `next` is already null.
    ///
    /// # Safety
    ///
    /// `node` is either the stub while the stub is not in the list (only the consumer pushes
    /// it), or a pointer from `Arc::into_raw` whose strong count the caller has handed to the
    /// queue, for a node the caller has claimed (`next` swung from `UNQUEUED` to null). Either
    /// way `node.next` is null and no other thread accesses it until `node` is linked.
    unsafe fn link(&self, node: *mut T) {
        let prev = self.head.swap(node, AcqRel);
        // Only this thread (which swapped `prev` out of `head`) sets `prev.next`, and the
        // consumer frees a node only after it has seen that node's `next` set.
        // SAFETY: `prev` was `head` (the stub or a queued node whose `next` is still null), so
        // it is alive until the store below; it is not touched afterwards.
        unsafe { self.links_of(prev) }.next.store(node, Release);
    }

    /// Pop one node.
    ///
    /// # Safety
    ///
    /// The caller holds the consumer role: a [`Consumer`] of this queue, or `&mut self`.
    unsafe fn pop_unchecked(&self) -> Result<Arc<T>, TryPopError> {
        let stub = stub_ptr(&self.stub);
        let mut tail = self.tail.load(Relaxed);
        // SAFETY: `tail` is the stub or the oldest queued node, which only the consumer (us)
        // can release.
        let mut next = unsafe { self.links_of(tail) }.next.load(Acquire);
        debug_assert_ne!(next, unqueued(), "a node in the list has an unqueued link");

        if tail == stub {
            if next.is_null() {
                // The stub is the last linked node. If `head` moved past it, a producer has
                // swapped but not linked yet.
                return Err(if self.head.load(Relaxed) == stub {
                    TryPopError::Empty
                } else {
                    TryPopError::Inconsistent
                });
            }
            // Step over the stub; it leaves the list until it is pushed again.
            self.tail.store(next, Relaxed);
            tail = next;
            // SAFETY: `tail` is now the oldest queued node (linked after the stub by its
            // producer's Release store, which our Acquire load above observed).
            next = unsafe { self.links_of(tail) }.next.load(Acquire);
            debug_assert_ne!(next, unqueued(), "a node in the list has an unqueued link");
        }

        if !next.is_null() {
            self.tail.store(next, Relaxed);
            // SAFETY: `tail` is a queued node (not the stub) and has just been unlinked.
            return Ok(unsafe { self.take(tail) });
        }

        if tail != self.head.load(Relaxed) {
            // Producers swapped `head` after `tail` but have not linked `tail.next` yet.
            return Err(TryPopError::Inconsistent);
        }

        // `tail` is the only node and the stub is not in the list (`tail == head` and `tail`
        // is not the stub): queue the stub behind `tail` so that `tail` can be released.
        // The stub is not in the list and we are the consumer, its only pusher; its `next` may
        // still point at a node popped long ago. Publishing this null is the swap's job.
        self.stub.next.store(ptr::null_mut(), Relaxed);
        // SAFETY: the stub is not in the list, its `next` is null, and only we push it.
        unsafe { self.link(stub) };
        // SAFETY: `tail` is still queued; only we can release it.
        next = unsafe { self.links_of(tail) }.next.load(Acquire);
        if next.is_null() {
            // A producer swapped in between our `head` check and the stub push, and has not
            // linked `tail.next` yet. The stub sits behind its node; a later pop will get there.
            return Err(TryPopError::Inconsistent);
        }
        self.tail.store(next, Relaxed);
        // SAFETY: `tail` is a queued node (not the stub) and has just been unlinked.
        Ok(unsafe { self.take(tail) })
    }

    /// Hand an unlinked node back to the caller, pushable again.
    ///
    /// # Safety
    ///
    /// `node` is not the stub, came from `Arc::into_raw` in [`push`](Self::push), and the
    /// consumer has just moved `tail` past it, so nothing in the queue refers to it any more.
    unsafe fn take(&self, node: *mut T) -> Arc<T> {
        // SAFETY: the strong count taken by `push` is still owned by the queue and is given
        // back exactly once, here, because `tail` has moved past `node`.
        let node = unsafe { Arc::from_raw(node) };
        // Our last access to `node.next`: from here on a producer may claim it again.
        node.links().next.store(unqueued(), Release);
        node
    }
}

impl<T: Linked> Default for MpscQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Linked> fmt::Debug for MpscQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpscQueue")
            .field("is_empty", &self.is_empty())
            .finish_non_exhaustive()
    }
}

impl<T: Linked> Drop for MpscQueue<T> {
    fn drop(&mut self) {
        loop {
            // SAFETY: `&mut self`: no consumer exists (it would borrow the queue) and no push is
            // in flight (every push borrows the queue), so we are the only accessor.
            match unsafe { self.pop_unchecked() } {
                Ok(node) => drop(node),
                Err(e) => {
                    // With no push in flight the queue is never inconsistent. If it somehow
                    // were, leaking beats looping forever in a destructor. (No second panic
                    // while unwinding: that would abort and hide the first one.)
                    if !std::thread::panicking() {
                        debug_assert_eq!(
                            e,
                            TryPopError::Empty,
                            "MpscQueue dropped while inconsistent"
                        );
                    }
                    break;
                }
            }
        }
    }
}

/// The consumer role of an [`MpscQueue`]; at most one exists per queue at a time. Dropping it
/// gives the role back.
pub struct Consumer<'q, T: Linked> {
    queue: &'q MpscQueue<T>,
}

impl<T: Linked> Consumer<'_, T> {
    /// Pop the oldest node.
    ///
    /// # Errors
    ///
    /// [`TryPopError::Empty`] when no node is queued, [`TryPopError::Inconsistent`] when a
    /// producer is between its two steps (retry after a [`spin_wait`] step). Never `Busy`.
    pub fn pop(&mut self) -> Result<Arc<T>, TryPopError> {
        // SAFETY: `self` is the queue's consumer role (its flag was taken in
        // `MpscQueue::consumer`), and `&mut self` keeps this thread its only user.
        unsafe { self.queue.pop_unchecked() }
    }

    /// Pop the oldest node, waiting (with [`spin_wait`], never a bare spin) while the queue is
    /// inconsistent. `None` when the queue is empty.
    pub fn pop_wait(&mut self) -> Option<Arc<T>> {
        let mut step = 0;
        loop {
            match self.pop() {
                Ok(node) => return Some(node),
                Err(TryPopError::Inconsistent) => spin_wait(&mut step),
                Err(_) => return None,
            }
        }
    }
}

impl<T: Linked> Drop for Consumer<'_, T> {
    fn drop(&mut self) {
        self.queue.has_consumer.store(false, Release);
    }
}

impl<T: Linked> fmt::Debug for Consumer<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

/// The `next` of a node that is in no queue: a dangling address that no allocation (node or
/// stub) can have. Only ever compared, never dereferenced.
fn unqueued<T>() -> *mut T {
    ptr::dangling_mut()
}

/// The stub's address in the queue's `*mut T` encoding. Only ever compared, never dereferenced
/// as a `T`.
fn stub_ptr<T>(stub: &Links<T>) -> *mut T {
    ptr::from_ref(stub).cast_mut().cast::<T>()
}

#[cfg(test)]
mod tests;
