//! Where a day's granules go: the store and queue, or nowhere (a dry run).

use std::future::Future;

use chrono::Utc;

use super::Deadline;
use crate::adapters::catalogue::DayQuery;

use crate::adapters::queue::DownloadQueue;
use crate::adapters::store::{FetchCursor, FoundBy, GranuleCount};
use crate::domain::granule::Granule;
use crate::use_cases::handoff::{Handoff, RecordError};

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
