//! The granule store on Postgres, with the schema the download service reads.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgPool};

use crate::domain::granule::{DownloadMessage, Granule};

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

    /// Applies the migrations on a connection of its own, free of the pool's
    /// request timeouts: a migration may wait for another migrator's lock or
    /// rewrite a large table. The connection is closed afterwards.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?.detach();
        sqlx::raw_sql("SET lock_timeout = 0; SET statement_timeout = 0")
            .execute(&mut connection)
            .await?;
        MIGRATOR.run(&mut connection).await?;
        connection.close().await?;
        Ok(())
    }

    /// Inserts the granules not recorded before and, in the same statement, their
    /// outbox rows: owed, found by `found_by`, held by the caller for `lease`.
    /// Returns the ids that were new. `batch` must be sorted by id and unique (see
    /// [`crate::use_cases::handoff`]): every caller then locks rows in one order.
    ///
    /// Concurrent callers with overlapping batches are safe: a second insert of an
    /// id waits on the first and then skips the row if it committed.
    pub async fn record_new(
        &self,
        batch: &[&Granule],
        found_by: FoundBy,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        Ok(record_new_granules(&self.pool, batch, found_by, lease).await?)
    }

    /// Claims up to `limit` owed messages that no live sender holds (oldest first),
    /// holding them for `lease`. Rows another transaction is claiming are skipped,
    /// so two senders at once never take the same row.
    pub async fn claim_owed(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OwedMessage>, StoreError> {
        Ok(sqlx::query_as(
            "WITH claimed AS ( \
                 UPDATE granule_outbox o SET lease_until = now() + $2 \
                 FROM (SELECT granule_id FROM granule_outbox \
                       WHERE sent_at IS NULL AND (lease_until IS NULL OR lease_until <= now()) \
                       ORDER BY recorded_at LIMIT $1 FOR UPDATE SKIP LOCKED) c \
                 WHERE o.granule_id = c.granule_id \
                 RETURNING o.granule_id) \
             SELECT g.id, g.filename, g.download_url, g.checksum \
             FROM claimed JOIN granule g ON g.id = claimed.granule_id ORDER BY g.id",
        )
        .bind(limit)
        .bind(interval(lease))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Where the message of one recorded granule stands; claims it (for `lease`)
    /// when it is owed and no live sender holds it.
    pub async fn claim_owed_one(&self, id: &str, lease: Duration) -> Result<OwedState, StoreError> {
        let claimed: Option<OwedMessage> = sqlx::query_as(
            "WITH claimed AS ( \
                 UPDATE granule_outbox SET lease_until = now() + $2 \
                 WHERE granule_id = $1 AND sent_at IS NULL \
                   AND (lease_until IS NULL OR lease_until <= now()) \
                 RETURNING granule_id) \
             SELECT g.id, g.filename, g.download_url, g.checksum \
             FROM claimed JOIN granule g ON g.id = claimed.granule_id",
        )
        .bind(id)
        .bind(interval(lease))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(message) = claimed {
            return Ok(OwedState::Claimed(message));
        }
        let owed: Option<bool> =
            sqlx::query_scalar("SELECT sent_at IS NULL FROM granule_outbox WHERE granule_id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match owed {
            Some(true) => OwedState::HeldElsewhere,
            // Sent, or recorded before the outbox existed (or by the Python system).
            Some(false) | None => OwedState::NotOwed,
        })
    }

    /// Marks the messages of `ids` sent (SQS accepted them).
    pub async fn mark_sent(&self, ids: &[&str]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE granule_outbox SET sent_at = now(), lease_until = NULL \
             WHERE granule_id = ANY($1) AND sent_at IS NULL",
        )
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives up the lease on owed messages that could not be sent, so that the next
    /// sender takes them at once rather than when the lease runs out.
    pub async fn release(&self, ids: &[&str]) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE granule_outbox SET lease_until = NULL, failed_sends = failed_sends + 1 \
             WHERE granule_id = ANY($1) AND sent_at IS NULL",
        )
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the audit compares: for each of `ids` that has a granule row, whether
    /// it was downloaded, which path recorded it, when its message was sent, and
    /// its publication time. Granules recorded before the outbox existed (or by
    /// the Python system) have no path and no send time.
    pub async fn audit_rows(&self, ids: &[&str]) -> Result<Vec<AuditRow>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            id: String,
            downloaded: bool,
            ingestiondate: NaiveDateTime,
            found_by: Option<String>,
            owed: Option<bool>,
            sent_at: Option<DateTime<Utc>>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT g.id, g.downloaded, g.ingestiondate, o.found_by, o.sent_at IS NULL AS owed, \
                    o.sent_at \
             FROM granule g LEFT JOIN granule_outbox o ON o.granule_id = g.id \
             WHERE g.id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| AuditRow {
                id: row.id,
                downloaded: row.downloaded,
                published: row.ingestiondate.and_utc(),
                found_by: row.found_by.as_deref().and_then(FoundBy::parse),
                // No outbox row: recorded before it existed, never owed.
                owed: row.found_by.is_some() && row.owed.unwrap_or(false),
                sent_at: row.sent_at,
            })
            .collect())
    }

    /// How long the oldest owed message has been waiting; zero when none is.
    pub async fn oldest_owed_age(&self) -> Result<Duration, StoreError> {
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM now() - min(recorded_at))::float8 \
             FROM granule_outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(Duration::from_secs_f64(seconds.unwrap_or(0.0).max(0.0)))
    }

    /// How many messages are owed, held by a live sender or not.
    pub async fn owed_count(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM granule_outbox WHERE sent_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
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

/// Which path recorded a granule first (`granule_outbox.found_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FoundBy {
    Poll,
    Push,
    Audit,
}

