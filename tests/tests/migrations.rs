//! Schema migrations from the Python system's older databases.

use chrono::NaiveDate;
use hls_core::GranuleStore;
use hls_core::adapters::store::MIGRATOR;
use integration_tests::TestDatabase;
use sqlx::PgPool;

/// The tables as the Python system's first Alembic revision (1c8c38951d47)
/// created them: `granule_count` keyed by date alone, with no platform.
const PYTHON_FIRST_SCHEMA: &str = r#"
CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version VALUES ('1c8c38951d47');
CREATE TABLE granule (
    id VARCHAR(256) NOT NULL PRIMARY KEY,
    filename VARCHAR(256) NOT NULL,
    tileid VARCHAR(5) NOT NULL,
    size BIGINT NOT NULL,
    beginposition TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    endposition TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    ingestiondate TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    download_url VARCHAR(256) NOT NULL,
    checksum VARCHAR(256) DEFAULT '' NOT NULL,
    downloaded BOOLEAN DEFAULT false NOT NULL,
    download_retries SMALLINT DEFAULT '0' NOT NULL,
    expired BOOLEAN DEFAULT false NOT NULL
);
CREATE TABLE granule_count (
    date DATE NOT NULL,
    available_links BIGINT NOT NULL,
    fetched_links BIGINT NOT NULL,
    last_fetched_time TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    PRIMARY KEY (date)
);
CREATE TABLE status (key_name VARCHAR(256) NOT NULL PRIMARY KEY, value VARCHAR(256) NOT NULL);
INSERT INTO granule_count VALUES
    ('2024-04-01', 1200, 1100, '2024-04-01 23:00:00'),
    ('2024-03-31', 900, 900, '2024-04-01 01:00:00.123456');
"#;

const SECOND_SCHEMA_MIGRATION: &str =
    include_str!("../../crates/core/migrations/20261130000000_python_second_schema.sql");

async fn primary_key(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) ON true \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indrelid = 'granule_count'::regclass AND i.indisprimary ORDER BY k.position",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn granule_counts(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT row_to_json(c)::text FROM (SELECT date, platform, available_links, fetched_links, \
                last_fetched_time FROM granule_count ORDER BY date, platform) c",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_bring_the_python_first_schema_to_per_platform_counts() {
    let db = TestDatabase::empty().await;
    sqlx::raw_sql(PYTHON_FIRST_SCHEMA)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(primary_key(&db.pool).await, ["date"]);

    MIGRATOR
        .run(&db.pool)
        .await
        .expect("migrations apply to the Python first schema");
    assert_eq!(primary_key(&db.pool).await, ["date", "platform"]);
    let after = granule_counts(&db.pool).await;
    assert_eq!(
        after,
        [
            r#"{"date":"2024-03-31","platform":"S2A+S2B","available_links":900,"fetched_links":900,"last_fetched_time":"2024-04-01T01:00:00.123456"}"#,
            r#"{"date":"2024-04-01","platform":"S2A+S2B","available_links":1200,"fetched_links":1100,"last_fetched_time":"2024-04-01T23:00:00"}"#,
        ]
    );

    // Again: the migrator has nothing left to do, and the migration itself
    // changes nothing when run a second time.
    MIGRATOR.run(&db.pool).await.unwrap();
    sqlx::raw_sql(SECOND_SCHEMA_MIGRATION)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(primary_key(&db.pool).await, ["date", "platform"]);
    assert_eq!(granule_counts(&db.pool).await, after);

    // A single-platform row for a day already counted for both platforms.
    let day = NaiveDate::from_ymd_opt(2024, 4, 1).unwrap();
    let count = GranuleStore::new(db.pool.clone())
        .get_or_create_granule_count(day, "S2A")
        .await
        .expect("a per-platform row beside the Python one");
    assert_eq!(
        (
            count.platform.as_str(),
            count.available_links,
            count.fetched_links
        ),
        ("S2A", 0, 0)
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM granule_count WHERE date = $1")
        .bind(day)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn the_second_schema_migration_leaves_a_current_database_alone() {
    let db = TestDatabase::migrated().await;
    let constraint = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT conname::text FROM pg_constraint \
             WHERE conrelid = 'granule_count'::regclass AND contype = 'p'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    assert_eq!(constraint().await, "granule_count_pkey");
    sqlx::raw_sql(SECOND_SCHEMA_MIGRATION)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(constraint().await, "granule_count_pkey");
    assert_eq!(primary_key(&db.pool).await, ["date", "platform"]);
}
