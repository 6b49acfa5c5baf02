//! The hand-off to the download service: record each new granule, then queue its
//! message, in that order and durably (a transactional outbox).
//!
//! The download Lambda is triggered by SQS within milliseconds and looks the
//! granule's row up first; a message whose row is not committed yet is dropped
//! for good. So:
//!
//! 1. one statement inserts the new granule rows and, for each, an outbox row
//!    saying its message is owed, leased to this sender (`granule_outbox`);
//! 2. only then are the messages sent, ten to a `SendMessageBatch`;
//! 3. what SQS accepted is marked sent as batches finish (the batches that
//!    finish together share one statement); a batch that failed is released at
//!    once, so the next sender takes it.
//!
//! Whatever is owed and held by no live sender (a crash, a timeout, an SQS
//! outage) is sent by whoever comes next: [`Handoff::send_owed`] at the start of
//! every fetch, [`Handoff::redeliver`] when CDSE posts the notification again.
//! Claims use `FOR UPDATE SKIP LOCKED` and a lease, so two senders never take the
//! same owed row while its lease runs. The one source of duplicates: a crash or
//! timeout between SQS accepting a batch and its "sent" mark repeats that batch
//! (at most the batches in flight, [`DownloadQueue::concurrency`] of ten, and
//! those waiting for the mark being written).
//!
//! Uses the store and the queue; neither knows the other.

use std::time::Duration;

use futures::{StreamExt, stream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::adapters::queue::{DownloadQueue, MAX_BATCH, QueueError};
use crate::adapters::store::{FoundBy, GranuleStore, OwedState, StoreError};
use crate::domain::granule::{DownloadMessage, Granule};

/// How long a sender holds the owed messages it claimed (`OUTBOX_LEASE_SECONDS`,
/// read by [`crate::config::outbox_lease`]):
/// longer than any send of one claim takes, so that no one else sends them meanwhile.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);
/// Owed messages claimed at once by [`Handoff::send_owed`].
const OWED_CLAIM: i64 = 500;
/// How often a redelivery looks again at a message another sender holds.
const REDELIVERY_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{unsent} of {messages} message(s) not sent, first: {source}; they are recorded and \
         owed, and the next fetch (or CDSE's redelivery) sends them"
    )]
    Unsent {
        messages: usize,
        unsent: usize,
        #[source]
        source: QueueError,
    },
}

/// What became of the owed message of a granule CDSE notified again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// It had been sent (or was never owed).
    AlreadySent,
    /// It was owed, and this call sent it.
    SentNow,
    /// It is owed and another sender still holds it after the wait.
    StillHeld,
}

/// Ids SQS accepted, waiting for their "sent" mark.
struct SentBatch<'m> {
    ids: Vec<&'m str>,
    marked: oneshot::Sender<()>,
}

/// The record-and-queue unit: the store and the queue, tied in the one order
/// that cannot lose a granule.
#[derive(Debug, Clone)]
pub struct Handoff<Q> {
    store: GranuleStore,
    queue: Q,
    lease: Duration,
}

impl<Q: DownloadQueue> Handoff<Q> {
    pub fn new(store: GranuleStore, queue: Q, lease: Duration) -> Self {
        Self {
            store,
            queue,
            lease,
        }
    }

    pub fn store(&self) -> &GranuleStore {
        &self.store
    }

    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// Records the granules not recorded before, then queues exactly those.
    /// Returns the new ones. On a queue fault the rows stay recorded, their
    /// messages owed: the error says how many, and a later sender sends them.
    pub async fn record_and_queue(
        &self,
        granules: &[Granule],
        found_by: FoundBy,
    ) -> Result<Vec<Granule>, RecordError> {
        // Sorted ids give every statement the same lock order (no deadlocks);
        // duplicates inside one batch are recorded once.
        let mut batch: Vec<&Granule> = granules.iter().collect();
        batch.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        batch.dedup_by(|a, b| a.id == b.id);
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut inserted = self.store.record_new(&batch, found_by, self.lease).await?;
        // RETURNING keeps no order; both lists are sorted by id.
        inserted.sort_unstable();
        let new: Vec<Granule> = batch
            .into_iter()
            .filter(|g| inserted.binary_search(&g.id).is_ok())
            .cloned()
            .collect();
        let messages: Vec<DownloadMessage<'_>> =
            new.iter().map(Granule::download_message).collect();
        self.send(&messages).await?;
        Ok(new)
    }

    /// Sends every owed message no live sender holds, oldest first, until none
    /// is left or `until` has passed. Returns how many were sent.
    pub async fn send_owed(&self, until: Option<Instant>) -> Result<usize, RecordError> {
        let mut sent = 0;
        while until.is_none_or(|until| Instant::now() < until) {
            let owed = self.store.claim_owed(OWED_CLAIM, self.lease).await?;
            if owed.is_empty() {
                break;
            }
            tracing::info!(owed = owed.len(), "sending owed messages");
            let messages: Vec<DownloadMessage<'_>> =
                owed.iter().map(|m| m.download_message()).collect();
            self.send(&messages).await?;
            sent += owed.len();
        }
        Ok(sent)
    }

