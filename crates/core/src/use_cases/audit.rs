//! The completeness audit: read a whole (day, platform) from the catalogue with
//! the fetch's own query and paging, keep the products on allowed tiles, and
//! compare them with what was recorded and queued; optionally record and queue
//! the missing ones through the hand-off (found by `audit`).
//!
//! The catalogue is the truth: a day that cannot be read completely is reported
//! as incomplete, never as "nothing missing".

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::Serialize;

use crate::adapters::catalogue::{Catalogue, DayQuery};
use crate::adapters::metrics::{Metric, median_and_p99};
use crate::adapters::queue::DownloadQueue;
use crate::adapters::store::{FetchCursor, FoundBy};
use crate::domain::granule::Granule;
use crate::domain::tiles::TileSet;
use crate::use_cases::day_fetch::{
    DayFetchError, Deadline, FetchOptions, Fetched, Progress, Tally, cursor_after, fetch_page,
    seconds_between,
};
use crate::use_cases::handoff::{Handoff, RecordError};

/// `missing_ids` lists at most this many.
pub const MAX_MISSING_IDS: usize = 100;

/// What the audit found for one (day, platform): one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayAudit {
    pub query_date: NaiveDate,
    pub platform: String,
    /// The whole day was read; when not, the counts cover what was read and
    /// `error` says why.
    pub complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Products matching the day's query.
    pub catalogue_products: i64,
    /// Of those, on allowed tiles.
    pub allowed: i64,
    /// Products that could not become granules (not comparable).
    pub rejected: i64,
    /// Allowed products with a granule row.
    pub recorded: i64,
    /// Allowed products without one (before any requeue).
    pub missing: i64,
    /// The first [`MAX_MISSING_IDS`] of them.
    pub missing_ids: Vec<String>,
    /// Recorded granules whose message is still owed.
    pub unsent: i64,
    /// Recorded granules the downloader marked `downloaded`.
    pub downloaded: i64,
    /// Which path recorded each granule first.
    pub found_by: FoundByCounts,
    /// Seconds from publication to the message being sent, by path.
    pub queue_delay_s: QueueDelays,
    /// With requeue: missing products recorded and queued now.
    pub requeued: i64,
    pub pages: u32,
    pub requests: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FoundByCounts {
    pub poll: i64,
    pub push: i64,
    pub audit: i64,
    /// Recorded before the outbox existed (or by the Python system).
    pub unknown: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueDelays {
    pub poll: Option<Delay>,
    pub push: Option<Delay>,
    pub audit: Option<Delay>,
}

/// Nearest-rank percentiles of the granules whose message was sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delay {
    pub median: f64,
    pub p99: f64,
    pub count: usize,
}

impl DayAudit {
    /// Missing after the requeue: the alarm's figure.
    pub fn still_missing(&self) -> i64 {
        self.missing - self.requeued
    }

    /// The metrics of this line, by `path` dimension.
    pub fn metrics(&self) -> Vec<(&'static str, Vec<Metric>)> {
        let mut by_path = vec![(
            "audit",
            vec![
                Metric::count("ProductsExamined", self.catalogue_products),
                Metric::count("Missing", self.missing),
                Metric::count("StillMissing", self.still_missing()),
                Metric::count("Unsent", self.unsent),
                Metric::count("Requeued", self.requeued),
                Metric::count("AuditIncomplete", i64::from(!self.complete)),
            ],
        )];
        let delays = &self.queue_delay_s;
        for (path, delay) in [
            ("poll", &delays.poll),
            ("push", &delays.push),
            ("audit", &delays.audit),
        ] {
            if let Some(delay) = delay {
                let values = vec![
                    Metric::seconds("QueueDelayMedian", delay.median),
                    Metric::seconds("QueueDelayP99", delay.p99),
                ];
                match by_path.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, metrics)) => metrics.extend(values),
                    None => by_path.push((path, values)),
                }
            }
        }
        by_path
    }
}

/// What the catalogue holds for a day, as far as it could be read.
#[derive(Debug, Default)]
pub struct CatalogueDay {
    pub products: i64,
    pub rejected: i64,
    pub allowed: Vec<Granule>,
    pub pages: u32,
    pub requests: u32,
    /// Why the day could not be read completely.
    pub error: Option<String>,
}

