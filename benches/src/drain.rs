//! The download service's side of the queue: receive and delete while a run goes,
//! since moto slows down as messages pile up. moto may deliver a message twice
//! under concurrency, so granules are counted by id.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::time::Instant;

#[derive(Default)]
struct Shared {
    ids: Mutex<HashSet<String>>,
    deliveries: AtomicUsize,
    stop: AtomicBool,
    last_message: Mutex<Option<Instant>>,
}

pub struct Drainer {
    shared: Arc<Shared>,
    workers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Drained {
    /// Distinct granule ids received.
    pub unique: usize,
    /// Messages received in all, redeliveries included.
    pub deliveries: usize,
}

impl Drainer {
    pub fn start(client: &aws_sdk_sqs::Client, queue_url: &str, workers: usize) -> Self {
        let shared = Arc::new(Shared::default());
        let workers = (0..workers)
            .map(|_| {
                let (client, url, shared) = (client.clone(), queue_url.to_owned(), shared.clone());
                tokio::spawn(async move { drain(client, url, shared).await })
            })
            .collect();
        Self { shared, workers }
    }

    pub fn unique(&self) -> usize {
        self.shared.ids.lock().unwrap().len()
    }

    /// Waits until `expected` distinct granules arrived, or nothing arrived for
    /// `idle`, then stops the workers.
    pub async fn finish(mut self, expected: usize, idle: Duration) -> anyhow::Result<Drained> {
        let waiting_since = Instant::now();
        while self.unique() < expected {
            let last = self
                .shared
                .last_message
                .lock()
                .unwrap()
                .unwrap_or(waiting_since);
            if last.max(waiting_since).elapsed() >= idle {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        for worker in std::mem::take(&mut self.workers) {
            worker.await??;
        }
        Ok(Drained {
            unique: self.unique(),
            deliveries: self.shared.deliveries.load(Ordering::SeqCst),
        })
    }
}

async fn drain(
    client: aws_sdk_sqs::Client,
    url: String,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    while !shared.stop.load(Ordering::SeqCst) {
        let output = client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await?;
        let messages = output.messages.unwrap_or_default();
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        *shared.last_message.lock().unwrap() = Some(Instant::now());
        shared
            .deliveries
            .fetch_add(messages.len(), Ordering::SeqCst);
        let mut entries = Vec::with_capacity(messages.len());
        {
            let mut ids = shared.ids.lock().unwrap();
            for (index, message) in messages.iter().enumerate() {
                let body: serde_json::Value =
                    serde_json::from_str(message.body().unwrap_or_default())?;
                if let Some(id) = body["id"].as_str() {
                    ids.insert(id.to_owned());
                }
                entries.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .build()?,
                );
            }
        }
        client
            .delete_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    Ok(())
}
