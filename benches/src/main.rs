//! `make bench`: both functions measured against real Postgres and moto SQS, each
//! stage of the day fetch alone, and the servers' own ceilings, in one run.
//! `scripts/bench.sh` builds the release binaries, runs the criterion micro
//! benchmarks, then this under `scripts/with-moto.sh`; see BENCHMARKS.md.

// The nested futures of sqlx and the SQS client exceed the default layout depth.
#![recursion_limit = "256"]

mod day_fetch;
mod drain;
mod figures;
mod micro;
mod process;
mod push;
mod startup;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::figures::{Figure, number};

/// What to run and where things are; every field has a flag (`--name value`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub fetcher: PathBuf,
    pub handler: PathBuf,
    pub wrk: PathBuf,
    pub out_dir: PathBuf,
    pub criterion_dir: PathBuf,
    pub lambda_dir: PathBuf,
    pub release_zip_dir: PathBuf,
    pub products: usize,
    pub page_delay_ms: u64,
    pub fetch_runs: usize,
    pub push_runs: usize,
    pub startup_runs: usize,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    pub wrk_seconds: u32,
    pub sections: Vec<String>,
}

impl Settings {
    fn from_args() -> anyhow::Result<Self> {
        let mut settings = Self {
            fetcher: "target/release/link-fetcher".into(),
            handler: "target/release/link-subscription-handler".into(),
            wrk: "wrk".into(),
            out_dir: "target/bench".into(),
            criterion_dir: "target/bench/criterion".into(),
            lambda_dir: "target/lambda".into(),
            release_zip_dir: "target/bench/zip".into(),
            products: 12_000,
            page_delay_ms: 300,
            fetch_runs: 3,
            push_runs: 3,
            startup_runs: 5,
            wrk_threads: 2,
            wrk_connections: 16,
            wrk_seconds: 10,
            sections: ["day-fetch", "push", "startup", "micro"]
                .map(String::from)
                .to_vec(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let number = || -> anyhow::Result<u64> {
                value.parse().with_context(|| format!("{flag} {value:?}"))
            };
            match flag.as_str() {
                "--fetcher" => settings.fetcher = value.into(),
                "--handler" => settings.handler = value.into(),
                "--wrk" => settings.wrk = value.into(),
                "--out-dir" => settings.out_dir = value.into(),
                "--criterion-dir" => settings.criterion_dir = value.into(),
                "--lambda-dir" => settings.lambda_dir = value.into(),
                "--release-zip-dir" => settings.release_zip_dir = value.into(),
                "--products" => settings.products = number()? as usize,
                "--page-delay-ms" => settings.page_delay_ms = number()?,
                "--fetch-runs" => settings.fetch_runs = number()? as usize,
                "--push-runs" => settings.push_runs = number()? as usize,
                "--startup-runs" => settings.startup_runs = number()? as usize,
                "--wrk-threads" => settings.wrk_threads = number()? as u32,
                "--wrk-connections" => settings.wrk_connections = number()? as u32,
                "--wrk-seconds" => settings.wrk_seconds = number()? as u32,
                "--sections" => settings.sections = value.split(',').map(String::from).collect(),
                _ => {
                    bail!("unknown flag {flag}; see Settings in benches/src/main.rs for the flags")
                }
            }
        }
        Ok(settings)
    }

    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

#[derive(Debug, Serialize)]
struct Results {
    machine: Machine,
    day_fetch: Option<day_fetch::Report>,
    day_fetch_no_delay: Option<day_fetch::Report>,
    push: Option<push::Report>,
    startup: Option<startup::Report>,
    micro: Vec<micro::Result>,
    total_s: f64,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    memory_gib: f64,
    kernel: String,
}

impl Machine {
    fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Self {
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_args()?;
    std::fs::create_dir_all(&settings.out_dir)?;
    let started = Instant::now();
    let machine = Machine::read();
    eprintln!(
        "machine: {}, {} cores, {:.1} GiB",
        machine.cpu, machine.cores, machine.memory_gib
    );

    let mut results = Results {
        machine,
        day_fetch: None,
        day_fetch_no_delay: None,
        push: None,
        startup: None,
        micro: Vec::new(),
        total_s: 0.0,
    };
    let catalogue = day_fetch::Bench::new(settings.products).await;
    if settings.runs("day-fetch") {
        eprintln!("day fetch: {} products, pages of 1,000", settings.products);
        let delay = Duration::from_millis(settings.page_delay_ms);
        results.day_fetch = Some(catalogue.report(&settings, delay).await?);
        results.day_fetch_no_delay = Some(catalogue.report(&settings, Duration::ZERO).await?);
    }
    if settings.runs("push") {
        eprintln!(
            "push: wrk -t{} -c{} -d{}s, {}",
            settings.wrk_threads,
            settings.wrk_connections,
            settings.wrk_seconds,
            push::MIX
        );
        results.push = Some(push::report(&settings).await?);
    }
    if settings.runs("startup") {
        eprintln!("start-up: {} runs of each binary", settings.startup_runs);
        results.startup = Some(startup::report(&settings, &catalogue).await?);
    }
    if settings.runs("micro") {
        results.micro = micro::report(&settings.criterion_dir);
    }
    results.total_s = started.elapsed().as_secs_f64();

    let json = settings.out_dir.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)?;
    let summary = markdown(&settings, &results);
    std::fs::write(settings.out_dir.join("summary.md"), &summary)?;
    println!("{summary}");
    eprintln!(
        "results: {} and {}",
        json.display(),
        settings.out_dir.join("summary.md").display()
    );
    Ok(())
}

/// The figures as the tables of BENCHMARKS.md: median (min–max).
fn markdown(settings: &Settings, results: &Results) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let m = &results.machine;
    line(format!(
        "Machine: {}, {} cores, {:.1} GiB, Linux {}. Median (min–max).\n",
        m.cpu, m.cores, m.memory_gib, m.kernel
    ));
    for (title, report) in [
        ("Day fetch", &results.day_fetch),
        ("Day fetch, no page delay", &results.day_fetch_no_delay),
    ] {
        let Some(r) = report else { continue };
        line(format!(
            "### {title}: {} products ({} on allowed tiles), pages of {}, {} ms per page, {} runs\n",
            r.products,
            r.on_allowed_tiles,
            r.page_size,
            r.page_delay_ms,
            r.runs.len()
        ));
        line("| figure | value |".into());
        line("|---|---|".into());
        line(format!(
            "| `link-fetcher fetch` wall time | {} |",
            r.wall_s.show()
        ));
        line(format!(
            "| `link-fetcher audit` of the same day, after the fetch | {} |",
            r.audit_wall_s.show()
        ));
        line(format!(
            "| products per second | {} |",
            r.products_per_s.show()
        ));
        line(format!("| peak RSS | {} |", r.peak_rss_mib.show()));
        line(format!(
            "| CPU time (user + system) | {} = {} per product |",
            r.cpu_s.show(),
            r.cpu_us_per_product.show()
        ));
        line(format!(
            "| the same fetch, catalogue answering at once, SQS endpoint that costs nothing: wall | {} = {} |",
            r.free_fetch_wall_s.show(),
            r.free_fetch_products_per_s.show()
        ));
        line(format!(
            "| … its CPU per product, peak RSS | {}, {} |",
            r.free_fetch_cpu_us_per_product.show(),
            r.free_fetch_peak_rss_mib.show()
        ));
        line(format!(
            "| Postgres' ceiling: the hand-off alone, no-op queue; one bare insert | {}; {} |",
            r.postgres_handoff_products_per_s.show(),
            r.bare_insert_products_per_s.show()
        ));
        line(format!(
            "| **free fetch / Postgres hand-off alone** (products per second) | **{}** |",
            r.free_fetch_to_postgres_handoff.show()
        ));
        line(format!(
            "| stage alone: catalogue pages ({} requests) | {} |",
            r.runs.first().map_or(0, |r| r.catalogue_requests),
            r.stage_catalogue_s.show()
        ));
        line(format!(
            "| stage alone: Postgres, the hand-off per page (rows, outbox, sent marks), no-op queue | {} |",
            r.stage_postgres_s.show()
        ));
        line(format!(
            "| stage alone: SQS (moto), `SqsQueue::send_batch` per page, 8 at once | {} |",
            r.stage_sqs_s.show()
        ));
        line(format!(
            "| Postgres ceiling: one bare multi-row insert | {} |",
            r.bare_insert_s.show()
        ));
        line(format!(
            "| moto ceiling: bare SendMessageBatch ×{} at concurrency 8 | {} |",
            r.on_allowed_tiles.div_ceil(10),
            r.bare_send_batch_s.show()
        ));
        line(format!(
            "| **fetch wall / slowest stage** (slowest: {}) | **{}** |",
            r.slowest_stage.join(", "),
            r.ratio_to_slowest_stage.show()
        ));
        line(String::new());
    }
    if let Some(p) = &results.push {
        line(format!(
            "### Push: wrk -t{} -c{} -d{}s, {}, pool {} connections, {} runs\n",
            p.threads,
            p.connections,
            p.seconds,
            p.mix,
            p.pool_connections,
            p.runs.len()
        ));
        line("| figure | value |".into());
        line("|---|---|".into());
        line(format!(
            "| requests per second | {} |",
            p.requests_per_s.show()
        ));
        line(format!(
            "| new notifications per second (70% of requests) | {} |",
            p.new_per_s.show()
        ));
        line(format!("| latency p50 | {} |", p.p50_ms.show()));
        line(format!("| latency p99 | {} |", p.p99_ms.show()));
        line(format!("| latency p99.9 | {} |", p.p999_ms.show()));
        line(format!(
            "| errors (socket, timeout, non-2xx) | {} |",
            p.errors.show()
        ));
        line(format!(
            "| server peak RSS (VmHWM) | {} |",
            p.peak_rss_mib.show()
        ));
        line(format!(
            "| moto ceiling: one-message SendMessageBatch at concurrency {} | {} |",
            p.connections,
            p.bare_send_per_s.show()
        ));
        line(String::new());
    }
    if let Some(s) = &results.startup {
        line(format!("### Start-up, {} runs\n", settings.startup_runs));
        line("| figure | value |".into());
        line("|---|---|".into());
        line(format!(
            "| handler: spawn → first HTTP answer | {} |",
            s.handler_ready_ms.show()
        ));
        line(format!(
            "| handler: spawn → first notification recorded and queued | {} |",
            s.handler_first_queued_ms.show()
        ));
        line(format!(
            "| handler: RSS when idle | {} |",
            s.handler_idle_rss_mib.show()
        ));
        line(format!(
            "| fetcher: spawn → exit, `fetch` of an empty day | {} |",
            s.fetcher_empty_day_ms.show()
        ));
        line(format!(
            "| fetcher: peak RSS, empty day | {} |",
            s.fetcher_empty_day_peak_rss_mib.show()
        ));
        line(format!(
            "| fetcher: `--version` (exec floor) | {} |",
            s.fetcher_version_ms.show()
        ));
        let mib = |bytes: Option<u64>| {
            bytes.map_or("not built".to_owned(), |b| {
                format!("{} MiB", number(b as f64 / 1024.0 / 1024.0))
            })
        };
        for p in &s.packages {
            line(format!(
                "| {}: Lambda zip (`make build`) | {} |",
                p.function,
                mib(p.lambda_zip)
            ));
            line(format!(
                "| {}: x86_64 release binary / zipped as `bootstrap` | {} / {} |",
                p.function,
                mib(p.release_binary),
                mib(p.release_zip)
            ));
        }
        line(String::new());
    }
    if !results.micro.is_empty() {
        line("### Micro benchmarks (criterion, `cargo bench -p hls-core --bench pure`)\n".into());
        line("| benchmark | time |".into());
        line("|---|---|".into());
        for r in &results.micro {
            line(format!(
                "| {} (`{}`) | {} |",
                r.what,
                r.name,
                duration(&r.time_ns)
            ));
        }
        line(String::new());
    }
    line(format!("Total: {:.0} s.", results.total_s));
    out
}

/// A nanosecond figure in the unit that suits it.
fn duration(figure: &Figure) -> String {
    let (scale, unit) = match figure.median {
        m if m >= 1e6 => (1e6, "ms"),
        m if m >= 1e3 => (1e3, "µs"),
        _ => (1.0, "ns"),
    };
    format!(
        "{} {unit} ({}–{})",
        number(figure.median / scale),
        number(figure.min / scale),
        number(figure.max / scale)
    )
}
