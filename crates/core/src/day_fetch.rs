//! One invocation of the polling fetcher: page through one day's products in
//! publication order, record and queue those on allowed tiles one page at a time,
//! and save where it stopped so that the next invocation resumes there.
//!
//! Paging is keyset on `PublicationDate` (CDSE-API.md §2, option B): each request
//! asks for the products published at or after the cursor's instant, skipping the
//! ones already examined at exactly that instant. `$skip` therefore stays small
//! however large the day is; only more than [`MAX_SKIP`] products published in one
//! microsecond could hit the catalogue's cap, and that fails clearly.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDate, Utc};
use rand::RngExt;
use serde::Serialize;
use tokio::time::Instant;

use crate::catalogue::odata::{MAX_SKIP, MAX_TOP};
use crate::catalogue::{
    Catalogue, CatalogueError, CataloguePage, DayQuery, PageProduct, PageRequest,
};
use crate::config::{ConfigError, optional};
use crate::granule::Granule;
use crate::queue::DownloadQueue;
use crate::record::{Handoff, RecordError};
use crate::store::{FetchCursor, FoundBy, GranuleCount};
use crate::tiles::TileSet;

/// How a day is fetched; every field has a production default.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// `$top` (`CATALOGUE_PAGE_SIZE`, default and maximum 1000).
    pub page_size: u32,
    /// One request attempt (`CATALOGUE_TIMEOUT_SECONDS`, default 120: CDSE can take
    /// close to a minute to answer a `$count`).
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Stop this long before the Lambda deadline (`DEADLINE_MARGIN_SECONDS`, default 60).
    pub deadline_margin: Duration,
    /// The catalogue's `$skip` cap.
    pub max_skip: u32,
    /// How long after its `PublicationDate` a product may still appear in the
    /// catalogue (`CATALOGUE_SETTLE_SECONDS`, default 600). The cursor never
    /// passes products published more recently than this, so one that becomes
    /// visible late, behind products already read, is found by the next run.
    pub settle_time: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            page_size: MAX_TOP,
            request_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
            deadline_margin: Duration::from_secs(60),
            max_skip: MAX_SKIP,
            settle_time: Duration::from_secs(600),
        }
    }
}

impl FetchOptions {
    pub fn from_env() -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let page_size: u32 = optional("CATALOGUE_PAGE_SIZE", defaults.page_size)?;
        if !(1..=MAX_TOP).contains(&page_size) {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_PAGE_SIZE",
                reason: format!("{page_size} is not between 1 and {MAX_TOP}"),
            });
        }
        let request_timeout: u64 = optional("CATALOGUE_TIMEOUT_SECONDS", 120)?;
        if request_timeout == 0 {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_TIMEOUT_SECONDS",
                reason: "0: a request needs some time to be answered".into(),
            });
        }
        let settle_time: u64 = optional("CATALOGUE_SETTLE_SECONDS", 600)?;
        if settle_time > MAX_SETTLE_SECONDS {
            return Err(ConfigError::Malformed {
                name: "CATALOGUE_SETTLE_SECONDS",
                reason: format!(
                    "{settle_time} is more than a day ({MAX_SETTLE_SECONDS}): the cursor would never move"
                ),
            });
        }
        Ok(Self {
            page_size,
            request_timeout: Duration::from_secs(request_timeout),
            retry: RetryPolicy {
                max_attempts: optional("CATALOGUE_MAX_ATTEMPTS", defaults.retry.max_attempts)?
                    .max(1),
                base_delay: Duration::from_millis(optional("CATALOGUE_RETRY_BASE_MS", 1000)?),
                max_delay: defaults.retry.max_delay,
            },
            deadline_margin: Duration::from_secs(optional("DEADLINE_MARGIN_SECONDS", 60)?),
            max_skip: MAX_SKIP,
            settle_time: Duration::from_secs(settle_time),
        })
    }
}

/// The longest settle time accepted: a product is visible within a day.
pub const MAX_SETTLE_SECONDS: u64 = 86_400;

/// The one retry policy for catalogue faults that may pass (429, 5xx, connection
/// errors, timeouts): exponential backoff with jitter, or the catalogue's own
/// `Retry-After`, and only while the deadline leaves time for it.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based): `Retry-After` when given
    /// (capped), else `base * 2^(attempt-1)` with "equal jitter" (half fixed, half random).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_delay * 2);
        }
        let exponential = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay);
        let half = exponential / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

