//! Micro benchmarks of the pure parts, on payloads built from the real CDSE
//! fixtures: a 1,000-product catalogue page, a push notification, tile lookups.
//! `make bench` runs them and reports the medians in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hls_core::TileSet;
use hls_core::adapters::catalogue::odata::parse_page;
use hls_core::domain::notification::ProductNotification;
use serde_json::Value;

const ODATA_PAGE: &str = include_str!("../../../tests/fixtures/cdse-odata-products-page.json");
const PUSH_CREATED: &str = include_str!("../../../tests/fixtures/cdse-push-created.json");
const TILES: &str = include_str!("../data/allowed_tiles.txt");
/// CDSE's largest `$top`: the page the polling fetcher reads.
const PAGE_SIZE: usize = 1_000;

/// Allowed tiles from the built-in list, and as many well-formed ones that are not on it.
fn sample_tiles(count: usize) -> (Vec<String>, Vec<String>) {
    let set = TileSet::built_in();
    let allowed: Vec<String> = TILES
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .step_by(TILES.lines().count() / count)
        .take(count)
        .map(str::to_owned)
        .collect();
    let other: Vec<String> = (0..)
        .map(|n| format!("{:02}ZZ{}", n % 61, (b'A' + (n % 26) as u8) as char))
        .filter(|t| !set.contains(t))
        .take(count)
        .collect();
    (allowed, other)
}

/// A full page: the real fixture product repeated with its own id, name and tile
/// (nine in ten on allowed tiles), and the `@odata.count` of a first page.
fn thousand_product_page() -> Vec<u8> {
    let fixture: Value = serde_json::from_str(ODATA_PAGE).expect("fixture is JSON");
    let template = &fixture["value"][0];
    let (allowed, other) = sample_tiles(PAGE_SIZE);
    let products: Vec<Value> = (0..PAGE_SIZE)
        .map(|n| {
            let tile = if n % 10 == 9 { &other[n] } else { &allowed[n] };
            let mut product = template.clone();
            product["Id"] = format!("00000000-0000-4000-8000-{n:012}").into();
            product["Name"] =
                format!("S2A_MSIL1C_20240401T010311_N0511_R045_T{tile}_20240401T0{n:05}.SAFE")
                    .into();
            product
        })
        .collect();
    let mut page = fixture.clone();
    page["value"] = products.into();
    page["@odata.count"] = 12_000.into();
    serde_json::to_vec(&page).expect("a page serialises")
}

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
