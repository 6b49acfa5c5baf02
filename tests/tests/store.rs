//! The foundation against real Postgres and an SQS-compatible server: schema
//! migrations, record-and-queue as one unit, the counters, the message format.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use hls_core::adapters::store::MIGRATOR;
use hls_core::{
    FetchCursor, FoundBy, Granule, GranuleStore, Handoff, ProductFields, RecordError, SqsQueue,
};
use integration_tests::{TestDatabase, TestQueue, fixtures};
use sqlx::PgPool;

const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// The record-and-queue unit on `pool` and `queue`, with a short lease.
fn handoff(pool: &PgPool, queue: SqsQueue) -> Handoff<SqsQueue> {
    Handoff::new(
        GranuleStore::new(pool.clone()),
        queue,
        Duration::from_secs(1),
    )
}

fn granule(n: usize) -> Granule {
    let acquired =
        Utc.with_ymd_and_hms(2024, 4, 1, 10, 0, 0).unwrap() + chrono::Duration::seconds(n as i64);
    let name = fixtures::product_name("S2B", "28PHQ", acquired, n as u32);
    let id = format!("00000000-0000-4000-8000-{n:012}");
    let url = format!("https://catalogue.dataspace.copernicus.eu/odata/v1/Products({id})/$value");
    let checksum = format!("{n:032x}");
    Granule::parse(ProductFields {
        id: &id,
        name: &name,
        tile_id_attribute: None,
        size: 1_000 + n as i64,
        begin_position: acquired,
        end_position: acquired,
        ingestion_date: acquired + chrono::Duration::hours(2),
        download_url: &url,
        checksum: n.is_multiple_of(2).then_some(checksum.as_str()),
    })
    .expect("valid granule")
}

