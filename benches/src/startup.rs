//! Section 3: from process start to ready, for each binary, and the Lambda zips.

use std::path::Path;
use std::process::Command;

use anyhow::ensure;
use integration_tests::{TestDatabase, TestQueue, random_suffix};
use serde::Serialize;

use crate::Settings;
use crate::day_fetch::{Bench, allowed_tiles, empty_day_fetch};
use crate::figures::Figure;
use crate::process::{Server, free_port, run_to_exit};
use crate::push::{handler_command, notification, post, wait_ready};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Handler: spawn to the first HTTP answer (configuration read, clients built, listening).
    pub handler_ready_ms: Figure,
    /// Handler: spawn to the first new notification recorded and queued (lazy
    /// Postgres connection and first SQS call included).
    pub handler_first_queued_ms: Figure,
    pub handler_idle_rss_mib: Figure,
    /// Fetcher: spawn to exit of a `fetch` of an empty day (configuration, pool,
    /// first catalogue request, day row written).
    pub fetcher_empty_day_ms: Figure,
    pub fetcher_empty_day_peak_rss_mib: Figure,
    /// Fetcher: `--version`, the floor of exec and runtime start.
    pub fetcher_version_ms: Figure,
    pub packages: Vec<Package>,
}

pub async fn report(settings: &Settings, catalogue: &Bench) -> anyhow::Result<Report> {
    catalogue.set_page_delay(std::time::Duration::ZERO);
    let (mut ready, mut first, mut idle) = (Vec::new(), Vec::new(), Vec::new());
    let client = reqwest::Client::new();
    let tile = &allowed_tiles(1)[0];
    for run in 1..=settings.startup_runs {
        let db = TestDatabase::migrated().await;
        let queue = TestQueue::new().await;
        let port = free_port()?;
        let log = settings.out_dir.join(format!("startup-handler-{run}.log"));
        let server = Server::spawn(handler_command(settings, port, &db, &queue.url), &log)?;
        ready.push(wait_ready(&server, port).await?.as_secs_f64() * 1e3);
        let body = notification(
            &format!("startup-{}", random_suffix()),
            tile,
            chrono::Duration::hours(6),
            1,
        );
        ensure!(
            post(&client, port, body).await? == 204,
            "first notification not accepted"
        );
        first.push(server.started.elapsed().as_secs_f64() * 1e3);
        let (_, rss) = server.memory_kib()?;
        idle.push(rss as f64 / 1024.0);
        server.stop().await?;
    }

    let (mut fetch, mut fetch_rss, mut version) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=settings.startup_runs {
        let exited = empty_day_fetch(settings, catalogue.catalogue_url(), run).await?;
        fetch.push(exited.wall.as_secs_f64() * 1e3);
        fetch_rss.push(exited.peak_rss_kib as f64 / 1024.0);
        let mut command = Command::new(&settings.fetcher);
        command.arg("--version");
        let log = settings.out_dir.join("version.log");
        version.push(run_to_exit(command, &log).await?.wall.as_secs_f64() * 1e3);
    }

    Ok(Report {
        handler_ready_ms: Figure::of("ms", ready),
        handler_first_queued_ms: Figure::of("ms", first),
        handler_idle_rss_mib: Figure::of("MiB", idle),
        fetcher_empty_day_ms: Figure::of("ms", fetch),
        fetcher_empty_day_peak_rss_mib: Figure::of("MiB", fetch_rss),
        fetcher_version_ms: Figure::of("ms", version),
        packages: packages(settings),
    })
}

/// What each function ships, in bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Package {
    pub function: &'static str,
    /// `target/lambda/<function>/bootstrap.zip` (`make build`), when built.
    pub lambda_zip: Option<u64>,
    /// The x86_64 release binary measured here.
    pub release_binary: Option<u64>,
    /// That binary zipped as `bootstrap` (by scripts/bench.sh), as cargo-lambda packages it.
    pub release_zip: Option<u64>,
}

fn packages(settings: &Settings) -> Vec<Package> {
    let size = |path: &Path| std::fs::metadata(path).ok().map(|m| m.len());
    [
        ("link-fetcher", &settings.fetcher),
        ("link-subscription-handler", &settings.handler),
    ]
    .into_iter()
    .map(|(function, binary)| Package {
        function,
        lambda_zip: size(&settings.lambda_dir.join(function).join("bootstrap.zip")),
        release_binary: size(binary),
        release_zip: size(&settings.release_zip_dir.join(format!("{function}.zip"))),
    })
    .collect()
}
