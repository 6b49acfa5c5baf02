//! The `To Download` queue: one message per new granule.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::domain::granule::DownloadMessage;

/// SQS takes at most ten entries per `SendMessageBatch`.
const SQS_BATCH_SIZE: usize = 10;
/// Entries SQS reported as failed inside a successful batch call are sent again
/// this many times in all; the SDK already retries whole calls that fail.
const ENTRY_ATTEMPTS: u32 = 4;
const ENTRY_RETRY_BASE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQS SendMessageBatch to {queue_url} failed: {detail}")]
    Send { queue_url: String, detail: String },
    #[error("SQS rejected {count} message(s) after {attempts} attempts, first: {detail}")]
    Rejected {
        count: usize,
        attempts: u32,
        detail: String,
    },
    #[error("cannot build SQS entry: {0}")]
    Build(String),
}

/// At most this many messages go in one [`DownloadQueue::send_batch`] (SQS's limit).
pub const MAX_BATCH: usize = SQS_BATCH_SIZE;

/// A batch that was not wholly accepted: the positions SQS did accept, and why
/// the others were not.
#[derive(Debug)]
pub struct BatchError {
    pub accepted: Vec<usize>,
    pub error: QueueError,
}

/// Where new granules are announced to the download service.
pub trait DownloadQueue: Send + Sync {
    /// Sends at most [`MAX_BATCH`] messages in one call (entries SQS rejects
    /// are sent again a few times); `Ok` only when every message was accepted.
    fn send_batch(
        &self,
        messages: &[DownloadMessage<'_>],
    ) -> impl Future<Output = Result<(), BatchError>> + Send;

    /// How many batches may be in flight at once.
    fn concurrency(&self) -> usize;
}

/// The real queue: SQS `SendMessageBatch`, ten entries a call, a few calls at once.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    concurrency: usize,
}

impl SqsQueue {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        concurrency: usize,
    ) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            concurrency: concurrency.max(1),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }
}

impl DownloadQueue for SqsQueue {
    async fn send_batch(&self, messages: &[DownloadMessage<'_>]) -> Result<(), BatchError> {
        debug_assert!(messages.len() <= SQS_BATCH_SIZE);
        if messages.is_empty() {
            return Ok(());
        }
        // Entry ids only need to be unique within one call: use the position.
        let mut pending: Vec<(usize, String)> = messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                let body = serde_json::to_string(message).expect("a message of strings serialises");
                (index, body)
            })
            .collect();
        let mut accepted = Vec::with_capacity(messages.len());
        let mut detail = String::new();
        for attempt in 0..ENTRY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(ENTRY_RETRY_BASE * 2u32.pow(attempt - 1)).await;
            }
            let entries = pending
                .iter()
                .map(|(index, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| QueueError::Build(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| BatchError {
                    accepted: accepted.clone(),
                    error,
                })?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| BatchError {
                    accepted: accepted.clone(),
                    error: QueueError::Send {
                        queue_url: self.queue_url.clone(),
                        detail: DisplayErrorContext(e).to_string(),
                    },
                })?;
            let failed = output.failed();
            let failed_ids: HashSet<usize> =
                failed.iter().filter_map(|f| f.id().parse().ok()).collect();
            accepted.extend(
                pending
                    .iter()
                    .map(|(index, _)| *index)
                    .filter(|index| !failed_ids.contains(index)),
            );
            if failed.is_empty() {
                return Ok(());
            }
            let first = &failed[0];
            detail = format!(
                "{} ({}{})",
                first.code(),
                first.message().unwrap_or("no message"),
                if first.sender_fault() {
                    ", sender fault"
                } else {
                    ""
                }
            );
            tracing::warn!(failed = failed.len(), attempt, %detail, "SQS rejected some batch entries");
            pending.retain(|(index, _)| failed_ids.contains(index));
        }
        Err(BatchError {
            accepted,
            error: QueueError::Rejected {
                count: pending.len(),
                attempts: ENTRY_ATTEMPTS,
                detail,
            },
        })
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }
}
