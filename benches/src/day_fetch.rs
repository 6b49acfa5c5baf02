//! Section 1: one day of 12,000 products fetched by the real `link-fetcher`
//! binary, and each of its stages alone on the same data, in the same run.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt, stream};
use hls_core::adapters::catalogue::odata::parse_page;
use hls_core::adapters::queue::MAX_BATCH;
use hls_core::config::{PoolSettings, Vars};
use hls_core::domain::granule::DownloadMessage;
use hls_core::use_cases::handoff::DEFAULT_LEASE;
use hls_core::{
    BatchError, DownloadQueue, FoundBy, Granule, GranuleStore, Handoff, SqsQueue, TileSet,
};
use integration_tests::catalogue_stub::CatalogueStub;
use integration_tests::sqs_stub::SqsStub;
use integration_tests::{TestDatabase, TestQueue, fixtures};
use link_fetcher::settings::POOL_CONNECTIONS;
use serde::Serialize;

use crate::Settings;
use crate::drain::Drainer;
use crate::figures::Figure;
use crate::process::run_to_exit;

/// The day served; any day works, the stub serves whatever it is given.
pub const DAY: &str = "2024-04-01";
/// What `link-fetcher` uses by default (`SQS_SEND_CONCURRENCY`).
const SQS_CONCURRENCY: usize = 8;
const DRAIN_WORKERS: usize = 2;

pub fn day() -> NaiveDate {
    DAY.parse().expect("a date")
}

/// A well-formed tile id that is not in the built-in list (latitude band Z does not exist).
pub fn tile_not_allowed(n: usize) -> String {
    format!("{:02}ZZ{}", n % 61, (b'A' + (n % 26) as u8) as char)
}

/// `count` of the built-in tiles, spread over the list.
pub fn allowed_tiles(count: usize) -> Vec<String> {
    let text = include_str!("../../crates/core/data/allowed_tiles.txt");
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    let step = (all.len() / count).max(1);
    all.iter()
        .step_by(step)
        .take(count)
        .map(|t| t.to_string())
        .collect()
}

/// The day's products, all S2A, in publication order over the day; nine in ten
/// on allowed tiles. Returns them and the number on allowed tiles.
fn products(count: usize) -> (Vec<serde_json::Value>, usize) {
    let start = day().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let step = 86_400_000_000i64 / (count as i64 + 1);
    let tiles = allowed_tiles(1_000);
    let mut on_allowed = 0;
    let products = (0..count)
        .map(|n| {
            let published = start + chrono::Duration::microseconds(step * (n as i64 + 1));
            let acquired = published - chrono::Duration::hours(20);
            let tile = if n % 10 == 9 {
                tile_not_allowed(n)
            } else {
                on_allowed += 1;
                tiles[n % tiles.len()].clone()
            };
            let name = fixtures::product_name("S2A", &tile, acquired, n as u32);
            let id = format!("b3a1c0de-0000-4000-8000-{n:012}");
            fixtures::odata_product(&id, &name, published, acquired)
        })
        .collect();
    (products, on_allowed)
}

/// One run: the fetch and every stage alone.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub page_delay_ms: u64,
    pub fetch_wall_s: f64,
    /// `link-fetcher audit` of the same day, right after the fetch.
    pub audit_wall_s: f64,
    pub fetch_cpu_s: f64,
    pub fetch_peak_rss_mib: f64,
    pub catalogue_requests: usize,
    /// Granules the drain received while the fetch ran.
    pub drained_during_fetch: usize,
    /// The same fetch with a catalogue that answers at once and a queue that
    /// costs nothing (`SqsStub`): our own ceiling, beside moto's.
    pub free_fetch_wall_s: f64,
    pub free_fetch_cpu_s: f64,
    pub free_fetch_peak_rss_mib: f64,
    /// Each stage alone on the same data.
    pub stage_catalogue_s: f64,
    pub stage_postgres_s: f64,
    pub stage_sqs_s: f64,
    /// The servers' own ceilings on the same rows and messages.
    pub bare_insert_s: f64,
    pub bare_send_batch_s: f64,
}