/// When the invocation must have stopped: the Lambda deadline less a margin, or none.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Option<Instant>,
    margin: Duration,
}

impl Deadline {
    /// No deadline (the command line).
    pub fn none() -> Self {
        Self {
            at: None,
            margin: Duration::ZERO,
        }
    }

    pub fn at(at: Instant, margin: Duration) -> Self {
        Self {
            at: Some(at),
            margin,
        }
    }

    /// From the Lambda context's deadline (milliseconds since the Unix epoch).
    pub fn from_epoch_millis(deadline_ms: u64, margin: Duration) -> Self {
        let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Self::at(Instant::now() + left, margin)
    }

    /// Time left before the stop point (deadline less margin); `None` is unlimited.
    pub fn time_left(&self) -> Option<Duration> {
        self.at.map(|at| {
            at.checked_sub(self.margin).map_or(Duration::ZERO, |stop| {
                stop.saturating_duration_since(Instant::now())
            })
        })
    }

    /// Whether a new page request may start.
    pub fn allows_request(&self) -> bool {
        self.time_left().is_none_or(|left| !left.is_zero())
    }

    /// Time left before the deadline itself; `None` is unlimited.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The stop point as an instant, for senders bounded by it.
    pub fn stop_at(&self) -> Option<Instant> {
        self.at.map(|at| at.checked_sub(self.margin).unwrap_or(at))
    }

    /// How long the next request attempt may take: never past the stop point.
    /// `None` when the stop point has passed.
    fn attempt_timeout(&self, configured: Duration) -> Option<Duration> {
        match self.time_left() {
            None => Some(configured),
            Some(left) if left.is_zero() => None,
            Some(left) => Some(configured.min(left)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DayFetchError {
    #[error("catalogue, after {attempts} attempt(s): {source}")]
    Catalogue {
        attempts: u32,
        #[source]
        source: CatalogueError,
    },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(
        "the invocation has {left:?} before its deadline, less than the deadline margin \
         (DEADLINE_MARGIN_SECONDS, {margin:?}): raise the Lambda timeout or lower the margin"
    )]
    NoTime { left: Duration, margin: Duration },
    #[error(
        "more than {max} products were published at {at}: the catalogue's $skip cap \
         does not allow paging past them"
    )]
    SkipCap { at: String, max: u32 },
}

/// Where a day's granules go and where its progress is kept.
pub trait DayRecorder: Sync {
    /// Sends the messages earlier runs (or the push endpoint) still owe, before
    /// the day starts; returns how many were sent.
    fn send_owed(
        &self,
        deadline: Deadline,
    ) -> impl Future<Output = Result<usize, RecordError>> + Send;
    /// The day's row as the previous invocations left it.
    fn start(
        &self,
        query: &DayQuery,
    ) -> impl Future<Output = Result<GranuleCount, RecordError>> + Send;
    fn set_available(
        &self,
        query: &DayQuery,
        available_links: i64,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;
    /// Records and queues one page's allowed granules; returns those that were new.
    fn record_page(
        &self,
        granules: &[Granule],
    ) -> impl Future<Output = Result<Vec<Granule>, RecordError>> + Send;
    /// Adds `examined` to the day's count and saves the cursor.
    fn save_progress(
        &self,
        query: &DayQuery,
        examined: i64,
        cursor: FetchCursor,
        completed: bool,
    ) -> impl Future<Output = Result<(), RecordError>> + Send;
}

/// The production recorder: the hand-off to the download service (Postgres and SQS).
pub struct StoreRecorder<'a, Q> {
    pub handoff: &'a Handoff<Q>,
}

impl<Q: DownloadQueue> DayRecorder for StoreRecorder<'_, Q> {
    async fn send_owed(&self, deadline: Deadline) -> Result<usize, RecordError> {
        self.handoff.send_owed(deadline.stop_at()).await
    }

    async fn start(&self, query: &DayQuery) -> Result<GranuleCount, RecordError> {
        Ok(self
            .handoff
            .store()
            .get_or_create_granule_count(query.date, query.platform_label())
            .await?)
    }

