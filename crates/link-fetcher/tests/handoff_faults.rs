//! Faults at every point of the hand-off, with the real `link-fetcher` process,
//! real Postgres and a stand-in SQS that can hold, reject or refuse calls:
//! the process killed (SIGKILL) after the commit and before the send, in the
//! middle of a page's sends, and after the sends before the "sent" mark; SQS
//! rejecting one batch of a page; SQS down for a whole run.
//!
//! After each, one more normal run must leave every granule row with its message
//! sent at least once, nothing owed, and no message without a row. The
//! duplicates each fault costs are counted and asserted.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use chrono::NaiveDate;
use integration_tests::catalogue_stub::{CatalogueStub, synthetic_day};
use integration_tests::sqs_stub::{Mode, SqsStub};
use integration_tests::{TestDatabase, wait_for};
use sqlx::{Connection, Executor};

const BIN: &str = env!("CARGO_BIN_EXE_link-fetcher");
const DATE: &str = "2024-04-01";
const PAGE: usize = 100;
const PAGES: usize = 4;
/// `SQS_SEND_CONCURRENCY`: batches of ten in flight at once.
const CONCURRENCY: usize = 8;
/// `OUTBOX_LEASE_SECONDS`: how long a killed sender's claim outlives it.
const LEASE: Duration = Duration::from_secs(1);

/// A day of `PAGES` pages, every product on an allowed tile, and the services
/// one `link-fetcher fetch` needs.
struct Rig {
    catalogue: CatalogueStub,
    sqs: SqsStub,
    db: TestDatabase,
    tiles: PathBuf,
    /// Product ids in catalogue order (ids sort the same way).
    ids: Vec<String>,
}

