//! The download service's side of the queue, as the Python download Lambda
//! behaves: receive a message, look its granule's row up at once, delete it.
//! Every message is recorded with whether its row was there, so that the
//! checks see every message sent and any that arrived before its row.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use sqlx::PgPool;

use crate::history::{Delivery, History, from_epoch_ms, now};

pub struct Consumer {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub pool: PgPool,
    pub history: Arc<History>,
}

impl Consumer {
    /// Receives until `stop` is set.
    pub async fn run(self: Arc<Self>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            let received = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send()
                .await;
            let messages = match received {
                Ok(output) => output.messages.unwrap_or_default(),
                Err(_) => {
                    // The queue is down: try again shortly.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            let received_at = now();
            let started = Instant::now();
            let ids: Vec<String> = messages
                .iter()
                .map(|m| {
                    let body: serde_json::Value =
                        serde_json::from_str(m.body().unwrap_or_default()).unwrap_or_default();
                    body["id"].as_str().unwrap_or("<no id>").to_owned()
                })
                .collect();
            // Looked up at once; while Postgres is down the downloader cannot
            // look, so the message waits (it is not deleted) and the lookup is retried.
            let found: HashSet<String> = loop {
                match sqlx::query_scalar::<_, String>("SELECT id FROM granule WHERE id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&self.pool)
                    .await
                {
                    Ok(found) => break found.into_iter().collect(),
                    Err(_) if stop.load(Ordering::SeqCst) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let lookup_ms = started.elapsed().as_secs_f64() * 1000.0;
            {
                let mut deliveries = self.history.deliveries.lock().unwrap();
                for (message, id) in messages.iter().zip(&ids) {
                    let sent_ms = message
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0);
                    deliveries.push(Delivery {
                        t: received_at,
                        granule_id: id.clone(),
                        message_id: message.message_id().unwrap_or_default().to_owned(),
                        sent: from_epoch_ms(sent_ms),
                        row_found: found.contains(id),
                        lookup_ms,
                    });
                }
            }
            let entries: Vec<DeleteMessageBatchRequestEntry> = messages
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .ok()
                })
                .collect();
            // A delete lost to an outage only means SQS delivers the message again.
            let _ = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
        }
    }

    /// Messages in the queue, visible or in flight; `None` while it is unreachable.
    pub async fn backlog(&self) -> Option<i64> {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(Name::ApproximateNumberOfMessages)
            .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(Name::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .ok()?;
        let attributes = output.attributes?;
        Some(
            attributes
                .values()
                .filter_map(|v| v.parse::<i64>().ok())
                .sum(),
        )
    }
}
