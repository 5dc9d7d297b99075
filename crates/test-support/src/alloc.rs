//! A counting global allocator, for tests that bound memory in bytes or count a hot path's allocations.
//!
//! A `#[global_allocator]` must be declared by the test binary itself; this module gives it the type and
//! the readings:
//!
//! ```
//! use ratelimit_test_support::alloc::{self, Counting};
//!
//! #[global_allocator]
//! static ALLOC: Counting = Counting;
//!
//! let (v, allocations) = alloc::allocations_of(|| vec![0u8; 64]);
//! assert_eq!(v.len(), 64);
//! assert_eq!(allocations, 1);
//! ```
//!
//! Readings are either process-wide ([`live_bytes`]) or this thread's ([`thread_live_bytes`],
//! [`allocations_of`]): a flood driven synchronously on the test thread measures only what it
//! allocated, whatever the test harness's other threads do.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Forwards every call to [`System`], counting bytes and allocations on the way.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static THREAD_LIVE: Cell<isize> = const { Cell::new(0) };
    static THREAD_ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn grew(bytes: usize, allocations: usize) {
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX);
    LIVE.fetch_add(bytes, Ordering::Relaxed);
    // `try_with`: the allocator also runs while thread locals are being torn down.
    let _ = THREAD_LIVE.try_with(|c| c.set(c.get() + bytes));
    let _ = THREAD_ALLOCATIONS.try_with(|c| c.set(c.get() + allocations));
}

fn shrank(bytes: usize) {
    let bytes = isize::try_from(bytes).unwrap_or(isize::MAX);
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
    let _ = THREAD_LIVE.try_with(|c| c.set(c.get() - bytes));
}

// SAFETY: every method forwards its arguments unchanged to the system allocator; the counting around
// it touches only atomics and const-initialised thread locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size(), 1);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size(), 1);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size, 1);
        shrank(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes allocated and not yet freed, by every thread of the process.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::SeqCst)
}

/// Bytes this thread allocated and has not freed (frees of other threads' memory count where they run).
pub fn thread_live_bytes() -> isize {
    THREAD_LIVE.with(Cell::get)
}

/// Runs `f` and counts the allocations (reallocations included) this thread made meanwhile.
pub fn allocations_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = THREAD_ALLOCATIONS.with(Cell::get);
    let v = f();
    (v, THREAD_ALLOCATIONS.with(Cell::get) - before)
}