    /// For a granule already recorded: sends its message if it is still owed.
    /// When another sender holds it, waits up to `wait` for that sender to
    /// finish (or to give it up, and then sends it here).
    pub async fn redeliver(&self, id: &str, wait: Duration) -> Result<Redelivery, RecordError> {
        let give_up = Instant::now() + wait;
        loop {
            match self.store.claim_owed_one(id, self.lease).await? {
                OwedState::NotOwed => return Ok(Redelivery::AlreadySent),
                OwedState::Claimed(message) => {
                    self.send(&[message.download_message()]).await?;
                    return Ok(Redelivery::SentNow);
                }
                OwedState::HeldElsewhere if Instant::now() >= give_up => {
                    return Ok(Redelivery::StillHeld);
                }
                OwedState::HeldElsewhere => tokio::time::sleep(REDELIVERY_POLL).await,
            }
        }
    }

    /// Sends messages this caller holds, a few batches at once. Each batch SQS
    /// accepted is marked sent before its place is given to the next batch, so
    /// no more than the batches in flight are ever sent and unmarked; the batches
    /// that finish while a mark is being written share the next statement, so
    /// the marks keep up however fast the queue answers. Every batch runs to its
    /// end (none is abandoned half-sent); the first failure is returned after all.
    async fn send(&self, messages: &[DownloadMessage<'_>]) -> Result<(), RecordError> {
        if messages.is_empty() {
            return Ok(());
        }
        let (accepted_tx, accepted_rx) = mpsc::unbounded_channel();
        // Built eagerly: a lazy `map` closure here trips the compiler's `Send` check.
        let batches: Vec<_> = messages
            .chunks(MAX_BATCH)
            .map(|batch| self.send_batch(batch, accepted_tx.clone()))
            .collect();
        drop(accepted_tx);
        let sending = stream::iter(batches)
            .buffer_unordered(self.queue.concurrency().max(1))
            .collect::<Vec<Result<(), (usize, QueueError)>>>();
        let (outcomes, ()) = tokio::join!(sending, self.mark_sent_as_accepted(accepted_rx));
        let mut unsent = 0;
        let mut first = None;
        for (count, error) in outcomes.into_iter().filter_map(Result::err) {
            unsent += count;
            first.get_or_insert(error);
        }
        match first {
            None => Ok(()),
            Some(source) => Err(RecordError::Unsent {
                messages: messages.len(),
                unsent,
                source,
            }),
        }
    }

    /// Marks the ids SQS accepted, all the batches waiting at once, and tells
    /// each batch its mark is written; until every batch has finished (the
    /// channel closes).
    async fn mark_sent_as_accepted(&self, mut accepted: mpsc::UnboundedReceiver<SentBatch<'_>>) {
        while let Some(first) = accepted.recv().await {
            let mut waiting = vec![first];
            while let Ok(more) = accepted.try_recv() {
                waiting.push(more);
            }
            let ids: Vec<&str> = waiting.iter().flat_map(|b| b.ids.iter().copied()).collect();
            if let Err(error) = self.store.mark_sent(&ids).await {
                // Sent but not marked: sent again once the lease runs out.
                tracing::warn!(%error, messages = ids.len(), "sent, but the sent mark failed; they will be sent again");
            }
            for batch in waiting {
                let _ = batch.marked.send(());
            }
        }
    }

    /// One batch: send, hand what SQS accepted to the marker, release the rest.
    /// Returns how many were not sent, and why.
    async fn send_batch<'m>(
        &self,
        batch: &[DownloadMessage<'m>],
        accepted_tx: mpsc::UnboundedSender<SentBatch<'m>>,
    ) -> Result<(), (usize, QueueError)> {
        let (accepted, failure) = match self.queue.send_batch(batch).await {
            Ok(()) => (batch.iter().map(|m| m.id).collect::<Vec<_>>(), None),
            Err(error) => (
                error.accepted.iter().map(|&i| batch[i].id).collect(),
                Some(error.error),
            ),
        };
        let unsent: Vec<&str> = batch
            .iter()
            .map(|m| m.id)
            .filter(|id| !accepted.contains(id))
            .collect();
        if !accepted.is_empty() {
            let (marked, wait) = oneshot::channel();
            // The marker lives until every batch has finished, so both succeed.
            let _ = accepted_tx.send(SentBatch {
                ids: accepted,
                marked,
            });
            let _ = wait.await;
        }
        let Some(error) = failure else {
            return Ok(());
        };
        if let Err(release) = self.store.release(&unsent).await {
            // The lease runs out instead.
            tracing::warn!(error = %release, "could not release unsent messages");
        }
        tracing::warn!(%error, unsent = unsent.len(), "messages not sent; they stay owed");
        Err((unsent.len(), error))
    }
}