    async fn set_available(&self, query: &DayQuery, available: i64) -> Result<(), RecordError> {
        Ok(self
            .handoff
            .store()
            .set_available_links(query.date, query.platform_label(), available)
            .await?)
    }

    async fn record_page(&self, granules: &[Granule]) -> Result<Vec<Granule>, RecordError> {
        self.handoff.record_and_queue(granules, FoundBy::Poll).await
    }

    async fn save_progress(
        &self,
        query: &DayQuery,
        examined: i64,
        cursor: FetchCursor,
        completed: bool,
    ) -> Result<(), RecordError> {
        let store = self.handoff.store();
        store
            .add_fetched_links(
                query.date,
                query.platform_label(),
                examined,
                Some(cursor),
                completed,
            )
            .await?;
        store.set_last_linked_fetched_time(Utc::now()).await?;
        Ok(())
    }
}

/// `--dry-run`: nothing is stored; every allowed granule is handed to `on_granule`
/// (and counted as new), and the day is read from its start.
pub struct DryRun<F> {
    pub on_granule: F,
}

impl<F: Fn(&Granule) + Sync> DayRecorder for DryRun<F> {
    async fn send_owed(&self, _: Deadline) -> Result<usize, RecordError> {
        Ok(0)
    }

    async fn start(&self, query: &DayQuery) -> Result<GranuleCount, RecordError> {
        Ok(GranuleCount {
            date: query.date,
            platform: query.platform_label().to_owned(),
            available_links: 0,
            fetched_links: 0,
            last_fetched_time: Utc::now(),
            cursor: None,
            completed: false,
        })
    }

    async fn set_available(&self, _: &DayQuery, _: i64) -> Result<(), RecordError> {
        Ok(())
    }

    async fn record_page(&self, granules: &[Granule]) -> Result<Vec<Granule>, RecordError> {
        granules.iter().for_each(&self.on_granule);
        Ok(granules.to_vec())
    }

    async fn save_progress(
        &self,
        _: &DayQuery,
        _: i64,
        _: FetchCursor,
        _: bool,
    ) -> Result<(), RecordError> {
        Ok(())
    }
}

/// What one invocation did, and where the day stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaySummary {
    pub query_date: NaiveDate,
    pub platform: String,
    pub completed: bool,
    /// Products matching the day's query (all of them, not only this invocation's).
    pub available_links: i64,
    /// Products examined for this day so far, by every invocation.
    pub fetched_links: i64,
    /// Products examined by this invocation.
    pub examined: i64,
    /// Granules recorded and queued by this invocation.
    pub new_granules: i64,
    /// Messages owed by earlier runs (or the push endpoint) sent before the day started.
    pub owed_sent: i64,
    /// Granules on allowed tiles that were already recorded.
    pub known_granules: i64,
    /// Products on tiles HLS does not process.
    pub skipped_tiles: i64,
    /// Products that could not become granules (logged with the reason).
    pub rejected: i64,
    pub pages: u32,
    /// Catalogue requests, retries included.
    pub requests: u32,
    /// For each new granule, seconds from its publication to its message being
    /// sent (for the metrics; not printed).
    #[serde(skip)]
    pub queue_delays_s: Vec<f64>,
}