impl Run {
    fn slowest_stage(&self) -> (&'static str, f64) {
        [
            ("catalogue", self.stage_catalogue_s),
            ("postgres", self.stage_postgres_s),
            ("sqs", self.stage_sqs_s),
        ]
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("three stages")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub products: usize,
    pub on_allowed_tiles: usize,
    pub page_size: usize,
    pub page_delay_ms: u64,
    pub runs: Vec<Run>,
    pub wall_s: Figure,
    pub audit_wall_s: Figure,
    pub products_per_s: Figure,
    pub cpu_s: Figure,
    pub cpu_us_per_product: Figure,
    pub peak_rss_mib: Figure,
    pub free_fetch_wall_s: Figure,
    pub free_fetch_products_per_s: Figure,
    pub free_fetch_cpu_us_per_product: Figure,
    pub free_fetch_peak_rss_mib: Figure,
    /// Products per second of the hand-off through Postgres alone (no-op queue).
    pub postgres_handoff_products_per_s: Figure,
    /// Products per second of one bare multi-row insert of the same rows.
    pub bare_insert_products_per_s: Figure,
    /// The free fetch's products per second over the hand-off's through Postgres alone.
    pub free_fetch_to_postgres_handoff: Figure,
    pub stage_catalogue_s: Figure,
    pub stage_postgres_s: Figure,
    pub stage_sqs_s: Figure,
    pub bare_insert_s: Figure,
    pub bare_send_batch_s: Figure,
    pub slowest_stage: Vec<&'static str>,
    pub ratio_to_slowest_stage: Figure,
}

pub struct Bench {
    stub: CatalogueStub,
    products: usize,
    on_allowed: usize,
    tiles: TileSet,
}

impl Bench {
    pub async fn new(products: usize) -> Self {
        let stub = CatalogueStub::start().await;
        let (day, on_allowed) = self::products(products);
        stub.add_products(day);
        Self {
            stub,
            products,
            on_allowed,
            tiles: TileSet::built_in(),
        }
    }

    pub fn catalogue_url(&self) -> &str {
        self.stub.url()
    }

    pub fn set_page_delay(&self, delay: Duration) {
        self.stub.set_page_delay(delay);
    }

    pub async fn report(&self, settings: &Settings, delay: Duration) -> anyhow::Result<Report> {
        let mut runs = Vec::new();
        for run in 1..=settings.fetch_runs {
            let result = self.run(settings, delay, run).await?;
            eprintln!(
                "  day fetch, delay {} ms, run {run}: wall {:.2} s, peak RSS {:.1} MiB; \
                 stages: catalogue {:.2} s, postgres {:.2} s, sqs {:.2} s",
                delay.as_millis(),
                result.fetch_wall_s,
                result.fetch_peak_rss_mib,
                result.stage_catalogue_s,
                result.stage_postgres_s,
                result.stage_sqs_s
            );
            runs.push(result);
        }
        let figure = |unit, f: fn(&Run) -> f64| Figure::of(unit, runs.iter().map(f).collect());
        let n = self.products as f64;
        Ok(Report {
            products: self.products,
            on_allowed_tiles: self.on_allowed,
            page_size: 1_000,
            page_delay_ms: delay.as_millis() as u64,
            wall_s: figure("s", |r| r.fetch_wall_s),
            audit_wall_s: figure("s", |r| r.audit_wall_s),
            products_per_s: Figure::of(
                "products/s",
                runs.iter().map(|r| n / r.fetch_wall_s).collect(),
            ),
            cpu_s: figure("s", |r| r.fetch_cpu_s),
            cpu_us_per_product: Figure::of(
                "µs",
                runs.iter().map(|r| r.fetch_cpu_s * 1e6 / n).collect(),
            ),
            peak_rss_mib: figure("MiB", |r| r.fetch_peak_rss_mib),
            free_fetch_wall_s: figure("s", |r| r.free_fetch_wall_s),
            free_fetch_products_per_s: Figure::of(
                "products/s",
                runs.iter().map(|r| n / r.free_fetch_wall_s).collect(),
            ),
            free_fetch_cpu_us_per_product: Figure::of(
                "µs",
                runs.iter().map(|r| r.free_fetch_cpu_s * 1e6 / n).collect(),
            ),
            free_fetch_peak_rss_mib: figure("MiB", |r| r.free_fetch_peak_rss_mib),
            postgres_handoff_products_per_s: Figure::of(
                "products/s",
                runs.iter().map(|r| n / r.stage_postgres_s).collect(),
            ),
            bare_insert_products_per_s: Figure::of(
                "products/s",
                runs.iter().map(|r| n / r.bare_insert_s).collect(),
            ),
            free_fetch_to_postgres_handoff: figure("×", |r| {
                r.stage_postgres_s / r.free_fetch_wall_s
            }),
            stage_catalogue_s: figure("s", |r| r.stage_catalogue_s),
            stage_postgres_s: figure("s", |r| r.stage_postgres_s),
            stage_sqs_s: figure("s", |r| r.stage_sqs_s),
            bare_insert_s: figure("s", |r| r.bare_insert_s),
            bare_send_batch_s: figure("s", |r| r.bare_send_batch_s),
            slowest_stage: runs.iter().map(|r| r.slowest_stage().0).collect(),
            ratio_to_slowest_stage: figure("×", |r| r.fetch_wall_s / r.slowest_stage().1),
            runs,
        })
    }

