//! `make soak`: both functions under load while their dependencies fail, then a
//! check of the full history (Jepsen-style: a workload, faults on a schedule, a
//! checker).
//!
//! It starts its own Postgres cluster (initdb into a temporary directory, on a
//! free port) and its own queue server, so that its restarts touch nothing
//! else; runs `link-subscription-handler serve` under a closed-loop load of
//! CDSE-like clients and `link-fetcher fetch` over one multi-page day of the
//! stand-in catalogue after another; on a schedule restarts Postgres, stops the
//! queue server and kills the fetcher mid-page (twice each); then lets every
//! notification answered 503 be redelivered, flushes what is owed, and checks
//! that nothing was lost, written wrongly or answered wrongly. It prints the
//! figures and exits non-zero when a check fails. Everything it started is
//! stopped and removed even when it fails (see `procs`).

mod check;
mod cluster;
mod consumer;
mod fetch;
mod history;
mod load;
mod procs;
mod queue_server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;
use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::Cluster;
use crate::history::{Fault, FaultKind, History, Sample, now};
use crate::procs::Reaper;
use crate::queue_server::QueueServer;

/// Both functions under load while Postgres, the queue and the fetcher fail on a schedule.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(version)]
struct Settings {
    /// How long the load runs (the faults are spread over it).
    #[arg(long, default_value_t = 300)]
    duration_seconds: u64,
    /// Concurrent push clients, each waiting for its answer before the next request.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// How long each of the two queue outages lasts.
    #[arg(long, default_value_t = 20)]
    queue_outage_seconds: u64,
    /// How long Postgres stays down in each restart.
    #[arg(long, default_value_t = 5)]
    postgres_down_seconds: u64,
    /// OUTBOX_LEASE_SECONDS of both functions: how long a killed sender's claim outlives it.
    #[arg(long, default_value_t = 30)]
    lease_seconds: u64,
    /// Products published on each catalogue day (a quarter each on four tiles, two of them HLS's).
    #[arg(long, default_value_t = 650)]
    products_per_day: usize,
    /// CATALOGUE_PAGE_SIZE of the fetcher.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// How long the stand-in catalogue takes per page.
    #[arg(long, default_value_t = 200)]
    page_delay_ms: u64,
    /// How long the queue server takes per send (real SQS: 10-30 ms).
    #[arg(long, default_value_t = 25)]
    sqs_send_latency_ms: u64,
    /// DB_POOL_MAX_CONNECTIONS of the server (the production default).
    #[arg(long, default_value_t = 2)]
    pool: u32,
    /// AWS_ATTEMPT_TIMEOUT_SECONDS of both functions; unset, each function's own
    /// default (10 s for the fetcher, 3 s for the push endpoint).
    #[arg(long)]
    aws_attempt_timeout_seconds: Option<u64>,
    /// Longest wait, after the load, for redeliveries, the last day, the flush and the queue.
    #[arg(long, default_value_t = 240)]
    settle_timeout_seconds: u64,
    /// Where the history, the report and every process's log go.
    #[arg(long)]
    out_dir: PathBuf,
    /// `link-fetcher` (default: beside this binary).
    #[arg(long)]
    fetcher: Option<PathBuf>,
    /// `link-subscription-handler` (default: beside this binary).
    #[arg(long)]
    handler: Option<PathBuf>,
    /// fake_sqs.py (default: ../shared/tools/fake_sqs.py from the project root).
    #[arg(long)]
    fake_sqs: Option<PathBuf>,
}

/// What must be stopped however the soak ends.
struct Rig {
    cluster: Option<Cluster>,
    queue: Option<QueueServer>,
    handler: Option<Child>,
    reaper: Option<Arc<Reaper>>,
}

static RIG: Mutex<Rig> = Mutex::new(Rig {
    cluster: None,
    queue: None,
    handler: None,
    reaper: None,
});

fn rig() -> std::sync::MutexGuard<'static, Rig> {
    RIG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops every process and removes the cluster; runs on every way out of `main`.