/// Fetches one day (see the module documentation) until it is complete, or until
/// the deadline leaves no time for another page.
pub async fn fetch_day<C: Catalogue, R: DayRecorder>(
    catalogue: &C,
    recorder: &R,
    tiles: &TileSet,
    query: &DayQuery,
    options: &FetchOptions,
    deadline: Deadline,
) -> Result<DaySummary, DayFetchError> {
    if let Some(left) = deadline.remaining().filter(|_| !deadline.allows_request()) {
        // Every invocation would stop at once: say so rather than loop.
        return Err(DayFetchError::NoTime {
            left,
            margin: deadline.margin,
        });
    }
    // What earlier runs owe goes first; a queue still down fails this run's first page too.
    let owed_sent = match recorder.send_owed(deadline).await {
        Ok(sent) => sent,
        Err(error) => {
            tracing::error!(%error, "owed messages not sent; fetching the day anyway");
            0
        }
    };
    let progress = recorder.start(query).await?;
    let start = FetchCursor {
        publication_date: query.window_start(),
        skip: 0,
    };
    let mut cursor = progress
        .cursor
        .filter(|c| c.publication_date >= start.publication_date && c.skip >= 0)
        .unwrap_or(start);
    let mut summary = DaySummary {
        query_date: query.date,
        platform: query.platform_label().to_owned(),
        completed: false,
        available_links: progress.available_links,
        fetched_links: progress.fetched_links,
        examined: 0,
        new_granules: 0,
        owed_sent: owed_sent as i64,
        known_granules: 0,
        skipped_tiles: 0,
        rejected: 0,
        pages: 0,
        requests: 0,
        queue_delays_s: Vec::new(),
    };
    tracing::info!(
        query_date = %query.date,
        platform = query.platform_label(),
        cursor = %crate::catalogue::odata::odata_timestamp(cursor.publication_date),
        skip = cursor.skip,
        previously_completed = progress.completed,
        owed_sent,
        "fetching day"
    );

    // `$count` is slow on CDSE, so it is asked once per invocation, on the first
    // request. That request starts at the cursor, so the count covers the products
    // not yet examined plus the `skip` examined at the cursor's instant; the ones
    // before the cursor are the day's `fetched_links` less that skip.
    let (fetched, attempts) = fetch_page(catalogue, query, cursor, true, options, deadline).await;
    summary.requests += attempts;
    let mut in_hand = match fetched {
        Fetched::Page(page) => page,
        Fetched::Stopped => return Ok(stopped(summary)),
        Fetched::Failed(source) => return Err(DayFetchError::Catalogue { attempts, source }),
    };
    if let Some(count) = in_hand.page.count {
        let before_cursor = match progress.cursor {
            Some(_) => (progress.fetched_links - cursor.skip).max(0),
            None => 0,
        };
        summary.available_links = before_cursor + count;
        recorder
            .set_available(query, summary.available_links)
            .await?;
    }

    loop {
        if !deadline.allows_request() {
            // The page arrived after the stop point: recording it could outlive the invocation.
            return Ok(stopped(summary));
        }
        summary.pages += 1;
        let TimedPage { page, requested_at } = in_hand;
        // Products published within the settle time of the request sort last. They
        // are recorded and queued now, but the cursor stops before them, so the next
        // run reads them again (already recorded: nothing is queued twice) and also
        // finds any product that became visible late with an earlier time.
        let settled_before = chrono::Duration::from_std(options.settle_time)
            .ok()
            .and_then(|settle| requested_at.checked_sub_signed(settle))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let settled = page
            .products
            .iter()
            .position(|p| p.published.is_some_and(|t| t > settled_before))
            .unwrap_or(page.products.len());
        let reached_the_present = settled < page.products.len();
        let examined = settled as i64;
        let next_cursor = cursor_after(&page.products[..settled], cursor);
        let completed = page.products.len() < options.page_size as usize || reached_the_present;
        if !completed && next_cursor.skip > i64::from(options.max_skip) {
            return Err(DayFetchError::SkipCap {
                at: crate::catalogue::odata::odata_timestamp(next_cursor.publication_date),
                max: options.max_skip,
            });
        }

        let mut allowed = Vec::new();
        for product in page.products {
            match product.granule {
                Err(reason) => {
                    summary.rejected += 1;
                    tracing::warn!(product_id = %product.id, decision = "rejected", %reason, "product rejected");
                }
                Ok(granule) if !tiles.contains(&granule.tile_id) => {
                    summary.skipped_tiles += 1;
                    tracing::info!(product_id = %product.id, decision = "skipped_tile", tile_id = %granule.tile_id, "tile not processed by HLS");
                }
                Ok(granule) => allowed.push(granule),
            }
        }

        // Pipelining: the next page is fetched while this one is recorded, so the
        // run takes about as long as the catalogue takes to answer.
        let record = async {
            let recorded = recorder.record_page(&allowed).await;
            // Unsent messages are owed and recorded: the page counts as examined.
            if matches!(recorded, Ok(_) | Err(RecordError::Unsent { .. })) {
                recorder
                    .save_progress(query, examined, next_cursor, completed)
                    .await?;
            }
            recorded
        };
        let fetch = async {
            if completed {
                return None;
            }
            Some(fetch_page(catalogue, query, next_cursor, false, options, deadline).await)
        };
        let (recorded, fetched) = tokio::join!(record, fetch);
        let new = recorded?;
        let sent_at = Utc::now();
        summary.queue_delays_s.extend(
            new.iter()
                .map(|g| seconds_between(g.ingestion_date, sent_at)),
        );

        let new_ids: HashSet<&str> = new.iter().map(|g| g.id.as_str()).collect();
        for granule in &allowed {
            let decision = if new_ids.contains(granule.id.as_str()) {
                "queued"
            } else {
                "already_recorded"
            };
            tracing::info!(product_id = %granule.id, decision, tile_id = %granule.tile_id, "granule");
        }
        summary.examined += examined;
        summary.fetched_links += examined;
        summary.new_granules += new.len() as i64;
        summary.known_granules += (allowed.len() - new.len()) as i64;
        cursor = next_cursor;

        let Some((fetched, attempts)) = fetched else {
            summary.completed = true;
            break;
        };
        summary.requests += attempts;
        match fetched {
            Fetched::Page(page) => in_hand = page,
            Fetched::Stopped => return Ok(stopped(summary)),
            Fetched::Failed(source) => {
                tracing::warn!(summary = ?summary, "catalogue failed; progress so far is saved");
                return Err(DayFetchError::Catalogue { attempts, source });
            }
        }
    }
    tracing::info!(summary = ?summary, "day fetched");
    Ok(summary)
}