    /// `link-fetcher <args>` against this catalogue, `db` and `queue`.
    fn fetcher(
        &self,
        settings: &Settings,
        db: &TestDatabase,
        queue_url: &str,
        args: &[&str],
    ) -> Command {
        let mut command = Command::new(&settings.fetcher);
        command
            .args(args)
            .env("SEARCH_URL", self.stub.url())
            .env("DATABASE_URL", db.url())
            .env("TO_DOWNLOAD_SQS_QUEUE_URL", queue_url)
            .env_remove("AWS_LAMBDA_RUNTIME_API");
        command
    }

    /// `fetch` of the day into `db`; checks the summary says every granule was queued.
    async fn fetch(
        &self,
        settings: &Settings,
        db: &TestDatabase,
        queue_url: &str,
        sqs_endpoint: Option<&str>,
        log: &str,
    ) -> anyhow::Result<crate::process::Exited> {
        let mut command = self.fetcher(
            settings,
            db,
            queue_url,
            &["fetch", "--date", DAY, "--platform", "S2A"],
        );
        if let Some(endpoint) = sqs_endpoint {
            command.env("AWS_ENDPOINT_URL", endpoint);
        }
        let exited = run_to_exit(command, &settings.out_dir.join(log)).await?;
        let summary: serde_json::Value = serde_json::from_str(
            exited
                .stdout
                .lines()
                .last()
                .context("link-fetcher printed no summary")?,
        )?;
        ensure!(
            summary["completed"] == true
                && summary["examined"] == self.products
                && summary["new_granules"] == self.on_allowed,
            "unexpected fetch summary {summary}"
        );
        Ok(exited)
    }

