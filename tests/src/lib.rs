//! The test harness: a fresh Postgres database and a fresh SQS queue per test.
//!
//! Postgres comes from `DATABASE_URL` when set, else from a testcontainers
//! container where Docker exists (credentials from `.env`); SQS from the server
//! at `AWS_ENDPOINT_URL` (`make test` starts `moto_server`). Without them the
//! tests fail with a message saying what to set: they never skip silently.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::config::Credentials;
use hls_core::adapters::store::MIGRATOR;
use rand::RngExt;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Executor, PgPool};
use tokio::sync::OnceCell;

pub mod catalogue_stub;
pub mod cdse_stub;
pub mod fetcher;
pub mod fixtures;
pub mod push_server;
pub mod sqs_stub;

static SERVER: OnceCell<PgConnectOptions> = OnceCell::const_new();

async fn server_options() -> PgConnectOptions {
    SERVER
        .get_or_init(|| async {
            let _ = dotenvy::dotenv();
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return url.parse().expect("DATABASE_URL is not a Postgres URL");
            }
            if docker_available() {
                return start_postgres_container().await;
            }
            panic!(
                "no Postgres for the tests: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres), \
                 or run where Docker exists so testcontainers can start one with PG_USER, PG_PASSWORD and PG_DB from .env"
            );
        })
        .await
        .clone()
}

fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

async fn start_postgres_container() -> PgConnectOptions {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    let var = |name: &str| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: copy .env.example to .env"))
    };
    let (user, password, db) = (var("PG_USER"), var("PG_PASSWORD"), var("PG_DB"));
    let container = Postgres::default()
        .with_user(&user)
        .with_password(&password)
        .with_db_name(&db)
        .start()
        .await
        .expect("testcontainers could not start Postgres");
    let port = container
        .get_host_port_ipv4(5432)
        .await
        .expect("container port");
    // Kept for the life of the test process; testcontainers' reaper removes it.
    Box::leak(Box::new(container));
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(&user)
        .password(&password)
        .database(&db)
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDatabase {
    pub pool: PgPool,
    pub options: PgConnectOptions,
    name: String,
    server: PgConnectOptions,
}

impl TestDatabase {
    /// A fresh database with every migration applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        MIGRATOR
            .run(&db.pool)
            .await
            .expect("migrations apply to an empty database");
        db
    }

    /// A fresh database with no tables.
    pub async fn empty() -> Self {
        let server = server_options().await;
        let name = format!("hls_test_{}", random_suffix());
        let mut admin = server
            .connect()
            .await
            .expect("cannot connect to the test Postgres server");
        admin
            .execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .expect("CREATE DATABASE");
        let options = server.clone().database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect_with(options.clone())
            .await
            .expect("connect to the test database");
        Self {
            pool,
            options,
            name,
            server,
        }
    }

    /// A `postgres://` URL of this database, for a process under test.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = server.connect().await.ok()?;
                admin
                    .execute(AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                    )))
                    .await
                    .ok()
            })
        })
        .join();
    }
}

pub fn random_suffix() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// The SQS-compatible server for the tests.
pub fn sqs_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!(
            "AWS_ENDPOINT_URL is not set: the tests need an SQS-compatible server. \
             `make test` starts moto_server on a free port; or run `moto_server -p 5000` and set AWS_ENDPOINT_URL=http://127.0.0.1:5000"
        )
    })
}

/// AWS configuration pointed at the test server, with dummy credentials.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .endpoint_url(sqs_endpoint())
        .load()
        .await
}

/// A queue of its own for one test (moto slows down as messages pile up in one queue).
pub struct TestQueue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl TestQueue {
    pub async fn new() -> Self {
        let client = aws_sdk_sqs::Client::new(&aws_config().await);
        let url = client
            .create_queue()
            .queue_name(format!("to-download-{}", random_suffix()))
            .send()
            .await
            .expect("create the test queue (is moto_server at AWS_ENDPOINT_URL running?)")
            .queue_url
            .expect("queue url");
        Self { client, url }
    }

    pub fn sqs_queue(&self) -> hls_core::SqsQueue {
        hls_core::SqsQueue::new(self.client.clone(), self.url.clone(), 8)
    }

    /// Receives and deletes messages until the queue has been empty for `idle`.
    /// Returns the bodies by message id of the granule, so a message delivered
    /// twice by the server (moto does under load) counts once; `deliveries` is
    /// how many message bodies arrived in all.
    pub async fn drain(&self, idle: Duration) -> Drained {
        let mut drained = Drained::default();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let output = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive_message");
            let messages = output.messages.unwrap_or_default();
            if messages.is_empty() {
                if quiet_since.elapsed() >= idle {
                    return drained;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            quiet_since = tokio::time::Instant::now();
            for message in messages {
                let body: serde_json::Value =
                    serde_json::from_str(message.body().unwrap_or_default())
                        .expect("message body is JSON");
                let id = body["id"].as_str().expect("message has an id").to_owned();
                drained.deliveries += 1;
                drained.by_id.insert(id, body);
                self.client
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete_message");
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Drained {
    pub by_id: HashMap<String, serde_json::Value>,
    pub deliveries: usize,
}

/// A consumer that behaves like the Python download Lambda: it receives each
/// message, looks its granule row up at once (`get_granule`), and deletes the
/// message whether the row was there or not (the downloader logs "not found"
/// and returns normally, so SQS deletes it).
pub struct Downloader {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Lookups>,
}

/// What the [`Downloader`] found when it looked each message's row up.
#[derive(Debug, Default)]
pub struct Lookups {
    pub found: std::collections::BTreeSet<String>,
    /// Messages whose row was not there when they arrived: lost in production.
    pub not_found: Vec<String>,
    pub deliveries: usize,
}

impl Downloader {
    pub fn start(queue: &TestQueue, pool: &PgPool) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (client, url, pool) = (queue.client.clone(), queue.url.clone(), pool.clone());
        let task = tokio::spawn(async move {
            let mut lookups = Lookups::default();
            let mut idle_since = None;
            loop {
                let output = client
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .expect("receive_message");
                let messages = output.messages.unwrap_or_default();
                if messages.is_empty() {
                    if *stopped.borrow_and_update() {
                        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= Duration::from_millis(500) {
                            return lookups;
                        }
                    }
                    continue;
                }
                idle_since = None;
                for message in messages {
                    let body: serde_json::Value =
                        serde_json::from_str(message.body().unwrap_or_default())
                            .expect("message body is JSON");
                    let id = body["id"].as_str().expect("message has an id").to_owned();
                    let row: Option<String> =
                        sqlx::query_scalar("SELECT id FROM granule WHERE id = $1")
                            .bind(&id)
                            .fetch_optional(&pool)
                            .await
                            .expect("look the granule up");
                    lookups.deliveries += 1;
                    match row {
                        Some(_) => {
                            lookups.found.insert(id);
                        }
                        None => lookups.not_found.push(id),
                    }
                    client
                        .delete_message()
                        .queue_url(&url)
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .send()
                        .await
                        .expect("delete_message");
                }
            }
        });
        Self { stop, task }
    }

    /// Waits until the queue has been empty for a moment, then returns what was found.
    pub async fn finish(self) -> Lookups {
        let _ = self.stop.send(true);
        self.task.await.expect("the downloader task")
    }
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after 30 s.
pub async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1_500 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
