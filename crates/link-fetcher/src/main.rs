//! `link-fetcher`: the polling Lambda when started by the Lambda runtime, else a command.

// The nested futures of the fetch (SQS, sqlx, reqwest) exceed the default layout depth.
#![recursion_limit = "256"]

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use hls_core::adapters::catalogue::Platform;
use hls_core::adapters::logging::{self, LogSettings};
use hls_core::config::Vars;
use hls_core::use_cases::audit::render_table;
use hls_core::use_cases::day_fetch::{Deadline, RETRY_LOG_TARGET, RetryPolicy};
use lambda_runtime::{LambdaEvent, service_fn};
use link_fetcher::progress::{Counting, ProgressLine};
use link_fetcher::settings::{self, SearchSettings, Settings, StoreSettings};
use link_fetcher::{Dependencies, Search, error_report, handle, migrate, parse_date};
use serde_json::Value;
use tracing::level_filters::LevelFilter;

/// Finds new Sentinel-2 L1C products in the CDSE catalogue and queues them for download.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Log every product's decision, and say which request failed and how.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetches one UTC publication day to completion and prints a JSON summary line.
    Fetch {
        /// The day, YYYY-MM-DD.
        #[arg(long, value_parser = parse_date)]
        date: NaiveDate,
        /// One platform (S2A, S2B, S2C); all when absent.
        #[arg(long)]
        platform: Option<Platform>,
        /// Query the catalogue only: print one JSON line per granule that would be
        /// queued, then the summary. Needs no database and no queue.
        #[arg(long)]
        dry_run: bool,
        /// Attempts at each catalogue request (default: CATALOGUE_MAX_ATTEMPTS, else
        /// 4 and none started after 30 s).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_attempts: Option<u32>,
    },
    /// Compares each day of the catalogue with what was recorded and queued,
    /// and prints one JSON line per (day, platform); a table too on a terminal.
    /// Exit status 3 with --fail-on-missing when anything is missing, 1 when a
    /// day could not be read completely.
    Audit {
        /// The first day, YYYY-MM-DD.
        #[arg(long, value_parser = parse_date)]
        from: NaiveDate,
        /// The last day (included); `--from` when absent.
        #[arg(long, value_parser = parse_date)]
        to: Option<NaiveDate>,
        /// One platform (S2A, S2B, S2C); each of them when absent.
        #[arg(long)]
        platform: Option<Platform>,
        /// Record and queue the missing products (found by `audit`), after
        /// sending the messages still owed. Without it nothing is written.
        #[arg(long)]
        requeue: bool,
        /// Exit with status 3 when any product is missing.
        #[arg(long)]
        fail_on_missing: bool,
        /// Attempts at each catalogue request (default: CATALOGUE_MAX_ATTEMPTS, else
        /// 4 and none started after 30 s).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_attempts: Option<u32>,
    },
    /// Applies the database schema (idempotent).
    Migrate,
}

/// `audit --fail-on-missing` found products missing.
const EXIT_MISSING: u8 = 3;