/// `to - from` in seconds, with microseconds.
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

fn stopped(summary: DaySummary) -> DaySummary {
    tracing::info!(summary = ?summary, "stopping before the deadline; the next invocation resumes here");
    summary
}

/// A page, and when the request that brought it was sent.
pub(crate) struct TimedPage {
    pub(crate) page: CataloguePage,
    pub(crate) requested_at: DateTime<Utc>,
}

pub(crate) enum Fetched {
    Page(TimedPage),
    /// The stop point came first: no attempt runs past it.
    Stopped,
    Failed(CatalogueError),
}

/// One page at `cursor` with the retry policy, each attempt bounded by the stop
/// point; returns the attempts made.
pub(crate) async fn fetch_page<C: Catalogue>(
    catalogue: &C,
    query: &DayQuery,
    cursor: FetchCursor,
    count: bool,
    options: &FetchOptions,
    deadline: Deadline,
) -> (Fetched, u32) {
    let mut attempt = 0;
    loop {
        let Some(timeout) = deadline.attempt_timeout(options.request_timeout) else {
            return (Fetched::Stopped, attempt);
        };
        let request = PageRequest {
            from: cursor.publication_date,
            // Checked against the cap before the request is made.
            skip: u32::try_from(cursor.skip).unwrap_or(u32::MAX),
            top: options.page_size,
            count,
            timeout,
        };
        attempt += 1;
        let requested_at = Utc::now();
        let error = match catalogue.page(query, &request).await {
            Ok(page) => return (Fetched::Page(TimedPage { page, requested_at }), attempt),
            Err(error) => error,
        };
        let CatalogueError::Transient { retry_after, .. } = &error else {
            return (Fetched::Failed(error), attempt);
        };
        if timeout < options.request_timeout && !deadline.allows_request() {
            // The attempt was cut at the stop point.
            tracing::info!(%error, "the catalogue had not answered by the stop point");
            return (Fetched::Stopped, attempt);
        }
        if attempt >= options.retry.max_attempts {
            return (Fetched::Failed(error), attempt);
        }
        let delay = options.retry.delay(attempt, *retry_after);
        if deadline.time_left().is_some_and(|left| left <= delay) {
            tracing::warn!(%error, ?delay, "no time left before the deadline to retry");
            return (Fetched::Failed(error), attempt);
        }
        tracing::warn!(%error, attempt, ?delay, "catalogue fault; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// The cursor after `products`, the start of a page requested at `cursor`. The catalogue's order
/// is total (publication time, then id), so "the first `skip` products published
/// at or after `publication_date`" names exactly the products examined.
///
/// The new instant is the last readable publication time of the page; the skip
/// counts the products from the first one published exactly then. A product
/// whose time is unreadable and that sits just before that run might be earlier,
/// so it is not counted: at worst it is examined again, never missed.
pub fn cursor_after(products: &[PageProduct], cursor: FetchCursor) -> FetchCursor {
    let Some(last) = products.iter().rev().find_map(|p| p.published) else {
        // Nothing readable: every product is at or after the old instant.
        return FetchCursor {
            publication_date: cursor.publication_date,
            skip: cursor.skip + products.len() as i64,
        };
    };
    if last == cursor.publication_date {
        return FetchCursor {
            publication_date: last,
            skip: cursor.skip + products.len() as i64,
        };
    }
    let run_start = products
        .iter()
        .position(|p| p.published == Some(last))
        .expect("`last` is one of the page's times");
    FetchCursor {
        publication_date: last,
        skip: (products.len() - run_start) as i64,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn page_products(times: &[Option<&str>]) -> Vec<PageProduct> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| PageProduct {
                id: i.to_string(),
                published: t.map(at),
                granule: Err("test".into()),
            })
            .collect()
    }

    fn cursor(t: &str, skip: i64) -> FetchCursor {
        FetchCursor {
            publication_date: at(t),
            skip,
        }
    }

    #[test]
    fn cursor_moves_to_the_last_instant_and_counts_its_products() {
        let t1 = "2024-04-01T01:00:00.000001Z";
        let t2 = "2024-04-01T02:00:00.000002Z";
        let t0 = "2024-04-01T00:00:00Z";
        assert_eq!(
            cursor_after(
                &page_products(&[Some(t1), Some(t2), Some(t2)]),
                cursor(t0, 0)
            ),
            cursor(t2, 2)
        );
        assert_eq!(
            cursor_after(
                &page_products(&[Some(t1), Some(t1), Some(t2)]),
                cursor(t1, 5)
            ),
            cursor(t2, 1)
        );
        // The whole page at the old instant: the skip grows.
        assert_eq!(
            cursor_after(&page_products(&[Some(t1), Some(t1)]), cursor(t1, 3)),
            cursor(t1, 5)
        );
        // An empty page leaves the cursor where it was.
        assert_eq!(
            cursor_after(&page_products(&[]), cursor(t1, 3)),
            cursor(t1, 3)
        );
    }

    #[test]
    fn unreadable_times_are_never_skipped_past() {
        let t0 = "2024-04-01T00:00:00Z";
        let t1 = "2024-04-01T01:00:00Z";
        let t2 = "2024-04-01T02:00:00Z";
        // Trailing unknowns are after t2: counted.
        assert_eq!(
            cursor_after(&page_products(&[Some(t1), Some(t2), None]), cursor(t0, 0)),
            cursor(t2, 2)
        );
        // An unknown just before the t2 run may be earlier: not counted.
        assert_eq!(
            cursor_after(&page_products(&[Some(t1), None, Some(t2)]), cursor(t0, 0)),
            cursor(t2, 1)
        );
        // Nothing readable: all are at or after the old instant.
        assert_eq!(
            cursor_after(&page_products(&[None, None]), cursor(t1, 1)),
            cursor(t1, 3)
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let first = policy.delay(1, None);
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first));
            let third = policy.delay(3, None);
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third));
            assert!(policy.delay(20, None) <= Duration::from_secs(1));
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_millis(700))),
            Duration::from_millis(700)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn deadline_stops_requests_inside_the_margin() {
        assert!(Deadline::none().allows_request());
        assert_eq!(Deadline::none().time_left(), None);
        let soon = Deadline::at(
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(60),
        );
        assert!(!soon.allows_request());
        let later = Deadline::at(
            Instant::now() + Duration::from_secs(120),
            Duration::from_secs(60),
        );
        assert!(later.allows_request());
        assert!(later.time_left().unwrap() <= Duration::from_secs(60));
        // No attempt runs past the stop point (the deadline less the margin).
        assert_eq!(soon.attempt_timeout(Duration::from_secs(120)), None);
        let timeout = later.attempt_timeout(Duration::from_secs(120)).unwrap();
        assert!(timeout <= Duration::from_secs(60) && timeout > Duration::from_secs(59));
        assert_eq!(
            later.attempt_timeout(Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            Deadline::none().attempt_timeout(Duration::from_secs(120)),
            Some(Duration::from_secs(120))
        );
        let past = Deadline::from_epoch_millis(0, Duration::ZERO);
        assert!(!past.allows_request());
    }
}