fn cleanup() {
    let mut rig = rig();
    if let Some(mut handler) = rig.handler.take() {
        let _ = handler.kill();
        let _ = handler.wait();
    }
    if let Some(reaper) = &rig.reaper {
        // A fetcher still running, say.
        reaper.kill_all();
    }
    rig.queue = None;
    rig.cluster = None;
    if let Some(reaper) = rig.reaper.take() {
        reaper.dismiss();
    }
}

struct CleanupOnExit;

impl Drop for CleanupOnExit {
    fn drop(&mut self) {
        cleanup();
    }
}

fn main() -> ExitCode {
    let settings = Settings::parse();
    let _cleanup = CleanupOnExit;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = soak(settings) => result,
            _ = tokio::signal::ctrl_c() => bail!("interrupted (SIGINT)"),
            _ = terminate.recv() => bail!("terminated (SIGTERM)"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    cleanup();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("soak: a check failed (see above)");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("soak: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

fn binary(given: &Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the soak binary's directory")?
            .join(name),
    };
    if !path.exists() {
        bail!(
            "{} does not exist: build the workspace first (cargo build --workspace --all-targets)",
            path.display()
        );
    }
    Ok(path)
}

async fn soak(settings: Settings) -> anyhow::Result<bool> {
    let out = settings.out_dir.clone();
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    let fetcher_bin = binary(&settings.fetcher, "link-fetcher")?;
    let handler_bin = binary(&settings.handler, "link-subscription-handler")?;
    let fake_sqs = settings.fake_sqs.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/fake_sqs.py")
    });
    let duration = Duration::from_secs(settings.duration_seconds);
    eprintln!("soak: output in {}", out.display());

    // Postgres of our own.
    let cluster = blocking({
        let log = out.join("postgres.log");
        move || Cluster::create(&log)
    })
    .await?;
    let reaper = Arc::new(Reaper::start(
        &out.join("children.pid"),
        &cluster.pg_ctl(),
        cluster.datadir(),
        cluster.run_as(),
        cluster.root(),
    )?);
    let port = cluster.port;
    let url = |application: &str| {
        format!("postgres://postgres@127.0.0.1:{port}/postgres?application_name={application}")
    };
    {
        let mut rig = rig();
        rig.reaper = Some(reaper.clone());
        rig.cluster = Some(cluster);
    }
    blocking(|| rig().cluster.as_mut().expect("the cluster").start()).await?;
    eprintln!("soak: Postgres on 127.0.0.1:{port}");
    let migrate = Command::new(&fetcher_bin)
        .arg("migrate")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", url("soak-migrate"))
        .env("RUST_LOG", "warn")
        .output()?;
    if !migrate.status.success() {
        bail!(
            "link-fetcher migrate: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
    }

    // The queue server of our own.
    let mut queue = QueueServer::new(
        &fake_sqs,
        &out,
        settings.sqs_send_latency_ms,
        reaper.clone(),
    )?;
    let endpoint = queue.endpoint();
    blocking(move || {
        queue.start()?;
        rig().queue = Some(queue);
        Ok(())
    })
    .await?;
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "soak",
        ))
        .endpoint_url(&endpoint)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(25))
                .connect_timeout(Duration::from_secs(2))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = sqs
        .create_queue()
        .queue_name("to-download")
        .send()
        .await
        .context("create the queue")?
        .queue_url
        .context("a queue url")?;
    eprintln!("soak: queue server on {endpoint}");

    let mut common_env: Vec<(String, String)> = [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("TO_DOWNLOAD_SQS_QUEUE_URL", queue_url.clone()),
        ("OUTBOX_LEASE_SECONDS", settings.lease_seconds.to_string()),
        ("RUST_LOG", "info".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(seconds) = settings.aws_attempt_timeout_seconds {
        common_env.push(("AWS_ATTEMPT_TIMEOUT_SECONDS".into(), seconds.to_string()));
    }

    // The server, started once: it must never restart.
    let server_port = procs::free_port()?;
    let handler_log = out.join("handler.log");
    let log = std::fs::File::create(&handler_log)?;
    let mut handler = Command::new(&handler_bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{server_port}")])
        .env_clear()
        .envs(common_env.iter().map(|(k, v)| (k, v)))
        .env("DATABASE_URL", url("soak-handler"))
        .env("NOTIFICATION_USERNAME", load::USERNAME)
        .env("NOTIFICATION_PASSWORD", load::PASSWORD)
        .env("DB_POOL_MAX_CONNECTIONS", settings.pool.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start link-subscription-handler serve")?;
    let handler_pid = handler.id();
    reaper.watch(handler_pid);
    let waited = procs::wait_for_port(
        server_port,
        &mut handler,
        "link-subscription-handler",
        &handler_log,
    );
    rig().handler = Some(handler);
    waited?;
    eprintln!(
        "soak: link-subscription-handler serve on 127.0.0.1:{server_port} (pid {handler_pid})"
    );

    // Every time in the history and the report counts from here.
    history::start_clock();
    let history = Arc::new(History::default());
    let catalogue = Arc::new(
        fetch::Catalogue::start(
            settings.products_per_day,
            Duration::from_millis(settings.page_delay_ms),
        )
        .await,
    );
    let checker_pool = PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&url("soak-checker"))?;

    // The downloader.
    let consumer = Arc::new(consumer::Consumer {
        client: sqs.clone(),
        queue_url: queue_url.clone(),
        pool: checker_pool.clone(),
        history: history.clone(),
    });
    let consumer_stop = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(consumer.clone().run(consumer_stop.clone())))
        .collect();

    // Connections and memory of the server, every 100 ms.
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(
        url("soak-sampler"),
        handler_pid,
        history.clone(),
        sampler_stop.clone(),
    ));

    // The fetch loop.
    let mut fetcher_env = common_env.clone();
    fetcher_env.extend([
        ("DATABASE_URL".to_owned(), url("soak-fetcher")),
        ("SEARCH_URL".to_owned(), catalogue.stub.url().to_owned()),
        (
            "CATALOGUE_PAGE_SIZE".to_owned(),
            settings.page_size.to_string(),
        ),
        ("CATALOGUE_RETRY_BASE_MS".to_owned(), "100".to_owned()),
        // The Lambda's attempts, not the command line's short budget: the soak
        // runs the command in the function's place.
        ("CATALOGUE_MAX_ATTEMPTS".to_owned(), "8".to_owned()),
    ]);
    let fetcher = Arc::new(fetch::Fetcher {
        binary: fetcher_bin.clone(),
        env: fetcher_env,
        log: out.join("fetcher.log"),
        database_url: url("soak-watcher"),
        history: history.clone(),
        reaper: reaper.clone(),
    });
    let fetch_stop = Arc::new(AtomicBool::new(false));
    let give_up = Arc::new(AtomicBool::new(false));
    let (kill_requests, kills) = mpsc::channel(1);
    let fetch_loop = tokio::spawn({
        let (fetcher, catalogue, stop, give_up) = (
            fetcher.clone(),
            catalogue.clone(),
            fetch_stop.clone(),
            give_up.clone(),
        );
        async move { fetcher.run_loop(&catalogue, stop, give_up, kills).await }
    });

    // The push load.
    let load = Arc::new(load::Load::new(
        history.clone(),
        server_port,
        catalogue.recent_products(),
    ));
    let clients: Vec<_> = (0..settings.clients)
        .map(|client| tokio::spawn(load.clone().client(client, give_up.clone())))
        .collect();
    eprintln!(
        "soak: load of {} clients for {} s",
        settings.clients, settings.duration_seconds
    );

    // The faults, one after the other, spread over the run.
    let started = now();
    let faults = tokio::spawn(run_faults(
        settings.clone(),
        started,
        history.clone(),
        kill_requests,
    ));
    tokio::time::sleep(duration).await;
    let fault_outcome = faults.await.context("the fault schedule")?;
    let load_duration = now() - started;
    eprintln!("soak: load over after {load_duration:.0} s; settling");

    // Settle: redeliveries until every notification is answered, the day in hand completed.
    let settle_by =
        tokio::time::Instant::now() + Duration::from_secs(settings.settle_timeout_seconds);
    load.stop_new();
    fetch_stop.store(true, Ordering::SeqCst);
    for client in clients {
        if tokio::time::timeout_at(settle_by, client).await.is_err() {
            give_up.store(true, Ordering::SeqCst);
        }
    }
    let days_started = match tokio::time::timeout_at(settle_by, fetch_loop).await {
        Ok(days) => days?,
        Err(_) => {
            give_up.store(true, Ordering::SeqCst);
            catalogue.days_served().len()
        }
    };
    // Claims of killed senders run out; then one more fetch sends whatever is owed.
    loop {
        let held: Option<bool> = sqlx::query_scalar(
            "SELECT bool_or(lease_until > now()) FROM granule_outbox WHERE sent_at IS NULL",
        )
        .fetch_one(&checker_pool)
        .await
        .ok()
        .flatten();
        if held != Some(true) || tokio::time::Instant::now() > settle_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last_day = catalogue.day(days_started.saturating_sub(1)).date;
    let flush = fetcher.flush(last_day).await;
    history.fetch_runs.lock().unwrap().push(flush);
    // The downloader takes the rest.
    let mut quiet_since = now();
    loop {
        let delivered = history.deliveries.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let backlog = consumer.backlog().await;
        if history.deliveries.lock().unwrap().len() != delivered || backlog != Some(0) {
            quiet_since = now();
        }
        if now() - quiet_since > 2.0 || tokio::time::Instant::now() > settle_by {
            break;
        }
    }
    consumer_stop.store(true, Ordering::SeqCst);
    for consumer in consumers {
        let _ = consumer.await;
    }
    sampler_stop.store(true, Ordering::SeqCst);
    let _ = sampler.await;

    // The server: alive, the same process, and its peak memory.
    let (alive, pid_at_end, peak_rss_kib) = {
        let mut rig = rig();
        let handler = rig.handler.as_mut().expect("the server");
        let alive = handler.try_wait()?.is_none();
        let memory = procs::memory_kib(handler.id());
        (
            alive,
            alive.then(|| handler.id()),
            memory.map_or(0, |(hwm, _)| hwm),
        )
    };
    let faults = history.faults.lock().unwrap().clone();
    let database = check::DatabaseState::read(&checker_pool, &faults).await?;
    let report = check::check(check::Inputs {
        settings: serde_json::to_value(&settings)?,
        clients: settings.clients,
        duration_s: load_duration,
        history: &history,
        days: &catalogue.days_served(),
        days_started,
        database,
        server: check::ServerState {
            pid_at_start: handler_pid,
            pid_at_end,
            alive_at_end: alive,
            peak_rss_kib,
            pool: settings.pool,
        },
        unsettled: load.unsettled(),
        peak_in_flight: load.peak_in_flight.load(Ordering::SeqCst),
        lease_s: settings.lease_seconds as f64,
    });
    history.write(&out.join("history.jsonl"))?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let text = check::render(&report);
    std::fs::write(out.join("report.txt"), &text)?;
    print!("{text}");
    if let Err(error) = fault_outcome {
        bail!("a fault could not be injected: {error:#}");
    }
    Ok(report.passed())
}

/// The schedule: each fault at its share of the run, one after the other.
async fn run_faults(
    settings: Settings,
    started: f64,
    history: Arc<History>,
    kill_requests: mpsc::Sender<fetch::KillRequest>,
) -> anyhow::Result<()> {
    let plan = [
        (0.10, FaultKind::PostgresFastRestart),
        (0.22, FaultKind::QueueKilled),
        (0.36, FaultKind::FetcherKilled),
        (0.50, FaultKind::PostgresCrashRestart),
        (0.62, FaultKind::QueueFrozen),
        (0.80, FaultKind::FetcherKilled),
    ];
    let postgres_down = Duration::from_secs(settings.postgres_down_seconds);
    let queue_down = Duration::from_secs(settings.queue_outage_seconds);
    for (n, (share, kind)) in plan.into_iter().enumerate() {
        let at = started + share * settings.duration_seconds as f64;
        let wait = at - now();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        let begun = now();
        eprintln!("soak: {:.1} s: {}", begun, kind.as_str());
        let mut fault = Fault {
            n: n + 1,
            kind,
            started: begun,
            back: begun,
            detail: String::new(),
            mid_page: None,
            run_started: None,
        };
        match kind {
            FaultKind::PostgresFastRestart | FaultKind::PostgresCrashRestart => {
                let mode = if kind == FaultKind::PostgresFastRestart {
                    "fast"
                } else {
                    "immediate"
                };
                blocking(move || rig().cluster.as_mut().expect("the cluster").stop(mode)).await?;
                let stopped = now();
                tokio::time::sleep(postgres_down).await;
                blocking(|| rig().cluster.as_mut().expect("the cluster").start()).await?;
                fault.back = now();
                fault.detail = format!(
                    "stopped in {:.1} s, started again {:.1} s later",
                    stopped - begun,
                    fault.back - stopped
                );
            }
            FaultKind::QueueKilled => {
                blocking(|| {
                    rig().queue.as_mut().expect("the queue").kill();
                    Ok(())
                })
                .await?;
                tokio::time::sleep(queue_down).await;
                blocking(|| rig().queue.as_mut().expect("the queue").start().map(|_| ())).await?;
                fault.back = now();
                fault.detail = "SIGKILL, restarted on the same port with its journal".into();
            }
            FaultKind::QueueFrozen => {
                rig().queue.as_ref().expect("the queue").freeze();
                tokio::time::sleep(queue_down).await;
                rig().queue.as_ref().expect("the queue").thaw();
                fault.back = now();
                fault.detail = "SIGSTOP, then SIGCONT".into();
            }
            FaultKind::FetcherKilled => {
                let (reply, report) = oneshot::channel();
                kill_requests
                    .send(fetch::KillRequest { reply })
                    .await
                    .context("the fetch loop ended")?;
                let report = tokio::time::timeout(Duration::from_secs(120), report)
                    .await
                    .context("no fetch run to kill within 120 s")??;
                fault.started = report.at;
                fault.back = report.at;
                fault.mid_page = Some(report.mid_page);
                fault.run_started = Some(report.run_started);
                fault.detail = format!(
                    "day {}: {} of this run's messages owed, {} sent at the kill",
                    report.day, report.owed, report.sent
                );
            }
        }
        eprintln!("soak: {:.1} s: back ({})", fault.back, fault.detail);
        history.faults.lock().unwrap().push(fault);
    }
    Ok(())
}

/// Samples the server's Postgres connections and memory every 100 ms.
async fn sample(url: String, handler_pid: u32, history: Arc<History>, stop: Arc<AtomicBool>) {
    let mut connection: Option<sqlx::PgConnection> = None;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if connection.is_none() {
            connection = sqlx::PgConnection::connect(&url).await.ok();
        }
        let Some(conn) = connection.as_mut() else {
            continue;
        };
        let counts: Result<(i64, i64), _> = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE application_name = 'soak-handler'), \
             count(*) FILTER (WHERE application_name = 'soak-fetcher') FROM pg_stat_activity",
        )
        .fetch_one(conn)
        .await;
        let Ok((handler_connections, fetcher_connections)) = counts else {
            connection = None;
            continue;
        };
        let handler_rss_kib = procs::memory_kib(handler_pid).map_or(0, |(_, rss)| rss);
        history.samples.lock().unwrap().push(Sample {
            t: now(),
            handler_connections,
            fetcher_connections,
            handler_rss_kib,
        });
    }
}
