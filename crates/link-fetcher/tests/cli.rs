//! The `link-fetcher` command, run as a process against the catalogue stub.

use std::process::{Command, Output};

use chrono::{DateTime, NaiveDate, Utc};
use integration_tests::catalogue_stub::{CatalogueStub, Fault, synthetic_day};
use integration_tests::{TestDatabase, TestQueue};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_link-fetcher");

/// The command with no database, queue or Lambda settings from the test environment.
fn command(stub: &CatalogueStub, tiles_file: &std::path::Path) -> Command {
    let mut command = Command::new(BIN);
    for name in [
        "DATABASE_URL",
        "DB_CONNECTION_SECRET_ARN",
        "TO_DOWNLOAD_SQS_QUEUE_URL",
        "AWS_LAMBDA_RUNTIME_API",
        "CATALOGUE_PAGE_SIZE",
    ] {
        command.env_remove(name);
    }
    command
        .env("SEARCH_URL", stub.url())
        .env("ALLOWED_TILES_FILE", tiles_file)
        .env("CATALOGUE_PAGE_SIZE", "40")
        .env("RUST_LOG", "warn");
    command
}

async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("run link-fetcher"))
        .await
        .unwrap()
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn tiles_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "allowed-tiles-{}.txt",
        integration_tests::random_suffix()
    ));
    std::fs::write(&path, "54PXA\n").unwrap();
    path
}

struct Day {
    stub: CatalogueStub,
    tiles: std::path::PathBuf,
    allowed: Vec<String>,
}