async fn granule_ids(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM granule ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The tables as the Python system's SQLAlchemy/Alembic migrations created them.
const PYTHON_SCHEMA: &str = r#"
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version VALUES ('f3e2b1c9a7d6');
CREATE TABLE granule (
    id VARCHAR(256) NOT NULL PRIMARY KEY,
    filename VARCHAR(256) NOT NULL,
    tileid VARCHAR(5) NOT NULL,
    size BIGINT NOT NULL,
    beginposition TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    endposition TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    ingestiondate TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    download_url VARCHAR(256) NOT NULL,
    downloaded BOOLEAN NOT NULL DEFAULT false,
    checksum VARCHAR(256) NOT NULL DEFAULT '',
    expired BOOLEAN NOT NULL DEFAULT false,
    download_retries SMALLINT NOT NULL DEFAULT 0
);
CREATE TABLE granule_count (
    date DATE NOT NULL,
    available_links BIGINT NOT NULL,
    fetched_links BIGINT NOT NULL,
    last_fetched_time TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    platform VARCHAR NOT NULL DEFAULT 'S2A+S2B',
    PRIMARY KEY (date, platform)
);
CREATE TABLE status (key_name VARCHAR(256) NOT NULL PRIMARY KEY, value VARCHAR(256) NOT NULL);
INSERT INTO granule VALUES
    ('a1', 'S2A_MSIL1C_20240401T101011_N0510_R022_T32TQM_20240401T120000.SAFE', '32TQM', 123, '2024-04-01 10:10:11', '2024-04-01 10:10:11', '2024-04-01 13:00:00.123456', 'https://zipper.dataspace.copernicus.eu/odata/v1/Products(a1)/$value', true, 'abc', false, 2),
    ('a2', 'S2B_MSIL1C_20240401T101011_N0510_R022_T32TQN_20240401T120000.SAFE', '32TQN', 456, '2024-04-01 10:10:11', '2024-04-01 10:10:12', '2024-04-01 13:00:01', 'https://zipper.dataspace.copernicus.eu/odata/v1/Products(a2)/$value', false, '', true, 0);
INSERT INTO granule_count (date, available_links, fetched_links, last_fetched_time, platform) VALUES
    ('2024-04-01', 1200, 1100, '2024-04-01 23:00:00', 'S2A'),
    ('2024-03-31', 900, 900, '2024-04-01 01:00:00', 'S2A+S2B');
INSERT INTO status VALUES ('last_linked_fetched_time', '2024-04-01 23:00:00.000001');
"#;

/// Every row of the Python system's tables, in the Python system's columns.
async fn python_rows(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT row_to_json(g)::text FROM (SELECT id, filename, tileid, size, beginposition, endposition, \
                ingestiondate, download_url, downloaded, checksum, expired, download_retries FROM granule ORDER BY id) g \
         UNION ALL SELECT row_to_json(c)::text FROM (SELECT date, platform, available_links, fetched_links, \
                last_fetched_time FROM granule_count ORDER BY date, platform) c \
         UNION ALL SELECT row_to_json(s)::text FROM (SELECT key_name, value FROM status ORDER BY key_name) s",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn column_types(pool: &PgPool, table: &str) -> Vec<(String, String, String, Option<i32>)> {
    sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable::text, character_maximum_length \
         FROM information_schema.columns WHERE table_name = $1 ORDER BY column_name",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_create_the_download_service_schema_on_an_empty_database() {
    let db = TestDatabase::migrated().await;
    let granule = column_types(&db.pool, "granule").await;
    let expect = |name: &str, ty: &str, len: Option<i32>| {
        assert!(
            granule
                .iter()
                .any(|(n, t, nullable, l)| n == name && t == ty && nullable == "NO" && *l == len),
            "granule.{name} should be {ty} not null ({len:?}); got {granule:?}"
        );
    };
    expect("id", "character varying", Some(256));
    expect("filename", "character varying", Some(256));
    expect("tileid", "character varying", Some(5));
    expect("size", "bigint", None);
    expect("beginposition", "timestamp without time zone", None);
    expect("endposition", "timestamp without time zone", None);
    expect("ingestiondate", "timestamp without time zone", None);
    expect("download_url", "character varying", Some(256));
    expect("checksum", "character varying", Some(256));
    expect("downloaded", "boolean", None);
    expect("download_retries", "smallint", None);
    expect("expired", "boolean", None);
    assert_eq!(granule.len(), 12);

    let count = column_types(&db.pool, "granule_count").await;
    for (name, ty) in [
        ("date", "date"),
        ("platform", "character varying"),
        ("available_links", "bigint"),
        ("fetched_links", "bigint"),
        ("last_fetched_time", "timestamp without time zone"),
    ] {
        assert!(
            count
                .iter()
                .any(|(n, t, nullable, _)| n == name && t == ty && nullable == "NO"),
            "{name}: {count:?}"
        );
    }
    // Columns added for the Rust fetcher must be nullable or defaulted, so the Python service can insert rows.
    let added_without_default: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'granule_count' \
         AND column_name NOT IN ('date','platform','available_links','fetched_links','last_fetched_time') \
         AND is_nullable = 'NO' AND column_default IS NULL",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        added_without_default.is_empty(),
        "{added_without_default:?}"
    );
    let primary_key: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = 'granule_count'::regclass AND i.indisprimary ORDER BY a.attname",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(primary_key, ["date", "platform"]);
    assert_eq!(column_types(&db.pool, "status").await.len(), 2);

    // The Python download service inserts with only its own columns.
    sqlx::query(
        "INSERT INTO granule_count (date, available_links, fetched_links, last_fetched_time) VALUES ('2024-01-01', 1, 1, now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let platform: String = sqlx::query_scalar("SELECT platform FROM granule_count")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(platform, "S2A+S2B");
}

#[tokio::test]
async fn migrations_adopt_a_python_database_without_changing_its_rows() {
    let db = TestDatabase::empty().await;
    sqlx::raw_sql(PYTHON_SCHEMA)
        .execute(&db.pool)
        .await
        .unwrap();
    let before = python_rows(&db.pool).await;
    assert_eq!(before.len(), 5);

    MIGRATOR
        .run(&db.pool)
        .await
        .expect("migrations apply to the Python database");
    assert_eq!(python_rows(&db.pool).await, before);
    // Applying them again is a no-op.
    MIGRATOR.run(&db.pool).await.unwrap();
    assert_eq!(python_rows(&db.pool).await, before);

    // The adopted database works with the new store.
    let store = GranuleStore::new(db.pool.clone());
    let count = store
        .get_or_create_granule_count(NaiveDate::from_ymd_opt(2024, 4, 1).unwrap(), "S2A")
        .await
        .unwrap();
    assert_eq!(
        (
            count.available_links,
            count.fetched_links,
            count.cursor,
            count.completed
        ),
        (1200, 1100, None, false)
    );
}

#[tokio::test]
async fn migrations_started_by_two_processes_at_once_both_succeed() {
    let db = TestDatabase::empty().await;
    let (a, b) = (db.options.clone(), db.options.clone());
    // Separate pools stand for separate processes; sqlx serialises them with an advisory lock.
    let run = |options: sqlx::postgres::PgConnectOptions| async move {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        MIGRATOR.run(&pool).await
    };
    let (ra, rb) = tokio::join!(run(a), run(b));
    ra.expect("first migrator");
    rb.expect("second migrator");
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATOR.iter().count() as i64);
}

