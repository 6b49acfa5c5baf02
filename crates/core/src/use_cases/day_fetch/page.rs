//! One page request with the retry policy and the deadline, and the keyset
//! cursor after a page.

use chrono::{DateTime, Utc};

use super::{Deadline, FetchOptions, Progress, RETRY_LOG_TARGET, Retry};
use crate::adapters::catalogue::{
    Catalogue, CatalogueError, CataloguePage, DayQuery, PageProduct, PageRequest,
};
use crate::adapters::store::FetchCursor;

/// A page, and when the request that brought it was sent.
pub(crate) struct TimedPage {
    pub(crate) page: CataloguePage,
    pub(crate) requested_at: DateTime<Utc>,
}

pub(crate) enum Fetched {
    Page(TimedPage),
    /// The stop point came first: no attempt runs past it.
    Stopped,
    /// The last attempt's error, and the time from the first attempt to it.
    Failed(CatalogueError, std::time::Duration),
}

/// One page at `cursor` with the retry policy (and its budget), each attempt
/// bounded by the stop point; returns the attempts made. Each retry is logged
/// and told to `observer`.
pub(crate) async fn fetch_page<C: Catalogue>(
    catalogue: &C,
    query: &DayQuery,
    cursor: FetchCursor,
    count: bool,
    options: &FetchOptions,
    deadline: Deadline,
    observer: &dyn Progress,
) -> (Fetched, u32) {
    let mut attempt = 0;
    let first = std::time::Instant::now();
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
        if !error.is_transient() {
            return (Fetched::Failed(error, first.elapsed()), attempt);
        }
        if timeout < options.request_timeout && !deadline.allows_request() {
            // The attempt was cut at the stop point.
            tracing::info!(%error, "the catalogue had not answered by the stop point");
            return (Fetched::Stopped, attempt);
        }
        if attempt >= options.retry.max_attempts {
            return (Fetched::Failed(error, first.elapsed()), attempt);
        }
        let delay = options.retry.delay(attempt, error.retry_after());
        if deadline.time_left().is_some_and(|left| left <= delay) {
            tracing::warn!(%error, ?delay, "no time left before the deadline to retry");
            return (Fetched::Failed(error, first.elapsed()), attempt);
        }
        if !options.retry.allows_retry(first.elapsed(), delay) {
            // The command line's budget: a person is waiting.
            return (Fetched::Failed(error, first.elapsed()), attempt);
        }
        tracing::warn!(target: RETRY_LOG_TARGET, %error, attempt, ?delay, "catalogue fault; retrying");
        observer.retrying(&Retry {
            attempt,
            max_attempts: options.retry.max_attempts,
            delay,
            error: &error,
        });
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
}