async fn day_in_stub() -> Day {
    let stub = CatalogueStub::start().await;
    let date: NaiveDate = "2024-04-01".parse().unwrap();
    let products = synthetic_day("cli", date, 100, &["54PXA", "01ZZZ"]);
    let allowed = products
        .iter()
        .filter(|p| p["Name"].as_str().unwrap().contains("_T54PXA_"))
        .map(|p| p["Id"].as_str().unwrap().to_owned())
        .collect();
    stub.add_products(products);
    Day {
        stub,
        tiles: tiles_file(),
        allowed,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_needs_no_database_and_prints_what_would_be_queued() {
    let day = day_in_stub().await;
    let mut command = command(&day.stub, &day.tiles);
    command.args(["fetch", "--date", "2024-04-01", "--dry-run"]);
    let output = run(command).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = lines(&output);
    let (summary, granules) = lines.split_last().unwrap();
    let ids: Vec<&str> = granules.iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(ids, day.allowed);
    assert!(
        granules[0]["download_url"]
            .as_str()
            .unwrap()
            .ends_with("/$value")
    );
    assert_eq!(summary["query_date"], "2024-04-01");
    assert_eq!(summary["platform"], "S2A+S2B+S2C");
    assert_eq!(summary["completed"], true);
    assert_eq!(summary["available_links"], 100);
    assert_eq!(summary["fetched_links"], 100);
    assert_eq!(summary["new_granules"], 50);
    assert_eq!(summary["skipped_tiles"], 50);
    assert_eq!(summary["rejected"], 0);
    assert_eq!(summary["requests"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_records_and_queues_then_prints_the_summary() {
    let day = day_in_stub().await;
    let (db, queue) = tokio::join!(TestDatabase::migrated(), TestQueue::new());
    let mut command = command(&day.stub, &day.tiles);
    command
        .env("DATABASE_URL", db.url())
        .env("TO_DOWNLOAD_SQS_QUEUE_URL", &queue.url)
        .args(["fetch", "--date", "2024-04-01", "--platform", "S2B"]);
    let output = run(command).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = lines(&output);
    assert_eq!(lines.len(), 1, "only the summary: {lines:?}");
    let summary = &lines[0];
    assert_eq!(summary["platform"], "S2B");
    assert_eq!(summary["completed"], true);
    // synthetic_day puts S2B on every third product from the second.
    let s2b: Vec<&String> = day
        .allowed
        .iter()
        .filter(|id| id.trim_start_matches("cli-").parse::<usize>().unwrap() % 3 == 1)
        .collect();
    assert_eq!(summary["new_granules"], s2b.len());
    assert_eq!(summary["available_links"], 33);
    let drained = queue.drain(std::time::Duration::from_millis(300)).await;
    let mut queued: Vec<&String> = drained.by_id.keys().collect();
    queued.sort();
    assert_eq!(queued, s2b);
    let (fetched, last): (i64, DateTime<Utc>) = sqlx::query_as(
        "SELECT fetched_links, last_fetched_time AT TIME ZONE 'UTC' FROM granule_count WHERE platform = 'S2B'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(fetched, 33);
    assert!(Utc::now() - last < chrono::Duration::minutes(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_applies_the_schema() {
    let day = day_in_stub().await;
    let db = TestDatabase::empty().await;
    let mut command = command(&day.stub, &day.tiles);
    command.env("DATABASE_URL", db.url()).arg("migrate");
    let output = run(command).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('granule', 'granule_count', 'status')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_exit_non_zero_and_say_what_is_wrong() {
    let day = day_in_stub().await;
    for (args, env, says) in [
        (
            vec!["fetch", "--date", "2024-13-01"],
            vec![],
            "\"2024-13-01\" is not a date of the form YYYY-MM-DD",
        ),
        (
            vec!["fetch", "--date", "2024-04-01", "--platform", "S2D"],
            vec![],
            "unknown platform \"S2D\"",
        ),
        (
            vec!["fetch", "--date", "2024-04-01"],
            vec![],
            "TO_DOWNLOAD_SQS_QUEUE_URL is not set",
        ),
        (
            vec!["fetch", "--date", "2024-04-01"],
            vec![("TO_DOWNLOAD_SQS_QUEUE_URL", "http://127.0.0.1:1/queue/q")],
            "set DATABASE_URL or DB_CONNECTION_SECRET_ARN",
        ),
        (
            vec!["fetch", "--date", "2024-04-01", "--dry-run"],
            vec![("CATALOGUE_PAGE_SIZE", "5000")],
            "CATALOGUE_PAGE_SIZE is malformed",
        ),
        (
            vec!["fetch", "--date", "2024-04-01", "--dry-run"],
            vec![("CATALOGUE_TIMEOUT_SECONDS", "0")],
            "CATALOGUE_TIMEOUT_SECONDS is malformed: 0",
        ),
        (
            vec!["fetch", "--date", "2024-04-01", "--dry-run"],
            vec![("CATALOGUE_SETTLE_SECONDS", "18446744073709551615")],
            "CATALOGUE_SETTLE_SECONDS is malformed: 18446744073709551615 is more than a day",
        ),
        (
            vec!["fetch", "--date", "2024-04-01", "--dry-run"],
            vec![("CATALOGUE_SETTLE_SECONDS", "86401")],
            "CATALOGUE_SETTLE_SECONDS is malformed: 86401",
        ),
        (
            vec!["fetch", "--date", "2024-04-01", "--dry-run"],
            vec![("SEARCH_URL", "ftp://x")],
            "SEARCH_URL \"ftp://x\" is not http(s)",
        ),
        (
            vec!["migrate"],
            vec![],
            "set DATABASE_URL or DB_CONNECTION_SECRET_ARN",
        ),
    ] {
        let mut command = command(&day.stub, &day.tiles);
        command.args(&args).envs(env);
        let output = run(command).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(says),
            "{args:?}: {stderr:?} should say {says:?}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

/// The EMF lines among `stderr`'s, each checked against the specification:
/// <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>
fn emf_lines(output: &Output) -> Vec<Value> {
    const UNITS: [&str; 27] = [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|line| line.contains("\"_aws\""))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    for line in &lines {
        let root = line.as_object().expect("an EMF line is a JSON object");
        let aws = &line["_aws"];
        assert!(
            aws["Timestamp"]
                .as_i64()
                .is_some_and(|t| t > 1_600_000_000_000),
            "{line}"
        );
        let directives = aws["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics");
        assert!(!directives.is_empty(), "{line}");
        for directive in directives {
            let namespace = directive["Namespace"].as_str().expect("Namespace");
            assert!(!namespace.is_empty() && namespace.len() <= 256, "{line}");
            for set in directive["Dimensions"].as_array().expect("Dimensions") {
                let set = set.as_array().expect("a dimension set is an array");
                assert!(!set.is_empty() && set.len() <= 30, "{line}");
                for key in set {
                    let key = key.as_str().expect("dimension keys are strings");
                    assert!(
                        root[key].is_string(),
                        "dimension {key} has no value: {line}"
                    );
                }
            }
            let metrics = directive["Metrics"].as_array().expect("Metrics");
            assert!(!metrics.is_empty() && metrics.len() <= 100, "{line}");
            for metric in metrics {
                let name = metric["Name"].as_str().expect("Name");
                assert!(!name.is_empty() && name.len() <= 1024, "{line}");
                let unit = metric["Unit"].as_str().expect("Unit");
                assert!(UNITS.contains(&unit), "unit {unit}: {line}");
                assert!(root[name].is_number(), "metric {name} has no value: {line}");
            }
        }
    }
    lines
}

/// The value of metric `name` in the EMF line for `platform` and `path`.
fn metric(lines: &[Value], platform: &str, path: &str, name: &str) -> Option<f64> {
    lines
        .iter()
        .find(|l| l["platform"] == platform && l["path"] == path && l.get(name).is_some())
        .and_then(|l| l[name].as_f64())
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_compares_each_platform_emits_valid_metrics_and_fails_on_missing() {
    let day = day_in_stub().await;
    let (db, queue) = tokio::join!(TestDatabase::migrated(), TestQueue::new());
    let with_services = |command: &mut Command| {
        command
            .env("DATABASE_URL", db.url())
            .env("TO_DOWNLOAD_SQS_QUEUE_URL", &queue.url)
            .env("CATALOGUE_PAGE_SIZE", "10")
            .env("CATALOGUE_MAX_ATTEMPTS", "2")
            .env("CATALOGUE_RETRY_BASE_MS", "10")
            .env("METRICS_EMF", "on")
            .env("METRICS_NAMESPACE", "HLS/Test");
    };
    // S2B is fetched; S2A and S2C are not.
    let mut fetch = command(&day.stub, &day.tiles);
    with_services(&mut fetch);
    fetch.args(["fetch", "--date", "2024-04-01", "--platform", "S2B"]);
    let output = run(fetch).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fetched = lines(&output)[0]["new_granules"].as_i64().unwrap();
    let emf = emf_lines(&output);
    assert_eq!(
        metric(&emf, "S2B", "poll", "NewGranules"),
        Some(fetched as f64)
    );
    assert_eq!(metric(&emf, "S2B", "poll", "ProductsExamined"), Some(33.0));
    assert!(metric(&emf, "S2B", "poll", "QueueDelayP99").is_some());
    assert_eq!(metric(&emf, "all", "outbox", "OldestUnsentAge"), Some(0.0));
    assert!(
        emf.iter()
            .all(|l| l["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "HLS/Test")
    );
    queue.drain(std::time::Duration::from_millis(300)).await;

    let mut audit = command(&day.stub, &day.tiles);
    with_services(&mut audit);
    audit.args(["audit", "--from", "2024-04-01", "--fail-on-missing"]);
    let output = run(audit).await;
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let audited = lines(&output);
    let platforms: Vec<&str> = audited
        .iter()
        .map(|l| l["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["S2A", "S2B", "S2C"]);
    assert!(audited.iter().all(|l| l["complete"] == true));
    assert_eq!(audited[1]["missing"], 0);
    assert_eq!(audited[1]["recorded"], fetched);
    let missing: i64 = audited.iter().map(|l| l["missing"].as_i64().unwrap()).sum();
    assert_eq!(missing as usize, day.allowed.len() - fetched as usize);
    let emf = emf_lines(&output);
    assert_eq!(
        metric(&emf, "S2A", "audit", "StillMissing"),
        audited[0]["missing"].as_f64()
    );
    assert_eq!(metric(&emf, "S2B", "audit", "StillMissing"), Some(0.0));
    assert_eq!(metric(&emf, "S2C", "audit", "AuditIncomplete"), Some(0.0));
    // Without --requeue nothing was written or sent.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM granule")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, fetched);
    assert!(
        queue
            .drain(std::time::Duration::from_millis(300))
            .await
            .by_id
            .is_empty()
    );

    // The catalogue refuses S2A's second page: that line is incomplete, and the run fails.
    day.stub.inject([
        Fault::Pass,
        Fault::Status(400, r#"{"detail": {"message": "Invalid filter"}}"#.into()),
    ]);
    let mut audit = command(&day.stub, &day.tiles);
    with_services(&mut audit);
    audit.args(["audit", "--from", "2024-04-01", "--to", "2024-04-01"]);
    let output = run(audit).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("could not be read completely"), "{stderr}");
    let audited = lines(&output);
    assert_eq!(audited[0]["complete"], false);
    assert!(
        audited[0]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 400: Invalid filter"),
        "{}",
        audited[0]
    );
    assert!(audited[1..].iter().all(|l| l["complete"] == true));
    assert_eq!(
        metric(&emf_lines(&output), "S2A", "audit", "AuditIncomplete"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_catalogue_is_one_short_line_naming_the_host_and_the_attempts() {
    let day = day_in_stub().await;
    let failure = |verbose: bool, rust_log: &str| {
        let mut command = command(&day.stub, &day.tiles);
        // Nothing listens on the discard port.
        command
            .env("SEARCH_URL", "http://127.0.0.1:9/")
            .env("RUST_LOG", rust_log)
            .env_remove("CATALOGUE_MAX_ATTEMPTS")
            .args(["fetch", "--date", "2026-11-30", "--dry-run"])
            .args(["--max-attempts", "2"]);
        if verbose {
            command.arg("-v");
        }
        command
    };
    let started = std::time::Instant::now();
    let output = run(failure(false, "error")).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    let error_lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    let line = error_lines[0];
    assert!(line.len() < 200, "{} characters: {line}", line.len());
    assert!(
        line.starts_with(
            "link-fetcher: catalogue 127.0.0.1:9 unreachable (connection refused) after 2 attempts in "
        ),
        "{line}"
    );
    assert!(
        line.ends_with("; check the network or SEARCH_URL"),
        "{line}"
    );

    // The retries' warnings name the fault too, never the query.
    let output = run(failure(false, "warn")).await;
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert!(
        stderr.contains("unreachable (connection refused)"),
        "{stderr}"
    );
    assert!(!stderr.contains("/odata/v1/Products"), "{stderr}");
    assert!(
        !stderr.contains("link-fetcher failed"),
        "said twice: {stderr}"
    );

    // -v: the request, once, and the transport's own words.
    let output = run(failure(true, "error")).await;
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.matches("/odata/v1/Products").count(), 1, "{stderr}");
    assert!(
        stderr.contains("GET http://127.0.0.1:9/odata/v1/Products?"),
        "{stderr}"
    );
    assert!(stderr.lines().next().unwrap().len() < 200, "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
}
