//! The polling fetcher's test harness: a fresh database, queue and stand-in
//! catalogue, and the `link-fetcher` dependencies over them.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDate, Utc};
use hls_core::adapters::catalogue::ODataCatalogue;
use hls_core::adapters::metrics::Metrics;
use hls_core::use_cases::day_fetch::{FetchOptions, RetryPolicy};
use hls_core::{GranuleStore, Handoff, TileSet};
use lambda_runtime::{Context, LambdaEvent};
use link_fetcher::{Dependencies, Search, handle};
use serde_json::Value;

use crate::catalogue_stub::CatalogueStub;
use crate::{TestDatabase, TestQueue};

/// Tiles the tests allow; products on other tiles are skipped.
pub const ALLOWED: [&str; 3] = ["54PXA", "28PHQ", "31UFU"];
/// Tiles for a synthetic day, one in `k` allowed: moto takes ~0.1 s per SQS
/// batch, so the tests keep the queue small and the catalogue large.
pub fn tiles(k: usize) -> Vec<String> {
    std::iter::once("54PXA".to_owned())
        .chain((1..k).map(|n| format!("{n:02}ZZZ")))
        .collect()
}

pub struct Harness {
    pub db: TestDatabase,
    pub queue: TestQueue,
    pub stub: CatalogueStub,
    pub deps: Dependencies,
}

pub fn options(page_size: u32) -> FetchOptions {
    FetchOptions {
        page_size,
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            budget: None,
        },
        deadline_margin: Duration::from_secs(1),
        ..FetchOptions::default()
    }
}

pub async fn harness(page_size: u32) -> Harness {
    let (db, queue, stub) = tokio::join!(
        TestDatabase::migrated(),
        TestQueue::new(),
        CatalogueStub::start()
    );
    let deps = Dependencies {
        search: Search {
            catalogue: ODataCatalogue::new(stub.url()).unwrap(),
            tiles: TileSet::parse(&ALLOWED.join("\n")).unwrap(),
            options: options(page_size),
            max_acquisition_age: chrono::Duration::days(30),
        },
        handoff: Handoff::new(
            GranuleStore::new(db.pool.clone()),
            queue.sqs_queue(),
            Duration::from_secs(2),
        ),
        metrics: Metrics::off(),
    };
    Harness {
        db,
        queue,
        stub,
        deps,
    }
}

pub fn day(text: &str) -> NaiveDate {
    text.parse().unwrap()
}

pub fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// The ids of `products` on allowed tiles.
pub fn allowed_ids(products: &[Value]) -> BTreeSet<String> {
    products
        .iter()
        .filter(|p| {
            let name = p["Name"].as_str().unwrap();
            ALLOWED.iter().any(|t| name.contains(&format!("_T{t}_")))
        })
        .map(|p| p["Id"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn recorded_ids(db: &TestDatabase) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>("SELECT id FROM granule")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

pub async fn drained_ids(queue: &TestQueue) -> BTreeSet<String> {
    queue
        .drain(Duration::from_millis(500))
        .await
        .by_id
        .into_keys()
        .collect()
}

pub async fn count_row(db: &TestDatabase, date: NaiveDate, platform: &str) -> (i64, i64, bool) {
    sqlx::query_as("SELECT available_links, fetched_links, completed FROM granule_count WHERE date = $1 AND platform = $2")
        .bind(date)
        .bind(platform)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

pub fn context(deadline_in: Duration) -> Context {
    let mut context = Context::default();
    context.deadline = (SystemTime::now() + deadline_in)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    context
}

pub async fn invoke(
    deps: &Dependencies,
    payload: Value,
    deadline_in: Duration,
) -> Result<Value, String> {
    handle(LambdaEvent::new(payload, context(deadline_in)), deps)
        .await
        .map_err(|e| e.to_string())
}