    async fn run(&self, settings: &Settings, delay: Duration, run: usize) -> anyhow::Result<Run> {
        self.stub.set_page_delay(delay);
        self.stub.reset_requests();

        // The fetch, with the queue drained as the download service does.
        let db = TestDatabase::migrated().await;
        let queue = TestQueue::new().await;
        let drainer = Drainer::start(&queue.client, &queue.url, DRAIN_WORKERS);
        let log = format!("fetch-{}ms-{run}.log", delay.as_millis());
        let exited = self.fetch(settings, &db, &queue.url, None, &log).await?;
        // The summary says every granule was queued; the drain ran alongside
        // the fetch and is not waited for (moto takes as long again to hand
        // the messages out).
        let drained = drainer.finish(0, Duration::ZERO).await?;
        let queries = self.stub.queries();

        // The audit of the same day, just fetched: the whole day read again and
        // compared with the rows (nothing missing, nothing written).
        let command = self.fetcher(
            settings,
            &db,
            &queue.url,
            &["audit", "--from", DAY, "--platform", "S2A"],
        );
        let log = settings
            .out_dir
            .join(format!("audit-{}ms-{run}.log", delay.as_millis()));
        let audited = run_to_exit(command, &log).await?;
        let line: serde_json::Value = serde_json::from_str(
            audited
                .stdout
                .lines()
                .last()
                .context("link-fetcher audit printed no line")?,
        )?;
        ensure!(
            line["complete"] == true
                && line["catalogue_products"] == self.products
                && line["recorded"] == self.on_allowed
                && line["missing"] == 0,
            "unexpected audit line {line}"
        );
        delete_queue(&queue).await;
        drop(db);

        // The same fetch with nothing to wait for: a catalogue that answers at
        // once and an SQS endpoint that accepts every batch at once.
        self.stub.set_page_delay(Duration::ZERO);
        let db = TestDatabase::migrated().await;
        let free_queue = SqsStub::start().await;
        let log = format!("fetch-free-queue-{}ms-{run}.log", delay.as_millis());
        let free = self
            .fetch(
                settings,
                &db,
                &free_queue.queue_url(),
                Some(free_queue.endpoint()),
                &log,
            )
            .await?;
        let accepted: HashSet<String> = free_queue.accepted().into_iter().collect();
        ensure!(
            accepted.len() == self.on_allowed,
            "the free queue accepted {} granules, not {}",
            accepted.len(),
            self.on_allowed
        );
        drop(db);
        self.stub.set_page_delay(delay);

        // The catalogue alone: the same pages, with the same delay, one after the other.
        let client = reqwest::Client::new();
        let started = Instant::now();
        let mut bodies = Vec::with_capacity(queries.len());
        for query in &queries {
            let url = url::Url::parse_with_params(
                &format!("{}/odata/v1/Products", self.stub.url()),
                query,
            )?;
            let response = client.get(url).send().await?.error_for_status()?;
            bodies.push(response.bytes().await?);
        }
        let stage_catalogue = started.elapsed();
        let pages: Vec<Vec<Granule>> = bodies
            .iter()
            .map(|body| {
                Ok(parse_page(body)?
                    .products
                    .into_iter()
                    .filter_map(|p| p.granule.ok())
                    .filter(|g| self.tiles.contains(&g.tile_id))
                    .collect())
            })
            .collect::<anyhow::Result<_>>()?;
        let granules: Vec<&Granule> = pages.iter().flatten().collect();
        ensure!(granules.len() == self.on_allowed, "the pages lost granules");

        // Postgres alone: the same rows, page by page, through the hand-off
        // (rows, outbox rows and "sent" marks) with a queue that costs nothing,
        // over a pool set up as link-fetcher's own.
        let db = TestDatabase::migrated().await;
        let pool = PoolSettings::read(&Vars::default(), POOL_CONNECTIONS)?
            .connect(db.options.clone())
            .await?;
        let handoff = Handoff::new(GranuleStore::new(pool), NoQueue, DEFAULT_LEASE);
        let started = Instant::now();
        for page in &pages {
            handoff.record_and_queue(page, FoundBy::Poll).await?;
        }
        let stage_postgres = started.elapsed();
        drop(handoff);
        drop(db);

        // SQS alone: the same messages, page by page, through SqsQueue.
        let queue = TestQueue::new().await;
        let drainer = Drainer::start(&queue.client, &queue.url, DRAIN_WORKERS);
        let sqs = SqsQueue::new(queue.client.clone(), queue.url.clone(), SQS_CONCURRENCY);
        let started = Instant::now();
        for page in &pages {
            send_page(&sqs, page).await?;
        }
        let stage_sqs = started.elapsed();
        drainer.finish(0, Duration::ZERO).await?;
        delete_queue(&queue).await;

        // Postgres's own ceiling: one bare multi-row insert of the same rows.
        let db = TestDatabase::migrated().await;
        let started = Instant::now();
        hls_core::adapters::store::record_new_granules(
            &db.pool,
            &granules,
            FoundBy::Poll,
            DEFAULT_LEASE,
        )
        .await?;
        let bare_insert = started.elapsed();
        drop(db);

        // moto's own ceiling: bare SendMessageBatch calls, ten entries, same concurrency.
        let queue = TestQueue::new().await;
        let drainer = Drainer::start(&queue.client, &queue.url, DRAIN_WORKERS);
        let started = Instant::now();
        bare_send_batches(&queue.client, &queue.url, &granules).await?;
        let bare_send = started.elapsed();
        drainer.finish(0, Duration::ZERO).await?;
        delete_queue(&queue).await;

        Ok(Run {
            page_delay_ms: delay.as_millis() as u64,
            fetch_wall_s: exited.wall.as_secs_f64(),
            audit_wall_s: audited.wall.as_secs_f64(),
            free_fetch_wall_s: free.wall.as_secs_f64(),
            free_fetch_cpu_s: free.cpu.as_secs_f64(),
            free_fetch_peak_rss_mib: free.peak_rss_kib as f64 / 1024.0,
            fetch_cpu_s: exited.cpu.as_secs_f64(),
            fetch_peak_rss_mib: exited.peak_rss_kib as f64 / 1024.0,
            catalogue_requests: queries.len(),
            drained_during_fetch: drained.unique,
            stage_catalogue_s: stage_catalogue.as_secs_f64(),
            stage_postgres_s: stage_postgres.as_secs_f64(),
            stage_sqs_s: stage_sqs.as_secs_f64(),
            bare_insert_s: bare_insert.as_secs_f64(),
            bare_send_batch_s: bare_send.as_secs_f64(),
        })
    }
}

/// moto keeps a deleted queue's messages out of every later call's way.
pub async fn delete_queue(queue: &TestQueue) {
    let _ = queue
        .client
        .delete_queue()
        .queue_url(&queue.url)
        .send()
        .await;
}

/// A queue that accepts everything at once: Postgres's share of the hand-off.
struct NoQueue;

impl DownloadQueue for NoQueue {
    async fn send_batch(&self, _: &[DownloadMessage<'_>]) -> Result<(), BatchError> {
        Ok(())
    }

    fn concurrency(&self) -> usize {
        SQS_CONCURRENCY
    }
}

/// One page's messages through `SqsQueue`, ten a call, as the hand-off sends them.
async fn send_page(sqs: &SqsQueue, page: &[Granule]) -> anyhow::Result<()> {
    let messages: Vec<DownloadMessage<'_>> = page.iter().map(Granule::download_message).collect();
    let calls: Vec<_> = messages
        .chunks(MAX_BATCH)
        .map(|batch| sqs.send_batch(batch))
        .collect();
    stream::iter(calls)
        .buffer_unordered(SQS_CONCURRENCY)
        .try_collect::<()>()
        .await
        .map_err(|e| anyhow::anyhow!(e.error))
}

async fn bare_send_batches(
    client: &aws_sdk_sqs::Client,
    url: &str,
    granules: &[&Granule],
) -> anyhow::Result<()> {
    let bodies: Vec<String> = granules
        .iter()
        .map(|g| serde_json::to_string(&g.download_message()))
        .collect::<Result<_, _>>()?;
    let calls: Vec<_> = bodies
        .chunks(10)
        .map(|chunk| {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>();
            async move {
                let output = client
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries?))
                    .send()
                    .await?;
                ensure!(output.failed().is_empty(), "moto rejected entries");
                anyhow::Ok(())
            }
        })
        .collect();
    stream::iter(calls)
        .buffer_unordered(SQS_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Section 3's fetcher start-up: a `fetch` of a day with no products, stub with no delay.
pub async fn empty_day_fetch(
    settings: &Settings,
    catalogue_url: &str,
    run: usize,
) -> anyhow::Result<crate::process::Exited> {
    let db = TestDatabase::migrated().await;
    let queue = TestQueue::new().await;
    let mut command = Command::new(&settings.fetcher);
    command
        .args(["fetch", "--date", "2024-03-01", "--platform", "S2A"])
        .env("SEARCH_URL", catalogue_url)
        .env("DATABASE_URL", db.url())
        .env("TO_DOWNLOAD_SQS_QUEUE_URL", &queue.url)
        .env_remove("AWS_LAMBDA_RUNTIME_API");
    let log = settings.out_dir.join(format!("startup-fetch-{run}.log"));
    let exited = run_to_exit(command, &log).await?;
    ensure!(
        exited.stdout.contains(r#""examined":0"#),
        "unexpected summary {}",
        exited.stdout
    );
    Ok(exited)
}
