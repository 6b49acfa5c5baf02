//! `link-fetcher`: the polling Lambda when started by the Lambda runtime, else a command.

// The nested futures of the fetch (SQS, sqlx, reqwest) exceed the default layout depth.
#![recursion_limit = "256"]

use std::io::Write;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use hls_core::catalogue::Platform;
use hls_core::day_fetch::Deadline;
use hls_core::logging;
use lambda_runtime::{LambdaEvent, service_fn};
use link_fetcher::{Dependencies, Search, handle, migrate_from_env, parse_date};
use serde_json::Value;

/// Finds new Sentinel-2 L1C products in the CDSE catalogue and queues them for download.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
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
    },
    /// Applies the database schema (idempotent).
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    logging::init();
    let result = if logging::running_in_lambda() {
        run_lambda().await
    } else {
        run_command(Cli::parse().command).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "link-fetcher failed");
            eprintln!("link-fetcher: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_lambda() -> anyhow::Result<()> {
    let deps = Dependencies::from_env().await?;
    let deps = &deps;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(event, deps).await.inspect_err(|error| {
            tracing::error!(error = %error, "invocation failed");
        })
    }))
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Fetch {
            date,
            platform,
            dry_run: true,
        } => {
            let search = Search::from_env()?;
            let summary = search
                .dry_run(date, platform, |granule| {
                    print_line(&granule.download_message());
                })
                .await?;
            print_line(&summary);
        }
        Command::Fetch {
            date,
            platform,
            dry_run: false,
        } => {
            let deps = Dependencies::from_env().await?;
            let summary = deps.fetch(date, platform, Deadline::none()).await?;
            print_line(&summary);
        }
        Command::Migrate => {
            migrate_from_env().await?;
            print_line(&serde_json::json!({"migrated": true}));
        }
    }
    Ok(())
}

fn print_line(value: &impl serde::Serialize) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(value).expect("summaries serialise");
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(out, "{line}");
}
