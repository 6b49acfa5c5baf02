//! A stand-in SQS endpoint for fault injection: `SendMessageBatch` over the AWS
//! JSON 1.0 protocol, as the SDK speaks it, on a random port. It keeps every
//! message it accepted (so duplicates can be counted), and can be told to hold
//! calls until released, to answer only a number of calls and hold the rest, to
//! reject chosen messages every time, or to be down (HTTP 503 to everything).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

/// How the stub answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accept every message not rejected by id.
    Pass,
    /// Answer this many more calls normally, then hold every call until the mode changes.
    PassThenHold(usize),
    /// HTTP 503 to every call, as when SQS is unreachable.
    Down,
}

struct Stub {
    mode: watch::Sender<Mode>,
    /// Calls answered since the mode was last set (for `PassThenHold`).
    passed: AtomicUsize,
    held: AtomicUsize,
    reject: Mutex<HashSet<String>>,
    accepted: Mutex<Vec<String>>,
}

pub struct SqsStub {
    url: String,
    stub: Arc<Stub>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for SqsStub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl SqsStub {
    pub async fn start() -> Self {
        let stub = Arc::new(Stub {
            mode: watch::channel(Mode::Pass).0,
            passed: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            reject: Mutex::default(),
            accepted: Mutex::default(),
        });
        let app = axum::Router::new()
            .route("/", axum::routing::post(call))
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SQS stub");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("SQS stub");
        });
        Self { url, stub, server }
    }

    /// The endpoint, for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.url
    }

    /// A queue URL on this endpoint, for `TO_DOWNLOAD_SQS_QUEUE_URL`.
    pub fn queue_url(&self) -> String {
        format!("{}/123456789012/to-download", self.url)
    }

    /// An SDK client pointed at the stub, with dummy credentials.
    pub fn sqs_queue(&self, concurrency: usize) -> hls_core::SqsQueue {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "t", "t", None, None, "t",
            ))
            .endpoint_url(&self.url)
            .build();
        hls_core::SqsQueue::new(
            aws_sdk_sqs::Client::from_conf(config),
            self.queue_url(),
            concurrency,
        )
    }

    pub fn set_mode(&self, mode: Mode) {
        self.stub.passed.store(0, Ordering::SeqCst);
        self.stub.mode.send_replace(mode);
    }

    /// Messages of these granule ids are rejected (as entry failures) every time.
    pub fn reject(&self, ids: impl IntoIterator<Item = String>) {
        *self.stub.reject.lock().unwrap() = ids.into_iter().collect();
    }

    /// Calls waiting for the mode to change.
    pub fn held(&self) -> usize {
        self.stub.held.load(Ordering::SeqCst)
    }

    /// Granule ids of every message accepted, in order, repeats included.
    pub fn accepted(&self) -> Vec<String> {
        self.stub.accepted.lock().unwrap().clone()
    }

    /// How many times each granule id was accepted.
    pub fn deliveries(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for id in self.accepted() {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    /// Accepted messages beyond the first of each granule.
    pub fn duplicates(&self) -> usize {
        self.deliveries().values().map(|n| n - 1).sum()
    }
}

async fn call(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: String) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut mode = stub.mode.subscribe();
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::Pass => break,
            Mode::Down => {
                return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
            }
            Mode::PassThenHold(n) => {
                if stub.passed.fetch_add(1, Ordering::SeqCst) < n {
                    break;
                }
                stub.passed.fetch_sub(1, Ordering::SeqCst);
                // Counted while it waits, even when the caller goes away (a killed process).
                let _held = Held::new(&stub.held);
                if mode.changed().await.is_err() {
                    return (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response();
                }
            }
        }
    }
    if target != "AmazonSQS.SendMessageBatch" {
        return (StatusCode::BAD_REQUEST, format!("unexpected {target}")).into_response();
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let reject = stub.reject.lock().unwrap().clone();
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    for entry in request["Entries"].as_array().into_iter().flatten() {
        let message: Value = serde_json::from_str(entry["MessageBody"].as_str().unwrap_or("null"))
            .unwrap_or_default();
        let id = message["id"].as_str().unwrap_or_default().to_owned();
        if reject.contains(&id) {
            failed.push(json!({"Id": entry["Id"], "SenderFault": false, "Code": "InternalError", "Message": "rejected by the stub"}));
        } else {
            stub.accepted.lock().unwrap().push(id);
            successful.push(json!({"Id": entry["Id"], "MessageId": "m", "MD5OfMessageBody": "x"}));
        }
    }
    (
        [("content-type", "application/x-amz-json-1.0")],
        json!({"Successful": successful, "Failed": failed}).to_string(),
    )
        .into_response()
}

struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