/// Reads the whole day with the fetch's query, keyset paging and retry policy,
/// and keeps the granules on allowed tiles. Unlike the fetch it does not stop
/// short of recent products: it reads everything visible now.
pub async fn read_day<C: Catalogue>(
    catalogue: &C,
    tiles: &TileSet,
    query: &DayQuery,
    options: &FetchOptions,
    deadline: Deadline,
    progress: &dyn Progress,
) -> CatalogueDay {
    let mut day = CatalogueDay::default();
    let mut cursor = FetchCursor {
        publication_date: query.window_start(),
        skip: 0,
    };
    loop {
        let (fetched, attempts) =
            fetch_page(catalogue, query, cursor, false, options, deadline, progress).await;
        day.requests += attempts;
        let page = match fetched {
            Fetched::Page(timed) => timed.page,
            Fetched::Stopped => {
                day.error = Some("the deadline came before the day was read".into());
                return day;
            }
            Fetched::Failed(source, elapsed) => {
                let error = DayFetchError::Catalogue {
                    attempts,
                    elapsed,
                    source,
                };
                day.error = Some(error.to_string());
                return day;
            }
        };
        day.pages += 1;
        let last = page.products.len() < options.page_size as usize;
        let next = cursor_after(&page.products, cursor);
        for product in page.products {
            day.products += 1;
            match product.granule {
                Ok(granule) if tiles.contains(&granule.tile_id) => day.allowed.push(granule),
                Ok(_) => {}
                Err(_) => day.rejected += 1,
            }
        }
        progress.page_done(Tally {
            pages: day.pages,
            examined: day.products,
            queued: 0,
        });
        if last {
            return day;
        }
        if next.skip > i64::from(options.max_skip) {
            let cap = DayFetchError::SkipCap {
                at: crate::adapters::catalogue::odata::odata_timestamp(next.publication_date),
                max: options.max_skip,
            };
            day.error = Some(cap.to_string());
            return day;
        }
        cursor = next;
    }
}

/// Audits one (day, platform): reads it, compares it with the store and, with
/// `requeue`, records and queues the missing granules (found by `audit`).
/// An error is the store's: the catalogue's faults are in the line.
#[allow(clippy::too_many_arguments)] // each is one of the audit's inputs; a struct would only rename them
pub async fn audit_day<C: Catalogue, Q: DownloadQueue>(
    catalogue: &C,
    tiles: &TileSet,
    query: &DayQuery,
    options: &FetchOptions,
    deadline: Deadline,
    handoff: &Handoff<Q>,
    requeue: bool,
    progress: &dyn Progress,
) -> Result<DayAudit, RecordError> {
    let day = read_day(catalogue, tiles, query, options, deadline, progress).await;
    // A product can be listed once only, but be safe: compare unique ids.
    let mut allowed: Vec<&Granule> = day.allowed.iter().collect();
    allowed.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    allowed.dedup_by(|a, b| a.id == b.id);
    let ids: Vec<&str> = allowed.iter().map(|g| g.id.as_str()).collect();
    let rows = handoff.store().audit_rows(&ids).await?;
    let recorded: HashMap<&str, _> = rows.iter().map(|r| (r.id.as_str(), r)).collect();

    let mut found_by = FoundByCounts::default();
    let mut delays: HashMap<FoundBy, Vec<f64>> = HashMap::new();
    for row in &rows {
        match row.found_by {
            Some(FoundBy::Poll) => found_by.poll += 1,
            Some(FoundBy::Push) => found_by.push += 1,
            Some(FoundBy::Audit) => found_by.audit += 1,
            None => found_by.unknown += 1,
        }
        if let (Some(path), Some(sent_at)) = (row.found_by, row.sent_at) {
            delays
                .entry(path)
                .or_default()
                .push(seconds_between(row.published, sent_at));
        }
    }
    let delay = |path: FoundBy| {
        let values = delays.get(&path)?;
        let (median, p99) = median_and_p99(values)?;
        Some(Delay {
            median,
            p99,
            count: values.len(),
        })
    };
    let missing: Vec<Granule> = allowed
        .iter()
        .filter(|g| !recorded.contains_key(g.id.as_str()))
        .map(|g| (*g).clone())
        .collect();

    let mut audit = DayAudit {
        query_date: query.date,
        platform: query.platform_label().to_owned(),
        complete: day.error.is_none(),
        error: day.error,
        catalogue_products: day.products,
        allowed: allowed.len() as i64,
        rejected: day.rejected,
        recorded: rows.len() as i64,
        missing: missing.len() as i64,
        missing_ids: missing
            .iter()
            .take(MAX_MISSING_IDS)
            .map(|g| g.id.clone())
            .collect(),
        unsent: rows.iter().filter(|r| r.owed).count() as i64,
        downloaded: rows.iter().filter(|r| r.downloaded).count() as i64,
        found_by,
        queue_delay_s: QueueDelays {
            poll: delay(FoundBy::Poll),
            push: delay(FoundBy::Push),
            audit: delay(FoundBy::Audit),
        },
        requeued: 0,
        pages: day.pages,
        requests: day.requests,
    };
    if requeue && !missing.is_empty() {
        match handoff.record_and_queue(&missing, FoundBy::Audit).await {
            Ok(new) => audit.requeued = new.len() as i64,
            // Recorded, and owed: the next sender sends them. Not counted as requeued.
            Err(error @ RecordError::Unsent { .. }) => {
                let reason = format!("requeue: {error}");
                audit.error = Some(match audit.error.take() {
                    Some(earlier) => format!("{earlier}; {reason}"),
                    None => reason,
                });
            }
            Err(error) => return Err(error),
        }
        for granule in &missing {
            tracing::info!(product_id = %granule.id, tile_id = %granule.tile_id, decision = "requeued", "missing granule");
        }
    }
    Ok(audit)
}