// One thread: the fetch waits on the network, and a second worker only added
// wake-ups between threads (a fifth of its CPU against moto).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // The environment is read once, here; everything below gets its settings.
    let vars = settings::environment();
    let mut log = LogSettings::read(&vars);
    if log.in_lambda {
        logging::init(&log);
        return match run_lambda(&vars).await {
            Ok(code) => code,
            Err(error) => {
                // CloudWatch's JSON line; nobody reads stderr there.
                tracing::error!(error = %format!("{error:#}"), "link-fetcher failed");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    if !cli.verbose && std::io::stderr().is_terminal() {
        // A person is watching: the progress line, warnings and the error, not
        // a line per product (RUST_LOG or -v bring those back).
        log.default_level = LevelFilter::WARN;
        // Retries show on the progress line instead, so the error stays one line.
        log.quiet_targets = &[RETRY_LOG_TARGET];
    }
    logging::init(&log);
    let verbose = cli.verbose || tracing::enabled!(tracing::Level::DEBUG);
    match run_command(cli.command, &vars).await {
        Ok(code) => code,
        Err(error) => {
            // On stderr only: the same error as a log line too would say it twice.
            eprintln!("{}", error_report(&error, verbose));
            ExitCode::FAILURE
        }
    }
}

async fn run_lambda(vars: &Vars) -> anyhow::Result<ExitCode> {
    let deps = Dependencies::new(Settings::read(vars)?).await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(event, deps).await.inspect_err(|error| {
            tracing::error!(error = %error, "invocation failed");
        })
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(ExitCode::SUCCESS)
}

async fn run_command(command: Command, vars: &Vars) -> anyhow::Result<ExitCode> {
    match command {
        Command::Fetch {
            date,
            platform,
            dry_run: true,
            max_attempts,
        } => {
            let mut settings = SearchSettings::read(vars)?;
            settings.options.retry = with_attempts(settings.options.retry, max_attempts);
            let search = Search::new(settings)?;
            let progress = ProgressLine::on_terminal(Counting::WouldQueue);
            let summary = search
                .dry_run(
                    date,
                    platform,
                    |granule| print_line(&granule.download_message()),
                    &progress,
                )
                .await;
            progress.clear();
            print_line(&summary?);
        }
        Command::Fetch {
            date,
            platform,
            dry_run: false,
            max_attempts,
        } => {
            let mut settings = Settings::read(vars)?;
            let retry = &mut settings.search.options.retry;
            *retry = with_attempts(*retry, max_attempts);
            let deps = Dependencies::new(settings).await?;
            let progress = ProgressLine::on_terminal(Counting::Queued);
            let summary = deps
                .fetch_showing(date, platform, Deadline::none(), &progress)
                .await;
            progress.clear();
            print_line(&summary?);
        }
        Command::Audit {
            from,
            to,
            platform,
            requeue,
            fail_on_missing,
            max_attempts,
        } => {
            let to = to.unwrap_or(from);
            anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
            let days = (to - from).num_days() + 1;
            anyhow::ensure!(
                days <= link_fetcher::MAX_DAYS as i64,
                "{days} days: audit at most {} at once",
                link_fetcher::MAX_DAYS
            );
            let dates: Vec<NaiveDate> = from.iter_days().take(days as usize).collect();
            let platforms = platform.map_or(Platform::ALL.to_vec(), |p| vec![p]);
            let mut settings = Settings::read(vars)?;
            let retry = &mut settings.search.options.retry;
            *retry = with_attempts(*retry, max_attempts);
            let deps = Dependencies::new(settings).await?;
            let progress = ProgressLine::on_terminal(Counting::Nothing);
            let lines = deps
                .audit_showing(
                    &dates,
                    &platforms,
                    requeue,
                    Deadline::none(),
                    |line| {
                        progress.clear();
                        print_line(line);
                    },
                    &progress,
                )
                .await;
            progress.clear();
            let lines = lines?;
            if std::io::stderr().is_terminal() {
                eprint!("{}", render_table(&lines));
            }
            let incomplete = lines.iter().filter(|l| !l.complete).count();
            if incomplete > 0 {
                anyhow::bail!(
                    "{incomplete} (day, platform) could not be read completely from the catalogue; \
                     their lines say why"
                );
            }
            if fail_on_missing && lines.iter().any(|l| l.missing > 0) {
                return Ok(ExitCode::from(EXIT_MISSING));
            }
        }
        Command::Migrate => {
            migrate(&StoreSettings::read(vars)?).await?;
            print_line(&serde_json::json!({"migrated": true}));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--max-attempts`, when given, over the settings' policy.
fn with_attempts(retry: RetryPolicy, max_attempts: Option<u32>) -> RetryPolicy {
    max_attempts.map_or(retry, |attempts| retry.with_attempts(attempts))
}

fn print_line(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(value).expect("summaries serialise");
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(out, "{line}");
}
