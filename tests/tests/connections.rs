//! Every pooled connection carries Postgres timeouts, so a request stuck behind
//! a lock fails in time to be retried instead of outliving its Lambda or API
//! Gateway deadline.

use std::time::{Duration, Instant};

use hls_core::config::PoolSettings;
use integration_tests::TestDatabase;

const SETTINGS: PoolSettings = PoolSettings {
    max_connections: 2,
    acquire_timeout: Duration::from_secs(5),
    lock_timeout: Duration::from_millis(300),
    statement_timeout: Duration::from_millis(2_000),
    idle_in_transaction_timeout: Duration::from_millis(30_000),
};

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned())
}

#[tokio::test]
async fn pooled_connections_carry_the_configured_timeouts() {
    let db = TestDatabase::migrated().await;
    let pool = SETTINGS.connect(db.options.clone()).await.unwrap();
    for (setting, value) in [
        ("lock_timeout", "300ms"),
        ("statement_timeout", "2s"),
        ("idle_in_transaction_session_timeout", "30s"),
    ] {
        let shown: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(shown, value, "{setting}");
    }
    // The lazy pool the functions use gets the same.
    let lazy = SETTINGS.connect_lazy(db.options.clone());
    let shown: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&lazy)
        .await
        .unwrap();
    assert_eq!(shown, "300ms");
}

#[tokio::test]
async fn an_update_blocked_by_a_row_lock_fails_after_the_lock_timeout() {
    let db = TestDatabase::migrated().await;
    sqlx::query("INSERT INTO status (key_name, value) VALUES ('last_linked_fetched_time', 'a')")
        .execute(&db.pool)
        .await
        .unwrap();
    // Another session (the harness's own pool, no timeouts) holds the row.
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("SELECT value FROM status WHERE key_name = 'last_linked_fetched_time' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();

    let pool = SETTINGS.connect(db.options.clone()).await.unwrap();
    let started = Instant::now();
    let blocked =
        sqlx::query("UPDATE status SET value = 'b' WHERE key_name = 'last_linked_fetched_time'")
            .execute(&pool);
    let error = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .expect("the update still waits for the lock after 5 s")
        .expect_err("the update must not wait for the lock");
    let waited = started.elapsed();
    assert_eq!(sqlstate(&error).as_deref(), Some("55P03"), "{error}"); // lock_not_available
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );

    // A statement running past `statement_timeout` is cancelled too.
    let started = Instant::now();
    let sleep = sqlx::query("SELECT pg_sleep(10)").execute(&pool);
    let error = tokio::time::timeout(Duration::from_secs(5), sleep)
        .await
        .expect("the statement still runs after 5 s")
        .expect_err("the statement must be cancelled");
    assert_eq!(sqlstate(&error).as_deref(), Some("57014"), "{error}"); // query_canceled
    assert!(started.elapsed() < Duration::from_secs(5));

    holder.rollback().await.unwrap();
    sqlx::query("UPDATE status SET value = 'b' WHERE key_name = 'last_linked_fetched_time'")
        .execute(&pool)
        .await
        .expect("with the lock released the update succeeds");
}

#[tokio::test]
async fn migrations_wait_for_locks_whatever_the_request_timeouts() {
    // A database with tables and migrations still to apply (ALTER TABLE needs its lock).
    let db = TestDatabase::empty().await;
    sqlx::raw_sql(
        "CREATE TABLE granule_count (date date PRIMARY KEY, available_links bigint NOT NULL, \
         fetched_links bigint NOT NULL, last_fetched_time timestamp NOT NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE granule_count IN ACCESS SHARE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        holder.commit().await.unwrap();
    });
    // The functions' pool: a 300 ms lock timeout for requests.
    let store = hls_core::GranuleStore::new(SETTINGS.connect(db.options.clone()).await.unwrap());
    store
        .migrate()
        .await
        .expect("the migration waits for the lock instead of timing out");
    release.await.unwrap();
    // The pool's own connections keep their timeouts.
    let shown: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(shown, "300ms");
}