#[tokio::test]
async fn recording_the_same_batch_twice_queues_nothing_the_second_time() {
    let db = TestDatabase::migrated().await;
    let queue = TestQueue::new().await;
    let batch: Vec<Granule> = (0..25).map(granule).collect();

    let first = handoff(&db.pool, queue.sqs_queue())
        .record_and_queue(&batch, FoundBy::Poll)
        .await
        .unwrap();
    assert_eq!(first.len(), 25);
    let second = handoff(&db.pool, queue.sqs_queue())
        .record_and_queue(&batch, FoundBy::Poll)
        .await
        .unwrap();
    assert!(
        second.is_empty(),
        "second recording returned {} new",
        second.len()
    );

    let drained = queue.drain(DRAIN_IDLE).await;
    assert_eq!(drained.by_id.len(), 25);
    assert_eq!(drained.deliveries, 25, "a message was sent twice");
    assert_eq!(granule_ids(&db.pool).await.len(), 25);
}

#[tokio::test]
async fn duplicates_inside_one_batch_are_recorded_and_queued_once() {
    let db = TestDatabase::migrated().await;
    let queue = TestQueue::new().await;
    let batch = vec![granule(1), granule(2), granule(1)];
    let new = handoff(&db.pool, queue.sqs_queue())
        .record_and_queue(&batch, FoundBy::Poll)
        .await
        .unwrap();
    assert_eq!(new.len(), 2);
    assert_eq!(queue.drain(DRAIN_IDLE).await.deliveries, 2);
}

#[tokio::test]
async fn concurrent_overlapping_batches_give_one_row_and_one_message_per_id() {
    let db = TestDatabase::migrated().await;
    let queue = TestQueue::new().await;
    let shared = handoff(&db.pool, queue.sqs_queue());

    // Eight tasks; task k records ids k*10 .. k*10+40, so each id is in up to four batches,
    // in a different order in each batch (reversed for odd tasks).
    let tasks = (0..8).map(|task| {
        let unit = shared.clone();
        tokio::spawn(async move {
            let mut batch: Vec<Granule> = (task * 10..task * 10 + 40).map(granule).collect();
            if task % 2 == 1 {
                batch.reverse();
            }
            unit.record_and_queue(&batch, FoundBy::Poll).await.unwrap()
        })
    });
    let results = futures::future::join_all(tasks).await;
    let mut returned_new = Vec::new();
    for result in results {
        returned_new.extend(result.unwrap().into_iter().map(|g| g.id));
    }
    let unique: HashSet<&String> = returned_new.iter().collect();
    assert_eq!(
        returned_new.len(),
        110,
        "each id is new for exactly one task"
    );
    assert_eq!(unique.len(), 110);

    let drained = queue.drain(DRAIN_IDLE).await;
    assert_eq!(drained.by_id.len(), 110);
    assert_eq!(granule_ids(&db.pool).await.len(), 110);
}

