//! Micro benchmarks of the pure parts, on payloads built from the real CDSE
//! fixtures: a 1,000-product catalogue page, a push notification, tile lookups.
//! `make bench` runs them and reports the medians in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hls_core::TileSet;
use hls_core::adapters::catalogue::odata::parse_page;
use hls_core::domain::notification::ProductNotification;

mod common;
use common::{PAGE_SIZE, sample_tiles, thousand_product_page};

const PUSH_CREATED: &str = include_str!("../../../tests/fixtures/cdse-push-created.json");

fn catalogue_page(c: &mut Criterion) {
    let body = thousand_product_page();
    let parsed = parse_page(&body).expect("the page parses");
    assert_eq!(parsed.products.len(), PAGE_SIZE);
    assert!(parsed.products.iter().all(|p| p.granule.is_ok()));
    let mut group = c.benchmark_group("catalogue_page");
    group.throughput(Throughput::Elements(PAGE_SIZE as u64));
    group.bench_function("parse_1000_products", |b| {
        b.iter(|| parse_page(black_box(&body)))
    });
    group.finish();
}

fn push_notification(c: &mut Criterion) {
    let body = PUSH_CREATED.as_bytes();
    assert!(matches!(
        ProductNotification::parse(body),
        Ok(ProductNotification::Created(_))
    ));
    let mut group = c.benchmark_group("push_notification");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_created", |b| {
        b.iter(|| ProductNotification::parse(black_box(body)))
    });
    group.finish();
}

fn tile_lookup(c: &mut Criterion) {
    let tiles = TileSet::built_in();
    let (allowed, other) = sample_tiles(1_000);
    assert!(allowed.iter().all(|t| tiles.contains(t)));
    assert!(!other.iter().any(|t| tiles.contains(t)));
    let mut group = c.benchmark_group("tile_lookup");
    group.throughput(Throughput::Elements(1));
    group.bench_function("allowed", |b| {
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % allowed.len();
            tiles.contains(black_box(&allowed[n]))
        })
    });
    group.bench_function("not_allowed", |b| {
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % other.len();
            tiles.contains(black_box(&other[n]))
        })
    });
    // Paid once per cold start: the 18,952 built-in tiles into a hash set.
    group.bench_function("load_built_in_list", |b| b.iter(TileSet::built_in));
    group.finish();
}

criterion_group!(benches, catalogue_page, push_notification, tile_lookup);
criterion_main!(benches);
