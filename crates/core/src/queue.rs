//! The `To Download` queue: one message per new granule.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::{StreamExt, TryStreamExt, stream};

use crate::granule::Granule;

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

/// Where new granules are announced to the download service.
pub trait DownloadQueue: Send + Sync {
    /// Sends one message per granule; `Ok` only when every message was accepted.
    fn send(&self, granules: &[Granule]) -> impl Future<Output = Result<(), QueueError>> + Send;
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

    async fn send_batch(&self, granules: &[Granule]) -> Result<(), QueueError> {
        // Entry ids only need to be unique within one call: use the position.
        let mut pending: Vec<(String, String)> = granules
            .iter()
            .enumerate()
            .map(|(index, granule)| {
                let body = serde_json::to_string(&granule.download_message())
                    .expect("a message of strings serialises");
                (index.to_string(), body)
            })
            .collect();
        let mut detail = String::new();
        for attempt in 0..ENTRY_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(ENTRY_RETRY_BASE * 2u32.pow(attempt - 1)).await;
            }
            let entries = pending
                .iter()
                .map(|(id, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id)
                        .message_body(body)
                        .build()
                        .map_err(|e| QueueError::Build(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| QueueError::Send {
                    queue_url: self.queue_url.clone(),
                    detail: DisplayErrorContext(e).to_string(),
                })?;
            let failed = output.failed();
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
            let failed_ids: HashSet<&str> = failed.iter().map(|f| f.id()).collect();
            pending.retain(|(id, _)| failed_ids.contains(id.as_str()));
        }
        Err(QueueError::Rejected {
            count: pending.len(),
            attempts: ENTRY_ATTEMPTS,
            detail,
        })
    }
}

impl DownloadQueue for SqsQueue {
    async fn send(&self, granules: &[Granule]) -> Result<(), QueueError> {
        // Built eagerly: a lazy `map` closure here trips the compiler's `Send` check.
        let batches: Vec<_> = granules
            .chunks(SQS_BATCH_SIZE)
            .map(|batch| self.send_batch(batch))
            .collect();
        stream::iter(batches)
            .buffer_unordered(self.concurrency)
            .try_collect::<()>()
            .await
    }
}
