//! The polling link fetcher end to end: the handler and the day fetch against
//! the catalogue stub, real Postgres and an SQS-compatible server.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hls_core::adapters::catalogue::Platform;
use hls_core::use_cases::day_fetch::{DaySummary, Deadline};
use hls_core::{GranuleStore, Handoff};
use integration_tests::catalogue_stub::{Fault, synthetic_day};
use integration_tests::fetcher::{
    allowed_ids, at, context, count_row, day, drained_ids, harness, invoke, recorded_ids, tiles,
};
use integration_tests::{Downloader, TestDatabase, fixtures};
use lambda_runtime::LambdaEvent;
use link_fetcher::handle;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_day_over_several_pages_records_exactly_the_allowed_tiles_once() {
    let h = harness(400).await;
    let date = day("2024-04-01");
    let mut products = synthetic_day("day", date, 2_500, &tiles(10));
    // Two products that cannot be granules: counted, logged and skipped.
    let mut too_long = products[10].clone();
    too_long["Id"] = "bad-name".into();
    too_long["Name"] = format!("S2A_MSIL1C_T54PXA_{}", "x".repeat(300)).into();
    let mut no_date = products[11].clone();
    no_date["Id"] = "bad-date".into();
    no_date["ContentDate"]["End"] = "not a date".into();
    // Outside the query: the neighbouring days, and an old acquisition.
    let acquired = at("2024-03-31T10:00:00Z");
    let before = fixtures::odata_product(
        "prev-day",
        &fixtures::product_name("S2A", "54PXA", acquired, 1),
        at("2024-03-31T23:59:59.999999Z"),
        acquired,
    );
    let after = fixtures::odata_product(
        "next-day",
        &fixtures::product_name("S2A", "54PXA", acquired, 2),
        at("2024-04-02T00:00:00Z"),
        acquired,
    );
    let old = at("2024-02-20T10:00:00Z");
    let reprocessed = fixtures::odata_product(
        "old",
        &fixtures::product_name("S2A", "54PXA", old, 3),
        at("2024-04-01T12:00:00Z"),
        old,
    );
    let expected = allowed_ids(&products);
    products.extend([too_long, no_date]);
    h.stub
        .add_products(products.iter().cloned().chain([before, after, reprocessed]));
    let summary: DaySummary = h.deps.fetch(date, None, Deadline::none()).await.unwrap();
    let total = products.len() as i64;
    assert!(summary.completed);
    assert_eq!(summary.available_links, total);
    assert_eq!(summary.fetched_links, total);
    assert_eq!(summary.examined, total);
    assert_eq!(summary.new_granules, expected.len() as i64);
    assert_eq!(summary.rejected, 2);
    assert_eq!(summary.skipped_tiles, total - 2 - expected.len() as i64);
    assert_eq!(summary.platform, "S2A+S2B+S2C");
    assert_eq!(summary.pages, 7, "{summary:?}");
    assert_eq!(summary.requests, 7);

    assert_eq!(recorded_ids(&h.db).await, expected);
    let drained = h.queue.drain(Duration::from_millis(500)).await;
    assert_eq!(
        drained.by_id.keys().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    let message = &drained.by_id["day-000000"];
    assert_eq!(
        message["download_url"],
        "https://catalogue.dataspace.copernicus.eu/odata/v1/Products(day-000000)/$value"
    );
    assert_eq!(message["checksum"], "923ac4992d90b57d41e7ace4d9d90757");
    assert_eq!(
        count_row(&h.db, date, "S2A+S2B+S2C").await,
        (total, total, true)
    );
    let status: String =
        sqlx::query_scalar("SELECT value FROM status WHERE key_name = 'last_linked_fetched_time'")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert!(
        status.starts_with(&Utc::now().format("%Y-%m-%d").to_string()),
        "{status}"
    );
    // The first request asks for the count, the others do not; every $skip is small.
    let queries = h.stub.queries();
    assert!(queries[0].contains(&("$count".into(), "true".into())));
    assert!(
        queries[1..]
            .iter()
            .all(|q| q.iter().all(|(k, _)| k != "$count"))
    );

    // A second run: one request, nothing queued, nothing counted twice.
    h.stub.reset_requests();
    let again = h.deps.fetch(date, None, Deadline::none()).await.unwrap();
    assert!(again.completed);
    assert_eq!(
        (again.new_granules, again.examined, again.requests),
        (0, 0, 1)
    );
    assert_eq!(h.stub.requests(), 1);
    assert_eq!(again.available_links, total);
    assert!(drained_ids(&h.queue).await.is_empty());
    assert_eq!(
        count_row(&h.db, date, "S2A+S2B+S2C").await,
        (total, total, true)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_cut_short_by_the_deadline_resumes_without_gap_or_duplicate() {
    let h = harness(200).await;
    let date = day("2024-04-02");
    let products = synthetic_day("cut", date, 2_000, &tiles(10));
    let expected = allowed_ids(&products);
    h.stub.add_products(products.clone());
    h.stub.set_page_delay(Duration::from_millis(150));

    // Margin 1 s: requests may start during the first ~0.6 s only.
    let first = invoke(
        &h.deps,
        json!({"query_date": "2024-04-02"}),
        Duration::from_millis(1_600),
    )
    .await
    .unwrap();
    assert_eq!(
        first,
        json!({"query_date": "2024-04-02", "completed": false})
    );
    let (_, fetched, completed) = count_row(&h.db, date, "S2A+S2B+S2C").await;
    assert!(!completed);
    assert!(fetched > 0 && fetched < 2_000, "{fetched}");
    let partial = recorded_ids(&h.db).await;
    assert!(!partial.is_empty() && partial.len() < expected.len());

    h.stub.set_page_delay(Duration::ZERO);
    let second = invoke(
        &h.deps,
        json!({"query_date": "2024-04-02"}),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(
        second,
        json!({"query_date": "2024-04-02", "completed": true})
    );
    assert_eq!(recorded_ids(&h.db).await, expected);
    // Every product examined exactly once across the two runs.
    assert_eq!(
        count_row(&h.db, date, "S2A+S2B+S2C").await,
        (2_000, 2_000, true)
    );
    let drained = h.queue.drain(Duration::from_millis(500)).await;
    assert_eq!(
        drained.by_id.keys().cloned().collect::<BTreeSet<_>>(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_day_larger_than_the_skip_cap_is_complete() {
    let h = harness(1_000).await;
    let date = day("2024-04-03");
    let products = synthetic_day("big", date, 11_500, &tiles(50));
    let expected = allowed_ids(&products);
    h.stub.add_products(products);

    let summary = h.deps.fetch(date, None, Deadline::none()).await.unwrap();
    assert!(summary.completed);
    assert_eq!(
        (summary.available_links, summary.fetched_links),
        (11_500, 11_500)
    );
    assert_eq!(summary.new_granules, expected.len() as i64);
    assert_eq!(summary.requests, 12);
    assert_eq!(recorded_ids(&h.db).await, expected);
    assert_eq!(drained_ids(&h.queue).await, expected);
    let skips: Vec<u32> = h
        .stub
        .queries()
        .iter()
        .map(|q| {
            q.iter()
                .find(|(k, _)| k == "$skip")
                .unwrap()
                .1
                .parse()
                .unwrap()
        })
        .collect();
    assert!(skips.iter().all(|s| *s <= 3), "{skips:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn more_products_at_one_instant_than_the_skip_cap_fail_clearly() {
    let h = harness(50).await;
    let date = day("2024-04-04");
    let published = at("2024-04-04T08:00:00Z");
    let acquired = at("2024-04-03T08:00:00Z");
    h.stub.add_products((0..200).map(|n| {
        fixtures::odata_product(
            &format!("same-{n:03}"),
            &fixtures::product_name("S2A", "54PXA", acquired, n),
            published,
            acquired,
        )
    }));
    h.stub.set_skip_cap(100);
    let mut deps = h.deps;
    deps.search.options.max_skip = 100;
    let error = deps
        .fetch(date, None, Deadline::none())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("more than 100 products were published at 2024-04-04T08:00:00.000000Z"),
        "{error}"
    );
    // What was examined before stays recorded.
    assert_eq!(count_row(&h.db, date, "S2A+S2B+S2C").await.1, 100);
    let _ = h.queue.drain(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_outages_and_timeouts_are_survived() {
    let h = harness(300).await;
    let date = day("2024-04-05");
    let products = synthetic_day("flaky", date, 1_000, &tiles(4));
    let expected = allowed_ids(&products);
    h.stub.add_products(products);
    let mut deps = h.deps;
    deps.search.options.request_timeout = Duration::from_millis(500);
    h.stub.inject([
        Fault::TooManyRequests {
            retry_after: Some("1".into()),
        },
        Fault::Unavailable,
        Fault::Pass,
        Fault::Slow(Duration::from_secs(2)),
        Fault::TooManyRequests { retry_after: None },
        Fault::Status(502, "Bad Gateway".into()),
    ]);
    let started = std::time::Instant::now();
    let summary = deps
        .fetch(date, Some(Platform::S2A), Deadline::none())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert!(summary.completed);
    // S2A is every third product.
    let s2a: BTreeSet<String> = expected
        .into_iter()
        .filter(|id| id.trim_start_matches("flaky-").parse::<usize>().unwrap() % 3 == 0)
        .collect();
    assert_eq!(recorded_ids(&h.db).await, s2a);
    assert_eq!(summary.requests as usize, h.stub.requests());
    assert_eq!(summary.requests, 2 + 5);
    assert_eq!(count_row(&h.db, date, "S2A").await, (334, 334, true));
    assert_eq!(drained_ids(&h.queue).await, s2a);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbled_page_or_a_refusal_fails_the_run_and_a_rerun_completes_it() {
    let h = harness(200).await;
    let date = day("2024-04-06");
    let products = synthetic_day("garbled", date, 1_000, &tiles(4));
    let expected = allowed_ids(&products);
    h.stub.add_products(products);

    h.stub.inject([Fault::Pass, Fault::Garbled]);
    let error = invoke(
        &h.deps,
        json!({"query_date_platform": ["2024-04-06", "S2B"]}),
        Duration::from_secs(300),
    )
    .await
    .unwrap_err();
    assert!(
        error.contains("fetching 2024-04-06 S2B: catalogue page is not the expected JSON"),
        "{error}"
    );
    assert!(error.contains(" after 1 attempt in "), "{error}");
    let s2b_total = 333;
    let (_, fetched, completed) = count_row(&h.db, date, "S2B").await;
    assert_eq!(
        (fetched, completed),
        (200, false),
        "the page before the fault is recorded"
    );

    let skip_error = fixtures::odata_skip_error().to_string();
    h.stub.inject([Fault::Status(422, skip_error)]);
    let error = invoke(
        &h.deps,
        json!({"query_date_platform": ["2024-04-06", "S2B"]}),
        Duration::from_secs(300),
    )
    .await
    .unwrap_err();
    assert!(
        error.contains(
            "answered HTTP 422: query.$skip: Input should be less than or equal to 10000"
        ),
        "{error}"
    );

    let done = invoke(
        &h.deps,
        json!({"query_date_platform": ["2024-04-06", "S2B"]}),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(
        done,
        json!({"query_date_platform": ["2024-04-06", "S2B"], "completed": true})
    );
    let s2b: BTreeSet<String> = expected
        .into_iter()
        .filter(|id| id.trim_start_matches("garbled-").parse::<usize>().unwrap() % 3 == 1)
        .collect();
    assert_eq!(recorded_ids(&h.db).await, s2b);
    assert_eq!(
        count_row(&h.db, date, "S2B").await,
        (s2b_total, s2b_total, true)
    );
    assert_eq!(drained_ids(&h.queue).await, s2b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_product_published_in_the_last_half_second_belongs_to_its_day() {
    let h = harness(100).await;
    let acquired = at("2024-04-07T10:00:00Z");
    let late = fixtures::odata_product(
        "late",
        &fixtures::product_name("S2A", "54PXA", acquired, 1),
        at("2024-04-07T23:59:59.5Z"),
        acquired,
    );
    let midnight = fixtures::odata_product(
        "midnight",
        &fixtures::product_name("S2A", "28PHQ", acquired, 2),
        at("2024-04-08T00:00:00Z"),
        acquired,
    );
    h.stub.add_products([late, midnight]);

    let first = h
        .deps
        .fetch(day("2024-04-07"), None, Deadline::none())
        .await
        .unwrap();
    assert_eq!((first.new_granules, first.available_links), (1, 1));
    assert_eq!(
        drained_ids(&h.queue).await,
        BTreeSet::from(["late".to_owned()])
    );
    let second = h
        .deps
        .fetch(day("2024-04-08"), None, Deadline::none())
        .await
        .unwrap();
    assert_eq!(
        (
            second.new_granules,
            second.available_links,
            second.known_granules
        ),
        (1, 1, 0)
    );
    assert_eq!(
        drained_ids(&h.queue).await,
        BTreeSet::from(["midnight".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handler_answers_every_event_shape() {
    let h = harness(100).await;
    let date = day("2024-04-09");
    h.stub
        .add_products(synthetic_day("handler", date, 30, &tiles(2)));

    let answer = invoke(
        &h.deps,
        json!({"query_date_platform": ["2024-04-09", "S2C"]}),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(
        answer,
        json!({"query_date_platform": ["2024-04-09", "S2C"], "completed": true})
    );
    assert_eq!(count_row(&h.db, date, "S2C").await, (10, 10, true));

    let pairs = invoke(
        &h.deps,
        json!({"date_platform_pairs": {"days": 2, "platforms": ["S2A", "S2B"]}}),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    // The days before today, as the Python system's date generator gives them.
    let yesterday = Utc::now().date_naive().pred_opt().unwrap();
    let before = yesterday.pred_opt().unwrap();
    assert_eq!(
        pairs,
        json!({"query_date_platforms": [
            {"query_date_platform": [yesterday.to_string(), "S2A"]},
            {"query_date_platform": [yesterday.to_string(), "S2B"]},
            {"query_date_platform": [before.to_string(), "S2A"]},
            {"query_date_platform": [before.to_string(), "S2B"]},
        ]})
    );
    // A backfill names its end (exclusive).
    let backfill = invoke(
        &h.deps,
        json!({"date_platform_pairs": {"days": 1, "end": "2024-04-02", "platforms": ["S2C"]}}),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(
        backfill,
        json!({"query_date_platforms": [{"query_date_platform": ["2024-04-01", "S2C"]}]})
    );

    let error = invoke(
        &h.deps,
        json!({"query_date_platform": ["2024-04-09", "S2X"]}),
        Duration::from_secs(300),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error,
        r#"invalid event: query_date_platform[1]: unknown platform "S2X": expected S2A, S2B or S2C"#
    );
    let diagnostic: lambda_runtime::Diagnostic = handle(
        LambdaEvent::new(
            json!({"query_date": "yesterday"}),
            context(Duration::from_secs(60)),
        ),
        &h.deps,
    )
    .await
    .unwrap_err()
    .into();
    assert_eq!(diagnostic.error_type, "InvalidEvent");

    // CloudFormation: Create and Update apply the schema, Delete leaves it.
    let empty = TestDatabase::empty().await;
    let mut deps = h.deps.clone();
    deps.handoff = Handoff::new(
        GranuleStore::new(empty.pool.clone()),
        h.queue.sqs_queue(),
        Duration::from_secs(2),
    );
    let custom = |request: &str| {
        json!({
            "RequestType": request,
            "ServiceToken": "arn:aws:lambda:us-west-2:123456789012:function:provider",
            "ResponseURL": "https://example.invalid/response",
            "StackId": "arn:aws:cloudformation:us-west-2:123456789012:stack/hls/1",
            "RequestId": "1",
            "LogicalResourceId": "SchemaMigrations",
            "ResourceType": "Custom::HlsLinkFetcherSchemaMigrations",
            "ResourceProperties": {"LinkFetcherCodeHash": "abc"}
        })
    };
    let tables = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('granule', 'granule_count', 'status')")
            .fetch_one(&empty.pool)
            .await
            .unwrap()
    };
    assert_eq!(
        invoke(&deps, custom("Delete"), Duration::from_secs(60))
            .await
            .unwrap(),
        json!({"PhysicalResourceId": "hls-link-fetcher-schema"})
    );
    assert_eq!(tables().await, 0);
    assert_eq!(
        invoke(&deps, custom("Create"), Duration::from_secs(60))
            .await
            .unwrap(),
        json!({"PhysicalResourceId": "hls-link-fetcher-schema"})
    );
    assert_eq!(tables().await, 3);
    assert_eq!(
        invoke(&deps, custom("Update"), Duration::from_secs(60))
            .await
            .unwrap(),
        json!({"PhysicalResourceId": "hls-link-fetcher-schema"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_product_that_appears_late_behind_recent_ones_is_found_by_the_next_run() {
    let h = harness(100).await;
    let now = Utc::now();
    let today = now.date_naive();
    // Published in the last few minutes (never before today's midnight).
    let base = (now - chrono::Duration::minutes(3))
        .max(today.and_hms_opt(0, 0, 0).unwrap().and_utc() + chrono::Duration::milliseconds(1));
    let acquired = now - chrono::Duration::days(1);
    let product = |id: &str, serial: u32, published: DateTime<Utc>| {
        fixtures::odata_product(
            id,
            &fixtures::product_name("S2A", "54PXA", acquired, serial),
            published,
            acquired,
        )
    };
    h.stub.add_products((0..5).map(|n| {
        product(
            &format!("recent-{n}"),
            n,
            base + chrono::Duration::seconds(n.into()),
        )
    }));
    let event = json!({"query_date_platform": [today.to_string(), "S2A"]});

    let first = invoke(&h.deps, event.clone(), Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(first["completed"], true);
    assert_eq!(drained_ids(&h.queue).await.len(), 5);

    // CDSE makes a product visible after others published later than it.
    h.stub.add_products([product(
        "late",
        9,
        base + chrono::Duration::milliseconds(500),
    )]);
    let second = invoke(&h.deps, event, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(second["completed"], true);
    assert_eq!(
        drained_ids(&h.queue).await,
        BTreeSet::from(["late".to_owned()])
    );
    assert_eq!(recorded_ids(&h.db).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_downloader_that_looks_each_row_up_at_once_finds_every_row() {
    let h = harness(100).await;
    let date = day("2024-04-05");
    // Six pages, half on allowed tiles: 300 messages while the downloader consumes.
    let products = synthetic_day("downloader", date, 600, &tiles(2));
    let expected = allowed_ids(&products);
    h.stub.add_products(products);
    let downloader = Downloader::start(&h.queue, &h.db.pool);

    let summary = h.deps.fetch(date, None, Deadline::none()).await.unwrap();
    assert!(summary.completed);
    assert_eq!(summary.pages, 7);
    let lookups = downloader.finish().await;
    assert!(
        lookups.not_found.is_empty(),
        "{} message(s) arrived before their row: {:?}",
        lookups.not_found.len(),
        lookups.not_found
    );
    assert_eq!(lookups.found, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_that_would_answer_after_the_stop_point_is_not_waited_for_nor_recorded() {
    let h = harness(100).await;
    let date = day("2024-04-06");
    let products = synthetic_day("stop", date, 300, &tiles(1));
    let all = allowed_ids(&products);
    h.stub.add_products(products);
    // Deadline in 3 s, margin 1 s: the stop point is 2 s away. The second page
    // would answer after 3 s.
    h.stub
        .inject([Fault::Pass, Fault::Slow(Duration::from_secs(3))]);
    let started = std::time::Instant::now();
    let answer = invoke(
        &h.deps,
        json!({"query_date": "2024-04-06"}),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(
        answer,
        json!({"query_date": "2024-04-06", "completed": false})
    );
    assert!(
        took < Duration::from_millis(2_600),
        "a catalogue attempt ran past the stop point: {took:?}"
    );
    // Only the first page is recorded, and its progress is saved.
    let recorded = recorded_ids(&h.db).await;
    assert_eq!(recorded.len(), 100);
    assert!(recorded.is_subset(&all));
    let (_, fetched, completed) = count_row(&h.db, date, "S2A+S2B+S2C").await;
    assert_eq!((fetched, completed), (100, false));

    let again = invoke(
        &h.deps,
        json!({"query_date": "2024-04-06"}),
        Duration::from_secs(300),
    )
    .await
    .unwrap();
    assert_eq!(
        again,
        json!({"query_date": "2024-04-06", "completed": true})
    );
    assert_eq!(recorded_ids(&h.db).await, all);
    let drained = h.queue.drain(Duration::from_millis(500)).await;
    assert_eq!(drained.by_id.into_keys().collect::<BTreeSet<_>>(), all);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_settle_window_counts_from_when_the_page_was_requested() {
    let mut h = harness(100).await;
    h.deps.search.options.settle_time = Duration::from_secs(2);
    let now = Utc::now();
    let today = now.date_naive();
    let midnight = today.and_hms_opt(0, 0, 0).unwrap().and_utc();
    let acquired = now - chrono::Duration::days(1);
    let product = |id: &str, serial: u32, published: DateTime<Utc>| {
        fixtures::odata_product(
            id,
            &fixtures::product_name("S2A", "54PXA", acquired, serial),
            published,
            acquired,
        )
    };
    // One long settled, one published just before the request. The page takes 4 s
    // to answer: measured from the answer, the second would look settled too.
    h.stub.add_products([
        product(
            "settled",
            1,
            (now - chrono::Duration::minutes(10)).max(midnight),
        ),
        product(
            "recent",
            2,
            (now - chrono::Duration::milliseconds(500)).max(midnight),
        ),
    ]);
    h.stub.set_page_delay(Duration::from_secs(4));
    let summary = h
        .deps
        .fetch(today, Some(Platform::S2A), Deadline::none())
        .await
        .unwrap();
    assert!(summary.completed);
    // Both recorded and queued; the cursor stops before the recent one, so the next
    // run reads it again (and anything that appears late behind it).
    assert_eq!(summary.new_granules, 2);
    assert_eq!(summary.examined, 1, "{summary:?}");
    assert_eq!(drained_ids(&h.queue).await.len(), 2);
}
