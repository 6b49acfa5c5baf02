//! One invocation of the polling fetcher: page through one day's products in
//! publication order, record and queue those on allowed tiles one page at a time,
//! and save where it stopped so that the next invocation resumes there.
//!
//! Paging is keyset on `PublicationDate` (docs/cdse-catalogue.md, "Keyset paging
//! on PublicationDate"): each request asks for the products published at or after
//! the cursor's instant, skipping the ones already examined at exactly that instant. `$skip` therefore stays small
//! however large the day is; only more than [`MAX_SKIP`] products published in one
//! microsecond could hit the catalogue's cap, and that fails clearly.

mod deadline;
mod options;
mod page;
mod recorder;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub use deadline::Deadline;
pub use options::{COMMAND_LINE_BUDGET, FetchOptions, MAX_SETTLE_SECONDS, RetryPolicy};
pub use page::cursor_after;
pub(crate) use page::{Fetched, TimedPage, fetch_page};
pub use recorder::{DayRecorder, DryRun, StoreRecorder};

use crate::adapters::catalogue::{Catalogue, CatalogueError, DayQuery};
use crate::adapters::store::FetchCursor;
use crate::domain::tiles::TileSet;
use crate::use_cases::handoff::RecordError;

#[derive(Debug, thiserror::Error)]
pub enum DayFetchError {
    /// One line a person can act on: the fault (host, kind or HTTP status), the
    /// attempts and the time they took, and what to do.
    #[error(
        "{source} after {} in {}{}",
        attempts_text(*.attempts),
        seconds_text(*.elapsed),
        .source.advice().map(|advice| format!("; {advice}")).unwrap_or_default()
    )]
    Catalogue {
        attempts: u32,
        /// From the first attempt to the last.
        elapsed: Duration,
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
fn attempts_text(attempts: u32) -> String {
    match attempts {
        1 => "1 attempt".into(),
        n => format!("{n} attempts"),
    }
}

fn seconds_text(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds < 10.0 {
        format!("{seconds:.1} s")
    } else {
        format!("{seconds:.0} s")
    }
}

/// How far a day has got, told after each page: for a progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub pages: u32,
    /// Products examined (read, for the audit).
    pub examined: i64,
    /// Granules queued.
    pub queued: i64,
}

/// A catalogue request that failed and will be tried again.
#[derive(Debug)]
pub struct Retry<'a> {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    pub max_attempts: u32,
    /// The wait before the next attempt.
    pub delay: Duration,
    pub error: &'a CatalogueError,
}

/// The target of the "catalogue fault; retrying" warning, so that a command
/// line that shows retries on its progress line can leave the log line out.
pub const RETRY_LOG_TARGET: &str = "hls_core::catalogue_retry";

/// Told how a day goes; the use cases draw nothing themselves, so a terminal
/// can show a progress line and Lambda nothing.
pub trait Progress: Sync {
    fn page_done(&self, tally: Tally);

    /// A request failed and is tried again after `retry.delay`.
    fn retrying(&self, _retry: &Retry<'_>) {}
}

/// No progress shown.
impl Progress for () {
    fn page_done(&self, _: Tally) {}
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
    observer: &dyn Progress,
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
        cursor = %crate::adapters::catalogue::odata::odata_timestamp(cursor.publication_date),
        skip = cursor.skip,
        previously_completed = progress.completed,
        owed_sent,
        "fetching day"
    );

    // `$count` is slow on CDSE, so it is asked once per invocation, on the first
    // request. That request starts at the cursor, so the count covers the products
    // not yet examined plus the `skip` examined at the cursor's instant; the ones
    // before the cursor are the day's `fetched_links` less that skip.
    let (fetched, attempts) =
        fetch_page(catalogue, query, cursor, true, options, deadline, observer).await;
    summary.requests += attempts;
    let mut in_hand = match fetched {
        Fetched::Page(page) => page,
        Fetched::Stopped => return Ok(stopped(summary)),
        Fetched::Failed(source, elapsed) => {
            return Err(DayFetchError::Catalogue {
                attempts,
                elapsed,
                source,
            });
        }
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
                at: crate::adapters::catalogue::odata::odata_timestamp(
                    next_cursor.publication_date,
                ),
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
            Some(
                fetch_page(
                    catalogue,
                    query,
                    next_cursor,
                    false,
                    options,
                    deadline,
                    observer,
                )
                .await,
            )
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
        observer.page_done(Tally {
            pages: summary.pages,
            examined: summary.examined,
            queued: summary.new_granules,
        });

        let Some((fetched, attempts)) = fetched else {
            summary.completed = true;
            break;
        };
        summary.requests += attempts;
        match fetched {
            Fetched::Page(page) => in_hand = page,
            Fetched::Stopped => return Ok(stopped(summary)),
            Fetched::Failed(source, elapsed) => {
                tracing::warn!(summary = ?summary, "catalogue failed; progress so far is saved");
                return Err(DayFetchError::Catalogue {
                    attempts,
                    elapsed,
                    source,
                });
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