#[tokio::test]
async fn a_queue_failure_leaves_the_rows_owed_and_the_next_sender_sends_each_once() {
    let db = TestDatabase::migrated().await;
    let queue = TestQueue::new().await;
    let missing = SqsQueue::new(queue.client.clone(), format!("{}-missing", queue.url), 4);
    let batch: Vec<Granule> = (0..15).map(granule).collect();

    let error = handoff(&db.pool, missing)
        .record_and_queue(&batch, FoundBy::Poll)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            RecordError::Unsent {
                messages: 15,
                unsent: 15,
                ..
            }
        ),
        "{error}"
    );
    // Recorded before any send, and owed; the failed batches were released at once.
    assert_eq!(granule_ids(&db.pool).await.len(), 15);
    let store = GranuleStore::new(db.pool.clone());
    assert_eq!(store.owed_count().await.unwrap(), 15);

    // Recording again finds them known and sends nothing; the owed ones go with send_owed.
    let working = handoff(&db.pool, queue.sqs_queue());
    let again = working
        .record_and_queue(&batch, FoundBy::Poll)
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(working.send_owed(None).await.unwrap(), 15);
    assert_eq!(working.send_owed(None).await.unwrap(), 0);
    assert_eq!(store.owed_count().await.unwrap(), 0);
    let drained = queue.drain(DRAIN_IDLE).await;
    assert_eq!(drained.by_id.len(), 15);
    assert_eq!(drained.deliveries, 15, "an owed message was sent twice");
}

#[tokio::test]
async fn an_owed_message_held_by_a_live_sender_is_not_claimed_by_another() {
    let db = TestDatabase::migrated().await;
    let store = GranuleStore::new(db.pool.clone());
    let batch: Vec<Granule> = (0..30).map(granule).collect();
    let refs: Vec<&Granule> = batch.iter().collect();
    // Recorded by a sender that then died before sending: owed, leased for a minute.
    let new = store
        .record_new(&refs, FoundBy::Poll, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(new.len(), 30);
    assert!(
        store
            .claim_owed(100, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    // Once its lease has run out, two senders at once split the rows between them.
    sqlx::query("UPDATE granule_outbox SET lease_until = now() - interval '1 second'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        store.claim_owed(20, Duration::from_secs(60)),
        store.claim_owed(20, Duration::from_secs(60))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 30);
    let ids: HashSet<&str> = a.iter().chain(&b).map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 30, "a row was claimed twice");
    // The claim carries the message as the row holds it.
    let first = a.iter().chain(&b).find(|m| m.id == batch[2].id).unwrap();
    assert_eq!(first.filename, batch[2].filename);
    assert_eq!(first.checksum, batch[2].checksum.clone().unwrap());
}

#[tokio::test]
async fn messages_received_from_the_queue_have_exactly_the_download_service_fields() {
    let db = TestDatabase::migrated().await;
    let queue = TestQueue::new().await;
    let with_checksum = granule(2);
    let without_checksum = granule(3);
    assert!(without_checksum.checksum.is_none());
    handoff(&db.pool, queue.sqs_queue())
        .record_and_queue(
            &[with_checksum.clone(), without_checksum.clone()],
            FoundBy::Poll,
        )
        .await
        .unwrap();

    let drained = queue.drain(DRAIN_IDLE).await;
    assert_eq!(
        drained.by_id[&with_checksum.id],
        serde_json::json!({
            "id": with_checksum.id,
            "filename": with_checksum.filename,
            "download_url": with_checksum.download_url,
            "checksum": with_checksum.checksum.clone().unwrap(),
        })
    );
    assert_eq!(
        drained.by_id[&without_checksum.id],
        serde_json::json!({
            "id": without_checksum.id,
            "filename": without_checksum.filename,
            "download_url": without_checksum.download_url,
        })
    );

    // The row holds the same values, in UTC, and '' for an unknown checksum.
    let (tileid, begin, checksum, downloaded): (String, chrono::NaiveDateTime, String, bool) =
        sqlx::query_as(
            "SELECT tileid, beginposition, checksum, downloaded FROM granule WHERE id = $1",
        )
        .bind(&without_checksum.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tileid, "28PHQ");
    assert_eq!(begin.and_utc(), without_checksum.begin_position);
    assert_eq!(checksum, "");
    assert!(!downloaded);
}

#[tokio::test]
async fn granule_count_is_created_once_and_fetched_links_add_up_under_concurrency() {
    let db = TestDatabase::migrated().await;
    let store = GranuleStore::new(db.pool.clone());
    let day = NaiveDate::from_ymd_opt(2024, 4, 1).unwrap();

    let creations = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.get_or_create_granule_count(day, "S2B").await.unwrap() })
    });
    for created in futures::future::join_all(creations).await {
        let created = created.unwrap();
        assert_eq!(
            (
                created.available_links,
                created.fetched_links,
                created.completed
            ),
            (0, 0, false)
        );
    }

    store.set_available_links(day, "S2B", 4321).await.unwrap();
    let cursor = FetchCursor {
        publication_date: Utc.with_ymd_and_hms(2024, 4, 1, 12, 0, 0).unwrap(),
        skip: 3,
    };
    let adds = (0..20).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .add_fetched_links(day, "S2B", 7, Some(cursor), false)
                .await
                .unwrap()
        })
    });
    futures::future::join_all(adds)
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
    store
        .add_fetched_links(day, "S2B", 1, Some(cursor), true)
        .await
        .unwrap();

    let count = store.get_or_create_granule_count(day, "S2B").await.unwrap();
    assert_eq!(count.available_links, 4321);
    assert_eq!(count.fetched_links, 141);
    assert_eq!(count.cursor, Some(cursor));
    assert!(count.completed);
    // Other platforms of the same day are separate rows.
    assert_eq!(
        store
            .get_or_create_granule_count(day, "S2A")
            .await
            .unwrap()
            .fetched_links,
        0
    );
}

