//! Section 2: `link-subscription-handler serve` under wrk, with a mix of new,
//! duplicate, too-old and wrong-tile notifications built from the real fixture.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt, stream};
use integration_tests::{TestDatabase, TestQueue, fixtures};
use serde::Serialize;

use crate::Settings;
use crate::day_fetch::{allowed_tiles, tile_not_allowed};
use crate::drain::Drainer;
use crate::figures::Figure;
use crate::process::{Server, free_port};

pub const USERNAME: &str = "bench";
pub const PASSWORD: &str = "bench-password";
/// The handler's pool under load (its default, 2, is sized for one Lambda request at a time).
pub const POOL_CONNECTIONS: u32 = 16;
const DRAIN_WORKERS: usize = 2;
/// Of every ten requests: 7 new, 1 duplicate, 1 too old, 1 on a tile HLS does not process.
pub const MIX: &str = "70% new, 10% duplicate, 10% too old, 10% wrong tile";

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub requests: u64,
    pub duration_s: f64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Socket errors, timeouts and answers other than 2xx/3xx.
    pub errors: u64,
    pub new_sent: u64,
    /// Granules the drain received during the run.
    pub drained: usize,
    pub peak_rss_mib: f64,
    /// moto's own rate for one-message SendMessageBatch calls at the same concurrency.
    pub bare_send_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub threads: u32,
    pub connections: u32,
    pub seconds: u32,
    pub pool_connections: u32,
    pub mix: &'static str,
    pub runs: Vec<Run>,
    pub requests_per_s: Figure,
    pub p50_ms: Figure,
    pub p99_ms: Figure,
    pub p999_ms: Figure,
    pub errors: Figure,
    pub peak_rss_mib: Figure,
    pub new_per_s: Figure,
    pub bare_send_per_s: Figure,
}

pub async fn report(settings: &Settings) -> anyhow::Result<Report> {
    let mut runs = Vec::new();
    for run in 1..=settings.push_runs {
        let result = one_run(settings, run).await?;
        eprintln!(
            "  push run {run}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, \
             {} errors, peak RSS {:.1} MiB, {} new sent, {} drained",
            result.requests_per_s,
            result.p50_ms,
            result.p99_ms,
            result.p999_ms,
            result.errors,
            result.peak_rss_mib,
            result.new_sent,
            result.drained
        );
        runs.push(result);
    }
    let figure = |unit, f: fn(&Run) -> f64| Figure::of(unit, runs.iter().map(f).collect());
    Ok(Report {
        threads: settings.wrk_threads,
        connections: settings.wrk_connections,
        seconds: settings.wrk_seconds,
        pool_connections: POOL_CONNECTIONS,
        mix: MIX,
        requests_per_s: figure("req/s", |r| r.requests_per_s),
        p50_ms: figure("ms", |r| r.p50_ms),
        p99_ms: figure("ms", |r| r.p99_ms),
        p999_ms: figure("ms", |r| r.p999_ms),
        errors: figure("errors", |r| r.errors as f64),
        peak_rss_mib: figure("MiB", |r| r.peak_rss_mib),
        new_per_s: figure("new/s", |r| r.new_sent as f64 / r.duration_s),
        bare_send_per_s: figure("calls/s", |r| r.bare_send_per_s),
        runs,
    })
}

/// The handler's command with its environment.
pub fn handler_command(settings: &Settings, port: u16, db: &TestDatabase, queue: &str) -> Command {
    let mut command = Command::new(&settings.handler);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("NOTIFICATION_USERNAME", USERNAME)
        .env("NOTIFICATION_PASSWORD", PASSWORD)
        .env("DATABASE_URL", db.url())
        .env("TO_DOWNLOAD_SQS_QUEUE_URL", queue)
        .env("MAX_ACQUISITION_AGE_DAYS", "30")
        .env("DB_POOL_MAX_CONNECTIONS", POOL_CONNECTIONS.to_string())
        .env_remove("AWS_LAMBDA_RUNTIME_API");
    command
}

