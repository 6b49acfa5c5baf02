//! Heap used to read the 1,000-product catalogue page of `pure` and one push
//! notification, counted by a global allocator: bytes and allocations asked
//! for, the peak held at once while reading (the body itself not counted) and
//! what the result keeps. `cargo bench -p hls-core --bench heap` prints them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use hls_core::adapters::catalogue::odata::parse_page;
use hls_core::domain::notification::ProductNotification;

mod common;
use common::{PAGE_SIZE, thousand_product_page};

const PUSH_CREATED: &str = include_str!("../../../tests/fixtures/cdse-push-created.json");

struct Counting;

static ASKED: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    ASKED.fetch_add(by, Relaxed);
    CALLS.fetch_add(1, Relaxed);
    let live = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `read` once and reports its heap use; the result is dropped after.
fn measure<T>(what: &str, read: impl FnOnce() -> T) {
    let (asked, calls, before) = (ASKED.load(Relaxed), CALLS.load(Relaxed), LIVE.load(Relaxed));
    PEAK.store(before, Relaxed);
    let result = black_box(read());
    let kept = LIVE.load(Relaxed) - before;
    println!(
        "{what}: {} KiB in {} allocations; peak {} KiB held at once; the result keeps {} KiB",
        (ASKED.load(Relaxed) - asked) / 1024,
        CALLS.load(Relaxed) - calls,
        (PEAK.load(Relaxed) - before) / 1024,
        kept / 1024,
    );
    drop(result);
}

fn main() {
    // `cargo bench` passes `--bench`; a test run (`cargo test --benches`) has nothing to measure.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let body = thousand_product_page();
    println!(
        "catalogue page: {PAGE_SIZE} products, {} KiB of JSON",
        body.len() / 1024
    );
    measure("parse_page", || parse_page(&body).expect("the page parses"));
    measure("ProductNotification::parse", || {
        ProductNotification::parse(PUSH_CREATED.as_bytes()).expect("the notification parses")
    });
}
