//! The granule store on Postgres, with the schema the download service reads.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use crate::granule::Granule;
use crate::queue::{DownloadQueue, QueueError};

/// The embedded schema migrations; `run` takes Postgres's advisory lock, so
/// two processes starting at once apply them one after the other.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The `status` row the Python system kept for monitoring.
pub const LAST_LINKED_FETCHED_TIME: &str = "last_linked_fetched_time";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// One day (and platform) of polling: a `granule_count` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GranuleCount {
    pub date: NaiveDate,
    pub platform: String,
    pub available_links: i64,
    pub fetched_links: i64,
    pub last_fetched_time: DateTime<Utc>,
    /// Where the last invocation stopped, if it saved a position.
    pub cursor: Option<FetchCursor>,
    pub completed: bool,
}

/// A position in a day ordered by publication time: the products published
/// before `publication_date`, and the first `skip` published exactly then,
/// were already examined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchCursor {
    pub publication_date: DateTime<Utc>,
    pub skip: i64,
}

#[derive(Debug, Clone)]
pub struct GranuleStore {
    pool: PgPool,
}

impl GranuleStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Records the granules not seen before and queues exactly those, as one unit:
    /// the rows commit only after SQS accepted every message, so a failure leaves
    /// nothing recorded and a retry records and queues them again. Returns the
    /// granules that were new.
    ///
    /// Concurrent callers with overlapping batches are safe: a second insert of an
    /// id waits on the first transaction and then skips the row if it committed.
    pub async fn record_and_queue<Q: DownloadQueue>(
        &self,
        granules: &[Granule],
        queue: &Q,
    ) -> Result<Vec<Granule>, RecordError> {
        // Sorted ids give every transaction the same lock order (no deadlocks);
        // duplicates inside one batch are recorded once.
        let mut batch: Vec<&Granule> = granules.iter().collect();
        batch.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        batch.dedup_by(|a, b| a.id == b.id);
        if batch.is_empty() {
            return Ok(Vec::new());
        }

        let mut tx = self.pool.begin().await?;
        let inserted = insert_new_granules(&mut *tx, &batch).await?;

        let inserted: HashSet<String> = inserted.into_iter().collect();
        let new: Vec<Granule> = batch
            .into_iter()
            .filter(|g| inserted.contains(&g.id))
            .cloned()
            .collect();
        if !new.is_empty()
            && let Err(error) = queue.send(&new).await
        {
            // Dropping the transaction would roll back too; say it explicitly.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(%rollback, "rollback after queue failure failed");
            }
            return Err(error.into());
        }
        tx.commit().await?;
        Ok(new)
    }

    /// The `granule_count` row of a day and platform, created with zero counts if absent.
    pub async fn get_or_create_granule_count(
        &self,
        date: NaiveDate,
        platform: &str,
    ) -> Result<GranuleCount, StoreError> {
        sqlx::query(
            "INSERT INTO granule_count (date, platform, available_links, fetched_links, last_fetched_time) \
             VALUES ($1, $2, 0, 0, $3) ON CONFLICT (date, platform) DO NOTHING",
        )
        .bind(date)
        .bind(platform)
        .bind(naive(Utc::now()))
        .execute(&self.pool)
        .await?;
        let row: (
            i64,
            i64,
            NaiveDateTime,
            Option<NaiveDateTime>,
            Option<i64>,
            bool,
        ) = sqlx::query_as(
            "SELECT available_links, fetched_links, last_fetched_time, cursor_publication_date, \
                    cursor_skip, completed \
             FROM granule_count WHERE date = $1 AND platform = $2",
        )
        .bind(date)
        .bind(platform)
        .fetch_one(&self.pool)
        .await?;
        let (
            available_links,
            fetched_links,
            last_fetched_time,
            cursor_date,
            cursor_skip,
            completed,
        ) = row;
        Ok(GranuleCount {
            date,
            platform: platform.to_owned(),
            available_links,
            fetched_links,
            last_fetched_time: last_fetched_time.and_utc(),
            cursor: cursor_date.map(|d| FetchCursor {
                publication_date: d.and_utc(),
                skip: cursor_skip.unwrap_or(0),
            }),
            completed,
        })
    }

    pub async fn set_available_links(
        &self,
        date: NaiveDate,
        platform: &str,
        available_links: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE granule_count SET available_links = $3, last_fetched_time = $4 \
             WHERE date = $1 AND platform = $2",
        )
        .bind(date)
        .bind(platform)
        .bind(available_links)
        .bind(naive(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds `examined` to `fetched_links` in the database itself (never a
    /// read-modify-write here), and saves where the day's paging now stands.
    pub async fn add_fetched_links(
        &self,
        date: NaiveDate,
        platform: &str,
        examined: i64,
        cursor: Option<FetchCursor>,
        completed: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE granule_count SET fetched_links = fetched_links + $3, last_fetched_time = $4, \
                    cursor_publication_date = $5, cursor_skip = $6, completed = $7 \
             WHERE date = $1 AND platform = $2",
        )
        .bind(date)
        .bind(platform)
        .bind(examined)
        .bind(naive(Utc::now()))
        .bind(cursor.map(|c| naive(c.publication_date)))
        .bind(cursor.map(|c| c.skip))
        .bind(completed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Upserts `status.last_linked_fetched_time`, in the Python system's format.
    pub async fn set_last_linked_fetched_time(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO status (key_name, value) VALUES ($1, $2) \
             ON CONFLICT (key_name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(LAST_LINKED_FETCHED_TIME)
        .bind(at.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// One multi-row `INSERT … ON CONFLICT (id) DO NOTHING RETURNING id` of `batch`:
/// returns the ids that were new. Sorted, unique ids keep concurrent callers
/// locking in one order; [`GranuleStore::record_and_queue`] prepares them so.
pub async fn insert_new_granules<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    batch: &[&Granule],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, \
                              ingestiondate, download_url, checksum) \
         SELECT * FROM UNNEST($1::varchar[], $2::varchar[], $3::varchar[], $4::int8[], \
                              $5::timestamp[], $6::timestamp[], $7::timestamp[], \
                              $8::varchar[], $9::varchar[]) \
         ORDER BY 1 \
         ON CONFLICT (id) DO NOTHING \
         RETURNING id",
    )
    .bind(batch.iter().map(|g| g.id.as_str()).collect::<Vec<_>>())
    .bind(
        batch
            .iter()
            .map(|g| g.filename.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(batch.iter().map(|g| g.tile_id.as_str()).collect::<Vec<_>>())
    .bind(batch.iter().map(|g| g.size).collect::<Vec<_>>())
    .bind(
        batch
            .iter()
            .map(|g| naive(g.begin_position))
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|g| naive(g.end_position))
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|g| naive(g.ingestion_date))
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|g| g.download_url.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .iter()
            .map(|g| g.checksum.as_deref().unwrap_or(""))
            .collect::<Vec<_>>(),
    )
    .fetch_all(executor)
    .await
}

/// Timestamps are stored as UTC in `timestamp` (without time zone) columns.
fn naive(at: DateTime<Utc>) -> NaiveDateTime {
    at.naive_utc()
}