impl Rig {
    async fn new() -> Self {
        let (catalogue, sqs, db) = tokio::join!(
            CatalogueStub::start(),
            SqsStub::start(),
            TestDatabase::migrated()
        );
        let date: NaiveDate = DATE.parse().unwrap();
        let prefix = format!("fault-{}", integration_tests::random_suffix());
        let products = synthetic_day(&prefix, date, PAGE * PAGES, &["54PXA"]);
        let ids = products
            .iter()
            .map(|p| p["Id"].as_str().unwrap().to_owned())
            .collect();
        catalogue.add_products(products);
        let tiles = std::env::temp_dir().join(format!(
            "faults-tiles-{}.txt",
            integration_tests::random_suffix()
        ));
        std::fs::write(&tiles, "54PXA\n").unwrap();
        Self {
            catalogue,
            sqs,
            db,
            tiles,
            ids,
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command.env_remove("AWS_LAMBDA_RUNTIME_API");
        command
            .args(["fetch", "--date", DATE])
            .env("SEARCH_URL", self.catalogue.url())
            .env("ALLOWED_TILES_FILE", &self.tiles)
            .env("CATALOGUE_PAGE_SIZE", PAGE.to_string())
            .env("CATALOGUE_MAX_ATTEMPTS", "2")
            .env("CATALOGUE_RETRY_BASE_MS", "10")
            .env("DATABASE_URL", self.db.url())
            .env("TO_DOWNLOAD_SQS_QUEUE_URL", self.sqs.queue_url())
            .env("AWS_ENDPOINT_URL", self.sqs.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_MAX_ATTEMPTS", "2")
            .env("AWS_ATTEMPT_TIMEOUT_SECONDS", "60")
            .env("SQS_SEND_CONCURRENCY", CONCURRENCY.to_string())
            .env("OUTBOX_LEASE_SECONDS", LEASE.as_secs().to_string())
            // A held lock or a busy pool must not end the wait before the kill does.
            .env("DB_LOCK_TIMEOUT_MS", "60000")
            .env("DB_ACQUIRE_TIMEOUT_SECONDS", "60")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn spawn(&self) -> Child {
        self.command().spawn().expect("start link-fetcher")
    }

    async fn run(&self) -> Output {
        let mut command = self.command();
        tokio::task::spawn_blocking(move || command.output().expect("run link-fetcher"))
            .await
            .unwrap()
    }

    async fn scalar(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn recorded(&self) -> i64 {
        self.scalar("SELECT count(*) FROM granule").await
    }

    async fn marked_sent(&self) -> i64 {
        self.scalar("SELECT count(*) FROM granule_outbox WHERE sent_at IS NOT NULL")
            .await
    }

    async fn owed(&self) -> BTreeSet<String> {
        sqlx::query_scalar("SELECT granule_id FROM granule_outbox WHERE sent_at IS NULL")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// One more normal run after the fault, then the checks every fault must pass.
    async fn recover_and_check(&self) {
        self.sqs.set_mode(Mode::Pass);
        self.sqs.reject([]);
        // A killed sender's claim runs out first.
        tokio::time::sleep(LEASE + Duration::from_millis(200)).await;
        let output = self.run().await;
        assert!(output.status.success(), "{}", stderr(&output));
        let summary: serde_json::Value =
            serde_json::from_slice(output.stdout.trim_ascii()).unwrap();
        assert_eq!(summary["completed"], true, "{summary}");

        let recorded: BTreeSet<String> = sqlx::query_scalar("SELECT id FROM granule")
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let expected: BTreeSet<String> = self.ids.iter().cloned().collect();
        assert_eq!(recorded, expected, "every product recorded once");
        let delivered: BTreeSet<String> = self.sqs.deliveries().into_keys().collect();
        assert_eq!(
            delivered, recorded,
            "every row has a message, and no message lacks a row"
        );
        assert!(self.owed().await.is_empty(), "nothing left owed");
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn kill(mut child: Child) {
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_the_commit_and_before_the_send() {
    let rig = Rig::new().await;
    rig.sqs.set_mode(Mode::PassThenHold(0));
    let child = rig.spawn();
    wait_for("the first page committed and its sends held", || async {
        rig.recorded().await == PAGE as i64 && rig.sqs.held() > 0
    })
    .await;
    kill(child).await;
    // Recorded, nothing sent: every row is owed, none lost.
    assert_eq!(rig.owed().await.len(), PAGE);
    assert!(rig.sqs.accepted().is_empty());

    rig.recover_and_check().await;
    assert_eq!(rig.sqs.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_pages_sends() {
    let rig = Rig::new().await;
    // Three batches of the first page go through; the rest hang.
    rig.sqs.set_mode(Mode::PassThenHold(3));
    let child = rig.spawn();
    wait_for("three batches sent and marked, the rest held", || async {
        rig.sqs.accepted().len() == 30 && rig.marked_sent().await == 30 && rig.sqs.held() > 0
    })
    .await;
    kill(child).await;
    assert_eq!(rig.owed().await.len(), PAGE - 30);

    rig.recover_and_check().await;
    // Each batch was marked as soon as SQS took it: nothing is sent twice.
    assert_eq!(rig.sqs.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_the_sends_and_before_the_sent_marks() {
    let rig = Rig::new().await;
    rig.sqs.set_mode(Mode::PassThenHold(0));
    let child = rig.spawn();
    wait_for("the first page committed and its sends held", || async {
        rig.recorded().await == PAGE as i64 && rig.sqs.held() == CONCURRENCY
    })
    .await;
    // Hold the outbox so that no "sent" mark can land, then let SQS answer.
    let mut blocker = sqlx::PgConnection::connect_with(&rig.db.options)
        .await
        .unwrap();
    blocker.execute("BEGIN").await.unwrap();
    blocker
        .execute("LOCK TABLE granule_outbox IN SHARE MODE")
        .await
        .unwrap();
    rig.sqs.set_mode(Mode::Pass);
    wait_for(
        "the batches in flight sent, their marks waiting",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'UPDATE granule_outbox SET sent_at%'",
            )
            .fetch_one(&rig.db.pool)
            .await
            .unwrap();
            rig.sqs.accepted().len() == CONCURRENCY * 10 && waiting > 0
        },
    )
    .await;
    kill(child).await;
    blocker.execute("ROLLBACK").await.unwrap();
    let sent_before_the_kill = rig.sqs.accepted().len();
    assert_eq!(rig.marked_sent().await, 0);

    rig.recover_and_check().await;
    // The one source of duplicates: the batches in flight, sent but not marked.
    assert_eq!(rig.sqs.duplicates(), sent_before_the_kill);
    assert_eq!(sent_before_the_kill, CONCURRENCY * 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_failing_for_one_batch_of_a_page() {
    let rig = Rig::new().await;
    // The third batch of the second page (ids sort in catalogue order).
    let batch: Vec<String> = rig.ids[PAGE + 20..PAGE + 30].to_vec();
    rig.sqs.reject(batch.clone());
    let output = rig.run().await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("10 of 100 message(s) not sent"),
        "{}",
        stderr(&output)
    );
    // The run stopped after that page, everything recorded, only that batch owed.
    assert_eq!(rig.recorded().await, 2 * PAGE as i64);
    assert_eq!(rig.owed().await, batch.into_iter().collect());

    rig.recover_and_check().await;
    assert_eq!(rig.sqs.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_down_for_a_whole_run() {
    let rig = Rig::new().await;
    rig.sqs.set_mode(Mode::Down);
    let output = rig.run().await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("not sent"), "{}", stderr(&output));
    // The first page is recorded and owed; the run stopped there.
    assert_eq!(rig.recorded().await, PAGE as i64);
    assert_eq!(rig.owed().await.len(), PAGE);
    assert!(rig.sqs.accepted().is_empty());

    rig.recover_and_check().await;
    assert_eq!(rig.sqs.duplicates(), 0);
}
