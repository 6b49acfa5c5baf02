//! Partial batch failures: `SendMessageBatch` can succeed as a call while SQS
//! rejects some of its entries. moto never does this, so a small stand-in SQS
//! (AWS JSON 1.0, as the SDK speaks it) rejects chosen entries.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{TimeZone, Utc};
use hls_core::{
    DownloadQueue, FoundBy, Granule, GranuleStore, Handoff, ProductFields, QueueError, RecordError,
    SqsQueue,
};
use integration_tests::{TestDatabase, fixtures};
use serde_json::{Value, json};

#[derive(Default)]
struct FakeSqs {
    /// Product ids rejected the first time they are sent.
    flaky: HashSet<String>,
    /// Product ids rejected every time.
    broken: HashSet<String>,
    seen: Mutex<Vec<Vec<String>>>,
    accepted: Mutex<Vec<String>>,
}

async fn send_message_batch(
    State(sqs): State<Arc<FakeSqs>>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target != "AmazonSQS.SendMessageBatch" {
        return (StatusCode::BAD_REQUEST, format!("unexpected {target}")).into_response();
    }
    let request: Value = serde_json::from_str(&body).unwrap();
    let mut successful = Vec::new();
    let mut failed = Vec::new();
    let mut call = Vec::new();
    for entry in request["Entries"].as_array().unwrap() {
        let message: Value = serde_json::from_str(entry["MessageBody"].as_str().unwrap()).unwrap();
        let id = message["id"].as_str().unwrap().to_owned();
        let first_time = !sqs.seen.lock().unwrap().iter().any(|c| c.contains(&id));
        call.push(id.clone());
        if sqs.broken.contains(&id) || (first_time && sqs.flaky.contains(&id)) {
            failed.push(json!({"Id": entry["Id"], "SenderFault": false, "Code": "InternalError", "Message": "try again"}));
        } else {
            sqs.accepted.lock().unwrap().push(id);
            successful.push(json!({"Id": entry["Id"], "MessageId": "m", "MD5OfMessageBody": "x"}));
        }
    }
    sqs.seen.lock().unwrap().push(call);
    (
        [("content-type", "application/x-amz-json-1.0")],
        json!({"Successful": successful, "Failed": failed}).to_string(),
    )
        .into_response()
}

async fn fake_sqs(flaky: &[&Granule], broken: &[&Granule]) -> (Arc<FakeSqs>, SqsQueue) {
    let state = Arc::new(FakeSqs {
        flaky: flaky.iter().map(|g| g.id.clone()).collect(),
        broken: broken.iter().map(|g| g.id.clone()).collect(),
        ..FakeSqs::default()
    });
    let app = Router::new()
        .route("/", axum::routing::post(send_message_batch))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "t", "t", None, None, "t",
        ))
        .endpoint_url(&endpoint)
        .build();
    let client = aws_sdk_sqs::Client::from_conf(config);
    (
        state,
        SqsQueue::new(client, format!("{endpoint}/123456789012/to-download"), 4),
    )
}

fn granules(count: usize) -> Vec<Granule> {
    let at = Utc.with_ymd_and_hms(2024, 4, 1, 10, 0, 0).unwrap();
    (0..count)
        .map(|n| {
            let name = fixtures::product_name("S2A", "28PHQ", at, n as u32);
            let id = format!("id-{n:03}");
            Granule::parse(ProductFields {
                id: &id,
                name: &name,
                tile_id_attribute: None,
                size: 1,
                begin_position: at,
                end_position: at,
                ingestion_date: at,
                download_url: "https://example.test/$value",
                checksum: None,
            })
            .unwrap()
        })
        .collect()
}

async fn owed_count(db: &TestDatabase) -> i64 {
    GranuleStore::new(db.pool.clone())
        .owed_count()
        .await
        .unwrap()
}

#[tokio::test]
async fn entries_rejected_inside_a_successful_batch_are_sent_again_alone() {
    let batch = granules(25);
    let (sqs, queue) = fake_sqs(&[&batch[3], &batch[14]], &[]).await;
    let db = TestDatabase::migrated().await;
    let handoff = Handoff::new(
        GranuleStore::new(db.pool.clone()),
        queue,
        Duration::from_secs(60),
    );
    let new = handoff
        .record_and_queue(&batch, FoundBy::Poll)
        .await
        .expect("flaky entries succeed on retry");
    assert_eq!(new.len(), 25);
    assert_eq!(
        owed_count(&db).await,
        0,
        "every accepted message is marked sent"
    );

    let accepted: HashSet<String> = sqs.accepted.lock().unwrap().iter().cloned().collect();
    assert_eq!(accepted.len(), 25);
    assert_eq!(
        sqs.accepted.lock().unwrap().len(),
        25,
        "an accepted entry was sent again"
    );
    let calls = sqs.seen.lock().unwrap().clone();
    assert_eq!(
        calls.iter().filter(|c| c.len() > 1).count(),
        3,
        "three batches of at most ten"
    );
    let retries: Vec<&Vec<String>> = calls.iter().filter(|c| c.len() == 1).collect();
    assert_eq!(retries.len(), 2);
    for retry in retries {
        assert!(
            retry[0] == batch[3].id || retry[0] == batch[14].id,
            "a retry carries only the rejected entry: {retry:?}"
        );
    }
}

#[tokio::test]
async fn an_entry_that_keeps_failing_stays_owed_alone_and_is_sent_by_the_next_sender() {
    let batch = granules(12);
    let (sqs, queue) = fake_sqs(&[], &[&batch[5]]).await;
    let error = queue
        .send_batch(
            &batch[..10]
                .iter()
                .map(Granule::download_message)
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error.error, QueueError::Rejected { count: 1, .. }),
        "{}",
        error.error
    );
    assert_eq!(error.accepted.len(), 9);
    assert!(!error.accepted.contains(&5));
    assert!(
        error.error.to_string().contains("InternalError"),
        "{}",
        error.error
    );
    assert!(
        sqs.seen.lock().unwrap().len() > 2,
        "the rejected entry was retried"
    );

    let db = TestDatabase::migrated().await;
    let store = GranuleStore::new(db.pool.clone());
    let handoff = Handoff::new(store.clone(), queue, Duration::from_secs(60));
    let error = handoff
        .record_and_queue(&batch, FoundBy::Poll)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            RecordError::Unsent {
                messages: 12,
                unsent: 1,
                ..
            }
        ),
        "{error}"
    );
    // Every row recorded; only the rejected entry's message is owed.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM granule")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 12);
    let owed: Vec<String> =
        sqlx::query_scalar("SELECT granule_id FROM granule_outbox WHERE sent_at IS NULL")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(owed, [batch[5].id.clone()]);

    // A healthy queue: the next sender sends exactly that one, at once (it was released).
    let (healthy, queue) = fake_sqs(&[], &[]).await;
    let next = Handoff::new(store, queue, Duration::from_secs(60));
    assert_eq!(next.send_owed(None).await.unwrap(), 1);
    assert_eq!(*healthy.accepted.lock().unwrap(), [batch[5].id.clone()]);
    assert_eq!(owed_count(&db).await, 0);
}