/// The readable table of an audit: one row per (day, platform) and a total.
pub fn render_table(audits: &[DayAudit]) -> String {
    let header = [
        "date",
        "platform",
        "catalogue",
        "allowed",
        "recorded",
        "missing",
        "requeued",
        "unsent",
        "downloaded",
        "poll",
        "push",
        "audit",
        "delay p50/p99 s",
        "complete",
    ];
    let delay = |d: &Option<Delay>| {
        d.as_ref()
            .map_or("-".to_owned(), |d| format!("{:.0}/{:.0}", d.median, d.p99))
    };
    let mut rows: Vec<Vec<String>> = audits
        .iter()
        .map(|a| {
            vec![
                a.query_date.to_string(),
                a.platform.clone(),
                a.catalogue_products.to_string(),
                a.allowed.to_string(),
                a.recorded.to_string(),
                a.missing.to_string(),
                a.requeued.to_string(),
                a.unsent.to_string(),
                a.downloaded.to_string(),
                a.found_by.poll.to_string(),
                a.found_by.push.to_string(),
                a.found_by.audit.to_string(),
                delay(&a.queue_delay_s.poll),
                if a.complete { "yes" } else { "NO" }.to_owned(),
            ]
        })
        .collect();
    let sum = |f: fn(&DayAudit) -> i64| audits.iter().map(f).sum::<i64>().to_string();
    rows.push(vec![
        "total".into(),
        String::new(),
        sum(|a| a.catalogue_products),
        sum(|a| a.allowed),
        sum(|a| a.recorded),
        sum(|a| a.missing),
        sum(|a| a.requeued),
        sum(|a| a.unsent),
        sum(|a| a.downloaded),
        sum(|a| a.found_by.poll),
        sum(|a| a.found_by.push),
        sum(|a| a.found_by.audit),
        String::new(),
        if audits.iter().all(|a| a.complete) {
            "yes"
        } else {
            "NO"
        }
        .into(),
    ]);
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                // Text left, numbers right.
                if i < 2 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(date: &str, platform: &str, missing: i64, requeued: i64, complete: bool) -> DayAudit {
        DayAudit {
            query_date: date.parse().unwrap(),
            platform: platform.into(),
            complete,
            error: (!complete).then(|| "catalogue down".into()),
            catalogue_products: 1200,
            allowed: 1000,
            rejected: 0,
            recorded: 1000 - missing,
            missing,
            missing_ids: Vec::new(),
            unsent: 1,
            downloaded: 990,
            found_by: FoundByCounts {
                poll: 700,
                push: 300 - missing,
                audit: 0,
                unknown: 0,
            },
            queue_delay_s: QueueDelays {
                poll: Some(Delay {
                    median: 3600.4,
                    p99: 7200.0,
                    count: 700,
                }),
                push: None,
                audit: None,
            },
            requeued,
            pages: 2,
            requests: 2,
        }
    }

    #[test]
    fn the_table_has_a_row_per_line_and_a_total() {
        let table = render_table(&[
            line("2024-04-01", "S2A", 0, 0, true),
            line("2024-04-01", "S2B", 3, 3, false),
        ]);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(rows[0].starts_with("date"), "{table}");
        assert!(rows[1].starts_with("2024-04-01  S2A"), "{table}");
        assert!(rows[1].contains("  3600/7200  "), "{table}");
        assert!(rows[1].ends_with(" yes"), "{table}");
        assert!(rows[2].ends_with("NO"), "{table}");
        assert!(rows[3].starts_with("total"), "{table}");
        // Totals: catalogue 2400, missing 3, and the day that could not be read shows.
        assert!(rows[3].contains("2400"), "{table}");
        assert!(rows[3].ends_with("NO"), "{table}");
        // Columns line up.
        let width = rows[0].find("catalogue").unwrap() + "catalogue".len();
        assert!(rows[1][..width].ends_with("1200"), "{table}");
    }

    #[test]
    fn the_metrics_say_what_is_still_missing_and_incomplete() {
        let metrics = line("2024-04-01", "S2B", 5, 3, false).metrics();
        let audit = &metrics.iter().find(|(p, _)| *p == "audit").unwrap().1;
        let value = |name: &str| audit.iter().find(|m| m.name == name).unwrap().value;
        assert_eq!(value("Missing"), 5.0);
        assert_eq!(value("StillMissing"), 2.0);
        assert_eq!(value("AuditIncomplete"), 1.0);
        let poll = &metrics.iter().find(|(p, _)| *p == "poll").unwrap().1;
        assert_eq!(poll[0].name, "QueueDelayMedian");
        assert_eq!(poll[1].value, 7200.0);
    }
}