/// Polls until the server answers any HTTP request (an unauthenticated POST: 401).
pub async fn wait_ready(server: &Server, port: u16) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let url = format!("http://127.0.0.1:{port}/events");
    loop {
        if let Ok(response) = client.post(&url).body("{}").send().await {
            ensure!(
                response.status() == reqwest::StatusCode::UNAUTHORIZED,
                "expected 401 without credentials, got {}",
                response.status()
            );
            return Ok(server.started.elapsed());
        }
        if server.started.elapsed() > Duration::from_secs(30) {
            bail!("the handler did not answer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A created notification for `id` from the real fixture, acquired `age` ago on `tile`.
pub fn notification(id: &str, tile: &str, age: chrono::Duration, serial: u32) -> String {
    let acquired = Utc::now() - age;
    let published = acquired + chrono::Duration::hours(3);
    let name = fixtures::product_name("S2B", tile, acquired, serial);
    fixtures::push_created_for(id, &name, published, acquired).to_string()
}

/// Posts one notification with the right credentials; returns the status.
pub async fn post(client: &reqwest::Client, port: u16, body: String) -> anyhow::Result<u16> {
    let response = client
        .post(format!("http://127.0.0.1:{port}/events"))
        .basic_auth(USERNAME, Some(PASSWORD))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

fn lua_script(run: usize) -> String {
    let tiles = allowed_tiles(50);
    let lua_templates = |name: &str, age: chrono::Duration, tile_of: &dyn Fn(usize) -> String| {
        let list: Vec<String> = (0..10)
            .map(|i| {
                format!(
                    "[==[{}]==]",
                    notification("@ID@", &tile_of(i), age, i as u32)
                )
            })
            .collect();
        format!("local {name} = {{{}}}\n", list.join(",\n"))
    };
    let recent = chrono::Duration::hours(6);
    let mut script = String::from("-- Written by `make bench` (benches/src/push.rs).\n");
    script += &lua_templates("NEW", recent, &|i| tiles[i * 5].clone());
    script += &lua_templates("OLD", chrono::Duration::days(60), &|i| tiles[i * 5].clone());
    script += &lua_templates("WRONG_TILE", recent, &|i| tile_not_allowed(i));
    script += &format!(
        "local DUPLICATE = [==[{}]==]\n",
        notification(&duplicate_id(run), &tiles[0], recent, 0)
    );
    script += &format!(
        r#"local RUN = "{run}"
local AUTH = "Basic {auth}"
local headers = {{["Authorization"] = AUTH, ["Content-Type"] = "application/json"}}
local threads = {{}}
local next_tid = 1

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

counter = 0
new_sent = 0

local function with_id(templates, kind)
  local id = "bench-" .. RUN .. "-" .. kind .. "-" .. tid .. "-" .. counter
  return (string.gsub(templates[counter % 10 + 1], "@ID@", id))
end

function request()
  counter = counter + 1
  local k = counter % 10
  local body
  if k < 7 then
    new_sent = new_sent + 1
    body = with_id(NEW, "new")
  elseif k == 7 then
    body = DUPLICATE
  elseif k == 8 then
    body = with_id(OLD, "old")
  else
    body = with_id(WRONG_TILE, "tile")
  end
  return wrk.format("POST", "/events", headers, body)
end

function done(summary, latency, requests)
  local sent = 0
  for _, thread in ipairs(threads) do
    sent = sent + thread:get("new_sent")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"errors":%d,"new_sent":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout, sent))
end
"#,
        auth = basic_auth()
    );
    script
}

fn basic_auth() -> String {
    use std::io::Write;
    // A tiny base64 encoder keeps this crate free of one more dependency.
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut raw = Vec::new();
    write!(raw, "{USERNAME}:{PASSWORD}").expect("writes to a Vec");
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn duplicate_id(run: usize) -> String {
    format!("bench-{run}-duplicate")
}

async fn one_run(settings: &Settings, run: usize) -> anyhow::Result<Run> {
    let db = TestDatabase::migrated().await;
    let queue = TestQueue::new().await;
    let drainer = Drainer::start(&queue.client, &queue.url, DRAIN_WORKERS);
    let port = free_port()?;
    let log = settings.out_dir.join(format!("push-{run}.log"));
    let server = Server::spawn(handler_command(settings, port, &db, &queue.url), &log)?;
    wait_ready(&server, port).await?;

    // The duplicate is recorded (and queued) once before the load starts.
    let client = reqwest::Client::new();
    let tiles = allowed_tiles(50);
    let seeded = notification(&duplicate_id(run), &tiles[0], chrono::Duration::hours(6), 0);
    ensure!(
        post(&client, port, seeded).await? == 204,
        "the seed was not accepted"
    );

    let script = settings.out_dir.join(format!("push-{run}.lua"));
    std::fs::write(&script, lua_script(run))?;
    let output = wrk(settings, &script, port).await?;
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("BENCH_JSON "))
        .with_context(|| format!("wrk printed no result:\n{output}"))?;
    let result: serde_json::Value = serde_json::from_str(line)?;
    let (peak_kib, _) = server.memory_kib()?;
    let number = |key: &str| result[key].as_f64().unwrap_or(f64::NAN);
    let new_sent = result["new_sent"].as_u64().unwrap_or(0);

    // Nothing but new notifications may be queued. (Waiting for the rest of
    // the queue would take moto as long again; the tests check exactly-once.)
    let drained = drainer.finish(0, Duration::ZERO).await?;
    crate::day_fetch::delete_queue(&queue).await;
    ensure!(
        drained.unique as u64 <= new_sent + 1,
        "{} granules queued for {} new notifications: some other kind was queued",
        drained.unique,
        new_sent + 1
    );
    server.stop().await?;
    let bare_send_per_s = bare_single_sends(&settings.wrk_connections).await?;

    let duration_s = number("duration_us") / 1e6;
    Ok(Run {
        requests: number("requests") as u64,
        duration_s,
        requests_per_s: number("requests") / duration_s,
        p50_ms: number("p50_us") / 1e3,
        p99_ms: number("p99_us") / 1e3,
        p999_ms: number("p999_us") / 1e3,
        max_ms: number("max_us") / 1e3,
        errors: number("errors") as u64,
        new_sent,
        drained: drained.unique,
        peak_rss_mib: peak_kib as f64 / 1024.0,
        bare_send_per_s,
    })
}

async fn wrk(settings: &Settings, script: &Path, port: u16) -> anyhow::Result<String> {
    let mut command = Command::new(&settings.wrk);
    command.args([
        format!("-t{}", settings.wrk_threads),
        format!("-c{}", settings.wrk_connections),
        format!("-d{}s", settings.wrk_seconds),
        "--timeout".into(),
        "5s".into(),
        "-s".into(),
        script.display().to_string(),
        format!("http://127.0.0.1:{port}/events"),
    ]);
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    ensure!(
        output.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// moto's ceiling for what a new notification costs it: one-message
/// SendMessageBatch calls, as many at once as wrk has connections, for 3 s.
async fn bare_single_sends(concurrency: &u32) -> anyhow::Result<f64> {
    let queue = TestQueue::new().await;
    let drainer = Drainer::start(&queue.client, &queue.url, DRAIN_WORKERS);
    let body = r#"{"id":"x","filename":"x","download_url":"x"}"#;
    let started = Instant::now();
    let window = Duration::from_secs(3);
    let calls = stream::iter(0u64..)
        .take_while(|_| futures::future::ready(started.elapsed() < window))
        .map(|n| {
            let (client, url) = (&queue.client, &queue.url);
            async move {
                let entry = aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id("0")
                    .message_body(body.replace('x', &n.to_string()))
                    .build()?;
                client
                    .send_message_batch()
                    .queue_url(url)
                    .entries(entry)
                    .send()
                    .await?;
                anyhow::Ok(1u64)
            }
        })
        .buffer_unordered(*concurrency as usize)
        .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
        .await?;
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    drainer
        .finish(usize::MAX, Duration::from_millis(500))
        .await?;
    Ok(rate)
}