#[tokio::test]
async fn last_linked_fetched_time_is_upserted_in_the_python_format() {
    let db = TestDatabase::migrated().await;
    let store = GranuleStore::new(db.pool.clone());
    let first: DateTime<Utc> = Utc.with_ymd_and_hms(2024, 4, 1, 12, 0, 0).unwrap();
    store.set_last_linked_fetched_time(first).await.unwrap();
    store
        .set_last_linked_fetched_time(first + chrono::Duration::microseconds(1_500_001))
        .await
        .unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT key_name, value FROM status")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        rows,
        [(
            "last_linked_fetched_time".to_owned(),
            "2024-04-01 12:00:01.500001".to_owned()
        )]
    );
}

#[test]
fn tile_ids_parse_from_the_real_product_names() {
    let page = fixtures::odata_page();
    let names: Vec<&str> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    let tiles: Vec<Option<&str>> = names
        .iter()
        .map(|n| hls_core::domain::granule::tile_id_from_name(n))
        .collect();
    assert_eq!(tiles, [Some("54PXA"), Some("55PBR")]);
    // Each agrees with the product's own tileId attribute.
    for product in page["value"].as_array().unwrap() {
        let attribute = product["Attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["Name"] == "tileId")
            .unwrap();
        assert_eq!(
            hls_core::domain::granule::tile_id_from_name(product["Name"].as_str().unwrap()),
            attribute["Value"].as_str()
        );
    }
    let push = fixtures::push_created();
    assert_eq!(
        hls_core::domain::granule::tile_id_from_name(push["ProductName"].as_str().unwrap()),
        Some("28PHQ")
    );
    // Sentinel-1 names carry no MGRS tile.
    let s1 = fixtures::push_modified();
    assert_eq!(
        hls_core::domain::granule::tile_id_from_name(s1["ProductName"].as_str().unwrap()),
        None
    );
}
