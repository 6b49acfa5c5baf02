//! The push endpoint's hand-off under faults, with `serve` as a real process on
//! real Postgres and a stand-in SQS that can hold calls: the process killed
//! (SIGKILL) after the commit and before the send, and after the send before the
//! "sent" mark. In each case CDSE's redelivery to a restarted server sends the
//! owed message, and the duplicates are counted.

use std::path::Path;

use chrono::Utc;
use integration_tests::push_server::PushServer;
use integration_tests::sqs_stub::{Mode, SqsStub};
use integration_tests::{TestDatabase, fixtures, random_suffix, wait_for};
use sqlx::{Connection, Executor};

const BIN: &str = env!("CARGO_BIN_EXE_link-subscription-handler");
const USERNAME: &str = "esa";
const PASSWORD: &str = "push-faults-password";

/// `serve` on the stand-in SQS, with a short outbox lease so a dead sender's
/// claim runs out quickly, and long SQS and lock timeouts so held calls wait.
struct Server(PushServer);

impl Server {
    fn start(db: &TestDatabase, sqs: &SqsStub) -> Self {
        Self(PushServer::start(
            Path::new(BIN),
            &[
                ("DATABASE_URL", db.url().as_str()),
                ("TO_DOWNLOAD_SQS_QUEUE_URL", sqs.queue_url().as_str()),
                ("AWS_ENDPOINT_URL", sqs.endpoint()),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
                ("AWS_ATTEMPT_TIMEOUT_SECONDS", "60"),
                ("NOTIFICATION_USERNAME", USERNAME),
                ("NOTIFICATION_PASSWORD", PASSWORD),
                ("OUTBOX_LEASE_SECONDS", "1"),
                ("DB_LOCK_TIMEOUT_MS", "60000"),
            ],
        ))
    }

    /// Delivers `body` as CDSE does; the answer's status.
    async fn deliver(&self, body: String) -> u16 {
        reqwest::Client::new()
            .post(self.0.events_url())
            .basic_auth(USERNAME, Some(PASSWORD))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("an answer")
            .status()
            .as_u16()
    }

    async fn kill(self) {
        self.0.kill().await;
    }
}

fn new_notification() -> (String, String) {
    let suffix = random_suffix();
    let id = format!("{}-0000-4000-8000-{}", &suffix[..8], &suffix[4..16]);
    let acquired = Utc::now() - chrono::Duration::hours(1);
    let name = fixtures::product_name("S2B", "28PHQ", acquired, 7);
    let body = fixtures::push_created_for(&id, &name, Utc::now(), acquired).to_string();
    (id, body)
}

async fn owed(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM granule_outbox WHERE sent_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn rows(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM granule")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// A delivery left hanging on the held queue, the server killed under it.
async fn deliver_and_kill_while_held(db: &TestDatabase, sqs: &SqsStub, body: &str) -> Server {
    sqs.set_mode(Mode::PassThenHold(0));
    let server = Server::start(db, sqs);
    let events = server.0.events_url();
    let hanging = {
        let body = body.to_owned();
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .post(events)
                .basic_auth(USERNAME, Some(PASSWORD))
                .body(body)
                .send()
                .await;
        })
    };
    wait_for("the row committed and its send held", || async {
        rows(db).await == 1 && sqs.held() == 1
    })
    .await;
    drop(hanging);
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_the_commit_and_before_the_send_then_redelivered() {
    let (db, sqs) = tokio::join!(TestDatabase::migrated(), SqsStub::start());
    let (id, body) = new_notification();
    let server = deliver_and_kill_while_held(&db, &sqs, &body).await;
    server.kill().await;
    assert_eq!(owed(&db).await, 1);
    assert!(sqs.accepted().is_empty());

    // CDSE redelivers to a new server: the dead sender's claim runs out, the message goes.
    sqs.set_mode(Mode::Pass);
    let server = Server::start(&db, &sqs);
    assert_eq!(server.deliver(body.clone()).await, 204);
    assert_eq!(sqs.accepted(), std::slice::from_ref(&id));
    assert_eq!(owed(&db).await, 0);
    // Another redelivery sends nothing more.
    assert_eq!(server.deliver(body).await, 204);
    assert_eq!(sqs.duplicates(), 0);
    assert_eq!(rows(&db).await, 1);
    server.kill().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_the_send_and_before_the_sent_mark_then_redelivered() {
    let (db, sqs) = tokio::join!(TestDatabase::migrated(), SqsStub::start());
    let (id, body) = new_notification();
    let server = deliver_and_kill_while_held(&db, &sqs, &body).await;
    // No "sent" mark can land; then SQS takes the message.
    let mut blocker = sqlx::PgConnection::connect_with(&db.options).await.unwrap();
    blocker.execute("BEGIN").await.unwrap();
    blocker
        .execute("LOCK TABLE granule_outbox IN SHARE MODE")
        .await
        .unwrap();
    sqs.set_mode(Mode::Pass);
    wait_for("the message sent and its mark waiting", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'UPDATE granule_outbox SET sent_at%'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        sqs.accepted().len() == 1 && waiting == 1
    })
    .await;
    server.kill().await;
    blocker.execute("ROLLBACK").await.unwrap();
    assert_eq!(owed(&db).await, 1);

    let server = Server::start(&db, &sqs);
    assert_eq!(server.deliver(body.clone()).await, 204);
    assert_eq!(owed(&db).await, 0);
    assert_eq!(server.deliver(body).await, 204);
    // The one duplicate the design allows: sent, not marked, sent again.
    assert_eq!(sqs.accepted(), [id.clone(), id]);
    assert_eq!(sqs.duplicates(), 1);
    server.kill().await;
}