impl FoundBy {
    pub const ALL: [FoundBy; 3] = [FoundBy::Poll, FoundBy::Push, FoundBy::Audit];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Push => "push",
            Self::Audit => "audit",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

/// One recorded granule as the audit sees it (see [`GranuleStore::audit_rows`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub id: String,
    pub downloaded: bool,
    /// `ingestiondate`: the product's publication time.
    pub published: DateTime<Utc>,
    /// `None`: recorded before the outbox existed.
    pub found_by: Option<FoundBy>,
    /// Its message is still owed.
    pub owed: bool,
    pub sent_at: Option<DateTime<Utc>>,
}

/// An owed message as the outbox and the granule row hold it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OwedMessage {
    pub id: String,
    pub filename: String,
    pub download_url: String,
    /// `''` when CDSE gave none (the Python system's convention).
    pub checksum: String,
}

impl OwedMessage {
    pub fn download_message(&self) -> DownloadMessage<'_> {
        DownloadMessage {
            id: &self.id,
            filename: &self.filename,
            download_url: &self.download_url,
            checksum: Some(self.checksum.as_str()).filter(|c| !c.is_empty()),
        }
    }
}

/// The message of one recorded granule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwedState {
    /// Owed, and now held by the caller.
    Claimed(OwedMessage),
    /// Owed, and held by a live sender.
    HeldElsewhere,
    /// Sent already, or never owed (recorded before the outbox existed).
    NotOwed,
}

/// One statement: a multi-row `INSERT … ON CONFLICT (id) DO NOTHING` of `batch`
/// into `granule`, and of the rows that were new into `granule_outbox` (owed,
/// leased to the caller). One statement is one transaction: a granule row never
/// commits without its outbox row. Returns the new ids.
pub async fn record_new_granules<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    batch: &[&Granule],
    found_by: FoundBy,
    lease: Duration,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH new AS ( \
             INSERT INTO granule (id, filename, tileid, size, beginposition, endposition, \
                                  ingestiondate, download_url, checksum) \
             SELECT * FROM UNNEST($1::varchar[], $2::varchar[], $3::varchar[], $4::int8[], \
                                  $5::timestamp[], $6::timestamp[], $7::timestamp[], \
                                  $8::varchar[], $9::varchar[]) \
             ORDER BY 1 \
             ON CONFLICT (id) DO NOTHING \
             RETURNING id) \
         INSERT INTO granule_outbox (granule_id, found_by, lease_until) \
         SELECT id, $10, now() + $11 FROM new \
         RETURNING granule_id",
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
    .bind(found_by.as_str())
    .bind(interval(lease))
    .fetch_all(executor)
    .await
}

/// A lease as a Postgres `interval`.
fn interval(lease: Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(lease.as_micros()).unwrap_or(i64::MAX),
    }
}

/// Timestamps are stored as UTC in `timestamp` (without time zone) columns.
fn naive(at: DateTime<Utc>) -> NaiveDateTime {
    at.naive_utc()
}
